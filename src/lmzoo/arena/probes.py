"""Cost probes of one trained arena model, run in a fresh process (`python -m lmzoo.arena.probes`,
a JSON request on stdin, the JSON result on stdout) so that peak memory is this model's alone.

Measured: parameters, FLOPs per token, AC/MAC energy on validation windows, the peak memory of a
training step at the arena's batch and length, decode tokens/s and time to first token after a
prefill of each context length, and a sequence-length sweep (forward+backward at batch 1) with
the fitted scaling exponents of time and memory.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from lmzoo.accounting import count_parameters, flops_per_token
from lmzoo.devices import autocast, autocast_dtype, resolve_device
from lmzoo.energy import measure_energy
from lmzoo.errors import LmzooError
from lmzoo.memory import current_rss_mb, peak_rss_mb
from lmzoo.registry import load_model

PREFILL_CHUNK = 1024
ENERGY_BATCHES = 2
# A sweep stops at the first length whose step takes longer than this share of the probe timeout:
# the next (doubled) length would take at least twice as long.
SWEEP_SHARE = 0.1


def run_probes(request: dict, python: str = sys.executable) -> dict:
    """Run the probes of `request` in a fresh interpreter; raise a one-line error if it fails."""
    # The child imports the lmzoo this process runs (a relative or absent PYTHONPATH could name another).
    source = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (source, os.environ.get("PYTHONPATH"))))}
    try:
        done = subprocess.run([python, "-m", "lmzoo.arena.probes"], input=json.dumps(request), text=True,
                              capture_output=True, timeout=request["timeout"], env=env)
    except subprocess.TimeoutExpired:
        raise LmzooError(f"the cost probes of {request['model']} took over {request['timeout']:.0f} s; "
                         "shorten --contexts/--lengths") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise LmzooError(f"the cost probes of {request['model']} failed ({last})")
    return json.loads(done.stdout)


class Meter:
    """Peak memory of a block of work: RSS high-water mark on CPU, allocated bytes on CUDA."""

    def __init__(self, device: torch.device):
        self.device = device

    def start(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return torch.cuda.memory_allocated() / 2**20
        _reset_peak_rss()
        return current_rss_mb()

    def peak(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() / 2**20
        return peak_rss_mb()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def _reset_peak_rss() -> None:
    """Linux resets a process's RSS high-water mark when 5 is written to clear_refs."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # the peak then includes what came before; the increase over `before` still holds


def probe(request: dict) -> dict:
    torch.manual_seed(0)
    if request.get("threads"):
        torch.set_num_threads(request["threads"])
    device = resolve_device(request["device"])
    dtype = autocast_dtype(request["dtype"], device)
    model = load_model(request["model"]).to(device)
    meter = Meter(device)
    seq_len = request["seq_len"]
    result = {"parameters": count_parameters(model), "constant_state": bool(model.constant_state),
              "flops_per_token": {**flops_per_token(model, seq_len=seq_len), "seq_len": seq_len},
              "energy": _energy(model, request),
              "train_memory": _train_memory(model, request, meter, dtype)}
    result["decode"] = [_decode(model, context, request["decode_tokens"], meter, dtype)
                        for context in request["contexts"]]
    lengths = request["lengths"] + (request["long_lengths"] if model.constant_state else [])
    result["seq_sweep"] = _sweep(model, lengths, meter, dtype, request["timeout"] * SWEEP_SHARE)
    result["device"] = str(device)
    return result


def _energy(model, request: dict) -> dict:
    from lmzoo.data import TokenDataset

    device = next(model.parameters()).device
    windows = TokenDataset(request["data"], "val").iter_eval_batches(2, request["seq_len"], ENERGY_BATCHES, device)
    return measure_energy(model, list(windows))["total"]


def _ids(vocab: int, batch: int, length: int, device, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed)).to(device)


