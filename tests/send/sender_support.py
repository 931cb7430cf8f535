"""Shared helpers and fixtures of the sender tests (service, API, parity, crash safety).

``store_url`` is parametrised over SQLite (always) and PostgreSQL (when
``OMNISIM_TEST_PG_URL`` is set; each test gets its own schema, dropped afterwards).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from omnisim.policies.artifact import export_policy
from omnisim.send.clock import ManualClock
from omnisim.send.providers.base import DeliveryResult, OutboundMessage
from omnisim.send.service import DecisionService, Event, LoadedPolicy
from omnisim.send.store import Store

PG_URL = os.environ.get("OMNISIM_TEST_PG_URL")
PG_SKIP_REASON = "PostgreSQL tests skipped: OMNISIM_TEST_PG_URL not set (.ci/run sets it)"
requires_pg = pytest.mark.skipif(not PG_URL, reason=PG_SKIP_REASON)
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)  # a Monday, 10:00 UTC
API_KEY = "test-key"


def pg_schema_url() -> str:
    """The PostgreSQL URL with a schema unique to this test (parallel runs do not collide)."""
    assert PG_URL
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}schema=omnisim_t_{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=requires_pg)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh store URL: SQLite file, or a fresh PostgreSQL schema (dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'send.db'}"
        return
    url = pg_schema_url()
    yield url
    s = Store.open(url, create=False)
    s.drop_schema()
    s.close()


@pytest.fixture(scope="session")
def artifact_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed journey with the default pressure rules, exported as an artifact."""
    return export_policy("seed_journey+pressure", tmp_path_factory.mktemp("art") / "policy.json")


class FakeDeliverer:
    """Records every message; answers ``sent`` (unit tests only; e2e tests use ProviderSet)."""

    def __init__(self) -> None:
        self.messages: list[OutboundMessage] = []
        self.lock = threading.Lock()

    def deliver(self, msg: OutboundMessage) -> DeliveryResult:
        with self.lock:
            self.messages.append(msg)
        return DeliveryResult("sent", "fake", 1, "fake-" + msg.message_id, "ok", None)


def make_service(url: str, artifact: Path, clock: ManualClock | None = None) -> DecisionService:
    return DecisionService(Store.open(url), LoadedPolicy.from_file(artifact),
                           clock or ManualClock(T0), late_tolerance=None)


def add_user(store: Store, user_id: str, tz: str = "UTC", channels: tuple[str, ...] = ("email", "sms", "push")) -> None:
    with store.transaction():
        store.upsert_user(user_id, tz, {"segment": "s"}, {ch: True for ch in channels},
                          {ch: f"{user_id}@{ch}" for ch in channels}, T0)


def ev(key: str, user: str, kind: str, ts: datetime, **kw: Any) -> Event:
    return Event(key, user, kind, ts, kw.get("channel"), kw.get("message_id"), kw.get("value"), {})


def log_rows(store: Store, user_id: str | None = None) -> list[dict[str, Any]]:
    """Log rows as dicts (ts as datetime), in (ts, id) order."""
    from omnisim.send.store import LOG_COLUMNS, from_us

    where, params = ("WHERE user_id = ?", (user_id,)) if user_id else ("", ())
    rows = store.query(f"SELECT {','.join(LOG_COLUMNS)} FROM log {where} ORDER BY ts_us, id", params)
    out = []
    for r in rows:
        d = dict(zip(LOG_COLUMNS, r))
        d["ts"] = from_us(d.pop("ts_us"))
        out.append(d)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """The app served by uvicorn on a loopback port, in a thread of this process."""

    def __init__(self, app: Any):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start within 20 s")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def wait_http(url: str, timeout_s: float = 30.0) -> None:
    """Poll ``url/health`` until it answers 200."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not become healthy within {timeout_s} s")


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)
