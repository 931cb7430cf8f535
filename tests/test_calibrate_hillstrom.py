"""Hillstrom: calibrate from the real log, replay its randomised policy, reproduce the arms.

The replay runs 9,000 of the 64,000 customers (a random subset, ~3,000 per arm; ~10 s);
every arm's visit, conversion and spend rate, and each e-mail's lift over no e-mail, must
agree with the real one: the 95 % interval of the difference (simulated minus real, two
independent samples) contains 0.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from omnisim.datasets import hillstrom_log
from omnisim.model.calibrate import fit_calibration, window_outcomes
from omnisim.model.replay import replay
from omnisim.stats import z_value

N_REPLAY = 9000


def _arms(log):
    t0 = log["ts"].min()
    log = log.assign(t_h=(log["ts"] - t0).dt.total_seconds() / 3600.0)
    return window_outcomes(log, log[log["event"] == "decided"], 14 * 24)


@pytest.fixture(scope="module")
def hill():
    log, users = hillstrom_log()
    cal = fit_calibration(log, users)
    ids = np.random.default_rng(1).choice(users["user_id"].astype(str).to_numpy(), N_REPLAY, replace=False)
    sub = log[log["user_id"].astype(str).isin(set(ids))]
    rep = replay(sub, cal.scenario, seed=3)
    return cal, _arms(log), _arms(rep.log)


def _mean_se(x):
    x = np.asarray(x, dtype=float)
    return x.mean(), x.std(ddof=1) / math.sqrt(x.size)


@pytest.mark.parametrize("metric", ["visit", "conversion", "spend"])
@pytest.mark.parametrize("arm", ["mens_email", "womens_email", "none"])
def test_replayed_arm_rates_match_real(hill, arm, metric):
    _, real, sim = hill
    (mr, sr), (ms, ss) = _mean_se(real.loc[real.action == arm, metric]), _mean_se(sim.loc[sim.action == arm, metric])
    z = z_value(0.95)
    d, se = ms - mr, math.hypot(sr, ss)
    assert abs(d) <= z * se, f"{arm} {metric}: sim {ms:.4f} vs real {mr:.4f} (diff {d:+.4f} ± {z * se:.4f})"


@pytest.mark.parametrize("metric", ["visit", "conversion", "spend"])
@pytest.mark.parametrize("arm", ["mens_email", "womens_email"])
def test_replayed_lift_over_no_email_matches_real(hill, arm, metric):
    _, real, sim = hill
    lifts = []
    for t in (real, sim):
        (m1, s1), (m0, s0) = _mean_se(t.loc[t.action == arm, metric]), _mean_se(t.loc[t.action == "none", metric])
        lifts.append((m1 - m0, math.hypot(s1, s0)))
    (lr, sr), (ls, ss) = lifts
    assert abs(ls - lr) <= z_value(0.95) * math.hypot(sr, ss), (arm, metric, lr, ls)
    assert ls > 0  # an e-mail raises the rate in the simulator too


def test_hillstrom_calibration_marks_what_it_cannot_identify(hill):
    cal = hill[0]
    p = cal.scenario.calibration["parameters"]
    assert p["fatigue.half_life_h"]["status"] == "default"
    assert "one send per user" in p["fatigue.half_life_h"]["reason"]
    assert p["channels.email.click_prob"]["status"] == "default"
    assert p["population.segments[*].visit_rate_per_day"]["status"] == "estimated"
    assert set(cal.scenario.calibration["campaigns"]) == {"mens_email", "womens_email"}
    lifts = cal.lifts.set_index(["action", "metric"])
    assert lifts.loc[("mens_email", "visit"), "lift"] == pytest.approx(0.0766, abs=0.002)
