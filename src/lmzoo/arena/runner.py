"""`run_arena`: every architecture on the same data, budget and schedule, into one `--out`.

Per architecture, in order: the learning-rate sweep (one short run per rate, seed 0), the final
runs (one per seed, at the rate with the lowest sweep val loss), then the cost probes of the
seed-0 model. Each is an *entry*; `arena.json` records every finished one, so a rerun skips them
and an interrupted training run resumes from its own checkpoint. The layout of `--out`:

    arena.json   settings, machine, data, finished entries, verdict
    results.md   the tables          plots/   the PNGs
    data/ test/  the byte-tokenised text (train+val split; held-out test)
    runs/sweep/ARCH-lrRATE/, runs/ARCH-seedN/   ordinary lmzoo run directories (`lmzoo plot` reads them)
"""
from __future__ import annotations

import math
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from lmzoo.arena.entries import train_entry
from lmzoo.arena.probes import run_probes
from lmzoo.arena.report import PLOT_FILES, render_markdown, verdict, write_plots
from lmzoo.arena.settings import STEP_HEADROOM, ArenaSettings, check_settings
from lmzoo.devices import resolve_device
from lmzoo.errors import LmzooError
from lmzoo.io import atomic_directory, holds_only, read_format_json, write_json_atomic, write_text_atomic
from lmzoo.locking import output_lock
from lmzoo.paths import check_output_dir
from lmzoo.plots import read_metrics
from lmzoo.training.config import TrainConfig

ARENA_FILE, RESULTS_FILE = "arena.json", "results.md"
FORMAT, FORMAT_VERSION = "lmzoo-arena", 1
VAL_FRACTION = 0.1


def run_arena(settings: ArenaSettings, out: str | os.PathLike, log: Callable[[str], None] | None = None) -> dict:
    """Run (or resume) the arena `settings` describe into `out`; return the final arena.json data."""
    log = log or (lambda line: tqdm.write(line, file=sys.stderr))
    check_settings(settings)
    resolve_device(settings.device)  # a bad device fails before anything is written
    out = check_output_dir(out)
    with output_lock(out):
        state = _open_state(out, settings)
        _prepare_data(settings, out, state)
        plan = [key for arch in settings.archs for key in _entry_keys(settings, arch)]
        done_before, started = sum(k in state["entries"] for k in plan), time.perf_counter()
        bar = Progress(len(plan), done_before)
        try:
            for arch in settings.archs:
                _run_arch(settings, arch, out, state, bar, log)
        finally:
            bar.close()
            # Wall-clock of the invocations that ran entries (a rerun that only re-renders adds
            # nothing): what the arena cost on this machine, interruptions left out.
            if sum(k in state["entries"] for k in plan) > done_before:
                state["wall_seconds"] = state.get("wall_seconds", 0.0) + time.perf_counter() - started
                _save(out, state)
        state["verdict"] = verdict(state, out)
        state["plots"] = _plots(state, out, log)
        _save(out, state)
        write_text_atomic(out / RESULTS_FILE, render_markdown(state, state["verdict"], out))
    return state


# ---- arena.json -------------------------------------------------------------------------------
def _open_state(out: Path, settings: ArenaSettings) -> dict:
    """The recorded arena in `out` (its settings must match), or a new one if `out` is new or empty."""
    path = out / ARENA_FILE
    wanted = settings.to_dict()
    if path.is_file():
        state = read_format_json(path, FORMAT, FORMAT_VERSION, "arena record", "choose another --out")
        if state.get("settings") != wanted:
            changed = sorted(k for k in wanted if state.get("settings", {}).get(k) != wanted[k])
            raise LmzooError(f"--out {out} holds an arena run with other settings (differs in {', '.join(changed)}); "
                             "rerun with the same options to resume it, or choose another --out")
        _check_entries(state.get("entries"), path)
        return state
    if out.exists() and any(out.iterdir()):
        raise LmzooError(f"--out {out} is not empty and holds no {ARENA_FILE}; lmzoo writes an arena only into a "
                         "new or empty directory or its own earlier arena: choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    state = {"format": FORMAT, "format_version": FORMAT_VERSION, "settings": wanted, "machine": _machine(settings),
             "started": _now(), "entries": {}}
    _save(out, state)
    return state


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _inside(path) -> bool:
    """A relative path that stays inside the arena directory."""
    return isinstance(path, str) and bool(path) and not Path(path).is_absolute() and ".." not in Path(path).parts


