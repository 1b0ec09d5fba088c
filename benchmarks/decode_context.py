"""One-token cached decoding speed against context length (issue 19, goal 4).

For each architecture (micro by default, batch 1, greedy): the context is fed through the
decoding state in chunks (untimed), then `--tokens` greedy one-token steps are timed, each on
its own; a run's figure is the mean step (its total time over its tokens: a step that pays for a
spike, a segment close or a new block of rotary angles counts as a user would pay it). Contexts
are reached in increasing order by one prefill per architecture (each timed run starts from a copy of the state, so every run sees the
same context). The runs of every architecture at every context are interleaved in one schedule
(common.interleaved_timings), so load that drifts during the run hits all of them alike.
Reported: tokens/s, ms/token, the ratio to the `transformer`'s tokens/s at each context, the
fitted exponent of ms/token against context (0 = flat; a full KV cache tends towards 1), and the
aten operator calls one step makes at the first context (counted by torch.profiler in separate,
untimed steps): at micro size and batch 1 a step's time is mostly per-call overhead, so this
count explains much of the gap between architectures.

    python benchmarks/decode_context.py --threads 2
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (benchmarks/ is not a package)

import lmzoo  # noqa: E402

NAME = "decode-context"
BASELINE = "transformer"
GOAL_CONTEXT = 1024  # the goal: >= 1.0x the transformer's tokens/s here
FLAT_EXPONENT = 0.05  # "flat": ms/token grows slower than context ** 0.05 (< 1.1x over 1k -> 32k)


def prefill(model, state, ids: torch.Tensor, chunk: int) -> torch.Tensor:
    """Feed `ids` [1, n] through `state` in chunks; the last logits [1, V]."""
    for i in range(0, ids.shape[1], chunk):
        logits = model(ids[:, i:i + chunk], state=state, logits_to_keep=1).logits[:, -1]
    return logits


def decode_run(model, state, logits: torch.Tensor, tokens: int, device: str):
    """A timed run: `tokens` greedy steps from a copy of `state`; returns the mean step in seconds."""
    def run() -> float:
        copy, last, steps = state.take(torch.arange(1)), logits, []
        for _ in range(tokens):
            token = last.argmax(-1, keepdim=True)
            common.synchronize(device)
            start = time.perf_counter()
            last = model(token, state=copy, logits_to_keep=1).logits[:, -1]
            common.synchronize(device)
            steps.append(time.perf_counter() - start)
        return statistics.fmean(steps)
    return run


def aten_calls_per_step(model, state, logits: torch.Tensor, steps: int = 4) -> float:
    """aten operator calls (nested ones included) per one-token step, from a copy of `state`."""
    from torch.profiler import ProfilerActivity, profile

    copy, token = state.take(torch.arange(1)), logits.argmax(-1, keepdim=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            model(token, state=copy, logits_to_keep=1)
    return sum(e.count for e in prof.key_averages() if e.key.startswith("aten::")) / steps


def summarise(ms: dict[str, dict[int, float]], baseline: str = BASELINE) -> dict[str, dict]:
    """{arch: {context: ms/token}} -> per arch: per-context tok/s, ms/token and ratio to
    `baseline`'s tok/s (when measured), and the fitted exponent of ms/token vs context."""
    out = {}
    for arch, by_context in ms.items():
        contexts = sorted(by_context)
        rows = {}
        for c in contexts:
            row = {"ms_per_token": by_context[c], "tokens_per_s": 1000.0 / by_context[c]}
            if baseline in ms and c in ms[baseline]:
                row["ratio_to_" + baseline] = ms[baseline][c] / by_context[c]
            rows[str(c)] = row
        exponent = common.fitted_exponent(contexts, [by_context[c] for c in contexts]) if len(contexts) > 1 else None
        out[arch] = {"contexts": rows, "exponent": exponent,
                     "flat": None if exponent is None else exponent <= FLAT_EXPONENT}
    return out


