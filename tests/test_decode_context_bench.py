"""The pure logic of benchmarks/decode_context.py: ratios to the transformer, the fitted exponent,
the flat verdict and the rendered goal lines."""

import pytest

from benchmark_scripts import load


@pytest.fixture(scope="module")
def bench():
    return load("decode_context")


def test_summary_ratios_exponents_and_markdown(bench):
    ms = {"transformer": {1024: 5.0, 4096: 10.0, 16384: 20.0},   # doubles per 4x: exponent 0.5
          "efficia-1": {1024: 4.0, 4096: 4.0, 16384: 4.0},      # flat
          "spike-walze": {1024: 6.25, 4096: 6.25, 16384: 6.25}}
    out = bench.summarise(ms)
    assert out["efficia-1"]["contexts"]["1024"]["ratio_to_transformer"] == pytest.approx(1.25)
    assert out["spike-walze"]["contexts"]["16384"]["ratio_to_transformer"] == pytest.approx(3.2)
    assert out["transformer"]["exponent"] == pytest.approx(0.5)
    assert out["efficia-1"]["exponent"] == pytest.approx(0.0) and out["efficia-1"]["flat"]
    assert not out["transformer"]["flat"]
    assert out["efficia-1"]["contexts"]["4096"]["tokens_per_s"] == pytest.approx(250.0)
    data = {"settings": {"size": "micro", "contexts": [1024, 4096, 16384], "chunk": 2048, "tokens": 32,
                         "repeats": 5},
            "results": out, "timings": {"calm": True}, "state_mb": {a: 1.0 for a in ms},
            "command": "python benchmarks/decode_context.py", "date": "today", "threads": 2,
            "machine": {"cpu": "cpu", "torch": "2"}}
    text = bench.render_markdown(data)
    assert "1.25x the `transformer`'s tokens/s at context 1024 (goal >= 1.0x: met)" in text
    assert "0.80x the `transformer`'s tokens/s at context 1024 (goal >= 1.0x: not met)" in text
    assert "(flat: met)" in text


def test_a_tiny_run_counts_the_aten_calls_of_a_step(bench):
    args = bench.parse_args(["--archs", "transformer", "spike-walze", "--size", "nano", "--contexts", "16", "32",
                             "--tokens", "2", "--repeats", "1", "--warmup", "0", "--max-rounds", "1", "--threads", "1"])
    data = bench.run(args)
    calls = {arch: res["aten_calls_per_step"] for arch, res in data["results"].items()}
    assert all(n > 20 for n in calls.values()), calls  # a step is many operator calls, counted per step
    assert "aten calls per step @16" in bench.render_markdown(data)
