"""The sender's ``log`` table as an engagement log (:mod:`omnisim.log`).

Extra columns kept beside the contract's: ``trigger_id`` (event key or ``job:<id>`` that
caused the row), ``artifact`` (first 12 hex digits of the deciding artifact's SHA-256) and
``response`` (the provider's answer on ``sent`` / ``failed`` rows, JSON).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from omnisim.errors import OmnisimError
from omnisim.log import validate, write_log
from omnisim.send.store import LOG_COLUMNS, Store


def log_frame(store: Store) -> pd.DataFrame:
    """All log rows, validated, in time order."""
    rows = [row for batch in store.log_rows() for row in batch]
    if not rows:
        raise OmnisimError("the sender's log is empty: nothing to export yet")
    return rows_frame(rows)


def rows_frame(rows: list[tuple]) -> pd.DataFrame:
    """Log rows (:data:`~omnisim.send.store.LOG_COLUMNS` order) as a validated
    engagement-log frame in time order."""
    df = pd.DataFrame(rows, columns=list(LOG_COLUMNS))
    df.insert(0, "ts", pd.to_datetime(df.pop("ts_us"), unit="us", utc=True))
    df = df.sort_values("ts", kind="stable").reset_index(drop=True)
    return validate(df, source="sender log")


def export_log(store: Store, out: str | Path) -> int:
    """Write the log to ``out`` (CSV or Parquet by extension); returns the row count."""
    df = log_frame(store)
    write_log(df, out)
    return len(df)
