"""`transformers` configs for lmzoo architectures: the lmzoo config, whole, inside an HF config.

Each architecture gets its own `PreTrainedConfig` subclass with model_type `lmzoo-<arch>` (made by
`config_class`); the lmzoo config travels as the dict `lmzoo_config` (what `ModelConfig.to_dict`
writes, with its `arch`), which is also what `lmzoo.load()` reads back from an exported directory.
The HF-named fields (`vocab_size`, `hidden_size`, ...) are derived from it, for tools that read them.
"""
from __future__ import annotations

from typing import Any

from transformers import PreTrainedConfig

from lmzoo.checkpoint import HF_CONFIG_KEY
from lmzoo.errors import LmzooError
from lmzoo.registry import get_architecture, make_config

MODEL_TYPE_PREFIX = "lmzoo-"


class LmzooConfig(PreTrainedConfig):
    """Base of the per-architecture configs; `arch` is set on each subclass."""

    model_type = ""
    arch = ""
    lmzoo_config: dict | None = None
    vocab_size: int = 259
    hidden_size: int = 128
    num_hidden_layers: int = 1
    tie_word_embeddings: bool = True
    use_cache: bool = True
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        config = self.lmzoo()
        self.lmzoo_config = config.to_dict()
        self.vocab_size, self.hidden_size, self.num_hidden_layers = config.vocab_size, config.d_model, config.n_layers
        # Which weights are tied is declared by the model (`_tied_weights_keys`), from the lmzoo model itself.
        self.tie_word_embeddings = config.tie_embeddings
        super().__post_init__(**kwargs)

    def lmzoo(self):
        """The lmzoo config (validated; a one-line LmzooError for a bad one)."""
        if self.lmzoo_config is None:
            return make_config(self.arch)
        if not isinstance(self.lmzoo_config, dict):
            raise LmzooError(f"{HF_CONFIG_KEY} must be a JSON object holding an lmzoo config, got "
                             f"{type(self.lmzoo_config).__name__}; re-export the model")
        try:
            return get_architecture(self.arch).config_cls.from_dict(self.lmzoo_config)
        except TypeError as e:
            raise LmzooError(f"{HF_CONFIG_KEY} is not a valid '{self.arch}' config ({e}); re-export the model") from None


_CONFIG_CLASSES: dict[str, type[LmzooConfig]] = {}


def config_class(arch: str) -> type[LmzooConfig]:
    """The config class of architecture `arch` (made once, then reused)."""
    if arch not in _CONFIG_CLASSES:
        get_architecture(arch)  # an unknown name fails here, with the list of known ones
        name = "Lmzoo" + "".join(part.capitalize() for part in arch.replace("_", "-").split("-")) + "Config"
        cls = type(name, (LmzooConfig,), {"__module__": __name__, "model_type": MODEL_TYPE_PREFIX + arch,
                                          "arch": arch, "__doc__": f"HF config of lmzoo's '{arch}'."})
        _CONFIG_CLASSES[arch] = cls
    return _CONFIG_CLASSES[arch]


def config_for(model, tokenizer=None) -> LmzooConfig:
    """The HF config of an lmzoo model, with the special token ids of its tokenizer when it has one."""
    ids = {}
    if tokenizer is not None:
        ids = {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id, "pad_token_id": tokenizer.pad_id}
    return config_class(model.config.arch)(lmzoo_config=model.config.to_dict(), **ids)
