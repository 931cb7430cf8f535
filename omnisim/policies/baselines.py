"""Baseline policies: what teams do without orchestration.

- :class:`Blast` — every reachable, consented channel at once on every marketing trigger
  (the silo behaviour: each channel team sends its own message).
- :class:`EmailOnly` — email on every marketing trigger.
- :class:`RandomChannel` — one channel uniformly at random among the reachable ones,
  logging propensity ``1/k``.

The campaign is the trigger kind (``product_view``, ``cart_abandon`` …). Triggers not in
``triggers`` (``journey_step``, ``purchase`` …) get no decision.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from omnisim.policies.base import CHANNELS, Context, Decision, no_message

#: Behaviour triggers the baselines react to.
MARKETING_TRIGGERS: tuple[str, ...] = ("signup", "product_view", "cart_abandon", "inactivity")


def _message(channel: str, propensity: float, policy: str, campaign: str) -> Decision:
    return Decision(action=channel, channel=channel, propensity=propensity, policy=policy,
                    campaign=campaign)


@dataclass(frozen=True)
class _Baseline:
    """Shared shape: react to ``triggers`` only; ``none`` when no channel is reachable."""

    triggers: tuple[str, ...] = MARKETING_TRIGGERS
    channels: tuple[str, ...] = CHANNELS
    version: int = 1
    label = "baseline"
    #: ``decide`` reads the history only through ``ctx.can_message`` (docs/decision-core.md,
    #: "Batch decisions"): an engine may skip keeping per-user history for it.
    reads_history = False

    @property
    def name(self) -> str:
        return f"{self.label}@{self.version}"

    @property
    def trigger_kinds(self) -> frozenset[str]:
        """Trigger kinds ``decide`` may answer (any other kind gets ``[]``); engines that
        decide in batches skip the rest (docs/decision-core.md, "Batch decisions")."""
        return frozenset(self.triggers)

    def decide(self, ctx: Context, rng: np.random.Generator) -> list[Decision]:
        kind = ctx.trigger.kind
        if kind not in self.triggers:
            return []
        options = [ch for ch in self.channels if ctx.can_message(ch)]
        if not options:
            return [no_message(self.name, campaign=kind)]
        return self._choose(options, kind, rng)

    def _choose(self, options: list[str], campaign: str, rng: np.random.Generator) -> list[Decision]:
        raise NotImplementedError


@dataclass(frozen=True)
class Blast(_Baseline):
    """Every reachable consented channel at once on every marketing trigger."""

    label = "blast"

    def _choose(self, options: list[str], campaign: str, rng: np.random.Generator) -> list[Decision]:
        return [_message(ch, 1.0, self.name, campaign) for ch in options]


@dataclass(frozen=True)
class EmailOnly(_Baseline):
    """Email on every marketing trigger (``none`` when email is not reachable)."""

    channels: tuple[str, ...] = ("email",)
    label = "email_only"

    def _choose(self, options: list[str], campaign: str, rng: np.random.Generator) -> list[Decision]:
        return [_message("email", 1.0, self.name, campaign)]


@dataclass(frozen=True)
class RandomChannel(_Baseline):
    """One channel uniformly among the reachable ones; propensity ``1/k``."""

    label = "random_channel"

    def _choose(self, options: list[str], campaign: str, rng: np.random.Generator) -> list[Decision]:
        choice = options[int(rng.integers(len(options)))]
        return [_message(choice, 1.0 / len(options), self.name, campaign)]
