"""lmzoo.hf: every architecture through transformers' Auto classes, generate(), pipeline and peft."""
import os
import subprocess
import sys

import pytest
import torch

import lmzoo
from lmzoo.cli.main import main as cli
from lmzoo.errors import LmzooError
from lmzoo.tokenizers import BPETokenizer, CharTokenizer, SyllableTokenizer, get_tokenizer

transformers = pytest.importorskip("transformers")
lmzoo_hf = pytest.importorskip("lmzoo.hf")
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: E402

# Every architecture runs in `make test-all`; `make test` keeps one fast (recurrent states: tests below).
FAST = ("transformer",)
ARCHS = [pytest.param(arch, marks=() if arch in FAST else pytest.mark.slow) for arch in lmzoo.list_architectures()]
# A wide init makes an untrained model's greedy tokens vary, so equality of two decoders means something.
INIT_STD = 0.3


def nano(arch, seed=0, **overrides):
    torch.manual_seed(seed)
    model = lmzoo.create_model(arch, "nano", init_std=INIT_STD, **overrides).eval()
    model.tokenizer = get_tokenizer("bytes")
    return model


class Exports(dict):
    """arch -> (lmzoo model at nano, its export directory), each exported on first use."""

    def __init__(self, root):
        super().__init__()
        self.root = root

    def __missing__(self, arch):
        model = nano(arch)
        self[arch] = (model, lmzoo_hf.export_hf(model, self.root / arch))
        return self[arch]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    return Exports(tmp_path_factory.mktemp("exports"))


def prompt_ids(length=12, batch=1, seed=1):
    return torch.randint(0, 256, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", ARCHS)
def test_an_export_loads_with_the_auto_classes_and_gives_lmzoos_logits(exports, arch):
    model, out = exports[arch]
    hf = AutoModelForCausalLM.from_pretrained(out)
    assert type(hf).__name__.endswith("ForCausalLM") and hf.config.model_type == f"lmzoo-{arch}"
    ids = prompt_ids(20, batch=2)
    with torch.no_grad():
        diff = (hf(ids).logits - model(ids).logits).abs().max().item()
    assert diff <= 1e-5
    assert sorted(os.listdir(out)) == ["config.json", "generation_config.json", "lmzoo_tokenizer.json",
                                       "model.safetensors", "tokenizer.json", "tokenizer_config.json"]


@pytest.mark.parametrize("arch", ARCHS)
def test_hf_greedy_generate_equals_lmzoos_generate(exports, arch):
    model, out = exports[arch]
    hf = AutoModelForCausalLM.from_pretrained(out)
    ids = prompt_ids(10, batch=2)
    ours = model.generate(ids, max_new_tokens=16, temperature=0)
    theirs = hf.generate(ids, max_new_tokens=16, do_sample=False, eos_token_id=None, pad_token_id=None)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("arch", ARCHS)
def test_lmzoo_load_reads_an_export_back(exports, arch):
    model, out = exports[arch]
    back = lmzoo.load(out)
    assert type(back) is type(model) and back.config == model.config
    assert back.tokenizer.kind == "bytes"
    ids = prompt_ids(16)
    with torch.no_grad():
        assert torch.equal(back(ids).logits, model(ids).logits)


def test_generate_feeds_the_prompt_once_then_one_token_per_step(exports):
    model, out = exports["efficia-1"]
    hf = AutoModelForCausalLM.from_pretrained(out)
    lengths = []
    hook = hf.model.register_forward_pre_hook(lambda module, args, kwargs: lengths.append(args[0].shape[1]),
                                              with_kwargs=True)
    hf.generate(prompt_ids(9), max_new_tokens=6, do_sample=False)
    hook.remove()
    assert lengths == [9, 1, 1, 1, 1, 1]  # the last token needs no forward


def test_beam_search_reorders_the_state(exports):
    """Beam search reorders rows of the cache each step (reorder_cache -> State.select); with the cache it
    must find exactly what it finds recomputing the whole prefix every step (use_cache=False)."""
    model, out = exports["transformer"]
    hf = AutoModelForCausalLM.from_pretrained(out)
    options = dict(max_new_tokens=8, num_beams=3, do_sample=False, eos_token_id=None, pad_token_id=None)
    ids = prompt_ids(7)
    assert torch.equal(hf.generate(ids, use_cache=True, **options), hf.generate(ids, use_cache=False, **options))


def test_padded_batches_are_refused_with_a_clear_error(exports):
    hf = AutoModelForCausalLM.from_pretrained(exports["transformer"][1])
    ids = prompt_ids(6, batch=2)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    with pytest.raises(LmzooError, match="padded batches"):
        hf.generate(ids, attention_mask=mask, max_new_tokens=2)


def test_the_text_generation_pipeline_continues_like_lmzoo(exports):
    model, out = exports["transformer"]
    pipe = transformers.pipeline("text-generation", model=AutoModelForCausalLM.from_pretrained(out),
                                 tokenizer=AutoTokenizer.from_pretrained(out))
    text = pipe("The cat", max_new_tokens=12, do_sample=False)[0]["generated_text"]
    assert text == model.generate("The cat", max_new_tokens=12, temperature=0)


def test_to_hf_shares_the_weights(exports):
    model = exports["efficia-1"][0]
    hf = model.to_hf()
    assert hf.model is model and hf.config.lmzoo_config == model.config.to_dict()


TEXT = "Héllo wörld! 日本語 tab\there\n  two spaces.\n\nEnd of it."


@pytest.mark.parametrize("tokenizer", [
    get_tokenizer("bytes"), CharTokenizer.train([TEXT]),
    BPETokenizer.train([TEXT * 20, "hello world and more words " * 50], vocab_size=300)], ids=lambda t: t.kind)
def test_the_hf_tokenizer_gives_lmzoos_ids(tmp_path, tokenizer):
    lmzoo_hf.to_hf_tokenizer(tokenizer).save_pretrained(tmp_path)
    hf = AutoTokenizer.from_pretrained(tmp_path)
    ids = tokenizer.encode(TEXT)
    assert hf(TEXT)["input_ids"] == ids
    assert hf.decode(ids, skip_special_tokens=True) == tokenizer.decode(ids) == TEXT
    assert (hf.eos_token_id, hf.pad_token_id, hf.bos_token_id) == tokenizer.special_ids


def test_a_syllable_model_exports_without_an_hf_tokenizer_and_says_so(tmp_path, capsys):
    pytest.importorskip("pyphen")
    model = nano("transformer")
    model.tokenizer = SyllableTokenizer.train(["Ein kleiner Text mit Silben und Wörtern."])
    lmzoo_hf.export_hf(lmzoo.create_model("transformer", "nano", vocab_size=model.tokenizer.vocab_size),
                       tmp_path / "out", tokenizer=model.tokenizer)
    assert "no Hugging Face tokenizer written" in capsys.readouterr().err
    assert not (tmp_path / "out" / "tokenizer.json").exists()
    assert lmzoo.load(tmp_path / "out").tokenizer.kind == "syllable"


@pytest.mark.parametrize("arch", ARCHS)
def test_peft_lora_with_default_targets_merges_into_lmzoos_model(exports, arch, tmp_path):
    peft = pytest.importorskip("peft")
    # float64: merging W + BA into one matrix rounds differently, which float32 recurrences amplify
    hf = AutoModelForCausalLM.from_pretrained(exports[arch][1]).double()
    lora = peft.get_peft_model(hf, peft.LoraConfig(r=4, lora_alpha=8))  # no target_modules: the defaults
    adapted = [name for name, _ in lora.named_modules() if name.endswith("lora_B.default")]
    targets = lmzoo.get_architecture(arch).model_cls.lora_targets
    assert adapted and all(name.split(".")[-3] in targets for name in adapted)
    torch.manual_seed(1)
    for name, param in lora.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.5)  # B starts at zero: make the adapter change the model
    ids = prompt_ids(14, batch=2)
    with torch.no_grad():
        adapted_logits = lora(ids).logits
        merged = lora.merge_and_unload()
        assert (merged(ids).logits - adapted_logits).abs().max().item() <= 1e-9
        assert (adapted_logits.float() - exports[arch][0](ids).logits).abs().max().item() > 1e-3  # LoRA changed it
        merged.float().save_pretrained(tmp_path / "merged")
        back = lmzoo.load(tmp_path / "merged")  # an HF save of the merged model is an lmzoo model again
        assert torch.equal(back(ids).logits, merged(ids).logits)


