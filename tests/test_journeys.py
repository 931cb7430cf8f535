"""Rule journeys: branches, exits, re-entry, waits until a local hour (DST), YAML, holdouts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from omnisim.policies import (
    Condition, Decision, HistoryEvent, Journey, JourneyError, Step, Trigger, load_journey,
    local_hour, make_context,
)
from omnisim.policies.journeys import journey_from_dict

T0 = datetime(2026, 5, 4, 14, 0, tzinfo=timezone.utc)
RNG = np.random.default_rng(0)


def H(hours: float, event: str, channel: str = "web", campaign: str | None = None) -> HistoryEvent:
    return HistoryEvent(ts=T0 + timedelta(hours=hours), event=event, channel=channel, campaign=campaign)


def enter(journey: Journey, history=(), **kw) -> list[Decision]:
    return journey.decide(make_context(T0, journey.triggers[0], history=history, **kw), RNG)


def follow(journey: Journey, decision: Decision, history=(), **kw) -> list[Decision]:
    """Run the decision's (single) follow-up with the given history."""
    (fu,) = decision.follow_ups
    trig = Trigger(kind="journey_step", ts=fu.at, payload=fu.payload)
    return journey.decide(make_context(fu.at, trig, history=history, **kw), RNG)


@pytest.fixture(scope="module")
def seed() -> Journey:
    return load_journey("seed_journey")


def test_seed_entry_sends_email_and_schedules_sms_step(seed):
    (d,) = enter(seed)
    assert (d.channel, d.campaign, d.policy) == ("email", "seed_journey", "seed_journey@1")
    assert d.meta["step"] == "offer_email" and d.propensity == 1.0
    (fu,) = d.follow_ups
    assert fu.at == T0 + timedelta(hours=4)
    assert fu.payload["journey"] == "seed_journey" and fu.payload["step"] == "sms_nudge"
    assert fu.payload["sent"] == ["offer_email"] and fu.payload["entered_at"] == T0.isoformat()


@pytest.mark.parametrize("opened, expected", [(False, "sms"), (True, "none")])
def test_seed_sms_only_to_those_who_did_not_open(seed, opened, expected):
    (email,) = enter(seed)
    history = [H(0, "sent", "email", "seed_journey")]
    if opened:
        history.append(H(1, "opened", "email", "seed_journey"))
    (d,) = follow(seed, email, history)
    assert d.channel == expected and d.meta["step"] == "sms_nudge"
    assert d.follow_ups[0].payload["step"] == "visit_push"  # both branches go on to the push step


def test_open_of_another_campaign_does_not_count(seed):
    (email,) = enter(seed)
    (d,) = follow(seed, email, [H(1, "opened", "email", "welcome")])
    assert d.channel == "sms"


@pytest.mark.parametrize("view_at_h, expected", [
    (6, "push"),    # visited after the messages
    (-1, "none"),   # before entry
    (0, "none"),    # the view that triggered the entry is not a later visit
])
def test_seed_push_to_those_who_then_visited_the_product(seed, view_at_h, expected):
    (email,) = enter(seed)
    (sms,) = follow(seed, email)
    (d,) = follow(seed, sms, [H(view_at_h, "product_view")])
    assert d.channel == expected and d.meta["step"] == "visit_push" and not d.follow_ups


@pytest.mark.parametrize("event, channel", [("purchase", "web"), ("unsubscribed", "email")])
def test_purchase_or_unsubscribe_exits(seed, event, channel):
    (email,) = enter(seed)
    (d,) = follow(seed, email, [H(2, event, channel)])
    assert d.channel == "none" and d.meta["exit"] == event and not d.follow_ups


def test_step_without_consent_is_suppressed_and_journey_goes_on(seed):
    (email,) = enter(seed)
    (d,) = follow(seed, email, consent={"email": True, "sms": False, "push": True})
    assert d.channel == "none" and d.reason == "no_consent" and d.follow_ups


def test_reentry_cooldown_and_max_entries(seed):
    assert enter(seed, [H(-10, "sent", "email", "seed_journey")]) == []
    assert enter(seed, [H(-100, "sent", "email", "seed_journey")])[0].channel == "email"
    welcome = load_journey("welcome")  # max_entries: 1, counted from the entries' decided rows
    entry = H(-500, "decided", "email", "welcome")
    assert welcome.decide(make_context(T0, "signup", history=[entry]), RNG) == []
    assert welcome.decide(make_context(T0, "signup"), RNG)[0].channel == "email"


def test_other_triggers_and_other_journeys_steps_are_ignored(seed):
    assert seed.decide(make_context(T0, "signup"), RNG) == []
    trig = Trigger("journey_step", T0, {"journey": "welcome", "step": "getting_started"})
    assert seed.decide(make_context(T0, trig), RNG) == []


