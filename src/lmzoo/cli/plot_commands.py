"""The `plot` verb: PNG curves of one or more runs' metrics.jsonl (see lmzoo/plots.py)."""
from __future__ import annotations


def register(verbs) -> None:
    p = verbs.add_parser("plot", help="PNG curves (train loss, val bits/byte, tokens/s, architecture stats) "
                                      "of one or more runs, overlaid")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (the --out of lmzoo train/finetune)")
    p.add_argument("--out", required=True, help="directory for the PNGs (created; an earlier plot directory "
                                                "is replaced, anything else is refused)")
    p.set_defaults(run=run_plot)


def run_plot(args) -> None:
    from lmzoo.paths import check_output_dir
    from lmzoo.plots import plot_runs

    for path in plot_runs(args.runs, check_output_dir(args.out)):
        print(f"wrote {path}")
