"""The `export-hf` verb: an lmzoo model -> a Hugging Face directory (see lmzoo/hf/export.py)."""
from __future__ import annotations


def register(verbs) -> None:
    p = verbs.add_parser("export-hf", help="write a model as a Hugging Face directory (AutoModelForCausalLM / "
                                           "AutoTokenizer.from_pretrained after `import lmzoo.hf`)")
    p.add_argument("model", help="model directory (save_pretrained output, a training checkpoint, or a training "
                                 "run's --out directory for its newest checkpoint)")
    p.add_argument("out", help="directory to write (absent, empty, or an earlier export)")
    p.set_defaults(run=run_export_hf)


def run_export_hf(args) -> None:
    import transformers

    import lmzoo
    from lmzoo.hf.export import EXPORT_KIND, export_hf, is_export_dir
    from lmzoo.io import check_replaceable

    check_replaceable(args.out, is_export_dir, EXPORT_KIND)  # before loading the model
    transformers.utils.logging.disable_progress_bar()  # one line per problem on stderr, nothing else
    model = lmzoo.load(args.model)
    out = export_hf(model, args.out)
    print(f"wrote {out}; load it with:\n"
          f"  import lmzoo.hf  # registers lmzoo's architectures with transformers\n"
          f"  model = transformers.AutoModelForCausalLM.from_pretrained({str(out)!r})")
