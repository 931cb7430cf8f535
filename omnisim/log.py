"""The engagement log: one long table, one row per event.

Every part of omnisim speaks it: the simulators and the sender write it, reports and
off-policy evaluation read it. This module holds its schema, :func:`validate`,
:func:`read_log` / :func:`write_log` for CSV and Parquet, and :func:`empty_log`.

Required columns are ``ts``, ``user_id``, ``event`` and ``channel``; the optional ones
(``action``, ``message_id``, ``campaign``, ``policy``, ``propensity``, ``value``,
``reason``, ``tag``, ``step``) read as null when absent, so a four-column export is a valid
log. Extra columns are kept as they are.

``step`` is the journey step that decided (``Decision.step``) on the rows a journey decision
leads to — ``decided``, ``deferred``, ``suppressed``, and the sent message's life cycle
(``sent`` … ``unsubscribed``) — so funnels can count by step rather than by send order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from omnisim.errors import OmnisimError

DECISION_EVENTS = ("decided", "deferred", "suppressed")
MESSAGE_EVENTS = (
    "sent", "delivered", "bounced", "failed", "opened", "clicked", "unsubscribed",
)
BEHAVIOUR_EVENTS = (
    "signup", "visit", "product_view", "cart_add", "cart_abandon", "purchase", "churned",
)
EVENTS: tuple[str, ...] = DECISION_EVENTS + MESSAGE_EVENTS + BEHAVIOUR_EVENTS
CHANNELS: tuple[str, ...] = ("email", "sms", "push", "web", "none")

REQUIRED_COLUMNS: tuple[str, ...] = ("ts", "user_id", "event", "channel")
OPTIONAL_COLUMNS: tuple[str, ...] = (
    "action", "message_id", "campaign", "policy", "propensity", "value", "reason", "tag", "step",
)
COLUMNS: tuple[str, ...] = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
STRING_COLUMNS = ("user_id", "action", "message_id", "campaign", "policy", "reason", "tag",
                  "step")
FLOAT_COLUMNS = ("propensity", "value")

#: Events on which ``message_id`` must be unique within the log (one send per message).
UNIQUE_MESSAGE_EVENTS = ("sent",)

MAX_ROWS_SHOWN = 5


class LogValidationError(OmnisimError, ValueError):
    """A log failed validation. ``problems`` lists every problem found, one line each."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "invalid engagement log:\n  - " + "\n  - ".join(problems))

    def one_paragraph(self) -> str:
        """The message as one paragraph, with what to do next (for the CLI)."""
        where = f"{self.source}" if self.source else "the log"
        about_rows = any(("row" in p or "column" in p) for p in self.problems)
        hint = ("Fix the rows named above (see README, 'How data must look') and run again."
                if about_rows else "Check the path and the file (see README, 'How data must look').")
        return f"error: {where} is not a valid engagement log: " + "; ".join(self.problems) + ". " + hint


def _rows(index: Iterable[int]) -> str:
    """'rows 4, 9, 11' using 1-based data-row numbers (the header is not counted)."""
    idx = [int(i) + 1 for i in index]
    shown = ", ".join(str(i) for i in idx[:MAX_ROWS_SHOWN])
    more = f" and {len(idx) - MAX_ROWS_SHOWN} more" if len(idx) > MAX_ROWS_SHOWN else ""
    return ("row " if len(idx) == 1 else "rows ") + shown + more


def _parse_ts(raw: pd.Series, problems: list[str]) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(raw):
        ts = raw
        if getattr(ts.dt, "tz", None) is None:
            ts = ts.dt.tz_localize("UTC")
        return ts.dt.tz_convert("UTC")
    text = raw.astype("string")
    ts = pd.to_datetime(text, utc=True, errors="coerce", format="mixed")
    bad = ts.isna()
    if bad.any():
        pos = np.flatnonzero(bad.to_numpy())
        first = pos[0]
        problems.append(
            f"{_rows([first])}: ts {text.iloc[first]!r} is not a timestamp"
            + (f" (and {len(pos) - 1} more rows with bad ts: {_rows(pos[1:])})" if len(pos) > 1 else "")
            + "; expected ISO 8601, e.g. '2024-03-01T09:30:00Z'"
        )
    return ts


def _vocab_ok(col: pd.Series, allowed: tuple[str, ...]) -> bool:
    """True when ``col`` is a categorical with only ``allowed`` strings as categories and no
    missing value: it passes :func:`_check_vocab`, checked without looking at every row."""
    if not isinstance(col.dtype, pd.CategoricalDtype):
        return False
    cats = col.cat.categories
    return (all(type(c) is str and c in allowed for c in cats)
            and not (col.cat.codes.to_numpy() < 0).any())


