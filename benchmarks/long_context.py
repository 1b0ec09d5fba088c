"""Long context: does the cost grow linearly in L, and does a global memory retrieve distant context?

Two parts, each its own section of docs/benchmarks.md:

* `--scaling` (claim E1, "O(n) time, less memory than attention"): for every architecture row and
  sequence length L, batch 1, fp32, one fresh Python process per measurement (clean RSS high-water
  mark): the time and peak RSS of a forward+backward step, and after feeding an L-token context
  through the decoding state (in chunks) the time per generated token, the size of the state and
  the peak RSS. Rows are interleaved (A B B A ...) at every length. A measurement whose
  extrapolated time or memory would exceed the budget is skipped and recorded with the reason.
  Fitted log-log exponents of L per row; ratios of efficia-1 to the transformer at every L.
* `--recall` (claim E2, "global memory retrieves distant context"): recall across segments.
  Synthetic byte sequences hold a block of key-value pairs, then filler of a controlled distance D,
  then the keys again, each to be followed by its value. Every variant is trained from the same
  seed on the same batches (loss only on the queried values; a length curriculum from 64 bytes,
  at equal tokens per step) and scored on value accuracy per D, including D beyond the local
  attention window. By default each key has its own value alphabet (a content lookup, learnt in
  minutes); `--shared-values` makes it in-context association, which these sizes do not learn in
  a CPU budget.

    python benchmarks/long_context.py --threads 2                    # both parts (about an hour on 2 cores)
    python benchmarks/long_context.py --scaling --lengths 512 1024 2048 --threads 2
    python benchmarks/long_context.py --recall --variants efficia-1 transformer --threads 2

Rows/variants are names of registered architectures, or `ARCH-windowN` (that architecture with
window=N), or `ARCH:key=value,key=value` (any config overrides); efficia-1 ablations have short
names (efficia-1-no-memory, efficia-1-no-compression, efficia-1-lcp-only).
"""
from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # benchmarks/ is not a package
from long_context_recall import EFFICIA, add_recall_arguments, measure_recall, render_recall, task_of

import lmzoo
from lmzoo.errors import LmzooError

NAME = "long-context"
SCRIPT = Path(__file__).resolve()
# Registered architectures whose time grows (near) linearly in L, after efficia-1 and the
# transformer baselines: spike-walze (local window + roller), spike-transformer (running-sum
# attention) and spectral-llm (FFT long convolution, O(L log L)).
LINEAR_TIME = ["spike-walze", "spike-transformer", "spectral-llm"]
ABLATIONS = {
    f"{EFFICIA}-no-memory": {"memory": False},
    f"{EFFICIA}-no-compression": {"compression": False},
    f"{EFFICIA}-lcp-only": {"memory": False, "compression": False},
}
RECALL_EFFICIA = [EFFICIA, *ABLATIONS]
LENGTHS = [512, 1024, 2048, 4096, 8192, 16384, 32768]
SKIP = "—"


def log(msg: str) -> None:
    print(f"[{common.now()}] {msg}", flush=True)


# ---- rows: "arch", "arch-windowN", "arch:key=value,..." ---------------------------------------
def _value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_spec(spec: str) -> tuple[str, dict]:
    """A row name -> (registered architecture, config overrides); SystemExit with one line if unknown."""
    registered = lmzoo.list_architectures()
    name, _, rest = spec.partition(":")
    overrides = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise SystemExit(f"error: bad override '{item}' in '{spec}' (expected key=value)")
        overrides[key.strip()] = _value(value.strip())
    arch, base = name, {}
    if name in ABLATIONS:
        arch, base = EFFICIA, ABLATIONS[name]
    elif name not in registered and (m := re.fullmatch(r"(.+)-window(\d+)", name)):
        arch, base = m.group(1), {"window": int(m.group(2))}
    overrides = {**base, **overrides}
    if arch not in registered:
        raise SystemExit(f"error: architecture '{arch}' (from '{spec}') is not registered; "
                         f"registered: {', '.join(registered)}")
    try:
        lmzoo.make_config(arch, "nano", **overrides)
    except (LmzooError, TypeError, ValueError) as e:  # a bad config field: say so in one line
        raise SystemExit(f"error: '{spec}': {e}") from None
    return arch, overrides


