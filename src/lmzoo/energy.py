"""Operation and energy accounting for spiking (and any other) models, on real text.

Every `nn.Linear` is watched while the model reads the text. When a layer's input is binary
(spikes), each nonzero input only adds its weight row into the output: `nonzero inputs x fan-out`
accumulates (ACs). Otherwise every input multiplies: `inputs x fan-out` multiply-accumulates
(MACs). Energy = e_AC * ACs + e_MAC * MACs, by default 0.9 pJ and 4.6 pJ (32-bit float add and
multiply-add in 45 nm, Horowitz 2014), as is the convention in the spiking-network literature.

The dense reference is the same network as a non-spiking one: every linear layer run once per
token (no timesteps) on real-valued inputs, all MACs. Only linear layers are counted, for both:
the spiking attention's running sums and the elementwise work of norms and neurons are left out.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from lmzoo.modeling import CausalLM

E_AC_PJ, E_MAC_PJ = 0.9, 4.6


@dataclass
class Costs:
    ac_pj: float = E_AC_PJ
    mac_pj: float = E_MAC_PJ


class OperationCounter:
    """Forward hooks on every nn.Linear of `model` that count ACs/MACs and the dense equivalent."""

    def __init__(self, model: nn.Module):
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: {"ac": 0, "mac": 0, "dense_mac": 0})
        self.tokens = 0
        self._batch_tokens = 0
        self._hooks = [module.register_forward_hook(self._hook(name))
                       for name, module in model.named_modules() if isinstance(module, nn.Linear)]
        # Linear layers inside the model's declared blocks are reported per block ("layer<i>").
        blocks = model.blocks if isinstance(model, CausalLM) else ()
        block_of = {id(m): f"layer{i}" for i, block in enumerate(blocks) for m in block.modules()}
        self.groups = {name: block_of.get(id(module), name) for name, module in model.named_modules()}

    def _hook(self, name: str):
        def count(module: nn.Linear, inputs, output) -> None:
            x = inputs[0].detach()
            fan_out = module.out_features
            if bool(((x == 0) | (x == 1)).all()):
                self.counts[name]["ac"] += int(torch.count_nonzero(x)) * fan_out
            else:
                self.counts[name]["mac"] += x.numel() * fan_out
            self.counts[name]["dense_mac"] += self._batch_tokens * module.in_features * fan_out
        return count

    def observe(self, tokens: int) -> None:
        """Call before each forward with the number of tokens it processes."""
        self._batch_tokens = tokens
        self.tokens += tokens

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()


@torch.no_grad()
def measure_energy(model: nn.Module, windows: list[torch.Tensor], costs: Costs = Costs()) -> dict[str, Any]:
    """Run `windows` ([B, L] id tensors) through `model`; per-layer and total ops and energy per token."""
    model.eval()
    counter = OperationCounter(model)
    rate_sums: dict[str, float] = defaultdict(float)
    try:
        for ids in windows:
            counter.observe(ids.numel())
            for key, value in model(ids).stats.items():
                if key.startswith("spike_rate"):
                    rate_sums[key] += float(value) * ids.numel()
    finally:
        counter.close()
    return summarise(counter, {k: v / counter.tokens for k, v in rate_sums.items()}, costs)


def summarise(counter: OperationCounter, rates: dict[str, float], costs: Costs) -> dict[str, Any]:
    tokens = counter.tokens
    groups: dict[str, dict[str, float]] = defaultdict(lambda: {"ac": 0.0, "mac": 0.0, "dense_mac": 0.0})
    for name, c in counter.counts.items():
        group = counter.groups[name]
        for key in ("ac", "mac", "dense_mac"):
            groups[group][key] += c[key] / tokens
    layers = []
    for group, g in groups.items():
        energy = g["ac"] * costs.ac_pj + g["mac"] * costs.mac_pj
        layers.append({"layer": group, "ac_per_token": g["ac"], "mac_per_token": g["mac"],
                       "dense_mac_per_token": g["dense_mac"], "energy_pj_per_token": energy,
                       "dense_energy_pj_per_token": g["dense_mac"] * costs.mac_pj,
                       "spike_rate": rates.get(f"spike_rate/{group}")})
    total = {key: sum(layer[key] for layer in layers) for key in
             ("ac_per_token", "mac_per_token", "dense_mac_per_token", "energy_pj_per_token",
              "dense_energy_pj_per_token")}
    total["energy_ratio"] = total["energy_pj_per_token"] / total["dense_energy_pj_per_token"]
    total["mac_reduction"] = 1 - total["mac_per_token"] / total["dense_mac_per_token"]
    total["operations_ratio"] = (total["ac_per_token"] + total["mac_per_token"]) / total["dense_mac_per_token"]
    return {"tokens": tokens, "costs": asdict(costs), "layers": layers, "total": total,
            "spike_rates": {k: v for k, v in rates.items()}}
