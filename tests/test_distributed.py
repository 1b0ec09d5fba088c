"""The distributed contract: under torchrun (gloo, CPU), every architecture trains exactly like one
process with the same global batch, under DDP and FSDP2, and an FSDP2 run resumes exactly.

Each rank takes half of every step's global batch and accumulates it over two micro-batches, so
DDP's `no_sync` and FSDP's `set_requires_gradient_sync` paths run too; the single process
accumulates the same four micro-batches. One torchrun job trains every case
(`distributed_worker.py`), so processes start once. `make test` runs one architecture on two
"nodes" (two torchrun agents meeting at a c10d rendezvous on 127.0.0.1); `make test-all` runs
all of them, and Ctrl-C under the launcher. What the contract needs from the models (no 0-d
parameters, parameters without gradient declared) is checked in this process, for every
contract configuration.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import contract_cases
from safetensors import safe_open
from safetensors.torch import save_file

import lmzoo
from lmzoo.checkpoint import WEIGHTS_FILE, save_pretrained
from lmzoo.training import add_train_arguments, config_from_args, run_training
from lmzoo.training.checkpointing import OPTIMIZER_FILE, checkpoint_dir, list_checkpoints, load_checkpoint

STEPS = 4
WORKER = Path(__file__).with_name("distributed_worker.py")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
EFFICIA_WARNING = "efficia-1's memory (GMG) and compression (CCU) get no gradient from sequences of 32 tokens"


def train_args(data_dir, grad_accum: int, eval_batches: int) -> list[str]:
    """Nano models, 4 steps of micro-batches of one window, an eval and a checkpoint every 2 steps.
    With seq_len 32, efficia-1's memory and compression (segment 64) get no gradient: DDP must cope."""
    return ["--data", str(data_dir), "--size", "nano", "--seq-len", "32", "--max-steps", str(STEPS),
            "--warmup-steps", "2", "--log-interval", "1", "--eval-interval", "2", "--eval-batches", str(eval_batches),
            "--checkpoint-interval", "2", "--keep-last", "0", "--threads", "1", "--batch-size", "1",
            "--grad-accum", str(grad_accum)]


DISTRIBUTED_ARGS = dict(grad_accum=2, eval_batches=4)  # per rank, on 2 ranks


def train_single(data_dir, out: Path, case: list[str]) -> Path:
    """The reference: one process (here, in the test's own) accumulating the 4 micro-batches the 2
    ranks take. The same micro-batches, not only the same global batch: spike-walze's spike-rate
    penalty is a nonlinear function of a micro-batch's rate, so it differs for 1 and 2 windows."""
    flags = [*case, "--out", str(out), *train_args(data_dir, grad_accum=4, eval_batches=8)]
    run_training(config_from_args(add_train_arguments(argparse.ArgumentParser()).parse_args(flags)), verbose=False)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_worker(data_dir, root: Path, cases: dict[str, list[str]], nodes: int) -> str:
    """Train every case under DDP and FSDP2 (and resume the FSDP2 run) on 2 ranks; return stderr."""
    root.mkdir(parents=True, exist_ok=True)
    spec = root / "spec.json"
    spec.write_text(json.dumps({"root": str(root), "cases": cases, "modes": ["ddp", "fsdp"], "resume": True,
                                "args": train_args(data_dir, **DISTRIBUTED_ARGS)}))
    if nodes == 1:
        commands = [[*TORCHRUN, "--standalone", "--nproc_per_node", "2", str(WORKER), str(spec)]]
    else:  # what `--nnodes N` on N machines does, with every "machine" on loopback
        rendezvous = ["--nnodes", str(nodes), "--nproc_per_node", "1", "--rdzv_backend", "c10d",
                      "--rdzv_endpoint", f"127.0.0.1:{free_port()}", "--rdzv_id", "lmzoo-test"]
        commands = [[*TORCHRUN, *rendezvous, str(WORKER), str(spec)] for _ in range(nodes)]
    launched = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    outputs = [p.communicate(timeout=240 * len(cases)) for p in launched]
    for p, (stdout, stderr) in zip(launched, outputs):
        assert p.returncode == 0, stdout[-2000:] + stderr[-6000:]
    return "".join(stderr for _, stderr in outputs)


def metrics(out: Path, kind: str) -> dict[int, dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if r["type"] == kind}


