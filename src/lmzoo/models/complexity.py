"""`complexity`: the Complexity seed — a modern transformer with a token-routed MLP.

Everything in `transformer` (QK-norm on by default) plus an MLP split into E experts, each
token served by the expert its *input id* selects (`modulo`: id % E, balanced; `range`:
id * E // V, the seed README's "frequent ids to expert 0"). Same total MLP parameters as the
dense model, 1/E of the MLP FLOPs per token.

Presets: the lmzoo sizes (nano..base) use the dense baseline's shapes so the two compare at
equal parameters. The seed's own table is kept too; its tiny/small/base clash with the
lmzoo names, so they are `seed-tiny`, `seed-small`, `seed-base` (see docs/architectures.md);
`lmzoo.seed_api.create_complexity_model(name)` accepts the seed's names.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lmzoo.errors import LmzooError
from lmzoo.layers.token_routed_mlp import ROUTINGS, TokenRoute, TokenRoutedMLP, expert_ids
from lmzoo.modeling import State
from lmzoo.models.transformer import SIZES, TransformerConfig, TransformerContext, TransformerLM, dense_presets
from lmzoo.registry import register

# The seed's table: (hidden, layers, heads, kv_heads, intermediate).
SEED_SIZES = {
    "seed-tiny": (256, 6, 4, 2, 704),
    "20m": (320, 8, 8, 4, 896),
    "seed-small": (512, 8, 8, 4, 1408),
    "seed-base": (768, 12, 12, 4, 2048),
    "medium": (1024, 24, 16, 4, 2816),
    "large": (1536, 24, 16, 4, 4096),
    "1b": (2048, 24, 16, 8, 5632),
}


@dataclass
class ComplexityConfig(TransformerConfig):
    qk_norm: bool = True
    n_experts: int = 4
    routing: str = "modulo"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.routing not in ROUTINGS:
            raise LmzooError(f"unknown routing '{self.routing}'; choose one of: {', '.join(ROUTINGS)}")
        if self.n_experts < 1 or self.d_ff % self.n_experts:
            raise LmzooError(f"d_ff ({self.d_ff}) must divide by n_experts ({self.n_experts})")


@register("complexity", ComplexityConfig, {**dense_presets(SIZES), **dense_presets(SEED_SIZES)},
          "Transformer with QK-norm and a token-id-routed MLP (1/E MLP FLOPs per token)")
class ComplexityLM(TransformerLM):
    lora_targets = ("qkv",)  # the experts are stacked parameters, not nn.Linear layers

    def make_mlp(self, config: ComplexityConfig) -> nn.Module:
        return TokenRoutedMLP(config.d_model, config.d_ff, config.n_experts)

    def route(self, input_ids: torch.Tensor) -> TokenRoute:
        c = self.config
        return TokenRoute.from_ids(input_ids, c.n_experts, c.vocab_size, c.routing)

    def route_stats(self, route: TokenRoute) -> dict[str, torch.Tensor]:
        frac = (route.counts.float() / route.counts.sum()).detach()
        return {f"routing/expert{e}": frac[e] for e in range(frac.shape[0])}

    def backbone(self, input_ids: torch.Tensor, state: State | None, context: TransformerContext):
        out = super().backbone(input_ids, state, context)
        if context.token_stats is not None:
            c = self.config
            context.token_stats["expert"] = expert_ids(input_ids, c.n_experts, c.vocab_size, c.routing)  # [B, L]
        return out
