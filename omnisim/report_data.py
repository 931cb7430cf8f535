"""Reading engagement logs for reports through DuckDB: aggregate in SQL, return aggregates.

:class:`LogSource` opens a log — a Parquet file, a directory of (hive-)partitioned Parquet
files, a CSV / CSV.gz export, or an in-memory DataFrame — as the DuckDB view ``log`` with
every schema column present (absent optional ones as NULL) and ``ts`` as a UTC
``TIMESTAMPTZ``. Nothing is loaded into pandas except query results; the report
functions in :mod:`omnisim.report_tables` bring back one row per group, per bucket or (for
off-policy evaluation, which needs them) per decision.

:func:`check_log` validates a Parquet log *in SQL* (required columns, timestamps, the event
and channel vocabularies, numbers in ``propensity`` / ``value``, propensities in [0, 1],
non-negative values, unique ``message_id`` on ``sent`` rows) and raises :class:`omnisim.log.LogValidationError` with the same kind of
message as :func:`omnisim.log.validate`; CSV logs go through :func:`omnisim.log.read_log`.

:func:`data_summary` and :func:`data_quality` are the opening section of every report.

Time is UTC throughout (the session ``TimeZone`` is set to UTC); durations say their unit
in their name (``_h`` hours, ``_days`` days).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from omnisim.log import (CHANNELS, COLUMNS, EVENTS, FLOAT_COLUMNS, REQUIRED_COLUMNS, LogValidationError,
                         read_log, validate)

__all__ = ["LogSource", "MESSAGE_OUTCOMES", "check_log", "check_timezones", "data_quality", "data_summary",
           "open_log"]

#: Message events that follow a ``sent`` row and carry its ``message_id``.
MESSAGE_OUTCOMES: tuple[str, ...] = ("delivered", "bounced", "failed", "opened", "clicked", "unsubscribed")
#: Decision-side events that may legitimately repeat at one instant (several triggers at once).
_REPEATABLE = ("decided", "deferred", "suppressed")


def _q(s: str) -> str:
    """A SQL string literal."""
    return "'" + str(s).replace("'", "''") + "'"


def _parquet_glob(path: Path) -> str:
    if path.is_dir():
        return str(path / "**" / "*.parquet")
    return str(path)


def _kind(path: Path) -> str:
    name = path.name.lower()
    if path.is_dir() or name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    raise LogValidationError([f"unsupported file type {''.join(path.suffixes) or '(no extension)'!r}; "
                              "expected .csv, .csv.gz, .parquet or a directory of .parquet files"], str(path))


def _parquet_columns(con: Any, path: Path) -> dict[str, str]:
    """Column name → DuckDB type of a Parquet file or partitioned directory."""
    glob = _parquet_glob(path)
    try:
        rows = con.execute(f"DESCRIBE SELECT * FROM read_parquet({_q(glob)}, hive_partitioning=true, "
                           "union_by_name=true)").fetchall()
    except Exception as exc:  # duckdb.IOException, InvalidInputException, ...
        raise LogValidationError([f"cannot be read as parquet: {str(exc).splitlines()[0]}"], str(path)) from None
    return {r[0]: r[1] for r in rows}


_NUMERIC_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
                  "UBIGINT", "UHUGEINT", "FLOAT", "REAL", "DOUBLE", "DECIMAL")


def _is_numeric(duckdb_type: str) -> bool:
    """Whether a DuckDB column type holds numbers (``DECIMAL(18,3)`` included)."""
    return duckdb_type.upper().split("(")[0].strip() in _NUMERIC_TYPES


def _select_normalised(source_sql: str, columns: dict[str, str]) -> str:
    """SELECT list giving every schema column with its normalised type."""
    parts = []
    ts_type = columns.get("ts", "")
    if "TIME ZONE" in ts_type.upper():
        parts.append("ts::TIMESTAMPTZ AS ts")
    elif ts_type.upper().startswith("TIMESTAMP"):
        parts.append("timezone('UTC', ts) AS ts")  # naive timestamps are UTC by the log's contract
    else:
        parts.append("CAST(ts AS TIMESTAMPTZ) AS ts")
    for c in COLUMNS[1:]:
        if c in FLOAT_COLUMNS and c in columns and not _is_numeric(columns[c]):
            parts.append(f"CAST(NULLIF(trim(CAST({c} AS VARCHAR)), '') AS DOUBLE) AS {c}")  # '' is null, as in CSV
        elif c in columns:
            parts.append(f"CAST({c} AS DOUBLE) AS {c}" if c in FLOAT_COLUMNS else f"CAST({c} AS VARCHAR) AS {c}")
        else:
            parts.append(f"CAST(NULL AS {'DOUBLE' if c in FLOAT_COLUMNS else 'VARCHAR'}) AS {c}")
    extra = [c for c in columns if c not in COLUMNS]
    parts += [f'"{c}"' for c in extra]
    return f"SELECT {', '.join(parts)} FROM {source_sql}"


def check_log(path: str | Path, con: Any = None) -> None:
    """Validate a log file without loading it into pandas when it is Parquet.

    Raises :class:`~omnisim.log.LogValidationError` naming the file and every problem found
    (first offending values, how many rows, and the first such row: 1-based data-row number,
    with its file inside a directory). Text in ``propensity`` / ``value`` must be a number or
    blank (read as null). CSV files are validated by
    :func:`omnisim.log.read_log` (they are read whole).
    """
    import duckdb

    path = Path(path)
    if not path.exists():
        raise LogValidationError([f"file not found (looked at {path.resolve()})"], str(path))
    if _kind(path) == "csv":
        read_log(path)
        return
    if path.is_file() and path.stat().st_size == 0:
        raise LogValidationError(["the file is empty (0 bytes); expected Parquet with the log's columns"], str(path))
    if path.is_dir() and not any(path.rglob("*.parquet")):
        raise LogValidationError(["the directory holds no .parquet file"], str(path))
    con = con or duckdb.connect()
    cols = _parquet_columns(con, path)
    missing = [c for c in REQUIRED_COLUMNS if c not in cols]
    if missing:
        raise LogValidationError([
            f"missing required column(s) {', '.join(map(repr, missing))}; found "
            f"{', '.join(map(repr, cols)) or 'no columns'}; required: {', '.join(REQUIRED_COLUMNS)}"], str(path))
    # where the first offending row is: its file and 1-based data-row number (unless the log's own
    # columns would clash with the ones DuckDB adds)
    locate = "filename" not in cols and "file_row_number" not in cols
    src = (f"read_parquet({_q(_parquet_glob(path))}, hive_partitioning=true, union_by_name=true"
           + (", filename=true, file_row_number=true)" if locate else ")"))
    first = ("first(filename ORDER BY filename, file_row_number), first(file_row_number ORDER BY filename, "
             "file_row_number)") if locate else "NULL, NULL"
    problems: list[str] = []
    n = con.execute(f"SELECT count(*) FROM {src}").fetchone()[0]
    if n == 0:
        raise LogValidationError(["the log has no rows (expected at least one event)"], str(path))

    def at(file: str | None, row: int | None) -> str:
        """'row 8' (1-based data row), 'row 8 of day=1/part.parquet' in a directory; '' if unknown."""
        if row is None:
            return ""
        if path.is_dir() and file:
            f = Path(file)
            return f"row {int(row) + 1} of {f.relative_to(path) if f.is_relative_to(path) else f}"
        return f"row {int(row) + 1}"

    def rows_at(k: int, file: str | None, row: int | None) -> str:
        """'1 row (row 8)' / '3 rows (first: row 8)'."""
        where = at(file, row)
        return (f"{k} {'row' if k == 1 else 'rows'}"
                + (f" ({'' if k == 1 else 'first: '}{where})" if where else ""))

    def bad_values(expr_bad: str, show: str, what: str, expected: str) -> None:
        rows = con.execute(f"SELECT {show} AS v, count(*) AS n, {first} FROM {src} WHERE {expr_bad} "
                           "GROUP BY 1 ORDER BY n DESC LIMIT 5").fetchall()
        for v, k, file, row in rows:
            problems.append(f"{what} {v!r} in {rows_at(k, file, row)}; {expected}")

    def empty(col: str, cond: str) -> None:
        k, file, row = con.execute(f"SELECT count(*), {first} FROM {src} WHERE {cond}").fetchone()
        if k:
            problems.append(f"column {col!r}: empty in {rows_at(k, file, row)}")

    if not cols["ts"].upper().startswith("TIMESTAMP"):
        bad_values("ts IS NOT NULL AND TRY_CAST(ts AS TIMESTAMPTZ) IS NULL", "CAST(ts AS VARCHAR)",
                   "ts: not a timestamp:", "expected ISO 8601, e.g. '2024-03-01T09:30:00Z'")
    empty("ts", "ts IS NULL")
    for col, vocab in (("event", EVENTS), ("channel", CHANNELS)):
        allowed = ", ".join(_q(v) for v in vocab)
        bad_values(f"CAST({col} AS VARCHAR) NOT IN ({allowed})", f"CAST({col} AS VARCHAR)",
                   f"column {col!r}: unknown value", f"expected one of {', '.join(vocab)}")
        empty(col, f"{col} IS NULL")
    empty("user_id", "user_id IS NULL OR trim(CAST(user_id AS VARCHAR)) = ''")
    for col in FLOAT_COLUMNS:  # text columns: every non-blank entry must be a number
        if col in cols and not _is_numeric(cols[col]):
            bad_values(f"trim(CAST({col} AS VARCHAR)) <> '' AND TRY_CAST({col} AS DOUBLE) IS NULL",
                       f"CAST({col} AS VARCHAR)", f"column {col!r}: not a number:", "expected a number or empty")
    if "propensity" in cols:
        bad_values("TRY_CAST(propensity AS DOUBLE) < 0 OR TRY_CAST(propensity AS DOUBLE) > 1",
                   "TRY_CAST(propensity AS DOUBLE)", "column 'propensity':", "expected a probability in [0, 1]")
    if "value" in cols:
        bad_values("TRY_CAST(value AS DOUBLE) < 0", "TRY_CAST(value AS DOUBLE)", "column 'value': negative value",
                   "expected revenue or cost >= 0")
    if "message_id" in cols:
        rows = con.execute(f"SELECT message_id, count(*), {first} FROM {src} WHERE event = 'sent' "
                           "AND message_id IS NOT NULL GROUP BY 1 HAVING count(*) > 1 ORDER BY 2 DESC LIMIT 3").fetchall()
        for mid, k, file, row in rows:
            where = at(file, row)
            problems.append(f"column 'message_id': {mid!r} sent more than once ({k} rows"
                            + (f", first: {where}" if where else "") + "); each 'sent' row needs its own message_id")
    if problems:
        raise LogValidationError(problems, str(path))


def check_timezones(users: pd.DataFrame, source: str = "the users table") -> None:
    """Raise ``ValueError`` naming ``source``, the rows, users and values of a ``timezone``
    column that are not IANA names DuckDB knows (local hours are computed in DuckDB); empty
    (null) time zones are fine — those users' local time is UTC."""
    import duckdb

    if "timezone" not in users.columns:
        return
    tz = users["timezone"].astype("string").reset_index(drop=True)
    with duckdb.connect() as con:
        known = {r[0] for r in con.execute("SELECT name FROM pg_timezone_names()").fetchall()}
    bad = (tz.notna() & ~tz.isin(known)).to_numpy(bool)
    if bad.any():
        pos = np.flatnonzero(bad)
        rows = ", ".join(str(i + 1) for i in pos[:5]) + (f" and {len(pos) - 5} more" if len(pos) > 5 else "")
        uid = users["user_id"].iloc[pos[0]] if "user_id" in users.columns else None
        raise ValueError(f"{source}: column 'timezone': unknown time zone {tz.iloc[pos[0]]!r} in "
                         f"{'row' if len(pos) == 1 else 'rows'} {rows}"
                         + (f" (user_id {str(uid)!r})" if uid is not None else "")
                         + "; expected an IANA name such as 'Europe/Paris', or empty for UTC")


