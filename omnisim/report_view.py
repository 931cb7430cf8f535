"""Display helpers shared by the report notebooks: the opening section, tables, the JSON of numbers.

Notebooks stay thin: they call :mod:`omnisim.report_tables` for numbers,
:mod:`omnisim.report_plots` for figures and these for presentation.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from omnisim.report_data import LogSource, data_quality, data_summary

__all__ = ["fmt_table", "intro", "records", "write_numbers"]


def intro(src: LogSource, title: str, late_after_h: float = 168.0, note: str = "") -> tuple[str, dict, dict]:
    """The opening section of every report as Markdown, with the summary and quality dicts.

    Says what was read (source, period in UTC, users, events, channels, users table and
    whether it has timezones) and lists the data-quality warnings of
    :func:`omnisim.report_data.data_quality` (or says there are none).
    """
    s = data_summary(src)
    q = data_quality(src, late_after_h)
    by_event = ", ".join(f"{e} {n:,}" for e, n in s["by_event"].items())
    lines = [
        f"# {title}", "",
        f"**Data read:** {s['source']}.", "",
        f"- **Period:** {s['start'][:19]} to {s['end'][:19]} UTC ({s['days']:.1f} days)",
        f"- **Users:** {s['users']:,}; **events:** {s['events']:,} ({by_event})",
        f"- **Channels:** {', '.join(s['channels'])}",
        "- **Users table:** " + ("none" if s["users_table"] is None else
                                 f"{s['users_table']:,} users" + ("" if s["timezones"] else ", no `timezone` column")),
    ]
    if note:
        lines += ["", note]
    lines += ["", "**Data quality:** " + ("no problem found (duplicates, unknown ids, late events)."
                                          if not q["warnings"] else "")]
    lines += [f"- ⚠ {w}" for w in q["warnings"]]
    return "\n".join(lines), s, q


def fmt_table(df: pd.DataFrame, pct: Iterable[str] = (), ci: Iterable[str] = (), money: Iterable[str] = (),
              drop: Iterable[str] = ()) -> pd.DataFrame:
    """A table for reading: ``pct`` columns as percent, each ``ci`` column ``c`` shown as
    ``c [lo, hi]`` (percent if ``c`` is in ``pct``) from ``c_lo`` / ``c_hi``, ``money`` with 2
    decimals; ``drop`` columns removed. The numbers themselves go to the JSON."""
    out = df.copy()
    pct, money = set(pct), set(money)

    def f(v: Any, p: bool) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "–"
        return f"{100 * v:.2f} %" if p else f"{v:,.3f}"

    for c in ci:
        if c not in out.columns:
            continue
        p = c in pct
        out[c] = [f"{f(v, p)} [{f(lo, p)}, {f(hi, p)}]" if not pd.isna(v) else "–"
                  for v, lo, hi in zip(df[c], df[f"{c}_lo"], df[f"{c}_hi"])]
        out = out.drop(columns=[f"{c}_lo", f"{c}_hi"])
    for c in pct - set(ci):
        if c in out.columns:
            out[c] = [f(v, True) for v in df[c]]
    for c in money:
        if c in out.columns:
            out[c] = ["–" if pd.isna(v) else f"{v:,.2f}" for v in df[c]]
    return out.drop(columns=[c for c in drop if c in out.columns])


def records(df: pd.DataFrame | None) -> list[dict[str, Any]]:
    """A DataFrame as JSON-ready records (NaN → None, lists kept)."""
    if df is None or df.empty:
        return []
    return json.loads(df.to_json(orient="records", date_format="iso", double_precision=15, default_handler=str))


def write_numbers(path: str | Path | None, numbers: dict[str, Any]) -> Path | None:
    """Write the report's numbers as JSON (``NaN`` → ``null``); ``None`` → nothing written."""
    if not path:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(numbers), indent=1, default=str, allow_nan=False))
    return path


def _clean(x: Any) -> Any:
    """Replace non-finite floats by None, numpy scalars by Python ones, recursively."""
    import numpy as np

    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
