"""Curriculum learning: difficulty scorers, schedules, the sampler, resume, flags and the CLI."""
import argparse
import json
import math
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from tqdm import tqdm

from lmzoo import create_model
from lmzoo.cli.main import main as lmzoo_main
from lmzoo.data import TokenDataset, prepare_dataset
from lmzoo.training.difficulty import (
    compression_ratio,
    mean_sentence_words,
    reference_losses,
    select_windows,
    sentence_stage,
    stage_of_text,
    stages_from_scores,
    window_text,
    window_tokens,
)
from lmzoo.errors import LmzooError
from lmzoo.modeling import causal_lm_loss
from lmzoo.training import (
    TrainConfig,
    add_train_arguments,
    config_from_args,
    evaluate,
    run_training,
)
from lmzoo.training.curriculum import (
    PHASE_WEIGHTS,
    CompetenceCurriculum,
    Shuffled,
    StageCurriculum,
    WindowPool,
    competence,
)
from lmzoo.training.metrics import format_row

SEQ = 256
WORDS = ["der", "die", "das", "und", "ist", "ein", "hat", "mit", "auf", "sie", "er", "es", "wir", "vom", "zum"]


def sentence(n: int, comma: bool = False, rng=None) -> str:
    rng = rng or random.Random(n)
    words = [rng.choice(WORDS) for _ in range(n)]
    words[0] = words[0].capitalize()
    if comma:
        words[n // 2] += ","
    return " ".join(words) + "."


@pytest.fixture(scope="module")
def stage_data(tmp_path_factory):
    """Documents of 12 sentences each of about 5, 16, 30 or 50 short words: all four stages."""
    rng = random.Random(0)
    docs = [" ".join(sentence(n + rng.randint(-3, 3) if n < 50 else n, rng=rng) for _ in range(12))
            for n in [5, 16, 30, 50] * 15]
    path = tmp_path_factory.mktemp("stages")
    prepare_dataset(lambda: docs, path, val_fraction=0.2)
    return path


def tiny(data, out, **overrides) -> TrainConfig:
    base = {"arch": "transformer", "size": "nano", "model_args": {"d_model": 32, "n_layers": 2}, "data": str(data),
            "out": str(out), "seq_len": SEQ, "batch_size": 4, "max_steps": 8, "warmup_steps": 2, "log_interval": 1,
            "eval_interval": 2, "eval_batches": 1, "checkpoint_interval": 0, "threads": 1, "curriculum": "stages"}
    return TrainConfig(**{**base, **overrides})


def rows(out, kind="train"):
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["type"] == kind]


# ---- scorers ----------------------------------------------------------------------------------
@pytest.mark.parametrize("words,comma,stage", [(1, False, 0), (11, False, 0), (12, False, 1), (24, False, 1),
                                               (25, False, 2), (44, False, 2), (45, False, 3), (45, True, 2),
                                               (80, False, 3), (80, True, 2)])
def test_seed_stage_boundaries(words, comma, stage):
    assert sentence_stage(words, comma) == stage
    assert stage_of_text(sentence(words, comma)) == stage  # a one-sentence text, through the splitter


def test_window_stage_is_the_upper_median_of_inner_sentences():
    # The edge sentences (cut by a window) are ignored when others remain: two B's decide.
    text = " ".join([sentence(60), sentence(15), sentence(20), sentence(3)])
    assert stage_of_text(text) == 1
    # Inner stages A, B: the upper median leans to the harder one; A, A, B gives A.
    assert stage_of_text(" ".join([sentence(3), sentence(5), sentence(15), sentence(3)])) == 1
    assert stage_of_text(" ".join([sentence(3), sentence(5), sentence(6), sentence(15), sentence(3)])) == 0
    assert stage_of_text("") == 0
    assert mean_sentence_words(" ".join([sentence(3), sentence(10), sentence(20), sentence(3)])) == 15


def test_compression_ranks_repetitive_text_easier():
    rng = random.Random(0)
    repetitive = "Der Hund bellt. " * 40
    shuffled = "".join(rng.choice("abcdefghijklmnopqrstuvwxyzäöü .,") for _ in range(len(repetitive)))
    assert compression_ratio(repetitive) < 0.2 < compression_ratio(shuffled)


