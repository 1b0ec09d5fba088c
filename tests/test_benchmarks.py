"""Smoke tests of the benchmark scripts (benchmarks/): they run, and they write what they claim."""
import json
import sys

import pytest

from benchmark_scripts import load


@pytest.fixture(scope="module")
def throughput():
    return load("throughput")


@pytest.fixture(scope="module")
def common():
    return load("common")


TINY = {"d_model": 32, "n_layers": 2, "d_ff": 64}  # keys every architecture has


@pytest.fixture
def one_thread():
    # One thread: a 2-thread OpenMP team on a busy 2-core machine can stall for seconds.
    import torch

    before = torch.get_num_threads()
    yield 1
    torch.set_num_threads(before)


def test_throughput_core_runs_and_reports(throughput, common, tmp_path, one_thread):
    pytest.importorskip("transformers")
    settings = throughput.Settings(sizes=["nano"], overrides=TINY, threads=one_thread, seq_len=16,
                                   batch_size=2, repeats=1, warmup=0, contexts=[8, 16], new_tokens=3,
                                   recompute_tokens=2, memory=False, gemm_size=128)  # memory: see the next test
    data = throughput.run(settings, log=lambda _: None)
    data = json.loads(common.write_json("throughput", "cpu", data, results_dir=tmp_path).read_text())

    assert [r["arch"] for r in data["results"]] == settings.archs  # every registered architecture
    for result in data["results"]:
        assert result["train"]["per_s"] > 0 and result["train"]["gflops_per_s"] > 0
        for context in ("8", "16"):
            decode = result["decode"][context]
            assert decode["cached"]["per_s"] > 0 and decode["recompute"]["per_s"] > 0 and decode["speedup"] > 0
        assert result["flops_per_token"]["train"] > result["flops_per_token"]["forward"] > 0

    (cmp,) = data["hf_comparison"]
    assert cmp["parameters"]["total"] == data["results"][0]["parameters"]["total"]
    assert cmp["max_logit_diff"] < 1e-4  # the twin computes the same function
    assert cmp["train"]["ratio"] > 0 and all(cmp["decode"][c]["ratio"] > 0 for c in ("8", "16"))

    markdown = throughput.render_markdown(data)
    assert "LlamaForCausalLM" in markdown and "| `complexity` | nano |" in markdown
    assert data["command"] in markdown and data["date"] in markdown
    assert {"start", "end"} == set(data["gemm"]) and data["gemm"]["end"]["flops_per_s"] > 0
    assert "of GEMM" in markdown and "GEMM reference: a 128^3 float32 matmul" in markdown


def test_peak_memory_of_a_training_step_in_a_fresh_process(throughput, one_thread):
    settings = throughput.Settings(archs=["transformer"], overrides=TINY, threads=one_thread, seq_len=16,
                                   batch_size=2)
    memory = throughput.peak_memory("transformer", "nano", settings)
    assert memory["peak_rss_mb"] >= memory["rss_before_training_mb"] > 0
    assert memory["training_increase_mb"] >= 0


def test_cli_parses_quick(throughput):
    settings, _ = throughput.parse_args(["--archs", "transformer", "--quick", "--threads", "2"])
    assert settings.repeats == 1 and settings.archs == ["transformer"] and settings.threads == 2
    assert settings.dtype == "fp32" and settings.contexts == [128, 1024]


def test_doc_section_regeneration_keeps_the_rest(common, tmp_path):
    doc = tmp_path / "docs" / "benchmarks.md"
    common.update_doc_section("a", "first A", doc_path=doc)  # creates the doc with the intro
    assert doc.read_text().startswith(common.DOC_INTRO)
    common.update_doc_section("b", "first B", doc_path=doc)
    doc.write_text(doc.read_text() + "\nHand-written notes.\n")

    common.update_doc_section("a", "second A\n| table |", doc_path=doc)
    text = doc.read_text()
    assert "second A\n| table |" in text and "first A" not in text
    assert "first B" in text and "Hand-written notes." in text and text.startswith(common.DOC_INTRO)
    assert text.index("<!-- BEGIN a -->") < text.index("<!-- BEGIN b -->")  # order kept
    assert text.count("<!-- BEGIN a -->") == 1 and text.count("<!-- END a -->") == 1


