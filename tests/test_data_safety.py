"""lmzoo never loses a user's data: output locks between processes, refusals to replace what is
not lmzoo's own output, checks before anything is changed (see docs/safety.md).

Each test that refuses compares a byte-for-byte snapshot of the folder before and after.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import lmzoo
from lmzoo.checkpoint import save_pretrained
from lmzoo.cli.main import main
from lmzoo.data import TokenDataset, prepare_dataset
from lmzoo.data.http import PoliteSession
from lmzoo.data.qa_pairs import QaClient, generate_qa_pairs
from lmzoo.data.wiki_fetch import fetch_wiki_articles
from lmzoo.errors import LmzooError
from lmzoo.io import remove_dead_temps
from lmzoo.locking import lock_path, output_lock
from lmzoo.tokenizers.byte import ByteTokenizer
from lmzoo.training import TrainConfig, run_training

HOLD_LOCK = "import sys; from lmzoo.locking import output_lock\nwith output_lock(sys.argv[1]):\n" \
            "    print('locked', flush=True); sys.stdin.read()"


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` (hidden ones too) with its bytes, and every directory."""
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(root.rglob("*"))}


def lmzoo_cli(*args) -> int:
    return main([str(a) for a in args])


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("lmzoo: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def hold_lock(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


# ---- locks ----------------------------------------------------------------------------------

def test_lock_held_by_another_process_names_its_pid_and_dies_with_it(tmp_path):
    out = tmp_path / "out"
    holder = hold_lock(out)
    try:
        with pytest.raises(LmzooError, match=rf"--out {out} is in use by another lmzoo process \(pid {holder.pid}\)"):
            with output_lock(out):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)  # no cleanup runs: the lock file stays behind
        holder.wait()
    assert lock_path(out).is_file()
    with output_lock(out):  # the kernel released the dead holder's lock
        assert lock_path(out).read_text() == f"{os.getpid()}\n"
    assert not lock_path(out).exists()  # removed on release


def test_lock_is_reentrant_within_a_process_and_refuses_a_foreign_lock_file(tmp_path):
    with output_lock(tmp_path / "a"), output_lock(tmp_path / "a"):
        pass
    lock_path(tmp_path / "b").write_text("my notes\n")
    with pytest.raises(LmzooError, match="is not an lmzoo lock file"):
        with output_lock(tmp_path / "b"):
            pass
    assert lock_path(tmp_path / "b").read_text() == "my notes\n"


@pytest.mark.parametrize("verb", ["prepare", "wiki-dump", "wiki-fetch", "qa-pairs", "finetune", "tokenizer"])
def test_every_writing_verb_refuses_an_output_in_use(verb, tmp_path, capsys, monkeypatch):
    text = tmp_path / "text.txt"
    text.write_text("some text\n" * 50)
    articles = tmp_path / "articles.jsonl"
    articles.write_text(json.dumps({"title": "A", "text": "Ein Text. " * 40}) + "\n")
    dump = tmp_path / "dump.xml"
    dump.write_text("<mediawiki><page><title>A</title><ns>0</ns><id>1</id><revision><id>2</id><text>x</text>"
                    "</revision></page></mediawiki>")
    out = tmp_path / "out"
    commands = {"prepare": ["data", "prepare", text, "--out", out],
                "wiki-dump": ["data", "wiki-dump", dump, "--out", out],
                "wiki-fetch": ["data", "wiki-fetch", "--top", 1, "--out", out, "--api-url", "http://127.0.0.1:9"],
                "qa-pairs": ["data", "qa-pairs", articles, "--provider", "openai", "--model", "m", "--out", out],
                "finetune": ["finetune", tmp_path / "base", "--data", text, "--out", out],
                "tokenizer": ["tokenizer", "train", text, "--kind", "char", "--out", out]}
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    if verb == "wiki-dump":
        pytest.importorskip("mwxml")
    if verb == "finetune":
        pytest.importorskip("peft")
    holder = hold_lock(out)
    try:
        assert lmzoo_cli(*commands[verb]) == 2
    finally:
        holder.kill()
        holder.wait()
    assert f"in use by another lmzoo process (pid {holder.pid})" in one_line_error(capsys)
    assert not out.exists()


