"""Supervised fine-tuning on question-answer pairs: full, freeze or LoRA -> a plain lmzoo model.

    finetune(FinetuneConfig(base="runs/shake", data="qa.jsonl", out="ft/", method="lora"))

Each example becomes `prompt + answer + eos`, where the prompt is `format_prompt(question,
template)` -- the same function `lmzoo eval --qa` asks questions with. The loss covers only the
answer and its eos (every prompt label is -100), so the model learns to answer, not to echo
questions. Batches are right-padded with eos (labels -100): every architecture is strictly
causal, so padding after a sequence cannot change its logits.

Methods:
  full    every parameter trains.
  freeze  the embeddings (and the LM head tied to them) and the first N blocks are frozen.
  lora    low-rank adapters (via `peft`) on the attention input projections; after training they
          are merged into the weights, so the output is an ordinary checkpoint `lmzoo.load` opens
          without peft.

The output directory holds the model (`save_pretrained`, with the base model's tokenizer) and
`finetune.json`: the method, parameter counts, per-epoch losses, the template and the run time.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from lmzoo.devices import resolve_device
from lmzoo.errors import LmzooError
from lmzoo.io import write_json_atomic
from lmzoo.locking import output_lock
from lmzoo.modeling import causal_lm_loss
from lmzoo.training.optim import CosineSchedule, build_optimizer, set_lr
from lmzoo.training.qa_eval import (
    DEFAULT_TEMPLATE,
    FINETUNE_REPORT,
    QAExample,
    check_template,
    format_prompt,
    read_qa_jsonl,
)

METHODS = ("full", "freeze", "lora")
DTYPES = ("auto", "fp32", "bf16")
DEFAULT_LR = {"full": 1e-4, "freeze": 1e-4, "lora": 1e-3}


@dataclass
class FinetuneConfig:
    base: str                              # saved model, checkpoint or training run directory
    data: str                              # Q&A JSONL (see qa_eval.py for the accepted shapes)
    out: str                               # output model directory
    method: str = "lora"
    template: str = DEFAULT_TEMPLATE
    epochs: int = 3
    max_steps: int | None = None           # overrides epochs when set
    batch_size: int = 8
    lr: float | None = None                # None: DEFAULT_LR[method]
    min_lr_ratio: float = 0.1
    warmup_steps: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    val_fraction: float = 0.1
    max_length: int = 512                  # longer examples (prompt + answer + eos) are skipped
    seed: int = 0
    threads: int | None = None
    device: str = "auto"
    dtype: str = "auto"
    freeze_layers: int | None = None       # freeze: None = half of the blocks
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: tuple = field(default_factory=tuple)  # empty: the architecture's `lora_targets`

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise LmzooError(f"unknown fine-tuning method '{self.method}'; choose one of: {', '.join(METHODS)}")
        if self.dtype not in DTYPES:
            raise LmzooError(f"unknown dtype '{self.dtype}'; choose one of: {', '.join(DTYPES)}")
        check_template(self.template)
        for name in ("lr", "min_lr_ratio", "weight_decay", "grad_clip", "val_fraction", "lora_alpha", "lora_dropout"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise LmzooError(f"{name} must be a finite number, got {value}")
        if self.lora_alpha <= 0 or not 0 <= self.seed < 2**63 or (self.freeze_layers or 0) < 0 \
                or (self.threads or 1) < 1:
            raise LmzooError("lora_alpha must be > 0, seed in [0, 2**63), freeze_layers >= 0 and threads >= 1; got "
                             f"{self.lora_alpha}, {self.seed}, {self.freeze_layers} and {self.threads}")
        for name in ("epochs", "batch_size", "max_length", "lora_r"):
            if getattr(self, name) < 1:
                raise LmzooError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise LmzooError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.warmup_steps < 0 or self.grad_clip < 0 or self.weight_decay < 0:
            raise LmzooError("warmup_steps, grad_clip and weight_decay must be >= 0")
        if not 0.0 <= self.val_fraction < 1.0:
            raise LmzooError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise LmzooError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise LmzooError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.lr is None:
            self.lr = DEFAULT_LR[self.method]
        if self.lr <= 0:
            raise LmzooError(f"lr must be > 0, got {self.lr}")
        self.lora_targets = tuple(self.lora_targets)


# ---- data --------------------------------------------------------------------------------------
def build_example(tokenizer, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    """(input ids, labels) for one example: ids = prompt + answer + eos; labels are the ids on the
    answer and eos and -100 on the prompt. Labels align with the ids (the model shifts them)."""
    prompt_ids, answer_ids = tokenizer.encode(prompt), tokenizer.encode(answer) + [tokenizer.eos_id]
    return prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids


def split_examples(examples: list[QAExample], val_fraction: float, seed: int):
    """A seeded shuffle, then the first round(n * val_fraction) (at least one) for validation."""
    if val_fraction <= 0:
        return list(examples), []
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(examples) * val_fraction))
    if n_val >= len(examples):
        raise LmzooError(f"{len(examples)} example(s) leave nothing to train on with val_fraction "
                         f"{val_fraction}; add examples or pass --val-fraction 0")
    val = sorted(order[:n_val])
    train = sorted(order[n_val:])
    return [examples[i] for i in train], [examples[i] for i in val]


def encode_examples(examples: list[QAExample], tokenizer, template: str, max_length: int):
    """-> (list of (ids, labels), number skipped for being longer than max_length)."""
    encoded, skipped = [], 0
    for e in examples:
        ids, labels = build_example(tokenizer, format_prompt(e.question, template), e.answer)
        if len(ids) > max_length:
            skipped += 1
        else:
            encoded.append((ids, labels))
    return encoded, skipped


def collate(items: list[tuple[list[int], list[int]]], pad_id: int, device=None):
    """Right-pad to the longest: ids with `pad_id`, labels with -100. -> (ids, labels) [B, L]."""
    width = max(len(ids) for ids, _ in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), -100, dtype=torch.long)
    for row, (x, y) in enumerate(items):
        ids[row, :len(x)] = torch.tensor(x)
        labels[row, :len(y)] = torch.tensor(y)
    return ids.to(device), labels.to(device)


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Length-bucketed batches of indices: shuffle, sort within pools of 16 batches (little
    padding), then shuffle the batch order. A pure function of (seed, epoch)."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * 16
    batches = []
    for begin in range(0, len(order), pool):
        chunk = sorted(order[begin:begin + pool], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


# ---- methods -----------------------------------------------------------------------------------
def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters, each shared tensor (a tied LM head) counted once."""
    params = list(model.parameters())  # deduplicated by nn.Module
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def freeze_layers(model: nn.Module, n: int) -> None:
    """Freeze the token embeddings (and a head tied to them) and blocks[:n]; the rest stays trainable."""
    blocks = model.blocks
    if not 0 <= n <= len(blocks):
        raise LmzooError(f"--freeze-layers {n} is out of range; the model has {len(blocks)} blocks")
    untied_head = None if model.config.tie_embeddings or model.lm_head is None else model.lm_head.weight
    for param in model.embedding_parameters():  # the token embeddings, and a head tied to them
        if param is not untied_head:
            param.requires_grad_(False)
    for block in blocks[:n]:
        block.requires_grad_(False)