def test_branch_otherwise_exit():
    j = load_journey("browse_abandon")
    (wait,) = j.decide(make_context(T0, "product_view"), RNG)
    assert wait.channel == "none" and wait.follow_ups[0].at == T0 + timedelta(hours=2)
    (d,) = follow(j, wait, [H(1, "cart_add")])
    assert d.meta["branch"] == "otherwise" and not d.follow_ups
    (d,) = follow(j, wait)
    assert d.meta["branch"] == "next" and d.follow_ups[0].payload["step"] == "browse_push"


def _hour_journey(hour: float) -> Journey:
    return Journey("at_hour", ("signup",), (Step("first", "none"), Step("later", "email", at_local_hour=hour)))


@pytest.mark.parametrize("tz, now, hour, expected_utc", [
    # US spring forward 2026-03-08: 00:00 EST -> 09:00 EDT is 13:00 UTC
    ("America/New_York", datetime(2026, 3, 8, 5, 0), 9, datetime(2026, 3, 8, 13, 0)),
    # US fall back 2026-11-01: 00:30 EDT -> 09:00 EST is 14:00 UTC
    ("America/New_York", datetime(2026, 11, 1, 4, 30), 9, datetime(2026, 11, 1, 14, 0)),
    # EU spring forward 2026-03-29: 01:30 CET -> 09:00 CEST is 07:00 UTC
    ("Europe/Paris", datetime(2026, 3, 29, 0, 30), 9, datetime(2026, 3, 29, 7, 0)),
    # EU fall back 2026-10-25: 01:00 CEST -> 09:00 CET is 08:00 UTC
    ("Europe/Paris", datetime(2026, 10, 24, 23, 0), 9, datetime(2026, 10, 25, 8, 0)),
    # already past 09:00 local -> tomorrow
    ("Europe/Paris", datetime(2026, 6, 1, 12, 0), 9, datetime(2026, 6, 2, 7, 0)),
])
def test_wait_until_local_hour_respects_timezone_and_dst(tz, now, hour, expected_utc):
    now, expected_utc = now.replace(tzinfo=timezone.utc), expected_utc.replace(tzinfo=timezone.utc)
    (d,) = _hour_journey(hour).decide(make_context(now, "signup", timezone=tz), RNG)
    assert d.follow_ups[0].at == expected_utc
    assert local_hour(d.follow_ups[0].at, tz) == hour


def test_wait_into_a_nonexistent_local_hour_lands_just_after_the_gap():
    now = datetime(2026, 3, 8, 5, 0, tzinfo=timezone.utc)  # 00:00 EST; 02:30 does not exist
    (d,) = _hour_journey(2.5).decide(make_context(now, "signup", timezone="America/New_York"), RNG)
    at = d.follow_ups[0].at
    # the transition itself (02:00 EST becomes 03:00 EDT), not 03:30: the first instant
    # the clock reads at least 02:30
    assert at == datetime(2026, 3, 8, 7, 0, tzinfo=timezone.utc)
    assert local_hour(at, "America/New_York") == 3.0


def test_delay_then_local_hour_cart_abandon():
    j = load_journey("cart_abandon")  # email after 1 h, SMS next 11:00 local at least 12 h later
    now = datetime(2026, 3, 7, 22, 0, tzinfo=timezone.utc)  # 17:00 EST Saturday
    (wait,) = j.decide(make_context(now, "cart_abandon", timezone="America/New_York"), RNG)
    (email,) = follow(j, wait, timezone="America/New_York")
    assert email.channel == "email"
    # 23:00 UTC + 12 h = 11:00 UTC Sunday = 07:00 EDT -> 11:00 EDT = 15:00 UTC
    assert email.follow_ups[0].at == datetime(2026, 3, 8, 15, 0, tzinfo=timezone.utc)


def test_python_dsl_matches_yaml(seed):
    py = Journey(
        journey="seed_journey", triggers=("product_view", "cart_abandon"), reentry_cooldown_h=72,
        steps=(
            Step("offer_email", "email", template="offer_intro", expected_value=1.0),
            Step("sms_nudge", "sms", delay_h=4, template="offer_reminder_sms", expected_value=0.8,
                 when=(Condition("opened", since="entry", channel="email", negate=True),)),
            Step("visit_push", "push", delay_h=20, template="offer_push", expected_value=0.6,
                 when=(Condition("product_view", since="entry"),)),
        ))
    assert py == seed


def test_journey_holdout_share_and_propensity():
    j = Journey("held", ("signup",), (Step("a", "email"),), holdout_share=0.2)
    ds = [j.decide(make_context(T0, "signup", user_id=f"u{i}"), RNG)[0] for i in range(4000)]
    held = [d for d in ds if d.reason == "holdout"]
    assert abs(len(held) / 4000 - 0.2) < 3 * np.sqrt(0.2 * 0.8 / 4000)
    assert all(d.propensity == pytest.approx(0.2) for d in held)
    assert all(d.propensity == pytest.approx(0.8) for d in ds if d.channel == "email")


BASE = {"name": "j", "triggers": ["signup"], "steps": [{"id": "a", "channel": "email"},
                                                       {"id": "b", "channel": "sms", "delay_h": 2}]}


