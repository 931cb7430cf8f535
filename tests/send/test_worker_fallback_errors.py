"""A channel fallback that raises ends like any delivery failure: the message goes back to the
outbox with backoff (the original channel is not asked again: its refusal stands), and after
the delivery deadline it fails, with the reason in the log and the message in quarantine. It
never loops, and it never holds up the other messages of the worker's batch (SQLite, and
PostgreSQL when ``OMNISIM_TEST_PG_URL`` is set). Time is the sender's manual clock."""

from __future__ import annotations

import json
import math
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import pytest


from providers_support import Gateway, Reply
from sender_support import T0, at, ev, log_rows, store_url  # noqa: F401 - fixture

from omnisim.policies.artifact import export_policy
from omnisim.send.clock import ManualClock
from omnisim.send.providers import ProviderSet
from omnisim.send.service import DecisionService, LoadedPolicy
from omnisim.send.store import Store, to_us
from omnisim.send.worker import Worker, WorkerConfig

PUSH_JOURNEY = {
    "name": "push_first",
    "journeys": [{"name": "push_offer", "triggers": ["product_view"],
                  "steps": [{"id": "offer_push", "channel": "push", "template": "offer_push"}]}],
    "pressure": "default",
}
CAUSE = "template service down"


@pytest.fixture(scope="module")
def push_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_policy(PUSH_JOURNEY, tmp_path_factory.mktemp("art") / "push.json")


def setup(store_url: str, artifact: Path, users: tuple[str, ...] = ("u1",)) -> DecisionService:
    """Each user gets one push at ``at(0)`` (one second apart, in user order), falling back
    to email (``--fallback push=email``)."""
    clock = ManualClock(at(0))
    svc = DecisionService(Store.open(store_url), LoadedPolicy.from_file(artifact), clock,
                          late_tolerance=None, fallback={"push": ["email"]})
    for i, uid in enumerate(users):
        with svc.store.transaction():
            svc.store.upsert_user(uid, "UTC", {}, {"email": True, "push": True},
                                  {"email": f"{uid}@example.org", "push": f"tok-{uid}"}, T0)
        clock.set(at(0) + timedelta(seconds=i))
        svc.ingest([ev(f"k-{uid}", uid, "product_view", clock.now())])
    clock.set(at(0))
    return svc


def providers(tmp_path: Path, push_url: str) -> ProviderSet:
    """Push over a loopback HTTP gateway (one request per delivery), email to a file sink."""
    return ProviderSet.from_dict({"channels": {
        "push": [{"name": "push-gw", "type": "http", "url": push_url, "max_attempts": 1,
                  "timeout_s": 5, "body": {"token": "{address}", "ref": "{message_id}"}}],
        "email": [{"name": "mail-file", "type": "file", "path": str(tmp_path / "mail.jsonl")}]}})


def emails(tmp_path: Path) -> list[str]:
    path = tmp_path / "mail.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["message_id"] for line in path.read_text().splitlines()]


def raising_fallback(svc: DecisionService, fails: int | float,
                     who: Callable[[str], bool] = lambda mid: True) -> list[str]:
    """Make ``svc.fall_back`` raise ``ValueError(CAUSE)`` on its first ``fails`` calls for
    the messages ``who`` selects (a flaky template service, a policy bug), then work;
    returns the message ids it was called with."""
    calls: list[str] = []
    real = svc.fall_back

    def fall_back(row: tuple, failed_id: str, *args: Any) -> str | None:
        if who(failed_id):
            calls.append(failed_id)
            if len(calls) <= fails:
                raise ValueError(CAUSE)
        return real(row, failed_id, *args)

    svc.fall_back = fall_back  # type: ignore[method-assign]
    return calls


def outbox(store: Store, message_id: str) -> tuple[str, int, int]:
    """``(state, retries, next_try_us)`` of an outbox row."""
    st, retries, nxt = store.one("SELECT state, retries, next_try_us FROM outbox WHERE "
                                 "message_id = ?", (message_id,))
    return st, int(retries), int(nxt)


def events_of(store: Store, uid: str) -> list[tuple[str, str, str]]:
    return [(r["event"], r["channel"], r["message_id"]) for r in log_rows(store, uid)
            if r["event"] in ("sent", "failed")]


