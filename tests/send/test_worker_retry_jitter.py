"""Outage retries are spread: messages one provider outage held are not all tried again at
the same instant (a thundering herd against the recovering provider). The jitter is bounded
(never later than the capped backoff, never sooner than its ``1 - retry_jitter`` part, never
before a circuit breaker's probe, never past the delivery deadline) and its randomness is
injected, so a seed gives the same times (SQLite, and PostgreSQL when ``OMNISIM_TEST_PG_URL``
is set). Time is the sender's manual clock."""

from __future__ import annotations

import math
import random
from datetime import timedelta
from pathlib import Path

import pytest


from sender_support import add_user, artifact_path, at, ev, make_service, store_url  # noqa: F401

from omnisim.errors import OmnisimError
from omnisim.send.providers.base import DeliveryResult, OutboundMessage
from omnisim.send.store import Store, to_us
from omnisim.send.worker import Worker, WorkerConfig, retry_wait_s

N_USERS = 40
S = 1_000_000  # µs per second


class Outage:
    """A channel whose every provider is down: each delivery is a transient failure, with
    ``retry_after_s`` as an open circuit breaker would report it."""

    def __init__(self, retry_after_s: float | None = None) -> None:
        self.retry_after_s = retry_after_s
        self.tries: list[str] = []

    def deliver(self, msg: OutboundMessage) -> DeliveryResult:
        self.tries.append(msg.message_id)
        return DeliveryResult("failed", "mail-gw", 1, None, "", "mail-gw: HTTP 503",
                              transient=True, retry_after_s=self.retry_after_s)


def queue(store_url: str, artifact: Path):
    """One email per user, all queued at ``at(0)`` (one admission batch)."""
    svc = make_service(store_url, artifact)
    users = [f"u{i:02d}" for i in range(N_USERS)]
    for uid in users:
        add_user(svc.store, uid, channels=("email",))
    svc.ingest([ev(f"k-{uid}", uid, "product_view", at(0)) for uid in users])
    return svc


def rows(store: Store) -> dict[str, tuple[str, int, int]]:
    """message id → (state, retries, next_try_us)."""
    return {m: (st, int(r), int(n)) for m, st, r, n in
            store.query("SELECT message_id, state, retries, next_try_us FROM outbox")}


def test_outage_retries_spread_within_bounds_and_before_the_deadline(store_url, artifact_path):
    """40 messages, one outage: each retry is drawn in [(1 - j)·b, b] after its try (b: the
    capped backoff), they spread (used to: all 40 due at the same microsecond, try after
    try), and none is due after the 0.05 h (180 s) deadline, where they fail."""
    svc = queue(store_url, artifact_path)
    cfg = WorkerConfig(retry_base_s=10, retry_max_s=40, retry_jitter=0.5, max_delivery_delay_h=0.05)
    worker = Worker(svc, Outage(), cfg, rng=random.Random(7))
    t0_us, deadline_us = to_us(at(0)), to_us(at(0)) + 180 * S
    worker.drain()
    first = rows(svc.store)
    assert {st for st, _, _ in first.values()} == {"queued"}
    due = sorted(n for _, _, n in first.values())
    assert len(set(due)) == N_USERS  # spread: no two at the same instant
    assert t0_us + 5 * S <= due[0] and due[-1] <= t0_us + 10 * S  # b = 10 s, j = 0.5
    assert due[-1] - due[0] >= 3 * S  # over most of the 5 s window
    tries_at: list[int] = []
    while any(st == "queued" for st, _, _ in rows(svc.store).values()):
        before = rows(svc.store)
        now_us = min(n for st, _, n in before.values() if st == "queued")
        svc.clock.set(at(0) + timedelta(microseconds=now_us - t0_us))
        worker.drain()
        for mid, (st, retries, nxt) in rows(svc.store).items():
            if before[mid][:2] == (st, retries):
                continue  # not due in this round
            tries_at.append(now_us)
            if st == "failed":
                assert now_us == deadline_us  # the last try is at the deadline
                continue
            b = min(40.0, 10.0 * 2 ** (retries - 1))
            assert nxt == deadline_us or now_us + 0.5 * b * S <= nxt <= now_us + b * S, (mid, retries)
            assert nxt <= deadline_us
    assert max(tries_at) == deadline_us
    assert {st for st, _, _ in rows(svc.store).values()} == {"failed"}
    assert len(set(tries_at)) > 4 * N_USERS  # rounds of different messages rarely coincide


