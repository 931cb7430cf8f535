"""What a policy declares about itself, read through the known pass-through wrappers.

Optional attributes of the decision-core contract (``docs/decision-core.md``, "Batch
decisions") that let an engine do less work without changing any decision:
``trigger_kinds``, ``reads_history`` and ``history_events``. The known pass-through
wrappers (:class:`~omnisim.policies.pressure.PressuredPolicy`,
:class:`~omnisim.policies.holdout.HoldoutPolicy`) are looked through when they do not
declare: their own ``decide`` reads nothing but the user id, and their decisions are empty
exactly when the wrapped policy's are. :func:`~omnisim.policies.check.check_policy` verifies
``trigger_kinds`` and ``history_events`` (including ``reads_history = False``) declarations.
"""

from __future__ import annotations

from typing import Any

__all__ = ["trigger_kinds", "reads_history", "decide_events", "history_events", "needs_history"]


def _passthrough(policy: Any) -> Any | None:
    """The wrapped policy of a known pass-through wrapper, else ``None``."""
    from omnisim.policies.holdout import HoldoutPolicy
    from omnisim.policies.pressure import PressuredPolicy

    if isinstance(policy, (PressuredPolicy, HoldoutPolicy)):
        return policy.policy
    return None


def trigger_kinds(policy: Any) -> frozenset[str] | None:
    """Trigger kinds ``policy`` may answer with decisions; ``None`` means "any kind".

    Reads ``policy.trigger_kinds`` or, for a pass-through wrapper, the wrapped policy's.
    """
    kinds = getattr(policy, "trigger_kinds", None)
    if kinds is not None:
        return frozenset(kinds)
    inner = _passthrough(policy)
    return trigger_kinds(inner) if inner is not None else None


def reads_history(policy: Any) -> bool:
    """Whether ``policy.decide`` may read ``ctx.history`` beyond ``ctx.can_message``.

    Reads ``policy.reads_history`` (default ``True``) or, for a pass-through wrapper, the
    wrapped policy's (their own ``decide`` reads nothing but the user id)."""
    declared = getattr(policy, "reads_history", None)
    if declared is not None:
        return bool(declared)
    inner = _passthrough(policy)
    return reads_history(inner) if inner is not None else True


def decide_events(policy: Any) -> frozenset[str] | None:
    """Events ``policy.decide`` reads from the history (``None``: any): its declaration,
    ``frozenset()`` for ``reads_history = False``, or a pass-through wrapper's inner one."""
    declared = getattr(policy, "history_events", None)
    if declared is not None:
        return frozenset(declared)
    if getattr(policy, "reads_history", None) is not None:
        return None if policy.reads_history else frozenset()
    inner = _passthrough(policy)
    return decide_events(inner) if inner is not None else None


def history_events(policy: Any) -> frozenset[str] | None:
    """The events an engine must keep in per-user history for ``policy``; ``None``: all.

    The union of what ``decide`` reads and what the attached pressure rules' ``admit``
    reads (``rules.history_events``); ``None`` when either does not declare."""
    own = decide_events(policy)
    rules = getattr(policy, "rules", None)
    if rules is None or own is None:
        return own
    declared = getattr(rules, "history_events", None)
    return None if declared is None else own | frozenset(declared)


def needs_history(policy: Any, kinds: frozenset[str] | None = None) -> bool:
    """Whether an engine must keep per-user history for ``policy``'s contexts.

    No when no context is ever built (the policy declares no trigger kinds and has no
    pressure rules), or when the policy does not read history (:func:`reads_history`) and has
    no pressure rules; ``kinds`` is :func:`trigger_kinds` of the policy when already known."""
    if getattr(policy, "rules", None) is not None:
        return True
    kinds = trigger_kinds(policy) if kinds is None else kinds
    if kinds is not None and not kinds:
        return False
    return reads_history(policy)
