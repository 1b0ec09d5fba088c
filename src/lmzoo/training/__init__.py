"""Training: `run_training(TrainConfig)`, its CLI flags, checkpoints, evaluation.

    python -m lmzoo.training --data data/tiny --arch transformer --size nano --max-steps 200
    torchrun --nproc_per_node 2 -m lmzoo.training --data data/tiny ...   # DDP (or --fsdp)

`run_training` is imported on first use, so `import lmzoo` (which needs checkpoint loading from
here) does not pull in the trainer and its distributed machinery.
"""
from lmzoo.training.checkpointing import latest_valid_checkpoint, list_checkpoints, load_checkpoint
from lmzoo.training.config import TrainConfig, add_train_arguments, config_from_args
from lmzoo.training.evaluate import evaluate

__all__ = ["TrainConfig", "add_train_arguments", "config_from_args", "evaluate", "latest_valid_checkpoint",
           "list_checkpoints", "load_checkpoint", "run_training"]


def __getattr__(name: str):
    if name == "run_training":
        from lmzoo.training.trainer import run_training
        return run_training
    raise AttributeError(f"module 'lmzoo.training' has no attribute '{name}'")
