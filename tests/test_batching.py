"""Continuous batching: rows that join at different steps decode exactly as each alone."""
import pytest
import torch
from conftest import contract_cases

import lmzoo
from lmzoo.batching import BatchDecoder, prefill
from lmzoo.chat import STOP_STRINGS, format_chat, reply_text
from lmzoo.errors import LmzooError
from lmzoo.generation import generate_text
from lmzoo.tokenizers import get_tokenizer

CASES = list(contract_cases())


def alone(model, prompt, fed):
    """Logits after the prompt and each fed token, decoding the row by itself from scratch."""
    ids = torch.tensor([prompt + fed])
    with torch.no_grad():
        return model(ids).logits[0, len(prompt) - 1:]


def assert_each_row_matches_alone(model, prompts, fed, logits):
    for row in fed:
        expected = alone(model, prompts[row], fed[row])
        got = torch.stack(logits[row])
        scale = max(1.0, float(expected.abs().max()))
        assert float((got - expected).abs().max()) <= 1e-4 * scale, f"row {row}"


def count_forwards(model):
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    return calls


@pytest.mark.parametrize("arch,overrides", CASES)
def test_rows_joining_at_different_steps_match_each_row_alone(arch, overrides):
    torch.manual_seed(0)
    model = lmzoo.create_model(arch, "nano", **overrides).eval()
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, model.config.vocab_size, (n,), generator=g).tolist() for n in (9, 3, 14, 3, 6)]
    join_at = [0, 2, 5, 2, 2]  # the step at which each row joins (three at step 2, two of one length)
    decoder = BatchDecoder(model)
    calls = count_forwards(model)
    handles, fed, logits = {}, {}, {}
    for step in range(9):
        joining = [row for row, start in enumerate(join_at) if start == step]
        if joining:
            before = len(calls)
            added = decoder.add_many([prompts[row] for row in joining])
            lengths = {len(prompts[row]) for row in joining}
            assert len(calls) - before == (len(lengths) if model.mixed_positions else len(joining))
            for row, (handle, out) in zip(joining, added):
                handles[row], fed[row], logits[row] = handle, [], [out.logits]
        if step == 6:  # a row leaves mid-stream; the others go on
            decoder.remove(handles.pop(0))
        tokens = {handles[row]: int(logits[row][-1].argmax()) for row in handles}
        before = len(calls)
        outs = decoder.step(tokens)
        assert len(calls) == before + 1, "one step must be one model call for all rows"
        for row, handle in handles.items():
            fed[row].append(tokens[handle])
            logits[row].append(outs[handle].logits)
    assert_each_row_matches_alone(model, prompts, fed, logits)
    assert decoder.active == sorted(handles.values())
    assert decoder.position(handles[2]) == len(prompts[2]) + len(fed[2])


# Small windows, segments and roller reaches, so that a row ~900 tokens in and a fresh one cross
# ring, window, segment and FIFO boundaries at different steps.
FAR_CASES = [("transformer", {}), ("transformer", {"window": 7}), ("complexity", {"window": 5}),
             ("spike-walze", {"window": 5, "dilation_cycle": 2, "taps": (0, 1, 3)}),
             ("spike-transformer", {"max_half_life": 8.0}), ("spectral-llm", {}),
             ("efficia-1", {"window": 8, "segment": 4, "memory_slots": 3, "eos_id": 5}),
             ("efficia-1", {"overlap": True, "window": 6, "segment": 5, "memory_slots": 2})]