def test_windows_text_and_quartile_stages(stage_data):
    train = TokenDataset(stage_data, "train")
    ids = np.array([*train.tokenizer.encode("Ende eins."), train.eos_id, *train.tokenizer.encode("Zwei")])
    assert window_text(ids, train.tokenizer) == "Ende eins.\n\nZwei"  # documents stay apart
    tokens = window_tokens(train, np.array([2, 0]), SEQ)
    assert np.array_equal(tokens[0], train.data[2 * SEQ:3 * SEQ]) and tokens.shape == (2, SEQ)
    scores = np.array([0.1, 0.5, 0.2, 0.9, 0.7, 0.3, 0.6, 0.8])
    assert stages_from_scores(scores, "length").tolist() == [0, 1, 0, 3, 2, 1, 2, 3]
    subset = select_windows(1000, 10, seed=1)
    assert len(set(subset)) == 10 and list(subset) == sorted(subset) and len(select_windows(5, 10, 1)) == 5


def test_reference_loss_matches_the_models_own_loss(stage_data, tmp_path):
    train = TokenDataset(stage_data, "train")
    torch.manual_seed(0)
    model = create_model("transformer", "nano", vocab_size=train.vocab_size, d_model=32, n_layers=2)
    model.save_pretrained(tmp_path / "ref", tokenizer=train.tokenizer)
    windows = np.array([0, 3, 5, 7, 11])
    got = reference_losses(model, train, windows, SEQ, batch_size=2, device=torch.device("cpu"))
    with torch.no_grad():
        ids = torch.from_numpy(window_tokens(train, windows, SEQ).astype(np.int64))
        want = [float(causal_lm_loss(model(row[None]).logits, row[None])) for row in ids]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # Through the trainer: scores from the saved model, a competence run on them.
    summary = run_training(tiny(stage_data, tmp_path / "run", curriculum="competence", max_steps=2,
                                curriculum_scorer="reference-loss", curriculum_reference=str(tmp_path / "ref")))
    assert summary["status"] == "completed" and 0 < summary["competence"] <= 1


# ---- schedules and the sampler -----------------------------------------------------------------
def test_competence_function():
    c0 = 0.01
    assert competence(0, 100, c0) == pytest.approx(c0)
    assert competence(50, 100, c0) == pytest.approx(math.sqrt(0.5 * (1 - c0 ** 2) + c0 ** 2))
    assert competence(100, 100, c0) == 1.0 and competence(250, 100, c0) == 1.0
    assert competence(25, 100, 0.2, "linear") == pytest.approx(0.4)
    values = [competence(t, 100, c0) for t in range(101)]
    assert values == sorted(values)


def pool(counts=(300, 300, 300, 300)) -> WindowPool:
    stages = np.repeat(np.arange(4), counts)
    return WindowPool(np.arange(len(stages)) * 7, stages.astype(float), stages)


@pytest.mark.parametrize("phase", range(4))
def test_stage_sampler_follows_the_phase_weights(phase):
    p = pool()
    drawn = p.from_stages(np.random.default_rng(phase), 40_000, PHASE_WEIGHTS[phase])
    stage_of = dict(zip(p.windows.tolist(), p.stages.tolist()))
    share = np.bincount([stage_of[w] for w in drawn.tolist()], minlength=4) / len(drawn)
    np.testing.assert_allclose(share, PHASE_WEIGHTS[phase], atol=0.01)
    assert share[phase + 1:].sum() == 0  # nothing from a locked stage


def test_empty_stages_pass_their_weight_on():
    p = pool((0, 100, 100, 0))
    assert p.stage_weights(PHASE_WEIGHTS[0]).tolist() == [0, 1, 0, 0]  # only A allowed, A empty: easiest
    np.testing.assert_allclose(p.stage_weights(PHASE_WEIGHTS[3]), [0, 0.5, 0.5, 0])


