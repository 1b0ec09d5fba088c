"""Spectral building blocks against plain references: causal wavelet bands, FFT long convolution."""
import pytest
import torch

from lmzoo.layers.long_conv import causal_conv_last, fft_causal_conv
from lmzoo.layers.reference import direct_causal_conv, reference_decomposition
from lmzoo.layers.wavelet import CausalWaveletDecomposition

pywt = pytest.importorskip("pywt")  # the wavelet filters come from PyWavelets


@pytest.mark.parametrize("length", [1, 7, 37, 64])
def test_wavelet_bands_match_the_positionwise_reference(length):
    torch.manual_seed(0)
    x = torch.randn(2, 3, length, dtype=torch.float64)
    got = CausalWaveletDecomposition(3).double()(x)
    for band, want in zip(got, reference_decomposition(x, 3)):
        torch.testing.assert_close(band, want)


def test_wavelet_bands_are_causal_near_the_start_and_continue_from_history():
    torch.manual_seed(0)
    dec = CausalWaveletDecomposition(3)
    x = torch.randn(1, 4, 50)
    full = dec(x)
    for j in (0, 1, 13, 49):
        changed = x.clone()
        changed[..., j] += 1.0
        for a, b in zip(full, dec(changed)):
            assert torch.equal(a[..., :j], b[..., :j])
    # a chunk continued from each level's input history reproduces the full pass
    split = 29
    _, inputs = dec.decompose(x)
    history = [level_input[..., split - n:split] for level_input, n in zip(inputs, dec.history_lengths())]
    for a, b in zip(full, dec(x[..., split:], history)):
        torch.testing.assert_close(b, a[..., split:], atol=1e-6, rtol=1e-5)


def test_fft_convolution_equals_the_direct_sum_and_is_causal():
    torch.manual_seed(0)
    x, h = torch.randn(2, 5, 33, dtype=torch.float64), torch.randn(5, 33, dtype=torch.float64)
    y = fft_causal_conv(x, h)
    torch.testing.assert_close(y, direct_causal_conv(x, h))
    changed = x.clone()
    changed[..., 20] += 1
    assert torch.allclose(fft_causal_conv(changed, h)[..., :20], y[..., :20], atol=1e-12)


@pytest.mark.parametrize("n", [1, 3])
def test_last_outputs_of_the_causal_convolution_equal_the_direct_sum(n):
    torch.manual_seed(0)
    x, h = torch.randn(2, 4, 37), torch.randn(4, 37)
    torch.testing.assert_close(causal_conv_last(x, h, n), direct_causal_conv(x, h)[..., -n:], atol=1e-4, rtol=1e-4)
