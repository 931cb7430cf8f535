"""The decision path on a real store: events → decisions → durable timers → sends."""

from __future__ import annotations

import threading
from collections import Counter

from sender_support import (  # noqa: F401 - fixtures
    FakeDeliverer, add_user, artifact_path, at, ev, log_rows, make_service, store_url,
)

from omnisim.send.clock import ManualClock
from omnisim.send.worker import Worker, WorkerConfig


def events_of(rows, name):
    return [r for r in rows if r["event"] == name]


def test_event_decides_logs_and_sends(store_url, artifact_path):
    svc = make_service(store_url, artifact_path)
    add_user(svc.store, "u1")
    assert svc.ingest([ev("k1", "u1", "product_view", at(0))]) == ["accepted"]
    rows = log_rows(svc.store, "u1")
    assert [r["event"] for r in rows] == ["product_view", "decided", "sent"]
    decided = rows[1]
    assert decided["channel"] == "email" and decided["campaign"] == "seed_journey"
    assert decided["policy"] == "seed_journey@1" and decided["propensity"] == 1.0
    assert decided["artifact"] == svc.policy.version
    fake = FakeDeliverer()
    Worker(svc, fake).drain()
    assert [m.message_id for m in fake.messages] == ["u1-m1"]
    assert fake.messages[0].idempotency_key == "u1-m1" and fake.messages[0].address == "u1@email"
    sent = events_of(log_rows(svc.store, "u1"), "sent")[0]
    assert '"status": "sent"' in sent["response"]


def test_same_key_twice_gives_one_decision(store_url, artifact_path):
    svc = make_service(store_url, artifact_path)
    add_user(svc.store, "u1")
    e = ev("dup", "u1", "product_view", at(0))
    assert svc.ingest([e, e]) == ["accepted", "duplicate"]
    assert svc.ingest([e]) == ["duplicate"]
    assert len(events_of(log_rows(svc.store), "decided")) == 1


def test_journey_timers_survive_a_restart(store_url, artifact_path):
    clock = ManualClock(at(0))
    svc = make_service(store_url, artifact_path, clock)
    add_user(svc.store, "u1")
    svc.ingest([ev("k1", "u1", "product_view", at(0))])
    svc.store.close()
    # a new process: nothing in memory, the timer is a row
    clock.set(at(4.5))
    svc2 = make_service(store_url, artifact_path, clock)
    assert svc2.run_due() >= 1
    rows = log_rows(svc2.store, "u1")
    step = [r for r in rows if r["event"] == "decided" and r["channel"] == "sms"]
    assert len(step) == 1 and step[0]["ts"] == at(4)  # decided at the step's own time
    # the SMS hits the daily cap, is deferred, and goes out the next morning after quiet hours
    assert any(r["event"] == "deferred" and r["reason"] == "cap:all:cal-day" for r in rows)
    clock.set(at(30))
    while svc2.run_due():
        pass
    sms = [r for r in events_of(log_rows(svc2.store, "u1"), "sent") if r["channel"] == "sms"]
    assert len(sms) == 1 and sms[0]["ts"] == at(22)  # 08:00 UTC next day, end of quiet hours


def test_purchase_exits_the_journey(store_url, artifact_path):
    clock = ManualClock(at(0))
    svc = make_service(store_url, artifact_path, clock)
    add_user(svc.store, "u1")
    svc.ingest([ev("k1", "u1", "product_view", at(0)), ev("k2", "u1", "purchase", at(1), value=20.0)])
    clock.set(at(50))
    while svc.run_due():
        pass
    rows = log_rows(svc.store, "u1")
    steps = [r for r in rows if r["event"] == "decided" and r["ts"] > at(1)]
    assert steps and all(r["channel"] == "none" for r in steps)
    assert len(events_of(rows, "sent")) == 1


def test_unsubscribe_drops_what_is_pending(store_url, artifact_path):
    clock = ManualClock(at(0))
    svc = make_service(store_url, artifact_path, clock)
    add_user(svc.store, "u1")
    svc.ingest([ev("k1", "u1", "product_view", at(0))])
    clock.set(at(5))
    svc.run_due()  # the SMS step is decided and deferred (daily cap)
    svc.ingest([ev("k2", "u1", "unsubscribed", at(6), channel="sms")])
    clock.set(at(50))
    while svc.run_due():
        pass
    rows = log_rows(svc.store, "u1")
    assert not [r for r in events_of(rows, "sent") if r["channel"] == "sms"]
    assert any(r["event"] == "suppressed" and r["reason"] == "no_consent" and r["channel"] == "sms"
               for r in rows)


