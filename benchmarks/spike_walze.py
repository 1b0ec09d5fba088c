"""Does the spike gate save compute, does spike-walze run in linear time, and does compute follow
difficulty? Three measurements, each its own section of docs/benchmarks.md:

* `--rates` (default): spike rate forced to 0 / 0.25 / 0.5 / 1 (a fixed causal pattern, so the
  router's state does not matter); forward and forward+backward wall-clock and FLOPs per token of
  the attention path alone and of the whole block. Goal: attention path at 0.25 <= 0.4x of 1.0.
* `--scaling`: forward+backward time of the whole model vs sequence length for spike-walze
  (spike rate forced to its 0.25 target) and `transformer`, with the fitted exponent of L.
* `--difficulty CHECKPOINT`: a trained spike-walze's realised spike rate and measured FLOPs per
  token on short simple sentences vs long ones (the seed's difficulty stages, A < 12 words vs
  C/D >= 25 words), each sentence run on its own.

    python benchmarks/spike_walze.py --rates --scaling --threads 2
    python benchmarks/spike_walze.py --difficulty benchmarks/runs/curriculum-de/shuffled --threads 2
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import common
import torch
import torch.nn.functional as F

import lmzoo
from lmzoo.accounting import flop_counter, flops_per_token
from lmzoo.layers.spike_gate import forced_spikes
from lmzoo.models.spike_walze import SpikeWalzeContext

NAME = "spike-walze"
RATES = (0.0, 0.25, 0.5, 1.0)
DENSE = "dense SDPA window"  # the attention path's dense baseline (every token, one masked SDPA call)
DEWIKI = common.ROOT.parent / "shared" / "data" / "wiki-xml" / "dewiki-20130602-pages"


def log(msg: str) -> None:
    print(f"[{common.now()}] {msg}", flush=True)


# ---- forced rates -----------------------------------------------------------------------------
def _flops(fn) -> float:
    with flop_counter() as counter:
        fn()
    return counter.get_total_flops()


def _timed(fn, backward: bool):
    def run() -> float:
        def step():
            out = fn()
            if backward and out.requires_grad:  # rate 0: nothing reaches the output, nothing to do
                out.float().square().mean().backward()
        if backward:
            return common.stopwatch(step, "cpu")
        with torch.no_grad():
            return common.stopwatch(step, "cpu")
    return run


def rate_runs(model, batch: int, seq_len: int):
    """{(path, rate): callable returning the path's output} for the attention path and the block."""
    block = model.blocks[0]
    d = model.config.d_model
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, seq_len, d, generator=g, requires_grad=True)
    h = torch.randn(batch, seq_len, d, generator=g, requires_grad=True)
    scale = torch.rand(batch, seq_len, generator=g)
    runs = {}
    for rate in RATES:
        selected = forced_spikes(0, seq_len, rate, "cpu").expand(batch, seq_len)
        runs[("attention", rate)] = lambda s=selected: block.attn(h, s, scale)
        runs[("block", rate)] = lambda r=rate: _block_at(block, x, r)
    runs[("attention", DENSE)] = lambda: dense_window_attention(block.attn, h, scale)
    return runs


