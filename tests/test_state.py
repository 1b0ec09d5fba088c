"""The shared decoding-state protocol (lmzoo.layers.state) and what a new architecture needs."""
from dataclasses import dataclass

import pytest
import torch
import test_contract as contract  # a module, so pytest does not collect its tests here again
from conftest import contract_cases
from test_contract import assert_close, build, random_ids
from torch import nn

import lmzoo
from lmzoo.config import ModelConfig
from lmzoo.layers.state import LayerState
from lmzoo.modeling import BlockContext, CausalLM
from lmzoo.registry import _ARCHITECTURES, register

CASES = list(contract_cases())


@pytest.mark.parametrize("arch,overrides", CASES)
def test_selecting_rows_continues_each_row_exactly(arch, overrides):
    """Drop and reorder rows of a decoding batch between calls: each kept row goes on as if alone."""
    model = build(arch, overrides)
    ids = random_ids(model, batch=3, length=30)
    with torch.no_grad():
        full = model(ids).logits
        state = model.init_state()
        model(ids[:, :17], state=state)
        rows = torch.tensor([2, 0])
        state.select(rows)
        rest = model(ids[rows, 17:], state=state).logits
    assert_close(rest, full[rows, 17:], 1e-4)


@pytest.mark.parametrize("arch", lmzoo.list_architectures())
def test_state_size_is_declared_and_counted(arch):
    model = build(arch, {})
    ids = random_ids(model, batch=2, length=128)
    with torch.no_grad():
        state = model.init_state()
        assert state.nbytes() == 0  # parts are allocated by the first call
        model(ids, state=state)
        first = state.nbytes()
        model(ids, state=state)
    assert first > 0
    assert (state.nbytes() == first) == model.constant_state
    for part in state.parts():  # every tensor a state holds is declared with its batch dimension
        undeclared = {name for name, value in vars(part).items()
                      if isinstance(value, (torch.Tensor, list, LayerState)) and name not in part.batch_dims}
        assert not undeclared, f"{type(part).__name__} holds undeclared fields {undeclared}"


def test_layer_state_select_and_to_follow_the_declared_batch_dims():
    class Toy(LayerState):
        batch_dims = {"rows": 0, "time_major": 1, "shared": None, "parts": 0}

    state = Toy()
    state.rows, state.time_major = torch.arange(3.0), torch.arange(6.0).view(2, 3)
    state.shared, state.parts = torch.ones(4), [torch.arange(3), torch.arange(3) * 10]
    state.select(torch.tensor([2, 0]))
    assert state.rows.tolist() == [2.0, 0.0] and state.time_major.tolist() == [[2.0, 0.0], [5.0, 3.0]]
    assert state.shared.shape == (4,) and [p.tolist() for p in state.parts] == [[2, 0], [20, 0]]
    assert state.nbytes() == 2 * 4 + 4 * 4 + 4 * 4 + 2 * 2 * 8
    assert state.to("meta").rows.device.type == "meta"


# ---- a new architecture: one model file (here, this test) and one registry entry -------------------
@dataclass
class PrefixMeanConfig(ModelConfig):
    vocab_size: int = 259
    d_model: int = 64
    n_layers: int = 2


class PrefixMeanState(LayerState):
    batch_dims = {"total": 0, "last": 0}  # [B, D]: the sum of the block's inputs so far, the last input


class PrefixMeanBlock(nn.Module):
    """x_t += A x_{t-1} + B mean_{j <= t} x_j: a small causal token mixer with a constant-size state."""

    def __init__(self, d: int):
        super().__init__()
        self.shift = nn.Linear(d, d, bias=False)
        self.mix = nn.Linear(d, d, bias=False)
        self.ffn = nn.Linear(d, d)

    def new_state(self) -> PrefixMeanState:
        return PrefixMeanState()

    def forward(self, x, context: BlockContext, state: PrefixMeanState | None):
        sums = x.cumsum(1)
        previous = torch.cat((x.new_zeros(x.shape[0], 1, x.shape[2]), x[:, :-1]), 1)
        if state is not None and state.total is not None:
            sums = sums + state.total[:, None]
            previous[:, 0] = state.last
        if state is not None:
            state.total, state.last = sums[:, -1], x[:, -1]
        count = torch.arange(context.start + 1, context.start + x.shape[1] + 1, dtype=x.dtype)
        x = x + self.shift(previous) + self.mix(sums / count[:, None])
        return x + self.ffn(torch.tanh(x))


class PrefixMeanLM(CausalLM):
    lora_targets = ("mix",)
    constant_state = True

    def __init__(self, config: PrefixMeanConfig):
        super().__init__(config)
        self.blocks = nn.ModuleList(PrefixMeanBlock(config.d_model) for _ in range(config.n_layers))
        self.init_weights()

    def backbone(self, input_ids, state, context):
        return self.run_blocks(self.embed(input_ids), context, state), None, {}


@pytest.fixture
def toy_architecture():
    register("prefix-mean", PrefixMeanConfig, {"nano": {}}, "test-only toy architecture")(PrefixMeanLM)
    try:
        yield "prefix-mean"
    finally:
        _ARCHITECTURES.pop("prefix-mean")


def test_a_new_architecture_needs_one_model_file_and_one_registry_entry(toy_architecture, tmp_path):
    arch = toy_architecture
    contract.test_causality(arch, {}, "train")
    contract.test_decode_parity(arch, {})
    contract.test_learning(arch, {})
    contract.test_save_load_round_trip(arch, {}, tmp_path)
    contract.test_bad_input(arch)
    test_selecting_rows_continues_each_row_exactly(arch, {})
    test_state_size_is_declared_and_counted(arch)
    # What the tools around the model read from its declarations:
    from lmzoo.energy import measure_energy
    from lmzoo.generation import generate
    from lmzoo.training.finetune import freeze_layers, lora_targets
    model = lmzoo.create_model(arch)
    assert lora_targets(model) == ["blocks.0.mix", "blocks.1.mix"]
    assert [row["layer"] for row in measure_energy(model, [random_ids(model)])["layers"]][:2] == ["layer0", "layer1"]
    assert generate(model, random_ids(model, batch=1, length=5), max_new_tokens=4, temperature=0).shape == (1, 9)
    # Without `mixed_positions` the batch decoder keeps one state per row, still exact.
    from lmzoo.batching import BatchDecoder
    decoder = BatchDecoder(model.eval())
    (first, _), (second, _) = decoder.add([1, 2, 3]), decoder.add([4])
    with torch.no_grad():
        assert_close(decoder.step({first: 5, second: 6})[second].logits, model(torch.tensor([[4, 6]])).logits[0, -1], 1e-4)
    freeze_layers(model, 1)
    assert not any(p.requires_grad for p in model.blocks[0].parameters())
