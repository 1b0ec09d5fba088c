"""`lmzoo plot`: curves of runs from metrics.jsonl, resumes resolved, outputs written safely."""
import json

import pytest

from lmzoo.cli.main import main
from lmzoo.errors import LmzooError
from lmzoo.plots import read_metrics, series, stat_names

pytest.importorskip("matplotlib")


def write_run(path, rows, tail=""):
    path.mkdir(parents=True)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)
    return path


def train(step, loss, **stats):
    return {"type": "train", "step": step, "loss": loss, "lr": 1e-3, "tok_s": 100.0, "grad_norm": 1.0, **stats}


def test_a_resume_keeps_the_rows_of_the_attempt_that_went_on(tmp_path):
    rows = [{"type": "start", "step": 0}, train(10, 3.0), train(20, 2.5), train(30, 2.4),
            {"type": "eval", "step": 20, "val_bpb": 3.3},
            # killed after step 30; resumed from the step-20 checkpoint and trained on
            {"type": "start", "step": 20}, train(30, 2.2), train(40, 2.0), {"type": "eval", "step": 40, "val_bpb": 3.0}]
    run = write_run(tmp_path / "run", rows, tail='{"type": "train", "st')  # a torn last line
    got = read_metrics(run)
    assert series(got, "train", "loss") == ([10, 20, 30, 40], [3.0, 2.5, 2.2, 2.0])
    assert series(got, "eval", "val_bpb") == ([20, 40], [3.3, 3.0])


def test_stats_prefer_the_aggregate_over_per_layer_values(tmp_path):
    a = read_metrics(write_run(tmp_path / "a", [train(1, 2.0, **{"spike_rate": 0.1, "spike_rate/layer0": 0.2})]))
    b = read_metrics(write_run(tmp_path / "b", [train(1, 2.0, **{"route/expert0": 0.5, "gate_temperature": 0.3})]))
    assert stat_names({"a": a, "b": b}) == ["gate_temperature", "route/expert0", "spike_rate"]


def test_damaged_or_empty_metrics_are_refused(tmp_path):
    with pytest.raises(LmzooError, match="is not JSON"):
        read_metrics(write_run(tmp_path / "bad", [train(1, 2.0)], tail="garbage\n" + json.dumps(train(2, 1.0)) + "\n"))
    with pytest.raises(LmzooError, match="no metrics rows"):
        read_metrics(write_run(tmp_path / "empty", [{"type": "start", "step": 0}]))
    with pytest.raises(LmzooError, match="not found"):
        read_metrics(tmp_path / "nowhere")


def test_cli_overlays_runs_and_replaces_only_its_own_output(tmp_path, capsys):
    runs = [write_run(tmp_path / name, [train(s, 3.0 - s / 10, spike_rate=s / 100) for s in (1, 2, 3)]
                      + [{"type": "eval", "step": 3, "val_bpb": 2.0}]) for name in ("x", "y")]
    out = tmp_path / "plots"
    assert main(["plot", *map(str, runs), "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert names == {"loss.png", "val_bpb.png", "tok_s.png", "stats.png", "plots.json"}
    assert all((out / n).read_bytes().startswith(b"\x89PNG") for n in names - {"plots.json"})
    assert json.loads((out / "plots.json").read_text())["runs"] == [str(r) for r in runs]
    assert main(["plot", str(runs[0]), "--out", str(out)]) == 0  # an earlier plot directory is replaced
    (out / "notes.txt").write_text("mine")
    assert main(["plot", str(runs[0]), "--out", str(out)]) == 2  # now it holds a user's file
    assert (out / "notes.txt").read_text() == "mine"
    assert "not an lmzoo plot directory" in capsys.readouterr().err
