"""Run under torchrun by tests/test_distributed.py: one process group, many training runs.

    torchrun ... tests/distributed_worker.py SPEC.json

SPEC: {"root": DIR, "cases": {NAME: [flags]}, "modes": ["ddp", "fsdp"], "resume": bool, "args": [...]}.
For each case and mode it trains `root/NAME/MODE` with `run_training` (the entry point
`python -m lmzoo.training` uses) and the case's flags plus `args`; with "resume", a copy of the
FSDP run loses its last checkpoint and its metrics and is resumed into `root/NAME/fsdp-resumed`. Starting
the processes once for all of this is what keeps the six-architecture contract affordable.
"""
import argparse
import gc
import json
import shutil
import sys
from pathlib import Path

import torch.distributed as dist

from lmzoo.training import add_train_arguments, config_from_args, run_training
from lmzoo.training.checkpointing import checkpoint_dir
from lmzoo.training.distributed import exit_process


def train(out: Path, args: list[str], fsdp: bool) -> None:
    parser = add_train_arguments(argparse.ArgumentParser())
    flags = ["--out", str(out), *args, *(["--fsdp"] if fsdp else [])]
    summary = run_training(config_from_args(parser.parse_args(flags)), verbose=False)
    assert summary["status"] == "completed", summary


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    root, args = Path(spec["root"]), spec["args"]
    dist.init_process_group("gloo")  # the runs below share it (they leave a group they did not create)
    for name, flags in spec["cases"].items():
        for mode in spec["modes"]:
            train(root / name / mode, flags + args, fsdp=mode == "fsdp")
        if spec["resume"]:
            resumed = root / name / "fsdp-resumed"
            if dist.get_rank() == 0:
                shutil.copytree(root / name / "fsdp", resumed)
                last = max(int(p.name.split("-")[1]) for p in (resumed / "checkpoints").iterdir())
                shutil.rmtree(checkpoint_dir(resumed / "checkpoints", last))
                (resumed / "metrics.jsonl").unlink()
            dist.barrier()
            train(resumed, flags + args, fsdp=True)
        if dist.get_rank() == 0:
            print(f"done {name}", file=sys.stderr, flush=True)
    gc.collect()  # no DDP wrapper may outlive the group (see lmzoo.training.distributed.shutdown)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
    exit_process(0)
