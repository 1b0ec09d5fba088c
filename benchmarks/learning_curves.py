"""Learning curves of every architecture under one training command, fixed-batch memorisation, and a
look inside spike-transformer's training signal (issue 17).

1. Learning curves: each architecture (nano) is trained on the German texts with the same command,
   `lmzoo train --arch ARCH --size nano --data DATA --max-steps 1500 --batch-size 8 --seq-len 256
   --lr 2e-3 --warmup-steps 30`, evaluated every --eval-interval steps (20 val batches, the CLI
   default); the table gives val bits/byte at step 300 and at the end.
2. Memorisation: 50 AdamW steps (lr 3e-3, no weight decay) on one fixed batch of 4 x 200 random
   tokens; the loss before and after.
3. Diagnosis (spike-transformer variants only), on one batch of real text, at init and after the
   learning-curve run: gradient norm per layer and per timestep, the share of neurons that never or
   always fire per site, membrane statistics, the mean surrogate slope, and how much the attention's
   context C_i moves from one position to the next.

An architecture may carry config overrides, `spike-transformer:attention=mean,token_shift=0` (the
design before issue 17). Results merge into the JSON by (architecture, seed), so slow runs can be
added one at a time; a run an earlier invocation trained to the end is reused, not retrained
(`--collect-only` records such runs without training anything).

    python benchmarks/learning_curves.py --archs transformer spike-transformer --seeds 0 --threads 1
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import common
import torch
from curriculum import GERMAN, log

import lmzoo
from lmzoo.data import TokenDataset, prepare_dataset
from lmzoo.layers.lif import MEMBRANE_CLIP, surrogate_derivative
from lmzoo.training.config import TrainConfig
from lmzoo.training.trainer import run_training

NAME = "learning-curves"
ARCHS = ["transformer", "complexity", "spike-walze", "spike-transformer", "spectral-llm", "efficia-1"]
ORIGINAL_SPIKING = "spike-transformer:attention=mean,token_shift=0,surrogate=sigmoid,reset=hard"


def parse_spec(spec: str) -> tuple[str, dict]:
    """'arch:key=value,key=value' -> (arch, overrides); values parsed as JSON where they can be."""
    arch, _, rest = spec.partition(":")
    overrides = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return arch, overrides


def run_name(spec: str, seed: int) -> str:
    return spec.replace(":", "_").replace(",", "_").replace("=", "-") + f"_seed{seed}"


# ---- 1. learning curves -------------------------------------------------------------------------
def learning_curve(args, spec: str, seed: int, data_dir: Path) -> dict:
    arch, overrides = parse_spec(spec)
    run_dir = args.out / run_name(spec, seed)
    cfg = TrainConfig(arch=arch, size="nano", model_args=overrides, data=str(data_dir), out=str(run_dir),
                      max_steps=args.steps, batch_size=8, seq_len=256, lr=2e-3, warmup_steps=30, seed=seed,
                      threads=args.threads, eval_interval=args.eval_interval, log_interval=50,
                      checkpoint_interval=0, keep_last=1, resume="none")
    finished = finished_run(run_dir, args.steps)
    if finished is not None:  # an earlier invocation trained it to the end: reuse its record
        log(f"{spec} seed {seed}: reusing the finished run in {common.repo_path(run_dir)}")
        summary = {"elapsed_s": None, "final_checkpoint": finished}
    else:
        log(f"training {spec} seed {seed} ({args.steps} steps)")
        summary = run_training(cfg)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = {row["step"]: row["val_bpb"] for row in rows if row.get("type") == "eval"}
    rates = [row["spike_rate"] for row in rows if row.get("type") == "train" and "spike_rate" in row]
    return {"spec": spec, "seed": seed, "steps": args.steps, "val_bpb": evals, "elapsed_s": summary["elapsed_s"],
            "final_spike_rate": rates[-1] if rates else None,
            "checkpoint": common.repo_path(summary["final_checkpoint"])}


def finished_run(run_dir: Path, steps: int) -> Path | None:
    """The final checkpoint of a run trained to `steps`, if an earlier invocation left one (the
    checkpoint is written after the last evaluation, so its metrics are complete)."""
    checkpoint = run_dir / "checkpoints" / f"step-{steps:07d}"
    return checkpoint if (checkpoint / "model.safetensors").is_file() else None


# ---- 2. memorisation --------------------------------------------------------------------------------
def memorisation(spec: str, seed: int, steps: int = 50) -> dict:
    arch, overrides = parse_spec(spec)
    torch.manual_seed(seed)
    model = lmzoo.create_model(arch, "nano", **overrides).train()
    ids = torch.randint(0, model.config.vocab_size, (4, 200), generator=torch.Generator().manual_seed(seed))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(steps):
        loss = model(ids, labels=ids).loss
        losses.append(float(loss.detach()))
        loss.backward()
        opt.step()
        opt.zero_grad()
    with torch.no_grad():
        final = float(model(ids, labels=ids).loss)
    return {"spec": spec, "seed": seed, "first": losses[0], "final": final, "trace": losses[::10] + [final]}


# ---- 3. diagnosis -----------------------------------------------------------------------------------
def membranes(lif, current: torch.Tensor) -> torch.Tensor:
    """The membrane potentials [T, ...] that `lif` compares with its threshold (its forward, step by step)."""
    u, out = torch.zeros_like(current[0]), []
    theta = lif.threshold.to(current.dtype)
    for i_t in current.unbind(0):
        m = (lif.beta * u + i_t).clamp(-MEMBRANE_CLIP, MEMBRANE_CLIP)
        s = (m > theta).to(m.dtype)
        out.append(m)
        u = m * (1 - s) if lif.reset == "hard" else m - theta * s
    return torch.stack(out)


def diagnose(model, ids: torch.Tensor) -> dict:
    """Where spike-transformer's learning signal goes (see the module docstring, part 3)."""
    model.train()
    currents, context = {}, {}
    hooks = []
    for i, block in enumerate(model.blocks):
        for site, lif in block.lif.items():
            def keep(module, inputs, name=f"layer{i}/{site}"):
                current = inputs[0]
                if current.requires_grad:
                    current.retain_grad()
                currents[name] = current
            hooks.append(lif.register_forward_pre_hook(keep))
        def keep_context(module, inputs, i=i) -> None:  # a pre-hook that returned a value would replace the input
            context[i] = inputs[0].detach()
        hooks.append(block.lif["attn"].register_forward_pre_hook(keep_context))
    try:
        model.zero_grad()
        model(ids, labels=ids).loss.backward()
    finally:
        for hook in hooks:
            hook.remove()
    sites = {}
    for name, current in currents.items():
        lif = model.blocks[int(name[5:name.index("/")])].lif[name.split("/")[1]]
        m = membranes(lif, current.detach())
        theta = float(lif.threshold)
        fired = (m > theta).float().mean(0)  # per neuron (position x channel): share of timesteps it fires
        grad_t = current.grad.flatten(1).norm(dim=1) if current.grad is not None else torch.zeros(m.shape[0])
        sites[name] = {"rate": float((m > theta).float().mean()), "never": float((fired == 0).float().mean()),
                       "always": float((fired == 1).float().mean()),
                       "silent_channels": float(((m > theta).flatten(0, -2).sum(0) == 0).float().mean()),
                       "membrane_mean": float(m.mean()), "membrane_std": float(m.std()),
                       "membrane_minus_threshold_abs_mean": float((m - theta).abs().mean()),
                       "surrogate_slope_mean": float(surrogate_derivative(m - theta, lif.surrogate, lif.scale).mean()),
                       "grad_norm_per_timestep": [float(g) for g in grad_t]}
    layers = {}
    for name, p in model.named_parameters():
        if p.grad is not None and name.startswith("blocks."):
            key = "layer" + name.split(".")[1]
            layers[key] = math.hypot(layers.get(key, 0.0), float(p.grad.norm()))
    return {"sites": sites, "layer_grad_norms": layers, "attention_input_change": context_change(context, model)}


