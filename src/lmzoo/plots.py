"""PNG curves of training runs from their `metrics.jsonl` (the `lmzoo plot` verb).

Several runs are overlaid, one colour each. A resumed run logs some steps twice: a `start` row
at step s drops every earlier row after s, so each step keeps the row of the attempt that went on.
matplotlib is an optional extra (`pip install 'lmzoo[plot]'`).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmzoo.errors import LmzooError
from lmzoo.io import atomic_directory, holds_only, write_json_atomic
from lmzoo.locking import output_lock

METRICS_FILE = "metrics.jsonl"
INDEX_FILE = "plots.json"
# train-row fields that are not architecture statistics
TRAIN_FIELDS = {"type", "step", "loss", "lr", "tokens", "tok_s", "grad_norm", "skipped_steps",
                "curriculum_stages", "competence"}
# (file, row type, field, y label); the architecture statistics go to stats.png
CURVES = (("loss.png", "train", "loss", "train loss (nats/token)"),
          ("val_bpb.png", "eval", "val_bpb", "validation bits per byte"),
          ("tok_s.png", "train", "tok_s", "training tokens/s"))
PLOT_FILES = (*(c[0] for c in CURVES), "stats.png")


def read_metrics(run: str | Path) -> list[dict[str, Any]]:
    """The rows of a run's metrics.jsonl that stand after resumes, in step order per type."""
    path = Path(run) / METRICS_FILE
    if not path.is_file():
        raise LmzooError(f"{path} not found; pass a run directory (the --out of lmzoo train/finetune)")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines) and rows:  # a run still writing (or killed mid-line) leaves a torn last line
                break
            raise LmzooError(f"{path}:{number} is not JSON; the metrics file is damaged") from None
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            raise LmzooError(f"{path}:{number} is not a metrics row (no integer step); pass an lmzoo run")
        if row.get("type") == "start":
            rows = [r for r in rows if r["step"] <= row["step"]]
        else:
            rows.append(row)
    if not rows:
        raise LmzooError(f"{path} holds no metrics rows yet; plot a run that has logged a step")
    return rows


def series(rows: list[dict[str, Any]], kind: str, field: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one numeric field of the rows of one type; null values are left out."""
    points = {r["step"]: r[field] for r in rows if r.get("type", "train") == kind
              and isinstance(r.get(field), (int, float)) and not isinstance(r.get(field), bool)}
    steps = sorted(points)
    return steps, [float(points[s]) for s in steps]


def stat_names(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Architecture statistics the runs log; per-layer ones only where no aggregate exists."""
    names = {k for rows in runs.values() for r in rows if r.get("type") == "train" for k in r
             if k not in TRAIN_FIELDS and isinstance(r[k], (int, float))}
    return sorted(n for n in names if "/" not in n or n.split("/")[0] not in names)


def plot_runs(runs: Sequence[str | Path], out: str | Path) -> list[Path]:
    """Write the PNGs for `runs` into directory `out` (replaced whole; only an earlier plot
    directory may be replaced); return the files written."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise LmzooError("lmzoo plot needs matplotlib; pip install 'lmzoo[plot]'") from None
    data = {_label(run, runs): read_metrics(run) for run in runs}
    out = Path(out)
    written = []
    with output_lock(out), atomic_directory(out, lambda p: holds_only(p, (*PLOT_FILES, INDEX_FILE), INDEX_FILE),
                                            "plot directory") as tmp:
        for name, kind, field, label in CURVES:
            if _figure(plt, data, [(kind, field, label)], tmp / name):
                written.append(out / name)
        stats = [("train", stat, stat) for stat in stat_names(data)]
        if stats and _figure(plt, data, stats, tmp / "stats.png"):
            written.append(out / "stats.png")
        write_json_atomic(tmp / INDEX_FILE, {"runs": [str(r) for r in runs], "plots": [p.name for p in written]})
    return written


def _label(run, runs) -> str:
    path = Path(run).resolve()
    names = [Path(r).resolve().name for r in runs]
    return path.name if names.count(path.name) == 1 else str(path)


def _figure(plt, data: dict[str, list[dict]], panels: list[tuple[str, str, str]], path: Path) -> bool:
    """One figure with a panel per (row type, field, label), every run a line; False if empty."""
    if not any(series(rows, kind, field)[0] for rows in data.values() for kind, field, _ in panels):
        return False
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.6 * len(panels) + 0.6), squeeze=False)
    for ax, (kind, field, label) in zip(axes[:, 0], panels):
        for run, rows in data.items():
            steps, values = series(rows, kind, field)
            if steps:
                ax.plot(steps, values, marker="." if len(steps) < 30 else None, label=run)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    axes[0, 0].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
