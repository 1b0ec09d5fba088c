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

The run is the trainer's (`trainer.py`) with `QATask` as its task: the same step, console
output, metrics.jsonl and checkpoints, in the run directory (default `OUT.run`), and a killed
run resumes where its last checkpoint left off. A LoRA run's checkpoints hold the model with its
adapters unmerged (`...qkv.base_layer.weight`, `...qkv.lora_A.default.weight`), which is what
resuming needs. At the end OUT gets the model (`save_pretrained`, with the base model's
tokenizer) and `finetune.json`: the method, parameter counts, the loss before training and at
each evaluation, the template and the run time.
"""
from __future__ import annotations

import argparse
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lmzoo.checkpoint import check_model_output
from lmzoo.devices import autocast
from lmzoo.errors import LmzooError
from lmzoo.io import write_json_atomic
from lmzoo.modeling import causal_lm_loss
from lmzoo.paths import check_output_dir
from lmzoo.training.checkpointing import load, resolve_model_dir
from lmzoo.training.config import MAX_STEP_TOKENS, REQUIRED, LoopConfig, flag_field
from lmzoo.training.qa_eval import (
    DEFAULT_TEMPLATE,
    FINETUNE_REPORT,
    QAExample,
    check_template,
    format_prompt,
    read_qa_jsonl,
    unescape,
)
from lmzoo.training.tasks import Task
from lmzoo.training.trainer import run_training

METHODS = ("full", "freeze", "lora")
DEFAULT_LR = {"full": 1e-4, "freeze": 1e-4, "lora": 1e-3}
# Fields whose change makes a resumed fine-tune diverge from the run it continues (the learning
# rate is compared through the schedule).
TRAJECTORY_FIELDS = ("base", "data", "method", "template", "val_fraction", "max_length", "batch_size",
                     "grad_accum", "seed", "weight_decay", "betas", "grad_clip", "dtype", "freeze_layers",
                     "lora_r", "lora_alpha", "lora_dropout", "lora_targets")


def _names(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer names, got '{text}'")
    return names


@dataclass(kw_only=True)
class FinetuneConfig(LoopConfig):
    """Fine-tuning (`lmzoo finetune`): a saved model adapted to question-answer examples."""

    what = "fine-tuning"
    base: str = flag_field(REQUIRED, "base model: a saved model, a training checkpoint or a training run directory",
                           flag="base")
    data: str = flag_field(REQUIRED, "JSONL, one {question, answer} (or {prompt, completion}, "
                                     "{instruction, input?, output}) object per line")
    out: str = flag_field(REQUIRED, "directory for the fine-tuned model and finetune.json")
    run_dir: str = flag_field("", "directory for metrics.jsonl and checkpoints/ (default: OUT.run, beside OUT)")
    method: str = flag_field("lora", "full: every weight; freeze: freeze the embeddings and the first "
                                     "--freeze-layers blocks; lora: low-rank adapters merged at the end",
                             choices=METHODS)
    template: str = flag_field(DEFAULT_TEMPLATE, "prompt before each answer, with a {question} placeholder; \\n is a "
                                                 "newline; `lmzoo eval --qa` reuses it", type=unescape)
    epochs: int = flag_field(3, "passes over the training examples")
    val_fraction: float = flag_field(0.1, "share of the examples held out for the val loss (answer tokens only)")
    max_length: int = flag_field(512, "skip examples longer than this many tokens")
    freeze_layers: int | None = flag_field(None, "freeze: how many of the first blocks to freeze "
                                                 "(default: half of them)")
    lora_r: int = flag_field(8, "LoRA rank")
    lora_alpha: float = flag_field(16.0, "LoRA alpha; the update is scaled by alpha/r")
    lora_dropout: float = flag_field(0.0, "dropout on the LoRA input")
    lora_targets: tuple = flag_field((), "comma-separated names of Linear layers to adapt (default: the "
                                         "architecture's token-mixer input projections, its `lora_targets`)",
                                     type=_names)
    # ---- the loop's fields, with fine-tuning's defaults ----
    batch_size: int = flag_field(8, "examples per micro-batch, per process")
    max_steps: int | None = flag_field(None, "optimizer steps to train for (default: --epochs passes)")
    lr: float | None = flag_field(None, "peak learning rate (default: " + ", ".join(
        f"{method} {lr:g}" for method, lr in DEFAULT_LR.items()) + ")")
    warmup_steps: int = flag_field(0, "steps of linear warmup from 0 to --lr")
    weight_decay: float = flag_field(0.0, "AdamW weight decay (not applied to norms, biases, embeddings)")
    betas: tuple = flag_field((0.9, 0.999), "AdamW betas", nargs=2, metavar=("BETA1", "BETA2"))
    eval_interval: int | None = flag_field(None, "evaluate on the held-out examples every N steps (default: at the "
                                                 "end of each epoch); 0 = only at the end")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method not in METHODS:
            raise LmzooError(f"unknown fine-tuning method '{self.method}'; choose one of: {', '.join(METHODS)}")
        check_template(self.template)
        for name in ("epochs", "max_length", "lora_r"):
            if getattr(self, name) < 1:
                raise LmzooError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise LmzooError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise LmzooError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        step_tokens = self.batch_size * self.grad_accum * self.max_length
        if step_tokens > MAX_STEP_TOKENS:  # the padded batch is allocated at once
            raise LmzooError(f"batch_size * grad_accum * max_length = {step_tokens:,} tokens per step and process; "
                             f"keep it <= {MAX_STEP_TOKENS:,}")
        if self.lora_alpha <= 0 or (self.freeze_layers or 0) < 0:
            raise LmzooError(f"lora_alpha must be > 0 and freeze_layers >= 0; got {self.lora_alpha} and "
                             f"{self.freeze_layers}")
        if self.lora_targets and self.method != "lora":
            raise LmzooError(f"--lora-targets needs --method lora, got --method {self.method}")
        if self.lr is None:
            self.lr = DEFAULT_LR[self.method]
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


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int, multiple: int = 1) -> list[list[int]]:
    """Length-bucketed batches of indices: shuffle, sort within pools of 16 batches (little
    padding), then shuffle the batch order. A pure function of (seed, epoch). A short batch is
    filled up to a multiple of `multiple` rows with its own examples again, so that it splits
    evenly into processes and micro-batches."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * 16
    batches = []
    for begin in range(0, len(order), pool):
        chunk = sorted(order[begin:begin + pool], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    batches = [[b[i % len(b)] for i in range(-(-len(b) // multiple) * multiple)] for b in batches]
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


@torch.no_grad()
def answer_loss(model: nn.Module, examples: list, batch_size: int, pad_id: int, device: torch.device,
                autocast_dtype: torch.dtype | None = None) -> float | None:
    """Mean cross-entropy over the answer tokens of encoded `examples` (no auxiliary loss); None
    without examples. Sums stay on the device until the end."""
    if not examples:
        return None
    was_training = model.training
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss x answer tokens, answer tokens
    try:
        for begin in range(0, len(examples), batch_size):
            ids, labels = collate(examples[begin:begin + batch_size], pad_id, device)
            with autocast(autocast_dtype, device):
                logits = model(ids).logits
            answer_tokens = (labels[:, 1:] != -100).sum()
            sums[0] += causal_lm_loss(logits, labels).double() * answer_tokens
            sums[1] += answer_tokens
    finally:
        model.train(was_training)
    total, count = sums.tolist()
    return total / max(count, 1)


# ---- the task ----------------------------------------------------------------------------------
def _load_base(base_dir: Path) -> nn.Module:
    model = load(base_dir)
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise LmzooError(f"'{base_dir}' has no tokenizer.json; fine-tuning needs the base model's tokenizer")
    if tokenizer.vocab_size > model.config.vocab_size:
        raise LmzooError(f"the tokenizer's vocabulary ({tokenizer.vocab_size}) exceeds the model's "
                         f"({model.config.vocab_size}); the tokenizer does not belong to this model")
    model.check_inputs = False  # ids come from the model's own tokenizer (checked above)
    return model


def _apply_method(model: nn.Module, cfg: FinetuneConfig) -> tuple[nn.Module, dict]:
    """Apply the method; return the model as adapted (LoRA: the peft wrapper around `model`, whose
    layers it replaced in place) and what to report about it."""
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


class QATask(Task):
    """`lmzoo finetune`'s part of the run: the base model with the method applied, padded Q&A
    examples (a pure function of seed and step), the answer loss on the held-out examples."""

    kind = "finetune"
    eval_at_start = True  # the report's loss before training

    def __init__(self, cfg: FinetuneConfig, verbose: bool = True):
        self.cfg, self.verbose = cfg, verbose
        # Checked before the trainer locks them: a lock file cannot be made under a file.
        self.out = check_output_dir(cfg.out)
        self.run_dir = check_output_dir(cfg.run_dir or f"{self.out.resolve()}.run", "--run-dir")
        self.outputs = (self.out, self.run_dir)
        self.history: list[dict] = []  # one entry per evaluation: the report's "epochs"
        self.started = time.perf_counter()
        self._planned_epoch, self._plan = None, []

    def prepare(self, env, autocast_dtype):
        cfg = self.cfg
        self.base_dir = resolve_model_dir(cfg.base)
        self._check_outputs()
        model = _load_base(self.base_dir)
        self.tokenizer, self.pad_id = model.tokenizer, model.tokenizer.eos_id
        train, val = split_examples(read_qa_jsonl(cfg.data), cfg.val_fraction, cfg.seed)
        self.train, skipped_train = encode_examples(train, self.tokenizer, cfg.template, cfg.max_length)
        self.val, skipped_val = encode_examples(val, self.tokenizer, cfg.template, cfg.max_length)
        self.skipped = skipped_train + skipped_val
        if not self.train:
            raise LmzooError(f"every training example is longer than --max-length {cfg.max_length} tokens; raise it")
        self.lengths = [len(ids) for ids, _ in self.train]
        self.shortest_sequence = min(self.lengths)
        self.adapted, self.method_info = _apply_method(model, cfg)
        self.trainable, self.total = count_parameters(self.adapted)
        if self.verbose and env.is_main:
            print(f"{cfg.method}: {self.trainable:,} of {self.total:,} parameters trainable "
                  f"({100 * self.trainable / self.total:.3f}%); {len(self.train)} train / {len(self.val)} val "
                  "examples", file=sys.stderr, flush=True)
        self.splits = env.world_size * cfg.grad_accum  # a step's examples: per process, per micro-batch
        self.steps_per_epoch = math.ceil(len(self.train) / (cfg.batch_size * self.splits))
        self.total_steps = cfg.max_steps or cfg.epochs * self.steps_per_epoch
        self.eval_interval = self.steps_per_epoch if cfg.eval_interval is None else cfg.eval_interval
        return model

    def _check_outputs(self) -> None:
        out, run_dir = self.out.resolve(), self.run_dir.resolve()
        if out == self.base_dir.resolve():
            raise LmzooError(f"--out {self.cfg.out} is the base model's directory; write the fine-tuned model "
                             "elsewhere")
        if run_dir == out or out in run_dir.parents:
            raise LmzooError(f"--run-dir {self.run_dir} is inside --out {self.cfg.out}, which holds only the model; "
                             "put the run beside it")
        if run_dir in self.base_dir.resolve().parents:
            raise LmzooError(f"--run-dir {self.run_dir} holds the base model; give the fine-tuning run its own")
        check_model_output(self.out)  # now, not after training: --out may only replace a saved model

    def batch(self, step, env):
        epoch, index = divmod(step, self.steps_per_epoch)
        if epoch != self._planned_epoch:
            self._plan = epoch_batches(self.lengths, self.cfg.batch_size * self.splits, self.cfg.seed, epoch,
                                       multiple=self.splits)
            self._planned_epoch = epoch
        examples = self._plan[index]
        share = len(examples) // env.world_size
        mine = examples[env.rank * share:(env.rank + 1) * share]
        size = len(mine) // self.cfg.grad_accum
        micro_batches = [collate([self.train[i] for i in mine[begin:begin + size]], self.pad_id, env.device)
                         for begin in range(0, len(mine), size)]
        return micro_batches, sum(self.lengths[i] for i in examples)

    def evaluate(self, model, step, env, autocast_dtype):
        if not self.val:
            return {}
        return {"val_loss": answer_loss(model, self.val, self.cfg.batch_size, self.pad_id, env.device,
                                        autocast_dtype)}

    def after_eval(self, step, row):
        entry = {"epoch": math.ceil(step / self.steps_per_epoch), "step": step}
        if "train_loss" in row:
            entry["train_loss"] = row["train_loss"]
        self.history.append({**entry, "val_loss": row.get("val_loss")})

    def row(self, step):
        return {"epoch": step // self.steps_per_epoch + 1}

    def trajectory_fields(self, saved):
        return TRAJECTORY_FIELDS

    def state_dict(self):
        return {"history": self.history}

    def load_state_dict(self, trainer_state, step):
        self.history = list(trainer_state.get("history", []))

    def finish(self, model, env, summary):
        """Save the plain model and finetune.json (rank 0, once the run is complete)."""
        if summary["status"] != "completed" or not env.is_main:
            return summary
        model, merge_diff = self._merged(model)
        model.requires_grad_(True)
        model.check_inputs = True
        model.cpu().save_pretrained(self.out, self.tokenizer)
        cfg, history = self.cfg, self.history
        report = {
            "status": "completed", "method": cfg.method, "base": str(self.base_dir), "data": str(cfg.data),
            "template": cfg.template, "trainable_params": self.trainable, "total_params": self.total,
            "trainable_ratio": self.trainable / self.total, **self.method_info,
            "examples": {"train": len(self.train), "val": len(self.val), "skipped_too_long": self.skipped},
            "steps": summary["step"], "epochs": history,
            "train_loss": history[-1].get("train_loss"), "val_loss": history[-1]["val_loss"],
            "initial_val_loss": history[0]["val_loss"], "merge_max_abs_diff": merge_diff,
            "elapsed_s": time.perf_counter() - self.started, "config": cfg.to_dict(), "out": str(cfg.out),
            "run_dir": str(self.run_dir),
        }
        write_json_atomic(self.out / FINETUNE_REPORT, report)
        return report

    def _merged(self, model: nn.Module) -> tuple[nn.Module, float | None]:
        """The model to save: for LoRA the adapters folded into the weights, and the largest
        change that made to the logits of a batch."""
        model.eval()
        if self.cfg.method != "lora":
            return model, None
        probe, _ = collate((self.val or self.train)[:self.cfg.batch_size], self.pad_id,
                           next(model.parameters()).device)
        with torch.no_grad():
            before = self.adapted(probe).logits.float()
            model = merge_lora(self.adapted)
            return model, float((model(probe).logits.float() - before).abs().max())


def finetune(cfg: FinetuneConfig, verbose: bool = True) -> dict:
    """Fine-tune `cfg.base` on `cfg.data` (resuming the run's newest checkpoint, if any) and save
    a plain model and finetune.json to `cfg.out`; return the report, or the trainer's summary
    when the run was stopped early."""
    return run_training(cfg, QATask(cfg, verbose), verbose)
