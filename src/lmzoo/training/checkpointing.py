"""Training checkpoints: write atomically, find the newest valid one, prune old ones.

Layout of `OUT/checkpoints/step-0000100/`:

    config.json, model.safetensors, tokenizer.json   the model, as `save_pretrained` lays it out,
                                                     so `lmzoo.load(checkpoint_dir)` works
    optimizer.safetensors   AdamW moments as "<param name>/<key>" tensors; param groups and any
                            non-tensor values as JSON in the file's metadata
    rng_state.safetensors   torch CPU (and CUDA) generator states as uint8 tensors
    trainer_state.json      step, tokens seen, schedule, best val loss, the training config

No pickle anywhere: tensors are safetensors, the rest JSON. Each directory appears in one
rename (`atomic_directory`), so a killed run leaves the previous checkpoints intact and at most
a hidden `.step-*.tmp-PID-*` directory, which is never taken for a checkpoint and is removed
once process PID is dead. Only directories holding nothing but these files are ever replaced
or pruned: a `step-*` folder with anything else in it is not lmzoo's and is left alone.
"""
from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from lmzoo.checkpoint import CONFIG_FILE, WEIGHTS_FILE, is_legacy_scalar, load_weights
from lmzoo.errors import LmzooError
from lmzoo.io import atomic_directory, holds_only, remove_dead_temps
from lmzoo.registry import load_model, read_config
from lmzoo.training.metrics import warn

OPTIMIZER_FILE = "optimizer.safetensors"
RNG_FILE = "rng_state.safetensors"
STATE_FILE = "trainer_state.json"
CHECKPOINT_FILES = (CONFIG_FILE, WEIGHTS_FILE, "tokenizer.json", OPTIMIZER_FILE, RNG_FILE, STATE_FILE)
FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass
class Checkpoint:
    path: Path
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]
    rng_state: dict[str, torch.Tensor]
    trainer_state: dict[str, Any]

    @property
    def step(self) -> int:
        return self.trainer_state["step"]


def checkpoint_dir(root: str | Path, step: int) -> Path:
    return Path(root) / f"step-{step:07d}"


def step_of(path: Path) -> int:
    return int(_STEP_DIR.match(path.name).group(1))


def is_checkpoint_dir(path: Path) -> bool:
    """Holds nothing but checkpoint files: lmzoo's own, even when damaged (a file may be missing)."""
    return holds_only(path, CHECKPOINT_FILES)


