"""Every CLI verb against a battery of bad values.

The verbs are enumerated from the argparse parser, and every option of every verb must be
classified in OPTIONS (a new verb or option fails `test_every_option_is_classified` until it is).
Each case runs in-process and must end with exit status 2, exactly one `error:` line on stderr
and no traceback, must name what is wrong, and must leave every file that existed before intact.
"""
from __future__ import annotations

import argparse
import errno
import hashlib
import io
import json
import pathlib
from pathlib import Path

import pytest

import lmzoo
from lmzoo.checkpoint import save_pretrained
from lmzoo.cli.main import build_parser, main
from lmzoo.data import prepare_dataset
from lmzoo.tokenizers import get_tokenizer

# Bad values per kind of option. "{...}" are paths in the workspace (see `workspace`).
BAD_VALUES = {
    "count": ["0", "-1", "abc", "", "nan", "2.5"],                # an integer >= 1
    "count0": ["-1", "abc", "2.5"],                               # an integer >= 0
    "size": ["0", "-1", "abc", "100000000000000"],                # >= 1, and huge would allocate
    "seed": ["-1", "abc", str(2**64)],
    "positive": ["0", "-1", "nan", "inf", "abc"],                 # a float > 0
    "nonnegative": ["-1", "nan", "inf", "abc"],                   # a float >= 0
    "fraction": ["-0.1", "1.5", "nan"],                           # a float in [0, 1]
    "text_file": ["{missing}", "{dir}", "{latin1}"],              # a UTF-8 text file
    "input": ["{missing}", "{latin1}"],                           # text file(s) or directories
    "jsonl": ["{missing}", "{dir}", "{latin1}"],
    "out_dir": ["{existing}", "{existing}/sub"],                  # a directory to create
    "out_file": ["{dir}", "{existing}/sub"],                      # a file to write
    "model": ["{missing}", "{existing}", "{dir}", "{model_huge}", "{model_badtype}", "{model_nan}",
              "{model_bigtok}", "{model_badweights}"],
    "model_or_arch": ["{missing}", "{existing}", "{model_huge}", "{model_badtype}"],
    "data_dir": ["{missing}", "{existing}", "{data_hugevocab}", "{data_boolvocab}", "{data_escape}"],
    "run_dir": ["{missing}", "{existing}", "{dir}", "{run_torn}"],
    "device": ["foo", "cuda:99", "meta", ""],
    "arch": ["nope", ""],
    "size_preset": ["nope"],
    "model_arg": ["d_model=abc", "d_model", "n_layers=0", "d_model=100000000", "init_std=.nan", "nope=1",
                  "tie_embeddings=3"],
    "prompt": ["\udcff"],                                         # a byte that is not UTF-8
    "stop": [""],
    "template": ["no placeholder"],
    "integer": ["abc", "2.5"],                                    # any integer (a seed that is hashed)
    "kind": ["nope"],
    "tokenizer": ["nope", "{dir}", "{existing}"],
    "lang": ["", "x" * 200],
    "url": ["not a url", "ftp://x"],
    "month": ["2024-13", "soon"],
    "env": ["", "LMZOO_FUZZ_UNSET"],
    "fields": ["", ","],
    "lora_targets": ["nope", ","],
    "thresholds": ["nan nan nan", "-1 -1 -1"],
    "betas": ["nan 0.9", "1.5 0.9", "-1 0.5"],
    "recipe": ["{missing}", "{dir}", "{latin1}", "{existing}"],
    "reference": ["{missing}"],
    "harness": ["lmzoo_text", "nope=x.txt", ",", "lmzoo_text={missing}"],
    "flag": [],    # store_true/false: nothing to get wrong
    "choice": [],  # argparse checks `choices` itself (a case is added below)
    "free": [],    # any text is valid (a prompt, a name, a contact)
}

