"""Verbs that train: `train` and the offline `demo`."""
from __future__ import annotations

from lmzoo.paths import check_output_dir

# Sized so the demo takes about two minutes on a 2-core laptop CPU (see README).
DEMO_DEFAULTS = dict(arch="transformer", size="micro", seq_len=256, batch_size=8, max_steps=250,
                     lr=2e-3, warmup_steps=25, eval_interval=125, eval_batches=16, log_interval=25,
                     checkpoint_interval=125)


def register(verbs) -> None:
    from lmzoo.training.config import add_train_arguments

    p = verbs.add_parser("train", help="train a model (flags and/or --config recipe.yaml; torchrun for DDP)")
    add_train_arguments(p)
    p.set_defaults(run=run_train)

    p = verbs.add_parser("demo", help="offline demo: train a small model on Python's own docs, then sample")
    p.add_argument("--data", nargs="+", default=None,
                   help="text files/dirs to train on instead of the built-in corpus")
    p.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    p.add_argument("--arch", default=DEMO_DEFAULTS["arch"], help="architecture (default: transformer)")
    p.add_argument("--size", default=DEMO_DEFAULTS["size"], help="size preset (default: micro)")
    p.add_argument("--steps", type=int, default=DEMO_DEFAULTS["max_steps"], help="training steps (default: 250)")
    p.add_argument("--prompt", default="The ", help="prompt for the sample")
    p.set_defaults(run=run_demo)


def run_train(args) -> int:
    import json
    import os

    from lmzoo.training import run_training
    from lmzoo.training.config import config_from_args
    from lmzoo.training.distributed import exit_process

    config = config_from_args(args)
    check_output_dir(config.out)
    summary = run_training(config)
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps(summary))
    code = 130 if summary["status"] == "interrupted" else 0
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        exit_process(code)  # see exit_process: torchrun workers skip interpreter teardown
    return code


def run_demo(args) -> None:
    import torch

    import lmzoo
    from lmzoo.data import prepare_dataset, prepare_default_corpus
    from lmzoo.generation import check_prompts, generate_text
    from lmzoo.training import run_training
    from lmzoo.training.config import TrainConfig

    check_prompts([args.prompt])
    out = check_output_dir(args.out)
    data_dir = out / "data"
    if args.data:
        print(f"preparing {', '.join(args.data)} ...")
        prepare_dataset(args.data, data_dir, tokenizer="bytes", progress=True)
    elif not (data_dir / "meta.json").is_file():
        print("preparing the built-in corpus (Python's own documentation, bytes tokenizer) ...")
        prepare_default_corpus(data_dir)
    config = TrainConfig(**{**DEMO_DEFAULTS, "arch": args.arch, "size": args.size, "max_steps": args.steps,
                            "data": str(data_dir), "out": str(out), "resume": "none"})
    summary = run_training(config)
    model = lmzoo.load(summary["final_checkpoint"])
    torch.manual_seed(0)
    sample = generate_text(model, model.tokenizer, args.prompt, max_new_tokens=300, temperature=0.8,
                           top_k=50, seed=0)[0]
    print(f"\nvalidation: {summary['val_bpb']:.3f} bits per byte (loss {summary['val_loss']:.3f} nats/token)")
    print(f"model saved in {summary['final_checkpoint']}\n")
    print("sample:\n" + args.prompt + sample)
