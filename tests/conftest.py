import os
import random
from pathlib import Path

import pytest
import torch

import lmzoo

# Small, deterministic, and fair to a 2-core CI machine: the cores are shared between the
# pytest-xdist workers (`make test` runs two), so each worker gets its share of threads.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1) // WORKERS))

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# Extra configurations the contract also runs on, per architecture (every registered
# architecture is always tested at its plain `nano` preset).
CONTRACT_VARIANTS = {
    "transformer": [{"window": 7}, {"qk_norm": True}],
    "complexity": [{"routing": "range"}, {"window": 5}],
    "spike-walze": [{"window": 5, "dilation_cycle": 2}, {"mlp": False}],
    "spike-transformer": [{"learn_thresholds": True, "max_half_life": 8.0},
                          # the design before issue 17: equal-weight running mean, no token shift
                          {"attention": "mean", "token_shift": 0.0, "surrogate": "sigmoid", "reset": "hard"}],
    "efficia-1": [{"window": 8, "segment": 4, "memory_slots": 3, "eos_id": 5},
                  {"overlap": True, "window": 6, "segment": 5, "memory_slots": 2},
                  {"window": 70, "segment": 3, "memory": False}, {"window": 5, "segment": 4, "compression": False}],
    "spectral-llm": [{"embedding": "harmonic"}, {"embedding": "harmonic", "tie_embeddings": False, "wavelet_levels": 2}],
}


def contract_cases():
    for arch in lmzoo.list_architectures():
        yield pytest.param(arch, {}, id=arch)
        for i, overrides in enumerate(CONTRACT_VARIANTS.get(arch, [])):
            yield pytest.param(arch, overrides, id=f"{arch}-{'-'.join(f'{k}={v}' for k, v in overrides.items())}")


@pytest.fixture(autouse=True)
def restore_threads():
    """Training runs may set torch's thread count (--threads); undo it after each test."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A small prepared dataset (bytes tokenizer): 40 documents of random words, 20% val."""
    from lmzoo.data import prepare_dataset

    words = "the cat sat on a mat while dogs ran far away from home and birds sang all day".split()
    rng = random.Random(0)
    docs = [" ".join(rng.choice(words) for _ in range(150)) for _ in range(40)]
    path = tmp_path_factory.mktemp("data")
    prepare_dataset(lambda: docs, path, val_fraction=0.2)
    return path


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


def requires_cuda():
    return pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
