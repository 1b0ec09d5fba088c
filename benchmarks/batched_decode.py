"""Decoding several sequences at different positions in one batch (continuous batching).

For each architecture: R rows (1, 4, 8) are prefilled with prompts of different lengths (so they
sit at different positions) through `lmzoo.batching.BatchDecoder`, then decoded together: one
model call per step for all rows. Aggregate decode tokens/s (R tokens per step, prefill excluded)
is compared with one row, and with the same rows stepped one after another, each with its own
state (what the decoder did before batching; the instance is told `mixed_positions = False`).
Admission: what a server pays when a request joins the largest batch, a prompt of --admit-prompt
tokens prefilled and joined (`add`) and later dropped (`remove`), in ms and in batched steps of
that batch; a server whose requests are short pays it once per few steps.

    python benchmarks/batched_decode.py --size micro --threads 2
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (benchmarks/ is not a package)

import lmzoo  # noqa: E402
from lmzoo.batching import BatchDecoder  # noqa: E402

NAME = "batched-decode"


def decoder_with_rows(model, rows: int, max_prompt: int, batched: bool) -> tuple[BatchDecoder, dict[int, int]]:
    """A decoder holding `rows` prompts of lengths spread over 1/rows .. 1 of `max_prompt`."""
    model.mixed_positions = batched  # False: one state per row, stepped one after another
    g = torch.Generator().manual_seed(0)
    decoder, tokens = BatchDecoder(model), {}
    for i in range(rows):
        length = max(1, max_prompt * (i + 1) // rows)
        handle, out = decoder.add(torch.randint(0, model.config.vocab_size, (length,), generator=g))
        tokens[handle] = int(out.logits.argmax())
    return decoder, tokens


def decode_seconds(decoder: BatchDecoder, tokens: dict[int, int], steps: int, device: str) -> float:
    def run():
        feed = dict(tokens)
        for _ in range(steps):
            outs = decoder.step(feed)
            feed = {h: int(o.logits.argmax()) for h, o in outs.items()}
    return common.stopwatch(run, device)


def admission_seconds(decoder: BatchDecoder, prompt_length: int, device: str) -> float:
    """One request joining and leaving the decoder's batch: prefill + join, then remove."""
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, decoder.model.config.vocab_size, (prompt_length,), generator=g)

    def admit_and_drop():
        handle, _ = decoder.add(prompt)
        decoder.remove(handle)
    return common.stopwatch(admit_and_drop, device)


def measure(arch: str, size: str, rows_list: list[int], max_prompt: int, steps: int, repeats: int,
            device: str, admit_prompt: int = 36) -> dict:
    torch.manual_seed(0)
    model = lmzoo.create_model(arch, size).to(device).eval()
    mixed = type(model).mixed_positions
    result = {"arch": arch, "rows": {}}
    for rows in rows_list:
        # Fresh decoders for each repeat would re-time the prefill; the decoders keep going
        # instead, each repeat `steps` tokens further (a small drift in position, the same for both).
        runs = {"batched": decoder_with_rows(model, rows, max_prompt, mixed)}
        if rows > 1:
            runs["one_by_one"] = decoder_with_rows(model, rows, max_prompt, False)
        timed = {name: (lambda d=d, t=t: decode_seconds(d, t, steps, device)) for name, (d, t) in runs.items()}
        t = common.interleaved_timings(timed, warmup=1, repeats=repeats)
        result["rows"][rows] = {name: rows * steps / common.median(t.seconds[name]) for name in runs}
        result["rows"][rows]["timings_s"] = t.seconds
    if mixed and admit_prompt:
        decoder, _ = runs["batched"]  # the largest batch
        admit = common.interleaved_timings({"admit": lambda: admission_seconds(decoder, admit_prompt, device)},
                                           warmup=1, repeats=repeats)
        step_s = rows / result["rows"][rows]["batched"]
        result["admission"] = {"rows": rows, "prompt": admit_prompt, "ms": 1000 * common.median(admit.seconds["admit"]),
                               "steps": common.median(admit.seconds["admit"]) / step_s}
    model.mixed_positions = mixed
    single = result["rows"][rows_list[0]]["batched"] if rows_list[0] == 1 else None
    for rows, r in result["rows"].items():
        r["vs_one_row"] = r["batched"] / single if single else None
        r["vs_one_by_one"] = r["batched"] / r["one_by_one"] if "one_by_one" in r else None
    return result


def render(data: dict) -> str:
    rows_list = data["settings"]["rows"]
    header = ["architecture"] + [f"{r} row{'s' if r > 1 else ''} tok/s" for r in rows_list]
    header += [f"{r} rows vs 1 row" for r in rows_list if r > 1]
    header += [f"{r} rows batched vs one by one" for r in rows_list if r > 1]
    header += [f"admit a {data['settings'].get('admit_prompt', 36)}-token prompt to {rows_list[-1]} rows: ms (steps)"]
    table = []
    for res in data["results"]:
        r = res["rows"]
        table.append([res["arch"], *(f"{r[n]['batched']:.0f}" for n in rows_list),
                      *(f"**{r[n]['vs_one_row']:.2f}x**" for n in rows_list if n > 1),
                      *(f"{r[n]['vs_one_by_one']:.2f}x" for n in rows_list if n > 1),
                      f"{res['admission']['ms']:.1f} ({res['admission']['steps']:.1f})" if "admission" in res else "-"])
    s = data["settings"]
    return "\n".join([
        f"## Batched decoding at mixed positions ({s['device']})", "",
        common.command_header(data), "",
        f"`{s['size']}` models (fp32), rows prefilled with prompts of {s['max_prompt']}/R .. {s['max_prompt']} tokens "
        f"(every row at its own position), then {s['steps']} decode steps of all rows; aggregate decode tokens/s "
        f"(prefill excluded), median of {s['repeats']} repeats. \"vs 1 row\": aggregate tokens/s over one row's; "
        "\"one by one\": the same rows each with its own state, stepped in turn (the decoder before batching). "
        "Admit: one request prefilled and joined to the largest batch, then removed (median ms; in brackets, "
        "in batched steps of that batch). "
        f"Load average before the run: {data['load_average_before'][0]:.1f}.", "",
        common.markdown_table(header, table)])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="+", default=None, help="default: every registered architecture")
    p.add_argument("--size", default="micro")
    p.add_argument("--rows", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--max-prompt", type=int, default=256, help="longest prompt; the others are shorter")
    p.add_argument("--steps", type=int, default=16, help="decode steps per timed repeat")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--admit-prompt", type=int, default=36, help="prompt tokens of the timed admission (0: none)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    common.set_threads(args.threads)
    archs = args.archs or lmzoo.list_architectures()
    rows = sorted(set(args.rows) | {1})
    data = {**common.run_info(args.device),
            "settings": {"size": args.size, "rows": rows, "max_prompt": args.max_prompt, "steps": args.steps,
                         "repeats": args.repeats, "device": args.device, "admit_prompt": args.admit_prompt}}
    with torch.no_grad():
        data["results"] = [measure(a, args.size, rows, args.max_prompt, args.steps, args.repeats, args.device,
                                   args.admit_prompt) for a in archs]
    common.publish(NAME, data, render(data), write=not args.no_write, device=args.device)
    return data


if __name__ == "__main__":
    main()
