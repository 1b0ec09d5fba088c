"""`python -m lmzoo.training [flags]` (and `torchrun ... -m lmzoo.training`): the same as `lmzoo train`."""
from __future__ import annotations

import argparse
import json
import os
import sys

from lmzoo.errors import LmzooError
from lmzoo.training import add_train_arguments, config_from_args, run_training
from lmzoo.training.distributed import exit_process

EXIT_INTERRUPTED = 130  # the shell's convention for "stopped by SIGINT"


def main(argv: list[str] | None = None) -> int:
    parser = add_train_arguments(argparse.ArgumentParser(prog="python -m lmzoo.training",
                                                         description="Train an lmzoo model."))
    args = parser.parse_args(argv)
    try:
        summary = run_training(config_from_args(args))
    except LmzooError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") == "0":  # under torchrun every rank returns the summary
        print(json.dumps(summary))
    return EXIT_INTERRUPTED if summary["status"] == "interrupted" else 0


if __name__ == "__main__":
    exit_process(main())