def test_a_fallback_that_raises_is_retried_with_backoff_then_goes_out(store_url, push_artifact,
                                                                     tmp_path):
    """The push is refused for good (410); the fallback raises twice: the row goes back to
    the queue after 10 s, then 20 s (used to: the exception escaped the worker step and the
    row stayed claimed until its lease ran out, then was pushed to the gateway again); the
    third try sends the email, and the push gateway was asked once."""
    svc = setup(store_url, push_artifact)
    calls = raising_fallback(svc, fails=2)
    statuses: list[str] = []
    with Gateway(Reply(410, {"error": "device token unregistered"})) as gw:
        worker = Worker(svc, providers(tmp_path, gw.url), WorkerConfig(retry_base_s=10, retry_jitter=0),
                        on_send=lambda channel, status: statuses.append(status))
        worker.drain()  # used to raise ValueError
        assert outbox(svc.store, "u1-m1") == ("queued", 1, to_us(at(0) + timedelta(seconds=10)))
        result = json.loads(svc.store.one("SELECT result FROM outbox")[0])
        assert result["fallback_error"] == f"ValueError: {CAUSE}" and result["fallback_tries"] == 1
        assert "HTTP 410" in result["error"] and result["permanent"] is True
        assert events_of(svc.store, "u1") == [("sent", "push", "u1-m1")]  # nothing settled yet
        worker.drain()
        assert len(calls) == 1  # not due before its backoff
        svc.clock.set(at(0) + timedelta(seconds=10))
        worker.drain()
        assert outbox(svc.store, "u1-m1") == ("queued", 2, to_us(at(0) + timedelta(seconds=30)))
        svc.clock.set(at(0) + timedelta(seconds=30))
        worker.drain()
        assert len(gw.requests) == 1  # the refusal stands: the gateway is not asked again
    assert calls == ["u1-m1"] * 3
    assert outbox(svc.store, "u1-m1")[0] == "failed"
    assert events_of(svc.store, "u1") == [("sent", "push", "u1-m1"), ("failed", "push", "u1-m1"),
                                          ("sent", "email", "u1-m2")]
    failed = next(r for r in log_rows(svc.store, "u1") if r["event"] == "failed")
    assert failed["reason"].startswith("failed (permanent): push-gw: ")
    assert failed["reason"].endswith("; fallback to email")
    assert emails(tmp_path) == ["u1-m2"]
    assert statuses == ["requeued", "requeued", "failed", "sent"]
    assert svc.store.counts()["quarantine"] == 0


def test_a_fallback_that_keeps_raising_fails_at_the_delivery_deadline(store_url, push_artifact,
                                                                     tmp_path):
    """The decision kept on the outbox row cannot be rebuilt (as if written by another
    release): every fallback raises. Tries at 0, 10, 30 and 70 s, the last at the 72 s
    deadline; then the message fails, saying why, and is quarantined. No step raises, and
    the row is never left claimed."""
    svc = setup(store_url, push_artifact)
    body = json.loads(svc.store.one("SELECT body FROM outbox WHERE message_id = 'u1-m1'")[0])
    body["decision"]["colour"] = "blue"  # Decision() has no such field: TypeError
    svc.store.execute("UPDATE outbox SET body = ? WHERE message_id = 'u1-m1'", (json.dumps(body),))
    with Gateway(Reply(410, {"error": "device token unregistered"})) as gw:
        worker = Worker(svc, providers(tmp_path, gw.url),
                        WorkerConfig(max_delivery_delay_h=0.02, retry_base_s=10, retry_max_s=40, retry_jitter=0))
        tried_at = []
        for second in range(0, 100, 2):
            svc.clock.set(at(0) + timedelta(seconds=second))
            before = outbox(svc.store, "u1-m1")
            worker.drain()
            after = outbox(svc.store, "u1-m1")
            assert after[0] in ("queued", "failed")
            if after[1:] != before[1:] or after[0] != before[0]:
                tried_at.append(second)
        assert len(gw.requests) == 1
    assert tried_at == [0, 10, 30, 70, 72]
    assert outbox(svc.store, "u1-m1")[:2] == ("failed", 4)
    (failed,) = [r for r in log_rows(svc.store, "u1") if r["event"] == "failed"]
    reason = failed["reason"]
    assert reason.startswith("failed (permanent): push-gw: ") and "HTTP 410" in reason
    assert "fallback to email failed 5 times over 72 s (last: TypeError: " in reason
    assert "'colour'" in reason and "gave up: max delivery delay 0.02 h" in reason
    assert reason.endswith("not sent on any channel")
    assert emails(tmp_path) == []
    (q_reason, q_item), = svc.store.quarantined()
    assert q_reason.startswith("outbox message 'u1-m1' of user 'u1': ") and "'colour'" in q_reason
    item = json.loads(q_item)
    assert item["message_id"] == "u1-m1" and item["body"]["fallback"] == ["email"]
    assert item["body"]["decision"]["colour"] == "blue"  # kept whole, for a replay


