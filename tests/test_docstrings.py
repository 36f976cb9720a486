"""Every public name has a docstring, and the API reference lists it.

Public means: in the ``__all__`` of ``topogrow`` or of one of its packages. For a class,
its public methods and properties count too (a docstring inherited from a base class, e.g.
``nn.Module.forward`` or ``Callback.on_insert``, is enough).
"""

import importlib
import inspect
from pathlib import Path

import pytest

PACKAGES = [
    "topogrow",
    "topogrow.core",
    "topogrow.nn",
    "topogrow.training",
    "topogrow.growth",
    "topogrow.transfer",
    "topogrow.sklearn",
    "topogrow.data",
    "topogrow.experiments",
    "topogrow.cli",
]
API_DIR = Path(__file__).resolve().parents[1] / "docs" / "api"


def public_names():
    for package in PACKAGES:
        module = importlib.import_module(package)
        for name in module.__all__:
            yield package, name, getattr(module, name)


def has_doc(obj) -> bool:
    return bool((inspect.getdoc(obj) or "").strip())


def undocumented_members(cls) -> list[str]:
    """Public methods and properties defined by ``cls`` itself (not only inherited) without a docstring."""
    missing = []
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, property):
            documented = has_doc(value.fget) or any(
                isinstance(vars(base).get(name), property) and has_doc(vars(base)[name]) for base in cls.__mro__[1:]
            )
        elif inspect.isfunction(value) or isinstance(value, (classmethod, staticmethod)):
            documented = has_doc(getattr(cls, name))  # getdoc looks up overridden methods in the bases
        else:
            continue
        if not documented:
            missing.append(f"{cls.__module__}.{cls.__qualname__}.{name}")
    return missing


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_function_and_class_has_a_docstring(package):
    missing = []
    module = importlib.import_module(package)
    assert has_doc(module), f"{package} has no module docstring"
    for name in module.__all__:
        obj = getattr(module, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismethod(obj)):
            continue
        if not has_doc(obj):
            missing.append(f"{package}.{name}")
        if inspect.isclass(obj) and obj.__module__.startswith("topogrow"):
            missing += undocumented_members(obj)
    assert not missing, "public names without a docstring: " + ", ".join(sorted(set(missing)))


def test_the_api_reference_lists_every_public_name():
    """docs/api/*.rst (written by docs/api/generate.py) mention every name of every ``__all__``."""
    pages = "\n".join(path.read_text() for path in API_DIR.glob("*.rst"))
    missing = [
        f"{package}.{name}"
        for package, name, _ in public_names()
        if f"{package}.{name}" not in pages and f".{name}\n" not in pages and f".{name} " not in pages
    ]
    assert not missing, "not in docs/api (run docs/api/generate.py): " + ", ".join(missing)
