"""Training speed eager vs `torch.compile` (Inductor), and the `transformer` against HF Llama both ways.

Issue 19's goal 2 asks the baseline to train at >= 1.15x HF `LlamaForCausalLM` and >= 70% of the
machine's GEMM rate; in eager mode the two models run the same aten ops (`train_profile.py`), so
what is left is fusing the elementwise work. `lmzoo train --compile` compiles the model; this
script measures what that buys. For each size: lmzoo's `transformer` and HF Llama (same
configuration and weights, as in `throughput.py`) each eager and compiled, and any other
architecture asked for eager and compiled; a training step is forward + backward + AdamW at
batch x seq_len. All runs of a size are interleaved in one schedule (`common.interleaved_timings`:
busy rounds dropped). Reported: tokens/s, the compiled/eager speed-up, lmzoo/HF in each mode,
the fraction of a same-run 2048^3 GEMM's FLOP rate, and how long the first compiled step took.

    python benchmarks/compiled_training.py --sizes micro tiny --threads 2
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (benchmarks/ is not a package)
import throughput  # noqa: E402

import lmzoo  # noqa: E402
from lmzoo.accounting import flops_per_token  # noqa: E402

NAME = "compiled-training"


def compiled(model):
    """A copy of `model` whose forward is compiled (the model the trainer's --compile trains)."""
    twin = copy.deepcopy(model)
    twin.forward = torch.compile(twin.forward)
    return twin


def runs_for(size: str, archs: list[str], settings: throughput.Settings, log) -> tuple[dict, dict]:
    """{run name: timed step}, {run name: facts}; names are 'ARCH/eager', 'ARCH/compiled', 'hf/...'."""
    runs, facts = {}, {}
    for arch in archs:
        torch.manual_seed(0)
        model = lmzoo.create_model(arch, size)
        families = {arch: (model, throughput.LmzooRunner)}
        if arch == "transformer":
            hf = common.build_hf(model.config, "cpu")
            common.copy_weights(model, hf)
            families["hf"] = (hf, throughput.HFRunner)
        flops = flops_per_token(model, seq_len=settings.seq_len)["train"]
        for name, (module, runner) in families.items():
            for mode, built in (("eager", module), ("compiled", compiled(module))):
                run = throughput.train_run(runner(built), settings)
                began = time.perf_counter()
                run()  # the first step compiles (forward and backward graphs)
                first = time.perf_counter() - began
                runs[f"{name}/{mode}"] = run
                facts[f"{name}/{mode}"] = {"first_step_s": first, "flops_per_token": flops}
                log(f"{size} {name}/{mode}: first step {first:.1f} s")
    return runs, facts


def measure(size: str, archs: list[str], settings: throughput.Settings, log) -> dict:
    runs, facts = runs_for(size, archs, settings, log)
    timings = common.interleaved_timings(runs, settings.warmup, settings.repeats)
    tokens = settings.batch_size * settings.seq_len
    rows = {}
    for name, seconds in timings.seconds.items():
        per_s = tokens / common.median(seconds)
        rows[name] = {**facts[name], "tokens_per_s": per_s, "flops_per_s": per_s * facts[name]["flops_per_token"],
                      "seconds": seconds}
    return {"size": size, "runs": rows, "rounds": timings.rounds, "dropped_rounds": timings.dropped,
            "calm": timings.calm}


def run(args) -> dict:
    common.set_threads(args.threads)
    settings = throughput.Settings(archs=args.archs, sizes=args.sizes, threads=args.threads, seq_len=args.seq_len,
                                   batch_size=args.batch_size, repeats=args.repeats, warmup=args.warmup)
    data = {**common.run_info(), "settings": {k: getattr(args, k) for k in
                                              ("archs", "sizes", "seq_len", "batch_size", "repeats", "warmup")}}
    gemm_before = throughput.gemm_rate(settings)
    data["sizes"] = [measure(size, args.archs, settings, print) for size in args.sizes]
    gemm_after = throughput.gemm_rate(settings)
    data["gemm_flops_per_s"] = max(gemm_before["flops_per_s"], gemm_after["flops_per_s"])
    return data


def render_markdown(data: dict) -> str:
    gemm = data["gemm_flops_per_s"]
    s = data["settings"]
    header = ["size", "model", "eager tok/s", "compiled tok/s", "compiled / eager", "of GEMM eager",
              "of GEMM compiled", "first compiled step s"]
    rows, vs_hf = [], []
    for block in data["sizes"]:
        runs = block["runs"]
        for name in dict.fromkeys(key.split("/")[0] for key in runs):
            eager, comp = runs[f"{name}/eager"], runs[f"{name}/compiled"]
            label = "HF Llama" if name == "hf" else f"`{name}`"
            rows.append([block["size"], label, f"{eager['tokens_per_s']:.0f}", f"{comp['tokens_per_s']:.0f}",
                         f"{comp['tokens_per_s'] / eager['tokens_per_s']:.2f}x",
                         f"{eager['flops_per_s'] / gemm:.0%}", f"{comp['flops_per_s'] / gemm:.0%}",
                         f"{comp['first_step_s']:.0f}"])
        if "hf/eager" in runs and "transformer/eager" in runs:
            ours, hf = runs["transformer/compiled"]["tokens_per_s"], runs["hf/eager"]["tokens_per_s"]
            both = ours / runs["hf/compiled"]["tokens_per_s"]
            eager = runs["transformer/eager"]["tokens_per_s"] / hf
            vs_hf.append(f"- `{block['size']}`: lmzoo/HF eager {eager:.2f}x; lmzoo compiled / HF eager "
                         f"{ours / hf:.2f}x; both compiled {both:.2f}x (goal >= 1.15x); lmzoo compiled at "
                         f"{runs['transformer/compiled']['flops_per_s'] / gemm:.0%} of GEMM (goal >= 70%)")
    busy = [b["size"] for b in data["sizes"] if not b["calm"]]
    lines = ["## Training with `torch.compile` (Inductor)", "", common.command_header(data), "",
             f"Training step (forward + backward + AdamW) at batch {s['batch_size']} x {s['seq_len']}, fp32; "
             f"median of {s['repeats']} interleaved repeats after the compiling step. \"of GEMM\": training "
             f"FLOP/s over a 2048^3 matmul's in the same run ({gemm / 1e9:.1f} GFLOP/s). HF Llama has the "
             "transformer's configuration and weights.", "", common.markdown_table(header, rows), ""]
    if vs_hf:
        lines += ["lmzoo `transformer` vs HF Llama:", "", *vs_hf, ""]
    if busy:
        lines += [f"Other processes kept the machine busy during some rounds at {', '.join(busy)} "
                  "(rounds kept anyway): read ratios, not absolute rates.", ""]
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="+", default=["transformer"], help="lmzoo architectures (transformer adds HF)")
    p.add_argument("--sizes", nargs="+", default=["micro", "tiny"])
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--no-write", action="store_true", help="print only; leave results/ and docs/ alone")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    data = run(args)
    common.publish(NAME, data, render_markdown(data), write=not args.no_write)
    return data


if __name__ == "__main__":
    main()
