"""Pressure rules: caps (rolling / calendar), quiet hours, arbitration by value, dedup,
escalation, adaptive caps, exemptions, YAML, and the log checker."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from omnisim.policies import (
    Blast, Cap, Decision, Escalation, HistoryEvent, Pending, PressureRules, PressureRulesError,
    QuietHours, count_violations, default_rules, load_rules, make_context, with_pressure,
)
from omnisim.policies.pressure import rules_from_dict

UTC = timezone.utc
T = datetime(2026, 5, 6, 14, 0, tzinfo=UTC)  # a Wednesday


def msg(channel="email", priority=0, ev=0.0, tag="marketing", campaign="c", exempt=False, **meta) -> Decision:
    return Decision(action=channel, channel=channel, propensity=1.0, policy="t@1", campaign=campaign,
                    tag=tag, priority=priority, expected_value=ev, exempt=exempt, meta=meta)


def pend(d: Decision, pid="p", created=T) -> Pending:
    return Pending(pid, d, created, created)


def sent(hours_ago: float, channel="email", campaign="old", tag="marketing", now=T) -> HistoryEvent:
    return HistoryEvent(ts=now - timedelta(hours=hours_ago), event="sent", channel=channel,
                        campaign=campaign, tag=tag)


def admit(rules, pendings, history=(), now=T, tz="UTC", consent=None):
    return rules.admit(pendings, make_context(now, history=history, timezone=tz, consent=consent))


@pytest.mark.parametrize("cap, reason", [
    (Cap(3, window_h=168), "cap:all:7d"), (Cap(1, window_h=24, channel="email"), "cap:email:1d"),
    (Cap(1, window_h=36, tag="promo"), "cap:tag=promo:36h"), (Cap(1, calendar="week"), "cap:all:cal-week"),
    (Cap(1, calendar="day", channel="sms"), "cap:sms:cal-day"),
])
def test_cap_reason_names_scope_and_window_kind(cap, reason):
    assert cap.reason == reason


def test_rolling_cap_defers_to_the_exact_instant_the_window_frees():
    rules = PressureRules(caps=(Cap(2, window_h=24),))
    a = admit(rules, [pend(msg())], [sent(20), sent(10)])
    (p, until, reason), = a.defer
    assert until == T + timedelta(hours=4) and reason == "cap:all:1d" and not a.send
    # at that instant the oldest send has left the window
    assert admit(rules, [pend(msg())], [sent(20), sent(10)], now=until).send


def test_calendar_day_cap_frees_at_local_midnight_across_dst():
    rules = PressureRules(caps=(Cap(1, calendar="day"),))
    now = datetime(2026, 3, 28, 14, 0, tzinfo=UTC)  # 15:00 CET, the day before the EU change
    a = admit(rules, [pend(msg(), created=now)], [sent(5, now=now)], now=now, tz="Europe/Paris")
    assert a.defer[0][1:] == (datetime(2026, 3, 28, 23, 0, tzinfo=UTC), "cap:all:cal-day")
    # a send yesterday (local) does not count today
    assert admit(rules, [pend(msg(), created=now)], [sent(15.5, now=now)], now=now, tz="Europe/Paris").send


def test_calendar_week_cap_frees_next_monday_local():
    rules = PressureRules(caps=(Cap(1, calendar="week"),), max_defer_h=200)
    a = admit(rules, [pend(msg())], [sent(40)], tz="America/New_York")
    assert a.defer[0][1] == datetime(2026, 5, 11, 4, 0, tzinfo=UTC)  # Mon 00:00 EDT


def test_when_a_cap_binds_the_most_valuable_goes_not_the_first():
    rules = PressureRules(caps=(Cap(1, window_h=24),))
    early_low = Pending("a", msg(priority=0, ev=9.0), T, T - timedelta(hours=3))
    late_high = Pending("b", msg(priority=1, ev=0.1), T, T)
    mid = Pending("c", msg(priority=0, ev=5.0), T, T - timedelta(hours=1))
    a = admit(rules, [early_low, mid, late_high])
    assert [p.pending_id for p in a.send] == ["b"]
    assert {p.pending_id: r for p, _, r in a.defer} == {"a": "cap:all:1d", "c": "cap:all:1d"}
    a = admit(rules, [mid, early_low])  # same priority: expected value decides
    assert [p.pending_id for p in a.send] == ["a"]


@pytest.mark.parametrize("local_h, action, expected", [(22, "defer", "defer"), (22, "drop", "drop"),
                                                        (7.5, "defer", "defer"), (12, "defer", "send")])
def test_quiet_hours_in_the_users_timezone(local_h, action, expected):
    rules = PressureRules(quiet_hours=(QuietHours(21, 8, action),))
    now = datetime(2026, 11, 1, 4, 0, tzinfo=UTC) + timedelta(hours=local_h)  # NY after fall back
    a = admit(rules, [pend(msg(), created=now)], now=now, tz="America/New_York")
    got = "send" if a.send else "defer" if a.defer else "drop"
    assert got == expected
    if a.defer:
        assert a.defer[0][2] == "quiet_hours"
        assert a.defer[0][1].astimezone(__import__("zoneinfo").ZoneInfo("America/New_York")).hour == 8
    if a.drop:
        assert a.drop[0][1] == "quiet_hours"


def test_quiet_hours_per_channel():
    rules = PressureRules(quiet_hours=(QuietHours(21, 8, "drop", channels=("sms",)),))
    now = datetime(2026, 6, 1, 22, 0, tzinfo=UTC)
    a = admit(rules, [pend(msg("sms"), "s", now), pend(msg("push"), "p", now)], now=now)
    assert [p.pending_id for p in a.send] == ["p"] and a.drop[0][1] == "quiet_hours"


def test_exempt_messages_skip_caps_and_quiet_hours_and_count_only_when_told():
    night = datetime(2026, 6, 1, 23, 0, tzinfo=UTC)
    for counts in (False, True):
        rules = PressureRules(caps=(Cap(1, window_h=24),), quiet_hours=(QuietHours(22, 6),),
                              exempt_counts=counts)
        a = admit(rules, [pend(msg(tag="transactional"), created=night)], [sent(1, now=night)], now=night)
        assert len(a.send) == 1
        later = night + timedelta(hours=8)
        hist = [sent(30, now=later), HistoryEvent(night, "sent", "email", campaign="x", tag="transactional")]
        a = admit(rules, [pend(msg(), created=later)], hist, now=later)
        assert bool(a.defer) is counts
    flag = PressureRules(caps=(Cap(0, window_h=24),))
    assert admit(flag, [pend(msg(exempt=True))]).send


def test_dedup_same_campaign_across_channels():
    rules = PressureRules(dedup_h=24)
    a = admit(rules, [pend(msg("sms", campaign="offer"))], [sent(5, "email", "offer")])
    assert a.drop[0][1] == "dedup"
    assert admit(rules, [pend(msg("sms", campaign="offer"))], [sent(30, "email", "offer")]).send
    assert admit(rules, [pend(msg("sms", campaign="offer", dedup=False))], [sent(5, "email", "offer")]).send
    batch = [pend(msg(ch, campaign="offer", ev=v), ch) for ch, v in (("email", 1), ("sms", 3), ("push", 2))]
    a = admit(rules, batch)
    assert [p.pending_id for p in a.send] == ["sms"] and {r for _, r in a.drop} == {"dedup"}


def test_channel_priority_breaks_ties_of_equal_value():
    batch = [pend(msg(ch, campaign="offer"), pid) for ch, pid in (("sms", "a"), ("push", "b"), ("email", "c"))]
    a = admit(PressureRules(dedup_h=24, channel_priority=("email", "push", "sms")), batch)
    assert [p.decision.channel for p in a.send] == ["email"]
    a = admit(PressureRules(dedup_h=24, channel_priority=("push",)), batch)
    assert [p.decision.channel for p in a.send] == ["push"]
    a = admit(PressureRules(dedup_h=24, channel_priority=("push",)), [batch[0], pend(msg("push", ev=-1, campaign="offer"), "b")])
    assert [p.decision.channel for p in a.send] == ["sms"]  # value before channel rank


def test_escalation_email_first_sms_only_without_interaction():
    rules = PressureRules(escalations=(Escalation("sms", "email", wait_h=4),))
    sms = pend(msg("sms", campaign="offer"))
    assert admit(rules, [sms]).drop[0][1] == "priority"  # no email yet
    a = admit(rules, [sms], [sent(1, "email", "offer")])
    assert a.defer[0][1:] == (T + timedelta(hours=3), "priority")
    opened = HistoryEvent(T - timedelta(minutes=30), "opened", "email", campaign="offer")
    assert admit(rules, [sms], [sent(5, "email", "offer"), opened]).drop[0][1] == "priority"
    assert admit(rules, [sms], [sent(5, "email", "offer")]).send
    no_email = {"email": False, "sms": True, "push": True}
    assert admit(rules, [sms], consent=no_email).send


def test_adaptive_cap_for_engaged_users():
    rules = PressureRules(caps=(Cap(1, window_h=24, engaged_max=2),), engaged_min_interactions=2)
    opens = [HistoryEvent(T - timedelta(days=d), "opened", "email", campaign="x") for d in (2, 3)]
    assert admit(rules, [pend(msg())], [sent(2)]).defer
    assert admit(rules, [pend(msg())], [sent(2), *opens]).send


def test_expired_and_no_consent():
    rules = PressureRules(caps=(Cap(1, window_h=168),), max_defer_h=24)
    a = admit(rules, [pend(msg())], [sent(1)])
    assert a.drop == [(pend(msg()), "expired")]
    a = admit(PressureRules(), [pend(msg("sms"))], consent={"email": True, "sms": False})
    assert a.drop[0][1] == "no_consent"


def test_with_pressure_exposes_rules_and_delegates():
    p = with_pressure(Blast())
    assert p.rules == default_rules() and p.name == "blast@1+pressure@1"
    ctx = make_context(T)
    assert p.decide(ctx, None) == Blast().decide(ctx, None)


def test_default_rules():
    r = default_rules()
    assert {c.reason for c in r.caps} == {"cap:all:cal-day", "cap:all:7d", "cap:sms:7d"}
    assert r.quiet_hours == (QuietHours(21, 8, "defer"),) and r.dedup_h == 24
    assert r.channel_priority == ("email", "push", "sms")


@pytest.mark.parametrize("spec, message", [
    ({"caps": [{"max": "x", "window_h": 24}]}, r"caps\[0\]\.max: expected an integer"),
    ({"caps": [{"max": 1, "window_h": 24, "calendar": "day"}]}, r"caps\[0\]: set exactly one"),
    ({"caps": [{"max": 1, "calendar": "month"}]}, r"caps\[0\]\.calendar: expected one of day, week"),
    ({"quiet_hours": [{"start_h": 21, "end_h": 8, "action": "later"}]}, r"quiet_hours\[0\]\.action"),
    ({"quiet_hours": [{"start_h": "9pm", "end_h": 8}]}, r"quiet_hours\[0\]\.start_h: expected a number"),
    ({"dedup_h": [24]}, r"dedup_h: expected a number"),
    ({"cap": []}, r"cap: unknown key"),
    ({"exempt_counts": "yes"}, r"exempt_counts: expected a boolean"),
    ({"channel_priority": ["email", "pigeon"]}, r"channel_priority\[1\]: expected one of email"),
])
def test_rules_yaml_errors_name_the_key(spec, message):
    with pytest.raises(PressureRulesError, match=message):
        rules_from_dict(spec)


def test_rules_yaml_file(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("caps:\n  - {max: 2, window_h: 48, channel: push}\nquiet_hours: []\n")
    assert load_rules(f).caps == (Cap(2, window_h=48.0, channel="push"),)
    f.write_text("caps:\n  - {max: 2, window_h: forever}\n")
    with pytest.raises(PressureRulesError, match=r"r\.yaml: caps\[0\]\.window_h"):
        load_rules(f)


def test_count_violations_on_a_log():
    rules = PressureRules(caps=(Cap(1, window_h=24),), quiet_hours=(QuietHours(21, 8),))
    rows = [  # user a in Paris: 10:00 UTC = 12:00 local; 20:00 UTC = 22:00 local (quiet, and 2nd in 24 h)
        ("2026-06-01T10:00Z", "a", "sent", "email", "marketing"),
        ("2026-06-01T20:00Z", "a", "sent", "sms", "marketing"),
        ("2026-06-01T20:30Z", "a", "sent", "email", "transactional"),  # exempt: not a violation
        ("2026-06-01T20:00Z", "b", "sent", "email", "marketing"),  # New York 16:00: fine
        ("2026-06-01T20:05Z", "b", "opened", "email", None),
    ]
    log = pd.DataFrame(rows, columns=["ts", "user_id", "event", "channel", "tag"])
    users = pd.DataFrame({"user_id": ["a", "b"], "timezone": ["Europe/Paris", "America/New_York"]})
    v = count_violations(log, users, rules)
    assert (v["cap_violations"], v["quiet_hour_violations"], v["sends_checked"]) == (1, 1, 4)
    v = count_violations(log.drop(columns="tag"), users, rules)  # no tag column: all marketing
    assert (v["cap_violations"], v["quiet_hour_violations"]) == (2, 2)