class LogSource:
    """A log opened in DuckDB as the view ``log`` (and ``users`` when a users table is given).

    Parameters
    ----------
    log
        a Parquet file, a directory of Parquet files (hive partitions allowed), a CSV /
        CSV.gz file (read and validated with :func:`omnisim.log.read_log`), or a DataFrame
        (validated with :func:`omnisim.log.validate`).
    users
        a users table (path, as :func:`omnisim.analysis.load_users` reads, or a DataFrame)
        keyed by ``user_id``; ``None`` for none. Only ``user_id`` and ``timezone`` are put in
        DuckDB (as ``users``); the full table is kept as :attr:`users_df`.
    check
        validate Parquet input in SQL first (:func:`check_log`).
    memory_limit
        DuckDB ``memory_limit`` (e.g. ``'2GB'``); ``None`` keeps DuckDB's default.

    Attributes: ``con`` (the DuckDB connection), ``label`` (what was read, for the report),
    ``users_df`` (DataFrame or None), ``has_timezones`` (the users table has ``timezone``).
    """

    def __init__(self, log: str | Path | pd.DataFrame, users: str | Path | pd.DataFrame | None = None, *,
                 check: bool = True, memory_limit: str | None = None, threads: int | None = None):
        import duckdb

        self.con = duckdb.connect()
        self.con.execute("SET TimeZone = 'UTC'")
        self.con.execute("SET preserve_insertion_order = false")  # every query orders what it returns
        try:  # no progress bar in reports (under Jupyter, DuckDB may refuse the setting: then it has none)
            self.con.execute("SET enable_progress_bar = false")
        except Exception:  # noqa: BLE001 - duckdb.InvalidInputException; harmless
            pass
        if memory_limit:
            self.con.execute(f"SET memory_limit = {_q(memory_limit)}")
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        if isinstance(log, pd.DataFrame):
            self._register_frame(validate(log, source="DataFrame"))
            self.label = f"a DataFrame of {len(log):,} rows"
        else:
            path = Path(log)
            if _kind(path) == "csv" or not path.exists():
                self._register_frame(read_log(path))
            else:
                if check:
                    check_log(path, self.con)
                cols = _parquet_columns(self.con, path)
                src = f"read_parquet({_q(_parquet_glob(path))}, hive_partitioning=true, union_by_name=true)"
                self.con.execute(f"CREATE VIEW log AS {_select_normalised(src, cols)}")
            self.label = str(path)
        self.users_df = self._users(users)
        self.has_timezones = self.users_df is not None and "timezone" in self.users_df.columns
        if self.users_df is not None:
            frame = pd.DataFrame({"user_id": self.users_df["user_id"].astype("string").astype(object)})
            frame["timezone"] = (self.users_df["timezone"].astype("string").astype(object) if self.has_timezones
                                 else None)
        else:
            frame = pd.DataFrame({"user_id": pd.Series([], dtype=object), "timezone": pd.Series([], dtype=object)})
        frame["timezone"] = frame["timezone"].astype(object)
        self.con.register("users_frame", frame)
        self.con.execute("CREATE VIEW users AS SELECT * FROM users_frame")

    def _register_frame(self, df: pd.DataFrame) -> None:
        frame = df.copy()
        for c in ("event", "channel"):
            frame[c] = frame[c].astype(str)
        for c in frame.columns:
            if str(frame[c].dtype) == "string":
                frame[c] = frame[c].astype(object)
        self.con.register("log_frame", frame)
        cols = {c: ("TIMESTAMP WITH TIME ZONE" if c == "ts" else "DOUBLE" if c in FLOAT_COLUMNS else "VARCHAR")
                for c in frame.columns}
        self.con.execute(f"CREATE VIEW log AS {_select_normalised('log_frame', cols)}")

    @staticmethod
    def _users(users: str | Path | pd.DataFrame | None) -> pd.DataFrame | None:
        from omnisim.analysis import load_users

        if users is None:
            return None
        if isinstance(users, pd.DataFrame):
            if "user_id" not in users.columns:
                raise ValueError("the users table has no 'user_id' column; found " + ", ".join(map(str, users.columns)))
            check_timezones(users, "the users DataFrame")
            return users.assign(user_id=users["user_id"].astype("string"))
        table = load_users(users)
        check_timezones(table, str(users))
        return table

    def sql(self, query: str, params: list | None = None) -> pd.DataFrame:
        """Run ``query`` and return the (small) result as a DataFrame."""
        return self.con.execute(query, params or []).df()

    def scalar(self, query: str) -> Any:
        """The single value ``query`` returns."""
        return self.con.execute(query).fetchone()[0]

    def has_column(self, name: str) -> bool:
        """Whether the view ``log`` has column ``name`` (extra columns such as ``step`` included)."""
        return name in [r[0] for r in self.con.execute("DESCRIBE log").fetchall()]

    def events_present(self) -> set[str]:
        """The event types that occur in the log."""
        return {r[0] for r in self.con.execute("SELECT DISTINCT event FROM log").fetchall()}

    def close(self) -> None:
        self.con.close()


