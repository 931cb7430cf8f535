"""Property-based tests: over random rule sets and random streams of pending messages, a
small driver runs the admit loop (admit, append sends to history, re-queue defers) and checks
that no cap is ever exceeded in any window, no non-exempt send falls in quiet hours in the
user's timezone, the value-ordering of cap arbitration, the exactness of cap deferrals, and
that a cap admitting nothing (``max: 0``) drops at once with its own reason.

The checks below re-derive windows from first principles (local dates and ISO weeks) rather
than calling the module's window code.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pandas as pd
from hypothesis import HealthCheck, event, given, settings, strategies as st

from omnisim.policies import (
    CHANNELS, Admission, Cap, Decision, Escalation, HistoryEvent, Pending, PressureRules,
    QuietHours, count_violations, make_context,
)

TIMEZONES = ("UTC", "America/New_York", "Europe/Paris", "Asia/Kolkata", "Australia/Sydney")
STARTS = (datetime(2026, 3, 5, tzinfo=timezone.utc), datetime(2026, 10, 22, tzinfo=timezone.utc),
          datetime(2026, 3, 27, tzinfo=timezone.utc))
TAGS = ("marketing", "promo", "transactional")
REASON_PREFIXES = ("cap:", "quiet_hours", "dedup", "expired", "no_consent", "priority")

caps = st.builds(
    lambda mx, window, channel, tag, bonus: Cap(
        mx, window_h=window if isinstance(window, float) else None,
        calendar=window if isinstance(window, str) else None, channel=channel, tag=tag,
        engaged_max=None if bonus is None else mx + bonus),
    st.sampled_from([0, 1, 1, 2, 2, 3, 3]), st.sampled_from([6.0, 24.0, 36.0, 168.0, "day", "week"]),
    st.none() | st.sampled_from(CHANNELS), st.none() | st.just("promo"),
    st.none() | st.integers(1, 2))
quiet = st.builds(QuietHours, st.integers(0, 23), st.integers(0, 23),
                  st.sampled_from(["defer", "drop"]),
                  st.none() | st.sampled_from([("sms",), ("sms", "push"), ("email",)]))
rule_sets = st.builds(
    PressureRules, caps=st.lists(caps, max_size=3, unique_by=lambda c: c.reason).map(tuple),
    quiet_hours=st.lists(quiet, max_size=2).map(tuple),
    dedup_h=st.none() | st.sampled_from([12.0, 24.0]),
    escalations=st.lists(st.builds(Escalation, st.just("sms"), st.just("email"),
                                   st.sampled_from([2.0, 6.0])), max_size=1).map(tuple),
    exempt_counts=st.booleans(), max_defer_h=st.sampled_from([24.0, 72.0, 240.0]),
    engaged_min_interactions=st.integers(1, 3), engaged_window_h=st.sampled_from([48.0, 720.0]))
messages = st.lists(st.tuples(
    st.integers(0, 96 * 60),                            # created, minutes after start
    st.sampled_from(CHANNELS), st.integers(0, 2),       # channel, priority
    st.sampled_from([0.0, 0.5, 1.0, 2.5]),              # expected value (ties happen)
    st.sampled_from(TAGS), st.sampled_from(["a", "b", "c", None]),
    st.integers(0, 180)), min_size=1, max_size=40)      # delay to due, minutes
opens = st.lists(st.integers(-72 * 60, 240 * 60), max_size=6)


@dataclass
class Call:
    now: datetime
    due: list[Pending]
    admission: Admission
    history: list[HistoryEvent]  # before the call


def drive(rules: PressureRules, stream: list[Pending], tz: str, engagement: list[HistoryEvent],
          consent: dict[str, bool]) -> tuple[list[HistoryEvent], list[Call]]:
    """The engine's admit loop for one user."""
    queue = {p.pending_id: p for p in stream}
    history: list[HistoryEvent] = []
    calls: list[Call] = []
    while queue:
        now = min(p.due for p in queue.values())
        due = sorted((p for p in queue.values() if p.due <= now), key=lambda p: p.pending_id)
        seen = sorted([*history, *(e for e in engagement if e.ts <= now)], key=lambda h: h.ts)
        adm = rules.admit(due, make_context(now, history=seen, timezone=tz, consent=consent))
        ids = [p.pending_id for p in adm.send] + [p.pending_id for p, _, _ in adm.defer] \
            + [p.pending_id for p, _ in adm.drop]
        assert sorted(ids) == [p.pending_id for p in due], "each due pending gets exactly one outcome"
        calls.append(Call(now, due, adm, list(seen)))
        for p in due:
            del queue[p.pending_id]
        for p in adm.send:
            d = p.decision
            history.append(HistoryEvent(now, "sent", d.channel, p.pending_id, d.campaign, d.tag))
        for p, until, reason in adm.defer:
            event(f"deferred: {reason.split(':')[0]}")
            assert until > now and reason.startswith(REASON_PREFIXES)
            queue[p.pending_id] = Pending(p.pending_id, p.decision, until, p.created)
        for p, reason in adm.drop:
            event(f"dropped: {reason}")
            assert reason.startswith(REASON_PREFIXES)
    return history, calls


