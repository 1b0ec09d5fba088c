"""Run the lmzoo CLI under torchrun with a guard on leaving the process group.

    torchrun ... tests/torchrun_guard.py VERB ARGS...

The guard fails the run if a DDP wrapper is still alive when the process group is destroyed: its
`Reducer` would then drop the group's last reference later, in a destructor that joins gloo's
worker threads while holding the GIL, and a worker that needs the GIL hangs the process (see
`lmzoo.training.distributed.shutdown`). That hang is a race; a wrapper outliving the group is not.
"""
import gc
import sys

import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from lmzoo.cli.main import main

_destroy = dist.destroy_process_group


def guarded_destroy(*args, **kwargs):
    alive = sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects())
    if alive:
        raise AssertionError(f"{alive} DDP wrapper(s) still alive when the process group is destroyed")
    return _destroy(*args, **kwargs)


if __name__ == "__main__":
    dist.destroy_process_group = guarded_destroy
    sys.exit(main(sys.argv[1:]))
