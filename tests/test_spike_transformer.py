"""spike-transformer parts: surrogate gradients, LIF dynamics, the O(L) attention, O(1) state."""
import math

import pytest
import torch

import lmzoo
from lmzoo.layers.lif import LIF, spike, surrogate_derivative


@pytest.mark.parametrize("kind,scale", [("sigmoid", 2.0), ("atan", 2.0)])
def test_spike_forward_is_heaviside_and_backward_is_the_surrogate(kind, scale):
    x = torch.linspace(-3, 3, 61, requires_grad=True)
    s = spike(x, kind, scale)
    assert torch.equal(s, (x > 0).float())
    s.sum().backward()
    torch.testing.assert_close(x.grad, surrogate_derivative(x.detach(), kind, scale))
    assert x.grad.max() == pytest.approx({"sigmoid": scale / 4, "atan": scale / 2}[kind])


def test_lif_integrates_leaks_fires_and_resets():
    lif = LIF(threshold=1.0, beta=0.5)
    # constant input 0.6: u = 0.6, 0.9, 1.05 -> spike and reset, then 0.6 again
    out = lif(torch.full((4, 1), 0.6))
    assert out.flatten().tolist() == [0.0, 0.0, 1.0, 0.0]
    soft = LIF(threshold=1.0, beta=0.5, reset="soft")(torch.full((4, 1), 0.6))
    assert soft.flatten().tolist() == [0.0, 0.0, 1.0, 0.0]  # u after soft reset: 0.05 -> 0.625
    clipped = LIF(threshold=100.0, beta=1.0)(torch.full((30, 1), 1.0))
    assert clipped.sum() == 0  # the membrane is clipped at 5, never reaches 100


def test_every_weight_gets_a_gradient_through_the_spikes():
    torch.manual_seed(0)
    model = lmzoo.create_model("spike-transformer", "nano")
    ids = torch.randint(0, 259, (2, 48))
    model(ids, labels=ids).loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for block in model.blocks:  # the ones a missing surrogate would leave at zero
        for linear in (block.q, block.k, block.v, block.ffn_in):
            assert linear.weight.grad.abs().sum() > 0


def test_spike_driven_attention_equals_a_quadratic_reference():
    torch.manual_seed(0)
    model = lmzoo.create_model("spike-transformer", "nano").eval()
    block = model.blocks[0]
    seen = {}
    block.lif["attn"].register_forward_hook(lambda m, i, o: seen.setdefault("input", i[0]))
    block.lif["q"].register_forward_hook(lambda m, i, o: seen.setdefault("q", o))
    block.lif["k"].register_forward_hook(lambda m, i, o: seen.setdefault("k", o))
    block.lif["v"].register_forward_hook(lambda m, i, o: seen.setdefault("v", o))
    model(torch.randint(0, 259, (1, 20)))
    q, k, v = seen["q"], seen["k"], seen["v"]
    n = q.shape[2]
    causal = torch.ones(n, n).tril() / torch.arange(1, n + 1)[:, None]  # mean over j <= i
    reference = q * torch.einsum("ij,tbjd->tbid", causal, k * v) * block.attn_gain
    torch.testing.assert_close(seen["input"], reference)


def test_decoding_state_does_not_grow_with_position():
    model = lmzoo.create_model("spike-transformer", "nano").eval()
    state = model.init_state()
    sizes = []
    for _ in range(3):
        model(torch.randint(0, 259, (1, 50)), state=state)
        sizes.append(sum(layer.sum.numel() for layer in state.layers))
    assert sizes[0] == sizes[-1] == model.config.n_layers * model.config.timesteps * model.config.d_model


def test_stats_hold_every_site_and_bad_config_is_clear():
    model = lmzoo.create_model("spike-transformer", "nano")
    stats = model(torch.randint(0, 259, (1, 16))).stats
    assert {"spike_rate", "spike_rate/layer0", "spike_rate/layer0/q", "spike_rate/layer4/ffn_hidden"} <= set(stats)
    assert 0 < float(stats["spike_rate"]) < 1 and math.isfinite(float(stats["spike_rate"]))
    with pytest.raises(ValueError, match="spiking site"):
        lmzoo.create_model("spike-transformer", "nano", thresholds={"w": 0.3})
    with pytest.raises(ValueError, match="surrogate"):
        lmzoo.create_model("spike-transformer", "nano", surrogate="relu")


@pytest.mark.parametrize("reset,surrogate,learn", [("hard", "sigmoid", False), ("soft", "atan", True),
                                                   ("hard", "atan", True)])
def test_fused_lif_matches_the_step_by_step_reference(reset, surrogate, learn):
    from lmzoo.layers.lif import reference_lif

    torch.manual_seed(0)
    lif = LIF(0.5, beta=0.9, surrogate=surrogate, reset=reset, learn_threshold=learn).double()
    current = (torch.randn(4, 3, 7, 5, dtype=torch.float64) * 3).requires_grad_()  # some values clip at 5
    weights = torch.randn(4, 3, 7, 5, dtype=torch.float64)
    fused = lif(current)
    grads = torch.autograd.grad((fused * weights).sum(), [current, *lif.parameters()])
    ref = reference_lif(lif, current)
    ref_grads = torch.autograd.grad((ref * weights).sum(), [current, *lif.parameters()])
    assert torch.equal(fused, ref)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want)