def run(args) -> dict:
    common.set_threads(args.threads)
    torch.manual_seed(0)
    info = common.run_info(args.device)
    models = {a: lmzoo.create_model(a, args.size).to(args.device).eval() for a in args.archs}
    contexts = sorted(args.contexts)
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, min(m.config.vocab_size for m in models.values()), (1, contexts[-1]), generator=g)
    ids = ids.to(args.device)
    states = {a: m.init_state() for a, m in models.items()}
    logits, fed, ms, prefill_s = {}, 0, {a: {} for a in models}, {a: 0.0 for a in models}
    runs, calls = {}, {}
    with torch.inference_mode():
        for context in contexts:
            for a, m in models.items():  # advance every state to this context (untimed), keep a copy
                begin = time.perf_counter()
                logits[a] = prefill(m, states[a], ids[:, fed:context], args.chunk)
                prefill_s[a] += time.perf_counter() - begin
                runs[f"{a}@{context}"] = decode_run(m, states[a].take(torch.arange(1)), logits[a], args.tokens,
                                                    args.device)
                if context == contexts[0]:
                    calls[a] = aten_calls_per_step(m, states[a], logits[a])
            fed = context
        # Every (architecture, context) run interleaved in one schedule, so drifting load hits all alike.
        timings = common.interleaved_timings(runs, args.warmup, args.repeats, max_rounds=args.max_rounds)
    for name, seconds in timings.seconds.items():
        a, context = name.rsplit("@", 1)
        ms[a][int(context)] = 1000.0 * common.median(seconds)
    noise = {"rounds": timings.rounds, "dropped_rounds": timings.dropped, "calm": timings.calm,
             "seconds": timings.seconds}
    settings = {k: getattr(args, k) for k in ("archs", "contexts", "size", "tokens", "repeats", "warmup",
                                              "max_rounds", "chunk", "device", "threads")}
    results = summarise(ms)
    for a, n in calls.items():
        results[a]["aten_calls_per_step"] = n
    return {**info, "settings": settings, "results": results, "timings": noise,
            "prefill_seconds": prefill_s, "state_mb": {a: s.nbytes() / 1e6 for a, s in states.items()}}


def render_markdown(data: dict) -> str:
    s, results = data["settings"], data["results"]
    contexts = sorted(s["contexts"])
    header = ["architecture"] + [f"@{c} tok/s (ms)" for c in contexts]
    has_base = BASELINE in results
    if has_base:
        header += [f"x {BASELINE} @{c}" for c in contexts]
    header += ["exponent (ms/token vs context)", "state MB at max context", f"aten calls per step @{contexts[0]}"]
    rows = []
    for arch, res in results.items():
        cells = [f"`{arch}`"]
        cells += [f"{res['contexts'][str(c)]['tokens_per_s']:.1f} ({res['contexts'][str(c)]['ms_per_token']:.2f})"
                  for c in contexts]
        if has_base:
            cells += [f"{res['contexts'][str(c)].get('ratio_to_' + BASELINE, float('nan')):.2f}x" for c in contexts]
        cells += ["-" if res["exponent"] is None else f"{res['exponent']:.3f}", f"{data['state_mb'][arch]:.1f}",
                  f"{res['aten_calls_per_step']:.0f}" if "aten_calls_per_step" in res else "-"]
        rows.append(cells)
    calm = data["timings"]["calm"]
    lines = ["## One-token cached decoding against context (issue 19 goal 4)", "", common.command_header(data), "",
             f"`{s['size']}`, batch 1, greedy; each context prefilled in chunks of {s['chunk']} (untimed), then "
             f"{s['tokens']} one-token steps timed one by one (mean step of a run; median of {s['repeats']} interleaved runs). "
             f"Exponent: least-squares slope of log(ms/token) on log(context); flat means <= {FLAT_EXPONENT}.", "",
             common.markdown_table(header, rows), ""]
    if not calm:
        lines += ["Other processes kept the machine busy during some runs (rounds kept anyway): read ratios, "
                  "not absolute rates.", ""]
    if has_base:
        first = str(GOAL_CONTEXT if GOAL_CONTEXT in contexts else contexts[0])
        for arch, res in results.items():
            if arch == BASELINE:
                continue
            ratio = res["contexts"][first]["ratio_to_" + BASELINE]
            exponent = "-" if res["exponent"] is None else f"{res['exponent']:.3f}"
            flat = "-" if res["flat"] is None else ("met" if res["flat"] else "not met")
            lines.append(f"- `{arch}`: {ratio:.2f}x the `{BASELINE}`'s tokens/s at context {first} "
                         f"(goal >= 1.0x: {'met' if ratio >= 1.0 else 'not met'}); ms/token exponent "
                         f"{exponent} (flat: {flat})")
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="+", default=[BASELINE, "efficia-1", "spike-walze"])
    p.add_argument("--contexts", type=int, nargs="+", default=[1024, 4096, 32768])
    p.add_argument("--size", default="micro")
    p.add_argument("--tokens", type=int, default=32, help="timed one-token steps per run")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--max-rounds", type=int, default=8, help="rounds at most, busy ones dropped (common.py)")
    p.add_argument("--chunk", type=int, default=2048, help="prefill chunk (tokens)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--no-write", action="store_true", help="print only; leave results/ and docs/ alone")
    p.add_argument("--render", type=Path, metavar="JSON", help="measure nothing: rewrite the docs section from a results file")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    import json

    args = parse_args(argv)
    data = json.loads(args.render.read_text()) if args.render else run(args)
    markdown = render_markdown(data)
    print(markdown)
    if not args.no_write:
        device = data["settings"]["device"]
        if not args.render:
            print(f"wrote {common.write_json(NAME, device, data)}")
        print(f"wrote {common.update_doc_section(f'{NAME}-{device}', markdown)}")
    return data


if __name__ == "__main__":
    main()