def _is_vocab_dtype(dtype: object, vocab: tuple[str, ...]) -> bool:
    """True when ``dtype`` is exactly the categorical dtype :func:`validate` gives a
    vocabulary column (same categories in the same order, unordered)."""
    if not isinstance(dtype, pd.CategoricalDtype) or dtype.ordered:
        return False
    ref = pd.CategoricalDtype(list(vocab), ordered=False)
    return (list(dtype.categories) == list(vocab)
            and dtype.categories.dtype == ref.categories.dtype)


def _check_vocab(df: pd.DataFrame, column: str, allowed: tuple[str, ...], problems: list[str]) -> None:
    if _vocab_ok(df[column], allowed):
        return
    values = df[column].astype("string")
    missing = values.isna()
    if missing.any():
        problems.append(f"column {column!r}: empty in {_rows(np.flatnonzero(missing))}")
    bad = ~values.isin(allowed) & ~missing
    for value in pd.unique(values[bad])[:MAX_ROWS_SHOWN]:
        pos = np.flatnonzero((values == value).fillna(False).to_numpy())
        problems.append(
            f"column {column!r}: unknown value {value!r} in {len(pos)} "
            f"{'row' if len(pos) == 1 else 'rows'} ({_rows(pos)}); "
            f"expected one of {', '.join(allowed)}"
        )


def validate(df: pd.DataFrame, source: str | None = None) -> pd.DataFrame:
    """Check ``df`` against the engagement-log schema and return it normalised.

    Normalised means: all :data:`COLUMNS` present (absent optional ones as null), ``ts``
    as UTC ``datetime64``, ``event`` / ``channel`` as categoricals over the full
    vocabularies, string columns as pandas ``string``, ``propensity`` / ``value`` float64.

    Raises
    ------
    LogValidationError
        listing every problem found: missing columns, unparsable timestamps, unknown
        events or channels, propensities outside [0, 1], negative or infinite values, duplicated
        ``message_id`` on ``sent`` rows, an empty log. Row numbers are 1-based data rows.
    """
    problems: list[str] = []
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"validate() expects a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        problems.append(
            f"missing required column(s) {', '.join(repr(c) for c in missing)}; "
            f"found {', '.join(repr(str(c)) for c in df.columns) or 'no columns'}; "
            f"required: {', '.join(REQUIRED_COLUMNS)}"
        )
        raise LogValidationError(problems, source)
    if len(df) == 0:
        raise LogValidationError(["the log has no rows (expected at least one event)"], source)

    # copy-on-write (pandas >= 3): columns assigned below never change ``df``
    out = df.reset_index(drop=True)
    out["ts"] = _parse_ts(out["ts"], problems)
    _check_vocab(out, "event", EVENTS, problems)
    _check_vocab(out, "channel", CHANNELS, problems)
    for col in STRING_COLUMNS:
        if col not in out.columns:
            out[col] = pd.Series(pd.NA, index=out.index, dtype="string")
        else:
            out[col] = out[col].astype("string")
    empty_user = out["user_id"].isna() | (out["user_id"].str.strip() == "")
    if empty_user.any():
        problems.append(f"column 'user_id': empty in {_rows(np.flatnonzero(empty_user.to_numpy()))}")
    for col in FLOAT_COLUMNS:
        if col not in out.columns:
            out[col] = np.nan
            continue
        if out[col].dtype == np.float64:  # already numbers: nothing to parse, nothing bad
            continue
        num = pd.to_numeric(out[col], errors="coerce")
        bad = num.isna() & out[col].notna() & (out[col].astype("string").str.strip() != "")
        if bad.any():
            pos = np.flatnonzero(bad.to_numpy())
            problems.append(f"{_rows(pos[:1])}: {col} {out[col].iloc[pos[0]]!r} is not a number"
                            + (f" ({len(pos)} rows in all: {_rows(pos)})" if len(pos) > 1 else ""))
        out[col] = num.astype("float64")
    prop = out["propensity"]
    bad = (prop < 0) | (prop > 1)
    if bad.any():
        pos = np.flatnonzero(bad.to_numpy())
        problems.append(f"column 'propensity': {float(prop.iloc[pos[0]])!r} outside [0, 1] in {_rows(pos)}")
    inf = np.isinf(out["value"].to_numpy(dtype="float64", na_value=np.nan))
    if inf.any():
        pos = np.flatnonzero(inf)
        problems.append(
            f"column 'value': {float(out['value'].iloc[pos[0]])!r} in {_rows(pos)}; "
            "expected a finite revenue or cost >= 0 (or empty)"
        )
    neg = (out["value"] < 0) & ~inf
    if neg.any():
        pos = np.flatnonzero(neg.to_numpy())
        problems.append(
            f"column 'value': negative value {float(out['value'].iloc[pos[0]])!r} in {_rows(pos)}; "
            "expected revenue or cost >= 0"
        )
    event = out["event"] if _vocab_ok(out["event"], EVENTS) else out["event"].astype("string")
    sent = (event.isin(UNIQUE_MESSAGE_EVENTS) & out["message_id"].notna()).to_numpy(bool)
    # duplicated ids among the sent rows only (the others' ids are not counted)
    dup = np.zeros(len(out), bool)
    if sent.any():
        dup[sent] = pd.Series(out["message_id"].array[sent]).duplicated(keep=False).to_numpy(bool)
    if dup.any():
        pos = np.flatnonzero(dup)
        problems.append(
            f"column 'message_id': {out['message_id'].iloc[pos[0]]!r} sent more than once "
            f"({_rows(pos)}); each 'sent' row needs its own message_id"
        )
    if problems:
        raise LogValidationError(problems, source)
    for col, vocab in (("event", EVENTS), ("channel", CHANNELS)):
        if not _is_vocab_dtype(out[col].dtype, vocab):  # (already so: nothing to convert)
            out[col] = pd.Categorical(out[col].astype(str), categories=list(vocab))
    extra = [c for c in out.columns if c not in COLUMNS]
    return out[list(COLUMNS) + extra]


