"""The `export-hf` verb (an lmzoo model -> a Hugging Face directory, lmzoo/hf/export.py) and the
lm-evaluation-harness options of `eval` (lmzoo/hf/harness.py)."""
from __future__ import annotations

import json


def register(verbs) -> None:
    p = verbs.add_parser("export-hf", help="write a model as a Hugging Face directory (AutoModelForCausalLM / "
                                           "AutoTokenizer.from_pretrained after `import lmzoo.hf`)")
    p.add_argument("model", help="model directory (save_pretrained output, a training checkpoint, or a training "
                                 "run's --out directory for its newest checkpoint)")
    # Optional for argparse only, so that a missing argument gets an error naming both (below).
    p.add_argument("out", nargs="?", help="directory to write (absent, empty, or an earlier export)")
    p.set_defaults(run=run_export_hf)


def run_export_hf(args) -> None:
    import transformers

    import lmzoo
    from lmzoo.errors import LmzooError
    from lmzoo.hf.export import EXPORT_KIND, export_hf, is_export_dir
    from lmzoo.io import check_replaceable
    from lmzoo.paths import check_output_dir

    if args.out is None:
        raise LmzooError("export-hf takes the model directory and the out directory: lmzoo export-hf MODEL OUT")
    check_output_dir(args.out, "OUT")  # before loading the model
    check_replaceable(args.out, is_export_dir, EXPORT_KIND)
    transformers.utils.logging.disable_progress_bar()  # one line per problem on stderr, nothing else
    model = lmzoo.load(args.model)
    out = export_hf(model, args.out)
    print(f"wrote {out}; load it with:\n"
          f"  import lmzoo.hf  # registers lmzoo's architectures with transformers\n"
          f"  model = transformers.AutoModelForCausalLM.from_pretrained({str(out)!r})")


def add_harness_arguments(p) -> None:
    p.add_argument("--harness", default=None, metavar="TASKS",
                   help="lm-evaluation-harness tasks, comma-separated: hub tasks (hellaswag, wikitext; need "
                        "internet) or lmzoo_text=FILE (bits per byte, perplexities of a text file) and "
                        "lmzoo_choice=FILE.jsonl (multiple choice); --seq-len is the context length")
    p.add_argument("--limit", type=int, default=None, help="--harness: at most this many documents per task")
    p.add_argument("--num-fewshot", type=int, default=None, help="--harness: few-shot examples per prompt")


def check_harness_options(args) -> None:
    """--limit and --num-fewshot: in range, and only with --harness (checked for every `eval`)."""
    from lmzoo.errors import LmzooError

    for flag, value, low in (("--limit", args.limit, 1), ("--num-fewshot", args.num_fewshot, 0)):
        if value is not None and value < low:
            raise LmzooError(f"{flag} must be >= {low}, got {value}")
        if value is not None and args.harness is None:
            raise LmzooError(f"{flag} only applies to --harness; drop it or pass --harness TASKS")


def run_harness_eval(args) -> None:
    import lmzoo
    from lmzoo.devices import resolve_device
    from lmzoo.hf.harness import evaluate, task_specs

    from lm_eval.utils import make_table  # after lmzoo.hf.harness: its import error names the extra

    tasks = task_specs(args.harness)
    model = lmzoo.load(args.model, map_location=str(resolve_device(args.device)))
    result = evaluate(model, tasks, limit=args.limit, num_fewshot=args.num_fewshot, batch_size=args.batch_size,
                      max_length=args.seq_len, max_gen_toks=args.max_new_tokens)
    if args.json:
        print(json.dumps(result["results"], indent=2, default=str))
    else:
        print(make_table(result))
