"""One registry type for everything chosen by name: strategies, schedules, blocks, models,
tasks, losses, activations.

A :class:`Registry` maps names to objects (classes, factories, functions), keeps a one-line
help text per name, and answers an unknown name with a ``ValueError`` that lists the known
names and suggests the closest one. The CLI, ``compare``, checkpoints and the docs read
their lists of names from the registries, so registering is the only step::

    STRATEGIES = Registry("strategy")

    @STRATEGIES.register("td", help="the paper's rule")
    class TD(Strategy): ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar, overload

from topogrow._validation import unknown_name_error

T = TypeVar("T")

__all__ = ["Registry", "UnknownNameError"]


class UnknownNameError(ValueError, KeyError):
    """An unknown registry name: a ``ValueError`` (bad input) that is also a ``KeyError``
    (so a :class:`Registry` behaves as a ``Mapping``)."""

    def __str__(self) -> str:
        return ValueError.__str__(self)


class Registry(Mapping[str, T], Generic[T]):
    """Names to objects, in registration order, with help texts and "did you mean".

    Args:
        kind: what the names name, as error messages say it (``"strategy"``, ``"block"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._help: dict[str, str] = {}

    @overload
    def register(self, name: str, obj: None = None, *, help: str = "", overwrite: bool = False) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T, *, help: str = "", overwrite: bool = False) -> T: ...

    def register(self, name, obj=None, *, help="", overwrite=False):
        """Register ``obj`` under ``name``; without ``obj``, a decorator that does.

        ``help`` is the one-line description the CLI and the docs show. Raises
        ``ValueError`` if ``name`` is taken, unless ``overwrite=True``.
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        if not isinstance(help, str):
            raise TypeError(f"help must be a string, got {type(help).__name__}")

        def add(entry: T) -> T:
            if name in self._entries and not overwrite:
                raise ValueError(
                    f"a {self.kind} named {name!r} is already registered; pass overwrite=True to replace it"
                )
            self._entries[name] = entry
            self._help[name] = help or _first_line(getattr(entry, "__doc__", None))
            return entry

        return add if obj is None else add(obj)

    def unregister(self, name: str) -> T:
        """Remove ``name`` (e.g. a test's temporary entry) and return what it named."""
        entry = self[name]
        del self._entries[name], self._help[name]
        return entry

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            error = unknown_name_error(self.kind, name, self._entries)
            raise UnknownNameError(str(error)) from None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def check(self, name: object) -> str:
        """``name`` if it is registered; else a ``TypeError`` (not a string) or the "did you mean" error."""
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} must be a name (a string), got {type(name).__name__} {name!r}")
        self[name]
        return name

    def help(self, name: str) -> str:
        """The one-line description of ``name``."""
        self[name]
        return self._help[name]

    def describe(self, exclude: tuple[str, ...] = ()) -> str:
        """``"name (help), name (help), ..."`` for ``--help`` texts."""
        return ", ".join(
            f"{name} ({self._help[name]})" if self._help[name] else name for name in self if name not in exclude
        )

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self)})"


def _first_line(doc: str | None) -> str:
    """The first sentence-line of a docstring (empty without one)."""
    return " ".join((doc or "").strip().split("\n\n")[0].split())
