"""Verbs that prepare data: `data prepare`, `data wiki-dump`, `tokenizer train`."""
from __future__ import annotations

import json


def register(verbs) -> None:
    data = verbs.add_parser("data", help="prepare training data").add_subparsers(
        dest="data_verb", metavar="ACTION", required=True)
    p = data.add_parser("prepare", help="tokenise text files, directories or JSONL into train/val token arrays")
    p.add_argument("inputs", nargs="+", help="text files, directories (searched recursively) or .jsonl files")
    p.add_argument("--out", required=True, help="output directory (train.bin, val.bin, meta.json, tokenizer.json)")
    p.add_argument("--tokenizer", default="bytes",
                   help="bytes (default), char, bpe (trained on the inputs), or a saved tokenizer's path")
    p.add_argument("--vocab-size", type=int, default=None, help="vocabulary size when training a bpe tokenizer")
    p.add_argument("--val-fraction", type=float, default=0.05, help="share of text for validation (default 0.05)")
    p.add_argument("--text-field", default="text", help="JSONL field holding the text (default: text)")
    p.add_argument("--seed", type=int, default=0, help="seed of the deterministic train/val split")
    p.add_argument("--max-tokens", type=int, default=None, help="stop after this many tokens")
    p.set_defaults(run=run_prepare)

    p = data.add_parser("wiki-dump", help="MediaWiki XML dump -> plain-text articles in JSONL shards (resumable)")
    p.add_argument("dumps", nargs="+", metavar="DUMP",
                   help="pages-articles .xml or .xml.bz2 files, or directories of them (also bare <page> files)")
    p.add_argument("--out", required=True, help="output directory; rerunning into it resumes")
    p.add_argument("--min-chars", type=int, default=200, help="skip articles shorter after cleaning (default 200)")
    p.add_argument("--max-articles", type=int, default=None, help="stop once the output holds this many articles")
    p.add_argument("--lang", default="de", help="the wiki's language code, for URLs of dumps without <siteinfo>")
    p.add_argument("--workers", type=int, default=1, help="processes cleaning wikitext (default 1)")
    p.set_defaults(run=run_wiki_dump)

    tok = verbs.add_parser("tokenizer", help="train or inspect tokenizers").add_subparsers(
        dest="tokenizer_verb", metavar="ACTION", required=True)
    p = tok.add_parser("train", help="train a tokenizer on files and save it")
    p.add_argument("files", nargs="+", help="text files, directories or .jsonl files")
    p.add_argument("--kind", default="bpe", help="bpe (default), char or bytes")
    p.add_argument("--vocab-size", type=int, default=None, help="vocabulary size (bpe)")
    p.add_argument("--text-field", default="text", help="JSONL field holding the text")
    p.add_argument("--out", required=True, help="directory to save tokenizer.json in")
    p.set_defaults(run=run_tokenizer_train)


def run_prepare(args) -> None:
    from lmzoo.data import prepare_dataset

    meta = prepare_dataset(args.inputs, args.out, tokenizer=args.tokenizer, val_fraction=args.val_fraction,
                           text_field=args.text_field, seed=args.seed, max_tokens=args.max_tokens,
                           vocab_size=args.vocab_size, progress=True)
    splits = meta["splits"]
    print(f"wrote {args.out}: tokenizer {meta['tokenizer']} (vocab {meta['vocab_size']}), "
          + ", ".join(f"{name} {s['tokens']:,} tokens / {s['bytes']:,} bytes" for name, s in splits.items()))


def run_wiki_dump(args) -> None:
    from lmzoo.data.wiki_dump import extract_wiki_dump

    summary = extract_wiki_dump(args.dumps, args.out, min_chars=args.min_chars, max_articles=args.max_articles,
                                lang=args.lang, workers=args.workers, progress=True)
    print(json.dumps({k: v for k, v in summary.items() if k != "inputs"}, indent=2))  # all in summary.json
    if summary["complete"]:
        print(f"next: lmzoo data prepare {args.out} --out DATA_DIR  (add --tokenizer bpe for a BPE vocabulary)")
    else:
        print(f"stopped early; rerun the same command to continue into {args.out}")


def run_tokenizer_train(args) -> None:
    from lmzoo.tokenizers import train_tokenizer

    tok = train_tokenizer(args.kind, args.files, vocab_size=args.vocab_size, out=args.out,
                          text_field=args.text_field)
    print(json.dumps({"kind": tok.kind, "vocab_size": tok.vocab_size, "saved_to": args.out}))
