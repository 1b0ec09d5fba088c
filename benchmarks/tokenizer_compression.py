"""Tokenizer compression (claim S3: "the syllable tokenizer compresses ~2.5x over characters").

For German and English text, trains each tokenizer on the first 90% of each file and measures
characters per token (and bytes per token, and the <unk> share) on the last 10%: the syllable
tokenizer at its default and at a larger vocabulary, against characters, bytes and BPE of a
similar vocabulary size.

    python benchmarks/tokenizer_compression.py
"""
from __future__ import annotations

import argparse
from pathlib import Path

import common

from lmzoo.tokenizers import get_tokenizer
from lmzoo.tokenizers.base import _kind_class
from lmzoo.tokenizers.stats import tokenizer_stats

NAME = "tokenizer-compression"
DATA = common.ROOT.parent / "shared" / "data"
CORPORA = {
    "de": [DATA / "german" / "goethe_faust.txt", DATA / "german" / "fortunes-de_0.35-1.txt"],
    "en": [DATA / "tinyshakespeare.txt", DATA / "wikitext-2-raw" / "wiki.valid.raw"],
}


def split(paths: list[Path], held_out: float = 0.1) -> tuple[list[str], list[str]]:
    train, test = [], []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        cut = text.rfind("\n", 0, int(len(text) * (1 - held_out))) + 1
        train.append(text[:cut])
        test.append(text[cut:])
    return train, test


def candidates(lang: str, train: list[str]):
    syllable = _kind_class("syllable")
    yield "bytes", get_tokenizer("bytes")
    yield "char", _kind_class("char").train(train)
    yield "syllable (default)", syllable.train(train, lang=lang)
    yield "syllable (vocab 8000)", syllable.train(train, 8000, lang=lang)
    yield "bpe (vocab 8000)", _kind_class("bpe").train(train, 8000)


def measure() -> dict:
    results = {}
    for lang, paths in CORPORA.items():
        train, test = split(paths)
        results[lang] = {"files": [p.name for p in paths], "rows": []}
        for name, tok in candidates(lang, train):
            stats = tokenizer_stats(tok, test)
            results[lang]["rows"].append({"tokenizer": name, "vocab_size": tok.vocab_size, **stats})
            print(f"{lang} {name}: {stats['chars_per_token']:.3f} chars/token", flush=True)
    return results


def render(data: dict) -> str:
    lines = ["## Tokenizers: compression over characters", "",
             common.command_header(data) + "; trained on the first 90% of each file, measured on the last 10%.", ""]
    for lang, r in data["results"].items():
        rows = [[row["tokenizer"], f"{row['vocab_size']:,}", f"**{row['chars_per_token']:.3f}**",
                 f"{row['bytes_per_token']:.3f}", f"{row['unk_share']:.4f}"] for row in r["rows"]]
        lines += [f"**{lang}** ({', '.join(r['files'])})", "",
                  common.markdown_table(["tokenizer", "vocab", "chars/token", "bytes/token", "<unk> share"], rows), ""]
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    data = {**common.run_info(), "results": measure()}
    markdown = render(data)
    common.publish(NAME, data, markdown, write=not args.no_write)
    return data


if __name__ == "__main__":
    main()