def default_scaling_rows() -> list[str]:
    registered = lmzoo.list_architectures()
    rows = [EFFICIA] if EFFICIA in registered else []
    return rows + ["transformer", "transformer-window256"] + [a for a in LINEAR_TIME if a in registered]


def default_recall_variants() -> list[str]:
    return (RECALL_EFFICIA if EFFICIA in lmzoo.list_architectures() else []) + ["transformer"]


# ---- probes (each runs in a fresh process, see common.call_in_fresh_process) --------------------
def _model(arch: str, size: str, overrides: dict, threads: int | None):
    common.set_threads(threads)
    torch.manual_seed(0)
    return lmzoo.create_model(arch, size, **overrides)


def _ids(length: int, vocab: int = 256, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (1, length), generator=torch.Generator().manual_seed(seed))


def train_probe(arch: str, size: str, overrides: dict, length: int, threads: int | None = None) -> dict:
    """One warm-up and one timed forward+backward step at batch 1 x `length`; peak RSS over both.

    A 16-token step first allocates the gradients (they stay: zero_grad keeps them), so the RSS
    increase is what the length costs: activations kept for the backward and their gradients."""
    model = _model(arch, size, overrides, threads).train()
    ids = _ids(length)

    def step(x: torch.Tensor = ids):
        model.zero_grad(set_to_none=False)
        model(x, labels=x).loss.backward()

    step(ids[:, :16])
    before = common.current_rss_mb()
    step()
    seconds = common.stopwatch(step, "cpu")
    peak = common.peak_rss_mb()
    return {"seconds": seconds, "peak_rss_mb": peak, "rss_before_mb": before, "increase_mb": peak - before}


def decode_probe(arch: str, size: str, overrides: dict, length: int, new_tokens: int, chunk: int,
                 threads: int | None = None) -> dict:
    """Feed `length` context tokens through the state in chunks, then time `new_tokens` greedy steps."""
    model = _model(arch, size, overrides, threads).eval()
    ids = _ids(length, seed=1)
    before = common.current_rss_mb()
    with torch.inference_mode():
        state = model.init_state()
        start = time.perf_counter()
        for i in range(0, length, chunk):
            logits = model(ids[:, i:i + chunk], state=state, logits_to_keep=1).logits[:, -1]
        prefill = time.perf_counter() - start
        nbytes = state.nbytes()
        times = []
        for _ in range(new_tokens):
            token = logits.argmax(-1, keepdim=True)
            t0 = time.perf_counter()
            logits = model(token, state=state, logits_to_keep=1).logits[:, -1]
            times.append(time.perf_counter() - t0)
    peak = common.peak_rss_mb()
    return {"prefill_s": prefill, "per_token_s": common.median(times), "mean_per_token_s": sum(times) / len(times),
            "state_bytes": nbytes, "state_bytes_after_decode": state.nbytes(), "peak_rss_mb": peak,
            "rss_before_mb": before, "increase_mb": peak - before}


# ---- budget ------------------------------------------------------------------------------------------
def extrapolate(points: list[tuple[int, float]], length: int, default_exponent: float = 1.0) -> float | None:
    """Value at `length` from the last two (L, value) points, with their log-log slope clamped to [1, 3]
    (one point: `default_exponent`, linear: assuming quadratic from the smallest length skipped
    measurements that would have fit); None without points."""
    points = [(n, v) for n, v in points if v > 0]
    if not points:
        return None
    (n1, v1) = points[-1]
    exponent = default_exponent
    if len(points) >= 2:
        n0, v0 = points[-2]
        exponent = min(3.0, max(1.0, math.log(v1 / v0) / math.log(n1 / n0)))
    return v1 * (length / n1) ** exponent


def available_memory_mb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("inf")