VERBS = {  # a valid invocation per verb; each case changes one option of it
    ("list",): [],
    ("info",): ["transformer", "--size", "nano", "--seq-len", "8"],
    ("generate",): ["{model}", "--prompt", "hi", "--max-new-tokens", "2", "--device", "cpu", "--no-stream"],
    ("chat",): ["{model}", "--max-new-tokens", "2", "--device", "cpu"],
    ("eval",): ["{model}", "--data", "{text}", "--seq-len", "8", "--max-batches", "1", "--device", "cpu"],
    ("export-hf",): ["{model}", "{new}"],
    ("data", "prepare"): ["{text}", "--out", "{new}"],
    ("data", "wiki-dump"): ["{dump}", "--out", "{new}"],
    ("data", "wiki-fetch"): ["--top", "1", "--out", "{new}.jsonl", "--api-url", "http://127.0.0.1:9/w/api.php",
                             "--pageviews-url", "http://127.0.0.1:9", "--retries", "0", "--timeout", "1"],
    ("data", "qa-pairs"): ["{articles}", "--provider", "openai", "--model", "m", "--out", "{new}.jsonl",
                           "--base-url", "http://127.0.0.1:9", "--retries", "0", "--timeout", "1",
                           "--api-key-env", "LMZOO_FUZZ_KEY"],
    ("tokenizer", "train"): ["{text}", "--kind", "char", "--out", "{new}"],
    ("tokenizer", "stats"): ["bytes", "{text}"],
    ("train",): ["--data", "{data}", "--out", "{new}", "--arch", "transformer", "--size", "nano",
                 "--model-arg", "d_model=32", "--model-arg", "n_layers=1", "--seq-len", "16", "--batch-size", "2",
                 "--max-steps", "1", "--eval-batches", "1", "--device", "cpu"],
    ("demo",): ["--data", "{text}", "--out", "{new}", "--steps", "1"],
    ("finetune",): ["{model}", "--data", "{qa}", "--out", "{new}", "--method", "full", "--max-steps", "1",
                    "--device", "cpu"],
    ("energy",): ["transformer", "--data", "{text}", "--seq-len", "16", "--max-tokens", "64"],
    ("analyze",): ["spectral-llm", "--seq-len", "16"],
    ("plot",): ["{run}", "--out", "{new}"],
    ("arena",): ["--data", "{text}", "--out", "{new}", "--budget-tokens", "64", "--archs", "transformer",
                 "--seeds", "1", "--lrs", "0.001", "--sweep-steps", "1", "--seq-len", "16", "--batch-size", "2",
                 "--evals", "1", "--eval-batches", "1", "--contexts", "8", "--decode-tokens", "1", "--lengths", "16",
                 "--device", "cpu"],
    ("serve",): ["{model}", "--port", "0", "--device", "cpu"],  # cases fail before it would serve
}

SAMPLING = {"--max-new-tokens": "count0", "--temperature": "nonnegative", "--top-k": "count0",
            "--top-p": "fraction", "--repetition-penalty": "positive", "--stop": "stop", "--seed": "seed",
            "--device": "device"}
HTTP = {"--contact": "free", "--user-agent": "free", "--rate": "positive", "--retries": "count0",
        "--backoff": "nonnegative", "--timeout": "positive"}
