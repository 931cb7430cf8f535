"""The decision core's contract: :class:`Context` in, :class:`Decision` out.

Everything in :mod:`omnisim.policies` is *pure*: a decision depends only on the policy's
parameters, the :class:`Context` it is given and the ``numpy.random.Generator`` passed in.
Policies never read a clock, never do I/O and never keep per-user state between calls —
state that must survive between decisions (a journey's position, a message waiting for a
cap slot) travels in :class:`Trigger` payloads and :class:`Pending` items that the caller
(the simulator or the production sender) stores durably and hands back.

Times are timezone-aware UTC :class:`datetime.datetime` values; user-local time comes from
the IANA name in :attr:`Context.timezone` (see :attr:`Context.local_now`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone as dt_timezone
from functools import cached_property
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable
from zoneinfo import ZoneInfo

import numpy as np

#: Message channels a policy may choose; ``none`` means "do not message".
CHANNELS: tuple[str, ...] = ("email", "sms", "push")
NO_ACTION = "none"


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    """One past event of this user, as the engagement log records it.

    ``event`` uses the engagement-log vocabulary (``sent``, ``opened``, ``clicked``,
    ``product_view``, ``purchase``, ``unsubscribed`` …). ``tag`` is the message type
    (``marketing``, ``transactional`` …) on message events, else ``None``. ``step`` is the
    log's ``step`` column: the journey step behind the row (``entry`` on the ``decided`` row
    of an entry that waits first), ``None`` on other rows — and wherever the source does not
    record it (a foreign log, a sender store older than the column); journeys then fall back
    to inferring their entries from timing (:mod:`omnisim.policies.journeys`, "Re-entry").
    """

    ts: datetime
    event: str
    channel: str = "none"
    message_id: str | None = None
    campaign: str | None = None
    tag: str | None = None
    value: float | None = None
    step: str | None = None


#: The behaviour events a policy is asked to decide on (a :class:`Trigger`'s ``kind``), in the
#: simulators and the sender alike: logged events, and ``inactivity`` (a user quiet for the
#: scenario's / sender's inactivity threshold).
BEHAVIOUR_TRIGGERS = ("signup", "visit", "product_view", "cart_add", "cart_abandon", "purchase",
                      "opened", "clicked", "inactivity")


@dataclass(frozen=True, slots=True)
class Trigger:
    """What caused this decision.

    ``kind`` is one of :data:`BEHAVIOUR_TRIGGERS` or ``journey_step`` for a follow-up a
    policy scheduled earlier (its :class:`FollowUp` ``payload`` comes back in ``payload``).
    """

    kind: str
    ts: datetime
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Context:
    """Everything a decision may look at.

    Attributes
    ----------
    user_id : str
    now : datetime
        Current time, timezone-aware UTC.
    timezone : str
        The user's IANA timezone name, e.g. ``"Europe/Paris"``.
    traits : Mapping[str, Any]
        User traits the policy may observe (segment, affinities …), never hidden state.
    consent : Mapping[str, bool]
        Per channel: reachable *and* consented (``{"email": True, "sms": False, …}``).
    history : Sequence[HistoryEvent]
        This user's recent events, oldest first, all with ``ts <= now``.
    trigger : Trigger
    """

    user_id: str
    now: datetime
    timezone: str
    traits: Mapping[str, Any]
    consent: Mapping[str, bool]
    history: Sequence[HistoryEvent]
    trigger: Trigger

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def local_now(self) -> datetime:
        """``now`` in the user's timezone (DST-aware)."""
        return self.now.astimezone(self.zone)

    def can_message(self, channel: str) -> bool:
        """True if the user is reachable on ``channel``, consented, and not unsubscribed."""
        if not self.consent.get(channel, False):
            return False
        return not any(h.event == "unsubscribed" and h.channel == channel for h in self.history)

    def events_since(
        self, since: datetime, event: str | None = None, channel: str | None = None,
        campaign: str | None = None,
    ) -> list[HistoryEvent]:
        """History events with ``ts >= since`` matching every filter given."""
        return [
            h for h in self.history
            if h.ts >= since
            and (event is None or h.event == event)
            and (channel is None or h.channel == channel)
            and (campaign is None or h.campaign == campaign)
        ]

    def with_now(self, now: datetime, trigger: Trigger | None = None) -> "Context":
        """A copy at another time (and optionally another trigger); history is kept."""
        return replace(self, now=now, trigger=trigger or self.trigger)


