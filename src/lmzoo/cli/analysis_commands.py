"""Verbs that measure a model on real text: `energy`."""
from __future__ import annotations

import json
from pathlib import Path

import torch

import lmzoo
from lmzoo.errors import LmzooError


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
    p.add_argument("--json", type=Path, help="also write the full result here")
    p.set_defaults(run=run_energy)


def load_or_create(name: str, size: str):
    if name in lmzoo.list_architectures() and not Path(name).exists():
        torch.manual_seed(0)
        model = lmzoo.create_model(name, size)
        from lmzoo.tokenizers import get_tokenizer
        model.tokenizer = get_tokenizer("bytes")
        return model
    return lmzoo.load(name)


def text_windows(path: str, tokenizer, seq_len: int, batch_size: int, max_tokens: int) -> list[torch.Tensor]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LmzooError(f"no such file: {path}; pass a UTF-8 text file with --data") from None
    except UnicodeDecodeError:
        raise LmzooError(f"{path} is not UTF-8 text; convert it (e.g. iconv -t utf-8)") from None
    ids = torch.tensor(tokenizer.encode(text)[:max_tokens])
    n = len(ids) // seq_len
    if n == 0:
        raise LmzooError(f"{path} holds {len(ids)} tokens, fewer than --seq-len {seq_len}; use more text")
    return list(ids[: n * seq_len].view(n, seq_len).split(batch_size))


def run_energy(args) -> None:
    from lmzoo.energy import Costs, measure_energy

    model = load_or_create(args.model, args.size)
    if model.tokenizer is None:
        raise LmzooError(f"'{args.model}' has no tokenizer.json; save the model with its tokenizer")
    windows = text_windows(args.data, model.tokenizer, args.seq_len, args.batch_size, args.max_tokens)
    result = measure_energy(model, windows, Costs(args.ac_pj, args.mac_pj))
    print(format_energy(result, model.config.arch))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


def format_energy(result: dict, arch: str) -> str:
    lines = [f"{arch}: {result['tokens']:,} tokens; per token, linear layers only "
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
