"""Division of labour in spike-walze (claim W3): what each path contributes, by ablation.

Trains the same spike-walze from the same seed on the same German data and steps as
`benchmarks/curriculum.py` (shuffled order), four ways: the full model; attention never
(spike pattern forced to rate 0: roller + MLP only); attention always (rate 1: the gate decides
nothing); no roller (gate + local attention + MLP). Each final model is evaluated on the whole
validation split.

    python benchmarks/ablations.py --steps 500 --batch-size 4 --seq-len 512 --threads 2
"""
from __future__ import annotations

import argparse
from pathlib import Path

import common
from curriculum import GERMAN, add_run_arguments, log, prepare, train

from lmzoo.data import TokenDataset

NAME = "spike-walze-ablations"
VARIANTS = {
    "full": {},
    "attention never (rate 0)": {"forced_spike_rate": 0.0},
    "attention always (rate 1)": {"forced_spike_rate": 1.0},
    "no roller": {"roller": False},
}


def render(data: dict) -> str:
    full = next(r for r in data["runs"] if r["order"] == "full")["val"]["bpb"]
    rows = [[r["order"], f"{r['val']['bpb']:.4f}", f"{r['val']['bpb'] - full:+.4f}", f"{r['val']['accuracy']:.3f}",
             f"{r['trace'][-1].get('spike_rate', float('nan')):.3f}", f"{r['elapsed_s']:.0f}"] for r in data["runs"]]
    return "\n".join([
        "### Ablations: what the roller and the attention path contribute", "",
        common.command_header(data), "",
        f"`spike-walze/{data['size']}`, seed {data['seed']}, {data['steps']} steps of {data['batch_size']} x "
        f"{data['seq_len']} bytes, shuffled order; val = the whole validation split ({data['val_tokens']:,} bytes) of "
        f"{', '.join(data['texts'])}. One seed per variant.", "",
        common.markdown_table(["variant", "val bits/byte", "vs full", "val next-byte accuracy",
                               "spike rate (last log)", "train s"], rows)])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.set_defaults(out=common.ROOT / "benchmarks" / "runs" / "ablations-de")
    args = p.parse_args(argv)
    args.arch = "spike-walze"
    common.set_threads(args.threads)
    data_dir = prepare(args)
    data = {**common.run_info(),
            "size": args.size,
            "seed": args.seed, "batch_size": args.batch_size, "seq_len": args.seq_len, "steps": args.steps,
            "texts": [Path(t).name for t in (args.texts or sorted(GERMAN.glob("*.txt")))],
            "val_tokens": TokenDataset(data_dir, "val").tokens, "runs": []}
    for variant in args.variants:
        slug = variant.split(" (")[0].replace(" ", "-")
        run = train(args, data_dir, slug, {"model_args": VARIANTS[variant]})
        run["order"] = variant
        data["runs"].append(run)
        log(f"{variant}: val bpb {run['val']['bpb']:.4f}")
    markdown = render(data)
    common.publish(NAME, data, markdown, write=not args.no_write)
    return data


if __name__ == "__main__":
    main()
