"""Differential tests: the compiled journeys (omnisim/policies/_kernel_journey.py) give the
decisions of the Python ``Journey.decide`` / ``JourneySet.decide`` (the specification), every
logged field and the follow-up compared, on the built-in journeys, sets of journeys and
random journeys, with random histories, behaviour triggers and chains of ``journey_step``
triggers built from the previous decision's follow-up.

Steps with ``at_local_hour`` (the built-ins have some; random journeys draw them, minute
rounding and 24:00 included) are due at ``Step.due``: the follow-up instant is compared with
Python's to the microsecond, in zones with DST and half-hour changes, with many triggers
shortly before a change so that waits and follow-ups cross it."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest

from omnisim.log import CHANNELS as LOG_CHANNELS
from omnisim.policies._kernel_codes import CH, EV, JOURNEY_STEP, TRIGGER, Strings
from omnisim.policies._kernel_journey import (
    F_EXPECTED_VALUE, F_FU_AT, F_FU_ENTERED, F_FU_STEP_AT, F_PROPENSITY, N_OUT_FLOAT, N_OUT_INT,
    O_CAMPAIGN, O_CH, O_DEDUP, O_FU_JOURNEY, O_FU_STEP, O_POLICY, O_PRIORITY, O_REASON, O_STEP,
    O_TAG, CI_NEGATE, SI_AT_MINUTE, SI_PRIORITY, CompiledJourneys, compile_journeys, holdout_flags,
    journey_decide,
)
from omnisim.policies._kernel_time import utc_offset_table
from omnisim.policies.base import (
    BEHAVIOUR_TRIGGERS, CHANNELS, Context, HistoryEvent, Trigger, next_local_hour,
)
from omnisim.policies.journeys import (
    Condition, Journey, JourneySet, Step, builtin_journeys, load_journey,
)

START = datetime(2025, 3, 29, 23, 17, 41, tzinfo=timezone.utc)  # off the hour, near a DST change
ZONES = ("UTC", "Europe/Paris", "America/New_York", "America/St_Johns", "Australia/Lord_Howe",
         "Asia/Kolkata", "America/Santiago")
#: zones whose offset changes (DST; Lord Howe by half an hour, St John's at a half-hour offset)
DST_ZONES = ("America/New_York", "Europe/Paris", "America/St_Johns", "Australia/Lord_Howe",
             "America/Santiago")
_US = timedelta(microseconds=1)
_RNG = np.random.default_rng(0)  # passed to decide; journeys draw nothing
#: the zones' offset tables over a year after START (the kernel's ``tz_changes, tz_offsets``)
TZ_CHANGES, TZ_OFFSETS = utc_offset_table(START, 8900.0, ZONES)
#: hours since START of each DST zone's offset changes the random triggers gather around
CHANGES = {z: [float(c) for c in TZ_CHANGES[ZONES.index(z)] if 150.0 <= c <= 8500.0]
           for z in DST_ZONES}
#: at_local_hour values: minute rounding (10.0166 -> 10:01, 23.99 -> 23:59, 23.995 -> 24:00
#: = 0:00) and the local times DST skips or repeats (2:00-3:00; Lord Howe 1:30-2:30,
#: Santiago 0:00 / 23:00)
LOCAL_HOURS = (0.0, 9.5, 23.99, 10.0166, 23.995, 2.0, 2.5, 1.75, 1.5, 2.25, 23.5, 0.5, 10.0)


def dt(h: float) -> datetime:
    """The engines' hours -> datetime."""
    return START + timedelta(microseconds=round(h * 3.6e9))


def us(d: datetime) -> int:
    return (d - START) // _US


def h_of(seconds: float) -> float:
    return seconds / 3600.0


def tz_row(zone: str) -> tuple[np.ndarray, np.ndarray]:
    """The kernel's zone row of ``zone``."""
    z = ZONES.index(zone)
    return TZ_CHANGES[z], TZ_OFFSETS[z]


# -- a user's case: history rows, consent, holdout ------------------------------------------

