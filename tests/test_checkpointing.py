"""Training checkpoints: layout, exact resume, pruning, and corrupt checkpoints."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import lmzoo
from lmzoo.errors import LmzooError
from lmzoo.training import TrainConfig, run_training
from lmzoo.training.checkpointing import (
    checkpoint_dir,
    flatten_optimizer_state,
    latest_valid_checkpoint,
    list_checkpoints,
    load_checkpoint,
    unflatten_optimizer_state,
)
from lmzoo.training.distributed import init_distributed
from lmzoo.training.trainer import StopRequest, Trainer


def tiny(data_dir, out, **overrides) -> TrainConfig:
    base = dict(arch="complexity", size="nano", model_args={"d_model": 32, "n_layers": 2, "d_ff": 64},
                data=str(data_dir), out=str(out), seq_len=32, batch_size=4, max_steps=4, warmup_steps=2,
                log_interval=1, eval_interval=0, eval_batches=2, checkpoint_interval=2, keep_last=0, threads=1)
    return TrainConfig(**{**base, **overrides})


def train_losses(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if r["type"] == "train"}  # later rows win


def assert_same_checkpoint(a, b):
    for name, tensor in a.model_state.items():
        assert torch.equal(tensor, b.model_state[name]), name
    assert a.optimizer_state["state"].keys() == b.optimizer_state["state"].keys()
    for param, entries in a.optimizer_state["state"].items():
        for key, tensor in entries.items():
            assert torch.equal(tensor, b.optimizer_state["state"][param][key]), (param, key)


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
    """An uninterrupted 4-step run with checkpoints at steps 2 and 4."""
    out = tmp_path_factory.mktemp("reference")
    run_training(tiny(data_dir, out))
    return out


def resumable_copy(reference, tmp_path):
    """The reference run as if it had died right after its step-2 checkpoint."""
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    shutil.rmtree(checkpoint_dir(out / "checkpoints", 4))
    (out / "metrics.jsonl").unlink()
    return out


def test_checkpoint_layout_and_lmzoo_load(reference):
    ckpt = checkpoint_dir(reference / "checkpoints", 4)
    names = {p.name for p in ckpt.iterdir()}
    assert names == {"config.json", "model.safetensors", "tokenizer.json", "optimizer.safetensors",
                     "rng_state.safetensors", "trainer_state.json"}
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["step"] == 4 and state["tokens_seen"] == 4 * 4 * 32 and state["train_config"]["seq_len"] == 32
    model = lmzoo.load(ckpt)  # a training checkpoint is a model directory too
    assert model.tokenizer is not None
    loaded = load_checkpoint(ckpt)
    for name, tensor in model.state_dict().items():
        if name != "lm_head.weight":  # tied to the embedding
            assert torch.equal(tensor, loaded.model_state[name])


def test_optimizer_state_flattening_round_trips():
    state = {"state": {"embed.weight": {"step": torch.tensor(3.0), "exp_avg": torch.ones(2, 3)},
                       "norm.weight": {"step": 5, "exp_avg": torch.zeros(4)}},
             "param_groups": [{"lr": 0.1, "betas": [0.9, 0.95], "params": ["embed.weight", "norm.weight"]}]}
    tensors, metadata = flatten_optimizer_state(state)
    assert set(tensors) == {"embed.weight/step", "embed.weight/exp_avg", "norm.weight/exp_avg"}
    assert all(isinstance(v, str) for v in metadata.values())  # safetensors metadata is str -> str
    back = unflatten_optimizer_state(tensors, metadata)
    assert back["param_groups"] == state["param_groups"] and back["state"]["norm.weight"]["step"] == 5
    assert torch.equal(back["state"]["embed.weight"]["exp_avg"], torch.ones(2, 3))


def test_resume_is_exact(reference, tmp_path, data_dir, monkeypatch):
    out = resumable_copy(reference, tmp_path)
    # Checkpoint data must never go through pickle.
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load used on checkpoint data"))
    summary = run_training(tiny(data_dir, out))
    assert summary["step"] == 4
    assert train_losses(out) == {s: l for s, l in train_losses(reference).items() if s > 2}
    assert_same_checkpoint(load_checkpoint(checkpoint_dir(reference / "checkpoints", 4)),
                           load_checkpoint(checkpoint_dir(out / "checkpoints", 4)))


def test_resume_restores_the_rng(reference, tmp_path, data_dir):
    out = resumable_copy(reference, tmp_path)
    saved = load_checkpoint(checkpoint_dir(out / "checkpoints", 2)).rng_state["torch_cpu"]
    torch.manual_seed(1234)
    Trainer(tiny(data_dir, out), init_distributed("cpu"), StopRequest())
    assert torch.equal(torch.get_rng_state(), saved)


def test_resume_from_an_explicit_path_and_none(reference, tmp_path, data_dir, capsys):
    out = tmp_path / "other"
    run_training(tiny(data_dir, out, max_steps=3, resume=str(checkpoint_dir(reference / "checkpoints", 2))))
    assert list(train_losses(out)) == [3]
    assert "resuming with changed learning-rate schedule" in capsys.readouterr().err  # run length changed
    fresh = tmp_path / "fresh"
    shutil.copytree(reference, fresh)
    run_training(tiny(data_dir, fresh, resume="none", max_steps=1))
    assert train_losses(fresh)[1] == train_losses(reference)[1]


def test_keep_last_prunes_oldest(data_dir, tmp_path):
    run_training(tiny(data_dir, tmp_path, max_steps=5, checkpoint_interval=1, keep_last=2))
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-0000004", "step-0000005"]


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


CORRUPTIONS = {
    "truncated weights": lambda d: truncate(d / "model.safetensors"),
    "truncated optimizer": lambda d: truncate(d / "optimizer.safetensors"),
    "bad trainer json": lambda d: (d / "trainer_state.json").write_text("{\"step\": 4,"),
    "bad config json": lambda d: (d / "config.json").write_text("not json"),
    "missing rng": lambda d: (d / "rng_state.safetensors").unlink(),
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_corrupt_latest_falls_back_with_a_warning(reference, tmp_path, capsys, corrupt):
    root = tmp_path / "checkpoints"
    shutil.copytree(reference / "checkpoints", root)
    corrupt(checkpoint_dir(root, 4))
    with pytest.raises(LmzooError):
        load_checkpoint(checkpoint_dir(root, 4))
    found = latest_valid_checkpoint(root)
    assert found.step == 2
    warning = capsys.readouterr().err.strip()
    assert warning.startswith("warning: skipping checkpoint step-0000004") and "\n" not in warning
    assert checkpoint_dir(root, 4).is_dir()  # kept for inspection, never deleted


def test_training_resumes_past_a_corrupt_checkpoint(reference, tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    (out / "metrics.jsonl").unlink()
    truncate(checkpoint_dir(out / "checkpoints", 4) / "model.safetensors")
    run_training(tiny(data_dir, out, max_steps=3, keep_last=1))
    err = capsys.readouterr().err
    assert "skipping checkpoint step-0000004" in err and "step-0000002 (step 2)" in err
    assert train_losses(out) == {3: train_losses(reference)[3]}
    # Pruning keeps the newest checkpoint up to this run's step and leaves the broken newer one.
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step-0000003", "step-0000004"]


def test_leftover_partial_write_is_not_a_checkpoint(reference, tmp_path, data_dir):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a writer that has exited: its temp directory is debris
    partial = out / "checkpoints" / f".step-0000006.tmp-{dead.pid}-abc123"
    live = out / "checkpoints" / f".step-0000006.tmp-{os.getpid()}-def456"  # a writer still running
    unknown = out / "checkpoints" / ".step-0000006.tmp-abc123"  # no pid: whose it is cannot be told
    for path in (partial, live, unknown):
        shutil.copytree(checkpoint_dir(out / "checkpoints", 4), path)
        truncate(path / "model.safetensors")
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step-0000002", "step-0000004"]
    run_training(tiny(data_dir, out, max_steps=5, checkpoint_interval=0))
    assert not partial.exists()  # cleaned up at start
    assert live.is_dir() and unknown.is_dir()
