"""Holdouts: stable, seeded control groups that receive no marketing messages.

Assignment hashes ``salt`` and ``user_id`` with BLAKE2b into a uniform number in [0, 1)
(never Python's ``hash()``, which changes between processes), so a user is in or out of the
holdout the same way in the simulator, the sender and any later analysis.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np

from omnisim.policies.base import NO_ACTION, Context, Decision, ForwardsLearning, Policy, no_message


def holdout_uniform(user_id: str, salt: str) -> float:
    """A stable uniform number in [0, 1) for ``(salt, user_id)``."""
    digest = hashlib.blake2b(f"{salt}\x1f{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def in_holdout(user_id: str, share: float, salt: str = "omnisim-holdout") -> bool:
    """True for a stable ``share`` of users (``share`` in [0, 1])."""
    return share > 0 and holdout_uniform(user_id, salt) < share


@dataclass(frozen=True)
class Holdout:
    """A global control group: ``share`` of users, chosen stably by ``salt``."""

    share: float
    salt: str = "omnisim-holdout"

    def contains(self, user_id: str) -> bool:
        return in_holdout(user_id, self.share, self.salt)


@dataclass(frozen=True)
class HoldoutPolicy(ForwardsLearning):
    """A global control group around ``policy``.

    Users in the holdout get one ``none`` decision with reason ``holdout`` instead of the
    wrapped policy's marketing messages (and their journeys' follow-ups); exempt messages
    (``Decision.exempt`` or tag in ``exempt_tags``) still go. Propensities account for the
    randomised assignment: ``share`` for the holdout's ``none``, ``(1 - share) * p`` for
    the wrapped policy's decisions.
    """

    policy: Policy
    share: float = 0.05
    salt: str = "omnisim-holdout"
    exempt_tags: tuple[str, ...] = ("transactional",)

    @property
    def name(self) -> str:
        return f"{self.policy.name}+holdout({self.share:g})@1"

    @property
    def rules(self):
        """The wrapped policy's pressure rules, if any (modifier order must not lose them)."""
        return getattr(self.policy, "rules", None)

    @property
    def holdout(self) -> Holdout:
        """The control group (``experiment.py`` measures incremental conversions against it)."""
        return Holdout(self.share, self.salt)

    def decide(self, ctx: Context, rng: np.random.Generator) -> list[Decision]:
        decisions = self.policy.decide(ctx, rng)
        if not self.holdout.contains(ctx.user_id):
            return [_scale(d, 1.0 - self.share) for d in decisions]
        kept = [d for d in decisions if d.is_message and (d.exempt or d.tag in self.exempt_tags)]
        held = [d for d in decisions if d not in kept]
        if held and any(d.is_message or d.follow_ups for d in held):
            campaign = next((d.campaign for d in held if d.campaign), None)
            kept.append(no_message(self.name, propensity=self.share, campaign=campaign,
                                   reason="holdout"))
        elif held:
            kept.extend(held)
        return kept

    @property
    def action_probabilities(self) -> Callable[[Context], dict[str, float]]:
        """``action_probabilities(ctx) -> {action: probability}`` (off-policy evaluation),
        present only when the wrapped policy has it.

        A holdout user gets ``{"none": 1.0}`` (the ``none`` action of
        :func:`~omnisim.policies.ope_log.policy_probabilities`); any other user the wrapped
        policy's distribution, unscaled. Both are the distribution *given the context*: the
        assignment is a function of ``user_id``, so it is not random once the user is known,
        and the probabilities sum to 1 (``(1 - share) * p`` would not). The propensities
        ``decide`` logs keep the ``(1 - share)`` / ``share`` factors of the randomised
        assignment for the logging side. Exempt messages are not told apart by action name:
        for an inner policy that can decide exempt (e.g. transactional) messages, a holdout
        user's distribution would need them; the built-in policies with
        ``action_probabilities`` decide none.

        Without the wrapped policy's method this attribute does not exist (``hasattr`` is
        false), so :func:`~omnisim.policies.ope_log.policy_probabilities` samples ``decide``
        (``mc_draws``) as for any policy without exact probabilities.
        """
        inner = getattr(self.policy, "action_probabilities", None)
        if not callable(inner):
            raise AttributeError(f"{self.name!r}: the wrapped policy {self.policy.name!r} has no "
                                 f"action_probabilities(ctx)")

        def action_probabilities(ctx: Context) -> dict[str, float]:
            if self.holdout.contains(ctx.user_id):
                return {NO_ACTION: 1.0}
            return dict(inner(ctx))

        return action_probabilities


def _scale(d: Decision, factor: float) -> Decision:
    return replace(d, propensity=d.propensity * factor)


def with_holdout(policy: Policy, share: float = 0.05, salt: str = "omnisim-holdout") -> HoldoutPolicy:
    """Wrap ``policy`` with a global holdout of ``share`` of users (stable by ``salt``)."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"holdout share: expected a number in [0, 1], got {share!r}")
    return HoldoutPolicy(policy, share, salt)
