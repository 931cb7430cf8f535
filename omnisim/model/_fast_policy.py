"""How the vectorised engine talks to policies: trigger filtering and the batch method.

The contract (``docs/decision-core.md``, "Batch decisions") has two optional attributes on a
policy, both pure conveniences for engines that decide for many users at once:

``trigger_kinds: frozenset[str]``
    The trigger kinds for which ``decide`` may return a non-empty list. For any other kind
    the engine may skip the call: ``decide`` would have returned ``[]``, which logs nothing.
``reads_history: bool`` (default ``True``)
    ``False`` promises that ``decide`` reads ``ctx.history`` only through
    ``ctx.can_message`` — which an engine whose consent already reflects unsubscribes (this
    one: :class:`~omnisim.model.engine_fast._EngineContext`) answers from consent alone. The
    engine then keeps no per-user history, unless pressure rules (which read it at admission)
    are attached.
``history_events: frozenset[str]``
    The engagement-log events ``decide`` reads from ``ctx.history`` (other than through
    ``ctx.can_message``); pressure rules declare the same for ``admit``. The engine then
    keeps only those events in the per-user history: the answers are the same, the scans
    shorter. Undeclared: every event.
``decide_batch(ctxs: Sequence[Context], rng: Generator) -> list[list[Decision]]``
    Decisions for several independent contexts (different users) at once; element ``i``
    must be what ``decide(ctxs[i], rng_i)`` could have returned — the same distribution,
    the same propensities. The rng stream may be consumed in any (deterministic) order.

A policy without them is called once per context through ``decide`` (slower, exact).
Wrappers that do not declare them are looked through when they are the known pass-through
wrappers (:class:`~omnisim.policies.pressure.PressuredPolicy`,
:class:`~omnisim.policies.holdout.HoldoutPolicy`): their decisions are empty exactly when the
wrapped policy's are.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from omnisim.policies.base import Context, Decision
from omnisim.policies.declarations import (
    history_events, needs_history, reads_history, trigger_kinds,
)

__all__ = ["trigger_kinds", "batch_decider", "needs_history", "history_events", "reads_history"]


def batch_decider(policy: Any) -> Callable[[Sequence[Context], np.random.Generator],
                                           list[list[Decision]]]:
    """A function ``(ctxs, rng) -> list[list[Decision]]`` for ``policy``.

    Uses ``policy.decide_batch`` when the policy itself defines it; a wrapper's decisions
    can differ from the wrapped policy's (holdout scaling), so wrappers without their own
    batch method fall back to one ``decide`` call per context — never an approximation —
    except :class:`~omnisim.policies.pressure.PressuredPolicy`, whose ``decide`` *is* the
    wrapped policy's (its rules act at admission), so the wrapped policy's batch is used.
    """
    fn = getattr(policy, "decide_batch", None)
    if callable(fn):
        return fn
    from omnisim.policies.pressure import PressuredPolicy

    if type(policy) is PressuredPolicy:  # decide() is exactly the wrapped policy's
        return batch_decider(policy.policy)
    decide = policy.decide

    def one_by_one(ctxs: Sequence[Context], rng: np.random.Generator) -> list[list[Decision]]:
        return [decide(c, rng) for c in ctxs]

    return one_by_one
