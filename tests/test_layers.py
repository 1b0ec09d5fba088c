"""Token mixers and blocks on their own: causality per module, fast paths vs references."""
import pytest
import torch

from lmzoo.layers.attention import Attention
from lmzoo.layers.reference import reference_attention
from lmzoo.layers.kv_cache import KVCache, RingKVCache, causal_mask
from lmzoo.layers.rotary import RotaryEmbedding
from lmzoo.layers.token_routed_mlp import TokenRoute, TokenRoutedMLP, grouped_matmul, looped_matmul


def attention(window=None, qk_norm=False):
    torch.manual_seed(0)
    return Attention(32, 4, 2, qk_norm=qk_norm, window=window).eval()


@pytest.mark.parametrize("window", [None, 1, 4])
def test_attention_is_causal(window):
    layer = attention(window)
    x = torch.randn(2, 23, 32)
    with torch.no_grad():
        base = layer(x)
        for j in (0, 7, 22):
            y = x.clone()
            y[:, j] += 1.0
            assert torch.allclose(layer(y)[:, :j], base[:, :j], atol=1e-6)


@pytest.mark.parametrize("window", [None, 3, 8])
def test_attention_matches_explicit_softmax(window):
    layer = attention(window, qk_norm=True)
    x = torch.randn(2, 19, 32)
    q, k, v = layer.qkv(x).split([32, 16, 16], dim=-1)
    q = layer.rope(layer.q_norm(q.view(2, 19, 4, 8).transpose(1, 2)))
    k = layer.rope(layer.k_norm(k.view(2, 19, 2, 8).transpose(1, 2)))
    v = v.view(2, 19, 2, 8).transpose(1, 2)
    pos = torch.arange(19)
    ref = reference_attention(q, k, v, mask=causal_mask(pos, pos, window))
    expected = layer.out(ref.transpose(1, 2).reshape(2, 19, 32))
    with torch.no_grad():
        assert torch.allclose(layer(x), expected, atol=1e-5)


def test_single_token_decode_attends_to_all_cached_keys():
    """The Complexity seed passed is_causal=True with q_len=1, which attends to key 0 only."""
    cache = KVCache()
    k = torch.randn(1, 2, 5, 8)
    cache.update(k, k, start=0)
    keys, _, mask = cache.update(torch.randn(1, 2, 1, 8), torch.randn(1, 2, 1, 8), start=5)
    assert keys.shape[2] == 6 and mask is None  # grew past the first chunk, no mask = sees all
    keys, _, mask = cache.update(torch.randn(1, 2, 3, 8), torch.randn(1, 2, 3, 8), start=6)
    # Chunked prefill: bottom-right aligned causal mask.
    assert mask.tolist() == [[True] * 7 + [False] * 2, [True] * 8 + [False], [True] * 9]


def test_ring_cache_holds_only_the_window():
    cache = RingKVCache(window=4)
    for t in range(10):
        x = torch.full((1, 1, 1, 2), float(t))
        keys, _, mask = cache.update(x, x, start=t)
    assert keys.shape[2] == 4
    assert sorted(keys[0, 0, mask[0], 0].tolist()) == [6.0, 7.0, 8.0, 9.0]


def test_rope_offset_equals_slice_of_longer_sequence():
    rope = RotaryEmbedding(8)
    x = torch.randn(1, 2, 10, 8)
    assert torch.allclose(rope(x)[:, :, 6:], rope(x[:, :, 6:], start=6), atol=1e-6)


def test_rope_scores_depend_only_on_relative_position():
    rope = RotaryEmbedding(8)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    s1 = (rope(q, start=3) * rope(k, start=1)).sum()
    s2 = (rope(q, start=40) * rope(k, start=38)).sum()
    assert torch.allclose(s1, s2, atol=1e-5)



def test_rope_beyond_the_cached_positions_is_computed_and_the_cache_stays_bounded():
    rope = RotaryEmbedding(8)
    rope.CACHE_LIMIT = 32
    x = torch.randn(1, 2, 10, 8)
    within = RotaryEmbedding(8)(x, start=30)  # a table long enough for every position
    torch.testing.assert_close(rope(x, start=30), within, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(rope.rotate_at(x[0].transpose(0, 1), torch.arange(30, 40), 40),
                               within[0].transpose(0, 1), atol=1e-6, rtol=1e-6)
    rope(x), rope(x, start=10_000)
    assert rope._table[0].shape[0] == 32

@pytest.mark.parametrize("start", [0, 5, torch.tensor([0, 7, 3])], ids=["zero", "int", "per-row"])
def test_rope_pair_rotates_queries_and_keys_as_two_calls(start):
    rope = RotaryEmbedding(8)
    q, k = torch.randn(3, 4, 2, 8), torch.randn(3, 2, 2, 8)  # grouped: fewer key heads
    got_q, got_k = rope.pair(q, k, start)
    assert torch.equal(got_q, rope(q, start)) and torch.equal(got_k, rope(k, start))


def test_grouped_matmul_matches_loop_forward_and_backward():
    torch.manual_seed(0)
    x = torch.randn(50, 16, requires_grad=True)
    w = torch.randn(4, 16, 24, requires_grad=True)
    offsets = torch.tensor([10, 10, 35, 50], dtype=torch.int32)  # includes an empty expert
    grad = torch.randn(50, 24)
    grouped_matmul(x, w, offsets).backward(grad)
    gx, gw = x.grad.clone(), w.grad.clone()
    x.grad = w.grad = None
    looped_matmul(x, w, offsets).backward(grad)
    assert torch.allclose(gx, x.grad, atol=1e-5) and torch.allclose(gw, w.grad, atol=1e-5)


@pytest.mark.parametrize("routing", ["modulo", "range"])
def test_token_routed_mlp_matches_per_token_reference(routing):
    torch.manual_seed(0)
    mlp = TokenRoutedMLP(16, 32, 4)
    torch.nn.init.normal_(mlp.gate_up)
    torch.nn.init.normal_(mlp.down)
    ids = torch.randint(0, 100, (3, 11))
    x = torch.randn(3, 11, 16)
    out = mlp(x, TokenRoute.from_ids(ids, 4, 100, routing))
    expert = ids % 4 if routing == "modulo" else ids * 4 // 100
    for b in range(3):
        for t in range(11):
            e = int(expert[b, t])
            gate, up = (x[b, t] @ mlp.gate_up[e]).chunk(2)
            ref = (torch.nn.functional.silu(gate) * up) @ mlp.down[e]
            assert torch.allclose(out[b, t], ref, atol=1e-4)


def test_route_balances_modulo_and_sends_low_ids_to_expert_zero_in_range_mode():
    ids = torch.arange(100)
    assert TokenRoute.from_ids(ids, 4, 100, "modulo").counts.tolist() == [25, 25, 25, 25]
    route = TokenRoute.from_ids(torch.tensor([0, 1, 2, 99]), 4, 100, "range")
    assert route.counts.tolist() == [3, 0, 0, 1]
