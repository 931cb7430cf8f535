"""The fast engine's batch paths decide exactly as the one-by-one paths.

- ``Journey.decide_batch`` / ``JourneySet.decide_batch`` give the decisions of ``decide``
  (equal :class:`Decision` objects, follow-up payloads included) on the checker's sample
  contexts, followed through their journey steps with histories that change in between;
- inside engine runs, every batch equals ``decide`` per context and the engine's contexts
  answer ``can_message`` as :meth:`Context.can_message` does;
- a whole engine run through the batch paths writes the very same log as one through
  ``decide`` per context.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from omnisim.model import engine_fast
from omnisim.model._fast_policy import batch_decider
from omnisim.model.scenario import load_scenario
from omnisim.policies import HistoryEvent, Trigger
from omnisim.policies.base import Context
from omnisim.policies.check import sample_contexts
from omnisim.policies.journeys import Journey, JourneySet, builtin_journeys, load_journey
from omnisim.policies.registry import get_policy

EVENTS = ("sent", "opened", "clicked", "product_view", "visit", "purchase", "unsubscribed",
          "delivered")
CHANNELS = ("email", "sms", "push", "web")


def _journeys() -> list[Journey]:
    out = [load_journey(n) for n in builtin_journeys()]
    seed = load_journey("seed_journey")
    out += [replace(seed, holdout_share=0.3), replace(seed, max_entries=2),
            replace(seed, reentry_cooldown_h=None)]
    return out


def _later(ctx: Context, fu_at, rng: np.random.Generator, campaign: str) -> Context:
    """The follow-up's context: ``now`` = its time, plus random events in between."""
    hist = list(ctx.history)
    for _ in range(int(rng.integers(0, 5))):
        dt = float(rng.uniform(0, max((fu_at - ctx.now).total_seconds() / 3600, 0.1)))
        ev = str(rng.choice(EVENTS))
        hist.append(HistoryEvent(ts=ctx.now + timedelta(hours=dt), event=ev,
                                 channel=str(rng.choice(CHANNELS)),
                                 campaign=campaign if rng.random() < 0.6 else None))
    hist.sort(key=lambda h: h.ts)
    return replace(ctx, now=fu_at, history=tuple(h for h in hist if h.ts <= fu_at))


@pytest.mark.parametrize("journey", _journeys(), ids=lambda j: f"{j.journey}-{j.holdout_share}-{j.max_entries}")
def test_journey_decide_batch_equals_decide_on_sample_contexts(journey):
    rng = np.random.default_rng(0)
    ctxs = []
    for seed in range(4):
        for c in sample_contexts(60, seed=seed):
            # enter on one of the journey's triggers, and also keep the original trigger
            ctxs.append(c)
            ctxs.append(replace(c, trigger=Trigger(kind=journey.triggers[0], ts=c.now)))
    n_followed = 0
    for _ in range(5):  # entry, then follow the follow-ups step by step
        want = [journey.decide(c, np.random.default_rng(1)) for c in ctxs]
        got = journey.decide_batch(ctxs, np.random.default_rng(1))
        assert got == want
        nxt = []
        for c, ds in zip(ctxs, want):
            for d in ds:
                for fu in d.follow_ups:
                    later = _later(c, fu.at, rng, journey.journey)
                    nxt.append(replace(later, trigger=Trigger("journey_step", fu.at, fu.payload)))
        n_followed += len(nxt)
        ctxs = nxt
        if not ctxs:
            break
    assert n_followed > 50  # the steps were exercised, not only the entries


def test_journey_set_decide_batch_equals_decide():
    js = get_policy("journeys")
    assert isinstance(js, JourneySet)
    ctxs = [c for s in range(3) for c in sample_contexts(80, seed=10 + s)]
    assert js.decide_batch(ctxs, np.random.default_rng(0)) == [
        js.decide(c, np.random.default_rng(0)) for c in ctxs]


def test_unusual_payloads_take_the_reference_path():
    seed = load_journey("seed_journey")
    c = sample_contexts(1)[0]
    (d,) = seed.decide(replace(c, trigger=Trigger("product_view", c.now)), None)
    assert d.follow_ups  # the seed journey's first step schedules the SMS check
    fu = d.follow_ups[0]
    payloads = [dict(fu.payload, step="nope"), dict(fu.payload, step_at=c.now.replace(year=2020).isoformat()),
                dict(fu.payload, journey="other")]
    for p in payloads:
        ctx = replace(c, now=fu.at, trigger=Trigger("journey_step", fu.at, p))
        assert seed.decide_batch([ctx], None) == [seed.decide(ctx, None)]
    bad = replace(c, now=fu.at, trigger=Trigger("journey_step", fu.at, dict(fu.payload, entered_at=3)))
    with pytest.raises(Exception) as a:
        seed.decide(bad, None)
    with pytest.raises(type(a.value)):
        seed.decide_batch([bad], None)


class Checked:
    """Wraps a policy; every batch the engine asks for is checked against ``decide``."""

    def __init__(self, policy):
        self.policy, self.name = policy, policy.name
        self.rules = getattr(policy, "rules", None)
        self.trigger_kinds = getattr(policy, "trigger_kinds", None) or policy.policy.trigger_kinds
        self._batch = batch_decider(policy)
        self.n = 0

    def decide(self, ctx, rng):  # pragma: no cover - the engine uses decide_batch
        return self.policy.decide(ctx, rng)

    def decide_batch(self, ctxs, rng):
        got = self._batch(ctxs, rng)
        for c, g in zip(ctxs, got):
            assert g == self.policy.decide(c, rng)
            for ch in ("email", "sms", "push", "none"):
                assert c.can_message(ch) == Context.can_message(c, ch)
        self.n += len(ctxs)
        return got


class OneByOne:
    """The same policy without any batch path: ``decide`` per context."""

    def __init__(self, policy):
        self.policy, self.name = policy, policy.name
        self.rules = getattr(policy, "rules", None)

    def decide(self, ctx, rng):
        return self.policy.decide(ctx, rng)


@pytest.fixture(scope="module")
def sc():
    return load_scenario("default").replace(n_users=300, days=14, seed=5)


@pytest.mark.parametrize("name", ["seed_journey+pressure", "journeys+pressure"])
def test_engine_batches_equal_decide(sc, name):
    pol = Checked(get_policy(name))
    engine_fast.simulate(sc, pol, progress=False)
    assert pol.n > 100


@pytest.mark.parametrize("name", ["seed_journey+pressure", "journeys+pressure", "seed_journey"])
def test_engine_log_is_the_same_through_batch_paths(sc, name):
    # the round-based path's batch methods (OneByOne has no compiled form)
    fast = engine_fast.simulate(sc, get_policy(name), progress=False, compiled=False).log
    slow = engine_fast.simulate(sc, OneByOne(get_policy(name)), progress=False).log
    pd.testing.assert_frame_equal(fast, slow)
    assert (fast["event"] == "sent").sum() > 20
