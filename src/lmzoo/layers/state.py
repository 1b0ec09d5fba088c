"""The one interface every per-layer decoding state has.

A layer that decodes incrementally owns a `LayerState` subclass: plain attributes holding
tensors (or lists of tensors, or nested `LayerState`s), declared in `batch_dims` with the
dimension that indexes the batch's rows (`None` for a tensor shared by every row, such as
cached filters). From that declaration alone every state can report its size, drop or reorder
rows of the batch and move to a device, so generation, streaming and batched serving handle all
architectures alike. Fields start as `None` and are filled by the first call that needs them.
"""
from __future__ import annotations

from typing import Any, ClassVar, Iterator

import torch


class LayerState:
    batch_dims: ClassVar[dict[str, int | None]] = {}

    def __init__(self) -> None:
        for name in self.batch_dims:
            setattr(self, name, None)

    def _fields(self) -> Iterator[tuple[str, Any, int | None]]:
        for name, dim in self.batch_dims.items():
            yield name, getattr(self, name), dim

    def nbytes(self) -> int:
        """Bytes of every tensor the state holds."""
        total = 0
        for _, value, _ in self._fields():
            for item in _items(value):
                total += item.nbytes() if isinstance(item, LayerState) else item.numel() * item.element_size()
        return total

    def select(self, rows: torch.Tensor) -> None:
        """Keep only batch rows `rows` (a LongTensor of row indices), in that order; in place."""
        self._apply(lambda t, dim: t if dim is None else t.index_select(dim, rows.to(t.device)),
                    lambda s: s.select(rows))

    def to(self, device: torch.device | str) -> "LayerState":
        self._apply(lambda t, dim: t.to(device), lambda s: s.to(device))
        return self

    def _apply(self, on_tensor, on_state) -> None:
        for name, value, dim in self._fields():
            if isinstance(value, LayerState):
                on_state(value)
            elif isinstance(value, torch.Tensor):
                setattr(self, name, on_tensor(value, dim))
            elif isinstance(value, list):
                setattr(self, name, [on_tensor(t, dim) for t in value])


def _items(value: Any) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]
