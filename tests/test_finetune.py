"""Fine-tuning (full / freeze / LoRA) and Q&A evaluation, on tiny models of every architecture."""
import argparse
import json
import signal
import string
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import lmzoo
from lmzoo.cli.main import main
from lmzoo.errors import LmzooError
from lmzoo.tokenizers.byte import ByteTokenizer
from lmzoo.training import qa_eval
from lmzoo.training.checkpointing import list_checkpoints, load_checkpoint, step_of
from lmzoo.training.config import add_config_arguments, config_from_args
from lmzoo.training.finetune import (
    FinetuneConfig,
    QATask,
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
    ('{"question": "q"\n', "invalid JSON"),
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


# ---- one loop: resume, checkpoints, metrics --------------------------------------------------
class Killed(Exception):
    """Stands in for a crash: the run ends between two checkpoints."""


def interrupt_at(monkeypatch, step: int, how: str) -> None:
    """Make the run crash (`kill`) or get Ctrl-C (`sigint`) while drawing the batch of `step` (0-based)."""
    draw = QATask.batch

    def batch(self, at, env):
        if at == step:
            if how == "kill":
                raise Killed
            signal.raise_signal(signal.SIGINT)  # the trainer finishes the step, checkpoints and stops
        return draw(self, at, env)
    monkeypatch.setattr(QATask, "batch", batch)


def resume_args(base, data, out, method):
    # 6 train examples, 2 per step (1 per micro-batch): 3 steps per epoch, 9 in all; LoRA with
    # dropout, so the resumed run also needs the restored random state.
    return [str(base), "--data", str(data), "--out", str(out), "--method", method, "--template", TEMPLATE,
            "--epochs", "3", "--batch-size", "1", "--grad-accum", "2", "--val-fraction", "0.25", "--lr", "3e-3",
            "--lora-dropout", "0.1", "--checkpoint-interval", "2", "--keep-last", "2", "--threads", "1"]


@pytest.mark.parametrize("method", ["full", "lora"])
def test_killed_and_stopped_finetune_resumes_to_the_same_weights(method, bases, qa_file, tmp_path, monkeypatch):
    args = resume_args(bases / "spike-walze", qa_file, tmp_path / "reference", method)
    reference = finetune(config_from_args(parse_finetune(args), FinetuneConfig), verbose=False)

    out = tmp_path / "ft"
    args = resume_args(bases / "spike-walze", qa_file, out, method)
    with monkeypatch.context() as patch:  # crash in step 4: the checkpoint of step 2 survives
        interrupt_at(patch, 3, "kill")
        with pytest.raises(Killed):
            main(["finetune", *args])
    assert [step_of(p) for p in list_checkpoints(tmp_path / "ft.run" / "checkpoints")] == [2]
    with monkeypatch.context() as patch:  # Ctrl-C in step 7: the run saves step 7 and exits 130
        interrupt_at(patch, 6, "sigint")
        assert main(["finetune", *args]) == 130
    assert not out.exists()  # nothing in --out until the run is complete
    checkpoint = load_checkpoint(list_checkpoints(tmp_path / "ft.run" / "checkpoints")[-1])
    assert checkpoint.step == 7 and checkpoint.trainer_state["task"] == "finetune"
    if method == "lora":  # the adapters stay unmerged in a checkpoint, so that it resumes exactly
        assert any(".lora_A." in k for k in checkpoint.model_state)
    report = finetune(config_from_args(parse_finetune(args), FinetuneConfig), verbose=False)

    assert report["steps"] == reference["steps"] == 9
    assert report["epochs"] == reference["epochs"]  # the losses of every evaluation, bit for bit
    expected, resumed = lmzoo.load(tmp_path / "reference").state_dict(), lmzoo.load(out).state_dict()
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)
    again = finetune(config_from_args(parse_finetune(args), FinetuneConfig), verbose=False)  # a finished run
    assert again["epochs"] == reference["epochs"] and lmzoo.load(out).state_dict().keys() == expected.keys()
    if method == "lora":
        with pytest.raises(LmzooError, match="does not match architecture"):
            lmzoo.load(tmp_path / "ft.run")  # its newest checkpoint, adapters unmerged


def parse_finetune(argv):
    return add_config_arguments(argparse.ArgumentParser(), FinetuneConfig).parse_args(argv)


