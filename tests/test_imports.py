"""Imports run only downward: layers -> modeling/config/registry -> models -> generation ->
training/data -> cli. Every import counts, also those inside functions."""
import ast
from pathlib import Path

import lmzoo

SRC = Path(lmzoo.__file__).parent

# Rank of each module (longest matching prefix wins); a module may import only ranks <= its own,
# and modules of one rank must not import each other in a cycle.
RANKS = {
    "lmzoo.errors": 0, "lmzoo.io": 0, "lmzoo.locking": 0, "lmzoo.memory": 0, "lmzoo.config": 0,
    "lmzoo.devices": 0, "lmzoo.paths": 0, "lmzoo.sizing": 0, "lmzoo.chat": 0,
    "lmzoo.data.sources": 0,  # reads text inputs; tokenizers train from it
    "lmzoo.layers": 1,
    "lmzoo.tokenizers": 2, "lmzoo.checkpoint": 2, "lmzoo.modeling": 2, "lmzoo.registry": 2,
    # Sampling works on any CausalLM through its interface alone, so CausalLM.generate can call it
    # (as transformers' models inherit their generate()).
    "lmzoo.generation": 2, "lmzoo.batching": 2,
    # The Hugging Face wrapper, likewise, works on any CausalLM through its interface, so
    # CausalLM.to_hf can call it; its lm-evaluation-harness model loads checkpoints (lmzoo.load).
    "lmzoo.hf": 2, "lmzoo.hf.harness": 5,
    "lmzoo.models": 3,
    "lmzoo.seed_api": 4, "lmzoo.accounting": 4, "lmzoo.energy": 4, "lmzoo.spectral_analysis": 4,
    "lmzoo.data": 5, "lmzoo.training": 5, "lmzoo.plots": 5,
    "lmzoo.arena": 5,  # runs trainings and reads their metrics: beside training and plots
    "lmzoo.cli": 6, "lmzoo.serving": 6,
}


def module_name(path: Path) -> str:
    parts = ("lmzoo", *path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def rank(name: str) -> int:
    matches = [prefix for prefix in RANKS if name == prefix or name.startswith(prefix + ".")]
    assert matches, f"{name} has no rank in tests/test_imports.py: add it to RANKS"
    return RANKS[max(matches, key=len)]


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lmzoo"):
                deps |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                         for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("lmzoo")}
        graph[name] = {d for d in deps if d in modules and d != name and d != "lmzoo"}
    return graph


def test_imports_only_go_downward():
    graph = import_graph()
    upward = [f"{m} -> {d}" for m, deps in graph.items() if m != "lmzoo" for d in deps if rank(d) > rank(m)]
    assert not upward, f"imports against the layering: {upward}"


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    del graph["lmzoo"]  # the package's __init__ gathers the public API from every level
    visiting, done = set(), set()

    def visit(node, path):
        assert node not in visiting, f"import cycle: {' -> '.join(path + [node])}"
        if node in done:
            return
        visiting.add(node)
        for dep in sorted(graph.get(node, ())):
            visit(dep, path + [node])
        visiting.discard(node)
        done.add(node)

    for module in sorted(graph):
        visit(module, [])