def test_competence_sampler_draws_from_the_easiest_share():
    scores = np.random.default_rng(0).random(1000)
    p = WindowPool(np.arange(1000), scores, np.zeros(1000, dtype=int))
    easiest = set(np.argsort(scores)[:100].tolist())
    drawn = p.easiest(np.random.default_rng(1), 5000, 0.1)
    assert set(drawn.tolist()) == easiest  # all of them, and nothing else
    assert len(set(p.easiest(np.random.default_rng(1), 5000, 1.0).tolist())) > 900


def test_unlock_by_metric_and_by_patience():
    cur = StageCurriculum(None, pool(), thresholds=(0.5, 0.6, 0.7), metric="accuracy", patience=0)
    cur.after_eval(10, {"accuracy": 0.4})
    assert cur.phase == 0
    cur.after_eval(20, {"accuracy": 0.9})  # passes B's and C's thresholds: one phase per evaluation
    assert (cur.phase, cur.phase_step) == (1, 20)
    cur.after_eval(30, {"accuracy": 0.9})
    assert cur.phase == 2 and cur.pop_events()[-1]["event"].startswith("stage C unlocked (val accuracy 0.9000 >= 0.6")
    bpb = StageCurriculum(None, pool(), thresholds=(2.0, 1.5, 1.0), metric="bpb", patience=5)
    bpb.after_eval(1, {"bpb": 2.5})
    bpb.before_step(4)
    assert bpb.phase == 0
    bpb.before_step(5)  # 5 steps in phase 0
    assert (bpb.phase, bpb.phase_step) == (1, 5)
    bpb.after_eval(6, {"bpb": 1.4})
    assert bpb.phase == 2 and "patience" in bpb.pop_events()[0]["event"]
    for step in range(7, 100):
        bpb.before_step(step)
    assert bpb.phase == 3  # and no further
    restored = StageCurriculum(None, pool())
    restored.load_state_dict(bpb.state_dict(), 50)
    assert (restored.phase, restored.phase_step) == (3, 11)


def test_batches_are_a_pure_function_of_seed_step_and_state(stage_data):
    train = TokenDataset(stage_data, "train")
    n = train.tokens // SEQ
    scores = np.random.default_rng(0).random(n)
    cur = StageCurriculum(train, WindowPool(np.arange(n), scores, stages_from_scores(scores, "length")))
    cur.phase = 3
    a = cur.get_batch(7, 8, SEQ, seed=1)
    assert torch.equal(a, cur.get_batch(7, 8, SEQ, seed=1)) and not torch.equal(a, cur.get_batch(8, 8, SEQ, seed=1))
    halves = [cur.get_batch(7, 4, SEQ, seed=1, rank=r, world_size=2) for r in range(2)]
    assert torch.equal(torch.cat(halves), a)  # ranks slice the single-process batch
    cur.phase = 0
    assert not torch.equal(a, cur.get_batch(7, 8, SEQ, seed=1))  # the state matters
    comp = CompetenceCurriculum(train, cur.pool, start=0.05, steps=10)
    assert torch.equal(comp.get_batch(3, 8, SEQ, seed=1), comp.get_batch(3, 8, SEQ, seed=1))
    # Without a curriculum: exactly the dataset's own batches.
    assert torch.equal(Shuffled(train).get_batch(5, 4, 32, seed=2), train.get_batch(5, 4, 32, seed=2))


# ---- training with a curriculum ----------------------------------------------------------------
def test_resumed_curriculum_run_matches_an_uninterrupted_one(stage_data, tmp_path):
    # B unlocks at the step-2 evaluation (threshold 0), C by patience at step 5, after the
    # checkpoint at step 4: the resumed run must know the phase and when it was entered.
    common = {"curriculum_thresholds": (0.0, 1.0, 1.0), "curriculum_patience": 3, "checkpoint_interval": 4,
              "keep_last": 0}
    full = tmp_path / "full"
    summary = run_training(tiny(stage_data, full, **common))
    assert summary["curriculum_phase"] == 2
    events = rows(full, "curriculum")
    assert [(e["step"], e["curriculum_stages"]) for e in events] == [(2, "A+B"), (5, "A+B+C")]
    cut = tmp_path / "cut"
    shutil.copytree(full, cut)
    shutil.rmtree(cut / "checkpoints" / "step-0000008")
    (cut / "metrics.jsonl").unlink()
    resumed = run_training(tiny(stage_data, cut, **common))
    assert resumed["curriculum_phase"] == 2
    want = {r["step"]: (r["loss"], r["curriculum_stages"]) for r in rows(full)}
    got = {r["step"]: (r["loss"], r["curriculum_stages"]) for r in rows(cut)}
    assert sorted(got) == [5, 6, 7, 8] and all(got[s] == want[s] for s in got)


