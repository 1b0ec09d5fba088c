"""Helpers every benchmark script shares: machine info, timing, memory, results and docs, and
the Hugging Face Llama twin of the lmzoo `transformer` (same configuration, same weights).

Timing rule: warm up, then take the *median* of several repeats; when two implementations
are compared, their repeats are interleaved (A B B A ...) so drifting machine load, thermal
state or a noisy neighbour hits both alike.
"""
from __future__ import annotations

import datetime
import gc
import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

import lmzoo.memory

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
DOC_PATH = ROOT / "docs" / "benchmarks.md"

DOC_INTRO = """# Benchmarks

Every number on this page is written by a script in `benchmarks/` (each section says which
command produced it, on what machine, and when); nothing here is typed in by hand. Raw results,
including every individual timing, are in `benchmarks/results/*.json`.
Re-run a script to refresh its section; the other sections are left as they are.
"""


# ---- machine ------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str) -> dict[str, Any]:
    info = {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
    }
    try:
        import transformers
        info["transformers"] = transformers.__version__
    except ImportError:
        info["transformers"] = None
    return info


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def command_line() -> str:
    """How this run was started, as a command someone can paste."""
    script = os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)  # the same from any working directory
    return shlex.join(["python", script, *sys.argv[1:]])


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


# ---- timing ---------------------------------------------------------------------------------
def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def stopwatch(fn: Callable[[], Any], device: str) -> float:
    """Seconds one call of `fn` takes, device work included."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def cpu_seconds() -> tuple[float, float]:
    """(CPU seconds the whole machine has been busy, CPU seconds this process and its finished children
    used); zeros off Linux. The children count as our own work: a run may be a fresh process."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        machine = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        busy = sum(machine) - machine[3] - machine[4]  # everything but idle and iowait
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        return busy / ticks, sum(int(x) for x in own[11:15]) / ticks  # utime + stime + cutime + cstime
    except (OSError, ValueError, IndexError):
        return 0.0, 0.0


def others_load(fn: Callable[[], float]) -> tuple[float, float]:
    """Run `fn` (which returns its own seconds) -> (seconds, CPU cores other processes kept busy meanwhile)."""
    busy0, own0 = cpu_seconds()
    start = time.perf_counter()
    seconds = fn()
    wall = time.perf_counter() - start
    busy1, own1 = cpu_seconds()
    return seconds, max(0.0, (busy1 - busy0) - (own1 - own0)) / max(wall, 1e-9)


@dataclass
class Timings:
    seconds: dict[str, list[float]]  # kept post-warmup seconds per run
    rounds: int = 0                  # timed rounds run
    dropped: int = 0                 # rounds thrown away because other processes were busy
    calm: bool = True                # False: too few calm rounds, so the busy ones were kept too


def interleaved_timings(runs: dict[str, Callable[[], float]], warmup: int, repeats: int,
                        max_rounds: int | None = None, others_limit: float = 0.25) -> Timings:
    """Call each run `warmup` then `repeats` times, round-robin, reversing the order every round.

    Each run returns the seconds it measured itself (so it can leave setup out of the clock).
    On a shared machine a burst of someone else's work can make one step several times slower
    (an OpenMP team that loses a core stalls at every barrier), and interleaving alone does not
    cancel that. So a round in which other processes used more than `others_limit` cores on
    average during any run is dropped and another one run, up to `max_rounds` (default
    4 x repeats); if the machine never calms down, the dropped rounds are kept after all.
    """
    names = list(runs)
    max_rounds = max_rounds or 4 * repeats
    clean: dict[str, list[float]] = {name: [] for name in names}
    noisy: dict[str, list[float]] = {name: [] for name in names}
    rounds = dropped = 0
    for i in range(warmup + max_rounds):
        if i >= warmup and len(clean[names[0]]) >= repeats:
            break
        measured = {}
        for name in names if i % 2 == 0 else reversed(names):
            gc.collect()  # a collection inside the timed region would land on one run at random
            measured[name] = others_load(runs[name])
        if i < warmup:
            continue
        rounds += 1
        busy = max(load for _, load in measured.values()) > others_limit
        dropped += busy
        for name, (seconds, _) in measured.items():
            (noisy if busy else clean)[name].append(seconds)
    if len(clean[names[0]]) < repeats:  # never calm enough: report everything rather than nothing
        return Timings({name: clean[name] + noisy[name] for name in names}, rounds, 0, calm=False)
    return Timings(clean, rounds, dropped)


def median(values: list[float]) -> float:
    return statistics.median(values)


def fitted_exponent(lengths: list[float], values: list[float]) -> float:
    """Least-squares slope of log(value) against log(length): 1 = linear, 2 = quadratic."""
    xs, ys = [math.log(n) for n in lengths], [math.log(v) for v in values]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


# ---- memory ---------------------------------------------------------------------------------
# peak_rss_mb (the high-water mark of this process image) and current_rss_mb come from lmzoo.memory
peak_rss_mb, current_rss_mb = lmzoo.memory.peak_rss_mb, lmzoo.memory.current_rss_mb


