"""efficia-1's pieces against plain references (the shared contract covers the whole model):
the three forms of windowed linear attention, the lagged segment memory and GRU, document
resets, and constant-memory streaming."""
import pytest
import torch

import lmzoo
from lmzoo.layers.linear_attention import (
    LinearAttentionState,
    chunked_linear_attention,
    feature_map,
    recurrent_linear_attention,
)
from lmzoo.layers.reference import reference_linear_attention, reference_short_conv
from lmzoo.layers.short_conv import ShortConv


def qkv(length, heads=2, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, heads, length, dim, generator=g, dtype=torch.float64) for _ in range(3))
    return feature_map(q), feature_map(k), v


@pytest.mark.parametrize("window,overlap", [(8, False), (8, True), (6, False), (70, False), (128, False), (256, False)])
def test_chunked_and_recurrent_linear_attention_equal_the_quadratic_reference(window, overlap):
    q, k, v = qkv(150)
    want = reference_linear_attention(q, k, v, window, overlap)
    torch.testing.assert_close(chunked_linear_attention(q, k, v, 0, window, overlap), want)
    state = LinearAttentionState()
    torch.testing.assert_close(recurrent_linear_attention(q, k, v, 0, window, overlap, state), want)


@pytest.mark.parametrize("window,overlap", [(8, False), (8, True), (70, False), (256, False)])
@pytest.mark.parametrize("splits", [(1, 2, 3), (13, 45, 46), (8, 16, 100), (64, 149)])
def test_chunked_form_continues_from_state_at_any_split(window, overlap, splits):
    q, k, v = qkv(150)
    want = reference_linear_attention(q, k, v, window, overlap)
    state, outs, bounds = LinearAttentionState(), [], (0, *splits, 150)
    for a, b in zip(bounds, bounds[1:]):
        outs.append(chunked_linear_attention(q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], a, window, overlap, state))
    torch.testing.assert_close(torch.cat(outs, 2), want)
    # and the recurrent form takes over from the chunked form's state
    state = LinearAttentionState()
    chunked_linear_attention(q[:, :, :splits[0]], k[:, :, :splits[0]], v[:, :, :splits[0]], 0, window, overlap, state)
    rest = recurrent_linear_attention(q[:, :, splits[0]:], k[:, :, splits[0]:], v[:, :, splits[0]:], splits[0],
                                      window, overlap, state)
    torch.testing.assert_close(rest, want[:, :, splits[0]:])


@pytest.mark.parametrize("overlap", [False, True])
def test_later_tokens_leave_earlier_outputs_bit_for_bit_unchanged_in_fp32(overlap):
    """The sums before each chunk are an exclusive prefix sum: with `cumsum - chunk`, the rounding
    of earlier positions' sums involved later chunks (7e-8 in fp32)."""
    q, k, v = (t.float() for t in qkv(256))
    base = chunked_linear_attention(q, k, v, 0, 256, overlap)
    for j in (70, 200):
        k2, v2 = k.clone(), v.clone()
        k2[:, :, j:] *= 3.0
        v2[:, :, j:] += 1.0
        changed = chunked_linear_attention(q, k2, v2, 0, 256, overlap)
        assert torch.equal(changed[:, :, :j], base[:, :, :j])


def test_windows_restart_without_overlap():
    q, k, v = qkv(32)
    out = chunked_linear_attention(q, k, v, 0, 8, False)
    changed = v.clone()
    changed[:, :, 3] += 1  # inside window 0: windows 1..3 cannot see it
    again = chunked_linear_attention(q, k, changed, 0, 8, False)
    assert torch.equal(again[:, :, 8:], out[:, :, 8:]) and not torch.equal(again[:, :, 3:8], out[:, :, 3:8])
    assert not torch.equal(chunked_linear_attention(q, k, changed, 0, 8, True)[:, :, 8:], out[:, :, 8:])


def small(**overrides):
    torch.manual_seed(0)
    config = {"window": 8, "segment": 4, "memory_slots": 3, **overrides}
    return lmzoo.create_model("efficia-1", "nano", **config).eval()


def test_memory_reaches_beyond_the_window_and_lags_one_segment():
    ids = torch.randint(0, 250, (1, 40))
    changed = ids.clone()
    changed[0, 1] = (ids[0, 1] + 1) % 250  # segment 0, window 0
    # conv_size=0 isolates memory and GRU: the short conv carries a few tokens past each window end
    for overrides, reaches in (({}, True), ({"memory": False, "compression": False}, False)):
        model = small(conv_size=0, **overrides)
        a, b = model(ids).logits, model(changed).logits
        assert torch.equal(a[:, :1], b[:, :1])
        # position 8 starts a new window; only the memory and the GRU can carry token 1 there
        assert (not torch.allclose(a[:, 8:], b[:, 8:])) == reaches
    # each unit alone also carries it
    for overrides in ({"memory": False}, {"compression": False}):
        model = small(conv_size=0, **overrides)
        assert not torch.allclose(model(ids).logits[:, 8:], model(changed).logits[:, 8:])


