"""Pressure rules: frequency caps, quiet hours, escalation, dedup — composable over any policy.

A policy wrapped with :func:`with_pressure` exposes ``.rules`` (a :class:`PressureRules`).
Engines turn each message decision into a :class:`Pending` and, at time ``t``, call
``rules.admit(due_pendings, ctx)`` (see ``docs/decision-core.md``). ``admit`` is pure: what
was already sent comes from ``ctx.history`` (``sent`` events).

Rules, in the order ``admit`` applies them to one non-exempt pending:

1. consent (``no_consent``, dropped);
2. a cap that admits nothing for this user — ``max: 0``, or ``engaged_max: 0`` for an
   engaged user — drops it at once with the cap's own reason (``cap:sms:cal-day``): no
   window passing frees such a cap, so it is never deferred (for it or for quiet hours)
   only to end ``expired``;
3. quiet hours in the user's local time (``quiet_hours``; per rule ``defer`` to the window's
   end, or ``drop``);
4. dedup: the same campaign already sent on any channel within ``dedup_h``
   (``dedup``, dropped; a decision with ``meta["dedup"] is False`` opts out — journeys'
   later steps do, they are deliberate sequences of one offer);
5. escalation (``priority``): e.g. SMS only after the campaign's email went out ``wait_h``
   earlier and drew no open/click;
6. caps (``cap:<scope>:<window>``) — global, per channel and/or per tag, over a rolling
   window (``window_h``, label ``7d`` / ``36h``) or a calendar window in the user's
   timezone (``calendar: day|week``, label ``cal-day`` / ``cal-week``; weeks start Monday
   00:00 local). Adaptive caps: ``engaged_max`` applies to users with at least
   ``engaged_min_interactions`` opens/clicks in the last ``engaged_window_h``.

Arbitration is by value, not arrival order: exempt pendings go first, then the rest in
decreasing ``(priority, expected_value)`` (ties: rank in ``channel_priority``, then
``created``, then ``pending_id``), each seeing the sends admitted before it. A blocked
pending is deferred to the exact instant the blocking rule frees (the oldest counted send
leaving a rolling window, the next calendar period, the end of quiet hours), or dropped as
``expired`` when that is more than ``max_defer_h`` after it was created. When several caps
bind, the latest of their free instants is used.

:func:`count_violations` (in :mod:`omnisim.policies.violations`) counts cap and quiet-hour
violations in a log.

Exemption: a decision is exempt when ``decision.exempt`` or its ``tag`` is in
``exempt_tags``. A past send is recognised as exempt by its tag only (the history keeps
tags, not the flag), and counts towards caps only when ``exempt_counts`` is true.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Mapping, Sequence
from zoneinfo import ZoneInfo

import numpy as np

from omnisim.policies import _spec
from omnisim.policies.base import (
    CHANNELS, Context, Decision, ForwardsLearning, Policy, local_hour, next_local_hour,
)
from omnisim.policies.violations import ENGAGEMENT_EVENTS, count_violations

CALENDARS = ("day", "week")
_LOCAL_HOUR = "a local hour in [0, 24) (midnight is 0)"
QUIET_ACTIONS = ("defer", "drop")


__all__ = ["Pending", "Admission", "Cap", "QuietHours", "Escalation", "PressureRules",
           "PressuredPolicy", "PressureRulesError", "with_pressure", "default_rules", "load_rules",
           "rules_from_dict", "count_violations"]


class PressureRulesError(_spec.SpecError):
    """An invalid pressure-rule spec; the message names the key path and expected type."""


@dataclass(frozen=True, slots=True)
class Pending:
    """A message decision waiting to be admitted: due at ``due`` (UTC), decided at ``created``."""

    pending_id: str
    decision: Decision
    due: datetime
    created: datetime


@dataclass(frozen=True)
class Admission:
    """What :meth:`PressureRules.admit` decided for the due pendings."""

    send: list[Pending] = field(default_factory=list)
    defer: list[tuple[Pending, datetime, str]] = field(default_factory=list)
    drop: list[tuple[Pending, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Cap:
    """At most ``max`` counted sends per window, for sends matching ``channel`` and ``tag``.

    Exactly one of ``window_h`` (rolling, hours) or ``calendar`` (``day`` / ``week`` in the
    user's timezone) is set. ``None`` channel/tag means any. ``engaged_max`` (optional)
    replaces ``max`` for engaged users.
    """

    max: int
    window_h: float | None = None
    calendar: str | None = None
    channel: str | None = None
    tag: str | None = None
    engaged_max: int | None = None

    def __post_init__(self) -> None:
        if (self.window_h is None) == (self.calendar is None):
            raise PressureRulesError("cap: set exactly one of window_h or calendar")
        if self.calendar is not None and self.calendar not in CALENDARS:
            raise PressureRulesError(f"cap.calendar: expected one of day, week, got {self.calendar!r}")

    @property
    def reason(self) -> str:
        """``cap:<scope>:<window>``, e.g. ``cap:email:7d``, ``cap:all:cal-week``."""
        parts = [p for p in (self.channel, self.tag and f"tag={self.tag}") if p]
        scope = "+".join(parts) if parts else "all"
        if self.calendar:
            label = f"cal-{self.calendar}"
        elif self.window_h % 24 == 0:
            label = f"{self.window_h / 24:g}d"
        else:
            label = f"{self.window_h:g}h"
        return f"cap:{scope}:{label}"

    def applies(self, channel: str, tag: str | None) -> bool:
        return (self.channel is None or self.channel == channel) and (
            self.tag is None or self.tag == tag)

    def limit(self, engaged: bool) -> int:
        return self.engaged_max if engaged and self.engaged_max is not None else self.max

    def window(self, now: datetime, zone: ZoneInfo) -> tuple[datetime, datetime | None]:
        """``(start, next_start)``: sends with ``ts > start`` (rolling) or ``ts >= start``
        (calendar) count at ``now``; ``next_start`` is the next calendar period (or None)."""
        if self.window_h is not None:
            return now - timedelta(hours=self.window_h), None
        return _calendar_window(now.astimezone(zone).date(), self.calendar, zone)

    def counted(self, sent: Sequence[Any], start: datetime, exempt_counts: bool,
                exempt_tags: Sequence[str]) -> list[datetime]:
        """Send times (sorted) this cap counts in its window from ``start``: sends on its
        channel/tag, after ``start`` (rolling) or from it (calendar), and counting towards
        caps (``exempt_counts`` or a tag not in ``exempt_tags``; see
        :meth:`PressureRules.counts`). ``sent`` items have ``ts``, ``channel`` and ``tag``."""
        ch, tag, rolling = self.channel, self.tag, self.window_h is not None
        return sorted(s.ts for s in sent
                      if (ch is None or s.channel == ch) and (tag is None or s.tag == tag)
                      and (exempt_counts or s.tag not in exempt_tags)
                      and (s.ts > start if rolling else s.ts >= start))

    def free_at(self, counted: Sequence[datetime], limit: int, start: datetime,
                next_start: datetime | None) -> datetime:
        """The first instant a new send fits, given the counted sends in the window (sorted);
        ``datetime.max`` (never) when ``limit`` is 0."""
        if limit <= 0:
            return datetime.max.replace(tzinfo=start.tzinfo)
        if next_start is not None:
            return next_start
        k = len(counted) - limit  # this one (0-based, oldest first) must leave the window
        return counted[k] + timedelta(hours=self.window_h)


def _period(day: date, calendar: str | None) -> tuple[date, int]:
    if calendar == "week":
        return day - timedelta(days=day.weekday()), 7
    return day, 1


@lru_cache(maxsize=65536)
def _calendar_window(day: date, calendar: str | None, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """UTC ``(start, next_start)`` of the calendar period holding local ``day`` (memoised:
    many admissions fall on the same local day)."""
    start_day, days = _period(day, calendar)
    return _local_midnight(start_day, zone), _local_midnight(start_day + timedelta(days=days), zone)


def _local_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(ZoneInfo("UTC"))


@dataclass(frozen=True)
class QuietHours:
    """No non-exempt send from ``start_h`` to ``end_h`` local time (wraps midnight when
    ``start_h > end_h``). ``action``: ``defer`` to ``end_h`` or ``drop``; ``channels``: the
    channels it applies to (``None``: all)."""

    start_h: float
    end_h: float
    action: str = "defer"
    channels: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.action not in QUIET_ACTIONS:
            raise PressureRulesError(f"quiet_hours.action: expected defer or drop, got {self.action!r}")
        for key in ("start_h", "end_h"):
            value = getattr(self, key)
            if not 0 <= value < 24:
                raise _spec.fail(PressureRulesError, f"quiet_hours.{key}", _LOCAL_HOUR, value)

    def applies(self, channel: str) -> bool:
        return self.channels is None or channel in self.channels

    def active(self, hour: float) -> bool:
        if self.start_h <= self.end_h:
            return self.start_h <= hour < self.end_h
        return hour >= self.start_h or hour < self.end_h


@dataclass(frozen=True)
class Escalation:
    """Send on ``channel`` only after the same campaign went out on ``after`` at least
    ``wait_h`` hours earlier (within ``lookback_h``) and was not opened or clicked.

    When the user cannot be reached on ``after`` the rule does not apply."""

    channel: str
    after: str
    wait_h: float
    lookback_h: float = 72.0


@dataclass(frozen=True, slots=True)
class _Sent:
    ts: datetime
    channel: str
    tag: str | None
    campaign: str | None


@dataclass(frozen=True)
class PressureRules:
    """A set of pressure rules; :meth:`admit` applies them (module docstring has the order).

    Durations: ``dedup_h``, ``max_defer_h``, ``engaged_window_h`` in hours.
    ``channel_priority``: channels listed earlier win ties of equal value (e.g. the same
    offer on email and SMS at once, under dedup or a binding cap).
    """

    caps: tuple[Cap, ...] = ()
    quiet_hours: tuple[QuietHours, ...] = ()
    dedup_h: float | None = None
    escalations: tuple[Escalation, ...] = ()
    exempt_tags: tuple[str, ...] = ("transactional",)
    exempt_counts: bool = False
    max_defer_h: float = 72.0
    engaged_min_interactions: int = 2
    engaged_window_h: float = 720.0
    channel_priority: tuple[str, ...] = ()
    name: str = "pressure@1"

    @property
    def history_events(self) -> frozenset[str]:
        """The history events :meth:`admit` reads: ``sent``, and ``opened`` / ``clicked``
        when a cap has ``engaged_max`` or an escalation is set (docs/decision-core.md)."""
        engagement = self._adaptive_caps or bool(self.escalations)
        return frozenset({"sent", *(ENGAGEMENT_EVENTS if engagement else ())})

    @cached_property
    def _adaptive_caps(self) -> bool:
        """Whether a cap has ``engaged_max`` (then :meth:`admit` needs the engagement)."""
        return any(c.engaged_max is not None for c in self.caps)

    # -- what counts -------------------------------------------------------------------
    def is_exempt(self, decision: Decision) -> bool:
        return decision.exempt or decision.tag in self.exempt_tags

    def counts(self, tag: str | None) -> bool:
        """Whether a send with this tag counts towards caps."""
        return self.exempt_counts or tag not in self.exempt_tags

    def is_engaged(self, history: Sequence[Any], now: datetime) -> bool:
        since = now - timedelta(hours=self.engaged_window_h)
        n = sum(1 for h in history if h.event in ENGAGEMENT_EVENTS and since < h.ts <= now)
        return n >= self.engaged_min_interactions

    def quiet_rule(self, channel: str, hour: float) -> QuietHours | None:
        """The first quiet-hours rule on ``channel`` active at local clock ``hour`` [0, 24)
        (None: none); what :meth:`admit` checks, and the sender's worker before delivering a
        message an outage delayed."""
        for q in self.quiet_hours:
            if q.applies(channel) and q.active(hour):
                return q
        return None

    # -- admission -----------------------------------------------------------------------
    def admit(self, due: Sequence[Pending], ctx: Context) -> Admission:
        """Decide which due pendings go now, which wait (until when, why) and which never go."""
        now = ctx.now
        # past sends (history events and, below, this call's sends: both have ts, channel,
        # tag, campaign); engagement only matters to caps with an engaged_max
        sent: list[Any] = [h for h in ctx.history if h.event == "sent"]
        engaged = self._adaptive_caps and self.is_engaged(ctx.history, now)
        hour = local_hour(now, ctx.timezone)
        windows: dict[int, tuple[datetime, datetime | None]] = {}  # per cap, computed once
        out = Admission()
        for p in (due if len(due) == 1 else sorted(due, key=self._order)):
            d = p.decision
            if not d.is_message:
                out.drop.append((p, "no_message"))
                continue
            if not ctx.can_message(d.channel):
                out.drop.append((p, "no_consent"))
                continue
            if not self.is_exempt(d):
                verdict = self._check(d, ctx, sent, engaged, hour, windows)
                if verdict is not None:
                    until, reason = verdict
                    if until is None:
                        out.drop.append((p, reason))
                    elif until - p.created > timedelta(hours=self.max_defer_h):
                        out.drop.append((p, "expired"))
                    else:
                        out.defer.append((p, until, reason))
                    continue
            out.send.append(p)
            sent.append(_Sent(now, d.channel, d.tag, d.campaign))
        return out

    def _order(self, p: Pending) -> tuple[Any, ...]:
        d = p.decision
        rank = (self.channel_priority.index(d.channel) if d.channel in self.channel_priority
                else len(self.channel_priority))
        return (not self.is_exempt(d), -d.priority, -d.expected_value, rank, p.created, p.pending_id)

    @cached_property
    def _zero_caps(self) -> tuple[Cap, ...]:
        """The caps whose limit is 0 for some users (``max`` or ``engaged_max``)."""
        return tuple(c for c in self.caps
                     if c.max <= 0 or (c.engaged_max is not None and c.engaged_max <= 0))

    def _closed_cap(self, d: Decision, engaged: bool) -> Cap | None:
        """The first cap on ``d``'s channel and tag that admits nothing for this user (its
        limit is 0), else ``None``."""
        for cap in self._zero_caps:
            if cap.limit(engaged) <= 0 and cap.applies(d.channel, d.tag):
                return cap
        return None

    def _check(self, d: Decision, ctx: Context, sent: list[Any], engaged: bool,
               hour: float, windows: dict[int, tuple[datetime, datetime | None]] | None = None,
               ) -> tuple[datetime | None, str] | None:
        """``None`` if ``d`` may go now, else ``(defer_until or None to drop, reason)``.

        ``sent``: past and just-admitted sends (``ts``, ``channel``, ``tag``, ``campaign``);
        ``windows``: each cap's window at ``ctx.now``, filled on first use."""
        now = ctx.now
        closed = self._closed_cap(d, engaged)
        if closed is not None:
            return None, closed.reason
        q = self.quiet_rule(d.channel, hour)
        if q is not None:
            if q.action == "drop":
                return None, "quiet_hours"
            return next_local_hour(now, ctx.timezone, q.end_h), "quiet_hours"
        if self.dedup_h is not None and d.campaign is not None and d.meta.get("dedup", True):
            since = now - timedelta(hours=self.dedup_h)
            if any(s.campaign == d.campaign and s.ts > since for s in sent):
                return None, "dedup"
        for esc in self.escalations:
            verdict = _escalate(esc, d, ctx, sent)
            if verdict is not None:
                return verdict
        holds: list[tuple[datetime, str]] = []
        windows = {} if windows is None else windows
        for i, cap in enumerate(self.caps):
            if not cap.applies(d.channel, d.tag):
                continue
            window = windows.get(i)
            if window is None:
                window = windows[i] = cap.window(now, ctx.zone)
            start, next_start = window
            counted = cap.counted(sent, start, self.exempt_counts, self.exempt_tags)
            limit = cap.limit(engaged)
            if len(counted) >= limit:
                holds.append((cap.free_at(counted, limit, start, next_start), cap.reason))
        return max(holds) if holds else None


