"""Spike Transformer energy and spike rates on real text (claims S1 "~70% fewer MACs" and S2
"spike rate ~0.3-0.4"), measured on a trained model.

Trains `spike-transformer` (or takes --checkpoint) on the German texts with the settings of
`benchmarks/curriculum.py` (shuffled order), then runs `lmzoo.energy.measure_energy` on text it
did not train on (the German Wikipedia sample articles) and also on the untrained model, for
reference. Every matrix product's ACs/MACs are counted (linear layers, attention, the running
sums' einsums); see src/lmzoo/energy.py.

    python benchmarks/energy.py --size micro --steps 300 --threads 2
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import common
import torch
from curriculum import GERMAN, add_run_arguments, prepare, train

import lmzoo
from lmzoo.data import TokenDataset, extract_wiki_dump, iter_documents
from lmzoo.energy import measure_energy

NAME = "spike-transformer-energy"
DEWIKI = common.ROOT.parent / "shared" / "data" / "wiki-xml" / "dewiki-20130602-pages"


def held_out_windows(tokenizer, seq_len: int, batch_size: int, max_tokens: int) -> list[torch.Tensor]:
    with tempfile.TemporaryDirectory() as out:
        extract_wiki_dump(sorted(DEWIKI.glob("*.xml")), out)
        text = "\n\n".join(iter_documents(sorted(Path(out).glob("*.jsonl"))))
    ids = torch.tensor(tokenizer.encode(text)[:max_tokens])
    n = len(ids) // seq_len
    return list(ids[: n * seq_len].view(n, seq_len).split(batch_size))


def render(data: dict) -> str:
    lines = ["### Spike Transformer: operations and energy on real text", "",
             common.command_header(data), "",
             f"`spike-transformer/{data['size']}` (T = {data['timesteps']}); text: the German Wikipedia sample "
             f"articles, {data['tokens']:,} byte tokens, not in the training data. Per token, every matrix product (linear layers, attention, running sums); "
             "energy with 0.9 pJ per AC and 4.6 pJ per MAC; the dense reference is the same network without "
             "spikes (one pass, real inputs, all MACs).", ""]
    rows = []
    for name in ("trained", "untrained"):
        r = data[name]
        t = r["total"]
        rates = [layer["spike_rate"] for layer in r["layers"] if layer["spike_rate"] is not None]
        rows.append([f"{name} ({r['val_bpb']:.3f} val bits/byte)" if "val_bpb" in r else name,
                     f"{min(rates):.3f}-{max(rates):.3f}", f"**{r['spike_rates']['spike_rate']:.3f}**",
                     f"{t['ac_per_token']:,.0f}", f"{t['mac_per_token']:,.0f}", f"{t['dense_mac_per_token']:,.0f}",
                     f"**{100 * t['mac_reduction']:.1f}%**", f"{t['operations_ratio']:.2f}",
                     f"**{t['energy_ratio']:.3f}**"])
    lines.append(common.markdown_table(["model", "layer spike rates", "mean spike rate", "ACs/token", "MACs/token",
                                        "dense MACs/token", "fewer MACs", "ops vs dense", "energy vs dense"],
                                       rows))
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p)
    p.add_argument("--checkpoint", type=Path, help="measure this trained model instead of training one")
    p.add_argument("--max-tokens", type=int, default=32768)
    p.set_defaults(out=common.ROOT / "benchmarks" / "runs" / "energy-de", arch="spike-transformer", steps=300)
    args = p.parse_args(argv)
    common.set_threads(args.threads)
    data = {**common.run_info(),
            "size": args.size,
            "texts": [t.name for t in (args.texts or sorted(GERMAN.glob("*.txt")))]}
    run = None
    if args.checkpoint is None:
        data_dir = prepare(args)
        run = train(args, data_dir, "shuffled", {})
        args.checkpoint = common.ROOT / run["checkpoint"]
    trained = lmzoo.load(args.checkpoint)
    windows = held_out_windows(trained.tokenizer, args.seq_len, args.batch_size, args.max_tokens)
    data["trained"] = measure_energy(trained, windows)
    if run is not None:
        data["trained"]["val_bpb"] = run["val"]["bpb"]
        data["val_tokens"] = TokenDataset(args.out / "data", "val").tokens
    torch.manual_seed(0)
    data["untrained"] = measure_energy(lmzoo.create_model("spike-transformer", args.size), windows)
    data["timesteps"] = trained.config.timesteps
    data["tokens"] = data["trained"]["tokens"]
    markdown = render(data)
    common.publish(NAME, data, markdown, write=not args.no_write)
    return data


if __name__ == "__main__":
    main()
