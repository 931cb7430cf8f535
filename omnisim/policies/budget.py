"""Joint time × channel × frequency under a per-user weekly message budget.

One decision picks the channel, the local send hour and whether to send at all — the
major platforms make their send-time and channel optimisers mutually exclusive; here they
are one ``argmax``. In the spirit of Pinterest's budgeted notification volume, each user
has ``weekly_budget`` messages per local calendar week (Monday 00:00 local), and a message
must beat a threshold that rises as the budget is used up (a shadow price on the budget).

Fitted from an engagement log (:meth:`BudgetPolicy.fit`): per channel ``c`` and local send
hour ``h``, the probability that a send is clicked, Beta-shrunk to the channel's rate::

    p[c, h] = (clicks[c, h] + prior_strength · r_c) / (sends[c, h] + prior_strength)

At a decision (pure, from the context), for each reachable channel and each local hour
whose next occurrence is within ``max_delay_h`` and still in the current local week::

    level[c] = (clicks_c + user_strength · r_c) / ((sends_c + user_strength) · r_c)
               (the user's own click rate on c over their 35-day history, shrunk to 1)
    score[c, h] = click_value · p[c, h] · level[c] − costs[c]
    used        = message decisions (any policy) and sends, whichever is more, this week
    threshold   = threshold_min + (threshold_max − threshold_min) · (used / budget)^shadow_power

It sends the best ``(c, h)`` (ties: earliest send, then channel order) if
``score > threshold`` and ``used < weekly_budget``, else ``none`` (reason ``budget`` when
the week is spent). Every send it schedules falls in the week it was decided in, so counting
the week's decisions bounds the week's sends: the budget is never exceeded. Deterministic:
propensity 1; ``action_probabilities(ctx)`` puts 1 on that action without calling ``decide``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from omnisim.policies.bandits import DEFAULT_COSTS
from omnisim.policies.base import (
    CHANNELS,
    Context,
    Decision,
    next_local_hour,
    no_message,
)
from omnisim.policies.baselines import MARKETING_TRIGGERS
from omnisim.policies.sendtime import (
    HOURS,
    _counts,
    _init_params,
    _jsonable,
    _shrink,
    check_params,
    local_send_slots,
)

__all__ = ["BudgetPolicy", "week_start"]


def week_start(now: datetime, timezone_name: str) -> datetime:
    """Monday 00:00 local of ``now``'s local week, as a UTC instant."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(timezone_name)
    local = now.astimezone(zone)
    day = local.date() - timedelta(days=local.weekday())
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(now.tzinfo)


