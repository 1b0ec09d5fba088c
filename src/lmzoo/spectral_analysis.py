"""The spectral analyzer (`lmzoo analyze`): what share of a spectral-llm's parameters and compute
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
def analyze(model, ids: torch.Tensor) -> dict[str, Any]:
    """Everything above for `model` (a spectral-llm) on the token ids `ids` [B, L]."""
    if not hasattr(model, "harmonic"):
        raise ValueError(f"the spectral analyzer needs a spectral-llm model, got '{model.config.arch}'")
    model.eval()
    params, flops = parameter_split(model), flop_split(model, ids)
    total_params = sum(params.values())
    return {
        "parameters": params,
        "spectral_parameter_ratio": sum(params[k] for k in SPECTRAL) / total_params,
        "flops_per_token": flops,
        "spectral_compute_ratio": sum(flops[k] for k in SPECTRAL) / sum(flops.values()),
        # embedding="harmonic" has no table: the harmonic share is 1 by construction.
        "harmonic_mix_a": float(torch.sigmoid(model.harmonic_mix)) if model.embed is not None else 1.0,
        "ffn_alpha": [float(torch.sigmoid(b.ffn.mix_logit)) for b in model.blocks],
        "band_weights": [b.mixer.band_weight.tolist() for b in model.blocks],
        "band_energy": band_energy(model, ids),
        "tokens": ids.numel(),
    }
