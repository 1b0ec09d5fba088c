"""The one-token decoding paths of efficia-1 and spike-walze (issue 19 goal 4) against the general
paths they shortcut: same outputs, same states, at window / segment / angle-block boundaries."""

import pytest
import torch

import lmzoo
from lmzoo.layers.linear_attention import LinearAttentionState, LocalLinearAttention
from lmzoo.layers.local_attention import ANGLE_BLOCK, GatedLocalAttention, WindowHistory
from lmzoo.layers.rotary import RotaryEmbedding
from lmzoo.layers.walze import CausalWalze
from lmzoo.models import efficia

TOL = 1e-5


def close(a, b):
    assert a.shape == b.shape
    if b.numel():
        assert float((a - b).abs().max()) <= TOL * max(1.0, float(b.abs().max()))


def rows_start(start: int, batch: int) -> torch.Tensor:
    """The same position for every row, as per-row starts: forces the general path."""
    return torch.full((batch,), start, dtype=torch.long)


@pytest.mark.parametrize("overlap", [False, True])
def test_linear_attention_step_equals_the_recurrent_path(overlap):
    torch.manual_seed(0)
    layer = LocalLinearAttention(32, 16, window=6, overlap=overlap, conv_size=4).eval()
    x = torch.randn(2, 20, 32)
    fast, general = LinearAttentionState(), LinearAttentionState()
    with torch.no_grad():
        layer(x[:, :3], 0, fast), layer(x[:, :3], 0, general)
        for t in range(3, 20):  # crosses window starts 6, 12, 18 (restarts without overlap)
            close(layer(x[:, t:t + 1], t, fast), layer(x[:, t:t + 1], rows_start(t, 2), general))
            for name in ("S", "z", "tail"):
                close(getattr(fast, name), getattr(general, name))


@pytest.mark.parametrize("dilation", [1, 2])
def test_walze_step_equals_the_buffered_convolution(dilation):
    torch.manual_seed(0)
    walze = CausalWalze(16, dilation=dilation).eval()
    torch.nn.init.normal_(walze.tap_weight)
    h = torch.randn(2, 90, 16)
    fast, general = walze.new_buffer(), walze.new_buffer()
    with torch.no_grad():
        walze(h[:, :5], 0, fast), walze(h[:, :5], 0, general)
        for t in range(5, 90):  # past the buffer's span: every slot reused
            close(walze(h[:, t:t + 1], t, fast), walze(h[:, t:t + 1], rows_start(t, 2), general))
        assert torch.equal(fast.slots, general.slots)


@pytest.mark.parametrize("window", [1, 5])
def test_local_attention_step_equals_the_gathered_path_past_the_rotary_table(window, monkeypatch):
    # A short rotary table, so decoding runs past it (angles computed on the fly by the general path).
    monkeypatch.setattr(RotaryEmbedding, "CACHE_LIMIT", 40)
    torch.manual_seed(0)
    attn = GatedLocalAttention(32, 4, 2, window).eval()
    length = ANGLE_BLOCK + 20  # crosses an angle block
    h, p = torch.randn(2, length, 32), torch.rand(2, length)
    selected = torch.rand(2, length) > 0.4
    selected[:, 7] = False  # a step where no row attends
    fast, general = WindowHistory(), WindowHistory()
    with torch.no_grad():
        attn(h[:, :1], selected[:, :1], p[:, :1], 0, fast), attn(h[:, :1], selected[:, :1], p[:, :1], 0, general)
        for t in range(1, length):
            args = (h[:, t:t + 1], selected[:, t:t + 1], p[:, t:t + 1])
            out = attn(*args, t, fast)
            close(out, attn(*args, rows_start(t, 2), general))
            assert not out[~selected[:, t]].any()  # unselected rows add exactly nothing
        close(fast.k, general.k)


def decode(model, ids, prefill, fast, monkeypatch):
    """Logits of a prefill then one-token steps, with efficia-1's one-token path on or off."""
    new_context = efficia.EfficiaLM.new_context

    def patched(self, input_ids, state):
        context = new_context(self, input_ids, state)
        context.one_token = context.one_token and fast
        return context

    with monkeypatch.context() as m:
        m.setattr(efficia.EfficiaLM, "new_context", patched)
        state, outs = model.init_state(), []
        with torch.no_grad():
            outs.append(model(ids[:, :prefill], state=state).logits)
            for t in range(prefill, ids.shape[1]):
                outs.append(model(ids[:, t:t + 1], state=state).logits)
    return torch.cat(outs, 1), state


@pytest.mark.parametrize("overrides", [
    {"segment": 4, "memory_slots": 3, "window": 8},                   # the FIFO fills, then overflows
    {"segment": 4, "memory_slots": 3, "window": 8, "eos_id": 5},      # documents: masks and rebasing
    {"segment": 5, "memory_slots": 2, "window": 6, "overlap": True},
    {"segment": 3, "window": 70, "memory": False},
    {"segment": 4, "window": 5, "compression": False},
])
def test_efficia_one_token_path_equals_the_segment_grid_path(overrides, monkeypatch):
    torch.manual_seed(0)
    model = lmzoo.create_model("efficia-1", "nano", **overrides).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(1))
    if "eos_id" in overrides:
        ids[0, 9], ids[1, 17], ids[:, 30] = 5, 5, 5
    full = model(ids).logits.detach()
    for prefill in (1, 6):
        fast, fast_state = decode(model, ids, prefill, True, monkeypatch)
        plain, plain_state = decode(model, ids, prefill, False, monkeypatch)
        close(fast, plain)
        close(fast, full)
        for mine, theirs in zip(fast_state.parts(), plain_state.parts()):  # the states agree too
            assert mine.nbytes() == theirs.nbytes()
        # and carry on into a chunked call alike
        with torch.no_grad():
            close(model(ids[:, :7], state=fast_state).logits, model(ids[:, :7], state=plain_state).logits)


def test_spike_walze_decoding_without_autograd_equals_the_general_path():
    torch.manual_seed(0)
    model = lmzoo.create_model("spike-walze", "nano", window=5, dilation_cycle=2).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 80), generator=torch.Generator().manual_seed(1))
    logits = {}
    for fast in (True, False):
        state, outs = model.init_state(), []
        with torch.set_grad_enabled(not fast):  # the one-token attention path runs without autograd only
            outs.append(model(ids[:, :3], state=state).logits.detach())
            for t in range(3, ids.shape[1]):
                outs.append(model(ids[:, t:t + 1], state=state).logits.detach())
        logits[fast] = torch.cat(outs, 1)
    close(logits[True], logits[False])
    close(logits[True], model(ids).logits.detach())


@pytest.mark.parametrize("arch", ["efficia-1", "spike-walze"])
def test_one_token_paths_under_bf16_autocast_track_the_full_pass(arch):
    torch.manual_seed(0)
    model = lmzoo.create_model(arch, "nano", **({"segment": 4, "memory_slots": 3} if arch == "efficia-1" else {}))
    model.eval()
    ids = torch.randint(0, model.config.vocab_size, (1, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        full = model(ids).logits.float()
        state = model.init_state()
        steps = [model(ids[:, :2], state=state).logits.float()]
        steps += [model(ids[:, t:t + 1], state=state).logits.float() for t in range(2, 24)]
    assert float((torch.cat(steps, 1) - full).abs().max()) < 0.05 * max(1.0, float(full.abs().max()))