@dataclass(frozen=True, slots=True)
class FollowUp:
    """A step the policy wants to be called back for at ``at`` (UTC).

    The caller stores it durably and, when due, calls the policy again with
    ``Trigger(kind="journey_step", ts=at, payload=payload)``.
    """

    at: datetime
    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Decision:
    """One choice a policy made for one user.

    Attributes
    ----------
    action : str
        What was chosen, as logged in the ``action`` column: a channel (``"sms"``), a
        channel at an hour (``"email@09h"``), an item, or ``"none"``.
    channel : str
        ``email``, ``sms``, ``push`` or ``none`` (no message).
    propensity : float
        Probability in [0, 1] the policy had of choosing ``action`` in this context.
    policy : str
        Name and version of the deciding policy, e.g. ``"seed_journey@1"``.
    campaign : str | None
        Campaign or journey name.
    send_at : datetime | None
        When to send (UTC); ``None`` means now.
    tag : str
        Message type for caps: ``marketing`` (default), ``transactional``, …
    priority : int
        Higher goes first when messages compete for a cap slot.
    expected_value : float
        The policy's estimate of the message's value (currency units); the tie-break
        after ``priority`` in cap arbitration.
    exempt : bool
        Exempt from caps and quiet hours (transactional). Whether it still counts towards
        caps is the pressure rules' ``exempt_counts`` setting.
    follow_ups : tuple[FollowUp, ...]
        Later steps to call back for (journeys).
    """

    action: str
    channel: str
    propensity: float
    policy: str
    campaign: str | None = None
    send_at: datetime | None = None
    tag: str = "marketing"
    priority: int = 0
    expected_value: float = 0.0
    exempt: bool = False
    follow_ups: tuple[FollowUp, ...] = ()
    #: Set by pressure rules: why a message was deferred or suppressed (``cap:email:7d``).
    reason: str | None = None
    #: Free-form details for the decision log (template, step id …).
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_message(self) -> bool:
        return self.channel != NO_ACTION

    @property
    def step(self) -> str | None:
        """The journey step id in ``meta["step"]`` (``"entry"`` for an entry that waits),
        logged in the ``step`` column; ``None`` for decisions not made by a journey step."""
        step = self.meta.get("step")
        return step if isinstance(step, str) else None

    def log_fields(self) -> dict[str, Any]:
        """The engagement-log columns every row this decision leads to carries — ``action``,
        ``campaign``, ``policy``, ``step`` — as keyword arguments; both engines and the
        sender log a decision's rows through it."""
        return {"action": self.action, "campaign": self.campaign, "policy": self.policy,
                "step": self.step}


@runtime_checkable
class Policy(Protocol):
    """A decision policy: pure, deterministic given ``(ctx, rng)``.

    ``decide`` returns zero or more decisions (several when a policy messages on more than
    one channel at once, none when the trigger is not for it). A policy that chooses at
    random logs the probability of what it chose in :attr:`Decision.propensity`.

    Optional: ``action_probabilities(ctx) -> dict[str, float]`` — the probability of every
    action the policy could take in ``ctx`` (keys as logged in ``action``, ``"none"``
    included, summing to 1), without drawing anything. Off-policy evaluation
    (:mod:`omnisim.policies.ope_log`) uses it to evaluate a random policy; without it a
    policy is evaluated as deterministic (``decide`` with a fixed generator, probability 1
    on its action). It must agree with ``decide``: the probability of the action ``decide``
    takes equals the propensity it logs. A wrapper that cannot tell in some context (its
    inner policy has no such method) raises ``NotImplementedError`` there, and evaluation
    falls back to ``decide``. Implemented by the learned policies (``ThompsonChannel``,
    ``LinUCBChannel``, ``SendTimePolicy``, ``BudgetPolicy``, ``EngagementRatioChannel``) and
    ``ope_log.FixedAction``.
    """

    name: str

    def decide(self, ctx: Context, rng: np.random.Generator) -> list[Decision]:
        ...


