"""Config dataclasses shared by every architecture.

A config is a plain dataclass: JSON-serialisable, versioned, and strict about unknown keys so a
typo in a recipe fails loudly instead of silently training the default.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from lmzoo.errors import LmzooError

CONFIG_VERSION = 1


@dataclass
class ModelConfig:
    """Fields every architecture has. Subclasses add their own."""

    arch: ClassVar[str] = ""
    # Keys older lmzoo versions wrote that no longer mean anything: dropped when a config is read.
    removed_keys: ClassVar[tuple[str, ...]] = ()
    vocab_size: int = 259
    d_model: int = 128
    n_layers: int = 4
    tie_embeddings: bool = True
    init_std: float = 0.02
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.vocab_size < 2:
            raise LmzooError(f"vocab_size must be >= 2, got {self.vocab_size}")
        if self.d_model < 1 or self.n_layers < 1:
            raise LmzooError("d_model and n_layers must be positive")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        data = dict(data)
        arch = data.pop("arch", cls.arch)
        version = data.pop("config_version", CONFIG_VERSION)
        if arch != cls.arch:
            raise LmzooError(f"config is for architecture '{arch}', not '{cls.arch}'; load it with lmzoo.load()")
        if version > CONFIG_VERSION:
            raise LmzooError(f"config version {version} is newer than this lmzoo ({CONFIG_VERSION}); upgrade lmzoo")
        for key in cls.removed_keys:
            data.pop(key, None)
        check_keys(cls, data)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, "config_version": CONFIG_VERSION, **dataclasses.asdict(self)}

    def replace(self, **overrides: Any) -> "ModelConfig":
        check_keys(type(self), overrides)
        return dataclasses.replace(self, **overrides)


def check_keys(cls: type, data: dict[str, Any]) -> None:
    """Raise a one-line error naming unknown keys and the valid ones."""
    valid = cls.field_names()
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise LmzooError(
            f"unknown config key(s) {unknown} for '{cls.arch}'; valid keys: {', '.join(valid)}"
        )
