"""Hugging Face `transformers` integration: every lmzoo architecture behind AutoConfig and
AutoModelForCausalLM, HF `generate()` on lmzoo's decoding state, and export to a directory that
`AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained` load (docs/huggingface.md).

Importing this module registers every lmzoo architecture with the Auto classes.
"""
from __future__ import annotations

from lmzoo.errors import LmzooError

try:
    import transformers  # noqa: F401
except ImportError:
    raise LmzooError("the Hugging Face integration needs transformers: pip install 'lmzoo[hf]'") from None

from lmzoo.hf.cache import LmzooCache
from lmzoo.hf.configuration import LmzooConfig, config_class, config_for
from lmzoo.hf.export import export_hf
from lmzoo.hf.modeling import LmzooForCausalLM, model_class, register, to_hf
from lmzoo.hf.tokenization import to_hf_tokenizer
from lmzoo.registry import list_architectures

for _arch in list_architectures():
    register(_arch)

__all__ = ["LmzooCache", "LmzooConfig", "LmzooForCausalLM", "config_class", "config_for", "export_hf",
           "model_class", "register", "to_hf", "to_hf_tokenizer"]
