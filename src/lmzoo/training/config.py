"""`TrainConfig`: every knob of a training run, and the argparse flags built from it.

One dataclass is the single source of truth: the CLI flags (`--seq-len`), the YAML recipe keys
(`seq_len`) and the config stored in each checkpoint all come from its fields, so they cannot
drift apart. Precedence: dataclass default < `--config recipe.yaml` < command-line flag.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from lmzoo.devices import DTYPES
from lmzoo.errors import LmzooError
from lmzoo.paths import read_utf8
from lmzoo.training.difficulty import SCORERS

NAN_POLICIES = ("skip", "stop")
CURRICULA = ("none", "stages", "competence")
CURRICULUM_METRICS = ("accuracy", "bpb")
COMPETENCE_SHAPES = ("sqrt", "linear")
LANGUAGES = ("de", "en")
# One step's windows are drawn at once (int64 ids): beyond this a typo allocates gigabytes.
MAX_STEP_TOKENS = 1 << 26


def _field(default: Any, help: str, **extra: Any) -> Any:
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata={"help": help, **extra})
    return field(default=default, metadata={"help": help, **extra})


# What a recipe value may be, per annotation (the annotations are strings: postponed evaluation).
_TYPES = {"str": (str,), "int": (int,), "int | None": (int, type(None)), "float": (int, float),
          "bool": (bool,), "dict": (dict,), "tuple": (tuple, list)}


@dataclass
class TrainConfig:
    # ---- model and data ----
    arch: str = _field("transformer", "architecture name (see `lmzoo list`)")
    size: str = _field("nano", "size preset of the architecture")
    model_args: dict = _field({}, "model config overrides as KEY=VALUE, repeatable (e.g. d_model=256); "
                                  "vocab_size defaults to the dataset's", flag="--model-arg")
    data: str = _field("", "dataset directory written by `lmzoo prepare` (train.bin, val.bin, meta.json)")
    out: str = _field("runs/default", "output directory: metrics.jsonl and checkpoints/")
    # ---- batch and length ----
    seq_len: int = _field(256, "tokens per training window")
    batch_size: int = _field(16, "windows per micro-batch, per process")
    grad_accum: int = _field(1, "micro-batches accumulated per optimizer step")
    max_steps: int | None = _field(1000, "optimizer steps to train for (ignored when --max-tokens is set)")
    max_tokens: int | None = _field(None, "train until this many tokens were seen (overrides --max-steps)")
    # ---- optimizer and schedule ----
    lr: float = _field(1e-3, "peak learning rate")
    min_lr_ratio: float = _field(0.1, "final learning rate as a fraction of --lr (end of the cosine)")
    warmup_steps: int = _field(100, "steps of linear warmup from 0 to --lr")
    weight_decay: float = _field(0.1, "AdamW weight decay (not applied to norms, biases, embeddings)")
    betas: tuple = _field((0.9, 0.95), "AdamW betas", nargs=2, metavar=("BETA1", "BETA2"))
    grad_clip: float = _field(1.0, "clip the global gradient norm to this value; 0 disables clipping")
    # ---- numerics and speed ----
    dtype: str = _field("auto", "compute dtype: auto = bf16 autocast on CUDA, fp32 on CPU", choices=DTYPES)
    compile: bool = _field(False, "torch.compile the model")
    device: str = _field("auto", "cpu, cuda, cuda:N, or auto (CUDA when available)")
    threads: int | None = _field(None, "CPU threads for torch (default: torch's choice)")
    seed: int = _field(0, "seed for model init and the data order")
    nan_policy: str = _field("skip", "on a non-finite loss or gradient: skip the update (and count it) "
                                     "or stop with an error", choices=NAN_POLICIES)
    # ---- evaluation, logging, checkpoints ----
    eval_interval: int = _field(200, "evaluate on the val split every N steps; 0 = only at the end")
    eval_batches: int = _field(20, "val batches (of --batch-size windows) per evaluation, per process")
    log_interval: int = _field(10, "log metrics every N steps (the only point the loop syncs with the device)")
    checkpoint_interval: int = _field(500, "save a checkpoint every N steps; 0 = only at the end")
    keep_last: int = _field(3, "checkpoints to keep (oldest pruned first); 0 keeps all")
    resume: str = _field("auto", "auto = newest valid checkpoint in OUT/checkpoints, a checkpoint "
                                 "directory, or none")
    tensorboard: bool = _field(False, "also write TensorBoard event files to OUT/tensorboard")
    # ---- distributed ----
    fsdp: bool = _field(False, "under torchrun: shard parameters with FSDP2 instead of replicating (DDP)")
    # ---- curriculum learning (docs/training.md, "Curriculum learning") ----
    curriculum: str = _field("none", "none = uniformly random windows; stages = unlock difficulty stages A-D "
                                     "by a val metric (the Spike-Walze schedule); competence = sample from the "
                                     "easiest c(t) share of windows (Platanios et al. 2019)", choices=CURRICULA)
    curriculum_scorer: str = _field("stages", "window difficulty: stages (the seed's sentence-length stages), "
                                              "length (words per sentence), compression (zlib ratio), "
                                              "reference-loss (loss of --curriculum-reference)", choices=SCORERS)
    curriculum_reference: str = _field("", "saved lmzoo model or run directory whose loss scores the windows "
                                           "(for --curriculum-scorer reference-loss)")
    curriculum_metric: str = _field("accuracy", "val metric that unlocks the next stage: accuracy (next-token, "
                                                ">= threshold) or bpb (bits per byte, <= threshold)",
                                    choices=CURRICULUM_METRICS)
    curriculum_thresholds: tuple = _field((), "metric values that unlock stages B, C and D (default for accuracy: "
                                              "the seed's 0.8 0.7 0.65; bpb needs them given)",
                                          nargs=3, metavar=("B", "C", "D"))
    curriculum_patience: int = _field(0, "enter the next stage after N steps in a stage without unlocking it; "
                                         "0 = wait for the metric")
    competence_start: float = _field(0.01, "c0: share of the easiest windows available at step 0")
    competence_steps: int | None = _field(None, "steps until every window is available (default: the whole run)")
    competence_shape: str = _field("sqrt", "competence growth: sqrt or linear", choices=COMPETENCE_SHAPES)
    curriculum_lang: str = _field("de", "language of the sentence splitter (stages and length scorers)",
                                  choices=LANGUAGES)
    curriculum_max_windows: int = _field(200_000, "score (and train on) a seeded random subset of at most this "
                                                  "many windows; 0 = all")

    def __post_init__(self) -> None:
        self._check_types()
        if len(self.betas) != 2:
            raise LmzooError(f"betas must be two numbers, got {self.betas}")
        self.betas = tuple(float(b) for b in self.betas)
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise LmzooError(f"betas must be in [0, 1), got {list(self.betas)}")
        if not self.lr > 0:
            raise LmzooError(f"lr must be > 0, got {self.lr}")
        for name in ("weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                raise LmzooError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.seed < 2**63 or (self.threads is not None and self.threads < 1):
            raise LmzooError(f"seed must be in [0, 2**63) and threads >= 1, got {self.seed} and {self.threads}")
        positive = ("seq_len", "batch_size", "grad_accum", "log_interval", "eval_batches")
        for name in positive:
            if getattr(self, name) < 1:
                raise LmzooError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("eval_interval", "checkpoint_interval", "keep_last", "warmup_steps"):
            if getattr(self, name) < 0:
                raise LmzooError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.batch_size * self.grad_accum * self.seq_len > MAX_STEP_TOKENS:
            raise LmzooError(f"batch_size * grad_accum * seq_len = {self.batch_size * self.grad_accum * self.seq_len:,} "
                             f"tokens per step and process; keep it <= {MAX_STEP_TOKENS:,}")
        if self.max_tokens is None and (self.max_steps is None or self.max_steps < 1):
            raise LmzooError("set --max-steps (>= 1) or --max-tokens to say how long to train")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise LmzooError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise LmzooError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.dtype not in DTYPES:
            raise LmzooError(f"unknown dtype '{self.dtype}'; choose one of: {', '.join(DTYPES)}")
        if self.nan_policy not in NAN_POLICIES:
            raise LmzooError(f"unknown nan_policy '{self.nan_policy}'; choose one of: {', '.join(NAN_POLICIES)}")
        self._check_curriculum()

    def _check_curriculum(self) -> None:
        for name, valid in (("curriculum", CURRICULA), ("curriculum_scorer", SCORERS),
                            ("curriculum_metric", CURRICULUM_METRICS), ("competence_shape", COMPETENCE_SHAPES),
                            ("curriculum_lang", LANGUAGES)):
            if getattr(self, name) not in valid:
                raise LmzooError(f"unknown {name} '{getattr(self, name)}'; choose one of: {', '.join(valid)}")
        self.curriculum_thresholds = self._thresholds()
        for name in ("curriculum_patience", "curriculum_max_windows"):
            if getattr(self, name) < 0:
                raise LmzooError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 < self.competence_start <= 1.0:
            raise LmzooError(f"competence_start must be in (0, 1], got {self.competence_start}")
        if self.competence_steps is not None and self.competence_steps < 1:
            raise LmzooError(f"competence_steps must be >= 1, got {self.competence_steps}")
        if self.curriculum_reference and self.curriculum_scorer != "reference-loss":
            raise LmzooError("--curriculum-reference only applies to --curriculum-scorer reference-loss; drop it")
        if self.curriculum == "none":
            return
        if self.curriculum_scorer == "reference-loss" and not self.curriculum_reference:
            raise LmzooError("--curriculum-scorer reference-loss needs --curriculum-reference "
                             "(a saved lmzoo model or run directory)")
        if self.curriculum == "stages" and self.curriculum_metric == "bpb" and not self.curriculum_thresholds:
            raise LmzooError("--curriculum-metric bpb needs --curriculum-thresholds: three bits-per-byte values "
                             "that unlock stages B, C and D (e.g. 2.2 2.0 1.9)")

    def _thresholds(self) -> tuple:
        values = tuple(self.curriculum_thresholds)
        if values and (len(values) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                   for v in values)):
            raise LmzooError(f"curriculum_thresholds must be 3 numbers (for stages B, C, D), got {list(values)}")
        values = tuple(float(v) for v in values)
        accuracy = self.curriculum_metric == "accuracy"
        if not all(0.0 <= v <= 1.0 if accuracy else v > 0.0 for v in values):
            raise LmzooError(f"curriculum_thresholds {list(values)} are out of range for {self.curriculum_metric} "
                             f"(accuracy: between 0 and 1; bpb: above 0)")
        return values

    def _check_types(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "float" and isinstance(value, str):
                with contextlib.suppress(ValueError):  # YAML 1.1 reads `1e-3` (no dot) as a string
                    value = float(value)
                    setattr(self, f.name, value)
            numeric = f.type in ("int", "int | None", "float")
            if not isinstance(value, _TYPES[f.type]) or (numeric and isinstance(value, bool)):
                raise LmzooError(f"{f.name} must be of type {f.type}, got {value!r}; fix the recipe or flag")
            if isinstance(value, float) and not math.isfinite(value):
                raise LmzooError(f"{f.name} must be a finite number, got {value}; fix the recipe or flag")
            if isinstance(value, (tuple, list)) and any(isinstance(v, float) and not math.isfinite(v) for v in value):
                raise LmzooError(f"{f.name} must hold finite numbers, got {list(value)}; fix the recipe or flag")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def check_keys(cls, data: dict[str, Any], source: str = "config") -> None:
        unknown = sorted(set(data) - set(cls.field_names()))
        if unknown:
            raise LmzooError(f"unknown training key(s) {unknown} in {source}; valid keys: "
                             f"{', '.join(cls.field_names())}")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> TrainConfig:
        cls.check_keys(data, source)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        data["curriculum_thresholds"] = list(self.curriculum_thresholds)
        return data


def load_recipe(path: str | Path) -> dict[str, Any]:
    """The YAML recipe as a dict of TrainConfig fields (validated later, with the CLI flags)."""
    try:
        data = yaml.safe_load(read_utf8(path, "--config"))
    except yaml.YAMLError as e:
        raise LmzooError(f"{path} is not valid YAML ({str(e).splitlines()[0]}); fix the recipe") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LmzooError(f"{path} must be a mapping of training keys to values, got {type(data).__name__}")
    return data


def _parse_model_arg(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got '{text}'")
    # YAML scalars give the natural typing: 32 -> int, 1e-5 -> float, true -> bool, null -> None.
    return key.strip(), yaml.safe_load(value)


def _flag_kwargs(f: dataclasses.Field) -> dict[str, Any]:
    meta = f.metadata
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
    help_text = meta["help"] if default in (None, "", {}, ()) else f"{meta['help']} (default: {shown})"
    # SUPPRESS keeps unset flags out of the namespace, so a recipe value is only overridden by a
    # flag the user actually typed.
    kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": help_text, "dest": f.name}
    if f.type == "bool":
        kwargs["action"] = argparse.BooleanOptionalAction
    elif f.name == "model_args":
        kwargs.update(action="append", type=_parse_model_arg, metavar="KEY=VALUE")
    elif f.type == "tuple":
        kwargs.update(nargs=meta["nargs"], type=float, metavar=meta["metavar"])
    else:
        kwargs["type"] = {"int": int, "int | None": int, "float": float}.get(f.type, str)
    if "choices" in meta:
        kwargs["choices"] = meta["choices"]
    return kwargs


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add `--config` and one flag per TrainConfig field (`seq_len` -> `--seq-len`)."""
    parser.add_argument("--config", dest="recipe", metavar="RECIPE.yaml", default=None,
                        help="YAML recipe whose keys are training fields; flags given here override it")
    group = parser.add_argument_group("training")
    for f in fields(TrainConfig):
        group.add_argument(f.metadata.get("flag", "--" + f.name.replace("_", "-")), **_flag_kwargs(f))
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the recipe (if `--config`), then the flags that were given."""
    recipe = load_recipe(args.recipe) if getattr(args, "recipe", None) else {}
    TrainConfig.check_keys(recipe, source=str(getattr(args, "recipe", None)))
    if not isinstance(recipe.get("model_args", {}), dict):
        raise LmzooError(f"model_args in {args.recipe} must be a mapping of model config keys to values")
    given = {name: getattr(args, name) for name in TrainConfig.field_names() if hasattr(args, name)}
    if "model_args" in given:
        given["model_args"] = {**recipe.get("model_args", {}), **dict(given["model_args"])}
    return TrainConfig.from_dict({**recipe, **given})