def context_change(context: dict, model) -> dict:
    """Per layer, the attention neurons' input Q*C*g: how much it changes from position i-1 to i where q
    fires in both (so only C differs), relative to its size, over positions >= 64."""
    out = {}
    for i, a in context.items():
        tail = a[:, :, 64:]
        step = (tail[:, :, 1:] - tail[:, :, :-1]).abs()
        both = (tail[:, :, 1:] != 0) & (tail[:, :, :-1] != 0)
        out[f"layer{i}"] = float(step[both].mean() / tail[tail != 0].abs().mean()) if both.any() else 0.0
    return out


def diagnose_spec(spec: str, ids: torch.Tensor, checkpoint: str | None) -> dict:
    arch, overrides = parse_spec(spec)
    torch.manual_seed(0)
    result = {"init": diagnose(lmzoo.create_model(arch, "nano", **overrides), ids)}
    if checkpoint:
        result["trained"] = diagnose(lmzoo.load(common.ROOT / checkpoint), ids)
    return result


# ---- report -----------------------------------------------------------------------------------------
def render(data: dict) -> str:
    lines = ["### Learning curves: every architecture under one training command", "",
             common.command_header(data), "",
             "nano models, `lmzoo train --size nano --max-steps 1500 --batch-size 8 --seq-len 256 --lr 2e-3 "
             f"--warmup-steps 30` (here {data['steps']} steps) on {', '.join(data['texts'])}; val bits/byte on 20 "
             "val batches. Memorisation: 50 AdamW steps (lr 3e-3) on one fixed batch of 4 x 200 random tokens. "
             f"`{ORIGINAL_SPIKING}` is spike-transformer as it was before issue 17.", ""]
    rows = []
    for spec in dict.fromkeys(r["spec"] for r in data["curves"] + data["memorisation"]):
        curves = [r for r in data["curves"] if r["spec"] == spec]
        mem = [r for r in data["memorisation"] if r["spec"] == spec]
        def at(step_of):
            values = [r["val_bpb"].get(str(step_of(r)), r["val_bpb"].get(step_of(r))) for r in curves]
            values = [v for v in values if v is not None]
            return " / ".join(f"{v:.3f}" for v in values) or "-"
        rows.append([f"`{spec}`", ", ".join(str(r["seed"]) for r in curves) or "-", at(lambda r: 300)]
                    + ([at(lambda r: r["steps"])] if data["steps"] != 300 else [])
                    + [" / ".join(f"{r['first']:.2f} -> **{r['final']:.2f}**" for r in mem),
                       " / ".join(f"{r['final_spike_rate']:.3f}" for r in curves if r["final_spike_rate"] is not None) or "-"])
    steps = ["val bpb, step 300"] + ([f"val bpb, step {data['steps']}"] if data["steps"] != 300 else [])
    lines.append(common.markdown_table(["architecture", "seeds", *steps, "memorisation loss", "train spike rate"], rows))
    return "\n".join(lines)