def test_two_processes_follow_the_single_process_curriculum(stage_data, tmp_path):
    # Rank 0 scores and writes the cache, rank 1 reads it after a barrier; both unlock together.
    args = ["--data", stage_data, "--model-arg", "d_model=32", "--model-arg", "n_layers=2", "--seq-len", SEQ,
            "--max-steps", 4, "--warmup-steps", 2, "--log-interval", 1, "--eval-interval", 2, "--eval-batches", 2,
            "--threads", 1, "--checkpoint-interval", 0, "--curriculum", "stages", "--curriculum-thresholds", 0, 0, 0]
    launchers = {1: ["-m", "lmzoo.training", "--batch-size", 4],
                 2: ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", 2, "-m", "lmzoo.training",
                     "--batch-size", 2]}
    for n, launcher in launchers.items():
        command = [sys.executable, *launcher, "--out", tmp_path / str(n), *args]
        result = subprocess.run([str(a) for a in command], check=False, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]
    one, two = rows(tmp_path / "1"), rows(tmp_path / "2")
    assert [r["curriculum_stages"] for r in two] == [r["curriculum_stages"] for r in one] == ["A", "A", "A+B", "A+B"]
    assert [r["loss"] for r in two] == pytest.approx([r["loss"] for r in one], abs=1e-5)


def test_progress_bar_rows_and_log_lines_show_the_curriculum(stage_data, tmp_path, monkeypatch, capsys):
    postfixes = []
    monkeypatch.setattr(tqdm, "set_postfix", lambda self, *a, **kw: postfixes.append(kw))
    run_training(tiny(stage_data, tmp_path / "c", curriculum="competence", competence_start=0.1, max_steps=4))
    train = rows(tmp_path / "c")
    assert [r["competence"] for r in train] == [pytest.approx(competence(t, 4, 0.1)) for t in range(4)]
    assert [p["competence"] for p in postfixes] == [f"{r['competence']:.3f}" for r in train]
    assert "| competence 0.100" in format_row(train[0], 4)
    run_training(tiny(stage_data, tmp_path / "s", max_steps=2, eval_interval=0))
    assert postfixes[-1]["stages"] == "A" and rows(tmp_path / "s")[-1]["curriculum_phase"] == 0
    assert "| stages A" in format_row(rows(tmp_path / "s")[-1], 2)
    evals = rows(tmp_path / "s", "eval")
    assert 0 <= evals[-1]["val_accuracy"] <= 1 and "val acc" in format_row(evals[-1], 2)
    err = capsys.readouterr().err
    assert "curriculum: stages over" in err and "never leaves stage A" in err


