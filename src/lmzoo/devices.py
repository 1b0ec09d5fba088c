"""Device and compute-dtype names as users give them (`--device`, `--dtype`), resolved once, with
a one-line error for a name torch does not know or a device this machine lacks."""
from __future__ import annotations

import contextlib

import torch

from lmzoo.errors import LmzooError

DEVICE_TYPES = ("cpu", "cuda", "mps")
DTYPES = ("auto", "fp32", "bf16")


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' (CUDA when available, else CPU), 'cpu', 'cuda' (-> cuda:local_rank), 'cuda:N' or 'mps'."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise LmzooError(f"unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise LmzooError(f"device '{name}' was asked for but no CUDA device is available; use --device cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        if device.index >= torch.cuda.device_count():
            raise LmzooError(f"device '{name}' does not exist: this machine has {torch.cuda.device_count()} "
                             "CUDA device(s), numbered from 0")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise LmzooError(f"device '{name}' was asked for but MPS is not available; use --device cpu")
    return device


def autocast_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a `--dtype` name: bf16 when asked, or by default on CUDA; None = fp32."""
    if name not in DTYPES:
        raise LmzooError(f"unknown dtype '{name}'; choose one of: {', '.join(DTYPES)}")
    return torch.bfloat16 if name == "bf16" or (name == "auto" and device.type == "cuda") else None


def autocast(dtype: torch.dtype | None, device: torch.device) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)
