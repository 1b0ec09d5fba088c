"""The `finetune` verb: Q&A JSONL -> a fine-tuned model (full, freeze or LoRA; see training/finetune.py)."""
from __future__ import annotations

import json
import os


def register(verbs) -> None:
    from lmzoo.training.config import add_config_arguments
    from lmzoo.training.finetune import FinetuneConfig

    p = verbs.add_parser("finetune", help="fine-tune a model on question/answer JSONL (full, freeze or LoRA; "
                                          "flags and/or --config recipe.yaml)")
    add_config_arguments(p, FinetuneConfig)
    p.set_defaults(run=run_finetune)


def run_finetune(args) -> int:
    from lmzoo.training.config import config_from_args
    from lmzoo.training.distributed import exit_process
    from lmzoo.training.finetune import FinetuneConfig, finetune

    result = finetune(config_from_args(args, FinetuneConfig))
    if os.environ.get("RANK", "0") == "0":
        if result["status"] == "completed":
            shown = {k: result[k] for k in ("method", "trainable_params", "total_params", "trainable_ratio",
                                            "steps", "initial_val_loss", "val_loss", "train_loss", "elapsed_s",
                                            "out")}
            print(json.dumps(shown, indent=2))
            print(f"next: lmzoo eval {result['out']} --qa {result['data']}")
        else:
            print(json.dumps(result))
    code = 130 if result["status"] == "interrupted" else 0
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        exit_process(code)  # see exit_process: torchrun workers skip interpreter teardown
    return code
