"""What DDP's `find_unused_parameters=True` costs per training step (2 gloo processes on CPU).

    python benchmarks/ddp_find_unused.py [--archs transformer efficia-1] [--size nano] [--seq-len 128]

The trainer turns the search on only when a model declares a component without gradient at
the run's sequence length (`CausalLM.untrained_components`, e.g. efficia-1 at seq_len <= segment);
this measures what turning it on everywhere would cost. Each rank holds two copies of the same
model, one wrapped with the search and one without, and times forward + backward (gradient
all-reduce included) of the same batch on each, interleaved A B B A so load drifts hit both.
Both ranks run the same fixed schedule (no dropped rounds: a rank-local decision would desync
the collectives). Rank 0's timings go to benchmarks/results/ddp-find-unused-cpu.json and
docs/benchmarks.md. The script launches itself under torchrun.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import lmzoo
from common import command_line, machine_info, markdown_table, median, now, update_doc_section, write_json

SECTION = "ddp-find-unused"


def step_seconds(model: torch.nn.Module, ids: torch.Tensor, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        model(ids, labels=ids).loss.backward()
    return (time.perf_counter() - start) / steps


def measure(arch: str, args) -> dict:
    torch.manual_seed(0)
    base = lmzoo.create_model(arch, args.size)
    wrapped = {"plain": DistributedDataParallel(copy.deepcopy(base)),
               "find_unused": DistributedDataParallel(copy.deepcopy(base), find_unused_parameters=True)}
    generator = torch.Generator().manual_seed(dist.get_rank())
    ids = torch.randint(0, base.config.vocab_size, (args.batch_size, args.seq_len), generator=generator)
    seconds = {name: [] for name in wrapped}
    for i in range(args.warmup + args.repeats):
        for name in list(wrapped) if i % 2 == 0 else reversed(list(wrapped)):
            taken = step_seconds(wrapped[name], ids, args.steps)
            if i >= args.warmup:
                seconds[name].append(taken)
    plain, searching = median(seconds["plain"]), median(seconds["find_unused"])
    return {"arch": arch, "size": args.size, "seq_len": args.seq_len, "batch_size": args.batch_size,
            "untrained_components": base.untrained_components(args.seq_len),
            "plain_ms": 1000 * plain, "find_unused_ms": 1000 * searching, "overhead": searching / plain - 1,
            "seconds": seconds}


def worker(args) -> None:
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo")
    results = [measure(arch, args) for arch in args.archs]
    if dist.get_rank() == 0:
        Path(args.result_file).write_text(json.dumps(results))
    dist.barrier()
    dist.destroy_process_group()


def report(args, results: list[dict], load_before: tuple) -> None:
    data = {"date": now(), "command": command_line(), "machine": machine_info("cpu"), "world_size": 2,
            "backend": "gloo", "threads_per_rank": args.threads, "load_average_before": load_before,
            "steps_per_timing": args.steps, "repeats": args.repeats, "results": results}
    path = write_json("ddp-find-unused", "cpu", data)
    rows = [[r["arch"], r["size"], r["seq_len"], r["batch_size"], f"{r['plain_ms']:.1f}",
             f"{r['find_unused_ms']:.1f}", f"{100 * r['overhead']:+.1f}%"] for r in results]
    body = (f"## DDP: the cost of `find_unused_parameters`\n\n`{data['command']}` — {data['date']}, "
            f"{data['machine']['cpu']}, 2 gloo processes × {args.threads} thread(s), load average before "
            f"{load_before[0]:.1f}. Forward + backward (with the gradient all-reduce) per step, median of "
            f"{args.repeats} interleaved timings of {args.steps} steps; rank 0's clock.\n\n"
            + markdown_table(["arch", "size", "seq_len", "batch/rank", "plain ms/step", "find_unused ms/step",
                              "overhead"], rows)
            + "\n\nThe trainer searches for unused parameters only where a model declares an untrained "
              "component at the run's length (see docs/training.md).")
    update_doc_section(SECTION, body)
    print(f"wrote {path}")
    for row in rows:
        print(" | ".join(map(str, row)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", default=["transformer", "efficia-1"])
    parser.add_argument("--size", default="nano")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if "WORLD_SIZE" in os.environ:
        worker(args)
        return
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        result_file = Path(tmp) / "result.json"
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        __file__, *sys.argv[1:], "--result-file", str(result_file)], check=True)
        report(args, json.loads(result_file.read_text()), load_before)


if __name__ == "__main__":
    main()
