"""Users and their traits, sampled from a mixture of segments.

:func:`sample_population` returns one row per user. Columns (units in brackets):

==========================  ============================================================
``user_id``                 ``u000001`` …
``segment``                 segment name
``timezone``                IANA timezone name
``activity``                list of 24 probabilities: active in each *local* hour
``reach_<ch>``              has an address / the app on channel ``ch`` (bool)
``consent_<ch>``            reachable **and** opted in on ``ch`` (bool)
``affinity_<ch>``           multiplier of the channel's open/click probabilities (mean 1)
``visit_rate_per_day``      spontaneous site visits per day at average activity [1/day]
``purchase_propensity``     probability of buying given a cart add (rested user)
``basket_median``           median order value [currency]
``price_sensitivity``       in [0, 1]: how much a clicked message raises purchase odds
``fatigue_tolerance``       pressure at which response falls to e^-1 [message units]
``email_check_median_h``    median hours from "active" to reading an email [h]
``is_new``                  signs up during the horizon (bool)
``signup_offset_h``         signup time relative to the scenario start [h]; < 0: before
``last_visit_days_ago``     days since the last visit (or the sign-up, if later) at the start
                            (existing users; 0 for new ones) [day]
==========================  ============================================================

Trait distributions per segment: affinities gamma with mean ``affinity[ch]`` and
coefficient of variation ``affinity_cv`` (cv 0 → every user exactly the mean);
``visit_rate_per_day``, ``basket_median``, ``fatigue_tolerance`` and ``email_check_median_h``
lognormal around the segment's median with the given log-sd; ``purchase_propensity`` and
``price_sensitivity`` beta with the given mean and concentration (``a + b``); the activity
profile is the segment's profile shifted by a per-user whole number of hours (normal,
sd ``activity_shift_sd_h``, rounded).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from omnisim.model._params import num, prob

__all__ = ["ACTIVITY_PROFILES", "SegmentSpec", "PopulationSpec", "sample_population",
           "activity_matrix", "MSG_CHANNELS"]

MSG_CHANNELS: tuple[str, ...] = ("email", "sms", "push")

#: Named hourly activity profiles (probability of being active in each local hour 0..23).
#: Assumption, shaped after published smartphone-usage diurnal curves: low at night, a
#: morning rise, a lunch bump and an evening peak.
ACTIVITY_PROFILES: dict[str, tuple[float, ...]] = {
    "daytime": (0.03, 0.02, 0.02, 0.02, 0.02, 0.04, 0.12, 0.30, 0.40, 0.40, 0.40, 0.45,
                0.55, 0.45, 0.40, 0.40, 0.40, 0.45, 0.55, 0.60, 0.60, 0.50, 0.30, 0.10),
    "evening": (0.10, 0.05, 0.03, 0.02, 0.02, 0.02, 0.05, 0.15, 0.20, 0.20, 0.20, 0.25,
                0.35, 0.25, 0.20, 0.20, 0.25, 0.35, 0.50, 0.65, 0.70, 0.70, 0.55, 0.30),
    "night_owl": (0.45, 0.35, 0.20, 0.10, 0.05, 0.03, 0.03, 0.05, 0.10, 0.15, 0.20, 0.25,
                  0.30, 0.30, 0.30, 0.30, 0.35, 0.40, 0.45, 0.50, 0.55, 0.60, 0.60, 0.55),
    "flat": (1.0,) * 24,
}


def _uniform_channels(v: float) -> dict[str, float]:
    return {ch: v for ch in MSG_CHANNELS}


@dataclass(frozen=True)
class SegmentSpec:
    """One segment of the population mixture (see the module docstring for distributions)."""

    name: str = "all"
    weight: float = num(1.0, lo=0.0, lo_open=True)
    timezones: dict[str, float] = field(default_factory=lambda: {"UTC": 1.0},
                                        metadata={"lo": 0.0})
    #: a name from :data:`ACTIVITY_PROFILES` or a list of 24 probabilities
    activity: str | list[float] = "daytime"
    activity_shift_sd_h: float = num(1.0, lo=0.0)
    reach: dict[str, float] = field(default_factory=lambda: _uniform_channels(1.0),
                                    metadata={"lo": 0.0, "hi": 1.0, "keys": MSG_CHANNELS})
    consent: dict[str, float] = field(default_factory=lambda: _uniform_channels(1.0),
                                      metadata={"lo": 0.0, "hi": 1.0, "keys": MSG_CHANNELS})
    affinity: dict[str, float] = field(default_factory=lambda: _uniform_channels(1.0),
                                       metadata={"lo": 0.0, "keys": MSG_CHANNELS})
    affinity_cv: float = num(0.3, lo=0.0)
    visit_rate_per_day: float = num(0.3, lo=0.0)
    visit_rate_sigma: float = num(0.5, lo=0.0)
    purchase_propensity: float = prob(0.3)
    purchase_concentration: float = num(20.0, lo=0.0, lo_open=True)
    basket_median: float = num(50.0, lo=0.0, lo_open=True)
    basket_sigma: float = num(0.4, lo=0.0)
    price_sensitivity: float = prob(0.3)
    price_concentration: float = num(10.0, lo=0.0, lo_open=True)
    fatigue_tolerance: float = num(4.0, lo=0.0, lo_open=True)
    fatigue_tolerance_sigma: float = num(0.4, lo=0.0)
    email_check_median_h: float = num(2.0, lo=0.0, lo_open=True)
    email_check_sigma: float = num(0.7, lo=0.0)

    def profile(self) -> np.ndarray:
        """The segment's 24-hour activity profile as an array."""
        if isinstance(self.activity, str):
            return np.asarray(ACTIVITY_PROFILES[self.activity], dtype=float)
        return np.asarray(self.activity, dtype=float)


