"""The tokenizer interface, the registry of tokenizer kinds, and saving/loading.

Every kind maps text to ids and back and shares three special tokens. `<|endoftext|>` (eos)
separates documents in prepared data and stops generation; `<|pad|>` and `<|startoftext|>`
are reserved so every kind exposes the same ids.

A tokenizer is saved as one `tokenizer.json` holding a "kind" field plus whatever that kind
needs to rebuild itself, so `load_tokenizer` can dispatch on the kind alone. Adding a kind
means writing a `Tokenizer` subclass decorated with `@register_tokenizer("name")` and
importing its module in `lmzoo/tokenizers/__init__.py`.
"""
from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from lmzoo.errors import LmzooError
from lmzoo.io import read_format_json, write_json_atomic

if TYPE_CHECKING:
    from lmzoo.data.sources import Inputs

EOS = "<|endoftext|>"
PAD = "<|pad|>"
BOS = "<|startoftext|>"
SPECIAL_TOKENS = (EOS, PAD, BOS)

TOKENIZER_FILE = "tokenizer.json"
FORMAT = "lmzoo.tokenizer"
FORMAT_VERSION = 1

TOKENIZER_KINDS: dict[str, type[Tokenizer]] = {}


class Tokenizer(ABC):
    """Text <-> token ids. Subclasses set `kind` and implement the abstract methods."""

    kind: ClassVar[str] = ""
    # Kinds that learn a vocabulary from data must be trained before use; the others must be
    # constructible without arguments.
    needs_training: ClassVar[bool] = False

    eos_id: int
    pad_id: int
    bos_id: int

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of ids; every id is in range(vocab_size)."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Ids for `text`. Special-token strings inside `text` are encoded as plain text."""

    @abstractmethod
    def _decode(self, ids: list[int], skip_special: bool) -> str:
        """Text for validated ids."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state that `from_state` rebuilds the tokenizer from."""

    @classmethod
    @abstractmethod
    def from_state(cls, state: dict[str, Any]) -> Tokenizer:
        """Rebuild from `state_dict()` output; may raise KeyError/TypeError/ValueError."""

    @classmethod
    @abstractmethod
    def train(cls, texts: Iterable[str], vocab_size: int | None = None) -> Tokenizer:
        """Build a tokenizer from text; kinds with a fixed vocabulary ignore `texts`."""

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(text) for text in texts]

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Text for `ids` (a list or 1-D tensor/array). Specials become "" unless skip_special=False."""
        return self._decode(self._check_ids(ids), skip_special)

    @property
    def special_ids(self) -> tuple[int, int, int]:
        return (self.eos_id, self.pad_id, self.bos_id)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write `<directory>/tokenizer.json` (replacing only an lmzoo tokenizer) and return its path."""
        directory = Path(directory)
        check_tokenizer_output(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / TOKENIZER_FILE
        header = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": self.kind,
                  "vocab_size": self.vocab_size}
        write_json_atomic(path, {**header, **self.state_dict()})
        return path

    def _check_ids(self, ids: Iterable[int]) -> list[int]:
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)  # tolist: tensors, numpy arrays
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            raise LmzooError("decode expects a flat list or 1-D tensor of ids; decode a batch row by row")
        if ids and (min(ids) < 0 or max(ids) >= self.vocab_size):
            bad = next(i for i in ids if not 0 <= i < self.vocab_size)
            raise LmzooError(
                f"token id {bad} is outside the {self.kind} tokenizer's vocabulary (size {self.vocab_size}); "
                "mask logits beyond tokenizer.vocab_size or use the tokenizer the model was trained with"
            )
        return ids

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, vocab_size={self.vocab_size})"


