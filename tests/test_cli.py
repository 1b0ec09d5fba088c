"""The `lmzoo` command end to end, in a temp dir: prepare, train, resume, generate, eval."""
import json
import re
import subprocess
import sys

import pytest

from lmzoo.cli.main import main

TINY_MODEL = ["--arch", "transformer", "--size", "nano", "--model-arg", "d_model=32", "--model-arg", "n_layers=2"]


def lmzoo(*args):
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    text = "".join(f"Zeile {i}: Der schnelle braune Fuchs springt über den faulen Hund.\n" for i in range(400))
    (root / "corpus.txt").write_text(text, encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def trained(corpus):
    assert lmzoo("data", "prepare", corpus / "corpus.txt", "--out", corpus / "data") == 0
    run = corpus / "run"
    common = [*TINY_MODEL, "--data", corpus / "data", "--out", run, "--seq-len", 32, "--batch-size", 4,
              "--eval-interval", 5, "--eval-batches", 2, "--log-interval", 1, "--checkpoint-interval", 5,
              "--warmup-steps", 2]
    assert lmzoo("train", *common, "--max-steps", 5) == 0
    assert lmzoo("train", *common, "--max-steps", 10) == 0  # resumes from step 5
    return run


def test_train_resumes_and_writes_checkpoints(trained, capsys):
    steps = sorted(p.name for p in (trained / "checkpoints").iterdir())
    assert steps[-1] == "step-0000010"
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert {r.get("step") for r in rows if "loss" in r} >= set(range(1, 11))


def test_generate_and_eval(trained, corpus, capsys):
    assert lmzoo("generate", trained, "--prompt", "Zeile", "--max-new-tokens", 20, "--seed", 0,
                 "--no-stream") == 0
    assert capsys.readouterr().out.startswith("Zeile")
    assert lmzoo("eval", trained, "--data", corpus / "corpus.txt", "--seq-len", 32, "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["bpb"] > 0 and result["tokens"] > 0


def test_generate_with_context_file(trained, corpus, capsys):
    text = "".join(f"Zeile {i}: Grüße vom Fuchs.\n" for i in range(40))
    (corpus / "context.txt").write_text(text, encoding="utf-8")
    assert lmzoo("generate", trained, "--context-file", corpus / "context.txt", "--chunk-size", 100,
                 "--prompt", "Zeile", "--max-new-tokens", 10, "--seed", 0, "--no-stream") == 0
    out = capsys.readouterr()
    assert out.out.startswith("Zeile") and len(out.out.rstrip("\n")) > len("Zeile")
    n = len(text.encode())  # the run's tokenizer is bytes
    assert re.search(rf"fed {n:,} context tokens in [\d.]+ s \([\d,]+ tokens/s\).*peak RSS [\d,]+ MB", out.err)
    assert "memory grows with the context" in out.err  # a transformer without a window: full KV cache
    # Without --prompt the file itself is continued (streamed).
    assert lmzoo("generate", trained, "--context-file", corpus / "context.txt", "--max-new-tokens", 5,
                 "--temperature", 0) == 0
    out = capsys.readouterr()
    assert "context tokens" in out.err and out.out.endswith("\n")
    assert lmzoo("generate", trained, "--context-file", corpus / "missing.txt") == 2
    assert "context file not found" in capsys.readouterr().err


def test_list_and_info(capsys):
    assert lmzoo("list") == 0
    assert "complexity" in capsys.readouterr().out
    assert lmzoo("info", "complexity", "--size", "nano", "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"]["non_embedding"] > 0 and info["flops_per_token"]["train"] > 0


@pytest.mark.parametrize("args,needle", [
    (["generate", "/nonexistent/model"], "no model directory"),
    (["generate", "/nonexistent/model", "--context-file", "x.txt", "--prompt", "a", "--prompt", "b"],
     "at most one --prompt"),
    (["info", "transfomer"], "unknown architecture"),
    (["data", "prepare", "/nonexistent.txt", "--out", "/tmp/x"], "nonexistent"),
    (["train", "--data", "/nonexistent", "--out", "/tmp/x"], "nonexistent"),
])
def test_bad_input_is_one_line(args, needle, capsys):
    assert lmzoo(*args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lmzoo: error:") and needle in err and "\n" not in err


def test_non_utf8_data_is_one_line(tmp_path, capsys):
    (tmp_path / "bad.txt").write_bytes(b"ok\n\xff\xfe broken")
    assert lmzoo("data", "prepare", tmp_path / "bad.txt", "--out", tmp_path / "d") == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # a progress bar may precede it
    assert last.startswith("lmzoo: error:") and "UTF-8" in last and "bad.txt" in last
    assert "Traceback" not in err


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "lmzoo.cli.main", "train", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--grad-accum" in out.stdout
