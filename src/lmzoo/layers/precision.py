"""Precision helpers shared by the layers."""
from __future__ import annotations

import torch


def upcast(x: torch.Tensor) -> torch.Tensor:
    """`x` in at least fp32: bf16/fp16 go up (sums, normalisers, softmax logits and FFTs lose too
    much below fp32), while a float64 model keeps float64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))