def lora_targets(model: nn.Module, names: tuple | list = ()) -> list[str]:
    """Full names of the Linear layers LoRA adapts: those whose attribute name is in `names`
    (default: the architecture's declared `lora_targets`). The LM head is never a target (merging into a head tied to
    the embedding would change the embedding too)."""
    wanted = set(names) if names else set(model.lora_targets)
    linear = [name for name, module in model.named_modules() if isinstance(module, nn.Linear) and name != "lm_head"]
    found = [name for name in linear if name.rsplit(".", 1)[-1] in wanted]
    if not found:
        available = sorted({name.rsplit(".", 1)[-1] for name in linear})
        raise LmzooError(f"no Linear layer named {sorted(wanted)} in '{model.config.arch}' to put LoRA on; "
                         f"pass --lora-targets with some of: {', '.join(available) or '(none)'}")
    missing = sorted(wanted - {name.rsplit(".", 1)[-1] for name in found}) if names else []
    if missing:
        raise LmzooError(f"--lora-targets {', '.join(missing)} match(es) no Linear layer of '{model.config.arch}'")
    return found


def _import_peft():
    try:
        import peft
    except ImportError as e:
        raise LmzooError("--method lora needs the `peft` package; pip install -e '.[finetune]'") from e
    return peft


def add_lora(model: nn.Module, r: int = 8, alpha: float = 16.0, dropout: float = 0.0, targets=()) -> nn.Module:
    """Wrap `model` with peft LoRA adapters (B = 0 at first, so outputs are unchanged); only the
    adapters are trainable."""
    peft = _import_peft()
    config = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=lora_targets(model, targets))
    return peft.get_peft_model(model, config)