def test_interleaved_timings_alternate_and_drop_warmup(common):
    calls = []
    runs = {name: (lambda name=name: calls.append(name) or 1.0) for name in ("x", "y")}
    timings = common.interleaved_timings(runs, warmup=1, repeats=2, others_limit=float("inf"))
    assert timings.seconds == {"x": [1.0, 1.0], "y": [1.0, 1.0]} and timings.rounds == 2
    assert calls == ["x", "y", "y", "x", "x", "y"]


def test_interleaved_timings_drop_rounds_when_the_machine_is_busy(common, monkeypatch):
    # Other processes' load per run: warm-up round, one busy round, then calm.
    loads = iter([0.0, 0.0, 0.9, 0.0] + [0.0] * 10)
    monkeypatch.setattr(common, "others_load", lambda fn: (fn(), next(loads)))
    seconds = iter(range(100))
    runs = {"x": lambda: float(next(seconds)), "y": lambda: float(next(seconds))}
    timings = common.interleaved_timings(runs, warmup=1, repeats=2)
    assert (timings.rounds, timings.dropped, timings.calm) == (3, 1, True)
    assert timings.seconds == {"x": [4.0, 7.0], "y": [5.0, 6.0]}  # round 1 (y=2, x=3) dropped

    monkeypatch.setattr(common, "others_load", lambda fn: (fn(), 5.0))  # never calm
    timings = common.interleaved_timings(runs, warmup=0, repeats=2, max_rounds=3)
    assert not timings.calm and len(timings.seconds["x"]) == 3  # kept rather than nothing


def test_others_load_is_small_when_only_we_work(common):
    seconds, load = common.others_load(lambda: sum(range(200_000)) * 0.0 + 0.5)
    assert seconds == 0.5 and load >= 0.0


def test_machine_info_and_memory(common):
    info = common.machine_info("cpu")
    assert info["torch_threads"] >= 1 and info["cpu"] and info["gpu"] is None
    assert common.peak_rss_mb() >= common.current_rss_mb() > 0
    assert sys.executable  # fresh-process memory probes need a Python to start


def test_spike_walze_rates_and_scaling_report(tmp_path, one_thread):
    sw = load("spike_walze")
    args = sw.parse_args(["--rates", "--scaling", "--size", "nano", "--batch-size", "1", "--seq-len", "32",
                          "--lengths", "32", "64", "--repeats", "1", "--warmup", "0", "--scaling-repeats", "1",
                          "--threads", str(one_thread), "--no-write"])
    rates = sw.measure_rates(args)
    attention = {r["rate"]: r for r in rates["rows"] if r["path"] == "attention"}
    assert attention[1.0]["time_vs_rate1"]["fwd"] == 1.0
    assert attention[0.0]["forward_flops_per_token"] < attention[0.25]["forward_flops_per_token"] \
        < attention[1.0]["forward_flops_per_token"]
    scaling = sw.measure_scaling(args)
    assert set(scaling["archs"]) == {"spike-walze", "transformer"}
    base = {"command": "cmd", "date": "today", "machine": {}, "threads": 1}
    assert "Goal" in sw.render_rates({**base, "rates": rates})
    assert "exponent" in sw.render_scaling({**base, "scaling": scaling})
    assert sw.fitted_exponent([1, 2, 4], [3.0, 6.0, 12.0]) == pytest.approx(1.0)
    assert sw.fitted_exponent([1, 2, 4], [1.0, 4.0, 16.0]) == pytest.approx(2.0)


