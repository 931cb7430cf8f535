"""``mean_ci`` with too few values: NaN bounds (no interval), like ``mean_sd_ci``."""

from __future__ import annotations

import math

import numpy as np
import pytest

from omnisim.stats import mean_ci, mean_sd_ci


@pytest.mark.parametrize("values", [[2.5], [2.5, math.nan], [math.inf, 2.5], np.array([[2.5]])])
def test_one_finite_value_gives_the_mean_and_nan_bounds(values):
    m, lo, hi = mean_ci(values)
    assert m == 2.5
    assert math.isnan(lo) and math.isnan(hi)  # not a zero-width interval claiming certainty
    assert (m, lo, hi)[1:] == pytest.approx(mean_sd_ci([2.5])[2:], nan_ok=True)


@pytest.mark.parametrize("values", [[], [math.nan], [math.nan, -math.inf]])
def test_no_finite_value_gives_nan_everywhere(values):
    assert all(math.isnan(v) for v in mean_ci(values))


def test_two_or_more_values_unchanged():
    x = [1.0, 2.0, 6.0, math.nan]
    m, lo, hi = mean_ci(x, 0.9)
    assert (m, lo, hi) == pytest.approx(tuple(mean_sd_ci([1.0, 2.0, 6.0], 0.9)[i] for i in (0, 2, 3)))
    assert lo < m < hi