def merge_lora(peft_model: nn.Module) -> nn.Module:
    """Fold the adapters into the weights and return the plain lmzoo model."""
    model = peft_model.merge_and_unload()
    model.requires_grad_(True)
    return model


# ---- the loop ----------------------------------------------------------------------------------
def _autocast(dtype: str, device: torch.device):
    if dtype == "bf16" or (dtype == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def answer_loss(model: nn.Module, data, batch_size: int, pad_id: int, device, autocast_dtype: str = "fp32"):
    """Mean cross-entropy over answer tokens (no auxiliary loss); None without data."""
    if not data:
        return None
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for begin in range(0, len(data), batch_size):
            ids, labels = collate(data[begin:begin + batch_size], pad_id, device)
            with _autocast(autocast_dtype, device):
                logits = model(ids).logits
            n = int((labels[:, 1:] != -100).sum())
            total += float(causal_lm_loss(logits, labels)) * n
            count += n
    finally:
        model.train(was_training)
    return total / max(count, 1)


def _prepare(model: nn.Module, cfg: FinetuneConfig) -> tuple[nn.Module, dict]:
    """Apply the method; return the model to train and what to report about it."""
    if cfg.method == "full":
        return model, {}
    if cfg.method == "freeze":
        n = cfg.freeze_layers if cfg.freeze_layers is not None else len(model.blocks) // 2
        freeze_layers(model, n)
        return model, {"frozen_blocks": n}
    targets = lora_targets(model, cfg.lora_targets)  # before wrapping renames the layers
    wrapped = add_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets)
    return wrapped, {"lora_targets": targets, "lora_r": cfg.lora_r, "lora_alpha": cfg.lora_alpha,
                     "lora_dropout": cfg.lora_dropout}


def _log(message: str, verbose: bool) -> None:
    if verbose:
        print(message, file=sys.stderr, flush=True)


def finetune(cfg: FinetuneConfig, verbose: bool = True) -> dict:
    """Fine-tune `cfg.base` on `cfg.data`, save a plain model to `cfg.out`, return the report."""
    with output_lock(cfg.out):
        return _finetune(cfg, verbose)


