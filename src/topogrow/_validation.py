"""Validation helpers shared by every layer: errors that say what was expected and what came.

Each ``check_*`` returns the value it accepted, so a constructor can write
``self.width = check_int("width", width, minimum=1)``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from typing import Any


def unknown_name_error(kind: str, name: object, known: Iterable[str]) -> ValueError:
    """A ``ValueError`` for an unknown ``kind`` name, with a "did you mean" hint."""
    known = sorted(known)
    hint = difflib.get_close_matches(str(name), known, n=1)
    message = f"unknown {kind} {name!r}; expected one of: {', '.join(known)}"
    if hint:
        message += f" (did you mean {hint[0]!r}?)"
    return ValueError(message)


def one_line(error: BaseException) -> str:
    """An exception's message on one line (its type name when it has none)."""
    return " ".join(str(error).split()) or type(error).__name__


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` if it is an int (not a bool) in ``minimum..maximum``; else ``ValueError``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
    ):
        if minimum is not None and maximum is not None:
            expected = f"an integer in {minimum}..{maximum}"
        elif minimum is not None:
            expected = f"an integer >= {minimum}"
        elif maximum is not None:
            expected = f"an integer <= {maximum}"
        else:
            expected = "an integer"
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return value


def check_optional_int(name: str, value: Any, minimum: int | None = None) -> int | None:
    """``None``, or an int checked by :func:`check_int` (the message says ``None`` is allowed)."""
    if value is None:
        return None
    try:
        return check_int(name, value, minimum)
    except ValueError:
        bound = "" if minimum is None else f" >= {minimum}"
        raise ValueError(f"{name} must be None or an integer{bound}, got {value!r}") from None


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is ``True`` or ``False``; else ``ValueError``."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_real(
    name: str,
    value: Any,
    *,
    positive: bool = False,
    nonnegative: bool = False,
    maximum: float | None = None,
) -> float:
    """``value`` if it is a finite real number (int or float, not a bool) meeting the bounds.

    A non-number is a ``TypeError``; NaN, inf or a bound not met a ``ValueError``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if positive and not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    if nonnegative and not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    if maximum is not None and not value <= maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value!r}")
    return value
