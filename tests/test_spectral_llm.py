"""spectral-llm's own pieces (the shared contract covers causality, decoding, save/load, training):
the harmonic embedding in both modes, the frequency-domain FFN, the amplitude penalty, the seed's API."""
import math
import sys

import pytest
import torch

import lmzoo
from lmzoo.errors import LmzooError
from lmzoo.models.spectral_llm import SpectralFFN
from lmzoo.tokenizers import get_tokenizer

pytest.importorskip("pywt")


def test_harmonic_embedding_equals_its_defining_sum():
    torch.manual_seed(0)
    model = lmzoo.create_model("spectral-llm", "nano")
    torch.nn.init.normal_(model.harmonic.amplitude)
    ids = torch.randint(0, 259, (2, 9))
    torch.testing.assert_close(model.harmonic(ids), model.harmonic.reference(ids), atol=1e-5, rtol=1e-5)
    # without ids: the embedding of every token, in id order
    torch.testing.assert_close(model.harmonic()[ids], model.harmonic(ids), atol=1e-5, rtol=1e-5)


def test_harmonic_only_embedding_drops_the_table_and_ties_the_output_to_the_harmonics():
    torch.manual_seed(0)
    hybrid = lmzoo.create_model("spectral-llm", "nano")
    model = lmzoo.create_model("spectral-llm", "nano", embedding="harmonic")
    assert model.embed is None and model.lm_head is None
    assert not any(name.startswith(("embed", "lm_head", "harmonic_mix")) for name, _ in model.named_parameters())
    vocab, bases = model.config.vocab_size, model.config.harmonic_bases
    assert model.num_parameters(embedding=True) == 2 * bases * vocab
    assert model.num_parameters(embedding=False) == hybrid.num_parameters(embedding=False) - 1  # no mix weight
    ids = torch.randint(0, vocab, (2, 12))
    out = model(ids, labels=ids)
    hidden, _, stats = model.backbone(ids, None, model.new_context(ids, None))
    torch.testing.assert_close(out.logits, hidden @ model.harmonic().T)
    assert "harmonic_mix" not in stats
    # the small amplitude start keeps the first prediction near uniform (the harmonics add up
    # coherently over the channels when they are the output weights)
    assert abs(out.loss.item() - math.log(vocab)) < 0.3
    untied = lmzoo.create_model("spectral-llm", "nano", embedding="harmonic", tie_embeddings=False)
    assert untied.lm_head is not None and untied.num_parameters(embedding=True) == 2 * bases * vocab + vocab * 128


def test_embedding_mode_is_checked():
    with pytest.raises(LmzooError, match="embedding must be one of hybrid, harmonic"):
        lmzoo.create_model("spectral-llm", "nano", embedding="table")


def test_wavelet_problems_are_one_line_errors(monkeypatch):
    with pytest.raises(LmzooError, match="unknown wavelet 'db99'.*db4"):
        lmzoo.create_model("spectral-llm", "nano", wavelet_type="db99")
    monkeypatch.setitem(sys.modules, "pywt", None)  # as if PyWavelets were not installed
    with pytest.raises(LmzooError, match=r"needs PyWavelets; pip install 'lmzoo\[spectral\]'"):
        lmzoo.create_model("spectral-llm", "nano")


def test_spectral_ffn_is_per_token_and_its_spectral_path_is_a_channel_dft_product():
    torch.manual_seed(0)
    ffn = SpectralFFN(16, 32).double()
    torch.nn.init.normal_(ffn.spectral_weight)
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    alpha = torch.sigmoid(ffn.mix_logit)
    assert math.isclose(alpha.item(), 1 / (1 + math.exp(-0.1)))
    # reference: the real DFT over the channels as an explicit matrix, weighted per bin, inverted
    n = torch.arange(16, dtype=torch.float64)
    bins = torch.arange(9, dtype=torch.float64)
    dft = torch.exp(-2j * math.pi * bins[:, None] * n[None, :] / 16)                  # [9, 16]
    spectrum = (x.to(torch.complex128) @ dft.T) * torch.view_as_complex(ffn.spectral_weight)
    spectral = torch.fft.irfft(spectrum, n=16, dim=-1)
    standard = ffn.down(torch.nn.functional.gelu(ffn.up(x)))
    # the FFN transforms in fp32 (stable under autocast), so compare at fp32 precision
    torch.testing.assert_close(ffn(x), (1 - alpha) * standard + alpha * spectral, atol=1e-6, rtol=1e-5)
    changed = x.clone()
    changed[:, 3] += 1
    assert torch.equal(ffn(changed)[:, :3], ffn(x)[:, :3]) and torch.equal(ffn(changed)[:, 4:], ffn(x)[:, 4:])


