"""Persistence for the sender: SQLite by default, PostgreSQL in production.

One thin layer over DB-API (stdlib ``sqlite3`` or psycopg 3). SQL is written once with ``?``
placeholders; :class:`Store` rewrites them for psycopg. Times are stored as integer
**microseconds since the Unix epoch (UTC)**, so they round-trip exactly.

Tables: ``users`` (its row is the per-user lock), ``events`` (the idempotent inbox, keyed by
the client's idempotency key), ``jobs`` (durable timers: journey follow-ups and pending
messages), ``log`` (the engagement log), ``outbox`` (admitted messages to deliver),
``sent_keys`` (provider idempotency keys, :class:`~omnisim.send.providers.base.SentKeys`),
``quarantine``, ``api_keys`` (SHA-256 hashes only), ``settings``.

Atomicity: every write path runs in :meth:`Store.transaction`. On SQLite a transaction is
``BEGIN IMMEDIATE`` (one writer at a time, in any process); on PostgreSQL the caller locks the
user's row with :meth:`Store.lock_user` (``FOR UPDATE``, or ``SKIP LOCKED`` for workers), so
caps and dedup see every send admitted before them. A ``?schema=NAME`` query parameter on a
PostgreSQL URL puts all tables in that schema (tests use one schema per run).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.parse import parse_qs, urlsplit, urlunsplit

from omnisim.errors import OmnisimError

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class StoreError(OmnisimError):
    """A database URL the sender cannot use; the message says what was expected."""


def to_us(ts: datetime) -> int:
    """Microseconds since the epoch of an aware datetime."""
    delta = ts - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    """The aware UTC datetime of ``us`` microseconds since the epoch."""
    from datetime import timedelta

    return EPOCH + timedelta(microseconds=int(us))


LOG_COLUMNS = ("ts_us", "user_id", "event", "channel", "action", "message_id", "campaign",
               "policy", "propensity", "value", "reason", "tag", "step", "trigger_id",
               "artifact", "response")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
  user_id TEXT PRIMARY KEY, timezone TEXT NOT NULL, traits TEXT NOT NULL, consent TEXT NOT NULL,
  addresses TEXT NOT NULL, n_pending BIGINT NOT NULL DEFAULT 0, n_msg BIGINT NOT NULL DEFAULT 0,
  updated_us BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
  idem_key TEXT PRIMARY KEY, user_id TEXT NOT NULL, kind TEXT NOT NULL, ts_us BIGINT NOT NULL,
  body TEXT NOT NULL, received_us BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
  job_id {serial}, user_id TEXT NOT NULL, kind TEXT NOT NULL, due_us BIGINT NOT NULL,
  body TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending', created_us BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (state, due_us);
CREATE INDEX IF NOT EXISTS jobs_user ON jobs (user_id, state, due_us);
CREATE TABLE IF NOT EXISTS log (
  id {serial}, ts_us BIGINT NOT NULL, user_id TEXT NOT NULL, event TEXT NOT NULL,
  channel TEXT NOT NULL, action TEXT, message_id TEXT, campaign TEXT, policy TEXT,
  propensity DOUBLE PRECISION, value DOUBLE PRECISION, reason TEXT, tag TEXT, trigger_id TEXT,
  artifact TEXT, response TEXT, step TEXT);
CREATE INDEX IF NOT EXISTS log_user ON log (user_id, ts_us);
CREATE INDEX IF NOT EXISTS log_message ON log (message_id);
CREATE TABLE IF NOT EXISTS outbox (
  message_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, channel TEXT NOT NULL,
  state TEXT NOT NULL, due_us BIGINT NOT NULL, lease_us BIGINT NOT NULL DEFAULT 0,
  attempts BIGINT NOT NULL DEFAULT 0, body TEXT NOT NULL, result TEXT,
  queued_us BIGINT, retries BIGINT NOT NULL DEFAULT 0, next_try_us BIGINT NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS outbox_state ON outbox (state, due_us);
CREATE TABLE IF NOT EXISTS sent_keys (
  idem_key TEXT PRIMARY KEY, provider TEXT NOT NULL, provider_message_id TEXT,
  ts_us BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS quarantine (
  id {serial}, received_us BIGINT NOT NULL, reason TEXT NOT NULL, item TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rate_limits (key TEXT PRIMARY KEY, tat_us BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (
  key_hash TEXT PRIMARY KEY, label TEXT NOT NULL, created_us BIGINT NOT NULL);
"""
#: Columns added to tables after their first release ``(table, column, SQL type)``: a store
#: created before gets them on its first start with this code (``ALTER TABLE … ADD COLUMN``;
#: earlier rows read null).
_ADDED_COLUMNS = (("log", "step", "TEXT"), ("outbox", "queued_us", "BIGINT"),
                  ("outbox", "retries", "BIGINT NOT NULL DEFAULT 0"),
                  ("outbox", "next_try_us", "BIGINT NOT NULL DEFAULT 0"))