OPTIONS = {  # every option of every verb -> its kind in BAD_VALUES
    ("list",): {},
    ("info",): {"arch": "arch", "--size": "size_preset", "--vocab-size": "size", "--seq-len": "size",
                "--json": "flag"},
    ("generate",): {"model": "model", "--prompt": "prompt", "--context-file": "text_file", "--chunk-size": "count",
                    **SAMPLING, "--no-stream": "flag"},
    ("chat",): {"model": "model", "--system": "free", **SAMPLING},
    ("eval",): {"model": "model", "--data": "input", "--qa": "jsonl", "--template": "template",
                "--max-new-tokens": "count", "--examples": "count0", "--out": "out_file", "--text-field": "free",
                "--seq-len": "count", "--batch-size": "count", "--max-batches": "count", "--device": "device",
                "--json": "flag", "--harness": "harness", "--limit": "count", "--num-fewshot": "count0"},
    ("export-hf",): {"model": "model", "out": "out_dir"},
    ("data", "prepare"): {"inputs": "input", "--out": "out_dir", "--tokenizer": "tokenizer", "--vocab-size": "size",
                          "--val-fraction": "fraction", "--text-field": "free", "--seed": "integer",
                          "--max-tokens": "count", "--drop-unk": "flag", "--blocklist": "text_file",
                          "--metadata-prefix": "fields"},
    ("data", "wiki-dump"): {"dumps": "input", "--out": "out_dir", "--min-chars": "count0",
                            "--max-articles": "count", "--lang": "lang", "--workers": "count"},
    ("data", "wiki-fetch"): {"--lang": "lang", "--top": "count", "--category": "free", "--category-depth": "count0",
                             "--month": "month", "--min-chars": "count0", "--out": "out_file", "--api-url": "url",
                             "--pageviews-url": "url", **HTTP},
    ("data", "qa-pairs"): {"inputs": "input", "--provider": "choice", "--model": "free", "--out": "out_file",
                           "--api-key-env": "env", "--base-url": "url", "--max-pairs-per-section": "count",
                           "--limit": "count", "--section-chars": "count", "--min-section-chars": "count0",
                           "--max-tokens": "count", **HTTP},
    ("tokenizer", "train"): {"files": "input", "--kind": "kind", "--vocab-size": "size", "--lang": "lang",
                             "--syllables": "count", "--words": "count", "--text-field": "free", "--out": "out_dir"},
    ("tokenizer", "stats"): {"tokenizer": "tokenizer", "files": "input", "--vocab-size": "size",
                             "--text-field": "free", "--json": "flag"},
    ("train",): {"--config": "recipe", "--arch": "arch", "--size": "size_preset", "--model-arg": "model_arg",
                 "--data": "data_dir", "--out": "out_dir", "--seq-len": "size", "--batch-size": "size",
                 "--grad-accum": "size", "--max-steps": "count", "--max-tokens": "count", "--lr": "positive",
                 "--min-lr-ratio": "fraction", "--warmup-steps": "count0", "--weight-decay": "nonnegative",
                 "--betas": "betas", "--grad-clip": "nonnegative", "--dtype": "choice", "--no-compile": "flag",
                 "--device": "device", "--threads": "count", "--seed": "seed", "--nan-policy": "choice",
                 "--eval-interval": "count0", "--eval-batches": "count", "--log-interval": "count",
                 "--checkpoint-interval": "count0", "--keep-last": "count0", "--resume": "reference",
                 "--no-keep-best": "flag", "--early-stop-patience": "count0", "--init-from": "model",
                 "--no-tensorboard": "flag", "--no-fsdp": "flag", "--no-activation-checkpointing": "flag",
                 "--curriculum": "choice",
                 "--curriculum-scorer": "choice", "--curriculum-reference": "reference",
                 "--curriculum-metric": "choice", "--curriculum-thresholds": "thresholds",
                 "--curriculum-patience": "count0", "--competence-start": "fraction", "--competence-steps": "count",
                 "--competence-shape": "choice", "--curriculum-lang": "choice", "--curriculum-max-windows": "count0"},
    ("demo",): {"--data": "input", "--out": "out_dir", "--arch": "arch", "--size": "size_preset", "--steps": "count",
                "--prompt": "prompt"},
    ("finetune",): {"base": "model", "--data": "jsonl", "--out": "out_dir", "--method": "choice",
                    "--template": "template", "--epochs": "count", "--max-steps": "count", "--batch-size": "count",
                    "--lr": "positive", "--min-lr-ratio": "fraction", "--warmup-steps": "count0",
                    "--weight-decay": "nonnegative", "--grad-clip": "nonnegative", "--val-fraction": "fraction",
                    "--max-length": "count", "--seed": "seed", "--threads": "count", "--device": "device",
                    "--dtype": "choice", "--freeze-layers": "count0", "--lora-r": "count",
                    "--lora-alpha": "positive", "--lora-dropout": "fraction", "--lora-targets": "lora_targets",
                    "--config": "recipe", "--run-dir": "out_dir", "--grad-accum": "size", "--betas": "betas",
                    "--no-compile": "flag", "--nan-policy": "choice", "--eval-interval": "count0",
                    "--log-interval": "count", "--checkpoint-interval": "count0", "--keep-last": "count0",
                    "--no-keep-best": "flag", "--early-stop-patience": "count0",
                    "--resume": "reference", "--no-tensorboard": "flag",
                    "--no-activation-checkpointing": "flag"},
    ("energy",): {"model": "model_or_arch", "--data": "text_file", "--size": "size_preset", "--seq-len": "count",
                  "--batch-size": "count", "--max-tokens": "count", "--ac-pj": "nonnegative",
                  "--mac-pj": "nonnegative", "--json": "flag", "--out": "out_file"},
    ("analyze",): {"model": "model_or_arch", "--data": "text_file", "--size": "size_preset", "--seq-len": "count",
                   "--json": "flag", "--out": "out_file"},
    ("plot",): {"runs": "run_dir", "--out": "out_dir"},
    ("arena",): {"--data": "input", "--test": "input", "--budget-tokens": "positive", "--budget-seconds": "positive",
                 "--archs": "arch", "--seeds": "count", "--quick": "flag", "--full": "flag", "--device": "device",
                 "--dtype": "choice", "--out": "out_dir", "--size": "size_preset", "--seq-len": "size",
                 "--batch-size": "size", "--lrs": "positive", "--sweep-steps": "count", "--evals": "count",
                 "--eval-batches": "count", "--contexts": "count", "--decode-tokens": "count", "--lengths": "count"},
    ("serve",): {"model": "model", "--host": "free", "--port": "count0", "--name": "free", "--max-batch": "count",
                 "--max-queue": "count0", "--max-tokens": "count", "--default-max-tokens": "count",
                 "--max-prompt-tokens": "count", "--max-body-bytes": "count", "--api-key": "free",
                 "--cors-origin": "free", "--device": "device", "--engine-threads": "count"},
}
for verb_options in OPTIONS.values():  # a global option, accepted after every verb
    verb_options.setdefault("--threads", "count")
