"""The package's import graph, read with ``ast`` (lazy imports inside functions count too): no cycles,
and the layers import only downwards: core < nn < training < growth < {transfer, sklearn, lightning,
data} < experiments < cli, where the packages of one tier import none of each other."""

import ast
from pathlib import Path

import pytest

import topogrow

PACKAGE = Path(topogrow.__file__).resolve().parent
#: Each tier imports only the tiers before it (and the leaf modules); the packages of one tier, none of each other.
TIERS = (
    ("core",),
    ("nn",),
    ("training",),
    ("growth",),
    ("transfer", "sklearn", "lightning", "data"),  # what is built on growth, and the tasks
    ("experiments",),
    ("cli",),
)
LAYERS = tuple(layer for tier in TIERS for layer in tier)
TIER = {layer: index for index, tier in enumerate(TIERS) for layer in tier}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``name`` imports: ``from a import b`` is ``a.b`` when that is a module
    (a submodule import does not run more of ``a`` than importing ``a.b`` does), else ``a``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target.startswith("topogrow") and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first search (one per back edge)."""
    state, stack, cycles = {}, [], []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_the_walker_sees_cycles_and_lazy_imports(tmp_path):
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    graph = _graph()
    assert "topogrow.data.pde.heat" in graph["topogrow.data.tasks"]  # imported inside a function
    assert "topogrow.data.task" in graph["topogrow.data.pde.heat"]


def test_there_is_no_import_cycle():
    assert _cycles(_graph()) == []


def _upward(graph: dict[str, set[str]], layer: str) -> set[tuple[str, str]]:
    """The imports of ``layer``'s modules that go to a later tier or sideways within its own."""
    return {
        (module, target)
        for module, targets in graph.items()
        if _layer(module) == layer
        for target in targets
        if _layer(target) not in (None, layer) and TIER[_layer(target)] >= TIER[layer]
    }


def test_an_upward_or_sideways_import_is_caught():
    graph = {
        "topogrow.training.epochs": {"topogrow.core.losses", "topogrow.growth.config"},
        "topogrow.growth.grower": {"topogrow.training.epochs", "topogrow.transfer"},
        "topogrow.transfer": {"topogrow.growth.grower", "topogrow.data.tasks"},
        "topogrow.nn.saved": {"topogrow.nn.growable", "topogrow._io"},
    }
    assert _upward(graph, "training") == {("topogrow.training.epochs", "topogrow.growth.config")}
    assert _upward(graph, "growth") == {("topogrow.growth.grower", "topogrow.transfer")}
    assert _upward(graph, "transfer") == {("topogrow.transfer", "topogrow.data.tasks")}
    assert _upward(graph, "nn") == set()


def test_every_package_has_a_tier():
    packages = {
        path.stem
        for path in PACKAGE.iterdir()
        if (path.suffix == ".py" or (path / "__init__.py").is_file()) and not path.name.startswith("_")
    }
    assert packages <= set(LAYERS), f"packages without a tier in TIERS: {sorted(packages - set(LAYERS))}"


@pytest.mark.parametrize("layer", LAYERS)
def test_lower_layers_import_nothing_from_higher_ones(layer):
    assert _upward(_graph(), layer) == set()


def test_the_leaf_modules_import_no_layer():
    graph = _graph()
    for leaf in ("topogrow._io", "topogrow._validation", "topogrow._registry", "topogrow.data.task"):
        assert {_layer(target) for target in graph[leaf]} <= {None}, leaf
