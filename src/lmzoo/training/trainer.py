"""The training loop: `run_training(cfg, task) -> result`, for pre-training and fine-tuning alike.

One optimizer step = `grad_accum` micro-batches of `batch_size` sequences on each of
`world_size` processes. What the sequences are, the model they train and how it is evaluated
come from a `Task` (`tasks.py`: `Pretraining`; `finetune.py`: `QATask`); everything else is
here. Batches are a pure function of (seed, step) -- and of the task's state, which
checkpoints carry -- so the data position is the step and a resumed run sees exactly the
batches an uninterrupted one would have.

The loop reads nothing back from the device between log points: losses and non-finite-step
flags accumulate on the device (`StepMeter`), and a non-finite gradient skips its update inside
the fused AdamW kernel. Distribution (DDP/FSDP2) is applied from outside by `distributed.py`.
"""
from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from lmzoo.checkpoint import WEIGHTS_FILE, load_state_into
from lmzoo.devices import autocast, autocast_dtype
from lmzoo.errors import LmzooError
from lmzoo.locking import output_lock
from lmzoo.training.checkpointing import (
    STATE_FILE,
    Checkpoint,
    checkpoint_dir,
    latest_valid_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    remove_partial_writes,
    reshape_legacy_moments,
    restore_rng,
    save_checkpoint,
)
from lmzoo.training.config import LoopConfig
from lmzoo.training.distributed import (
    DistEnv,
    any_rank,
    full_model_state,
    full_optimizer_state,
    grad_sync,
    init_distributed,
    load_optimizer_state,
    local_tensor,
    run_then_leave,
    wrap_model,
)
from lmzoo.training.metrics import MetricsLogger, StepMeter, format_row, warn
from lmzoo.training.optim import CosineSchedule, build_optimizer, set_lr
from lmzoo.training.tasks import Pretraining, Task


@dataclass
class Progress:
    step: int = 0
    tokens: int = 0
    skipped_steps: int = 0
    best_val_loss: float | None = None
    evals_since_best: int = 0  # evaluations since the best val loss: --early-stop-patience counts them


