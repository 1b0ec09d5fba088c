"""Curriculum learning: which windows a step trains on as the run goes (`--curriculum`).

The train split is cut into aligned windows of seq_len tokens, each scored once at startup by a
scorer of `lmzoo.data.difficulty` (scores cached under OUT/curriculum/, so a resume does not
rescore). Two schedules then decide what a step may draw:

- `stages` (the Spike-Walze seed): windows fall into stages A-D (the seed's sentence-length
  stages, or the score's quartiles for the other scorers). Phase p samples the stages with
  `PHASE_WEIGHTS[p]`; an evaluation whose val metric passes `thresholds[p]` enters phase p+1
  (at most one phase per evaluation), and `patience` steps in one phase force the next.
- `competence` (Platanios et al. 2019): step t draws uniformly from the easiest c(t) share of
  the windows, c(t) = min(1, sqrt(t (1 - c0^2) / T + c0^2)) (or linear: c0 + t (1 - c0) / T).

Batches stay a pure function of (seed, step, rank, world_size, curriculum state): the step's
global batch is drawn from a generator seeded with (seed, step) and rank r takes its slice, as
in `TokenDataset.get_batch`. The state (phase, step it was entered) goes into the checkpoint's
trainer state, so a resumed run draws exactly the batches of an uninterrupted one.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from lmzoo.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from lmzoo.training.checkpointing import load as load_model
from lmzoo.training.checkpointing import resolve_model_dir
from lmzoo.data.dataset import _to_tensor
from lmzoo.data.difficulty import (
    N_STAGES,
    STAGE_NAMES,
    cache_path,
    data_fingerprint,
    file_fingerprint,
    read_cached,
    reference_losses,
    select_windows,
    stages_from_scores,
    text_scores,
    window_count,
    window_tokens,
    write_cached,
)
from lmzoo.errors import LmzooError
from lmzoo.training.metrics import warn

# Sampling weights of stages A-D in each phase (the seed's schedule).
PHASE_WEIGHTS = np.array([[1.0, 0.0, 0.0, 0.0],
                          [0.7, 0.3, 0.0, 0.0],
                          [0.3, 0.4, 0.3, 0.0],
                          [0.2, 0.3, 0.3, 0.2]])
SEED_THRESHOLDS = (0.8, 0.7, 0.65)  # the seed's masked-LM accuracies for unlocking B, C, D
BATCH_STREAM = 0xC0C0  # keeps the curriculum's random streams apart from the shuffled batches'
CACHE_VERSION = 1
# TrainConfig fields that change what a curriculum run draws (checked on resume).
CURRICULUM_FIELDS = ("curriculum", "curriculum_scorer", "curriculum_reference", "curriculum_metric",
                     "curriculum_thresholds", "curriculum_patience", "competence_start", "competence_steps",
                     "competence_shape", "curriculum_lang", "curriculum_max_windows")


def competence(step: int, total_steps: int, start: float, shape: str = "sqrt") -> float:
    """Share of the difficulty-sorted windows available at `step` (1.0 from `total_steps` on)."""
    t = min(max(step, 0) / total_steps, 1.0)
    if shape == "sqrt":
        return min(1.0, math.sqrt(t * (1.0 - start ** 2) + start ** 2))
    return min(1.0, start + t * (1.0 - start))


def curriculum_fields(saved: dict, now: dict) -> tuple[str, ...]:
    """The curriculum fields to compare on resume: all of them once either run uses a curriculum."""
    used = saved.get("curriculum", "none") != "none" or now["curriculum"] != "none"
    return CURRICULUM_FIELDS if used else ("curriculum",)


class WindowPool:
    """Scored window ids, grouped by stage and sorted by difficulty (ties in a seeded random order)."""

    def __init__(self, windows: np.ndarray, scores: np.ndarray, stages: np.ndarray, seed: int = 0):
        self.windows = np.asarray(windows, dtype=np.int64)
        self.stages = np.asarray(stages, dtype=np.int64)
        self.counts = np.bincount(self.stages, minlength=N_STAGES)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)[:-1]])
        self.by_stage = self.windows[np.argsort(self.stages, kind="stable")]
        tiebreak = np.random.default_rng([seed, BATCH_STREAM]).random(len(self.windows))
        self.by_difficulty = self.windows[np.lexsort((tiebreak, scores))]

    def __len__(self) -> int:
        return len(self.windows)

    def stage_weights(self, weights: np.ndarray) -> np.ndarray:
        """`weights` without the empty stages, renormalised; all on the easiest non-empty stage
        when none of the weighted stages holds a window."""
        w = np.where(self.counts > 0, weights, 0.0)
        if w.sum() == 0:
            w = (np.arange(N_STAGES) == np.flatnonzero(self.counts)[0]).astype(np.float64)
        return w / w.sum()

    def from_stages(self, rng: np.random.Generator, n: int, weights: np.ndarray) -> np.ndarray:
        """`n` window ids: a stage per draw by `weights`, then a window of that stage uniformly."""
        stage = rng.choice(N_STAGES, size=n, p=self.stage_weights(weights))
        count = self.counts[stage]
        pos = np.minimum((rng.random(n) * count).astype(np.int64), count - 1)
        return self.by_stage[self.offsets[stage] + pos]

    def easiest(self, rng: np.random.Generator, n: int, share: float) -> np.ndarray:
        """`n` window ids drawn uniformly from the easiest `share` of the pool (at least one)."""
        available = min(len(self), max(1, math.ceil(share * len(self) - 1e-9)))
        pos = np.minimum((rng.random(n) * available).astype(np.int64), available - 1)
        return self.by_difficulty[pos]


class Shuffled:
    """No curriculum: `TokenDataset.get_batch`, unchanged. Also the base with the trainer's hooks."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.events: list[dict] = []

    def get_batch(self, step: int, batch_size: int, seq_len: int, **kwargs) -> torch.Tensor:
        return self.dataset.get_batch(step, batch_size, seq_len, **kwargs)

    def before_step(self, step: int) -> None:
        """Called before drawing step `step`'s batch."""

    def after_eval(self, step: int, result: dict) -> None:
        """Called with each evaluation's result after `step` steps."""

    def row(self, step: int) -> dict:
        """Fields for the metrics row of the batch of `step`."""
        return {}

    def postfix(self, step: int) -> dict:
        return {}

    def state_dict(self) -> dict | None:
        return None

    def load_state_dict(self, state: dict | None, step: int) -> None:
        pass

    def pop_events(self) -> list[dict]:
        """Metrics rows of what changed since the last call (unlocked stages)."""
        events, self.events = self.events, []
        return events


