"""Fatigue: decay with the half-life, recovery, and its effect on response and opt-out."""

import numpy as np
import pytest
from scipy import stats

from omnisim.model import fatigue as fat
from omnisim.model.channels import open_probability


def test_decay_halves_every_half_life():
    assert fat.decay(8.0, 72.0, 72.0) == pytest.approx(4.0)
    assert fat.decay(8.0, 144.0, 72.0) == pytest.approx(2.0)
    assert fat.decay(8.0, 0.0, 72.0) == pytest.approx(8.0)
    # vectorised over arrays
    np.testing.assert_allclose(fat.decay([1.0, 2.0], [24.0, 48.0], 24.0), [0.5, 0.5])


def test_incremental_updates_match_closed_form():
    rng = np.random.default_rng(3)
    times = np.sort(rng.uniform(0, 500, 40))
    weights = rng.choice([0.5, 1.0, 2.0], size=40)
    p, t_last = 0.0, 0.0
    for t, w in zip(times, weights):
        p = float(fat.add_message(fat.decay(p, t - t_last, 36.0), w))
        t_last = t
    t_end = 600.0
    p_end = float(fat.decay(p, t_end - t_last, 36.0))
    assert p_end == pytest.approx(fat.pressure_after(times, weights, t_end, 36.0), rel=1e-12)


def test_recovers_when_messaging_stops():
    p = fat.pressure_after(np.arange(0, 48, 4.0), 1.0, 48.0, 72.0)  # 12 messages in 2 days
    assert fat.response_multiplier(p, 4.0) < 0.2
    later = fat.decay(p, 10 * 72.0, 72.0)
    assert later < p / 1000
    assert fat.response_multiplier(later, 4.0) > 0.99


def test_effects_are_monotone_and_neutral_at_zero():
    pr = np.linspace(0, 20, 50)
    m = fat.response_multiplier(pr, 4.0)
    assert m[0] == 1.0 and np.all(np.diff(m) < 0)
    assert fat.response_multiplier(4.0, 4.0) == pytest.approx(np.exp(-1))
    u = fat.unsubscribe_probability(0.01, pr, 4.0, gain=1.0)
    assert u[0] == pytest.approx(0.01) and np.all(np.diff(u) > 0)
    assert fat.unsubscribe_probability(0.01, 4.0, 4.0, 1.0) == pytest.approx(0.02)
    c = fat.churn_probability(pr, 4.0, 0.002)
    assert c[0] == 0.0 and np.all(np.diff(c[1:]) > 0)
    assert np.all((u >= 0) & (u <= 1)) and np.all((c >= 0) & (c <= 1))


def _two_prop_z(x1, n1, x2, n2):
    p = (x1 + x2) / (n1 + n2)
    se = np.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    return (x1 / n1 - x2 / n2) / se


def test_more_pressure_fewer_opens_more_unsubscribes_sampled():
    """All else equal, sampled outcomes at high pressure differ significantly (99 %)."""
    rng = np.random.default_rng(11)
    n = 20000
    out = {}
    for label, pressure in (("low", 0.5), ("high", 6.0)):
        f = fat.response_multiplier(np.full(n, pressure), 4.0)
        opens = rng.random(n) < open_probability(0.22, 1.0, 1.0, 0.5, f)
        unsubs = rng.random(n) < fat.unsubscribe_probability(0.005, pressure, 4.0, 1.0)
        out[label] = (opens.sum(), unsubs.sum())
    z_open = _two_prop_z(out["low"][0], n, out["high"][0], n)
    z_unsub = _two_prop_z(out["high"][1], n, out["low"][1], n)
    crit = stats.norm.ppf(0.99)
    assert z_open > crit
    assert z_unsub > crit