def _train_memory(model, request: dict, meter: Meter, dtype) -> dict:
    """Peak of two optimizer steps at the arena's batch x seq_len (the second holds AdamW's moments)."""
    device = next(model.parameters()).device
    ids = _ids(model.config.vocab_size, request["batch_size"], request["seq_len"], device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0)  # lr 0: the weights stay the trained ones
    model.train()
    before = meter.start()
    for _ in range(2):
        with autocast(dtype, device):
            loss = model(ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    peak = meter.peak()
    model.zero_grad(set_to_none=True)
    return {"peak_mb": peak, "before_mb": before, "increase_mb": peak - before}


@torch.no_grad()  # not inference_mode: caches a model grows here (RoPE tables) are reused in training below
def _decode(model, context: int, new_tokens: int, meter: Meter, dtype) -> dict:
    """Time to first token after a `context`-token prompt (prefill in chunks), then greedy decode speed."""
    model.eval()
    device = next(model.parameters()).device
    ids = _ids(model.config.vocab_size, 1, context, device, seed=1)
    meter.start()
    with autocast(dtype, device):
        meter.sync()
        start = time.perf_counter()
        state = model.init_state()
        for i in range(0, context, PREFILL_CHUNK):
            logits = model(ids[:, i:i + PREFILL_CHUNK], state=state, logits_to_keep=1).logits[:, -1]
        token = logits.argmax(-1, keepdim=True)
        meter.sync()
        ttft = time.perf_counter() - start
        times = []
        for _ in range(new_tokens):
            t0 = time.perf_counter()
            token = model(token, state=state, logits_to_keep=1).logits[:, -1].argmax(-1, keepdim=True)
            meter.sync()
            times.append(time.perf_counter() - t0)
    per_token = float(np.median(times))
    return {"context": context, "ttft_s": ttft, "decode_tok_s": 1.0 / per_token, "per_token_s": per_token,
            "state_bytes": state.nbytes(), "peak_mb": meter.peak()}


def _sweep(model, lengths: list[int], meter: Meter, dtype, max_step_s: float) -> dict:
    """Forward+backward time and peak memory at batch 1 per length, until a step takes over `max_step_s`."""
    model.train()
    device = next(model.parameters()).device
    vocab = model.config.vocab_size

    def step(ids: torch.Tensor) -> None:
        with autocast(dtype, device):
            loss = model(ids, labels=ids).loss
        loss.backward()
        model.zero_grad(set_to_none=False)  # gradients stay allocated: the memory is the length's

    step(_ids(vocab, 1, 16, device))
    points = []
    for length in sorted(lengths):
        ids = _ids(vocab, 1, length, device)
        before = meter.start()
        with SavedActivations(model) as saved:
            seconds = _stopwatch(lambda: step(ids), meter)
        points.append({"length": length, "seconds": seconds, "peak_mb": meter.peak(),
                       "increase_mb": meter.peak() - before, "activation_mb": saved.nbytes / 2**20})
        if seconds > max_step_s:
            break
    model.zero_grad(set_to_none=True)
    # The memory exponent is fitted to the activations saved for backward: exact on any device. The
    # RSS increase of a batch-1 step of a small model is mostly allocator noise (it gave exponents
    # from -0.3 to 5 at nano).
    return {"points": points,
            "time_exponent": fitted_exponent([p["length"] for p in points], [p["seconds"] for p in points]),
            "memory_exponent": fitted_exponent([p["length"] for p in points], [p["activation_mb"] for p in points])}


class SavedActivations:
    """Counts the bytes of the tensors autograd saves for backward inside the `with` block (each
    storage once, the model's parameters left out): the activation memory of a training step."""

    def __init__(self, model: torch.nn.Module):
        self.skip = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.seen: set[int] = set()
        self.nbytes = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key not in self.skip and key not in self.seen:
            self.seen.add(key)
            self.nbytes += storage.nbytes()
        return tensor

    def __enter__(self) -> "SavedActivations":
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)


def _stopwatch(fn: Callable[[], None], meter: Meter) -> float:
    meter.sync()
    start = time.perf_counter()
    fn()
    meter.sync()
    return time.perf_counter() - start


def fitted_exponent(lengths: list[float], values: list[float]) -> float | None:
    """Slope of log(value) against log(length), least squares; None without two positive points."""
    pairs = [(x, y) for x, y in zip(lengths, values) if x > 0 and y > 0 and math.isfinite(y)]
    if len({x for x, _ in pairs}) < 2:
        return None
    xs, ys = np.log([x for x, _ in pairs]), np.log([y for _, y in pairs])
    return float(np.polyfit(xs, ys, 1)[0])


def main() -> None:
    json.dump(probe(json.load(sys.stdin)), sys.stdout)


if __name__ == "__main__":
    main()