def _with(path: tuple, value) -> dict:
    import copy
    spec = copy.deepcopy(BASE)
    node = spec
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return spec


@pytest.mark.parametrize("path, value, message", [
    (("steps", 1, "delay_h"), "abc", "steps[1].delay_h: expected a number"),
    (("steps", 0, "channel"), "fax", "steps[0].channel: expected one of email"),
    (("steps", 0, "when"), [{"event": "opened", "since": "yesterday"}], "steps[0].when[0].since"),
    (("steps", 0, "when"), [{"event": "teleported"}], "steps[0].when[0].event"),
    (("steps", 0, "next"), "nowhere", "steps[0].next: expected a step id or 'exit'"),
    (("steps", 1, "wait"), 3, "steps[1].wait: unknown key"),
    (("triggers",), "signup", "triggers: expected a list"),
    (("holdout_share",), True, "holdout_share: expected a number"),
    (("steps", 0, "at_local_hour"), 25, "at_local_hour: expected a number in [0, 24)"),
])
def test_yaml_errors_name_the_key(path, value, message):
    with pytest.raises(JourneyError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        journey_from_dict(_with(path, value))


def test_yaml_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntriggers: [signup]\nsteps:\n  - {id: a, channel: email, delay_h: soon}\n")
    with pytest.raises(JourneyError, match=r"bad\.yaml: steps\[0\]\.delay_h: expected a number"):
        load_journey(bad)
    missing = tmp_path / "missing.yaml"
    missing.write_text("name: x\nsteps: [{id: a, channel: email}]\n")
    with pytest.raises(JourneyError, match="triggers: required key is missing"):
        load_journey(missing)


def test_malformed_step_payload_is_a_clear_error(seed):
    trig = Trigger("journey_step", T0, {"journey": "seed_journey", "step": "sms_nudge"})
    with pytest.raises(JourneyError, match="entered_at"):
        seed.decide(make_context(T0, trig), RNG)
    trig = Trigger("journey_step", T0, {"journey": "seed_journey", "step": "gone", "entered_at": T0.isoformat()})
    assert seed.decide(make_context(T0, trig), RNG)[0].meta["exit"] == "unknown_step"


KNOWN = ("one of signup, visit, product_view, cart_add, cart_abandon, purchase, opened, clicked, "
         "inactivity")


@pytest.mark.parametrize("triggers, message", [
    (["cart_abandn"],
     r"j\.triggers\[0\]: expected a behaviour trigger, " + KNOWN + ", got str 'cart_abandn'"),
    (["signup", "sign_up"], r"j\.triggers\[1\]: expected a behaviour trigger, .*got str 'sign_up'"),
    (["scheduled"], r"triggers\[0\]: expected a behaviour trigger"),  # the replay hook's, not a behaviour
    ([], r"j\.triggers: expected at least one trigger kind \(" + KNOWN + r"\), got list \[\]"),
    (["journey_step"], r"j\.triggers\[0\]: journey_step is reserved for follow-ups"),
])
def test_unknown_or_no_triggers_are_refused_naming_the_known_ones(triggers, message):
    with pytest.raises(JourneyError, match=message):
        journey_from_dict(_with(("triggers",), triggers))
    with pytest.raises(JourneyError, match=message):  # the Python form too
        Journey("j", tuple(triggers), (Step("a", "email"),))


@pytest.mark.parametrize("reserved", ["entry", "exit"])
def test_reserved_step_ids_are_refused(reserved):
    """``entry`` is the log step of an entry's wait (re-entry reads it), ``exit`` a goto
    target: a step named so would be misread."""
    with pytest.raises(JourneyError, match=rf"j\.steps\[1\]\.id: '{reserved}' is reserved"):
        Journey("j", ("signup",), (Step("a", "email"), Step(reserved, "sms")))


def test_trigger_errors_name_the_file(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("name: cart\ntriggers: [cart_abandn]\nsteps:\n  - {id: a, channel: email}\n")
    with pytest.raises(JourneyError,
                       match=r"typo\.yaml: cart\.triggers\[0\]: .*cart_abandon.*'cart_abandn'"):
        load_journey(bad)
    with pytest.raises(JourneyError, match=r"j\.triggers: expected a tuple of trigger kinds"):
        Journey("j", "signup", (Step("a", "email"),))  # type: ignore[arg-type]


def test_known_triggers_are_those_the_engines_and_the_sender_decide_on():
    from omnisim.model.engine_simpy import TRIGGER_EVENTS as SIM
    from omnisim.policies.journeys import BEHAVIOUR_TRIGGERS
    from omnisim.send.service import TRIGGER_EVENTS as SENDER

    assert set(BEHAVIOUR_TRIGGERS) == set(SIM) | {"inactivity"} == set(SENDER)
    for kind in BEHAVIOUR_TRIGGERS:  # each is accepted
        assert journey_from_dict(_with(("triggers",), [kind])).triggers == (kind,)