class Case:
    """One user's state, kept both as Python ``HistoryEvent`` rows and as kernel arrays."""

    def __init__(self, user_id: str, rows: list[tuple[float, str, str, str | None, str | None]],
                 consent: np.ndarray, zone: str, fine: bool = False) -> None:
        self.user_id, self.consent, self.zone, self.fine = user_id, consent, zone, fine
        self.rows = sorted(rows, key=lambda r: round(r[0] * 3.6e9))  # stable: ties keep order

    def add(self, row: tuple[float, str, str, str | None, str | None]) -> None:
        self.rows.append(row)
        self.rows.sort(key=lambda r: round(r[0] * 3.6e9))

    def context(self, now_h: float, trigger: Trigger) -> Context:
        hist = [HistoryEvent(ts=dt(t), event=e, channel=c, campaign=camp, step=step,
                             tag="marketing" if e == "sent" else None)
                for t, e, c, camp, step in self.rows]
        consent = {ch: bool(self.consent[i]) for i, ch in enumerate(CHANNELS)}
        return Context(self.user_id, dt(now_h), self.zone, {}, consent, hist, trigger)

    def arrays(self, strings: Strings) -> tuple[np.ndarray, ...]:
        n = len(self.rows)
        pad = n + 3  # the kernel reads the first n_h rows only
        h_t = np.full(pad, np.inf)
        h_ev = np.zeros(pad, np.int8)
        h_ch = np.zeros(pad, np.int8)
        h_camp = np.full(pad, 999, np.int32)
        h_tag = np.full(pad, -1, np.int32)
        h_step = np.full(pad, 999, np.int32)
        for i, (t, e, c, camp, step) in enumerate(self.rows):
            h_t[i], h_ev[i], h_ch[i] = t, EV[e], CH[c]
            h_camp[i], h_step[i] = strings.code(camp), strings.code(step)
            h_tag[i] = strings.code("marketing" if e == "sent" else None)
        return h_t, h_ev, h_ch, h_camp, h_tag, h_step

    def tz(self) -> tuple[np.ndarray, np.ndarray]:
        return tz_row(self.zone)


def py_rows(decisions: list[Any], journeys: list[Journey], strings: Strings) -> list[tuple]:
    """Python decisions as the kernel's output fields (instants in microseconds)."""
    index = {j.journey: k for k, j in enumerate(journeys)}
    out = []
    for d in decisions:
        assert d.action == d.channel and not d.exempt and d.send_at is None
        assert len(d.follow_ups) <= 1
        fu: tuple = (-1, -1, None, None, None)
        if d.follow_ups:
            f = d.follow_ups[0]
            jj = journeys[index[f.payload["journey"]]]
            k = [s.id for s in jj.steps].index(f.payload["step"])
            fu = (k, index[f.payload["journey"]], us(f.at),
                  us(datetime.fromisoformat(f.payload["entered_at"])),
                  us(datetime.fromisoformat(f.payload["step_at"])))
        out.append((CH[d.channel], strings.code(d.policy), strings.code(d.campaign),
                    strings.code(d.step), strings.code(d.reason), strings.code(d.tag),
                    int(d.priority), int(bool(d.meta.get("dedup", True))), fu[0], fu[1],
                    float(d.propensity), float(d.expected_value), fu[2], fu[3], fu[4]))
    return out


def kernel_rows(out_i: np.ndarray, out_f: np.ndarray, n: int) -> list[tuple]:
    def t(x: float) -> int | None:
        return None if np.isnan(x) else round(float(x) * 3.6e9)

    return [(int(out_i[r, O_CH]), int(out_i[r, O_POLICY]), int(out_i[r, O_CAMPAIGN]),
             int(out_i[r, O_STEP]), int(out_i[r, O_REASON]), int(out_i[r, O_TAG]),
             int(out_i[r, O_PRIORITY]), int(out_i[r, O_DEDUP]), int(out_i[r, O_FU_STEP]),
             int(out_i[r, O_FU_JOURNEY]), float(out_f[r, F_PROPENSITY]),
             float(out_f[r, F_EXPECTED_VALUE]), t(out_f[r, F_FU_AT]), t(out_f[r, F_FU_ENTERED]),
             t(out_f[r, F_FU_STEP_AT])) for r in range(n)]


