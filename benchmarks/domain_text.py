"""spectral-llm vs the parameter-matched transformer on technical prose and on Python source (claim P6:
"technical text 15-20% better perplexity; superior on code").

Two offline corpora that every machine with Python has, each split by *document* so validation
text is never seen in training:

* prose: lmzoo's default corpus (Python's documentation: help topics and standard-library
  docstrings, `lmzoo.data.default_corpus`); every 20th document is held out;
* code: the standard library's own `.py` files (no tests, no generated `pydoc_data`, none over
  100 KB); a file is held out or used by a hash of its path relative to the stdlib (about 3% and
  27% of the files), so the subset is the same wherever the Python version is the same.

Each architecture trains from each seed on the same bytes for the same steps (byte tokenizer,
the same settings for both); the final model is evaluated on the whole held-out part (capped at
--val-tokens). The results are val bits/byte and byte perplexity 2^bpb per run, and per corpus
spectral-llm's perplexity as a ratio of the transformer's, per byte and per whitespace-separated
word (see `comparison`).

    python benchmarks/domain_text.py --size nano --steps 300 --seeds 0 1 --threads 2   # a quiet machine
    python benchmarks/domain_text.py --size nano --steps 80 --seeds 0 1 --threads 1    # what the shared one allowed
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sysconfig
from pathlib import Path

import common
from curriculum import log
from wikitext_compare import val_words

import lmzoo
from lmzoo.data import TokenDataset, prepare_dataset, read_meta
from lmzoo.data.default_corpus import default_corpus_documents
from lmzoo.training.config import TrainConfig
from lmzoo.training.evaluate import evaluate
from lmzoo.training.trainer import run_training

NAME = "domain-text"
ARCHS = ("spectral-llm", "transformer")
SKIPPED_DIRS = {"site-packages", "test", "tests", "idle_test", "pydoc_data", "__pycache__"}
MAX_FILE_BYTES = 100_000


# ---- corpora ------------------------------------------------------------------------------------
def prose_documents(held_out: bool) -> list[str]:
    return [doc for i, doc in enumerate(default_corpus_documents()) if (i % 20 == 19) == held_out]


def stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return [path for path in sorted(root.rglob("*.py"))
            if not SKIPPED_DIRS & set(path.relative_to(root).parts[:-1]) and path.stat().st_size <= MAX_FILE_BYTES]


def code_bucket(path: Path) -> int:
    """0..99 from the path below the stdlib, stable across machines and runs (unlike hash())."""
    relative = path.relative_to(sysconfig.get_paths()["stdlib"]).as_posix()
    return int(hashlib.sha1(relative.encode()).hexdigest()[:8], 16) % 100


def code_documents(held_out: bool) -> list[str]:
    wanted = range(0, 3) if held_out else range(3, 30)
    return [path.read_text(encoding="utf-8", errors="replace") for path in stdlib_files()
            if code_bucket(path) in wanted]


CORPORA = {"prose": prose_documents, "code": code_documents}


def prepare_corpus(out: Path, corpus: str, train_tokens: int, val_tokens: int) -> tuple[Path, Path]:
    """(training dataset, held-out dataset) of one corpus, prepared once under `out`."""
    documents = CORPORA[corpus]
    train_dir, val_dir = out / f"{corpus}-train", out / f"{corpus}-heldout"
    if not (train_dir / "meta.json").is_file():
        log(f"preparing {train_dir}")
        # The small val split of the training files only serves the trainer's end-of-run log line.
        prepare_dataset(lambda: documents(False), train_dir, val_fraction=0.01, max_tokens=train_tokens)
    if not (val_dir / "meta.json").is_file():
        log(f"preparing {val_dir}")
        prepare_dataset(lambda: documents(True), val_dir, val_fraction=1.0, max_tokens=val_tokens)
    return train_dir, val_dir


# ---- runs ---------------------------------------------------------------------------------------
def train_and_evaluate(args, corpus: str, arch: str, seed: int, train_dir: Path, val_dir: Path) -> dict:
    run_dir = args.out / f"{corpus}-{arch}-seed{seed}"
    cfg = TrainConfig(arch=arch, size=args.size, data=str(train_dir), out=str(run_dir), seq_len=args.seq_len,
                      batch_size=args.batch_size, max_steps=args.steps, lr=args.lr, warmup_steps=args.steps // 10,
                      seed=seed, threads=args.threads, eval_interval=0, eval_batches=2,
                      log_interval=max(args.steps // 5, 1), checkpoint_interval=0, keep_last=1,
                      resume="auto")  # a finished run is reused (evaluated again, not retrained)
    log(f"training {arch}/{args.size} on {corpus}, seed {seed} ({args.steps} steps)")
    summary = run_training(cfg)
    model = lmzoo.load(summary["final_checkpoint"])
    val = evaluate(model, TokenDataset(val_dir, "val"), args.batch_size, args.seq_len)
    log(f"{corpus} {arch} seed {seed}: val bits/byte {val['bpb']:.4f}")
    return {"corpus": corpus, "arch": arch, "seed": seed, "params": model.num_parameters(),
            "tokens": summary["tokens"], "elapsed_s": summary["elapsed_s"], "train_loss": summary["train_loss"],
            "val": val, "checkpoint": common.repo_path(summary["final_checkpoint"])}


def comparison(data: dict, corpus: str) -> dict:
    """Per corpus: mean bits/byte per architecture and how spectral-llm's perplexity compares.

    Perplexity ratios follow from bits/byte: per byte 2^(bpb_s - bpb_t); per word
    2^((bpb_s - bpb_t) * bytes/word), since a word's loss is the sum of its bytes' losses."""
    runs = [r for r in data["runs"] if r["corpus"] == corpus]
    by_arch = {arch: {r["seed"]: r["val"]["bpb"] for r in runs if r["arch"] == arch} for arch in ARCHS}
    mean = {arch: sum(v.values()) / len(v) for arch, v in by_arch.items()}
    gap = mean["spectral-llm"] - mean["transformer"]
    bytes_per_word = data["corpora"][corpus]["val_bytes"] / data["corpora"][corpus]["val_words"]
    seeds = sorted(set(by_arch["spectral-llm"]) & set(by_arch["transformer"]))
    return {"mean_bpb": mean, "bpb_gap": gap, "bytes_per_word": bytes_per_word,
            "byte_ppl_ratio": 2 ** gap, "word_ppl_ratio": 2 ** (gap * bytes_per_word),
            "spectral_better_every_seed": bool(seeds) and all(by_arch["spectral-llm"][s] < by_arch["transformer"][s]
                                                               for s in seeds)}


def render(data: dict) -> str:
    rows = []
    for corpus, c in data["comparisons"].items():
        for arch in ARCHS:
            runs = [r for r in data["runs"] if r["corpus"] == corpus and r["arch"] == arch]
            rows.append([corpus, arch, f"{runs[0]['params']:,}", " / ".join(f"{r['val']['bpb']:.4f}" for r in runs),
                         f"**{c['mean_bpb'][arch]:.4f}**", f"{2 ** c['mean_bpb'][arch]:.3f}"])
    ratios = [f"{corpus}: spectral-llm's perplexity is {c['byte_ppl_ratio']:.3f}x the transformer's per byte, "
              f"{c['word_ppl_ratio']:.3f}x per word ({c['bytes_per_word']:.1f} bytes/word)"
              for corpus, c in data["comparisons"].items()]
    corpora = "; ".join(f"{k} {v['train_tokens']:,} training / {v['val_bytes']:,} held-out bytes"
                        for k, v in data["corpora"].items())
    return "\n".join([
        "### spectral-llm vs transformer on technical prose and on Python source", "",
        common.command_header(data), "",
        f"`{data['size']}` presets (parameter-matched), byte tokenizer, seeds {', '.join(map(str, data['seeds']))}, "
        f"{data['steps']} steps of {data['batch_size']} x {data['seq_len']} bytes "
        f"(**{data['steps'] * data['batch_size'] * data['seq_len']:,} training tokens per run**), lr {data['lr']}. "
        f"Prose = Python's documentation (lmzoo's default corpus), code = standard-library `.py` files "
        f"(Python {data['python']}); validation documents / files are held out of training ({corpora}).", "",
        common.markdown_table(["corpus", "arch", "params", "val bits/byte per seed", "mean", "byte perplexity"],
                              rows), "",
        "Perplexity ratio = 2^(difference in bits/byte) per byte, and that to the power bytes/word per word: "
        + "; ".join(ratios) + "."])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="nano")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--corpora", nargs="+", default=list(CORPORA), choices=list(CORPORA))
    p.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS,
                   help="train only these (with --no-write: runs a later full invocation reuses)")
    p.add_argument("--train-tokens", type=int, default=3_000_000, help="cap on each corpus' training tokens")
    p.add_argument("--val-tokens", type=int, default=50_000, help="cap on each corpus' held-out tokens")
    p.add_argument("--threads", type=int)
    p.add_argument("--out", type=Path, default=common.ROOT / "benchmarks" / "runs" / "domain-text")
    p.add_argument("--no-write", action="store_true", help="print only; leave results/ and docs/ alone")
    p.add_argument("--merge", action="store_true",
                   help="add to the stored runs of other seeds with the same settings (seeds run in parallel)")
    args = p.parse_args(argv)
    common.set_threads(args.threads)
    data = {**common.run_info(), "size": args.size, "seeds": args.seeds, "steps": args.steps,
            "batch_size": args.batch_size, "seq_len": args.seq_len, "lr": args.lr,
            "python": sysconfig.get_python_version(), "corpora": {}, "runs": []}
    dirs = {corpus: prepare_corpus(args.out, corpus, args.train_tokens, args.val_tokens) for corpus in args.corpora}
    for corpus, (train_dir, val_dir) in dirs.items():
        data["corpora"][corpus] = {"train_tokens": TokenDataset(train_dir, "train").tokens,
                                   "val_bytes": read_meta(val_dir)["splits"]["val"]["bytes"],
                                   "val_words": val_words(val_dir)}
    # Seed by seed, so an interrupted run still leaves a complete comparison of the first seeds.
    for seed in args.seeds:
        for corpus, (train_dir, val_dir) in dirs.items():
            for arch in args.archs:
                data["runs"].append(train_and_evaluate(args, corpus, arch, seed, train_dir, val_dir))
        if not (args.no_write or args.merge):  # a merging run writes once, at the end
            common.write_json(NAME, "cpu", {**data, "partial": seed != args.seeds[-1]})
    if args.merge:
        data = merged(data)
    data["comparisons"] = {corpus: comparison(data, corpus) for corpus in args.corpora}
    common.publish(NAME, data, render(data), write=not args.no_write)
    return data


SETTINGS = ("size", "steps", "batch_size", "seq_len", "lr", "python", "corpora")


def merged(data: dict) -> dict:
    """`data` plus the stored runs of other seeds with the same settings (seeds run in parallel
    processes); the commands of both are kept. Stored results of other settings are refused."""
    stored = common.RESULTS_DIR / f"{NAME}-cpu.json"
    if not stored.is_file():
        return data
    old = json.loads(stored.read_text())
    if any(old.get(k) != data[k] for k in SETTINGS):
        raise SystemExit(f"{stored} holds runs of other settings; run without --merge to replace it")
    ours = {(r["corpus"], r["arch"], r["seed"]) for r in data["runs"]}
    runs = [r for r in old["runs"] if (r["corpus"], r["arch"], r["seed"]) not in ours] + data["runs"]
    seeds = sorted({r["seed"] for r in runs})
    complete = all(sum(r["seed"] == s for r in runs) == len(CORPORA) * len(ARCHS) for s in seeds)
    return {**data, "command": f"{old['command']}; {data['command']}", "seeds": seeds, "partial": not complete,
            "runs": sorted(runs, key=lambda r: (r["seed"], r["corpus"], r["arch"]))}


if __name__ == "__main__":
    main()
