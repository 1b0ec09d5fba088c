"""What a run trains: the `Task` the trainer asks for its model, batches and evaluation.

The trainer (`trainer.py`) owns what every run shares: the optimizer step (schedule, clipping,
autocast, accumulation, non-finite skips), logging, metrics.jsonl, checkpoints and resume,
Ctrl-C and the output locks. A task supplies the rest:

    prepare(env, autocast_dtype) -> model     load data and model; set total_steps, eval_interval
    batch(step, env) -> micro-batches, tokens  (input ids, labels) pairs: a pure function of the step
    evaluate(model, step, env, autocast_dtype) -> the eval row's fields
    finish(model, env, summary) -> result     after the loop: write the final output, if any

and optional hooks (below, with what they default to). `Pretraining` is `lmzoo train`;
`finetune.QATask` is `lmzoo finetune`.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from lmzoo.errors import LmzooError
from lmzoo.registry import create_model, get_architecture
from lmzoo.training.config import TrainConfig
from lmzoo.training.curriculum import build_curriculum, curriculum_fields
from lmzoo.training.evaluate import evaluate

MicroBatches = list[tuple[torch.Tensor, torch.Tensor]]  # (input ids, labels) per micro-batch


class Task:
    """The part of a run the trainer leaves open (see the module docstring)."""

    kind = ""                     # stored in checkpoints: a run resumes only checkpoints of its own kind
    run_dir: Path                 # metrics.jsonl and checkpoints/
    outputs: tuple[Path, ...]     # what the run writes, locked by rank 0 for the whole run
    eval_at_start = False         # also evaluate before the first step
    total_steps: int              # set by prepare()
    eval_interval: int            # set by prepare(); 0 = only at the end
    shortest_sequence: int        # set by prepare(): the fewest tokens a training sequence may hold

    def prepare(self, env, autocast_dtype: torch.dtype | None) -> nn.Module:
        raise NotImplementedError

    def batch(self, step: int, env) -> tuple[MicroBatches, int]:
        """This rank's micro-batches of step `step`, and the tokens of the step's global batch."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, step: int, env, autocast_dtype: torch.dtype | None) -> dict:
        raise NotImplementedError

    def trajectory_fields(self, saved: dict) -> tuple[str, ...]:
        """Config fields whose change on resume makes the run diverge from an uninterrupted one."""
        raise NotImplementedError

    def finish(self, model: nn.Module, env, summary: dict) -> dict:
        return summary

    # ---- optional hooks --------------------------------------------------------------------
    def before_step(self, step: int) -> None:
        """Called before drawing step `step`'s batch."""

    def schedule_step(self, step: int) -> float:
        """Where the learning-rate schedule stands for step `step` (a task with a time budget moves
        it on by its clock, so the decay ends on time)."""
        return step

    def after_eval(self, step: int, row: dict) -> None:
        """Called with each logged eval row."""

    def row(self, step: int) -> dict:
        """Extra fields for the metrics row of the batch of `step`."""
        return {}

    def postfix(self, step: int) -> dict:
        """Extra fields for the progress bar."""
        return {}

    def pop_events(self) -> list[dict]:
        """Metrics rows of what happened since the last call."""
        return []

    def state_dict(self) -> dict:
        """Entries for the checkpoint's trainer_state.json."""
        return {}

    def load_state_dict(self, trainer_state: dict, step: int) -> None:
        """Restore from a checkpoint's trainer state, saved after `step` steps."""


# Fields whose change makes a resumed run diverge from the run it continues (the learning-rate
# fields are compared through the schedule, which also depends on the run length).
TRAJECTORY_FIELDS = ("arch", "size", "model_args", "data", "seq_len", "batch_size", "grad_accum", "seed",
                     "weight_decay", "betas", "grad_clip", "dtype")


def _open_datasets(cfg: TrainConfig):
    if not cfg.data:
        raise LmzooError("no dataset given; pass --data DIR (a folder written by `lmzoo data prepare`)")
    from lmzoo.data import TokenDataset
    return TokenDataset(cfg.data, "train"), TokenDataset(cfg.data, "val")