def test_claims_ledger_verdicts_follow_the_rules(monkeypatch):
    claims = load("claims")
    scaling = {"scaling": {"lengths": [512, 8192], "archs": {"spike-walze": {"exponent": 1.05},
                                                              "transformer": {"exponent": 1.4}}}}
    assert claims.judge_scaling(scaling)[1] == "holds"
    scaling["scaling"]["archs"]["spike-walze"]["exponent"] = 1.6
    assert claims.judge_scaling(scaling)[1] == "does not hold"
    runs = {"arch": "a", "size": "s", "runs": [{"order": "shuffled", "val": {"bpb": 2.0}, "tokens": 1},
                                               {"order": "stages", "val": {"bpb": 2.001}, "tokens": 1}]}
    assert claims.judge_curriculum(runs)[1].startswith("does not hold")
    monkeypatch.setattr(claims, "load_result", lambda name: None)
    assert claims.NOT_RUN in claims.render()  # nothing measured: every row says so, no verdict


def test_claims_ledger_renders_from_the_stored_results():
    claims = load("claims")
    text = claims.render()  # every judge runs on the committed results/*.json it finds
    for claim in claims.CLAIMS:
        assert f"| {claim.key} |" in text


def test_lora_share_is_measured_per_preset():
    pytest.importorskip("peft")
    rows = load("finetune_methods").lora_ratios(["nano"])
    assert {r["arch"] for r in rows} == set(__import__("lmzoo").list_architectures())
    assert all(0 < r["lora_params"] < r["base_params"] for r in rows)


def test_spectral_benchmark_parts(one_thread):
    pytest.importorskip("pywt")
    spectral = load("spectral")
    (row,) = spectral.conv_comparison([32], channels=4, repeats=1)
    assert row["max_abs_diff"] < 1e-4 and row["fft"] > 0 and row["direct"] > 0
    cost = spectral.embedding_cost("nano", 2, 16, repeats=1)
    assert cost["ratio"] > 0 and cost["tokens"] == 32


def test_results_hold_no_machine_paths(common):
    assert common.repo_path(common.ROOT / "benchmarks" / "runs" / "x") == "benchmarks/runs/x"
    assert common.repo_path("/elsewhere/x") == "/elsewhere/x"
    for path in common.RESULTS_DIR.glob("*.json"):
        assert str(common.ROOT) not in path.read_text(), path.name


# ---- long_context.py (claims E1/E2) ----------------------------------------------------------------
SMALL = "transformer:d_model=32,n_layers=2,d_ff=64"  # a row spec with config overrides


@pytest.fixture(scope="module")
def long_context():
    return load("long_context")



@pytest.fixture(scope="module")
def recall():
    return load("long_context_recall")

def test_long_context_row_names(long_context):
    assert long_context.parse_spec("transformer-window256") == ("transformer", {"window": 256})
    assert long_context.parse_spec(SMALL) == ("transformer", {"d_model": 32, "n_layers": 2, "d_ff": 64})
    assert long_context.parse_spec("transformer:qk_norm=true,window=none") == ("transformer",
                                                                              {"qk_norm": True, "window": None})
    for bad in ("no-such-arch", "no-such-arch-window8", "transformer:nonsense=1"):
        with pytest.raises(SystemExit) as error:
            long_context.parse_spec(bad)
        assert "\n" not in str(error.value) and str(error.value).startswith("error:")
    registered = __import__("lmzoo").list_architectures()
    rows = long_context.default_scaling_rows()
    assert ("efficia-1" in rows) == ("efficia-1" in registered)
    assert rows[rows.index("transformer"):][:2] == ["transformer", "transformer-window256"]
    assert set(rows) >= {a for a in ("spike-walze", "spike-transformer", "spectral-llm") if a in registered}
    if "efficia-1" in registered:
        assert long_context.parse_spec("efficia-1-lcp-only") == ("efficia-1", {"memory": False, "compression": False})
        assert long_context.default_recall_variants()[0] == "efficia-1"
    else:
        with pytest.raises(SystemExit):
            long_context.main(["--recall", "--variants", "efficia-1", "--no-write"])


