"""Saving and loading models: config.json + model.safetensors (+ tokenizer). No pickle.

This module knows files, not architectures: loading into a given model class lives here, and
finding the class for a directory's `arch` is the registry's (`lmzoo.registry.load_model`).
A training run's directory is resolved to a checkpoint above both, in `lmzoo.training.checkpointing`.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from lmzoo.errors import LmzooError
from lmzoo.io import atomic_directory, check_replaceable, holds_only
from lmzoo.locking import output_lock
from lmzoo.sizing import check_memory, meta_model, saved_shapes

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
# What a saved model directory may hold: the model, its tokenizer, and the report `lmzoo
# finetune` puts beside them. Only a directory holding nothing else is ever replaced.
MODEL_DIR_FILES = (CONFIG_FILE, WEIGHTS_FILE, "tokenizer.json", "finetune.json")
MODEL_DIR_KIND = "saved model directory (config.json + model.safetensors)"
# A Hugging Face directory of an lmzoo model (`lmzoo export-hf`, or `save_pretrained` of the HF wrapper)
# keeps the lmzoo config as this key of its config.json, the weights under lmzoo's names, and lmzoo's
# tokenizer as EXPORT_TOKENIZER_FILE (its tokenizer.json is the HF one); `lmzoo.load()` reads it.
HF_CONFIG_KEY = "lmzoo_config"
EXPORT_TOKENIZER_FILE = "lmzoo_tokenizer.json"


def model_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State dict without the tied LM head (safetensors stores no shared tensors)."""
    state = model.state_dict()
    if getattr(model.config, "tie_embeddings", False):
        state.pop("lm_head.weight", None)
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def is_model_dir(path: Path) -> bool:
    """A directory `save_pretrained` wrote: only its files, and a config.json naming an lmzoo arch."""
    if not holds_only(path, MODEL_DIR_FILES, required=CONFIG_FILE):
        return False
    try:
        config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(config, dict) and isinstance(config.get("arch"), str)


def check_model_output(directory: str | Path) -> None:
    """Raise unless `save_pretrained` may write `directory` (absent, empty, or a saved model)."""
    check_replaceable(directory, is_model_dir, MODEL_DIR_KIND)