#: Version of :data:`_SCHEMA` recorded in ``settings`` (a store at this version runs no DDL).
SCHEMA_VERSION = hashlib.sha256(_SCHEMA.encode()).hexdigest()[:16]
_DDL_ATTEMPTS = 5


@dataclass(frozen=True)
class DbUrl:
    """A parsed store URL: ``sqlite:///path.db`` or ``postgresql://…[?schema=NAME]``."""

    kind: str  # "sqlite" | "postgresql"
    target: str  # file path, or the libpq URL without our own query parameters
    schema: str | None = None

    @classmethod
    def parse(cls, url: str) -> "DbUrl":
        if url.startswith("sqlite:///"):
            path = url[len("sqlite:///"):]
            if not path:
                raise StoreError(f"--db {url!r}: expected sqlite:///PATH (a file path)")
            return cls("sqlite", path)
        if url.startswith(("postgresql://", "postgres://")):
            parts = urlsplit(url)
            query = parse_qs(parts.query)
            schema = query.pop("schema", [None])[0]
            if schema is not None and not schema.replace("_", "").isalnum():
                raise StoreError(f"--db: schema {schema!r} must be letters, digits and _")
            rest = "&".join(f"{k}={v}" for k, vs in query.items() for v in vs)
            return cls("postgresql", urlunsplit(parts._replace(query=rest)), schema)
        raise StoreError(f"--db {url!r}: expected sqlite:///PATH or postgresql://USER@HOST/DB")


_SQLITE_WRITERS: dict[str, threading.RLock] = {}
_SQLITE_WRITERS_LOCK = threading.Lock()


def _sqlite_writer(path: str) -> threading.RLock:
    """This process's write lock of the SQLite file at ``path``, shared by every
    :class:`Store` on that file (re-entrant: a nested transaction still fails in SQLite
    with its own error rather than waiting on itself)."""
    key = os.path.realpath(path)
    with _SQLITE_WRITERS_LOCK:
        return _SQLITE_WRITERS.setdefault(key, threading.RLock())


def hash_key(key: str) -> str:
    """SHA-256 hex digest of an API key (only the hash is stored)."""
    return hashlib.sha256(key.encode()).hexdigest()