def test_long_context_budget_extrapolates_and_skips(long_context, common):
    assert common.fitted_exponent([1, 2, 4], [1.0, 4.0, 16.0]) == pytest.approx(2.0)
    assert long_context.extrapolate([(100, 1.0), (200, 4.0)], 400) == pytest.approx(16.0)
    assert long_context.extrapolate([(100, 1.0), (200, 1.0)], 400) == pytest.approx(2.0)  # at least linear
    assert long_context.extrapolate([(100, 1.0)], 200) == pytest.approx(2.0)  # one point: assume linear
    budget = long_context.Budget(max_seconds=10, max_memory_mb=1000)
    budget.record("a", "train", 100, 1.0, 200.0, 10.0)
    budget.record("a", "train", 200, 4.0, 200.0, 40.0)
    assert budget.skip_reason("a", "train", 200, {}) is None
    assert "budget 10 s" in budget.skip_reason("a", "train", 400, {})
    budget.max_seconds = 1e9
    assert "peak RSS" in budget.skip_reason("a", "train", 3200, {})
    assert budget.skip_reason("a", "train", 400, {("a", "train"): "killed"}) == "killed"


def test_long_context_state_size(long_context, one_thread):
    import torch

    import lmzoo

    sizes = {}
    for name, overrides in (("full", {}), ("window", {"window": 8})):
        model = lmzoo.create_model("transformer", "nano", **TINY, **overrides).eval()
        for length in (16, 64):
            state = model.init_state()
            with torch.inference_mode():
                model(torch.zeros(1, length, dtype=torch.long), state=state)
            sizes[name, length] = state.nbytes()
    assert sizes["full", 64] == 4 * sizes["full", 16] > 0  # KV cache: 2 layers x (k, v) x L x kv_dim floats
    assert sizes["window", 64] == sizes["window", 16] > 0  # ring buffer: constant


def test_long_context_scaling_orchestration(long_context, monkeypatch, one_thread):
    # The probes in this process (fast); the fresh-process path is the slow test below.
    calls = []

    def fresh(function, kwargs, timeout):
        calls.append((function, kwargs["overrides"].get("window"), kwargs["length"]))
        if kwargs["overrides"].get("window") == 4 and function == "train_probe" and kwargs["length"] == 32:
            return {"failed": "subprocess failed: killed"}
        return getattr(long_context, function)(**kwargs)

    monkeypatch.setattr(long_context, "_fresh", fresh)
    args = long_context.parse_args(["--scaling", "--archs", SMALL, f"{SMALL},window=4", "--size", "nano",
                                    "--lengths", "16", "32", "64", "--repeats", "1", "--new-tokens", "2",
                                    "--chunk", "16", "--threads", str(one_thread), "--no-write",
                                    "--compare", f"{SMALL},window=4", SMALL])
    rows = [SMALL, f"{SMALL},window=4"]
    s = long_context.measure_scaling(args, rows)
    full, windowed = (s["rows"][row]["cells"] for row in rows)
    for n in ("16", "32", "64"):
        assert full[n]["train"]["median_s"] > 0 and full[n]["train"]["peak_rss_mb"] > 0
        assert full[n]["decode"]["state_bytes"] > 0 and full[n]["decode"]["per_token_s"] > 0
    assert windowed["32"]["train"] == {"skipped": "subprocess failed: killed"}  # recorded, not dropped
    assert windowed["64"]["train"]["skipped"] == "subprocess failed: killed"  # and never retried
    assert ("train_probe", 4, 64) not in calls and windowed["64"]["decode"]["state_bytes"] > 0
    assert s["exponents"][rows[0]]["state_mb"] == pytest.approx(1.0, abs=0.1)  # KV cache grows with L
    assert s["exponents"][rows[1]]["state_mb"] == pytest.approx(0.0, abs=0.05)  # a window's does not
    assert set(s["ratios"]["train_s"]) == {"16"}

    base = {"command": "cmd", "date": "today", "machine": {}, "threads": 1}
    markdown = long_context.render_scaling({**base, "scaling": s})
    assert long_context.SKIP in markdown and "Not measured:" in markdown and "subprocess failed: killed" in markdown
    assert "exponent" in markdown and f"`{rows[1]}` / `{rows[0]}`" in markdown
    assert markdown.count(f"{rows[1]} train L=32") == 1  # each skipped cell named once

    args.max_seconds = 1e-9  # nothing fits after the first length: skipped with the reason, not dropped
    s = long_context.measure_scaling(args, rows[:1])
    cells = s["rows"][rows[0]]["cells"]
    assert "median_s" in cells["16"]["train"] and "budget" in cells["32"]["train"]["skipped"]
    assert "budget" in cells["64"]["decode"]["skipped"]


