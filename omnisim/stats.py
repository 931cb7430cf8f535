"""Confidence intervals used across omnisim (comparisons, reports, tests)."""

from __future__ import annotations

import numpy as np
from scipy import stats


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided Student-t interval of independent replicates (e.g. seeds).

    Returns ``(mean, low, high)``; with fewer than two finite values the interval is the
    mean itself (no spread can be estimated).
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(x.mean())
    if len(x) < 2:
        return m, m, m
    half = float(stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return m, m - half, m + half


def wilson_ci(successes, trials, confidence: float = 0.95):
    """Wilson score interval for a binomial proportion; vectorised over arrays.

    Returns ``(rate, low, high)``; where ``trials`` is 0 all three are NaN.
    """
    k = np.asarray(successes, dtype=float)
    n = np.asarray(trials, dtype=float)
    z = stats.norm.ppf(0.5 + confidence / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 1 + z**2 / n
        centre = (p + z**2 / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    return p, centre - half, centre + half


def diff_ci(a, b, confidence: float = 0.95) -> tuple[float, float, float]:
    """Difference of means ``mean(a) - mean(b)`` with a Welch normal-approximation interval."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    d = float(a.mean() - b.mean())
    se = float(np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)))
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    return d, d - z * se, d + z * se