def dense_window_attention(attn, h: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Rate 1.0's fair baseline: every token attends through one SDPA call over the whole sequence
    with a sliding-window mask, as a dense local-attention model runs it (the gated path gathers
    each selected query's window instead). Same weights and output as the gated path at rate 1."""
    b, n, d = h.shape
    q = attn.rope(attn.q(h).view(b, n, attn.n_heads, attn.head_dim).transpose(1, 2), 0)
    k, v = attn.kv(h).view(b, n, 2, attn.n_kv_heads, attn.head_dim).unbind(2)
    k, v = attn.rope(k.transpose(1, 2), 0), v.transpose(1, 2)
    i = torch.arange(n, device=h.device)
    band = (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - attn.window)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=band, enable_gqa=attn.n_kv_heads != attn.n_heads)
    return attn.out(y.transpose(1, 2).reshape(b, n, d)) * scale[..., None]


def _block_at(block, x, rate):
    block.gate.force_rate = rate
    return block(x, SpikeWalzeContext(start=0), None)


def measure_rates(args) -> dict:
    torch.manual_seed(0)
    model = lmzoo.create_model("spike-walze", args.size)
    runs = rate_runs(model, args.batch_size, args.seq_len)
    tokens = args.batch_size * args.seq_len
    timed = {f"{path}/{rate}/{kind}": _timed(fn, kind == "fwd+bwd")
             for (path, rate), fn in runs.items() for kind in ("fwd", "fwd+bwd")}
    log(f"forced rates: {len(timed)} runs x {args.repeats} repeats")
    timings = common.interleaved_timings(timed, args.warmup, args.repeats)
    results = []
    for (path, rate), fn in runs.items():
        with torch.no_grad():
            fwd_flops = _flops(fn)
        row = {"path": path, "rate": rate, "forward_flops_per_token": fwd_flops / tokens}
        for kind in ("fwd", "fwd+bwd"):
            seconds = timings.seconds[f"{path}/{rate}/{kind}"]
            row[kind] = {"seconds": seconds, "median_s": common.median(seconds)}
        results.append(row)
    for path in ("attention", "block"):
        full = next(r for r in results if r["path"] == path and r["rate"] == 1.0)
        for r in results:
            if r["path"] == path:
                r["time_vs_rate1"] = {k: r[k]["median_s"] / full[k]["median_s"] for k in ("fwd", "fwd+bwd")}
                r["flops_vs_rate1"] = r["forward_flops_per_token"] / full["forward_flops_per_token"]
    dense = next(r for r in results if r["rate"] == DENSE)
    for r in results:
        if r["path"] == "attention":
            r["time_vs_dense"] = {k: r[k]["median_s"] / dense[k]["median_s"] for k in ("fwd", "fwd+bwd")}
    with torch.no_grad():  # the baseline computes what the gated path computes at rate 1
        gap = float((runs[("attention", DENSE)]() - runs[("attention", 1.0)]()).abs().max())
    model_flops = {}
    for rate in RATES:
        model.force_spike_rate(rate)
        model_flops[str(rate)] = flops_per_token(model, seq_len=args.seq_len)
    return {"size": args.size, "batch_size": args.batch_size, "seq_len": args.seq_len, "rows": results,
            "dense_vs_rate1_max_abs_diff": gap,
            "model_flops_per_token": model_flops, "rounds": timings.rounds, "dropped_rounds": timings.dropped,
            "calm": timings.calm}


# ---- sequence-length scaling ---------------------------------------------------------------------
fitted_exponent = common.fitted_exponent  # log-log slope, shared with long_context.py


def measure_scaling(args) -> dict:
    torch.manual_seed(0)
    models = {"spike-walze": lmzoo.create_model("spike-walze", args.size), "transformer":
              lmzoo.create_model("transformer", args.size)}
    models["spike-walze"].force_spike_rate(0.25)
    out = {"size": args.size, "lengths": args.lengths, "archs": {}}
    for length in args.lengths:
        ids = torch.randint(0, 259, (1, length), generator=torch.Generator().manual_seed(length))
        runs = {arch: _timed(lambda m=m, ids=ids: m(ids, labels=ids).loss, True) for arch, m in models.items()}
        log(f"scaling L={length}")
        timings = common.interleaved_timings(runs, 1, args.scaling_repeats)
        for arch, seconds in timings.seconds.items():
            out["archs"].setdefault(arch, {"seconds": [], "median_s": []})
            out["archs"][arch]["seconds"].append(seconds)
            out["archs"][arch]["median_s"].append(common.median(seconds))
    for arch, r in out["archs"].items():
        r["exponent"] = fitted_exponent(args.lengths, r["median_s"])
        r["tokens_per_s"] = [n / s for n, s in zip(args.lengths, r["median_s"])]
    return out


# ---- easy vs hard text ---------------------------------------------------------------------------
def german_sentences(paths: list[Path]) -> dict[str, list[str]]:
    """Sentences of cleaned German Wikipedia articles, grouped by the seed's length stages."""
    from lmzoo.data import count_words, extract_wiki_dump, iter_documents, split_sentences

    groups: dict[str, list[str]] = {"easy (A, <12 words)": [], "hard (C/D, >=25 words)": []}
    with tempfile.TemporaryDirectory() as out:
        extract_wiki_dump(paths, out)
        articles = list(iter_documents(sorted(Path(out).glob("*.jsonl"))))
    for article in articles:
        for paragraph in article.split("\n"):
            for sentence in split_sentences(paragraph, "de"):
                words = count_words(sentence)
                if 3 <= words < 12:
                    groups["easy (A, <12 words)"].append(sentence)
                elif words >= 25:
                    groups["hard (C/D, >=25 words)"].append(sentence)
    return groups


def group_stats(model, sentences: list[str], max_tokens: int | None = None) -> dict:
    """Token-weighted spike rates and measured forward FLOPs/token, each sentence run alone
    (cut to its first `max_tokens` tokens when given: causal, so those tokens spike as in full)."""
    tokens, spiked, per_layer, flops = 0, 0.0, [0.0] * model.config.n_layers, 0.0
    for sentence in sentences:
        ids = torch.tensor([model.tokenizer.encode(sentence)[:max_tokens]])
        with torch.no_grad(), flop_counter() as counter:
            stats = model(ids).stats
        n = ids.shape[1]
        per_layer = [a + float(stats[f"spike_rate/layer{i}"]) * n for i, a in enumerate(per_layer)]
        tokens, spiked, flops = tokens + n, spiked + float(stats["spike_rate"]) * n, flops + counter.get_total_flops()
    return {"sentences": len(sentences), "tokens": tokens, "spike_rate": spiked / tokens,
            "spike_rate_per_layer": [v / tokens for v in per_layer], "forward_flops_per_token": flops / tokens,
            "mean_tokens_per_sentence": tokens / len(sentences)}


def measure_difficulty(args) -> dict:
    model = lmzoo.load(args.difficulty)
    groups = german_sentences(args.texts or sorted(DEWIKI.glob("*.xml")))
    out = {"checkpoint": common.repo_path(args.difficulty), "groups": {}}
    for name, sentences in groups.items():
        out["groups"][name] = group_stats(model, sentences)
        log(f"{name}: {len(sentences)} sentences, spike rate {out['groups'][name]['spike_rate']:.3f}")
    # Control for position: short sentences only have early positions, so also measure the hard
    # sentences over their first tokens only, as many as an easy sentence has on average.
    easy = out["groups"]["easy (A, <12 words)"]
    cut = round(easy["mean_tokens_per_sentence"])
    out["control"] = {"max_tokens": cut, **group_stats(model, groups["hard (C/D, >=25 words)"], cut)}
    return out


# ---- report --------------------------------------------------------------------------------------
def _header(data: dict) -> list[str]:
    return [common.command_header(data), ""]


def render_rates(data: dict) -> str:
    r = data["rates"]
    lines = ["### Forced spike rate: what the gate saves", "", *_header(data),
             f"`{r['size']}` spike-walze, one block, batch {r['batch_size']} x {r['seq_len']} tokens, fp32. "
             "The attention path is K/V for every token plus Q, attention and output projection for the "
             "spiked ones; the block adds the roller, the gate and the MLP. Times are medians "
             f"({'calm machine' if r['calm'] else 'machine never calm: noisy'}).", ""]
    def vs_dense(row, kind):
        return f"{row['time_vs_dense'][kind]:.2f}" if "time_vs_dense" in row else "–"

    rows = [[row["path"], row["rate"], f"{row['fwd']['median_s'] * 1e3:.2f}", f"{row['time_vs_rate1']['fwd']:.2f}",
             vs_dense(row, "fwd"), f"{row['fwd+bwd']['median_s'] * 1e3:.2f}", f"**{row['time_vs_rate1']['fwd+bwd']:.2f}**",
             vs_dense(row, "fwd+bwd"), f"{row['forward_flops_per_token'] / 1e3:,.0f}", f"{row['flops_vs_rate1']:.2f}"]
            for row in r["rows"]]
    lines.append(common.markdown_table(["path", "rate", "fwd ms", "vs rate 1", "vs dense", "fwd+bwd ms", "vs rate 1",
                                        "vs dense", "fwd kFLOP/token", "vs rate 1"], rows))
    att = next(row for row in r["rows"] if row["path"] == "attention" and row["rate"] == 0.25)
    met = att["time_vs_rate1"]["fwd"] <= 0.4 and att["time_vs_rate1"]["fwd+bwd"] <= 0.4
    lines += ["", f"`{DENSE}` is the fair baseline of the attention path: all tokens through one SDPA call with a "
              f"sliding-window mask of the same window (max difference from rate 1.0's output "
              f"{r['dense_vs_rate1_max_abs_diff']:.1e}); \"vs dense\" divides by its time."]
    whole = r["model_flops_per_token"]
    lines += ["", f"Goal (attention path at rate 0.25 <= 0.4x of rate 1.0 in wall-clock): **{'met' if met else 'not met'}** "
              f"(forward {att['time_vs_rate1']['fwd']:.2f}x, forward+backward {att['time_vs_rate1']['fwd+bwd']:.2f}x). "
              "Whole model, forward GFLOP/token at rate 0 / 0.25 / 0.5 / 1: "
              + " / ".join(f"{whole[str(rate)]['forward'] / 1e9:.4f}" for rate in RATES) + "."]
    return "\n".join(lines)


def render_scaling(data: dict) -> str:
    s = data["scaling"]
    rows = []
    for arch, r in s["archs"].items():
        rows.append([arch, *(f"{t * 1e3:,.0f}" for t in r["median_s"]), f"**{r['exponent']:.2f}**"])
    return "\n".join(["### Forward+backward time vs sequence length", "", *_header(data),
                      f"`{s['size']}` models, batch 1, fp32; spike-walze with the spike rate forced to 0.25; "
                      "milliseconds (median) and the fitted exponent of L (1 = linear, 2 = quadratic).", "",
                      common.markdown_table(["arch", *(f"L={n}" for n in s["lengths"]), "exponent"], rows)])


def render_difficulty(data: dict) -> str:
    d = data["difficulty"]
    groups = {**d["groups"], f"hard, first {d['control']['max_tokens']} tokens only (position control)": d["control"]}
    rows = [[name, g["sentences"], f"{g['mean_tokens_per_sentence']:.0f}", f"**{g['spike_rate']:.3f}**",
             " / ".join(f"{v:.2f}" for v in g["spike_rate_per_layer"]), f"{g['forward_flops_per_token'] / 1e6:.3f}"]
            for name, g in groups.items()]
    return "\n".join(["### Does compute follow difficulty? (trained model)", "", *_header(data),
                      f"Checkpoint `{d['checkpoint']}`; sentences of the German Wikipedia sample articles "
                      "(not in its training data), each run alone; token-weighted means; FLOPs per token of the "
                      "whole forward, LM head included.", "",
                      common.markdown_table(["sentences", "count", "tokens/sentence", "spike rate",
                                             "per layer", "fwd MFLOP/token"], rows)])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rates", action="store_true", help="forced-rate cost table (default if nothing chosen)")
    p.add_argument("--scaling", action="store_true", help="time vs sequence length")
    p.add_argument("--difficulty", type=Path, metavar="CHECKPOINT", help="easy vs hard text on a trained model")
    p.add_argument("--texts", type=Path, nargs="+", help="dump files for --difficulty (default: the dewiki sample)")
    p.add_argument("--size", default="micro")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--scaling-repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int)
    p.add_argument("--no-write", action="store_true", help="print only; leave results/ and docs/ alone")
    args = p.parse_args(argv)
    if not (args.rates or args.scaling or args.difficulty):
        args.rates = True
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    common.set_threads(args.threads)
    base = common.run_info()
    parts = [("rates", measure_rates, render_rates), ("scaling", measure_scaling, render_scaling),
             ("difficulty", measure_difficulty, render_difficulty)]
    done = {}
    for key, measure, render in parts:
        if not getattr(args, key):
            continue
        data = {**base, key: measure(args)}
        markdown = render(data)
        done[key] = data
        common.publish(f"{NAME}-{key}", data, markdown, write=not args.no_write)
    return done


if __name__ == "__main__":
    main()
