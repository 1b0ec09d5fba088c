"""`lmzoo arena`: a tiny arena end to end (outputs, ranking, resume) and its refusals."""
import json

import pytest
import torch

import lmzoo.arena.runner as runner
from lmzoo.arena import ArenaSettings, make_profile
from lmzoo.arena.entries import DEADLINE, Deadline
from lmzoo.arena.probes import fitted_exponent
from lmzoo.arena.report import spread
from lmzoo.cli.main import main
from lmzoo.errors import LmzooError

pytest.importorskip("matplotlib")  # the dev extra installs it; the arena writes its PNGs with it

TEXT = "".join(f"Line {i}: the quick brown fox jumps over the lazy dog {i * 7 % 13} times.\n"
               for i in range(400))
TINY = ["--budget-tokens", "128", "--seeds", "2", "--lrs", "0.001", "0.01", "--sweep-steps", "1", "--seq-len", "16",
        "--batch-size", "2", "--evals", "2", "--eval-batches", "1", "--contexts", "300", "--decode-tokens", "1",
        "--lengths", "16", "32", "--device", "cpu"]
ARCHS = ["transformer", "complexity"]


@pytest.fixture(scope="module")
def arena(tmp_path_factory):
    root = tmp_path_factory.mktemp("arena")
    (root / "train.txt").write_text(TEXT)
    (root / "test.txt").write_text(TEXT[::-1])
    # One thread: tiny models on a shared 2-core machine spend a second thread spin-waiting.
    argv = ["--threads", "1", "arena", "--data", str(root / "train.txt"), "--test", str(root / "test.txt"),
            "--archs", *ARCHS, *TINY, "--out", str(root / "out")]
    threads = torch.get_num_threads()
    assert main(argv) == 0
    yield root, argv
    torch.set_num_threads(threads)


def test_the_arena_writes_its_record_tables_and_plots(arena):
    root, _ = arena
    out = root / "out"
    state = json.loads((out / "arena.json").read_text())
    keys = {f"{kind}/{arch}/{x}" for arch in ARCHS for kind, x in
            [("sweep", "lr0.001"), ("sweep", "lr0.01"), ("final", "seed0"), ("final", "seed1")]}
    assert set(state["entries"]) == keys | {f"probe/{arch}" for arch in ARCHS}
    for arch in ARCHS:
        final = state["entries"][f"final/{arch}/seed0"]
        assert final["summary"]["step"] == final["planned_steps"] == 4  # 128 tokens / (2 x 16)
        assert final["test"]["bpb"] > 0 and final["val"]["bpb"] > 0
        probe = state["entries"][f"probe/{arch}"]["probe"]
        assert [p["length"] for p in probe["seq_sweep"]["points"]] == [16, 32]
        assert probe["decode"][0]["context"] == 300 and probe["decode"][0]["decode_tok_s"] > 0
        assert probe["flops_per_token"]["train"] > 0 and probe["train_memory"]["peak_mb"] > 0
    evals = [json.loads(line) for line in (out / "runs/transformer-seed1/metrics.jsonl").read_text().splitlines()]
    evals = [r for r in evals if r["type"] == "eval"]
    assert [r["tokens"] for r in evals] == [64, 128]  # eval rows carry training tokens and seconds
    assert 0 < evals[0]["train_seconds"] < evals[1]["train_seconds"]
    assert {p.name for p in (out / "plots").iterdir()} == {"bpb_vs_time.png", "bpb_vs_tokens.png",
                                                           "seq_time.png", "seq_memory.png"}
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in (out / "plots").iterdir())
    assert not (out / "runs/sweep/transformer-lr0.001/checkpoints").exists()  # sweep weights are dropped


def test_the_verdict_ranks_by_mean_val_bpb_and_shows_the_spread(arena):
    root, _ = arena
    state = json.loads((root / "out/arena.json").read_text())
    means = [row["val_bpb"]["mean"] for row in state["verdict"]]
    assert means == sorted(means) and {row["arch"] for row in state["verdict"]} == set(ARCHS)
    for row in state["verdict"]:
        seeds = [state["entries"][f"final/{row['arch']}/seed{s}"]["val"]["bpb"] for s in (0, 1)]
        assert row["val_bpb"] == spread(seeds) and row["val_bpb"]["std"] is not None
        sweep = {lr: state["entries"][f"sweep/{row['arch']}/lr{lr:g}"]["val"]["loss"] for lr in (0.001, 0.01)}
        assert row["lr"] == min(sweep, key=sweep.get)  # the rate with the lowest sweep val loss
    table = (root / "out/results.md").read_text()
    first = state["verdict"][0]
    assert f"| 1 | {first['arch']} | {first['lr']:g} | {first['val_bpb']['mean']:.3f} ± " in table
    # The data is named relative to results.md's folder: the report holds no path of this machine.
    assert "Data: train/val `../train.txt` " in table and "test `../test.txt`" in table
    assert str(root) not in table