class Store:
    """A connection pool of one connection per thread, with the sender's queries.

    Create with :meth:`open`; call :meth:`close` when done. Thread-safe: each thread gets its
    own connection.
    """

    def __init__(self, url: DbUrl):
        self.url = url
        self.pg = url.kind == "postgresql"
        self._local = threading.local()
        self._conns: list[Any] = []
        self._lock = threading.Lock()

    # -- connections ---------------------------------------------------------------------
    @classmethod
    def open(cls, url: str, *, create: bool = True) -> "Store":
        """Connect to ``url`` and create the tables if missing (``create``); without
        ``create`` a SQLite file must exist (it is not made empty)."""
        store = cls(DbUrl.parse(url))
        if not create and store.url.kind == "sqlite" and not Path(store.url.target).is_file():
            raise StoreError(f"--db {url!r}: no such file {store.url.target} (expected the "
                             "store of `omnisim send serve`)")
        if create:
            store.create()
        return store

    def _connect(self) -> Any:
        if self.pg:
            try:
                import psycopg
            except ImportError as exc:  # pragma: no cover - psycopg is a sender dependency
                raise StoreError("PostgreSQL needs psycopg 3: pip install 'psycopg[binary]'") from exc
            try:
                conn = psycopg.connect(self.url.target, autocommit=True)
            except psycopg.OperationalError as exc:
                raise StoreError(f"cannot connect to PostgreSQL at {self.url.target}: {exc}") from None
            if self.url.schema:
                conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.url.schema}"')
                conn.execute(f'SET search_path TO "{self.url.schema}"')
            return conn
        path = Path(self.url.target)
        if path.parent and not path.parent.exists():
            raise StoreError(f"--db sqlite:///{path}: folder {path.parent} does not exist")
        conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=60000")
        return conn

    @property
    def conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
            with self._lock:
                self._conns.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            for c in self._conns:
                with contextlib.suppress(Exception):
                    c.close()
            self._conns.clear()
        self._local = threading.local()

    # -- SQL -----------------------------------------------------------------------------
    def _sql(self, sql: str) -> str:
        return sql.replace("%", "%%").replace("?", "%s") if self.pg else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(self._sql(sql), tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        if self.pg:
            with self.conn.cursor() as cur:
                cur.executemany(self._sql(sql), rows)
        else:
            self.conn.executemany(sql, rows)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return list(self.execute(sql, params).fetchall())

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        return self.execute(sql, params).fetchone()

    @contextlib.contextmanager
    def transaction(self) -> Iterator["Store"]:
        """One atomic unit of work (``BEGIN IMMEDIATE`` on SQLite); rolls back on error.

        On SQLite the threads of one process first take turns on a lock of their own
        (:func:`_sqlite_writer`): waiting on it wakes a thread as soon as the writer is done,
        where SQLite's busy handler polls with growing sleeps and lets newcomers overtake a
        long waiter — with four clients a 100-event batch's p99 fell from about 1.1 s to
        0.2 s (BENCHMARKS.md, "Production sender"). Other processes still meet in SQLite's
        busy handler."""
        conn = self.conn
        writer = contextlib.nullcontext() if self.pg else _sqlite_writer(self.url.target)
        with writer:
            conn.execute("BEGIN IMMEDIATE" if not self.pg else "BEGIN")
            try:
                yield self
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextlib.contextmanager
    def savepoint(self, name: str = "unit") -> Iterator["Store"]:
        """A part of the current transaction that rolls back alone on error (``SAVEPOINT``,
        on SQLite and PostgreSQL); the error propagates, the transaction stays usable."""
        self.execute(f"SAVEPOINT {name}")
        try:
            yield self
        except BaseException:
            self.execute(f"ROLLBACK TO SAVEPOINT {name}")
            self.execute(f"RELEASE SAVEPOINT {name}")
            raise
        self.execute(f"RELEASE SAVEPOINT {name}")

    def is_operational_error(self, exc: BaseException | None) -> bool:
        """True for an error of the database itself (connection lost, locked, deadlock,
        serialisation failure) rather than of the data being written: worth retrying whole.
        ``exc`` counts as one when it was raised from one (its ``__cause__`` chain)."""
        kinds: tuple[type[BaseException], ...] = (sqlite3.OperationalError,)
        if self.pg:
            import psycopg

            kinds += (psycopg.OperationalError,)
        while exc is not None:
            if isinstance(exc, kinds):
                return True
            exc = exc.__cause__
        return False

    def create(self) -> None:
        """Create the tables (idempotent) and the erasure salt.

        A store whose ``settings`` already records this schema's version is left alone: no
        DDL runs, so a process (re)starting next to busy workers takes no table locks (on
        PostgreSQL ``CREATE INDEX IF NOT EXISTS`` locks its table even when the index exists,
        which could deadlock with a worker's transaction). Otherwise the DDL runs in one
        transaction behind an advisory lock, retried if PostgreSQL reports a deadlock."""
        if self._schema_is_current():
            return
        for attempt in range(_DDL_ATTEMPTS):
            try:
                self._create_schema()
                return
            except Exception as exc:  # psycopg.errors.DeadlockDetected (PostgreSQL only)
                if type(exc).__name__ != "DeadlockDetected" or attempt == _DDL_ATTEMPTS - 1:
                    raise
                time.sleep(0.05 * 2 ** attempt)

    def _schema_is_current(self) -> bool:
        """True when the tables exist and ``settings`` holds this code's schema version."""
        if self.pg:
            exists = self.one("SELECT to_regclass('settings') IS NOT NULL")
        else:
            exists = self.one("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'settings'")
        return bool(exists and exists[0]) and self.setting("schema_version") == SCHEMA_VERSION

    def _create_schema(self) -> None:
        serial = "BIGSERIAL PRIMARY KEY" if self.pg else "INTEGER PRIMARY KEY AUTOINCREMENT"
        ddl = _SCHEMA.replace("{serial}", serial)
        with self.transaction():
            if self.pg:  # concurrent first starts must not race on CREATE TABLE
                self.execute("SELECT pg_advisory_xact_lock(724361)")
            for stmt in ddl.split(";"):
                if stmt.strip():
                    self.execute(stmt)
            for table, column, sql_type in _ADDED_COLUMNS:
                if column not in self._columns(table):
                    self.execute(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}")
            self.execute("INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) "
                         "DO NOTHING", ("erase_salt", secrets.token_hex(16)))
            self.set_setting("schema_version", SCHEMA_VERSION)

    def _columns(self, table: str) -> set[str]:
        """Column names of ``table`` (in the store's schema)."""
        if self.pg:
            rows = self.query("SELECT column_name FROM information_schema.columns "
                              "WHERE table_name = ? AND table_schema = current_schema()", (table,))
            return {r[0] for r in rows}
        return {r[1] for r in self.query(f"PRAGMA table_info({table})")}

    def drop_schema(self) -> None:
        """Drop the PostgreSQL schema given in the URL (tests' clean-up)."""
        if self.pg and self.url.schema:
            self.execute(f'DROP SCHEMA IF EXISTS "{self.url.schema}" CASCADE')

    # -- settings, keys --------------------------------------------------------------------
    def setting(self, name: str) -> str | None:
        row = self.one("SELECT value FROM settings WHERE name = ?", (name,))
        return row[0] if row else None

    def set_setting(self, name: str, value: str) -> None:
        self.execute("INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) "
                     "DO UPDATE SET value = excluded.value", (name, value))

    def create_api_key(self, label: str, now: datetime) -> str:
        """A new random API key; only its hash is stored. Returns the key (show it once)."""
        key = "osk_" + secrets.token_urlsafe(32)
        self.execute("INSERT INTO api_keys (key_hash, label, created_us) VALUES (?, ?, ?)",
                     (hash_key(key), label, to_us(now)))
        return key

    def api_key_valid(self, key: str) -> bool:
        return self.one("SELECT 1 FROM api_keys WHERE key_hash = ?", (hash_key(key),)) is not None

    # -- users -------------------------------------------------------------------------------
    def lock_user(self, user_id: str, *, skip_locked: bool = False) -> tuple | None:
        """The user's row, locked until the transaction ends (``None``: unknown, or locked by
        another worker when ``skip_locked``)."""
        sql = ("SELECT user_id, timezone, traits, consent, addresses, n_pending, n_msg "
               "FROM users WHERE user_id = ?")
        if self.pg:
            sql += " FOR UPDATE SKIP LOCKED" if skip_locked else " FOR UPDATE"
        return self.one(sql, (user_id,))

    def upsert_user(self, user_id: str, tz: str, traits: dict, consent: dict,
                    addresses: dict, now: datetime) -> None:
        self.execute(
            "INSERT INTO users (user_id, timezone, traits, consent, addresses, updated_us) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET "
            "timezone = excluded.timezone, traits = excluded.traits, consent = excluded.consent,"
            " addresses = excluded.addresses, updated_us = excluded.updated_us",
            (user_id, tz, _dumps(traits), _dumps(consent), _dumps(addresses), to_us(now)))

    def set_counters(self, user_id: str, n_pending: int, n_msg: int) -> None:
        self.execute("UPDATE users SET n_pending = ?, n_msg = ? WHERE user_id = ?",
                     (n_pending, n_msg, user_id))

    def set_consent(self, user_id: str, consent: dict) -> None:
        self.execute("UPDATE users SET consent = ? WHERE user_id = ?", (_dumps(consent), user_id))

    def known_users(self, user_ids: Sequence[str]) -> set[str]:
        ids = list(dict.fromkeys(user_ids))
        out: set[str] = set()
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            out |= {r[0] for r in self.query(f"SELECT user_id FROM users WHERE user_id IN ({marks})", chunk)}
        return out

    def pseudonym(self, user_id: str) -> str:
        """The pseudonymous id that replaces ``user_id`` in the log on erasure."""
        salt = self.setting("erase_salt") or ""
        return "anon-" + hashlib.sha256(f"{salt}\x1f{user_id}".encode()).hexdigest()[:20]

    def erase_user(self, user_id: str) -> str:
        """Delete the user's personal data; the log keeps a pseudonymous id. Returns it."""
        anon = self.pseudonym(user_id)
        n = len(user_id) + 1  # message ids are "<user_id>-m<n>": pseudonymise them too
        self.execute("DELETE FROM users WHERE user_id = ?", (user_id,))
        self.execute("UPDATE log SET message_id = ? || substr(message_id, ?) WHERE user_id = ? "
                     "AND message_id IS NOT NULL", (anon, n, user_id))
        self.execute("UPDATE outbox SET message_id = ? || substr(message_id, ?) WHERE user_id = ?",
                     (anon, n, user_id))
        self.execute("UPDATE log SET user_id = ? WHERE user_id = ?", (anon, user_id))
        self.execute("UPDATE events SET user_id = ?, body = '{}' WHERE user_id = ?", (anon, user_id))
        self.execute("UPDATE jobs SET state = 'cancelled', body = '{}' WHERE user_id = ? "
                     "AND state = 'pending'", (user_id,))
        self.execute("UPDATE jobs SET user_id = ? WHERE user_id = ?", (anon, user_id))
        self.execute("UPDATE outbox SET state = CASE WHEN state IN ('queued', 'sending') "
                     "THEN 'cancelled' ELSE state END, body = '{}', user_id = ? WHERE user_id = ?",
                     (anon, user_id))
        return anon

    # -- events (idempotent inbox) ---------------------------------------------------------
    def insert_event(self, key: str, user_id: str, kind: str, ts: datetime, body: dict,
                     now: datetime) -> bool:
        """Record an event once; False when its idempotency key was seen before."""
        cur = self.execute(
            "INSERT INTO events (idem_key, user_id, kind, ts_us, body, received_us) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (idem_key) DO NOTHING",
            (key, user_id, kind, to_us(ts), _dumps(body), to_us(now)))
        return cur.rowcount == 1

    # -- log -------------------------------------------------------------------------------
    def append_log(self, rows: Sequence[Sequence[Any]]) -> None:
        """Insert log rows given in :data:`LOG_COLUMNS` order."""
        marks = ",".join("?" * len(LOG_COLUMNS))
        self.executemany(f"INSERT INTO log ({','.join(LOG_COLUMNS)}) VALUES ({marks})", rows)

    def history(self, user_id: str, since_us: int, until_us: int) -> list[tuple]:
        """Log rows ``(ts_us, event, channel, message_id, campaign, tag, value, step)`` of a
        user in ``[since, until]``, oldest first."""
        return self.query(
            "SELECT ts_us, event, channel, message_id, campaign, tag, value, step FROM log "
            "WHERE user_id = ? AND ts_us >= ? AND ts_us <= ? ORDER BY ts_us, id",
            (user_id, since_us, until_us))

    # -- shared rate limits ----------------------------------------------------------------
    def reserve_rate(self, key: str, interval_s: float, tolerance_s: float, now_s: float) -> float:
        """Reserve one request of the rate limit ``key`` at ``now_s`` (epoch seconds) and
        return the wait before it may go (seconds): GCRA with emission interval
        ``interval_s`` (1 / rate) and burst tolerance ``tolerance_s`` ((burst - 1) /
        rate). One atomic statement, so every process on the store shares the limit
        (:class:`~omnisim.send.providers.SharedTokenBucket`)."""
        now_us, step_us = int(round(now_s * 1e6)), max(1, int(round(interval_s * 1e6)))
        bigger = "GREATEST" if self.pg else "max"
        row = self.one(
            "INSERT INTO rate_limits (key, tat_us) VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
            f"SET tat_us = {bigger}(rate_limits.tat_us, ?) + ? RETURNING tat_us",
            (key, now_us + step_us, now_us, step_us))
        start_us = int(row[0]) - step_us  # when this request's slot begins
        return max(0.0, (start_us - now_us) / 1e6 - tolerance_s)

    def message_row(self, message_id: str, user_id: str) -> tuple | None:
        """``(user_id, channel, campaign, tag, step)`` of a message sent to ``user_id``
        (None for another user's message: a callback cannot borrow its campaign)."""
        return self.one("SELECT user_id, channel, campaign, tag, step FROM log WHERE "
                        "message_id = ? AND user_id = ? AND event = 'sent'", (message_id, user_id))

    def timeline(self, user_id: str, limit: int) -> list[dict[str, Any]]:
        rows = self.query(
            f"SELECT {','.join(LOG_COLUMNS)} FROM log WHERE user_id = ? ORDER BY ts_us DESC, id DESC "
            "LIMIT ?", (user_id, limit))
        out = []
        for r in reversed(rows):
            d = dict(zip(LOG_COLUMNS, r))
            d["ts"] = from_us(d.pop("ts_us")).isoformat().replace("+00:00", "Z")
            out.append({k: v for k, v in d.items() if v is not None})
        return out

    def log_rows(self, batch: int = 50_000) -> Iterator[list[tuple]]:
        """All log rows in :data:`LOG_COLUMNS` order, in batches, in (ts, id) order."""
        last = -1
        while True:
            rows = self.query(f"SELECT id, {','.join(LOG_COLUMNS)} FROM log WHERE id > ? "
                              "ORDER BY id LIMIT ?", (last, batch))
            if not rows:
                return
            last = rows[-1][0]
            yield [r[1:] for r in rows]

    # -- quarantine ------------------------------------------------------------------------
    def quarantine(self, reason: str, item: Any, now: datetime) -> None:
        """Keep ``item`` (a parsed JSON value, or a body's text) whole, with ``reason``.

        A NUL in a text body is kept as the JSON escape ``\\u0000`` (PostgreSQL text cannot
        hold NUL); parsed items are JSON, which escapes it anyway."""
        text = item.replace("\x00", "\\u0000") if isinstance(item, str) else _dumps(item)
        self.execute("INSERT INTO quarantine (received_us, reason, item) VALUES (?, ?, ?)",
                     (to_us(now), reason.replace("\x00", "\\u0000"), text))

    def quarantined(self, limit: int = 100) -> list[tuple[str, str]]:
        return self.query("SELECT reason, item FROM quarantine ORDER BY id DESC LIMIT ?", (limit,))

    # -- SentKeys (provider idempotency) ------------------------------------------------------
    def seen(self, key: str) -> bool:
        return self.one("SELECT 1 FROM sent_keys WHERE idem_key = ?", (key,)) is not None

    def mark(self, key: str, provider: str, provider_message_id: str | None) -> None:
        """Record a key a provider accepted (its own autocommit statement: durable at once)."""
        from omnisim.send.clock import SystemClock

        self.execute("INSERT INTO sent_keys (idem_key, provider, provider_message_id, ts_us) "
                     "VALUES (?, ?, ?, ?) ON CONFLICT (idem_key) DO NOTHING",
                     (key, provider, provider_message_id, to_us(SystemClock().now())))

    # -- metrics -----------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Queue depths: pending timers and messages, queued deliveries, quarantine size."""
        out = {}
        for kind in ("followup", "pending"):
            out[f"jobs_{kind}"] = self.one("SELECT COUNT(*) FROM jobs WHERE state = 'pending' "
                                           "AND kind = ?", (kind,))[0]
        out["outbox_queued"] = self.one("SELECT COUNT(*) FROM outbox WHERE state IN "
                                        "('queued', 'sending')")[0]
        out["outbox_retrying"] = self.one("SELECT COUNT(*) FROM outbox WHERE state IN "
                                          "('queued', 'sending') AND retries > 0")[0]
        out["quarantine"] = self.one("SELECT COUNT(*) FROM quarantine")[0]
        return out


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, default=str)
