"""Continuous batching: rows that join at different steps decode exactly as each alone."""
import pytest
import torch
from conftest import contract_cases

import lmzoo
from lmzoo.batching import BatchDecoder
from lmzoo.chat import STOP_STRINGS, format_chat, reply_text
from lmzoo.errors import LmzooError

CASES = list(contract_cases())


def alone(model, prompt, fed):
    """Logits after the prompt and each fed token, decoding the row by itself from scratch."""
    ids = torch.tensor([prompt + fed])
    with torch.no_grad():
        return model(ids).logits[0, len(prompt) - 1:]


@pytest.mark.parametrize("arch,overrides", CASES)
def test_rows_joining_at_different_steps_match_each_row_alone(arch, overrides):
    torch.manual_seed(0)
    model = lmzoo.create_model(arch, "nano", **overrides).eval()
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, model.config.vocab_size, (n,), generator=g).tolist() for n in (9, 3, 14)]
    join_at = [0, 2, 5]  # the step at which each row joins
    decoder = BatchDecoder(model)
    handles, fed, logits = {}, {}, {}
    for step in range(9):
        for row, start in enumerate(join_at):
            if start == step:
                handle, out = decoder.add(prompts[row])
                handles[row], fed[row], logits[row] = handle, [], [out.logits]
        if step == 6:  # a row leaves mid-stream; the others go on
            decoder.remove(handles.pop(0))
        tokens = {handles[row]: int(logits[row][-1].argmax()) for row in handles}
        outs = decoder.step(tokens)
        for row, handle in handles.items():
            fed[row].append(tokens[handle])
            logits[row].append(outs[handle].logits)
    for row in range(3):
        expected = alone(model, prompts[row], fed[row])
        got = torch.stack(logits[row])
        scale = max(1.0, float(expected.abs().max()))
        assert float((got - expected).abs().max()) <= 1e-4 * scale
    assert decoder.active == [handles[1], handles[2]]
    assert decoder.position(handles[2]) == len(prompts[2]) + len(fed[2])


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
