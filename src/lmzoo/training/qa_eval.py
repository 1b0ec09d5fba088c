"""Question-answer data, the one prompt template, and Q&A evaluation (exact / substring match).

Fine-tuning (`finetune.py`) and evaluation both build prompts with `format_prompt`, so a model
is always asked a question in exactly the form it was trained on. A fine-tuned model directory
holds its template in `finetune.json`; `template_for` reads it back, so `lmzoo eval --qa` needs
no `--template` for a model lmzoo fine-tuned.

A Q&A file is JSONL, one object per line, in any of three common shapes:

    {"question": ..., "answer": ...}
    {"prompt": ..., "completion": ...}
    {"instruction": ..., "input": ... (optional), "output": ...}
"""
from __future__ import annotations

import json
import string
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import torch

from lmzoo.data.sources import iter_jsonl
from lmzoo.errors import LmzooError

DEFAULT_TEMPLATE = "Question: {question}\nAnswer: "
FINETUNE_REPORT = "finetune.json"
# (question key, answer key) pairs tried in order; `instruction` also folds in an optional `input`.
_SHAPES = (("question", "answer"), ("prompt", "completion"), ("instruction", "output"))


@dataclass(frozen=True)
class QAExample:
    question: str
    answer: str


def unescape(text: str) -> str:
    r"""Turn a typed `\n` / `\t` into the character: shells pass them literally (`'Q: {question}\nA: '`)."""
    return text.replace("\\n", "\n").replace("\\t", "\t")


def check_template(template: str) -> str:
    if "{question}" not in template:
        raise LmzooError(f"the prompt template {template!r} has no {{question}} placeholder; "
                         "use e.g. 'Question: {question}\\nAnswer: '")
    return template


def format_prompt(question: str, template: str = DEFAULT_TEMPLATE) -> str:
    """The text the model sees before its answer (training and evaluation alike).

    A plain replace rather than str.format: braces inside a question are just text.
    """
    return check_template(template).replace("{question}", question)


def _example(record: dict, where: str) -> QAExample:
    for q_key, a_key in _SHAPES:
        if q_key in record and a_key in record:
            question, answer = record[q_key], record[a_key]
            if q_key == "instruction" and record.get("input"):
                question = f"{question}\n{record['input']}"
            if not isinstance(question, str) or not isinstance(answer, str):
                raise LmzooError(f"{where}: '{q_key}' and '{a_key}' must be strings")
            if not question.strip() or not answer.strip():
                raise LmzooError(f"{where}: empty '{q_key}' or '{a_key}'; remove the line or fill it in")
            return QAExample(question, answer)
    raise LmzooError(f"{where}: no question/answer fields (keys {sorted(record)[:5]}); each line needs "
                     "question+answer, prompt+completion or instruction(+input)+output")


def read_qa_jsonl(path: str | Path) -> list[QAExample]:
    """All examples of a Q&A JSONL file; blank lines are skipped, anything malformed is an error."""
    path = Path(path)
    if not path.is_file():
        raise LmzooError(f"no Q&A file at '{path}'; pass a JSONL file of question/answer objects")
    examples = [_example(record, where) for where, record in iter_jsonl(path)]
    if not examples:
        raise LmzooError(f"{path} holds no Q&A examples; add lines like "
                         '{"question": "...", "answer": "..."}')
    return examples


def template_for(model_dir: str | Path) -> str:
    """The template a model was fine-tuned with (its finetune.json), else the default."""
    report = Path(model_dir) / FINETUNE_REPORT
    if report.is_file():
        try:
            template = json.loads(report.read_text(encoding="utf-8")).get("template")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            template = None
        if isinstance(template, str):
            return template
    return DEFAULT_TEMPLATE


# ---- metrics -----------------------------------------------------------------------------------
def normalize_answer(text: str) -> str:
    """Lowercase, punctuation removed (any Unicode punctuation), whitespace collapsed."""
    text = "".join(" " if unicodedata.category(c).startswith("P") or c in string.punctuation else c
                   for c in text.lower())
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(reference)


def substring_match(prediction: str, reference: str) -> bool:
    """The reference occurs in the prediction (both normalised); an empty reference never matches."""
    ref = normalize_answer(reference)
    return bool(ref) and ref in normalize_answer(prediction)


# ---- evaluation --------------------------------------------------------------------------------
def generate_answers(model, tokenizer, questions: list[str], template: str = DEFAULT_TEMPLATE,
                     max_new_tokens: int = 64, batch_size: int = 16) -> list[str]:
    """Greedy answers, each cut at its first newline (or eos). Prompts are sorted by length and
    batched, so equal-length prompts share a forward pass."""
    from lmzoo.generation import generate_text

    if batch_size < 1:
        raise LmzooError(f"batch_size must be >= 1, got {batch_size}")
    prompts = [format_prompt(q, template) for q in questions]
    order = sorted(range(len(prompts)), key=lambda i: len(tokenizer.encode(prompts[i])))
    answers: list[str] = [""] * len(prompts)
    for begin in range(0, len(order), batch_size):
        chunk = order[begin:begin + batch_size]
        texts = generate_text(model, tokenizer, [prompts[i] for i in chunk], max_new_tokens=max_new_tokens,
                              stop_strings=["\n"], temperature=0.0)
        for i, text in zip(chunk, texts):
            answers[i] = text.split("\n", 1)[0].strip()
    return answers


@torch.no_grad()
def evaluate_qa(model, tokenizer, examples: list[QAExample], template: str = DEFAULT_TEMPLATE,
                max_new_tokens: int = 64, batch_size: int = 16) -> dict:
    """Greedy-answer every question; return exact_match and substring_match (shares of the
    examples), n, and `items` (question, reference, prediction, exact, substring per example)."""
    if not examples:
        raise LmzooError("no Q&A examples to evaluate")
    predictions = generate_answers(model, tokenizer, [e.question for e in examples], template,
                                   max_new_tokens, batch_size)
    items = [{"question": e.question, "reference": e.answer, "prediction": p,
              "exact": exact_match(p, e.answer), "substring": substring_match(p, e.answer)}
             for e, p in zip(examples, predictions)]
    n = len(items)
    return {"exact_match": sum(i["exact"] for i in items) / n,
            "substring_match": sum(i["substring"] for i in items) / n,
            "n": n, "template": template, "items": items}
