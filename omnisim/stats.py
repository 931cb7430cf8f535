"""Confidence intervals used across omnisim (comparisons, reports, OPE, tests).

This module is the one home of every interval: :mod:`omnisim.analysis`, the report
notebooks, :mod:`omnisim.experiment` and :mod:`omnisim.bandit_data` call these.

``confidence`` is always the two-sided level in (0, 1), e.g. 0.95.

- :func:`wilson_ci` — Wilson score interval for a proportion (vectorised);
- :func:`mean_sd_ci` / :func:`mean_ci` — Student t interval for a mean;
- :func:`wald_diff_ci` — normal (Wald, unpooled) interval and z-test for a difference of
  proportions;
- :func:`welch_diff_ci` — Welch t interval and test for a difference of means;
- :func:`diff_ci` — difference of means with a Welch *normal* approximation (seeds);
- :func:`paired_p_value` — two-sided one-sample t-test of paired differences;
- :func:`holm` — Holm's step-down adjustment of a family of p-values.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

__all__ = ["check_confidence", "diff_ci", "holm", "mean_ci", "mean_ci_from_sums", "mean_sd_ci",
           "paired_p_value", "wald_diff_ci", "welch_diff_ci", "wilson_ci", "z_value"]


def check_confidence(confidence: float) -> float:
    """Return ``confidence`` if it is in (0, 1), else raise ``ValueError`` saying so."""
    if not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), e.g. 0.95; got {confidence!r}")
    return float(confidence)


def z_value(confidence: float) -> float:
    """Two-sided standard-normal quantile for ``confidence`` (1.96 for 0.95)."""
    return float(stats.norm.ppf(0.5 + check_confidence(confidence) / 2))


def mean_sd_ci(values: Any, confidence: float = 0.95) -> tuple[float, float, float, float]:
    """``(mean, sd, low, high)`` of ``values``: Student t interval, sd with ddof=1.

    Non-finite values are an error (they would silently shift the mean). With no value
    everything is NaN; with one value the mean is returned and sd/low/high are NaN.
    """
    check_confidence(confidence)
    a = np.asarray(values, dtype="float64").ravel()
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        raise ValueError(f"values must be finite; values[{bad[0]}] is {float(a[bad[0]])!r} "
                         f"({bad.size} non-finite value(s)); drop them first (mean_ci does)")
    n = a.size
    if n == 0:
        return (math.nan, math.nan, math.nan, math.nan)
    m = float(a.mean())
    if n < 2:
        return (m, math.nan, math.nan, math.nan)
    sd = float(a.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return (m, sd, m - half, m + half)


def mean_ci(values: Any, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided Student-t interval of independent replicates (e.g. seeds).

    Returns ``(mean, low, high)``; non-finite values are dropped; with fewer than two finite
    values the bounds are NaN (no spread can be estimated, so no interval exists — never a
    zero-width one that would read as certainty), as in :func:`mean_sd_ci`; with none the
    mean is NaN too.
    """
    x = np.asarray(values, dtype=float).ravel()
    m, _, lo, hi = mean_sd_ci(x[np.isfinite(x)], confidence)
    return m, lo, hi


