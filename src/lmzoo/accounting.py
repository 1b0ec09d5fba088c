"""Parameter and FLOP accounting, the numbers behind `lmzoo info` and the benchmark tables.

FLOPs are *measured*, not derived from a formula per architecture: a forward (and a
forward+backward) runs under `torch.utils.flop_counter.FlopCounterMode` and the count is divided
by the number of tokens. The counter only knows the ops it has formulas for, so this module
adds the ones lmzoo relies on and PyTorch does not count:

* `aten._grouped_mm` (the token-routed MLP's expert matmuls), which it ignores entirely;
* the CPU flash-attention kernels behind `F.scaled_dot_product_attention`, also ignored;
* FFTs (`torch.fft`), counted as 5 N log2 N per transform of N points (the convention).

Attention is counted *causally* for every SDPA kernel (only the visible query/key pairs),
because a causal kernel skips the masked half and a comparison against sub-quadratic
architectures should not charge softmax attention for work it never does. PyTorch's own
formula counts the full square; ours replaces it.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from lmzoo.modeling import CausalLM

aten = torch.ops.aten


def fft_flops(n: int) -> float:
    """Conventional cost of one complex FFT of length n: 5 n log2 n."""
    return 5.0 * n * math.log2(n) if n > 1 else 0.0


# ---- parameters ---------------------------------------------------------------------------
def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    """{"embedding", "non_embedding", "total"}; a tied LM head is counted once (as embedding)."""
    if isinstance(model, CausalLM):
        emb = model.num_parameters(embedding=True)
        rest = model.num_parameters(embedding=False)
    else:  # any other nn.Module (e.g. a Hugging Face model): embeddings are nn.Embedding weights
        unique = {id(p): p for p in model.parameters()}
        emb_ids = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
        emb = sum(p.numel() for i, p in unique.items() if i in emb_ids)
        rest = sum(p.numel() for i, p in unique.items() if i not in emb_ids)
    return {"embedding": emb, "non_embedding": rest, "total": emb + rest}


# ---- FLOP formulas the counter lacks --------------------------------------------------------
def grouped_mm_flops(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    """`_grouped_mm`: every row of every group is one multiply-add against its group's matrix.

    2D x 3D (routed rows x expert weights) and 3D x 3D (batched): 2 * out elements * K.
    2D x 2D with offsets (the weight gradient, groups split the contracted dim): 2 * M * N * K.
    """
    if len(a_shape) == 2 and len(b_shape) == 2:
        return 2 * a_shape[0] * a_shape[1] * b_shape[1]
    return 2 * math.prod(out_shape) * a_shape[-1]


def visible_pairs(s_q: int, s_k: int, is_causal: bool) -> int:
    """Query/key pairs the kernel computes. `is_causal` in SDPA is top-left aligned: query i
    sees keys 0..i (lmzoo only sets it when queries and keys are the same positions)."""
    if not is_causal:
        return s_q * s_k
    square = min(s_q, s_k)
    return square * (square + 1) // 2 + (s_q - square) * s_k


def attention_flops(q_shape, k_shape, v_shape, is_causal: bool) -> int:
    """QK^T and PV for every query head (GQA shares K/V but not the work): 2 matmuls."""
    b, h, s_q, d_qk = q_shape
    s_k, d_v = k_shape[2], v_shape[3]
    pairs = visible_pairs(s_q, s_k, is_causal)
    return 2 * b * h * pairs * (d_qk + d_v)


def _argument(op, name: str, args: tuple, kwargs: dict, default: Any) -> Any:
    """Value of a named argument of an aten op, given positionally or by keyword."""
    names = [a.name for a in op.default._schema.arguments]
    if name in kwargs:
        return kwargs[name]
    index = names.index(name) if name in names else len(args)
    return args[index] if index < len(args) else default


def _sdpa_forward_formula(op) -> Callable:
    def formula(query, key, value, *args, out_shape=None, **kwargs) -> int:
        causal = bool(_argument(op, "is_causal", (query, key, value, *args), kwargs, False))
        return attention_flops(query, key, value, causal)
    return formula


def _sdpa_backward_formula(op) -> Callable:
    # Backward recomputes the scores and does four more matmuls of the same size: 2.5x forward.
    def formula(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
        causal = bool(_argument(op, "is_causal", (grad_out, query, key, value, *args), kwargs, False))
        return attention_flops(query, key, value, causal) * 5 // 2
    return formula


def _fft_flops(shape, dims, length_of_last=None) -> int:
    """Batched FFTs over `dims` of a tensor of `shape`: 5 N log2 N per transform of N points."""
    sizes = [shape[d] for d in dims]
    if length_of_last is not None:
        sizes[-1] = length_of_last
    n = math.prod(sizes)
    batch = math.prod(shape) // math.prod(shape[d] for d in dims)
    return int(batch * fft_flops(n))


def fft_r2c_flops(self_shape, dim, normalization, onesided, out_shape=None, **kwargs) -> int:
    return _fft_flops(self_shape, dim)


def fft_c2r_flops(self_shape, dim, normalization, last_dim_size, out_shape=None, **kwargs) -> int:
    return _fft_flops(self_shape, dim, last_dim_size)


def fft_c2c_flops(self_shape, dim, normalization, forward, out_shape=None, **kwargs) -> int:
    return _fft_flops(self_shape, dim)


def custom_flop_formulas() -> dict:
    """Formulas passed to FlopCounterMode; they override PyTorch's where both exist."""
    formulas: dict = {aten._fft_r2c: fft_r2c_flops, aten._fft_c2r: fft_c2r_flops, aten._fft_c2c: fft_c2c_flops}
    if hasattr(aten, "_grouped_mm"):
        formulas[aten._grouped_mm] = grouped_mm_flops
    forward_ops = ["_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
                   "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention"]
    for name in forward_ops:
        if hasattr(aten, name):
            formulas[getattr(aten, name)] = _sdpa_forward_formula(getattr(aten, name))
        if hasattr(aten, name + "_backward"):
            op = getattr(aten, name + "_backward")
            formulas[op] = _sdpa_backward_formula(op)
    return formulas


