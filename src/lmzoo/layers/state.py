"""The one interface every per-layer decoding state has.

A layer that decodes incrementally owns a `LayerState` subclass: plain attributes holding
tensors (or lists of tensors, or nested `LayerState`s), declared in `batch_dims` with the
dimension that indexes the batch's rows (`None` for a tensor shared by every row, such as
cached filters). From that declaration alone every state can report its size, drop, reorder,
copy or join rows of the batch and move to a device, so generation, streaming and batched serving
handle all architectures alike. Fields start as `None` and are filled by the first call that needs
them.

Joining (`join`) puts another state's rows after this one's. By default each tensor is
concatenated along its batch dimension, which is right for every state whose shape does not depend
on how many tokens were fed; a state that grows along time (a KV cache, a band history) or lays
rows out by position (a ring, an open segment) overrides `join` to pad or convert. `aligned` says
whether both states' rows sit at the same position; when they do not, the joined batch is decoded
with per-row positions (see `lmzoo.modeling.State`).
"""
from __future__ import annotations

import copy
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

    def batch_size(self) -> int | None:
        """Rows held (None while nothing is allocated)."""
        for _, value, dim in self._fields():
            for item in _items(value):
                rows = item.batch_size() if isinstance(item, LayerState) else (None if dim is None else item.shape[dim])
                if rows is not None:
                    return rows
        return None

    def take(self, rows: torch.Tensor) -> "LayerState":
        """A new state holding rows `rows` of this one (copied); this state is left as it was."""
        taken = copy.copy(self)
        for name, value, _ in self._fields():
            if isinstance(value, LayerState):
                setattr(taken, name, value.take(rows))
        # New tensors throughout (shared ones cloned), so updating either state never touches the other.
        taken._apply(lambda t, dim: t.clone() if dim is None else t.index_select(dim, rows.to(t.device)),
                     lambda s: None)
        return taken

    def trim(self, longest: int) -> None:
        """Rows left a batch whose rows sit at different positions; the longest remaining row has
        seen `longest` tokens. A state padded along time to its longest row drops the padding no
        row needs any more (else a batch that lives on would keep growing); default: nothing."""
        for _, value, _ in self._fields():
            if isinstance(value, LayerState):
                value.trim(longest)

    def join(self, other: "LayerState", aligned: bool) -> None:
        """Append `other`'s rows after this state's, in place (`other` is consumed)."""
        for name, mine, dim in self._fields():
            theirs = getattr(other, name)
            if isinstance(mine, LayerState):
                mine.join(theirs, aligned)
            elif mine is None or theirs is None:
                if mine is not None or theirs is not None:
                    raise ValueError(f"{type(self).__name__}.{name} is filled in one state only; "
                                     "override join() for this state")
            elif dim is None:
                continue  # shared by every row (the same in both)
            elif isinstance(mine, list):
                setattr(self, name, [torch.cat((a, b.to(a.dtype)), dim) for a, b in zip(mine, theirs)])
            else:
                setattr(self, name, torch.cat((mine, theirs.to(mine.dtype)), dim))

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
