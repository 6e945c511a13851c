"""Numbers as the tools' reports and messages print them."""

from __future__ import annotations

from typing import Any


def fmt(v: Any, digits: int = 3, missing: str = "n/a") -> str:
    """``missing`` for None, yes/no for booleans, Python integers as they are, other numbers to ``digits`` decimals."""
    if v is None:
        return missing
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    return f"{v:.{digits}f}"


def percent(v: float | None, digits: int = 1, missing: str = "n/a") -> str:
    """A fraction as a percentage ('12.5 %'); ``missing`` for None."""
    return missing if v is None else f"{100 * v:.{digits}f} %"
