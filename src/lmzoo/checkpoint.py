"""Saving and loading models: config.json + model.safetensors (+ tokenizer). No pickle."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from lmzoo.errors import LmzooError
from lmzoo.io import atomic_directory
from lmzoo.sizing import check_memory, meta_model, saved_shapes

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def model_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State dict without the tied LM head (safetensors stores no shared tensors)."""
    state = model.state_dict()
    if getattr(model.config, "tie_embeddings", False):
        state.pop("lm_head.weight", None)
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def save_pretrained(model, directory: str | Path, tokenizer=None) -> None:
    with atomic_directory(directory) as tmp:
        save_file(model_state_dict(model), str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(json.dumps(model.config.to_dict(), indent=2))
        if tokenizer is not None:
            tokenizer.save(tmp)


def read_config(directory: str | Path):
    from lmzoo.registry import get_architecture

    directory = Path(directory)
    if not directory.is_dir():
        raise LmzooError(f"no model directory at '{directory}'; pass a folder written by save_pretrained "
                         "or a training checkpoint")
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise LmzooError(f"'{directory}' has no {CONFIG_FILE}; it is not an lmzoo model directory")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LmzooError(f"{path} is not valid JSON ({e}); the checkpoint is corrupt, use an earlier one") from e
    if not isinstance(data, dict) or not isinstance(data.get("arch"), str):
        raise LmzooError(f"{path} names no 'arch'; it is not an lmzoo model config")
    try:
        return get_architecture(data["arch"]).config_cls.from_dict(data)
    except (LmzooError, TypeError) as e:  # TypeError: a value the dataclass cannot even take
        raise LmzooError(f"{path}: {e}; the config is damaged, re-save the model or use an earlier checkpoint") from None


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


def check_shapes(expected: dict[str, tuple], found: dict[str, tuple], source: Path, arch: str) -> None:
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or unexpected:
        raise LmzooError(f"{source} does not match architecture '{arch}' "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]}); was it saved by another model?")
    for name, shape in expected.items():
        if tuple(found[name]) != tuple(shape):
            raise LmzooError(f"{source}: '{name}' has shape {tuple(found[name])}, the config expects "
                             f"{tuple(shape)}; config.json and weights do not belong together")


def load_state_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    check_shapes(saved_shapes(model), {name: tuple(t.shape) for name, t in state.items()}, source,
                 model.config.arch)
    model.load_state_dict(state, strict=False)


def resolve_model_dir(path: str | Path) -> Path:
    """A model or checkpoint directory as given; a training run's directory -> its newest valid checkpoint."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file() and (path / "checkpoints").is_dir():
        from lmzoo.training.checkpointing import latest_valid_checkpoint

        found = latest_valid_checkpoint(path / "checkpoints")
        if found is None:
            raise LmzooError(f"'{path}' is a training run without a valid checkpoint yet; train longer")
        return found.path
    return path


def load(directory: str | Path, map_location: str = "cpu", expect: type | None = None):
    """Rebuild a model saved by `save_pretrained`, a trainer checkpoint, or a run's newest checkpoint."""
    from lmzoo.registry import get_architecture

    directory = resolve_model_dir(directory)
    config = read_config(directory)
    arch = get_architecture(config.arch)
    if expect is not None and not issubclass(arch.model_cls, expect):
        raise LmzooError(f"'{directory}' holds a '{config.arch}' model, not a {expect.__name__}; "
                         "load it with lmzoo.load()")
    # Config and weights header are checked against each other on the meta device before
    # anything is allocated: a corrupt or absurd config.json cannot exhaust memory.
    planned = meta_model(arch.model_cls, config)
    weights = directory / WEIGHTS_FILE
    check_shapes(saved_shapes(planned), read_weight_shapes(weights), weights, config.arch)
    check_memory(planned)
    tokenizer = load_matching_tokenizer(directory, config) if (directory / "tokenizer.json").is_file() else None
    model = arch.model_cls(config)
    load_state_into(model, load_weights(weights, map_location), weights)
    model.to(map_location)
    model.tokenizer = tokenizer
    return model.eval()


def load_matching_tokenizer(directory: Path, config):
    """The directory's tokenizer, refused if it makes ids the model has no embedding for (a model
    with a larger vocabulary is fine: generation never samples ids the tokenizer cannot decode)."""
    from lmzoo.tokenizers import load_tokenizer

    tokenizer = load_tokenizer(directory)
    if tokenizer.vocab_size > config.vocab_size:
        raise LmzooError(f"{directory}: the tokenizer has {tokenizer.vocab_size:,} ids but the model only "
                         f"{config.vocab_size:,}; the tokenizer.json belongs to another model, restore the right one")
    return tokenizer
