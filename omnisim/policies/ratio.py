"""The engagement-ratio channel chooser: the transparent baseline marketing platforms ship.

For each channel the user can be messaged on, over the last ``window_h`` hours of the
context's history::

    ratio[c] = interactions[c] / sends[c]      (interactions: ``interaction_events`` on c)

Channels with at least ``min_messages`` sends have *enough data*. The choice:

1. if some reachable channel has enough data: the one with the highest ratio; ties broken
   by more sends (more evidence), then by rank in ``fallback_order``;
2. otherwise ("not enough data"): the first reachable channel in ``fallback_order``;
3. no reachable channel: ``none``.

Deterministic (propensity 1); the rng is not used. ``action_probabilities(ctx)`` puts 1 on
the chosen action (for off-policy evaluation without calling ``decide``). Nothing is learned from a log — the
ratio is recomputed from each user's own history at each decision — so ``to_artifact``
holds parameters only.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from omnisim.policies.base import CHANNELS, NO_ACTION, Context, Decision, no_message
from omnisim.policies.baselines import MARKETING_TRIGGERS
from omnisim.policies.sendtime import _init_params, _jsonable

__all__ = ["EngagementRatioChannel", "engagement_ratios"]


def engagement_ratios(ctx: Context, channels: tuple[str, ...], window_h: float,
                      interaction_events: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """``{channel: (interactions, sends)}`` over the last ``window_h`` hours of history."""
    since = ctx.now - timedelta(hours=window_h)
    out = {c: [0, 0] for c in channels}
    for h in ctx.history:
        if h.ts < since or h.channel not in out:
            continue
        if h.event == "sent":
            out[h.channel][1] += 1
        elif h.event in interaction_events:
            out[h.channel][0] += 1
    return {c: (k, n) for c, (k, n) in out.items()}


class EngagementRatioChannel(BaseEstimator):
    """Choose the channel with the best interactions ÷ messages ratio (see module docstring).

    Parameters
    ----------
    channels : tuple of str
        Candidate channels.
    window_h : float
        Look-back window in hours (at most the 35 days of history engines keep).
    min_messages : int
        Sends on a channel within the window needed to trust its ratio.
    interaction_events : tuple of str
        Events counted as interactions (default opens and clicks).
    fallback_order : tuple of str
        Preference when data is missing, and the last tie-break.
    triggers : tuple of str
        Triggers decided on (others get no decision).
    version : int
    """

    kind = "ratio"

    def __init__(self, channels: tuple[str, ...] = CHANNELS, window_h: float = 30 * 24.0,
                 min_messages: int = 3, interaction_events: tuple[str, ...] = ("opened", "clicked"),
                 fallback_order: tuple[str, ...] = ("email", "push", "sms"),
                 triggers: tuple[str, ...] = MARKETING_TRIGGERS, version: int = 1):
        self.channels = channels
        self.window_h = window_h
        self.min_messages = min_messages
        self.interaction_events = interaction_events
        self.fallback_order = fallback_order
        self.triggers = triggers
        self.version = version

    @property
    def name(self) -> str:
        return f"ratio@{self.version}"

    def _check(self) -> None:
        if not (isinstance(self.window_h, (int, float)) and self.window_h > 0):
            raise ValueError(f"window_h: expected a positive number of hours, got {self.window_h!r}")
        if not (isinstance(self.min_messages, (int, np.integer)) and self.min_messages >= 1):
            raise ValueError(f"min_messages: expected an integer >= 1, got {self.min_messages!r}")
        missing = [c for c in self.channels if c not in self.fallback_order]
        if missing:
            raise ValueError(f"fallback_order: must rank every channel; missing {missing}")

    def rank(self, ctx: Context) -> list[str]:
        """Reachable channels, best first, by the rules in the module docstring."""
        self._check()
        reach = [c for c in self.channels if ctx.can_message(c)]
        stats = engagement_ratios(ctx, tuple(reach), float(self.window_h),
                                  tuple(self.interaction_events))
        order = {c: i for i, c in enumerate(self.fallback_order)}
        known = [c for c in reach if stats[c][1] >= self.min_messages]
        unknown = sorted((c for c in reach if c not in known), key=order.__getitem__)
        known.sort(key=lambda c: (-stats[c][0] / stats[c][1], -stats[c][1], order[c]))
        return known + unknown

    def choice(self, ctx: Context) -> str | None:
        """The action :meth:`decide` takes in ``ctx`` (a channel or ``none``), or ``None`` when
        the trigger is not one the policy decides on."""
        if ctx.trigger.kind not in self.triggers:
            return None
        ranked = self.rank(ctx)
        return ranked[0] if ranked else NO_ACTION

    def action_probabilities(self, ctx: Context) -> dict[str, float]:
        """``{action: 1.0}`` (deterministic; ``none`` on triggers it does not decide on)."""
        return {self.choice(ctx) or NO_ACTION: 1.0}

    def decide(self, ctx: Context, rng: np.random.Generator) -> list[Decision]:
        ch = self.choice(ctx)
        kind = ctx.trigger.kind
        if ch is None:
            return []
        if ch == NO_ACTION:
            return [no_message(self.name, campaign=kind)]
        return [Decision(action=ch, channel=ch, propensity=1.0, policy=self.name, campaign=kind)]

    def to_artifact(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``(params, {})``: parameters only (nothing is fitted)."""
        return _jsonable(self.get_params()), {}

    @classmethod
    def from_artifact(cls, params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> EngagementRatioChannel:
        return cls(**_init_params(cls, params))