def test_scores_are_cached_and_not_recomputed_on_resume(stage_data, tmp_path, monkeypatch, capsys):
    run_training(tiny(stage_data, tmp_path, max_steps=2, checkpoint_interval=2))
    assert "curriculum: scoring" in capsys.readouterr().err
    assert len(list((tmp_path / "curriculum").glob("scores-stages-*.npz"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("rescored")
    monkeypatch.setattr("lmzoo.training.curriculum.text_scores", fail)
    run_training(tiny(stage_data, tmp_path, max_steps=4, checkpoint_interval=2))  # resumes at step 2
    assert "window scores read from" in capsys.readouterr().err


def test_evaluate_reports_next_token_accuracy(stage_data):
    val = TokenDataset(stage_data, "val")
    torch.manual_seed(0)
    model = create_model("transformer", "nano", vocab_size=val.vocab_size, d_model=32, n_layers=2)
    result = evaluate(model, val, batch_size=2, seq_len=64, max_batches=2)
    with torch.no_grad():
        batches = list(val.iter_eval_batches(2, 64, 2))
        correct = sum(int((model(b).logits[:, :-1].argmax(-1) == b[:, 1:]).sum()) for b in batches)
    assert result["accuracy"] == pytest.approx(correct / result["tokens"])


# ---- flags and errors --------------------------------------------------------------------------
@pytest.mark.parametrize("bad,needle", [
    ({"curriculum": "stages", "curriculum_scorer": "reference-loss"}, "needs --curriculum-reference"),
    ({"curriculum_thresholds": [0.5, 0.4]}, "must be 3 numbers"),
    ({"curriculum_thresholds": [0.5, "x", 0.3]}, "must be 3 numbers"),
    ({"curriculum_thresholds": [0.5, 1.4, 0.3]}, "out of range"),
    ({"curriculum": "stages", "curriculum_metric": "bpb"}, "needs --curriculum-thresholds"),
    ({"curriculum": "sorted"}, "unknown curriculum 'sorted'"),
    ({"curriculum_scorer": "vibes"}, "unknown curriculum_scorer"),
    ({"competence_start": 0.0}, "competence_start"),
    ({"competence_steps": 0}, "competence_steps"),
    ({"curriculum_patience": -1}, "curriculum_patience"),
])
def test_bad_curriculum_settings_are_one_line_errors(bad, needle):
    with pytest.raises(LmzooError, match=needle) as info:
        TrainConfig(**bad)
    assert "\n" not in str(info.value)


def test_flags_and_recipe_keys(tmp_path):
    parser = add_train_arguments(argparse.ArgumentParser())
    cfg = config_from_args(parser.parse_args(["--curriculum", "stages", "--curriculum-thresholds", "0.4", "0.5",
                                              "0.6", "--curriculum-metric", "accuracy", "--curriculum-patience",
                                              "100", "--curriculum-lang", "en"]))
    assert cfg.curriculum_thresholds == (0.4, 0.5, 0.6) and cfg.curriculum_patience == 100
    recipe = tmp_path / "r.yaml"
    recipe.write_text("curriculum: competence\ncompetence_shape: linear\ncompetence_start: 0.1\n")
    cfg = config_from_args(parser.parse_args(["--config", str(recipe), "--competence-steps", "50"]))
    assert (cfg.curriculum, cfg.competence_shape, cfg.competence_start, cfg.competence_steps) == (
        "competence", "linear", 0.1, 50)
    assert json.loads(json.dumps(cfg.to_dict()))["curriculum_thresholds"] == []


def test_runtime_problems_are_clear(data_dir, stage_data, tmp_path, capsys):
    with pytest.raises(LmzooError, match="holds no saved lmzoo model"):
        run_training(tiny(stage_data, tmp_path / "a", curriculum_scorer="reference-loss",
                          curriculum_reference=str(tmp_path / "nowhere")))
    # Random lowercase words without punctuation: every window is one short piece, stage A.
    run_training(tiny(data_dir, tmp_path / "b", seq_len=32, max_steps=1))
    assert "fall in stage A, so the stages cannot change the data mix" in capsys.readouterr().err


def test_cli_trains_with_a_curriculum(stage_data, tmp_path, capsys):
    out = tmp_path / "run"
    code = lmzoo_main(["train", "--data", str(stage_data), "--out", str(out), "--model-arg", "d_model=32",
                       "--model-arg", "n_layers=2", "--seq-len", str(SEQ), "--batch-size", "4", "--max-steps", "6",
                       "--log-interval", "2", "--eval-interval", "2", "--eval-batches", "1", "--threads", "1",
                       "--curriculum", "stages", "--curriculum-thresholds", "0", "0", "0"])
    assert code == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.splitlines()[-1])
    assert summary["curriculum_stages"] == "A+B+C+D" and summary["val_accuracy"] is not None
    assert "curriculum: stage B unlocked" in captured.err
    assert [r["curriculum_stages"] for r in rows(out)] == ["A", "A+B", "A+B+C"]
