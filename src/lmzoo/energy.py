"""Operation and energy accounting for spiking (and any other) models, on real text.

Every matrix product the model runs is counted, in two kinds:

* `nn.Linear` layers, watched by hooks. When a layer's input is binary (spikes), each nonzero
  input only adds its weight row into the output: `nonzero inputs x fan-out` accumulates (ACs).
  Otherwise every input multiplies: `inputs x fan-out` multiply-accumulates (MACs).
* every other product, seen at the ATen level while the model runs (a `TorchDispatchMode`):
  `F.linear` on a fused weight's slices (the transformer's qkv and gate/up projections), the
  attention kernels (counted causally), batched matmuls and einsums (linear attention, the
  spiking model's decayed running sums), grouped expert matmuls, convolutions and FFTs. A
  `mm`/`bmm` with a binary operand counts ACs the same way; the rest count MACs (FLOPs / 2 by
  `lmzoo.accounting`'s formulas; an FFT's 5 N log2 N FLOPs are 2.5 N log2 N MACs).

Energy = e_AC * ACs + e_MAC * MACs, by default 0.9 pJ and 4.6 pJ (32-bit float add and
multiply-add in 45 nm, Horowitz 2014), as is the convention in the spiking-network literature.

The dense reference is the same network as a non-spiking one: every product as the model runs
it, on real-valued inputs (all MACs), and once per token rather than once per timestep, i.e. a
product inside the blocks of a model with T timesteps counts 1/T of its size. For a non-spiking
model it is the model itself. The elementwise work of norms, activations and neurons is left out
of both.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry, shape_wrapper

from lmzoo.accounting import custom_flop_formulas
from lmzoo.modeling import CausalLM

E_AC_PJ, E_MAC_PJ = 0.9, 4.6
OUTSIDE_BLOCKS = "other"  # the group of products run outside the model's blocks (none but nn.Linear today)
aten = torch.ops.aten
_PRODUCTS = {aten.mm: (0, 1), aten.addmm: (1, 2), aten.bmm: (0, 1), aten.baddbmm: (1, 2)}  # operand positions


@dataclass
class Costs:
    ac_pj: float = E_AC_PJ
    mac_pj: float = E_MAC_PJ


def _is_binary(x: torch.Tensor) -> bool:
    """Spikes: every value 0 or 1, and some 1 (an all-zero operand, such as an empty recurrent
    state, is not taken for a silent spike train: dense hardware multiplies it all the same)."""
    return bool(((x == 0) | (x == 1)).all()) and bool(x.any())


def _new_count() -> dict[str, int]:
    # executed_mac: the products' full size, what dense hardware runs (a check against FLOP counts)
    return {"ac": 0, "mac": 0, "dense_mac": 0, "executed_mac": 0}


class OperationCounter:
    """Counts ACs/MACs and the dense equivalent of every product `model` runs (see the module
    docstring): hooks on each nn.Linear, and `products()`, a dispatch mode for the rest."""

    def __init__(self, model: nn.Module):
        self.counts: dict[str, dict[str, int]] = defaultdict(_new_count)
        self.tokens = 0
        self._inside_linear = 0
        self.timesteps = int(getattr(getattr(model, "config", None), "timesteps", 1) or 1)
        self._hooks = []
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear):
                self._hooks += [module.register_forward_pre_hook(self._enter_linear),
                                module.register_forward_hook(self._hook(name))]
        # Products inside the model's declared blocks are reported per block ("layer<i>").
        blocks = model.blocks if isinstance(model, CausalLM) else ()
        block_of = {id(m): f"layer{i}" for i, block in enumerate(blocks) for m in block.modules()}
        self.groups = {name: block_of.get(id(module), name) for name, module in model.named_modules()}
        self.group = OUTSIDE_BLOCKS
        self.block_groups = {f"layer{i}" for i in range(len(blocks))}
        for i, block in enumerate(blocks):
            self.groups[f"layer{i}"] = f"layer{i}"
            self._hooks += [block.register_forward_pre_hook(self._enter_group(f"layer{i}")),
                            block.register_forward_hook(self._leave_group)]
        self.groups[OUTSIDE_BLOCKS] = OUTSIDE_BLOCKS

    def _enter_linear(self, module, inputs) -> None:
        self._inside_linear += 1

    def _enter_group(self, group: str):
        def enter(module, inputs) -> None:
            self.group = group
        return enter

    def _leave_group(self, module, inputs, output) -> None:
        self.group = OUTSIDE_BLOCKS

    def _hook(self, name: str):
        def count(module: nn.Linear, inputs, output) -> None:
            self._inside_linear -= 1
            x = inputs[0].detach()
            fan_out = module.out_features
            if _is_binary(x):
                self.counts[name]["ac"] += int(torch.count_nonzero(x)) * fan_out
            else:
                self.counts[name]["mac"] += x.numel() * fan_out
            self.counts[name]["executed_mac"] += x.numel() * fan_out
            self.counts[name]["dense_mac"] += x.numel() * fan_out // self._repeats(self.groups[name])
        return count

    def count_product(self, func, args: tuple, kwargs: dict, out) -> None:
        """One ATen op run outside an nn.Linear: counted if it is a product (else ignored)."""
        packet = func.overloadpacket
        if self._inside_linear or (packet not in _PRODUCTS and packet not in _FORMULAS):
            return
        count = self.counts[self.group]
        size = _FORMULAS[packet](*args, **kwargs, out_val=out) // 2
        count["executed_mac"] += size
        count["dense_mac"] += size // self._repeats(self.group)
        if packet in _PRODUCTS:
            a, b = (args[i] for i in _PRODUCTS[packet])
            if _is_binary(a):  # each nonzero of a adds a row of b into the output: N adds
                count["ac"] += int(torch.count_nonzero(a)) * b.shape[-1]
                return
            if _is_binary(b):
                count["ac"] += int(torch.count_nonzero(b)) * a.shape[-2]
                return
        count["mac"] += size

    def _repeats(self, group: str) -> int:
        """How often a product of `group` runs per token: T timesteps inside a spiking model's blocks."""
        return 1 if group not in self.block_groups else self.timesteps

    def products(self) -> TorchDispatchMode:
        """The mode to run the forward under, so products outside nn.Linear are counted too."""
        return _ProductMode(self)

    def observe(self, tokens: int) -> None:
        """Call before each forward with the number of tokens it processes."""
        self.tokens += tokens

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()


