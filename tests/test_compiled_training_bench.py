"""benchmarks/compiled_training.py: the table and the HF lines from known timings (fast), and a
real run at nano size (slow: four Inductor compilations)."""

import pytest

from benchmark_scripts import load


@pytest.fixture(scope="module")
def bench():
    return load("compiled_training")


def row(tokens_per_s, flops_per_token=1e6, first=30.0):
    return {"tokens_per_s": tokens_per_s, "flops_per_s": tokens_per_s * flops_per_token, "first_step_s": first,
            "flops_per_token": flops_per_token, "seconds": [1.0]}


def test_markdown_gives_speedups_fractions_of_gemm_and_the_hf_ratios(bench):
    runs = {"transformer/eager": row(1000), "transformer/compiled": row(1300), "hf/eager": row(1100),
            "hf/compiled": row(1000)}
    data = {"command": "x", "date": "d", "machine": {}, "threads": 2, "gemm_flops_per_s": 2e9,
            "settings": {"batch_size": 8, "seq_len": 256, "repeats": 5},
            "sizes": [{"size": "micro", "runs": runs, "calm": True}]}
    text = bench.render_markdown(data)
    assert "| micro | `transformer` | 1000 | 1300 | 1.30x | 50% | 65% | 30 |" in text
    assert "| micro | HF Llama | 1100 | 1000 | 0.91x |" in text
    assert "lmzoo/HF eager 0.91x; lmzoo compiled / HF eager 1.18x; both compiled 1.30x" in text
    assert "busy" not in text


@pytest.mark.slow
def test_a_nano_run_compiles_and_times_every_model(bench):
    data = bench.run(bench.parse_args(["--sizes", "nano", "--repeats", "1", "--warmup", "0", "--threads", "1",
                                       "--seq-len", "32", "--batch-size", "2"]))
    runs = data["sizes"][0]["runs"]
    assert set(runs) == {"transformer/eager", "transformer/compiled", "hf/eager", "hf/compiled"}
    assert all(r["tokens_per_s"] > 0 for r in runs.values())
    assert "lmzoo compiled / HF eager" in bench.render_markdown(data)