class _WindowCurriculum(Shuffled):
    def __init__(self, dataset, pool: WindowPool):
        super().__init__(dataset)
        self.pool = pool

    def draw(self, step: int, rng: np.random.Generator, n: int) -> np.ndarray:
        raise NotImplementedError

    def get_batch(self, step: int, batch_size: int, seq_len: int, *, seed: int, rank: int = 0,
                  world_size: int = 1, device: str | torch.device = "cpu") -> torch.Tensor:
        """Rank `rank`'s slice of the step's global batch of batch_size * world_size windows."""
        rng = np.random.default_rng([seed, step, BATCH_STREAM])
        windows = self.draw(step, rng, batch_size * world_size)
        mine = windows[rank * batch_size:(rank + 1) * batch_size]
        return _to_tensor(window_tokens(self.dataset, mine, seq_len), device)


class StageCurriculum(_WindowCurriculum):
    """The seed's staged schedule; `metric` is a key of `evaluate`'s result (accuracy or bpb)."""

    def __init__(self, dataset, pool: WindowPool, thresholds=SEED_THRESHOLDS, metric: str = "accuracy",
                 patience: int = 0):
        super().__init__(dataset, pool)
        self.thresholds, self.metric, self.patience = tuple(thresholds), metric, patience
        self.phase, self.phase_step = 0, 0

    @property
    def unlocked(self) -> str:
        return "+".join(STAGE_NAMES[:self.phase + 1])

    def draw(self, step: int, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.pool.from_stages(rng, n, PHASE_WEIGHTS[self.phase])

    def before_step(self, step: int) -> None:
        if self.patience and self.phase < N_STAGES - 1 and step - self.phase_step >= self.patience:
            self._advance(step, f"patience: {self.patience} steps without unlocking")

    def after_eval(self, step: int, result: dict) -> None:
        if self.phase >= N_STAGES - 1:
            return
        value, threshold = result[self.metric], self.thresholds[self.phase]
        higher_is_better = self.metric == "accuracy"
        if (value >= threshold) if higher_is_better else (value <= threshold):
            self._advance(step, f"val {self.metric} {value:.4f} {'>=' if higher_is_better else '<='} {threshold:g}")

    def _advance(self, step: int, reason: str) -> None:
        self.phase, self.phase_step = self.phase + 1, step
        weights = self.pool.stage_weights(PHASE_WEIGHTS[self.phase])
        mix = ", ".join(f"{name} {w:.2f}" for name, w in zip(STAGE_NAMES, weights) if w > 0)
        self.events.append({"type": "curriculum", "step": step, "curriculum_phase": self.phase,
                            "curriculum_stages": self.unlocked,
                            "event": f"stage {STAGE_NAMES[self.phase]} unlocked ({reason}); sampling {mix}"})

    def row(self, step: int) -> dict:
        return {"curriculum_phase": self.phase, "curriculum_stages": self.unlocked}

    def postfix(self, step: int) -> dict:
        return {"stages": self.unlocked}

    def state_dict(self) -> dict:
        return {"kind": "stages", "phase": self.phase, "phase_step": self.phase_step}

    def load_state_dict(self, state: dict | None, step: int) -> None:
        """Restore the phase; a checkpoint without stage state starts phase 0 at `step`."""
        if not state or state.get("kind") != "stages":
            self.phase, self.phase_step = 0, step
            return
        phase, phase_step = state.get("phase"), state.get("phase_step")
        if not (isinstance(phase, int) and 0 <= phase < N_STAGES and isinstance(phase_step, int)):
            raise LmzooError(f"the checkpoint's curriculum state {state} is malformed; use an earlier checkpoint")
        self.phase, self.phase_step = phase, phase_step


class CompetenceCurriculum(_WindowCurriculum):
    """Uniform draws from the easiest c(t) share; stateless beyond the step."""

    def __init__(self, dataset, pool: WindowPool, start: float = 0.01, steps: int = 1, shape: str = "sqrt"):
        super().__init__(dataset, pool)
        self.start, self.steps, self.shape = start, steps, shape

    def competence(self, step: int) -> float:
        return competence(step, self.steps, self.start, self.shape)

    def draw(self, step: int, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.pool.easiest(rng, n, self.competence(step))

    def row(self, step: int) -> dict:
        return {"competence": self.competence(step)}

    def postfix(self, step: int) -> dict:
        return {"competence": f"{self.competence(step):.3f}"}

    def state_dict(self) -> dict:
        return {"kind": "competence"}


# ---- building one from a TrainConfig -----------------------------------------------------------
def build_curriculum(cfg, dataset, env, total_steps: int, autocast_dtype: torch.dtype | None = None) -> Shuffled:
    """The run's batch source: `Shuffled` without --curriculum, else a scored curriculum."""
    if cfg.curriculum == "none":
        return Shuffled(dataset)
    windows, scores = window_scores(cfg, dataset, env, autocast_dtype)
    pool = WindowPool(windows, scores, stages_from_scores(scores, cfg.curriculum_scorer), cfg.seed)
    if env.is_main:
        _describe(cfg, pool, window_count(dataset, cfg.seq_len), scores)
    if cfg.curriculum == "stages":
        return StageCurriculum(dataset, pool, cfg.curriculum_thresholds or SEED_THRESHOLDS,
                               cfg.curriculum_metric, cfg.curriculum_patience)
    return CompetenceCurriculum(dataset, pool, cfg.competence_start, cfg.competence_steps or total_steps,
                                cfg.competence_shape)


def window_scores(cfg, dataset, env, autocast_dtype=None) -> tuple[np.ndarray, np.ndarray]:
    """(window ids, scores): rank 0 reads the cache or scores and writes it; the others then read it."""
    n_windows = window_count(dataset, cfg.seq_len)
    if n_windows < 1:
        raise LmzooError(f"the train split has {dataset.tokens} tokens, less than one window of seq_len "
                         f"{cfg.seq_len}; use a shorter --seq-len or more data")
    windows = select_windows(n_windows, cfg.curriculum_max_windows, cfg.seed)
    reference = resolve_reference(cfg.curriculum_reference) if cfg.curriculum_scorer == "reference-loss" else None
    key = _cache_key(cfg, dataset, subset=len(windows) < n_windows, n_scored=len(windows), reference=reference)
    path = cache_path(Path(cfg.out) / "curriculum", key)
    found = read_cached(path, key) if env.is_main else None
    if env.is_main and found is None:
        print(f"curriculum: scoring {len(windows)} windows of {cfg.seq_len} tokens ({cfg.curriculum_scorer})",
              file=sys.stderr, flush=True)
        found = windows, _score(cfg, dataset, windows, reference, env, autocast_dtype)
        write_cached(path, key, *found)
    elif env.is_main:
        print(f"curriculum: window scores read from {path}", file=sys.stderr, flush=True)
    if env.enabled and dist.is_initialized():
        dist.barrier(device_ids=[env.device.index] if env.device.type == "cuda" else None)
        found = found or read_cached(path, key)
    if found is None:
        raise LmzooError(f"cannot read the curriculum scores {path} written by rank 0; is --out shared by all ranks?")
    return found


def _cache_key(cfg, dataset, *, subset: bool, n_scored: int, reference: Path | None) -> dict:
    """Everything the scores depend on: the data, the scorer and its inputs, the windows scored."""
    return {"version": CACHE_VERSION, "data": data_fingerprint(dataset), "scorer": cfg.curriculum_scorer,
            "seq_len": cfg.seq_len, "windows": n_scored, "subset_seed": cfg.seed if subset else None,
            "lang": cfg.curriculum_lang if cfg.curriculum_scorer in ("stages", "length") else None,
            "reference": file_fingerprint(reference / WEIGHTS_FILE) if reference else None}


def _score(cfg, dataset, windows, reference: Path | None, env, autocast_dtype) -> np.ndarray:
    if reference is None:
        return text_scores(dataset, windows, cfg.seq_len, cfg.curriculum_scorer, cfg.curriculum_lang, progress=True)
    model = load_model(reference, map_location=str(env.device))
    if model.tokenizer is None or model.tokenizer.state_dict() != dataset.tokenizer.state_dict():
        raise LmzooError(f"the reference model {reference} does not use the dataset's tokenizer; train the "
                         "reference on data prepared with the same tokenizer")
    model.check_inputs = False
    scores = reference_losses(model, dataset, windows, cfg.seq_len, batch_size=cfg.batch_size, device=env.device,
                              autocast_dtype=autocast_dtype, progress=True)
    del model
    return scores


def resolve_reference(path: str) -> Path:
    """A saved model or checkpoint directory as given, or a run directory's newest valid checkpoint."""
    directory = resolve_model_dir(path)
    if not (directory / CONFIG_FILE).is_file():
        raise LmzooError(f"--curriculum-reference '{path}' holds no saved lmzoo model (no {CONFIG_FILE}); pass a "
                         "model, checkpoint or run directory")
    return directory


def _describe(cfg, pool: WindowPool, n_windows: int, scores: np.ndarray) -> None:
    """One line on the stages, and warnings for what would make the curriculum ineffective."""
    sizes = ", ".join(f"{name} {count}" for name, count in zip(STAGE_NAMES, pool.counts))
    print(f"curriculum: {cfg.curriculum} over {len(pool)} windows ({cfg.curriculum_scorer}); stages {sizes}",
          file=sys.stderr, flush=True)
    if len(pool) < n_windows:
        warn(f"curriculum: {len(pool)} of {n_windows} windows scored; the run trains on those only "
             "(--curriculum-max-windows 0 scores all)")
    if cfg.curriculum == "competence" and np.all(scores == scores[0]):
        warn("curriculum: every window has the same score, so the competence schedule orders them at random")
    elif cfg.curriculum == "stages":
        _warn_about_stages(cfg, pool)


def _warn_about_stages(cfg, pool: WindowPool) -> None:
    occupied = np.flatnonzero(pool.counts)
    if len(occupied) == 1:
        warn(f"curriculum: all {len(pool)} windows fall in stage {STAGE_NAMES[occupied[0]]}, so the stages "
             "cannot change the data mix; use a longer --seq-len or another --curriculum-scorer")
    elif len(occupied) < N_STAGES:
        empty = "".join(STAGE_NAMES[i] for i in range(N_STAGES) if pool.counts[i] == 0)
        warn(f"curriculum: stage(s) {empty} hold no window; their weight goes to the other unlocked stages")
    if cfg.eval_interval == 0 and cfg.curriculum_patience == 0:
        warn("curriculum: with --eval-interval 0 and no --curriculum-patience the run never leaves stage A")
