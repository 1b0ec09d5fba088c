"""`lmzoo-torchrun` (or `python -m lmzoo.training.launch`): torchrun, ending quietly on Ctrl-C.

It takes torchrun's arguments and runs torchrun itself (`torch.distributed.run`). On Ctrl-C (or
SIGTERM) torchrun passes the signal on to its workers, which finish the step, save a checkpoint
and exit with status 130; torchrun then re-raises the signal as a `SignalException`, whose
traceback would end the output. Here that exception becomes one line and the shell's status for
the signal (130 for SIGINT, 143 for SIGTERM). Anything else torchrun reports is left as it is.
"""
from __future__ import annotations

import signal
import sys

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.run import main as torchrun


def main(argv: list[str] | None = None) -> int:
    try:
        torchrun(argv)
    except SignalException as e:
        name = signal.Signals(e.sigval).name
        print(f"lmzoo-torchrun: stopped by {name}", file=sys.stderr, flush=True)
        return 128 + int(e.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
