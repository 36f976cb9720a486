"""Write the API reference pages (docs/api/*.rst) from the ``__all__`` lists.

Run after changing a public name: ``.venv/bin/python docs/api/generate.py``.
``tests/test_docstrings.py`` fails when a page misses a public name.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent

PACKAGES = {
    "topogrow.core": "The functional core: the paper's mathematics as pure functions on tensors (states and "
    "adjoints, Hamiltonian-Hessian blocks, eigen-solves, the matrix-free operator). See :doc:`/theory`.",
    "topogrow.nn": "Models that grow: the growable-model contract, ``ResidualMLP``, ``ResidualCNN``, ``ViT``, "
    "``as_growable`` for a residual network of your own modules, residual layers and blocks, activations with "
    "sigma(0) = sigma'(0) = 0, their registries, and a model saved for inference (``save``).",
    "topogrow.training": "Training as PyTorch does it, which the growth loop, the Lightning callback and loops of your "
    "own use: an epoch of training, the loss and metrics over batches, the optimisers by name, parameters added to "
    "a live optimiser and its scheduler, data as mini-batches, and several processes "
    "(``topogrow.training.distributed``).",
    "topogrow.growth": "The growth loop (``Grower``), its configuration, strategies, schedules, callbacks, "
    "checkpoints (``load``) and registries.",
    "topogrow.transfer": "Transfer learning by growth: ``adapt`` a pretrained network to new data by inserting layers "
    "where the topological derivative on that data is largest, and the baselines it is compared with.",
    "topogrow.data": "Learning tasks as tensors: ``load`` a registered task by name (California housing, MNIST, "
    "digits, the heat-conduction and Navier-Stokes problems, a table of your own), the task registry and the "
    "data loaders.",
    "topogrow.experiments": "Experiments on those tasks: ``run`` one strategy, ``compare`` several over seeds "
    "against the reference depth search, the paper's rows, the transfer benchmarks and the bench.",
    "topogrow.cli": "The command line (``topogrow``): its entry point.",
    "topogrow.sklearn": "scikit-learn estimators that grow a ``ResidualMLP`` while they fit.",
    "topogrow.lightning": "PyTorch Lightning: a callback that grows a LightningModule's model during ``Trainer.fit`` "
    "(``pip install 'topogrow[lightning]'``). See :doc:`/integrations`.",
}


def is_documentable(obj) -> bool:
    """Classes and functions (bound methods too, e.g. ``register_strategy``) get a page of their own;
    anything else is data."""
    return inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismethod(obj)


def defining_module(package: str, name: str) -> str:
    """The module of ``package`` that assigns ``name`` at module level (where its ``#:`` comment is)."""
    module = importlib.import_module(package)
    candidates = [module]
    if hasattr(module, "__path__"):
        for info in pkgutil.walk_packages(module.__path__, package + "."):
            candidates.append(importlib.import_module(info.name))
    pattern = re.compile(rf"^{re.escape(name)}\s*(:[^=]*)?=", re.MULTILINE)
    for candidate in candidates:
        source = Path(inspect.getsourcefile(candidate)).read_text()
        if pattern.search(source):
            return candidate.__name__
    return package


def package_page(package: str, intro: str) -> str:
    module = importlib.import_module(package)
    names = sorted(module.__all__, key=str.lower)
    objects = [n for n in names if is_documentable(getattr(module, n))]
    data = [n for n in names if not is_documentable(getattr(module, n))]
    lines = [package, "=" * len(package), "", intro, ""]
    lines += [".. autosummary::", "   :toctree: generated", "   :nosignatures:", ""]
    lines += [f"   {package}.{n}" for n in objects]
    if data:
        lines += ["", "Registries and constants", "-" * len("Registries and constants"), ""]
        for n in data:
            lines += [f".. autodata:: {defining_module(package, n)}.{n}", "   :no-value:", ""]
    return "\n".join(lines).rstrip() + "\n"


def top_page() -> str:
    import topogrow

    lines = [
        "topogrow",
        "========",
        "",
        "What ``import topogrow`` gives: the names most programs need, each linked to its page in the",
        "package that defines it.",
        "",
        ".. autosummary::",
        "   :nosignatures:",
        "",
    ]
    own, data = [], []
    for name in sorted(topogrow.__all__, key=str.lower):
        obj = getattr(topogrow, name)
        modules = [importlib.import_module(p) for p in PACKAGES]
        home = next((m.__name__ for m in modules if name in m.__all__ and getattr(m, name) is obj), None)
        if home is None:
            own.append(name)
        elif is_documentable(obj):
            lines.append(f"   {home}.{name}")
        else:
            data.append(f":data:`{home}.{name} <{defining_module(home, name)}.{name}>`")
    if data:
        lines += ["", "Also: " + ", ".join(data) + "."]
    if own:
        lines += ["", "Transfer learning:", "", ".. autosummary::", "   :toctree: generated", "   :nosignatures:", ""]
        lines += [f"   topogrow.{n}" for n in own]
    return "\n".join(lines) + "\n"


def main() -> None:
    for package, intro in PACKAGES.items():
        (HERE / f"{package}.rst").write_text(package_page(package, intro))
    (HERE / "topogrow.rst").write_text(top_page())


if __name__ == "__main__":
    main()
