"""Every command and Python snippet in README.md and docs/*.md runs, as written (issue 21).

The fenced ```bash, ```python and ```yaml blocks are extracted from the markdown and run in one
shared workspace, document by document and in order (a later block uses what an earlier one
made, as a reader would). To keep this fast, sizes and run lengths are shrunk by the documented
`SUBSTITUTIONS` below, and the files a document names but does not make are made small by
`workspace()`. A command that cannot run here is listed in `NOT_RUN` with the reason: nothing is
skipped silently, and a block that is neither run nor listed fails the test.

To extend: a new verb's bad-for-CI sizes go in SUBSTITUTIONS; a new input file in `workspace()`;
a command that needs a GPU, the internet or a service in NOT_RUN, with a test that covers it.
"""
from __future__ import annotations

import bz2
import contextlib
import doctest
import io
import json
import re
import shlex
import sys
from pathlib import Path

import pytest

import lmzoo
from lmzoo.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHARED_DATA = ROOT.parent / "shared" / "data"

# (pattern, replacement, why): applied to every block's text before it runs.
SUBSTITUTIONS = [
    (r"--size (micro|tiny|small|base)\b", "--size nano", "the smallest preset"),
    (r'"(micro|tiny|small|base)"', '"nano"', "the smallest preset, in Python"),
    (r"^size: \w+$", "size: nano", "the smallest preset, in a recipe"),
    (r"--max-steps \d+", "--max-steps 2", "a few steps"),
    (r"^max_steps: \d+$", "max_steps: 2", "a few steps, in a recipe"),
    (r"^warmup_steps: \d+$", "warmup_steps: 1", "warmup within the few steps"),
    (r"--seq-len \d+", "--seq-len 32", "short windows"),
    (r"^seq_len: \d+$", "seq_len: 32", "short windows, in a recipe"),
    (r"--batch-size \d+", "--batch-size 2", "small batches"),
    (r"^batch_size: \d+$", "batch_size: 2", "small batches, in a recipe"),
    (r"--max-new-tokens \d+", "--max-new-tokens 4", "short generations"),
    (r"max_new_tokens=\d+", "max_new_tokens=4", "short generations, in Python"),
    (r"--vocab-size \d+", "--vocab-size 400", "a vocabulary the small corpus can fill"),
    (r"--epochs \d+", "--epochs 1", "one epoch"),
    (r"--eval-interval \d+", "--eval-interval 1", "evaluate within the few steps"),
    (r"--curriculum-patience \d+", "--curriculum-patience 1", "stages advance within the few steps"),
    (r"--early-stop-patience \d+", "--early-stop-patience 1", "stop within the few steps"),
    (r"--workers \d+", "--workers 1", "one process (2 cores shared)"),
    (r"workers=\d+", "workers=1", "one process, in Python"),
    (r"\.\./shared/data/wikitext-2-raw/wiki\.test\.raw", "wiki.test.raw",
     "WikiText-2 is not in the shared data: a small text of the same name"),
    (r"\.\./shared/data/tinyshakespeare\.txt", "tinyshakespeare.txt", "its first 20 kB"),
    (r"lmzoo eval MODEL ", "lmzoo eval my-model ", "the placeholder: a saved nano model"),
    (r"--limit \d+", "--limit 4", "a few documents per harness task"),
]

# Extra flags per verb, added when the command does not give them: short evaluations and runs.
EXTRA_FLAGS = {
    ("train",): ["--eval-batches", "1", "--log-interval", "1", "--warmup-steps", "1", "--eval-interval", "2",
                 "--max-steps", "2", "--batch-size", "2", "--seq-len", "32"],
    ("finetune",): ["--max-steps", "2", "--batch-size", "2", "--max-length", "48"],
    ("eval",): ["--max-batches", "2", "--max-new-tokens", "4", "--seq-len", "32"],
    ("generate",): ["--max-new-tokens", "4"],
    ("chat",): ["--max-new-tokens", "4"],
    ("energy",): ["--max-tokens", "256", "--seq-len", "32"],
    ("analyze",): ["--seq-len", "32"],
    ("info",): ["--seq-len", "32"],
}

