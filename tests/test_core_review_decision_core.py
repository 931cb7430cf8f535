"""Decision-core review: journey conditions on the step's own message, local hours across
DST (skipped and repeated times), quiet-hour bounds, condition channels, artifact errors."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from omnisim.policies import (
    Decision, HistoryEvent, JourneyError, Pending, PressureRules, PressureRulesError, QuietHours,
    Trigger, make_context, next_local_hour,
)
from omnisim.policies.artifact import ArtifactError, _canonical, export_policy, load_artifact
from omnisim.policies.journeys import journey_from_dict
from omnisim.policies.pressure import rules_from_dict

UTC = timezone.utc
T0 = datetime(2026, 5, 4, 14, 0, tzinfo=UTC)
RNG = np.random.default_rng(0)


# -- journeys: a step's own message is sent at the instant the step runs ----------------------

def _email_then_sms_if_not_sent(since: str) -> object:
    return journey_from_dict({"name": "j", "triggers": ["product_view"], "steps": [
        {"id": "email", "channel": "email"},
        {"id": "sms", "channel": "sms", "delay_h": 4,
         "when": [{"event": "sent", "channel": "email", "since": since, "negate": True}]}]})


@pytest.mark.parametrize("since", ["entry", "step"])
@pytest.mark.parametrize("email_sent, expected", [(True, "none"), (False, "sms")])
def test_sent_condition_sees_the_message_sent_when_the_previous_step_ran(since, email_sent, expected):
    journey = _email_then_sms_if_not_sent(since)
    (d,) = journey.decide(make_context(T0), RNG)
    (fu,) = d.follow_ups
    history = [HistoryEvent(ts=T0, event="product_view")]
    if email_sent:  # the engine logs the send at the decision's instant
        history.append(HistoryEvent(ts=T0, event="sent", channel="email", campaign="j"))
    ctx = make_context(fu.at, Trigger("journey_step", fu.at, fu.payload), history=history)
    (single,) = journey.decide(ctx, RNG)
    ((batch,),) = journey.decide_batch([ctx], RNG)
    assert single.channel == batch.channel == expected


def test_the_triggering_behaviour_event_still_does_not_count():
    journey = journey_from_dict({"name": "v", "triggers": ["product_view"], "steps": [
        {"id": "wait", "channel": "none", "delay_h": 2},
        {"id": "push", "channel": "push", "when": [{"event": "product_view", "since": "entry"}]}]})
    (wait,) = journey.decide(make_context(T0), RNG)
    (fu,) = wait.follow_ups
    (step,) = journey.decide(make_context(fu.at, Trigger("journey_step", fu.at, fu.payload),
                                          history=[HistoryEvent(ts=T0, event="product_view")]), RNG)
    nxt = step.follow_ups[0]
    ctx = make_context(nxt.at, Trigger("journey_step", nxt.at, nxt.payload),
                       history=[HistoryEvent(ts=T0, event="product_view")])
    assert journey.decide(ctx, RNG)[0].channel == "none"
    assert journey.decide_batch([ctx], RNG)[0][0].channel == "none"


def test_condition_channel_typo_is_refused_with_its_key_path():
    spec = {"name": "j", "triggers": ["signup"], "steps": [
        {"id": "a", "channel": "email", "when": [{"event": "opened", "channel": "mail"}]}]}
    with pytest.raises(JourneyError, match=r"steps\[0\]\.when\[0\]\.channel: expected one of email"):
        journey_from_dict(spec)


# -- local hours across DST -------------------------------------------------------------------

NY = "America/New_York"


@pytest.mark.parametrize("ts, tz, hour, expected", [
    # fall back 2025-11-02 in New York: 01:20 EST is the second 01:20; 01:30 EST is 10 min on
    (datetime(2025, 11, 2, 6, 20, tzinfo=UTC), NY, 1.5, datetime(2025, 11, 2, 6, 30, tzinfo=UTC)),
    # before the repeated hour: its first occurrence (01:30 EDT)
    (datetime(2025, 11, 2, 4, 0, tzinfo=UTC), NY, 1.5, datetime(2025, 11, 2, 5, 30, tzinfo=UTC)),
    # spring forward 2025-03-09: 02:30 does not exist; the instant after the gap is 03:00 EDT
    (datetime(2025, 3, 9, 5, 0, tzinfo=UTC), NY, 2.5, datetime(2025, 3, 9, 7, 0, tzinfo=UTC)),
    (datetime(2025, 3, 9, 5, 0, tzinfo=UTC), NY, 2.0, datetime(2025, 3, 9, 7, 0, tzinfo=UTC)),
    # Lord Howe moves 30 min (02:00 -> 02:30 on 2025-10-05)
    (datetime(2025, 10, 4, 12, 0, tzinfo=UTC), "Australia/Lord_Howe", 2.25,
     datetime(2025, 10, 4, 15, 30, tzinfo=UTC)),
    # half-hour and far offsets, no DST
    (T0, "America/St_Johns", 9.5, datetime(2026, 5, 5, 12, 0, tzinfo=UTC)),
    (T0, "Pacific/Kiritimati", 9.5, datetime(2026, 5, 4, 19, 30, tzinfo=UTC)),
    # a fraction that rounds to the next hour / to midnight
    (T0, "UTC", 9.9999, datetime(2026, 5, 5, 10, 0, tzinfo=UTC)),
    (T0, "UTC", 23.9999, datetime(2026, 5, 5, 0, 0, tzinfo=UTC)),
])
def test_next_local_hour_is_the_first_such_instant(ts, tz, hour, expected):
    assert next_local_hour(ts, tz, hour) == expected


def test_quiet_hours_ending_in_the_repeated_hour_defer_to_its_second_occurrence():
    rules = PressureRules(quiet_hours=(QuietHours(0, 1.5),))
    now = datetime(2025, 11, 2, 6, 20, tzinfo=UTC)  # 01:20 EST, the second time around
    d = Decision(action="email", channel="email", propensity=1.0, policy="t@1", campaign="c")
    adm = rules.admit([Pending("p", d, now, now)], make_context(now, timezone=NY))
    ((_, until, reason),) = adm.defer
    assert reason == "quiet_hours" and until == datetime(2025, 11, 2, 6, 30, tzinfo=UTC)


def test_journey_step_at_a_local_hour_in_the_repeated_hour():
    journey = journey_from_dict({"name": "j", "triggers": ["product_view"], "steps": [
        {"id": "a", "channel": "email", "at_local_hour": 1.5}]})
    now = datetime(2025, 11, 2, 6, 20, tzinfo=UTC)
    (wait,) = journey.decide(make_context(now, timezone=NY), RNG)
    assert wait.follow_ups[0].at == datetime(2025, 11, 2, 6, 30, tzinfo=UTC)


# -- quiet-hour bounds ------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["start_h", "end_h"])
def test_quiet_hour_of_24_or_more_is_refused_with_its_key_path(key):
    spec = {"start_h": 22, "end_h": 6, key: 24}
    with pytest.raises(PressureRulesError, match=rf"quiet_hours\[0\]\.{key}: expected a local hour in \[0, 24\)"):
        rules_from_dict({"quiet_hours": [spec]})
    with pytest.raises(PressureRulesError, match=rf"quiet_hours\.{key}"):
        QuietHours(**spec)


# -- artifacts --------------------------------------------------------------------------------

def _rewrite(path, fn, rehash=True):
    body = json.loads(path.read_text())
    body.pop("sha256")
    fn(body)
    if rehash:
        body["sha256"] = hashlib.sha256(_canonical(body)).hexdigest()
    path.write_text(json.dumps(body))


def test_rules_parameters_that_no_longer_build_name_the_file(tmp_path):
    path = export_policy("seed_journey+pressure", tmp_path / "p.json")
    _rewrite(path, lambda b: b["parameters"]["journeys"][0]["steps"][0].update(channel="fax"))
    with pytest.raises(ArtifactError, match=r"p\.json: the rules parameters do not build a policy "
                                            r"\(journeys\[0\]\.steps\[0\]\.channel"):
        load_artifact(path)


@pytest.mark.parametrize("change, rehash, message", [
    (lambda b: b["parameters"]["pressure"].update(max_defer_h=float("nan")), False, "not plain JSON"),
    (lambda b: b.update(files=[1]), True, "'files': expected a mapping"),
    (lambda b: b.update(parameters=[1]), True, "'parameters': expected a mapping"),
    (lambda b: b.pop("name"), True, "'name': expected a string"),
])
def test_malformed_artifacts_get_an_artifact_error(tmp_path, change, rehash, message):
    path = export_policy("seed_journey+pressure", tmp_path / "p.json")
    _rewrite(path, change, rehash=rehash)
    with pytest.raises(ArtifactError, match=message):
        load_artifact(path)
