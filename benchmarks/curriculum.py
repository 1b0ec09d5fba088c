"""Curriculum vs shuffled order at equal tokens (claim W4: "a curriculum builds more robust knowledge").

Prepares one byte-level dataset from the given texts (default: the German texts in
../shared/data/german), trains the same model from the same seed once per order (shuffled, the
seed's staged unlock, competence) for the same number of steps, then evaluates each final model on
the whole validation split. Every run's directory is kept under --out (its final checkpoint is
what `benchmarks/spike_walze.py --difficulty` measures).

    python benchmarks/curriculum.py --arch spike-walze --size micro --steps 500 --batch-size 4 --seq-len 512 --threads 2
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import common

import lmzoo
from lmzoo.data import TokenDataset, prepare_dataset
from lmzoo.training.config import TrainConfig
from lmzoo.training.evaluate import evaluate
from lmzoo.training.trainer import run_training

NAME = "curriculum"
GERMAN = common.ROOT.parent / "shared" / "data" / "german"
ORDERS = {
    "shuffled": {"curriculum": "none"},
    "stages": {"curriculum": "stages", "curriculum_scorer": "stages"},
    "competence": {"curriculum": "competence", "curriculum_scorer": "compression"},
}


def log(msg: str) -> None:
    print(f"[{common.now()}] {msg}", flush=True)


def prepare(args) -> Path:
    data = args.out / "data"
    if not (data / "meta.json").is_file():
        texts = args.texts or sorted(GERMAN.glob("*.txt"))
        log(f"preparing {data} from {', '.join(map(str, texts))}")
        prepare_dataset([str(t) for t in texts], data, val_fraction=args.val_fraction, seed=0)
    return data


def train(args, data: Path, name: str, overrides: dict) -> dict:
    """Train one run named `name` (TrainConfig `overrides` on the shared settings); evaluate its final
    model on the whole val split."""
    run_dir = args.out / name
    cfg = TrainConfig(**{**dict(arch=args.arch, size=args.size, data=str(data), out=str(run_dir),
                                seq_len=args.seq_len, batch_size=args.batch_size, max_steps=args.steps, lr=args.lr,
                                warmup_steps=args.steps // 10, seed=args.seed, threads=args.threads,
                                eval_interval=args.eval_interval, eval_batches=10, log_interval=args.eval_interval,
                                checkpoint_interval=0, keep_last=1, resume="none"), **overrides})
    log(f"training {name} ({args.arch}/{args.size}, {args.steps} steps)")
    summary = run_training(cfg)
    model = lmzoo.load(summary["final_checkpoint"])
    final = evaluate(model, TokenDataset(data, "val"), args.batch_size, args.seq_len)  # the whole val split
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    trace = [{k: v for k, v in row.items() if k in ("step", "stage", "competence", "spike_rate")}
             for row in rows if row.get("type") == "train"]
    return {"order": name, "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()},
            "tokens": summary["tokens"], "elapsed_s": summary["elapsed_s"], "val": final,
            "train_loss": summary["train_loss"], "trace": trace, "checkpoint": common.repo_path(summary["final_checkpoint"])}


def order_overrides(args, order: str) -> dict:
    if order != "stages":
        return ORDERS[order]
    return {**ORDERS[order], "curriculum_metric": "accuracy", "curriculum_thresholds": tuple(args.thresholds),
            "curriculum_patience": args.patience or args.steps // 5}


def render(data: dict) -> str:
    base = next((r["val"]["bpb"] for r in data["runs"] if r["order"] == "shuffled"), None)
    rows = [[r["order"], ", ".join(f"{k}={v}" for k, v in r["settings"].items() if k != "curriculum") or "-",
             f"{r['tokens']:,}", f"**{r['val']['bpb']:.4f}**", f"{r['val']['bpb'] - base:+.4f}" if base is not None else "-",
             f"{r['val']['accuracy']:.3f}", f"{r['elapsed_s']:.0f}"] for r in data["runs"]]
    return "\n".join([
        "### Curriculum vs shuffled order at equal tokens", "",
        common.command_header(data), "",
        f"`{data['arch']}/{data['size']}`, seed {data['seed']}, batch {data['batch_size']} x {data['seq_len']} bytes, "
        f"the same steps for every order; val = the whole validation split ({data['val_tokens']:,} bytes) of "
        f"{', '.join(data['texts'])}. One seed: differences of a few thousandths are within run-to-run noise.", "",
        common.markdown_table(["order", "settings", "train tokens", "val bits/byte", "vs shuffled",
                               "val next-byte accuracy", "train s"], rows)])


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Settings every German training comparison shares (this script's and ablations.py's)."""
    p.add_argument("--arch", default="spike-walze")
    p.add_argument("--size", default="micro")
    p.add_argument("--texts", type=Path, nargs="+", help="training text (default: ../shared/data/german/*.txt)")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.add_argument("--eval-interval", type=int, default=50)
    p.add_argument("--threads", type=int)
    p.add_argument("--out", type=Path, default=common.ROOT / "benchmarks" / "runs" / "curriculum-de")
    p.add_argument("--no-write", action="store_true", help="print only; leave results/ and docs/ alone")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p)
    p.add_argument("--orders", nargs="+", default=list(ORDERS), choices=list(ORDERS))
    p.add_argument("--thresholds", type=float, nargs=3, default=[0.45, 0.5, 0.55],
                   help="val next-byte accuracy unlocking stages B, C, D (the seed's 0.8/0.7/0.65 were masked-LM accuracies)")
    p.add_argument("--patience", type=int, help="steps per stage before forcing the next (default: steps/5)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    common.set_threads(args.threads)
    data_dir = prepare(args)
    data = {**common.run_info(),
            "arch": args.arch,
            "size": args.size, "seed": args.seed, "batch_size": args.batch_size, "seq_len": args.seq_len,
            "steps": args.steps, "texts": [Path(t).name for t in (args.texts or sorted(GERMAN.glob("*.txt")))],
            "val_tokens": TokenDataset(data_dir, "val").tokens, "runs": []}
    for order in args.orders:
        data["runs"].append(train(args, data_dir, order, order_overrides(args, order)))
        log(f"{order}: val bpb {data['runs'][-1]['val']['bpb']:.4f}")
    markdown = render(data)
    common.publish(NAME, data, markdown, write=not args.no_write)
    return data


if __name__ == "__main__":
    main()
