"""Verbs that prepare data: `data prepare`, `data wiki-dump`, `tokenizer train`, `tokenizer stats`."""
from __future__ import annotations

import json

from lmzoo.errors import LmzooError
from lmzoo.paths import check_input_file, check_output_dir


def register(verbs) -> None:
    data = verbs.add_parser("data", help="prepare training data").add_subparsers(
        dest="data_verb", metavar="ACTION", required=True)
    p = data.add_parser("prepare", help="tokenise text files, directories or JSONL into train/val token arrays")
    p.add_argument("inputs", nargs="+", help="text files, directories (searched recursively) or .jsonl files")
    p.add_argument("--out", required=True, help="output directory (train.bin, val.bin, meta.json, tokenizer.json)")
    p.add_argument("--tokenizer", default="bytes",
                   help="bytes (default), char, bpe, syllable (trained on the inputs), or a saved tokenizer's path")
    p.add_argument("--vocab-size", type=int, default=None, help="vocabulary size when training a tokenizer")
    p.add_argument("--val-fraction", type=float, default=0.05, help="share of text for validation (default 0.05)")
    p.add_argument("--text-field", default="text", help="JSONL field holding the text (default: text)")
    p.add_argument("--seed", type=int, default=0, help="seed of the deterministic train/val split")
    p.add_argument("--max-tokens", type=int, default=None, help="stop after this many tokens")
    p.add_argument("--drop-unk", action="store_true",
                   help="drop paragraphs (text between blank lines) holding the tokenizer's <unk>, and documents left "
                        "empty (char and syllable tokenizers)")
    p.add_argument("--blocklist", metavar="FILE", default=None,
                   help="drop documents matching any line of FILE: a whole-word term or a /regex/, any case")
    p.add_argument("--metadata-prefix", metavar="FIELD[,FIELD]", default=None,
                   help='JSONL fields to prefix each document with, as "[field: value] "')
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
    p.add_argument("--kind", default="bpe", help="bpe (default), syllable, char or bytes")
    p.add_argument("--vocab-size", type=int, default=None, help="vocabulary size (bpe, char, syllable: the total)")
    p.add_argument("--lang", default=None, help="syllable: pyphen's language, de (default) or en")
    p.add_argument("--syllables", type=int, default=None,
                   help="syllable: most syllables in the vocabulary (default 2000)")
    p.add_argument("--words", type=int, default=None,
                   help="syllable: most whole words when --vocab-size is not given (default 1000)")
    p.add_argument("--text-field", default="text", help="JSONL field holding the text")
    p.add_argument("--out", required=True, help="directory to save tokenizer.json in")
    p.set_defaults(run=run_tokenizer_train)

    p = tok.add_parser("stats", help="tokens, compression (characters and bytes per token) and <unk> share on files")
    p.add_argument("tokenizer", metavar="TOKENIZER",
                   help="a saved tokenizer's directory or file, or a kind (char, bpe, syllable: trained on FILES)")
    p.add_argument("files", nargs="+", metavar="FILES", help="text files, directories or .jsonl files")
    p.add_argument("--vocab-size", type=int, default=None, help="vocabulary size when TOKENIZER is a kind to train")
    p.add_argument("--text-field", default="text", help="JSONL field holding the text")
    p.add_argument("--json", action="store_true", help="print the numbers as one JSON object")
    p.set_defaults(run=run_tokenizer_stats)


def run_prepare(args) -> None:
    from lmzoo.data import prepare_dataset

    check_output_dir(args.out)
    if args.blocklist is not None:
        check_input_file(args.blocklist, "--blocklist")
    meta = prepare_dataset(args.inputs, args.out, tokenizer=args.tokenizer, val_fraction=args.val_fraction,
                           text_field=args.text_field, seed=args.seed, max_tokens=args.max_tokens,
                           vocab_size=args.vocab_size, progress=True, drop_unk=args.drop_unk,
                           blocklist=args.blocklist, metadata_prefix=args.metadata_prefix)
    splits = meta["splits"]
    print(f"wrote {args.out}: tokenizer {meta['tokenizer']} (vocab {meta['vocab_size']}), "
          + ", ".join(f"{name} {s['tokens']:,} tokens / {s['bytes']:,} bytes" for name, s in splits.items()))
    if "filters" in meta:
        f = meta["filters"]
        parts = [f"{f['documents_kept']:,} of {f['documents_in']:,} documents kept"]
        parts += [f"{name} dropped {f[name]['dropped_documents']:,}" for name in ("blocklist", "drop_unk") if name in f]
        if "drop_unk" in f:
            parts[-1] += f" documents and {f['drop_unk']['dropped_paragraphs']:,} paragraphs"
        if "metadata_prefix" in f:
            parts.append(f"{f['metadata_prefix']['documents_prefixed']:,} prefixed with "
                         + ", ".join(f["metadata_prefix"]["fields"]))
        print("filters: " + "; ".join(parts))


