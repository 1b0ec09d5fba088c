"""The surface every architecture shares: output type, decoding state, and the base LM class.

A subclass builds `blocks` and implements `backbone(input_ids, state, context) -> (hidden, aux_loss,
stats)`, usually through the one block loop `run_blocks`; embedding of ids, input checks, the LM
head, the shifted loss, the state bookkeeping, generation and saving live here once.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lmzoo.checkpoint import load_into_class, read_config_dict, save_pretrained
from lmzoo.config import ModelConfig
from lmzoo.errors import LmzooError
from lmzoo.layers.precision import upcast
from lmzoo.layers.state import LayerState


@dataclass
class LMOutput:
    logits: torch.Tensor
    loss: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None
    state: "State | None" = None
    # Detached 0-d tensors (spike/gate rates, routing fractions); `float(v)` when logging, so
    # the training loop never syncs with the device just to produce them.
    stats: dict[str, torch.Tensor] = field(default_factory=dict)
    # Only with forward(token_stats=True): what the architecture did at each token, each value
    # [B, L, ...] (e.g. which layers spiked, the expert a token went to), for live views.
    token_stats: dict[str, torch.Tensor] = field(default_factory=dict)


class State:
    """Decoding state after `position` tokens: one `LayerState` per block (or None for a block that
    keeps nothing) plus an optional model-level one (`extras`, e.g. efficia-1's document flags).

    Every part declares its batch dimension, so the whole state can report its size, keep, copy,
    reorder or join rows of the batch and move to a device without knowing the architecture.

    `position` is an int while every row has seen the same number of tokens. Joining states whose
    rows sit at different positions (`join`) makes it a CPU LongTensor [B] of per-row positions;
    such a batch is then decoded one token per row per call, each row at its own position.
    """

    def __init__(self, layers: list[LayerState | None], position: int | torch.Tensor = 0,
                 extras: LayerState | None = None):
        self.layers = layers
        self.position = position
        self.extras = extras

    def parts(self) -> list[LayerState]:
        return [s for s in (*self.layers, self.extras) if s is not None]

    def nbytes(self) -> int:
        return sum(part.nbytes() for part in self.parts())

    @property
    def per_row(self) -> bool:
        """Whether rows sit at different positions (`position` is a tensor)."""
        return isinstance(self.position, torch.Tensor)

    def batch_size(self) -> int:
        if self.per_row:
            return self.position.shape[0]
        for part in self.parts():
            rows = part.batch_size()
            if rows is not None:
                return rows
        raise LmzooError("this decoding state holds no rows yet; feed it at least one token first")

    def row_positions(self) -> torch.Tensor:
        """Tokens seen by each row: a CPU LongTensor [B]."""
        if self.per_row:
            return self.position
        return torch.full((self.batch_size(),), self.position, dtype=torch.long)

    def select(self, rows: torch.Tensor) -> "State":
        """Keep batch rows `rows` (indices, in the order given) in every part; in place."""
        for part in self.parts():
            part.select(rows)
        if self.per_row:
            self.position = self.position[rows.cpu()]
            self._trim()
        return self

    def _trim(self) -> None:
        if self.position.numel():
            longest = int(self.position.max())
            for part in self.parts():
                part.trim(longest)

    def take(self, rows: torch.Tensor) -> "State":
        """A new state with copies of rows `rows`; this one is left as it was."""
        layers = [None if part is None else part.take(rows) for part in self.layers]
        extras = None if self.extras is None else self.extras.take(rows)
        taken = State(layers, self.position[rows.cpu()] if self.per_row else self.position, extras)
        if taken.per_row:
            taken._trim()
        return taken

    def join(self, other: "State") -> "State":
        """Append `other`'s rows after this state's, in place (`other` is consumed). Rows at
        different positions make the position per-row (see the class docstring)."""
        aligned = not self.per_row and not other.per_row and self.position == other.position
        position = self.position if aligned else torch.cat((self.row_positions(), other.row_positions()))
        for mine, theirs in zip(self.parts(), other.parts()):
            mine.join(theirs, aligned)
        self.position = position
        return self

    def to(self, device: torch.device | str) -> "State":
        for part in self.parts():
            part.to(device)
        return self


@dataclass
class BlockContext:
    """What every block of one forward call shares: the absolute position of the call's first
    token and a dict the blocks add statistics to. Architectures subclass it for more (routes,
    document ids, what one layer hands the next).

    `start` is an int, or, when the state's rows sit at different positions, a LongTensor [B] on
    the model's device (each row's position; the call then feeds one token per row).

    `token_stats` is None unless the caller asked for per-token statistics; then blocks add
    detached [B, L, ...] tensors to it (see `LMOutput.token_stats`)."""

    start: int | torch.Tensor
    stats: dict[str, torch.Tensor] = field(default_factory=dict)
    token_stats: dict[str, torch.Tensor] | None = None


def _block_on_copy(block: nn.Module, x: torch.Tensor, context: BlockContext):
    """One block on a fresh shallow copy of the context it was first called with, so the
    backward pass's recomputation sees the same inputs even though blocks hand values on through
    the context (efficia-1's GRU states); returns the output and the context as the block left it."""
    context = copy.copy(context)
    return block(x, context, None), context


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy: position t predicts labels[t+1]; -100 is ignored."""
    # Shift the labels (padding the end with -100) rather than slicing the logits, which would
    # copy the largest activation of the model.
    target = F.pad(labels[:, 1:], (0, 1), value=-100).reshape(-1)
    flat = upcast(logits.reshape(-1, logits.shape[-1]))
    # sum / count rather than mean: an all-ignored batch gives 0, not NaN, without a host sync.
    total = F.cross_entropy(flat, target, ignore_index=-100, reduction="sum")
    return total / (target != -100).sum().clamp(min=1)


class CausalLM(nn.Module):
    """Base class of every lmzoo architecture (see the module docstring).

    What callers outside the model (distributed wrapping, fine-tuning, energy accounting, the
    CLI) rely on is declared here, and a subclass sets it:

    - `blocks`: an `nn.ModuleList` of the repeated blocks, in order. Each block is called as
      `block(x, context, layer_state) -> x` and creates its decoding state with `new_state()`
      (a `LayerState`, or None if it keeps nothing).
    - `lora_targets`: names of the `nn.Linear` submodules LoRA adapts by default.
    - `constant_state`: whether the decoding state keeps a fixed size however long the context.
    - `mixed_positions`: whether its blocks decode rows at different positions in one call
      (`context.start` a LongTensor [B]); `lmzoo.batching.BatchDecoder` needs it to batch such rows.
    - `untrained_components(seq_len)`: what sequences that short leave without gradient (DDP
      then looks for unused parameters). Parameters are never 0-d: FSDP2 cannot shard those.

    `activation_checkpointing` (a setting, not part of the config) makes training recompute each
    block's activations in the backward pass instead of storing them.
    """

    config_cls: type[ModelConfig] = ModelConfig
    blocks: nn.ModuleList
    lora_targets: tuple[str, ...] = ()
    constant_state: bool = False
    mixed_positions: bool = False

    def __init__(self, config: ModelConfig, token_table: bool = True):
        super().__init__()
        self.config = config
        # An architecture with its own token embedding passes token_table=False; with tied
        # embeddings it then also computes the logits itself (`output_logits`).
        self.embed = nn.Embedding(config.vocab_size, config.d_model) if token_table else None
        self.lm_head = None
        if token_table or not config.tie_embeddings:
            self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if token_table and config.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        # The trainer checks the dataset's ids once up front and turns this off, so the hot
        # loop does not sync with the GPU to re-check every batch.
        self.check_inputs = True
        self.tokenizer = None
        self.activation_checkpointing = False

    # ---- to implement -------------------------------------------------------------------
    def backbone(self, input_ids: torch.Tensor, state: State | None, context: BlockContext):
        """Return (hidden [B, L, D], aux_loss scalar tensor or None, stats dict)."""
        raise NotImplementedError

    def new_context(self, input_ids: torch.Tensor, state: State | None) -> BlockContext:
        """The context the blocks of one forward call share; architectures with more to share
        return their subclass."""
        return BlockContext(start=self.start_position(state))

    def start_position(self, state: State | None) -> int | torch.Tensor:
        """Absolute position of a call's first token: the tokens the state has seen (per row, on
        the model's device, when its rows differ)."""
        if state is None:
            return 0
        return state.position.to(self.device) if state.per_row else state.position

    def new_extras(self) -> LayerState | None:
        """The model-level part of a fresh decoding state (`State.extras`); default none."""
        return None

    def set_training_progress(self, fraction: float) -> None:
        """Called by the trainer before each step with the share of the run done, in [0, 1]
        (schedules inside a model, such as a gate temperature, follow it). Default: nothing."""

    def untrained_components(self, seq_len: int) -> list[str]:
        """Parts of the model that sequences of `seq_len` tokens or fewer give no gradient, one
        line each saying why and what to change. The trainer warns about them, and DDP then looks
        for parameters left out of the backward pass (it fails on them otherwise). Default: none."""
        return []

    # ---- the block loop -----------------------------------------------------------------------
    def run_blocks(self, x: torch.Tensor, context: BlockContext, state: State | None) -> torch.Tensor:
        layers = state.layers if state is not None else [None] * len(self.blocks)
        recompute = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for block, layer_state in zip(self.blocks, layers):
            if recompute and layer_state is None:
                x, handed_on = checkpoint(_block_on_copy, block, x, copy.copy(context), use_reentrant=False)
                context.__dict__.update(handed_on.__dict__)
            else:
                x = block(x, context, layer_state)
        return x

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ---- shared ---------------------------------------------------------------------------
    def init_weights(self) -> None:
        """N(0, init_std) everywhere; residual output projections scaled by 1/sqrt(2 n_layers)."""
        std = self.config.init_std
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, std)
        for param in self.parameters():
            if param.dim() == 3:  # stacked expert weights
                nn.init.normal_(param, 0.0, std)
        scaled = std / math.sqrt(2 * self.config.n_layers)
        for module in self.modules():
            if getattr(module, "residual_projection", False):
                nn.init.normal_(module.weight, 0.0, scaled)
            for param in module.parameters(recurse=False):
                if getattr(param, "residual_projection", False):
                    nn.init.normal_(param, 0.0, scaled)

    def init_state(self) -> State:
        """An empty decoding state; each part is allocated by the first call that fills it, for
        that call's batch size, device and dtype."""
        return State([block.new_state() for block in self.blocks], extras=self.new_extras())

    def check_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        if not isinstance(input_ids, torch.Tensor):
            raise LmzooError(f"input_ids must be a torch.Tensor, got {type(input_ids).__name__}")
        if input_ids.dim() == 1:
            input_ids = input_ids.unsqueeze(0)
        if input_ids.dim() != 2:
            raise LmzooError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
        if input_ids.numel() == 0:
            raise LmzooError("input_ids is empty; pass at least one token per sample")
        if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
            raise LmzooError(f"input_ids must be an integer tensor, got {input_ids.dtype}")
        if self.check_inputs:
            low, high = int(input_ids.min()), int(input_ids.max())
            if low < 0 or high >= self.config.vocab_size:
                raise LmzooError(
                    f"token id out of range: ids span [{low}, {high}] but the model's vocab_size is "
                    f"{self.config.vocab_size}; use the tokenizer the model was trained with")
        return input_ids

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None,
                state: State | None = None, use_cache: bool = False, logits_to_keep: int = 0,
                token_stats: bool = False) -> LMOutput:
        input_ids = self.check_input_ids(input_ids)
        if state is None and use_cache:
            state = self.init_state()
        if state is not None and state.per_row and input_ids.shape[1] != 1:
            raise LmzooError(f"the state's rows sit at different positions, so each call feeds one token per row, "
                             f"got {input_ids.shape[1]}; prefill each prompt alone, then join the states")
        context = self.new_context(input_ids, state)
        if token_stats:
            context.token_stats = {}
        hidden, aux_loss, stats = self.backbone(input_ids, state, context)
        if state is not None:
            state.position = state.position + input_ids.shape[1]
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.output_logits(hidden)
        loss = None
        if labels is not None:
            loss = causal_lm_loss(logits, labels.reshape(input_ids.shape))
            if aux_loss is not None:
                loss = loss + aux_loss
        return LMOutput(logits=logits, loss=loss, aux_loss=aux_loss, state=state, stats=stats,
                        token_stats=context.token_stats or {})

    def output_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits from the final hidden states; an architecture without a head overrides this."""
        return self.lm_head(hidden)

    def embedding_parameters(self) -> list[nn.Parameter]:
        """Per-token parameters (table and LM head); architectures with other token embeddings add theirs."""
        return [m.weight for m in (self.embed, self.lm_head) if m is not None]

    def num_parameters(self, embedding: bool | None = None) -> int:
        """All parameters (None), only the embedding/LM head (True) or the rest (False)."""
        emb_ids = {id(p) for p in self.embedding_parameters()}
        total = 0
        for p in {id(p): p for p in self.parameters()}.values():
            is_emb = id(p) in emb_ids
            if embedding is None or embedding == is_emb:
                total += p.numel()
        return total

    def generate(self, inputs: torch.Tensor | str, max_new_tokens: int = 64, max_length: int | None = None,
                 **kwargs) -> torch.Tensor | str:
        """Continue token ids [B, L] (returns prompt + new ids) or a text prompt (returns prompt + new
        text; needs `self.tokenizer`, which a saved model brings). `max_length`, HF's and the seeds'
        name, caps prompt + new tokens instead. Options: `lmzoo.generation.generate`."""
        from lmzoo.generation import generate, generate_text
        text = isinstance(inputs, str)
        if text and self.tokenizer is None:
            raise LmzooError("a text prompt needs the model's tokenizer: load a saved model, or set "
                             "model.tokenizer (e.g. lmzoo.tokenizers.get_tokenizer('bytes')) or pass token ids")
        if max_length is not None:
            prompt_len = len(self.tokenizer.encode(inputs)) if text else inputs.shape[-1]
            if max_length <= prompt_len:
                raise LmzooError(f"max_length {max_length} leaves no room after the {prompt_len}-token prompt; "
                                 "raise it or use max_new_tokens")
            max_new_tokens = max_length - prompt_len
        if text:
            return inputs + generate_text(self, self.tokenizer, inputs, max_new_tokens, **kwargs)[0]
        return generate(self, inputs, max_new_tokens=max_new_tokens, **kwargs)

    def to_hf(self):
        """This model as a Hugging Face `transformers` model sharing its weights (`lmzoo.hf`, needs lmzoo[hf]);
        `lmzoo.hf.export_hf` writes it as a directory that `AutoModelForCausalLM.from_pretrained` loads."""
        from lmzoo.hf.modeling import to_hf
        return to_hf(self)

    def save_pretrained(self, directory, tokenizer=None) -> None:
        save_pretrained(self, directory, tokenizer or self.tokenizer)

    @classmethod
    def from_pretrained(cls, directory, map_location: str = "cpu") -> "CausalLM":
        """A model of this class saved in `directory` (lmzoo.load() takes any architecture and runs)."""
        if not cls.config_cls.arch:
            raise LmzooError("CausalLM.from_pretrained needs an architecture's class; use lmzoo.load(directory) "
                             "to load any architecture")
        config = cls.config_cls.from_dict(read_config_dict(directory))
        return load_into_class(cls, config, directory, map_location)
