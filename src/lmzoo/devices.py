"""Device and compute-dtype names as users give them (`--device`, `--dtype`), resolved once."""
from __future__ import annotations

import contextlib

import torch

from lmzoo.errors import LmzooError

DTYPES = ("auto", "fp32", "bf16")


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' (CUDA when available), 'cpu', 'cuda' (-> cuda:local_rank), 'cuda:N'; else a one-line error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LmzooError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise LmzooError(f"device '{name}' requested but CUDA is not available; use --device cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def autocast_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a `--dtype` name: bf16 when asked, or by default on CUDA; None = fp32."""
    if name not in DTYPES:
        raise LmzooError(f"unknown dtype '{name}'; choose one of: {', '.join(DTYPES)}")
    return torch.bfloat16 if name == "bf16" or (name == "auto" and device.type == "cuda") else None


def autocast(dtype: torch.dtype | None, device: torch.device) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)
