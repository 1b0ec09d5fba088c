"""Complexity's claims that need no training (C1, C2, C5, C6), measured on lmzoo's `complexity`:

* C1 "SDPA attention 2-4x faster": torch's scaled_dot_product_attention vs the explicit softmax
  form (`lmzoo.layers.reference.reference_attention`), causal, same q/k/v, forward time per L;
* C2 "token-routed MLP ~25% compute per token": the complexity MLP (E experts, each a 1/E slice
  of d_ff, one per token) vs the dense SwiGLU of equal parameters: FLOPs/token (counted) and
  forward time on the same tokens;
* C5 "sliding window efficient for long sequences": forward time of the complexity model with a
  window vs full causal attention, per L;
* C6 "preset sizes (tiny ~15M ... 1b)": true parameter counts of the seed's presets at the seed's
  vocabulary (100,000), built on the meta device (no memory).

    python benchmarks/complexity_claims.py --threads 1
"""
from __future__ import annotations

import argparse

import common
import torch
import torch.nn.functional as F

import lmzoo
from lmzoo.accounting import flop_counter
from lmzoo.layers.mlp import SwiGLU
from lmzoo.layers.reference import reference_attention
from lmzoo.layers.token_routed_mlp import TokenRoute
from lmzoo.models.complexity import SEED_SIZES

NAME = "complexity-claims"
SEED_VOCAB = 100_000
SEED_PARAMS = {"seed-tiny": 15e6, "20m": 20e6, "seed-small": 50e6, "seed-base": 125e6, "medium": 350e6,
               "large": 760e6, "1b": 1e9}  # the seed README's table


def timed(fn):
    def run() -> float:
        with torch.no_grad():
            return common.stopwatch(fn, "cpu")
    return run


def medians(runs: dict, repeats: int) -> dict[str, float]:
    # At most two rounds beyond `repeats`: on a busy machine the re-runs of noisy rounds would
    # otherwise cost four times the measurement; the ratios come from interleaved pairs anyway.
    t = common.interleaved_timings(runs, 1, repeats, max_rounds=repeats + 2)
    return {k: common.median(v) for k, v in t.seconds.items()}


def attention(lengths: list[int], repeats: int) -> list[dict]:
    rows = []
    for n in lengths:
        g = torch.Generator().manual_seed(n)
        q, k, v = (torch.randn(2, 4, n, 64, generator=g) for _ in range(3))
        diff = float((F.scaled_dot_product_attention(q, k, v, is_causal=True)
                      - reference_attention(q, k, v, is_causal=True)).abs().max())
        t = medians({"sdpa": timed(lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v, is_causal=True)),
                     "explicit": timed(lambda q=q, k=k, v=v: reference_attention(q, k, v, is_causal=True))}, repeats)
        rows.append({"length": n, "max_abs_diff": diff, **t, "speedup": t["explicit"] / t["sdpa"]})
    return rows


def routed_mlp(size: str, tokens: int, repeats: int) -> dict:
    model = lmzoo.create_model("complexity", size)
    c = model.config
    routed, dense = model.blocks[0].mlp, SwiGLU(c.d_model, c.d_ff)
    ids = torch.randint(0, c.vocab_size, (1, tokens), generator=torch.Generator().manual_seed(0))
    route = TokenRoute.from_ids(ids, c.n_experts, c.vocab_size, c.routing)
    x = torch.randn(1, tokens, c.d_model, generator=torch.Generator().manual_seed(1))

    def flops(fn) -> float:
        with torch.no_grad(), flop_counter() as counter:
            fn()
        return counter.get_total_flops() / tokens

    t = medians({"routed": timed(lambda: routed(x, route)), "dense": timed(lambda: dense(x))}, repeats)
    return {"size": size, "tokens": tokens, "n_experts": c.n_experts,
            "routed_params": sum(p.numel() for p in routed.parameters()),
            "dense_params": sum(p.numel() for p in dense.parameters()),
            "routed_flops": flops(lambda: routed(x, route)), "dense_flops": flops(lambda: dense(x)),
            "routed_s": t["routed"], "dense_s": t["dense"]}


def sliding_window(size: str, window: int, lengths: list[int], repeats: int) -> list[dict]:
    full, local = (lmzoo.create_model("complexity", size, window=w).eval() for w in (None, window))
    local.load_state_dict(full.state_dict())
    rows = []
    for n in lengths:
        ids = torch.randint(0, full.config.vocab_size, (1, n), generator=torch.Generator().manual_seed(n))
        t = medians({"full": timed(lambda ids=ids: full(ids)), "window": timed(lambda ids=ids: local(ids))}, repeats)
        rows.append({"length": n, **t, "speedup": t["full"] / t["window"]})
    return rows


def preset_sizes() -> list[dict]:
    from lmzoo.accounting import count_parameters

    rows = []
    for name in SEED_SIZES:
        with torch.device("meta"):
            counts = count_parameters(lmzoo.create_model("complexity", name, vocab_size=SEED_VOCAB))
        rows.append({"size": name, "stated": SEED_PARAMS[name], **counts})
    return rows


def render(data: dict) -> str:
    att = [[r["length"], f"{r['max_abs_diff']:.1e}", f"{r['sdpa'] * 1e3:.2f}", f"{r['explicit'] * 1e3:.2f}",
            f"**{r['speedup']:.2f}x**"] for r in data["attention"]]
    m = data["mlp"]
    win = [[r["length"], f"{r['full'] * 1e3:.1f}", f"{r['window'] * 1e3:.1f}", f"**{r['speedup']:.2f}x**"]
           for r in data["window"]["rows"]]
    sizes = [[r["size"], f"{r['stated'] / 1e6:,.0f}M", f"{r['total']:,}", f"{r['total'] / r['stated']:.2f}"]
             for r in data["sizes"]]
    return "\n".join([
        "### Complexity: attention kernel, token-routed MLP, sliding window, preset sizes", "",
        common.command_header(data), "",
        "**SDPA vs explicit softmax attention** (causal, batch 2 x 4 heads x 64, fp32, forward):", "",
        common.markdown_table(["L", "max abs diff", "SDPA ms", "explicit ms", "SDPA speed-up"], att), "",
        f"**Token-routed MLP vs dense SwiGLU of equal parameters** (`{m['size']}`, {m['n_experts']} experts, "
        f"{m['tokens']} tokens): {m['routed_params']:,} vs {m['dense_params']:,} parameters; "
        f"**{m['routed_flops'] / m['dense_flops']:.3f}x** the dense FLOPs per token, "
        f"**{m['routed_s'] / m['dense_s']:.2f}x** its forward time.", "",
        f"**Sliding window ({data['window']['window']}) vs full causal attention**, whole `{data['window']['size']}` "
        "model, batch 1, forward:", "",
        common.markdown_table(["L", "full ms", "window ms", "speed-up"], win), "",
        f"**The seed's presets at vocabulary {SEED_VOCAB:,}** (true counts, tied embeddings):", "",
        common.markdown_table(["preset", "stated", "parameters", "true / stated"], sizes)])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--window-lengths", type=int, nargs="+", default=[1024, 2048])
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--size", default="micro")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    common.set_threads(args.threads)
    data = {**common.run_info(), "attention": attention(args.lengths, args.repeats),
            "mlp": routed_mlp(args.size, 2048, args.repeats),
            "window": {"size": args.size, "window": args.window,
                       "rows": sliding_window(args.size, args.window, args.window_lengths, args.repeats)},
            "sizes": preset_sizes()}
    common.publish(NAME, data, render(data), write=not args.no_write)
    return data


if __name__ == "__main__":
    main()