# Commands (by how they start, after substitution) that cannot run here, and why.
NOT_RUN = {
    "make ": "builds .venv and runs the whole suite or the 2-minute demo: CI runs `make test` itself",
    "source ": "activates the venv these tests already run in",
    "pip install": "installs extras: the dev extra these tests run with holds them all",
    "export ": "sets an API key for an online LLM provider",
    "torchrun ": "multi-process launch: tests/test_distributed.py runs the same code in two gloo processes",
    "lmzoo data wiki-fetch": "needs the internet (Wikipedia's APIs): tests/test_wiki_fetch.py runs it against a "
                             "local server",
    "lmzoo data qa-pairs": "needs an LLM API: tests/test_qa_pairs.py runs it against a local fake provider",
    "lmzoo serve": "a server runs until stopped: tests/test_serve.py starts `lmzoo serve` as a subprocess, "
                   "talks to it and stops it",
    "lmzoo --threads 2 serve": "as `lmzoo serve`",
    "curl ": "a client of a running `lmzoo serve`: tests/test_serve.py sends the same requests",
    "lmzoo arena": "trains every architecture for minutes: tests/test_arena.py runs the same verb small",
    "lmzoo --threads 2 arena": "as `lmzoo arena`",
    "time lmzoo": "times the arena's quick profile (minutes): tests/test_arena.py runs the arena small",
    "python benchmarks/": "a benchmark (minutes to hours): each has a smoke test in tests/ (test_benchmarks.py, "
                          "test_serve_load.py, test_hf.py)",
    "python -c \"import lmzoo.hf": "loads an export in a fresh Python: tests/test_hf.py loads one in a subprocess",
    "lmzoo eval my-model --harness hellaswag": "a hub task: needs the internet",
    "lmzoo-torchrun ": "multi-process launch: tests/test_distributed.py runs it (two nodes on loopback; Ctrl-C "
                       "through lmzoo-torchrun)",
    "head=$(scontrol": "a SLURM batch script: no SLURM here (tests/test_distributed.py runs two nodes on loopback)",
    "srun ": "as the SLURM script's first line",
    "cat arenas/": "shows the arena's table, which is not made here: tests/test_arena.py checks results.md",
    "lmzoo plot arenas/": "plots the runs of the arena above, which is not run here: tests/test_plots.py and "
                          "tests/test_arena.py plot runs",
}
# Python blocks (by their first line) that cannot run here, and why.
NOT_RUN_PYTHON = {
    "from openai import OpenAI": "a client of a running `lmzoo serve`: tests/test_serve.py makes the same calls "
                                 "with the openai client",
    "import lmzoo.hf": "fragments of one workflow (`...train...`): tests/test_hf.py runs each step",
    "tok = transformers": "as `import lmzoo.hf`",
    "import peft": "as `import lmzoo.hf`",
    "from lmzoo.hf.harness": "as `import lmzoo.hf`; tests/test_harness.py runs simple_evaluate on local tasks",
}
# Documents that take long (many trainings): `make test-all` runs them.
SLOW_DOCUMENTS = {"README.md", "training.md", "data.md"}


def blocks(document: Path) -> list[tuple[int, str, str]]:
    """(line, language, text) of each fenced bash/python/yaml block."""
    found, lines = [], document.read_text(encoding="utf-8").split("\n")
    i = 0
    while i < len(lines):
        m = re.match(r"^```(\w+)\s*$", lines[i])
        if not m:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        if m.group(1) in ("bash", "python", "yaml"):
            found.append((i + 1, m.group(1), "\n".join(lines[i + 1:end])))
        i = end + 1
    return found


def substitute(text: str) -> str:
    for pattern, replacement, _why in SUBSTITUTIONS:
        text = re.sub(pattern, replacement, text, flags=re.MULTILINE)
    return text


