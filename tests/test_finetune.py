"""Fine-tuning (full / freeze / LoRA) and Q&A evaluation, on tiny models of every architecture."""
import json
import string
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import lmzoo
from lmzoo.cli.main import main
from lmzoo.errors import LmzooError
from lmzoo.tokenizers.byte import ByteTokenizer
from lmzoo.training import qa_eval
from lmzoo.training.finetune import (
    FinetuneConfig,
    add_lora,
    build_example,
    collate,
    count_parameters,
    epoch_batches,
    finetune,
    freeze_layers,
    lora_targets,
    merge_lora,
    split_examples,
)
from lmzoo.training.qa_eval import (
    QAExample,
    evaluate_qa,
    exact_match,
    format_prompt,
    normalize_answer,
    read_qa_jsonl,
    substring_match,
)

pytest.importorskip("peft")
ARCHS = lmzoo.list_architectures()
TEMPLATE = "{question}="
LETTERS = string.ascii_lowercase


# The Q&A examples are a few tokens long: efficia-1's memory and GRU act only after a complete
# segment (and its queries matter only with two slots to choose from), so its segments must be
# much shorter than an example for LoRA on them to learn anything.
TINY_OVERRIDES = {"efficia-1": {"segment": 1, "window": 2}}


def tiny(arch: str):
    torch.manual_seed(0)
    return lmzoo.create_model(arch, "nano", vocab_size=259, d_model=32, n_layers=2, **TINY_OVERRIDES.get(arch, {}))


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """A saved tiny model (bytes tokenizer) per architecture."""
    root = tmp_path_factory.mktemp("bases")
    for arch in ARCHS:
        tiny(arch).save_pretrained(root / arch, ByteTokenizer())
    return root


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory):
    """'what comes after x' -> the next letter: learnable from the examples alone."""
    path = tmp_path_factory.mktemp("qa") / "qa.jsonl"
    path.write_text("".join(json.dumps({"question": c, "answer": LETTERS[i + 1]}) + "\n"
                            for i, c in enumerate(LETTERS[:8])))
    return path


def ids(n=12, batch=2):
    return torch.randint(0, 256, (batch, n), generator=torch.Generator().manual_seed(1))


# ---- data ----------------------------------------------------------------------------------------
def test_label_builder_masks_the_prompt_exactly():
    tok = ByteTokenizer()
    prompt = format_prompt("2+2?", "Q: {question}\nA: ")
    assert prompt == "Q: 2+2?\nA: "
    x, y = build_example(tok, prompt, "4")
    assert x == list(prompt.encode()) + [ord("4"), tok.eos_id]
    assert y == [-100] * len(prompt.encode()) + [ord("4"), tok.eos_id]


def test_loss_covers_only_answer_tokens():
    """The model's loss over built labels equals cross-entropy at the answer positions alone."""
    model = tiny("transformer").eval()
    x, y = build_example(ByteTokenizer(), "question: ", "ab")
    ids_, labels = torch.tensor([x]), torch.tensor([y])
    logits = model(ids_).logits[0]
    n_prompt = len("question: ")
    # position t predicts token t+1: the answer's 3 tokens (a, b, eos) come from positions n_prompt-1 ..
    expected = nn.functional.cross_entropy(logits[n_prompt - 1:-1], ids_[0, n_prompt:])
    torch.testing.assert_close(model(ids_, labels=labels).loss, expected)


def test_collate_pads_with_eos_and_ignored_labels():
    batch_ids, batch_labels = collate([([1, 2, 3], [-100, 2, 3]), ([4], [4])], pad_id=256)
    assert batch_ids.tolist() == [[1, 2, 3], [4, 256, 256]]
    assert batch_labels.tolist() == [[-100, 2, 3], [4, -100, -100]]