def _build_model(cfg: TrainConfig, train_data, val_data):
    defaults = {"vocab_size": train_data.vocab_size}
    if "eos_id" in get_architecture(cfg.arch).config_cls.field_names():  # models that reset at document ends
        defaults["eos_id"] = train_data.eos_id
    model = create_model(cfg.arch, cfg.size, **{**defaults, **cfg.model_args})
    # Checked once here so the forward pass never syncs with the device to re-check ids.
    max_id = max(train_data.max_id(), val_data.max_id())
    if max_id >= model.config.vocab_size:
        raise LmzooError(f"the dataset holds token id {max_id} but the model's vocab_size is "
                         f"{model.config.vocab_size}; drop the vocab_size override or re-prepare the data")
    model.check_inputs = False
    model.tokenizer = train_data.tokenizer
    return model


def _load_initial_weights(model, source: str) -> None:
    """--init-from: the weights of a saved model whose config is this run's (bar nothing)."""
    from lmzoo.checkpoint import WEIGHTS_FILE, load_state_into, load_weights
    from lmzoo.registry import read_config
    from lmzoo.training.checkpointing import resolve_model_dir

    directory = resolve_model_dir(source)
    saved, ours = read_config(directory).to_dict(), model.config.to_dict()
    differing = sorted(key for key in set(saved) | set(ours) if saved.get(key) != ours.get(key))
    if differing:
        raise LmzooError(f"--init-from {source}: its config differs from this run's in "
                         + ", ".join(f"{k} ({saved.get(k)!r} there, {ours.get(k)!r} here)" for k in differing)
                         + "; pass the same --arch, --size and --model-arg values (and data of its vocabulary)")
    load_state_into(model, load_weights(directory / WEIGHTS_FILE), directory / WEIGHTS_FILE)


class Pretraining(Task):
    """`lmzoo train`: a model from an architecture preset, token windows of a prepared dataset
    (shuffled, or a curriculum's), validation loss and bits per byte."""

    kind = "train"

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.run_dir = Path(cfg.out)
        self.outputs = (self.run_dir,)

    def prepare(self, env, autocast_dtype):
        cfg = self.cfg
        self.train_data, self.val_data = _open_datasets(cfg)
        self.model = _build_model(cfg, self.train_data, self.val_data)
        if cfg.init_from:  # a checkpoint of this run, resumed later, replaces these weights
            _load_initial_weights(self.model, cfg.init_from)
        self.tokens_per_step = cfg.batch_size * cfg.grad_accum * env.world_size * cfg.seq_len
        self.total_steps = (cfg.max_steps if cfg.max_tokens is None
                            else math.ceil(cfg.max_tokens / self.tokens_per_step))
        self.eval_interval = cfg.eval_interval
        self.shortest_sequence = cfg.seq_len
        # The batch source: shuffled windows, or a curriculum (scored here, once; see curriculum.py).
        self.curriculum = build_curriculum(cfg, self.train_data, env, self.total_steps, autocast_dtype)
        return self.model

    def before_step(self, step):
        self.model.set_training_progress(step / self.total_steps)
        self.curriculum.before_step(step)

    def batch(self, step, env):
        cfg = self.cfg
        # This rank's share of the step's global batch, split into the accumulation micro-batches.
        windows = self.curriculum.get_batch(step, cfg.batch_size * cfg.grad_accum, cfg.seq_len, seed=cfg.seed,
                                            rank=env.rank, world_size=env.world_size, device=env.device)
        return [(micro, micro) for micro in windows.chunk(cfg.grad_accum)], self.tokens_per_step

    def evaluate(self, model, step, env, autocast_dtype):
        cfg = self.cfg
        # eval_batches per rank: N processes evaluate N times the windows of one, in the same time.
        result = evaluate(model, self.val_data, cfg.batch_size, cfg.seq_len, cfg.eval_batches * env.world_size,
                          autocast_dtype=autocast_dtype, rank=env.rank, world_size=env.world_size)
        self.curriculum.after_eval(step, result)  # may unlock the next stage
        return {"val_loss": result["loss"], "val_bpb": result["bpb"], "val_ppl": result["ppl"],
                "val_accuracy": result["accuracy"], "val_tokens": result["tokens"]}

    def trajectory_fields(self, saved):
        return TRAJECTORY_FIELDS + curriculum_fields(saved, self.cfg.to_dict())

    def row(self, step):
        return self.curriculum.row(step)

    def postfix(self, step):
        return self.curriculum.postfix(step)

    def pop_events(self):
        return self.curriculum.pop_events()

    def state_dict(self):
        return {"curriculum": self.curriculum.state_dict()}

    def load_state_dict(self, trainer_state, step):
        self.curriculum.load_state_dict(trainer_state.get("curriculum"), step)
