"""Issue 21, the first hour of a new user: each thing that was broken or misleading, fixed."""
import io
import json
from pathlib import Path

import pytest
import torch

import lmzoo
from lmzoo.cli.main import build_parser, leaf_parsers, main
from lmzoo.errors import LmzooError
from lmzoo.generation import TextStreamer, generate_text
from lmzoo.tokenizers import get_tokenizer

SRC = Path(__file__).resolve().parents[1] / "src" / "lmzoo"
TINY = ["--arch", "transformer", "--size", "nano", "--model-arg", "d_model=32", "--model-arg", "n_layers=1"]


def lmzoo_cli(*args):
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny trained run (3 steps) and its data."""
    root = tmp_path_factory.mktemp("first")
    (root / "t.txt").write_text("".join(f"Line {i}: the quick brown fox jumps.\n" for i in range(300)))
    assert lmzoo_cli("data", "prepare", root / "t.txt", "--out", root / "data") == 0
    assert lmzoo_cli("train", *TINY, "--data", root / "data", "--out", root / "run", "--max-steps", 3,
                     "--seq-len", 16, "--batch-size", 2, "--eval-interval", 3, "--eval-batches", 1,
                     "--warmup-steps", 1) == 0
    return root


# ---- broken or misleading ------------------------------------------------------------------
def test_the_readme_python_snippet_generates_text_after_save_and_load(tmp_path):
    model = lmzoo.create_model("transformer", "nano", d_model=32, n_layers=1)
    assert model.tokenizer is not None and model.tokenizer.kind == "bytes"
    model.save_pretrained(tmp_path / "m")
    loaded = lmzoo.load(tmp_path / "m")
    assert loaded.tokenizer.kind == "bytes"
    assert isinstance(generate_text(loaded, loaded.tokenizer, ["Once"], max_new_tokens=3)[0], str)
    other = lmzoo.create_model("transformer", "nano", d_model=32, n_layers=1, vocab_size=300)
    assert other.tokenizer is None  # no tokenizer of that vocabulary to guess
    with pytest.raises(LmzooError, match="generate_text needs a tokenizer"):
        generate_text(other, None, ["Once"], max_new_tokens=3)


@pytest.mark.parametrize("stop", ["END", "\nUser:"])
def test_streamed_text_stops_where_the_returned_text_does(stop):
    tok = get_tokenizer("bytes")
    text = f"hello E{stop}more after"  # "E" alone could begin "END": held back, then printed
    out = io.StringIO()
    streamer = TextStreamer(tok, file=out, stop_strings=[stop])
    for token in tok.encode(text):
        streamer.put(torch.tensor([token]))
    streamer.end()
    assert out.getvalue() == text[: text.index(stop)] + "\n"


def test_streamer_prints_a_partial_stop_string_that_never_completes():
    tok = get_tokenizer("bytes")
    out = io.StringIO()
    streamer = TextStreamer(tok, file=out, stop_strings=["END"])
    for token in tok.encode("the EN"):
        streamer.put(torch.tensor([token]))
    assert out.getvalue() == "the "  # "EN" may still become "END"
    streamer.end()
    assert out.getvalue() == "the EN\n"


def test_a_partial_last_chunk_is_not_growth():
    from lmzoo.cli.model_commands import StateGrowth

    growth = StateGrowth(chunk_size=100)
    for fed, size in ((100, 500), (200, 530), (300, 500), (350, 560)):  # efficia-1's sizes wobble
        growth.record(fed, size)
    assert (growth.first_full, growth.last_full, growth.last) == (500, 500, 560) and not growth.grew()
    growth.record(400, 900)
    assert growth.grew()


def test_context_file_note_names_only_growing_states(run, tmp_path, capsys):
    book = tmp_path / "book.txt"
    book.write_text("word " * 200)
    args = ["generate", run / "run", "--context-file", book, "--chunk-size", 64, "--max-new-tokens", 2]
    assert lmzoo_cli(*args) == 0
    err = capsys.readouterr().err
    assert "state grew from" in err and "the transformer state" in err  # a transformer keeps every key
    constant = err.split("constant-size state: ")[1].split(")")[0].split(", ")
    assert "efficia-1" in constant and "transformer" not in constant


def test_no_message_names_a_missing_prepare_verb():
    offenders = [str(p) for p in SRC.rglob("*.py") if "lmzoo prepare" in p.read_text(encoding="utf-8")]
    assert not offenders


def test_wiki_dump_stopped_by_max_articles_says_what_continues_it():
    from argparse import Namespace

    from lmzoo.cli.data_commands import how_to_continue

    capped = how_to_continue(Namespace(max_articles=10, out="wiki"))
    assert "larger --max-articles or without it" in capped
    assert "rerun the same command" in how_to_continue(Namespace(max_articles=None, out="wiki"))


def test_prepare_help_says_drop_unk_drops_paragraphs(capsys):
    assert main(["data", "prepare", "--help"]) == 0
    assert "drop paragraphs" in " ".join(capsys.readouterr().out.split())


def test_threads_is_accepted_after_every_verb():
    parser = build_parser()
    for leaf in leaf_parsers(parser):
        assert "--threads" in leaf._option_string_actions, leaf.prog


@pytest.mark.parametrize("where", ["before", "after"])
def test_threads_before_or_after_the_verb_sets_torch_threads(run, where, capsys):
    threads = ["--threads", "1"]
    args = [*(threads if where == "before" else []), "generate", str(run / "run"), "--prompt", "a",
            "--max-new-tokens", "1", *(threads if where == "after" else [])]
    torch.set_num_threads(2)
    assert main(args) == 0
    assert torch.get_num_threads() == 1


def test_json_is_a_flag_and_out_a_file_for_energy_and_analyze(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("Ein kleiner Text. " * 20)
    out = tmp_path / "e.json"
    assert lmzoo_cli("energy", "transformer", "--data", text, "--seq-len", 16, "--max-tokens", 64, "--json",
                     "--out", out) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())


def test_analyze_without_data_says_it_measured_random_ids(capsys):
    assert lmzoo_cli("analyze", "spectral-llm", "--seq-len", 16, "--json") == 0
    captured = capsys.readouterr()
    assert "random token ids" in captured.err and "untrained" in captured.err
    assert "band_energy" in json.loads(captured.out)


def test_train_console_shows_summary_eval_lines_and_warns_on_long_warmup(tmp_path, run, capsys):
    assert lmzoo_cli("train", *TINY, "--data", run / "data", "--out", tmp_path / "r", "--max-steps", 2,
                     "--seq-len", 16, "--batch-size", 2, "--eval-interval", 2, "--eval-batches", 1,
                     "--warmup-steps", 30) == 0
    captured = capsys.readouterr()
    assert "parameters | 32 tokens/step x 2 steps = 64 tokens | device cpu" in captured.err
    assert "--warmup-steps 30 >= the run's 2 steps" in captured.err
    assert "step 2/2 | val loss" in captured.out


def test_console_train_line_shows_model_stats_in_brief():
    from lmzoo.training.metrics import format_row

    stats = {"spike_rate": 0.25, "spike_rate/layer0": 0.2, "spike_rate/layer1": 0.3,
             "spike_rate/layer0/q": 0.9, "gate_temperature": 0.5}
    row = {"type": "train", "step": 3, "loss": 1.0, "lr": 1e-3, "tok_s": 10.0, "grad_norm": 1.0,
           "skipped_steps": 0, **stats}
    line = format_row(row, 10, tuple(stats))
    assert line.endswith("| spike_rate 0.25 (0.2 0.3) | gate_temperature 0.5")


def test_chat_keeps_the_conversation_in_the_chat_template(run, monkeypatch, capsys):
    import lmzoo.generation

    prompts = []

    def fake_generate_text(model, tok, prompt, **options):
        prompts.append(prompt)
        assert "\nUser:" in options["stop_strings"]
        return [f" reply {len(prompts)}\nUser: ignored"]

    monkeypatch.setattr(lmzoo.generation, "generate_text", fake_generate_text)
    monkeypatch.setattr("sys.stdin", io.StringIO("Hi\nAnd now?\n/reset\nAgain\n"))
    assert lmzoo_cli("chat", run / "run", "--system", "Be brief.") == 0
    assert prompts == ["System: Be brief.\nUser: Hi\nAssistant:",
                       "System: Be brief.\nUser: Hi\nAssistant: reply 1\nUser: And now?\nAssistant:",
                       "System: Be brief.\nUser: Again\nAssistant:"]


def test_progress_prints_lines_when_not_on_a_terminal():
    from lmzoo.cli.progress import Progress

    out = io.StringIO()
    with Progress("eval", "tokens", interval=0.0, file=out) as progress:
        progress.update(10)
        progress.update(25)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("lmzoo: eval: 10 tokens (") and lines[1].startswith("lmzoo: eval: 25 tokens (")


# ---- what practitioners expect -----------------------------------------------------------------
def scripted_val_losses(monkeypatch, losses):
    """Evaluations return these val losses in turn (the run itself trains for real)."""
    from lmzoo.training.tasks import Pretraining

    queue = list(losses)
    monkeypatch.setattr(Pretraining, "evaluate", lambda self, *a: {"val_loss": queue.pop(0)})


def test_keep_best_early_stop_and_run_at_best(run, tmp_path, monkeypatch, capsys):
    scripted_val_losses(monkeypatch, [3.0, 2.0, 2.5, 2.6, 1.0])
    out = tmp_path / "r"
    args = [*TINY, "--data", run / "data", "--out", out, "--max-steps", 10, "--seq-len", 16, "--batch-size", 2,
            "--eval-interval", 2, "--checkpoint-interval", 3, "--keep-last", 1, "--warmup-steps", 1]
    assert lmzoo_cli("train", *args, "--keep-best", "--early-stop-patience", 2) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["status"] == "early-stopped" and summary["step"] == 8 and summary["best_val_loss"] == 2.0
    steps = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert steps == ["step-0000004", "step-0000008"]  # the best (saved at its evaluation) survives pruning
    from lmzoo.training.checkpointing import resolve_model_dir
    assert resolve_model_dir(f"{out}@best").name == "step-0000004"
    assert lmzoo_cli("train", *args, "--keep-best", "--early-stop-patience", 2) == 0  # stays stopped
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["step"] == 8

    assert lmzoo_cli("info", out) == 0
    text = capsys.readouterr().out
    assert "step-0000004" in text and "<- best" in text and "2.0000" in text
    assert lmzoo_cli("info", f"{out}@best", "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["checkpoint"]["step"] == 4 and info["checkpoint"]["val_loss"] == 2.0
    assert info["tokenizer"] == {"kind": "bytes", "vocab_size": 259}


def test_run_at_best_needs_a_recorded_val_loss(run, capsys):
    assert lmzoo_cli("info", f"{run / 'data'}@best") == 2
    assert "not a training run" in capsys.readouterr().err
    assert lmzoo_cli("info", "no-such-thing") == 2
    assert "unknown architecture 'no-such-thing'" in capsys.readouterr().err


def test_init_from_starts_a_fresh_run_from_saved_weights(run, tmp_path, capsys):
    from lmzoo.training.checkpointing import resolve_model_dir

    source = lmzoo.load(run / "run")
    args = ["--data", run / "data", "--max-steps", 1, "--seq-len", 16, "--batch-size", 2, "--eval-interval", 0,
            "--warmup-steps", 0, "--lr", 1e-9, "--weight-decay", 0]
    assert lmzoo_cli("train", *TINY, "--out", tmp_path / "a", "--init-from", run / "run", *args) == 0
    started = lmzoo.load(tmp_path / "a")
    state = json.loads((resolve_model_dir(tmp_path / "a") / "trainer_state.json").read_text())
    assert state["step"] == 1  # a fresh schedule and step count
    for (name, a), b in zip(source.state_dict().items(), started.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name  # lr 1e-9: the weights it started from
    assert lmzoo_cli("train", "--arch", "transformer", "--size", "nano", "--out", tmp_path / "b",
                     "--init-from", run / "run", *args) == 2
    assert "config differs from this run's in d_model (32 there, 128 here)" in capsys.readouterr().err