def test_end_of_document_resets_memory_and_compression():
    eos = 7
    model = small(eos_id=eos, conv_size=0)  # the short conv, like LCP, does not stop at document ends
    ids = torch.randint(8, 250, (1, 40))
    ids[0, 15] = eos  # a new document starts at 16
    changed = ids.clone()
    changed[0, 2] += 1
    a, b = model(ids).logits, model(changed).logits
    assert not torch.allclose(a[:, 8:16], b[:, 8:16])  # same document, other window: reached by memory
    torch.testing.assert_close(a[:, 16:], b[:, 16:])    # next document: nothing leaks across the end
    free = small(conv_size=0)  # without eos_id the whole window is one document
    assert not torch.allclose(free(ids).logits[:, 16:], free(changed).logits[:, 16:])


def test_fifo_memory_forgets_beyond_its_slots():
    # One layer, memory only, 3 slots of 4 tokens: segment s reads segments s-3 .. s-1. Token 1
    # reaches segments 0 and 1 directly (both in LCP window 0), so it leaves memory after segment 4.
    model = small(compression=False, n_layers=1)
    ids = torch.randint(0, 250, (1, 48))
    changed = ids.clone()
    changed[0, 1] += 1
    a, b = model(ids).logits, model(changed).logits
    assert not torch.allclose(a[:, 16:20], b[:, 16:20])   # segment 4 still holds segment 1
    torch.testing.assert_close(a[:, 20:], b[:, 20:])       # from segment 5 on both have dropped out


def test_short_conv_equals_its_reference_and_continues_from_its_tail():
    torch.manual_seed(0)
    conv = ShortConv(6, 4).double()
    x = torch.randn(2, 11, 6, dtype=torch.float64)
    whole, _ = conv(x)
    torch.testing.assert_close(whole, reference_short_conv(x, conv.weight.detach()))
    for split in (1, 2, 5, 10):
        first, tail = conv(x[:, :split])
        second, _ = conv(x[:, split:], tail)
        torch.testing.assert_close(torch.cat((first, second), 1), whole)


def test_short_conv_gives_the_local_path_token_order():
    # Swap two earlier tokens of position 6's window: without the conv one LCP layer sees the window
    # as a bag of tokens (elu+1 linear attention has no positions), so position 6 cannot tell. (Deeper
    # stacks see order only indirectly, through what each earlier position's causal prefix held.)
    ids = torch.randint(0, 250, (1, 8))
    swapped = ids.clone()
    swapped[0, [2, 3]] = ids[0, [3, 2]]
    for conv_size, sees_order in ((0, False), (4, True)):
        model = small(conv_size=conv_size, memory=False, compression=False, n_layers=1)
        a, b = model(ids).logits[0, 6], model(swapped).logits[0, 6]
        assert (not torch.allclose(a, b, atol=1e-6)) == sees_order


def state_bytes(state) -> int:
    total = 0
    for layer in state.layers:
        for part in (layer.lcp, layer.memory, layer.compression, layer):
            total += sum(t.nbytes for t in vars(part).values() if isinstance(t, torch.Tensor))
    return total


def test_streaming_100k_tokens_keeps_the_state_flat_and_matches_one_pass():
    model = lmzoo.create_model("efficia-1", "nano", n_layers=1, d_ff=64, eos_id=0).eval()
    g = torch.Generator().manual_seed(0)
    prefix = torch.randint(1, 250, (1, 3000), generator=g)
    with torch.inference_mode():
        full = model(prefix).logits[:, -1]
        state, sizes = model.init_state(), []
        for a in range(0, 3000, 700):
            last = model(prefix[:, a:a + 700], state=state).logits[:, -1]
        torch.testing.assert_close(last, full, atol=1e-4, rtol=1e-4)
        for _ in range(100_000 // 4096 + 1):  # then keep streaming past 100k tokens
            model(torch.randint(0, 250, (1, 4096), generator=g), state=state)
            sizes.append(state_bytes(state))
    assert state.position > 100_000
    assert max(sizes) == min(sizes) > 0


def test_trainer_sets_the_document_end_from_the_dataset(data_dir, tmp_path):
    from lmzoo.data import TokenDataset
    from lmzoo.training.config import TrainConfig
    from lmzoo.training.trainer import run_training

    cfg = TrainConfig(arch="efficia-1", size="nano", data=str(data_dir), out=str(tmp_path / "run"), seq_len=32,
                      batch_size=2, max_steps=1, warmup_steps=0, eval_interval=0, eval_batches=1,
                      checkpoint_interval=0, model_args={"n_layers": 1, "d_ff": 32})
    model = lmzoo.load(run_training(cfg)["final_checkpoint"])
    assert model.config.eos_id == TokenDataset(data_dir, "train").eos_id
