"""`transformer`: the Llama-style dense baseline every claim is measured against.

Token embedding (tied LM head), pre-norm blocks `x += attn(norm(x)); x += swiglu(norm(x))`,
grouped-query attention with RoPE through `F.scaled_dot_product_attention`, optional QK-norm
and sliding window, final RMSNorm.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lmzoo.config import ModelConfig
from lmzoo.errors import LmzooError
from lmzoo.layers.attention import Attention
from lmzoo.layers.mlp import SwiGLU
from lmzoo.layers.norm import RMSNorm
from lmzoo.layers.state import LayerState
from lmzoo.modeling import BlockContext, CausalLM, State
from lmzoo.registry import register

# Shared size table: other architectures match these non-embedding parameter counts.
#        name      d_model layers heads kv  d_ff      non-embedding params
SIZES = {
    "nano": (128, 5, 4, 2, 384),      # ~1.0M
    "micro": (256, 6, 4, 2, 768),     # ~4.7M
    "tiny": (384, 10, 6, 2, 1024),    # ~15.7M
    "small": (512, 16, 8, 4, 1408),   # ~47M
    "base": (768, 20, 12, 4, 2048),   # ~126M
}


def dense_presets(sizes: dict[str, tuple]) -> dict[str, dict]:
    return {name: dict(d_model=d, n_layers=n, n_heads=h, n_kv_heads=kv, d_ff=ff)
            for name, (d, n, h, kv, ff) in sizes.items()}


@dataclass
class TransformerConfig(ModelConfig):
    n_heads: int = 4
    n_kv_heads: int = 2
    d_ff: int = 384
    rope_theta: float = 10000.0
    qk_norm: bool = False
    window: int | None = None  # sliding-window size; None = full causal attention

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.d_model % self.n_heads or self.n_heads % self.n_kv_heads:
            raise LmzooError(f"d_model ({self.d_model}) must divide by n_heads ({self.n_heads}) and n_heads "
                             f"by n_kv_heads ({self.n_kv_heads})")
        if self.window is not None and self.window < 1:
            raise LmzooError(f"window must be a positive number of tokens or None, got {self.window}")


@dataclass
class TransformerContext(BlockContext):
    route: object = None  # the MLP's routing for this call (complexity); None for a dense MLP


class Block(nn.Module):
    def __init__(self, config: TransformerConfig, mlp: nn.Module):
        super().__init__()
        self.attn_norm = RMSNorm(config.d_model, config.norm_eps)
        self.attn = Attention(config.d_model, config.n_heads, config.n_kv_heads, rope_theta=config.rope_theta,
                              qk_norm=config.qk_norm, window=config.window, norm_eps=config.norm_eps)
        self.mlp_norm = RMSNorm(config.d_model, config.norm_eps)
        self.mlp = mlp

    def new_state(self) -> LayerState:
        return self.attn.new_state()

    def forward(self, x: torch.Tensor, context: TransformerContext, cache: LayerState | None) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), context.start, cache)
        return x + self.mlp(self.mlp_norm(x), context.route)


@register("transformer", TransformerConfig, dense_presets(SIZES),
          "Llama-style dense decoder: GQA, RoPE, SwiGLU, RMSNorm (the baseline)")
class TransformerLM(CausalLM):
    lora_targets = ("qkv",)
    mixed_positions = True

    def __init__(self, config: TransformerConfig):
        super().__init__(config)
        self.blocks = nn.ModuleList(Block(config, self.make_mlp(config)) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.init_weights()

    @property
    def constant_state(self) -> bool:
        return self.config.window is not None  # a sliding window keeps a ring of `window` keys

    def make_mlp(self, config: TransformerConfig) -> nn.Module:
        return SwiGLU(config.d_model, config.d_ff)

    def route(self, input_ids: torch.Tensor):
        """Per-forward routing context shared by every layer's MLP (none for a dense MLP)."""
        return None

    def route_stats(self, route) -> dict[str, torch.Tensor]:
        return {}

    def new_context(self, input_ids: torch.Tensor, state: State | None) -> TransformerContext:
        return TransformerContext(start=self.start_position(state), route=self.route(input_ids))

    def backbone(self, input_ids: torch.Tensor, state: State | None, context: TransformerContext):
        x = self.run_blocks(self.embed(input_ids), context, state)
        return self.norm(x), None, self.route_stats(context.route)