class ForwardsLearning:
    """Mixin for policy wrappers (pressure rules, holdouts, send time): online learning is
    the wrapped ``self.policy``'s, so engines see one ``update_every_h`` / ``partial_fit``."""

    policy: Policy

    @property
    def update_every_h(self) -> float | None:
        """The wrapped policy's online-learning cadence (hours), if it learns online."""
        return getattr(self.policy, "update_every_h", None)

    def partial_fit(self, events: Any):
        """Forward engagement-log rows to the wrapped policy's ``partial_fit``; returns self."""
        fit = getattr(self.policy, "partial_fit", None)
        if fit is None:
            raise AttributeError(f"{self.policy.name!r} does not learn online (no partial_fit)")
        fit(events)
        return self

    @property
    def working_state_lookback_h(self) -> float:
        """The wrapped policy's (``AttributeError`` when it keeps no working state)."""
        return self.policy.working_state_lookback_h  # type: ignore[attr-defined]

    @property
    def rebuild_working_state(self) -> Any:
        """The wrapped policy's ``rebuild_working_state`` (returning this wrapper);
        ``AttributeError`` — so ``hasattr`` is false — when it has none."""
        inner = self.policy.rebuild_working_state  # type: ignore[attr-defined]

        def rebuild(events: Any) -> Any:
            inner(events)
            return self

        return rebuild


def no_message(policy: str, propensity: float = 1.0, campaign: str | None = None,
               reason: str | None = None) -> Decision:
    """The explicit "do not message" decision (logged, so off-policy evaluation sees it)."""
    return Decision(action=NO_ACTION, channel=NO_ACTION, propensity=propensity,
                    policy=policy, campaign=campaign, reason=reason)


def local_hour(ts: datetime, timezone: str) -> float:
    """Local clock time of ``ts`` in ``timezone`` as fractional hours in [0, 24)."""
    t = ts.astimezone(ZoneInfo(timezone))
    return t.hour + t.minute / 60.0 + t.second / 3600.0


def next_local_hour(ts: datetime, timezone: str, hour: float) -> datetime:
    """The first UTC instant ``>= ts`` at which local time in ``timezone`` is ``hour``
    (fractional hours, to the minute; a value that rounds to 24:00 means 00:00).

    DST-aware: on a day the local hour does not exist (spring forward) the instant just
    after the gap (the transition) is returned; on a day it occurs twice (fall back) the
    first occurrence ``>= ts``.
    """
    zone = ZoneInfo(timezone)
    local = ts.astimezone(zone)
    h, m = divmod(round(hour * 60), 60)
    h %= 24  # a time that rounds to 24:00 is 00:00
    after = ts.replace(tzinfo=None) - ts.utcoffset()  # naive UTC
    for days in range(0, 3):
        day = local.date() + timedelta(days=days)
        wall = datetime(day.year, day.month, day.day, h, m)
        # offsets read with fold 0 / 1: equal on a normal day, fold 0's larger on a
        # repeated (fall-back) local time, smaller on a skipped (spring-forward) one
        before = zone.utcoffset(wall)
        later = zone.utcoffset(datetime(day.year, day.month, day.day, h, m, fold=1))
        if before < later:
            candidates = (_gap_end(wall - later, wall - before, zone),)
        else:
            candidates = (wall - before, wall - later)
        for cand in candidates:
            if cand >= after:
                out = cand.replace(tzinfo=dt_timezone.utc)
                return out if ts.tzinfo is dt_timezone.utc else out.astimezone(ts.tzinfo)
    raise AssertionError("unreachable: a local hour recurs within three days")


def _gap_end(lo: datetime, hi: datetime, zone: ZoneInfo) -> datetime:
    """The naive-UTC instant in ``(lo, hi]`` at which ``zone`` leaves a spring-forward gap
    (its UTC offset changes), to the second; ``lo`` / ``hi`` are naive UTC."""
    def offset(t: datetime) -> timedelta:
        return t.replace(tzinfo=dt_timezone.utc).astimezone(zone).utcoffset()

    target = offset(hi)
    while hi - lo > timedelta(seconds=1):
        mid = (lo + (hi - lo) // 2).replace(microsecond=0)
        if offset(mid) == target:
            hi = mid
        else:
            lo = mid
    return hi
