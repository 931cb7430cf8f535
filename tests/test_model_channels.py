"""Channels: SMS segments, content limits, read delays (KS tests), open/click, delivery."""

import math

import numpy as np
import pytest
from scipy import stats

from omnisim.model import channels as chm
from omnisim.model.scenario import Scenario


@pytest.mark.parametrize("text, segments", [
    ("", 1),
    ("a" * 160, 1),
    ("a" * 161, 2),
    ("a" * 306, 2),
    ("a" * 307, 3),
    ("€" * 80, 1),          # extension chars take two septets: 160
    ("€" * 81, 2),          # 162 septets
    ("a" * 159 + "{", 2),   # 161 septets
    ("é" * 160, 1),         # é is in the GSM-7 basic set
    ("ł" * 70, 1),          # UCS-2
    ("ł" * 71, 2),
    ("ł" * 134, 2),
    ("ł" * 135, 3),
    ("a" * 69 + "ł", 1),    # one non-GSM char switches the whole message to UCS-2
    ("a" * 70 + "ł", 2),
    ("😀" * 35, 1),         # surrogate pairs: 70 UTF-16 units
    ("😀" * 36, 2),
])
def test_sms_segments(text, segments):
    assert chm.sms_segments(text) == segments


def test_sms_cost_counts_segments():
    p = Scenario().channels.sms
    assert chm.message_cost("sms", p, "a" * 161) == pytest.approx(2 * p.cost)
    assert chm.message_cost("sms", p) == pytest.approx(p.cost)


def test_content_limits_raise_clear_errors():
    sc = Scenario()
    with pytest.raises(chm.ContentLimitError, match=r"4 segments.*channels.sms.max_segments"):
        chm.check_content("sms", sc.channels.sms, text="a" * (153 * 3 + 1))
    chm.check_content("sms", sc.channels.sms, text="a" * (153 * 3))
    with pytest.raises(chm.ContentLimitError, match=r"UCS-2.*emoji"):
        chm.check_content("sms", sc.channels.sms, text="😀" * 120)
    with pytest.raises(chm.ContentLimitError, match="push title has 51 characters"):
        chm.check_content("push", sc.channels.push, title="x" * 51)
    chm.check_content("push", sc.channels.push, title="x" * 50, body="y" * 150)


N = 4000
ALPHA = 0.01


def test_sms_read_delay_is_lognormal_minutes():
    rng = np.random.default_rng(1)
    d = chm.sms_read_delay_h(rng, N, median_min=3.0, sigma=1.0) * 60  # minutes
    assert stats.kstest(d, stats.lognorm(s=1.0, scale=3.0).cdf).pvalue > ALPHA
    # the test can fail: a wrong median is rejected
    assert stats.kstest(d, stats.lognorm(s=1.0, scale=5.0).cdf).pvalue < ALPHA
    assert np.mean(d < 10) > 0.85  # "read within minutes"


def test_push_read_delay_when_active_is_exponential():
    rng = np.random.default_rng(2)
    p = Scenario().channels.push
    d = chm.read_delay_h(rng, "push", p, np.full(N, 12.0), np.ones(24), 2.0)
    assert stats.kstest(d, stats.expon(scale=p.read_median_min / 60).cdf).pvalue > ALPHA
    assert stats.kstest(d, stats.expon(scale=2 * p.read_median_min / 60).cdf).pvalue < ALPHA


def test_email_read_delay_when_active_is_lognormal_hours():
    rng = np.random.default_rng(3)
    p = Scenario().channels.email
    d = chm.read_delay_h(rng, "email", p, np.full(N, 9.0), np.ones(24), np.full(N, 2.5))
    assert stats.kstest(d, stats.lognorm(s=p.read_sigma, scale=2.5).cdf).pvalue > ALPHA


def test_wait_until_active_lands_in_the_active_hour():
    rng = np.random.default_rng(4)
    prof = np.zeros(24)
    prof[10] = 1.0
    w = chm.wait_until_active_h(rng, np.full(N, 22.5), prof)
    # from 22:30 the next active hour starts in 11.5 h; the wait is uniform within it
    assert np.all((w >= 11.5) & (w < 12.5))
    assert stats.kstest(w - 11.5, "uniform").pvalue > ALPHA
    # active now (prob 1) → no wait
    assert np.all(chm.wait_until_active_h(rng, np.full(10, 10.2), prof) == 0)


def test_wait_until_active_is_geometric_per_hour():
    rng = np.random.default_rng(5)
    w = chm.wait_until_active_h(rng, np.full(N, 3.0), np.full(24, 0.3))
    assert abs(np.mean(w == 0) - 0.3) < stats.norm.ppf(0.995) * math.sqrt(0.3 * 0.7 / N)
    # from 03:00, inactive now: the k-th next hour is the first active one with prob
    # 0.3 * 0.7**(k-1), the next hour starts in 1 h, so the wait is k - 1 + 1 + U(0, 1) hours
    k = np.floor(w[w > 0]).astype(int)
    observed = np.array([np.sum(k == i) for i in range(1, 7)] + [np.sum(k >= 7)])
    probs = np.array([0.3 * 0.7 ** (i - 1) for i in range(1, 7)] + [0.7 ** 6])
    assert stats.chisquare(observed, probs * observed.sum()).pvalue > ALPHA


def test_open_and_click_probability_formulas():
    assert chm.open_probability(0.2, 1.0, 1.0, 0.5, 1.0) == pytest.approx(0.2)
    assert chm.open_probability(0.2, 1.0, 0.0, 0.5, 1.0) == pytest.approx(0.1)
    assert chm.open_probability(0.2, 2.0, 1.0, 0.0, 0.5) == pytest.approx(0.2)
    assert chm.open_probability(0.9, 3.0, 1.0, 0.0, 1.0) == 1.0  # clipped
    np.testing.assert_allclose(chm.click_probability([0.1, 0.1], [1.0, 2.0], [1.0, 0.5]),
                               [0.1, 0.1])


def test_delivery_outcome_frequencies():
    rng = np.random.default_rng(6)
    n = 50000
    o = chm.delivery_outcome(rng, 0.05, 0.02, size=n)
    for code, p in ((chm.BOUNCED, 0.05), (chm.FAILED, 0.02), (chm.DELIVERED, 0.93)):
        half = stats.norm.ppf(0.995) * math.sqrt(p * (1 - p) / n)
        assert abs(np.mean(o == code) - p) < half