def train_command(data_dir, out, steps):
    return [sys.executable, "-m", "lmzoo.cli.main", "train", "--data", str(data_dir), "--out", str(out),
            "--arch", "transformer", "--model-arg", "d_model=32", "--model-arg", "n_layers=2", "--seq-len", "32",
            "--batch-size", "4", "--max-steps", str(steps), "--warmup-steps", "2", "--log-interval", "1",
            "--eval-interval", "0", "--eval-batches", "1", "--checkpoint-interval", "5", "--threads", "1"]


def test_second_trainer_on_the_same_out_is_refused_and_a_dead_ones_debris_is_cleaned(data_dir, tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen(train_command(data_dir, out, 100_000), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list((out / "checkpoints").glob("step-*")) and first.poll() is None:
            assert time.monotonic() < deadline, "the first run never wrote a checkpoint"
            time.sleep(0.05)
        in_flight = out / "checkpoints" / f".step-9999999.tmp-{first.pid}-x"  # as if it were writing one now
        in_flight.mkdir()
        second = subprocess.run(train_command(data_dir, out, 10), capture_output=True, text=True, timeout=120)
        assert first.poll() is None, first.stderr.read()[-2000:]
        assert second.returncode == 2
        assert second.stderr.strip() == (f"lmzoo: error: --out {out} is in use by another lmzoo process "
                                          f"(pid {first.pid}); wait for it to finish or choose another output")
        assert in_flight.is_dir()
    finally:
        first.kill()
        first.wait()
    # The first run died without cleaning up: its lock is stale and its temp directory debris.
    third = subprocess.run(train_command(data_dir, out, 1), capture_output=True, text=True, timeout=120)
    assert third.returncode == 0, third.stderr[-2000:]
    assert not in_flight.exists()


def test_temp_dirs_of_live_or_unknown_writers_are_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    names = [f".step-1.tmp-{dead.pid}-a", f".step-1.tmp-{os.getpid()}-b", ".step-1.tmp-c"]
    for name in names:
        (tmp_path / name).mkdir()
    assert remove_dead_temps(tmp_path, ".step-*.tmp-*") == [tmp_path / names[0]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[1:])


# ---- save_pretrained and finetune --out -------------------------------------------------------

@pytest.fixture(scope="module")
def run_dir(data_dir, tmp_path_factory):
    """A real training run: OUT/checkpoints/step-*, metrics.jsonl."""
    out = tmp_path_factory.mktemp("run") / "run"
    run_training(TrainConfig(arch="transformer", size="nano", model_args={"d_model": 32, "n_layers": 2},
                             data=str(data_dir), out=str(out), seq_len=32, batch_size=2, max_steps=2,
                             warmup_steps=1, eval_interval=0, eval_batches=1, checkpoint_interval=1, threads=1))
    return out


def tiny_model():
    torch.manual_seed(0)
    return lmzoo.create_model("transformer", "nano", vocab_size=259, d_model=32, n_layers=2)


def user_folders(tmp_path: Path) -> dict[str, Path]:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "thesis.txt").write_text("three years of work")
    hf = tmp_path / "hf-model"  # a Hugging Face folder has config.json and model.safetensors too
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    (hf / "model.safetensors").write_bytes(b"weights")
    model_plus = tmp_path / "model-plus"  # an lmzoo model the user added a file to
    tiny_model().save_pretrained(model_plus, ByteTokenizer())
    (model_plus / "README.md").write_text("how I trained it")
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    return {"notes": notes, "hf": hf, "model_plus": model_plus, "a_file": a_file}


def test_save_pretrained_replaces_only_a_saved_model(run_dir, tmp_path):
    targets = {**user_folders(tmp_path), "run": run_dir, "checkpoints": run_dir / "checkpoints"}
    model = tiny_model()
    for name, target in targets.items():
        before = snapshot(target.parent)
        with pytest.raises(LmzooError, match="lmzoo will not replace it|not an lmzoo saved model directory"):
            save_pretrained(model, target)
        assert snapshot(target.parent) == before, name
    ours = tmp_path / "ours"
    model.save_pretrained(ours, ByteTokenizer())
    (ours / "finetune.json").write_text("{}")  # what `lmzoo finetune` adds
    model.save_pretrained(ours)  # an earlier save is replaced whole
    # replaced whole: finetune.json is gone (the tokenizer is create_model's default one)
    assert sorted(p.name for p in ours.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    (tmp_path / "empty").mkdir()
    model.save_pretrained(tmp_path / "empty")
    assert lmzoo.load(tmp_path / "empty").config.d_model == 32


def test_finetune_out_refuses_the_run_its_checkpoints_and_user_folders_before_training(run_dir, tmp_path, capsys):
    pytest.importorskip("peft")
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"question": c, "answer": c}) + "\n" for c in "abcdefgh"))
    targets = {"run": run_dir, "checkpoints": run_dir / "checkpoints",
               "step": sorted((run_dir / "checkpoints").glob("step-*"))[0],
               **{k: v for k, v in user_folders(tmp_path).items() if k != "model_plus"}}
    for name, target in targets.items():
        before = snapshot(target.parent)
        assert lmzoo_cli("finetune", run_dir, "--data", qa, "--out", target, "--max-steps", 1) == 2, name
        assert str(target) in one_line_error(capsys)
        assert snapshot(target.parent) == before, name
    out = tmp_path / "ft"
    for _ in range(2):  # a rerun replaces its own earlier output
        assert lmzoo_cli("finetune", run_dir, "--data", qa, "--out", out, "--max-steps", 1) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "finetune.json", "model.safetensors",
                                                     "tokenizer.json"]