def open_log(log: str | Path | pd.DataFrame | None, users: str | Path | pd.DataFrame | None = None,
             **kw: Any) -> LogSource:
    """:class:`LogSource` for ``log``; ``None`` means the shipped Hillstrom data (converted in memory)."""
    if log is None:
        from omnisim.datasets import hillstrom_log

        df, u = hillstrom_log()
        src = LogSource(df, u if users is None else users, **kw)
        src.label = "the shipped Hillstrom data (data/hillstrom), converted in memory"
        return src
    return LogSource(log, users, **kw)


def data_summary(src: LogSource) -> dict[str, Any]:
    """What was read: ``start`` / ``end`` (ISO UTC), ``days`` (span in days), ``users``,
    ``events``, ``channels`` (sorted, ``none`` included when present), ``by_event`` (count per
    event type) and ``users_table`` (rows of the users table, or None)."""
    row = src.con.execute("SELECT min(ts), max(ts), count(DISTINCT user_id), count(*) FROM log").fetchone()
    by_event = src.sql("SELECT event, count(*) AS n FROM log GROUP BY 1 ORDER BY 2 DESC")
    channels = [r[0] for r in src.con.execute("SELECT DISTINCT channel FROM log ORDER BY 1").fetchall()]
    start, end = pd.Timestamp(row[0]).tz_convert("UTC"), pd.Timestamp(row[1]).tz_convert("UTC")
    return {
        "source": src.label, "start": start.isoformat(), "end": end.isoformat(),
        "days": (end - start).total_seconds() / 86400.0, "users": int(row[2]), "events": int(row[3]),
        "channels": channels, "by_event": {str(e): int(n) for e, n in zip(by_event["event"], by_event["n"])},
        "users_table": None if src.users_df is None else int(len(src.users_df)),
        "timezones": bool(src.has_timezones),
    }