def period(cap: Cap, ts: datetime, zone: ZoneInfo):
    local = ts.astimezone(zone)
    return local.date() if cap.calendar == "day" else tuple(local.isocalendar())[:2]


def in_cap_window(cap: Cap, t: datetime, end: datetime, zone: ZoneInfo) -> bool:
    if cap.window_h is not None:
        return end - timedelta(hours=cap.window_h) < t <= end
    return t <= end and period(cap, t, zone) == period(cap, end, zone)


def engaged(rules: PressureRules, engagement: list[HistoryEvent], at: datetime) -> bool:
    since = at - timedelta(hours=rules.engaged_window_h)
    return sum(since < e.ts <= at for e in engagement) >= rules.engaged_min_interactions


def counted(rules: PressureRules, cap: Cap, sends: list[HistoryEvent]) -> list[HistoryEvent]:
    return [s for s in sends if cap.applies(s.channel, s.tag)
            and (rules.exempt_counts or s.tag not in rules.exempt_tags)]


def make_stream(start: datetime, raw) -> list[Pending]:
    out = []
    for i, (created_m, ch, prio, ev, tag, campaign, delay_m) in enumerate(raw):
        created = start + timedelta(minutes=created_m)
        d = Decision(action=ch, channel=ch, propensity=1.0, policy="t@1", campaign=campaign,
                     tag=tag, priority=prio, expected_value=ev)
        out.append(Pending(f"p{i:02d}", d, created + timedelta(minutes=delay_m), created))
    return out


def check_run(rules: PressureRules, stream: list[Pending], tz: str, engagement: list[HistoryEvent],
              consent: dict[str, bool]) -> None:
    """Drive the admit loop and check every rule on the result."""
    zone = ZoneInfo(tz)
    history, calls = drive(rules, stream, tz, engagement, consent)

    # 1. no cap exceeded in any window: check the window ending at every non-exempt send
    for i, s in enumerate(history):
        if s.tag in rules.exempt_tags:
            continue
        local = s.ts.astimezone(zone)
        hour = local.hour + local.minute / 60 + local.second / 3600
        # 2. no non-exempt send in quiet hours (user's local time)
        assert not any(q.applies(s.channel) and q.active(hour) for q in rules.quiet_hours), (s, hour)
        for cap in rules.caps:
            if cap.applies(s.channel, s.tag):
                window = [h for h in counted(rules, cap, history[: i + 1]) if in_cap_window(cap, h.ts, s.ts, zone)]
                assert len(window) <= cap.limit(engaged(rules, engagement, s.ts)), (cap, s)

    by_reason = {cap.reason: cap for cap in rules.caps}
    for call in calls:
        sends = [p for p in call.admission.send if p.decision.tag not in rules.exempt_tags]
        is_engaged = engaged(rules, engagement, call.now)
        for p, until, reason in call.admission.defer:
            if not reason.startswith("cap:"):
                continue
            cap = by_reason[reason]
            # 3. when a cap binds, what went instead in its scope is worth at least as much
            value = (p.decision.priority, p.decision.expected_value)
            for s in sends:
                if cap.applies(s.decision.channel, s.decision.tag):
                    assert (s.decision.priority, s.decision.expected_value) >= value
            # 4. the deferral is exact: full just before `until`, room at `until`
            so_far = counted(rules, cap, [h for h in call.history if h.event == "sent"]
                             + [HistoryEvent(call.now, "sent", s.decision.channel, tag=s.decision.tag)
                                for s in call.admission.send])
            limit = cap.limit(is_engaged)
            before = until - timedelta(seconds=1)
            assert sum(in_cap_window(cap, h.ts, before, zone) for h in so_far) >= limit
            assert sum(in_cap_window(cap, h.ts, until, zone) for h in so_far) < limit
        for p, reason in call.admission.drop:
            if reason == "no_consent":
                assert not consent[p.decision.channel]
        # 6. a cap that admits nothing (limit 0) drops what it applies to at once, with its
        # own reason — never a deferral, for any rule
        dropped = dict((p.pending_id, r) for p, r in call.admission.drop)
        for p in call.due:
            d = p.decision
            if d.tag in rules.exempt_tags or not consent[d.channel]:
                continue
            closed = [c for c in rules.caps
                      if c.applies(d.channel, d.tag) and c.limit(is_engaged) == 0]
            if closed:
                event("dropped by a zero cap")
                assert dropped.get(p.pending_id) == closed[0].reason, (p, closed)

    # 5. the log checker agrees: zero violations
    log = pd.DataFrame([{"ts": h.ts, "user_id": "u1", "event": "sent", "channel": h.channel,
                         "tag": h.tag} for h in history]
                       + [{"ts": e.ts, "user_id": "u1", "event": "opened", "channel": "email",
                           "tag": None} for e in engagement],
                       columns=["ts", "user_id", "event", "channel", "tag"])
    users = pd.DataFrame({"user_id": ["u1"], "timezone": [tz]})
    v = count_violations(log, users, rules)
    assert (v["cap_violations"], v["quiet_hour_violations"]) == (0, 0)
    assert v["sends_checked"] == len(history)