class StopRequest:
    """SIGINT/SIGTERM ask the loop to checkpoint and stop after the current step.

    The handler only sets a flag (printing from a signal handler can re-enter a half-done
    write); a second signal gets the previous handler, so a second Ctrl-C aborts at once.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # signals only work there
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def _handle(self, signum, frame) -> None:
        self.signal_name = signal.Signals(signum).name
        signal.signal(signum, self._previous[signum])

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @property
    def requested(self) -> bool:
        return self.signal_name is not None


def run_training(cfg: LoopConfig, task: Task | None = None, verbose: bool = True) -> dict:
    """Train (or resume) `task` (default: pre-training as `cfg` says); return `task.finish`'s
    result, for pre-training the run's summary. Works alone or under torchrun."""
    task = task or Pretraining(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    env = init_distributed(cfg.device)
    return run_then_leave(env, lambda: _train_locked(cfg, env, task, verbose))


def _train_locked(cfg: LoopConfig, env: DistEnv, task: Task, verbose: bool) -> dict:
    with contextlib.ExitStack() as locks:
        if env.is_main:  # rank 0 alone writes; its locks keep a second run off the same outputs
            for path in task.outputs:
                locks.enter_context(output_lock(path))
        with StopRequest() as stop:
            trainer = Trainer(cfg, env, stop, task, verbose)
            summary = trainer.fit()
        return task.finish(trainer.model, env, summary)


class Trainer:
    def __init__(self, cfg: LoopConfig, env: DistEnv, stop: StopRequest, task: Task | None = None,
                 verbose: bool = True):
        self.cfg, self.env, self.stop, self.verbose = cfg, env, stop, verbose
        self.task = task or Pretraining(cfg)
        self.out = Path(self.task.run_dir)
        self.ckpt_root = self.out / "checkpoints"
        self.autocast_dtype = autocast_dtype(cfg.dtype, env.device)
        torch.manual_seed(cfg.seed)  # same on every rank: FSDP shards, and DDP expects, one init
        self.model = self.task.prepare(env, self.autocast_dtype)
        self.total_steps = self.task.total_steps
        resume = self._find_resume()
        if resume is not None:  # weights go in before wrapping, while the model is still plain
            load_state_into(self.model, resume.model_state, resume.path / WEIGHTS_FILE)
        self.model.to(env.device).train()  # a loaded base model comes in eval mode
        self.model.activation_checkpointing = cfg.activation_checkpointing
        fsdp = getattr(cfg, "fsdp", False)  # fine-tuning has no --fsdp: it merges adapters in one process
        if fsdp and not env.enabled and env.is_main:
            warn("--fsdp has no effect in a single process; launch with torchrun to shard")
        untrained = self.model.untrained_components(self.task.shortest_sequence)
        if env.is_main:
            for line in untrained:
                warn(line)
        self.wrapped = wrap_model(self.model, env, fsdp, find_unused=bool(untrained))
        self.forward = torch.compile(self.wrapped) if cfg.compile else self.wrapped
        self.optimizer = build_optimizer(self.model, cfg.lr, cfg.weight_decay, cfg.betas)
        self.schedule = CosineSchedule(cfg.lr, cfg.warmup_steps, self.total_steps, cfg.min_lr_ratio)
        self.progress = Progress()
        # The mean train loss since the last evaluation, for the eval rows; checkpoints carry it.
        self.since_eval = StepMeter(env.device)
        self.last_checkpoint: Path | None = None
        self.last_eval: dict | None = None
        self.new_best = False  # the latest evaluation set a new best val loss
        self.early_stopped = False
        if resume is not None:
            self._restore(resume)

    # ---- resume ----------------------------------------------------------------------------
    def _find_resume(self) -> Checkpoint | None:
        self._refuse_other_kinds()
        if self.cfg.resume == "none":
            return None
        if self.cfg.resume == "auto":
            found = latest_valid_checkpoint(self.ckpt_root, verbose=self.env.is_main)
        else:
            found = load_checkpoint(self.cfg.resume)
        if found is not None and _kind(found.trainer_state) != self.task.kind:
            raise LmzooError(f"{found.path} is a checkpoint of a `lmzoo {_kind(found.trainer_state)}` run, not of "
                             f"`lmzoo {self.task.kind}`; pass another --resume")
        if found is not None and self.env.is_main:
            print(f"resuming from {found.path} (step {found.step})", file=sys.stderr, flush=True)
        return found

    def _refuse_other_kinds(self) -> None:
        """Writing (and pruning) checkpoints beside those of another kind of run would mix the two."""
        for path in list_checkpoints(self.ckpt_root):
            state = _read_state(path)
            kind = self.task.kind if state is None else _kind(state)  # a damaged one is skipped on resume
            if kind != self.task.kind:
                raise LmzooError(f"{self.ckpt_root} holds checkpoints of a `lmzoo {kind}` run; "
                                 f"give this `lmzoo {self.task.kind}` run another output directory")

    def _restore(self, ckpt: Checkpoint) -> None:
        shapes = {name: tuple(p.shape) for name, p in self.model.named_parameters()}
        load_optimizer_state(self.model, self.optimizer, reshape_legacy_moments(ckpt.optimizer_state, shapes))
        restore_rng(ckpt.rng_state)
        state = ckpt.trainer_state
        self.progress = Progress(state["step"], state["tokens_seen"], state.get("skipped_steps", 0),
                                 state.get("best_val_loss"), state.get("evals_since_best", 0))
        self.last_checkpoint = ckpt.path
        if self.env.is_main:  # the saved sums are over all ranks: one rank carries them on
            self.since_eval.load_state_dict(state.get("since_eval"))
        self.task.load_state_dict(state, self.progress.step)
        saved, now = state.get("train_config", {}), self.cfg.to_dict()
        changed = [k for k in self.task.trajectory_fields(saved) if k in saved and saved[k] != now[k]]
        if state.get("world_size", self.env.world_size) != self.env.world_size:
            changed.append("world_size")
        if state.get("schedule", self.schedule.to_dict()) != self.schedule.to_dict():
            changed.append("learning-rate schedule (lr, warmup, min_lr_ratio or run length)")
        if changed and self.env.is_main:
            warn(f"resuming with changed {', '.join(changed)}; the run will not match an uninterrupted one")

    # ---- one optimizer step ----------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.autocast_dtype, self.env.device)

    def _train_step(self):
        """Forward/backward over the micro-batches, clip, update. Returns device tensors (and the
        step's token count, known on the host)."""
        cfg, step = self.cfg, self.progress.step
        self.step_lr = self.schedule(self.task.schedule_step(step))
        set_lr(self.optimizer, self.step_lr)
        self.task.before_step(step)
        micro_batches, tokens = self.task.batch(step, self.env)
        n = len(micro_batches)
        loss = torch.zeros((), device=self.env.device)
        for i, (inputs, labels) in enumerate(micro_batches):
            with grad_sync(self.wrapped, enabled=i == n - 1):
                with self._autocast():
                    out = self.forward(inputs, labels=labels)
                (out.loss / n).backward()
            loss += out.loss.detach()
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf  # inf: measure, do not clip
        grad_norm = local_tensor(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        bad = ~torch.isfinite(grad_norm)
        # `found_inf` is the protocol GradScaler uses with fused optimizers: when it is 1 the
        # kernel leaves weights and moments untouched, decided on the device without a sync.
        # The norm is of the all-reduced gradients, so every rank skips the same steps.
        self.optimizer.found_inf = bad.float()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss / n, grad_norm, bad, out.stats, tokens

    # ---- the loop --------------------------------------------------------------------------
    def fit(self) -> dict:
        cfg, env, progress = self.cfg, self.env, self.progress
        if env.is_main:
            remove_partial_writes(self.ckpt_root)
        if env.is_main and self.verbose:
            self._announce()
        metrics = MetricsLogger(self.out, cfg.tensorboard, enabled=env.is_main)
        metrics.log({"type": "start", "step": progress.step, "resumed_from": str(self.last_checkpoint or "")})
        meter = StepMeter(env.device)
        bar = tqdm(total=self.total_steps, initial=progress.step, unit="step", dynamic_ncols=True,
                   disable=True if not (env.is_main and self.verbose) else None)  # None: only on a terminal
        started = time.perf_counter()
        self._restart_clock()
        train_row: dict | None = None
        try:
            if progress.step == 0 and self.task.eval_at_start:
                self._evaluate(metrics, bar)
            if progress.step > 0:
                self.patience_ran_out()  # a resumed run that had stopped early stays stopped
            while progress.step < self.total_steps and not self.early_stopped:
                loss, grad_norm, bad, stats, tokens = self._train_step()
                progress.step += 1
                progress.tokens += tokens
                meter.update(progress.step, loss, grad_norm, bad)
                self.since_eval.update(progress.step, loss, grad_norm, bad)
                bar.update()
                last = progress.step == self.total_steps
                if progress.step % cfg.log_interval == 0 or last:
                    train_row = self._log(meter, stats, metrics, bar)
                    stopping = any_rank(self.stop.requested, env)  # all ranks leave together
                else:  # a single process can stop at any step; ranks agree only at log points
                    stopping = self.stop.requested and not env.enabled
                interval = self.task.eval_interval
                evaluated = bool(interval and progress.step % interval == 0) or last
                if evaluated:
                    self._evaluate(metrics, bar)
                stopping = stopping or (evaluated and self.patience_ran_out())
                keep_best = evaluated and cfg.keep_best and self.new_best  # so that RUN@best is this step
                if (cfg.checkpoint_interval and progress.step % cfg.checkpoint_interval == 0) or last or stopping \
                        or keep_best:
                    self._save()
                if stopping:
                    break
        finally:
            bar.close()
            metrics.close()
        return self._summary(train_row, started)

    def _log(self, meter: StepMeter, stats: dict, metrics: MetricsLogger, bar: tqdm) -> dict:
        progress = self.progress
        read = meter.read()
        now = time.perf_counter()
        tok_s = (progress.tokens - self._tokens_at_clock) / max(now - self._clock, 1e-9)
        self._clock, self._tokens_at_clock = now, progress.tokens
        progress.skipped_steps += read["skipped"]
        row = {"type": "train", "step": progress.step, "loss": read["loss"],
               "lr": self.step_lr, "tokens": progress.tokens, "tok_s": tok_s,
               "grad_norm": read["grad_norm"], "skipped_steps": progress.skipped_steps,
               **{name: float(value) for name, value in stats.items()}, **self.task.row(progress.step - 1)}
        metrics.log(row)
        self._log_events(metrics)
        if read["skipped"]:
            self._on_nonfinite(read["first_bad_step"], read["skipped"])
        self._report(row, bar, tuple(stats))
        loss = {} if read["loss"] is None else {"loss": f"{read['loss']:.4f}"}
        bar.set_postfix(**loss, tok_s=f"{tok_s:,.0f}", **self.task.postfix(progress.step - 1), refresh=False)
        return row

    def _log_events(self, metrics: MetricsLogger) -> None:
        for row in self.task.pop_events():
            metrics.log(row)
            if self.env.is_main:
                tqdm.write(format_row(row, self.total_steps), file=sys.stderr)

    def _on_nonfinite(self, first_bad_step: int, skipped: int) -> None:
        last_good = self.last_checkpoint or "none saved yet"
        if self.cfg.nan_policy == "stop":
            raise LmzooError(f"non-finite loss/gradient at step {first_bad_step} (nan_policy=stop; that update "
                             f"was not applied); last good checkpoint: {last_good}. Lower --lr or "
                             f"--grad-clip, or pass --nan-policy skip")
        if self.env.is_main:
            warn(f"skipped {skipped} update(s) with a non-finite loss/gradient since the last log, "
                 f"first at step {first_bad_step} (nan_policy=skip)")

    def _report(self, row: dict, bar: tqdm, stat_names: tuple[str, ...] = ()) -> None:
        """One line per log interval and per evaluation; on a terminal above the progress bar."""
        if not (self.env.is_main and self.verbose):
            return
        line = format_row(row, self.total_steps, stat_names)
        if bar.disable:
            print(line, flush=True)
        else:
            tqdm.write(line, file=sys.stdout)

    def _announce(self) -> None:
        """What is about to run, before the first step: model, token budget, device and numerics."""
        cfg, model = self.cfg, self.model
        params = sum(p.numel() for p in model.parameters())
        size = getattr(cfg, "size", None)
        parts = [f"{model.config.arch}{f' / {size}' if size else ''}: {params:,} parameters"]
        per_step = getattr(self.task, "tokens_per_step", None)
        if per_step:
            parts.append(f"{per_step:,} tokens/step x {self.total_steps:,} steps = "
                         f"{per_step * self.total_steps:,} tokens")
        else:
            parts.append(f"{self.total_steps:,} steps")
        numerics = str(self.autocast_dtype).replace("torch.", "") + " autocast" if self.autocast_dtype else "fp32"
        parts.append(f"device {self.env.device} x {self.env.world_size} process(es), "
                     f"{torch.get_num_threads()} threads, {numerics}")
        print("lmzoo: " + " | ".join(parts), file=sys.stderr, flush=True)
        if cfg.warmup_steps >= self.total_steps:
            peak = self.schedule(self.total_steps - 1)
            warn(f"--warmup-steps {cfg.warmup_steps} >= the run's {self.total_steps} steps: the learning rate "
                 f"climbs until the last step, peaking at {peak:.2e} (--lr {cfg.lr:g}), and never decays; lower "
                 f"--warmup-steps (e.g. to "
                 f"{max(1, self.total_steps // 10)})")

    def _evaluate(self, metrics: MetricsLogger, bar: tqdm) -> None:
        step = self.progress.step
        row = {"type": "eval", "step": step,
               **self.task.evaluate(self.wrapped, step, self.env, self.autocast_dtype)}
        train_loss = self.since_eval.read()["loss"]
        if train_loss is not None:
            row["train_loss"] = train_loss
        self.new_best = False
        if row.get("val_loss") is not None:
            best = self.progress.best_val_loss
            self.new_best = best is None or row["val_loss"] < best
            self.progress.best_val_loss = row["val_loss"] if self.new_best else best
            self.progress.evals_since_best = 0 if self.new_best else self.progress.evals_since_best + 1
        self.last_eval = row
        metrics.log(row)
        self._report(row, bar)
        self.task.after_eval(step, row)
        self._log_events(metrics)
        self._restart_clock()

    def _save(self) -> None:
        """Gather full states (a collective under FSDP), write on rank 0, prune old ones."""
        model_state = full_model_state(self.model)
        optimizer_state = full_optimizer_state(self.model, self.optimizer)
        since_eval = self.since_eval.state_dict()  # a collective too
        step = self.progress.step
        if self.env.is_main:
            save_checkpoint(self.ckpt_root, step, model_state, self.model.config, self.model.tokenizer,
                            optimizer_state, {**self._trainer_state(), "since_eval": since_eval})
            prune_checkpoints(self.ckpt_root, self.cfg.keep_last, step, self.cfg.keep_best)
        self.last_checkpoint = checkpoint_dir(self.ckpt_root, step)
        self._restart_clock()

    def _restart_clock(self) -> None:
        """Leave eval and checkpoint time out of the next tokens/s figure."""
        self._clock, self._tokens_at_clock = time.perf_counter(), self.progress.tokens

    def _trainer_state(self) -> dict:
        p = self.progress
        # The checkpoint's own val loss: of an evaluation at its step, else none (RUN@best compares these).
        val_loss = self.last_eval.get("val_loss") if self.last_eval and self.last_eval["step"] == p.step else None
        return {"task": self.task.kind, "step": p.step, "tokens_seen": p.tokens, "skipped_steps": p.skipped_steps,
                "best_val_loss": p.best_val_loss, "val_loss": val_loss, "evals_since_best": p.evals_since_best, "world_size": self.env.world_size,
                "schedule": self.schedule.to_dict(), "train_config": self.cfg.to_dict(), **self.task.state_dict()}

    def patience_ran_out(self) -> bool:
        """--early-stop-patience: that many evaluations in a row without a new best val loss."""
        patience = self.cfg.early_stop_patience
        if not patience or self.progress.evals_since_best < patience:
            return False
        if self.env.is_main and self.verbose:
            print(f"early stop at step {self.progress.step}: no new best val loss in {patience} evaluations "
                  f"(best {self.progress.best_val_loss:.4f})", file=sys.stderr, flush=True)
        self.early_stopped = True
        return True

    def _summary(self, train_row: dict | None, started: float) -> dict:
        interrupted = self.progress.step < self.total_steps and not self.early_stopped
        if interrupted and self.env.is_main:
            print(f"{self.stop.signal_name}: stopped at step {self.progress.step} and saved "
                  f"{self.last_checkpoint}; run the same command again to resume", file=sys.stderr, flush=True)
        last_eval = self.last_eval or {}
        status = "interrupted" if interrupted else "early-stopped" if self.early_stopped else "completed"
        return {"status": status, "step": self.progress.step,
                "total_steps": self.total_steps, "tokens": self.progress.tokens,
                "train_loss": train_row["loss"] if train_row else None,
                "val_loss": last_eval.get("val_loss"), "val_bpb": last_eval.get("val_bpb"),
                "val_accuracy": last_eval.get("val_accuracy"),
                "best_val_loss": self.progress.best_val_loss, "skipped_steps": self.progress.skipped_steps,
                **self.task.row(self.progress.step - 1),
                "final_checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
                "elapsed_s": time.perf_counter() - started}


def _kind(trainer_state: dict) -> str:
    return trainer_state.get("task", "train")  # checkpoints from before fine-tuning shared the loop


def _read_state(path: Path) -> dict | None:
    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None
