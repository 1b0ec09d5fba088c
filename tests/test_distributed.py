"""Two processes under torchrun (gloo, CPU) train exactly like one process with the same global batch.

Each rank takes half of every step's global batch and accumulates it over two micro-batches, so
the DDP `no_sync` / FSDP `set_requires_gradient_sync` paths are exercised too.
"""
import json
import shutil
import subprocess
import sys

import pytest
import torch

import lmzoo
from lmzoo.training.checkpointing import checkpoint_dir, load_checkpoint

STEPS = 4


def train(data_dir, out, nproc=1, *extra):
    args = ["--data", str(data_dir), "--out", str(out), "--arch", "complexity", "--model-arg", "d_model=32",
            "--model-arg", "n_layers=2", "--model-arg", "d_ff=64", "--seq-len", "32", "--max-steps", str(STEPS),
            "--warmup-steps", "2", "--log-interval", "1", "--eval-interval", "2", "--eval-batches", "4",
            "--checkpoint-interval", "2", "--keep-last", "0", "--threads", "1", *extra]
    launcher = [sys.executable, "-m", "lmzoo.training"]
    if nproc > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                    str(nproc), "-m", "lmzoo.training"]
    result = subprocess.run(launcher + args, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def metrics(out, kind):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if r["type"] == kind}


@pytest.fixture(scope="module")
def single(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    train(data_dir, out, 1, "--batch-size", "2", "--grad-accum", "2")
    return out


def assert_same_run(single, out):
    a, b = metrics(single, "train"), metrics(out, "train")
    assert sorted(a) == sorted(b) == list(range(1, STEPS + 1))
    for step in a:
        assert b[step]["loss"] == pytest.approx(a[step]["loss"], abs=1e-5), step
        assert b[step]["tokens"] == a[step]["tokens"]
    va, vb = metrics(single, "eval"), metrics(out, "eval")
    for step in va:  # each rank evaluates half of the val batches; the sums are all-reduced
        assert vb[step]["val_loss"] == pytest.approx(va[step]["val_loss"], abs=1e-5)
        assert vb[step]["val_tokens"] == va[step]["val_tokens"]
    wa = load_checkpoint(checkpoint_dir(single / "checkpoints", STEPS)).model_state
    wb = load_checkpoint(checkpoint_dir(out / "checkpoints", STEPS)).model_state
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], atol=1e-5, rtol=1e-4)


def test_ddp_matches_single_process(data_dir, single, tmp_path):
    train(data_dir, tmp_path, 2, "--batch-size", "1", "--grad-accum", "2")
    assert_same_run(single, tmp_path)


def test_fsdp_matches_single_process_and_resumes(data_dir, single, tmp_path):
    out = tmp_path / "fsdp"
    result = train(data_dir, out, 2, "--batch-size", "1", "--grad-accum", "2", "--fsdp")
    assert result.stdout.count('"status": "completed"') == 1  # only rank 0 reports
    assert_same_run(single, out)
    lmzoo.load(checkpoint_dir(out / "checkpoints", STEPS))  # gathered full weights, loadable as a model

    # Resume the sharded run from its step-2 checkpoint: the optimizer state is re-sharded.
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    shutil.rmtree(checkpoint_dir(resumed / "checkpoints", STEPS))
    (resumed / "metrics.jsonl").unlink()
    train(data_dir, resumed, 2, "--batch-size", "1", "--grad-accum", "2", "--fsdp")
    full, tail = metrics(out, "train"), metrics(resumed, "train")
    assert sorted(tail) == [3, 4]
    for step in tail:
        assert tail[step]["loss"] == pytest.approx(full[step]["loss"], abs=1e-6)
