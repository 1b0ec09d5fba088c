"""Complexity's claim C3, "QK-norm stabilises training": the same `complexity` model trained with
and without QK-norm across a learning-rate sweep that reaches rates where training breaks.

Every run is `lmzoo train --arch complexity --size nano --model-arg qk_norm=BOOL --lr LR` on the
German texts (byte tokenizer, batch 8 x 128, warm-up 10% of the steps, cosine decay, clipping at
1.0: the trainer's defaults), with the training loss logged at every step. Per run:

* loss spikes: steps whose loss exceeds the lowest loss of the previous 20 steps by more than
  SPIKE_NATS (batch-to-batch noise at this size is ~0.1 nat);
* skipped steps (a non-finite loss or gradient; the trainer skips the update and counts it);
* diverged: the run ends worse than it was at 10% of its steps (mean loss of the last 10 steps
  above that of steps 10-20% in), or stops on a non-finite value;
* val bits/byte at the end.

    python benchmarks/qk_norm_sweep.py --threads 2
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import common
from curriculum import GERMAN, log

from lmzoo.data import prepare_dataset
from lmzoo.errors import LmzooError
from lmzoo.training.config import TrainConfig
from lmzoo.training.trainer import run_training

NAME = "qk-norm-sweep"
SPIKE_NATS = 0.5
SPIKE_WINDOW = 20


def loss_trace(run_dir: Path) -> tuple[list[float], float | None]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # A logged step whose update was skipped has no loss: it counts as non-finite.
    losses = [math.nan if row["loss"] is None else row["loss"] for row in rows if row.get("type") == "train"]
    evals = [row["val_bpb"] for row in rows if row.get("type") == "eval"]
    return losses, evals[-1] if evals else None


def count_spikes(losses: list[float]) -> int:
    spikes = 0
    for i in range(SPIKE_WINDOW, len(losses)):
        before = [x for x in losses[i - SPIKE_WINDOW:i] if math.isfinite(x)]
        spikes += not math.isfinite(losses[i]) or bool(before) and losses[i] - min(before) > SPIKE_NATS
    return spikes


def mean_finite(values: list[float]) -> float:
    """The mean, or nan when any value is non-finite (a window that broke is not averaged away)."""
    return sum(values) / len(values) if values and all(math.isfinite(x) for x in values) else math.nan


def diverged(losses: list[float]) -> bool:
    n = len(losses)
    early, late = mean_finite(losses[n // 10:max(n // 5, n // 10 + 1)]), mean_finite(losses[-10:])
    return not math.isfinite(late) or (math.isfinite(early) and late > early)


def train_one(args, data_dir: Path, qk_norm: bool, lr: float, seed: int) -> dict:
    run_dir = args.out / f"qk{int(qk_norm)}-lr{lr:g}-seed{seed}"
    cfg = TrainConfig(arch="complexity", size="nano", model_args={"qk_norm": qk_norm}, data=str(data_dir),
                      out=str(run_dir), max_steps=args.steps, batch_size=8, seq_len=128, lr=lr,
                      warmup_steps=max(1, args.steps // 10), seed=seed, threads=args.threads,
                      eval_interval=args.steps, log_interval=1, checkpoint_interval=0, keep_last=1,
                      resume="none", nan_policy="skip")
    log(f"qk_norm={qk_norm} lr={lr:g} seed={seed}")
    error = None
    try:
        summary = run_training(cfg)
        skipped = summary.get("skipped_steps", 0)
    except LmzooError as e:  # nan_policy=skip keeps going; anything else is recorded, not hidden
        error, skipped = str(e), None
    losses, val = loss_trace(run_dir)
    return {"qk_norm": qk_norm, "lr": lr, "seed": seed, "val_bpb": val, "spikes": count_spikes(losses),
            "skipped_steps": skipped, "diverged": error is not None or diverged(losses),
            "final_loss": mean_finite(losses[-10:]) if math.isfinite(mean_finite(losses[-10:])) else None,
            "error": error}


def summarise(runs: list[dict]) -> list[dict]:
    rows = []
    for lr in sorted({r["lr"] for r in runs}):
        for qk in (True, False):
            group = [r for r in runs if r["lr"] == lr and r["qk_norm"] == qk]
            vals = [r["val_bpb"] for r in group if r["val_bpb"] is not None and math.isfinite(r["val_bpb"])]
            rows.append({"lr": lr, "qk_norm": qk, "seeds": len(group), "spikes": sum(r["spikes"] for r in group),
                         "diverged": sum(r["diverged"] for r in group),
                         "mean_val_bpb": sum(vals) / len(vals) if vals else None})
    return rows


def render(data: dict) -> str:
    header = ["learning rate", "QK-norm", "seeds", "loss spikes", "diverged runs", "val bits/byte (mean)"]
    body = [[f"{r['lr']:g}", "on" if r["qk_norm"] else "off", r["seeds"], r["spikes"], r["diverged"],
             "-" if r["mean_val_bpb"] is None else f"{r['mean_val_bpb']:.3f}"] for r in data["summary"]]
    return "\n".join([
        "## QK-norm across learning rates (claim C3)", "", common.command_header(data), "",
        f"complexity/nano with and without QK-norm, {data['steps']} steps of 8 x 128 bytes on "
        f"{', '.join(data['texts'])}; a loss spike is a step {SPIKE_NATS} nats above the lowest loss of the "
        f"{SPIKE_WINDOW} steps before it; a run diverged if it ended worse than at 10% of its steps.", "",
        common.markdown_table(header, body), ""])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lrs", type=float, nargs="+", default=[3e-3, 1e-2, 3e-2, 1e-1])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=common.ROOT / "benchmarks" / "runs" / "qk-norm-sweep")
    p.add_argument("--no-write", action="store_true", help="print the table without saving results")
    args = p.parse_args(argv)
    common.set_threads(args.threads)
    data_dir = args.out / "data"
    texts = sorted(GERMAN.glob("*.txt"))
    if not (data_dir / "meta.json").is_file():
        prepare_dataset([str(t) for t in texts], data_dir, seed=0)
    runs = [train_one(args, data_dir, qk, lr, seed) for lr in args.lrs for qk in (True, False) for seed in args.seeds]
    data = {**common.run_info(), "steps": args.steps, "texts": [t.name for t in texts], "spike_nats": SPIKE_NATS,
            "runs": runs, "summary": summarise(runs)}
    common.publish(NAME, data, render(data), write=not args.no_write)
    return data


if __name__ == "__main__":
    main()