def data_quality(src: LogSource, late_after_h: float = 168.0) -> dict[str, Any]:
    """Data-quality counts, each with a few examples.

    - ``duplicated_events``: extra copies of rows identical in every schema column, for events
      other than decisions (several triggers at one instant may legitimately decide twice);
    - ``unknown_message_ids``: message outcome rows (``delivered`` … ``unsubscribed``) whose
      ``message_id`` has no ``sent`` (or ``decided``) row;
    - ``unknown_users``: users in the log missing from the users table (only with a table);
    - ``late_events``: message outcome rows timestamped before their send (clock skew /
      out of order) or more than ``late_after_h`` hours after it.

    Returns ``{"checks": [{"check", "count", "detail"}...], "warnings": [str, ...]}`` where
    ``warnings`` holds a sentence for every non-zero check.
    """
    if late_after_h < 0:
        raise ValueError(f"late_after_h must be >= 0 (hours); got {late_after_h!r}")
    outcomes = ", ".join(_q(e) for e in MESSAGE_OUTCOMES)
    keys = ", ".join(COLUMNS)  # every schema column: rows of two journey steps differ by step only
    repeatable = ", ".join(_q(e) for e in _REPEATABLE)
    dup = src.con.execute(f"""
        SELECT coalesce(sum(n - 1), 0), count(*) FROM (
          SELECT count(*) AS n FROM log WHERE event NOT IN ({repeatable}) GROUP BY {keys} HAVING count(*) > 1)
    """).fetchone()
    dup_ex = src.sql(f"""SELECT user_id, event, ts, count(*) AS copies FROM log WHERE event NOT IN ({repeatable})
                         GROUP BY {keys} HAVING count(*) > 1 ORDER BY copies DESC, ts LIMIT 3""")
    sent_cte = "sent AS (SELECT message_id, min(ts) AS sent_ts FROM log WHERE event = 'sent' AND message_id IS NOT NULL GROUP BY 1)"
    known_cte = ("known AS (SELECT DISTINCT message_id FROM log WHERE event IN ('sent', 'decided') "
                 "AND message_id IS NOT NULL)")
    unk = src.con.execute(f"""WITH {known_cte}
        SELECT count(*), count(DISTINCT l.message_id) FROM log l LEFT JOIN known s USING (message_id)
        WHERE l.event IN ({outcomes}) AND l.message_id IS NOT NULL AND s.message_id IS NULL""").fetchone()
    unk_ex = [r[0] for r in src.con.execute(f"""WITH {known_cte}
        SELECT DISTINCT l.message_id FROM log l LEFT JOIN known s USING (message_id)
        WHERE l.event IN ({outcomes}) AND l.message_id IS NOT NULL AND s.message_id IS NULL
        ORDER BY 1 LIMIT 3""").fetchall()]
    late = src.con.execute(f"""WITH {sent_cte}
        SELECT count(*) FILTER (WHERE l.ts < s.sent_ts),
               count(*) FILTER (WHERE l.ts > s.sent_ts + to_microseconds(CAST({float(late_after_h)} * 3.6e9 AS BIGINT)))
        FROM log l JOIN sent s USING (message_id) WHERE l.event IN ({outcomes})""").fetchone()
    checks = [
        {"check": "duplicated_events", "count": int(dup[0]),
         "detail": "; ".join(f"{r.user_id} {r.event} at {pd.Timestamp(r.ts).isoformat()} ×{r.copies}"
                             for r in dup_ex.itertuples())},
        {"check": "unknown_message_ids", "count": int(unk[0]), "detail": ", ".join(map(str, unk_ex))},
        {"check": "late_events_before_send", "count": int(late[0]), "detail": ""},
        {"check": f"late_events_after_{late_after_h:g}h", "count": int(late[1]), "detail": ""},
    ]
    if src.users_df is not None:
        u = src.con.execute("""SELECT count(DISTINCT l.user_id), count(*) FROM log l
                               LEFT JOIN users u USING (user_id) WHERE u.user_id IS NULL""").fetchone()
        ex = [r[0] for r in src.con.execute("""SELECT DISTINCT l.user_id FROM log l LEFT JOIN users u USING (user_id)
                                               WHERE u.user_id IS NULL ORDER BY 1 LIMIT 3""").fetchall()]
        checks.append({"check": "unknown_users", "count": int(u[0]),
                       "detail": (f"{int(u[1])} rows; e.g. " + ", ".join(ex)) if u[0] else ""})
    sentences = {
        "duplicated_events": "{n:,} duplicated event rows (identical copies; they are counted as they are)",
        "unknown_message_ids": "{n:,} message events refer to a message_id with no 'sent' or 'decided' row",
        "late_events_before_send": "{n:,} message events are timestamped before their send",
        "unknown_users": "{n:,} users in the log are not in the users table",
    }
    warnings = []
    for c in checks:
        if c["count"]:
            tpl = sentences.get(c["check"], "{n:,} message events arrive more than "
                                + f"{late_after_h:g} h after their send")
            warnings.append(tpl.format(n=c["count"]) + (f" (e.g. {c['detail']})" if c["detail"] else ""))
    return {"checks": checks, "warnings": warnings}
