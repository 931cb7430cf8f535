"""``fallback_if_unreachable``: a journey step whose channel the user cannot be messaged on
at decision time moves to the first reachable channel of its fallback chain — in
``decide`` and ``decide_batch``, in both simulator engines and in the sender."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from omnisim.policies import Step, Trigger, make_context
from omnisim.policies.artifact import export_policy, load_artifact
from omnisim.policies.check import check_policy
from omnisim.policies.journeys import JourneyError, journey_from_dict
from omnisim.policies.registry import load_policy

sys.path.insert(0, str(Path(__file__).resolve().parent / "send"))
from sender_support import FakeDeliverer, at, ev, log_rows, make_service, store_url  # noqa: E402, F401

T0 = datetime(2026, 5, 4, 14, 0, tzinfo=timezone.utc)
RNG = np.random.default_rng(0)


def spec(fallback: Any = None, unreachable: bool = True) -> dict[str, Any]:
    """An SMS offer that may move to its fallback chain when SMS is unreachable."""
    step: dict[str, Any] = {"id": "offer_sms", "channel": "sms", "template": "offer_sms",
                            "fallback": fallback if fallback is not None else {"push": "offer_push",
                                                                               "email": None}}
    if unreachable is not None:
        step["fallback_if_unreachable"] = unreachable
    return {"name": "offer", "triggers": ["product_view"], "steps": [step]}


def decide(doc: dict[str, Any], consent: dict[str, bool]):
    j = journey_from_dict(doc)
    ctx = make_context(T0, "product_view", consent=consent)
    one = j.decide(ctx, RNG)
    assert j.decide_batch([ctx], RNG)[0] == one  # the batch path decides the same
    (d,) = one
    return d


def test_reachable_channel_is_unchanged():
    d = decide(spec(), {"sms": True, "push": True, "email": True})
    assert (d.channel, d.action) == ("sms", "sms")
    assert d.meta["template"] == "offer_sms" and d.meta["fallback"] == ["push", "email"]
    assert "fallback_from" not in d.meta and d.meta["step"] == "offer_sms"


def test_unreachable_moves_to_the_first_reachable_fallback_with_its_template():
    d = decide(spec(), {"sms": False, "push": True, "email": True})
    assert (d.channel, d.action) == ("push", "push") and d.propensity == 1.0
    assert d.meta["template"] == "offer_push" and "template_channel" not in d.meta
    assert d.meta["fallback_from"] == "sms" and d.meta["fallback"] == ["email"]
    assert "fallback_templates" not in d.meta  # email names none
    assert d.meta["step"] == "offer_sms" and d.step == "offer_sms"


def test_a_fallback_without_a_named_template_keeps_the_steps_and_says_so():
    d = decide(spec(), {"sms": False, "push": False, "email": True})
    assert d.channel == "email" and d.meta["template"] == "offer_sms"
    assert d.meta["template_channel"] == "sms" and d.meta["fallback"] == []


@pytest.mark.parametrize("doc, consent", [
    (spec(), {"sms": False, "push": False, "email": False}),  # nothing reachable
    (spec(unreachable=False), {"sms": False, "push": True, "email": True}),  # not asked for
    (spec(unreachable=None), {"sms": False, "push": True, "email": True}),  # the default
])
def test_otherwise_suppressed_no_consent(doc, consent):
    d = decide(doc, consent)
    assert d.channel == "none" and d.reason == "no_consent"


def test_step_methods():
    s = Step("a", "sms", fallback=("push", "email"), fallback_templates=(("email", "a_mail"),),
             fallback_if_unreachable=True)
    assert s.channel_for(make_context(T0, consent={"sms": False, "push": False, "email": True})) == "email"
    assert s.message_meta_on("email") == {"template": "a_mail", "fallback": [], "fallback_from": "sms"}
    assert s.message_meta_on("push") == {"template": "a", "fallback": ["email"], "fallback_from": "sms",
                                         "template_channel": "sms",
                                         "fallback_templates": {"email": "a_mail"}}
    assert s.message_meta_on("sms") == s.message_meta


@pytest.mark.parametrize("step, message", [
    ({"fallback_if_unreachable": "yes"}, "steps[0].fallback_if_unreachable: expected a boolean"),
    ({"fallback": None, "fallback_if_unreachable": True}, "expected a step with a fallback chain"),
    ({"fallback": [], "fallback_if_unreachable": True}, "expected a step with a fallback chain"),
])
def test_errors_name_the_key(step, message):
    doc = spec()
    doc["steps"][0].update(step)
    if doc["steps"][0]["fallback"] is None:
        del doc["steps"][0]["fallback"]
    with pytest.raises(JourneyError, match=message.replace("[", r"\[").replace("]", r"\]")):
        journey_from_dict(doc)


def test_check_policy_and_artifact_round_trip(tmp_path):
    policy = {"journeys": [spec()], "pressure": "default"}
    check_policy(load_policy(policy))
    loaded = load_artifact(export_policy(policy, tmp_path / "p.json"))
    journey = getattr(loaded, "policy", loaded)  # the journey, under its pressure rules
    (step,) = journey.steps
    assert step.fallback_if_unreachable is True and step.fallback == ("push", "email")
    assert loaded.decide(make_context(T0, consent={"sms": False, "push": True, "email": True}),
                         RNG)[0].channel == "push"


@pytest.mark.parametrize("engine", ["fast", "simpy"])
def test_simulated_users_without_sms_consent_get_the_fallback(engine):
    """Same decision code in the simulator: the seed journey's SMS step moves to push / email
    for users without SMS consent instead of being suppressed."""
    from omnisim.experiment import run_one
    from omnisim.policies.artifact import policy_document

    doc = policy_document("seed_journey+pressure")
    for s in doc["journeys"][0]["steps"]:
        if s["id"] == "sms_nudge":
            s["fallback"] = {"push": "nudge_push", "email": "nudge_email"}
            s["fallback_if_unreachable"] = True
    run = run_one("default", load_policy(doc), seed=2, n_users=300, days=7, engine=engine)
    log, users = run.log, run.users
    nudge = log[(log["step"] == "sms_nudge") & (log["event"] == "decided")]
    no_sms = set(users.loc[~users["consent_sms"].astype(bool), "user_id"])
    moved = nudge[nudge["user_id"].isin(no_sms)]
    assert len(moved) and set(moved["channel"].astype(str)) <= {"push", "email", "none"}
    reachable = set(users.loc[users["consent_push"].astype(bool) | users["consent_email"].astype(bool),
                              "user_id"])
    assert (moved.loc[moved["user_id"].isin(reachable), "channel"] != "none").mean() > 0.5
    sent = log[(log["step"] == "sms_nudge") & (log["event"] == "sent") & log["user_id"].isin(no_sms)]
    assert len(sent) and not (sent["channel"] == "sms").any()
    # users who kept SMS consent throughout (no SMS unsubscribe) stay on SMS
    unsub = set(log.loc[(log["event"] == "unsubscribed") & (log["channel"] == "sms"), "user_id"])
    with_sms = nudge[~nudge["user_id"].isin(no_sms | unsub)]
    assert len(with_sms) and set(with_sms["channel"].astype(str)) <= {"sms", "none"}


def test_the_sender_sends_the_fallback_at_decision_time(store_url, tmp_path):
    from omnisim.send.worker import Worker

    art = export_policy({"journeys": [spec()], "pressure": "default"}, tmp_path / "p.json")
    svc = make_service(store_url, art)
    with svc.store.transaction():
        svc.store.upsert_user("u1", "UTC", {}, {"email": True, "push": True, "sms": False},
                              {"email": "u1@x", "push": "tok"}, at(0))
    svc.ingest([ev("k1", "u1", "product_view", at(0))])
    fake = FakeDeliverer()
    Worker(svc, fake).drain()
    assert [(m.channel, m.template) for m in fake.messages] == [("push", "offer_push")]
    sent = [r for r in log_rows(svc.store, "u1") if r["event"] == "sent"]
    assert [(r["channel"], r["step"]) for r in sent] == [("push", "offer_sms")]
