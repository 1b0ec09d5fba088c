"""Verbs that measure a model on real text: `energy`, `analyze`."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

import lmzoo
from lmzoo.errors import LmzooError
from lmzoo.io import is_json_with, replace_own_file
from lmzoo.paths import check_input_file, check_output_file, read_utf8


def register(verbs) -> None:
    p = verbs.add_parser("energy", help="count ACs/MACs per layer on real text and estimate energy vs a dense model")
    p.add_argument("model", help="a saved model, checkpoint or run directory, or an architecture name (untrained)")
    p.add_argument("--data", required=True, help="a UTF-8 text file to run through the model")
    p.add_argument("--size", default="nano", help="size preset when MODEL is an architecture name")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=16384, help="tokens of the text to use (default 16384)")
    p.add_argument("--ac-pj", type=float, default=0.9, help="energy of one accumulate in pJ (default 0.9)")
    p.add_argument("--mac-pj", type=float, default=4.6, help="energy of one multiply-accumulate in pJ (default 4.6)")
    add_report_arguments(p)
    p.set_defaults(run=run_energy)

    p = verbs.add_parser("analyze", help="spectral analyzer: spectral share of parameters and FLOPs, learned mix "
                                         "weights, per-band energy (spectral-llm)")
    p.add_argument("model", help="a saved spectral-llm (model, checkpoint or run directory) or `spectral-llm`")
    p.add_argument("--data", help="UTF-8 text to analyse on (default: random token ids)")
    p.add_argument("--size", default="nano", help="size preset when MODEL is an architecture name")
    p.add_argument("--seq-len", type=int, default=256)
    add_report_arguments(p)
    p.set_defaults(run=run_analyze)


def add_report_arguments(p) -> None:
    """The convention of every verb: --json prints JSON instead of text, --out FILE writes a file."""
    p.add_argument("--json", action="store_true", help="print the full result as JSON instead of text")
    p.add_argument("--out", type=Path, default=None, metavar="FILE", help="also write the full result (JSON) here")


def check_window_options(args) -> None:
    """--seq-len, --batch-size, --max-tokens and the output path, before a model is built."""
    for flag in ("seq_len", "batch_size", "max_tokens"):
        value = getattr(args, flag, 1)
        if value < 1:
            raise LmzooError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    if args.out is not None:
        check_output_file(args.out, "--out")


def is_architecture_name(name: str) -> bool:
    return name in lmzoo.list_architectures() and not Path(name).exists()


def load_or_create(name: str, size: str):
    if is_architecture_name(name):
        torch.manual_seed(0)
        model = lmzoo.create_model(name, size)
        from lmzoo.tokenizers import get_tokenizer
        model.tokenizer = get_tokenizer("bytes")
        return model
    return lmzoo.load(name)


def text_windows(path: str, tokenizer, seq_len: int, batch_size: int, max_tokens: int) -> list[torch.Tensor]:
    text = read_utf8(path, "--data")
    ids = torch.tensor(tokenizer.encode(text)[:max_tokens])
    n = len(ids) // seq_len
    if n == 0:
        raise LmzooError(f"{path} holds {len(ids)} tokens, fewer than --seq-len {seq_len}; use more text")
    return list(ids[: n * seq_len].view(n, seq_len).split(batch_size))


def run_energy(args) -> None:
    from lmzoo.energy import Costs, measure_energy

    check_window_options(args)
    for flag, value in (("--ac-pj", args.ac_pj), ("--mac-pj", args.mac_pj)):
        if not 0 <= value < math.inf:
            raise LmzooError(f"{flag} must be a finite energy >= 0 (picojoules), got {value}")
    check_input_file(args.data, "--data")
    model = load_or_create(args.model, args.size)
    if model.tokenizer is None:
        raise LmzooError(f"'{args.model}' has no tokenizer.json; save the model with its tokenizer")
    windows = text_windows(args.data, model.tokenizer, args.seq_len, args.batch_size, args.max_tokens)
    result = measure_energy(model, windows, Costs(args.ac_pj, args.mac_pj))
    print(json.dumps(result, indent=2) if args.json else format_energy(result, model.config.arch))
    if args.out:
        replace_own_file(args.out, json.dumps(result, indent=2), is_json_with("costs", "spike_rates"),
                         "energy report")


def format_energy(result: dict, arch: str) -> str:
    lines = [f"{arch}: {result['tokens']:,} tokens; per token, every matrix product "
             f"(AC {result['costs']['ac_pj']} pJ, MAC {result['costs']['mac_pj']} pJ)",
             f"{'layer':<10} {'spike rate':>10} {'ACs':>12} {'MACs':>12} {'energy nJ':>10} {'dense MACs':>12} "
             f"{'dense nJ':>10}"]
    for layer in result["layers"]:
        rate = "-" if layer["spike_rate"] is None else f"{layer['spike_rate']:.3f}"
        lines.append(f"{layer['layer']:<10} {rate:>10} {layer['ac_per_token']:>12,.0f} {layer['mac_per_token']:>12,.0f} "
                     f"{layer['energy_pj_per_token'] / 1e3:>10.2f} {layer['dense_mac_per_token']:>12,.0f} "
                     f"{layer['dense_energy_pj_per_token'] / 1e3:>10.2f}")
    t = result["total"]
    lines.append(f"{'total':<10} {'':>10} {t['ac_per_token']:>12,.0f} {t['mac_per_token']:>12,.0f} "
                 f"{t['energy_pj_per_token'] / 1e3:>10.2f} {t['dense_mac_per_token']:>12,.0f} "
                 f"{t['dense_energy_pj_per_token'] / 1e3:>10.2f}")
    lines.append(f"energy vs dense same-shape model: {t['energy_ratio']:.3f}x; MACs {100 * t['mac_reduction']:.1f}% "
                 f"fewer; all operations (ACs + MACs) {t['operations_ratio']:.2f}x the dense MACs")
    return "\n".join(lines)


def run_analyze(args) -> None:
    from lmzoo.spectral_analysis import analyze

    check_window_options(args)
    if args.data:
        check_input_file(args.data, "--data")
    model = load_or_create(args.model, args.size)
    if args.data:
        ids = text_windows(args.data, model.tokenizer, args.seq_len, 1, args.seq_len)[0]
    else:
        ids = torch.randint(0, model.config.vocab_size, (1, args.seq_len), generator=torch.Generator().manual_seed(0))
        print("lmzoo: note: no --data: the band energies below come from random token ids, not text; pass "
              "--data FILE to measure them on real text", file=sys.stderr)
    if is_architecture_name(args.model):
        print(f"lmzoo: note: {args.model} is an untrained {args.size} preset (random weights): its mix weights and "
              f"band energies describe the initialisation, not a trained model", file=sys.stderr)
    try:
        result = analyze(model, ids)
    except ValueError as e:
        raise LmzooError(f"{e}; pass a spectral-llm model") from None
    params, flops = result["parameters"], result["flops_per_token"]
    lines = [f"parameters ({sum(params.values()):,}):"]
    lines += [f"  {name:<32} {count:>12,}  {100 * count / sum(params.values()):5.1f}%" for name, count in params.items()]
    lines.append(f"  spectral share {100 * result['spectral_parameter_ratio']:.1f}%")
    lines.append(f"forward FLOPs per token ({sum(flops.values()):,.0f}; FFTs as 5 N log2 N):")
    lines += [f"  {name:<32} {count:>12,.0f}  {100 * count / sum(flops.values()):5.1f}%" for name, count in flops.items()]
    lines.append(f"  spectral share {100 * result['spectral_compute_ratio']:.1f}%")
    lines.append(f"harmonic mix a = {result['harmonic_mix_a']:.3f}; FFN alpha per layer: "
                 + ", ".join(f"{a:.3f}" for a in result["ffn_alpha"]))
    for i, (weights, energy) in enumerate(zip(result["band_weights"], result["band_energy"])):
        lines.append(f"layer {i}: band weights " + ", ".join(f"{w:.3f}" for w in weights)
                     + " | band output energy " + ", ".join(f"{e:.2e}" for e in energy))
    print(json.dumps(result, indent=2) if args.json else "\n".join(lines))
    if args.out:
        replace_own_file(args.out, json.dumps(result, indent=2), is_json_with("spectral_parameter_ratio"),
                         "spectral analysis report")
