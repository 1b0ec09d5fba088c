"""The architecture registry: name -> (model class, config class, size presets)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from lmzoo.config import ModelConfig, check_keys
from lmzoo.errors import LmzooError
from lmzoo.sizing import plan_model


@dataclass(frozen=True)
class Architecture:
    name: str
    model_cls: type
    config_cls: type[ModelConfig]
    presets: dict[str, dict[str, Any]]
    description: str


_ARCHITECTURES: dict[str, Architecture] = {}


def register(name: str, config_cls: type[ModelConfig], presets: dict[str, dict[str, Any]],
             description: str = "") -> Callable[[type], type]:
    """Class decorator adding a model class to the registry under `name`."""

    def wrap(model_cls: type) -> type:
        if name in _ARCHITECTURES:
            raise RuntimeError(f"architecture '{name}' registered twice")
        config_cls.arch = name
        model_cls.config_cls = config_cls
        _ARCHITECTURES[name] = Architecture(name, model_cls, config_cls, presets, description)
        return model_cls

    return wrap


def _ensure_loaded() -> None:
    import lmzoo.models  # noqa: F401  (importing registers every architecture)


def get_architecture(name: str) -> Architecture:
    _ensure_loaded()
    if name not in _ARCHITECTURES:
        raise LmzooError(f"unknown architecture '{name}'; choose one of: {', '.join(list_architectures())}")
    return _ARCHITECTURES[name]


def list_architectures() -> list[str]:
    _ensure_loaded()
    return list(_ARCHITECTURES)


def list_sizes(arch: str) -> list[str]:
    return list(get_architecture(arch).presets)


def make_config(arch: str, size: str = "nano", **overrides: Any) -> ModelConfig:
    spec = get_architecture(arch)
    if size not in spec.presets:
        raise LmzooError(f"unknown size '{size}' for '{arch}'; choose one of: {', '.join(spec.presets)}")
    check_keys(spec.config_cls, overrides)
    return spec.config_cls(**{**spec.presets[size], **overrides})


def create_model(arch: str, size: str = "nano", **overrides: Any):
    """Build an architecture at a named size; keyword overrides replace config fields."""
    config = make_config(arch, size, **overrides)
    model_cls = get_architecture(arch).model_cls
    plan_model(model_cls, config)  # an absurd size fails here, before any memory is allocated
    return model_cls(config)
