"""SpectralLLM measurements that need no training (claims P2, P4, P5, and the FFT mixer):

* FFT long convolution vs the direct O(L^2) sum: largest difference and time, per length;
* harmonic embedding vs a table lookup: time per token (P5, "~100x overhead");
* peak RSS of a training step, spectral-llm vs the parameter-matched transformer (P2), each in
  a fresh process;
* the spectral analyzer's parameter and compute shares at the preset nearest 8M params (P4).

    python benchmarks/spectral.py --threads 2
"""
from __future__ import annotations

import argparse

import common
import torch
import throughput

import lmzoo
from lmzoo.layers.long_conv import fft_causal_conv
from lmzoo.layers.reference import direct_causal_conv
from lmzoo.spectral_analysis import analyze

NAME = "spectral"


def timed(fn):
    def run() -> float:
        with torch.no_grad():
            return common.stopwatch(fn, "cpu")
    return run


def conv_comparison(lengths: list[int], channels: int, repeats: int) -> list[dict]:
    rows = []
    for n in lengths:
        g = torch.Generator().manual_seed(n)
        x, h = torch.randn(4, channels, n, generator=g), torch.randn(channels, n, generator=g) / n
        diff = float((fft_causal_conv(x, h) - direct_causal_conv(x, h)).abs().max())
        t = common.interleaved_timings({"fft": timed(lambda x=x, h=h: fft_causal_conv(x, h)),
                                        "direct": timed(lambda x=x, h=h: direct_causal_conv(x, h))}, 1, repeats)
        rows.append({"length": n, "max_abs_diff": diff, **{k: common.median(v) for k, v in t.seconds.items()}})
    return rows


def embedding_cost(size: str, batch: int, seq_len: int, repeats: int) -> dict:
    model = lmzoo.create_model("spectral-llm", size)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq_len), generator=torch.Generator().manual_seed(0))
    t = common.interleaved_timings({"table": timed(lambda: model.embed(ids)),
                                    "harmonic": timed(lambda: model.harmonic(ids)),
                                    "direct": timed(lambda: model.harmonic.reference(ids))}, 2, repeats)
    table, harmonic, direct = (common.median(t.seconds[k]) for k in ("table", "harmonic", "direct"))
    return {"size": size, "tokens": ids.numel(), "table_s": table, "harmonic_s": harmonic, "ratio": harmonic / table,
            "direct_s": direct, "direct_ratio": direct / table}


def memory(size: str, threads: int | None) -> dict:
    settings = throughput.Settings(threads=threads, batch_size=8, seq_len=256)
    return {arch: throughput.peak_memory(arch, size, settings) for arch in ("spectral-llm", "transformer")}


def nearest_preset(target: float = 8e6) -> str:
    from lmzoo.accounting import count_parameters

    counts = {s: count_parameters(lmzoo.create_model("spectral-llm", s))["total"]
              for s in ("nano", "micro", "tiny")}
    return min(counts, key=lambda s: abs(counts[s] - target))


def render(data: dict) -> str:
    conv_rows = [[r["length"], f"{r['max_abs_diff']:.1e}", f"{r['fft'] * 1e3:.2f}", f"{r['direct'] * 1e3:.2f}",
                  f"**{r['direct'] / r['fft']:.1f}x**"] for r in data["conv"]]
    e = data["embedding"]
    mem = data["memory"]
    a = data["analysis"]
    return "\n".join([
        "## SpectralLLM (cpu)", "",
        common.command_header(data), "",
        "**FFT long convolution vs the direct sum** (4 x 128 channels, fp32):", "",
        common.markdown_table(["L", "max abs diff", "FFT ms", "direct ms", "FFT speed-up"], conv_rows), "",
        f"**Harmonic embedding vs table lookup** (`{e['size']}`, {e['tokens']:,} tokens): "
        f"{e['harmonic_s'] * 1e3:.3f} ms (factored into two small matmuls) vs {e['table_s'] * 1e3:.3f} ms, "
        f"**{e['ratio']:.0f}x** the lookup; the direct form (a sine per token, basis and channel, as the seed "
        f"writes it) takes {e['direct_s'] * 1e3:.3f} ms, **{e['direct_ratio']:.0f}x**.", "",
        f"**Peak RSS of a training step** (`{data['memory_size']}`, batch 8 x 256, fresh process each): "
        f"spectral-llm {mem['spectral-llm']['peak_rss_mb']:.0f} MB (+{mem['spectral-llm']['training_increase_mb']:.0f} "
        f"for training) vs transformer {mem['transformer']['peak_rss_mb']:.0f} MB "
        f"(+{mem['transformer']['training_increase_mb']:.0f}); training increase ratio "
        f"**{mem['spectral-llm']['training_increase_mb'] / mem['transformer']['training_increase_mb']:.2f}**.", "",
        f"**Spectral analyzer** (`{data['analysis_size']}`, untrained, 256 random ids): spectral parameter share "
        f"**{100 * a['spectral_parameter_ratio']:.1f}%**, spectral share of forward FLOPs "
        f"**{100 * a['spectral_compute_ratio']:.1f}%** (elementwise work not counted)."])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--size", default="micro", help="preset for the embedding and memory measurements")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    common.set_threads(args.threads)
    torch.manual_seed(0)
    analysis_size = nearest_preset()
    analysis = analyze(lmzoo.create_model("spectral-llm", analysis_size), torch.randint(0, 259, (1, 256)))
    data = {**common.run_info(),
            "conv": conv_comparison(args.lengths, 128, args.repeats),
            "embedding": embedding_cost(args.size, 8, 256, args.repeats), "memory_size": args.size,
            "memory": memory(args.size, args.threads), "analysis_size": analysis_size,
            "analysis": {k: v for k, v in analysis.items() if k != "band_energy"}}
    markdown = render(data)
    common.publish(NAME, data, markdown, write=not args.no_write)
    return data


if __name__ == "__main__":
    main()
