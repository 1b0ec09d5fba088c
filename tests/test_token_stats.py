"""Per-token statistics (forward(token_stats=True)): what each architecture did at each token."""
import pytest
import torch

import lmzoo

# What each architecture reports: name -> (shape after [B, L] given the nano config, dtype).
EXPECTED = {
    "transformer": {},
    "spectral-llm": {},
    "complexity": {"expert": ((), torch.int64)},
    "spike-walze": {"spiked": (("n_layers",), torch.bool)},
    "spike-transformer": {"spike_rate": (("n_layers",), torch.float32)},
    "efficia-1": {"fusion": (("n_layers", 3), torch.float32)},
}


def test_every_architecture_is_listed():
    assert set(EXPECTED) == set(lmzoo.list_architectures())


@pytest.mark.parametrize("arch", sorted(EXPECTED))
def test_token_stats_have_their_shape_and_match_step_by_step_decoding(arch):
    torch.manual_seed(0)
    model = lmzoo.create_model(arch, "nano").eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 6))
    with torch.no_grad():
        full = model(ids, token_stats=True)
        plain = model(ids)
        state = model.init_state()
        model(ids[:, :4], state=state)
        step = model(ids[:, 4:5], state=state, token_stats=True)
    assert plain.token_stats == {}  # only when asked
    torch.testing.assert_close(full.logits, plain.logits, rtol=0, atol=0)
    assert set(full.token_stats) == set(EXPECTED[arch])
    for name, (tail, dtype) in EXPECTED[arch].items():
        shape = (2, 6, *(getattr(model.config, d) if isinstance(d, str) else d for d in tail))
        value = full.token_stats[name]
        assert tuple(value.shape) == shape and value.dtype == dtype and not value.requires_grad
        # A one-token decoding step reports what the full pass reported at that position.
        torch.testing.assert_close(step.token_stats[name][:, 0], value[:, 4], rtol=1e-4, atol=1e-5)


def test_values_mean_what_they_say():
    model = lmzoo.create_model("complexity", "nano", n_experts=4).eval()
    ids = torch.tensor([[0, 1, 2, 3, 4, 9]])
    with torch.no_grad():
        assert model(ids, token_stats=True).token_stats["expert"].tolist() == [[0, 1, 2, 3, 0, 1]]
        fusion = lmzoo.create_model("efficia-1", "nano").eval()(ids, token_stats=True).token_stats["fusion"]
        rates = lmzoo.create_model("spike-transformer", "nano").eval()(ids, token_stats=True).token_stats
    torch.testing.assert_close(fusion.sum(-1), torch.ones(fusion.shape[:-1]))  # softmax weights
    assert bool(((rates["spike_rate"] >= 0) & (rates["spike_rate"] <= 1)).all())
