"""The fused LIF (`LIFSequence`, hand-written backpropagation through time) against the step-by-step
autograd reference, for every reset/surrogate/threshold setting and at the clip's edges, and the
whole spike-transformer against the same model running the reference neuron."""
import pytest
import torch

import lmzoo
from lmzoo.layers.lif import LIF, MEMBRANE_CLIP, reference_lif, surrogate_derivative, surrogate_slope_


@pytest.mark.parametrize("kind", ["sigmoid", "atan"])
@pytest.mark.parametrize("scale", [2.0, 3.5])
def test_in_place_surrogate_slope_equals_the_derivative(kind, scale):
    x = torch.linspace(-6, 6, 241, dtype=torch.float64)
    torch.testing.assert_close(surrogate_slope_(x.clone(), kind, scale), surrogate_derivative(x, kind, scale))


@pytest.mark.parametrize("reset", ["hard", "soft"])
@pytest.mark.parametrize("surrogate", ["sigmoid", "atan"])
@pytest.mark.parametrize("learn", [False, True])
@pytest.mark.parametrize("steps", [1, 4])
@pytest.mark.parametrize("clip", [False, True])
def test_fused_lif_equals_the_reference_in_every_setting(reset, surrogate, learn, steps, clip):
    torch.manual_seed(0)
    lif = LIF(0.5, beta=0.9, surrogate=surrogate, reset=reset, learn_threshold=learn).double()
    current = torch.randn(steps, 3, 7, 5, dtype=torch.float64).clamp(-2, 2)  # never reaches the clip
    current[0, 0, :2, 0] = torch.tensor([0.5, MEMBRANE_CLIP])  # at theta; on the clip (gradient passes)
    if clip:
        current = current * 3
        current[0, 0, :4, 0] = torch.tensor([MEMBRANE_CLIP, -MEMBRANE_CLIP, 0.5, 9.0])  # on the clip, at theta, past it
    current.requires_grad_()
    weights = torch.randn_like(current)
    inputs = [current, *lif.parameters()]
    fused = lif(current)
    ref = reference_lif(lif, current)
    assert torch.equal(fused, ref)
    for got, want in zip(torch.autograd.grad((fused * weights).sum(), inputs),
                         torch.autograd.grad((ref * weights).sum(), inputs)):
        torch.testing.assert_close(got, want)


def test_fused_lif_gives_no_threshold_gradient_when_none_is_asked():
    lif = LIF(0.5, reset="soft", surrogate="atan")
    current = torch.randn(4, 2, 3, requires_grad=True)
    lif(current).sum().backward()
    assert current.grad is not None and not isinstance(lif.threshold, torch.nn.Parameter)


@pytest.mark.parametrize("overrides", [{}, {"reset": "hard", "surrogate": "sigmoid", "learn_thresholds": True}])
def test_spike_transformer_equals_the_model_with_the_step_by_step_neuron(overrides, monkeypatch):
    torch.manual_seed(0)
    model = lmzoo.create_model("spike-transformer", "nano", n_layers=2, **overrides).double()
    ids = torch.randint(0, 259, (2, 24))

    def run():
        model.zero_grad()
        out = model(ids, labels=ids)
        out.loss.backward()
        return out.logits.detach(), [p.grad.clone() for p in model.parameters()]

    logits, grads = run()
    monkeypatch.setattr(LIF, "forward", reference_lif)
    ref_logits, ref_grads = run()
    assert torch.equal(logits, ref_logits)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want)
