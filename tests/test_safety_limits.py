"""Resource safety: nothing read from a file or a flag can size an allocation before it is checked."""
import json
import math

import pytest
import torch

import lmzoo
from lmzoo.data import TokenDataset
from lmzoo.errors import LmzooError
from lmzoo.generation import generate, generate_text
from lmzoo.sizing import plan_model
from lmzoo.tokenizers import get_tokenizer

TINY = {"d_model": 32, "n_layers": 1}


def tiny_transformer(**overrides):
    torch.manual_seed(0)
    return lmzoo.create_model("transformer", "nano", **{**TINY, **overrides}).eval()


# ---- generation -------------------------------------------------------------------------------
def test_huge_max_new_tokens_allocates_only_what_is_generated():
    model = tiny_transformer()
    states = []
    real_init_state = model.init_state
    model.init_state = lambda: states.append(real_init_state()) or states[-1]
    out = generate(model, torch.tensor([[1, 2, 3]]), max_new_tokens=10**12, temperature=0,
                   stop=lambda seq: seq.shape[1] >= 8)
    assert out.shape == (1, 8)
    # Keys and values of <= 16 positions (the cache doubles), 1 layer, d_model 32, float32.
    assert 0 < states[0].nbytes() <= 2 * 16 * 32 * 4


def test_never_samples_ids_the_tokenizer_cannot_decode():
    tok = get_tokenizer("bytes")
    model = tiny_transformer(vocab_size=tok.vocab_size + 50)
    with torch.no_grad():  # make the ids past the tokenizer the likeliest by far
        model.lm_head.weight[tok.vocab_size:] = 5.0
    ids = generate(model, torch.tensor([[65, 66]]), max_new_tokens=30, temperature=1.0, seed=0,
                   sample_vocab=tok.vocab_size)
    assert int(ids.max()) < tok.vocab_size
    unmasked = generate(model, torch.tensor([[65, 66]]), max_new_tokens=30, temperature=1.0, seed=0)
    assert int(unmasked.max()) >= tok.vocab_size  # the mask above is what kept them out
    assert isinstance(generate_text(model, tok, "AB", max_new_tokens=30, temperature=1.0, seed=0)[0], str)


@pytest.mark.parametrize("options", [{"temperature": math.nan}, {"repetition_penalty": math.nan},
                                     {"top_p": math.inf}, {"seed": -1}, {"stop_strings": [""]}])
def test_bad_sampling_options_are_refused(options):
    model, tok = tiny_transformer(), get_tokenizer("bytes")
    with pytest.raises(LmzooError):
        generate_text(model, tok, "hi", max_new_tokens=2, **options)


def test_prompt_that_is_not_utf8_is_refused():
    with pytest.raises(LmzooError, match="UTF-8"):
        generate_text(tiny_transformer(), get_tokenizer("bytes"), "caf\udce9", max_new_tokens=2)


# ---- model configs and checkpoints ----------------------------------------------------------
@pytest.mark.parametrize("overrides", [{"d_model": "32"}, {"n_layers": True}, {"init_std": math.nan},
                                       {"vocab_size": 10**12}, {"n_layers": 0}, {"n_heads": 0},
                                       {"tie_embeddings": 1}, {"window": -3}])
def test_model_config_values_are_type_and_range_checked(overrides):
    with pytest.raises(LmzooError):
        lmzoo.make_config("transformer", "nano", **overrides)


@pytest.mark.parametrize("arch", ["transformer", "spike-walze", "efficia-1"])
def test_a_model_too_large_for_memory_is_refused_before_allocation(arch):
    config = lmzoo.make_config(arch, "nano", d_model=1 << 16, vocab_size=1 << 20)
    with pytest.raises(LmzooError, match="memory"):
        plan_model(lmzoo.get_architecture(arch).model_cls, config)
    with pytest.raises(LmzooError, match="memory"):
        lmzoo.create_model(arch, "nano", d_model=1 << 16, vocab_size=1 << 20)


