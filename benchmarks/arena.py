"""The published arenas: `lmzoo arena` on the texts in ../shared/data/, with the exact settings
the README and docs/benchmarks.md quote. Each arena runs into benchmarks/arena/NAME (a rerun
resumes it and skips finished entries), then its verdict is published: arena.json (less the
per-run paths) to benchmarks/results/arena-NAME-cpu.json and its tables to docs/benchmarks.md.

    python benchmarks/arena.py --threads 2                     # all of them (about an hour)
    python benchmarks/arena.py --threads 2 --only german-quick
    python benchmarks/arena.py --publish-only                  # tables from finished arenas
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import common

from lmzoo.arena.report import data_line
from lmzoo.plots import read_metrics

SHARED = common.ROOT.parent / "shared" / "data"
GERMAN_TRAIN, GERMAN_TEST = SHARED / "german" / "fortunes-de_0.35-1.txt", SHARED / "german" / "goethe_faust.txt"
ARENA_DIR = common.ROOT / "benchmarks" / "arena"
README_ARENA = "german-long"  # the README shows this arena's ranking and one plot

# name -> (what it shows, `lmzoo arena` arguments). The quick ones are the --quick profile as it
# ships; german-long is the longer CPU profile: 4x the budget, windows of 256, a wider and longer
# learning-rate sweep and denser curves.
ARENAS = {
    "tinyshakespeare-quick": ("equal wall-clock, 30 s per run",
                              ["--data", SHARED / "tinyshakespeare.txt", "--budget-seconds", "30", "--quick"]),
    "enwiki-xml-quick": ("equal wall-clock, 30 s per run, raw enwiki XML bytes (like enwik8)",
                         ["--data", SHARED / "wiki-xml" / "enwiki-pages-articles1-shortened.xml.bz2",
                          "--budget-seconds", "30", "--quick"]),
    "german-quick": ("equal tokens, 163,840 per run; test = Goethe's Faust, never trained on",
                     ["--data", GERMAN_TRAIN, "--test", GERMAN_TEST, "--budget-tokens", "163840", "--quick"]),
    "german-long": ("equal wall-clock, 120 s per run; test = Goethe's Faust, never trained on",
                    ["--data", GERMAN_TRAIN, "--test", GERMAN_TEST, "--budget-seconds", "120", "--quick",
                     "--seq-len", "256", "--lrs", "1e-3", "2e-3", "4e-3", "8e-3", "--sweep-steps", "40",
                     "--evals", "10", "--eval-batches", "8"]),
}


def cli_args(name: str) -> list[str]:
    """The arena's `lmzoo arena` options, data paths relative to the repository (the directory the
    arena runs in), so the recorded settings and results.md hold no path of this machine."""
    return [os.path.relpath(a, common.ROOT) if isinstance(a, Path) else a for a in ARENAS[name][1]]


def run(name: str, threads: int | None) -> None:
    args = cli_args(name)
    thread_flag = ["--threads", str(threads)] if threads else []
    command = [sys.executable, "-m", "lmzoo.cli.main", *thread_flag, "arena", *args, "--out", str(ARENA_DIR / name)]
    print("running", " ".join(command[1:]), flush=True)
    subprocess.run(command, cwd=common.ROOT, check=True)


def verdict_section(name: str, state: dict, results_md: str) -> str:
    """The verdict and cost tables of results.md under a heading that names the arena and its command."""
    what = ARENAS[name][0]
    shown = " ".join(cli_args(name))
    body = results_md.split("\n## Learning-rate sweep")[0].split("\n", 1)[1].strip()
    # results.md names the data relative to its own folder; here, like the command, relative to the repository.
    body = "\n".join(data_line(state, common.ROOT) if line.startswith("Data: ") else line for line in body.split("\n"))
    return "\n".join([
        f"## Arena: {name} ({what})", "",
        f"Command: `python benchmarks/arena.py --threads 2 --only {name}`, i.e. `lmzoo --threads 2 arena {shown} "
        f"--out benchmarks/arena/{name}` (started {state['started']}; {wall_clock(state)}). Full report with the "
        f"sweep table and plots: `benchmarks/arena/{name}/`.", "", body, ""])


def wall_clock(state: dict) -> str:
    if "wall_seconds" not in state:
        return "its wall-clock was not recorded: the arena ran before lmzoo recorded it"
    return f"{state['wall_seconds'] / 60:.1f} minutes of wall-clock for its sweeps, final runs and probes"


def curves(out: Path, state: dict) -> dict[str, list[dict]]:
    """Per architecture, each final run's evaluations (step, tokens, training seconds, val bits/byte):
    the claims ledger judges convergence speed from them, and the run directories are not committed."""
    found: dict[str, list[dict]] = {}
    for entry in state["entries"].values():
        if entry["kind"] == "final":
            evals = [{k: row[k] for k in ("step", "tokens", "train_seconds", "val_bpb")}
                     for row in read_metrics(out / entry["run_dir"]) if row.get("type") == "eval"]
            found.setdefault(entry["arch"], []).append({"seed": entry["seed"], "evals": evals})
    return found


def readme_section(name: str, state: dict) -> str:
    settings, machine = state["settings"], state["machine"]
    budget = (f"{settings['budget']:g} seconds" if settings["budget_kind"] == "seconds"
              else f"{settings['budget']:,.0f} tokens")
    rows = [[i, r["arch"], f"{r['val_bpb']['mean']:.3f} ± {r['val_bpb']['std'] or 0:.3f}",
             "–" if r["test_bpb"]["mean"] is None else f"{r['test_bpb']['mean']:.3f}",
             f"{r['train_tok_s']['mean']:,.0f}"] for i, r in enumerate(state["verdict"], 1)]
    return "\n".join([
        f"One published arena (`{name}`, from `python benchmarks/arena.py --threads 2 --only {name}`): German "
        f"text, {budget} of training per run, size `{settings['profile']['size']}`, {settings['seeds']} seeds, "
        f"{machine.get('cpu', '?')} CPU with {settings['threads']} threads; val = 10% of the training text, test = "
        "Goethe's Faust, never trained on. All four published arenas and their cost tables are in "
        "[docs/benchmarks.md](docs/benchmarks.md).", "",
        common.markdown_table(["rank", "arch", "val bits/byte (± std)", "test bits/byte", "train tok/s"], rows), "",
        f"![val bits/byte against training time](benchmarks/arena/{name}/plots/bpb_vs_time.png)"])


def without_machine_paths(record: dict) -> dict:
    """Paths as a reader's checkout has them: relative to the repository (shared data as ../shared)."""
    text = json.dumps(record).replace(json.dumps(str(common.ROOT) + "/")[1:-1], "")
    return json.loads(text.replace(json.dumps(str(common.ROOT.parent) + "/")[1:-1], "../"))


def publish(name: str) -> None:
    out = ARENA_DIR / name
    state = json.loads((out / "arena.json").read_text())
    state["curves"] = curves(out, state)
    section = verdict_section(name, state, (out / "results.md").read_text())
    record = {"command": f"python benchmarks/arena.py --threads 2 --only {name}", "date": state["started"], **state}
    common.write_json(f"arena-{name}", "cpu", without_machine_paths(record))
    common.update_doc_section(f"arena-{name}-cpu", section)
    if name == README_ARENA:
        common.update_doc_section("arena-readme", readme_section(name, state), doc_path=common.ROOT / "README.md")
    print(f"published {name}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=list(ARENAS), help="these arenas only (default: all)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--publish-only", action="store_true", help="publish finished arenas without running them")
    args = p.parse_args(argv)
    for name in args.only or list(ARENAS):
        if not args.publish_only:
            run(name, args.threads)
        if (ARENA_DIR / name / "arena.json").is_file():
            publish(name)


if __name__ == "__main__":
    main()
