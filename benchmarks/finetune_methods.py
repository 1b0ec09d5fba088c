"""LoRA vs full fine-tuning (claim S5: "LoRA adds ~0.3% parameters and is comparable to full
fine-tuning").

1. Trainable-parameter share of LoRA (r = 8 on the attention projections, the default) for every
   architecture at the nano, micro and tiny presets.
2. Q&A accuracy after full, freeze and LoRA fine-tuning of the same trained base model, same data and
   steps. No LLM API is reachable here, so the Q&A set is a cloze task built by this script from the
   German Wikipedia sample articles: "Welches Wort beendet den Satz: <sentence without its last
   word> …" -> the last word. Reported on the fine-tuning items themselves (what it learned) and
   on held-out items (what generalises).

    python benchmarks/finetune_methods.py --base benchmarks/runs/energy-de/shuffled --threads 2
"""
from __future__ import annotations

import argparse
import json
import random
import re
import tempfile
from pathlib import Path

import common

import lmzoo
from lmzoo.data import count_words, extract_wiki_dump, iter_documents, split_sentences
from lmzoo.training.finetune import FinetuneConfig, add_lora, finetune
from lmzoo.training.qa_eval import QAExample, evaluate_qa

NAME = "finetune-methods"
DEWIKI = common.ROOT.parent / "shared" / "data" / "wiki-xml" / "dewiki-20130602-pages"
TEMPLATE = "Frage: {question}\nAntwort: "
LAST_WORD = re.compile(r"^(.*\s)(\w+)([.!?])$")


def lora_ratios(sizes: list[str]) -> list[dict]:
    rows = []
    for arch in lmzoo.list_architectures():
        for size in sizes:
            model = lmzoo.create_model(arch, size)
            total = sum(p.numel() for p in model.parameters())
            peft_model = add_lora(model, 8, 16.0, 0.0)  # default targets: the attention projections
            trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
            rows.append({"arch": arch, "size": size, "base_params": total, "lora_params": trainable,
                         "ratio": trainable / total})
    return rows


def cloze_items(seed: int = 0) -> list[dict]:
    with tempfile.TemporaryDirectory() as out:
        extract_wiki_dump(sorted(DEWIKI.glob("*.xml")), out)
        articles = list(iter_documents(sorted(Path(out).glob("*.jsonl"))))
    items = []
    for article in articles:
        for paragraph in article.split("\n"):
            for sentence in split_sentences(paragraph, "de"):
                match = LAST_WORD.match(sentence)
                if match and 6 <= count_words(sentence) <= 20 and len(match.group(2)) > 2:
                    items.append({"question": f"Welches Wort beendet den Satz: {match.group(1)}…",
                                  "answer": match.group(2)})
    random.Random(seed).shuffle(items)
    return items


def finetune_and_score(base: Path, train_items: list[dict], test_items: list[dict], method: str, args,
                       work: Path) -> dict:
    data = work / "train.jsonl"
    data.write_text("".join(json.dumps(item, ensure_ascii=False) + "\n" for item in train_items))
    cfg = FinetuneConfig(base=str(base), data=str(data), out=str(work / method), method=method, template=TEMPLATE,
                         max_steps=args.steps, batch_size=8, val_fraction=0.0, seed=0, threads=args.threads)
    report = finetune(cfg, verbose=False)
    model = lmzoo.load(work / method)
    scores = {}
    for split, items in (("fine-tuning items", train_items), ("held-out items", test_items)):
        examples = [QAExample(i["question"], i["answer"]) for i in items]
        result = evaluate_qa(model, model.tokenizer, examples, TEMPLATE, max_new_tokens=24)
        scores[split] = {k: result[k] for k in ("exact_match", "substring_match", "n")}
    return {"method": method, "trainable_params": report["trainable_params"],
            "trainable_ratio": report["trainable_ratio"], "scores": scores}


def render(data: dict) -> str:
    head = [common.command_header(data), ""]
    ratio_rows = [[r["arch"], r["size"], f"{r['base_params']:,}", f"{r['lora_params']:,}", f"**{100 * r['ratio']:.2f}%**"]
                  for r in data["lora_ratios"]]
    qa_rows = [[r["method"], f"{100 * r['trainable_ratio']:.2f}%",
                *(f"{r['scores'][s]['exact_match']:.3f} / {r['scores'][s]['substring_match']:.3f}"
                  for s in ("fine-tuning items", "held-out items"))] for r in data["runs"]]
    return "\n".join([
        "## Fine-tuning: LoRA vs full", "", *head,
        "LoRA r = 8, alpha 16, on the attention projections (the default targets); share of the base "
        "model's parameters.", "",
        common.markdown_table(["arch", "size", "base params", "LoRA params", "LoRA share"], ratio_rows), "",
        f"Q&A after fine-tuning `{data['base']}` ({data['base_arch']}) for {data['steps']} steps of 8 on "
        f"{data['n_train']} cloze items built from the German Wikipedia sample (exact / substring match; "
        f"{data['n_test']} held-out items).", "",
        common.markdown_table(["method", "trainable", "fine-tuning items", "held-out items"], qa_rows)])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", type=Path, default=common.ROOT / "benchmarks" / "runs" / "energy-de" / "shuffled")
    p.add_argument("--sizes", nargs="+", default=["nano", "micro", "tiny"])
    p.add_argument("--methods", nargs="+", default=["full", "freeze", "lora"])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--test-share", type=float, default=0.2)
    p.add_argument("--threads", type=int)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    common.set_threads(args.threads)
    base = lmzoo.load(args.base)
    items = cloze_items()
    n_test = int(len(items) * args.test_share)
    test_items, train_items = items[:n_test], items[n_test:]
    data = {**common.run_info(),
            "base": common.repo_path(args.base), "base_arch": base.config.arch,
            "steps": args.steps, "n_train": len(train_items), "n_test": len(test_items),
            "lora_ratios": lora_ratios(args.sizes), "runs": []}
    with tempfile.TemporaryDirectory() as work:
        for method in args.methods:
            data["runs"].append(finetune_and_score(args.base, train_items, test_items, method, args, Path(work)))
            print(method, data["runs"][-1]["scores"], flush=True)
    markdown = render(data)
    common.publish(NAME, data, markdown, write=not args.no_write)
    return data


if __name__ == "__main__":
    main()