def _check_entries(entries, path: Path) -> None:
    """What a resume reads back from arena.json must have the shape the arena wrote."""
    if not isinstance(entries, dict):
        raise LmzooError(f"{path} has no entries table; the arena record is damaged, choose another --out")
    for key, entry in entries.items():
        kind = key.split("/")[0]
        ok = isinstance(entry, dict) and entry.get("kind") == kind and isinstance(entry.get("arch"), str)
        if ok and kind == "probe":
            ok = isinstance(entry.get("probe"), dict)
        elif ok:
            run_dir, summary, val = entry.get("run_dir"), entry.get("summary"), entry.get("val")
            ok = (_inside(run_dir) and (kind == "sweep" or _inside(entry.get("checkpoint")))
                  and _is_number(entry.get("lr")) and isinstance(summary, dict) and isinstance(val, dict)
                  and isinstance(summary.get("step"), int) and summary["step"] >= 1
                  and _is_number(summary.get("train_seconds")) and _is_number(summary.get("tokens"))
                  and _is_number(val.get("loss")) and _is_number(val.get("bpb")))
        if not ok:
            raise LmzooError(f"entry '{key}' of {path} is damaged; remove that entry from the file to train it again, "
                             "or choose another --out")


def _save(out: Path, state: dict) -> None:
    state["updated"] = _now()
    write_json_atomic(out / ARENA_FILE, state)


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


def _machine(settings: ArenaSettings) -> dict:
    device = resolve_device(settings.device)
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "cpu": cpu, "logical_cores": os.cpu_count(), "torch_threads": settings.threads or torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}


# ---- data -----------------------------------------------------------------------------------
def _prepare_data(settings: ArenaSettings, out: Path, state: dict) -> None:
    """Byte-tokenise `--data` (train + val split) and `--test` (all held out) into `out`, once."""
    from lmzoo.data import TokenDataset, prepare_dataset

    if "data" not in state:
        given = Path(settings.data)
        prepared = given.is_dir() and (given / "meta.json").is_file()
        data_dir = given if prepared else out / "data"
        if not prepared:
            prepare_dataset(settings.data, data_dir, "bytes", val_fraction=VAL_FRACTION)
        if settings.test:  # the same tokenizer as the training data, so bits per byte compare
            prepare_dataset(settings.test, out / "test", str(data_dir), val_fraction=1.0)
        state["data"] = {"name": Path(settings.data).name, "dir": str(data_dir.resolve()),
                         "test_dir": str((out / "test").resolve()) if settings.test else None,
                         "train_source": settings.data, "test_source": settings.test,
                         "split": "a prepared dataset's own split" if prepared else
                                  f"non-standard: {VAL_FRACTION:.0%} of the text held out for val by lmzoo data prepare"}
        _save(out, state)
    seq_len = settings.profile.seq_len
    for split, directory in (("train", state["data"]["dir"]), ("val", state["data"]["dir"]),
                             ("val", state["data"]["test_dir"])):
        if directory and TokenDataset(directory, split).tokens <= seq_len:
            raise LmzooError(f"the {split} split of {directory} holds {TokenDataset(directory, split).tokens} tokens, "
                             f"not more than --seq-len {seq_len}; give more text or a shorter --seq-len")


# ---- entries ----------------------------------------------------------------------------------
def _entry_keys(settings: ArenaSettings, arch: str) -> list[str]:
    return ([f"sweep/{arch}/lr{lr:g}" for lr in settings.profile.lrs]
            + [f"final/{arch}/seed{seed}" for seed in range(settings.seeds)] + [f"probe/{arch}"])


