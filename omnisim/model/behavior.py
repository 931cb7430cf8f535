"""Spontaneous behaviour: a point process of site sessions per user, and the funnel within.

**Sessions** (``visit`` events, channel ``web``) arrive as an inhomogeneous Poisson process
with rate, per hour, :func:`visit_rate_h`::

    lambda(t) = visit_rate_per_day / 24 * a(h) / mean(a) * f_act * (1 + boost(t))

where ``a(h)`` is the user's activity in local hour ``h`` (so the daily total equals
``visit_rate_per_day``), ``f_act = exp(-activity_strength * P / tolerance)`` the fatigue
effect and ``boost(t) = click_visit_boost * 2 ** (-(t - t_click) / click_boost_half_life_h)``
after the last click on a message. Engines sample it by thinning against
:func:`visit_rate_bound_h`.

**Within a session** (:func:`session_funnel`): a ``product_view`` with probability
``view_prob``; given a view, a ``cart_add`` with probability ``cart_prob``; given a cart, a
``purchase`` with probability :func:`purchase_probability`, else a ``cart_abandon``
``abandon_delay_h`` later. A session that clicks through from a message always views.

**Inactivity**: no session for ``inactivity_days`` → an ``inactivity`` trigger (not a log
event), once per inactive spell. **Churn**: a baseline hazard ``churn_rate_per_day`` plus
fatigue-driven churn per message (:mod:`omnisim.model.fatigue`). **Sign-up**: new users
sign up at their ``signup_offset_h`` (see :mod:`omnisim.model.population`).

Defaults (assumptions, e-commerce-like): 0.3 visits/day median, 70 % of sessions view a
product, 12 % of views add to cart, 30 % of carts convert (so ~2.5 % of sessions buy —
typical e-commerce conversion is 2-3 %), 70 % of carts abandoned (Baymard Institute's
cart-abandonment average is ~70 %).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from omnisim.model._params import num, prob

__all__ = ["BehaviorParams", "visit_rate_h", "visit_rate_bound_h", "click_boost",
           "purchase_probability", "session_funnel", "purchase_value"]


@dataclass(frozen=True)
class BehaviorParams:
    """Behaviour parameters (see the module docstring)."""

    view_prob: float = prob(0.7)
    cart_prob: float = prob(0.12)
    abandon_delay_h: float = num(1.0, lo=0.0)
    #: relative increase of purchase probability when a cart is open from an earlier visit
    cart_return_boost: float = num(1.0, lo=0.0)
    #: relative increase of the visit rate just after a click
    click_visit_boost: float = num(3.0, lo=0.0)
    click_boost_half_life_h: float = num(12.0, lo=0.0, lo_open=True)
    #: relative increase of purchase probability within the click boost (× price_sensitivity×2)
    click_purchase_boost: float = num(0.5, lo=0.0)
    basket_sigma: float = num(0.5, lo=0.0)
    inactivity_days: float = num(14.0, lo=0.0, lo_open=True)
    churn_rate_per_day: float = num(0.0005, lo=0.0)
    #: minutes from a click to the landing session's product view
    click_to_view_min: float = num(1.0, lo=0.0)


def click_boost(hours_since_click: ArrayLike, boost: float, half_life_h: float) -> np.ndarray:
    """Relative visit-rate boost after a click: ``boost * 2 ** (-dt / half_life_h)``;
    0 where ``hours_since_click`` is NaN (no click yet) or negative."""
    return click_boost_core(np.asarray(hours_since_click, dtype=float), boost, half_life_h)


def click_boost_core(dt: Any, boost: float, half_life_h: float) -> Any:
    """:func:`click_boost` on a float or a float array (the compiled engine calls this)."""
    # exp2(-inf) = 0 where no click yet (dt = +inf); NaN and negative dt give 0 (ufuncs
    # only, so that compiled code on floats allocates nothing)
    return boost * (np.exp2(-np.fmax(dt, 0.0) / half_life_h) * (dt >= 0))


def visit_rate_h(visit_rate_per_day: ArrayLike, activity_now: ArrayLike,
                 activity_mean: ArrayLike, fatigue_mult: ArrayLike,
                 boost: ArrayLike) -> np.ndarray:
    """Session rate per hour (see the module docstring)."""
    f = lambda x: np.asarray(x, dtype=float)  # noqa: E731
    return visit_rate_core(f(visit_rate_per_day), f(activity_now), f(activity_mean),
                           f(fatigue_mult), f(boost))


def visit_rate_core(visit_rate_per_day: Any, activity_now: Any, activity_mean: Any,
                    fatigue_mult: Any, boost: Any) -> Any:
    """:func:`visit_rate_h` on floats or float arrays (the compiled engine calls this)."""
    return (visit_rate_per_day / 24.0 * activity_now / np.maximum(activity_mean, 1e-12)
            * fatigue_mult * (1.0 + boost))


def visit_rate_bound_h(visit_rate_per_day: ArrayLike, activity_max: ArrayLike,
                       activity_mean: ArrayLike, max_boost: float) -> np.ndarray:
    """Upper bound of :func:`visit_rate_h` over time (for thinning)."""
    return visit_rate_h(visit_rate_per_day, activity_max, activity_mean, 1.0, max_boost)


def purchase_probability(propensity: ArrayLike, fatigue_mult: ArrayLike,
                         cart_open: ArrayLike, boosted: ArrayLike, price_sensitivity: ArrayLike,
                         params: BehaviorParams) -> np.ndarray:
    """Probability that a cart add converts::

        clip(propensity * f * (1 + cart_return_boost * cart_open)
             * (1 + click_purchase_boost * 2 * price_sensitivity * boosted), 0, 1)

    ``cart_open`` / ``boosted`` are 0/1 (a cart left from an earlier visit; within a click's
    boost window, i.e. boost factor > 1 % of its peak).
    """
    f = lambda x: np.asarray(x, dtype=float)  # noqa: E731
    return purchase_probability_core(f(propensity), f(fatigue_mult), f(cart_open), f(boosted),
                                     f(price_sensitivity), params.cart_return_boost,
                                     params.click_purchase_boost)


def purchase_probability_core(propensity: Any, fatigue_mult: Any, cart_open: Any, boosted: Any,
                              price_sensitivity: Any, cart_return_boost: float,
                              click_purchase_boost: float) -> Any:
    """:func:`purchase_probability` on floats or float arrays, parameters unpacked (the
    compiled engine calls this)."""
    p = (propensity * fatigue_mult * (1.0 + cart_return_boost * cart_open)
         * (1.0 + click_purchase_boost * 2.0 * price_sensitivity * boosted))
    return np.minimum(np.maximum(p, 0.0), 1.0)


def session_funnel(rng: np.random.Generator, p_purchase: ArrayLike, params: BehaviorParams,
                   force_view: ArrayLike = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample ``(viewed, carted, purchased)`` booleans for sessions (arrays of one shape)."""
    pp = np.atleast_1d(np.asarray(p_purchase, dtype=float))
    u = rng.random((3, pp.size))
    viewed = (u[0] < params.view_prob) | np.broadcast_to(np.asarray(force_view, dtype=bool), pp.shape)
    carted = viewed & (u[1] < params.cart_prob)
    purchased = carted & (u[2] < pp)
    return viewed, carted, purchased


def session_funnel_one(rng: np.random.Generator, p_purchase: float, view_prob: float,
                       cart_prob: float, force_view: bool) -> tuple[bool, bool, bool]:
    """One session's :func:`session_funnel` (the compiled engine's per-session form: three
    uniforms, the same thresholds)."""
    u0, u1, u2 = rng.random(), rng.random(), rng.random()
    viewed = u0 < view_prob or force_view
    carted = viewed and u1 < cart_prob
    return viewed, carted, carted and u2 < p_purchase


def purchase_value_one(rng: np.random.Generator, basket_median: float, sigma: float) -> float:
    """One order's :func:`purchase_value` (currency)."""
    return basket_median * np.exp(sigma * rng.standard_normal())


def purchase_value(rng: np.random.Generator, basket_median: ArrayLike, sigma: float) -> np.ndarray:
    """Order value (currency): lognormal with the user's median and log-sd ``sigma``."""
    med = np.atleast_1d(np.asarray(basket_median, dtype=float))
    return med * np.exp(sigma * rng.standard_normal(med.size))