def test_planned_shapes_match_the_real_model():
    model = tiny_transformer()
    planned = plan_model(type(model), model.config)
    assert planned == {name: tuple(t.shape) for name, t in model.state_dict().items() if name != "lm_head.weight"}


def _saved(tmp_path, **config_edits):
    path = tmp_path / "model"
    tiny_transformer().save_pretrained(path, tokenizer=get_tokenizer("bytes"))
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, **config_edits}))
    return path


def test_absurd_config_fails_against_the_weights_header_without_allocating(tmp_path):
    # 2**20 x 2**20 attention weights would be terabytes: only the header comparison can stop it.
    with pytest.raises(LmzooError, match="shape"):
        lmzoo.load(_saved(tmp_path, d_model=1 << 20, n_heads=1, n_kv_heads=1, d_ff=1 << 20))


@pytest.mark.parametrize("edits", [{"d_model": "32"}, {"init_std": float("nan")}, {"n_layers": 10**9},
                                   {"arch": 3}, {"config_version": "1"}])
def test_damaged_config_json_is_a_one_line_error_naming_the_file(tmp_path, edits):
    with pytest.raises(LmzooError, match="config.json"):
        lmzoo.load(_saved(tmp_path, **edits))


def test_tokenizer_larger_than_the_model_is_refused_at_load(tmp_path):
    path = tmp_path / "model"
    tiny_transformer(vocab_size=100).save_pretrained(path, tokenizer=get_tokenizer("bytes"))
    with pytest.raises(LmzooError, match="tokenizer"):
        lmzoo.load(path)


def test_tokenizer_smaller_than_the_model_is_fine(tmp_path):
    path = tmp_path / "model"
    tiny_transformer(vocab_size=300).save_pretrained(path, tokenizer=get_tokenizer("bytes"))
    assert lmzoo.load(path).tokenizer.vocab_size == 259


# ---- datasets ---------------------------------------------------------------------------------
@pytest.mark.parametrize("edit", [
    {"vocab_size": 10**12}, {"vocab_size": True}, {"vocab_size": "259"}, {"vocab_size": 70000},  # uint16 data
    {"eos_id": 10**6}, {"eos_id": -1}, {"splits": []},
    {"splits": {"train": {"file": "../x.bin", "tokens": 1, "bytes": 1, "documents": 1}}},
    {"splits": {"train": {"file": "train.bin", "tokens": -5, "bytes": 1, "documents": 1}}},
    {"splits": {"train": {"file": "train.bin", "tokens": 2.5, "bytes": 1, "documents": 1}}},
])
def test_damaged_meta_json_is_refused(data_dir, tmp_path, edit):
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    meta = json.loads((copy / "meta.json").read_text())
    (copy / "meta.json").write_text(json.dumps({**meta, **edit}))
    with pytest.raises(LmzooError, match="meta.json"):
        TokenDataset(copy, "train")


# ---- trainer state ----------------------------------------------------------------------------
@pytest.mark.parametrize("edit", [{"step": -1}, {"step": True}, {"tokens_seen": 1.5}, {"step": 7},
                                  {"skipped_steps": -2}, {"world_size": 0}, {"best_val_loss": float("nan")},
                                  {"best_val_loss": "low"}, {"train_config": []}, {"format_version": "1"}])
def test_damaged_trainer_state_is_refused(tmp_path, edit):
    from lmzoo.training.checkpointing import STATE_FILE, _read_trainer_state

    path = tmp_path / "step-0000005"
    path.mkdir()
    state = {"format_version": 1, "step": 5, "tokens_seen": 640, "skipped_steps": 0, "world_size": 1,
             "best_val_loss": 2.5, "train_config": {}, "schedule": {}, "curriculum": None}
    (path / STATE_FILE).write_text(json.dumps(state))
    assert _read_trainer_state(path)["step"] == 5
    (path / STATE_FILE).write_text(json.dumps({**state, **edit}))
    with pytest.raises(LmzooError, match=STATE_FILE):
        _read_trainer_state(path)
