"""Training and decoding throughput of every architecture, and lmzoo vs Hugging Face Llama.

For each architecture and size: training tokens/s (forward + backward + AdamW step), decode
tokens/s with the decoding state (prefill excluded) and by full recompute at several contexts,
and the peak memory of a training step (fresh subprocess). The `transformer` is also raced
against `transformers.LlamaForCausalLM` built with the identical configuration and the same
weights, repeats interleaved, in the same run. The machine's own matmul rate (a large square
GEMM, same threads and dtype) is measured at the start and the end of the run, and every training
rate is also given as a fraction of it (and, on a known GPU, of its bf16 peak: MFU), since
absolute speeds do not compare across machines.

    python benchmarks/throughput.py --sizes micro tiny --threads 2
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (benchmarks/ is not a package)

import lmzoo  # noqa: E402
from lmzoo.accounting import count_parameters, flops_per_token  # noqa: E402

NAME = "throughput"
SCRIPT = Path(__file__).resolve()


@dataclass
class Settings:
    archs: list[str] = field(default_factory=list)  # empty: every registered architecture
    sizes: list[str] = field(default_factory=lambda: ["micro", "tiny"])
    device: str = "cpu"
    threads: int | None = None
    seq_len: int = 256
    batch_size: int = 8
    dtype: str | None = None  # fp32 | bf16 (autocast); None: fp32 on CPU, bf16 on CUDA
    repeats: int = 7
    warmup: int = 2
    contexts: list[int] = field(default_factory=lambda: [128, 1024])
    new_tokens: int = 32
    recompute_tokens: int = 8  # recompute is slow and its cost per token is flat: fewer suffice
    hf: bool = True
    memory: bool = True
    gemm_size: int = 2048  # n of the reference n x n x n matmul
    overrides: dict[str, Any] = field(default_factory=dict)  # config overrides (tests)

    def __post_init__(self) -> None:
        self.archs = self.archs or lmzoo.list_architectures()
        self.dtype = self.dtype or ("bf16" if self.device == "cuda" else "fp32")


def autocast(settings: Settings):
    if settings.dtype == "bf16":
        return torch.autocast(settings.device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def random_ids(vocab: int, batch: int, length: int, device: str, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, length), generator=g).to(device)


# ---- the two model families behind one interface ------------------------------------------
class LmzooRunner:
    def __init__(self, model):
        self.model = model

    def loss(self, ids):
        return self.model(ids, labels=ids).loss

    def last_logits(self, ids):
        return self.model(ids, logits_to_keep=1).logits[:, -1]

    def prefill(self, ids):
        state = self.model.init_state()
        return self.model(ids, state=state, logits_to_keep=1).logits[:, -1], state

    def step(self, token, state):
        return self.model(token, state=state, logits_to_keep=1).logits[:, -1], state


class HFRunner(LmzooRunner):
    def loss(self, ids):
        return self.model(input_ids=ids, labels=ids).loss

    def last_logits(self, ids):
        return self.model(input_ids=ids, use_cache=False, logits_to_keep=1).logits[:, -1]

    def prefill(self, ids):
        out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1], out.past_key_values

    def step(self, token, cache):
        out = self.model(input_ids=token, past_key_values=cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1], out.past_key_values


class HFStaticRunner(HFRunner):
    """HF with its preallocated `StaticCache` (the cache HF recommends for fast decoding) instead
    of the default dynamic one; prefill sizes it for the prompt and the new tokens."""

    def __init__(self, model, new_tokens: int):
        super().__init__(model)
        self.new_tokens = new_tokens

    def prefill(self, ids):
        from transformers import StaticCache

        cache = StaticCache(config=self.model.config, max_cache_len=ids.shape[1] + self.new_tokens)
        positions = torch.arange(ids.shape[1], device=ids.device)
        out = self.model(input_ids=ids, past_key_values=cache, cache_position=positions, use_cache=True,
                         logits_to_keep=1)
        return out.logits[:, -1], (cache, ids.shape[1])

    def step(self, token, state):
        cache, position = state
        out = self.model(input_ids=token, past_key_values=cache, use_cache=True, logits_to_keep=1,
                         cache_position=torch.tensor([position], device=token.device))
        return out.logits[:, -1], (cache, position + 1)


@torch.no_grad()
def max_logit_diff(model, hf, settings: Settings) -> float:
    ids = random_ids(model.config.vocab_size, 2, min(64, settings.seq_len), settings.device, seed=1)
    return float((model(ids).logits.float() - hf(input_ids=ids).logits.float()).abs().max())


# ---- measurements (each returns a callable that times itself) ---------------------------------
def train_run(runner, settings: Settings) -> Callable[[], float]:
    model = runner.model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = random_ids(model.config.vocab_size, settings.batch_size, settings.seq_len, settings.device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast(settings):
            loss = runner.loss(ids)
        loss.backward()
        optimizer.step()

    return lambda: common.stopwatch(step, settings.device)


def cached_decode_run(runner, context: int, settings: Settings) -> Callable[[], float]:
    """Greedy decode of `new_tokens` after an untimed prefill of `context` tokens, batch 1."""
    prompt = random_ids(runner.model.config.vocab_size, 1, context, settings.device, seed=2)

    def run() -> float:
        with torch.inference_mode(), autocast(settings):
            logits, state = runner.prefill(prompt)
            common.synchronize(settings.device)
            start = time.perf_counter()
            for _ in range(settings.new_tokens):
                logits, state = runner.step(logits.argmax(-1, keepdim=True), state)
            common.synchronize(settings.device)
            return time.perf_counter() - start

    return run


def recompute_decode_run(runner, context: int, settings: Settings) -> Callable[[], float]:
    """Greedy decode with no state: every new token re-runs the whole growing sequence."""
    prompt = random_ids(runner.model.config.vocab_size, 1, context, settings.device, seed=2)

    def generate():
        ids = prompt
        for _ in range(settings.recompute_tokens):
            ids = torch.cat((ids, runner.last_logits(ids).argmax(-1, keepdim=True)), dim=1)

    def run() -> float:
        with torch.inference_mode(), autocast(settings):
            return common.stopwatch(generate, settings.device)

    return run


def timed(runs: dict[str, tuple[Callable[[], float], float]], settings: Settings) -> dict[str, dict]:
    """{name: (run, work)} -> interleaved repeats -> {name: {"seconds", "per_s" (work / median), "best_per_s"}}."""
    timings = common.interleaved_timings({name: run for name, (run, _) in runs.items()},
                                         settings.warmup, settings.repeats)
    noise = {"rounds": timings.rounds, "dropped_rounds": timings.dropped, "calm": timings.calm}
    return {name: {"seconds": s, "per_s": runs[name][1] / common.median(s), "best_per_s": runs[name][1] / min(s),
                   **noise} for name, s in timings.seconds.items()}


# ---- peak memory (runs in a fresh subprocess, see common.call_in_fresh_process) ------------------
def memory_probe(arch: str, size: str, overrides: dict, settings: dict, hf: bool = False) -> dict:
    settings = Settings(**settings)
    common.set_threads(settings.threads)
    torch.manual_seed(0)
    config = lmzoo.make_config(arch, size, **overrides)
    model = common.build_hf(config, settings.device) if hf else lmzoo.create_model(arch, size, **overrides)
    runner = (HFRunner if hf else LmzooRunner)(model.to(settings.device))
    step = train_run(runner, settings)
    if settings.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = common.current_rss_mb()
    for _ in range(2):  # the second step is the steady state (AdamW moments exist)
        step()
    if settings.device == "cuda":
        return {"cuda_peak_allocated_mb": torch.cuda.max_memory_allocated() / 2**20}
    peak = common.peak_rss_mb()
    return {"peak_rss_mb": peak, "rss_before_training_mb": before, "training_increase_mb": peak - before}


def peak_memory(arch: str, size: str, settings: Settings, hf: bool = False) -> dict:
    return common.call_in_fresh_process(SCRIPT, "memory_probe", dict(
        arch=arch, size=size, overrides=settings.overrides, settings=asdict(settings), hf=hf))


# ---- one architecture at one size -----------------------------------------------------------------
def benchmark(arch: str, size: str, settings: Settings) -> tuple[dict, dict | None]:
    """Measurements of one arch/size; for the transformer also the interleaved HF comparison."""
    torch.manual_seed(0)
    model = lmzoo.create_model(arch, size, **settings.overrides).to(settings.device)
    runners = {"lmzoo": LmzooRunner(model)}
    result = {"arch": arch, "size": size, "parameters": count_parameters(model),
              "flops_per_token": flops_per_token(model, seq_len=settings.seq_len)}
    compare = None
    decoders = runners
    if arch == "transformer" and settings.hf:
        hf = common.build_hf(model.config, settings.device)
        common.copy_weights(model, hf)
        hf_params = count_parameters(hf)
        assert hf_params["total"] == result["parameters"]["total"], (hf_params, result["parameters"])
        runners["hf"] = HFRunner(hf)
        decoders = {**runners, "hf-static": HFStaticRunner(hf, settings.new_tokens)}
        compare = {"size": size, "parameters": hf_params, "max_logit_diff": max_logit_diff(model, hf, settings)}

    tokens = settings.batch_size * settings.seq_len
    train = timed({name: (train_run(r, settings), tokens) for name, r in runners.items()}, settings)
    result["train"] = train["lmzoo"]
    result["train"]["gflops_per_s"] = train["lmzoo"]["per_s"] * result["flops_per_token"]["train"] / 1e9
    result["decode"] = {}
    for context in settings.contexts:
        # Cached decoding of both models and lmzoo's recompute share the rounds, hence the noise.
        runs = {n: (cached_decode_run(r, context, settings), settings.new_tokens) for n, r in decoders.items()}
        runs["recompute"] = (recompute_decode_run(runners["lmzoo"], context, settings), settings.recompute_tokens)
        decode = timed(runs, settings)
        result["decode"][str(context)] = {"cached": decode["lmzoo"], "recompute": decode["recompute"],
                                          "speedup": decode["lmzoo"]["per_s"] / decode["recompute"]["per_s"]}
        if compare is not None:
            compare.setdefault("decode", {})[str(context)] = ratio(decode)
            compare.setdefault("decode_static", {})[str(context)] = ratio({"lmzoo": decode["lmzoo"],
                                                                           "hf": decode["hf-static"]})
    if compare is not None:
        compare["train"] = ratio(train)
    if settings.memory:
        result["memory"] = peak_memory(arch, size, settings)
        if compare is not None:
            compare["memory"] = {"lmzoo": result["memory"], "hf": peak_memory(arch, size, settings, hf=True)}
    return result, compare


# Dense bf16 tensor-core peaks (FLOP/s, no sparsity) of GPUs we may be lent, by name substring.
GPU_BF16_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12}


def gemm_rate(settings: Settings) -> dict:
    """FLOP/s of an n x n x n matmul in the run's dtype and threads: median and best of a few."""
    n = settings.gemm_size
    dtype = torch.bfloat16 if settings.dtype == "bf16" else torch.float32
    g = torch.Generator(device=settings.device).manual_seed(0)
    a, b = (torch.randn(n, n, generator=g, device=settings.device, dtype=dtype) for _ in range(2))
    for _ in range(2):
        a @ b
    seconds = [common.stopwatch(lambda: a @ b, settings.device) for _ in range(max(3, settings.repeats))]
    return {"n": n, "dtype": str(dtype), "flops_per_s": 2 * n**3 / common.median(seconds),
            "best_flops_per_s": 2 * n**3 / min(seconds)}