def test_a_rerun_skips_finished_entries_and_trains_only_what_is_missing(arena, monkeypatch):
    root, argv = arena
    path = root / "out/arena.json"
    state = json.loads(path.read_text())
    before = state["entries"].pop("final/complexity/seed1")  # as if killed before this entry was recorded
    path.write_text(json.dumps(state))
    trained = []
    real = runner.train_entry
    monkeypatch.setattr(runner, "train_entry", lambda cfg, *a: trained.append(cfg.out) or real(cfg, *a))
    monkeypatch.setattr(runner, "run_probes", lambda request: pytest.fail("a finished probe ran again"))
    assert main(argv) == 0
    assert trained == [str(root / "out/runs/complexity-seed1")]
    again = json.loads(path.read_text())["entries"]["final/complexity/seed1"]
    assert again["summary"]["step"] == 4  # resumed from its final checkpoint: no step re-trained
    assert again["val"]["bpb"] == pytest.approx(before["val"]["bpb"], rel=1e-6)  # the same weights
    wall = json.loads(path.read_text())["wall_seconds"]
    assert wall > state["wall_seconds"] > 0  # the invocation that trained an entry counts
    assert main(argv) == 0
    assert json.loads(path.read_text())["wall_seconds"] == wall  # one that only re-renders does not


def test_other_settings_or_a_foreign_out_are_refused(arena, tmp_path, capsys):
    root, argv = arena
    changed = [*argv[:-1], str(root / "out")]
    changed[changed.index("--seeds") + 1] = "3"
    assert main(changed) == 2
    assert "other settings (differs in seeds)" in capsys.readouterr().err
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    assert main([*argv[:-1], str(foreign)]) == 2
    assert "holds no arena.json" in capsys.readouterr().err
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("budget,message", [(["--budget-tokens", "0"], "--budget-tokens must be a positive"),
                                            (["--budget-tokens", "nan"], "--budget-tokens must be a positive"),
                                            (["--budget-tokens", "10"], "less than one step"),
                                            (["--budget-seconds", "0.5"], "--budget-seconds must be >= 1"),
                                            (["--budget-seconds", "inf"], "--budget-seconds must be a positive"),
                                            (["--budget-seconds", "5", "--budget-tokens", "9"], "not allowed with"),
                                            ([], "one of the arguments --budget-tokens --budget-seconds")])
def test_bad_budgets_are_one_line_errors(budget, message, tmp_path, capsys):
    (tmp_path / "t.txt").write_text(TEXT)
    argv = ["arena", "--data", str(tmp_path / "t.txt"), "--out", str(tmp_path / "out"), "--seq-len", "16",
            "--batch-size", "2", *budget]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


class FakeClock:
    def __init__(self):
        self.seconds = 0.0

    def train_seconds(self):
        return self.seconds


def test_the_deadline_stops_once_training_time_passes_the_guard():
    clock = FakeClock()
    stop = Deadline(clock, seconds=10.0)
    clock.seconds = 9.9
    assert not stop.requested
    clock.seconds = 10.1
    assert stop.requested and stop.signal_name == DEADLINE
    assert not Deadline(clock, seconds=None).requested


def test_a_seconds_budget_becomes_steps_from_the_sweep_step_time():
    settings = ArenaSettings(data="x", test=None, budget_kind="seconds", budget=30.0, archs=("transformer",),
                             seeds=2, device="cpu", profile=make_profile("quick", lrs=[1e-3, 2e-3, 4e-3]))
    entries = {f"sweep/transformer/lr{lr:g}": {"lr": lr, "val": {"loss": loss},
                                               "summary": {"train_seconds": seconds, "step": 12}}
               for lr, loss, seconds in ((1e-3, 3.0, 1.2), (2e-3, 2.5, 2.4), (4e-3, float("nan"), 6.0))}
    lr, steps, deadline, step_seconds = runner._final_plan(settings, "transformer", entries)
    # the median s/step of the rates, with headroom: the clock, not the step count, ends the run
    assert (lr, steps) == (2e-3, int(150 * runner.STEP_HEADROOM)) and step_seconds == pytest.approx(0.2)
    assert deadline == pytest.approx(30.0)
    for entry, steady in zip(entries.values(), (0.05, 0.1, 0.2)):  # measured past the warm-up: preferred
        entry["steady_step_seconds"] = steady
    assert runner._final_plan(settings, "transformer", entries)[1:4:2] == (int(300 * runner.STEP_HEADROOM),
                                                                          pytest.approx(0.1))