class Checker:
    """Runs a policy and its compiled copy on the same cases; collects mismatches."""

    def __init__(self, policy: Journey | JourneySet, cj: CompiledJourneys | None = None,
                 strings: Strings | None = None, zone: str | None = None) -> None:
        self.policy = policy
        self.zone = zone  # the kernel gets this zone's row, not the case's (a negative check)
        self.journeys = [policy] if isinstance(policy, Journey) else list(policy.journeys)
        self.strings = strings or Strings()
        self.cj = cj if cj is not None else compile_journeys(policy, self.strings)
        assert self.cj is not None
        J = len(self.journeys)
        self.out_i = np.zeros((J, N_OUT_INT), np.int64)
        self.out_f = np.zeros((J, N_OUT_FLOAT))
        self.mismatches: list[str] = []
        self.diffs: list[tuple[list, list]] = []  # (python, kernel) rows of each mismatch
        self.n_checked = 0
        self.n_decisions = 0

    def decide(self, case: Case, now_h: float, kind: str, fu: tuple | None = None,
               payload: dict | None = None) -> tuple[list, list]:
        """Both answers to one trigger; ``fu`` = (journey, step, entered_h, step_at_h).
        Returns the Python decisions and the kernel's follow-ups as it outputs them
        ``(journey, step, at_h, entered_h, step_at_h)``."""
        trig = Trigger(kind, dt(now_h), payload or {})
        ctx = case.context(now_h, trig)
        py = self.policy.decide(ctx, _RNG)
        batch = self.policy.decide_batch([ctx], _RNG)[0]
        assert batch == py  # the spec's two paths agree
        arrays = case.arrays(self.strings)
        hold = holdout_flags(self.cj, [case.user_id])[0]
        fj, fs, fe, fsa = fu if fu is not None else (-1, -1, np.nan, np.nan)
        tz = case.tz() if self.zone is None else tz_row(self.zone)
        n = journey_decide(self.cj, TRIGGER[kind], fj, fs, fe, fsa, now_h, *arrays,
                           len(case.rows), case.consent, hold, self.out_i, self.out_f, *tz)
        want, got = py_rows(py, self.journeys, self.strings), kernel_rows(self.out_i, self.out_f, n)
        self.n_checked += 1
        self.n_decisions += len(got)
        if want != got:
            self.diffs.append((want, got))
            self.mismatches.append(f"{kind} at {now_h}: python {want} kernel {got} "
                                   f"history {case.rows}")
        raw = [(int(self.out_i[r, O_FU_JOURNEY]), int(self.out_i[r, O_FU_STEP]),
                float(self.out_f[r, F_FU_AT]), float(self.out_f[r, F_FU_ENTERED]),
                float(self.out_f[r, F_FU_STEP_AT])) for r in range(n)]
        return py, raw

    def chain(self, case: Case, now_h: float, kind: str, rng: np.random.Generator) -> None:
        """A behaviour trigger, then every follow-up in time order, the history growing with
        the journeys' own rows (``decided``, ``sent``) and random events in between."""
        py, got = self.decide(case, now_h, kind)
        todo: list[tuple[int, int, float, Any, tuple]] = []
        seq = 0
        last_h = now_h
        for d, g in zip(py, got):
            todo.append((round(now_h * 3.6e9), seq, now_h, d, g))
            seq += 1
        while todo:
            todo.sort(key=lambda x: (x[0], x[1]))
            _, _, t_h, d, g = todo.pop(0)
            if t_h > last_h:
                noise(case, rng, last_h, t_h, self.journeys)
                last_h = t_h
            py2, got2 = [d], [g]
            if d is None:  # a follow-up due now: the kernel's own follow-up, Python's payload
                f, g = g
                py2, got2 = self.decide(case, t_h, "journey_step", (g[0], g[1], g[3], g[4]),
                                        dict(f.payload))
            for d2, g2 in zip(py2, got2):
                case.add((t_h, "decided", d2.channel, d2.campaign, d2.step))
                if d2.channel != "none" and rng.random() < 0.9:
                    case.add((t_h, "sent", d2.channel, d2.campaign, d2.step))
                if d2.follow_ups:
                    f = d2.follow_ups[0]
                    at_h = g2[2]  # the kernel's F_FU_AT (compared: it is f.at)
                    if np.isnan(at_h):  # a mismatch (recorded): go on with Python's
                        at_h = us(f.at) / 3.6e9
                    todo.append((us(f.at), seq, at_h, None, (f, g2)))
                    seq += 1


# -- random inputs ---------------------------------------------------------------------------

MESSAGE_EVENTS = ("sent", "delivered", "opened", "clicked", "bounced", "unsubscribed")
BEHAVIOUR_EVENTS = ("product_view", "visit", "cart_add", "cart_abandon", "purchase", "signup")
COND_EVENTS = ("opened", "clicked", "sent", "delivered", "bounced", "product_view", "visit",
               "cart_add", "purchase", "decided")