def empty_log() -> pd.DataFrame:
    """A valid, zero-row log with every column in its normalised dtype."""
    df = pd.DataFrame({
        "ts": pd.Series([], dtype="datetime64[ns, UTC]"),
        "user_id": pd.Series([], dtype="string"),
        "event": pd.Categorical([], categories=list(EVENTS)),
        "channel": pd.Categorical([], categories=list(CHANNELS)),
    })
    for col in OPTIONAL_COLUMNS:
        df[col] = pd.Series([], dtype="float64" if col in FLOAT_COLUMNS else "string")
    return df


def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".parquet") or name.endswith(".pq"):
        return "parquet"
    if name.endswith(".csv") or name.endswith(".csv.gz"):
        return "csv"
    raise LogValidationError(
        [f"unsupported file type {''.join(path.suffixes) or '(no extension)'!r}; "
         "expected .csv, .csv.gz or .parquet"], str(path))


def read_log(path: str | Path) -> pd.DataFrame:
    """Read and :func:`validate` an engagement log from CSV (optionally gzipped) or Parquet.

    Raises :class:`LogValidationError` naming the file for a missing, empty, unreadable
    or invalid file.
    """
    path = Path(path)
    kind = _kind(path)
    if not path.exists():
        raise LogValidationError([f"file not found (looked at {path.resolve()})"], str(path))
    if path.stat().st_size == 0:
        raise LogValidationError(["the file is empty (0 bytes); expected a header row and events"], str(path))
    try:
        if kind == "parquet":
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise LogValidationError(["the file has no header or rows; expected a CSV header with "
                                  + ", ".join(REQUIRED_COLUMNS)], str(path)) from None
    except Exception as exc:  # pyarrow / parser errors: say which file and why
        raise LogValidationError([f"cannot be read as {kind}: {exc}"], str(path)) from None
    return validate(df, source=str(path))


def write_log(df: pd.DataFrame, path: str | Path) -> Path:
    """Validate ``df`` and write it as CSV or Parquet (by ``path``'s extension)."""
    path = Path(path)
    kind = _kind(path)
    out = validate(df)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "parquet":
        out.to_parquet(path, index=False)
    else:
        csv = out.copy()
        csv["ts"] = csv["ts"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        csv.to_csv(path, index=False)
    return path


@dataclass(frozen=True)
class LogSummary:
    """Headline facts about a log: period, counts and channels."""

    start: pd.Timestamp
    end: pd.Timestamp
    users: int
    events: int
    by_event: dict[str, int]
    channels: list[str]


def summarize(df: pd.DataFrame) -> LogSummary:
    """Period, user and event counts, and channels used in a validated log."""
    counts = df["event"].value_counts()
    return LogSummary(
        start=df["ts"].min(), end=df["ts"].max(), users=int(df["user_id"].nunique()),
        events=len(df), by_event={str(k): int(v) for k, v in counts.items() if v},
        channels=sorted(str(c) for c in df["channel"].unique() if str(c) != "none"),
    )
