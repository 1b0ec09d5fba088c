"""`lmzoo info RUN_OR_CHECKPOINT`: what a saved model, checkpoint or training run holds."""
from __future__ import annotations

import json
from pathlib import Path

from lmzoo.errors import LmzooError
from lmzoo.training.checkpointing import (
    BEST_SUFFIX,
    STATE_FILE,
    best_checkpoint,
    checkpoint_summary,
    list_checkpoint_summaries,
    resolve_model_dir,
)


def run_info_saved(args) -> None:
    import lmzoo

    target = args.arch
    if not target or (not Path(target).exists() and not target.endswith(BEST_SUFFIX)):
        raise LmzooError(f"unknown architecture '{target}' (valid: {', '.join(lmzoo.list_architectures())}), and no "
                         "saved model, checkpoint or run directory of that name; check the name or path")
    model_dir = resolve_model_dir(target)
    model = lmzoo.load(model_dir)
    info = {"model": str(model_dir), "arch": model.config.arch, "config": model.config.to_dict(),
            "parameters": model.num_parameters(embedding=True) + model.num_parameters(embedding=False),
            "tokenizer": None if model.tokenizer is None else {"kind": model.tokenizer.kind,
                                                               "vocab_size": model.tokenizer.vocab_size}}
    if (model_dir / STATE_FILE).is_file():  # a training checkpoint: where the run was
        info["checkpoint"] = checkpoint_summary(model_dir)
    run = run_directory(target, model_dir)
    if run is not None:
        best = best_checkpoint(run / "checkpoints")
        info["run"] = {"path": str(run), "best": None if best is None else str(best),
                       "checkpoints": list_checkpoint_summaries(run / "checkpoints")}
    print(json.dumps(info, indent=2) if args.json else format_info(info))


def run_directory(target: str, model_dir: Path) -> Path | None:
    """The training run `target` names (a run, RUN@best, or one of its checkpoints), if any."""
    run = Path(target[: -len(BEST_SUFFIX)] if target.endswith(BEST_SUFFIX) else target)
    for candidate in (run, model_dir.parent.parent):
        if (candidate / "checkpoints").is_dir() and model_dir.parent == candidate / "checkpoints":
            return candidate
    return None


def format_info(info: dict) -> str:
    tok = info["tokenizer"]
    tokenizer = "none saved" if tok is None else f"{tok['kind']} (vocab {tok['vocab_size']:,})"
    lines = [f"{info['model']}: {info['arch']}, {info['parameters']:,} parameters", f"  tokenizer: {tokenizer}",
             "  config: " + ", ".join(f"{k}={v}" for k, v in info["config"].items() if k != "config_version")]
    if "checkpoint" in info:
        c = info["checkpoint"]
        lines.append(f"  step {c['step']:,}, {c['tokens_seen']:,} tokens seen; val loss here {loss(c['val_loss'])}, "
                     f"best so far {loss(c['best_val_loss'])}")
    if "run" in info:
        lines.append(f"checkpoints of {info['run']['path']} (step, tokens seen, val loss):")
        for row in info["run"]["checkpoints"]:
            mark = "  <- best" if row["path"] == info["run"]["best"] else ""
            mark += "  <- this one" if row["path"] == info["model"] else ""
            if "error" in row:
                lines.append(f"  {Path(row['path']).name}  damaged: {row['error']}")
            else:
                lines.append(f"  {Path(row['path']).name}  {row['tokens_seen']:>12,}  {loss(row['val_loss']):>8}{mark}")
    return "\n".join(lines)


def loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
