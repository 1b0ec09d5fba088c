"""The training loop: schedule, param groups, accumulation, config parsing, NaN policies, eval."""
import argparse
import importlib.util
import json
import math

import pytest
import torch

import lmzoo
import lmzoo.modeling
from lmzoo import create_model
from lmzoo.data import TokenDataset
from lmzoo.errors import LmzooError
from lmzoo.training import TrainConfig, add_train_arguments, config_from_args, evaluate, run_training
from lmzoo.training.checkpointing import load_checkpoint
from lmzoo.training.optim import CosineSchedule, param_groups


def tiny(data_dir, out, **overrides) -> TrainConfig:
    base = dict(arch="transformer", size="nano", model_args={"d_model": 32, "n_layers": 2}, data=str(data_dir),
                out=str(out), seq_len=32, batch_size=4, max_steps=4, warmup_steps=2, log_interval=1,
                eval_interval=0, eval_batches=2, checkpoint_interval=0, threads=1)
    return TrainConfig(**{**base, **overrides})


def rows(out, kind="train"):
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


# ---- schedule and optimizer -------------------------------------------------------------------
def test_schedule_warmup_then_cosine_to_min():
    s = CosineSchedule(peak_lr=1.0, warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    warm = [s(i) for i in range(10)]
    assert warm == sorted(warm) and warm[0] == pytest.approx(0.1) and warm[-1] == pytest.approx(1.0)
    assert s(10) == pytest.approx(1.0)
    assert s(60) == pytest.approx(0.55)  # halfway down the cosine: (1 + 0.1) / 2
    decay = [s(i) for i in range(10, 111)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))
    assert s(110) == pytest.approx(0.1) and s(500) == pytest.approx(0.1)


def test_no_weight_decay_on_norms_biases_embeddings():
    model = create_model("complexity", "nano", d_model=32, n_layers=2, d_ff=64)
    decay, no_decay = param_groups(model, weight_decay=0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0

    def ids(group):
        return {id(p) for p in group["params"]}

    assert id(model.embed.weight) in ids(no_decay)  # also the tied LM head, counted once
    for name, p in model.named_parameters():
        assert (id(p) in ids(no_decay)) == (p.ndim < 2 or name == "embed.weight"), name
    assert ids(decay).isdisjoint(ids(no_decay))
    assert len(ids(decay) | ids(no_decay)) == len({id(p) for p in model.parameters()})
    assert any(p.ndim == 3 for p in decay["params"])  # the stacked expert weights decay


def test_grad_accumulation_matches_a_bigger_batch(data_dir, tmp_path):
    one = run_training(tiny(data_dir, tmp_path / "a", batch_size=4, grad_accum=1))
    two = run_training(tiny(data_dir, tmp_path / "b", batch_size=2, grad_accum=2))
    assert one["tokens"] == two["tokens"]
    losses_a, losses_b = ([r["loss"] for r in rows(out)] for out in (tmp_path / "a", tmp_path / "b"))
    assert losses_a == pytest.approx(losses_b, abs=1e-5)
    wa = load_checkpoint(one["final_checkpoint"]).model_state
    wb = load_checkpoint(two["final_checkpoint"]).model_state
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], atol=1e-5, rtol=1e-4)


def test_metrics_eval_and_summary(data_dir, tmp_path):
    out = tmp_path / "run"
    summary = run_training(tiny(data_dir, out, arch="complexity", max_steps=4, eval_interval=2, log_interval=2))
    train, evals = rows(out), rows(out, "eval")
    assert [r["step"] for r in train] == [2, 4] and [r["step"] for r in evals] == [2, 4]
    assert {"loss", "lr", "tokens", "tok_s", "grad_norm", "skipped_steps", "routing/expert0"} <= set(train[0])
    assert train[-1]["tokens"] == 4 * 4 * 32 and summary["status"] == "completed"
    assert summary["val_loss"] == evals[-1]["val_loss"] and summary["skipped_steps"] == 0
    assert summary["best_val_loss"] == min(r["val_loss"] for r in evals)
    # The run directory itself loads as its newest checkpoint.
    assert lmzoo.load(out).config == lmzoo.load(summary["final_checkpoint"]).config


def test_spike_walze_run_logs_rates_and_anneals_the_gate(data_dir, tmp_path):
    out = tmp_path / "run"
    run_training(tiny(data_dir, out, arch="spike-walze", max_steps=4, log_interval=2, eval_interval=0))
    train = rows(out)
    assert {"spike_rate", "spike_rate/layer0", "gate_temperature"} <= set(train[0])
    assert train[-1]["gate_temperature"] < train[0]["gate_temperature"] < 1.0


def test_evaluate_bits_per_byte(data_dir):
    val = TokenDataset(data_dir, "val")
    model = create_model("transformer", "nano", d_model=32, n_layers=2)
    result = evaluate(model, val, batch_size=2, seq_len=32, max_batches=3)
    assert result["tokens"] == 3 * 2 * 31  # each window predicts seq_len - 1 tokens
    assert result["bpb"] == pytest.approx(result["loss"] / math.log(2) * val.tokens / val.bytes)
    assert result["ppl"] == pytest.approx(math.exp(result["loss"]))
    assert model.training  # restored


