"""Policies in the form the compiled world loop runs (``omnisim/model/_kernel_world.py``).

:func:`compile_policy` returns a :class:`CompiledPolicy` for the policies the loop can run
natively, or ``None`` — the engine then runs the policy through its Python ``decide`` on
the round-based path (slower, exact; ``docs/engines.md``). Compiled now:

- a policy that answers no trigger (``trigger_kinds`` empty) and has no pressure rules: only
  the world model runs;
- the baselines :class:`~omnisim.policies.baselines.Blast`,
  :class:`~omnisim.policies.baselines.EmailOnly` and
  :class:`~omnisim.policies.baselines.RandomChannel` (exactly these classes, any triggers,
  channels and version);
- rule journeys — a :class:`~omnisim.policies.journeys.Journey` or a
  :class:`~omnisim.policies.journeys.JourneySet` of them with distinct names
  (:func:`~omnisim.policies._kernel_journey.compile_journeys`), every journey feature;

each alone or with :class:`~omnisim.policies.pressure.PressureRules` attached
(:func:`~omnisim.policies.pressure.with_pressure`), compiled by
:func:`~omnisim.policies._kernel_pressure.compile_rules`.

A compiled policy makes the decisions its ``decide`` (and its rules' ``admit``) would —
``tests/test_kernel_journey.py``, ``tests/test_kernel_pressure.py`` and
``tests/test_engine_compiled.py`` compare them; the Python classes stay the specification,
and what the sender runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from omnisim.log import EVENTS
from omnisim.policies._kernel_codes import CH, EV, TRIGGER, Strings
from omnisim.policies._kernel_journey import CompiledJourneys, compile_journeys
from omnisim.policies._kernel_pressure import CompiledRules, compile_rules
from omnisim.policies.baselines import Blast, EmailOnly, RandomChannel
from omnisim.policies.declarations import history_events, needs_history, trigger_kinds
from omnisim.policies.pressure import PressuredPolicy
from omnisim.policies.runtime import update_cadence

__all__ = ["CompiledPolicy", "compile_policy", "NONE", "BASELINE", "JOURNEYS", "MAX_JOURNEYS"]

NONE, BASELINE, JOURNEYS = 0, 1, 2
#: the most journeys of a set the compiled loop runs (a larger set: the round-based path)
MAX_JOURNEYS = 32
_VARIANTS = {Blast: 0, EmailOnly: 1, RandomChannel: 2}


@dataclass(frozen=True)
class CompiledPolicy:
    """A policy as arrays: ``pol`` int64 ``[kind, variant, n_channels, channel codes …]``,
    ``trig_mask`` bool (one per :data:`TRIGGER` code), ``kept`` bool (one per log event: the
    events the policy and its rules read from history); ``journeys`` / ``rules`` their
    compiled forms (``None``: none). Texts are codes into ``strings``."""

    name: str
    pol: np.ndarray
    trig_mask: np.ndarray
    kept: np.ndarray
    journeys: CompiledJourneys | None = None
    rules: CompiledRules | None = None
    #: the table the codes refer to (the loop's own texts are added to it, idempotently)
    strings: Strings = field(default_factory=Strings)


def compile_policy(policy: Any, strings: Strings | None = None) -> CompiledPolicy | None:
    """``policy``'s compiled form (texts interned in ``strings``), or ``None`` when the
    compiled loop cannot run it."""
    strings = Strings() if strings is None else strings
    name = str(getattr(policy, "name", type(policy).__name__))
    if update_cadence(policy) is not None:
        return None  # learns online from all users' rows: the round-based path
    rules = None
    inner = policy
    if type(policy) is PressuredPolicy:
        rules = compile_rules(policy.rules, strings)
        if rules is None:
            return None
        inner = policy.policy
    elif getattr(policy, "rules", None) is not None:
        return None  # another wrapper with rules: its own admission
    kinds = trigger_kinds(inner)
    pol = np.zeros(6, np.int64)
    mask = np.zeros(len(TRIGGER), bool)
    journeys = None
    if kinds is not None and not kinds and rules is None:
        pol[0] = NONE
    elif type(inner) in _VARIANTS:
        if type(inner) is EmailOnly and tuple(inner.channels) != ("email",):
            return None  # EmailOnly picks email whatever else it lists: decide's own handling
        channels = [CH[c] for c in inner.channels if c in CH and CH[c] <= 2]
        if len(channels) != len(inner.channels) or len(set(channels)) != len(channels):
            return None  # an unknown or repeated channel: decide's own handling
        pol[:3] = BASELINE, _VARIANTS[type(inner)], len(channels)
        pol[3:3 + len(channels)] = channels
        for kind in inner.triggers:
            if kind in TRIGGER and kind != "journey_step":
                mask[TRIGGER[kind]] = True
    else:
        journeys = compile_journeys(inner, strings)
        if journeys is None or journeys.n_journeys > MAX_JOURNEYS:
            return None
        pol[0] = JOURNEYS
        for kind in kinds or ():
            if kind in TRIGGER:
                mask[TRIGGER[kind]] = True
    kept = np.zeros(len(EVENTS), bool)
    if needs_history(policy, kinds if rules is None else None):
        declared = history_events(policy)
        for event in (EVENTS if declared is None else declared):
            if event in EV:
                kept[EV[event]] = True
    return CompiledPolicy(name, pol, mask, kept, journeys, rules, strings)