def commands(bash: str) -> list[str]:
    """One string per command: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", bash)
    return [line.strip() for line in joined.split("\n") if shlex.split(line, comments=True)]


def with_extra_flags(argv: list[str]) -> list[str]:
    verb = (argv[0],)
    extra, given = EXTRA_FLAGS.get(verb, []), set(argv)
    added = []
    for i in range(0, len(extra), 2):
        if extra[i] not in given:
            added += extra[i:i + 2]
    return argv + added


def run_command(command: str, where: str) -> None:
    if any(command.startswith(start) for start in NOT_RUN):
        return
    argv = shlex.split(command, comments=True)
    assert argv[0] == "lmzoo", f"{where}: `{command}` is neither an lmzoo command nor listed in NOT_RUN"
    argv = with_extra_flags(argv[1:])
    stdin = io.StringIO("Hello\n\n") if argv[0] == "chat" else sys.stdin
    with contextlib.redirect_stdout(io.StringIO()), _stdin(stdin):
        code = main(argv)
    assert code == 0, f"{where}: `lmzoo {' '.join(argv)}` exited with {code}"


@contextlib.contextmanager
def _stdin(stream):
    saved, sys.stdin = sys.stdin, stream
    try:
        yield
    finally:
        sys.stdin = saved


def run_block(language: str, text: str, where: str, workspace: Path) -> None:
    text = substitute(text)
    if language == "yaml":
        first = text.split("\n", 1)[0]
        assert first.startswith("# "), f"{where}: a yaml block starts with `# FILENAME` naming its file"
        (workspace / first[2:].strip()).write_text(text, encoding="utf-8")
    elif language == "python" and text.lstrip().startswith(">>>"):
        test = doctest.DocTestParser().get_doctest(text, _doc_namespace(), where, where, 0)
        runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
        runner.run(test, out=lambda s: None)
        assert runner.failures == 0, f"{where}: the doctest's output differs"
    elif language == "python":
        if any(text.lstrip().startswith(start) for start in NOT_RUN_PYTHON):
            return
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(text, where, "exec"), {"__name__": "__docs__"})
    else:
        for command in commands(text):
            run_command(command, where)


def _doc_namespace() -> dict:
    from lmzoo.data import count_words, split_sentences
    return {"split_sentences": split_sentences, "count_words": count_words}


# ---- the workspace: files the documents name without making them -------------------------
GERMAN = ("Berlin ist die Hauptstadt Deutschlands. Die Stadt liegt an der Spree. Im Sommer ist es warm. "
          "Viele Menschen fahren mit dem Rad. Das Museum ist am Montag geschlossen.\n\n")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("docs")
    shakespeare = (SHARED_DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")[:20_000] \
        if (SHARED_DATA / "tinyshakespeare.txt").is_file() else "ROMEO: But soft.\n" * 1000
    (root / "tinyshakespeare.txt").write_text(shakespeare, encoding="utf-8")
    (root / "wiki.test.raw").write_text(shakespeare[:4000], encoding="utf-8")
    (root / "corpus").mkdir()
    for i in range(3):
        (root / "corpus" / f"part{i}.txt").write_text(GERMAN * 30, encoding="utf-8")
    for name in ("book.txt", "held-out.txt", "heldout.txt", "more-text.txt"):
        (root / name).write_text(GERMAN * 4 + "Zeichen wie ☃ sind selten.\n\n", encoding="utf-8")
    articles = [{"title": f"Artikel {i}", "text": GERMAN * 6 + "Werbung." * (i % 4 == 0), "category": "Stadt"}
                for i in range(12)]
    for name in ("articles.jsonl", "wiki-top.jsonl", "wiki-science.jsonl"):  # what `wiki-fetch` would write
        (root / name).write_text("".join(json.dumps(a, ensure_ascii=False) + "\n" for a in articles),
                                 encoding="utf-8")
    qa = [{"question": f"Was ist {i}?", "answer": f"Das ist {i}."} for i in range(8)]
    for name in ("qa.jsonl", "qa-test.jsonl"):
        (root / name).write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in qa), encoding="utf-8")
    (root / "blocklist.txt").write_text("Werbung\n", encoding="utf-8")
    (root / "notes.txt").write_text(GERMAN * 3, encoding="utf-8")  # the harness's text task
    choices = [{"question": f"Die Stadt liegt an der {i}", "choices": ["Spree", "Wolke"], "answer": 0} for i in range(6)]
    (root / "questions.jsonl").write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in choices),
                                          encoding="utf-8")
    from test_wiki_dump import full_dump
    for name in ("dewiki-latest-pages-articles.xml.bz2",):
        (root / name).write_bytes(bz2.compress(full_dump().encode("utf-8")))
    recipe = next(text for line, lang, text in blocks(ROOT / "docs" / "training.md") if lang == "yaml")
    (root / "recipe.yaml").write_text(substitute(recipe), encoding="utf-8")  # README trains with it too
    # The data and runs the documents use before (or without) making them: each can run alone.
    data = {"data/dewiki": root / "corpus", "data/shakespeare": root / "tinyshakespeare.txt"}
    runs = {"runs/x": ("transformer", "data/dewiki"), "runs/spectral": ("spectral-llm", "data/dewiki"),
            "runs/shake": ("transformer", "data/shakespeare"), "runs/my-model": ("transformer", "data/shakespeare")}
    with contextlib.redirect_stdout(io.StringIO()):
        for out, source in data.items():
            assert main(["data", "prepare", str(source), "--out", str(root / out)]) == 0
        for out, (arch, dataset) in runs.items():
            assert main(["train", "--arch", arch, "--data", str(root / dataset), "--out", str(root / out),
                         *with_extra_flags(["train"])[1:]]) == 0
    lmzoo.load(root / "runs/my-model").save_pretrained(root / "my-model")  # "a saved model"
    return root


DOCUMENT_PARAMS = [pytest.param(document, id=document.name,
                                marks=[pytest.mark.slow] if document.name in SLOW_DOCUMENTS else [])
                   for document in DOCUMENTS]


@pytest.mark.parametrize("document", DOCUMENT_PARAMS)
def test_every_block_of_the_document_runs(document, workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    for line, language, text in blocks(document):
        run_block(language, text, f"{document.name}:{line}", workspace)


def test_every_fence_names_its_language():
    """An unlabelled fence would escape this test: commands are ```bash, output and diagrams ```text."""
    for document in DOCUMENTS:
        lines = document.read_text(encoding="utf-8").split("\n")
        fences = [number for number, line in enumerate(lines, 1) if line.startswith("```")]
        for opening in fences[::2]:
            assert lines[opening - 1] != "```", f"{document.name}:{opening}: ``` needs a language (bash, python, text...)"


def test_every_documented_command_is_run_or_listed_with_a_reason():
    for document in DOCUMENTS:
        for line, language, text in blocks(document):
            if language != "bash":
                continue
            for command in commands(substitute(text)):
                listed = any(command.startswith(start) for start in NOT_RUN)
                assert listed or command.startswith("lmzoo "), f"{document.name}:{line}: `{command}`"


def test_substitutions_shrink_sizes_and_keep_the_rest():
    text = 'lmzoo train --size micro --max-steps 2000 --seq-len 256 --lr 1e-3 --workers 8\nx = f("micro")'
    assert substitute(text) == ('lmzoo train --size nano --max-steps 2 --seq-len 32 --lr 1e-3 --workers 1\n'
                                'x = f("nano")')
