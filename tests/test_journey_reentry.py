"""Journey re-entry counts entries, not sends: an entry is remembered from its ``decided``
row (logged before any message), so a trigger during a leading wait — or after a first
message the journey did not send (no consent, holdout) — does not enter again; in
``decide`` and ``decide_batch``, in both simulator engines and in the sender."""

from __future__ import annotations

import sys
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from omnisim.policies import HistoryEvent, Journey, Trigger, make_context
from omnisim.policies.artifact import export_policy
from omnisim.policies.check import sample_contexts
from omnisim.policies.journeys import builtin_journeys, journey_from_dict, load_journey
from omnisim.policies.registry import load_policy

sys.path.insert(0, str(Path(__file__).resolve().parent / "send"))
from sender_support import (  # noqa: E402, F401 - fixtures
    FakeDeliverer, add_user, at, ev, log_rows, make_service, store_url,
)

T0 = datetime(2026, 5, 4, 14, 0, tzinfo=timezone.utc)
RNG = np.random.default_rng(0)
#: A wait of 48 h before the first message, then a second message a day later.
WAITS_FIRST = {"name": "later", "triggers": ["product_view"], "steps": [
    {"id": "offer_email", "channel": "email", "delay_h": 48},
    {"id": "offer_push", "channel": "push", "delay_h": 24}]}


def H(hours: float, event: str, campaign: str | None = "later", channel: str = "none") -> HistoryEvent:
    return HistoryEvent(ts=T0 + timedelta(hours=hours), event=event, channel=channel, campaign=campaign)


def both(journey: Journey, hours: float, history=(), **kw) -> list:
    """What ``decide`` answers a product view ``hours`` after T0 — checked equal to
    ``decide_batch``'s answer."""
    ctx = make_context(T0 + timedelta(hours=hours), "product_view", history=history, **kw)
    one = journey.decide(ctx, RNG)
    assert journey.decide_batch([ctx], RNG) == [one]
    return one


@pytest.fixture(scope="module")
def later() -> Journey:
    return journey_from_dict(WAITS_FIRST)


def test_a_trigger_during_the_leading_wait_does_not_enter_again(later):
    (wait,) = both(later, 0)
    assert wait.channel == "none" and wait.meta["step"] == "entry" and wait.campaign == "later"
    logged = [H(0, "decided")]  # the entry's decided row: all the history shows of it yet
    assert both(later, 1, logged) == []
    assert both(later, 47, logged) == []


def test_an_entry_whose_first_message_was_not_sent_is_remembered():
    j = journey_from_dict(dict(WAITS_FIRST, steps=[{"id": "a", "channel": "sms"},
                                                   {"id": "b", "channel": "email", "delay_h": 24}]))
    (d,) = both(j, 0, consent={"sms": False, "email": True, "push": True})
    assert d.reason == "no_consent" and d.follow_ups  # the journey goes on to step b
    assert both(j, 2, [H(0, "decided")]) == []


def test_a_held_out_entry_counts_as_an_entry():
    j = replace(journey_from_dict(WAITS_FIRST), holdout_share=1.0)
    (d,) = both(j, 0)
    assert d.reason == "holdout"
    assert both(j, 2, [H(0, "decided")]) == []


def test_reentry_counts_from_the_last_entry_not_from_the_last_send():
    seed = load_journey("seed_journey")  # reentry_cooldown_h: 72; longest wait 20 h
    H_ = lambda h, e, ch="none": H(h, e, "seed_journey", ch)  # noqa: E731
    entry = [H_(-80, "decided", "email"), H_(-80, "sent", "email"), H_(-76, "decided"),
             H_(-56, "decided", "push"), H_(-56, "sent", "push")]
    # the last send was 56 h ago (< 72 h), the entry 80 h ago: enters
    assert both(seed, 0, entry)[0].channel == "email"
    # an entry 60 h ago: not yet
    assert both(seed, 0, [H_(-60, "decided", "email")]) == []
    # a run still going (its last decision 10 h ago, within the longest wait) blocks even a
    # journey with no cooldown: one run at a time
    assert both(replace(seed, reentry_cooldown_h=0), 0, entry + [H_(-10, "decided")]) == []
    assert both(replace(seed, reentry_cooldown_h=0), 0, entry)[0].channel == "email"