def noise(case: Case, rng: np.random.Generator, lo_h: float, hi_h: float,
          journeys: list[Journey]) -> None:
    """A few random events in [lo_h, hi_h] (some exactly at the ends), own and foreign; on the
    second grid unless ``case.fine``."""
    for _ in range(int(rng.integers(0, 4))):
        r = rng.random()
        if r < 0.15:
            t = lo_h
        elif r < 0.25:
            t = hi_h
        elif case.fine:
            t = lo_h + (hi_h - lo_h) * rng.random()
        else:
            lo, hi = round(lo_h * 3600), round(hi_h * 3600)
            t = h_of(int(rng.integers(lo, hi + 1))) if hi > lo else lo_h
        case.add(random_row(rng, min(max(t, lo_h), hi_h), journeys))


def random_row(rng: np.random.Generator, t: float, journeys: list[Journey]) -> tuple:
    j = journeys[int(rng.integers(len(journeys)))]
    camp = [j.journey, j.journey, "other_campaign", None][int(rng.integers(4))]
    steps = ["entry", j.steps[0].id, j.steps[-1].id, None, "foreign_step"]
    steps += [s.id for s in j.steps]
    r = rng.random()
    if r < 0.3:
        e = "decided"
        ch = LOG_CHANNELS[int(rng.integers(5))]
    elif r < 0.6:
        e = MESSAGE_EVENTS[int(rng.integers(len(MESSAGE_EVENTS)))]
        ch = CHANNELS[int(rng.integers(3))]
    else:
        e = BEHAVIOUR_EVENTS[int(rng.integers(len(BEHAVIOUR_EVENTS)))]
        ch = "web"
        camp = None if rng.random() < 0.8 else camp
    step = steps[int(rng.integers(len(steps)))] if e in ("decided", "sent") or rng.random() < 0.2 else None
    return (t, e, ch, camp, step)


def random_case(rng: np.random.Generator, now_s: float, journeys: list[Journey],
                fine: bool = False, zone: str | None = None) -> Case:
    """Random history before ``now_s`` (seconds since start; whole seconds unless ``fine``):
    noise, whole runs of the journeys' own rows and rows at the instants the re-entry rules
    compare with (waits, cooldowns)."""
    rows = []
    span = max(max(j.cooldown_h, j.longest_wait_h) for j in journeys)
    specials = [0.0]
    for j in journeys:
        specials += [j.longest_wait_h, j.cooldown_h, j.span_h, j.steps[0].delay_h]
    horizon_s = int(min(35 * 24, 2.5 * span + 12) * 3600)
    sec = (lambda x: x) if fine else round  # durations in seconds on the grid or not

    def when() -> float:  # seconds
        if rng.random() < 0.3:
            off = sec(specials[int(rng.integers(len(specials)))] * 3600) + int(rng.integers(-2, 3))
        else:
            off = int(rng.integers(0, horizon_s)) + (rng.random() if fine else 0)
        return now_s - max(0, off)

    for _ in range(int(rng.integers(0, 12))):
        rows.append(random_row(rng, h_of(when()), journeys))
    for _ in range(int(rng.integers(0, 3))):  # runs: entry [wait], steps with their delays
        j = journeys[int(rng.integers(len(journeys)))]
        t = when()
        steps = list(j.steps)
        if steps[0].delay_h > 0 and rng.random() < 0.8:
            rows.append((h_of(t), "decided", "none", j.journey, "entry"))
            t += sec(steps[0].delay_h * 3600)
        for k, s in enumerate(steps[: int(rng.integers(1, len(steps) + 1))]):
            if k > 0:
                t += sec(s.delay_h * 3600) + (int(rng.integers(0, 7200)) if rng.random() < 0.2 else 0)
            if t > now_s:
                break
            step = s.id if rng.random() < 0.85 else [None, "foreign_step"][int(rng.integers(2))]
            ch = s.channel if s.channel != "none" else "none"
            rows.append((h_of(t), "decided", ch, j.journey, step))
            if ch != "none" and rng.random() < 0.8:
                rows.append((h_of(t), "sent", ch, j.journey, step))
                if rng.random() < 0.4 and t + 600 <= now_s:
                    rows.append((h_of(t + 600), ["opened", "clicked"][int(rng.integers(2))], ch,
                                 j.journey, step))
    for _ in range(int(rng.integers(0, 3))):  # own rows a longest wait (+-1 s) apart
        j = journeys[int(rng.integers(len(journeys)))]
        t1 = when()
        t0 = t1 - sec(j.longest_wait_h * 3600) + int(rng.integers(-1, 2))
        steps = [None, "foreign_step", "entry", j.steps[0].id, j.steps[-1].id]
        rows.append((h_of(t0), ["decided", "sent"][int(rng.integers(2))], "email", j.journey,
                     steps[int(rng.integers(len(steps)))]))
        rows.append((h_of(t1), "decided", "none", j.journey, steps[int(rng.integers(len(steps)))]))
    consent = rng.random(3) < 0.75
    user = f"u{int(rng.integers(0, 40))}"
    if zone is None:
        zone = ZONES[int(rng.integers(len(ZONES)))]
    return Case(user, rows, consent, zone, fine)