class BudgetPolicy(BaseEstimator):
    """Channel, hour and whether to send, under a weekly per-user message budget.

    Parameters
    ----------
    weekly_budget : int
        Messages per user per local calendar week.
    click_value : float
        Value of a click (currency units); ``costs`` per message by channel.
    threshold_min, threshold_max : float
        Score a message must beat with the week's budget unused / almost spent.
    shadow_power : float
        Shape of the threshold's rise (1 = linear in the share of budget used).
    max_delay_h : float
        Latest send, hours after the decision.
    prior_strength, user_strength : float
        Pseudo-sends shrinking an hour's rate to the channel's, and a user's to the population.
    channels, triggers, version : as elsewhere.

    Attributes (after ``fit``): ``channels_`` (list), ``base_rate_`` (C,), ``rate_`` (C, 24)
    click probability by local hour, ``n_sends_``.
    """

    kind = "budget"

    def __init__(self, weekly_budget: int = 3, click_value: float = 1.0,
                 costs: Mapping[str, float] | None = None, threshold_min: float = 0.0,
                 threshold_max: float = 0.05, shadow_power: float = 1.0,
                 max_delay_h: float = 24.0, prior_strength: float = 30.0,
                 user_strength: float = 10.0, channels: tuple[str, ...] = CHANNELS,
                 triggers: tuple[str, ...] = MARKETING_TRIGGERS, version: int = 1):
        self.weekly_budget = weekly_budget
        self.click_value = click_value
        self.costs = costs
        self.threshold_min = threshold_min
        self.threshold_max = threshold_max
        self.shadow_power = shadow_power
        self.max_delay_h = max_delay_h
        self.prior_strength = prior_strength
        self.user_strength = user_strength
        self.channels = channels
        self.triggers = triggers
        self.version = version

    @property
    def name(self) -> str:
        return f"budget@{self.version}"

    def _check(self) -> None:
        if not (isinstance(self.weekly_budget, (int, np.integer)) and self.weekly_budget >= 0):
            raise ValueError(f"weekly_budget: expected an integer >= 0 messages per week, got {self.weekly_budget!r}")
        if self.threshold_max < self.threshold_min:
            raise ValueError(f"threshold_max ({self.threshold_max!r}) must be >= threshold_min "
                             f"({self.threshold_min!r})")
        check_params(self, ("max_delay_h", "prior_strength", "user_strength", "shadow_power"),
                     self.channels)

    def fit(self, log: pd.DataFrame, users: pd.DataFrame) -> BudgetPolicy:
        """Click rate by channel and local send hour from ``log``; ``users`` gives timezones."""
        self._check()
        slots = local_send_slots(log, users, target="click")
        self.channels_ = list(self.channels)
        k, n = (a[0] for a in _counts(slots, [], ["all"], self.channels_, "hour", HOURS))
        base = (k.sum(axis=1) + 0.5) / (n.sum(axis=1) + 1.0)
        rate = _shrink(k, n, base[:, None], float(self.prior_strength))
        self.base_rate_, self.rate_, self.n_sends_ = base, rate, len(slots)
        return self

    # --------------------------------------------------------------------- deciding
    def used(self, ctx: Context) -> int:
        """Budget used this local week: message decisions or sends, whichever is more."""
        since = week_start(ctx.now, ctx.timezone)
        decided = sum(h.event == "decided" and h.channel in CHANNELS and h.ts >= since
                      for h in ctx.history)
        sent = sum(h.event == "sent" and h.ts >= since for h in ctx.history)
        return max(decided, sent)

    def threshold(self, used: int) -> float:
        """The shadow price of the next message when ``used`` of the budget is spent."""
        share = min(used / self.weekly_budget, 1.0) if self.weekly_budget else 1.0
        return self.threshold_min + (self.threshold_max - self.threshold_min) * share ** self.shadow_power

    def _levels(self, ctx: Context) -> np.ndarray:
        start = ctx.now - timedelta(days=35)
        sends = np.zeros(len(self.channels_))
        clicks = np.zeros(len(self.channels_))
        idx = {c: i for i, c in enumerate(self.channels_)}
        for h in ctx.history:
            if h.ts > start and h.channel in idx:
                if h.event == "sent":
                    sends[idx[h.channel]] += 1
                elif h.event == "clicked":
                    clicks[idx[h.channel]] += 1
        m, r = float(self.user_strength), self.base_rate_
        return (clicks + m * r) / ((sends + m) * r)

    def scores(self, ctx: Context) -> list[tuple[float, datetime, str, int]]:
        """``(score, send time UTC, channel, local hour)`` of every candidate slot."""
        if not hasattr(self, "rate_"):
            raise NotFittedError("BudgetPolicy is not fitted; call fit(log, users) first")
        costs = {**DEFAULT_COSTS, **(self.costs or {})}
        level = self._levels(ctx)
        end = min(ctx.now + timedelta(hours=self.max_delay_h),
                  week_start(ctx.now, ctx.timezone) + timedelta(days=7))
        now_hour = ctx.local_now.hour
        slots = [(ctx.now, now_hour)] + [
            (t, h) for h in range(HOURS) if (t := next_local_hour(ctx.now, ctx.timezone, h)) < end]
        out = []
        for i, c in enumerate(self.channels_):
            if not ctx.can_message(c):
                continue
            for t, h in slots:
                score = self.click_value * self.rate_[i, h] * level[i] - costs.get(c, 0.0)
                out.append((float(score), t, c, h))
        return out

    def action_probabilities(self, ctx: Context) -> dict[str, float]:
        """``{action: 1.0}`` for the action :meth:`decide` takes (deterministic; ``none``
        on triggers it does not decide on), for off-policy evaluation."""
        decisions = self._decide(ctx)
        return {decisions[0].action if decisions else "none": 1.0}

    def decide(self, ctx: Context, rng: np.random.Generator) -> list[Decision]:
        """The decision (``rng`` is not used: the policy is deterministic)."""
        return self._decide(ctx)

    def _decide(self, ctx: Context) -> list[Decision]:
        kind = ctx.trigger.kind
        if kind not in self.triggers:
            return []
        self._check()
        used = self.used(ctx)
        if used >= self.weekly_budget:
            return [no_message(self.name, campaign=kind, reason="budget")]
        cands = self.scores(ctx)
        if not cands:
            return [no_message(self.name, campaign=kind)]
        order = {c: i for i, c in enumerate(self.channels_)}
        score, t, c, h = max(cands, key=lambda s: (s[0], -s[1].timestamp(), -order[s[2]]))
        if score <= self.threshold(used):
            return [no_message(self.name, campaign=kind)]
        return [Decision(action=f"{c}@{h:02d}h", channel=c, propensity=1.0, policy=self.name,
                         campaign=kind, send_at=None if t == ctx.now else t,
                         expected_value=score, meta={"send_hour": h})]

    # --------------------------------------------------------------------- artifact
    def to_artifact(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``(params, arrays)``: constructor parameters + ``channels_``; ``rate``, ``base_rate``."""
        if not hasattr(self, "rate_"):
            raise NotFittedError("BudgetPolicy is not fitted; call fit(log, users) first")
        params = {**_jsonable(self.get_params()), "channels_": list(self.channels_),
                  "n_sends_": self.n_sends_}
        return params, {"rate": self.rate_.copy(), "base_rate": self.base_rate_.copy()}

    @classmethod
    def from_artifact(cls, params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> BudgetPolicy:
        pol = cls(**_init_params(cls, params))
        pol.channels_, pol.n_sends_ = list(params["channels_"]), int(params["n_sends_"])
        pol.rate_ = np.array(arrays["rate"], dtype=float)
        pol.base_rate_ = np.array(arrays["base_rate"], dtype=float)
        return pol