# ---- data prepare ---------------------------------------------------------------------------

def test_prepare_checks_inputs_before_touching_an_existing_dataset(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("Ein Satz über Daten.\n" * 300)
    out = tmp_path / "data"
    prepare_dataset(text, out)
    before = snapshot(tmp_path)
    with pytest.raises(LmzooError, match="input not found"):
        prepare_dataset([text, tmp_path / "txet.txt"], out)  # a typo in the second path
    assert snapshot(tmp_path) == before
    assert len(TokenDataset(out)) > 0


def test_prepare_never_overwrites_files_of_another_tool(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("Ein Satz über Daten.\n" * 300)
    nanogpt = tmp_path / "nanogpt"  # nanoGPT's prepare.py writes train.bin / val.bin too
    nanogpt.mkdir()
    (nanogpt / "train.bin").write_bytes(b"\x01\x02" * 100)
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE"}}))
    for folder in (nanogpt, hf):
        before = snapshot(folder)
        with pytest.raises(LmzooError, match="lmzoo will not overwrite"):
            prepare_dataset(text, folder)
        assert snapshot(folder) == before
    with pytest.raises(LmzooError, match="is a file"):
        prepare_dataset(text, text)
    shared = tmp_path / "shared"  # other files are left beside the dataset
    shared.mkdir()
    (shared / "notes.txt").write_text("keep me")
    prepare_dataset(text, shared)
    assert (shared / "notes.txt").read_text() == "keep me" and len(TokenDataset(shared)) > 0


def test_prepare_interrupted_while_swapping_files_is_marked_incomplete_and_rerunnable(tmp_path, monkeypatch):
    text = tmp_path / "text.txt"
    text.write_text("Ein Satz über Daten.\n" * 300)
    out = tmp_path / "data"
    prepare_dataset(text, out)

    def crash(self, directory):
        raise KeyboardInterrupt

    monkeypatch.setattr(ByteTokenizer, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(text, out)
    monkeypatch.undo()
    with pytest.raises(LmzooError, match="is incomplete .*interrupted"):
        TokenDataset(out)
    prepare_dataset(text, out)  # still recognised as lmzoo's dataset folder
    assert len(TokenDataset(out)) > 0


# ---- wiki-fetch and qa-pairs: append-only files ------------------------------------------------

UNUSED_HTTP = PoliteSession("lmzoo-test/1", rate=1000, retries=0, timeout=1)


@pytest.mark.parametrize("content", [b"a single line of notes without a newline",
                                     b'{"title": "A", "text": "x", "lang": "de"}\nmy own line, torn',
                                     b"line one\nline two"])
def test_wiki_fetch_refuses_a_file_that_is_not_its_output_before_cutting_anything(tmp_path, content):
    out = tmp_path / "articles.jsonl"
    out.write_bytes(content)
    with pytest.raises(LmzooError, match="is not a wiki-fetch article file; lmzoo will not change it"):
        fetch_wiki_articles(out, top=1, api_url="http://127.0.0.1:9", http=UNUSED_HTTP)
    assert out.read_bytes() == content


PAIR = {"question": "Q?", "answer": "A", "title": "A", "section": "", "section_index": 0, "source_url": None}
HEADER = {"format": "lmzoo-qa-progress", "format_version": 1, "run": {"section_chars": 4000, "min_section_chars": 10}}


def jsonl(*records) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


@pytest.mark.parametrize("progress, pairs", [
    (b"my notes, no newline", b""),  # a progress file that is not ours
    (jsonl(HEADER), b"my notes\n"),  # an output file that is not ours
    (jsonl(HEADER), jsonl(PAIR) + b"my own torn line"),
    (jsonl(HEADER, {"title": "A", "section_index": 0}), jsonl({**PAIR, "title": "B"}, PAIR)),  # out of order
], ids=["progress", "out", "torn", "order"])
def test_qa_pairs_refuses_files_that_are_not_its_output_before_cutting_anything(tmp_path, progress, pairs):
    articles = tmp_path / "articles.jsonl"
    articles.write_text(json.dumps({"title": "A", "text": "Ein Text. " * 40}) + "\n")
    out = tmp_path / "qa.jsonl"
    out.write_bytes(pairs)
    out.with_name("qa.jsonl.progress").write_bytes(progress)
    before = snapshot(tmp_path)
    client = QaClient("openai", "m", api_key="k", base_url="http://127.0.0.1:9", http=UNUSED_HTTP)
    with pytest.raises(LmzooError, match="lmzoo will not change it|does not match"):
        generate_qa_pairs(articles, out, client, min_section_chars=10)
    assert snapshot(tmp_path) == before


# ---- single-file reports and tokenizers -------------------------------------------------------

def test_report_and_tokenizer_outputs_replace_only_their_own_kind(tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text("Ein Satz über Daten.\n" * 300)
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": true}')
    assert lmzoo_cli("energy", "transformer", "--data", text, "--max-tokens", 512, "--out", notes) == 2
    assert "notes.json exists and is not an lmzoo energy report" in one_line_error(capsys)
    assert notes.read_text() == '{"mine": true}'
    report = tmp_path / "energy.json"
    for _ in range(2):  # a rerun replaces its own report
        assert lmzoo_cli("energy", "transformer", "--data", text, "--max-tokens", 512, "--out", report) == 0
    assert "costs" in json.loads(report.read_text())
    capsys.readouterr()
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "tokenizer.json").write_text('{"version": "1.0"}')
    assert lmzoo_cli("tokenizer", "train", text, "--kind", "char", "--out", hf) == 2
    assert "is not an lmzoo tokenizer" in one_line_error(capsys)
    assert (hf / "tokenizer.json").read_text() == '{"version": "1.0"}'
