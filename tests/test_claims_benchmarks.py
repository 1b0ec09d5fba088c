"""The claims added by issue 20 (P6, S6, S7, P3, C1-C6): their benchmark parts and verdict rules."""
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

import claims  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)


def domain_data(prose_gap: float, code_gap: float, seeds=(0, 1)) -> dict:
    """domain-text results where spectral-llm's bits/byte differ from the transformer's by the gaps."""
    runs = [{"corpus": corpus, "arch": arch, "seed": seed,
             "val": {"bpb": 2.0 + (gap if arch == "spectral-llm" else 0) + 0.01 * seed}}
            for corpus, gap in (("prose", prose_gap), ("code", code_gap))
            for arch in ("spectral-llm", "transformer") for seed in seeds]
    data = {"seeds": list(seeds), "size": "nano", "steps": 10, "batch_size": 2, "seq_len": 8, "lr": 1e-3,
            "python": "3.11", "runs": runs,
            "corpora": {"prose": {"val_bytes": 700, "val_words": 100}, "code": {"val_bytes": 1000, "val_words": 100}}}
    data["comparisons"] = {c: claims_domain().comparison(data, c) for c in ("prose", "code")}
    return data


def claims_domain():
    import domain_text

    return domain_text


def test_p6_perplexity_ratio_follows_from_bits_per_byte():
    c = domain_data(-0.1, 0.05)["comparisons"]
    assert c["prose"]["byte_ppl_ratio"] == pytest.approx(2 ** -0.1)
    assert c["prose"]["word_ppl_ratio"] == pytest.approx(2 ** (-0.1 * 7))  # 7 bytes per word
    assert c["prose"]["spectral_better_every_seed"] and not c["code"]["spectral_better_every_seed"]


def test_p6_verdict_rule():
    # per word, -0.05 bits/byte x 7 bytes/word = 0.785x: more than 15% lower perplexity
    assert claims.judge_domain_text(domain_data(-0.05, -0.01))[1] == "holds"
    assert claims.judge_domain_text(domain_data(-0.01, -0.01))[1].startswith("partly")  # prose only 0.95x
    assert claims.judge_domain_text(domain_data(0.02, -0.01))[1].startswith("partly")  # code only
    assert claims.judge_domain_text(domain_data(0.0, 0.03))[1].startswith("does not hold")
    assert claims.judge_domain_text(domain_data(-0.05, -0.01, seeds=(0,)))[1].startswith(claims.NOT_RUN)


def test_domain_text_splits_hold_out_whole_files():
    files = claims_domain().stdlib_files()
    buckets = {path: claims_domain().code_bucket(path) for path in files}
    held_out = {p for p, b in buckets.items() if b < 3}
    training = {p for p, b in buckets.items() if 3 <= b < 30}
    assert held_out and training and not held_out & training
    assert not any("test" in p.parts or "site-packages" in p.parts for p in files)


def qa_data(spike_test: float, spike_train: float, other: float) -> dict:
    def scores(test, train):
        return {"test": {"exact_match": test, "substring_match": test},
                "train": {"exact_match": train, "substring_match": train}}
    return {"size": "nano", "pretrain_steps": 1, "steps": 1, "n_test": 10,
            "runs": [{"arch": "spike-transformer", "scores": scores(spike_test, spike_train)},
                     {"arch": "transformer", "scores": scores(other, other)}]}


def test_s6_verdict_rule():
    assert claims.judge_extractive_qa(qa_data(0.0, 0.05, 0.0))[1].startswith("not measurable here")
    assert claims.judge_extractive_qa(qa_data(0.65, 0.9, 0.5))[1] == "holds"
    assert claims.judge_extractive_qa(qa_data(0.45, 0.9, 0.5))[1] == "partly"
    assert claims.judge_extractive_qa(qa_data(0.05, 0.2, 0.5))[1] == "does not hold at this size"


def test_extractive_qa_items_are_spans_of_their_context():
    pytest.importorskip("mwxml")
    import extractive_qa

    train, test, split = extractive_qa.build_items(per_sentence=2)
    assert train and test and not set(split["train_articles"]) & set(split["test_articles"])
    assert {i["title"] for i in test} <= set(split["test_articles"])
    for item in train + test:
        context, question = item["question"].split("\nFrage: ")
        assert item["answer"] in context and "___" in question
        assert question.replace("___", item["answer"], 1).endswith("“?")
    assert extractive_qa.build_items(per_sentence=2)[1] == test  # the same set on every run


