"""Part 2 of `benchmarks/long_context.py` (claim E2): recall of content written D bytes back.

Synthetic byte sequences hold key-value pairs, then filler of a controlled distance, then queries
whose values must be recalled; every variant trains from the same seed on the same batches (loss
only on the queried values) and is scored per distance, including distances beyond the local
attention window. Run it through `python benchmarks/long_context.py --recall`.
"""
from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from functools import partial

import common
import numpy as np
import torch

import lmzoo

EFFICIA = "efficia-1"


def log(msg: str) -> None:
    print(f"[{common.now()}] {msg}", flush=True)


def add_recall_arguments(p) -> None:
    g = p.add_argument_group("recall")
    g.add_argument("--variants", nargs="+", help="default: efficia-1, its three ablations (if registered), transformer")
    g.add_argument("--recall-size", default="nano")
    g.add_argument("--steps", type=int, default=300)
    g.add_argument("--batch-size", type=int, default=8, help="sequences per step at --seq-len (shorter: more)")
    g.add_argument("--seq-len", type=int, default=1024, help="evaluation (and final training) sequence length")
    g.add_argument("--start-len", type=int, default=64, help="training sequence length at the first step")
    g.add_argument("--hold", type=float, default=0.3, help="share of the steps trained at --start-len")
    g.add_argument("--ramp", type=float, default=0.6,
                   help="share of the steps after which training is at --seq-len (0: no curriculum)")
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--pairs", type=int, default=8, help="key-value pairs per sequence (<= 12; shared values: <= 26)")
    g.add_argument("--queries", type=int, default=8, help="queried keys per sequence (<= pairs)")
    g.add_argument("--shared-values", action="store_true",
                   help="every key's values are the digits: in-context association (needs far more steps)")
    g.add_argument("--distances", type=int, nargs="+", default=[32, 128, 256, 512, 896])
    g.add_argument("--eval-sequences", type=int, default=64)
    g.add_argument("--window", type=int, default=128, help="efficia-1's LCP window in the recall runs")
    g.add_argument("--segment", type=int, default=32, help="efficia-1's memory segment in the recall runs")


# ---- the task --------------------------------------------------------------------
LETTERS = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
KEYS = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", dtype=np.uint8)
DIGITS = np.frombuffer(b"0123456789", dtype=np.uint8)
SPACE, OPEN, CLOSE, QUERY = (ord(c) for c in " []?")
OWN_ALPHABET_BASE = 128  # key i's own 10 value symbols: bytes 128 + 10 i ... 128 + 10 i + 9 (i < 12)
OWN_ALPHABET_KEYS = 12


@dataclass(frozen=True)
class RecallTask:
    pairs: int = 8
    queries: int = 8
    shared_values: bool = False  # True: every key's value is a digit (in-context association needed)

    def check(self) -> None:
        most = len(KEYS) if self.shared_values else OWN_ALPHABET_KEYS
        if not 1 <= self.queries <= self.pairs <= most:
            raise ValueError(f"need 1 <= queries ({self.queries}) <= pairs ({self.pairs}) <= {most}")

    def max_gap(self, seq_len: int) -> int:
        return seq_len - (2 * self.pairs + 2) - (2 * self.queries + 1)


