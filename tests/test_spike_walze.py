"""spike-walze parts against plain references, and the gate's promises (the contract covers the rest)."""
import math

import pytest
import torch

import lmzoo
from lmzoo.accounting import flops_per_token
from lmzoo.layers.local_attention import GatedLocalAttention, WindowHistory
from lmzoo.layers.reference import reference_local_attention, reference_walze_conv
from lmzoo.layers.spike_gate import SpikeGate, anneal_temperature, forced_spikes
from lmzoo.layers.walze import CausalWalze


@pytest.mark.parametrize("dilation", [1, 2])
def test_walze_conv_matches_positionwise_reference(dilation):
    torch.manual_seed(0)
    walze = CausalWalze(16, dilation=dilation)
    torch.nn.init.normal_(walze.tap_weight)
    torch.nn.init.normal_(walze.tap_bias)
    h = torch.randn(2, 75, 16)
    ref = reference_walze_conv(h, walze.offsets, walze.tap_weight, walze.tap_bias)
    torch.testing.assert_close(walze.convolve(h), ref, atol=1e-5, rtol=1e-5)


def test_walze_circular_buffer_decoding_matches_full_pass():
    torch.manual_seed(0)
    walze = CausalWalze(8)
    torch.nn.init.normal_(walze.tap_weight)
    h = torch.randn(3, 90, 8)
    full = walze(h)
    buffer, outs, start = walze.new_buffer(), [], 0
    for n in (1, 40, 1, 1, 47):  # chunks shorter and longer than the buffer
        outs.append(walze(h[:, start:start + n], start, buffer))
        start += n
    assert buffer.slots.shape[1] == 33  # the buffer holds only the taps' reach
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("window", [1, 4, 16])
def test_gathered_local_attention_matches_dense_reference(window):
    torch.manual_seed(0)
    attn = GatedLocalAttention(32, 4, 2, window)
    h = torch.randn(2, 37, 32)
    selected = torch.rand(2, 37) < 0.4
    scale = torch.rand(2, 37)
    got = attn(h, selected, scale)
    torch.testing.assert_close(got, reference_local_attention(attn, h, selected, scale), atol=1e-5, rtol=1e-4)
    assert got[~selected].abs().max() == 0


def test_local_attention_history_carries_the_window_across_chunks():
    torch.manual_seed(0)
    attn = GatedLocalAttention(32, 4, 1, 8)
    h, selected, scale = torch.randn(1, 30, 32), torch.rand(1, 30) < 0.5, torch.rand(1, 30)
    full = attn(h, selected, scale)
    history, outs = WindowHistory(), []
    for a, b in ((0, 3), (3, 4), (4, 30)):
        outs.append(attn(h[:, a:b], selected[:, a:b], scale[:, a:b], a, history))
    assert history.k.shape[1] == 7  # w - 1 keys kept
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-5, rtol=1e-4)


def test_forced_pattern_hits_the_rate_and_is_causal():
    for rate in (0.0, 0.25, 0.5, 1.0):
        pattern = forced_spikes(0, 1000, rate, "cpu")
        assert abs(pattern.float().mean().item() - rate) < 2e-3
        torch.testing.assert_close(forced_spikes(300, 700, rate, "cpu"), pattern[300:])


def test_gate_decides_per_token_the_same_in_train_and_eval():
    torch.manual_seed(0)
    gate = SpikeGate(16)
    a, b = torch.randn(2, 50, 16), torch.randn(2, 50, 16)
    p, spike = gate.eval()(a, b)
    assert torch.equal(spike, p > 0.5)
    assert torch.equal(gate.train()(a, b)[1], spike)
    # A token's decision never depends on later tokens (the removed training-time cap did).
    _, prefix = gate(a[:, :20], b[:, :20])
    assert torch.equal(prefix, spike[:, :20])


def test_old_configs_with_the_removed_capacity_still_load():
    config = lmzoo.make_config("spike-walze", "nano").to_dict()
    config["spike_capacity"] = 0.3
    assert lmzoo.get_architecture("spike-walze").config_cls.from_dict(config).d_model == 128


def test_temperature_follows_training_progress():
    assert anneal_temperature(0.0, 1.0, 0.1) == 1.0
    assert math.isclose(anneal_temperature(1.0, 1.0, 0.1), 0.1)
    model = lmzoo.create_model("spike-walze", "nano")
    model.set_training_progress(0.5)
    assert all(math.isclose(b.gate.temperature.item(), 0.1 ** 0.5, rel_tol=1e-6) for b in model.blocks)


def test_spike_stats_and_aux_loss_pull_rate_toward_target():
    torch.manual_seed(0)
    model = lmzoo.create_model("spike-walze", "nano", spike_target=0.0, spike_loss_weight=1.0)
    ids = torch.randint(0, 259, (2, 64))
    out = model(ids, labels=ids)
    assert {f"spike_rate/layer{i}" for i in range(5)} <= set(out.stats) and "spike_rate" in out.stats
    before = float(out.stats["spike_rate"])
    opt = torch.optim.SGD([b.gate.threshold for b in model.blocks], lr=5.0)
    for _ in range(20):
        opt.zero_grad()
        model(ids, labels=ids).aux_loss.backward()
        opt.step()
    assert float(model(ids).stats["spike_rate"]) < before - 0.2


def test_gate_really_skips_attention_work():
    """FLOPs of the whole model fall with the forced spike rate, by the attention path's share."""
    torch.manual_seed(0)
    model = lmzoo.create_model("spike-walze", "nano")
    flops = {}
    for rate in (0.0, 0.25, 1.0):
        model.force_spike_rate(rate)
        flops[rate] = flops_per_token(model, seq_len=256)["forward"]
    d, w = model.config.d_model, model.config.window
    per_spike = model.config.n_layers * (2 * 2 * d * d + 2 * 2 * d * w)  # q, out proj; QK^T and PV
    assert flops[0.0] < flops[0.25] < flops[1.0]
    assert math.isclose(flops[1.0] - flops[0.0], per_spike, rel_tol=0.05)
    assert math.isclose(flops[0.25] - flops[0.0], 0.25 * per_spike, rel_tol=0.05)


def test_forced_rate_out_of_range_is_a_clear_error():
    model = lmzoo.create_model("spike-walze", "nano")
    with pytest.raises(ValueError, match="forced spike rate"):
        model.force_spike_rate(1.5)
    with pytest.raises(ValueError, match="spike_target"):
        lmzoo.create_model("spike-walze", "nano", spike_target=2.0)


def test_ablation_configs_roller_off_and_forced_rate_survive_save_load(tmp_path):
    torch.manual_seed(0)
    model = lmzoo.create_model("spike-walze", "nano", roller=False, forced_spike_rate=0.0).eval()
    assert not any("walze." in name for name, _ in model.named_parameters())
    ids = torch.randint(0, 259, (2, 40))
    out = model(ids)
    assert float(out.stats["spike_rate"]) == 0.0
    state = model.init_state()
    chunks = [model(ids[:, a:b], state=state).logits for a, b in ((0, 17), (17, 18), (18, 40))]
    torch.testing.assert_close(torch.cat(chunks, 1), out.logits, atol=1e-5, rtol=1e-5)
    model.save_pretrained(tmp_path / "m")
    loaded = lmzoo.load(tmp_path / "m")
    assert loaded.blocks[0].gate.force_rate == 0.0
    torch.testing.assert_close(loaded(ids).logits, out.logits)
