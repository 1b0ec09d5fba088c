"""`lmzoo` — one command with a verb per task (litgpt style).

Every user error ends as one line on stderr (`lmzoo: error: ...`) and exit status 2; a
traceback means a bug in lmzoo.
"""
from __future__ import annotations

import argparse
import os
import sys

from lmzoo.errors import LmzooError


def build_parser() -> argparse.ArgumentParser:
    from lmzoo.cli import (
        analysis_commands,
        collect_commands,
        data_commands,
        finetune_commands,
        model_commands,
        train_commands,
    )

    parser = argparse.ArgumentParser(
        prog="lmzoo", description="Build, train, compare and use efficient language-model architectures.")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice)")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for module in (model_commands, data_commands, collect_commands, train_commands, finetune_commands,
                   analysis_commands):
        module.register(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    try:
        return args.run(args) or 0
    except LmzooError as e:
        print(f"lmzoo: error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"lmzoo: error: no such file: {e.filename}; check the path", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nlmzoo: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `lmzoo generate ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
