"""Verbs that prepare data: `data prepare`, `tokenizer train`."""
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


def run_tokenizer_train(args) -> None:
    from lmzoo.tokenizers import train_tokenizer

    tok = train_tokenizer(args.kind, args.files, vocab_size=args.vocab_size, out=args.out,
                          text_field=args.text_field)
    print(json.dumps({"kind": tok.kind, "vocab_size": tok.vocab_size, "saved_to": args.out}))
