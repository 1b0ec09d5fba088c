"""The one chat template lmzoo uses (the `chat` verb and the server's chat endpoint).

lmzoo's models are base language models without special chat tokens, so a conversation is
rendered as plain text that any tokenizer (bytes included) can encode:

    System: You are terse.
    User: Hello
    Assistant: Hi.
    User: How are you?
    Assistant:

Each message is one `Role: text` line (its text stripped), and the prompt ends with `Assistant:`
so the model continues as the assistant. A reply ends where the model starts the next turn, so
callers pass `STOP_STRINGS` as stop strings.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from lmzoo.errors import LmzooError

ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}
# A reply ends where the model begins another turn.
STOP_STRINGS = ("\nUser:", "\nSystem:")


def format_chat(messages: Sequence[Mapping[str, str]]) -> str:
    """The prompt text for a conversation (a list of {"role", "content"}), ending with `Assistant:`."""
    if not messages:
        raise LmzooError("a chat needs at least one message")
    lines = []
    for i, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise LmzooError(f"message {i} has role {role!r}; use one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise LmzooError(f"message {i} content must be text, got {type(content).__name__}")
        lines.append(f"{ROLES[role]}: {content.strip()}")
    lines.append(f"{ROLES['assistant']}:")
    return "\n".join(lines)


def reply_text(generated: str) -> str:
    """The assistant's reply from the generated continuation: up to the next turn, trimmed."""
    cuts = [generated.find(s) for s in STOP_STRINGS if s in generated]
    return (generated[: min(cuts)] if cuts else generated).strip()
