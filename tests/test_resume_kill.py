"""Crash safety of a real training process: SIGKILL mid-run, then resume; and Ctrl-C.

The killed run's checkpoints must all be complete, and resuming must reproduce the losses of
an uninterrupted run bit for bit (batches are a pure function of the step), losing at most one
checkpoint interval of work.
"""
import json
import signal
import subprocess
import sys
import time

import pytest

from lmzoo.training.checkpointing import list_checkpoints, load_checkpoint, step_of

STEPS = 150
INTERVAL = 10


def command(data_dir, out):
    return [sys.executable, "-m", "lmzoo.training", "--data", str(data_dir), "--out", str(out),
            "--arch", "complexity", "--model-arg", "d_model=32", "--model-arg", "n_layers=2",
            "--model-arg", "d_ff=64", "--seq-len", "32", "--batch-size", "4", "--max-steps", str(STEPS),
            "--warmup-steps", "5", "--log-interval", "1", "--eval-interval", "0", "--eval-batches", "1",
            "--checkpoint-interval", str(INTERVAL), "--keep-last", "3", "--threads", "1"]


def train_rows(out):
    path = out / "metrics.jsonl"
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    return [r for r in map(json.loads, lines[:-1] if lines and not lines[-1].endswith("}") else lines)
            if r["type"] == "train"]


def start_and_wait(data_dir, out, min_step):
    """Start a run in the background; return it once it has logged `min_step` (or failed)."""
    proc = subprocess.Popen(command(data_dir, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        rows = train_rows(out)
        if rows and rows[-1]["step"] >= min_step:
            return proc
        time.sleep(0.005)
    proc.kill()
    pytest.fail(f"run never reached step {min_step}: {proc.communicate()[1][-2000:]}")


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    subprocess.run(command(data_dir, out), check=True, capture_output=True, timeout=120)
    return {r["step"]: r["loss"] for r in train_rows(out)}


def test_sigkill_then_resume_matches_uninterrupted_run(data_dir, tmp_path, reference):
    out = tmp_path / "run"
    proc = start_and_wait(data_dir, out, min_step=2 * INTERVAL + 3)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    killed = train_rows(out)
    killed_at = killed[-1]["step"]
    assert proc.returncode == -signal.SIGKILL and killed_at < STEPS, "the run finished before the kill"

    # Whatever was on disk when it died: every visible checkpoint is complete.
    checkpoints = list_checkpoints(out / "checkpoints")
    assert checkpoints, "no checkpoint was written before the kill"
    for path in checkpoints:
        load_checkpoint(path)
    resumed_from = step_of(checkpoints[-1])
    assert killed_at - resumed_from <= INTERVAL  # at most one interval of work lost

    result = subprocess.run(command(data_dir, out), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"step-{resumed_from:07d} (step {resumed_from})" in result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["step"] == STEPS

    rows = train_rows(out)
    first_run, second_run = rows[:len(killed)], rows[len(killed):]
    assert [r["step"] for r in second_run] == list(range(resumed_from + 1, STEPS + 1))
    for row in first_run + second_run:  # both segments, exactly
        assert row["loss"] == reference[row["step"]], row["step"]


def test_sigint_saves_a_checkpoint_and_exits_cleanly(data_dir, tmp_path):
    out = tmp_path / "run"
    proc = start_and_wait(data_dir, out, min_step=3)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    stopped_at = train_rows(out)[-1]["step"]
    assert f"SIGINT: stopped at step {stopped_at} and saved" in stderr
    assert json.loads(stdout.splitlines()[-1])["status"] == "interrupted"
    checkpoint = list_checkpoints(out / "checkpoints")[-1]
    assert step_of(checkpoint) == stopped_at < STEPS
    assert load_checkpoint(checkpoint).step == stopped_at