def test_a_cooldown_shorter_than_the_leading_wait_still_runs_one_entry_at_a_time(later):
    short = replace(later, reentry_cooldown_h=1)
    assert both(short, 5, [H(0, "decided")]) == []
    assert both(short, 50, [H(0, "decided"), H(48, "decided", channel="email")]) == []
    # the longest wait (48 h, plus a DST hour) after the last decision, it may enter
    run = [H(0, "decided"), H(48, "decided", channel="email")]
    assert both(short, 48 + 48.5, run) == []
    assert both(short, 48 + 49, run)[0].meta["step"] == "entry"


def test_max_entries_counts_entries_from_decided_rows():
    welcome = load_journey("welcome")  # max_entries: 1
    H_ = lambda h, e, ch="none": H(h, e, "welcome", ch)  # noqa: E731
    ctx = make_context(T0, "signup", history=[H_(-500, "decided", "email")])
    assert welcome.decide(ctx, RNG) == [] and welcome.decide_batch([ctx], RNG) == [[]]
    two = replace(load_journey("seed_journey"), max_entries=2)
    H_ = lambda h, e, ch="none": H(h, e, "seed_journey", ch)  # noqa: E731
    # one entry with its two later steps: one entry, not three
    one_run = [H_(-300, "decided", "email"), H_(-296, "decided", "sms"), H_(-276, "decided", "push")]
    assert both(two, 0, one_run)[0].channel == "email"
    assert both(two, 0, one_run + [H_(-100, "decided")]) == []  # a second entry


def test_history_events_declare_the_decided_rows(later):
    assert {"decided", "sent"} <= later.history_events


def _with_own_rows(ctx, journey: str, rng: np.random.Generator):
    """``ctx`` with a few of the journey's decided / sent rows at random earlier times."""
    hist = list(ctx.history)
    for _ in range(int(rng.integers(0, 6))):
        ts = ctx.now - timedelta(hours=float(rng.choice([rng.uniform(0, 200), rng.uniform(0, 30)])))
        hist.append(HistoryEvent(ts=ts, event=str(rng.choice(["decided", "sent"])),
                                 channel=str(rng.choice(["none", "email"])), campaign=journey))
    hist.sort(key=lambda h: h.ts)
    return replace(ctx, history=tuple(hist))


@pytest.mark.parametrize("name", builtin_journeys())
@pytest.mark.parametrize("max_entries", [None, 2])
def test_decide_batch_equals_decide_with_own_decided_rows(name, max_entries):
    j = replace(load_journey(name), max_entries=max_entries)
    rng = np.random.default_rng(3)
    ctxs = [_with_own_rows(replace(c, trigger=Trigger(j.triggers[0], c.now)), j.journey, rng)
            for s in range(3) for c in sample_contexts(60, seed=s)]
    want = [j.decide(c, RNG) for c in ctxs]
    assert j.decide_batch(ctxs, RNG) == want
    assert 0 < sum(bool(w) for w in want) < len(want)  # both answers were exercised


@pytest.mark.parametrize("cooldown_h", [None, 0.0, 30.0, 120.0])
def test_decide_batch_equals_decide_on_dense_own_rows(later, cooldown_h):
    """Random runs of own decided / sent rows (some on the same instant): the batch path's
    newest-first scan finds the same last entry as ``decide``'s full scan."""
    j = replace(later, reentry_cooldown_h=cooldown_h)  # longest wait 49 h, span 73 h
    rng = np.random.default_rng(7)
    answers = set()
    for _ in range(600):
        hours = np.sort(rng.choice(np.arange(-400.0, 0.0, 4.0), size=int(rng.integers(0, 9))))
        rows = [H(float(h), str(rng.choice(["decided", "sent"]))) for h in hours]
        rows += [H(-1.0, "visit", None, "web")] * int(rng.integers(0, 2))
        rows.sort(key=lambda r: r.ts)
        ctx = make_context(T0, "product_view", history=rows)
        one = j.decide(ctx, RNG)
        assert j.decide_batch([ctx], RNG) == [one], rows
        answers.add(bool(one))
    assert answers == {True, False}