def _escalate(esc: Escalation, d: Decision, ctx: Context,
              sent: list[_Sent]) -> tuple[datetime | None, str] | None:
    if d.channel != esc.channel or not ctx.can_message(esc.after):
        return None
    since = ctx.now - timedelta(hours=esc.lookback_h)
    earlier = [s.ts for s in sent if s.channel == esc.after and s.campaign == d.campaign
               and s.ts > since]
    if not earlier:
        return None, "priority"
    first = min(earlier)
    if any(h.event in ENGAGEMENT_EVENTS and h.channel == esc.after and h.campaign == d.campaign
           and h.ts >= first for h in ctx.history):
        return None, "priority"
    ready = first + timedelta(hours=esc.wait_h)
    return (ready, "priority") if ctx.now < ready else None


# -- composition -------------------------------------------------------------------------

@dataclass(frozen=True)
class PressuredPolicy(ForwardsLearning):
    """``policy`` with pressure ``rules`` attached; decisions are the wrapped policy's."""

    policy: Policy
    rules: PressureRules

    @property
    def name(self) -> str:
        return f"{self.policy.name}+{self.rules.name}"

    @property
    def holdout(self) -> Any:
        """The wrapped policy's global holdout, if any (see :mod:`omnisim.policies.holdout`)."""
        return getattr(self.policy, "holdout", None)

    def decide(self, ctx: Context, rng: np.random.Generator) -> list[Decision]:
        return self.policy.decide(ctx, rng)

    def action_probabilities(self, ctx: Context) -> dict[str, float]:
        """The wrapped policy's: rules act after the decision (admission), not on the choice."""
        probs = getattr(self.policy, "action_probabilities", None)
        if probs is None:
            raise NotImplementedError(f"{self.policy.name!r} has no action_probabilities(ctx)")
        return probs(ctx)