def _opens(start: datetime, minutes: list[int]) -> list[HistoryEvent]:
    return [HistoryEvent(start + timedelta(minutes=m), "opened", "email", campaign="a") for m in sorted(minutes)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=rule_sets, raw=messages, tz=st.sampled_from(TIMEZONES), start=st.sampled_from(STARTS),
       open_m=opens, sms_ok=st.booleans())
def test_admit_loop_never_violates_the_rules(rules, raw, tz, start, open_m, sms_ok):
    consent = {"email": True, "sms": sms_ok, "push": True}
    check_run(rules, make_stream(start, raw), tz, _opens(start, open_m), consent)


dense = st.lists(st.tuples(
    st.integers(0, 24 * 60), st.sampled_from(CHANNELS), st.integers(0, 2),
    st.sampled_from([0.0, 1.0, 2.5]), st.sampled_from(TAGS), st.sampled_from(["a", "b", None]),
    st.sampled_from([0, 0, 30])), min_size=4, max_size=40)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cap_list=st.lists(caps, min_size=1, max_size=3, unique_by=lambda c: c.reason), raw=dense,
       tz=st.sampled_from(TIMEZONES), start=st.sampled_from(STARTS), open_m=opens,
       exempt_counts=st.booleans())
def test_binding_caps_arbitrate_by_value(cap_list, raw, tz, start, open_m, exempt_counts):
    """Caps only, dense streams: caps bind often, so arbitration and exact deferral are hit."""
    rules = PressureRules(caps=tuple(cap_list), exempt_counts=exempt_counts, max_defer_h=240)
    check_run(rules, make_stream(start, raw), tz, _opens(start, open_m),
              {ch: True for ch in CHANNELS})


@settings(max_examples=60, deadline=None)
@given(rules=rule_sets, raw=messages, tz=st.sampled_from(TIMEZONES))
def test_checker_counts_violations_of_an_unruled_stream(rules, raw, tz):
    """Sending everything at once ignores the rules; the checker must flag exactly the sends
    the reference check flags."""
    start = STARTS[0]
    stream = make_stream(start, raw)
    zone = ZoneInfo(tz)
    sends = sorted((HistoryEvent(p.due, "sent", p.decision.channel, tag=p.decision.tag) for p in stream),
                   key=lambda h: h.ts)
    expected_cap = expected_quiet = 0
    for i, s in enumerate(sends):
        if s.tag in rules.exempt_tags:
            continue
        local = s.ts.astimezone(zone)
        expected_quiet += any(q.applies(s.channel) and q.active(local.hour + local.minute / 60)
                              for q in rules.quiet_hours)
        for cap in rules.caps:
            if cap.applies(s.channel, s.tag):
                n = sum(in_cap_window(cap, h.ts, s.ts, zone) for h in counted(rules, cap, sends[: i + 1]))
                expected_cap += n > cap.max
    log = pd.DataFrame([{"ts": h.ts, "user_id": "u", "event": "sent", "channel": h.channel, "tag": h.tag}
                        for h in sends])
    v = count_violations(log, pd.DataFrame({"user_id": ["u"], "timezone": [tz]}), rules)
    assert (v["cap_violations"], v["quiet_hour_violations"]) == (expected_cap, expected_quiet)
