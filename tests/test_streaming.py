"""Long contexts: feeding in chunks, reading a file in pieces, continuing a fed context."""
import pytest
import torch

import lmzoo
from lmzoo.errors import LmzooError
from lmzoo.generation import feed, generate_text, iter_file_token_chunks
from lmzoo.modeling import State
from lmzoo.tokenizers import get_tokenizer
from lmzoo.tokenizers.base import TOKENIZER_KINDS

# Every registered architecture (a new one is covered once registered) and the windowed baseline.
VARIANTS = [pytest.param((arch, {}), id=arch) for arch in lmzoo.list_architectures()]
VARIANTS.append(pytest.param(("transformer", {"window": 7}), id="transformer-window=7"))


@pytest.fixture(params=VARIANTS)
def model(request):
    arch, overrides = request.param
    torch.manual_seed(0)
    return lmzoo.create_model(arch, "nano", **overrides).eval()


def test_feeding_in_chunks_matches_one_forward_pass(model):
    ids = torch.randint(0, 256, (300,))
    with torch.no_grad():
        full = model(ids[None]).logits[0, -1]
    for chunk_size in (7, 64, 4096):  # 7 and 64 do not divide 300
        state, logits = feed(model, ids, chunk_size=chunk_size)
        assert state.position == 300 and logits.shape == (1, model.config.vocab_size)
        torch.testing.assert_close(logits[0], full, atol=1e-4, rtol=0)
    # Uneven 1-D pieces are joined into chunks that do not line up with them.
    pieces = [ids[:3], ids[3:150], ids[150:151], ids[151:]]
    state, logits = feed(model, iter(pieces), chunk_size=13)
    torch.testing.assert_close(logits[0], full, atol=1e-4, rtol=0)
    assert not logits.is_inference()  # usable outside inference_mode
    # One token at a time (a shorter prefix: long-filter architectures pay per step).
    with torch.no_grad():
        short = model(ids[None, :40]).logits[0, -1]
    state, logits = feed(model, ids[None, :40], chunk_size=1)
    assert state.position == 40
    torch.testing.assert_close(logits[0], short, atol=1e-4, rtol=0)


def test_generation_continues_a_fed_context(model):
    tok = get_tokenizer("bytes")
    context, prompt = "The quick brown fox jumps over the lazy dog. " * 2, "And then"
    state, logits = feed(model, torch.tensor(tok.encode(context)), chunk_size=32)
    after = generate_text(model, tok, prompt, max_new_tokens=6, temperature=0, state=state, logits=logits)
    assert after == generate_text(model, tok, context + prompt, max_new_tokens=6, temperature=0)
    # An empty prompt continues the context itself, from the logits feed returned.
    state, logits = feed(model, torch.tensor(tok.encode(context)), chunk_size=32)
    after = generate_text(model, tok, "", max_new_tokens=6, temperature=0, state=state, logits=logits)
    assert after == generate_text(model, tok, context, max_new_tokens=6, temperature=0)


def test_feed_restores_mode_and_rejects_bad_input():
    model = lmzoo.create_model("transformer", "nano").train()
    feed(model, torch.tensor([1, 2, 3]))
    assert model.training
    ids = torch.tensor([[4, 5, 6]])
    model(ids, labels=ids).loss.backward()  # what feeding cached (RoPE tables) does not block training
    with pytest.raises(LmzooError, match="nothing to feed"):
        feed(model, [])
    with pytest.raises(LmzooError, match="chunk_size"):
        feed(model, torch.tensor([1, 2]), chunk_size=0)
    with pytest.raises(LmzooError, match="same batch size"):
        feed(model, [torch.zeros(2, 3, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long)], chunk_size=100)
    with pytest.raises(LmzooError, match="one prompt"):
        generate_text(model, get_tokenizer("bytes"), ["a", "b"], state=model.init_state())
    with pytest.raises(LmzooError, match="logits"):
        generate_text(model, get_tokenizer("bytes"), "", state=model.init_state())


def test_state_nbytes_tells_a_growing_state_from_a_constant_one():
    ids = torch.randint(0, 256, (64,))
    for overrides, grows in (({}, True), ({"window": 7}, False)):
        model = lmzoo.create_model("transformer", "nano", **overrides)
        state, _ = feed(model, ids, chunk_size=64)
        first = state.nbytes()
        feed(model, ids, state=state, chunk_size=64)
        assert (state.nbytes() > first) == grows


# ---- reading a file in pieces ----------------------------------------------------------------
TEXT = "Grüße aus Köln: 日本語 😀 naïve\r\ncafé  au lait, x 123's.\n\n\tEnde!\n" * 12 + "tail"


def ids_of(path, tok, chunk_chars):
    chunks = list(iter_file_token_chunks(path, tok, chunk_chars=chunk_chars))
    assert all(c.dim() == 1 and c.dtype == torch.long for c in chunks)
    return chunks, torch.cat(chunks).tolist()


def test_file_chunks_reproduce_the_whole_text_encoding_for_bytes(tmp_path):
    path = tmp_path / "context.txt"
    path.write_bytes(TEXT.encode())
    tok = get_tokenizer("bytes")
    for chunk_chars in (1, 2, 3, 5, 7, 64):  # multi-byte characters fall across every kind of boundary
        chunks, ids = ids_of(path, tok, chunk_chars)
        assert ids == tok.encode(TEXT) and len(chunks) > 1
    path.write_bytes(b"\xef\xbb\xbf" + TEXT.encode())  # a byte-order mark is not content
    assert ids_of(path, tok, 5)[1] == tok.encode(TEXT)


def test_file_chunks_cut_where_bpe_sees_whole_words(tmp_path):
    path = tmp_path / "context.txt"
    path.write_bytes(TEXT.encode())
    tok = TOKENIZER_KINDS["bpe"].train([TEXT], vocab_size=300)
    for chunk_chars in (16, 40, 100):
        chunks, ids = ids_of(path, tok, chunk_chars)
        assert ids == tok.encode(TEXT) and len(chunks) > 1


@pytest.mark.parametrize("content,needle", [
    (None, "not found"),
    ("dir", "is a directory"),
    (b"", "is empty"),
    (b"\xef\xbb\xbf", "no text"),
    (b"ok\n\xff\xfe broken", "invalid byte at offset 3"),
    (b"abcdef\xe4A", "invalid byte at offset 6"),  # after a piece boundary
    (b"abcd\xc3", "invalid byte at offset 4"),  # a character cut off by the end of the file
])
def test_file_chunk_errors_are_one_line(tmp_path, content, needle):
    path = tmp_path / "context.txt"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(LmzooError, match=needle) as err:
        list(iter_file_token_chunks(path, get_tokenizer("bytes"), chunk_chars=4))
    assert "\n" not in str(err.value) and ";" in str(err.value)
