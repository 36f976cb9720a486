"""Small helpers for error messages that say what was expected and what came."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def unknown_name_error(kind: str, name: object, known: Iterable[str]) -> ValueError:
    """A ``ValueError`` for an unknown ``kind`` name, with a "did you mean" hint."""
    known = sorted(known)
    hint = difflib.get_close_matches(str(name), known, n=1)
    message = f"unknown {kind} {name!r}; expected one of: {', '.join(known)}"
    if hint:
        message += f" (did you mean {hint[0]!r}?)"
    return ValueError(message)
