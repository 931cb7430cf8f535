"""Channel fallback: a push that cannot be delivered goes out as an email, through the same
admission (consent, caps, quiet hours), over real providers (HTTP gateway, aiosmtpd)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from providers_support import FakeTime, Gateway, Reply, smtpd  # noqa: F401 - smtpd is a fixture
from sender_support import (  # noqa: F401 - fixtures
    T0,
    at,
    ev,
    log_rows,
    store_url,
)

from omnisim.errors import OmnisimError
from omnisim.policies.artifact import export_policy
from omnisim.policies.base import Decision
from omnisim.send.clock import ManualClock
from omnisim.send.providers import ProviderSet
from omnisim.send.service import DecisionService, LoadedPolicy, parse_fallback
from omnisim.send.store import Store
from omnisim.send.worker import Worker

PUSH_JOURNEY = {
    "name": "push_first",
    "journeys": [{"name": "push_offer", "triggers": ["product_view"],
                  "steps": [{"id": "offer_push", "channel": "push", "template": "offer_push"}]}],
    "pressure": "default",
}


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    with Gateway() as gw:
        yield gw


@pytest.fixture(scope="module")
def push_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_policy(PUSH_JOURNEY, tmp_path_factory.mktemp("art") / "push.json")


def providers(smtp_port: int, push_url: str | None) -> ProviderSet:
    ft = FakeTime()
    channels: dict[str, Any] = {"email": [{"name": "mail", "type": "smtp", "host": "127.0.0.1",
                                           "port": smtp_port, "from": "Shop <news@shop.example>",
                                           "timeout_s": 5, "max_attempts": 1}]}
    if push_url:
        channels["push"] = [{"name": "push-gw", "type": "http", "url": push_url, "max_attempts": 2,
                             "body": {"token": "{address}", "text": "{body}"}, "timeout_s": 5}]
    return ProviderSet.from_dict({"channels": channels}, clock=ft.clock, sleep=ft.sleep,
                                 rng=random.Random(1))


def service(url: str, artifact: Path, clock: ManualClock | None = None,
            fallback: Any = None) -> DecisionService:
    return DecisionService(Store.open(url), LoadedPolicy.from_file(artifact),
                           clock or ManualClock(T0), late_tolerance=None,
                           fallback={"push": ["email"]} if fallback is None else fallback)


def add_user(store: Store, uid: str, consent: dict[str, bool] | None = None) -> None:
    with store.transaction():
        store.upsert_user(uid, "UTC", {}, consent or {"email": True, "push": True},
                          {"email": f"{uid}@example.org", "push": f"tok-{uid}"}, T0)


def rows_of(store: Store, uid: str) -> list[tuple]:
    return [(r["event"], r["channel"], r["message_id"]) for r in log_rows(store, uid)
            if r["event"] in ("sent", "failed", "suppressed", "deferred")]


def test_gateway_refusal_falls_back_to_email_over_smtp(store_url, push_artifact, smtpd, gateway):
    box, port = smtpd
    gateway.default = Reply(410, {"error": "device token unregistered"})
    svc = service(store_url, push_artifact)
    add_user(svc.store, "u1")
    svc.ingest([ev("k1", "u1", "product_view", at(0))])
    Worker(svc, providers(port, gateway.url)).drain()
    assert len(gateway.requests) == 1  # permanent: no retry
    assert rows_of(svc.store, "u1") == [("sent", "push", "u1-m1"), ("failed", "push", "u1-m1"),
                                        ("sent", "email", "u1-m2")]
    rows = log_rows(svc.store, "u1")
    failed = next(r for r in rows if r["event"] == "failed")
    assert failed["reason"].startswith("failed (permanent): push-gw: ")
    assert "410" in failed["reason"] and failed["reason"].endswith("fallback to email")
    sent_email = next(r for r in rows if r["event"] == "sent" and r["channel"] == "email")
    assert sent_email["reason"] == "fallback for u1-m1 (push)"
    assert sent_email["campaign"] == "push_offer" and sent_email["policy"] == "push_offer@1"
    assert '"status": "sent"' in sent_email["response"]
    assert [m["to"] for m in box.messages] == [["u1@example.org"]]
    assert box.parsed()["Message-ID"] == "<u1-m2@shop.example>"
    assert svc.store.one("SELECT state FROM outbox WHERE message_id = 'u1-m1'")[0] == "failed"


def test_no_push_provider_is_undeliverable_and_falls_back(store_url, push_artifact, smtpd):
    box, port = smtpd
    svc = service(store_url, push_artifact)
    add_user(svc.store, "u1")
    svc.ingest([ev("k1", "u1", "product_view", at(0))])
    Worker(svc, providers(port, None)).drain()
    assert rows_of(svc.store, "u1") == [("sent", "push", "u1-m1"), ("failed", "push", "u1-m1"),
                                        ("sent", "email", "u1-m2")]
    failed = next(r for r in log_rows(svc.store, "u1") if r["event"] == "failed")
    assert failed["reason"].startswith("undeliverable: no provider serves channel 'push'")
    assert len(box.messages) == 1


def test_outage_does_not_fall_back(store_url, push_artifact, smtpd, gateway):
    """Retries exhausted (5xx) is a provider outage, not an undeliverable message."""
    box, port = smtpd
    gateway.default = Reply(503, {"error": "down"})
    svc = service(store_url, push_artifact)
    add_user(svc.store, "u1")
    svc.ingest([ev("k1", "u1", "product_view", at(0))])
    Worker(svc, providers(port, gateway.url)).drain()
    assert rows_of(svc.store, "u1") == [("sent", "push", "u1-m1"), ("failed", "push", "u1-m1")]
    assert box.messages == []


def test_without_fallback_configured_nothing_is_requeued(store_url, push_artifact, smtpd):
    box, port = smtpd
    svc = service(store_url, push_artifact, fallback={})
    add_user(svc.store, "u1")
    svc.ingest([ev("k1", "u1", "product_view", at(0))])
    Worker(svc, providers(port, None)).drain()
    assert rows_of(svc.store, "u1") == [("sent", "push", "u1-m1"), ("failed", "push", "u1-m1")]
    assert box.messages == []


def test_fallback_needs_consent(store_url, push_artifact, smtpd):
    box, port = smtpd
    svc = service(store_url, push_artifact)
    add_user(svc.store, "u1", consent={"email": False, "push": True})
    svc.ingest([ev("k1", "u1", "product_view", at(0))])
    Worker(svc, providers(port, None)).drain()
    rows = log_rows(svc.store, "u1")
    assert [(r["event"], r["channel"]) for r in rows if r["event"] in ("sent", "failed", "suppressed")] == [
        ("sent", "push"), ("failed", "push"), ("suppressed", "email")]
    assert [r["reason"] for r in rows if r["event"] == "suppressed"] == ["no_consent"]
    assert box.messages == []


def test_fallback_waits_for_the_end_of_quiet_hours(store_url, push_artifact, smtpd):
    """The push is admitted at 20:30; the worker finds it undeliverable at 21:30 (quiet
    hours): the email is deferred to 08:00 and sent then, not before."""
    box, port = smtpd
    clock = ManualClock(at(10.5))  # 20:30 UTC
    svc = service(store_url, push_artifact, clock)
    add_user(svc.store, "u1")
    svc.ingest([ev("k1", "u1", "product_view", at(10.5))])
    clock.set(at(11.5))
    worker = Worker(svc, providers(port, None))
    worker.drain()
    rows = log_rows(svc.store, "u1")
    deferred = [r for r in rows if r["event"] == "deferred"]
    assert len(deferred) == 1 and deferred[0]["channel"] == "email"
    assert deferred[0]["reason"].startswith("quiet")
    assert box.messages == []
    clock.set(at(23))  # 09:00 next day
    worker.drain()
    sent = [r for r in log_rows(svc.store, "u1") if r["event"] == "sent" and r["channel"] == "email"]
    assert len(sent) == 1 and sent[0]["ts"] == at(22)  # 08:00, the end of quiet hours
    assert len(box.messages) == 1


def test_fallback_chain_policy_meta_wins_over_the_sender_default(tmp_path, push_artifact):
    svc = service(f"sqlite:///{tmp_path / 's.db'}", push_artifact,
                  fallback=parse_fallback(["push=email,sms"]))
    d = Decision("push", "push", 1.0, "p@1")
    assert svc.fallback_chain(d) == ["email", "sms"]
    assert svc.fallback_chain(Decision("push", "push", 1.0, "p@1", meta={"fallback": ["sms"]})) == ["sms"]
    assert svc.fallback_chain(Decision("push", "push", 1.0, "p@1", meta={"fallback": []})) == []
    assert svc.fallback_chain(Decision("email", "email", 1.0, "p@1")) == []
    for bad in (["push"], ["push=fax"], ["push=push"]):
        with pytest.raises(OmnisimError, match="--fallback"):
            parse_fallback(bad)
