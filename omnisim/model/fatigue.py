"""Marketing pressure ("fatigue"): accumulation, decay, effect on response and opt-out.

State per user is one number, the **pressure** ``P`` (dimensionless, "message units"),
and the time it was last updated. The functional forms (all vectorised over numpy arrays;
scalars work too):

* **accumulation** — each message sent on channel ``c`` adds ``weight[c]``
  (defaults: email 1, push 0.5, sms 2; assumption: an SMS interrupts more than an email,
  a push less — consistent with SMS's higher opt-out rates per message in industry reports);
* **decay** — exponential with half-life ``half_life_h`` (default 72 h):
  ``P(t + dt) = P(t) * 2 ** (-dt / half_life_h)``. So pressure recovers fully when messaging
  stops (after 10 half-lives, < 0.1 % is left). Assumption: annoyance fades over days;
  three days is between the "one message a day feels a lot" and "a weekly newsletter feels
  fine" folklore of CRM practitioners;
* **effect on response** — open / click / purchase probabilities and behaviour rates are
  multiplied by ``exp(-strength * P / tolerance)`` where ``tolerance`` is a per-user trait
  (median 4 message units). A user at pressure equal to their tolerance responds at
  ``e^-1 ≈ 37 %`` of their rested rate (strength 1). Exponential rather than logistic: it
  is 1 at zero pressure (so configured probabilities are the rested user's), monotone, and
  has one parameter;
* **unsubscribe hazard** — per delivered message, ``min(1, base * (1 + unsubscribe_gain * P
  / tolerance))``: linear in relative pressure (default gain 1, so at pressure = tolerance
  the unsubscribe probability doubles);
* **churn hazard** — per delivered message, ``churn_gain * (P / tolerance) ** 2``
  (default gain 0.002): negligible at low pressure, quickly felt when users are
  over-messaged (assumption; quadratic so that moderate programs barely churn anyone).

The pressure an effect uses is the pressure *before* the message in question is added, so
that a rested user's first message responds at the configured probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from omnisim.model._params import num

__all__ = [
    "FatigueParams", "decay", "add_message", "response_multiplier",
    "unsubscribe_probability", "churn_probability", "pressure_after",
]


def _default_weights() -> dict[str, float]:
    return {"email": 1.0, "sms": 2.0, "push": 0.5}


@dataclass(frozen=True)
class FatigueParams:
    """Fatigue model parameters (see the module docstring for the forms).

    Attributes
    ----------
    enabled : bool
        ``False`` switches every effect off (multiplier 1, no pressure-driven unsubscribe
        or churn); pressure is still tracked.
    half_life_h : float
        Half-life of pressure decay, hours.
    weights : dict[str, float]
        Pressure added per message, by channel (message units).
    response_strength : float
        Strength of the effect on open / click / purchase probabilities.
    activity_strength : float
        Strength of the effect on spontaneous behaviour rates (visits).
    unsubscribe_gain : float
        Relative increase of the per-message unsubscribe probability per unit of
        ``pressure / tolerance``.
    churn_gain : float
        Per-message churn probability at ``pressure == tolerance``.
    """

    enabled: bool = True
    half_life_h: float = num(72.0, lo=0.0, lo_open=True)
    weights: dict[str, float] = field(default_factory=_default_weights,
                                      metadata={"lo": 0.0, "keys": ("email", "sms", "push")})
    response_strength: float = num(1.0, lo=0.0)
    activity_strength: float = num(0.5, lo=0.0)
    unsubscribe_gain: float = num(1.0, lo=0.0)
    churn_gain: float = num(0.002, lo=0.0, hi=1.0)


def decay(pressure: ArrayLike, dt_h: ArrayLike, half_life_h: float) -> np.ndarray:
    """Pressure after ``dt_h`` hours without messages: ``P * 2 ** (-dt_h / half_life_h)``."""
    return decay_core(np.asarray(pressure, dtype=float), np.asarray(dt_h, dtype=float), half_life_h)


def decay_core(pressure: Any, dt_h: Any, half_life_h: float) -> Any:
    """:func:`decay` on floats or float arrays (the compiled engine calls this)."""
    return pressure * np.exp2(-dt_h / half_life_h)


def add_message(pressure: ArrayLike, weight: ArrayLike) -> np.ndarray:
    """Pressure just after one more message of pressure ``weight``."""
    return np.asarray(pressure, dtype=float) + np.asarray(weight, dtype=float)


def pressure_after(send_times_h: ArrayLike, weights: ArrayLike, t_h: float,
                   half_life_h: float) -> float:
    """Closed form: pressure at ``t_h`` from messages sent at ``send_times_h`` (hours),
    starting from zero — ``sum_i w_i 2 ** (-(t - s_i) / half_life_h)`` over ``s_i <= t``.
    Used by tests to check the incremental update against the formula."""
    s = np.asarray(send_times_h, dtype=float)
    w = np.broadcast_to(np.asarray(weights, dtype=float), s.shape)
    past = s <= t_h
    return float(np.sum(w[past] * np.exp2(-(t_h - s[past]) / half_life_h)))


def response_multiplier(pressure: ArrayLike, tolerance: ArrayLike,
                        strength: float = 1.0) -> np.ndarray:
    """Factor in (0, 1] applied to response probabilities: ``exp(-strength * P / tol)``."""
    return response_multiplier_core(np.asarray(pressure, dtype=float),
                                    np.asarray(tolerance, dtype=float), strength)


def response_multiplier_core(pressure: Any, tolerance: Any, strength: float) -> Any:
    """:func:`response_multiplier` on floats or float arrays (the compiled engine calls this)."""
    return np.exp(-strength * pressure / tolerance)


def unsubscribe_probability(base: ArrayLike, pressure: ArrayLike, tolerance: ArrayLike,
                            gain: float = 1.0) -> np.ndarray:
    """Per delivered message: ``min(1, base * (1 + gain * P / tol))``."""
    return unsubscribe_probability_core(np.asarray(base, dtype=float),
                                        np.asarray(pressure, dtype=float),
                                        np.asarray(tolerance, dtype=float), gain)


def unsubscribe_probability_core(base: Any, pressure: Any, tolerance: Any, gain: float) -> Any:
    """:func:`unsubscribe_probability` on floats or float arrays (the compiled engine calls this)."""
    return np.minimum(np.maximum(base * (1.0 + gain * (pressure / tolerance)), 0.0), 1.0)


def churn_probability(pressure: ArrayLike, tolerance: ArrayLike, gain: float) -> np.ndarray:
    """Per delivered message, pressure-driven churn: ``min(1, gain * (P / tol) ** 2)``."""
    return churn_probability_core(np.asarray(pressure, dtype=float),
                                  np.asarray(tolerance, dtype=float), gain)


def churn_probability_core(pressure: Any, tolerance: Any, gain: float) -> Any:
    """:func:`churn_probability` on floats or float arrays (the compiled engine calls this)."""
    rel = pressure / tolerance
    return np.minimum(np.maximum(gain * rel * rel, 0.0), 1.0)
