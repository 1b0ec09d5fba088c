"""The `finetune` verb: Q&A JSONL -> a fine-tuned model (full, freeze or LoRA; see training/finetune.py)."""
from __future__ import annotations

import argparse
import json

from lmzoo.errors import LmzooError
from lmzoo.paths import check_output_dir


def unescape(text: str) -> str:
    r"""Turn a typed `\n` / `\t` into the character: shells pass them literally (`'Q: {question}\nA: '`)."""
    return text.replace("\\n", "\n").replace("\\t", "\t")


def register(verbs) -> None:
    from lmzoo.training.finetune import DEFAULT_LR, METHODS
    from lmzoo.training.qa_eval import DEFAULT_TEMPLATE

    p = verbs.add_parser("finetune", help="fine-tune a model on question/answer JSONL (full, freeze or LoRA)")
    p.add_argument("base", help="base model: a saved model, a training checkpoint or a training run directory")
    p.add_argument("--data", required=True, help="JSONL, one {question, answer} (or {prompt, completion}, "
                   "{instruction, input?, output}) object per line")
    p.add_argument("--out", required=True, help="directory for the fine-tuned model and finetune.json")
    p.add_argument("--method", default="lora", choices=METHODS,
                   help="full: every weight; freeze: freeze the embeddings and the first --freeze-layers "
                        "blocks; lora: low-rank adapters merged at the end (default: lora)")
    p.add_argument("--template", default=DEFAULT_TEMPLATE, type=unescape,
                   help=f"prompt before each answer, with a {{question}} placeholder; \\n is a newline "
                        f"(default: {DEFAULT_TEMPLATE!r}); `lmzoo eval --qa` reuses it")
    p.add_argument("--epochs", type=int, default=3, help="passes over the training examples (default: 3)")
    p.add_argument("--max-steps", type=int, default=None, help="optimizer steps instead of --epochs")
    p.add_argument("--batch-size", type=int, default=8, help="examples per step (default: 8)")
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (default: " + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items()) + ")")
    p.add_argument("--min-lr-ratio", type=float, default=0.1, help="final lr as a fraction of --lr (default: 0.1)")
    p.add_argument("--warmup-steps", type=int, default=0, help="linear warmup steps (default: 0)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (default: 0)")
    p.add_argument("--grad-clip", type=float, default=1.0, help="global gradient-norm clip; 0 = off (default: 1)")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of the examples held out for the per-epoch val loss (default: 0.1)")
    p.add_argument("--max-length", type=int, default=512,
                   help="skip examples longer than this many tokens (default: 512)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the batch order and LoRA init")
    # SUPPRESS: an unset flag must not overwrite `lmzoo --threads N finetune ...`.
    p.add_argument("--threads", type=int, default=argparse.SUPPRESS, help="CPU threads for torch")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16"),
                   help="auto = bf16 autocast on CUDA, fp32 on CPU")
    p.add_argument("--freeze-layers", type=int, default=None,
                   help="freeze: how many of the first blocks to freeze (default: half of them)")
    p.add_argument("--lora-r", type=int, default=8, help="LoRA rank (default: 8)")
    p.add_argument("--lora-alpha", type=float, default=16.0, help="LoRA alpha; the update is scaled by alpha/r "
                   "(default: 16)")
    p.add_argument("--lora-dropout", type=float, default=0.0, help="dropout on the LoRA input (default: 0)")
    p.add_argument("--lora-targets", default=None, type=lambda s: tuple(t.strip() for t in s.split(",") if t.strip()),
                   help="comma-separated names of Linear layers to adapt (default: the architecture's "
                        "token-mixer input projections, declared as its `lora_targets`)")
    p.set_defaults(run=run_finetune)


def run_finetune(args) -> None:
    from lmzoo.training.finetune import FinetuneConfig, finetune

    check_output_dir(args.out)
    if args.lora_targets is not None and (args.method != "lora" or not args.lora_targets):
        raise LmzooError(f"--lora-targets needs --method lora and at least one layer name, got "
                         f"{','.join(args.lora_targets) or 'none'} with --method {args.method}")
    cfg = FinetuneConfig(
        base=args.base, data=args.data, out=args.out, method=args.method, template=args.template,
        epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size, lr=args.lr,
        min_lr_ratio=args.min_lr_ratio, warmup_steps=args.warmup_steps, weight_decay=args.weight_decay,
        grad_clip=args.grad_clip, val_fraction=args.val_fraction, max_length=args.max_length, seed=args.seed,
        threads=getattr(args, "threads", None), device=args.device, dtype=args.dtype,
        freeze_layers=args.freeze_layers, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout, lora_targets=args.lora_targets or ())
    report = finetune(cfg)
    shown = {k: report[k] for k in ("method", "trainable_params", "total_params", "trainable_ratio", "steps",
                                    "initial_val_loss", "val_loss", "train_loss", "elapsed_s", "out")}
    print(json.dumps(shown, indent=2))
    print(f"next: lmzoo eval {args.out} --qa {args.data}")