@pytest.mark.parametrize("engine", ["fast", "simpy"])
def test_simulated_users_never_get_a_waiting_journeys_message_twice(engine):
    """A journey on every visit with a 48 h wait before its email, no pressure rules: before
    the fix each visit during the wait entered again and scheduled its own email."""
    from omnisim.experiment import run_one

    spec = dict(WAITS_FIRST, triggers=["visit"], steps=[{"id": "offer_email", "channel": "email",
                                                         "delay_h": 48}])
    run = run_one("default", load_policy({"journeys": [spec]}), seed=1, n_users=150, days=10,
                  engine=engine)
    log = run.log
    decided = log[(log["event"] == "decided") & (log["campaign"] == "later")]
    entries = decided[decided["step"] == "entry"]
    assert len(entries) > 20  # enough entries to have had second visits during the wait
    sent = log[(log["event"] == "sent") & (log["campaign"] == "later")]
    gaps = sent.sort_values("ts").groupby("user_id", observed=True)["ts"].diff().dropna()
    assert len(sent) and (gaps >= timedelta(hours=48)).all()
    # and each entry ran once: one email decision per entry (none still waiting at the end)
    per_user = entries.groupby("user_id", observed=True).size()
    emails = decided[decided["step"] == "offer_email"].groupby("user_id", observed=True).size()
    assert (emails.reindex(per_user.index, fill_value=0) <= per_user).all()


def test_the_sender_does_not_enter_again_during_the_wait(store_url, tmp_path):
    from omnisim.send.clock import ManualClock
    from omnisim.send.worker import Worker

    art = export_policy({"journeys": [WAITS_FIRST]}, tmp_path / "p.json")
    clock = ManualClock(at(0))
    svc = make_service(store_url, art, clock)
    add_user(svc.store, "u1")
    svc.ingest([ev("k1", "u1", "product_view", at(0))])
    clock.set(at(1))
    svc.ingest([ev("k2", "u1", "product_view", at(1))])
    clock.set(at(80))
    while svc.run_due():
        pass
    fake = FakeDeliverer()
    Worker(svc, fake).drain()
    assert [m.channel for m in fake.messages] == ["email", "push"]  # once each, in due order
    steps = [r["step"] for r in log_rows(svc.store, "u1") if r["event"] == "decided"]
    assert steps == ["entry", "offer_email", "offer_push"]


# -- entries from the log's ``step`` column (HistoryEvent.step) ---------------------------------

def S(hours: float, event: str, step: str | None, journey: str = "seed_journey",
      channel: str = "none") -> HistoryEvent:
    return HistoryEvent(ts=T0 + timedelta(hours=hours), event=event, channel=channel,
                        campaign=journey, step=step)


def _late_run(step: bool) -> list[HistoryEvent]:
    """One seed_journey entry 100 h ago whose last step ran 56 h late (an outage): 40 h ago,
    60 h after the step before it — more than the journey's longest wait (21 h)."""
    st = (lambda s: s) if step else (lambda s: None)
    return [S(-100, "decided", st("offer_email"), channel="email"),
            S(-100, "sent", st("offer_email"), channel="email"),
            S(-96, "decided", st("sms_nudge"), channel="sms"),
            S(-96, "sent", st("sms_nudge"), channel="sms"),
            S(-40, "decided", st("visit_push"), channel="push"),
            S(-40, "sent", st("visit_push"), channel="push")]