def check_tokenizer_output(directory: str | os.PathLike) -> None:
    """Raise if `directory` holds a tokenizer.json that is not lmzoo's (say, a Hugging Face one):
    saving there would replace a file lmzoo did not write."""
    if Path(directory).exists() and not Path(directory).is_dir():
        raise LmzooError(f"{directory} is a file; name the directory to save tokenizer.json in")
    path = Path(directory) / TOKENIZER_FILE
    if not path.exists():
        return
    try:
        ours = path.is_file() and json.loads(path.read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        ours = False
    if not ours:
        raise LmzooError(f"{path} exists and is not an lmzoo tokenizer; lmzoo will not overwrite it: "
                         "choose another directory")


def register_tokenizer(kind: str) -> Callable[[type[Tokenizer]], type[Tokenizer]]:
    """Class decorator adding a tokenizer class to TOKENIZER_KINDS under `kind`."""

    def wrap(cls: type[Tokenizer]) -> type[Tokenizer]:
        if kind in TOKENIZER_KINDS:
            raise RuntimeError(f"tokenizer kind '{kind}' registered twice")
        cls.kind = kind
        TOKENIZER_KINDS[kind] = cls
        return cls

    return wrap


def _kind_class(kind: str) -> type[Tokenizer]:
    if kind not in TOKENIZER_KINDS:
        raise LmzooError(f"unknown tokenizer kind '{kind}'; choose one of: {', '.join(TOKENIZER_KINDS)}")
    return TOKENIZER_KINDS[kind]


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load a tokenizer saved by `Tokenizer.save` from its directory or its tokenizer.json."""
    path = Path(path)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    if not path.is_file():
        raise LmzooError(f"no tokenizer found at {path}; pass a directory holding {TOKENIZER_FILE} or the file itself")
    fix = "delete it and re-run prepare (or train_tokenizer)"
    data = read_format_json(path, FORMAT, FORMAT_VERSION, "tokenizer file", fix)
    cls = _kind_class(str(data.get("kind")))
    try:
        return cls.from_state(data)
    except (KeyError, TypeError, ValueError) as err:
        raise LmzooError(f"corrupt {cls.kind} tokenizer file {path} ({err!r}); {fix}") from None


def get_tokenizer(spec: str | os.PathLike | Tokenizer) -> Tokenizer:
    """A ready tokenizer from a kind name ("bytes"), a saved tokenizer path, or a Tokenizer."""
    if isinstance(spec, Tokenizer):
        return spec
    if str(spec) in TOKENIZER_KINDS:
        cls = TOKENIZER_KINDS[str(spec)]
        if cls.needs_training:
            raise LmzooError(
                f"the '{spec}' tokenizer must be trained first: prepare a dataset with tokenizer='{spec}' "
                f"or call train_tokenizer('{spec}', files), then pass the saved tokenizer's path"
            )
        return cls()
    if Path(spec).exists():
        return load_tokenizer(spec)
    raise LmzooError(
        f"unknown tokenizer '{spec}': not a kind ({', '.join(TOKENIZER_KINDS)}) and no such path; "
        "pass a kind or the path of a saved tokenizer"
    )


MAX_VOCAB_SIZE = 1 << 24  # far beyond any useful vocabulary; also what a model config accepts


def check_vocab_size(vocab_size: int | None) -> None:
    if vocab_size is not None and not 1 <= vocab_size <= MAX_VOCAB_SIZE:
        raise LmzooError(f"vocab_size must be between 1 and {MAX_VOCAB_SIZE:,}, got {vocab_size:,}")


def train_tokenizer(kind: str, files: Inputs, vocab_size: int | None = None,
                    out: str | os.PathLike | None = None, text_field: str = "text") -> Tokenizer:
    """Train a `kind` tokenizer on `files` (anything `lmzoo.data.iter_pieces` accepts), streaming.

    Saves it into directory `out` when given.
    """
    from lmzoo.data.sources import iter_pieces  # lazy: lmzoo.data imports this package

    cls = _kind_class(kind)
    check_vocab_size(vocab_size)
    tokenizer = cls.train((piece.text for piece in iter_pieces(files, text_field)), vocab_size=vocab_size)
    if out is not None:
        tokenizer.save(out)
    return tokenizer
