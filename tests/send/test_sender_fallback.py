"""Channel fallback: a push that cannot be delivered goes out as an email, through the same
admission (consent, caps, quiet hours), over real providers (HTTP gateway, aiosmtpd)."""

from __future__ import annotations

import json
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
from omnisim.send.worker import Worker, WorkerConfig

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
    """Retries exhausted (5xx) is a provider outage, not an undeliverable message: the push
    waits in the outbox, then is dead-lettered after the delivery deadline, not re-sent by
    email."""
    box, port = smtpd
    gateway.default = Reply(503, {"error": "down"})
    clock = ManualClock(at(0))
    svc = service(store_url, push_artifact, clock)
    add_user(svc.store, "u1")
    svc.ingest([ev("k1", "u1", "product_view", at(0))])
    worker = Worker(svc, providers(port, gateway.url), WorkerConfig(max_delivery_delay_h=0.5))
    worker.drain()
    assert rows_of(svc.store, "u1") == [("sent", "push", "u1-m1")]
    assert svc.store.one("SELECT state FROM outbox WHERE message_id = 'u1-m1'")[0] == "queued"
    clock.set(at(0.5))
    worker.drain()
    assert rows_of(svc.store, "u1") == [("sent", "push", "u1-m1"), ("failed", "push", "u1-m1")]
    reason = next(r["reason"] for r in log_rows(svc.store, "u1") if r["event"] == "failed")
    assert reason.startswith("failed: gave up after 30 min and 2 tries") and "fallback" not in reason
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


# -- which template the fallback uses ----------------------------------------------------------

def journey_artifact(tmp_path: Path, fallback: Any, name: str = "p.json") -> Path:
    """PUSH_JOURNEY with ``fallback`` on its push step (template ``offer_push``)."""
    doc = {**PUSH_JOURNEY, "journeys": [{**PUSH_JOURNEY["journeys"][0], "steps": [
        {**PUSH_JOURNEY["journeys"][0]["steps"][0], "fallback": fallback}]}]}
    return export_policy(doc, tmp_path / name)


def outbox_body(store: Store, message_id: str) -> dict[str, Any]:
    return json.loads(store.one("SELECT body FROM outbox WHERE message_id = ?", (message_id,))[0])


def test_fallback_email_uses_the_template_named_for_email(store_url, tmp_path, smtpd, gateway):
    """A 410 from the push gateway: the email received over SMTP carries the email template
    (subject, text, outbox ``template``), not the push's."""
    box, port = smtpd
    gateway.default = Reply(410, {"error": "device token unregistered"})
    svc = service(store_url, journey_artifact(tmp_path, {"email": "offer_email"}), fallback={})
    add_user(svc.store, "u1")
    svc.ingest([ev("k1", "u1", "product_view", at(0))])
    Worker(svc, providers(port, gateway.url)).drain()
    assert rows_of(svc.store, "u1") == [("sent", "push", "u1-m1"), ("failed", "push", "u1-m1"),
                                        ("sent", "email", "u1-m2")]
    assert json.loads(gateway.requests[0].body)["text"] == "[push_offer] offer_push"
    assert len(box.messages) == 1
    msg = box.parsed()
    assert msg["Subject"] == "offer_email"
    assert msg.get_content().strip() == "[push_offer] offer_email"
    push, mail = outbox_body(svc.store, "u1-m1"), outbox_body(svc.store, "u1-m2")
    assert push["template"] == "offer_push" and mail["template"] == "offer_email"
    assert mail["subject"] == "offer_email" and "template_channel" not in mail["meta"]
    assert mail["meta"]["fallback_from"] == "push" and mail["meta"]["replaces"] == "u1-m1"


@pytest.mark.parametrize("fallback, default", [
    (None, {"push": ["email"]}),  # the sender's --fallback push=email: no way to name one
    ({"email": None}, {}),        # the journey names none for email
    # one named for SMS only; the user has no SMS address, so the email goes out unnamed
    ({"sms": "offer_sms", "email": None}, {}),
])
def test_fallback_without_a_named_template_keeps_the_push_one_and_says_so(
        store_url, tmp_path, smtpd, fallback, default):
    """Backwards compatible: the original template, with ``template_channel: push`` in the
    body's meta (the providers' ``OutboundMessage.meta``) so a provider can tell."""
    box, port = smtpd
    art = (journey_artifact(tmp_path, fallback) if fallback is not None
           else export_policy(PUSH_JOURNEY, tmp_path / "p.json"))
    svc = service(store_url, art, fallback=default)
    add_user(svc.store, "u1")
    svc.ingest([ev("k1", "u1", "product_view", at(0))])
    Worker(svc, providers(port, None)).drain()
    assert rows_of(svc.store, "u1") == [("sent", "push", "u1-m1"), ("failed", "push", "u1-m1"),
                                        ("sent", "email", "u1-m2")]
    assert len(box.messages) == 1 and box.parsed()["Subject"] == "offer_push"
    mail = outbox_body(svc.store, "u1-m2")
    assert mail["channel"] == "email" and mail["template"] == "offer_push"
    assert mail["meta"]["template_channel"] == "push"