def test_p3_steps_to_a_target_are_interpolated():
    curve = {"100": 3.0, "200": 2.0, "300": 1.5}
    assert claims.steps_to(curve, 2.5) == pytest.approx(150)
    assert claims.steps_to(curve, 3.5) == 100 and claims.steps_to(curve, 1.0) is None

    def run(seed, *points):
        return {"seed": seed, "evals": [{"step": 100 * i, "val_bpb": b} for i, b in enumerate(points, 1)]}

    arena = {"settings": {"profile": {"size": "nano"}},
             "curves": {"spectral-llm": [run(0, 2.2, 1.8), run(1, 2.2, 1.9)],
                        "transformer": [run(0, 3.0, 2.0), run(1, 3.0, 1.9)]}}
    figure, verdict = claims.judge_convergence(arena)
    # The target is the best every run reaches (2.0): spectral-llm at 150 and 167, the transformer at 200 and 191.
    assert verdict == "holds" and "spectral-llm 150, 167" in figure and "transformer 200, 191" in figure
    one_seed = {**arena, "curves": {k: v[:1] for k, v in arena["curves"].items()}}
    assert claims.judge_convergence(one_seed)[1].startswith(claims.NOT_RUN)


def test_c3_and_c4_verdicts_follow_their_rules():
    def summary(on_spikes, off_spikes, on_bpb, off_bpb):
        return {"steps": 200, "summary": [
            {"lr": lr, "qk_norm": qk, "seeds": 2, "spikes": spikes, "diverged": 0, "mean_val_bpb": bpb}
            for lr, a, b in ((0.01, on_bpb[0], off_bpb[0]), (0.1, on_bpb[1], off_bpb[1]))
            for qk, spikes, bpb in ((True, on_spikes, a), (False, off_spikes, b))]}
    assert claims.judge_qk_norm(summary(0, 6, (3.0, 3.1), (3.1, 3.5)))[1] == "holds"
    assert claims.judge_qk_norm(summary(0, 0, (3.0, 3.1), (3.1, 3.5)))[1].startswith("partly")
    assert claims.judge_qk_norm(summary(0, 0, (3.1, 3.5), (3.0, 3.1)))[1].startswith("not shown")

    def arena(complexity, transformer):
        return {"settings": {"profile": {"size": "nano"}},
                "verdict": [{"arch": "complexity", "val_bpb": {"mean": complexity, "std": 0.01}},
                            {"arch": "transformer", "val_bpb": {"mean": transformer, "std": 0.01}}]}
    assert claims.judge_specialisation(arena(2.9, 3.0), arena(2.8, 3.0))[1] == "holds"
    assert claims.judge_specialisation(arena(2.9, 3.0), arena(3.0, 3.0))[1].startswith("partly")
    assert claims.judge_specialisation(arena(3.0, 3.0), arena(3.0, 2.9))[1].startswith("does not hold")


def test_complexity_claim_parts():
    import complexity_claims

    (row,) = complexity_claims.attention([32], repeats=1)
    assert row["max_abs_diff"] < 1e-5 and row["speedup"] > 0
    mlp = complexity_claims.routed_mlp("nano", 64, repeats=1)
    assert mlp["routed_params"] == mlp["dense_params"]
    assert mlp["routed_flops"] / mlp["dense_flops"] == pytest.approx(1 / mlp["n_experts"])  # one expert per token
    sizes = {r["size"]: r["total"] for r in complexity_claims.preset_sizes()}
    assert sizes["1b"] > 1e9 and sizes["seed-tiny"] < sizes["20m"] < sizes["seed-small"]


def test_domain_text_merges_seeds_run_apart(tmp_path, monkeypatch):
    import json

    import common

    domain_text = claims_domain()
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    both = domain_data(-0.05, 0.01)
    seed0 = {**both, "command": "run 0", "runs": [r for r in both["runs"] if r["seed"] == 0], "seeds": [0]}
    seed1 = {**both, "command": "run 1", "runs": [r for r in both["runs"] if r["seed"] == 1], "seeds": [1]}
    assert domain_text.merged(seed1) == seed1  # nothing stored yet
    (tmp_path / "domain-text-cpu.json").write_text(json.dumps({**seed0, "python": "x"}))
    with pytest.raises(SystemExit, match="other settings"):
        domain_text.merged(seed1)
    (tmp_path / "domain-text-cpu.json").write_text(json.dumps(seed0))
    merged = domain_text.merged(seed1)
    assert merged["seeds"] == [0, 1] and not merged["partial"] and merged["command"] == "run 0; run 1"
    assert sorted(map(json.dumps, merged["runs"])) == sorted(map(json.dumps, both["runs"]))