@pytest.mark.slow  # a 900-token prefill and its reference pass per architecture
@pytest.mark.parametrize("arch,overrides", FAR_CASES, ids=[f"{a}-{o}" for a, o in FAR_CASES])
def test_a_row_far_in_batched_with_fresh_ones_matches_each_alone(arch, overrides):
    torch.manual_seed(0)
    model = lmzoo.create_model(arch, "nano", **overrides).eval()
    g = torch.Generator().manual_seed(2)
    prompts = [torch.randint(0, model.config.vocab_size, (n,), generator=g).tolist() for n in (901, 2, 6)]
    decoder = BatchDecoder(model)
    handles, fed, logits = {}, {}, {}
    for row in (0, 1):
        handles[row], out = decoder.add(prompts[row])
        fed[row], logits[row] = [], [out.logits]
    for step in range(11):
        if step == 3:
            handles[2], out = decoder.add(prompts[2])
            fed[2], logits[2] = [], [out.logits]
        # At step 5 row 1 waits: stepping only some rows copies them out and back in.
        stepping = [row for row in handles if step != 5 or row != 1]
        tokens = {handles[row]: int(torch.randint(0, model.config.vocab_size, (1,), generator=g)) for row in stepping}
        outs = decoder.step(tokens)
        for row in stepping:
            fed[row].append(tokens[handles[row]])
            logits[row].append(outs[handles[row]].logits)
    assert [decoder.position(handles[row]) for row in (0, 1, 2)] == [901 + 11, 2 + 10, 6 + 8]
    # The long row leaves: the others go on, and the state no longer keeps room for its length.
    decoder.remove(handles.pop(0))
    for _ in range(2):
        outs = decoder.step({handles[row]: fed[row][-1] for row in handles})
        for row in handles:
            fed[row].append(fed[row][-1])
            logits[row].append(outs[handles[row]].logits)
    assert_each_row_matches_alone(model, prompts, fed, logits)
    alone_bytes = sum(prefill(model, [prompts[row] + fed[row][:-1]])[0].nbytes() for row in handles)
    assert decoder.nbytes() <= 4 * alone_bytes


def test_prompts_of_different_lengths_generate_together_as_each_alone():
    torch.manual_seed(0)
    model = lmzoo.create_model("efficia-1", "nano", window=8, segment=4, memory_slots=3).eval()
    tokenizer = get_tokenizer("bytes")
    prompts = ["The cat sat.", "Hi", "", "A prompt over segments"]
    calls = count_forwards(model)
    together = generate_text(model, tokenizer, prompts, max_new_tokens=6, temperature=0, repetition_penalty=1.3)
    # One prefill per prompt length, then at most one call per new token for all rows together.
    assert len(calls) <= len({len(tokenizer.encode(p) or [0]) for p in prompts}) + 6
    for prompt, text in zip(prompts, together):
        assert text == generate_text(model, tokenizer, prompt, max_new_tokens=6, temperature=0,
                                     repetition_penalty=1.3)[0]


def test_prefill_keeps_the_rows_in_the_order_given():
    model = lmzoo.create_model("transformer", "nano").eval()
    prompts = [[1, 2, 3], [4], [5, 6, 7], [8, 9]]
    state, logits = prefill(model, prompts)
    assert state.row_positions().tolist() == [3, 1, 3, 2]
    for row, prompt in enumerate(prompts):
        torch.testing.assert_close(logits[row], alone(model, prompt, [])[0], rtol=1e-4, atol=1e-4)
    with pytest.raises(LmzooError, match="different positions"):
        model(torch.tensor([[1, 2]] * 4), state=state)


def test_bad_use_is_refused():
    model = lmzoo.create_model("transformer", "nano").eval()
    decoder = BatchDecoder(model, max_rows=1)
    with pytest.raises(LmzooError, match="at least one token"):
        decoder.add([])
    handle, _ = decoder.add([1, 2])
    with pytest.raises(LmzooError, match="full"):
        decoder.add([3])
    decoder.remove(handle)
    with pytest.raises(LmzooError, match="no active row"):
        decoder.step({handle: 1})


def test_chat_template_renders_turns_and_cuts_the_reply():
    prompt = format_chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": " Hi "}])
    assert prompt == "System: Be brief.\nUser: Hi\nAssistant:"
    assert reply_text(" Hello there.\nUser: more") == "Hello there."
    assert all(s.startswith("\n") for s in STOP_STRINGS)
    with pytest.raises(LmzooError, match="role"):
        format_chat([{"role": "robot", "content": "x"}])
    with pytest.raises(LmzooError, match="at least one"):
        format_chat([])
