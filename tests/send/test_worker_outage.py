"""A provider outage does not throw the backlog away: messages a real loopback HTTP gateway
could not take (503s, connection refused, an open circuit breaker) go back to the outbox and
are delivered once when it recovers; an outage longer than the delivery deadline dead-letters
them, saying after how long and how many tries (SQLite, and PostgreSQL when
``OMNISIM_TEST_PG_URL`` is set). Time is the sender's manual clock: no test waits."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from providers_support import Gateway, Reply, free_port
from sender_support import add_user, artifact_path, at, ev, log_rows, make_service, store_url  # noqa: F401

from omnisim.send.clock import ManualClock
from omnisim.send.providers import ProviderSet
from omnisim.send.store import Store, to_us
from omnisim.send.worker import Worker, WorkerConfig

USERS = ("u1", "u2", "u3")


def providers(url: str, store: Store, clock: ManualClock, **resilience: float) -> ProviderSet:
    """One HTTP email gateway, one request per delivery; its breaker runs on ``clock``."""
    return ProviderSet.from_dict({"channels": {"email": [{
        "name": "mail-gw", "type": "http", "url": url, "max_attempts": 1, "timeout_s": 5,
        "body": {"to": "{address}", "ref": "{message_id}"}, **resilience}]}},
        sent_keys=store, clock=lambda: clock.now().timestamp())


def queue_messages(store_url: str, artifact: Path, clock: ManualClock) -> Store:
    """One email per user of ``USERS``, queued at ``at(0)``."""
    svc = make_service(store_url, artifact, clock)
    for uid in USERS:
        add_user(svc.store, uid, channels=("email",))
    svc.ingest([ev(f"k-{uid}", uid, "product_view", at(0)) for uid in USERS])
    return svc


def outbox(store: Store) -> dict[str, tuple[str, int]]:
    return {m: (st, int(n)) for m, st, n in
            store.query("SELECT message_id, state, retries FROM outbox ORDER BY message_id")}


def states(store: Store) -> dict[str, str]:
    return dict(store.query("SELECT message_id, state FROM outbox ORDER BY message_id"))


def refs(requests: list) -> Counter:
    return Counter(r.json()["ref"] for r in requests)


@pytest.mark.parametrize("outage", ["http_503", "connection_refused"])
def test_messages_queued_during_an_outage_are_delivered_once_after_it(store_url, artifact_path,
                                                                      outage):
    clock = ManualClock(at(0))
    svc = queue_messages(store_url, artifact_path, clock)
    port = free_port()
    gw = Gateway(Reply(503, {"error": "down"}), port=port) if outage == "http_503" else None
    statuses: list[str] = []
    # max_claims=1: requeues after an outage are not crashed claims
    worker = Worker(svc, providers(f"http://127.0.0.1:{port}/v1/messages", svc.store, clock,
                                   failure_threshold=100),
                    WorkerConfig(max_claims=1, retry_base_s=10, retry_max_s=40),
                    on_send=lambda channel, status: statuses.append(status))
    try:
        for round_no in range(1, 4):  # three rounds of the outage, 40 s apart
            worker.drain()
            assert states(svc.store) == {f"{u}-m1": "queued" for u in USERS}  # used to: failed
            assert outbox(svc.store) == {f"{u}-m1": ("queued", round_no) for u in USERS}
            clock.set(clock.now() + timedelta(seconds=40))
        assert not [r for r in log_rows(svc.store) if r["event"] == "failed"]  # used to: 3 failed
        assert svc.store.counts()["outbox_retrying"] == 3
        assert statuses == ["requeued"] * 9
        before = len(gw.requests) if gw else 0
        if gw is None:
            gw = Gateway(port=port)  # the gateway comes back up
        else:
            gw.default = Reply(200, {"id": "gw-ok"})
        worker.drain()
        assert refs(gw.requests[before:]) == {f"{u}-m1": 1 for u in USERS}
        assert outbox(svc.store) == {f"{u}-m1": ("sent", 3) for u in USERS}
        rows = log_rows(svc.store)
        assert Counter(r["event"] for r in rows if r["event"] in ("sent", "failed")) == {"sent": 3}
        assert all(json.loads(r["response"])["status"] == "sent" for r in rows if r["event"] == "sent")
        assert statuses[9:] == ["sent"] * 3 and svc.store.counts()["outbox_retrying"] == 0
        worker.drain()
        assert len(gw.requests) == before + 3  # nothing sent twice
    finally:
        if gw is not None:
            gw.close()
        svc.store.close()


def test_an_outage_longer_than_the_deadline_dead_letters_with_the_reason(store_url, artifact_path):
    """Tries at 0, 10, 30 and 70 s (backoff 10, 20, 40 s); the next, capped at the 72 s
    deadline, runs at 80 s and gives up."""
    clock = ManualClock(at(0))
    svc = make_service(store_url, artifact_path, clock)
    add_user(svc.store, "u1", channels=("email",))
    svc.ingest([ev("k1", "u1", "product_view", at(0))])
    with Gateway(Reply(503, {"error": "down"})) as gw:
        worker = Worker(svc, providers(gw.url, svc.store, clock, failure_threshold=100),
                        WorkerConfig(max_delivery_delay_h=0.02, retry_base_s=10, retry_max_s=40, retry_jitter=0))
        tried_at = []
        for second in range(0, 90, 10):
            clock.set(at(0) + timedelta(seconds=second))
            n = len(gw.requests)
            worker.drain()
            if len(gw.requests) > n:
                tried_at.append(second)
            if second < 72:
                assert states(svc.store)["u1-m1"] == "queued"
        assert tried_at == [0, 10, 30, 70, 80]
        assert outbox(svc.store)["u1-m1"] == ("failed", 4)
        (failed,) = [r for r in log_rows(svc.store) if r["event"] == "failed"]
        assert failed["reason"].startswith("failed: gave up after 80 s and 5 tries (provider "
                                           "outage; max delivery delay 0.02 h); last: mail-gw: ")
        assert "HTTP 503" in failed["reason"]


def test_an_open_circuit_requeues_until_the_breaker_lets_a_probe_through(store_url, artifact_path):
    """The first failure opens the breaker (threshold 1, reset 300 s): the two other messages
    are not even tried, and all three are due again when the breaker half-opens, not after
    the 10 s backoff."""
    clock = ManualClock(at(0))
    svc = queue_messages(store_url, artifact_path, clock)
    with Gateway(Reply(503, {"error": "down"})) as gw:
        worker = Worker(svc, providers(gw.url, svc.store, clock, failure_threshold=1,
                                       reset_after_s=300),
                        WorkerConfig(retry_base_s=10, retry_jitter=0))
        worker.drain()
        assert len(gw.requests) == 1
        assert states(svc.store) == {f"{u}-m1": "queued" for u in USERS}
        rows = svc.store.query("SELECT state, next_try_us, result FROM outbox ORDER BY message_id")
        assert [(st, nxt) for st, nxt, _ in rows] == [("queued", to_us(at(0) + timedelta(seconds=300)))] * 3
        assert [json.loads(r)["attempts"] for _, _, r in rows] == [1, 0, 0]
        assert "circuit open" in json.loads(rows[1][2])["error"]
        clock.set(at(0) + timedelta(seconds=299))
        worker.drain()
        assert len(gw.requests) == 1  # not due yet
        gw.default = Reply(200, {"id": "gw-ok"})
        clock.set(at(0) + timedelta(seconds=300))
        worker.drain()  # the half-open probe succeeds, the breaker closes, the rest follow
        assert refs(gw.requests[1:]) == {f"{u}-m1": 1 for u in USERS}
        assert {st for st, _ in outbox(svc.store).values()} == {"sent"}


def test_max_delivery_delay_reaches_the_worker_from_the_command_line(tmp_path, artifact_path):
    from click.testing import CliRunner

    from omnisim.cli import main
    from omnisim.send.cli import build

    _, worker = build(f"sqlite:///{tmp_path / 'c.db'}", artifact_path, None, "system", "1", 0,
                      60.0, max_delivery_delay_h=0.25)
    assert worker.config.max_delivery_delay_h == 0.25
    for command in ("serve", "worker"):
        r = CliRunner().invoke(main, ["send", command, "--help"])
        assert "--max-delivery-delay-h" in r.output
    r = CliRunner().invoke(main, ["send", "worker", "--max-delivery-delay-h", "-1",
                                  "--db", f"sqlite:///{tmp_path / 'c.db'}"])
    assert r.exit_code == 2


def test_a_store_from_before_the_retry_columns_gains_them(store_url, artifact_path):
    """A row queued by the previous release (no ``queued_us``): its deadline runs from its
    due time."""
    clock = ManualClock(at(0))
    svc = make_service(store_url, artifact_path, clock)
    add_user(svc.store, "u1", channels=("email",))
    svc.ingest([ev("k1", "u1", "product_view", at(0))])
    with svc.store.transaction():  # as a store created by the previous release
        for column in ("queued_us", "retries", "next_try_us"):
            svc.store.execute(f"ALTER TABLE outbox DROP COLUMN {column}")
        svc.store.set_setting("schema_version", "before-outbox-retries")
    svc.store.close()
    svc = make_service(store_url, artifact_path, ManualClock(at(0.1)))  # opens and upgrades it
    try:
        with Gateway(Reply(503, {"error": "down"})) as gw:
            Worker(svc, providers(gw.url, svc.store, clock), WorkerConfig(max_delivery_delay_h=0.5)).drain()
        assert svc.store.one("SELECT state, retries, queued_us FROM outbox") == ("queued", 1, to_us(at(0)))
    finally:
        svc.store.close()


@pytest.mark.parametrize("tag", [None, "transactional"])
def test_a_message_an_outage_held_into_quiet_hours_is_not_sent(store_url, artifact_path, tag):
    """Admitted at 20:40 (the default rules' quiet hours start at 21:00), held by an outage
    until 21:05: the worker must not deliver it in quiet hours — unless its tag is exempt."""
    clock = ManualClock(at(10 + 40 / 60))  # 20:40 UTC, the user's time zone is UTC
    svc = make_service(store_url, artifact_path, clock)
    add_user(svc.store, "u1", channels=("email",))
    svc.ingest([ev("k1", "u1", "product_view", clock.now())])
    if tag is not None:  # as if the decision had carried the exempt tag
        svc.store.execute("UPDATE log SET tag = ? WHERE message_id = 'u1-m1'", (tag,))
    port = free_port()
    gw = Gateway(Reply(503, {"error": "down"}), port=port)
    try:
        worker = Worker(svc, providers(f"http://127.0.0.1:{port}/v1/messages", svc.store, clock,
                                       failure_threshold=100),
                        WorkerConfig(retry_base_s=60, retry_max_s=600))
        worker.drain()
        assert states(svc.store) == {"u1-m1": "queued"}
        clock.set(at(11 + 5 / 60))  # 21:05: quiet hours began during the outage
        gw.default = Reply(200, {"id": "gw-ok"})
        n = len(gw.requests)
        worker.drain()
        if tag is None:
            assert len(gw.requests) == n  # not sent in quiet hours
            assert states(svc.store) == {"u1-m1": "failed"}
            (failed,) = [r for r in log_rows(svc.store) if r["event"] == "failed"]
            assert "quiet hours (21-8 h local) began while the message waited out a provider outage" in (
                json.loads(failed["response"])["error"])
        else:
            assert refs(gw.requests[n:]) == {"u1-m1": 1}
            assert states(svc.store) == {"u1-m1": "sent"}
    finally:
        gw.close()
        svc.store.close()