def test_a_late_step_is_not_an_entry_when_the_history_has_steps():
    seed = load_journey("seed_journey")  # cooldown 72 h, longest wait 21 h
    assert seed.longest_wait_h < 60 < 100 - seed.cooldown_h + 60
    # the only entry was 100 h ago (> 72 h): enters
    assert both(seed, 0, _late_run(step=True))[0].channel == "email"
    # without steps (a foreign log, an old sender store) the late step looks like an entry
    # 40 h ago: the timing fallback, as before
    assert both(seed, 0, _late_run(step=False)) == []


def test_entries_are_counted_exactly_from_steps():
    seed = load_journey("seed_journey")
    two = replace(seed, max_entries=2)
    # one entry, its two later steps both late: one entry, not three
    run = [S(-300, "decided", "offer_email", channel="email"),
           S(-200, "decided", "sms_nudge", channel="sms"),
           S(-100, "decided", "visit_push", channel="push")]
    assert both(two, 0, run)[0].channel == "email"
    assert both(two, 0, [replace(h, step=None) for h in run]) == []  # by timing: three
    # a held-out entry logs no step: counted by timing (exact: rule 1 admitted it)
    assert both(two, 0, run + [S(-60, "decided", None)]) == []
    # a journey that waits first: the first step's row after its ``entry`` row is the same
    # entry, however late it ran; after another run's rows it is not
    later = replace(journey_from_dict(WAITS_FIRST), max_entries=2, reentry_cooldown_h=1)
    L = lambda h, e, st, ch="none": S(h, e, st, "later", ch)  # noqa: E731
    waited = [L(-400, "decided", "entry"), L(-250, "decided", "offer_email", "email"),
              L(-100, "decided", "offer_push", "push")]
    assert both(later, 0, waited)[0].meta["step"] == "entry"
    assert both(later, 0, waited + [L(-60, "decided", "entry")]) == []
    assert both(later, 0, waited[:1] + [L(-60, "decided", "offer_email", "email")]
                )[0].meta["step"] == "entry"  # its first step, 340 h late: still one entry
    # the first step's id after another run's rows is an entry (one that did not wait)
    assert both(later, 0, waited + [L(-60, "decided", "offer_email", "email")]) == []
    # steps of another version of the journey: by timing
    assert both(later, 0, [L(-400, "decided", "v0_first"), L(-250, "decided", "v0_second")]) == []
    assert both(later, 0, [L(-400, "decided", "v0_first"), L(-390, "decided", "v0_second")]
                )[0].meta["step"] == "entry"


@pytest.mark.parametrize("name", ["seed_journey", "later", "reactivation", "cart_abandon"])
@pytest.mark.parametrize("cooldown_h", [None, 0.0, 30.0, 120.0])
def test_decide_batch_equals_decide_on_own_rows_with_steps(name, cooldown_h):
    """Random own decided / sent rows with any mix of steps (``entry``, the journey's steps,
    another version's, none) and gaps: the batch path finds the same last entry."""
    j = journey_from_dict(WAITS_FIRST) if name == "later" else load_journey(name)
    j = replace(j, reentry_cooldown_h=cooldown_h)
    steps = ["entry", *(s.id for s in j.steps), None, "v0_step"]
    rng = np.random.default_rng(11)
    answers = set()
    for _ in range(500):
        hours = np.sort(rng.choice(np.arange(-400.0, 0.0, 4.0), size=int(rng.integers(0, 9))))
        rows = [S(float(h), str(rng.choice(["decided", "decided", "sent"])),
                  steps[int(rng.integers(len(steps)))], j.journey) for h in hours]
        ctx = make_context(T0, j.triggers[0], history=rows)
        one = j.decide(ctx, RNG)
        assert j.decide_batch([ctx], RNG) == [one], rows
        answers.add(bool(one))
    assert answers == {True, False}