def random_journey(rng: np.random.Generator, name: str, fine: bool = False,
                   local: bool = True) -> Journey:
    """A random valid journey; ``fine``: some delays off the whole-second grid; ``local``:
    some steps with ``at_local_hour`` (:data:`LOCAL_HOURS`, whole minutes or anywhere)."""
    n = int(rng.integers(1, 6))
    ids = [f"s{i}" for i in range(n)]
    delays = (0.0, 0.5, 1.0, 2.0, 4.0, 12.0, 24.0, 48.0, 72.0, 1.25)
    steps = []
    for i in range(n):
        ch = ["email", "sms", "push", "none"][int(rng.integers(4))]
        if fine and rng.random() < 0.4:
            delay = float(rng.uniform(0.0, 72.0))
        elif rng.random() < 0.3:
            delay = h_of(int(rng.integers(1, 72 * 3600)))
        else:
            delay = delays[int(rng.integers(len(delays)))]
        if i == 0 and rng.random() < 0.5:
            delay = 0.0
        at_hour = None
        if local and rng.random() < 0.35:
            r = rng.random()
            at_hour = LOCAL_HOURS[int(rng.integers(len(LOCAL_HOURS)))] if r < 0.6 else \
                float(rng.integers(0, 1440)) / 60.0 if r < 0.8 else float(rng.uniform(0.0, 24.0))
        when = []
        for _ in range(int(rng.integers(0, 4))):
            when.append(Condition(
                event=COND_EVENTS[int(rng.integers(len(COND_EVENTS)))],
                since=["entry", "step"][int(rng.integers(2))],
                channel=[None, None, "email", "sms", "push", "web", "none"][int(rng.integers(7))],
                own=[None, None, True, False][int(rng.integers(4))],
                negate=bool(rng.random() < 0.5)))
        later = ids[i + 1:]
        goto = lambda: ([None, None, "exit"] + later)[int(rng.integers(3 + len(later)))]  # noqa: E731
        fallback, unreachable = None, False
        if ch != "none" and rng.random() < 0.6:
            others = [c for c in CHANNELS if c != ch]
            rng.shuffle(others)
            fallback = tuple(others[: int(rng.integers(0, 3))])
            unreachable = bool(fallback) and rng.random() < 0.7
        steps.append(Step(id=ids[i], channel=ch, delay_h=delay, at_local_hour=at_hour,
                          when=tuple(when), next=goto(),
                          otherwise=goto(), tag=["marketing", "transactional"][int(rng.integers(2))],
                          priority=int(rng.integers(0, 4)),
                          expected_value=[0.0, 0.5, 1.25][int(rng.integers(3))],
                          fallback=fallback, fallback_if_unreachable=unreachable))
    triggers = [t for t in BEHAVIOUR_TRIGGERS if rng.random() < 0.4] or ["product_view"]
    exit_on = tuple(e for e in ("purchase", "unsubscribed", "visit", "opened", "product_view",
                                "inactivity") if rng.random() < 0.3)
    j = Journey(journey=name, triggers=tuple(triggers), steps=tuple(steps),
                version=int(rng.integers(1, 4)), exit_on=exit_on)
    wait = j.longest_wait_h
    cooldown = [None, None, wait / 2, wait, wait * 3, h_of(int(rng.integers(0, 200 * 3600)))]
    return replace(j, reentry_cooldown_h=cooldown[int(rng.integers(len(cooldown)))],
                   max_entries=[None, None, 1, 2, 3][int(rng.integers(5))],
                   holdout_share=[0.0, 0.0, 0.0, 0.3, 0.5, 1.0][int(rng.integers(6))])


