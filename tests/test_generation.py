import io

import pytest
import torch

import lmzoo
from lmzoo.errors import LmzooError
from lmzoo.generation import TextStreamer, apply_repetition_penalty, filter_top_k_top_p, generate_text
from lmzoo.tokenizers import get_tokenizer


@pytest.fixture(params=lmzoo.list_architectures())
def model(request):
    torch.manual_seed(0)
    return lmzoo.create_model(request.param, "nano").eval()


def test_greedy_generation_matches_full_recompute(model):
    ids = torch.randint(0, 256, (2, 9))
    out = model.generate(ids, max_new_tokens=12, temperature=0)
    seq = ids
    for _ in range(12):
        nxt = model(seq).logits[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], 1)
    assert torch.equal(out, seq)


def test_seeded_sampling_is_reproducible_and_top_k_1_is_greedy(model):
    ids = torch.randint(0, 256, (1, 5))
    a = model.generate(ids, 10, temperature=1.0, top_p=0.9, seed=3)
    b = model.generate(ids, 10, temperature=1.0, top_p=0.9, seed=3)
    assert torch.equal(a, b)
    assert torch.equal(model.generate(ids, 10, top_k=1, seed=1), model.generate(ids, 10, temperature=0))


def test_eos_stops_and_pads():
    torch.manual_seed(0)
    model = lmzoo.create_model("transformer", "nano").eval()
    ids = torch.randint(0, 256, (1, 4))
    first = int(model.generate(ids, 1, temperature=0)[0, -1])
    out = model.generate(ids, 20, temperature=0, eos_token_id=first)
    assert out.shape[1] == 5


def test_top_k_top_p_filters():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    assert torch.isinf(filter_top_k_top_p(logits, 2, None)[0, 2:]).all()
    kept = ~torch.isinf(filter_top_k_top_p(logits, None, 0.5))
    assert kept.tolist() == [[True, False, False, False]]
    kept = ~torch.isinf(filter_top_k_top_p(logits, None, 0.9))
    assert kept.tolist() == [[True, True, True, False]]


def test_repetition_penalty_lowers_seen_tokens():
    logits = torch.tensor([[2.0, -2.0, 2.0]])
    seen = torch.tensor([[True, True, False]])
    assert apply_repetition_penalty(logits, seen, 2.0).tolist() == [[1.0, -4.0, 2.0]]


def test_generate_text_batches_unequal_prompts_and_cuts_at_stop(model):
    tok = get_tokenizer("bytes")
    prompts = ["ab", "hello world", "xyz"]
    together = generate_text(model, tok, prompts, max_new_tokens=8, temperature=0)
    alone = [generate_text(model, tok, p, max_new_tokens=8, temperature=0)[0] for p in prompts]
    assert together == alone
    text = alone[1]
    if len(text) > 2:
        stop = text[2]
        cut = generate_text(model, tok, "hello world", max_new_tokens=8, temperature=0, stop_strings=[stop])[0]
        assert cut == text[: text.index(stop)]


def test_streamer_holds_back_partial_utf8():
    out = io.StringIO()
    streamer = TextStreamer(get_tokenizer("bytes"), file=out)
    for b in "ä!".encode():
        streamer.put(torch.tensor([b]))
        assert "\ufffd" not in out.getvalue()
    streamer.end()
    assert out.getvalue() == "ä!\n"


def test_bad_options_are_clear():
    model = lmzoo.create_model("transformer", "nano")
    with pytest.raises(LmzooError, match="top_p"):
        model.generate(torch.tensor([[1, 2]]), 3, top_p=1.5)
    with pytest.raises(LmzooError, match="temperature"):
        model.generate(torch.tensor([[1, 2]]), 3, temperature=-1)
