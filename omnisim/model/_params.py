"""Helpers for parameter dataclasses: numeric fields with ranges the scenario loader checks."""

from __future__ import annotations

from dataclasses import field
from typing import Any


def num(default: Any, *, lo: float | None = None, hi: float | None = None,
        lo_open: bool = False, doc: str = "") -> Any:
    """A dataclass field whose value must lie in ``[lo, hi]`` (``(lo, hi]`` if ``lo_open``).

    The range lives in the field's metadata; :mod:`omnisim.model.scenario` enforces it and
    names it in error messages.
    """
    return field(default=default, metadata={"lo": lo, "hi": hi, "lo_open": lo_open, "doc": doc})


def prob(default: float) -> Any:
    """A probability field: a number in [0, 1]."""
    return num(default, lo=0.0, hi=1.0)
