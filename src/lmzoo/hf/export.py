"""`lmzoo export-hf` / `export_hf`: an lmzoo model as a Hugging Face directory.

The directory holds what `save_pretrained` of the HF wrapper writes (config.json with the lmzoo
config inside, generation_config.json, model.safetensors under lmzoo's weight names), the HF
tokenizer (tokenizer.json, tokenizer_config.json) and lmzoo's own tokenizer as lmzoo_tokenizer.json,
so that `AutoModelForCausalLM`/`AutoTokenizer.from_pretrained` and `lmzoo.load()` all read it.
"""
from __future__ import annotations

import sys
from pathlib import Path

from lmzoo.checkpoint import CONFIG_FILE, EXPORT_TOKENIZER_FILE, WEIGHTS_FILE, is_hf_directory
from lmzoo.io import atomic_directory, holds_only
from lmzoo.locking import output_lock
from lmzoo.tokenizers import TOKENIZER_FILE

from lmzoo.hf.modeling import to_hf
from lmzoo.hf.tokenization import HFTokenizerUnsupported, to_hf_tokenizer

# Everything an export may hold: only a directory holding nothing else is ever replaced.
EXPORT_FILES = (CONFIG_FILE, WEIGHTS_FILE, "generation_config.json", TOKENIZER_FILE, "tokenizer_config.json",
                "special_tokens_map.json", "chat_template.jinja", EXPORT_TOKENIZER_FILE)
EXPORT_KIND = "Hugging Face export (export-hf output)"


def is_export_dir(path: Path) -> bool:
    return holds_only(path, EXPORT_FILES, required=CONFIG_FILE) and is_hf_directory(path)


def export_hf(model, out: str | Path, tokenizer=None) -> Path:
    """Write `model` (and its tokenizer, default `model.tokenizer`) to directory `out` in one rename;
    an existing `out` must be an earlier export. Returns `out`."""
    out = Path(out)
    tokenizer = tokenizer if tokenizer is not None else model.tokenizer
    with output_lock(out, "OUT"), atomic_directory(out, is_export_dir, EXPORT_KIND) as tmp:
        to_hf(model).save_pretrained(tmp)
        if tokenizer is not None:
            save_tokenizers(tokenizer, tmp)
    return out


def save_tokenizers(tokenizer, directory: Path) -> None:
    """lmzoo's tokenizer as EXPORT_TOKENIZER_FILE and, where the kind has one, the HF tokenizer beside it."""
    own = directory / ".lmzoo-tokenizer"
    tokenizer.save(own)
    (own / TOKENIZER_FILE).rename(directory / EXPORT_TOKENIZER_FILE)
    own.rmdir()
    try:
        to_hf_tokenizer(tokenizer).save_pretrained(directory)
    except HFTokenizerUnsupported as e:
        print(f"lmzoo: note: no Hugging Face tokenizer written: {e}", file=sys.stderr)