class _Recorder:
    """seed_journey, recording the own history rows of every context it decides on."""

    def __init__(self):
        self.inner = load_journey("seed_journey")
        self.name, self.seen = self.inner.name, []

    def decide(self, ctx, rng):
        self.seen.extend((h.event, h.step) for h in ctx.history if h.campaign == "seed_journey")
        return self.inner.decide(ctx, rng)


@pytest.mark.parametrize("engine", ["fast", "simpy"])
def test_simulated_histories_carry_the_step(engine):
    from omnisim.experiment import run_one

    rec = _Recorder()
    run_one("default", rec, seed=2, n_users=150, days=10, engine=engine)
    seen = set(rec.seen)
    assert {("decided", "offer_email"), ("sent", "offer_email"), ("decided", "sms_nudge")} <= seen
    assert all(step is not None for _, step in seen)  # no holdout: every own row has its step


def _late_first_step(store_url, tmp_path):
    """A sender whose user entered WAITS_FIRST at 0 h (cooldown 200 h) and that was down until
    150 h: the first step ran late at 150 h, the second on time at 174 h."""
    from omnisim.send.clock import ManualClock

    spec = dict(WAITS_FIRST, reentry_cooldown_h=200)
    art = export_policy({"journeys": [spec]}, tmp_path / "p.json")
    clock = ManualClock(at(0))
    svc = make_service(store_url, art, clock)
    svc.late_tolerance = timedelta(hours=1)
    add_user(svc.store, "u1")
    svc.ingest([ev("k1", "u1", "product_view", at(0))])
    for hours in (150, 174):
        clock.set(at(hours))
        while svc.run_due():
            pass
    return svc, clock


def test_the_sender_fills_the_step_and_a_late_step_is_not_an_entry(store_url, tmp_path):
    """An entry at 0 h waits 48 h; the sender is down until 150 h, so the first step runs
    then (stamped 150 h: late beyond the tolerance), the second on time at 174 h. A product
    view at 230 h: the run is over (56 h > the longest wait, 49 h) and the entry was 230 h
    ago (> the 200 h cooldown): it enters — by timing alone the late first step would look
    like an entry 80 h ago. The sender's history comes from its store (the step column)."""
    svc, clock = _late_first_step(store_url, tmp_path)
    decided = [(r["ts"], r["step"]) for r in log_rows(svc.store, "u1") if r["event"] == "decided"]
    assert decided == [(at(0), "entry"), (at(150), "offer_email"), (at(174), "offer_push")]
    with svc.store.transaction():
        state = svc._load(svc.store.lock_user("u1"), at(230))
    assert [h.step for h in state.history if h.event == "decided"] == ["entry", "offer_email",
                                                                        "offer_push"]
    clock.set(at(230))
    svc.ingest([ev("k2", "u1", "product_view", at(230))])
    steps = [r["step"] for r in log_rows(svc.store, "u1") if r["event"] == "decided"]
    assert steps == ["entry", "offer_email", "offer_push", "entry"]


def test_the_sender_falls_back_to_timing_on_rows_without_a_step(store_url, tmp_path):
    """The same run in a store whose rows carry no step (older than the column): the late
    first step looks like an entry 80 h ago, within the cooldown — no new entry."""
    svc, clock = _late_first_step(store_url, tmp_path)
    with svc.store.transaction():
        svc.store.execute("UPDATE log SET step = NULL")
    clock.set(at(230))
    svc.ingest([ev("k2", "u1", "product_view", at(230))])
    assert [r["event"] for r in log_rows(svc.store, "u1")].count("decided") == 3


def test_a_pickled_journey_reads_steps_the_same(tmp_path):
    """Journeys travel pickled to Dask workers with their cached step kinds: the unpickled
    journey still reads entries from steps (an identity-compared sentinel would not)."""
    import pickle

    seed = load_journey("seed_journey")
    assert both(seed, 0, _late_run(step=True))[0].channel == "email"  # caches the kinds
    copy = pickle.loads(pickle.dumps(seed))
    assert both(copy, 0, _late_run(step=True))[0].channel == "email"
    assert both(copy, 0, _late_run(step=False)) == []