# Verbs that write, each with an invocation that writes, for the full-disk and unwritable cases.
WRITERS = {verb: VERBS[verb] for verb in (("data", "prepare"), ("tokenizer", "train"), ("train",), ("demo",),
                                           ("finetune",))}
WRITERS[("energy",)] = [*VERBS[("energy",)], "--out", "{new}.json"]
WRITERS[("analyze",)] = [*VERBS[("analyze",)], "--out", "{new}.json"]
WRITERS[("plot",)] = VERBS[("plot",)]
WRITERS[("arena",)] = VERBS[("arena",)]
WRITERS[("eval",)] = ["{model}", "--qa", "{qa}", "--out", "{new}.jsonl", "--max-new-tokens", "2", "--device", "cpu"]


def leaf_parsers(parser: argparse.ArgumentParser, path: tuple = ()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, sub in subs[0].choices.items():
        yield from leaf_parsers(sub, (*path, name))


LEAVES = dict(leaf_parsers(build_parser()))  # a separate parser: cases read it, PARSER (below) parses


def option_name(action: argparse.Action) -> str:
    return action.option_strings[-1] if action.option_strings else action.dest


def verb_actions(verb: tuple) -> dict[str, argparse.Action]:
    return {option_name(a): a for a in LEAVES[verb]._actions if not isinstance(a, argparse._HelpAction)}


# ---- the workspace --------------------------------------------------------------------------
TEXT = "".join(f"Line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(120))


def _save_model(path: Path, vocab_size: int = 259, **config_edits) -> Path:
    model = lmzoo.create_model("transformer", "nano", vocab_size=vocab_size, d_model=32, n_layers=1)
    save_pretrained(model, path, tokenizer=get_tokenizer("bytes"))
    if config_edits:
        config = json.loads((path / "config.json").read_text())
        (path / "config.json").write_text(json.dumps({**config, **config_edits}))
    return path


def _dataset_with_meta(root: Path, name: str, **meta_edits) -> Path:
    path = root / name
    prepare_dataset([str(root / "text.txt")], path, val_fraction=0.3)
    meta = json.loads((path / "meta.json").read_text())
    meta.update(meta_edits)
    (path / "meta.json").write_text(json.dumps(meta))
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("fuzz")
    (root / "text.txt").write_text(TEXT, encoding="utf-8")
    (root / "latin1.txt").write_bytes("caf\xe9 gr\xfc\xdfe\n".encode("latin-1") * 50)
    (root / "dir").mkdir()
    (root / "dir" / "inside.txt").write_text("keep me\n")
    (root / "existing").write_text("precious\n")
    qa = [{"question": f"What is {i} plus one?", "answer": str(i + 1)} for i in range(12)]
    (root / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa))
    articles = [{"title": "Fox", "text": TEXT, "url": "http://example.org/fox"}]
    (root / "articles.jsonl").write_text("".join(json.dumps(r) + "\n" for r in articles))
    (root / "dump.xml").write_text("<page><title>Fox</title><ns>0</ns><id>1</id><revision><id>2</id>"
                                   f"<text>{TEXT}</text></revision></page>\n")
    paths = {name: str(root / name) for name in ("text.txt", "latin1.txt", "dir", "existing", "qa.jsonl",
                                                 "articles.jsonl", "dump.xml")}
    paths = {"text": paths["text.txt"], "latin1": paths["latin1.txt"], "dir": paths["dir"],
             "existing": paths["existing"], "qa": paths["qa.jsonl"], "articles": paths["articles.jsonl"],
             "dump": paths["dump.xml"], "missing": str(root / "missing"), "root": str(root)}
    paths["model"] = str(_save_model(root / "model"))
    paths["model_huge"] = str(_save_model(root / "model_huge", d_model=1 << 20))
    paths["model_badtype"] = str(_save_model(root / "model_badtype", d_model="32"))
    paths["model_nan"] = str(_save_model(root / "model_nan", init_std=float("nan")))
    paths["model_bigtok"] = str(_save_model(root / "model_bigtok", vocab_size=100))
    bad_weights = _save_model(root / "model_badweights")
    (bad_weights / "model.safetensors").write_bytes(b"\xff" * 64)
    prepare_dataset([paths["text"]], root / "data", val_fraction=0.3)
    paths["data"] = str(root / "data")
    paths["data_hugevocab"] = str(_dataset_with_meta(root, "data_hugevocab", vocab_size=10**12, dtype="uint32"))
    paths["data_boolvocab"] = str(_dataset_with_meta(root, "data_boolvocab", vocab_size=True))
    escape = _dataset_with_meta(root, "data_escape")
    meta = json.loads((escape / "meta.json").read_text())
    meta["splits"]["train"]["file"] = "../text.txt"
    (escape / "meta.json").write_text(json.dumps(meta))
    paths["data_escape"] = str(escape)
    for name, text in (("run", '{"type": "train", "step": 1, "loss": 2.5}\n'), ("run_torn", '{"type": "tr')):
        (root / name).mkdir()
        (root / name / "metrics.jsonl").write_text(text)
        paths[name] = str(root / name)
    return paths


def fill(arg: str, paths: dict[str, str], new: str) -> str:
    for name, path in {**paths, "new": new}.items():
        arg = arg.replace("{" + name + "}", path)
    return arg


def tree_hashes(root: str) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*")) if p.is_file()}


# ---- the cases ------------------------------------------------------------------------------
def with_option(base: list[str], action: argparse.Action, value: str) -> list[str]:
    """`base` with `action` set to `value` (replacing the base's own value, if any)."""
    name = option_name(action)
    args = list(base)
    if not action.option_strings:  # a positional: the base's first argument that is not an option value
        index = positional_index(base, action)
        args[index] = value
        return args
    values = value.split(" ") if action.nargs not in (None, "?") and value else [value]
    if name in args:
        i = args.index(name)
        del args[i:i + 2]
    return [*args, name, *values]


def positional_index(base: list[str], action: argparse.Action) -> int:
    leaf = [a for a in LEAVES_BY_ACTION[id(action)]._actions if not a.option_strings
            and not isinstance(a, argparse._HelpAction)]
    return leaf.index(action)  # the bases put positionals first, in order


LEAVES_BY_ACTION = {id(a): p for p in LEAVES.values() for a in p._actions}


def cases():
    for verb, base in VERBS.items():
        for name, action in verb_actions(verb).items():
            kind = OPTIONS[verb].get(name)
            values = list(BAD_VALUES.get(kind, []))
            if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
                values.append("nope")
            if action.required or not action.option_strings:
                yield pytest.param(verb, drop(base, action), "", name, id=f"{' '.join(verb)}-{name}-missing")
            for value in values:
                yield pytest.param(verb, with_option(base, action, value), value, name,
                                   id=f"{' '.join(verb)}-{name}={value[:24]!r}")


def drop(base: list[str], action: argparse.Action) -> list[str]:
    args = list(base)
    if not action.option_strings:
        del args[positional_index(base, action)]
        return args
    i = args.index(option_name(action))
    return args[:i] + args[i + 2:]


def mentions(message: str, action: argparse.Action, value: str, paths: dict[str, str]) -> bool:
    """Whether a one-line error names what is wrong: the option, the bad value (or a part of a
    KEY=VALUE) or the path."""
    def norm(text: str) -> str:
        return text.lower().replace("-", " ").replace("_", " ")

    text = norm(message)
    names = [option_name(action).lstrip("-"), action.dest, str(action.metavar or "")]
    shown = norm(fill(value, paths, ""))
    parts = [shown, *shown.split("=")]
    return any(norm(n) in text for n in names if n) or any(len(p) > 1 and p in text for p in parts)


PARSER = build_parser()


def run_cli(argv: list[str], capsys, monkeypatch) -> tuple[int, str]:
    monkeypatch.setattr("lmzoo.cli.main.build_parser", lambda: PARSER)  # built once: ~30 ms a case saved
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n"))
    monkeypatch.setenv("LMZOO_FUZZ_KEY", "not-a-real-key")
    monkeypatch.delenv("LMZOO_FUZZ_UNSET", raising=False)
    code = main(argv)
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, argv: list[str]) -> str:
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 2, f"exit {code} for {argv}\n{err[-3000:]}"
    assert "Traceback" not in err, err
    assert len(errors) == 1, f"expected one error line for {argv}, got:\n{err}"
    return errors[0]