def gpu_peak(machine: dict) -> float | None:
    name = machine.get("gpu") or ""
    return next((peak for key, peak in GPU_BF16_PEAK.items() if key in name), None)


def ratio(timings: dict[str, dict]) -> dict:
    """lmzoo/HF speed: ratio of the medians (the headline) and of each interleaved round's pair."""
    ours, theirs = timings["lmzoo"], timings["hf"]
    rounds = [h / o for o, h in zip(ours["seconds"], theirs["seconds"])]
    return {"lmzoo": ours, "hf": theirs, "ratio": ours["per_s"] / theirs["per_s"], "round_ratios": rounds,
            "best_ratio": ours["best_per_s"] / theirs["best_per_s"]}


def run(settings: Settings, log: Callable[[str], None] = print) -> dict:
    """The whole benchmark -> the JSON-able result (the core the CLI and the tests call)."""
    common.set_threads(settings.threads)
    data = {"name": NAME, "command": common.command_line(), "date": common.now(),
            "machine": common.machine_info(settings.device), "settings": asdict(settings),
            "load_average_before": os.getloadavg(), "results": [], "hf_comparison": []}
    data["gemm"] = {"start": gemm_rate(settings)}
    for size in settings.sizes:
        for arch in settings.archs:
            log(f"[{common.now()}] {arch}/{size} ...")
            result, compare = benchmark(arch, size, settings)
            data["results"].append(result)
            if compare is not None:
                data["hf_comparison"].append(compare)
            log(summary_line(result, compare))
    # Other processes on the machine are the main source of noise: keep a trace of them.
    data["load_average_after"] = os.getloadavg()
    data["gemm"]["end"] = gemm_rate(settings)
    return data


