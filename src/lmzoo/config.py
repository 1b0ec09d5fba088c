"""Config dataclasses shared by every architecture.

A config is a plain dataclass: JSON-serialisable, versioned, and strict about unknown keys so a
typo in a recipe fails loudly instead of silently training the default.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from lmzoo.errors import LmzooError

CONFIG_VERSION = 1
# Bounds that no sensible model reaches; anything beyond is a typo or a corrupt file, refused
# before a single tensor is allocated (`lmzoo.sizing` then checks the total against memory).
MAX_INT_FIELD = 1 << 24
MAX_LAYERS = 1024
# What a field's value may be, per annotation (annotations are strings: postponed evaluation).
FIELD_TYPES = {"int": (int,), "int | None": (int, type(None)), "float": (int, float),
               "float | None": (int, float, type(None)), "bool": (bool,), "str": (str,),
               "tuple": (tuple, list), "dict | None": (dict, type(None)), "dict": (dict,)}


@dataclass
class ModelConfig:
    """Fields every architecture has. Subclasses add their own."""

    arch: ClassVar[str] = ""
    # Integer fields for which 0 means something (e.g. "none" or "automatic"); the others are >= 1.
    zero_allowed: ClassVar[frozenset[str]] = frozenset()
    # Keys older lmzoo versions wrote that no longer mean anything: dropped when a config is read.
    removed_keys: ClassVar[tuple[str, ...]] = ()
    # Fields added later whose new default changes the model: the value a stored config that lacks
    # the key was trained with (so an old checkpoint loads as the model it was).
    legacy_defaults: ClassVar[dict[str, Any]] = {}
    vocab_size: int = 259
    d_model: int = 128
    n_layers: int = 4
    tie_embeddings: bool = True
    init_std: float = 0.02
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        self._check_values()
        if self.vocab_size < 2:
            raise LmzooError(f"vocab_size must be >= 2, got {self.vocab_size}")
        if self.d_model < 1 or self.n_layers < 1:
            raise LmzooError("d_model and n_layers must be positive")

    def _check_values(self) -> None:
        """Type and range of every field, so nothing later meets a string, a NaN or 10**12."""
        for f in fields(self):
            value = getattr(self, f.name)
            # Annotations are strings under postponed evaluation; a module without it gives classes.
            type_name = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            allowed = FIELD_TYPES.get(type_name)
            numeric = type_name.startswith(("int", "float"))
            if allowed is not None and (not isinstance(value, allowed) or (numeric and isinstance(value, bool))):
                raise LmzooError(f"config field {f.name} must be {type_name}, got {value!r}; fix the value")
            if isinstance(value, float) and not math.isfinite(value):
                raise LmzooError(f"config field {f.name} must be a finite number, got {value}")
            if type_name.startswith("int") and isinstance(value, int) and not isinstance(value, bool):
                low = 0 if f.name in self.zero_allowed else 1
                high = MAX_LAYERS if f.name == "n_layers" else MAX_INT_FIELD
                if not low <= value <= high:
                    raise LmzooError(f"config field {f.name} must be between {low} and {high:,}, got {value:,}")

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
        if not isinstance(version, int) or isinstance(version, bool):
            raise LmzooError(f"config_version must be an integer, got {version!r}")
        if version > CONFIG_VERSION:
            raise LmzooError(f"config version {version} is newer than this lmzoo ({CONFIG_VERSION}); upgrade lmzoo")
        for key in cls.removed_keys:
            data.pop(key, None)
        for key, value in cls.legacy_defaults.items():
            data.setdefault(key, value)
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