def run_cases(checker: Checker, seed: int, n: int, fine: bool = False) -> None:
    """``n`` cases: behaviour triggers (with their follow-up chains) and random payloads;
    instants on the whole-second grid, or (``fine``) anywhere. 40 % of the cases are in a
    zone with offset changes, in the 100 hours before one of its changes (or just after)."""
    rng = np.random.default_rng(seed)
    journeys = checker.journeys
    triggers = sorted({t for j in journeys for t in j.triggers})
    for _ in range(n):
        zone = None
        if rng.random() < 0.4:
            zone = DST_ZONES[int(rng.integers(len(DST_ZONES)))]
            changes = CHANGES[zone]
            change_s = round(changes[int(rng.integers(len(changes)))] * 3600)
            now_s = change_s - int(rng.integers(-3 * 3600, 100 * 3600)) + (rng.random() if fine else 0)
        else:
            now_s = int(rng.integers(200 * 3600, 2000 * 3600)) + (rng.random() if fine else 0)
        case = random_case(rng, now_s, journeys, fine, zone)
        r = rng.random()
        if r < 0.55:
            kind = triggers[int(rng.integers(len(triggers)))]
            checker.chain(case, h_of(now_s), kind, rng)
        elif r < 0.7:
            checker.decide(case, h_of(now_s), BEHAVIOUR_TRIGGERS[int(rng.integers(len(BEHAVIOUR_TRIGGERS)))])
        else:  # a follow-up with a random payload (entered_at, step_at <= now)
            ji = int(rng.integers(len(journeys)))
            j = journeys[ji]
            k = int(rng.integers(len(j.steps)))
            entered_s = now_s - int(rng.integers(0, 100 * 3600))
            r = rng.random()  # step_at after entry, at entry, or (a malformed payload) before
            step_at_s = entered_s + int(rng.integers(0, now_s - entered_s + 1)) if r < 0.8 \
                else entered_s if r < 0.95 else entered_s - int(rng.integers(1, 10 * 3600))
            if fine and r < 0.8:
                step_at_s = entered_s + (now_s - entered_s) * rng.random()
            # rows exactly at entry and at the previous step
            for t in (entered_s, step_at_s):
                if rng.random() < 0.5:
                    case.add(random_row(rng, h_of(t), journeys))
            payload = {"journey": j.journey, "entry_id": "x", "entered_at": dt(h_of(entered_s)).isoformat(),
                       "step": j.steps[k].id, "step_at": dt(h_of(step_at_s)).isoformat(), "sent": []}
            checker.decide(case, h_of(now_s), "journey_step",
                           (ji, k, h_of(entered_s), h_of(step_at_s)), payload)


def assert_clean(checker: Checker) -> None:
    assert not checker.mismatches, f"{len(checker.mismatches)} mismatches of {checker.n_checked}:\n" \
        + "\n".join(checker.mismatches[:3])


# -- tests -----------------------------------------------------------------------------------

def test_builtins_compile_as_they_are() -> None:
    hours = 0
    for name in builtin_journeys():
        j = load_journey(name)
        cj = compile_journeys(j, Strings())
        assert cj is not None
        want = [-1 if s.at_local_hour is None else round(s.at_local_hour * 60) % 1440 for s in j.steps]
        assert cj.si[:, SI_AT_MINUTE].tolist() == want
        hours += sum(m >= 0 for m in want)
        in_set = compile_journeys(JourneySet((load_journey("seed_journey"), j)), Strings())
        assert (in_set is None) == (name == "seed_journey")  # two seed_journey: not a valid set
    assert hours >= 4  # welcome, cart_abandon, browse_abandon, reactivation


def test_local_hour_minutes() -> None:
    """``at_local_hour`` compiles to the minute of the day ``next_local_hour`` rounds it to."""
    steps = tuple(Step(id=f"s{i}", channel="email", at_local_hour=h) for i, h in enumerate(
        (0.0, 9.5, 23.99, 10.0166, 23.995, 23.9916, 0.0083, 12.5 / 60)))
    cj = compile_journeys(Journey("mins", ("signup",), steps), Strings())
    assert cj.si[:, SI_AT_MINUTE].tolist() == [0, 570, 1439, 601, 0, 1439, 0, 12]


