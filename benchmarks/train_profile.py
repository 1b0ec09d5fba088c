"""Where a training step's time goes: lmzoo `transformer` vs HF `LlamaForCausalLM`, op by op.

One training step (forward + backward + AdamW, the step `throughput.py` times) of each model,
same configuration and weights, under `torch.profiler` on the CPU. Every aten op's self time is
put in a category (matmuls, attention, elementwise and norms, copies and layout, optimizer, loss
and embedding, other); the table gives each category's milliseconds per step and share for both
models, and the matmuls' achieved FLOP/s against a large square matmul measured in the same run.
It explains the throughput goals of issue 19: a step can reach at most the GEMM rate times the
matmuls' share, and small matmuls run below the big-GEMM rate.

    python benchmarks/train_profile.py --sizes micro tiny --threads 2
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import throughput  # noqa: E402

import lmzoo  # noqa: E402

NAME = "train-profile"
CATEGORIES = {  # aten op names (without "aten::"; a backward op goes where its forward op does)
    "matmul": {"mm", "addmm", "bmm", "baddbmm", "linear", "matmul"},
    "attention": {"_scaled_dot_product_flash_attention_for_cpu", "scaled_dot_product_attention",
                  "_scaled_dot_product_attention_math", "_softmax", "softmax"},
    "optimizer": set(),  # by phase: every op under the optimizer step
    "loss+embedding": {"cross_entropy", "log_softmax", "_log_softmax", "nll_loss", "nll_loss_forward",
                       "nll_loss_nd", "embedding", "embedding_dense"},
    "copies+layout": {"copy_", "clone", "cat", "contiguous", "_to_copy", "to", "index", "index_select", "gather",
                      "zero_", "fill_", "empty", "empty_like", "empty_strided", "zeros", "zeros_like", "ones",
                      "stack", "new_zeros", "new_empty", "slice", "select", "narrow", "as_strided", "expand",
                      "transpose", "permute", "view", "reshape", "_reshape_alias", "t", "unsqueeze", "squeeze",
                      "split", "split_with_sizes", "chunk", "unbind", "flatten", "_unsafe_view", "detach", "alias",
                      "resize_", "set_", "index_put_", "masked_fill", "masked_fill_", "roll"},
    "elementwise+norm": {"mul", "mul_", "add", "add_", "sub", "sub_", "div", "div_", "pow", "mean", "rsqrt", "silu",
                         "sigmoid", "neg", "sum", "where", "exp", "cos", "sin", "sqrt", "addcmul_", "addcdiv_",
                         "lerp_", "rms_norm", "_fused_rms_norm", "threshold", "abs", "maximum", "clamp",
                         "clamp_min", "norm", "linalg_vector_norm", "_foreach_norm", "reciprocal"},
}


PHASES = ("forward", "backward", "optimizer")


def category(op: str) -> str:
    name = op.removeprefix("aten::")
    for suffix in ("_backward_data", "_backward"):
        name = name.removesuffix(suffix)
    return next((cat for cat, names in CATEGORIES.items() if name in names), "other")


def phase(event) -> str | None:
    """The record_function range (forward, backward, optimizer) an op ran under."""
    while event is not None and event.name not in PHASES:
        event = event.cpu_parent
    return None if event is None else event.name


def profile_step(runner, settings: throughput.Settings, steps: int) -> dict:
    """Self CPU time per category (ms per step) and the matmul FLOPs, over `steps` profiled steps.
    Every op of the optimizer step counts as "optimizer" (on CPU AdamW runs plain per-tensor ops)."""
    model = runner.model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = throughput.random_ids(model.config.vocab_size, settings.batch_size, settings.seq_len, "cpu")

    def step():
        optimizer.zero_grad(set_to_none=True)
        with record_function("forward"):
            loss = runner.loss(ids)
        with record_function("backward"):
            loss.backward()
        with record_function("optimizer"):
            optimizer.step()

    for _ in range(settings.warmup):
        step()
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        for _ in range(steps):
            step()
    ms, ops, flops = defaultdict(float), defaultdict(float), 0.0
    for event in prof.events():
        if not event.name.startswith("aten::"):
            continue
        cat = "optimizer" if phase(event) == "optimizer" else category(event.name)
        ms[cat] += event.self_cpu_time_total / 1000 / steps
        ops[event.name] += event.self_cpu_time_total / 1000 / steps
        if cat == "matmul":
            flops += (event.flops or 0) / steps
    matmul_s = ms["matmul"] / 1000
    top = sorted(ops.items(), key=lambda kv: -kv[1])[:8]
    return {"ms": dict(ms), "total_ms": sum(ms.values()), "matmul_flops": flops,
            "matmul_flops_per_s": flops / matmul_s if matmul_s else None, "top_ops": top}


def run(sizes: list[str], settings: throughput.Settings, steps: int) -> dict:
    common.set_threads(settings.threads)
    data = {**common.run_info(), "settings": {"batch_size": settings.batch_size, "seq_len": settings.seq_len,
                                              "steps": steps}, "gemm": throughput.gemm_rate(settings), "sizes": {}}
    for size in sizes:
        torch.manual_seed(0)
        model = lmzoo.create_model("transformer", size)
        hf = common.build_hf(model.config, "cpu")
        common.copy_weights(model, hf)
        data["sizes"][size] = {"lmzoo": profile_step(throughput.LmzooRunner(model), settings, steps),
                               "hf": profile_step(throughput.HFRunner(hf), settings, steps)}
    return data


def render(data: dict) -> str:
    gemm = data["gemm"]["flops_per_s"]
    lines = ["### Where a training step's time goes: `transformer` vs HF Llama", "", common.command_header(data), "",
             f"One training step (forward + backward + AdamW) at batch {data['settings']['batch_size']} x "
             f"{data['settings']['seq_len']}, fp32, under `torch.profiler`: self CPU time of the aten ops per step "
             f"(mean of {data['settings']['steps']} profiled steps after the warm-up), by category "
             "(`benchmarks/train_profile.py` lists which op goes where). The profiler adds its own overhead, so "
             "totals exceed `throughput.py`'s step times; compare shares. Matmul rate: the matmuls' FLOPs "
             f"(as the profiler counts them) over their self time, against a {data['gemm']['n']}^3 matmul in the "
             f"same run ({gemm / 1e9:.1f} GFLOP/s).", ""]
    cats = list(CATEGORIES) + ["other"]
    rows = []
    for size, pair in data["sizes"].items():
        for who in ("lmzoo", "hf"):
            r = pair[who]
            cells = [f"{r['ms'].get(c, 0):.1f} ({r['ms'].get(c, 0) / r['total_ms']:.0%})" for c in cats]
            rate = r["matmul_flops_per_s"]
            rows.append([size, "lmzoo" if who == "lmzoo" else "HF", f"{r['total_ms']:.1f}", *cells,
                         "-" if not rate else f"{rate / 1e9:.1f} ({rate / gemm:.0%})"])
    lines.append(common.markdown_table(["size", "model", "total ms", *[f"{c} ms (share)" for c in cats],
                                        "matmul GFLOP/s (of GEMM)"], rows))
    lines += ["", "Largest ops (self ms per step), lmzoo:"]
    for size, pair in data["sizes"].items():
        top = ", ".join(f"`{op.removeprefix('aten::')}` {ms:.1f}" for op, ms in pair["lmzoo"]["top_ops"])
        lines.append(f"- {size}: {top}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["micro", "tiny"])
    p.add_argument("--threads", type=int)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--steps", type=int, default=3, help="profiled steps (after 2 warm-up steps)")
    p.add_argument("--no-write", action="store_true", help="print only; leave results/ and docs/ alone")
    args = p.parse_args(argv)
    settings = throughput.Settings(threads=args.threads, batch_size=args.batch_size, seq_len=args.seq_len)
    data = run(args.sizes, settings, args.steps)
    common.publish(NAME, data, render(data), write=not args.no_write)
    return data


if __name__ == "__main__":
    main()
