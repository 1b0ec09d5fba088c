"""AdamW with the usual no-decay groups, and the warmup + cosine learning-rate schedule."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices; leave norms, biases (1-D) and embeddings (shrinking them only hurts) alone."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for param in model.parameters():  # deduplicated, so a tied LM head counts once (as the embedding)
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or id(param) in embeddings else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float,
                    betas: tuple[float, float]) -> torch.optim.AdamW:
    # Fused (CPU and CUDA): one kernel for all parameters, and it accepts the `found_inf` flag
    # the trainer uses to skip a non-finite step on the device without a host sync.
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, fused=True)


@dataclass(frozen=True)
class CosineSchedule:
    """Linear warmup to `peak_lr`, then a cosine down to `peak_lr * min_lr_ratio` at `total_steps`.

    A pure function of the step: resuming needs no scheduler state beyond the step itself.
    """

    peak_lr: float
    warmup_steps: int
    total_steps: int
    min_lr_ratio: float = 0.1

    def __call__(self, step: int) -> float:
        """Learning rate for the update that takes the model from `step` to `step + 1`."""
        if step < self.warmup_steps:
            return self.peak_lr * (step + 1) / self.warmup_steps
        min_lr = self.peak_lr * self.min_lr_ratio
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return min_lr + (self.peak_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def to_dict(self) -> dict:
        return asdict(self)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
