"""The spectral analyzer (`lmzoo analyze`, and the seed's `SpectralAnalyzer` API below): what share of a spectral-llm's parameters and compute
is spectral, what it learned to mix, and how much each wavelet band carries on given text.

Components: the harmonic embedding; the mixer's spectral part (wavelet filters, long filters,
their FFTs, band weights); the FFN's spectral path; and the non-spectral rest (embedding table,
mixer projections, standard FFN, norms, LM head). FLOPs are measured with the project's counter
(`lmzoo.accounting.flop_counter`: matmuls, convolutions, FFTs as 5 N log2 N); elementwise work
is not counted for any component.
"""
from __future__ import annotations

from typing import Any

import torch

from lmzoo.accounting import flop_counter
from lmzoo.errors import LmzooError

SPECTRAL = ("harmonic embedding", "mixer: wavelets + long filters", "FFN: spectral path")


def parameter_split(model) -> dict[str, int]:
    split = dict.fromkeys((*SPECTRAL, "embedding table", "mixer projections", "FFN: standard path", "norms"), 0)
    for name, p in {id(p): (n, p) for n, p in model.named_parameters()}.values():
        split[_component(name)] += p.numel()
    return split


def _component(name: str) -> str:
    if name.startswith("harmonic"):
        return "harmonic embedding"
    if name.startswith(("embed", "lm_head")):
        return "embedding table"
    if ".mixer.inp." in name or ".mixer.out." in name:
        return "mixer projections"
    if ".mixer." in name:
        return "mixer: wavelets + long filters"
    if ".ffn.up." in name or ".ffn.down." in name:
        return "FFN: standard path"
    if ".ffn." in name:
        return "FFN: spectral path"
    return "norms"


def flop_split(model, ids: torch.Tensor) -> dict[str, float]:
    """Forward FLOPs per token by component (module-level counts of one forward)."""
    with torch.no_grad(), flop_counter() as counter:
        model(ids)
    counts = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    root = type(model).__name__
    total = counts.get("Global", 0)

    def of(suffix: str) -> float:
        return sum(v for k, v in counts.items() if k.startswith(f"{root}.blocks.") and k.endswith(suffix))

    split = {
        "harmonic embedding": counts.get(f"{root}.harmonic", 0),
        "mixer: wavelets + long filters": of(".mixer") - of(".mixer.inp") - of(".mixer.out"),
        "FFN: spectral path": of(".ffn") - of(".ffn.up") - of(".ffn.down"),
        "mixer projections": of(".mixer.inp") + of(".mixer.out"),
        "FFN: standard path": of(".ffn.up") + of(".ffn.down"),
    }
    split["LM head and rest"] = total - sum(split.values())
    return {k: v / ids.numel() for k, v in split.items()}


@torch.no_grad()
def band_energy(model, ids: torch.Tensor) -> list[list[float]]:
    """Mean square of each band's weighted mixer output, per layer, on `ids`."""
    records: list[list[float]] = []
    for block in model.blocks:
        block.mixer.record = []
    try:
        model(ids)
        records = [block.mixer.record for block in model.blocks]
    finally:
        for block in model.blocks:
            block.mixer.record = None
    return records


@torch.no_grad()
def mix_weights(model) -> dict[str, Any]:
    """The learned weights that mix the spectral and standard paths, as every forward uses them."""
    return {
        # embedding="harmonic" has no table: the harmonic share is 1 by construction.
        "harmonic_mix_a": float(torch.sigmoid(model.harmonic_mix)) if model.embed is not None else 1.0,
        "ffn_alpha": [float(torch.sigmoid(b.ffn.mix_logit)) for b in model.blocks],
        "band_weights": [b.mixer.band_weight.tolist() for b in model.blocks],
    }


def check_spectral(model) -> None:
    if not hasattr(model, "harmonic"):
        raise ValueError(f"the spectral analyzer needs a spectral-llm model, got '{model.config.arch}'")