def test_max_tokens_sets_the_step_count(data_dir, tmp_path):
    summary = run_training(tiny(data_dir, tmp_path, max_steps=None, max_tokens=3 * 4 * 32 + 1))
    assert summary["total_steps"] == 4 and summary["step"] == 4


def test_bf16_autocast_on_cpu(data_dir, tmp_path):
    summary = run_training(tiny(data_dir, tmp_path, dtype="bf16", max_steps=2))
    assert math.isfinite(summary["train_loss"])


def test_vocab_smaller_than_dataset_ids_is_a_clear_error(data_dir, tmp_path):
    cfg = tiny(data_dir, tmp_path, model_args={"d_model": 32, "n_layers": 2, "vocab_size": 50})
    with pytest.raises(LmzooError, match="vocab_size is 50"):
        run_training(cfg)


def test_tensorboard_is_optional(data_dir, tmp_path):
    cfg = tiny(data_dir, tmp_path, tensorboard=True, max_steps=1)
    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(LmzooError, match="pip install"):
            run_training(cfg)
    else:
        run_training(cfg)
        assert any((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


# ---- config and CLI ---------------------------------------------------------------------------
def parse(argv):
    return config_from_args(add_train_arguments(argparse.ArgumentParser()).parse_args(argv))


def test_yaml_recipe_then_flags_override(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("seq_len: 16\nlr: 0.01\nmodel_args: {d_model: 64, n_layers: 3}\nbetas: [0.8, 0.9]\n")
    cfg = parse(["--config", str(recipe), "--seq-len", "32", "--model-arg", "d_model=32",
                 "--model-arg", "qk_norm=true", "--no-compile", "--fsdp"])
    assert cfg.seq_len == 32 and cfg.lr == 0.01 and cfg.betas == (0.8, 0.9) and cfg.fsdp and not cfg.compile
    assert cfg.model_args == {"d_model": 32, "n_layers": 3, "qk_norm": True}
    assert parse([]) == TrainConfig()


def test_unknown_yaml_key_lists_valid_keys(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("learning_rate: 0.01\n")
    with pytest.raises(LmzooError, match=r"unknown training key\(s\) \['learning_rate'\].*valid keys:.*\blr\b"):
        parse(["--config", str(recipe)])


def test_yaml_float_without_a_dot_is_read_as_a_number(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("lr: 3e-4\n")  # a string to YAML 1.1
    assert parse(["--config", str(recipe)]).lr == 3e-4


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"nan_policy": "ignore"}, {"max_steps": None},
                                 {"min_lr_ratio": 2.0}, {"seq_len": "long"}, {"compile": "yes"},
                                 {"betas": [0.9]}])
def test_invalid_values_are_rejected(bad):
    with pytest.raises(LmzooError):
        TrainConfig(**bad)


def test_every_field_has_help():
    parser = add_train_arguments(argparse.ArgumentParser())
    helps = {a.dest: a.help for a in parser._actions}
    assert all(helps.get(name) for name in TrainConfig.field_names())


# ---- non-finite losses ------------------------------------------------------------------------
@pytest.fixture
def nan_on_step(monkeypatch):
    """Make the model's loss NaN on the given 1-based training steps (one forward per step)."""
    calls = {"n": 0}
    real = lmzoo.modeling.causal_lm_loss

    def install(*steps):
        def poisoned(logits, labels):
            calls["n"] += 1
            loss = real(logits, labels)
            return loss * float("nan") if calls["n"] in steps else loss
        monkeypatch.setattr(lmzoo.modeling, "causal_lm_loss", poisoned)
    return install


def test_nan_policy_skip_leaves_weights_and_optimizer_untouched(data_dir, tmp_path, nan_on_step):
    # Constant lr after warmup, so the schedule does not depend on max_steps.
    common = dict(min_lr_ratio=1.0, nan_policy="skip")
    clean = run_training(tiny(data_dir, tmp_path / "clean", max_steps=2, **common))
    nan_on_step(3)
    skipped = run_training(tiny(data_dir, tmp_path / "nan", max_steps=3, **common))
    assert skipped["skipped_steps"] == 1
    step3 = rows(tmp_path / "nan")[-1]
    assert step3["step"] == 3 and step3["loss"] is None and step3["skipped_steps"] == 1
    a, b = load_checkpoint(clean["final_checkpoint"]), load_checkpoint(skipped["final_checkpoint"])
    for name, tensor in a.model_state.items():
        assert torch.equal(tensor, b.model_state[name]), name
    for param, entries in a.optimizer_state["state"].items():
        for key, tensor in entries.items():  # moments and the step count did not move
            assert torch.equal(tensor, b.optimizer_state["state"][param][key]), (param, key)


def test_nan_policy_stop_names_step_and_last_checkpoint(data_dir, tmp_path, nan_on_step):
    nan_on_step(3)
    with pytest.raises(LmzooError, match=r"step 3 .*last good checkpoint: .*step-0000002"):
        run_training(tiny(data_dir, tmp_path, max_steps=6, checkpoint_interval=2, nan_policy="stop"))


@pytest.mark.slow
def test_compiled_model_trains_like_eager(data_dir, tmp_path):
    eager = run_training(tiny(data_dir, tmp_path / "eager", max_steps=3))
    compiled = run_training(tiny(data_dir, tmp_path / "compiled", max_steps=3, compile=True))
    assert compiled["train_loss"] == pytest.approx(eager["train_loss"], abs=1e-4)