def test_spectral_loss_weight_adds_an_l2_penalty_on_the_harmonic_amplitudes():
    torch.manual_seed(0)
    model = lmzoo.create_model("spectral-llm", "nano", spectral_loss_weight=0.5)
    ids = torch.randint(0, 259, (1, 10))
    out = model(ids, labels=ids)
    torch.testing.assert_close(out.aux_loss, 0.5 * model.harmonic.amplitude.square().mean())
    plain = lmzoo.create_model("spectral-llm", "nano")
    plain.load_state_dict(model.state_dict())
    torch.testing.assert_close(out.loss - out.aux_loss, plain(ids, labels=ids).loss)
    with pytest.raises(LmzooError, match="spectral_loss_weight"):
        lmzoo.create_model("spectral-llm", "nano", spectral_loss_weight=-1.0)


def test_the_seed_api_names():
    from lmzoo.seed_api import SpectralConfig, SpectralLLM

    with pytest.warns(UserWarning, match="num_heads has no effect"):
        config = SpectralConfig(vocab_size=259, embed_dim=64, num_heads=8, num_layers=2, harmonic_bases=8,
                                wavelet_type="db4", wavelet_levels=2)
    assert (config.d_model, config.n_layers) == (64, 2)
    assert SpectralConfig.from_dict(config.to_dict()) == config  # stored under lmzoo's names
    model = SpectralLLM(config)
    assert model.count_parameters() == sum(p.numel() for p in model.parameters())
    out = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=4, temperature=0)
    assert out.shape == (1, 7)
    assert model.generate(torch.tensor([[1, 2, 3]]), max_length=5, temperature=0).shape == (1, 5)
    with pytest.raises(LmzooError, match="needs the model's tokenizer"):
        model.generate("The signal", max_length=20)
    model.tokenizer = tokenizer = get_tokenizer("bytes")
    ids = model.generate(torch.tensor([tokenizer.encode("The signal")]), max_length=20, temperature=0)
    text = model.generate("The signal", max_length=20, temperature=0, eos_token_id=None)
    assert ids.shape == (1, 20) and text == tokenizer.decode(ids[0].tolist())


@pytest.mark.parametrize("split", [1, 5, 31])
@pytest.mark.parametrize("grad", [True, False])
def test_mixer_decoding_state_grows_by_the_chunk_and_matches_the_full_pass(split, grad):
    """One-token steps take the direct dot-product path; without autograd the filters are cached."""
    torch.manual_seed(0)
    model = lmzoo.create_model("spectral-llm", "nano", embedding="harmonic").eval()
    ids = torch.randint(0, 259, (2, 40))
    full = model(ids).logits
    state = model.init_state()
    with torch.set_grad_enabled(grad):
        first = model(ids[:, :split], state=state).logits
        assert state.layers[0].bands[0].shape[-1] == split
        rest = torch.cat([model(ids[:, t:t + 1], state=state).logits for t in range(split, 40)], 1)
    torch.testing.assert_close(torch.cat((first, rest), 1), full, atol=1e-4, rtol=1e-4)
    cached = state.layers[0].filters
    assert (cached is None) == grad
    if not grad:
        torch.testing.assert_close(cached, model.blocks[0].mixer.filters(40).detach(), atol=1e-6, rtol=1e-5)
