"""The `arena` verb: every architecture on the same data and budget (see lmzoo/arena, docs/arena.md)."""
from __future__ import annotations

from lmzoo.devices import DTYPES

PROFILE_FLAGS = {  # flag -> (type, nargs, help); each overrides the chosen profile's value
    "--size": (str, None, "size preset of every architecture (parameter-matched across architectures)"),
    "--seq-len": (int, None, "tokens per training window"),
    "--batch-size": (int, None, "windows per optimizer step"),
    "--lrs": (float, "+", "learning rates of the sweep each architecture runs"),
    "--sweep-steps": (int, None, "optimizer steps of one sweep run"),
    "--evals": (int, None, "evaluations per run (the points of the curves)"),
    "--eval-batches": (int, None, "val and test batches per evaluation"),
    "--contexts": (int, "+", "prompt lengths after which decode speed and time to first token are measured"),
    "--decode-tokens": (int, None, "greedy tokens timed per context"),
    "--lengths": (int, "+", "sequence lengths of the forward+backward sweep"),
}


def register(verbs) -> None:
    p = verbs.add_parser("arena", help="train every architecture on the same data under one budget (tokens or "
                                       "seconds) with a learning-rate sweep and several seeds; verdict table, "
                                       "cost probes and plots")
    p.add_argument("--data", required=True, help="training text (file or directory; 10%% is held out for val) "
                                                 "or a dataset directory written by `lmzoo data prepare`")
    p.add_argument("--test", help="held-out text the models never train on (test bits per byte)")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--budget-tokens", type=float, help="training tokens per run (equal tokens)")
    budget.add_argument("--budget-seconds", type=float, help="training seconds per run (equal wall-clock); "
                                                             "the step count comes from the sweep's step time")
    p.add_argument("--archs", nargs="+", help="architectures to compare (default: all)")
    p.add_argument("--seeds", type=int, default=2, help="seeds per architecture (default: 2)")
    profile = p.add_mutually_exclusive_group()
    profile.add_argument("--quick", dest="profile", action="store_const", const="quick",
                         help="the 2-core CPU profile (default): nano models, short runs and probes")
    profile.add_argument("--full", dest="profile", action="store_const", const="full",
                         help="the profile for real machines and GPUs: micro models, 8k contexts")
    p.add_argument("--device", default="auto", help="auto (default: CUDA when available), cpu, cuda, cuda:N or mps")
    p.add_argument("--dtype", default="auto", choices=DTYPES,
                   help="auto = bf16 autocast on CUDA, fp32 on CPU (default: auto)")
    p.add_argument("--out", required=True, help="arena directory (new or empty, or an earlier arena to resume)")
    group = p.add_argument_group("profile overrides (default: the profile's value, see docs/arena.md)")
    for flag, (kind, nargs, text) in PROFILE_FLAGS.items():
        group.add_argument(flag, type=kind, nargs=nargs, help=text)
    p.set_defaults(run=run_arena_verb, profile="quick")


def run_arena_verb(args) -> None:
    from pathlib import Path

    from lmzoo.arena import ArenaSettings, make_profile, run_arena
    from lmzoo.registry import list_architectures

    overrides = {flag[2:].replace("-", "_"): getattr(args, flag[2:].replace("-", "_")) for flag in PROFILE_FLAGS}
    by_tokens = args.budget_tokens is not None
    kind, budget = ("tokens", args.budget_tokens) if by_tokens else ("seconds", args.budget_seconds)
    settings = ArenaSettings(
        data=str(Path(args.data).resolve()), test=str(Path(args.test).resolve()) if args.test else None,
        budget_kind=kind, budget=budget, archs=tuple(args.archs or list_architectures()), seeds=args.seeds,
        device=args.device, dtype=args.dtype, threads=args.threads, profile=make_profile(args.profile, **overrides))
    state = run_arena(settings, args.out)
    for rank, row in enumerate(state["verdict"], 1):
        print(f"{rank}. {row['arch']}: val bpb {row['val_bpb']['mean']:.3f}")
    print(f"wrote {Path(args.out) / 'results.md'}")