def run_wiki_dump(args) -> None:
    from lmzoo.data.wiki_dump import extract_wiki_dump

    check_output_dir(args.out)
    summary = extract_wiki_dump(args.dumps, args.out, min_chars=args.min_chars, max_articles=args.max_articles,
                                lang=args.lang, workers=args.workers, progress=True)
    print(json.dumps({k: v for k, v in summary.items() if k != "inputs"}, indent=2))  # all in summary.json
    if summary["complete"]:
        print(f"next: lmzoo data prepare {args.out} --out DATA_DIR  (add --tokenizer bpe for a BPE vocabulary)")
    else:
        print(f"stopped early; {how_to_continue(args)}")


def how_to_continue(args) -> str:
    """What resumes an unfinished wiki-dump: a cap already reached stops a rerun at once."""
    if args.max_articles is not None:
        return (f"{args.out} holds --max-articles {args.max_articles:,} articles; to continue, rerun the command "
                f"with a larger --max-articles or without it")
    return f"rerun the same command to continue into {args.out}"


def run_tokenizer_train(args) -> None:
    from lmzoo.locking import output_lock
    from lmzoo.tokenizers import check_tokenizer_output

    check_output_dir(args.out)
    check_tokenizer_output(args.out)  # now, not after training
    with output_lock(args.out):
        _run_tokenizer_train(args)


def _run_tokenizer_train(args) -> None:
    from lmzoo.tokenizers import train_tokenizer

    options = {"lang": args.lang, "n_syllables": args.syllables, "n_words": args.words}
    options = {name: value for name, value in options.items() if value is not None}
    if args.kind == "syllable":
        tok = _train_syllable(args, options)
    elif options:
        raise LmzooError(f"--lang, --syllables and --words only apply to --kind syllable, not {args.kind}; drop them")
    else:
        tok = train_tokenizer(args.kind, args.files, vocab_size=args.vocab_size, out=args.out,
                              text_field=args.text_field)
    print(json.dumps({"kind": tok.kind, "vocab_size": tok.vocab_size, "saved_to": args.out}))


def _train_syllable(args, options: dict):
    """`train_tokenizer` for the syllable kind with its own options (language, syllable/word counts)."""
    from lmzoo.data.sources import iter_pieces
    from lmzoo.tokenizers import SyllableTokenizer
    from lmzoo.tokenizers.base import check_vocab_size

    check_vocab_size(args.vocab_size)
    texts = (piece.text for piece in iter_pieces(args.files, args.text_field))
    tok = SyllableTokenizer.train(texts, vocab_size=args.vocab_size, **options)
    tok.save(args.out)
    return tok


def run_tokenizer_stats(args) -> None:
    from lmzoo.data.sources import iter_pieces
    from lmzoo.tokenizers import TOKENIZER_KINDS, get_tokenizer, tokenizer_stats, train_tokenizer

    kind = TOKENIZER_KINDS.get(args.tokenizer)
    trained = kind is not None and kind.needs_training
    if trained:  # a quick comparison of kinds: train on the very files measured
        tok = train_tokenizer(args.tokenizer, args.files, vocab_size=args.vocab_size, text_field=args.text_field)
    elif args.vocab_size is not None:
        raise LmzooError("--vocab-size only applies when TOKENIZER is a kind to train (char, bpe, syllable)")
    else:
        tok = get_tokenizer(args.tokenizer)
    # Text files arrive in ~1 MiB pieces cut after a newline; only BPE merges could differ at a cut.
    stats = tokenizer_stats(tok, (piece.text for piece in iter_pieces(args.files, args.text_field)))
    if args.json:
        print(json.dumps({"tokenizer": tok.kind, "vocab_size": tok.vocab_size, "trained_on_files": trained, **stats}))
        return
    print(f"tokenizer    {tok.kind} (vocab {tok.vocab_size:,}{', trained on these files' if trained else ''})")
    print(f"tokens       {stats['tokens']:,}")
    print(f"characters   {stats['characters']:,}")
    print(f"bytes        {stats['bytes']:,}")
    print(f"chars/token  {stats['chars_per_token']:.3f}  (compression ratio vs characters)")
    print(f"bytes/token  {stats['bytes_per_token']:.3f}")
    unk = "no <unk> token" if getattr(tok, "unk_id", None) is None else f"{stats['unk_tokens']:,} tokens"
    print(f"<unk> share  {stats['unk_share']:.4%}  ({unk})")