def _run_arch(settings: ArenaSettings, arch: str, out: Path, state: dict, bar: Progress, log) -> None:
    entries = state["entries"]
    p = settings.profile
    sweep_steps = p.sweep_steps
    if settings.budget_kind == "tokens":  # a sweep run is never longer than the real one
        sweep_steps = min(sweep_steps, _token_steps(settings))
    for lr in p.lrs:
        key = f"sweep/{arch}/lr{lr:g}"
        if key not in entries:
            _train(settings, key, arch, lr, 0, sweep_steps, None, f"runs/sweep/{arch}-lr{lr:g}", out, state, bar, log)
    lr, steps, deadline, step_seconds = _final_plan(settings, arch, entries)
    for seed in range(settings.seeds):
        key = f"final/{arch}/seed{seed}"
        if key not in entries:
            _train(settings, key, arch, lr, seed, steps, deadline, f"runs/{arch}-seed{seed}", out, state, bar, log,
                   step_seconds=step_seconds)
    key = f"probe/{arch}"
    if key not in entries:
        bar.start(key)
        model = str(out / entries[f"final/{arch}/seed0"]["checkpoint"])
        request = {"model": model, "data": state["data"]["dir"], "device": settings.device, "dtype": settings.dtype,
                   "threads": settings.threads or torch.get_num_threads(), "seq_len": p.seq_len,
                   "batch_size": p.batch_size, "contexts": list(p.contexts), "decode_tokens": p.decode_tokens,
                   "lengths": list(p.lengths), "long_lengths": list(p.long_lengths), "timeout": p.probe_timeout}
        entries[key] = {"kind": "probe", "arch": arch, "probe": run_probes(request)}
        _save(out, state)
        speeds = [f"{d['decode_tok_s']:,.0f} tok/s @{d['context']}" for d in entries[key]["probe"]["decode"]]
        log(f"{bar.finish()} {key}: decode {', '.join(speeds)}")


def _relative(path: str, out: Path) -> str:
    """A path inside `out` as arena.json keeps it: relative, so the arena directory can be moved."""
    return str(Path(path).resolve().relative_to(out.resolve()))


def _token_steps(settings: ArenaSettings) -> int:
    return max(1, math.ceil(settings.budget / settings.tokens_per_step))


def _final_plan(settings: ArenaSettings, arch: str, entries: dict) -> tuple[float, int, float | None, float | None]:
    """(chosen rate, steps, wall-clock guard, measured seconds per step) of `arch`'s final runs."""
    sweep = [entries[f"sweep/{arch}/lr{lr:g}"] for lr in settings.profile.lrs]
    finite = [e for e in sweep if e["val"].get("loss") is not None and math.isfinite(e["val"]["loss"])]
    if not finite:
        raise LmzooError(f"every learning rate of {arch}'s sweep diverged; give lower --lrs")
    lr = min(finite, key=lambda e: e["val"]["loss"])["lr"]
    if settings.budget_kind == "tokens":
        return lr, _token_steps(settings), None, None
    # Seconds: the step time the sweep measured (training time only, past the warm-up; median over
    # the rates). An arena written before the steady figure was recorded falls back to the mean.
    step_seconds = statistics.median(e.get("steady_step_seconds") or e["summary"]["train_seconds"] / e["summary"]["step"]
                                     for e in sweep)
    steps = max(1, math.floor(settings.budget / step_seconds * STEP_HEADROOM))
    return lr, steps, settings.budget, step_seconds


def steady_step_seconds(run_dir: Path, tokens_per_step: int) -> float | None:
    """Median seconds per step over a run's logged intervals after the first (whose first steps pay
    for allocation and warm-up: over a 12-step sweep that inflates the mean by up to a third)."""
    rates = [row["tok_s"] for row in read_metrics(run_dir) if row.get("type") == "train" and row.get("tok_s")]
    return tokens_per_step / statistics.median(rates[1:]) if len(rates) > 1 else None