def assert_same_run(single: Path, out: Path) -> None:
    a, b = metrics(single, "train"), metrics(out, "train")
    assert sorted(a) == sorted(b) == list(range(1, STEPS + 1))
    for step in a:
        assert b[step]["loss"] == pytest.approx(a[step]["loss"], abs=1e-5), (out, step)
        assert b[step]["tokens"] == a[step]["tokens"]
    va, vb = metrics(single, "eval"), metrics(out, "eval")
    assert sorted(va) == sorted(vb) == [2, 4]
    for step in va:  # each rank evaluates half of the val batches; the sums are all-reduced
        assert vb[step]["val_loss"] == pytest.approx(va[step]["val_loss"], abs=1e-5), (out, step)
        assert vb[step]["val_tokens"] == va[step]["val_tokens"]
    wa = load_checkpoint(checkpoint_dir(single / "checkpoints", STEPS)).model_state
    wb = load_checkpoint(checkpoint_dir(out / "checkpoints", STEPS)).model_state
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], atol=1e-5, rtol=1e-4, msg=f"{out}: {name}")


def assert_contract(single: Path, runs: Path) -> None:
    assert_same_run(single, runs / "ddp")
    assert_same_run(single, runs / "fsdp")
    lmzoo.load(checkpoint_dir(runs / "fsdp" / "checkpoints", STEPS))  # gathered full weights: a model
    # The copy resumed from the FSDP2 run's step-2 checkpoint (optimizer state re-sharded).
    full, tail = metrics(runs / "fsdp", "train"), metrics(runs / "fsdp-resumed", "train")
    assert sorted(tail) == [3, 4]
    for step in tail:
        assert tail[step]["loss"] == pytest.approx(full[step]["loss"], abs=1e-6), (runs, step)


# efficia-1 at seq_len 32: with segment 64 its memory and compression get no gradient (DDP must
# find the unused parameters, the FSDP2 checkpoint has no optimizer state for them); with segment
# 8 each block hands its GRU states to the next through the BlockContext, which FSDP2's hooks
# would copy (see distributed._shard_block).
EFFICIA_CASES = {"efficia-1": ["--arch", "efficia-1"],
                 "efficia-1-segment-8": ["--arch", "efficia-1", "--model-arg", "segment=8"]}


def test_two_nodes_on_loopback_train_like_one_process(data_dir, tmp_path):
    """efficia-1's two distributed hazards, on two torchrun agents meeting at a rendezvous."""
    stderr = run_worker(data_dir, tmp_path / "runs", EFFICIA_CASES, nodes=2)
    assert stderr.count(EFFICIA_WARNING) == 3  # rank 0 warns in each segment-64 run, not at segment 8
    for name, case in EFFICIA_CASES.items():
        assert_contract(train_single(data_dir, tmp_path / "single" / name, case), tmp_path / "runs" / name)


@pytest.mark.slow
def test_every_architecture_trains_like_one_process_under_ddp_and_fsdp(data_dir, tmp_path):
    cases = {arch: ["--arch", arch] for arch in lmzoo.list_architectures()}
    run_worker(data_dir, tmp_path / "runs", cases, nodes=1)
    for name, case in cases.items():
        assert_contract(train_single(data_dir, tmp_path / "single" / name, case), tmp_path / "runs" / name)