@dataclass(frozen=True)
class PopulationSpec:
    """The population: a mixture of segments, and the share of users who sign up during
    the horizon (the rest pre-exist)."""

    new_user_share: float = prob(0.1)
    #: pre-existing users signed up uniformly within this many days before the start
    tenure_max_days: float = num(730.0, lo=0.0)
    segments: list[SegmentSpec] = field(default_factory=lambda: [SegmentSpec()])


def _gamma_mean_cv(rng: np.random.Generator, mean: float, cv: float, n: int) -> np.ndarray:
    if cv <= 0 or mean <= 0:
        return np.full(n, float(mean))
    k = 1.0 / (cv * cv)
    return rng.gamma(k, mean / k, size=n)


def _beta_mean(rng: np.random.Generator, mean: float, conc: float, n: int) -> np.ndarray:
    if mean <= 0.0 or mean >= 1.0:
        return np.full(n, float(mean))
    return rng.beta(mean * conc, (1.0 - mean) * conc, size=n)


def _lognormal(rng: np.random.Generator, median: float, sigma: float, n: int) -> np.ndarray:
    return median * np.exp(sigma * rng.standard_normal(n)) if sigma > 0 else np.full(n, median)


def sample_population(spec: PopulationSpec, n_users: int, rng: np.random.Generator, *,
                      horizon_days: float = 30.0,
                      enabled_channels: tuple[str, ...] = MSG_CHANNELS) -> pd.DataFrame:
    """Sample ``n_users`` users from ``spec`` (columns in the module docstring).

    New users (share ``spec.new_user_share``) sign up uniformly over ``[0, horizon_days)``;
    channels not in ``enabled_channels`` are unreachable for everyone.
    """
    if n_users < 1:
        raise ValueError(f"n_users must be >= 1, got {n_users}")
    weights = np.array([s.weight for s in spec.segments], dtype=float)
    seg_idx = rng.choice(len(spec.segments), size=n_users, p=weights / weights.sum())
    cols: dict[str, np.ndarray] = {}
    n_ch = {ch: np.zeros(n_users) for ch in MSG_CHANNELS}
    out = {name: np.empty(n_users, dtype=object) for name in ("segment", "timezone", "activity")}
    reach = {ch: np.zeros(n_users, dtype=bool) for ch in MSG_CHANNELS}
    consent = {ch: np.zeros(n_users, dtype=bool) for ch in MSG_CHANNELS}
    floats = {name: np.zeros(n_users) for name in (
        "visit_rate_per_day", "purchase_propensity", "basket_median", "price_sensitivity",
        "fatigue_tolerance", "email_check_median_h")}
    for k, seg in enumerate(spec.segments):
        idx = np.flatnonzero(seg_idx == k)
        m = idx.size
        if m == 0:
            continue
        out["segment"][idx] = seg.name
        tz_names = list(seg.timezones)
        tz_w = np.array([seg.timezones[t] for t in tz_names], dtype=float)
        out["timezone"][idx] = np.asarray(tz_names, dtype=object)[
            rng.choice(len(tz_names), size=m, p=tz_w / tz_w.sum())]
        base = seg.profile()
        shifts = np.rint(rng.normal(0.0, seg.activity_shift_sd_h, size=m)).astype(int) \
            if seg.activity_shift_sd_h > 0 else np.zeros(m, dtype=int)
        # row i is np.roll(base, shifts[i]) (as a list of floats); shifts are whole hours, so
        # there are at most 24 distinct rows: built once each, and users with the same shift
        # share the (read-only) list
        uniq, inv = np.unique(shifts % 24, return_inverse=True)
        rows = np.empty(uniq.size, dtype=object)
        for i, row in enumerate(np.asarray(base, dtype=float)[
                (np.arange(24)[None, :] - uniq[:, None]) % 24].tolist()):
            rows[i] = row
        out["activity"][idx] = rows[inv.ravel()]
        for ch in MSG_CHANNELS:
            on = ch in enabled_channels
            r = rng.random(m) < seg.reach.get(ch, 1.0)
            c = rng.random(m) < seg.consent.get(ch, 1.0)
            reach[ch][idx] = r & on
            consent[ch][idx] = r & c & on
            n_ch[ch][idx] = _gamma_mean_cv(rng, seg.affinity.get(ch, 1.0), seg.affinity_cv, m)
        floats["visit_rate_per_day"][idx] = _lognormal(rng, seg.visit_rate_per_day,
                                                       seg.visit_rate_sigma, m)
        floats["purchase_propensity"][idx] = _beta_mean(rng, seg.purchase_propensity,
                                                        seg.purchase_concentration, m)
        floats["basket_median"][idx] = _lognormal(rng, seg.basket_median, seg.basket_sigma, m)
        floats["price_sensitivity"][idx] = _beta_mean(rng, seg.price_sensitivity,
                                                      seg.price_concentration, m)
        floats["fatigue_tolerance"][idx] = _lognormal(rng, seg.fatigue_tolerance,
                                                      seg.fatigue_tolerance_sigma, m)
        floats["email_check_median_h"][idx] = _lognormal(rng, seg.email_check_median_h,
                                                         seg.email_check_sigma, m)
    is_new = rng.random(n_users) < spec.new_user_share
    signup = np.where(is_new, rng.uniform(0.0, horizon_days * 24.0, n_users),
                      -rng.uniform(0.0, spec.tenure_max_days * 24.0, n_users))
    rate = np.maximum(floats["visit_rate_per_day"], 1e-9)
    last_visit = np.where(is_new, 0.0, rng.exponential(1.0 / rate))
    cols["user_id"] = np.array([f"u{i + 1:06d}" for i in range(n_users)], dtype=object)
    df = pd.DataFrame({
        "user_id": cols["user_id"], "segment": out["segment"], "timezone": out["timezone"],
        "activity": out["activity"],
        **{f"reach_{ch}": reach[ch] for ch in MSG_CHANNELS},
        **{f"consent_{ch}": consent[ch] for ch in MSG_CHANNELS},
        **{f"affinity_{ch}": n_ch[ch] for ch in MSG_CHANNELS},
        **floats,
        "is_new": is_new, "signup_offset_h": signup,
        # time since the last visit *or* the sign-up, whichever is later: never before sign-up
        "last_visit_days_ago": np.minimum(last_visit, np.maximum(-signup, 0.0) / 24.0),
    })
    df["user_id"] = df["user_id"].astype("string")
    df["segment"] = df["segment"].astype("string")
    df["timezone"] = df["timezone"].astype("string")
    return df


def activity_matrix(users: pd.DataFrame) -> np.ndarray:
    """The users' activity profiles as an ``(n_users, 24)`` float array."""
    return np.array(users["activity"].tolist(), dtype=float).reshape(len(users), 24)
