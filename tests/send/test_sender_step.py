"""The sender logs the journey step behind each row (``step`` column), and a store created
before that column gains it on its first start with this code."""

from __future__ import annotations

from sender_support import (  # noqa: F401 - fixtures
    FakeDeliverer, add_user, artifact_path, at, ev, log_rows, make_service, store_url,
)

from omnisim.send.clock import ManualClock
from omnisim.send.export import log_frame
from omnisim.send.providers.base import DeliveryResult
from omnisim.send.store import SCHEMA_VERSION, Store
from omnisim.send.worker import Worker


class _Failing(FakeDeliverer):
    def deliver(self, msg):
        return DeliveryResult("failed", "p1", 1, None, "550 mailbox unavailable", "refused")


def test_rows_carry_the_journey_step_that_decided_them(store_url, artifact_path):
    clock = ManualClock(at(0))
    svc = make_service(store_url, artifact_path, clock)
    add_user(svc.store, "u1")
    svc.ingest([ev("k1", "u1", "product_view", at(0))])
    Worker(svc, FakeDeliverer()).drain()
    svc.ingest([ev("k2", "u1", "delivered", at(0.1), channel="email", message_id="u1-m1")])
    clock.set(at(30))  # the sms step (4 h, deferred by caps / quiet hours) and the push step
    while svc.run_due():
        pass
    Worker(svc, _Failing()).drain()
    rows = log_rows(svc.store, "u1")
    by_event: dict[str, set] = {}
    for r in rows:
        by_event.setdefault(r["event"], set()).add(r["step"])
    assert by_event["product_view"] == {None}  # behaviour: no step
    assert {"offer_email", "sms_nudge"} <= by_event["decided"]
    first = [r for r in rows if r["message_id"] == "u1-m1"]
    assert {r["event"] for r in first} == {"sent", "delivered"}
    assert {r["step"] for r in first} == {"offer_email"}  # a callback takes its send's step
    sms = [r for r in rows if r["channel"] == "sms" and r["event"] in ("sent", "failed", "deferred")]
    assert sms and {r["step"] for r in sms} == {"sms_nudge"}
    assert any(r["event"] == "failed" for r in sms)  # the worker's row takes its send's step
    exported = log_frame(svc.store)
    assert str(exported["step"].dtype) == "string"
    assert set(exported.loc[exported["event"] == "sent", "step"]) == {"offer_email", "sms_nudge"}


def test_a_store_from_before_the_step_column_gains_it(store_url, artifact_path):
    old = Store.open(store_url)
    with old.transaction():  # as a store created by the previous release: no step column
        old.execute("ALTER TABLE log DROP COLUMN step")
        old.execute("INSERT INTO log (ts_us, user_id, event, channel) VALUES (1, 'u0', 'visit', 'web')")
        old.set_setting("schema_version", "before-step")
    old.close()
    svc = make_service(store_url, artifact_path)  # opens (and upgrades) the store
    assert svc.store.setting("schema_version") == SCHEMA_VERSION
    add_user(svc.store, "u1")
    svc.ingest([ev("k1", "u1", "product_view", at(0))])
    rows = log_rows(svc.store)
    assert [r["step"] for r in rows if r["user_id"] == "u0"] == [None]
    assert {r["step"] for r in rows if r["event"] in ("decided", "sent")} == {"offer_email"}


def test_message_lookups_use_an_index_also_in_a_store_from_before_it(store_url):
    """Every settled delivery and every callback finds its ``sent`` row by message id: without
    an index a full scan of the log (about 0.35 s per lookup at 1 M rows on SQLite, under the
    writer's lock), so throughput fell as the log grew."""
    old = Store.open(store_url)
    with old.transaction():  # as a store created by the previous release
        old.execute("DROP INDEX log_message")
        old.set_setting("schema_version", "before-log-message-index")
    old.close()
    store = Store.open(store_url)
    try:
        if store.pg:
            names = {r[0] for r in store.query("SELECT indexname FROM pg_indexes WHERE tablename = "
                                               "'log' AND schemaname = current_schema()")}
            assert "log_message" in names
        else:
            for sql in ("SELECT user_id, channel, campaign, tag, step FROM log WHERE message_id = ? "
                        "AND event = 'sent'", "UPDATE log SET response = ? WHERE message_id = ? "
                        "AND event = 'sent'"):
                plan = " ".join(str(r) for r in store.query("EXPLAIN QUERY PLAN " + sql, ("x",) * sql.count("?")))
                assert "USING INDEX log_message" in plan, plan
    finally:
        store.close()
