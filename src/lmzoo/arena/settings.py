"""What an arena run holds fixed: the profile (`--quick` / `--full`), the budget and the data.

Everything that decides a result is in `ArenaSettings`; it is stored in `arena.json`, and a
rerun into the same `--out` must match it (otherwise the finished entries would not compare).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

from lmzoo.errors import LmzooError
from lmzoo.data.sources import list_files
from lmzoo.registry import list_architectures, list_sizes
from lmzoo.training.config import MAX_STEP_TOKENS

BUDGET_KINDS = ("tokens", "seconds")
# A seconds-budget run plans this many times the steps its sweep's step time fits into the budget:
# the clock then ends it (its schedule follows the clock), unless its steps run this much faster.
STEP_HEADROOM = 1.15
MAX_SEEDS = 16


@dataclass(frozen=True)
class Profile:
    """The explicit knobs of a profile; every one can be overridden on the command line."""

    name: str
    size: str
    seq_len: int
    batch_size: int
    lrs: tuple[float, ...]         # the learning-rate sweep: every architecture tries each
    sweep_steps: int               # length of one sweep run, in optimizer steps
    warmup_fraction: float         # linear warm-up, as a share of each run's steps
    evals: int                     # evaluations per run (the curves' points), the last at the end
    eval_batches: int              # val (and test) batches of batch_size windows per evaluation
    contexts: tuple[int, ...]      # decode speed is measured after prefilling this many tokens
    decode_tokens: int             # greedy tokens timed per context
    lengths: tuple[int, ...]       # sequence-length sweep (forward+backward, batch 1)
    long_lengths: tuple[int, ...]  # extra lengths for constant-state (linear-time) designs
    probe_timeout: float           # seconds for one architecture's probes (a fresh process)


PROFILES = {
    # All six on 2 CPU cores in <= 15 minutes with --budget-seconds 30 and 2 seeds (docs/arena.md
    # gives the arithmetic): nano models, short windows, a 3-rate sweep of 12 steps each.
    "quick": Profile("quick", size="nano", seq_len=128, batch_size=8, lrs=(1e-3, 2e-3, 4e-3), sweep_steps=12,
                     warmup_fraction=0.05, evals=6, eval_batches=4, contexts=(128, 1024), decode_tokens=8,
                     lengths=(128, 256, 512, 1024), long_lengths=(), probe_timeout=300),
    # Real machines and GPUs (bf16 autocast on CUDA).
    "full": Profile("full", size="micro", seq_len=512, batch_size=16, lrs=(3e-4, 1e-3, 3e-3), sweep_steps=200,
                    warmup_fraction=0.05, evals=12, eval_batches=20, contexts=(128, 1024, 8192), decode_tokens=32,
                    lengths=(256, 512, 1024, 2048, 4096, 8192), long_lengths=(16384, 32768), probe_timeout=1800),
}


@dataclass(frozen=True)
class ArenaSettings:
    data: str                      # the training text (or a prepared dataset directory)
    test: str | None               # a held-out text the models never train on
    budget_kind: str               # "tokens" or "seconds"
    budget: float
    archs: tuple[str, ...]
    seeds: int
    device: str
    profile: Profile
    dtype: str = "auto"            # bf16 autocast on CUDA, fp32 on CPU
    threads: int | None = None

    def to_dict(self) -> dict:
        """As stored in arena.json (tuples as lists), so a rerun's settings compare equal."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @property
    def tokens_per_step(self) -> int:
        return self.profile.batch_size * self.profile.seq_len


def make_profile(name: str, **overrides) -> Profile:
    """The named profile with the given fields replaced (None = keep the profile's)."""
    if name not in PROFILES:
        raise LmzooError(f"unknown arena profile '{name}'; choose quick or full")
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items() if v is not None}
    profile = dataclasses.replace(PROFILES[name], **given)
    _check_profile(profile)
    return profile


def _check_profile(p: Profile) -> None:
    for name in ("seq_len", "batch_size", "sweep_steps", "evals", "eval_batches", "decode_tokens"):
        if getattr(p, name) < 1:
            raise LmzooError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(p, name)}")
    if not p.lrs or not all(math.isfinite(lr) and lr > 0 for lr in p.lrs):
        raise LmzooError(f"--lrs must be positive finite learning rates, got {list(p.lrs)}")
    if p.batch_size * p.seq_len > MAX_STEP_TOKENS:
        raise LmzooError(f"--batch-size x --seq-len = {p.batch_size * p.seq_len:,} tokens per step; keep it <= "
                         f"{MAX_STEP_TOKENS:,}")
    for name in ("contexts", "lengths"):
        values = getattr(p, name)
        if not values or any(v < 1 or v > 1 << 20 for v in values):
            raise LmzooError(f"--{name} must be token counts between 1 and {1 << 20}, got {list(values)}")


def check_settings(s: ArenaSettings) -> None:
    """Refuse a bad budget, architecture list, seed count or size before anything is written."""
    if s.budget_kind not in BUDGET_KINDS:
        raise LmzooError(f"unknown budget kind '{s.budget_kind}'; give --budget-tokens or --budget-seconds")
    if not math.isfinite(s.budget) or s.budget <= 0:
        raise LmzooError(f"--budget-{s.budget_kind} must be a positive number, got {s.budget}")
    if s.budget_kind == "tokens" and s.budget < s.tokens_per_step:
        raise LmzooError(f"--budget-tokens {s.budget:g} is less than one step ({s.tokens_per_step} tokens = "
                         f"batch {s.profile.batch_size} x seq-len {s.profile.seq_len}); raise the budget")
    if s.budget_kind == "seconds" and s.budget < 1:
        raise LmzooError(f"--budget-seconds must be >= 1, got {s.budget:g}")
    if not (Path(s.data) / "meta.json").is_file():  # a prepared dataset is used as it is
        list_files(s.data)  # a mistyped path fails before anything is written
    if s.test:
        list_files(s.test)
    if not 1 <= s.seeds <= MAX_SEEDS:
        raise LmzooError(f"--seeds must be between 1 and {MAX_SEEDS}, got {s.seeds}")
    if not s.archs or len(set(s.archs)) != len(s.archs):
        raise LmzooError(f"--archs must name distinct architectures, got {list(s.archs)}; "
                         f"choose from {', '.join(list_architectures())}")
    for arch in s.archs:
        if arch not in list_architectures():
            raise LmzooError(f"--archs: unknown architecture '{arch}'; choose from {', '.join(list_architectures())}")
        if s.profile.size not in list_sizes(arch):
            raise LmzooError(f"--size {s.profile.size} is not a preset of {arch}; "
                             f"choose one of: {', '.join(list_sizes(arch))}")