@torch.no_grad()
def architecture(model, ids: torch.Tensor) -> dict[str, Any]:
    """Parameter and forward-FLOP split of `model` (a spectral-llm), FLOPs measured on `ids` [B, L]."""
    check_spectral(model)
    params, flops = parameter_split(model), flop_split(model, ids)
    return {
        "parameters": params,
        "spectral_parameter_ratio": sum(params[k] for k in SPECTRAL) / sum(params.values()),
        "flops_per_token": flops,
        "spectral_compute_ratio": sum(flops[k] for k in SPECTRAL) / sum(flops.values()),
    }


@torch.no_grad()
def analyze(model, ids: torch.Tensor) -> dict[str, Any]:
    """Everything above for `model` (a spectral-llm) on the token ids `ids` [B, L]."""
    check_spectral(model)
    model.eval()
    return {**architecture(model, ids), **mix_weights(model), "band_energy": band_energy(model, ids),
            "tokens": ids.numel()}


class SpectralAnalyzer:
    """The seed's analyzer API over the functions above:

        analyzer = SpectralAnalyzer(model)
        analyzer.analyze_architecture()["param_ratio"], ...["compute_ratio"]
        analyzer.monitor_spectral_operations(input_ids)  # per-band energy and mix weights of that batch

    The model is put in eval mode for each call and given back in the mode it was in.
    """

    ARCHITECTURE_LENGTH = 256  # FLOPs per token depend on the length (FFTs), barely on the ids

    def __init__(self, model):
        try:
            check_spectral(model)
        except ValueError as e:
            raise LmzooError(f"{e}; pass a spectral-llm model") from None
        self.model = model

    def analyze_architecture(self, input_ids: torch.Tensor | None = None) -> dict[str, Any]:
        """Parameter and compute shares per component: `param_ratio` and `compute_ratio` (the spectral
        shares) plus the split they come from. FLOPs are counted on `input_ids`, by default on one
        fixed sequence of ARCHITECTURE_LENGTH random ids."""
        if input_ids is None:
            input_ids = torch.randint(0, self.model.config.vocab_size, (1, self.ARCHITECTURE_LENGTH),
                                      generator=torch.Generator().manual_seed(0))
        result = self._in_eval_mode(architecture, self._checked(input_ids))
        return {"param_ratio": result["spectral_parameter_ratio"], "compute_ratio": result["spectral_compute_ratio"],
                **result}

    def monitor_spectral_operations(self, input_ids: torch.Tensor) -> dict[str, Any]:
        """On the batch `input_ids` ([B, L] or [L]): each layer's band output energy (mean square of
        each weighted band's mixer output), each band's share of its layer's energy, and the mix
        weights that forward used."""
        energy = self._in_eval_mode(band_energy, self._checked(input_ids))
        return {"band_energy": energy, "band_energy_share": [[e / (sum(layer) or 1.0) for e in layer]
                                                              for layer in energy],
                **mix_weights(self.model), "tokens": self._checked(input_ids).numel()}

    def _checked(self, ids) -> torch.Tensor:
        if not isinstance(ids, torch.Tensor) or ids.dtype not in (torch.int32, torch.int64) or ids.dim() not in (1, 2):
            raise LmzooError("input_ids must be an integer tensor of token ids, shape [batch, length] or [length]")
        ids = ids.reshape(1, -1) if ids.dim() == 1 else ids
        vocab = self.model.config.vocab_size
        if ids.numel() == 0 or int(ids.min()) < 0 or int(ids.max()) >= vocab:
            raise LmzooError(f"input_ids must be non-empty ids in 0..{vocab - 1} (the model's vocabulary)")
        return ids.to(next(self.model.parameters()).device)

    def _in_eval_mode(self, fn, ids: torch.Tensor):
        was_training = self.model.training
        self.model.eval()
        try:
            return fn(self.model, ids)
        finally:
            self.model.train(was_training)