def wilson_ci(successes: Any, trials: Any, confidence: float = 0.95):
    """Wilson score interval for a binomial proportion; vectorised over arrays.

    Returns ``(rate, low, high)`` (floats for scalar input, arrays otherwise); where
    ``trials`` is 0 all three are NaN. ``successes`` outside ``[0, trials]`` is a ``ValueError``. ``low`` is exactly 0 when there is no success and
    ``high`` exactly 1 when every trial succeeded.
    """
    z = z_value(confidence)
    k = np.asarray(successes, dtype=float)
    n = np.asarray(trials, dtype=float)
    bad = (k < 0) | (k > n)
    if np.any(bad):
        i = np.flatnonzero(np.broadcast_to(bad, np.broadcast(k, n).shape).ravel())[0]
        kk, nn = (np.broadcast_to(v, bad.shape).ravel()[i] for v in (k, n))
        raise ValueError(f"successes must be in [0, trials]; got {kk:g} successes in {nn:g} trials"
                         + (f" at index {i}" if np.ndim(bad) else ""))
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 1 + z**2 / n
        centre = (p + z**2 / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
        lo = np.where(k <= 0, 0.0, np.maximum(0.0, centre - half))
        hi = np.where(k >= n, 1.0, np.minimum(1.0, centre + half))
    bad = ~(n > 0)
    p, lo, hi = (np.where(bad, np.nan, v) for v in (p, lo, hi))
    if p.ndim == 0:
        return float(p), float(lo), float(hi)
    return p, lo, hi


def wald_diff_ci(k1: float, n1: float, k0: float, n0: float,
                 confidence: float = 0.95) -> tuple[float, float, float, float]:
    """Difference of proportions ``k1/n1 - k0/n0``: ``(diff, low, high, p_value)``.

    Normal (Wald, unpooled) interval ``diff ± z·sqrt(p1(1-p1)/n1 + p0(1-p0)/n0)`` and the
    matching two-sided z-test; low/high/p are NaN when the standard error is 0.
    """
    z = z_value(confidence)
    if n1 <= 0 or n0 <= 0:
        return (math.nan,) * 4
    p1, p0 = k1 / n1, k0 / n0
    d = p1 - p0
    se = math.sqrt(p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0)
    if se <= 0:
        return (d, math.nan, math.nan, math.nan)
    return (d, d - z * se, d + z * se, float(2 * stats.norm.sf(abs(d) / se)))


def welch_diff_ci(a: Any, b: Any, confidence: float = 0.95) -> tuple[float, float, float, float]:
    """Difference of means ``mean(a) - mean(b)``: ``(diff, low, high, p_value)``, Welch t.

    Degrees of freedom by Welch–Satterthwaite; low/high/p are NaN when either side has
    fewer than two values or both variances are 0.
    """
    check_confidence(confidence)
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.size == 0 or b.size == 0:
        return (math.nan,) * 4
    d = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return (d, math.nan, math.nan, math.nan)
    v1, v0 = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(v1 + v0)
    if se <= 0:
        return (d, math.nan, math.nan, math.nan)
    dof = (v1 + v0) ** 2 / (v1 ** 2 / (a.size - 1) + v0 ** 2 / (b.size - 1))
    q = float(stats.t.ppf(0.5 + confidence / 2, dof))
    return (d, d - q * se, d + q * se, float(2 * stats.t.sf(abs(d) / se, dof)))


def diff_ci(a: Any, b: Any, confidence: float = 0.95) -> tuple[float, float, float]:
    """Difference of means ``mean(a) - mean(b)`` with a Welch normal-approximation interval."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    d = float(a.mean() - b.mean())
    se = float(np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)))
    z = z_value(confidence)
    return d, d - z * se, d + z * se


def mean_ci_from_sums(n: Any, total: Any, total_sq: Any, confidence: float = 0.95):
    """Student t interval for a mean from its sufficient statistics; vectorised.

    ``n`` values with sum ``total`` and sum of squares ``total_sq`` (e.g. aggregated in SQL)
    give ``(mean, sd, low, high)`` exactly as :func:`mean_sd_ci` on the values would (up to
    rounding); NaN where ``n`` < 2 (mean NaN where ``n`` == 0).
    """
    check_confidence(confidence)
    n = np.asarray(n, dtype=float)
    s = np.asarray(total, dtype=float)
    ss = np.asarray(total_sq, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = s / n
        var = np.maximum(ss - n * m**2, 0.0) / (n - 1)
        sd = np.where(n >= 2, np.sqrt(var), np.nan)
        q = np.where(n >= 2, stats.t.ppf(0.5 + confidence / 2, np.maximum(n - 1, 1)), np.nan)
        half = q * sd / np.sqrt(n)
    m = np.where(n > 0, m, np.nan)
    return m, sd, m - half, m + half


def paired_p_value(differences: Any) -> float:
    """Two-sided p-value of a one-sample t-test that paired ``differences`` have mean 0.

    NaN with fewer than two differences; with no spread, 0 if the mean is not 0, else 1.
    """
    d = np.asarray(differences, dtype="float64").ravel()
    d = d[np.isfinite(d)]
    if d.size < 2:
        return math.nan
    if float(d.std(ddof=1)) == 0.0:
        return 0.0 if float(d.mean()) != 0.0 else 1.0
    return float(stats.ttest_1samp(d, 0.0).pvalue)


def holm(p_values: Any) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error), in the input order.

    The i-th smallest p (0-based) is multiplied by ``m - i``, made non-decreasing, capped
    at 1; NaN entries stay NaN and do not count towards ``m``.
    """
    p = np.asarray(p_values, dtype="float64").ravel()
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out[order] = adjusted
    return out