def call_in_fresh_process(script: Path, function: str, kwargs: dict[str, Any], timeout: float = 1800) -> dict:
    """Run `function(**kwargs)` from `script` in a new Python and return its JSON-able result.

    A fresh process is the only way to get a clean RSS high-water mark for one configuration:
    in a long-lived process the peak is the largest of everything run so far.
    """
    code = ("import json, runpy, sys; "
            "ns = runpy.run_path(sys.argv[1]); "
            "print('@@RESULT@@' + json.dumps(ns[sys.argv[2]](**json.loads(sys.argv[3]))))")
    proc = subprocess.run([sys.executable, "-c", code, str(script), function, json.dumps(kwargs)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{function}({kwargs}) failed in a subprocess:\n{proc.stderr[-3000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@RESULT@@")][-1]
    return json.loads(line[len("@@RESULT@@"):])


# ---- results ----------------------------------------------------------------------------------
def write_json(name: str, device: str, data: dict[str, Any], results_dir: Path = RESULTS_DIR) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}-{device}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def update_doc_section(section: str, body: str, doc_path: Path = DOC_PATH, intro: str = DOC_INTRO) -> Path:
    """Replace the text between `<!-- BEGIN section -->` and `<!-- END section -->` in the doc.

    Creates the doc (with `intro`) if missing and appends the section if it is new; every other
    section and any hand-written text outside the markers is kept byte for byte.
    """
    begin, end = f"<!-- BEGIN {section} -->", f"<!-- END {section} -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    text = doc_path.read_text() if doc_path.exists() else intro
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc_path.parent.mkdir(parents=True, exist_ok=True)
    doc_path.write_text(text)
    return doc_path


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# ---- the Hugging Face twin (transformers is a dev dependency: imported only here) -----------
def hf_config(config):
    """LlamaConfig with exactly the lmzoo transformer's shapes, norms, RoPE and tying."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=config.vocab_size, hidden_size=config.d_model, intermediate_size=config.d_ff,
        num_hidden_layers=config.n_layers, num_attention_heads=config.n_heads,
        num_key_value_heads=config.n_kv_heads, head_dim=config.d_model // config.n_heads,
        hidden_act="silu", rms_norm_eps=config.norm_eps, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
        attention_bias=False, mlp_bias=False, attention_dropout=0.0, max_position_embeddings=8192,
        attn_implementation="sdpa")


def build_hf(config, device: str):
    from transformers import LlamaForCausalLM
    from transformers.utils import logging

    logging.set_verbosity_error()
    if config.qk_norm or config.window is not None:
        raise ValueError("the Llama twin has no QK-norm or sliding window")
    return LlamaForCausalLM(hf_config(config)).to(device)


@torch.no_grad()
def copy_weights(model, hf) -> None:
    """Give the HF twin lmzoo's weights, so both compute the same function (checked by logits)."""
    c = model.config
    q_dim, kv_dim = c.d_model, c.n_kv_heads * (c.d_model // c.n_heads)
    hf.model.embed_tokens.weight.copy_(model.embed.weight)
    hf.model.norm.weight.copy_(model.norm.weight)
    for block, layer in zip(model.blocks, hf.model.layers):
        q, k, v = block.attn.qkv.weight.split([q_dim, kv_dim, kv_dim])
        layer.self_attn.q_proj.weight.copy_(q)
        layer.self_attn.k_proj.weight.copy_(k)
        layer.self_attn.v_proj.weight.copy_(v)
        layer.self_attn.o_proj.weight.copy_(block.attn.out.weight)
        gate, up = block.mlp.gate_up.weight.chunk(2)
        layer.mlp.gate_proj.weight.copy_(gate)
        layer.mlp.up_proj.weight.copy_(up)
        layer.mlp.down_proj.weight.copy_(block.mlp.down.weight)
        layer.input_layernorm.weight.copy_(block.attn_norm.weight)
        layer.post_attention_layernorm.weight.copy_(block.mlp_norm.weight)


# ---- the run record every benchmark writes ------------------------------------------------------
def run_info(device: str = "cpu") -> dict[str, Any]:
    """What every results file starts with: the command, date, machine, threads and load."""
    return {"command": command_line(), "date": now(), "machine": machine_info(device),
            "threads": torch.get_num_threads(), "load_average_before": os.getloadavg()}


def command_header(data: dict[str, Any]) -> str:
    """The line under each docs section naming the command that produced it, when, and where."""
    m = data["machine"]
    return (f"Command: `{data['command']}` ({data['date']}; {m.get('cpu', '?')}, {data['threads']} threads, "
            f"torch {m.get('torch', '?')})")


def repo_path(path: str | os.PathLike) -> str:
    """`path` relative to the repository when it lies inside it, so results files hold no machine paths."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def publish(name: str, data: dict[str, Any], markdown: str, write: bool = True, device: str = "cpu") -> None:
    """Print the section; unless told not to, save the results JSON and regenerate the docs section."""
    print(markdown)
    if write:
        print(f"wrote {write_json(name, device, data)}")
        print(f"wrote {update_doc_section(f'{name}-{device}', markdown)}")
