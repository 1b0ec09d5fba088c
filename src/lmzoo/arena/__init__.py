"""The arena (`lmzoo arena`): every architecture trained on the same data, tokenizer, length,
batch and schedule under one budget (tokens or wall-clock seconds), with a learning-rate sweep
per architecture, several seeds, and the cost probes; see docs/arena.md."""
from lmzoo.arena.runner import run_arena
from lmzoo.arena.settings import PROFILES, ArenaSettings, Profile, make_profile

__all__ = ["PROFILES", "ArenaSettings", "Profile", "make_profile", "run_arena"]