def test_split_and_batches_are_deterministic():
    examples = [QAExample(str(i), "x") for i in range(20)]
    train, val = split_examples(examples, 0.2, seed=3)
    assert len(val) == 4 and len(train) == 16 and not set(train) & set(val)
    assert (train, val) == split_examples(examples, 0.2, seed=3)
    lengths = [i % 7 for i in range(20)]
    batches = epoch_batches(lengths, 4, seed=0, epoch=1)
    assert batches == epoch_batches(lengths, 4, seed=0, epoch=1)
    assert sorted(i for b in batches for i in b) == list(range(20))


def test_read_qa_accepts_three_shapes(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text('{"question": "q1", "answer": "a1"}\n\n{"prompt": "q2", "completion": "a2"}\n'
                    '{"instruction": "q3", "input": "ctx", "output": "a3"}\n{"instruction": "q4", "output": "a4"}\n')
    assert read_qa_jsonl(path) == [QAExample("q1", "a1"), QAExample("q2", "a2"), QAExample("q3\nctx", "a3"),
                                   QAExample("q4", "a4")]


@pytest.mark.parametrize("content, message", [
    ("", "holds no Q&A examples"),
    ("\n  \n", "holds no Q&A examples"),
    ('{"question": "q"\n', "not valid JSON"),
    ('{"text": "x"}\n', "no question/answer fields"),
    ('["q", "a"]\n', "expected a JSON object"),
    ('{"question": "q", "answer": ""}\n', "empty"),
])
def test_read_qa_errors(tmp_path, content, message):
    path = tmp_path / "qa.jsonl"
    path.write_text(content)
    with pytest.raises(LmzooError, match=message):
        read_qa_jsonl(path)


# ---- methods -------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_lora_on_every_architecture(arch, tmp_path):
    """Adapters start as a no-op, change the output only through lora_B, and merge into a plain
    checkpoint with the same logits; the trainable count is exactly the adapters'."""
    model = tiny(arch).eval()
    x = ids()
    base_logits = model(x).logits
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    base_total = count_parameters(model)[1]
    targets = lora_targets(model)
    shapes = {name: model.get_submodule(name).weight.shape for name in targets}
    peft_model = add_lora(model, r=4, alpha=8, targets=()).eval()
    trainable, total = count_parameters(peft_model)
    assert trainable == sum(4 * (out_f + in_f) for out_f, in_f in shapes.values())
    assert total == base_total + trainable
    assert all(("lora_" in n) == p.requires_grad for n, p in peft_model.named_parameters())
    torch.testing.assert_close(peft_model(x).logits, base_logits, rtol=0, atol=0)  # B = 0 at init
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    lora_logits = peft_model(x).logits
    assert not torch.allclose(lora_logits, base_logits, atol=1e-4), "LoRA adapters were bypassed"
    merged = merge_lora(peft_model)
    assert type(merged) is type(model) and not any("lora" in k for k in merged.state_dict())
    changed = {k for k, v in merged.state_dict().items() if not torch.equal(v, base_state[k])}
    assert changed == {f"{t}.weight" for t in targets}  # nothing but the adapted weights moved
    merged.save_pretrained(tmp_path / "merged")
    reloaded = lmzoo.load(tmp_path / "merged")
    torch.testing.assert_close(reloaded(x).logits, lora_logits, rtol=1e-4, atol=1e-4)


def test_transformer_fused_qkv_uses_the_adapter():
    """Attention slices its fused qkv weight for speed; a wrapped qkv must go through its call."""
    model = tiny("transformer")
    assert lora_targets(model) == ["blocks.0.attn.qkv", "blocks.1.attn.qkv"]
    peft_model = add_lora(model)
    out = peft_model(ids(), labels=ids())
    out.loss.backward()
    grads = [p.grad for n, p in peft_model.named_parameters() if "lora_A" in n]
    assert grads and all(g is not None for g in grads)


def test_lora_target_errors():
    model = tiny("transformer")
    with pytest.raises(LmzooError, match="match.*no Linear layer"):
        lora_targets(model, ("qkv", "nonexistent"))
    no_attention = nn.Module()
    no_attention.config = SimpleNamespace(arch="toy")
    no_attention.lora_targets = ("qkv",)
    no_attention.proj = nn.Linear(4, 4)
    with pytest.raises(LmzooError, match="no Linear layer named .* pass --lora-targets with some of: proj"):
        lora_targets(no_attention)
    assert lora_targets(model, ("out",)) == ["blocks.0.attn.out", "blocks.1.attn.out"]


def test_freeze_layers_marks_embedding_and_first_blocks():
    model = tiny("transformer")
    freeze_layers(model, 1)
    assert not model.embed.weight.requires_grad and not model.lm_head.weight.requires_grad
    assert not any(p.requires_grad for p in model.blocks[0].parameters())
    assert all(p.requires_grad for p in model.blocks[1].parameters())
    trainable, total = count_parameters(model)
    assert total == sum(p.numel() for p in model.parameters())
    assert trainable == sum(p.numel() for p in [*model.blocks[1].parameters(), *model.norm.parameters()])
    with pytest.raises(LmzooError, match="out of range"):
        freeze_layers(model, 3)


def test_config_errors():
    with pytest.raises(LmzooError, match="unknown fine-tuning method 'adapter'"):
        FinetuneConfig(base="b", data="d", out="o", method="adapter")
    with pytest.raises(LmzooError, match="no \\{question\\} placeholder"):
        FinetuneConfig(base="b", data="d", out="o", template="Q: {q}")


# ---- end to end ----------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["full", "freeze", "lora"])
@pytest.mark.parametrize("arch", ARCHS)
def test_finetune_end_to_end(arch, method, bases, qa_file, tmp_path):
    out = tmp_path / "ft"
    report = finetune(FinetuneConfig(base=str(bases / arch), data=str(qa_file), out=str(out), method=method,
                                     template=TEMPLATE, epochs=4, batch_size=4, val_fraction=0.25,
                                     lr=1e-2 if method == "lora" else 3e-3, freeze_layers=1), verbose=False)
    assert report["steps"] == 4 * 2 and len(report["epochs"]) == 5
    assert report["examples"] == {"train": 6, "val": 2, "skipped_too_long": 0}
    assert report["train_loss"] < report["epochs"][1]["train_loss"] + 1.0  # it trains, and stays finite
    assert report["trainable_ratio"] == pytest.approx(report["trainable_params"] / report["total_params"])
    assert json.loads((out / "finetune.json").read_text())["template"] == TEMPLATE
    base, tuned = lmzoo.load(bases / arch), lmzoo.load(out)  # a plain checkpoint, no peft needed
    assert tuned.tokenizer is not None and type(tuned) is type(base)
    before, after = base.state_dict(), tuned.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    if method == "full":
        assert report["trainable_ratio"] == 1.0
    elif method == "freeze":
        frozen = {k for k in before if k.startswith(("embed.", "blocks.0.")) or k == "lm_head.weight"}
        assert moved and not moved & frozen  # frozen weights are bit-identical
    else:
        assert report["trainable_ratio"] < 0.1 and report["merge_max_abs_diff"] < 1e-4
        assert moved == {f"{t}.weight" for t in report["lora_targets"]}


def test_full_finetune_learns_the_answers(bases, qa_file, tmp_path):
    finetune(FinetuneConfig(base=str(bases / "transformer"), data=str(qa_file), out=str(tmp_path / "ft"),
                            method="full", template=TEMPLATE, epochs=25, batch_size=8, val_fraction=0, lr=3e-3),
             verbose=False)
    model = lmzoo.load(tmp_path / "ft")
    result = evaluate_qa(model, model.tokenizer, read_qa_jsonl(qa_file), template=TEMPLATE, max_new_tokens=3)
    assert result["exact_match"] >= 0.75, [i["prediction"] for i in result["items"]]


def test_out_must_not_be_the_base(bases, qa_file):
    with pytest.raises(LmzooError, match="is the base model's directory"):
        finetune(FinetuneConfig(base=str(bases / "transformer"), data=str(qa_file),
                                out=str(bases / "transformer")), verbose=False)


# ---- Q&A evaluation ------------------------------------------------------------------------------
def test_answer_normalisation_and_matches():
    assert normalize_answer("  The  Eiffel-Tower!! ") == "the eiffel tower"
    assert normalize_answer("„Berlin“.") == "berlin"
    assert exact_match("berlin.", "Berlin") and not exact_match("in Berlin", "Berlin")
    assert substring_match("It is in Berlin, Germany", "berlin") and not substring_match("Bern", "Berlin")
    assert not substring_match("anything", "...")  # an empty reference never matches


def test_evaluate_qa_metrics_on_a_hand_made_case(monkeypatch):
    predictions = ["Paris", "it is berlin", "Rome?", "no idea"]
    monkeypatch.setattr(qa_eval, "generate_answers", lambda *args, **kwargs: predictions)
    examples = [QAExample("fr", "paris"), QAExample("de", "Berlin"), QAExample("it", "Rome"),
                QAExample("es", "Madrid")]
    result = evaluate_qa(None, None, examples)
    assert result["exact_match"] == 0.5 and result["substring_match"] == 0.75 and result["n"] == 4
    assert [i["exact"] for i in result["items"]] == [True, False, True, False]


def test_generated_answers_stop_at_newline():
    model, tok = tiny("transformer"), ByteTokenizer()
    answers = qa_eval.generate_answers(model, tok, ["a", "bb", "a"], TEMPLATE, max_new_tokens=6, batch_size=2)
    assert len(answers) == 3 and answers[0] == answers[2] and all("\n" not in a for a in answers)


# ---- CLI -----------------------------------------------------------------------------------------
def test_cli_finetune_and_eval(bases, qa_file, tmp_path, capsys):
    out = tmp_path / "ft"
    assert main(["--threads", "1", "finetune", str(bases / "spike-walze"), "--data", str(qa_file), "--out", str(out),
                 "--method", "lora", "--epochs", "1", "--template", "{question}\\n=", "--lora-r", "4"]) == 0
    printed = capsys.readouterr().out  # the trainer's log lines, then the report
    assert "step 1/1 | loss" in printed and "step 1/1 | val loss" in printed
    report = json.loads(printed[printed.index("{"):printed.rindex("}") + 1])
    assert report["method"] == "lora" and 0 < report["trainable_ratio"] < 1
    assert json.loads((out / "finetune.json").read_text())["template"] == "{question}\n="
    items = tmp_path / "items.jsonl"
    assert main(["eval", str(out), "--qa", str(qa_file), "--max-new-tokens", "2", "--json", "--out", str(items)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 8 and result["template"] == "{question}\n=" and 0 <= result["exact_match"] <= 1
    assert len(items.read_text().splitlines()) == 8
    assert main(["eval", str(out), "--qa", str(qa_file), "--max-new-tokens", "2"]) == 0
    assert "exact match" in capsys.readouterr().out


def test_cli_errors(bases, qa_file, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["finetune", str(bases / "transformer"), "--data", str(qa_file), "--out", "x", "--method", "bogus"])
    assert "invalid choice: 'bogus'" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["finetune", str(bases / "transformer"), "--data", str(empty), "--out", str(tmp_path / "o")]) == 2
    assert "holds no Q&A examples" in capsys.readouterr().err
    assert main(["finetune", str(bases / "transformer"), "--data", str(qa_file), "--out", str(tmp_path / "o"),
                 "--lora-targets", "nothing"]) == 2
    assert "no Linear layer named ['nothing']" in capsys.readouterr().err
    assert main(["eval", str(bases / "transformer")]) == 2
    assert "pass --data" in capsys.readouterr().err
