"""The architecture contract (specs/contract.md), run on every registered architecture."""
import math

import pytest
import torch
from conftest import contract_cases, requires_cuda

import lmzoo
from lmzoo.errors import LmzooError

CASES = list(contract_cases())
LENGTH = 37  # prime: not a multiple of any window, chunk or grid size
GRADIENT_PROBE_LENGTH = 192


def build(arch, overrides, seed=0, **extra):
    torch.manual_seed(seed)
    return lmzoo.create_model(arch, "nano", **{**overrides, **extra}).eval()


def random_ids(model, batch=2, length=LENGTH, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (batch, length), generator=g)


def assert_close(a, b, tol):
    if b.numel() == 0:
        return
    scale = max(1.0, float(b.abs().max()))
    diff = float((a - b).abs().max())
    assert diff <= tol * scale, f"max |diff| {diff:.3g} > {tol} x logit scale {scale:.3g}"


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("arch,overrides", CASES)
def test_causality(arch, overrides, mode):
    """Changing token j leaves every logit before j unchanged, in float64 (so to 1e-12: only
    rounding of FFTs over the whole sequence may differ) and in both modes (a training-only
    path, such as a cap over the whole sequence, must be causal too)."""
    model = build(arch, overrides).double().train(mode == "train")
    ids = random_ids(model)
    with torch.no_grad():
        base = model(ids).logits
        assert base.dtype == torch.float64
        for j in (0, 1, 6, 18, LENGTH - 1):
            changed = ids.clone()
            changed[:, j] = (changed[:, j] + 1) % model.config.vocab_size
            logits = model(changed).logits
            assert_close(logits[:, :j], base[:, :j], 1e-12)
            assert not torch.equal(logits[:, j], base[:, j]), "the changed token itself had no effect"


@pytest.mark.parametrize("arch,overrides", CASES)
def test_batch_independence(arch, overrides):
    model = build(arch, overrides)
    ids = random_ids(model, batch=3)
    with torch.no_grad():
        together = model(ids).logits
        for i in range(3):
            assert_close(model(ids[i:i + 1]).logits[0], together[i], 1e-5)


def feed_in_chunks(model, ids, sizes):
    state = model.init_state()
    outs, pos = [], 0
    for size in sizes:
        out = model(ids[:, pos:pos + size], state=state)
        assert out.state is state
        outs.append(out.logits)
        pos += size
    assert pos == ids.shape[1] and state.position == pos
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("arch,overrides", CASES)
def test_decode_parity(arch, overrides):
    model = build(arch, overrides)
    ids = random_ids(model)
    with torch.no_grad():
        full = model(ids).logits
        assert_close(feed_in_chunks(model, ids, [LENGTH]), full, 1e-4)
        assert_close(feed_in_chunks(model, ids, [5, 1, 13, 18]), full, 1e-4)
        assert_close(feed_in_chunks(model, ids, [1] * LENGTH), full, 1e-4)
        assert_close(model(ids, use_cache=True).logits, full, 1e-4)


@pytest.mark.parametrize("arch,overrides", CASES)
def test_save_load_round_trip(arch, overrides, tmp_path):
    model = build(arch, overrides)
    ids = random_ids(model)
    model.save_pretrained(tmp_path / "m")
    loaded = lmzoo.load(tmp_path / "m")
    assert type(loaded) is type(model) and loaded.config == model.config
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_load_rejects_wrong_arch_truncated_and_unknown_keys(tmp_path):
    import json

    from lmzoo.models.complexity import ComplexityLM
    build("transformer", {}).save_pretrained(tmp_path / "t")
    with pytest.raises(LmzooError, match="transformer"):
        ComplexityLM.from_pretrained(tmp_path / "t")
    weights = tmp_path / "t" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(LmzooError, match="corrupt or truncated"):
        lmzoo.load(tmp_path / "t")
    build("complexity", {}).save_pretrained(tmp_path / "c")
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    config["n_expertz"] = 4
    (tmp_path / "c" / "config.json").write_text(json.dumps(config))
    with pytest.raises(LmzooError, match="n_expertz"):
        lmzoo.load(tmp_path / "c")
    with pytest.raises(LmzooError, match="no model directory"):
        lmzoo.load(tmp_path / "missing")


