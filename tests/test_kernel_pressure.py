"""Differential tests: the numba admission kernel (:mod:`omnisim.policies._kernel_pressure`)
against :meth:`PressureRules.admit` — the default rules and random rule sets using every
feature (rolling and calendar caps with channel / tag scopes and engaged_max, quiet hours
defer / drop on channels, dedup, escalations, exempt tags and exempt_counts, max_defer_h,
channel_priority), 1–4 due pendings, histories with sends on the rules' window boundaries,
zones with DST changes and half-hour offsets, starts off the whole hour. Every output is
compared: action, defer instant (to the microsecond) and reason."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from omnisim.policies._kernel_codes import CH, EV, Strings
from omnisim.policies._kernel_pressure import (
    CAP_MAX, DEFER, DROP, Q_MINUTE, SEND, CompiledRules, _seq_less, admit_kernel, compile_rules,
    scratch_size,
)
from omnisim.policies._kernel_time import utc_offset_table
from omnisim.policies.base import Context, Decision, HistoryEvent, Trigger
from omnisim.policies.pressure import (
    Cap, Escalation, Pending, PressureRules, QuietHours, _calendar_window, default_rules,
)

UTC = timezone.utc
ZONES = ("UTC", "Europe/Paris", "America/New_York", "America/St_Johns", "Australia/Lord_Howe",
         "Asia/Kolkata", "America/Santiago", "Asia/Beirut")
#: starts just before DST changes (US, EU, southern hemisphere / Chile, Lebanon), off the hour
STARTS = (
    datetime(2026, 3, 5, 13, 17, 23, 123456, tzinfo=UTC),
    datetime(2026, 3, 26, 21, 40, 0, tzinfo=UTC),
    datetime(2026, 4, 1, 5, 30, 0, 500000, tzinfo=UTC),
    datetime(2026, 9, 2, 0, 0, 1, tzinfo=UTC),
    datetime(2026, 10, 22, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2026, 10, 29, 18, 0, 0, tzinfo=UTC),
)
HORIZON_H = 24 * 10.0
MSG = ("email", "sms", "push")
TAGS = ("marketing", "transactional", "promo", None)
CAMPAIGNS = ("c1", "c2", "c1", None)
HIST_EVENTS = ("sent", "sent", "sent", "opened", "clicked", "unsubscribed")
US = timedelta(microseconds=1)

_TABLES = {s: utc_offset_table(s, HORIZON_H, ZONES) for s in STARTS}


# -- random rules ------------------------------------------------------------------------------

def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def random_rules(rng: np.random.Generator) -> PressureRules:
    caps = []
    for _ in range(int(rng.integers(0, 5))):
        if rng.random() < 0.5:
            kw = {"window_h": float(_pick(rng, (1.0, 6.0, 24.0, 36.0, 168.0, 0.5, 2.25, 72.0)))}
        else:
            kw = {"calendar": _pick(rng, ("day", "week"))}
        caps.append(Cap(
            max=int(rng.choice([0, 1, 1, 2, 2, 3], p=[0.04, 0.32, 0.16, 0.24, 0.12, 0.12])),
            channel=_pick(rng, (None, None, *MSG)),
            tag=_pick(rng, (None, None, None, "marketing", "promo", "transactional")),
            engaged_max=(None if rng.random() < 0.6
                         else int(rng.choice([0, 1, 2, 4], p=[0.1, 0.3, 0.3, 0.3]))),
            **kw))
    quiet = []
    for _ in range(int(rng.integers(0, 3))):
        a, b = (float(_pick(rng, (0.0, 1.0, 6.0, 8.0, 9.5, 21.0, 22.25, 23.0, 23.995, 2.5)))
                if rng.random() < 0.7 else float(rng.integers(0, 96)) / 4 for _ in range(2))
        quiet.append(QuietHours(
            start_h=a, end_h=b, action=_pick(rng, ("defer", "defer", "drop")),
            channels=None if rng.random() < 0.5 else tuple(
                c for c in MSG if rng.random() < 0.5)))
    escs = []
    for _ in range(int(rng.choice([0, 0, 1, 2]))):
        ch, after = rng.choice(3, 2, replace=False)
        escs.append(Escalation(channel=MSG[ch], after=MSG[after],
                               wait_h=float(_pick(rng, (0.0, 1.0, 4.0, 24.0, 2.5))),
                               lookback_h=float(_pick(rng, (72.0, 24.0, 168.0, 0.0)))))
    prio = list(MSG)
    rng.shuffle(prio)
    mode = rng.random()
    if mode < 0.35:  # caps only: they are checked last, so let more pendings reach them
        quiet, escs = [], []
        caps.append(Cap(max=int(rng.integers(1, 4)), window_h=float(_pick(rng, (6.0, 24.0, 36.0, 168.0))),
                        channel=_pick(rng, (None, *MSG))))
    elif mode < 0.55:  # escalations without dedup (dedup would drop the escalated sends first)
        escs.append(Escalation(channel="sms", after="email", wait_h=float(_pick(rng, (4.0, 24.0))),
                               lookback_h=float(_pick(rng, (72.0, 168.0)))))
    return PressureRules(
        caps=tuple(caps), quiet_hours=tuple(quiet), escalations=tuple(escs),
        dedup_h=(None if mode < 0.55 or rng.random() < 0.3
                 else float(_pick(rng, (0.0, 6.0, 24.0, 48.0)))),
        exempt_tags=tuple(t for t in ("transactional", "promo") if rng.random() < 0.6),
        exempt_counts=bool(rng.random() < 0.3),
        max_defer_h=float(_pick(rng, (0.0, 1.0, 12.0, 72.0, 200.0))),
        engaged_min_interactions=int(rng.integers(0, 4)),
        engaged_window_h=float(_pick(rng, (24.0, 168.0, 720.0))),
        channel_priority=tuple(prio[:int(rng.integers(0, 4))]))


# -- random cases ------------------------------------------------------------------------------

def _boundaries(rules: PressureRules, now: datetime, zone: ZoneInfo) -> list[datetime]:
    """Instants on the rules' boundaries at ``now``: rolling / dedup / lookback / engagement
    window starts, escalation waits, calendar period starts, now itself."""
    out = [now]
    for h in ([c.window_h for c in rules.caps if c.window_h is not None]
              + [rules.dedup_h or 0.0, rules.engaged_window_h]
              + [e.lookback_h for e in rules.escalations] + [e.wait_h for e in rules.escalations]):
        out.append(now - timedelta(hours=h))
    for cal in ("day", "week"):
        start, _ = _calendar_window(now.astimezone(zone).date(), cal, zone)
        out.append(start)
        out.append(start - US)
    return out


def make_case(rng: np.random.Generator, rules: PressureRules, strings: Strings):
    """One random admission: (python args, kernel args)."""
    start = STARTS[int(rng.integers(len(STARTS)))]
    zi = int(rng.integers(len(ZONES)))
    zone_name = ZONES[zi]
    zone = ZoneInfo(zone_name)
    changes, offsets = _TABLES[start]
    now_us = int(rng.integers(0, int(HORIZON_H * 3600))) * 1_000_000
    now = start + now_us * US
    # history: random times within 35 days, plus some on the rules' boundaries
    bounds = _boundaries(rules, now, zone)
    n_h = int(rng.integers(0, 22))
    ts_us = []
    for _ in range(n_h):
        u = rng.random()
        if u < 0.25:
            ts_us.append((_pick(rng, bounds) - start) // US)
        elif u < 0.65:  # recent: caps, dedup and escalations bind
            ts_us.append(now_us - int(rng.integers(0, 3 * 86400)) * 1_000_000)
        else:
            ts_us.append(now_us - int(rng.integers(0, 35 * 86400)) * 1_000_000)
    ts_us.sort()
    history, rows = [], []
    for t in ts_us:
        ev = _pick(rng, HIST_EVENTS)
        if ev == "unsubscribed" and rng.random() < 0.8:
            ev = "sent"
        ch = _pick(rng, MSG)
        camp = _pick(rng, CAMPAIGNS)
        tag = _pick(rng, TAGS) if ev == "sent" else _pick(rng, (None, "marketing"))
        history.append(HistoryEvent(ts=start + t * US, event=ev, channel=ch, campaign=camp, tag=tag))
        rows.append((t / 3.6e9, EV[ev], CH[ch], strings.code(camp), strings.code(tag)))
    consent = {c: bool(rng.random() < 0.93) for c in MSG}
    ctx = Context(user_id="u1", now=now, timezone=zone_name, traits={}, consent=consent,
                  history=history, trigger=Trigger(kind="visit", ts=now))
    # pendings
    n_p = int(rng.choice([1, 1, 2, 3, 4]))
    seqs = rng.choice(130, n_p, replace=False)
    created_pool = [now_us - int(rng.integers(0, 90 * 3600)) * 1_000_000 for _ in range(2)]
    pendings, prow = [], []
    for k in range(n_p):
        ch = "none" if rng.random() < 0.06 else _pick(rng, MSG)
        camp = _pick(rng, CAMPAIGNS)
        tag = _pick(rng, ("marketing", "marketing", "transactional", "promo"))
        meta = _pick(rng, ({}, {}, {"dedup": False}, {"dedup": True}))
        d = Decision(action=ch, channel=ch, propensity=1.0, policy="p@1", campaign=camp, tag=tag,
                     priority=int(_pick(rng, (0, 0, 1, 2))),
                     expected_value=float(_pick(rng, (0.0, 0.0, 1.0, 2.5))),
                     exempt=bool(rng.random() < 0.08), meta=meta)
        created = _pick(rng, created_pool) if rng.random() < 0.6 else now_us
        pendings.append(Pending(pending_id=f"u1-p{seqs[k]}", decision=d, due=now,
                                created=start + created * US))
        prow.append((CH[ch], strings.code(tag), strings.code(camp), d.priority, d.expected_value,
                     d.exempt, bool(meta.get("dedup", True)), created / 3.6e9, int(seqs[k])))
    cols = list(zip(*prow))
    p_args = (np.array(cols[0], np.int8), np.array(cols[1], np.int32), np.array(cols[2], np.int32),
              np.array(cols[3], np.int64), np.array(cols[4], np.float64), np.array(cols[5], np.bool_),
              np.array(cols[6], np.bool_), np.array(cols[7], np.float64), np.array(cols[8], np.int64),
              n_p)
    hc = list(zip(*rows)) if rows else [[]] * 5
    h_args = (np.array(hc[0], np.float64), np.array(hc[1], np.int8), np.array(hc[2], np.int8),
              np.array(hc[3], np.int32), np.array(hc[4], np.int32), n_h)
    k_args = (*p_args, *h_args, now_us / 3.6e9, np.array([consent[c] for c in MSG]),
              changes[zi], offsets[zi], start.date().weekday())
    return start, pendings, ctx, k_args


def python_result(rules: PressureRules, pendings, ctx) -> list[tuple[int, datetime | None, str | None]]:
    adm = rules.admit(pendings, ctx)
    out: dict[str, tuple[int, datetime | None, str | None]] = {}
    for p in adm.send:
        out[p.pending_id] = (SEND, None, None)
    for p, until, reason in adm.defer:
        out[p.pending_id] = (DEFER, until, reason)
    for p, reason in adm.drop:
        out[p.pending_id] = (DROP, None, reason)
    assert len(out) == len(pendings)
    return [out[p.pending_id] for p in pendings]


def kernel_result(cr: CompiledRules, strings: Strings, start: datetime, k_args):
    n_p = k_args[9]
    action = np.zeros(n_p, np.int8)
    until = np.zeros(n_p, np.float64)
    reason = np.zeros(n_p, np.int32)
    admit_kernel(cr, *k_args, action, until, reason, np.empty(scratch_size(cr, n_p), np.int64))
    out = []
    for k in range(n_p):
        u = None
        if action[k] == DEFER:
            u = start + timedelta(microseconds=round(until[k] * 3.6e9))
        else:
            assert np.isnan(until[k])
        assert (reason[k] == -1) == (action[k] == SEND)
        out.append((int(action[k]), u, strings.value(int(reason[k]))))
    return out


def run_cases(rule_source, n: int, seed: int, perturb=None) -> tuple[int, int, list]:
    """(cases, mismatches, first mismatches) over ``n`` cases; ``rule_source(rng)`` gives
    the rules (``perturb(cr)``: compare against a modified compiled copy)."""
    rng = np.random.default_rng(seed)
    bad = []
    outcomes = set()
    rules = cr = strings = None
    for i in range(n):
        if rules is None or i % 4 == 0:
            rules = rule_source(rng)
            strings = Strings()
            cr = compile_rules(rules, strings)
            if perturb is not None:
                cr = perturb(cr)
        start, pendings, ctx, k_args = make_case(rng, rules, strings)
        exp = python_result(rules, pendings, ctx)
        got = kernel_result(cr, strings, start, k_args)
        outcomes.update((a, r) for a, _, r in exp)
        if exp != got:
            bad.append((rules, ctx.now, ctx.timezone, pendings, exp, got))
    return n, len(bad), bad[:3], outcomes


def test_default_rules_match_python() -> None:
    n, nbad, bad, outcomes = run_cases(lambda rng: default_rules(), 2500, seed=1)
    assert nbad == 0, bad
    reasons = {r for _, r in outcomes}
    assert {"quiet_hours", "dedup", "cap:all:cal-day", "cap:all:7d", "cap:sms:7d",
            "no_consent", "expired"} <= reasons, reasons
    assert {SEND, DEFER, DROP} <= {a for a, _ in outcomes}


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_random_rules_match_python(seed: int) -> None:
    n, nbad, bad, outcomes = run_cases(random_rules, 2000, seed=seed)
    assert nbad == 0, bad
    reasons = {r for _, r in outcomes}
    assert {"quiet_hours", "dedup", "priority", "no_consent", "no_message", "expired"} <= reasons
    assert any(r and r.startswith("cap:") and "cal-week" in r for r in reasons)
    assert any(r and "tag=" in r for r in reasons)


def test_negative_perturbed_compiled_copy_is_caught() -> None:
    """The comparison finds a difference when the compiled copy alone is changed: one more
    allowed send on the default rolling 7-day cap, or quiet hours ending an hour later."""
    def more(cr: CompiledRules) -> CompiledRules:
        caps = cr.caps.copy()
        caps[1, CAP_MAX] += 1
        return cr._replace(caps=caps)

    def later(cr: CompiledRules) -> CompiledRules:
        quiet = cr.quiet.copy()
        quiet[:, Q_MINUTE] = (quiet[:, Q_MINUTE] + 60) % 1440
        return cr._replace(quiet=quiet)

    for perturb in (more, later):
        _, nbad, _, _ = run_cases(lambda rng: default_rules(), 400, seed=2, perturb=perturb)
        assert nbad > 0


def test_pending_id_order_is_lexicographic() -> None:
    """Equal value, channel and created: ``u1-p10`` goes before ``u1-p9`` (string order),
    so under a 1-per-day cap p10 is sent and p9 deferred."""
    rules = PressureRules(caps=(Cap(max=1, calendar="day"),), exempt_tags=())
    strings = Strings()
    cr = compile_rules(rules, strings)
    start = STARTS[0]
    changes, offsets = _TABLES[start]
    now = start + timedelta(hours=30)
    ctx = Context("u1", now, "UTC", {}, {c: True for c in MSG}, [], Trigger("visit", now))
    d = Decision(action="email", channel="email", propensity=1.0, policy="p@1", campaign="c1")
    pend = [Pending(f"u1-p{s}", d, now, now) for s in (9, 10)]
    exp = python_result(rules, pend, ctx)
    assert exp[0][0] == DEFER and exp[1][0] == SEND
    k_args = (np.array([0, 0], np.int8), np.full(2, strings.code("marketing"), np.int32),
              np.full(2, strings.code("c1"), np.int32), np.zeros(2, np.int64), np.zeros(2),
              np.zeros(2, np.bool_), np.ones(2, np.bool_), np.full(2, 30.0), np.array([9, 10]), 2,
              np.zeros(0), np.zeros(0, np.int8), np.zeros(0, np.int8), np.zeros(0, np.int32),
              np.zeros(0, np.int32), 0, 30.0, np.ones(3, np.bool_), changes[0], offsets[0],
              start.date().weekday())
    assert kernel_result(cr, strings, start, k_args) == exp


def test_seq_order_is_string_order() -> None:
    rng = np.random.default_rng(3)
    values = [0, 1, 9, 10, 11, 19, 100, 101, 2, 20, 99, 1000, -1, -10, -2, 123456789]
    values += [int(v) for v in rng.integers(-10**6, 10**7, 300)]
    for a in values:
        for b in values[:40]:
            assert _seq_less(a, b) == (str(a) < str(b)), (a, b)


def test_subclass_is_not_compiled() -> None:
    class Custom(PressureRules):
        pass

    assert compile_rules(Custom(), Strings()) is None
