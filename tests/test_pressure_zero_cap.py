"""A cap that admits nothing (``max: 0``, or ``engaged_max: 0`` for an engaged user) drops
a pending at once with its own reason (``cap:<scope>:<window>``) — never defers it (for
the cap, quiet hours or the other rules) until it expires — in ``admit`` and in both
simulator engines' admissions."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from omnisim.policies import Cap, Decision, HistoryEvent, Pending, PressureRules, QuietHours, make_context
from omnisim.policies.pressure import rules_from_dict

UTC = timezone.utc
T = datetime(2026, 5, 6, 14, 0, tzinfo=UTC)  # a Wednesday


def msg(channel: str = "sms", tag: str = "marketing", exempt: bool = False) -> Decision:
    return Decision(action=channel, channel=channel, propensity=1.0, policy="t@1", campaign="c",
                    tag=tag, exempt=exempt)


def admit(rules: PressureRules, decisions, now: datetime = T, history=()):
    due = [Pending(f"p{i}", d, now, now) for i, d in enumerate(decisions)]
    return rules.admit(due, make_context(now, history=history))


@pytest.mark.parametrize("cap, reason", [
    (Cap(0, window_h=168, channel="sms"), "cap:sms:7d"),        # was: expired
    (Cap(0, calendar="day", channel="sms"), "cap:sms:cal-day"),  # was: deferred day after day
    (Cap(0, calendar="week", tag="marketing"), "cap:tag=marketing:cal-week"),
])
def test_a_zero_cap_drops_at_once_with_its_own_reason(cap, reason):
    a = admit(PressureRules(caps=(cap,), max_defer_h=240), [msg("sms"), msg("email")])
    assert not a.defer
    if cap.channel == "sms":
        assert [(p.pending_id, r) for p, r in a.drop] == [("p0", reason)]
        assert [p.pending_id for p in a.send] == ["p1"]  # the email is not under it
    else:
        assert sorted((p.pending_id, r) for p, r in a.drop) == [("p0", reason), ("p1", reason)]


def test_a_zero_cap_wins_over_quiet_hours_and_other_caps():
    rules = PressureRules(caps=(Cap(1, window_h=24), Cap(0, calendar="day", channel="sms")),
                          quiet_hours=(QuietHours(12, 18),))  # quiet now (14:00 UTC)
    a = admit(rules, [msg("sms")])
    assert a.drop[0][1] == "cap:sms:cal-day" and not a.defer and not a.send
    a = admit(rules, [msg("email")])  # others still wait for the end of the quiet hours
    assert a.defer[0][1:] == (T + timedelta(hours=4), "quiet_hours")


def test_engaged_max_zero_drops_engaged_users_only():
    rules = PressureRules(caps=(Cap(2, calendar="day", engaged_max=0),))
    engaged = [HistoryEvent(T - timedelta(hours=h), "opened", "email", campaign="x") for h in (5, 30)]
    assert admit(rules, [msg()], history=engaged).drop[0][1] == "cap:all:cal-day"
    assert admit(rules, [msg()]).send


def test_exempt_messages_pass_a_zero_cap():
    rules = PressureRules(caps=(Cap(0, window_h=24),))
    assert admit(rules, [msg(tag="transactional"), msg(exempt=True)]).send


def test_free_at_of_a_zero_limit_is_never():
    start = T - timedelta(days=1)
    for cap in (Cap(0, window_h=24), Cap(0, calendar="day")):
        nxt = T + timedelta(hours=10) if cap.calendar else None
        assert cap.free_at([], 0, start, nxt) == datetime.max.replace(tzinfo=UTC)


@pytest.mark.parametrize("engine", ["fast", "simpy"])
def test_simulated_sms_under_a_zero_cap_are_suppressed_with_the_caps_reason(engine):
    from omnisim.experiment import run_one
    from omnisim.policies.registry import load_policy

    rules = {"caps": [{"max": 0, "calendar": "day", "channel": "sms"}, {"max": 2, "window_h": 24}],
             "quiet_hours": [{"start_h": 21, "end_h": 8}], "max_defer_h": 72}
    assert rules_from_dict(rules).caps[0].max == 0  # the parser allows it (minimum 0)
    run = run_one("default", load_policy({"policy": "random_channel", "pressure": rules}), seed=3,
                  n_users=120, days=6, engine=engine)
    log = run.log
    sms = log[log["channel"] == "sms"]
    assert not (sms["event"] == "sent").any() and not (sms["event"] == "deferred").any()
    dropped = sms.loc[sms["event"] == "suppressed", "reason"]
    assert len(dropped) > 10 and set(dropped) <= {"cap:sms:cal-day", "no_consent"}
    assert (dropped == "cap:sms:cal-day").sum() > 10