def test_finetune_writes_metrics_and_checkpoints(bases, qa_file, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    in_train_mode, draw = [], QATask.batch  # the base model is loaded in eval mode; every step must train
    monkeypatch.setattr(QATask, "batch", lambda self, step, env: (
        in_train_mode.append(all(m.training for m in self.adapted.modules())), draw(self, step, env))[1])
    report = finetune(FinetuneConfig(base=str(bases / "transformer"), data=str(qa_file), out=str(tmp_path / "ft"),
                                     run_dir=str(run_dir), method="full", template=TEMPLATE, epochs=2, batch_size=2,
                                     val_fraction=0.25, log_interval=2, checkpoint_interval=2, keep_last=0),
                      verbose=False)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["type"] == "train"]
    evals = [r for r in rows if r["type"] == "eval"]
    assert [r["step"] for r in train] == [2, 4, 6] and [r["epoch"] for r in train] == [1, 2, 2]
    assert all(r["loss"] > 0 and r["tokens"] > 0 and r["lr"] > 0 for r in train)
    assert [r["step"] for r in evals] == [0, 3, 6]  # before training and at each epoch's end
    assert "train_loss" not in evals[0] and all(r["val_loss"] > 0 and r["train_loss"] > 0 for r in evals[1:])
    assert [(e["step"], e["val_loss"]) for e in report["epochs"]] == [(r["step"], r["val_loss"]) for r in evals]
    assert [step_of(p) for p in list_checkpoints(run_dir / "checkpoints")] == [2, 4, 6]
    assert in_train_mode == [True] * 6


def test_two_processes_finetune_like_one(bases, qa_file, tmp_path):
    """torchrun (DDP, gloo): each rank takes half of a step's examples, as one process accumulating two."""
    args = [str(bases / "transformer"), "--data", str(qa_file), "--method", "lora", "--template", TEMPLATE,
            "--epochs", "2", "--batch-size", "1", "--val-fraction", "0.25", "--lr", "3e-3", "--threads", "1",
            "--device", "cpu"]
    one = finetune(config_from_args(parse_finetune([*args, "--out", str(tmp_path / "one"), "--grad-accum", "2"]),
                                    FinetuneConfig), verbose=False)
    guard = Path(__file__).with_name("torchrun_guard.py")  # also: no DDP wrapper outlives the process group
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(guard), "finetune", *args, "--out", str(tmp_path / "two")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "finetune.json").read_text())
    assert two["steps"] == one["steps"] == 6
    assert [e["val_loss"] for e in two["epochs"]] == pytest.approx([e["val_loss"] for e in one["epochs"]], abs=1e-5)
    expected, got = lmzoo.load(tmp_path / "one").state_dict(), lmzoo.load(tmp_path / "two").state_dict()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-4)


def test_finetune_refuses_a_pretraining_run_dir(bases, qa_file, tmp_path):
    foreign = tmp_path / "pretrain" / "checkpoints" / "step-0000010"
    foreign.mkdir(parents=True)
    (foreign / "trainer_state.json").write_text(json.dumps({"step": 10, "tokens_seen": 640}))
    cfg = FinetuneConfig(base=str(bases / "transformer"), data=str(qa_file), out=str(tmp_path / "ft"),
                         run_dir=str(tmp_path / "pretrain"), resume="none")
    with pytest.raises(LmzooError, match="holds checkpoints of a `lmzoo train` run"):
        finetune(cfg, verbose=False)
    assert foreign.is_dir() and not (tmp_path / "ft").exists()


def test_finetune_flags_come_from_the_config(tmp_path):
    parser = add_config_arguments(argparse.ArgumentParser(), FinetuneConfig)
    helps = {a.dest: a.help for a in parser._actions}
    assert all(helps.get(name) for name in FinetuneConfig.field_names())
    recipe = tmp_path / "ft.yaml"
    recipe.write_text("data: qa.jsonl\nout: ft\nmethod: lora\nlora_targets: [q, kv]\nlr: 5e-4\n")
    cfg = config_from_args(parser.parse_args(["base", "--config", str(recipe), "--template", "{question}\\n=",
                                              "--lora-targets", "qkv, out", "--grad-accum", "2"]), FinetuneConfig)
    assert (cfg.base, cfg.data, cfg.method, cfg.lr, cfg.grad_accum) == ("base", "qa.jsonl", "lora", 5e-4, 2)
    assert cfg.template == "{question}\n=" and cfg.lora_targets == ("qkv", "out")
    assert FinetuneConfig(base="b", data="d", out="o", method="lora").lr == 1e-3  # the method's default
    with pytest.raises(LmzooError, match="missing --data, --out"):
        config_from_args(parser.parse_args(["base"]), FinetuneConfig)
    with pytest.raises(LmzooError, match="unknown fine-tuning key"):
        FinetuneConfig.from_dict({"base": "b", "data": "d", "out": "o", "learning_rate": 1.0})


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
    assert main(["finetune", str(bases / "transformer"), "--data", str(qa_file), "--out", "x",
                 "--method", "bogus"]) == 2
    assert "invalid choice: 'bogus'" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["finetune", str(bases / "transformer"), "--data", str(empty), "--out", str(tmp_path / "o")]) == 2
    assert "holds no Q&A examples" in capsys.readouterr().err
    assert main(["finetune", str(bases / "transformer"), "--data", str(qa_file), "--out", str(tmp_path / "o"),
                 "--lora-targets", "nothing"]) == 2
    assert "no Linear layer named ['nothing']" in capsys.readouterr().err
    assert main(["eval", str(bases / "transformer")]) == 2
    assert "pass one of --data" in capsys.readouterr().err
