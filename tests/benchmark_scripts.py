"""Importing the scripts in benchmarks/ from tests (a folder, not a package: the scripts import
each other by plain name, so the folder goes on sys.path)."""
import importlib
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module(name)
