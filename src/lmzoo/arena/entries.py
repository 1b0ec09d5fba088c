"""One arena entry: an ordinary `lmzoo train` run (its own run directory, metrics.jsonl,
checkpoints and resume), plus a training-time clock and, for a seconds budget, a clock-driven
schedule and a deadline.

The clock counts training time only (evaluations are left out: every architecture gets the same
number of them, but they are not what the budget buys). It is saved in each checkpoint, so a
resumed entry goes on counting where it stopped.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from lmzoo.errors import LmzooError
from lmzoo.locking import output_lock
from lmzoo.training.config import TrainConfig
from lmzoo.training.distributed import DistEnv, init_distributed, run_then_leave
from lmzoo.training.evaluate import evaluate
from lmzoo.training.tasks import Pretraining
from lmzoo.training.trainer import StopRequest, Trainer

CLOCK_KEY = "arena_train_seconds"
DEADLINE = "time budget reached"  # the stop reason the trainer prints when the deadline ends a run


class ClockedPretraining(Pretraining):
    """`lmzoo train`'s task, with the training seconds and tokens in every eval row. Given a time
    budget, the learning-rate schedule's progress is the larger of the step share and the time
    share, so a run whose steps are slower than planned still decays by the end of its time."""

    def __init__(self, cfg: TrainConfig, budget_seconds: float | None = None):
        super().__init__(cfg)
        self.budget_seconds = budget_seconds
        self.seconds_before = 0.0  # training seconds of earlier attempts (from the checkpoint)
        self.eval_seconds = 0.0
        self.started = time.perf_counter()

    def prepare(self, env, autocast_dtype):
        model = super().prepare(env, autocast_dtype)
        self.device = env.device
        self.started = time.perf_counter()  # data and model set-up are not training time
        return model

    def train_seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.started - self.eval_seconds

    def schedule_step(self, step: int) -> float:
        if self.budget_seconds is None:
            return step
        return max(step, self.cfg.max_steps * self.train_seconds() / self.budget_seconds)

    def evaluate(self, model, step, env, autocast_dtype):
        if self.device.type == "cuda":
            torch.cuda.synchronize()  # the clock stops when the queued steps are done
        seconds = self.train_seconds()
        start = time.perf_counter()
        row = super().evaluate(model, step, env, autocast_dtype)
        self.eval_seconds += time.perf_counter() - start
        return {**row, "train_seconds": seconds, "tokens": step * self.tokens_per_step}

    def state_dict(self):
        return {**super().state_dict(), CLOCK_KEY: self.train_seconds()}

    def load_state_dict(self, trainer_state, step):
        super().load_state_dict(trainer_state, step)
        saved = trainer_state.get(CLOCK_KEY, 0.0)
        if not isinstance(saved, (int, float)) or not 0 <= saved < 1e9:
            raise LmzooError(f"{self.run_dir}: checkpoint field {CLOCK_KEY} is {saved!r}; delete that run "
                             "directory so the arena trains the entry again")
        self.seconds_before = float(saved)


class Deadline(StopRequest):
    """Ctrl-C as in `lmzoo train`, and a stop once training time passes `seconds` (None: never)."""

    def __init__(self, task: ClockedPretraining, seconds: float | None):
        super().__init__()
        self.task, self.seconds = task, seconds

    @property
    def requested(self) -> bool:
        if self.signal_name is None and self.seconds is not None and self.task.train_seconds() > self.seconds:
            self.signal_name = DEADLINE
        return self.signal_name is not None


@dataclass
class EntryResult:
    summary: dict
    val: dict
    test: dict | None
    interrupted: bool  # by Ctrl-C / SIGTERM: the arena stops, a rerun resumes the entry


def train_entry(cfg: TrainConfig, deadline_s: float | None, test_data=None) -> EntryResult:
    """Train (or resume) one entry; then val (and test) metrics of the final model. With a deadline
    the schedule follows the clock too, and the run ends when its training time reaches it."""
    task = ClockedPretraining(cfg, deadline_s)
    env = init_distributed(cfg.device)
    return run_then_leave(env, lambda: _train_and_measure(cfg, env, task, deadline_s, test_data),
                          wait_for_peers=False)


def _train_and_measure(cfg: TrainConfig, env: DistEnv, task: ClockedPretraining, deadline_s: float | None,
                       test_data) -> EntryResult:
    with output_lock(task.run_dir), Deadline(task, deadline_s) as stop:
        trainer = Trainer(cfg, env, stop, task, verbose=False)
        summary = trainer.fit()
        summary["train_seconds"] = task.train_seconds()
        stopped = summary["status"] == "interrupted"  # before its last step
        summary["stopped_by_deadline"] = stopped and stop.signal_name == DEADLINE
        interrupted = stopped and stop.signal_name != DEADLINE
        val = test = None
        if not interrupted:
            val = _last_eval(trainer) or _metrics(trainer, task.val_data, cfg)
            test = _metrics(trainer, test_data, cfg) if test_data is not None else None
    return EntryResult(summary, val or {}, test, interrupted)


def _last_eval(trainer: Trainer) -> dict | None:
    """The trainer's evaluation after the last step (None when this attempt made none, as when it
    resumed a finished run)."""
    row = trainer.last_eval
    if row is None or row["step"] != trainer.progress.step or row.get("val_loss") is None:
        return None
    return {"loss": row["val_loss"], "bpb": row["val_bpb"], "ppl": row["val_ppl"], "tokens": row["val_tokens"]}


def _metrics(trainer: Trainer, data, cfg: TrainConfig) -> dict:
    result = evaluate(trainer.model, data, cfg.batch_size, cfg.seq_len, cfg.eval_batches,
                      autocast_dtype=trainer.autocast_dtype)
    return {"loss": result["loss"], "bpb": result["bpb"], "ppl": result["ppl"], "tokens": result["tokens"]}
