"""Metrics: device-side accumulation between log points, and the JSONL / TensorBoard writers.

The training loop never reads a tensor back to the host except here, at log intervals: the
loss, skip count and gradient norm of every step accumulate on the device in `StepMeter`.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from lmzoo.errors import LmzooError
from lmzoo.training.distributed import all_reduce_sum

METRICS_FILE = "metrics.jsonl"


class StepMeter:
    """Sums over the steps since the last log: loss of the applied steps, skipped (non-finite) steps."""

    def __init__(self, device: torch.device):
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.loss_sum = torch.zeros((), device=self.device)
        self.applied = torch.zeros((), device=self.device)
        self.skipped = torch.zeros((), dtype=torch.long, device=self.device)
        self.first_bad_step = torch.full((), -1, dtype=torch.long, device=self.device)
        self.grad_norm = torch.zeros((), device=self.device)

    def update(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor, bad: torch.Tensor) -> None:
        """Record `step`; `bad` (a device bool) marks a step whose update was skipped."""
        self.loss_sum += torch.where(bad, 0.0, loss.float())
        self.applied += (~bad).float()
        self.skipped += bad.long()
        self.first_bad_step = torch.where(bad & (self.first_bad_step < 0), step, self.first_bad_step)
        self.grad_norm = grad_norm.detach().float()

    def read(self) -> dict[str, Any]:
        """Host values (the one sync per log interval); the loss is averaged over all ranks.

        Skips agree across ranks: they come from the global (all-reduced) gradient norm.
        """
        loss_sum, applied = all_reduce_sum(torch.stack([self.loss_sum, self.applied])).tolist()
        skipped, first_bad = torch.stack([self.skipped, self.first_bad_step]).tolist()
        # None (JSON null) when every step was skipped: NaN is not valid JSON.
        result = {"loss": loss_sum / applied if applied else None, "grad_norm": float(self.grad_norm),
                  "skipped": skipped, "first_bad_step": first_bad if first_bad >= 0 else None}
        self.reset()
        return result

    def state_dict(self) -> dict[str, float]:
        """The loss sums over all ranks (a collective), for a checkpoint."""
        loss_sum, applied = all_reduce_sum(torch.stack([self.loss_sum, self.applied])).tolist()
        return {"loss_sum": loss_sum, "applied": applied}

    def load_state_dict(self, state: dict[str, float] | None) -> None:
        """Carry on from `state_dict()`'s sums (on one rank: they already hold every rank's)."""
        if state:
            self.loss_sum.fill_(state["loss_sum"])
            self.applied.fill_(state["applied"])


class MetricsLogger:
    """Appends one JSON object per line to OUT/metrics.jsonl (flushed per row, so a killed run
    keeps everything it logged); mirrors numbers to TensorBoard when asked. Rank 0 only."""

    def __init__(self, out_dir: str | Path, tensorboard: bool = False, enabled: bool = True):
        self.enabled = enabled
        self.file = None
        self.tb = None
        if not enabled:
            return
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise LmzooError("--tensorboard needs the tensorboard package; pip install 'lmzoo[tensorboard]'") from e
            self.tb = SummaryWriter(str(out_dir / "tensorboard"))
        self.file = open(out_dir / METRICS_FILE, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.tb is not None:
            prefix = row.get("type", "train")
            for key, value in row.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step":
                    self.tb.add_scalar(f"{prefix}/{key}", value, row["step"])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.tb is not None:
            self.tb.close()


# What an eval line shows, of the fields a task's evaluation gives (and the trainer's train loss).
_EVAL_FIELDS = (("val_loss", "val loss", ".4f"), ("val_bpb", "val bpb", ".4f"), ("val_ppl", "val ppl", ".2f"),
                ("val_accuracy", "val acc", ".4f"), ("train_loss", "train loss", ".4f"))


def format_row(row: dict[str, Any], total_steps: int, stat_names: tuple[str, ...] = ()) -> str:
    """One console line for a train, eval or curriculum row; `stat_names`: the row's model stats
    (spike rates, gate temperature, routing shares...), shown in brief."""
    head = f"step {row['step']}/{total_steps}"
    if row["type"] == "eval":
        shown = [f"{label} {row[key]:{spec}}" for key, label, spec in _EVAL_FIELDS if row.get(key) is not None]
        return " | ".join([head, *shown])
    if row["type"] == "curriculum":
        return f"{head} | curriculum: {row['event']}"
    loss = "n/a" if row["loss"] is None else f"{row['loss']:.4f}"
    line = (f"{head} | loss {loss} | lr {row['lr']:.2e} | "
            f"{row['tok_s']:,.0f} tok/s | grad norm {row['grad_norm']:.3f}")
    line += f" | skipped {row['skipped_steps']}" if row["skipped_steps"] else ""
    return line + _curriculum_part(row) + "".join(f" | {part}" for part in _stats_parts(row, stat_names))


def _stats_parts(row: dict[str, Any], stat_names: tuple[str, ...]) -> list[str]:
    """A model's stats by family: `spike_rate 0.26 (0.26 0.25 ...)` from `spike_rate` and
    `spike_rate/layerN`; deeper names (`spike_rate/layer0/q`) stay in metrics.jsonl only."""
    families: dict[str, list[str]] = {}
    for name in stat_names:
        if name.count("/") <= 1:
            families.setdefault(name.split("/")[0], []).append(name)
    parts = []
    for family, names in families.items():
        members = " ".join(f"{row[n]:.3g}" for n in names if n != family)
        overall = f"{row[family]:.3g}" if family in names else ""
        parts.append(f"{family} {overall}{f' ({members})' if overall and members else members}")
    return parts


def _curriculum_part(row: dict[str, Any]) -> str:
    if "curriculum_stages" in row:
        return f" | stages {row['curriculum_stages']}"
    if "competence" in row:
        return f" | competence {row['competence']:.3f}"
    return ""


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)