@pytest.mark.parametrize("arch,overrides", CASES)
def test_learning(arch, overrides):
    model = build(arch, overrides).train()
    ids = random_ids(model, batch=4, length=64)
    first = model(ids, labels=ids).loss
    first_value = float(first.detach())
    ln_v = math.log(model.config.vocab_size)
    assert abs(first_value - ln_v) <= 0.15 * ln_v, f"init loss {first_value:.3f} vs ln(V) {ln_v:.3f}"
    # Every weight learns: checked on a sequence long enough for paths that lag whole segments
    # (efficia-1's memory and GRU read only complete 64-token segments).
    probe = random_ids(model, batch=2, length=GRADIENT_PROBE_LENGTH)
    model(probe, labels=probe).loss.backward()
    silent = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not silent, f"parameters without gradient: {silent}"
    model.zero_grad()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    first.backward()
    opt.step()
    opt.zero_grad()
    for _ in range(49):
        model(ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    last = float(model(ids, labels=ids).loss.detach())
    assert last <= 0.5 * first_value, f"loss {first_value:.3f} -> {last:.3f}: not halved in 50 steps"


@pytest.mark.parametrize("arch", lmzoo.list_architectures())
def test_shift_once(arch):
    """A stream where next = current + 1: a model that learned t+2 (double shift) fails."""
    model = build(arch, {}).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)

    def batch():
        start = torch.randint(0, 256, (16, 1), generator=g)
        return (start + torch.arange(32)) % 256

    def accuracy() -> float:  # on a fresh batch, in eval mode
        ids = batch()
        with torch.no_grad():
            pred = model.eval()(ids).logits[:, :-1].argmax(-1)
        model.train()
        return float((pred == ids[:, 1:]).float().mean())

    # Up to 100 steps, checked every 10: most architectures learn it in a fraction of that.
    for step in range(1, 101):
        ids = batch()
        model(ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
        if step % 10 == 0 and (reached := accuracy()) > 0.9:
            break
    assert reached > 0.9, f"next-token accuracy {reached:.2f} after {step} steps"


@pytest.mark.parametrize("arch", lmzoo.list_architectures())
def test_bad_input(arch):
    model = build(arch, {})
    v = model.config.vocab_size
    for bad, needle in [(torch.tensor([[1, v]]), "out of range"), (torch.tensor([[-1, 2]]), "out of range"),
                        (torch.zeros(1, 0, dtype=torch.long), "empty"), (torch.zeros(1, 3), "integer"),
                        (torch.zeros(2, 2, 2, dtype=torch.long), "shape")]:
        with pytest.raises(ValueError, match=needle):
            model(bad)


@pytest.mark.parametrize("arch", lmzoo.list_architectures())
def test_bf16_autocast_cpu(arch):
    model = build(arch, {})
    ids = random_ids(model)
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(ids, labels=ids)
        ref = model(ids).logits
    assert torch.isfinite(out.logits.float()).all() and torch.isfinite(out.loss)
    assert float((out.logits.float() - ref).abs().max()) < 0.1 * max(1.0, float(ref.abs().max()))


@pytest.mark.gpu
@requires_cuda()
@pytest.mark.parametrize("arch,overrides", CASES)
def test_contract_on_cuda(arch, overrides):
    model = build(arch, overrides).cuda()
    ids = random_ids(model).cuda()
    with torch.no_grad():
        full = model(ids).logits
        changed = ids.clone()
        changed[:, 18] = (changed[:, 18] + 1) % model.config.vocab_size
        assert_close(model(changed).logits[:, :18], full[:, :18], 1e-5)
        assert_close(feed_in_chunks(model, ids, [5, 1, 13, 18]), full, 1e-4)
        assert_close(feed_in_chunks(model, ids, [1] * LENGTH), full, 1e-4)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(ids, labels=ids)
    assert torch.isfinite(out.loss)
    model.train()
    model(ids, labels=ids).loss.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("arch,overrides", CASES)
def test_activation_checkpointing_gives_the_same_loss_and_gradients(arch, overrides):
    """Recomputing blocks in the backward pass changes memory, not the numbers (float64, so only
    summation order could differ), also where blocks hand values on through the context."""
    model = build(arch, overrides).double().train()
    ids = random_ids(model, length=19)

    def loss_and_grads(recompute: bool):
        model.zero_grad()
        model.activation_checkpointing = recompute
        loss = model(ids, labels=ids).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    torch.manual_seed(3)
    plain_loss, plain = loss_and_grads(False)
    torch.manual_seed(3)
    loss, grads = loss_and_grads(True)
    assert_close(loss, plain_loss, 1e-12)
    assert grads.keys() == plain.keys()
    for name, grad in grads.items():
        assert_close(grad, plain[name], 1e-10)