@pytest.mark.slow
def test_long_context_scaling_in_fresh_processes(long_context, one_thread):
    data = long_context.main(["--scaling", "--archs", SMALL, "--size", "nano", "--lengths", "16", "32",
                              "--repeats", "1", "--new-tokens", "2", "--chunk", "16", "--threads", str(one_thread),
                              "--no-write"])
    cells = data["scaling"]["scaling"]["rows"][SMALL]["cells"]
    assert cells["32"]["train"]["peak_rss_mb"] > cells["32"]["train"]["increase_mb"] >= 0
    assert cells["32"]["decode"]["state_bytes"] > cells["16"]["decode"]["state_bytes"] > 0


@pytest.mark.parametrize("shared", [False, True])
def test_long_context_recall_data(recall, shared):
    import numpy as np

    rng = np.random.default_rng(0)
    seq_len, task = 96, recall.RecallTask(pairs=5, queries=3, shared_values=shared)
    top = task.max_gap(seq_len)
    for gap in (0, 17, top):
        ids, positions = recall.recall_sequence(rng, seq_len, gap, task)
        ids = ids.tolist()
        assert len(ids) == seq_len and len(positions) == task.queries
        start, end, ask = ids.index(ord("[")), ids.index(ord("]")), ids.index(ord("?"))
        assert ask - end - 1 == gap  # the distance is exact
        written = dict(zip(ids[start + 1:end:2], ids[start + 2:end:2]))
        assert len(written) == task.pairs and all(chr(k).isupper() for k in written)
        for key, value in written.items():
            if shared:
                assert chr(value).isdigit()
            else:  # the key's own ten symbols
                assert 0 <= value - 128 - 10 * (key - ord("A")) < 10
        for j, position in enumerate(positions):
            assert position == ask + 2 + 2 * j and written[ids[position - 1]] == ids[position]
        filler = ids[:start] + ids[end + 1:ask]
        assert all(chr(c).islower() or c == ord(" ") for c in filler)  # no key, no value
    with pytest.raises(ValueError):
        recall.recall_sequence(rng, seq_len, top + 1, task)
    ids, labels = recall.recall_batch(rng, 2, seq_len, [5, 9], task)
    assert ((labels != -100).sum(1) == task.queries).all()
    assert ((labels == ids) | (labels == -100)).all()


def test_long_context_recall_curriculum(long_context, recall):
    args = long_context.parse_args(["--recall", "--steps", "10", "--seq-len", "1024", "--start-len", "64",
                                    "--hold", "0.2", "--ramp", "0.6", "--batch-size", "2"])
    lengths = [recall.train_length(args, step) for step in range(args.steps)]
    assert lengths[:3] == [64] * 3 and lengths[6:] == [1024] * 4 and lengths == sorted(lengths)
    assert all(n % 64 == 0 for n in lengths) and 64 < lengths[4] < 1024
    assert [recall.train_batch_size(args, n) for n in (64, 1024)] == [32, 2]  # equal tokens per step
    args.ramp = 0
    assert recall.train_length(args, 0) == 1024
    with pytest.raises(SystemExit):  # 13 pairs do not have their own alphabets
        long_context.parse_args(["--recall", "--pairs", "13", "--queries", "2"])


