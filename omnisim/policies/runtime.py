"""The pure decision step shared by the simulator and the production sender.

Both callers drive a policy the same way (``docs/decision-core.md``); the pieces where they
could drift apart live here, once:

- :data:`DUE_TOLERANCE` — a pending is due at ``t`` when ``due <= t + DUE_TOLERANCE``;
- :func:`defer_until` — a deferral moves a pending at least :data:`MIN_DEFER` ahead;
- :func:`admit` — ``rules.admit`` plus the check that every due pending was accounted for;
- :func:`decision_rng` — the sender's per-decision random stream (stable across processes).

Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import math

import hashlib
from datetime import datetime, timedelta
from typing import Any, Sequence

import numpy as np

from omnisim.policies.base import Context
from omnisim.policies.pressure import Admission, Pending

__all__ = ["DUE_TOLERANCE", "MIN_DEFER", "DUE_TOLERANCE_H", "MIN_DEFER_H", "admit",
           "defer_until", "decision_rng"]

#: Hours of tolerance when comparing due times (engines' float clocks).
DUE_TOLERANCE_H = 1e-6
#: A deferral moves a pending at least this many hours ahead.
MIN_DEFER_H = 1 / 60
DUE_TOLERANCE = timedelta(hours=DUE_TOLERANCE_H)
MIN_DEFER = timedelta(hours=MIN_DEFER_H)


def admit(rules: Any, due: Sequence[Pending], ctx: Context, policy_name: str) -> Admission:
    """``rules.admit(due, ctx)``, refusing an admission that lost a pending.

    Raises ``RuntimeError`` (a bug in the rules, not user input) naming the lost pendings.
    """
    adm = rules.admit(due, ctx)
    handled = {p.pending_id for p in adm.send}
    handled |= {p.pending_id for p, _, _ in adm.defer} | {p.pending_id for p, _ in adm.drop}
    missing = [p.pending_id for p in due if p.pending_id not in handled]
    if missing:
        raise RuntimeError(f"pressure rules of {policy_name!r} neither sent, deferred "
                           f"nor dropped pendings {missing}; admit() must account for "
                           "every due pending (docs/decision-core.md)")
    return adm


def defer_until(at: datetime, now: datetime) -> datetime:
    """When a pending deferred to ``at`` at time ``now`` is due again (>= now + MIN_DEFER)."""
    return max(at, now + MIN_DEFER)


def decision_rng(seed: int, user_id: str, kind: str, ts: datetime) -> np.random.Generator:
    """A random stream for one decision, from ``(seed, user, trigger kind, trigger time)``.

    BLAKE2b, never ``hash()``: the same decision gets the same stream in every process.
    The generator is built on first use (most rule policies never draw).
    """
    digest = hashlib.blake2b(f"{seed}\x1f{user_id}\x1f{kind}\x1f{ts.isoformat()}".encode(),
                             digest_size=16).digest()
    return _LazyGenerator(int.from_bytes(digest, "big"))  # type: ignore[return-value]


class _LazyGenerator:
    """Stands in for ``numpy.random.Generator(seed)``, creating it on first attribute use."""

    __slots__ = ("_seed", "_rng")

    def __init__(self, seed: int):
        self._seed, self._rng = seed, None

    def __getattr__(self, name: str) -> Any:
        if self._rng is None:
            self._rng = np.random.default_rng(self._seed)
        return getattr(self._rng, name)


def update_cadence(policy: Any) -> float | None:
    """``policy.update_every_h`` (hours) when the policy learns online (has ``partial_fit``),
    else None — the one rule both engines and the sender use (docs/decision-core.md)."""
    every = getattr(policy, "update_every_h", None)
    if every is None or not callable(getattr(policy, "partial_fit", None)):
        return None
    every = float(every)
    if not (math.isfinite(every) and every > 0):
        raise ValueError(f"policy {getattr(policy, 'name', policy)!r}: update_every_h must be a "
                         f"positive number of hours, got {every!r}")
    return every
