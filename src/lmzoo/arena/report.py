"""The arena's verdict: one row per architecture (seeds aggregated, ranked by mean val bits per
byte), the markdown tables, and the PNG plots (val BPB against training seconds and tokens with a
band over the seeds; time and memory against sequence length)."""
from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any

from lmzoo.plots import TRAIN_FIELDS, read_metrics, series

PLOT_FILES = ("bpb_vs_time.png", "bpb_vs_tokens.png", "seq_time.png", "seq_memory.png")


def spread(values: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (None for one value), min, max and n of `values`."""
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "min": min(values), "max": max(values), "n": len(values)}


def arch_stats(train_row: dict) -> dict[str, float]:
    """Architecture statistics of a final train row: spike and gate rates, routing balance."""
    stats = {k: v for k, v in train_row.items() if k not in TRAIN_FIELDS and "/layer" not in k
             and isinstance(v, (int, float)) and not k.startswith("routing/")}
    shares = [v for k, v in train_row.items() if k.startswith("routing/expert")]
    if shares:  # 1.0 = every expert gets the same share of the tokens; E = one expert gets all
        stats["routing_max_share_x_experts"] = max(shares) * len(shares)
    return stats


def final_train_row(run_dir: Path) -> dict:
    rows = [r for r in read_metrics(run_dir) if r.get("type") == "train"]
    return rows[-1] if rows else {}


def verdict(state: dict, out: Path) -> list[dict]:
    """Per architecture: the chosen rate, metrics over seeds and the probes; best val BPB first."""
    rows = []
    for arch in state["settings"]["archs"]:
        finals = [e for e in state["entries"].values() if e["kind"] == "final" and e["arch"] == arch]
        if not finals:
            continue
        probe = state["entries"].get(f"probe/{arch}", {}).get("probe")
        stats = [arch_stats(final_train_row(out / e["run_dir"])) for e in finals]
        rows.append({
            "arch": arch, "lr": finals[0]["lr"], "seeds": sorted(e["seed"] for e in finals),
            "val_bpb": spread([e["val"]["bpb"] for e in finals]),
            "test_bpb": spread([e["test"]["bpb"] for e in finals if e.get("test")]),
            "val_ppl": spread([e["val"]["ppl"] for e in finals]),
            "train_tok_s": spread([e["summary"]["tokens"] / e["summary"]["train_seconds"] for e in finals
                                   if e["summary"]["train_seconds"] > 0]),
            "train_seconds": [e["summary"]["train_seconds"] for e in finals],
            "steps": [e["summary"]["step"] for e in finals],
            # A clock-driven schedule has decayed when the clock ends the run; a step-planned one
            # (arenas before the clock schedule) stopped by the guard had not.
            "stopped_by_deadline": sum(bool(e["summary"].get("stopped_by_deadline")) and e.get("schedule") != "clock"
                                       for e in finals),
            "stats": {k: statistics.fmean(s[k] for s in stats if k in s) for k in sorted(set().union(*stats))},
            "probe": probe,
        })
    rows.sort(key=lambda r: r["val_bpb"]["mean"])
    return rows


# ---- markdown -------------------------------------------------------------------------------
def _pm(s: dict, digits: int = 3) -> str:
    if s["mean"] is None:
        return "–"
    return f"{s['mean']:.{digits}f}" + (f" ± {s['std']:.{digits}f}" if s["std"] is not None else " (1 seed)")


def _num(x: float | None, fmt: str = ",.0f") -> str:
    return "–" if x is None else format(x, fmt)


def data_line(state: dict, relative_to: Path) -> str:
    """Where the text came from, paths relative to `relative_to` (arena.json keeps them absolute so a
    resume works from any directory; a report that names this machine's paths does not travel)."""
    def shown(path: str | None) -> str:
        return "none" if path is None else os.path.relpath(path, relative_to)
    data = state["data"]
    return f"Data: train/val `{shown(data['train_source'])}` ({data['split']}); test `{shown(data['test_source'])}`."


def render_markdown(state: dict, rows: list[dict], out: Path) -> str:
    s = state["settings"]
    p = s["profile"]
    machine = state["machine"]
    budget = f"{s['budget']:,.0f} {s['budget_kind']} per run"
    lines = [f"# Arena: {state['data']['name']}", "",
             f"Budget **{budget}**, profile `{p['name']}` (size `{p['size']}`, seq-len {p['seq_len']}, "
             f"batch {p['batch_size']}, cosine schedule with {p['warmup_fraction']:.0%} warm-up), "
             f"{s['seeds']} seed(s), byte-level bits per byte. Device: {machine['device']}"
             f"{' (' + machine['gpu'] + ')' if machine.get('gpu') else ''}; CPU {machine['cpu']}, "
             f"{machine['torch_threads']} torch threads; torch {machine['torch']}.",
             data_line(state, out), "",
             "## Verdict (ranked by mean val BPB; ± is the standard deviation over seeds)", "",
             "| rank | arch | lr | val BPB | test BPB | train tok/s | steps | train s | non-emb params | "
             "train FLOPs/token |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for rank, r in enumerate(rows, 1):
        probe = r["probe"] or {}
        params = probe.get("parameters", {}).get("non_embedding")
        flops = probe.get("flops_per_token", {}).get("train")
        deadline = f" ({r['stopped_by_deadline']} stopped by the time guard before its decay ended)" if r["stopped_by_deadline"] else ""
        lines.append(f"| {rank} | {r['arch']} | {r['lr']:g} | {_pm(r['val_bpb'])} | {_pm(r['test_bpb'])} | "
                     f"{_pm(r['train_tok_s'], 0)} | {'/'.join(map(str, r['steps']))}{deadline} | "
                     f"{'/'.join(f'{t:.0f}' for t in r.get('train_seconds', []))} | "
                     f"{_num(params)} | {_num(flops, '.3g')} |")
    lines += ["", *_cost_table(rows, p), "", *_stats_table(rows), "", *_sweep_table(state)]
    return "\n".join(lines) + "\n"


def _cost_table(rows: list[dict], p: dict) -> list[str]:
    contexts = p["contexts"]
    header = ["arch", *[f"decode tok/s @{c}" for c in contexts], f"TTFT @{contexts[0]} (ms)",
              "train peak MB", "time exp.", "activation exp.", "longest L"]
    lines = ["## Cost", "", "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for r in rows:
        probe = r["probe"]
        if not probe:
            continue
        decode = {d["context"]: d for d in probe["decode"]}
        sweep = probe["seq_sweep"]
        cells = [r["arch"], *[_num(decode[c]["decode_tok_s"]) for c in contexts],
                 _num(decode[contexts[0]]["ttft_s"] * 1000, ".1f"), _num(probe["train_memory"]["peak_mb"]),
                 _num(sweep["time_exponent"], ".2f"), _num(sweep["memory_exponent"], ".2f"),
                 str(sweep["points"][-1]["length"]) if sweep["points"] else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _stats_table(rows: list[dict]) -> list[str]:
    lines = ["## Architecture statistics (final training step, mean over seeds; energy on val windows)", "",
             "| arch | statistics | energy pJ/token | energy vs dense |", "|---|---|---:|---:|"]
    for r in rows:
        energy = (r["probe"] or {}).get("energy", {})
        stats = ", ".join(f"{k} {v:.3g}" for k, v in r["stats"].items()) or "–"
        lines.append(f"| {r['arch']} | {stats} | {_num(energy.get('energy_pj_per_token'), '.3g')} | "
                     f"{_num(energy.get('energy_ratio'), '.2f')} |")
    return lines


def _sweep_table(state: dict) -> list[str]:
    lines = ["## Learning-rate sweep (seed 0, val BPB after the sweep run; the lowest val loss wins)", "",
             "| arch | " + " | ".join(f"lr {lr:g}" for lr in state["settings"]["profile"]["lrs"]) + " |",
             "|---|" + "---:|" * len(state["settings"]["profile"]["lrs"])]
    for arch in state["settings"]["archs"]:
        cells = []
        for lr in state["settings"]["profile"]["lrs"]:
            entry = state["entries"].get(f"sweep/{arch}/lr{lr:g}")
            bpb = entry["val"].get("bpb") if entry else None
            cells.append(_num(bpb, ".3f"))
        lines.append(f"| {arch} | " + " | ".join(cells) + " |")
    return lines


# ---- plots ----------------------------------------------------------------------------------
def write_plots(state: dict, out: Path, plot_dir: Path) -> list[str]:
    """The PNGs into `plot_dir`; returns their names (none without matplotlib: the caller says so)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = _curves(state, out)
    written = []
    for name, x_field, x_label in (("bpb_vs_time.png", "train_seconds", "training seconds"),
                                   ("bpb_vs_tokens.png", "tokens", "training tokens")):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for arch, runs in curves.items():
            _band(ax, [series(rows, "eval", x_field)[1] for rows in runs],
                  [series(rows, "eval", "val_bpb")[1] for rows in runs], arch)
        _finish(plt, fig, ax, x_label, "validation bits per byte", plot_dir / name)
        written.append(name)
    for name, field, label in (("seq_time.png", "seconds", "forward+backward seconds (batch 1)"),
                               ("seq_memory.png", "activation_mb", "activations saved for backward (MB)")):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for arch in curves:
            points = (state["entries"].get(f"probe/{arch}", {}).get("probe") or {}).get("seq_sweep", {})
            points = [p for p in points.get("points", []) if p.get(field, 0) > 0]
            if points:
                ax.plot([p["length"] for p in points], [p[field] for p in points], marker=".", label=arch)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        _finish(plt, fig, ax, "sequence length", label, plot_dir / name)
        written.append(name)
    return written


def _curves(state: dict, out: Path) -> dict[str, list[list[dict]]]:
    curves: dict[str, list[list[dict]]] = {}
    for entry in state["entries"].values():
        if entry["kind"] == "final":
            curves.setdefault(entry["arch"], []).append(read_metrics(out / entry["run_dir"]))
    return curves


def _band(ax, xs: list[list[float]], ys: list[list[float]], label: str) -> None:
    """Mean line over seeds, shaded between the lowest and highest seed, on the points all share."""
    n = min(len(x) for x in xs)
    if n == 0:
        return
    x = [statistics.fmean(run[i] for run in xs) for i in range(n)]
    columns = [[run[i] for run in ys] for i in range(n)]
    line, = ax.plot(x, [statistics.fmean(c) for c in columns], marker=".", label=label)
    if len(ys) > 1:
        ax.fill_between(x, [min(c) for c in columns], [max(c) for c in columns], color=line.get_color(), alpha=0.2)


def _finish(plt, fig, ax, x_label: str, y_label: str, path: Path) -> None:
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