def test_long_context_recall_runs_and_reports(long_context, recall, one_thread):
    argv = ["--recall", "--variants", SMALL, "transformer-window16:d_model=32,n_layers=2,d_ff=64",
            "--steps", "4", "--batch-size", "2", "--seq-len", "96", "--start-len", "64", "--hold", "0.5",
            "--ramp", "0.5", "--pairs", "3",
            "--queries", "2", "--distances", "4", "40", "--eval-sequences", "2", "--window", "16", "--segment", "8",
            "--threads", str(one_thread), "--no-write"]
    args = long_context.parse_args(argv)
    first = [b[0].clone() for b in recall.train_batches(args)]
    assert [ids.shape for ids in first] == [(3, 64)] * 2 + [(2, 96)] * 2  # the length curriculum, equal tokens
    assert all((a == b).all() for a, b in zip(first, (b[0] for b in recall.train_batches(args))))
    data = long_context.main(argv)["recall"]
    r = data["recall"]
    assert [run["variant"] for run in r["runs"]] == args.variants and r["chance"] == pytest.approx(0.1)
    for run in r["runs"]:
        assert [s["gap"] for s in run["scores"]] == [4, 40]
        assert all(0 <= s["accuracy"] <= 1 and s["value_tokens"] == 2 * 2 for s in run["scores"])
    markdown = recall.render_recall(data)
    assert "chance" in markdown and "beyond the LCP window" in markdown and data["command"] in markdown
    with pytest.raises(SystemExit):  # a distance that does not fit fails before training
        long_context.main(["--recall", "--variants", SMALL, "--seq-len", "96", "--distances", "500", "--no-write"])


def test_wikitext_compare_runs_named_comparisons(tmp_path, one_thread):
    import lmzoo

    wikitext = load("wikitext_compare")
    text = tmp_path / "text.raw"
    text.write_text("".join(f" = Article {i} = \n The value of item {i} is {i * 7}. \n" for i in range(300)))
    data = wikitext.main(["--texts", str(text), "--out", str(tmp_path / "runs"), "--size", "nano", "--steps", "2",
                          "--eval-interval", "1", "--batch-size", "2", "--seq-len", "32", "--threads", "1",
                          "--seeds", "0", "--name", "wikitext-test", "--no-write",
                          "--archs", "efficia-1-lcp-only", "transformer:window=8"])
    assert [(r["order"], r["seed"]) for r in data["runs"]] == [("efficia-1-lcp-only", 0), ("transformer:window=8", 0)]
    lcp_only = lmzoo.load(load("common").ROOT / data["runs"][0]["checkpoint"])
    assert not lcp_only.config.memory and not lcp_only.config.compression  # the named ablation was trained
    markdown = wikitext.render(data)
    assert markdown.startswith("## efficia-1 vs transformer on WikiText-2")
    assert all(r["word_ppl"] > 1 and r["val"]["bpb"] > 0 for r in data["runs"])