def test_a_damaged_lmzoo_config_is_a_one_line_error(exports, tmp_path):
    config = AutoConfig.from_pretrained(exports["transformer"][1]).to_dict()
    config["lmzoo_config"]["n_heads"] = "four"
    with pytest.raises(LmzooError, match="n_heads"):
        lmzoo_hf.config_class("transformer")(**{k: v for k, v in config.items() if k != "model_type"})


def test_export_hf_cli_writes_a_directory_and_refuses_foreign_ones(tmp_path, capsys):
    model = nano("transformer")
    model.save_pretrained(tmp_path / "model")
    assert cli(["export-hf", str(tmp_path / "model"), str(tmp_path / "out")]) == 0
    assert "AutoModelForCausalLM.from_pretrained" in capsys.readouterr().out
    assert cli(["export-hf", str(tmp_path / "model"), str(tmp_path / "out")]) == 0  # an earlier export: replaced
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert cli(["export-hf", str(tmp_path / "model"), str(tmp_path / "mine")]) == 2
    assert cli(["export-hf", str(tmp_path / "nowhere"), str(tmp_path / "out2")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "Traceback" not in err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


@pytest.mark.slow
def test_an_export_loads_in_a_fresh_process_with_the_two_documented_lines(exports):
    out = exports["transformer"][1]
    code = ("import lmzoo.hf\nimport transformers\n"
            f"model = transformers.AutoModelForCausalLM.from_pretrained({str(out)!r})\n"
            f"tokenizer = transformers.AutoTokenizer.from_pretrained({str(out)!r})\n"
            "print(tokenizer.decode(model.generate(**tokenizer('Hi', return_tensors='pt'), max_new_tokens=4)[0]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Hi")
