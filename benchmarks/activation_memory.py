"""Training memory and step time with and without activation checkpointing, every architecture.

Each configuration runs in a fresh process (a clean RSS high-water mark): build the model, run
two training steps (forward, backward, AdamW), and record the peak RSS increase over the RSS
before the first step. Step times are the median of a few further steps in the same process.

    python benchmarks/activation_memory.py --size micro --batch-size 8 --seq-len 256 --threads 2
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (benchmarks/ is not a package)

import lmzoo  # noqa: E402

NAME = "activation-memory"
SCRIPT = Path(__file__).resolve()


def probe(arch: str, size: str, batch_size: int, seq_len: int, threads: int | None, recompute: bool,
          timed_steps: int) -> dict:
    """Peak RSS increase of two training steps, then the median time of `timed_steps` more."""
    common.set_threads(threads)
    torch.manual_seed(0)
    model = lmzoo.create_model(arch, size).train()
    model.activation_checkpointing = recompute
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, model.config.vocab_size, (batch_size, seq_len))

    def step() -> float:
        start = time.perf_counter()
        model(ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    before = common.current_rss_mb()
    for _ in range(2):  # the second step is the steady state (AdamW moments exist)
        step()
    increase = common.peak_rss_mb() - before
    seconds = [step() for _ in range(timed_steps)]
    return {"training_increase_mb": increase, "step_seconds": common.median(seconds)}


def measure(archs: list[str], size: str, batch_size: int, seq_len: int, threads: int | None,
            timed_steps: int) -> dict:
    rows = {}
    for arch in archs:
        rows[arch] = {mode: common.call_in_fresh_process(SCRIPT, "probe", dict(
            arch=arch, size=size, batch_size=batch_size, seq_len=seq_len, threads=threads,
            recompute=mode == "checkpointed", timed_steps=timed_steps)) for mode in ("plain", "checkpointed")}
        print(arch, rows[arch], flush=True)
    return rows


def markdown(data: dict) -> str:
    s = data["settings"]
    base = data["rows"]["transformer"]["plain"]["training_increase_mb"] if "transformer" in data["rows"] else None
    header = ["arch", "training memory MB", "x transformer", "with checkpointing MB", "memory saved",
              "step time with / without"]
    rows = []
    for arch, r in data["rows"].items():
        plain, ckpt = r["plain"], r["checkpointed"]
        rows.append([f"`{arch}`", f"{plain['training_increase_mb']:,.0f}",
                     f"{plain['training_increase_mb'] / base:.2f}" if base else "-",
                     f"{ckpt['training_increase_mb']:,.0f}",
                     f"{1 - ckpt['training_increase_mb'] / plain['training_increase_mb']:.0%}",
                     f"{ckpt['step_seconds'] / plain['step_seconds']:.2f}x"])
    return "\n".join([
        "## Activation checkpointing", "", common.command_header(data), "",
        f"`{s['size']}` models, batch {s['batch_size']} x {s['seq_len']} tokens, fp32. Training memory: the RSS "
        "high-water increase of two training steps (forward, backward, AdamW) over the RSS before them, in a "
        "fresh process per cell. Step time: median of "
        f"{s['timed_steps']} further steps in the same process.", "",
        common.markdown_table(header, rows)])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", nargs="*", default=None, help="default: every architecture")
    p.add_argument("--size", default="micro")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--timed-steps", type=int, default=3)
    p.add_argument("--no-write", action="store_true", help="print only; do not save results or docs")
    a = p.parse_args(argv)
    archs = a.archs or lmzoo.list_architectures()
    common.set_threads(a.threads)
    data = {**common.run_info(), "settings": {"size": a.size, "batch_size": a.batch_size, "seq_len": a.seq_len,
                                              "timed_steps": a.timed_steps},
            "rows": measure(archs, a.size, a.batch_size, a.seq_len, a.threads, a.timed_steps)}
    common.publish(NAME, data, markdown(data), write=not a.no_write)


if __name__ == "__main__":
    main()