def _train(settings: ArenaSettings, key: str, arch: str, lr: float, seed: int, steps: int, deadline: float | None,
           run_dir: str, out: Path, state: dict, bar: Progress, log, step_seconds: float | None = None) -> None:
    from lmzoo.data import TokenDataset

    bar.start(key)
    p = settings.profile
    # A sweep run needs only its final val loss; a final run's evaluations are its curve's points.
    eval_interval = 0 if key.startswith("sweep/") else max(1, steps // p.evals)
    # A sweep logs 4 times, so its step time can be read past the first interval's warm-up.
    log_interval = max(1, steps // 4) if key.startswith("sweep/") else min(10, eval_interval)
    cfg = TrainConfig(arch=arch, size=p.size, data=state["data"]["dir"], out=str(out / run_dir), seq_len=p.seq_len,
                      batch_size=p.batch_size, max_steps=steps, lr=lr, warmup_steps=round(p.warmup_fraction * steps),
                      eval_interval=eval_interval, eval_batches=p.eval_batches,
                      log_interval=log_interval, checkpoint_interval=0, keep_last=1,
                      device=settings.device, dtype=settings.dtype, seed=seed, threads=settings.threads)
    test = state["data"]["test_dir"]
    result = train_entry(cfg, deadline, TokenDataset(test, "val") if test and key.startswith("final/") else None)
    if result.interrupted:
        _save(out, state)
        raise KeyboardInterrupt  # the trainer saved a checkpoint and said so; a rerun resumes this entry
    entries = state["entries"]
    checkpoint = _relative(result.summary["final_checkpoint"], out) if key.startswith("final/") else None
    entries[key] = {"kind": key.split("/")[0], "arch": arch, "lr": lr, "seed": seed, "run_dir": run_dir,
                    "planned_steps": steps, "deadline_s": deadline, "step_seconds_estimate": step_seconds,
                    "schedule": "clock" if deadline is not None else "steps",
                    "checkpoint": checkpoint,
                    "summary": result.summary, "val": result.val, "test": result.test}
    _save(out, state)
    if key.startswith("sweep/"):  # only its curve and numbers are kept: the weights are 3x the model's size
        entries[key]["steady_step_seconds"] = steady_step_seconds(out / run_dir, settings.tokens_per_step)
        _save(out, state)
        shutil.rmtree(out / run_dir / "checkpoints", ignore_errors=True)
    guard = " (ended by the clock)" if result.summary["stopped_by_deadline"] else ""
    log(f"{bar.finish()} {key}: val bpb {result.val['bpb']:.3f} after {result.summary['step']} steps, "
        f"{result.summary['train_seconds']:.1f} s{guard}")


class Progress:
    """Entries done out of the plan, shown by a tqdm bar on a terminal and as `[done/total, ETA]`
    at the head of each log line (the ETA assumes the remaining entries take as long as this
    session's have on average)."""

    def __init__(self, total: int, done: int):
        self.total, self.done, self.done_before = total, done, done
        self.started = time.perf_counter()
        self.bar = tqdm(total=total, initial=done, unit="entry", dynamic_ncols=True, disable=None,  # terminal only
                        file=sys.stderr)

    def start(self, key: str) -> None:
        self.bar.set_description(key)

    def finish(self) -> str:
        self.done += 1
        self.bar.update()
        head = f"[{self.done}/{self.total}"
        if self.done < self.total:
            seconds = (time.perf_counter() - self.started) / (self.done - self.done_before)
            head += f", ETA {seconds * (self.total - self.done) / 60:.1f} min"
        return head + "]"

    def close(self) -> None:
        self.bar.close()


def _plots(state: dict, out: Path, log) -> list[str]:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        log("lmzoo: warning: no plots: matplotlib is missing; pip install 'lmzoo[plot]'")
        return []
    with atomic_directory(out / "plots", lambda d: holds_only(d, PLOT_FILES), "arena plot directory") as tmp:
        return write_plots(state, out, tmp)