class Budget:
    """Per row and kind ("train"/"decode"): what was measured, and whether the next length fits."""

    def __init__(self, max_seconds: float, max_memory_mb: float | None):
        self.max_seconds, self.max_memory_mb = max_seconds, max_memory_mb
        self.history: dict[tuple[str, str], list[tuple[int, float, float, float]]] = {}

    def record(self, row: str, kind: str, length: int, seconds: float, rss_before: float, increase: float):
        self.history.setdefault((row, kind), []).append((length, seconds, rss_before, increase))

    def predicted_seconds(self, row: str, kind: str, length: int) -> float | None:
        return extrapolate([(n, s) for n, s, _, _ in self.history.get((row, kind), [])], length)

    def skip_reason(self, row: str, kind: str, length: int, failed: dict[tuple[str, str], str]) -> str | None:
        if (row, kind) in failed:
            return failed[(row, kind)]
        hist = self.history.get((row, kind), [])
        if not hist:
            return None
        basis = f"extrapolated from L={', '.join(str(n) for n, *_ in hist[-2:])}"
        seconds = self.predicted_seconds(row, kind, length)
        if seconds is not None and seconds > self.max_seconds:
            return f"predicted {seconds:,.0f} s > budget {self.max_seconds:,.0f} s ({basis})"
        increase = extrapolate([(n, inc) for n, _, _, inc in hist], length)
        limit = self.max_memory_mb if self.max_memory_mb else 0.8 * available_memory_mb()
        if increase is not None and hist[-1][2] + increase > limit:
            return f"predicted peak RSS {hist[-1][2] + increase:,.0f} MB > {limit:,.0f} MB ({basis})"
        return None


# ---- part 1: scaling ------------------------------------------------------------------------------
def _fresh(function: str, kwargs: dict, timeout: float) -> dict:
    try:
        return common.call_in_fresh_process(SCRIPT, function, kwargs, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"failed": f"ran past the {timeout:.0f} s time limit"}
    except RuntimeError as e:  # killed (out of memory: signal 9) or raised
        last = [ln for ln in str(e).splitlines() if ln.strip()][-1:] or ["?"]
        return {"failed": f"subprocess failed: {last[0][:200]}"}


def _train_run(row: str, spec: tuple[str, dict], kwargs: dict, timeout: float, results: dict,
               failed: dict) -> Callable[[], float]:
    """One interleaved round of a row: a fresh process -> the timed step's seconds (NaN once it failed)."""
    def run() -> float:
        if (row, "train") in failed:
            return float("nan")
        out = _fresh("train_probe", dict(arch=spec[0], overrides=spec[1], **kwargs), timeout)
        if "failed" in out:
            failed[(row, "train")] = out["failed"]
            return float("nan")
        results[row].append(out)
        return out["seconds"]
    return run


def untrained_defaults(arch: str, overrides: dict) -> dict:
    """An untrained spike gate fires at an arbitrary rate: hold it at the architecture's target
    (as `spike_walze.py --scaling` does), unless the row sets it."""
    config = lmzoo.make_config(arch, "nano", **overrides)
    if getattr(config, "forced_spike_rate", False) is None and hasattr(config, "spike_target"):
        return {**overrides, "forced_spike_rate": config.spike_target}
    return overrides


