"""The spectral analyzer's splits add up, FFTs are counted, and the CLI reports."""
import math

import pytest
import torch

import lmzoo
from lmzoo.accounting import flop_counter
from lmzoo.cli.main import main

pytest.importorskip("pywt")


def test_ffts_are_counted_as_5_n_log2_n():
    with flop_counter() as counter:
        spectrum = torch.fft.rfft(torch.randn(3, 50), n=128)
        torch.fft.irfft(spectrum, n=128)
    assert counter.get_total_flops() == 2 * 3 * 5 * 128 * 7


def test_analysis_splits_add_up_and_band_energy_is_per_band():
    from lmzoo.spectral_analysis import SPECTRAL, analyze

    torch.manual_seed(0)
    model = lmzoo.create_model("spectral-llm", "nano")
    result = analyze(model, torch.randint(0, 259, (1, 64)))
    assert sum(result["parameters"].values()) == sum(p.numel() for p in model.parameters())
    assert 0 < result["spectral_parameter_ratio"] < 1 and 0 < result["spectral_compute_ratio"] < 1
    assert all(result["flops_per_token"][k] >= 0 for k in result["flops_per_token"])
    assert result["flops_per_token"]["mixer: wavelets + long filters"] > 0  # the FFTs and wavelet convs
    assert set(SPECTRAL) <= set(result["parameters"])
    levels = model.config.wavelet_levels
    assert len(result["band_energy"]) == model.config.n_layers
    assert all(len(layer) == levels + 1 for layer in result["band_energy"])
    assert math.isclose(result["harmonic_mix_a"], 1 / (1 + math.exp(-0.5)), rel_tol=1e-6)


def test_analyze_cli(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("Spektrale Analyse eines kleinen Textes. " * 20)
    assert main(["analyze", "spectral-llm", "--data", str(text), "--seq-len", "64"]) == 0
    out = capsys.readouterr().out
    assert "spectral share" in out and "band output energy" in out
    assert main(["analyze", "transformer"]) == 2



def test_seed_analyzer_api_matches_the_analyzer():
    from lmzoo.seed_api import SpectralAnalyzer
    from lmzoo.spectral_analysis import analyze

    torch.manual_seed(0)
    model = lmzoo.create_model("spectral-llm", "nano").train()
    analyzer = SpectralAnalyzer(model)
    arch = analyzer.analyze_architecture()
    assert model.training  # given back in the mode it came in
    ids = torch.randint(0, 259, (2, 48))
    reference = analyze(model, ids)
    assert arch["param_ratio"] == reference["spectral_parameter_ratio"]
    assert arch["parameters"] == reference["parameters"]
    on_ids = analyzer.analyze_architecture(ids)
    assert on_ids["compute_ratio"] == on_ids["spectral_compute_ratio"] == reference["spectral_compute_ratio"]
    assert arch["compute_ratio"] != on_ids["compute_ratio"]  # the default is 256 ids: the FFT length counts

    monitor = analyzer.monitor_spectral_operations(ids)
    assert monitor["band_energy"] == reference["band_energy"]
    assert monitor["band_weights"] == reference["band_weights"] and monitor["ffn_alpha"] == reference["ffn_alpha"]
    assert all(math.isclose(sum(layer), 1.0, rel_tol=1e-6) for layer in monitor["band_energy_share"])
    assert monitor["tokens"] == ids.numel()
    # Energy is of *this* batch: another batch gives other energies, the same one the same.
    assert analyzer.monitor_spectral_operations(ids[:1])["band_energy"] != monitor["band_energy"]
    assert analyzer.monitor_spectral_operations(ids[0])["band_energy"] == analyzer.monitor_spectral_operations(
        ids[:1])["band_energy"]


@pytest.mark.parametrize("bad", [torch.zeros(2, 3, 4, dtype=torch.long), torch.rand(1, 8), torch.tensor([[0, 259]]),
                                 torch.tensor([[-1, 3]]), torch.zeros(1, 0, dtype=torch.long), [1, 2, 3]])
def test_seed_analyzer_refuses_bad_input(bad):
    from lmzoo.errors import LmzooError
    from lmzoo.spectral_analysis import SpectralAnalyzer

    analyzer = SpectralAnalyzer(lmzoo.create_model("spectral-llm", "nano"))
    with pytest.raises(LmzooError, match="input_ids"):
        analyzer.monitor_spectral_operations(bad)


def test_seed_analyzer_needs_a_spectral_model():
    from lmzoo.errors import LmzooError
    from lmzoo.spectral_analysis import SpectralAnalyzer

    with pytest.raises(LmzooError, match="spectral-llm"):
        SpectralAnalyzer(lmzoo.create_model("transformer", "nano"))