def test_due_matches_step_due() -> None:
    """Entry waits: for triggers around every offset change of the DST zones (on the second
    grid and off it, and exactly at the local minute), each journey's follow-up instant is
    ``Step.due`` to the microsecond — or the step runs at once when that is now."""
    rng = np.random.default_rng(5)
    delays = (0.0, 0.0, 0.5, 1.0, 1.25, 12.0, 23.75, 24.0, 48.0)
    journeys = tuple(Journey(f"due{k}", ("signup",), (Step(id="a", channel="email", delay_h=d,
                                                           at_local_hour=h),
                                                      Step(id="b", channel="sms", delay_h=d,
                                                           at_local_hour=h)))
                     for k, (d, h) in enumerate((d, h) for d in delays for h in LOCAL_HOURS))
    checker = Checker(JourneySet(journeys))
    n_at_once = 0
    for zone in DST_ZONES:
        for change in CHANGES[zone]:
            for i in range(40):
                r = rng.random()
                if r < 0.5:
                    now_h = h_of(round(change * 3600) - int(rng.integers(-6 * 3600, 72 * 3600)))
                elif r < 0.8:
                    now_h = change + rng.uniform(-72.0, 6.0)
                else:  # exactly at a local minute: some journeys run at once
                    now_h = us(next_local_hour(dt(change + rng.uniform(-72.0, 6.0)), zone,
                                               LOCAL_HOURS[int(rng.integers(len(LOCAL_HOURS)))])) / 3.6e9
                case = Case(f"u{i}", [], np.ones(3, bool), zone, fine=True)
                py, got = checker.decide(case, now_h, "signup")
                assert len(py) == len(got) == len(journeys)
                for j, d, g in zip(journeys, py, got):
                    step = j.steps[0] if d.step == "entry" else j.steps[1]
                    if d.step != "entry":
                        n_at_once += 1
                    assert us(d.follow_ups[0].at) == us(step.due(dt(now_h), zone))
                    assert round(g[2] * 3.6e9) == us(d.follow_ups[0].at)
    assert_clean(checker)
    assert n_at_once > 50


def test_follow_ups_cross_changes() -> None:
    """Chains of local-hour steps started in the days before an offset change."""
    rng = np.random.default_rng(8)
    steps = (Step(id="a", channel="email", at_local_hour=2.5),
             Step(id="b", channel="sms", delay_h=20.0, at_local_hour=1.75),
             Step(id="c", channel="none", delay_h=1.0, at_local_hour=23.995),
             Step(id="d", channel="push", delay_h=0.5, at_local_hour=2.0))
    j = Journey("cross", ("signup",), steps, reentry_cooldown_h=0.0)
    checker = Checker(j)
    for zone in DST_ZONES:
        for change in CHANGES[zone]:
            for i in range(12):
                now_h = h_of(round(change * 3600) - int(rng.integers(0, 80 * 3600)))
                checker.chain(Case(f"u{i}", [], np.ones(3, bool), zone), now_h, "signup", rng)
    assert_clean(checker)
    assert checker.n_checked > 400


def test_compile_rejects_other_policies() -> None:
    seed = load_journey("seed_journey")
    assert compile_journeys(object(), Strings()) is None
    assert compile_journeys(JourneySet((seed, JourneySet((seed,)))), Strings()) is None
    assert compile_journeys(JourneySet((seed, replace(seed, version=2))), Strings()) is None
    assert compile_journeys(JourneySet((seed,)), Strings()) is not None


@pytest.mark.parametrize("name", ["seed_journey", "browse_abandon", "cart_abandon",
                                  "reactivation", "welcome"])
def test_builtin_journeys(name: str) -> None:
    j = load_journey(name)
    checker = Checker(j)
    run_cases(checker, seed=builtin_journeys().index(name), n=700)
    assert_clean(checker)
    assert checker.n_decisions > 200


def test_journey_set_of_builtins() -> None:
    js = JourneySet(tuple(load_journey(n) for n in builtin_journeys()))
    assert len(js.journeys) == 5
    checker = Checker(js)
    run_cases(checker, seed=11, n=1000)
    assert_clean(checker)


def test_random_journeys() -> None:
    rng = np.random.default_rng(2024)
    total = 0
    for k in range(200):
        checker = Checker(random_journey(rng, f"rj{k}"))
        run_cases(checker, seed=k, n=30)
        assert_clean(checker)
        total += checker.n_checked
    assert total > 6000


def test_random_journeys_off_grid() -> None:
    """Instants and delays anywhere (not on the second grid): the kernel rounds instants to
    the microsecond as the engines' datetimes do, and adds waits as timedelta does."""
    rng = np.random.default_rng(99)
    for k in range(80):
        checker = Checker(random_journey(rng, f"fj{k}", fine=True))
        run_cases(checker, seed=500 + k, n=30, fine=True)
        assert_clean(checker)


def test_random_journey_sets() -> None:
    rng = np.random.default_rng(7)
    for k in range(40):
        js = JourneySet(tuple(random_journey(rng, f"set{k}_{i}") for i in range(int(rng.integers(2, 5)))))
        checker = Checker(js)
        run_cases(checker, seed=100 + k, n=40)
        assert_clean(checker)


