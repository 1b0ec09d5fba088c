"""The seeds' own entry points, so code written against a seed's README runs on lmzoo unchanged.

    from lmzoo.seed_api import ComplexityForCausalLM, create_complexity_model   # Complexity
    from lmzoo.seed_api import SpectralConfig, SpectralLLM, SpectralAnalyzer     # SpectralLLM

Each is a thin name over lmzoo's own classes; nothing else in lmzoo uses them.
"""
from __future__ import annotations

import warnings
from dataclasses import InitVar, dataclass

from lmzoo.models import spectral_llm
from lmzoo.models.complexity import ComplexityLM
from lmzoo.registry import create_model
from lmzoo.spectral_analysis import SpectralAnalyzer  # the seed's spectralllm.analysis.SpectralAnalyzer

__all__ = ["COMPLEXITY_SEED_NAMES", "ComplexityForCausalLM", "SpectralAnalyzer", "SpectralConfig", "SpectralLLM",
           "create_complexity_model"]

# ---- Complexity ---------------------------------------------------------------------------------
ComplexityForCausalLM = ComplexityLM
# The seed's tiny/small/base clash with lmzoo's parameter-matched sizes of those names.
COMPLEXITY_SEED_NAMES = {"tiny": "seed-tiny", "small": "seed-small", "base": "seed-base"}


def create_complexity_model(size: str = "base", vocab_size: int = 259, **overrides) -> ComplexityLM:
    """The seed's constructor: sizes from the seed's table (tiny, 20m, small, base, ... 1b)."""
    return create_model("complexity", COMPLEXITY_SEED_NAMES.get(size, size), vocab_size=vocab_size, **overrides)


# ---- SpectralLLM --------------------------------------------------------------------------------
@dataclass
class SpectralConfig(spectral_llm.SpectralConfig):
    """The seed's constructor names, stored under lmzoo's: embed_dim -> d_model, num_layers ->
    n_layers; num_heads is accepted with a warning (the mixer has no attention heads)."""

    embed_dim: InitVar[int | None] = None
    num_layers: InitVar[int | None] = None
    num_heads: InitVar[int | None] = None

    def __post_init__(self, embed_dim: int | None, num_layers: int | None, num_heads: int | None) -> None:
        if embed_dim is not None:
            self.d_model = embed_dim
        if num_layers is not None:
            self.n_layers = num_layers
        if num_heads is not None:
            warnings.warn("num_heads has no effect on spectral-llm: its mixer has no attention heads", stacklevel=3)
        super().__post_init__()


class SpectralLLM(spectral_llm.SpectralLM):
    def count_parameters(self) -> int:
        """All parameters (`lmzoo.accounting.count_parameters` splits them)."""
        return self.num_parameters()