def test_learning_curves_specs_memorisation_and_diagnosis(one_thread, tmp_path):
    import torch

    import lmzoo

    curves = load("learning_curves")
    assert curves.parse_spec("spike-transformer:attention=mean,token_shift=0,learn_thresholds=true") == (
        "spike-transformer", {"attention": "mean", "token_shift": 0, "learn_thresholds": True})
    assert curves.parse_spec("transformer") == ("transformer", {})
    mem = curves.memorisation("transformer:d_model=32,n_layers=1,d_ff=64", 0, steps=3)
    assert mem["final"] < mem["first"]
    torch.manual_seed(0)
    model = lmzoo.create_model("spike-transformer", "nano", d_model=32, n_layers=1, d_ff=64)
    result = curves.diagnose(model, torch.randint(0, 259, (1, 80)))
    for site in ("input", "q", "k", "v", "attn", "ffn_in", "ffn_hidden"):  # the hooks leave every gradient path intact
        stats = result["sites"][f"layer0/{site}"]
        assert 0 < stats["rate"] < 1 and len(stats["grad_norm_per_timestep"]) == 4
        assert stats["grad_norm_per_timestep"][0] > 0, site
    assert result["attention_input_change"]["layer0"] > 0
    # A run trained to the end by an earlier invocation is found (and reused), a partial one is not.
    run = tmp_path / "transformer_seed1"
    (run / "checkpoints/step-0000160").mkdir(parents=True)
    (run / "checkpoints/step-0000160/model.safetensors").write_bytes(b"")
    assert curves.finished_run(run, 1500) is None
    (run / "checkpoints/step-0001500").mkdir()
    (run / "checkpoints/step-0001500/model.safetensors").write_bytes(b"")
    assert curves.finished_run(run, 1500) == run / "checkpoints/step-0001500"


def test_activation_memory_report(one_thread):
    bench = load("activation_memory")
    probe = bench.probe("efficia-1", "nano", batch_size=2, seq_len=16, threads=one_thread, recompute=True,
                        timed_steps=1)
    assert probe["training_increase_mb"] >= 0 and probe["step_seconds"] > 0
    cells = {"plain": {"training_increase_mb": 40.0, "step_seconds": 1.0},
             "checkpointed": {"training_increase_mb": 30.0, "step_seconds": 1.3}}
    data = {"command": "x", "date": "d", "machine": {}, "threads": 1,
            "settings": {"size": "nano", "batch_size": 2, "seq_len": 16, "timed_steps": 1},
            "rows": {"transformer": cells}}
    assert "| `transformer` | 40 | 1.00 | 30 | 25% | 1.30x |" in bench.markdown(data)


def test_batched_decode_reports_each_row_count(one_thread):
    data = load("batched_decode").main(["--archs", "transformer", "--size", "nano", "--rows", "2", "--max-prompt", "6",
                                        "--steps", "1", "--repeats", "1", "--threads", str(one_thread), "--no-write"])
    rows = data["results"][0]["rows"]
    assert set(rows) == {1, 2} and all(r["batched"] > 0 for r in rows.values())
    assert rows[2]["one_by_one"] > 0 and rows[2]["vs_one_row"] == rows[2]["batched"] / rows[1]["batched"]
    admission = data["results"][0]["admission"]
    assert admission["rows"] == 2 and admission["prompt"] == 36 and admission["ms"] > 0 and admission["steps"] > 0


def test_train_profile_sorts_ops_and_reports_both_models(one_thread):
    profile = load("train_profile")
    assert profile.category("aten::mm") == "matmul"
    assert profile.category("aten::silu_backward") == "elementwise+norm"  # a backward op goes with its forward
    assert profile.category("aten::_scaled_dot_product_flash_attention_for_cpu_backward") == "attention"
    assert profile.category("aten::some_new_op") == "other"
    throughput = load("throughput")
    settings = throughput.Settings(threads=1, batch_size=1, seq_len=16, warmup=1)
    data = profile.run(["nano"], settings, steps=1)
    for who in ("lmzoo", "hf"):
        result = data["sizes"]["nano"][who]
        assert result["ms"]["matmul"] > 0 and result["ms"]["optimizer"] > 0  # the AdamW ops, by phase
        assert result["total_ms"] == pytest.approx(sum(result["ms"].values()))
    assert "| nano | lmzoo |" in profile.render(data) and "| nano | HF |" in profile.render(data)