def test_a_fallback_error_does_not_hold_up_the_rest_of_the_batch(store_url, push_artifact, tmp_path):
    """u1's fallback raises; u2's, claimed in the same batch, goes out in the same round.
    Used to: the exception aborted the batch, u2's row stayed claimed and, after five such
    rounds, was dead-lettered as "claimed 5 times without settling" without ever being
    tried."""
    svc = setup(store_url, push_artifact, users=("u1", "u2"))
    raising_fallback(svc, fails=math.inf, who=lambda mid: mid.startswith("u1-"))
    with Gateway(Reply(410, {"error": "device token unregistered"})) as gw:
        worker = Worker(svc, providers(tmp_path, gw.url), WorkerConfig(lease_s=0.0))
        for _ in range(6):
            worker.drain()
    assert outbox(svc.store, "u1-m1")[:2] == ("queued", 1)
    assert outbox(svc.store, "u2-m1")[0] == "failed"
    assert events_of(svc.store, "u2") == [("sent", "push", "u2-m1"), ("failed", "push", "u2-m1"),
                                          ("sent", "email", "u2-m2")]
    assert emails(tmp_path) == ["u2-m2"]


def test_max_fallback_tries_bounds_an_infinite_delivery_delay(store_url, push_artifact, tmp_path):
    """With ``--max-delivery-delay-h inf`` a fallback that always raises still ends, after
    ``max_fallback_tries`` tries."""
    svc = setup(store_url, push_artifact)
    calls = raising_fallback(svc, fails=math.inf)
    with Gateway(Reply(410, {"error": "gone"})) as gw:
        worker = Worker(svc, providers(tmp_path, gw.url),
                        WorkerConfig(max_delivery_delay_h=math.inf, max_fallback_tries=3,
                                     retry_base_s=10, retry_max_s=300))
        for minute in range(0, 60):
            svc.clock.set(at(0) + timedelta(minutes=minute))
            worker.drain()
    assert calls == ["u1-m1"] * 3
    assert outbox(svc.store, "u1-m1")[0] == "failed"
    (failed,) = [r for r in log_rows(svc.store, "u1") if r["event"] == "failed"]
    assert "fallback to email failed 3 times over" in failed["reason"]
    assert "gave up: at most 3 tries (max_fallback_tries)" in failed["reason"]
    assert svc.store.counts()["quarantine"] == 1


def test_a_database_error_in_the_fallback_still_fails_the_step(tmp_path, push_artifact):
    """An error of the database itself is not the message's fault: the step fails, nothing
    is settled, and the row is re-claimed after its lease (the crash path), as before."""
    svc = setup(f"sqlite:///{tmp_path / 's.db'}", push_artifact)

    def locked(*args: Any) -> None:
        raise sqlite3.OperationalError("database is locked")

    svc.fall_back = locked  # type: ignore[method-assign]
    with Gateway(Reply(410, {"error": "gone"})) as gw:
        with pytest.raises(sqlite3.OperationalError):
            Worker(svc, providers(tmp_path, gw.url)).drain()
    assert outbox(svc.store, "u1-m1")[:2] == ("sending", 0)
    assert svc.store.counts()["quarantine"] == 0