# FLOPs of every product op: PyTorch's formulas with lmzoo's (causal attention, grouped mm, FFT) over them.
_FORMULAS = {**flop_registry, **{op: shape_wrapper(f) for op, f in custom_flop_formulas().items()}}


class _ProductMode(TorchDispatchMode):
    def __init__(self, counter: OperationCounter):
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.counter.count_product(func, args, kwargs, out)
        return out


@torch.no_grad()
def measure_energy(model: nn.Module, windows: list[torch.Tensor], costs: Costs = Costs()) -> dict[str, Any]:
    """Run `windows` ([B, L] id tensors) through `model`; per-layer and total ops and energy per token."""
    model.eval()
    counter = OperationCounter(model)
    rate_sums: dict[str, float] = defaultdict(float)
    try:
        for ids in windows:
            counter.observe(ids.numel())
            with counter.products():
                stats = model(ids).stats
            for key, value in stats.items():
                if key.startswith("spike_rate"):
                    rate_sums[key] += float(value) * ids.numel()
    finally:
        counter.close()
    return summarise(counter, {k: v / counter.tokens for k, v in rate_sums.items()}, costs)


def summarise(counter: OperationCounter, rates: dict[str, float], costs: Costs) -> dict[str, Any]:
    tokens = counter.tokens
    groups: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(_new_count(), 0.0))
    for name, c in counter.counts.items():
        group = counter.groups[name]
        for key in c:
            groups[group][key] += c[key] / tokens
    layers = []
    for group, g in groups.items():
        energy = g["ac"] * costs.ac_pj + g["mac"] * costs.mac_pj
        layers.append({"layer": group, "ac_per_token": g["ac"], "mac_per_token": g["mac"],
                       "dense_mac_per_token": g["dense_mac"], "executed_mac_per_token": g["executed_mac"],
                       "energy_pj_per_token": energy,
                       "dense_energy_pj_per_token": g["dense_mac"] * costs.mac_pj,
                       "spike_rate": rates.get(f"spike_rate/{group}")})
    total = {key: sum(layer[key] for layer in layers) for key in
             ("ac_per_token", "mac_per_token", "dense_mac_per_token", "executed_mac_per_token",
              "energy_pj_per_token", "dense_energy_pj_per_token")}
    total["energy_ratio"] = total["energy_pj_per_token"] / total["dense_energy_pj_per_token"]
    total["mac_reduction"] = 1 - total["mac_per_token"] / total["dense_mac_per_token"]
    total["operations_ratio"] = (total["ac_per_token"] + total["mac_per_token"]) / total["dense_mac_per_token"]
    return {"tokens": tokens, "costs": asdict(costs), "layers": layers, "total": total,
            "spike_rates": {k: v for k, v in rates.items()}}