def measure_scaling(args, rows: list[str]) -> dict:
    specs = {}
    for row in rows:
        arch, overrides = parse_spec(row)
        specs[row] = (arch, untrained_defaults(arch, overrides))
    budget = Budget(args.max_seconds, args.max_memory_mb)
    failed: dict[tuple[str, str], str] = {}
    timeout = max(300.0, 4 * args.max_seconds)
    cells: dict[str, dict[str, dict]] = {row: {} for row in rows}
    base = {"size": args.size, "threads": args.threads}
    for i, length in enumerate(args.lengths):
        # ---- forward + backward: interleaved rounds, one fresh process per row and round
        active = []
        for row in rows:
            reason = budget.skip_reason(row, "train", length, failed)
            if reason:
                cells[row].setdefault(str(length), {})["train"] = {"skipped": reason}
            else:
                active.append(row)
        predicted = [budget.predicted_seconds(row, "train", length) or 0.0 for row in active]
        # A round runs a warm-up and a timed step per row: fewer rounds when the slowest step is long.
        repeats = max(1, min(args.repeats, int(args.max_seconds // max(2 * max(predicted, default=0.0), 1e-9))))
        results: dict[str, list[dict]] = {row: [] for row in active}
        if active:
            log(f"L={length}: forward+backward, {len(active)} rows x {repeats} rounds")
            runs = {row: _train_run(row, specs[row], dict(length=length, **base), timeout, results, failed)
                    for row in active}
            timings = common.interleaved_timings(runs, 0, repeats, max_rounds=repeats + 1)
            for row in active:
                seconds = [s for s in timings.seconds[row] if not math.isnan(s)]
                if not seconds:
                    cells[row].setdefault(str(length), {})["train"] = {"skipped": failed[(row, "train")]}
                    continue
                peak = max(results[row], key=lambda r: r["peak_rss_mb"])
                cell = {"seconds": seconds, "median_s": common.median(seconds), "peak_rss_mb": peak["peak_rss_mb"],
                        "rss_before_mb": peak["rss_before_mb"], "increase_mb": peak["increase_mb"],
                        "rounds": timings.rounds, "dropped_rounds": timings.dropped, "calm": timings.calm}
                if (row, "train") in failed:  # a later round failed: keep what was measured, say so
                    cell["failed"] = failed[(row, "train")]
                cells[row].setdefault(str(length), {})["train"] = cell
                budget.record(row, "train", length, cell["median_s"], cell["rss_before_mb"], cell["increase_mb"])
                log(f"  {row}: {cell['median_s']:.3f} s, peak RSS {cell['peak_rss_mb']:,.0f} MB")
        # ---- decode: one fresh process per row, rows in alternating order from length to length
        for row in rows if i % 2 == 0 else reversed(rows):
            cell = cells[row].setdefault(str(length), {})
            reason = budget.skip_reason(row, "decode", length, failed)
            if reason:
                cell["decode"] = {"skipped": reason}
                continue
            arch, overrides = specs[row]
            wall = time.perf_counter()
            out = _fresh("decode_probe", dict(arch=arch, overrides=overrides, length=length, new_tokens=args.new_tokens,
                                              chunk=args.chunk, **base), timeout)
            if "failed" in out:
                failed[(row, "decode")] = out["failed"]
                cell["decode"] = {"skipped": out["failed"]}
                continue
            cell["decode"] = out
            # The budget covers prefill + decode (the whole measurement), without the process start.
            budget.record(row, "decode", length, out["prefill_s"] + out["per_token_s"] * args.new_tokens,
                          out["rss_before_mb"], out["increase_mb"])
            log(f"  {row}: decode {out['per_token_s'] * 1e3:.2f} ms/token after {length} "
                f"(state {out['state_bytes'] / 2**20:,.2f} MiB, {time.perf_counter() - wall:.0f} s wall)")
    out = {"size": args.size, "lengths": args.lengths, "new_tokens": args.new_tokens, "chunk": args.chunk,
           "max_seconds": args.max_seconds, "max_memory_mb": args.max_memory_mb, "repeats": args.repeats,
           "rows": {row: {"arch": specs[row][0], "overrides": specs[row][1], "cells": cells[row]} for row in rows}}
    out["exponents"] = {row: exponents(out, row) for row in rows}
    out["ratios"] = ratios(out, *args.compare)
    return out


METRICS = {  # name -> (kind, value in the cell, label)
    "train_s": ("train", "median_s", "fwd+bwd s"),
    "train_increase_mb": ("train", "increase_mb", "fwd+bwd RSS increase MB"),
    "train_peak_mb": ("train", "peak_rss_mb", "fwd+bwd peak RSS MB"),
    "decode_s": ("decode", "per_token_s", "decode ms/token"),
    "state_mb": ("decode", "state_bytes", "state MiB"),
    "decode_peak_mb": ("decode", "peak_rss_mb", "decode peak RSS MB"),
}
FITTED = ["train_s", "train_increase_mb", "decode_s", "state_mb"]  # peaks include the model itself: no fit


def series(data: dict, row: str, metric: str) -> list[tuple[int, float]]:
    kind, key, _ = METRICS[metric]
    cells = data["rows"][row]["cells"]
    return [(n, cells[str(n)][kind][key]) for n in data["lengths"]
            if key in cells.get(str(n), {}).get(kind, {})]


def exponents(data: dict, row: str) -> dict[str, float | None]:
    """Log-log slope of each fitted metric over the lengths measured (positive values only)."""
    fits = {}
    for metric in FITTED:
        points = [(n, v) for n, v in series(data, row, metric) if v > 0]
        fits[metric] = common.fitted_exponent(*zip(*points)) if len(points) >= 2 else None
    return fits


def ratios(data: dict, num: str, den: str) -> dict:
    if num not in data["rows"] or den not in data["rows"]:
        return {}
    out = {"of": [num, den]}
    for metric in METRICS:
        a, b = dict(series(data, num, metric)), dict(series(data, den, metric))
        out[metric] = {str(n): a[n] / b[n] for n in data["lengths"] if n in a and n in b and b[n] > 0}
    return out


def _fmt(metric: str, value: float) -> str:
    if metric == "decode_s":
        return f"{value * 1e3:,.2f}"
    if metric == "state_mb":
        return f"{value / 2**20:,.2f}"
    if metric == "train_s":
        return f"{value:,.3f}" if value < 10 else f"{value:,.1f}"
    return f"{value:,.0f}"


def render_scaling(data: dict) -> str:
    s = data["scaling"]
    lengths = s["lengths"]
    shown = ["train_s", "train_peak_mb", "decode_s", "state_mb", "decode_peak_mb"]
    fit_of = {"train_s": "train_s", "train_peak_mb": "train_increase_mb", "decode_s": "decode_s", "state_mb": "state_mb"}
    table, skipped = [], {}
    for row, r in s["rows"].items():
        for metric in shown:
            kind, key, label = METRICS[metric]
            cells = []
            for n in lengths:
                cell = r["cells"].get(str(n), {}).get(kind, {})
                where = f"{row} {kind} L={n}"
                if "skipped" in cell and where not in skipped.get(cell["skipped"], []):
                    skipped.setdefault(cell["skipped"], []).append(where)
                if key not in cell:
                    cells.append(SKIP)
                elif metric == "train_peak_mb":
                    cells.append(f"{cell['peak_rss_mb']:,.0f} (+{cell['increase_mb']:,.0f})")
                else:
                    cells.append(_fmt(metric, cell[key]))
            fit = s["exponents"][row].get(fit_of.get(metric, ""), None)
            table.append([f"`{row}`", label, *cells, f"**{fit:.2f}**" if fit is not None else "-"])
    ratio = s.get("ratios") or {}
    if ratio:
        num, den = ratio["of"]
        for metric in ["train_s", "train_increase_mb", "decode_s", "state_mb"]:
            values = ratio[metric]
            table.append([f"`{num}` / `{den}`", METRICS[metric][2], *(f"{values[str(n)]:.2f}" if str(n) in values
                                                                      else SKIP for n in lengths), "-"])
    head = ["row", "measure", *(f"L={n}" for n in lengths), "exponent of L"]
    lines = ["### Long context: time and memory vs sequence length", "", common.command_header(data), "",
             (f"`{s['size']}` models, batch 1, fp32, random bytes. fwd+bwd: median seconds of a forward+backward "
             "step (rows interleaved, one fresh process per step after a warm-up step in it), its peak RSS "
             "(+ increase over the RSS before the step). decode: the context fed through the decoding state in "
             f"chunks of {s['chunk']}, then {s['new_tokens']} greedy tokens (median ms/token), the state's tensor "
             "bytes after the context, the process's peak RSS. Exponent: least-squares slope of log(value) "
             "against log(L) over the measured lengths (time; RSS increase for the fwd+bwd memory row); "
             f"1 = linear, 2 = quadratic, 0 = constant. {SKIP} = not measured, see below."), "",
             *overrides_line(s), "", common.markdown_table(head, table), "", *scaling_notes(s)]
    if skipped:
        lines += ["", "Not measured: " + "; ".join(f"{', '.join(where)}: {reason}" for reason, where in skipped.items())
                  + "."]
    return "\n".join(lines)


def overrides_line(s: dict) -> list[str]:
    rows = [f"`{row}`: " + ", ".join(f"{k}={v}" for k, v in r["overrides"].items())
            for row, r in s["rows"].items() if r["overrides"]]
    return ["", "Configuration overrides (on the size preset): " + "; ".join(rows) + "."] if rows else []


def scaling_notes(s: dict) -> list[str]:
    """Reading notes computed from the results (no typed-in numbers)."""
    fits = {row: e for row, e in s["exponents"].items() if e.get("train_s") is not None}
    if not fits:
        return []
    notes = []
    ordered = sorted(fits, key=lambda row: fits[row]["train_s"])
    notes.append("Forward+backward time exponents, smallest first: "
                 + ", ".join(f"`{row}` {fits[row]['train_s']:.2f}" for row in ordered) + ".")
    ratio = s.get("ratios") or {}
    if ratio and ratio["train_s"]:
        num, den = ratio["of"]
        longest = max(ratio["train_s"], key=int)
        a, b = fits.get(num, {}).get("train_s"), fits.get(den, {}).get("train_s")
        sentence = (f"`{num}`'s time exponent is {'smaller' if a < b else 'not smaller'} than `{den}`'s "
                    f"({a:.2f} vs {b:.2f}); " if a is not None and b is not None else "")
        sentence += (f"at the longest length both ran (L={longest}) it takes {ratio['train_s'][longest]:.2f}x the "
                     f"time of `{den}`")
        if longest in ratio["train_increase_mb"]:
            sentence += f" and {ratio['train_increase_mb'][longest]:.2f}x its fwd+bwd RSS increase"
        notes.append(sentence + ".")
        state = {row: e.get("state_mb") for row, e in s["exponents"].items() if e.get("state_mb") is not None}
        if num in state and den in state:
            notes.append(f"Decoding-state size grows as L^{state[num]:.2f} for `{num}` and L^{state[den]:.2f} "
                         f"for `{den}`.")
    return notes


# ---- command line -------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scaling", action="store_true", help="time and memory vs L (default: both parts)")
    p.add_argument("--recall", action="store_true", help="associative recall across segments")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--no-write", action="store_true", help="print only; leave results/ and docs/ alone")
    g = p.add_argument_group("scaling")
    g.add_argument("--archs", nargs="+", help="rows (default: efficia-1 if registered, transformer, "
                   "transformer-window256, spike-walze, spike-transformer, spectral-llm)")
    g.add_argument("--size", default="micro")
    g.add_argument("--lengths", type=int, nargs="+", default=LENGTHS)
    g.add_argument("--repeats", type=int, default=3, help="interleaved rounds at short L (fewer when steps are long)")
    g.add_argument("--max-seconds", type=float, default=120.0,
                   help="skip a measurement whose extrapolated step (decode: prefill + tokens) takes longer")
    g.add_argument("--max-memory-mb", type=float,
                   help="skip a measurement whose extrapolated peak RSS is larger (default: 80%% of MemAvailable)")
    g.add_argument("--new-tokens", type=int, default=64)
    g.add_argument("--chunk", type=int, default=2048, help="context fed through the state this many tokens at a time")
    g.add_argument("--compare", nargs=2, default=[EFFICIA, "transformer"], metavar=("ROW", "BASELINE"),
                   help="ratio rows ROW / BASELINE")
    add_recall_arguments(p)
    args = p.parse_args(argv)
    if not (args.scaling or args.recall):
        args.scaling = args.recall = True
    try:
        task_of(args).check()
        if task_of(args).max_gap(args.start_len) < 0:
            raise ValueError(f"--start-len {args.start_len} cannot hold the pairs and queries")
    except ValueError as e:
        p.error(str(e))
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    common.set_threads(args.threads)
    rows = args.archs or default_scaling_rows()
    variants = args.variants or default_recall_variants()
    for spec in (rows if args.scaling else []) + (variants if args.recall else []):
        parse_spec(spec)  # every unknown name fails here, before anything runs
    base = common.run_info()
    done = {}
    if args.scaling:
        data = {**base, "scaling": measure_scaling(args, rows)}
        common.publish(f"{NAME}-scaling", data, render_scaling(data), write=not args.no_write)
        done["scaling"] = data
    if args.recall:
        data = {**base, "recall": measure_recall(args, {v: parse_spec(v) for v in variants})}
        common.publish(f"{NAME}-recall", data, render_recall(data), write=not args.no_write)
        done["recall"] = data
    return done


if __name__ == "__main__":
    main()
