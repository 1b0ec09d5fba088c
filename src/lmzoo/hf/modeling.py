"""lmzoo models as `transformers` causal LMs: `PreTrainedModel` + `GenerationMixin` over any `CausalLM`.

The wrapper holds the lmzoo model as `self.model` and adds nothing to its computation: `forward`
is lmzoo's forward, with lmzoo's decoding state as the cache (`LmzooCache`). Weights are stored
under lmzoo's own names (a conversion mapping strips and restores the `model.` prefix), so an HF
directory's `model.safetensors` is the one `lmzoo.load()` reads.
"""
from __future__ import annotations

import re

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.conversion_mapping import register_checkpoint_conversion_mapping
from transformers.core_model_loading import WeightRenaming
from transformers.modeling_outputs import CausalLMOutputWithPast

from lmzoo.errors import LmzooError
from lmzoo.hf.cache import LmzooCache
from lmzoo.hf.configuration import LmzooConfig, config_class, config_for
from lmzoo.registry import get_architecture, make_config


class LmzooForCausalLM(PreTrainedModel, GenerationMixin):
    """Base of the per-architecture HF models (`model_class(arch)`)."""

    config_class = LmzooConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"

    def __init__(self, config: LmzooConfig, lm=None):
        super().__init__(config)
        if lm is None:
            # Built on the CPU even inside from_pretrained's meta-device context: the buffers lmzoo
            # computes at construction (RoPE frequencies, wavelet filters) are not in the weights
            # file, so their values are kept here and put back after loading (`_init_weights`).
            with torch.device("cpu"):
                lm = get_architecture(config.arch).model_cls(config.lmzoo())
        self.model = lm
        self._computed_buffers = {id(module): computed for module in lm.modules() if (computed := {
            name: buf.detach().clone() for name, buf in module.named_buffers(recurse=False)
            if name in module._non_persistent_buffers_set})}
        if lm.embed is not None and lm.lm_head is not None and lm.lm_head.weight is lm.embed.weight:
            self._tied_weights_keys = {"model.lm_head.weight": "model.embed.weight"}
        self.post_init()

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # forward makes its own LmzooCache; a DynamicCache would hold nothing of lmzoo's state

    def _init_weights(self, module) -> None:
        """HF calls this for what loading did not fill. lmzoo initialised every weight when it built the
        model; only the computed buffers, which loading replaces with empty tensors, are restored."""
        for name, value in self._computed_buffers.get(id(module), {}).items():
            getattr(module, name).copy_(value)

    def get_input_embeddings(self):
        return self.model.embed

    def get_output_embeddings(self):
        return self.model.lm_head

    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                cache: LmzooCache | None = None, labels: torch.LongTensor | None = None,
                use_cache: bool | None = None, logits_to_keep: int = 0, inputs_embeds: torch.Tensor | None = None,
                return_dict: bool | None = None, **kwargs) -> CausalLMOutputWithPast:
        if inputs_embeds is not None or input_ids is None:
            raise LmzooError("lmzoo models take input_ids (some architectures embed tokens in their own way), "
                             "not inputs_embeds")
        check_no_padding(attention_mask)
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        if cache is not None and not isinstance(cache, LmzooCache):
            raise LmzooError(f"lmzoo models keep their own decoding state: pass an LmzooCache (or none), not a "
                             f"{type(cache).__name__}")
        if cache is None and use_cache:
            cache = LmzooCache(self.model)
        if not isinstance(logits_to_keep, int):
            raise LmzooError("logits_to_keep must be an int for lmzoo models")
        out = self.model(input_ids, labels=labels, state=cache.state if cache is not None else None,
                         logits_to_keep=logits_to_keep)
        return CausalLMOutputWithPast(loss=out.loss, logits=out.logits, cache=cache)


def check_no_padding(attention_mask: torch.Tensor | None) -> None:
    """Refuse padded batches: one lmzoo state keeps all rows at one position, and a recurrent state cannot
    skip pad tokens, so a padded row would get wrong logits. Generate rows of different lengths apart."""
    if attention_mask is not None and not bool(attention_mask.bool().all()):
        raise LmzooError("padded batches are not supported by lmzoo models yet (every row of a decoding state is "
                         "at the same position): pass prompts of equal token length together, or one at a time "
                         "(pipeline(..., batch_size=1))")


_MODEL_CLASSES: dict[str, type[LmzooForCausalLM]] = {}


def model_class(arch: str) -> type[LmzooForCausalLM]:
    """The HF model class of architecture `arch` (made once, then reused)."""
    if arch not in _MODEL_CLASSES:
        cfg_cls = config_class(arch)
        name = cfg_cls.__name__.removesuffix("Config") + "ForCausalLM"
        _MODEL_CLASSES[arch] = type(name, (LmzooForCausalLM,), {
            "__module__": __name__, "config_class": cfg_cls, "__doc__": f"lmzoo's '{arch}' as an HF causal LM."})
    return _MODEL_CLASSES[arch]


def register(arch: str) -> None:
    """Make `AutoConfig` / `AutoModelForCausalLM` know architecture `arch`; safe to call again."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg_cls, cls = config_class(arch), model_class(arch)
    AutoConfig.register(cfg_cls.model_type, cfg_cls, exist_ok=True)
    AutoModelForCausalLM.register(cfg_cls, cls, exist_ok=True)
    # Checkpoints hold lmzoo's names ("embed.weight"); the wrapper's are "model.embed.weight".
    # (transformers' PrefixChange would do, but it is not reverted when saving a model that
    # from_pretrained did not load.)
    add_prefix = WeightRenaming(source_patterns=r"^(?:(?!model\.))(.+)", target_patterns=r"model\.\1")
    register_checkpoint_conversion_mapping(cls.__name__, [add_prefix], overwrite=True)
    register_lora_targets(arch, cfg_cls.model_type)


def register_lora_targets(arch: str, model_type: str) -> None:
    """peft's default LoRA targets for `model_type`: the Linear layers named in the architecture's
    `lora_targets` (the token mixers' input projections), so `LoraConfig()` needs no `target_modules`."""
    try:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS
    except ImportError:  # peft is optional
        return
    DEFAULTS[model_type] = lora_target_pattern(arch)


def lora_target_pattern(arch: str) -> str:
    """A regex (peft full-matches it against module names) for the architecture's LoRA targets in any
    depth: a bare suffix like "q" would also hit non-Linear modules of that name (spiking neurons)."""
    spec = get_architecture(arch)
    with torch.device("meta"):  # names only: nothing is allocated
        lm = spec.model_cls(make_config(arch))
    paths = sorted({r"\.".join(r"\d+" if part.isdigit() else re.escape(part) for part in name.split("."))
                    for name, module in lm.named_modules()
                    if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in spec.model_cls.lora_targets})
    return rf"model\.(?:{'|'.join(paths)})"


def to_hf(lm) -> LmzooForCausalLM:
    """An lmzoo model as an HF model sharing its weights (and its tokenizer's special ids)."""
    register(lm.config.arch)
    hf = model_class(lm.config.arch)(config_for(lm, lm.tokenizer), lm=lm)
    return hf.to(lm.device).train(lm.training)
