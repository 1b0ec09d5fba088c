"""lmzoo: efficient language-model architectures, built, trained, compared and served alike."""
from lmzoo.errors import LmzooError
from lmzoo.modeling import CausalLM, LMOutput, State
from lmzoo.registry import create_model, get_architecture, list_architectures, list_sizes, make_config

import lmzoo.models  # noqa: E402,F401  (registers every architecture)
from lmzoo.training.checkpointing import load  # noqa: E402

__version__ = "0.1.0"
__all__ = ["CausalLM", "LMOutput", "LmzooError", "State", "create_model", "get_architecture",
           "list_architectures", "list_sizes", "load", "make_config"]
