"""Extractive Q&A on unseen German Wikipedia articles (claim S6: "Q&A accuracy ~60-70% on extractive
questions"), spike-transformer vs the transformer.

No LLM API is reachable here, so the question/answer set is built by a fixed procedure from the
German sample articles (../shared/data/wiki-xml/dewiki-20130602-pages, cleaned by lmzoo's
wiki-dump extractor):

1. Each article's paragraphs are split into sentences (`lmzoo.data.split_sentences`); sentences of
   6 to 40 words are used.
2. Answer candidates in a sentence: a four-digit number, or a capitalised word of at least four
   letters that is not the sentence's first word, occurring once in the sentence.
3. Up to --per-sentence candidates per sentence, in an order fixed by a hash of sentence and
   candidate, each become one item: the context is the previous sentence of the paragraph (if any)
   and the sentence; the question repeats the sentence with the candidate replaced by "___"; the
   answer is the candidate, a span of the context:

       Text: <previous sentence> <sentence>
       Frage: Welches Wort fehlt in „<sentence with ___>“?
       Antwort: <candidate>

4. Split by article: every second article in page-id order is a test article (never seen in
   fine-tuning), the others are the training articles.

Both models (same preset, byte tokenizer) are first pre-trained briefly on the German texts
(../shared/data/german) so they can read German at all, then fully fine-tuned on the training
items (`lmzoo finetune`'s machinery, answer tokens only), then asked every test question greedily
(`lmzoo eval --qa`'s machinery); exact and substring match are reported, on the training items too.

    python benchmarks/extractive_qa.py --size nano --pretrain-steps 150 --steps 150 --threads 1
    # what the shared 2-core machine allowed: one process per architecture, joined by --merge
    python benchmarks/extractive_qa.py --pretrain-steps 20 --steps 20 --test-items 30 --score-train 10 \
        --max-new-tokens 16 --threads 1 --archs spike-transformer --merge
    python benchmarks/extractive_qa.py --pretrain-steps 20 --steps 20 --test-items 30 --score-train 10 \
        --max-new-tokens 16 --threads 1 --archs transformer --merge --out benchmarks/runs/extractive-qa-transformer
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import tempfile
from pathlib import Path

import common
from curriculum import GERMAN, log

import lmzoo
from lmzoo.data import extract_wiki_dump, prepare_dataset, split_sentences
from lmzoo.data.sources import iter_jsonl
from lmzoo.training.config import TrainConfig
from lmzoo.training.finetune import FinetuneConfig, finetune
from lmzoo.training.qa_eval import QAExample, evaluate_qa
from lmzoo.training.trainer import run_training

NAME = "extractive-qa"
ARCHS = ("spike-transformer", "transformer")
DEWIKI = common.ROOT.parent / "shared" / "data" / "wiki-xml" / "dewiki-20130602-pages"
TEMPLATE = "{question}\nAntwort: "
CANDIDATE = re.compile(r"\b(\d{4}|[A-ZÄÖÜ][a-zäöüß]{3,})\b")


# ---- the Q&A set --------------------------------------------------------------------------------
def read_articles() -> list[dict]:
    """The sample articles as {title, id, text}, in page-id order."""
    with tempfile.TemporaryDirectory() as out:
        extract_wiki_dump(sorted(DEWIKI.glob("*.xml")), out)
        articles = [record for path in sorted(Path(out).glob("*.jsonl")) for _, record in iter_jsonl(path)]
    return sorted(articles, key=lambda a: int(a["id"]))


def stable_rank(*parts: str) -> str:
    return hashlib.sha1("\x00".join(parts).encode()).hexdigest()


def candidates(sentence: str) -> list[str]:
    words = sentence.split()
    found = [m.group(1) for m in CANDIDATE.finditer(sentence)]
    return [w for w in found if found.count(w) == 1 and not words[0].startswith(w)]


def article_items(article: dict, per_sentence: int) -> list[dict]:
    items = []
    for paragraph in article["text"].split("\n"):
        previous = ""
        for sentence in split_sentences(paragraph, "de"):
            if 6 <= len(sentence.split()) <= 40:
                chosen = sorted(candidates(sentence), key=lambda c: stable_rank(sentence, c))[:per_sentence]
                context = f"{previous} {sentence}".strip()
                for answer in chosen:
                    gapped = re.sub(rf"\b{re.escape(answer)}\b", "___", sentence, count=1)
                    items.append({"question": f"Text: {context}\nFrage: Welches Wort fehlt in „{gapped}“?",
                                  "answer": answer, "title": article["title"]})
            previous = sentence
    return items


def build_items(per_sentence: int) -> tuple[list[dict], list[dict], dict]:
    """(training items, test items, which articles went where)."""
    articles = read_articles()
    test_titles = [a["title"] for a in articles[1::2]]
    train, test = [], []
    for article in articles:
        (test if article["title"] in test_titles else train).extend(article_items(article, per_sentence))
    split = {"train_articles": [a["title"] for a in articles if a["title"] not in test_titles],
             "test_articles": test_titles}
    return train, test, split


# ---- models -------------------------------------------------------------------------------------
def pretrain(args, arch: str, data_dir: Path) -> Path:
    run_dir = args.out / f"pretrain-{arch}"
    cfg = TrainConfig(arch=arch, size=args.size, data=str(data_dir), out=str(run_dir), seq_len=256, batch_size=8,
                      max_steps=args.pretrain_steps, lr=2e-3, warmup_steps=args.pretrain_steps // 10, seed=args.seed,
                      threads=args.threads, eval_interval=0, eval_batches=5, log_interval=50,
                      checkpoint_interval=0, keep_last=1, resume="auto")  # a finished run is reused as it is
    log(f"pre-training {arch}/{args.size} on German text ({args.pretrain_steps} steps)")
    summary = run_training(cfg)
    return Path(summary["final_checkpoint"])


def finetune_and_score(args, arch: str, base: Path, train_file: Path, train: list[dict], test: list[dict]) -> dict:
    out = args.out / f"qa-{arch}"
    cfg = FinetuneConfig(base=str(base), data=str(train_file), out=str(out), method="full", template=TEMPLATE,
                         max_steps=args.steps, batch_size=8, val_fraction=0.0, seed=args.seed, threads=args.threads,
                         eval_interval=0, resume="none")
    log(f"fine-tuning {arch} on {len(train)} items ({args.steps} steps)")
    report = finetune(cfg, verbose=False)
    model = lmzoo.load(out)
    scores = {}
    for split, items in (("test", test), ("train", train[:args.score_train])):
        result = evaluate_qa(model, model.tokenizer, [QAExample(i["question"], i["answer"]) for i in items],
                             TEMPLATE, max_new_tokens=args.max_new_tokens)
        scores[split] = {k: result[k] for k in ("exact_match", "substring_match", "n")}
        scores[split]["examples"] = [{k: item[k] for k in ("reference", "prediction")} for item in result["items"][:5]]
        log(f"{arch} {split}: exact {result['exact_match']:.3f}, substring {result['substring_match']:.3f}")
    return {"arch": arch, "params": model.num_parameters(), "base": common.repo_path(base),
            "train_loss": report.get("train_loss"), "scores": scores}


def render(data: dict) -> str:
    rows = [[r["arch"], f"{r['params']:,}", *(f"{r['scores'][s]['exact_match']:.3f} / {r['scores'][s]['substring_match']:.3f}"
                                               for s in ("test", "train"))] for r in data["runs"]]
    s = data["split"]
    return "\n".join([
        "### Extractive Q&A on unseen German articles", "",
        common.command_header(data), "",
        f"`{data['size']}` presets, byte tokenizer; pre-trained {data['pretrain_steps']} steps of 8 x 256 bytes on "
        f"the German texts, then fully fine-tuned {data['steps']} steps of 8 items on {data['n_train']} items from "
        f"{', '.join(s['train_articles'])}; tested on {data['n_test']} items from the unseen articles "
        f"{', '.join(s['test_articles'])}. Items are built by the fixed procedure in `benchmarks/extractive_qa.py` "
        "(a word or year of a sentence blanked; the context holds the sentence). exact / substring match:", "",
        common.markdown_table(["arch", "params", "test articles (exact / substring)",
                               f"first {data['score_train']} training items (exact / substring)"], rows)])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="nano")
    p.add_argument("--archs", nargs="+", default=list(ARCHS))
    p.add_argument("--pretrain-steps", type=int, default=150)
    p.add_argument("--steps", type=int, default=150, help="fine-tuning steps (batch 8)")
    p.add_argument("--per-sentence", type=int, default=3, help="most items per sentence")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--score-train", type=int, default=100, help="training items asked again after fine-tuning")
    p.add_argument("--test-items", type=int, help="ask only this many test items, evenly spaced (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int)
    p.add_argument("--out", type=Path, default=common.ROOT / "benchmarks" / "runs" / "extractive-qa")
    p.add_argument("--no-write", action="store_true", help="print only; leave results/ and docs/ alone")
    p.add_argument("--merge", action="store_true",
                   help="add to the stored runs of other architectures with the same settings (run in parallel)")
    args = p.parse_args(argv)
    common.set_threads(args.threads)
    train, test, split = build_items(args.per_sentence)
    if args.test_items and args.test_items < len(test):
        test = [test[i * len(test) // args.test_items] for i in range(args.test_items)]
    args.out.mkdir(parents=True, exist_ok=True)
    train_file = args.out / "train.jsonl"
    train_file.write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in train), encoding="utf-8")
    (args.out / "test.jsonl").write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in test),
                                         encoding="utf-8")
    german = args.out / "german-data"
    if not (german / "meta.json").is_file():
        prepare_dataset([str(t) for t in sorted(GERMAN.glob("*.txt"))], german, val_fraction=0.05, seed=0)
    data = {**common.run_info(), "size": args.size, "pretrain_steps": args.pretrain_steps, "steps": args.steps,
            "seed": args.seed, "score_train": args.score_train, "max_new_tokens": args.max_new_tokens, "n_train": len(train), "n_test": len(test), "split": split,
            "example_item": test[0], "runs": []}
    for arch in args.archs:
        base = pretrain(args, arch, german)
        data["runs"].append(finetune_and_score(args, arch, base, train_file, train, test))
    if args.merge:
        data = merged(data)
    common.publish(NAME, data, render(data), write=not args.no_write)
    return data


SETTINGS = ("size", "pretrain_steps", "steps", "seed", "score_train", "max_new_tokens", "n_train", "n_test")


def merged(data: dict) -> dict:
    """`data` plus the stored runs of other architectures with the same settings (architectures run in
    parallel processes); the commands of both are kept. Stored results of other settings are refused."""
    stored = common.RESULTS_DIR / f"{NAME}-cpu.json"
    if not stored.is_file():
        return data
    old = json.loads(stored.read_text())
    if any(old.get(k) != data[k] for k in SETTINGS):
        raise SystemExit(f"{stored} holds runs of other settings; run without --merge to replace it")
    ours = {r["arch"] for r in data["runs"]}
    runs = [r for r in old["runs"] if r["arch"] not in ours] + data["runs"]
    return {**data, "command": f"{old['command']}; {data['command']}",
            "runs": sorted(runs, key=lambda r: ARCHS.index(r["arch"]) if r["arch"] in ARCHS else len(ARCHS))}


if __name__ == "__main__":
    main()
