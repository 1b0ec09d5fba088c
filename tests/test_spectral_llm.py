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
    """One-token steps take the direct dot-product path; without autograd k's lags are cached."""
    torch.manual_seed(0)
    model = lmzoo.create_model("spectral-llm", "nano", embedding="harmonic").eval()
    ids = torch.randint(0, 259, (2, 40))
    full = model(ids).logits
    state = model.init_state()
    with torch.set_grad_enabled(grad):
        first = model(ids[:, :split], state=state).logits
        assert state.layers[0].length == split
        rest = torch.cat([model(ids[:, t:t + 1], state=state).logits for t in range(split, 40)], 1)
    torch.testing.assert_close(torch.cat((first, rest), 1), full, atol=1e-4, rtol=1e-4)
    layer = state.layers[0]
    assert layer.length == 40 and layer.history.shape[:2] == (2, model.config.d_model)
    if grad:
        assert layer.kernel is None
    else:  # capacity doubles: 40 tokens from a 1-token prefill hold 64 slots, from 31 tokens 62
        assert layer.history.shape[-1] == {1: 64, 5: 40, 31: 62}[split]
        assert layer.lags >= 40
        want = model.blocks[0].mixer.combined_filter(layer.lags).detach()
        torch.testing.assert_close(layer.kernel[:, -layer.lags:].flip(-1), want, atol=1e-6, rtol=1e-5)


def mixer_and_input(dtype, d=8, n=70, levels=3, seed=0):
    from lmzoo.models.spectral_llm import MultiResolutionMixer, SpectralConfig

    torch.manual_seed(seed)
    mixer = MultiResolutionMixer(SpectralConfig(vocab_size=16, d_model=d, n_layers=1, wavelet_levels=levels))
    with torch.no_grad():
        mixer.band_weight.copy_(torch.randn_like(mixer.band_weight))
        mixer.filters.log_rate.add_(torch.randn_like(mixer.filters.log_rate))
    mixer = mixer.to(dtype)
    return mixer, torch.randn(3, n, d, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("levels", [3, 1])
def test_combined_filter_equals_the_per_band_reference_with_gradients(dtype, levels):
    """k * v with k = sum_b w_b (h_b * r_b) is the per-band sum exactly: outputs and every gradient."""
    mixer, h = mixer_and_input(dtype, levels=levels)
    tol = {"atol": 1e-5, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 1e-10, "rtol": 1e-9}

    def run(fast):
        mixer.zero_grad()
        x = h.clone().requires_grad_()
        if fast:
            y = mixer(x, None)
        else:
            v, gate = mixer.inp(x).chunk(2, dim=-1)
            y = mixer.out(torch.nn.functional.silu(gate) * mixer.reference(v.transpose(1, 2)).transpose(1, 2))
        y.square().sum().backward()
        return y.detach(), x.grad, {n: p.grad.clone() for n, p in mixer.named_parameters()}

    (y, gx, grads), (y_ref, gx_ref, grads_ref) = run(True), run(False)
    torch.testing.assert_close(y, y_ref, **tol)
    torch.testing.assert_close(gx, gx_ref, **tol)
    assert grads.keys() == grads_ref.keys() and {"band_weight", "filters.log_rate"} <= grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], grads_ref[name], **tol, msg=name)


def test_combined_filter_lags_computed_from_any_start_agree():
    mixer, _ = mixer_and_input(torch.float64)
    whole = mixer.combined_filter(120)
    for start in (1, 30, 49, 50, 77):
        torch.testing.assert_close(mixer.combined_filter(120, start), whole[:, start:])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mixer_chunked_prefill_and_steps_equal_the_reference(dtype):
    mixer, h = mixer_and_input(dtype)
    with torch.no_grad():
        v, gate = mixer.inp(h).chunk(2, dim=-1)
        want = mixer.out(torch.nn.functional.silu(gate) * mixer.reference(v.transpose(1, 2)).transpose(1, 2))
        from lmzoo.models.spectral_llm import MixerState

        state = MixerState()
        cuts = [0, 13, 14, 40, 41, 42, 70]
        got = torch.cat([mixer(h[:, a:b], state) for a, b in zip(cuts, cuts[1:])], 1)
    tol = {"atol": 1e-5, "rtol": 1e-4} if dtype == torch.float32 else {}
    torch.testing.assert_close(got, want, **tol)


def test_mixer_rows_at_different_positions_equal_each_alone():
    """Rows joined at different positions (left zero padding), stepped together, then trimmed."""
    from lmzoo.models.spectral_llm import MixerState

    mixer, h = mixer_and_input(torch.float64)
    with torch.no_grad():
        alone = [mixer(h[i:i + 1], None) for i in range(3)]
        starts = [60, 9, 30]
        states = []
        for i, s in enumerate(starts):
            states.append(MixerState())
            mixer(h[i:i + 1, :s], states[-1])
        joined = states[0]
        joined.join(states[1], aligned=False)
        joined.join(states[2], aligned=False)
        assert joined.length == 60 and joined.history.shape[0] == 3
        for step in range(10):
            x = torch.stack([h[i, starts[i] + step] for i in range(3)])[:, None]
            y = mixer(x, joined)
            for i in range(3):
                torch.testing.assert_close(y[i, 0], alone[i][0, starts[i] + step])
        joined.select(torch.tensor([2, 1]))  # the longest row leaves
        joined.trim(40)
        assert joined.length == 40 and joined.history.shape[-1] <= 80 and joined.kernel.shape[-1] <= 2 * 40 + 64
        taken = joined.take(torch.tensor([1]))
        y = mixer(h[1:2, 19:20], taken)
        torch.testing.assert_close(y[0, 0], alone[1][0, 19])
        y = mixer(torch.stack([h[2, 40], h[1, 19]])[:, None], joined)
        torch.testing.assert_close(y[:, 0], torch.stack([alone[2][0, 40], alone[1][0, 19]]))


def test_the_analyzer_records_band_energies_through_the_reference():
    mixer, h = mixer_and_input(torch.float64)
    mixer.record = []
    with torch.no_grad():
        recorded = mixer(h, None)
        assert len(mixer.record) == 4
        mixer.record = None
        torch.testing.assert_close(mixer(h, None), recorded)
