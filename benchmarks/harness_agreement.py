"""Bits per byte from lm-evaluation-harness (`lmzoo_text` task) against `lmzoo eval` (issue 14: within 0.5%).

Untrained nano models with a widened init (so losses depend on the tokens and their context), the
bytes tokenizer, one text of random words; both sides at the same context length.

    python benchmarks/harness_agreement.py                                  # init_std 0.1, S = 64
    python benchmarks/harness_agreement.py --init-std 0.3 --seq-len 256 --words 600
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import tempfile
from pathlib import Path

import common
import datasets
import torch

import lmzoo
from lmzoo.cli.main import main as cli
from lmzoo.hf import harness
from lmzoo.tokenizers import get_tokenizer

NAME = "harness-agreement"
WORDS = "the cat sat on a mat while dogs ran far away from home and birds sang all day".split()
GOAL = 0.005


def measure(arch: str, text: Path, workdir: Path, args) -> dict:
    torch.manual_seed(0)
    model = lmzoo.create_model(arch, "nano", init_std=args.init_std).eval()
    model.tokenizer = get_tokenizer("bytes")
    model.save_pretrained(workdir / arch)
    result = harness.evaluate(model, [harness.local_task("lmzoo_text", text)], max_length=args.seq_len)
    theirs = result["results"]["lmzoo_text"]["bits_per_byte,none"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        cli(["eval", str(workdir / arch), "--data", str(text), "--seq-len", str(args.seq_len), "--json"])
    ours = json.loads(out.getvalue())["bpb"]
    return {"arch": arch, "harness_bpb": theirs, "lmzoo_eval_bpb": ours, "relative_diff": abs(theirs - ours) / ours}


def render(data: dict) -> str:
    s = data["settings"]
    rows = [[r["arch"], f"{r['harness_bpb']:.4f}", f"{r['lmzoo_eval_bpb']:.4f}", f"{100 * r['relative_diff']:.2f}%"]
            for r in data["results"]]
    worst = max(r["relative_diff"] for r in data["results"])
    return "\n".join([
        f"### lm-evaluation-harness vs lmzoo eval: bits per byte (init_std {s['init_std']}, S = {s['seq_len']})", "",
        common.command_header(data), "",
        common.markdown_table(["arch", "harness lmzoo_text", "lmzoo eval", "difference"], rows), "",
        f"Untrained nano models, {s['words']} random words, bytes tokenizer. Goal: within {100 * GOAL:.1f}%; "
        f"worst {100 * worst:.2f}% ({'met' if worst < GOAL else 'NOT met'})."])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="+", default=lmzoo.list_architectures())
    p.add_argument("--init-std", type=float, default=0.1)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--words", type=int, default=300)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lmzoo-agreement-") as tmp:
        workdir = Path(tmp)
        datasets.config.HF_DATASETS_CACHE = workdir / "datasets-cache"
        rng = random.Random(0)
        text = workdir / "text.txt"
        text.write_text(" ".join(rng.choice(WORDS) for _ in range(args.words)))
        results = []
        for arch in args.archs:
            results.append(measure(arch, text, workdir, args))
            print(f"{arch}: {100 * results[-1]['relative_diff']:.2f}%", flush=True)
    data = {**common.run_info(), "settings": {"init_std": args.init_std, "seq_len": args.seq_len, "words": args.words},
            "results": results}
    name = f"{NAME}-s{args.seq_len}-init{args.init_std}"
    common.publish(name, data, render(data), write=not args.no_write)
    return data


if __name__ == "__main__":
    main()