def filler(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random lowercase letters with a space about every 6th byte: no key (capital) and no value."""
    out = LETTERS[rng.integers(0, len(LETTERS), n)]
    return np.where(rng.random(n) < 1 / 6, SPACE, out).astype(np.int64)


def recall_sequence(rng: np.random.Generator, seq_len: int, gap: int, task: RecallTask):
    """[filler] "[A v C v K v ...]" [gap filler] "?K v A v ..." -> (ids, positions of the queried values).

    Keys are distinct capitals, each followed by its value, one of 10 symbols: the key's own 10
    (bytes >= 128; so the value is found by what it is, wherever it lies) or, with shared values,
    the digits (then only the key next to it tells which is which). The queries repeat `queries`
    of the keys in random order, each once (so no query can copy a nearby earlier query).
    `gap` = filler bytes between the end of the pair block and the query block.
    """
    index = rng.choice(len(KEYS) if task.shared_values else OWN_ALPHABET_KEYS, task.pairs, replace=False)
    digit = rng.integers(0, len(DIGITS), task.pairs)
    keys = KEYS[index].astype(np.int64)
    values = DIGITS[digit].astype(np.int64) if task.shared_values else OWN_ALPHABET_BASE + 10 * index + digit
    block = np.concatenate(([OPEN], np.stack((keys, values), 1).reshape(-1), [CLOSE]))
    asked = rng.permutation(task.pairs)[:task.queries]
    query = np.concatenate(([QUERY], np.stack((keys[asked], values[asked]), 1).reshape(-1)))
    prefix = seq_len - len(block) - gap - len(query)
    if prefix < 0 or gap < 0:
        raise ValueError(f"gap {gap} does not fit in {seq_len} tokens (at most {task.max_gap(seq_len)})")
    ids = np.concatenate((filler(rng, prefix), block, filler(rng, gap), query))
    start = prefix + len(block) + gap
    return ids, [start + 2 + 2 * j for j in range(task.queries)]


def recall_batch(rng: np.random.Generator, batch: int, seq_len: int, gaps, task: RecallTask):
    """-> (ids [B, L], labels [B, L]: -100 everywhere but the queried values)."""
    ids = np.empty((batch, seq_len), dtype=np.int64)
    labels = np.full((batch, seq_len), -100, dtype=np.int64)
    for b, gap in enumerate(gaps):
        ids[b], positions = recall_sequence(rng, seq_len, int(gap), task)
        labels[b, positions] = ids[b, positions]
    return torch.from_numpy(ids), torch.from_numpy(labels)


def task_of(args) -> RecallTask:
    return RecallTask(args.pairs, args.queries, args.shared_values)


def train_length(args, step: int) -> int:
    """Length curriculum: --start-len for the first --hold of the steps, then growing linearly to --seq-len
    by --ramp of the steps (multiples of 64), then --seq-len.

    Far retrieval is not learnt from scratch at 1024 bytes in a CPU budget: the one value among a
    thousand random bytes gets too little of the attention (or memory) at first."""
    first, last = args.hold * args.steps, args.ramp * args.steps
    if args.start_len >= args.seq_len or step >= last:
        return args.seq_len
    grown = args.start_len + (args.seq_len - args.start_len) * max(0.0, step - first) / max(1e-9, last - first)
    return args.seq_len if grown >= args.seq_len else max(args.start_len, int(grown) // 64 * 64)


def train_batch_size(args, length: int) -> int:
    """As many sequences as make --batch-size x --seq-len tokens: short early batches hold many more queries."""
    return max(1, args.batch_size * args.seq_len // length)


def train_batches(args):
    """The same batches, in the same order, for every variant: a pure function of the seed."""
    rng = np.random.default_rng([args.seed, 0])
    task = task_of(args)
    for step in range(args.steps):
        length = train_length(args, step)
        batch = train_batch_size(args, length)
        yield recall_batch(rng, batch, length, rng.integers(0, task.max_gap(length) + 1, batch), task)


@torch.no_grad()
def recall_accuracy(model, args, gap: int) -> dict:
    """Value-byte accuracy at one gap on `eval_sequences` held-out sequences (their own seed per gap)."""
    rng = np.random.default_rng([args.seed, 1, gap])
    correct = total = 0
    model.eval()
    for start in range(0, args.eval_sequences, args.batch_size):
        n = min(args.batch_size, args.eval_sequences - start)
        ids, labels = recall_batch(rng, n, args.seq_len, [gap] * n, task_of(args))
        predicted = model(ids).logits[:, :-1].argmax(-1)  # position t predicts token t + 1
        target = labels[:, 1:]
        mask = target != -100
        hit = (predicted == target) & mask
        correct, total = correct + int(hit.sum()), total + int(mask.sum())
    model.train()
    return {"gap": gap, "accuracy": correct / total, "value_tokens": total}


def train_variant(args, variant: str, arch: str, overrides: dict) -> dict:
    from lmzoo.training.optim import CosineSchedule, build_optimizer, set_lr

    if arch == EFFICIA:  # the run's small window/segment, unless the variant sets its own
        overrides = {"window": args.window, "segment": args.segment, **overrides}
    torch.manual_seed(args.seed)
    model = lmzoo.create_model(arch, args.recall_size, **overrides).train()
    optimizer = build_optimizer(model, args.lr, 0.1, (0.9, 0.95))
    schedule = CosineSchedule(args.lr, max(1, args.steps // 10), args.steps)
    trace, start = [], time.perf_counter()
    every = max(1, args.steps // 10)
    for step, (ids, labels) in enumerate(train_batches(args)):
        model.set_training_progress(step / args.steps)
        set_lr(optimizer, schedule(step))
        loss = model(ids, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if (step + 1) % every == 0 or step + 1 == args.steps:
            trace.append({"step": step + 1, "loss": loss.item()})
            log(f"  {variant} step {step + 1}/{args.steps}: value loss {trace[-1]['loss']:.3f}")
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    scores = [recall_accuracy(model, args, gap) for gap in args.distances]
    del optimizer
    gc.collect()
    return {"variant": variant, "arch": arch, "overrides": overrides, "parameters": model.num_parameters(),
            "train_s": train_s, "eval_s": time.perf_counter() - start, "trace": trace, "scores": scores}


def measure_recall(args, specs: dict[str, tuple[str, dict]]) -> dict:
    """specs: variant name -> (architecture, config overrides), parsed by the caller."""
    task = task_of(args)
    top = task.max_gap(args.seq_len)
    if max(args.distances) > top:
        raise SystemExit(f"error: distance {max(args.distances)} does not fit in --seq-len {args.seq_len} "
                         f"with {args.pairs} pairs and {args.queries} queries (at most {top})")
    out = {"size": args.recall_size, "seq_len": args.seq_len, "steps": args.steps, "batch_size": args.batch_size,
           "start_len": args.start_len, "hold": args.hold, "ramp": args.ramp, "lr": args.lr, "seed": args.seed,
           "pairs": args.pairs, "queries": args.queries, "shared_values": args.shared_values, "window": args.window,
           "segment": args.segment, "distances": args.distances, "eval_sequences": args.eval_sequences,
           "chance": 1 / len(DIGITS), "max_training_gap": top,
           "training_tokens": sum(train_batch_size(args, n) * n
                                  for n in map(partial(train_length, args), range(args.steps))),
           "runs": []}
    for variant, (arch, overrides) in specs.items():
        log(f"recall: training {variant} ({args.steps} steps)")
        run = train_variant(args, variant, arch, overrides)
        out["runs"].append(run)
        log(f"  {variant}: " + ", ".join(f"D={s['gap']} {s['accuracy']:.3f}" for s in run["scores"])
            + f" ({run['train_s']:.0f} s)")
    return out


def render_recall(data: dict) -> str:
    r = data["recall"]
    head = ["variant", "params", "train s", "final value loss", *(f"D={d}" for d in r["distances"])]
    rows = []
    for run in r["runs"]:
        settings = ", ".join(f"{k}={v}" for k, v in run["overrides"].items())
        rows.append([f"`{run['variant']}`" + (f" ({settings})" if settings else ""), f"{run['parameters']:,}",
                     f"{run['train_s']:,.0f}", f"{run['trace'][-1]['loss']:.3f}",
                     *(f"**{s['accuracy']:.3f}**" for s in run["scores"])])
    rows.append(["chance (1 in 10)", "", "", "", *(f"{r['chance']:.3f}" for _ in r["distances"])])
    values = ("digits shared by all keys, so only the key written next to a value identifies it (in-context "
              "association)" if r["shared_values"] else
              "each key's value one of 10 symbols of its own, so the value is found by what it is: this measures "
              "whether what was written D bytes back reaches the query, not in-context key matching, which "
              "models this small do not learn in a CPU budget (`--shared-values` for that)")
    curriculum = (f"sequence length {r['start_len']} for the first {100 * r['hold']:.0f}% of the steps, growing to "
                  f"{r['seq_len']} by {100 * r['ramp']:.0f}%, then {r['seq_len']}"
                  if r["ramp"] > 0 and r["start_len"] < r["seq_len"] else f"sequences of {r['seq_len']} bytes")
    return "\n".join([
        "### Long context: associative recall across segments", "", common.command_header(data), "",
        (f"Byte sequences: random lowercase filler, a block of {r['pairs']} pairs `[K v K v ...]` (distinct "
         f"capital keys; values: {values}), D bytes of filler, then `?` and {r['queries']} of the keys again, each "
         f"to be followed by its value. Training, the same for every variant: seed {r['seed']}, {r['steps']} steps "
         f"of {r['batch_size']} x {r['seq_len']} tokens ({curriculum}, in as many more sequences as make the same tokens; "
         f"{r['training_tokens']:,} tokens in all; D uniform over what fits), "
         f"AdamW at lr {r['lr']}, loss on the queried values only; `{r['size']}` size; efficia-1 with window "
         f"{r['window']} and segment {r['segment']} unless stated. Cells: accuracy on the queried values of "
         f"{r['eval_sequences']} held-out {r['seq_len']}-byte sequences per distance D (filler bytes between the pair "
         f"block and the queries: the queried pair lies D+1 to D+{2 * r['pairs']} bytes before the `?`)."), "",
        common.markdown_table(head, rows), "", *recall_notes(r)])


def recall_notes(r: dict) -> list[str]:
    """Reading notes computed from the scores (no typed-in numbers)."""
    far = [d for d in r["distances"] if d >= r["window"]]
    if not far or not r["runs"]:
        return []
    mean = {run["variant"]: sum(s["accuracy"] for s in run["scores"] if s["gap"] in far) / len(far)
            for run in r["runs"]}
    ordered = sorted(mean, key=mean.get, reverse=True)
    notes = [f"Mean accuracy at distances beyond the LCP window (D >= {r['window']}: {', '.join(map(str, far))}), "
             "best first: " + ", ".join(f"`{v}` {mean[v]:.3f}" for v in ordered) + f" (chance {r['chance']:.3f})."]
    farthest = max(r["distances"])
    at = {run["variant"]: next(s["accuracy"] for s in run["scores"] if s["gap"] == farthest) for run in r["runs"]}
    notes.append(f"At the largest distance (D={farthest}): "
                 + ", ".join(f"`{v}` {at[v]:.3f}" for v in sorted(at, key=at.get, reverse=True)) + ".")
    if EFFICIA in mean:
        parts = [f"without {what} {mean[name] - mean[EFFICIA]:+.3f}" for name, what in
                 ((f"{EFFICIA}-no-memory", "the global memory"), (f"{EFFICIA}-no-compression", "the compression"),
                  (f"{EFFICIA}-lcp-only", "both")) if name in mean]
        if parts:
            notes.append(f"Against the full `{EFFICIA}` there: " + ", ".join(parts) + ".")
    return notes