def with_pressure(policy: Policy, rules: PressureRules | None = None) -> PressuredPolicy:
    """Attach pressure rules (default: :func:`default_rules`) to any policy."""
    return PressuredPolicy(policy, rules if rules is not None else default_rules())


# -- YAML ----------------------------------------------------------------------------------

DEFAULT_RULES_PATH = Path(__file__).resolve().parent.parent / "builtin" / "pressure" / "default.yaml"


def default_rules() -> PressureRules:
    """The built-in rule set (``omnisim/builtin/pressure/default.yaml``)."""
    return load_rules(DEFAULT_RULES_PATH)


def load_rules(source: str | Path | Mapping[str, Any]) -> PressureRules:
    """Pressure rules from a YAML file or a mapping; :class:`PressureRulesError` names the key."""
    data, label = _spec.load_yaml(source, PressureRulesError)
    return rules_from_dict(data, f"{label}:" if label else "")


def rules_from_dict(spec: Any, path: str = "") -> PressureRules:
    E, g = PressureRulesError, _spec.get
    top = {"name", "caps", "quiet_hours", "dedup_h", "escalation", "exempt_tags",
           "exempt_counts", "max_defer_h", "engaged", "channel_priority"}
    spec = _spec.check_keys(spec, top, path, E)
    pre = path
    caps = []
    for i, c in enumerate(_spec.get_list(spec, "caps", pre, E, default=[])):
        p = _spec.join(pre, f"caps[{i}]")
        c = _spec.check_keys(c, {"max", "window_h", "calendar", "channel", "tag", "engaged_max"}, p, E)
        if ("window_h" in c) == ("calendar" in c):
            raise E(f"{p}: set exactly one of window_h (rolling hours) or calendar (day|week)")
        caps.append(Cap(
            max=g(c, "max", int, p, E, minimum=0),
            window_h=g(c, "window_h", float, p, E, default=None, minimum=1e-9),
            calendar=g(c, "calendar", str, p, E, default=None, choices=CALENDARS),
            channel=g(c, "channel", str, p, E, default=None, choices=CHANNELS),
            tag=g(c, "tag", str, p, E, default=None),
            engaged_max=g(c, "engaged_max", int, p, E, default=None, minimum=0)))
    quiet = []
    for i, q in enumerate(_spec.get_list(spec, "quiet_hours", pre, E, default=[])):
        p = _spec.join(pre, f"quiet_hours[{i}]")
        q = _spec.check_keys(q, {"start_h", "end_h", "action", "channels"}, p, E)
        chans = g(q, "channels", list, p, E, default=None)
        for j, ch in enumerate(chans or []):
            if ch not in CHANNELS:
                raise _spec.fail(E, _spec.join(p, f"channels[{j}]"), "one of " + ", ".join(CHANNELS), ch)
        hours = {k: g(q, k, float, p, E, minimum=0) for k in ("start_h", "end_h")}
        for k, v in hours.items():
            if v >= 24:
                raise _spec.fail(E, _spec.join(p, k), _LOCAL_HOUR, v)
        quiet.append(QuietHours(
            **hours,
            action=g(q, "action", str, p, E, default="defer", choices=QUIET_ACTIONS),
            channels=tuple(chans) if chans is not None else None))
    escs = []
    for i, e in enumerate(_spec.get_list(spec, "escalation", pre, E, default=[])):
        p = _spec.join(pre, f"escalation[{i}]")
        e = _spec.check_keys(e, {"channel", "after", "wait_h", "lookback_h"}, p, E)
        escs.append(Escalation(
            channel=g(e, "channel", str, p, E, choices=CHANNELS),
            after=g(e, "after", str, p, E, choices=CHANNELS),
            wait_h=g(e, "wait_h", float, p, E, minimum=0),
            lookback_h=g(e, "lookback_h", float, p, E, default=72.0, minimum=0)))
    tags = g(spec, "exempt_tags", list, pre, E, default=["transactional"])
    for j, t in enumerate(tags):
        if not isinstance(t, str):
            raise _spec.fail(E, _spec.join(pre, f"exempt_tags[{j}]"), "a string", t)
    order = g(spec, "channel_priority", list, pre, E, default=[])
    for j, ch in enumerate(order):
        if ch not in CHANNELS:
            raise _spec.fail(E, _spec.join(pre, f"channel_priority[{j}]"), "one of " + ", ".join(CHANNELS), ch)
    engaged = _spec.check_keys(spec.get("engaged") or {}, {"min_interactions", "window_h"},
                               _spec.join(pre, "engaged"), E)
    return PressureRules(
        caps=tuple(caps), quiet_hours=tuple(quiet), escalations=tuple(escs),
        dedup_h=g(spec, "dedup_h", float, pre, E, default=None, minimum=0),
        exempt_tags=tuple(tags), exempt_counts=g(spec, "exempt_counts", bool, pre, E, default=False),
        max_defer_h=g(spec, "max_defer_h", float, pre, E, default=72.0, minimum=0),
        engaged_min_interactions=g(engaged, "min_interactions", int, _spec.join(pre, "engaged"), E, default=2, minimum=0),
        engaged_window_h=g(engaged, "window_h", float, _spec.join(pre, "engaged"), E, default=720.0, minimum=0),
        channel_priority=tuple(order), name=g(spec, "name", str, pre, E, default="pressure@1"))