def test_a_seconds_budget_schedule_follows_the_clock(tmp_path, monkeypatch):
    """Progress is max(step share, time share): a slow run still decays by its deadline."""
    from lmzoo.arena.entries import ClockedPretraining
    from lmzoo.training.config import TrainConfig
    cfg = TrainConfig(arch="transformer", data=str(tmp_path), out=str(tmp_path / "run"), max_steps=100)
    task = ClockedPretraining(cfg, budget_seconds=10.0)
    seconds = {"now": 0.0}
    monkeypatch.setattr(task, "train_seconds", lambda: seconds["now"])
    assert task.schedule_step(20) == 20             # on plan: the step share leads
    seconds["now"] = 5.0
    assert task.schedule_step(20) == pytest.approx(50)  # slower than planned: half the time is half the schedule
    seconds["now"] = 10.0
    assert task.schedule_step(60) == pytest.approx(100)  # time is up: the schedule is at its end
    assert ClockedPretraining(cfg).schedule_step(20) == 20  # no budget: steps only


def test_the_steady_step_time_leaves_out_the_first_logged_interval(tmp_path):
    rows = [{"type": "start", "step": 0}, *({"type": "train", "step": 3 * i, "tok_s": tok_s}
                                             for i, tok_s in enumerate((1000.0, 4000.0, 5000.0, 6000.0), 1))]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert runner.steady_step_seconds(tmp_path, tokens_per_step=1000) == pytest.approx(1000 / 5000)
    (tmp_path / "metrics.jsonl").write_text(json.dumps(rows[1]) + "\n")
    assert runner.steady_step_seconds(tmp_path, tokens_per_step=1000) is None


def test_fitted_exponent_and_spread():
    assert fitted_exponent([128, 256, 512], [1.0, 4.0, 16.0]) == pytest.approx(2.0)
    assert fitted_exponent([128], [1.0]) is None
    assert spread([1.0]) == {"mean": 1.0, "std": None, "min": 1.0, "max": 1.0, "n": 1}


def test_bad_profile_values_are_refused():
    with pytest.raises(LmzooError, match="--lrs must be positive"):
        make_profile("quick", lrs=[0.0])
    with pytest.raises(LmzooError, match="--contexts"):
        make_profile("quick", contexts=[0])


@pytest.mark.slow  # two sweeps and two timed runs per architecture: ~30 s on 2 cores
def test_a_seconds_budget_run_stops_on_time(tmp_path):
    (tmp_path / "train.txt").write_text(TEXT)
    argv = ["--threads", "1", "arena", "--data", str(tmp_path / "train.txt"), "--archs", *ARCHS,
            *TINY[2:], "--budget-seconds", "2", "--out", str(tmp_path / "out")]
    threads = torch.get_num_threads()
    try:
        assert main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    state = json.loads((tmp_path / "out/arena.json").read_text())
    for arch in ARCHS:
        for seed in (0, 1):
            entry = state["entries"][f"final/{arch}/seed{seed}"]
            assert entry["planned_steps"] == max(1, int(2 / entry["step_seconds_estimate"] * runner.STEP_HEADROOM))
            assert entry["deadline_s"] == pytest.approx(2) and entry["schedule"] == "clock"
            summary = entry["summary"]
            # on time: the budget plus the one step that was running when the clock ran out
            assert summary["train_seconds"] <= entry["deadline_s"] + 5 * entry["step_seconds_estimate"] + 1
            assert summary["stopped_by_deadline"] == (summary["step"] < entry["planned_steps"])
            lrs = [json.loads(line).get("lr") for line in
                   (tmp_path / "out" / entry["run_dir"] / "metrics.jsonl").read_text().splitlines()]
            lrs = [lr for lr in lrs if lr is not None]
            assert lrs[-1] < 0.5 * max(lrs)  # the schedule decayed by the end, whichever share led
    assert "per run" in (tmp_path / "out/results.md").read_text()


def test_a_damaged_entry_in_arena_json_is_a_one_line_error(arena, tmp_path, capsys):
    root, argv = arena
    copy = tmp_path / "out"
    state = json.loads((root / "out/arena.json").read_text())
    state["entries"]["final/transformer/seed0"]["run_dir"] = "../../elsewhere"
    copy.mkdir()
    (copy / "arena.json").write_text(json.dumps(state))
    assert main([*argv[:-1], str(copy)]) == 2
    assert "entry 'final/transformer/seed0' of" in capsys.readouterr().err
