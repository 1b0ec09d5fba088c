"""Run configs: every knob of a run in one dataclass, and the argparse flags built from it.

One dataclass is the single source of truth: the CLI flags (`--seq-len`), the YAML recipe keys
(`seq_len`) and the config stored in each checkpoint all come from its fields, so they cannot
drift apart. Precedence: dataclass default < `--config recipe.yaml` < command-line flag.

`LoopConfig` holds the knobs of the shared training loop (`trainer.py`) that every kind of run
sets alike; `TrainConfig` (here) and `FinetuneConfig` (`finetune.py`) add their own fields.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
from dataclasses import MISSING, dataclass, field, fields
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
REQUIRED = MISSING  # the default of a field with none: it must be given
# One step's windows are drawn at once (int64 ids): beyond this a typo allocates gigabytes.
MAX_STEP_TOKENS = 1 << 26


def flag_field(default: Any, help: str, flag: str | None = None, **argparse_kwargs: Any) -> Any:
    """A config field with its flag's help. `flag` renames the flag (`--model-arg`; a name without
    dashes makes it positional); `argparse_kwargs` (choices, nargs, metavar, type, action) go to
    `add_argument` as they are."""
    metadata = {"help": help, "flag": flag, "argparse": argparse_kwargs}
    if default is REQUIRED:
        return field(metadata=metadata)
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _parse_model_arg(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got '{text}'")
    # YAML scalars give the natural typing: 32 -> int, 1e-5 -> float, true -> bool, null -> None.
    return key.strip(), yaml.safe_load(value)


# What a recipe value may be, per annotation (the annotations are strings: postponed evaluation).
_TYPES = {"str": (str,), "int": (int,), "int | None": (int, type(None)), "float": (int, float),
          "float | None": (int, float, type(None)), "bool": (bool,), "dict": (dict,), "tuple": (tuple, list)}


class FlagConfig:
    """Checks and (de)serialisation shared by the dataclasses whose fields are flags and recipe keys."""

    what = "run"  # in error messages: "unknown <what> key(s)"

    def _check_types(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("float", "float | None") and isinstance(value, str):
                with contextlib.suppress(ValueError):  # YAML 1.1 reads `1e-3` (no dot) as a string
                    value = float(value)
                    setattr(self, f.name, value)
            numeric = f.type in ("int", "int | None", "float", "float | None")
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
            raise LmzooError(f"unknown {cls.what} key(s) {unknown} in {source}; valid keys: "
                             f"{', '.join(cls.field_names())}")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config"):
        cls.check_keys(data, source)
        missing = [f for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
                   and f.name not in data]
        if missing:
            names = ", ".join(_flag_name(f) for f in missing)
            raise LmzooError(f"missing {names}; give it on the command line or as a key of the --config recipe")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@dataclass(kw_only=True)
class LoopConfig(FlagConfig):
    """What the training loop (`trainer.py`) reads; a kind of run adds its own fields, and may
    redeclare one of these with another default (fine-tuning trains with other betas)."""

    # ---- batch and length ----
    batch_size: int = flag_field(16, "sequences per micro-batch, per process")
    grad_accum: int = flag_field(1, "micro-batches accumulated per optimizer step")
    max_steps: int | None = flag_field(1000, "optimizer steps to train for (ignored when --max-tokens is set)")
    # ---- optimizer and schedule ----
    lr: float = flag_field(1e-3, "peak learning rate")
    min_lr_ratio: float = flag_field(0.1, "final learning rate as a fraction of --lr (end of the cosine)")
    warmup_steps: int = flag_field(100, "steps of linear warmup from 0 to --lr")
    weight_decay: float = flag_field(0.1, "AdamW weight decay (not applied to norms, biases, embeddings)")
    betas: tuple = flag_field((0.9, 0.95), "AdamW betas", nargs=2, metavar=("BETA1", "BETA2"))
    grad_clip: float = flag_field(1.0, "clip the global gradient norm to this value; 0 disables clipping")
    # ---- numerics and speed ----
    dtype: str = flag_field("auto", "compute dtype: auto = bf16 autocast on CUDA, fp32 on CPU", choices=DTYPES)
    compile: bool = flag_field(False, "torch.compile the model")
    activation_checkpointing: bool = flag_field(
        False, "recompute each block's activations in the backward pass instead of storing them "
               "(less memory for about a third more compute)")
    device: str = flag_field("auto", "auto (CUDA when available), cpu, cuda, cuda:N or mps (Apple Silicon)")
    threads: int | None = flag_field(None, "CPU threads for torch (default: torch's choice)")
    seed: int = flag_field(0, "seed for the initialisation (of the model or the adapters) and the data order")
    nan_policy: str = flag_field("skip", "on a non-finite loss or gradient: skip the update (and count it) "
                                         "or stop with an error", choices=NAN_POLICIES)
    # ---- evaluation, logging, checkpoints ----
    eval_interval: int = flag_field(200, "evaluate on the val split every N steps; 0 = only at the end")
    log_interval: int = flag_field(10, "log metrics every N steps (the only point the loop syncs with the device)")
    checkpoint_interval: int = flag_field(500, "save a checkpoint every N steps; 0 = only at the end")
    keep_last: int = flag_field(3, "checkpoints to keep (oldest pruned first); 0 keeps all")
    keep_best: bool = flag_field(False, "never prune the checkpoint with the lowest val loss (load it as RUN@best)")
    early_stop_patience: int = flag_field(0, "stop (and save) after N evaluations in a row without a new best val "
                                             "loss; 0 = train to the end")
    resume: str = flag_field("auto", "auto = the newest valid checkpoint in the run's checkpoints/ folder, "
                                     "a checkpoint directory, or none")
    tensorboard: bool = flag_field(False, "also write TensorBoard event files (tensorboard/ beside metrics.jsonl)")

    def __post_init__(self) -> None:
        self._check_types()
        if len(self.betas) != 2:
            raise LmzooError(f"betas must be two numbers, got {list(self.betas)}")
        self.betas = tuple(float(b) for b in self.betas)
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise LmzooError(f"betas must be in [0, 1), got {list(self.betas)}")
        if not 0 <= self.seed < 2**63 or (self.threads is not None and self.threads < 1):
            raise LmzooError(f"seed must be in [0, 2**63) and threads >= 1, got {self.seed} and {self.threads}")
        for name in ("batch_size", "grad_accum", "log_interval"):
            if getattr(self, name) < 1:
                raise LmzooError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("checkpoint_interval", "keep_last", "warmup_steps", "early_stop_patience"):
            if getattr(self, name) < 0:
                raise LmzooError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.eval_interval is not None and self.eval_interval < 0:
            raise LmzooError(f"eval_interval must be >= 0, got {self.eval_interval}")
        if self.max_steps is not None and self.max_steps < 1:
            raise LmzooError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.lr is not None and self.lr <= 0:
            raise LmzooError(f"lr must be > 0, got {self.lr}")
        if self.grad_clip < 0 or self.weight_decay < 0:
            raise LmzooError("grad_clip and weight_decay must be >= 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise LmzooError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        for name, valid in (("dtype", DTYPES), ("nan_policy", NAN_POLICIES)):
            if getattr(self, name) not in valid:
                raise LmzooError(f"unknown {name} '{getattr(self, name)}'; choose one of: {', '.join(valid)}")


@dataclass(kw_only=True)
class TrainConfig(LoopConfig):
    """Pre-training (`lmzoo train`): a model from an architecture preset, on a prepared dataset."""

    what = "training"
    # ---- model and data ----
    arch: str = flag_field("transformer", "architecture name (see `lmzoo list`)")
    size: str = flag_field("nano", "size preset of the architecture")
    model_args: dict = flag_field({}, "model config overrides as KEY=VALUE, repeatable (e.g. d_model=256); "
                                      "vocab_size defaults to the dataset's", flag="--model-arg",
                                  action="append", type=_parse_model_arg, metavar="KEY=VALUE")
    data: str = flag_field("", "dataset directory written by `lmzoo data prepare` (train.bin, val.bin, meta.json)")
    out: str = flag_field("runs/default", "output directory: metrics.jsonl and checkpoints/")
    init_from: str = flag_field("", "start from the weights of a saved model, checkpoint or run (RUN@best for its "
                                    "best) with a fresh optimizer and schedule; its config must match this run's")
    seq_len: int = flag_field(256, "tokens per training window")
    max_tokens: int | None = flag_field(None, "train until this many tokens were seen (overrides --max-steps)")
    eval_batches: int = flag_field(20, "val batches (of --batch-size windows) per evaluation, per process")
    # ---- distributed ----
    fsdp: bool = flag_field(False, "under torchrun: shard parameters with FSDP2 instead of replicating (DDP)")
    # ---- curriculum learning (docs/training.md, "Curriculum learning") ----
    curriculum: str = flag_field("none", "none = uniformly random windows; stages = unlock difficulty stages A-D "
                                         "by a val metric (the Spike-Walze schedule); competence = sample from the "
                                         "easiest c(t) share of windows (Platanios et al. 2019)", choices=CURRICULA)
    curriculum_scorer: str = flag_field("stages", "window difficulty: stages (the seed's sentence-length stages), "
                                                  "length (words per sentence), compression (zlib ratio), "
                                                  "reference-loss (loss of --curriculum-reference)", choices=SCORERS)
    curriculum_reference: str = flag_field("", "saved lmzoo model or run directory whose loss scores the windows "
                                               "(for --curriculum-scorer reference-loss)")
    curriculum_metric: str = flag_field("accuracy", "val metric that unlocks the next stage: accuracy (next-token, "
                                                    ">= threshold) or bpb (bits per byte, <= threshold)",
                                        choices=CURRICULUM_METRICS)
    curriculum_thresholds: tuple = flag_field((), "metric values that unlock stages B, C and D (default for accuracy: "
                                                  "the seed's 0.8 0.7 0.65; bpb needs them given)",
                                              nargs=3, metavar=("B", "C", "D"))
    curriculum_patience: int = flag_field(0, "enter the next stage after N steps in a stage without unlocking it; "
                                             "0 = wait for the metric")
    competence_start: float = flag_field(0.01, "c0: share of the easiest windows available at step 0")
    competence_steps: int | None = flag_field(None, "steps until every window is available (default: the whole run)")
    competence_shape: str = flag_field("sqrt", "competence growth: sqrt or linear", choices=COMPETENCE_SHAPES)
    curriculum_lang: str = flag_field("de", "language of the sentence splitter (stages and length scorers)",
                                      choices=LANGUAGES)
    curriculum_max_windows: int = flag_field(200_000, "score (and train on) a seeded random subset of at most this "
                                                      "many windows; 0 = all")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("seq_len", "eval_batches"):
            if getattr(self, name) < 1:
                raise LmzooError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size * self.grad_accum * self.seq_len > MAX_STEP_TOKENS:
            raise LmzooError(f"batch_size * grad_accum * seq_len = {self.batch_size * self.grad_accum * self.seq_len:,} "
                             f"tokens per step and process; keep it <= {MAX_STEP_TOKENS:,}")
        if self.max_tokens is None and self.max_steps is None:
            raise LmzooError("set --max-steps (>= 1) or --max-tokens to say how long to train")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise LmzooError(f"max_tokens must be >= 1, got {self.max_tokens}")
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


def load_recipe(path: str | Path) -> dict[str, Any]:
    """The YAML recipe as a dict of config fields (validated later, with the CLI flags)."""
    try:
        data = yaml.safe_load(read_utf8(path, "--config"))
    except yaml.YAMLError as e:
        raise LmzooError(f"{path} is not valid YAML ({str(e).splitlines()[0]}); fix the recipe") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LmzooError(f"{path} must be a mapping of config keys to values, got {type(data).__name__}")
    return data


def _flag_name(f: dataclasses.Field) -> str:
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


_FLAG_TYPES = {"int": int, "int | None": int, "float": float, "float | None": float}


def _flag_kwargs(f: dataclasses.Field) -> dict[str, Any]:
    meta = f.metadata
    help_text = meta["help"]
    if f.default is not MISSING or f.default_factory is not MISSING:
        default = f.default if f.default is not MISSING else f.default_factory()
        shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
        shown = repr(shown) if isinstance(shown, str) and not shown.isprintable() else shown  # a template's \n
        help_text = help_text if default in (None, "", {}, ()) else f"{help_text} (default: {shown})"
    # SUPPRESS keeps unset flags out of the namespace, so a recipe value is only overridden by a
    # flag the user actually typed.
    kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": help_text, **meta["argparse"]}
    if f.type == "bool":
        kwargs["action"] = argparse.BooleanOptionalAction
    elif "nargs" in kwargs:  # a tuple of numbers (betas)
        kwargs.setdefault("type", float)
    else:
        kwargs.setdefault("type", _FLAG_TYPES.get(f.type, str))
    if _flag_name(f).startswith("-"):
        kwargs["dest"] = f.name
    return kwargs


def add_config_arguments(parser: argparse.ArgumentParser, config_cls: type[LoopConfig]) -> argparse.ArgumentParser:
    """Add `--config` and one flag per field of `config_cls` (`seq_len` -> `--seq-len`): its own
    fields in one group, the training loop's in another."""
    parser.add_argument("--config", dest="recipe", metavar="RECIPE.yaml", default=None,
                        help=f"YAML recipe whose keys are {config_cls.what} fields; flags given here override it")
    by_name = {f.name: f for f in fields(config_cls)}
    declared = list(vars(config_cls).get("__annotations__", {}))  # in the order the class body has them
    for title, names in ((config_cls.what, declared), ("training loop", [n for n in by_name if n not in declared])):
        group = parser.add_argument_group(title)
        for name in names:
            group.add_argument(_flag_name(by_name[name]), **_flag_kwargs(by_name[name]))
    return parser


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`lmzoo train`'s flags."""
    return add_config_arguments(parser, TrainConfig)


def config_from_args(args: argparse.Namespace, config_cls: type[LoopConfig] = TrainConfig):
    """Defaults, then the recipe (if `--config`), then the flags that were given."""
    source = getattr(args, "recipe", None)
    recipe = load_recipe(source) if source else {}
    config_cls.check_keys(recipe, source=str(source))
    given = {name: getattr(args, name) for name in config_cls.field_names() if hasattr(args, name)}
    for f in fields(config_cls):
        if f.type != "dict":
            continue
        if not isinstance(recipe.get(f.name, {}), dict):
            raise LmzooError(f"{f.name} in {source} must be a mapping of keys to values")
        if f.name in given:  # repeated KEY=VALUE flags add to (and override) the recipe's mapping
            given[f.name] = {**recipe.get(f.name, {}), **dict(given[f.name])}
    return config_cls.from_dict({**recipe, **given}, source=str(source or "the flags"))
