"""A model's size before it exists: tensor shapes from a build on the meta device, checked
against the machine's memory, so an absurd config fails in a line instead of exhausting RAM."""
from __future__ import annotations

import os

import torch

from lmzoo.errors import LmzooError


def saved_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """Shapes of the tensors a checkpoint stores (the tied LM head is the embedding: left out)."""
    state = model.state_dict()
    if getattr(model.config, "tie_embeddings", False):
        state.pop("lm_head.weight", None)
    return {name: tuple(tensor.shape) for name, tensor in state.items()}


def model_nbytes(model: torch.nn.Module) -> int:
    tensors = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def physical_memory() -> int | None:
    """Bytes of RAM in this machine (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def meta_model(model_cls: type, config) -> torch.nn.Module:
    """`model_cls(config)` on the meta device: every shape, no memory."""
    with torch.device("meta"):
        return model_cls(config)


def check_memory(model: torch.nn.Module) -> None:
    """Refuse a model (a meta one will do) whose weights alone exceed the machine's memory."""
    nbytes, memory = model_nbytes(model), physical_memory()
    if memory is not None and nbytes > memory:
        n = sum(p.numel() for p in model.parameters())
        raise LmzooError(f"this {model.config.arch} config has {n:,} parameters ({nbytes / 2**30:,.1f} GiB), more "
                         f"than this machine's {memory / 2**30:,.1f} GiB of memory; lower d_model, n_layers or "
                         "vocab_size")


def plan_model(model_cls: type, config) -> dict[str, tuple[int, ...]]:
    """Check that `model_cls(config)` fits in memory before building it; return its saved shapes."""
    model = meta_model(model_cls, config)
    check_memory(model)
    return saved_shapes(model)