def merge(old: list[dict], new: list[dict]) -> list[dict]:
    keys = {(r["spec"], r["seed"]) for r in new}
    return [r for r in old if (r["spec"], r["seed"]) not in keys] + new


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="+", default=ARCHS + [ORIGINAL_SPIKING], help="ARCH or ARCH:key=value,...")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--eval-interval", type=int, default=300)
    p.add_argument("--diagnose-only", action="store_true",
                   help="only the diagnosis, of the stored runs' checkpoints (no training, no memorisation)")
    p.add_argument("--memorise-only", action="store_true", help="only the memorisation (screening design options)")
    p.add_argument("--collect-only", action="store_true",
                   help="train nothing: record the runs earlier invocations finished (and their memorisation)")
    p.add_argument("--threads", type=int)
    p.add_argument("--out", type=Path, default=common.ROOT / "benchmarks" / "runs" / "learning-curves")
    p.add_argument("--no-write", action="store_true", help="print only; leave results/ and docs/ alone")
    args = p.parse_args(argv)
    common.set_threads(args.threads)
    data_dir = args.out / "data"
    if not (data_dir / "meta.json").is_file():
        prepare_dataset([str(t) for t in sorted(GERMAN.glob("*.txt"))], data_dir, seed=0)
    curves, mems, diagnosis = [], [], {}
    for spec in args.archs:
        for seed in [] if args.diagnose_only else args.seeds:
            if args.collect_only and finished_run(args.out / run_name(spec, seed), args.steps) is None:
                continue
            mems.append(memorisation(spec, seed))
            log(f"{spec} seed {seed}: memorisation {mems[-1]['first']:.2f} -> {mems[-1]['final']:.2f}")
            if args.memorise_only:
                continue
            curves.append(learning_curve(args, spec, seed, data_dir))
            log(f"{spec} seed {seed}: val bpb {curves[-1]['val_bpb']}")
        if spec.startswith("spike-transformer") and not args.memorise_only:
            stored = [r for r in stored_results()["curves"] if r["spec"] == spec and r["steps"] == args.steps]
            checkpoint = next((r["checkpoint"] for r in curves + stored if r["spec"] == spec), None)
            diagnosis[spec] = diagnose_spec(spec, val_batch(data_dir), checkpoint)
    # Read the earlier results only now: another invocation may have finished while this one ran.
    old = stored_results()
    if old.get("steps", args.steps) != args.steps:
        old["curves"] = []  # curves of a different length are not comparable
    data = {**common.run_info(), "steps": args.steps, "texts": [t.name for t in sorted(GERMAN.glob("*.txt"))],
            "curves": merge(old["curves"], curves), "memorisation": merge(old["memorisation"], mems),
            "diagnosis": {**old["diagnosis"], **diagnosis}}
    common.publish(NAME, data, render(data), write=not args.no_write)
    return data


def stored_results() -> dict:
    previous = common.RESULTS_DIR / f"{NAME}-cpu.json"
    return json.loads(previous.read_text()) if previous.is_file() else {"curves": [], "memorisation": [], "diagnosis": {}}


def val_batch(data_dir: Path) -> torch.Tensor:
    """Two 256-token windows from the start of the val split."""
    return next(iter(TokenDataset(data_dir, "val").iter_eval_batches(2, 256, 1)))


if __name__ == "__main__":
    main()
