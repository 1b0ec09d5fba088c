"""The architecture registry: name -> (model class, config class, size presets).

Model modules register themselves when imported; `lmzoo/__init__.py` imports them all, so the
registry is complete as soon as any part of lmzoo is imported.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from lmzoo.checkpoint import CONFIG_FILE, load_into_class, read_config_dict
from lmzoo.config import ModelConfig, check_keys
from lmzoo.errors import LmzooError
from lmzoo.sizing import meta_model, plan_model


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


def get_architecture(name: str) -> Architecture:
    if name not in _ARCHITECTURES:
        raise LmzooError(f"unknown architecture '{name}'; choose one of: {', '.join(list_architectures())}")
    return _ARCHITECTURES[name]


def list_architectures() -> list[str]:
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
    """Build an architecture at a named size; keyword overrides replace config fields.

    A model whose vocabulary is the bytes tokenizer's (the default, 259) comes with that tokenizer,
    so text entry points and `save_pretrained` work at once; any other size needs `model.tokenizer`
    set to the tokenizer its ids come from."""
    from lmzoo.tokenizers import ByteTokenizer

    config = make_config(arch, size, **overrides)
    model_cls = get_architecture(arch).model_cls
    plan_model(model_cls, config)  # an absurd size fails here, before any memory is allocated
    model = model_cls(config)
    if config.vocab_size == ByteTokenizer().vocab_size:
        model.tokenizer = ByteTokenizer()
    return model


def non_embedding_parameters(arch: str, size: str, **overrides: Any) -> int:
    """Non-embedding parameters of `arch` at `size`, counted on a meta model (no memory)."""
    config = make_config(arch, size, **overrides)
    return meta_model(get_architecture(arch).model_cls, config).num_parameters(embedding=False)


def matched_value(arch: str, size: str, field: str = "d_ff", multiple: int = 32,
                  reference: str = "transformer") -> int:
    """The value of `field` (a multiple of `multiple`) that brings `arch` at `size` closest to
    `reference`'s non-embedding parameter count at `size`, measured on meta models.

    The presets of every architecture come from this (tests/test_registry.py checks each one), so
    same-name sizes compare at equal parameters without a hand-derived formula per model. The
    count is affine in a width such as d_ff: two builds give the line, and the multiples around
    its crossing are measured to pick the closest."""
    target = non_embedding_parameters(reference, size)
    low, high = (non_embedding_parameters(arch, size, **{field: v}) for v in (multiple, 2 * multiple))
    slope = (high - low) / multiple
    if slope <= 0:
        raise LmzooError(f"{arch}: the parameter count does not grow with {field}; match another field")
    k = max(1, round((target - low) / slope / multiple) + 1)
    candidates = [m * multiple for m in range(max(1, k - 1), k + 2)]
    return min(candidates, key=lambda v: abs(non_embedding_parameters(arch, size, **{field: v}) - target))


def read_config(directory: str | Path) -> ModelConfig:
    """The validated config of a model directory, as its architecture's config class."""
    data = read_config_dict(directory)
    config_cls = get_architecture(data["arch"]).config_cls
    try:
        return config_cls.from_dict(data)
    except (LmzooError, TypeError) as e:  # TypeError: a value the dataclass cannot even take
        raise LmzooError(f"{Path(directory) / CONFIG_FILE}: {e}; the config is damaged, re-save the model or use "
                         "an earlier checkpoint") from None


def load_model(directory: str | Path, map_location: str = "cpu", expect: type | None = None):
    """The model saved in `directory` (by `save_pretrained`, or a trainer checkpoint), whatever its
    architecture; `expect` (a class) makes any other architecture an error."""
    config = read_config(directory)
    arch = get_architecture(config.arch)
    if expect is not None and not issubclass(arch.model_cls, expect):
        raise LmzooError(f"'{directory}' holds a '{config.arch}' model, not a {expect.__name__}; "
                         "load it with lmzoo.load()")
    return load_into_class(arch.model_cls, config, directory, map_location)
