"""`lmzoo` — one command with a verb per task (litgpt style).

Every user error ends as one line on stderr (`lmzoo: error: ...`) and exit status 2; a
traceback means a bug in lmzoo.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys

from lmzoo.errors import LmzooError

# OSErrors that come from the user's environment, not from a bug: (problem, fix).
OS_ERROR_FIXES = {
    errno.ENOSPC: ("no space left on the device", "free some space or write somewhere else"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or write somewhere else"),
    errno.EFBIG: ("file too large for the file system", "write somewhere else"),
    errno.EROFS: ("read-only file system", "write somewhere else"),
    errno.EACCES: ("permission denied", "check the permissions or use another path"),
    errno.EPERM: ("operation not permitted", "check the permissions or use another path"),
    errno.EISDIR: ("a directory where a file is expected", "pass a file"),
    errno.ENOTDIR: ("a file where a directory is expected", "check the path"),
    errno.ENOENT: ("no such file or directory", "check the path"),
    errno.EEXIST: ("already exists", "choose another path"),
    errno.ENAMETOOLONG: ("file name too long", "use a shorter path"),
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (the message and where to find help), not the usage text."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def describe_os_error(err: OSError) -> str | None:
    """One line for an OSError the user can fix (full disk, permissions...); None for anything else."""
    if err.errno not in OS_ERROR_FIXES:
        return None
    problem, fix = OS_ERROR_FIXES[err.errno]
    where = f": {err.filename}" if err.filename else ""
    return f"{problem}{where}; {fix}"


def build_parser() -> argparse.ArgumentParser:
    from lmzoo.cli import (
        analysis_commands,
        arena_commands,
        collect_commands,
        data_commands,
        finetune_commands,
        hf_commands,
        model_commands,
        plot_commands,
        serve_commands,
        train_commands,
    )

    parser = ArgumentParser(
        prog="lmzoo", description="Build, train, compare and use efficient language-model architectures.")
    # A global option goes before or after the verb alike; its own dest keeps a verb's default from hiding it.
    parser.add_argument("--threads", dest="global_threads", type=int, default=None, help=THREADS_HELP)
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for module in (model_commands, data_commands, collect_commands, train_commands, finetune_commands,
                   analysis_commands, plot_commands, arena_commands, hf_commands, serve_commands):
        module.register(verbs)
    for leaf in leaf_parsers(parser):
        if "--threads" not in leaf._option_string_actions:  # train and finetune have it as a recipe field
            leaf.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    return parser


THREADS_HELP = "CPU threads for torch (default: torch's choice)"


def leaf_parsers(parser: argparse.ArgumentParser):
    """Every parser that runs a verb (`lmzoo data prepare`'s, not `lmzoo data`'s)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield parser
    for sub in subs:
        for child in sub.choices.values():
            yield from leaf_parsers(child)


def apply_threads(args) -> None:
    """--threads before the verb or after it; given in both places, the one after the verb wins."""
    if getattr(args, "threads", None) is None and args.global_threads is not None:
        args.threads = args.global_threads  # train/finetune: a flag given, over the recipe's value
    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            raise LmzooError(f"--threads must be >= 1, got {args.threads}")
        import torch
        torch.set_num_threads(args.threads)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # a usage error (2) or --help (0): a status, also when called in-process
        return e.code if isinstance(e.code, int) else 2
    try:
        apply_threads(args)
        return args.run(args) or 0
    except LmzooError as e:
        print(f"lmzoo: error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `lmzoo generate ... | head` (an OSError: caught before those)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:
        message = describe_os_error(e)
        if message is None:
            raise
        print(f"lmzoo: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nlmzoo: interrupted", file=sys.stderr)
        return 130


def one_line(message: str) -> str:
    return " ".join(message.split())


if __name__ == "__main__":
    sys.exit(main())
