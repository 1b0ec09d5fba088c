"""Training: `run_training(TrainConfig)`, its CLI flags, checkpoints, evaluation.

    python -m lmzoo.training --data data/tiny --arch transformer --size nano --max-steps 200
    torchrun --nproc_per_node 2 -m lmzoo.training --data data/tiny ...   # DDP (or --fsdp)

The names below are imported on first use, so `import lmzoo` (which needs only checkpoint
loading from here) does not pull in the trainer and its distributed machinery.
"""
import importlib

# Imported now, not on first use: `evaluate` is also the name of its submodule, and importing the
# submodule (which any module may do first) binds the module to `lmzoo.training.evaluate`,
# shadowing a lazily exported function. It is light (torch, and what `import lmzoo` loads anyway).
from lmzoo.training.evaluate import evaluate

_EXPORTS = {
    "latest_valid_checkpoint": "checkpointing", "list_checkpoints": "checkpointing", "load_checkpoint": "checkpointing",
    "TrainConfig": "config", "add_train_arguments": "config", "config_from_args": "config",
    "run_training": "trainer",
}
__all__ = sorted([*_EXPORTS, "evaluate"])


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lmzoo.training' has no attribute '{name}'")
    return getattr(importlib.import_module(f"lmzoo.training.{_EXPORTS[name]}"), name)