def flop_counter() -> FlopCounterMode:
    """A FlopCounterMode that also counts grouped matmuls and CPU attention (causally)."""
    return FlopCounterMode(display=False, custom_mapping=custom_flop_formulas())


# ---- FLOPs per token ---------------------------------------------------------------------------
def _sample_ids(model: torch.nn.Module, batch_size: int, seq_len: int, device) -> torch.Tensor:
    # Fixed ids, so token-routed layers see the same split every call.
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, vocab, (batch_size, seq_len), generator=g).to(device)


def flops_per_token(model: torch.nn.Module, seq_len: int = 256, batch_size: int = 1) -> dict[str, float]:
    """Measured FLOPs per token: {"forward", "train" (forward + backward)} at this length.

    One forward under the counter for "forward"; a forward with the loss plus `backward()` for
    "train". The model's mode and gradients are left as found.
    """
    device = next(model.parameters()).device
    ids = _sample_ids(model, batch_size, seq_len, device)
    tokens = batch_size * seq_len
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), flop_counter() as counter:
            model(ids)
        forward = counter.get_total_flops()
        model.train()
        saved = [(p, p.grad) for p in model.parameters()]
        with flop_counter() as counter:
            model(ids, labels=ids).loss.backward()
        for p, grad in saved:
            p.grad = grad
        train = counter.get_total_flops()
    finally:
        model.train(was_training)
    return {"forward": forward / tokens, "train": train / tokens}


def describe(arch: str, size: str, vocab_size: int = 259, seq_len: int = 256, **overrides) -> dict[str, Any]:
    """What `lmzoo info` prints: config, parameter split and FLOPs/token of one architecture/size."""
    from lmzoo.registry import create_model

    torch.manual_seed(0)
    model = create_model(arch, size, vocab_size=vocab_size, **overrides)
    return {
        "arch": arch,
        "size": size,
        "config": model.config.to_dict(),
        "parameters": count_parameters(model),
        "flops_per_token": {**flops_per_token(model, seq_len=seq_len), "seq_len": seq_len},
    }