@pytest.mark.parametrize("verb,argv,value,option", list(cases()))
def test_bad_value(verb, argv, value, option, workspace, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a verb with a default output (demo: runs/demo) writes here
    new = str(Path(workspace["root"]) / f"new-{tmp_path.name}")
    argv = [*verb, *(fill(a, workspace, new) for a in argv)]
    before = tree_hashes(workspace["root"])
    code, err = run_cli(argv, capsys, monkeypatch)
    line = assert_one_line_error(code, err, argv)
    action = verb_actions(verb)[option]
    assert mentions(line, action, value, workspace), f"the error does not name {option} or {value!r}: {line}"
    after = tree_hashes(workspace["root"])
    assert {k: after.get(k) for k in before} == before, "an existing file changed"


def test_every_option_is_classified():
    assert set(OPTIONS) == set(LEAVES), "add the new verb to VERBS and OPTIONS"
    for verb in LEAVES:
        unclassified = set(verb_actions(verb)) - set(OPTIONS[verb])
        assert not unclassified, f"classify {sorted(unclassified)} of `lmzoo {' '.join(verb)}` in OPTIONS"
        assert set(OPTIONS[verb].values()) <= set(BAD_VALUES)
    assert set(WRITERS) <= set(VERBS)


@pytest.mark.slow  # trains, fine-tunes and evaluates for real: ~20 s
def test_bases_are_valid(workspace, tmp_path, capsys, monkeypatch):
    """The cases change one option of a base that works, so a failure is that option's doing
    (the online verbs are left out: their bases point at a closed port)."""
    monkeypatch.chdir(tmp_path)
    for verb, base in VERBS.items():
        if verb in (("data", "wiki-fetch"), ("data", "qa-pairs"), ("demo",)):
            continue
        argv = [*verb, *(fill(a, workspace, str(tmp_path / f"out-{'-'.join(verb)}")) for a in base)]
        code, err = run_cli(argv, capsys, monkeypatch)
        assert code == 0, f"{argv}: {err[-2000:]}"


def test_global_threads_option(capsys):
    for value in ("0", "-1", "abc"):
        line = assert_one_line_error(main(["--threads", value, "list"]), capsys.readouterr().err, [value])
        assert "threads" in line


@pytest.fixture
def failing_writes(monkeypatch, workspace):
    """Writes under the workspace fail with `errno` (a full disk, or a destination without
    write permission), wherever they happen: open(), Path.open/write_*, safetensors."""
    import builtins

    import lmzoo.checkpoint
    import lmzoo.training.checkpointing

    root = workspace["root"]
    state = {"errno": errno.ENOSPC}

    def fail(path):
        raise OSError(state["errno"], errno.errorcode[state["errno"]], str(path))

    def writing(mode: str) -> bool:
        return any(c in mode for c in "wax+")

    real_open, real_path_open = builtins.open, pathlib.Path.open

    def fake_open(file, mode="r", *args, **kwargs):
        if writing(mode) and str(file).startswith(root):
            fail(file)
        return real_open(file, mode, *args, **kwargs)

    def fake_path_open(self, mode="r", *args, **kwargs):
        if writing(mode) and str(self).startswith(root):
            fail(self)
        return real_path_open(self, mode, *args, **kwargs)

    def fake_save_file(tensors, filename, metadata=None):
        fail(filename)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(pathlib.Path, "open", fake_path_open)
    monkeypatch.setattr(lmzoo.checkpoint, "save_file", fake_save_file)
    monkeypatch.setattr(lmzoo.training.checkpointing, "save_file", fake_save_file)
    return state


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES], ids=["full-disk", "unwritable"])
@pytest.mark.parametrize("verb", list(WRITERS), ids=lambda v: " ".join(v))
def test_failing_destination(verb, code, workspace, failing_writes, tmp_path, capsys, monkeypatch):
    failing_writes["errno"] = code
    new = str(Path(workspace["root"]) / f"new-{tmp_path.name}")
    argv = [*verb, *(fill(a, workspace, new) for a in WRITERS[verb])]
    before = tree_hashes(workspace["root"])
    status, err = run_cli(argv, capsys, monkeypatch)
    line = assert_one_line_error(status, err, argv)
    assert ("no space left" if code == errno.ENOSPC else "permission denied") in line
    after = tree_hashes(workspace["root"])
    assert {k: after.get(k) for k in before} == before, "an existing file changed"
