"""Operation counting: ACs for binary inputs, MACs otherwise, against hand counts."""
import json

import pytest
import torch
from torch import nn

import lmzoo
from lmzoo.cli.main import main
from lmzoo.energy import Costs, OperationCounter, measure_energy


def test_binary_inputs_count_accumulates_real_inputs_count_macs():
    net = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    counter = OperationCounter(net)
    counter.observe(2)
    net[0](torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0]]))  # 4 nonzero spikes x fan-out 3
    net[1](torch.tensor([[0.5, -1.0, 2.0], [1.0, 1.0, 0.3]]))          # real: 6 inputs x fan-out 2
    counter.close()
    assert counter.counts["0"] == {"ac": 12, "mac": 0, "dense_mac": 24, "executed_mac": 24}
    assert counter.counts["1"] == {"ac": 0, "mac": 12, "dense_mac": 12, "executed_mac": 12}


def test_dense_transformer_is_its_own_dense_reference():
    model = lmzoo.create_model("transformer", "nano")
    result = measure_energy(model, [torch.randint(0, 259, (2, 32))])
    assert result["total"]["ac_per_token"] == 0 and result["total"]["energy_ratio"] == pytest.approx(1.0)


def test_spiking_layer_counts_follow_its_spike_rates():
    torch.manual_seed(0)
    # token_shift=0: Q, K, V then read exactly the input site's spikes, whose rate the formula uses
    model = lmzoo.create_model("spike-transformer", "nano", n_layers=1, token_shift=0).eval()
    ids = torch.randint(0, 259, (2, 32))
    counter = OperationCounter(model)
    counter.observe(ids.numel())
    with torch.no_grad(), counter.products():
        rates = {k: float(v) for k, v in model(ids).stats.items()}
    counter.close()
    linear = [c for name, c in counter.counts.items() if name.startswith("blocks.0.")]  # the block's nn.Linear
    d, ff, t = model.config.d_model, model.config.d_ff, model.config.timesteps
    expected = t * (3 * rates["spike_rate/layer0/input"] * d * d + rates["spike_rate/layer0/attn"] * d * d
                    + rates["spike_rate/layer0/ffn_in"] * d * ff + rates["spike_rate/layer0/ffn_hidden"] * ff * d)
    assert sum(c["mac"] for c in linear) == 0
    assert sum(c["ac"] for c in linear) / ids.numel() == pytest.approx(expected, rel=1e-4)
    assert sum(c["dense_mac"] for c in linear) / ids.numel() == 4 * d * d + 2 * d * ff  # once per token, not T
    # The block's other products (the decayed running sums' einsums) are counted too, also 1/T in the dense model.
    others = counter.counts["layer0"]
    assert others["executed_mac"] > 0 and others["dense_mac"] == others["executed_mac"] // t


def test_energy_cli_prints_a_table_and_writes_json(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("Ein kleiner Text über Energie. " * 40)
    out = tmp_path / "e.json"
    assert main(["energy", "spike-transformer", "--data", str(text), "--seq-len", "64", "--max-tokens", "512",
                 "--out", str(out)]) == 0
    assert "energy vs dense same-shape model" in capsys.readouterr().out
    assert json.loads(out.read_text())["tokens"] == 512
    assert main(["energy", "spike-transformer", "--data", str(tmp_path / "missing.txt")]) == 2


def _attention_macs_per_token(length: int, n_heads: int, head_dim: int) -> float:
    """Causal softmax attention: QK^T and PV over the visible pairs, for every query head."""
    pairs = length * (length + 1) // 2
    return pairs * 2 * head_dim * n_heads / length


@pytest.mark.parametrize("arch,expert_share", [("transformer", 1), ("complexity", 4)])
def test_every_product_of_a_softmax_model_is_counted_by_hand(arch, expert_share):
    """The fused qkv and gate/up projections run as F.linear on weight slices and the attention
    in one SDPA kernel: nn.Linear hooks alone saw a third of these MACs."""
    model = lmzoo.create_model(arch, "nano")
    c = model.config
    length, head_dim = 64, c.d_model // c.n_heads
    qkv = c.d_model * (c.d_model + 2 * c.n_kv_heads * head_dim)
    mlp = 3 * c.d_model * c.d_ff // expert_share  # gate, up, down; token-routed: one expert of E
    per_layer = qkv + c.d_model * c.d_model + mlp + _attention_macs_per_token(length, c.n_heads, head_dim)
    expected = c.n_layers * per_layer + c.d_model * c.vocab_size  # + the LM head
    total = measure_energy(model, [torch.randint(0, 259, (1, length))])["total"]
    assert total["mac_per_token"] == pytest.approx(expected) and total["ac_per_token"] == 0
    assert total["dense_mac_per_token"] == pytest.approx(expected)


@pytest.mark.parametrize("arch", lmzoo.list_architectures())
def test_every_architecture_counts_what_the_flop_counter_counts(arch):
    """An independent count of the same forward (FlopCounterMode, 2 FLOPs per MAC) agrees with
    the products counted, whatever form they take (einsum, bmm, grouped mm, convolution, FFT)."""
    from lmzoo.accounting import flop_counter

    torch.manual_seed(0)
    model = lmzoo.create_model(arch, "nano").eval()
    ids = torch.randint(0, 259, (1, 64))
    with torch.no_grad(), flop_counter() as counter:
        model(ids)
    total = measure_energy(model, [ids])["total"]
    assert total["executed_mac_per_token"] == pytest.approx(counter.get_total_flops() / 2 / ids.numel(), rel=1e-6)
    assert total["ac_per_token"] + total["mac_per_token"] <= total["executed_mac_per_token"] * (1 + 1e-9)


def test_products_outside_linear_layers_count_accumulates_for_spikes():
    spikes = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])  # 3 nonzeros, each adds a row of 4
    real = torch.randn(3, 4)
    counter = OperationCounter(nn.Identity())
    counter.observe(2)
    with torch.no_grad(), counter.products():
        spikes @ real
        real.T @ spikes.T                       # binary second operand: 3 nonzeros x 4 rows
        torch.bmm(real[None], real.T[None])     # real x real: 3 * 3 * 4 MACs
        torch.zeros(2, 3) @ real                # an all-zero operand is not a spike train
    counter.close()
    assert counter.counts["other"]["ac"] == 12 + 12
    assert counter.counts["other"]["mac"] == 36 + 24
    assert counter.counts["other"]["executed_mac"] == 24 + 24 + 36 + 24