@pytest.mark.slow
def test_ctrl_c_under_the_launcher_saves_and_exits_quietly(data_dir, tmp_path):
    """SIGINT to the launcher's process group, as a terminal's Ctrl-C sends it: the ranks finish
    the step, save together (an FSDP2 gather), exit by themselves; no traceback anywhere."""
    out = tmp_path / "run"
    flags = ["--data", str(data_dir), "--out", str(out), "--arch", "spectral-llm", "--size", "nano", "--fsdp",
             "--seq-len", "32", "--batch-size", "1", "--max-steps", "100000", "--log-interval", "1",
             "--eval-interval", "0", "--checkpoint-interval", "0", "--threads", "1"]
    launcher = subprocess.Popen([sys.executable, "-m", "lmzoo.training.launch", "--standalone", "--nproc_per_node",
                                 "2", "-m", "lmzoo.training", *flags], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not (out / "metrics.jsonl").is_file() or '"train"' not in (out / "metrics.jsonl").read_text():
        assert launcher.poll() is None and time.monotonic() < deadline, launcher.communicate()
        time.sleep(0.2)
    os.killpg(launcher.pid, signal.SIGINT)
    stdout, stderr = launcher.communicate(timeout=120)
    assert launcher.returncode == 130, stderr[-4000:]
    assert "Traceback" not in stdout + stderr, stderr[-4000:]
    assert "SIGKILL" not in stderr  # torchrun did not have to kill a rank that failed to stop
    assert "lmzoo-torchrun: stopped by SIGINT" in stderr
    assert stdout.count('"status": "interrupted"') == 1  # rank 0 reports, the other rank is silent
    saved = list_checkpoints(out / "checkpoints")
    assert len(saved) == 1 and f"saved {saved[0]}" in stderr
    lmzoo.load(saved[0])  # complete: the full weights gathered from both ranks
    assert load_checkpoint(saved[0]).step == metrics(out, "train")[max(metrics(out, "train"))]["step"]


# ---- what the contract needs from the models (in this process, fast) ---------------------------
@pytest.fixture(autouse=True)
def one_thread():
    """Nano models on a few tokens: threads only add overhead (conftest restores the count)."""
    torch.set_num_threads(1)


def contract_models():
    for case in contract_cases():
        arch, overrides = case.values
        yield case.id, lmzoo.create_model(arch, "nano", **overrides)


def test_no_parameter_is_0_d():
    """FSDP2's fully_shard refuses 0-d parameters."""
    scalars = [f"{case}: {name}" for case, model in contract_models()
               for name, p in model.named_parameters() if p.dim() == 0]
    assert not scalars


def test_a_parameter_without_gradient_is_declared():
    """DDP fails on a parameter a step leaves without gradient unless told to look for them, which
    the trainer does only when the model declares an untrained component at that length."""
    undeclared = []
    for case, model in contract_models():
        for seq_len in (2, 64, 65):
            ids = torch.randint(0, model.config.vocab_size, (1, seq_len))
            model.zero_grad(set_to_none=True)
            model(ids, labels=ids).loss.backward()
            idle = [name for name, p in model.named_parameters() if p.grad is None]
            if idle and not model.untrained_components(seq_len):
                undeclared.append(f"{case} at {seq_len}: {idle[:3]}")
    assert not undeclared


def test_efficia_declares_its_memory_untrained_up_to_one_segment():
    model = lmzoo.create_model("efficia-1", "nano", segment=16)
    assert "segment=N" in model.untrained_components(16)[0]
    assert model.untrained_components(17) == []
    no_units = lmzoo.create_model("efficia-1", "nano", segment=16, memory=False, compression=False)
    assert no_units.untrained_components(4) == []


def test_spike_walze_keeps_attention_in_the_graph_when_no_token_spikes():
    """A rank whose tokens all skip attention must still reach q and out (zero gradient)."""
    model = lmzoo.create_model("spike-walze", "nano", forced_spike_rate=0.0)
    ids = torch.randint(0, 259, (2, 16))
    model(ids, labels=ids).loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert all(float(b.attn.q.weight.grad.abs().max()) == 0.0 for b in model.blocks)


# ---- checkpoints from before scalar parameters became [1] -----------------------------------
# What older lmzoo saved 0-d: spike-walze's gate threshold, spectral-llm's mixes, spike-transformer's
# LIF thresholds (a saved buffer, or a parameter with learn_thresholds).
OLD_SCALAR = re.compile(r"(gate\.threshold|mix_logit|harmonic_mix|lif\.\w+\.threshold)(/(?!step$)\w+)?$")


def make_old(file: Path) -> int:
    """Rewrite a weights or optimizer file as older lmzoo wrote it; return how many tensors changed."""
    with safe_open(str(file), framework="pt") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    old = {k: v.reshape(()) if OLD_SCALAR.search(k) else v for k, v in tensors.items()}
    save_file(old, str(file), metadata=metadata)
    return sum(v.dim() == 0 for k, v in old.items() if OLD_SCALAR.search(k))


@pytest.mark.parametrize("arch, overrides", [("spike-walze", {}), ("spectral-llm", {}), ("spike-transformer", {}),
                                             ("spike-transformer", {"learn_thresholds": True})])
def test_a_saved_model_with_0_d_scalars_loads(tmp_path, arch, overrides):
    model = lmzoo.create_model(arch, "nano", **overrides).eval()
    save_pretrained(model, tmp_path)
    assert make_old(tmp_path / WEIGHTS_FILE) > 0
    loaded = lmzoo.load(tmp_path)
    ids = torch.randint(0, 259, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)


def test_training_resumes_exactly_from_a_checkpoint_with_0_d_scalars(data_dir, tmp_path):
    run = train_single(data_dir, tmp_path / "run", ["--arch", "spectral-llm"])
    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    shutil.rmtree(checkpoint_dir(resumed / "checkpoints", STEPS))
    (resumed / "metrics.jsonl").unlink()
    step2 = checkpoint_dir(resumed / "checkpoints", 2)
    assert make_old(step2 / WEIGHTS_FILE) > 0 and make_old(step2 / OPTIMIZER_FILE) > 0
    train_single(data_dir, resumed, ["--arch", "spectral-llm"])
    full, tail = metrics(run, "train"), metrics(resumed, "train")
    assert sorted(tail) == [3, 4]
    for step in tail:
        assert tail[step]["loss"] == pytest.approx(full[step]["loss"], abs=1e-6)
    # Checkpoints written after the upgrade hold the moments in the parameters' shape.
    moments = load_checkpoint(checkpoint_dir(resumed / "checkpoints", STEPS)).optimizer_state["state"]
    assert moments["blocks.0.ffn.mix_logit"]["exp_avg"].shape == (1,)