def test_caps_hold_across_concurrent_workers(store_url, artifact_path):
    """Four threads, each with its own connection, push triggers for the same users at once:
    the daily cap (1 marketing message per local day) holds for every user."""
    users = [f"c{i}" for i in range(3)]
    base = make_service(store_url, artifact_path)
    for u in users:
        add_user(base.store, u)
    errors: list[BaseException] = []

    def run(n: int) -> None:
        svc = make_service(store_url, artifact_path)
        try:
            for j in range(6):
                svc.ingest([ev(f"t{n}-{j}-{u}", u, "cart_abandon", at(0.1 * j + 0.01 * n))
                            for u in users])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            svc.store.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    sent = Counter(r["user_id"] for r in events_of(log_rows(base.store), "sent"))
    assert sent == {u: 1 for u in users}


def test_worker_redelivers_a_lost_claim_with_the_same_key(store_url, artifact_path):
    svc = make_service(store_url, artifact_path)
    add_user(svc.store, "u1")
    svc.ingest([ev("k1", "u1", "product_view", at(0))])
    crashed = Worker(svc, FakeDeliverer(), WorkerConfig(lease_s=0.0))
    assert len(crashed.claim()) == 1  # claimed, then "killed" before settling
    fake = FakeDeliverer()
    Worker(svc, fake, WorkerConfig(lease_s=0.0)).drain()
    assert [m.idempotency_key for m in fake.messages] == ["u1-m1"]


class _Refusing(FakeDeliverer):
    def __init__(self, status: str) -> None:
        super().__init__()
        self.status = status

    def deliver(self, msg):
        from omnisim.send.providers.base import DeliveryResult

        return DeliveryResult(self.status, "p1", 3, None, "550 mailbox unavailable", "refused")


def test_failed_delivery_is_dead_lettered_and_logged(store_url, artifact_path):
    svc = make_service(store_url, artifact_path)
    add_user(svc.store, "u1")
    svc.ingest([ev("k1", "u1", "product_view", at(0))])
    seen = []
    Worker(svc, _Refusing("failed"), on_send=lambda ch, st: seen.append((ch, st))).drain()
    assert seen == [("email", "failed")]
    assert svc.store.one("SELECT state FROM outbox WHERE message_id = 'u1-m1'")[0] == "failed"
    failed = events_of(log_rows(svc.store, "u1"), "failed")
    assert len(failed) == 1 and failed[0]["message_id"] == "u1-m1"
    assert failed[0]["reason"] == "failed: refused" and "550 mailbox" in failed[0]["response"]


def test_a_row_claimed_too_often_is_dead_lettered(store_url, artifact_path):
    svc = make_service(store_url, artifact_path)
    add_user(svc.store, "u1")
    svc.ingest([ev("k1", "u1", "product_view", at(0))])
    cfg = WorkerConfig(lease_s=0.0, max_claims=2)
    for _ in range(2):
        Worker(svc, FakeDeliverer(), cfg).claim()  # two crashed deliveries
    fake = FakeDeliverer()
    Worker(svc, fake, cfg).drain()
    assert fake.messages == []
    row = events_of(log_rows(svc.store, "u1"), "failed")[0]
    assert "dead-lettered" in row["reason"]


def test_an_erased_or_unknown_user_is_reported_not_raised(store_url, artifact_path):
    svc = make_service(store_url, artifact_path)
    add_user(svc.store, "u1")
    out = svc.ingest([ev("k1", "ghost", "visit", at(0)), ev("k2", "u1", "visit", at(0))])
    assert out == ["unknown_user", "accepted"]


def test_reopening_a_current_store_runs_no_ddl_next_to_a_busy_writer(store_url):
    """A process (re)starting next to a worker mid-transaction must not wait on (or, on
    PostgreSQL, deadlock with) its table locks: a store at this schema version runs no DDL.
    Without the version check, ``CREATE INDEX IF NOT EXISTS`` waits for the writer's lock."""
    from omnisim.send.store import SCHEMA_VERSION, Store

    first = Store.open(store_url)
    assert first.setting("schema_version") == SCHEMA_VERSION
    busy = Store.open(store_url, create=False)
    opened: list[Store] = []
    with busy.transaction():  # a worker holding write locks on the tables it touches
        busy.execute("INSERT INTO settings (name, value) VALUES ('busy', '1')")
        busy.execute("DELETE FROM jobs WHERE due_us < 0")  # row-exclusive locks on indexed
        busy.execute("DELETE FROM log WHERE ts_us < 0")    # tables, as a worker's transaction
        t = threading.Thread(target=lambda: opened.append(Store.open(store_url)), daemon=True)
        t.start()
        t.join(timeout=10)
        assert opened, "Store.open blocked behind a writer's transaction (DDL on a current schema)"
    for s in (first, busy, *opened):
        s.close()