def _finetune(cfg: FinetuneConfig, verbose: bool) -> dict:
    import lmzoo
    from lmzoo.checkpoint import check_model_output
    from lmzoo.training.checkpointing import resolve_model_dir

    started = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    base_dir = resolve_model_dir(cfg.base)
    if Path(cfg.out).resolve() == base_dir.resolve():
        raise LmzooError(f"--out {cfg.out} is the base model's directory; write the fine-tuned model elsewhere")
    check_model_output(cfg.out)  # now, not after training: --out may only replace a saved model
    torch.manual_seed(cfg.seed)
    model = lmzoo.load(base_dir)
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise LmzooError(f"'{base_dir}' has no tokenizer.json; fine-tuning needs the base model's tokenizer")
    if tokenizer.vocab_size > model.config.vocab_size:
        raise LmzooError(f"the tokenizer's vocabulary ({tokenizer.vocab_size}) exceeds the model's "
                         f"({model.config.vocab_size}); the tokenizer does not belong to this model")
    model.check_inputs = False  # ids come from the model's own tokenizer (checked above)

    train_ex, val_ex = split_examples(read_qa_jsonl(cfg.data), cfg.val_fraction, cfg.seed)
    train, skipped_train = encode_examples(train_ex, tokenizer, cfg.template, cfg.max_length)
    val, skipped_val = encode_examples(val_ex, tokenizer, cfg.template, cfg.max_length)
    if not train:
        raise LmzooError(f"every training example is longer than --max-length {cfg.max_length} tokens; raise it")

    model.to(device)
    trained, method_info = _prepare(model, cfg)
    trainable, total = count_parameters(trained)
    _log(f"{cfg.method}: {trainable:,} of {total:,} parameters trainable ({100 * trainable / total:.3f}%); "
         f"{len(train)} train / {len(val)} val examples", verbose)
    optimizer = build_optimizer(trained, cfg.lr, cfg.weight_decay, (0.9, 0.999))
    batches_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total_steps = cfg.max_steps or cfg.epochs * batches_per_epoch
    schedule = CosineSchedule(cfg.lr, cfg.warmup_steps, total_steps, cfg.min_lr_ratio)
    params = [p for p in trained.parameters() if p.requires_grad]
    pad_id = tokenizer.eos_id

    def val_loss():
        return answer_loss(trained, val, cfg.batch_size, pad_id, device, cfg.dtype)

    history = [{"epoch": 0, "step": 0, "val_loss": val_loss()}]
    step, epoch = 0, 0
    trained.train()
    while step < total_steps:
        losses = []
        for batch in epoch_batches([len(x) for x, _ in train], cfg.batch_size, cfg.seed, epoch):
            if step == total_steps:
                break
            ids, labels = collate([train[i] for i in batch], pad_id, device)
            set_lr(optimizer, schedule(step))
            with _autocast(cfg.dtype, device):
                loss = trained(ids, labels=labels).loss
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            if not math.isfinite(losses[-1]):
                raise LmzooError(f"non-finite loss at step {step + 1}; lower --lr or --grad-clip")
            step += 1
        epoch += 1
        row = {"epoch": epoch, "step": step, "train_loss": sum(losses) / len(losses), "val_loss": val_loss()}
        history.append(row)
        val_text = "" if row["val_loss"] is None else f" | val loss {row['val_loss']:.4f}"
        _log(f"epoch {epoch} | step {step}/{total_steps} | train loss {row['train_loss']:.4f}{val_text}", verbose)
    trained.eval()

    merge_diff = None
    if cfg.method == "lora":
        probe, _ = collate((val or train)[:cfg.batch_size], pad_id, device)
        with torch.no_grad():
            before = trained(probe).logits.float()
            model = merge_lora(trained)
            merge_diff = float((model(probe).logits.float() - before).abs().max())
    model.requires_grad_(True)
    model.check_inputs = True
    model.cpu().save_pretrained(cfg.out, tokenizer)
    report = {
        "method": cfg.method, "base": str(base_dir), "data": str(cfg.data), "template": cfg.template,
        "trainable_params": trainable, "total_params": total, "trainable_ratio": trainable / total,
        **method_info,
        "examples": {"train": len(train), "val": len(val), "skipped_too_long": skipped_train + skipped_val},
        "steps": step, "epochs": history,
        "train_loss": history[-1].get("train_loss"), "val_loss": history[-1]["val_loss"],
        "initial_val_loss": history[0]["val_loss"], "merge_max_abs_diff": merge_diff,
        "elapsed_s": time.perf_counter() - started, "config": _config_dict(cfg), "out": str(cfg.out),
    }
    write_json_atomic(Path(cfg.out) / FINETUNE_REPORT, report)
    return report


def _config_dict(cfg: FinetuneConfig) -> dict:
    data = dataclasses.asdict(cfg)
    data["lora_targets"] = list(cfg.lora_targets)
    return data