def test_holdout_flags() -> None:
    rng = np.random.default_rng(3)
    js = JourneySet(tuple(replace(random_journey(rng, f"h{i}"), holdout_share=s)
                          for i, s in enumerate((0.0, 0.3, 1.0))))
    cj = compile_journeys(js, Strings())
    users = [f"user{i}" for i in range(200)]
    a, b = holdout_flags(cj, users), holdout_flags(js, users)
    assert a.shape == (200, 3) and (a == b).all()
    assert not a[:, 0].any() and a[:, 2].all() and 20 < a[:, 1].sum() < 100


def test_mismatch_detected() -> None:
    """The comparison catches a one-field change in the compiled copy."""
    seed = load_journey("seed_journey")
    strings = Strings()
    cj = compile_journeys(seed, strings)
    assert cj is not None
    si = cj.si.copy()
    si[1, SI_PRIORITY] += 1  # sms_nudge's priority
    checker = Checker(seed, cj._replace(si=si), strings)
    run_cases(checker, seed=1, n=300)
    assert checker.mismatches
    for want, got in checker.diffs:  # exactly the priority of sms_nudge's messages differs
        assert len(want) == len(got)
        assert [(w[:6] + w[7:], g[:6] + g[7:]) for w, g in zip(want, got) if w != g] == \
            [(w[:6] + w[7:], w[:6] + w[7:]) for w, g in zip(want, got) if w != g]
        assert all(g[6] == w[6] + 1 for w, g in zip(want, got) if w != g)
    ci = cj.ci.copy()
    ci[0, CI_NEGATE] = 1 - ci[0, CI_NEGATE]  # sms_nudge's "not opened" -> "opened"
    checker = Checker(seed, cj._replace(ci=ci), strings)
    run_cases(checker, seed=2, n=300)
    assert checker.mismatches


def test_local_hour_mismatch_detected() -> None:
    """A local hour one minute off, or another zone's row, shows in the follow-up instants."""
    welcome = load_journey("welcome")
    strings = Strings()
    cj = compile_journeys(welcome, strings)
    assert cj is not None
    k = next(i for i, s in enumerate(welcome.steps) if s.at_local_hour is not None)
    si = cj.si.copy()
    si[k, SI_AT_MINUTE] += 1
    checker = Checker(welcome, cj._replace(si=si), strings)
    run_cases(checker, seed=3, n=300)
    assert checker.mismatches
    later = []
    for want, got in checker.diffs:  # only follow-up instants differ (mostly by a minute)
        assert len(want) == len(got)
        for w, g in zip(want, got):
            if w != g:
                assert w[:12] + w[13:] == g[:12] + g[13:]
                later.append(g[12] - w[12] == 60_000_000)
    assert sum(later) > 0.9 * len(later)
    checker = Checker(welcome, cj, strings, zone="Asia/Kolkata")
    run_cases(checker, seed=4, n=300)
    assert checker.mismatches


def test_step_outside_journey() -> None:
    """A follow-up naming no step of the journey (Python: a payload of another version) exits
    with a ``none`` decision (its log step, an unknown id in Python, is -1)."""
    seed = load_journey("seed_journey")
    strings = Strings()
    cj = compile_journeys(seed, strings)
    out_i, out_f = np.zeros((1, N_OUT_INT), np.int64), np.zeros((1, N_OUT_FLOAT))
    empty_f, empty_i8, empty_i32 = np.zeros(0), np.zeros(0, np.int8), np.zeros(0, np.int32)
    n = journey_decide(cj, JOURNEY_STEP, 0, 3, 1.0, 1.0, 2.0, empty_f, empty_i8, empty_i8,
                       empty_i32, empty_i32, empty_i32, 0, np.ones(3, bool), np.zeros(1, bool),
                       out_i, out_f, *tz_row("UTC"))
    ctx = Context("u", dt(2.0), "UTC", {}, {"email": True, "sms": True, "push": True}, [],
                  Trigger("journey_step", dt(2.0), {"journey": "seed_journey", "step": "old_step",
                                                    "entered_at": dt(1.0).isoformat(),
                                                    "step_at": dt(1.0).isoformat()}))
    (d,) = seed.decide(ctx, _RNG)
    assert n == 1 and d.meta["exit"] == "unknown_step"
    want = py_rows([d], [seed], strings)[0]
    got = kernel_rows(out_i, out_f, 1)[0]
    assert got[3] == -1 and want[:3] + want[4:] == got[:3] + got[4:]
