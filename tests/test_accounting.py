"""Parameter and FLOP accounting (lmzoo.accounting) against hand-derived formulas."""
import pytest
import torch
import torch.nn.functional as F

import lmzoo
from lmzoo.accounting import count_parameters, describe, fft_flops, flop_counter, flops_per_token, visible_pairs

SEQ = 64


def build(arch, **overrides):
    torch.manual_seed(0)
    return lmzoo.create_model(arch, "nano", **overrides)


def dense_matmul_params(c):
    """Weights every token multiplies once in a dense transformer block stack (no norms)."""
    head_dim = c.d_model // c.n_heads
    attn = c.d_model * (c.d_model + 2 * c.n_kv_heads * head_dim) + c.d_model * c.d_model
    mlp = 3 * c.d_model * c.d_ff
    return c.n_layers * (attn + mlp)


def attention_flops_per_token(c, seq):
    """Causal QK^T and PV over all query heads, averaged over the sequence's tokens."""
    head_dim = c.d_model // c.n_heads
    pairs = seq * (seq + 1) // 2
    return c.n_layers * 2 * c.n_heads * pairs * 2 * head_dim / seq


def test_parameters_split_and_tied_head_counted_once():
    model = build("transformer")
    counts = count_parameters(model)
    c = model.config
    assert counts["embedding"] == c.vocab_size * c.d_model
    assert counts["total"] == counts["embedding"] + counts["non_embedding"]
    assert counts["total"] == sum(p.numel() for p in model.parameters())  # parameters() dedups ties


def test_transformer_forward_flops_match_the_analytic_count():
    model = build("transformer")
    c = model.config
    expected = 2 * dense_matmul_params(c) + 2 * c.d_model * c.vocab_size + attention_flops_per_token(c, SEQ)
    measured = flops_per_token(model, seq_len=SEQ)["forward"]
    assert measured == pytest.approx(expected, rel=0.02)
    # The non-embedding rule of thumb (2N + head) is close too: only norms are off the matmul path.
    assert 2 * model.num_parameters(embedding=False) == pytest.approx(2 * dense_matmul_params(c), rel=0.01)


def test_training_costs_about_three_forwards():
    flops = flops_per_token(build("transformer"), seq_len=SEQ)
    assert 2.9 < flops["train"] / flops["forward"] < 3.2


def test_complexity_mlp_costs_one_over_e_of_dense():
    dense = build("transformer")
    routed = build("complexity")
    c = routed.config
    dense_mlp = 2 * c.n_layers * 3 * c.d_model * c.d_ff
    saved = flops_per_token(dense, seq_len=SEQ)["forward"] - flops_per_token(routed, seq_len=SEQ)["forward"]
    assert saved == pytest.approx(dense_mlp * (1 - 1 / c.n_experts), rel=0.01)


def test_grouped_mm_is_counted_forward_and_backward():
    x = torch.randn(64, 32, requires_grad=True)
    w = torch.randn(4, 32, 16, requires_grad=True)
    offsets = torch.tensor([10, 32, 48, 64], dtype=torch.int32)  # uneven groups
    with flop_counter() as counter:
        y = F.grouped_mm(x, w, offs=offsets)
    assert counter.get_total_flops() == 2 * 64 * 32 * 16
    with flop_counter() as counter:
        y = F.grouped_mm(x, w, offs=offsets)
        y.backward(torch.randn_like(y))  # grad input (2D x 3D) and grad weight (2D x 2D)
    assert counter.get_total_flops() == 3 * 2 * 64 * 32 * 16


def test_cpu_attention_is_counted_causally():
    q = torch.randn(1, 4, 16, 8)
    k = torch.randn(1, 2, 16, 8)  # GQA: the work is per query head
    with flop_counter() as counter:
        F.scaled_dot_product_attention(q, k, k, enable_gqa=True)
    full = counter.get_total_flops()
    assert full == 2 * 4 * 16 * 16 * (8 + 8)
    with flop_counter() as counter:
        F.scaled_dot_product_attention(q, k, k, is_causal=True, enable_gqa=True)
    assert counter.get_total_flops() == 2 * 4 * visible_pairs(16, 16, True) * 16


def test_visible_pairs():
    assert visible_pairs(4, 4, True) == 10
    assert visible_pairs(4, 6, False) == 24
    assert visible_pairs(1, 9, True) == 1  # top-left aligned, as SDPA's is_causal is


def test_flops_per_token_leaves_the_model_as_found():
    model = build("transformer").eval()
    flops_per_token(model, seq_len=8, batch_size=2)
    assert not model.training
    assert all(p.grad is None for p in model.parameters())


def test_fft_flops():
    assert fft_flops(8) == 5 * 8 * 3
    assert fft_flops(1) == 0


@pytest.mark.parametrize("arch", lmzoo.list_architectures())
def test_describe_every_architecture(arch):
    info = describe(arch, "nano", seq_len=32)
    assert info["arch"] == arch and info["config"]["arch"] == arch
    assert info["parameters"]["total"] > info["parameters"]["non_embedding"] > 0
    assert info["flops_per_token"]["train"] > info["flops_per_token"]["forward"] > 0
