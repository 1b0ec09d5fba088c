"""Saving and loading models: config.json + model.safetensors (+ tokenizer). No pickle.

This module knows files, not architectures: loading into a given model class lives here, and
finding the class for a directory's `arch` is the registry's (`lmzoo.registry.load_model`).
A training run's directory is resolved to a checkpoint above both, in `lmzoo.training.checkpointing`.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lmzoo.errors import LmzooError
from lmzoo.io import atomic_directory, check_replaceable, holds_only
from lmzoo.locking import output_lock

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
# What a saved model directory may hold: the model, its tokenizer, and the report `lmzoo
# finetune` puts beside them. Only a directory holding nothing else is ever replaced.
MODEL_DIR_FILES = (CONFIG_FILE, WEIGHTS_FILE, "tokenizer.json", "finetune.json")
MODEL_DIR_KIND = "saved model directory (config.json + model.safetensors)"


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
    if not isinstance(data, dict) or "arch" not in data:
        raise LmzooError(f"{path} names no 'arch'; it is not an lmzoo model config")
    return data


def load_weights(path: Path, map_location: str = "cpu") -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise LmzooError(f"missing weights file {path}; the checkpoint is incomplete, use an earlier one")
    try:
        return load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as e:
        raise LmzooError(f"{path} is corrupt or truncated ({e}); re-save it or use an earlier checkpoint") from e


def load_state_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    expected = set(model_state_dict(model))
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise LmzooError(f"{source} does not match architecture '{model.config.arch}' "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]}); was it saved by another model?")
    for name, tensor in model_state_dict(model).items():
        if state[name].shape != tensor.shape:
            raise LmzooError(f"{source}: '{name}' has shape {tuple(state[name].shape)}, the config expects "
                             f"{tuple(tensor.shape)}; config.json and weights do not belong together")
    model.load_state_dict(state, strict=False)


def load_into_class(model_cls: type, config, directory: str | Path, map_location: str = "cpu"):
    """Build `model_cls(config)`, fill it with the directory's weights (and tokenizer), eval mode."""
    directory = Path(directory)
    model = model_cls(config)
    load_state_into(model, load_weights(directory / WEIGHTS_FILE, map_location), directory / WEIGHTS_FILE)
    model.to(map_location)
    if (directory / "tokenizer.json").is_file():
        from lmzoo.tokenizers import load_tokenizer
        model.tokenizer = load_tokenizer(directory)
    return model.eval()
