"""Behaviour: rate formulas, the session funnel, and the engine's point process (counts
and time-of-day match the specified rates)."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from omnisim.model import behavior as bh
from omnisim.model.engine_simpy import simulate
from omnisim.model.population import ACTIVITY_PROFILES
from omnisim.model.scenario import Scenario

Z99 = stats.norm.ppf(0.995)


def test_visit_rate_integrates_to_the_daily_rate():
    prof = np.asarray(ACTIVITY_PROFILES["evening"])
    per_hour = bh.visit_rate_h(0.4, prof, prof.mean(), 1.0, 0.0)
    assert per_hour.sum() == pytest.approx(0.4)
    assert np.all(per_hour <= bh.visit_rate_bound_h(0.4, prof.max(), prof.mean(), 0.0) + 1e-15)
    assert bh.visit_rate_h(0.4, 0.5, 0.5, 0.5, 1.0) == pytest.approx(0.4 / 24)


def test_click_boost_decays_with_its_half_life():
    assert bh.click_boost(0.0, 3.0, 12.0) == pytest.approx(3.0)
    assert bh.click_boost(12.0, 3.0, 12.0) == pytest.approx(1.5)
    np.testing.assert_allclose(bh.click_boost([np.inf, np.nan, -1.0], 3.0, 12.0), 0.0)


def test_purchase_probability_formula():
    p = bh.BehaviorParams(cart_return_boost=1.0, click_purchase_boost=0.5)
    assert bh.purchase_probability(0.3, 1.0, 0, 0, 0.5, p) == pytest.approx(0.3)
    assert bh.purchase_probability(0.3, 0.5, 1, 0, 0.5, p) == pytest.approx(0.3)
    assert bh.purchase_probability(0.3, 1.0, 0, 1, 0.5, p) == pytest.approx(0.45)
    assert bh.purchase_probability(0.9, 1.0, 1, 1, 1.0, p) == 1.0


def test_session_funnel_frequencies():
    rng = np.random.default_rng(0)
    p = bh.BehaviorParams(view_prob=0.7, cart_prob=0.2)
    n = 40000
    v, c, b = bh.session_funnel(rng, np.full(n, 0.5), p)
    assert not (c & ~v).any() and not (b & ~c).any()
    for obs, exp in ((v.mean(), 0.7), (c.mean(), 0.14), (b.mean(), 0.07)):
        assert abs(obs - exp) < Z99 * math.sqrt(exp * (1 - exp) / n)
    v, _, _ = bh.session_funnel(rng, np.full(10, 0.5), p, force_view=True)
    assert v.all()


class Silent:
    name = "silent@test"

    def decide(self, ctx, rng):
        return []


@pytest.fixture(scope="module")
def quiet_world():
    seg = {"name": "all", "timezones": {"America/New_York": 1.0}, "activity": "evening",
           "activity_shift_sd_h": 0.0, "visit_rate_per_day": 0.5, "visit_rate_sigma": 0.3}
    sc = Scenario().replace(n_users=300, days=20, seed=5, fatigue={"enabled": False},
                            behavior={"churn_rate_per_day": 0.0},
                            population={"new_user_share": 0.0, "segments": [seg]})
    return simulate(sc, Silent(), progress=False)


def test_visit_counts_match_the_rates(quiet_world):
    log, users = quiet_world.log, quiet_world.users
    visits = (log["event"] == "visit").sum()
    expected = users["visit_rate_per_day"].sum() * 20
    assert abs(visits - expected) < Z99 * math.sqrt(expected), (visits, expected)


def test_visits_follow_the_local_activity_profile(quiet_world):
    log = quiet_world.log
    ts = log.loc[log["event"] == "visit", "ts"].dt.tz_convert("America/New_York")
    observed = np.bincount(ts.dt.hour, minlength=24)
    prof = np.asarray(ACTIVITY_PROFILES["evening"])
    assert stats.chisquare(observed, prof / prof.sum() * observed.sum()).pvalue > 0.01
    # and the test can fail: a flat profile is rejected
    assert stats.chisquare(observed).pvalue < 0.01


def test_inactivity_triggers_once_per_spell():
    seen = []

    class Recorder(Silent):
        def decide(self, ctx, rng):
            if ctx.trigger.kind == "inactivity":
                seen.append((ctx.user_id, ctx.now))
            return []

    seg = {"name": "rare", "visit_rate_per_day": 0.05, "visit_rate_sigma": 0.0}
    sc = Scenario().replace(n_users=100, days=30, seed=2, behavior={"inactivity_days": 7},
                            population={"new_user_share": 0.0, "segments": [seg]})
    res = simulate(sc, Recorder(), progress=False)
    assert len(seen) > 20
    visits = res.log[res.log["event"] == "visit"].groupby("user_id")["ts"].apply(list)
    users = res.users.set_index("user_id")
    start = pd.Timestamp(sc.start)
    for uid, now in seen:
        prior = [t for t in visits.get(uid, []) if t < now]
        last = prior[-1] if prior else start - pd.Timedelta(days=users.loc[uid, "last_visit_days_ago"])
        assert abs((pd.Timestamp(now) - last) - pd.Timedelta(days=7)) < pd.Timedelta(seconds=1) \
            or (not prior and pd.Timestamp(now) == start)
    # at most one trigger between two visits
    by_user = pd.Series([u for u, _ in seen]).value_counts()
    for uid, k in by_user.items():
        assert k <= len(visits.get(uid, [])) + 1
