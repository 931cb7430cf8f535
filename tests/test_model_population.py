"""Population sampling: columns, segment mixture, consent, trait distributions."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from omnisim.model.population import PopulationSpec, SegmentSpec, activity_matrix, sample_population
from omnisim.model.scenario import load_scenario

Z99 = stats.norm.ppf(0.995)


def _pop(n=5000, seed=0, **kw):
    return sample_population(load_scenario("default").population, n, np.random.default_rng(seed), **kw)


def test_columns_and_ids():
    u = _pop(50)
    for col in ("user_id", "segment", "timezone", "activity", "consent_email", "consent_sms",
                "consent_push", "reach_sms", "affinity_push", "visit_rate_per_day",
                "purchase_propensity", "basket_median", "price_sensitivity",
                "fatigue_tolerance", "email_check_median_h", "is_new", "signup_offset_h"):
        assert col in u.columns
    assert u["user_id"].iloc[0] == "u000001" and u["user_id"].is_unique
    assert activity_matrix(u).shape == (50, 24)


def test_segment_shares_match_weights():
    u = _pop(6000)
    n = len(u)
    for name, w in (("loyal", 0.25), ("casual", 0.5), ("bargain", 0.25)):
        assert abs(np.mean(u["segment"] == name) - w) < Z99 * math.sqrt(w * (1 - w) / n)


def test_consent_requires_reach_and_matches_rates():
    u = _pop(6000)
    for ch in ("email", "sms", "push"):
        assert not (u[f"consent_{ch}"] & ~u[f"reach_{ch}"]).any()
    casual = u[u["segment"] == "casual"]
    p = 0.6 * 0.4  # reach_sms * consent_sms in the default scenario
    assert abs(casual["consent_sms"].mean() - p) < Z99 * math.sqrt(p * (1 - p) / len(casual))


def test_disabled_channel_is_unreachable():
    u = _pop(500, enabled_channels=("email",))
    assert not u["consent_sms"].any() and not u["consent_push"].any()
    assert u["consent_email"].any()


def test_affinity_mean_and_zero_cv():
    spec = PopulationSpec(segments=[SegmentSpec(affinity={"email": 1.5, "sms": 1, "push": 1},
                                                affinity_cv=0.5)])
    u = sample_population(spec, 8000, np.random.default_rng(1))
    a = u["affinity_email"]
    assert abs(a.mean() - 1.5) < Z99 * a.std() / math.sqrt(len(a))
    flat = sample_population(PopulationSpec(segments=[SegmentSpec(affinity_cv=0.0)]), 100,
                             np.random.default_rng(1))
    assert (flat["affinity_email"] == 1.0).all()


def test_new_users_sign_up_within_the_horizon():
    u = _pop(5000, horizon_days=10)
    new = u[u["is_new"]]
    assert abs(len(new) / len(u) - 0.1) < Z99 * math.sqrt(0.09 / len(u))
    assert new["signup_offset_h"].between(0, 240).all()
    assert (u.loc[~u["is_new"], "signup_offset_h"] <= 0).all()
    assert stats.kstest(new["signup_offset_h"] / 240, "uniform").pvalue > 0.01


def test_timezones_are_iana_and_profiles_valid():
    from zoneinfo import ZoneInfo
    u = _pop(300)
    for tz in u["timezone"].unique():
        ZoneInfo(tz)
    prof = activity_matrix(u)
    assert ((prof >= 0) & (prof <= 1)).all() and (prof.max(axis=1) > 0).all()


def test_same_seed_same_population():
    pd.testing.assert_frame_equal(_pop(200, seed=5), _pop(200, seed=5))
    assert not _pop(200, seed=5)["segment"].equals(_pop(200, seed=6)["segment"])


def test_n_users_must_be_positive():
    with pytest.raises(ValueError, match="n_users"):
        _pop(0)