def list_checkpoints(root: str | Path) -> list[Path]:
    """Checkpoint directories under `root`, oldest first (by step, not by name or mtime)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)), key=step_of)


# ---- optimizer state <-> safetensors ---------------------------------------------------------
def flatten_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Split a name-keyed optimizer state dict into tensors and JSON metadata."""
    tensors, scalars = {}, {}
    for param, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{param}/{key}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(param, {})[key] = value
    metadata = {"param_groups": json.dumps(state["param_groups"]), "scalars": json.dumps(scalars)}
    return tensors, metadata


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> dict[str, Any]:
    state: dict[str, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        param, key = name.rsplit("/", 1)
        state.setdefault(param, {})[key] = tensor
    for param, entries in json.loads(metadata["scalars"]).items():
        state.setdefault(param, {}).update(entries)
    return {"state": state, "param_groups": json.loads(metadata["param_groups"])}


def reshape_legacy_moments(state: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """The optimizer moments of a scalar parameter saved 0-d, before it became [1] (see
    `lmzoo.checkpoint.is_legacy_scalar`), in the parameter's new shape. AdamW's per-parameter
    `step` is 0-d for every parameter and stays so."""
    def fit(param: str, key: str, value: Any) -> Any:
        legacy = isinstance(value, torch.Tensor) and is_legacy_scalar(shapes.get(param, ()), value.shape)
        return value.reshape(1) if legacy and key != "step" else value

    fitted = {param: {key: fit(param, key, value) for key, value in entries.items()}
              for param, entries in state["state"].items()}
    return {**state, "state": fitted}


# ---- RNG -----------------------------------------------------------------------------------
def capture_rng() -> dict[str, torch.Tensor]:
    rng = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng.update({f"cuda_{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return rng


def restore_rng(rng: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(rng["torch_cpu"])
    cuda = [rng[f"cuda_{i}"] for i in range(sum(k.startswith("cuda_") for k in rng))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


# ---- save ------------------------------------------------------------------------------------
def save_checkpoint(root: str | Path, step: int, model_state: dict[str, torch.Tensor], model_config,
                    tokenizer, optimizer_state: dict[str, Any], trainer_state: dict[str, Any]) -> Path:
    """Write `root/step-NNNNNNN` in one atomic rename and return its path (rank 0 only)."""
    path = checkpoint_dir(root, step)
    if model_config.tie_embeddings:  # safetensors stores no shared tensors; the head is the embedding
        model_state = {k: v for k, v in model_state.items() if k != "lm_head.weight"}
    with atomic_directory(path, is_checkpoint_dir, "training checkpoint") as tmp:
        # The same three files `lmzoo.checkpoint.save_pretrained` writes, from an already
        # gathered state dict (an FSDP model's own state_dict() holds only this rank's shard).
        save_file({k: v.contiguous() for k, v in model_state.items()}, str(tmp / WEIGHTS_FILE),
                  metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(json.dumps(model_config.to_dict(), indent=2))
        if tokenizer is not None:
            tokenizer.save(tmp)
        tensors, metadata = flatten_optimizer_state(optimizer_state)
        save_file(tensors, str(tmp / OPTIMIZER_FILE), metadata=metadata)
        save_file(capture_rng(), str(tmp / RNG_FILE))
        state = {"format_version": FORMAT_VERSION, **trainer_state, "step": step}
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True))
    return path


def prune_checkpoints(root: str | Path, keep_last: int, current_step: int, keep_best: bool = False) -> None:
    """Keep the newest `keep_last` checkpoints up to `current_step` (0 keeps everything), and
    with `keep_best` also the one with the lowest val loss.

    Newer ones are left alone: they can only be a broken checkpoint this run resumed past,
    which stays on disk for inspection.
    """
    if keep_last > 0:
        best = best_checkpoint(root) if keep_best else None
        older = [p for p in list_checkpoints(root) if step_of(p) <= current_step]
        for path in older[:-keep_last]:
            if is_checkpoint_dir(path) and path != best:
                shutil.rmtree(path, ignore_errors=True)


# ---- listing --------------------------------------------------------------------------------
BEST_SUFFIX = "@best"


def checkpoint_summary(path: Path) -> dict[str, Any]:
    """Step, tokens seen and val loss of a checkpoint, from its trainer state (validated)."""
    state = _read_trainer_state(path)
    return {"path": str(path), "step": state["step"], "tokens_seen": state["tokens_seen"],
            "val_loss": state.get("val_loss"), "best_val_loss": state.get("best_val_loss")}


def list_checkpoint_summaries(root: str | Path) -> list[dict[str, Any]]:
    """`checkpoint_summary` of each checkpoint under `root`, oldest first; a damaged one says so."""
    rows = []
    for path in list_checkpoints(root):
        try:
            rows.append(checkpoint_summary(path))
        except LmzooError as e:
            rows.append({"path": str(path), "step": step_of(path), "error": str(e)})
    return rows


def best_checkpoint(root: str | Path) -> Path | None:
    """The checkpoint whose own evaluation had the lowest val loss (the newest of equals), if any."""
    rows = [r for r in list_checkpoint_summaries(root) if r.get("val_loss") is not None]
    if not rows:
        return None
    return Path(min(reversed(rows), key=lambda r: r["val_loss"])["path"])


def remove_partial_writes(root: str | Path) -> None:
    """Delete hidden temp directories a killed writer left behind (they were never checkpoints);
    one whose writer is still alive, or unknown, is left alone."""
    remove_dead_temps(root, ".step-*.tmp-*")


# ---- load ------------------------------------------------------------------------------------
def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        raise LmzooError(f"missing {path.name} in {path.parent}; the checkpoint is incomplete")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise LmzooError(f"{path} is corrupt or truncated ({e}); use an earlier checkpoint") from e


def _read_trainer_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise LmzooError(f"missing {STATE_FILE} in {path}; the checkpoint is incomplete") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LmzooError(f"{path / STATE_FILE} is not valid JSON ({e}); use an earlier checkpoint") from e
    if not isinstance(state, dict) or not all(_is_count(state.get(k)) for k in ("step", "tokens_seen")):
        raise LmzooError(f"{path / STATE_FILE} lacks an integer 'step' or 'tokens_seen'; "
                         "it is not a complete training checkpoint")
    if not _is_count(state.get("format_version", 0)):
        raise LmzooError(f"{path / STATE_FILE} has a damaged format_version; use an earlier checkpoint")
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise LmzooError(f"{path} was written by a newer lmzoo (format {state['format_version']}); upgrade")
    _check_trainer_state(state, path / STATE_FILE)
    if _STEP_DIR.match(path.name) and step_of(path) != state["step"]:
        raise LmzooError(f"{path / STATE_FILE} says step {state['step']} in a directory for step {step_of(path)}; "
                         "use an earlier checkpoint")
    return state


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_trainer_state(state: dict[str, Any], file: Path) -> None:
    """The optional values the trainer reads back, checked for type and range."""
    problems = []
    if not _is_count(state.get("skipped_steps", 0)):
        problems.append("skipped_steps")
    if not _is_count(state.get("world_size", 1)) or state.get("world_size", 1) < 1:
        problems.append("world_size")
    for key in ("best_val_loss", "val_loss"):
        value = state.get(key)
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                  or not math.isfinite(value)):
            problems.append(key)
    if not _is_count(state.get("evals_since_best", 0)):
        problems.append("evals_since_best")
    for key in ("train_config", "schedule", "curriculum"):
        if state.get(key) is not None and not isinstance(state[key], dict):
            problems.append(key)
    if problems:
        raise LmzooError(f"{file} has damaged {', '.join(problems)}; use an earlier checkpoint")


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and validate every file of a checkpoint; any problem raises a one-line LmzooError."""
    path = Path(path)
    if not path.is_dir():
        raise LmzooError(f"no checkpoint directory at '{path}'; pass a step-* folder or --resume auto")
    trainer_state = _read_trainer_state(path)
    read_config(path)  # validates config.json
    model_state = load_weights(path / WEIGHTS_FILE)
    opt_tensors, opt_meta = _read_safetensors(path / OPTIMIZER_FILE)
    try:
        optimizer_state = unflatten_optimizer_state(opt_tensors, opt_meta)
    except (KeyError, ValueError) as e:
        raise LmzooError(f"{path / OPTIMIZER_FILE} has malformed metadata ({e}); use an earlier checkpoint") from e
    rng_state, _ = _read_safetensors(path / RNG_FILE)
    if "torch_cpu" not in rng_state:
        raise LmzooError(f"{path / RNG_FILE} has no 'torch_cpu' state; use an earlier checkpoint")
    return Checkpoint(path, model_state, optimizer_state, rng_state, trainer_state)


def latest_valid_checkpoint(root: str | Path, verbose: bool = True) -> Checkpoint | None:
    """The newest checkpoint that loads; each broken newer one is reported and left on disk."""
    for path in reversed(list_checkpoints(root)):
        try:
            return load_checkpoint(path)
        except LmzooError as e:
            if verbose:
                warn(f"skipping checkpoint {path.name}: {e}")
    return None


def resolve_model_dir(path: str | Path) -> Path:
    """A model or checkpoint directory as given; a training run's directory -> its newest valid
    checkpoint; `RUN@best` -> the run's checkpoint with the lowest val loss."""
    if str(path).endswith(BEST_SUFFIX) and not Path(path).exists():
        return _best_of_run(Path(str(path)[: -len(BEST_SUFFIX)]))
    path = Path(path)
    if not (path / CONFIG_FILE).is_file() and (path / "checkpoints").is_dir():
        found = latest_valid_checkpoint(path / "checkpoints")
        if found is None:
            raise LmzooError(f"'{path}' is a training run without a valid checkpoint yet; train longer")
        return found.path
    return path


def _best_of_run(run: Path) -> Path:
    if not (run / "checkpoints").is_dir():
        raise LmzooError(f"'{run}{BEST_SUFFIX}': {run} is not a training run (no checkpoints/ folder); pass a run "
                         "directory before @best")
    best = best_checkpoint(run / "checkpoints")
    if best is None:
        raise LmzooError(f"no checkpoint of '{run}' records a val loss (evaluations and checkpoints fell on "
                         "different steps); pass the run itself for its newest checkpoint")
    return best


def load(path: str | Path, map_location: str = "cpu"):
    """Rebuild a model saved by `save_pretrained`, a trainer checkpoint, or a run's newest checkpoint."""
    return load_model(resolve_model_dir(path), map_location)
