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
    assert counter.counts["0"] == {"ac": 12, "mac": 0, "dense_mac": 24}
    assert counter.counts["1"] == {"ac": 0, "mac": 12, "dense_mac": 12}


def test_dense_transformer_is_its_own_dense_reference():
    model = lmzoo.create_model("transformer", "nano")
    result = measure_energy(model, [torch.randint(0, 259, (2, 32))])
    assert result["total"]["ac_per_token"] == 0 and result["total"]["energy_ratio"] == pytest.approx(1.0)


def test_spiking_layer_counts_follow_its_spike_rates():
    torch.manual_seed(0)
    # token_shift=0: Q, K, V then read exactly the input site's spikes, whose rate the formula uses
    model = lmzoo.create_model("spike-transformer", "nano", n_layers=1, token_shift=0)
    result = measure_energy(model, [torch.randint(0, 259, (2, 32))], Costs(1.0, 10.0))
    layer = next(l for l in result["layers"] if l["layer"] == "layer0")
    d, ff, t = model.config.d_model, model.config.d_ff, model.config.timesteps
    rates = result["spike_rates"]
    expected = t * (3 * rates["spike_rate/layer0/input"] * d * d + rates["spike_rate/layer0/attn"] * d * d
                    + rates["spike_rate/layer0/ffn_in"] * d * ff + rates["spike_rate/layer0/ffn_hidden"] * ff * d)
    assert layer["mac_per_token"] == 0 and layer["ac_per_token"] == pytest.approx(expected, rel=1e-4)
    assert layer["dense_mac_per_token"] == 4 * d * d + 2 * d * ff
    assert layer["energy_pj_per_token"] == pytest.approx(layer["ac_per_token"])


def test_energy_cli_prints_a_table_and_writes_json(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("Ein kleiner Text über Energie. " * 40)
    out = tmp_path / "e.json"
    assert main(["energy", "spike-transformer", "--data", str(text), "--seq-len", "64", "--max-tokens", "512",
                 "--out", str(out)]) == 0
    assert "energy vs dense same-shape model" in capsys.readouterr().out
    assert json.loads(out.read_text())["tokens"] == 512
    assert main(["energy", "spike-transformer", "--data", str(tmp_path / "missing.txt")]) == 2