def gemm_reference(data: dict) -> float | None:
    """The machine's matmul rate for this run: the better of the two medians (start, end)."""
    gemm = data.get("gemm")
    return max(g["flops_per_s"] for g in gemm.values()) if gemm else None


def summary_line(result: dict, compare: dict | None) -> str:
    ctx = max(result["decode"], key=int)
    line = (f"  train {result['train']['per_s']:.0f} tok/s | decode@{ctx} cached "
            f"{result['decode'][ctx]['cached']['per_s']:.1f} tok/s, x{result['decode'][ctx]['speedup']:.1f} vs recompute")
    if compare is not None:
        line += f" | lmzoo/HF train {compare['train']['ratio']:.3f}, decode@{ctx} {compare['decode'][ctx]['ratio']:.3f}"
    return line


# ---- report -----------------------------------------------------------------------------------
def fmt(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"


def ratio_cell(cmp: dict) -> str:
    """Headline ratio in bold, then the range over the interleaved rounds (the noise)."""
    rounds = cmp["round_ratios"]
    return f"**{cmp['ratio']:.3f}** (best {cmp['best_ratio']:.2f}; rounds {min(rounds):.2f}-{max(rounds):.2f})"


def memory_cell(memory: dict | None) -> str:
    if not memory:
        return "-"
    if "cuda_peak_allocated_mb" in memory:
        return fmt(memory["cuda_peak_allocated_mb"])
    return f"{fmt(memory['peak_rss_mb'])} (+{fmt(memory['training_increase_mb'])})"


def hf_section(data: dict) -> list[str]:
    contexts = data["settings"]["contexts"]
    header = ["size", "params", "train tok/s lmzoo", "HF", "**ratio**"]
    for c in contexts:
        header += [f"decode@{c} tok/s lmzoo", "HF", "**ratio**", "HF static cache", "**ratio**"]
    header += ["peak MB lmzoo", "HF", "max logit diff"]
    rows = []
    for cmp in data["hf_comparison"]:
        row = [cmp["size"], fmt(cmp["parameters"]["total"]), fmt(cmp["train"]["lmzoo"]["per_s"]),
               fmt(cmp["train"]["hf"]["per_s"]), ratio_cell(cmp["train"])]
        for c in contexts:
            d = cmp["decode"][str(c)]
            row += [fmt(d["lmzoo"]["per_s"], 1), fmt(d["hf"]["per_s"], 1), ratio_cell(d)]
            static = cmp.get("decode_static", {}).get(str(c))
            row += [fmt(static["hf"]["per_s"], 1), ratio_cell(static)] if static else ["-", "-"]
        mem = cmp.get("memory", {})
        row += [memory_cell(mem.get("lmzoo")), memory_cell(mem.get("hf")), f"{cmp['max_logit_diff']:.1e}"]
        rows.append(row)
    return ["### lmzoo `transformer` vs Hugging Face `LlamaForCausalLM`", "",
            "Same configuration, same weights (copied; the logit difference is the last column), "
            "same parameter count (asserted), repeats interleaved in one process. "
            "ratio = lmzoo / HF median tokens/s (> 1: lmzoo is faster); in brackets the ratio of the "
            "best repeats and the range of the per-round ratios (one lmzoo and one HF repeat back to back). "
            "HF decodes twice: with its default dynamic cache and with its preallocated `StaticCache`.", "",
            common.markdown_table(header, rows)]


def goals(data: dict) -> list[str]:
    lines = ["Goals:", ""]
    for cmp in data["hf_comparison"]:
        r = cmp["train"]["ratio"]
        lines.append(f"- `transformer` training tokens/s >= HF at `{cmp['size']}`: "
                     f"{'met' if r >= 1.0 else '**not met**'} (ratio {r:.3f})")
    ctx = str(max(data["settings"]["contexts"]))
    for res in data["results"]:
        if res["arch"] == "transformer":
            s = res["decode"][ctx]["speedup"]
            lines.append(f"- cached decode >= 5x full recompute at context {ctx}, `{res['size']}`: "
                         f"{'met' if s >= 5 else '**not met**'} ({s:.1f}x)")
    return lines


def all_archs_section(data: dict) -> list[str]:
    contexts = data["settings"]["contexts"]
    header = ["arch", "size", "non-emb params", "train FLOPs/token", "train tok/s", "GFLOP/s", "of GEMM"]
    reference, peak = gemm_reference(data), gpu_peak(data["machine"])
    if peak:
        header.append("MFU (bf16 peak)")
    header += [f"cached decode@{c} tok/s" for c in contexts]
    header += [f"recompute@{c} tok/s" for c in contexts]
    header += [f"cached/recompute @{c}" for c in contexts] + ["peak RSS MB (+training)"]
    rows = []
    for res in data["results"]:
        row = [f"`{res['arch']}`", res["size"], fmt(res["parameters"]["non_embedding"]),
               f"{res['flops_per_token']['train'] / 1e6:.1f}M", fmt(res["train"]["per_s"]),
               fmt(res["train"]["gflops_per_s"], 1)]
        row.append(f"{res['train']['gflops_per_s'] * 1e9 / reference:.0%}" if reference else "-")
        if peak:
            row.append(f"{res['train']['gflops_per_s'] * 1e9 / peak:.1%}")
        row += [fmt(res["decode"][str(c)]["cached"]["per_s"], 1) for c in contexts]
        row += [fmt(res["decode"][str(c)]["recompute"]["per_s"], 2) for c in contexts]
        row += [f"{res['decode'][str(c)]['speedup']:.1f}x" for c in contexts]
        rows.append(row + [memory_cell(res.get("memory"))])
    return ["### Every architecture", "", common.markdown_table(header, rows)]


def gemm_line(data: dict) -> str:
    """The same-run matmul rate every "of GEMM" fraction divides by."""
    if "gemm" not in data:
        return "GEMM reference: not measured in this run (results from before it was added).  "
    g = data["gemm"]
    rates = ", ".join(f"{fmt(v['flops_per_s'] / 1e9, 1)} at the {k}" for k, v in g.items())
    return (f"GEMM reference: a {g['start']['n']}^3 {g['start']['dtype'].replace('torch.', '')} matmul, "
            f"median GFLOP/s {rates}; \"of GEMM\" = training FLOP/s / the better of the two.  ")


def noise_line(data: dict) -> str:
    """How many timed rounds were re-run because other processes were busy, and what never calmed."""
    groups = {}
    for res in data["results"]:
        name = f"{res['arch']}/{res['size']}"
        groups[f"{name} training"] = res["train"]
        groups.update({f"{name} decode@{c}": d["cached"] for c, d in res["decode"].items()})
    rounds = sum(g["rounds"] for g in groups.values())
    dropped = sum(g["dropped_rounds"] for g in groups.values())
    restless = [name for name, g in groups.items() if not g["calm"]]
    line = (f"Noise: {dropped} of {rounds} timed rounds were dropped and re-run because other processes "
            f"kept more than a quarter of a core busy during them")
    return line + (f"; never calm, so measured under load anyway: {', '.join(restless)}." if restless else ".")


def render_markdown(data: dict) -> str:
    s, m = data["settings"], data["machine"]
    where = m["gpu"] or f"{m['cpu']}, {m['logical_cores']} logical cores"
    lines = [
        f"## Throughput ({s['device']})", "",
        f"Command: `{data['command']}`  ", f"Date: {data['date']}  ",
        f"Machine: {where}; torch {m['torch']} with {m['torch_threads']} threads, "
        f"transformers {m['transformers']}, Python {m['python']}; load average "
        f"{data['load_average_before'][0]:.2f} before, {data['load_average_after'][0]:.2f} after (1 min)  ",
        f"Training: batch {s['batch_size']} x {s['seq_len']} tokens, {s['dtype']}, forward + backward + AdamW; "
        f"median of {s['repeats']} steps after {s['warmup']} warm-up.  ",
        f"Decode: batch 1, greedy; cached = {s['new_tokens']} tokens with the decoding state after an untimed "
        f"prefill of the context; recompute = {s['recompute_tokens']} tokens, each re-running the whole "
        f"sequence (no state). Peak memory: RSS high-water of a fresh process over two training steps "
        f"(+ increase over the RSS before the first step).  ", gemm_line(data), noise_line(data), "",
    ]
    if data["hf_comparison"]:
        lines += hf_section(data) + [""] + goals(data) + [""]
    return "\n".join(lines + all_archs_section(data))


def parse_args(argv=None) -> tuple[Settings, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="+", default=[], help="default: every registered architecture")
    p.add_argument("--sizes", nargs="+", default=["micro", "tiny"])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--dtype", choices=["fp32", "bf16"], help="default: fp32 on CPU, bf16 autocast on CUDA")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--contexts", type=int, nargs="+", default=[128, 1024])
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--recompute-tokens", type=int, default=8)
    p.add_argument("--no-hf", action="store_true", help="skip the Hugging Face comparison")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--quick", action="store_true", help="1 repeat, 1 warm-up, few tokens: a smoke run")
    p.add_argument("--no-write", action="store_true", help="print only; leave results/ and docs/ alone")
    p.add_argument("--render", type=Path, metavar="JSON",
                   help="measure nothing: rewrite the docs section from a results file (e.g. from another machine)")
    a = p.parse_args(argv)
    if a.quick:
        a.repeats, a.warmup, a.new_tokens, a.recompute_tokens = 1, 1, 8, 2
    settings = Settings(archs=a.archs, sizes=a.sizes, device=a.device, threads=a.threads, seq_len=a.seq_len,
                        batch_size=a.batch_size, dtype=a.dtype, repeats=a.repeats, warmup=a.warmup,
                        contexts=a.contexts, new_tokens=a.new_tokens, recompute_tokens=a.recompute_tokens,
                        hf=not a.no_hf, memory=not a.no_memory)
    return settings, a


def main(argv=None) -> dict:
    settings, args = parse_args(argv)
    data = json.loads(args.render.read_text()) if args.render else run(settings)
    device = data["settings"]["device"]
    markdown = render_markdown(data)
    print(markdown)
    if not args.no_write:
        if not args.render:
            print(f"wrote {common.write_json(NAME, device, data)}")
        print(f"wrote {common.update_doc_section(f'{NAME}-{device}', markdown)}")
    return data


if __name__ == "__main__":
    main()