@pytest.mark.parametrize("templates, sms_template, mail_subject, mail_channel", [
    ({"sms": "offer_sms", "email": "offer_email"}, "offer_sms", "offer_email", None),
    # the email replaces the SMS: without its own template it keeps the SMS's
    ({"sms": "offer_sms", "email": None}, "offer_sms", "offer_sms", "sms"),
    ({"sms": None, "email": "offer_email"}, "offer_push", "offer_email", None),
])
def test_each_hop_of_the_chain_uses_its_own_template(store_url, tmp_path, smtpd, templates,
                                                     sms_template, mail_subject, mail_channel):
    """push → sms → email, neither push nor SMS deliverable (no provider): the SMS and the
    email each take the template named for their channel."""
    box, port = smtpd
    clock = ManualClock(at(0))
    svc = service(store_url, journey_artifact(tmp_path, templates), clock, fallback={})
    with svc.store.transaction():
        svc.store.upsert_user("u1", "UTC", {}, {"email": True, "push": True, "sms": True},
                              {"email": "u1@example.org", "push": "tok-u1", "sms": "+33600000001"}, T0)
    svc.ingest([ev("k1", "u1", "product_view", at(0))])
    worker = Worker(svc, providers(port, None))
    worker.drain()
    # push, sms and email count as one message: the email's admission leaves both failed
    # sends out of the daily cap (all: 1/day), so it goes at once, not the next day
    assert rows_of(svc.store, "u1") == [
        ("sent", "push", "u1-m1"), ("failed", "push", "u1-m1"), ("sent", "sms", "u1-m2"),
        ("failed", "sms", "u1-m2"), ("sent", "email", "u1-m3")]
    sms, mail = outbox_body(svc.store, "u1-m2"), outbox_body(svc.store, "u1-m3")
    assert sms["template"] == sms_template
    assert sms["meta"].get("template_channel") == (None if templates["sms"] else "push")
    assert mail["template"] == mail_subject and mail["meta"].get("template_channel") == mail_channel
    assert mail["meta"]["fallback_from"] == "sms" and mail["meta"]["replaces"] == "u1-m2"
    assert [box.parsed()["Subject"]] == [mail_subject]


def test_a_named_template_replaces_the_original_channels_title_and_text(tmp_path, push_artifact):
    """A policy's ``title`` / ``text`` were written for the push: with a named email template
    they are dropped (they would become the email's subject and text); without one they stay,
    marked with ``template_channel``."""
    from omnisim.send import scheduler as sch

    svc = service(f"sqlite:///{tmp_path / 's.db'}", push_artifact, fallback={})
    meta = {"template": "offer_push", "title": "Back in stock!", "text": "Tap to see it",
            "fallback": ["email"]}
    for uid, templates in (("u1", {"email": "offer_email"}), ("u2", None)):
        add_user(svc.store, uid)
        d = Decision("push", "push", 1.0, "push_offer@1", campaign="push_offer",
                     meta=meta | ({"fallback_templates": templates} if templates else {}))
        with svc.store.transaction():
            row = svc.store.lock_user(uid)
            assert svc.fall_back(row, f"{uid}-gone", ["email"], sch.decision_to_dict(d), None) == "email"
    named, unnamed = outbox_body(svc.store, "u1-m1"), outbox_body(svc.store, "u2-m1")
    assert (named["template"], named["subject"], named["body"]) == (
        "offer_email", "offer_email", "[push_offer] offer_email")
    assert "title" not in named["meta"] and "text" not in named["meta"]
    assert "template_channel" not in named["meta"]
    assert (unnamed["template"], unnamed["subject"], unnamed["body"]) == (
        "offer_push", "Back in stock!", "Tap to see it")
    assert unnamed["meta"]["template_channel"] == "push"
