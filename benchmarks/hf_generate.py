"""HF `generate()` on lmzoo's decoding state against lmzoo's own `generate` (issue 14: goal >= 0.8x).

For each architecture and context length, a random prompt of that many tokens is continued greedily
by `--new-tokens` tokens, once through lmzoo's `generate` and once through the HF wrapper's
`generate` (LmzooCache), interleaved round by round. Tokens/s counts the new tokens over the whole
call (prefill included, the same work on both sides); the two outputs are checked to be identical.

    python benchmarks/hf_generate.py                      # every architecture, nano, contexts 128 and 1024
    python benchmarks/hf_generate.py --archs transformer --contexts 128 --repeats 2   # a quick check
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import common
import torch

import lmzoo
import lmzoo.hf  # noqa: F401  (registers the HF classes)
from lmzoo.generation import generate

NAME = "hf-generate"
GOAL = 0.8


def timed_call(fn: Callable[[], torch.Tensor], outputs: list) -> Callable[[], float]:
    def run() -> float:
        start = time.perf_counter()
        outputs.append(fn())
        return time.perf_counter() - start
    return run


def measure_one(arch: str, size: str, context: int, args) -> dict:
    torch.manual_seed(0)
    model = lmzoo.create_model(arch, size).eval()
    hf = model.to_hf()
    ids = torch.randint(0, model.config.vocab_size, (1, context), generator=torch.Generator().manual_seed(0))
    outputs: dict[str, list] = {"lmzoo": [], "hf": []}
    runs = {
        "lmzoo": timed_call(lambda: generate(model, ids, max_new_tokens=args.new_tokens, temperature=0),
                            outputs["lmzoo"]),
        "hf": timed_call(lambda: hf.generate(ids, max_new_tokens=args.new_tokens, do_sample=False,
                                             eos_token_id=None, pad_token_id=None), outputs["hf"]),
    }
    timings = common.interleaved_timings(runs, warmup=1, repeats=args.repeats)
    same = all(torch.equal(a, b) for a, b in zip(outputs["lmzoo"], outputs["hf"]))
    rates = {name: args.new_tokens / common.median(seconds) for name, seconds in timings.seconds.items()}
    return {"arch": arch, "size": size, "context": context, "new_tokens": args.new_tokens,
            "lmzoo_tokens_per_s": rates["lmzoo"], "hf_tokens_per_s": rates["hf"],
            "ratio": rates["hf"] / rates["lmzoo"], "identical_tokens": same, "rounds": timings.rounds,
            "dropped_busy_rounds": timings.dropped, "calm": timings.calm}


def render(data: dict) -> str:
    rows = [[r["arch"], r["size"], r["context"], f"{r['lmzoo_tokens_per_s']:.1f}", f"{r['hf_tokens_per_s']:.1f}",
             f"{r['ratio']:.2f}x", "yes" if r["identical_tokens"] else "NO"] for r in data["results"]]
    worst = min(r["ratio"] for r in data["results"])
    lines = ["### HF `generate()` vs lmzoo `generate` (issue 14)", "", common.command_header(data), "",
             common.markdown_table(["arch", "size", "context", "lmzoo tok/s", "HF tok/s", "HF / lmzoo",
                                    "same tokens"], rows), "",
             f"Goal: HF at >= {GOAL}x lmzoo's tokens/s; worst ratio measured: {worst:.2f}x "
             f"({'met' if worst >= GOAL else 'NOT met'}). Greedy, batch 1, {data['results'][0]['new_tokens']} new "
             "tokens, prefill included."]
    if not all(r["calm"] for r in data["results"]):
        lines.append("Some rows were measured while other processes kept the machine busy (see the JSON).")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="+", default=lmzoo.list_architectures())
    p.add_argument("--sizes", nargs="+", default=["nano"])
    p.add_argument("--contexts", nargs="+", type=int, default=[128, 1024])
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    common.set_threads(args.threads)
    results = []
    for arch in args.archs:
        for size in args.sizes:
            for context in args.contexts:
                results.append(measure_one(arch, size, context, args))
                r = results[-1]
                print(f"{arch} {size} ctx {context}: lmzoo {r['lmzoo_tokens_per_s']:.1f} tok/s, "
                      f"HF {r['hf_tokens_per_s']:.1f} tok/s ({r['ratio']:.2f}x)", flush=True)
    data = {**common.run_info(), "results": results}
    common.publish(NAME, data, render(data), write=not args.no_write)
    return data


if __name__ == "__main__":
    main()
