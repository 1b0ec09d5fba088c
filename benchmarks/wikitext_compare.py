"""Architectures vs the transformer on WikiText (claim P1: "WikiText-103 perplexity 45.2 at 8M params";
EFFICIA-1's quality at equal params with its ablations).

Only WikiText-2 raw *valid* and *test* are on these machines (no train split, no WikiText-103),
so this is a non-standard split: both files, byte-level, cut by lmzoo's deterministic block split
(5% validation). Both models train from the same seed on the same bytes for the same steps
(shuffled order, settings of `benchmarks/curriculum.py`); the result is bits per byte and a
word-level perplexity (exp of the total loss over the words of the validation text), per seed and
as the mean over seeds. A run spec `ARCH:KEY=VALUE,...` sets model config fields (a variant).

    python benchmarks/wikitext_compare.py --size micro --steps 500 --threads 2 --seeds 0 1 \
        --archs spectral-llm spectral-llm:embedding=harmonic transformer
    python benchmarks/wikitext_compare.py --size micro --steps 500 --threads 2 --seeds 0 --name wikitext-efficia \
        --archs efficia-1 efficia-1-no-compression efficia-1-no-memory efficia-1-lcp-only transformer

`--name` picks the results file and docs section, so the two comparisons live side by side.
"""
from __future__ import annotations

import argparse
import math

import common
import numpy as np
from curriculum import add_run_arguments, prepare, train
from long_context import parse_spec  # ARCH:KEY=VALUE,... run specs

import lmzoo
from lmzoo.data import TokenDataset, read_meta

NAME = "wikitext-compare"
WIKITEXT = common.ROOT.parent / "shared" / "data" / "wikitext-2-raw"


def val_words(data_dir) -> int:
    meta = read_meta(data_dir)
    ids = np.fromfile(data_dir / meta["splits"]["val"]["file"], dtype=meta["dtype"])
    return len(TokenDataset(data_dir, "val").tokenizer.decode(ids.tolist()).split())


def render(data: dict) -> str:
    rows = []
    for spec in data["archs"]:
        runs = [r for r in data["runs"] if r["order"] == spec]
        mean_bpb = sum(r["val"]["bpb"] for r in runs) / len(runs)
        rows.append([spec, f"{runs[0]['params']:,}", " / ".join(f"{r['val']['bpb']:.4f}" for r in runs),
                     f"**{mean_bpb:.4f}**", " / ".join(f"{r['word_ppl']:.0f}" for r in runs),
                     f"{sum(r['elapsed_s'] for r in runs) / len(runs):.0f}"])
    return "\n".join([
        f"## {' vs '.join(dict.fromkeys(parse_spec(spec)[0] for spec in data['archs']))} on WikiText-2 "
        "(non-standard split)", "",
        common.command_header(data), "",
        f"`{data['size']}` presets, seeds {', '.join(map(str, data['seeds']))}, {data['steps']} steps of "
        f"{data['batch_size']} x {data['seq_len']} bytes; train and val are a 95/5 block split of WikiText-2 raw "
        f"valid+test (the train split is not available here), val {data['val_tokens']:,} bytes / "
        f"{data['val_words']:,} words. Word perplexity = exp(total val loss / words); not comparable with "
        "published WikiText-103 numbers.", "",
        common.markdown_table(["run", "params", "val bits/byte per seed", "mean", "word perplexity per seed",
                               "train s (mean)"], rows)])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p)
    p.set_defaults(out=common.ROOT / "benchmarks" / "runs" / "wikitext", texts=sorted(WIKITEXT.glob("*.raw")))
    p.add_argument("--archs", nargs="+", default=["spectral-llm", "spectral-llm:embedding=harmonic", "transformer"],
                   help="run specs ARCH or ARCH:KEY=VALUE,... (model config overrides)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--name", default=NAME, help=f"results file and docs section (default {NAME})")
    args = p.parse_args(argv)
    common.set_threads(args.threads)
    data_dir = prepare(args)
    val = TokenDataset(data_dir, "val")
    data = {**common.run_info(),
            "size": args.size, "archs": args.archs,
            "seeds": args.seeds, "steps": args.steps, "batch_size": args.batch_size, "seq_len": args.seq_len,
            "val_tokens": val.tokens, "val_words": val_words(data_dir), "runs": []}
    for spec in args.archs:
        for seed in args.seeds:
            args.arch, overrides = parse_spec(spec)
            args.seed = seed
            run = train(args, data_dir, f"{spec.replace(':', '-').replace(',', '-')}-seed{seed}",
                        {"model_args": overrides})
            run.update(order=spec, seed=seed)
            run["params"] = lmzoo.load(common.ROOT / run["checkpoint"]).num_parameters()
            run["word_ppl"] = math.exp(run["val"]["loss"] * run["val"]["tokens"] / data["val_words"])
            data["runs"].append(run)
    markdown = render(data)
    common.publish(args.name, data, markdown, write=not args.no_write)
    return data


if __name__ == "__main__":
    main()