def test_the_same_seed_gives_the_same_retry_times(tmp_path, artifact_path):
    def first_retries(seed: int, db: str) -> list[int]:
        svc = queue(f"sqlite:///{tmp_path / db}", artifact_path)
        Worker(svc, Outage(), WorkerConfig(retry_jitter=0.5), rng=random.Random(seed)).drain()
        return [n for _, (_, _, n) in sorted(rows(svc.store).items())]

    assert first_retries(3, "a.db") == first_retries(3, "b.db")
    assert first_retries(3, "a2.db") != first_retries(4, "c.db")


def test_an_open_breaker_spreads_the_retries_after_its_probe(store_url, artifact_path):
    """The breaker lets a probe through in 300 s: every retry is due after it, spread over
    the jitter's part of the backoff (used to: all at exactly 300 s)."""
    svc = queue(store_url, artifact_path)
    worker = Worker(svc, Outage(retry_after_s=300), WorkerConfig(retry_base_s=10, retry_jitter=0.5),
                    rng=random.Random(1))
    worker.drain()
    due = sorted(n - to_us(at(0)) for _, _, n in rows(svc.store).values())
    assert 300 * S <= due[0] and due[-1] <= 305 * S
    assert len(set(due)) == N_USERS


@pytest.mark.parametrize("tries, jitter, u, retry_after_s, expected", [
    (1, 0.0, 0.9, 0.0, 10.0),      # no jitter: the capped backoff, as before
    (3, 0.0, 0.1, 0.0, 40.0),
    (1, 0.5, 0.0, 0.0, 5.0),       # the lowest: (1 - j)·b
    (1, 0.5, 0.5, 0.0, 7.5),
    (4, 0.5, 0.0, 0.0, 30.0),      # b = min(60, 10·2³)
    (1, 1.0, 0.25, 0.0, 2.5),      # full jitter: U(0, b)
    (1, 0.5, 0.0, 300.0, 300.0),   # never before the breaker's probe
    (1, 0.5, 0.5, 300.0, 302.5),   # spread after it
])
def test_retry_wait_formula(tries, jitter, u, retry_after_s, expected):
    assert retry_wait_s(tries, 10.0, 60.0, jitter, u, retry_after_s) == pytest.approx(expected)


@pytest.mark.parametrize("jitter", [-0.1, 1.5, math.nan])
def test_a_jitter_outside_0_1_is_refused(jitter):
    with pytest.raises(OmnisimError, match=r"retry_jitter .*expected a fraction in \[0, 1\]"):
        WorkerConfig(retry_jitter=jitter)


def test_retry_jitter_reaches_the_worker_from_the_command_line(tmp_path, artifact_path):
    from click.testing import CliRunner

    from omnisim.cli import main
    from omnisim.send.cli import build

    db = f"sqlite:///{tmp_path / 'c.db'}"
    _, worker = build(db, artifact_path, None, "system", "1", 0, 60.0)
    assert worker.config.retry_jitter == 0.5  # the commands' default
    _, worker = build(db, artifact_path, None, "system", "1", 0, 60.0, retry_jitter=0.2)
    assert worker.config.retry_jitter == 0.2
    for command in ("serve", "worker"):
        assert "--retry-jitter" in CliRunner().invoke(main, ["send", command, "--help"]).output
    r = CliRunner().invoke(main, ["send", "worker", "--retry-jitter", "1.5", "--db", db])
    assert r.exit_code == 2