def save_pretrained(model, directory: str | Path, tokenizer=None) -> None:
    """Write the model to `directory` in one rename; an existing one must be a saved model."""
    with output_lock(directory, "directory"), atomic_directory(directory, is_model_dir, MODEL_DIR_KIND) as tmp:
        save_file(model_state_dict(model), str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(json.dumps(model.config.to_dict(), indent=2))
        if tokenizer is not None:
            tokenizer.save(tmp)


def read_config_dict(directory: str | Path) -> dict:
    """config.json of a model directory as a dict naming its `arch`, or a one-line LmzooError."""
    directory = Path(directory)
    if not directory.is_dir():
        raise LmzooError(f"no model directory at '{directory}'; pass a folder written by save_pretrained "
                         "or a training checkpoint")
    path = directory / CONFIG_FILE
    if not path.is_file():
        if (directory / "checkpoints").is_dir():
            raise LmzooError(f"'{directory}' is a training run, not a model folder; load it with lmzoo.load() "
                             "(its newest checkpoint) or pass one of its checkpoints")
        raise LmzooError(f"'{directory}' has no {CONFIG_FILE}; it is not an lmzoo model directory")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LmzooError(f"{path} is not valid JSON ({e}); the checkpoint is corrupt, use an earlier one") from e
    if isinstance(data, dict) and isinstance(data.get(HF_CONFIG_KEY), dict):
        data = data[HF_CONFIG_KEY]
    if not isinstance(data, dict) or not isinstance(data.get("arch"), str):
        raise LmzooError(f"{path} names no 'arch'; it is not an lmzoo model config")
    return data


def load_weights(path: Path, map_location: str = "cpu") -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise LmzooError(f"missing weights file {path}; the checkpoint is incomplete, use an earlier one")
    try:
        return load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as e:
        raise LmzooError(f"{path} is corrupt or truncated ({e}); re-save it or use an earlier checkpoint") from e


def read_weight_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tensors in a safetensors file, from its header alone (nothing loaded)."""
    if not path.is_file():
        raise LmzooError(f"missing weights file {path}; the checkpoint is incomplete, use an earlier one")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise LmzooError(f"{path} is corrupt or truncated ({e}); re-save it or use an earlier checkpoint") from e


def is_legacy_scalar(expected: tuple, found: tuple) -> bool:
    """A 0-d tensor saved where the model now has shape [1]. Scalar parameters became [1] (FSDP2
    shards no 0-d parameter); the old file holds exactly the one value, so it loads reshaped."""
    return tuple(found) == () and tuple(expected) == (1,)


def check_shapes(expected: dict[str, tuple], found: dict[str, tuple], source: Path, arch: str) -> None:
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or unexpected:
        raise LmzooError(f"{source} does not match architecture '{arch}' "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]}); was it saved by another model?")
    for name, shape in expected.items():
        if tuple(found[name]) != tuple(shape) and not is_legacy_scalar(shape, found[name]):
            raise LmzooError(f"{source}: '{name}' has shape {tuple(found[name])}, the config expects "
                             f"{tuple(shape)}; config.json and weights do not belong together")


def load_state_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    expected = saved_shapes(model)
    check_shapes(expected, {name: tuple(t.shape) for name, t in state.items()}, source, model.config.arch)
    model.load_state_dict({name: t.reshape(expected[name]) for name, t in state.items()}, strict=False)


def load_into_class(model_cls: type, config, directory: str | Path, map_location: str = "cpu"):
    """Build `model_cls(config)`, fill it with the directory's weights (and tokenizer), eval mode.

    Config and weights header are compared on the meta device before anything is allocated, so
    a corrupt or absurd config.json cannot exhaust memory."""
    directory = Path(directory)
    weights = directory / WEIGHTS_FILE
    planned = meta_model(model_cls, config)
    check_shapes(saved_shapes(planned), read_weight_shapes(weights), weights, config.arch)
    check_memory(planned)
    tokenizer = load_matching_tokenizer(directory, config) if tokenizer_file(directory) is not None else None
    model = model_cls(config)
    load_state_into(model, load_weights(weights, map_location), weights)
    model.to(map_location)
    model.tokenizer = tokenizer
    return model.eval()


def tokenizer_file(directory: Path) -> Path | None:
    """The lmzoo tokenizer file of a model directory (None if it has none): tokenizer.json, or in a Hugging
    Face directory, whose tokenizer.json is the HF one, EXPORT_TOKENIZER_FILE."""
    if (directory / EXPORT_TOKENIZER_FILE).is_file():
        return directory / EXPORT_TOKENIZER_FILE
    if (directory / "tokenizer.json").is_file() and not is_hf_directory(directory):
        return directory / "tokenizer.json"
    return None


def is_hf_directory(directory: Path) -> bool:
    """A Hugging Face directory of an lmzoo model: its config.json holds the lmzoo config under HF_CONFIG_KEY."""
    try:
        data = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and isinstance(data.get(HF_CONFIG_KEY), dict)


def load_matching_tokenizer(directory: Path, config):
    """The directory's tokenizer, refused if it makes ids the model has no embedding for (a model
    with a larger vocabulary is fine: generation never samples ids the tokenizer cannot decode)."""
    from lmzoo.tokenizers import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_file(directory))
    if tokenizer.vocab_size > config.vocab_size:
        raise LmzooError(f"{directory}: the tokenizer has {tokenizer.vocab_size:,} ids but the model only "
                         f"{config.vocab_size:,}; the tokenizer.json belongs to another model, restore the right one")
    return tokenizer
