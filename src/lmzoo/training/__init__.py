"""Training: `run_training(TrainConfig)`, its CLI flags, checkpoints, evaluation.

    python -m lmzoo.training --data data/tiny --arch transformer --size nano --max-steps 200
    torchrun --nproc_per_node 2 -m lmzoo.training --data data/tiny ...   # DDP (or --fsdp)
"""
from lmzoo.training.checkpointing import latest_valid_checkpoint, list_checkpoints, load_checkpoint
from lmzoo.training.config import TrainConfig, add_train_arguments, config_from_args
from lmzoo.training.evaluate import evaluate
from lmzoo.training.trainer import run_training

__all__ = ["TrainConfig", "add_train_arguments", "config_from_args", "evaluate", "latest_valid_checkpoint",
           "list_checkpoints", "load_checkpoint", "run_training"]
