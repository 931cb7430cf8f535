"""Rule journeys: triggers, waits, conditions, branches, exits — in YAML or Python.

A :class:`Journey` is a stateless policy. A behaviour trigger in ``triggers`` *enters* it;
each :class:`Step` then runs at its time (``delay_h`` after the previous step, then — if
``at_local_hour`` is set — at the next occurrence of that local hour, DST-aware), checks its
``when`` conditions (all must hold), messages on its ``channel`` and goes to ``next``
(conditions held) or ``otherwise`` (they did not). Both default to the following step in
the list; ``"exit"`` ends the journey. All state travels in the :class:`FollowUp` payload::

    {"journey", "entry_id", "entered_at" (ISO UTC), "step", "step_at" (ISO UTC, when the
     previous step ran), "sent" (ids of steps that messaged)}

What the journey relies on from the history (``Context.history``):

- The journey's own messages are recognised by ``campaign == journey name``: the engine
  must copy the decision's campaign onto ``sent``, ``opened`` and ``clicked`` events.
  Conditions on message events (``opened``, ``clicked``, ``delivered``, ``sent``) match the
  journey's campaign by default (``own: false`` to match any campaign); the step that sent
  a message is in ``Decision.meta["step"]`` for the log, not in the history.
- Conditions look at events strictly after the entry (``since: entry``) or after the
  previous step ran (``since: step``) — the triggering event does not count — and at the
  journey's own message events (``own``) from that instant on: a step's message is sent
  at the instant the step runs, so ``{event: sent, channel: email, negate: true}`` after
  an email step sees it.
- Exits: an event in ``exit_on`` (default ``purchase``, ``unsubscribed``) after entry ends
  the journey at its next step (a ``none`` decision with ``meta["exit"]``).
- Re-entry counts *entries*, not sends. Every entry logs a ``decided`` row with the
  journey's campaign at once — the wait before a first step (``step: entry``), the first
  step's decision (a message, a ``no_consent`` none) or the holdout's ``none`` — so the
  history shows an entry before any message. The journey's *own rows* are its ``decided``
  and ``sent`` rows (``campaign`` = its name). A trigger enters only if

  1. one run at a time: no own row in the last :attr:`Journey.longest_wait_h` hours (a run
     whose last decision is older than its longest wait has no step left to run);
  2. no entry within ``reentry_cooldown_h`` hours (default: the journey's span
     :attr:`Journey.span_h`); a cooldown shorter than the longest wait acts as rule 1;
  3. fewer than ``max_entries`` entries are visible in the history (35 days in engines).

  An *entry* in the history is an own ``decided`` row that its ``step``
  (:attr:`HistoryEvent.step <omnisim.policies.base.HistoryEvent.step>`, the log's ``step``
  column) names one: ``entry`` (the wait before a first step), or the first step's id
  unless the own ``decided`` row before it is an ``entry`` (then it is that run's first
  step, however late it ran); other steps' ids are not entries. A row without a step this
  journey knows — ``None``: a holdout's ``none``, a foreign log, a sender store older than
  the column; or a step of another version — is an entry when no own row is in the
  ``longest_wait_h`` hours before it: exactly the entries when steps run on time, since rule
  1 admitted them and every later decision of a run follows the previous one within that
  wait, but a step the sender ran late after an outage would look like one (which only
  delays the next entry). Histories without the journey's ``decided`` rows (a foreign log)
  show no entries: rule 1 then counts its sends alone. Rule 1 stays a matter of timing: a
  run is taken as over once its last decision is a longest wait old.
- A per-journey holdout (``holdout_share``) answers entry with ``none`` / ``holdout``;
  the journey's decisions for other users carry propensity ``1 - holdout_share``.

Later steps set ``meta["dedup"] = False``: a journey's follow-up on another channel is a
deliberate sequence, not a duplicate, for the pressure rules' dedup.

Channel fallback (``fallback``, sender only): a step's ``fallback`` — a channel, a list of
channels, or an ordered mapping channel → template (``{email: browse_email}``; a ``null``
template names none) — goes into ``Decision.meta["fallback"]`` (a list) of the message it
sends, and the named templates into ``Decision.meta["fallback_templates"]`` (a dict channel
→ template, only when some are named). The production sender re-sends a message the
providers answer undeliverable or refuse for good (a push gateway's 410) on that chain, with
the template named for the channel it falls back to (without one, the original template,
marked with ``meta["template_channel"]``); ``fallback: []`` forbids it even when the sender
has a ``--fallback`` default; no key leaves the sender's default. A list item may itself be
a one-entry mapping (``[{email: browse_email}, sms]``): the form exported artifacts use,
since their JSON sorts mapping keys (:func:`ordered_fallbacks`). The simulator does not
re-route bounces, so ``fallback`` alone does not change simulated results (docs/sender.md,
"Channel fallback").

Unreachable at decision time (``fallback_if_unreachable: true``, simulator and sender
alike): when the user cannot be messaged on the step's channel (no consent or address),
the step messages on the first reachable channel of its ``fallback`` chain instead of
being suppressed ``no_consent`` — with the template named for that channel (else its own,
marked ``meta["template_channel"]``), ``meta["fallback_from"]`` = the step's channel and
the rest of the chain as ``meta["fallback"]``. A later step's condition on the step's
channel (``{event: sent, channel: push}``) does not see such a message: it went out on
another channel.

YAML (the same fields as the dataclasses; see ``omnisim/builtin/journeys/``)::

    name: seed_journey            # campaign name; the policy is "seed_journey@<version>"
    version: 1
    triggers: [product_view, cart_abandon]   # non-empty, of BEHAVIOUR_TRIGGERS
    exit_on: [purchase, unsubscribed]
    reentry_cooldown_h: 72        # optional; max_entries, holdout_share, holdout_salt too
    steps:
      - {id: offer_email, channel: email, template: offer_intro, expected_value: 1.0}
      - id: sms_nudge
        channel: sms              # email | sms | push | none
        delay_h: 4                # then optionally at_local_hour: 10
        when: [{event: opened, channel: email, since: entry, negate: true}]
        next: visit_push          # optional (default: the following step); otherwise: exit
      - id: visit_push
        channel: push
        fallback: email           # optional, sender only: email | [email, sms] | [] (none)
                                  # | {email: visit_email, sms: visit_sms} (with templates)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from omnisim.log import CHANNELS as LOG_CHANNELS, EVENTS
from omnisim.policies import _spec
from omnisim.policies.base import (
    BEHAVIOUR_TRIGGERS, CHANNELS, NO_ACTION, Context, Decision, FollowUp, Policy, next_local_hour,
    no_message,
)
from omnisim.policies.holdout import in_holdout

EXIT = "exit"
#: The log ``step`` of an entry's wait before a first step (reserved: no step may be named so).
ENTRY_STEP = "entry"
SINCE = ("entry", "step")
OWN_BY_DEFAULT = ("sent", "delivered", "opened", "clicked", "bounced")
#: The journey's own history rows re-entry reads (module docstring, "Re-entry").
REENTRY_EVENTS = ("decided", "sent")
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "builtin" / "journeys"
#: What an own ``decided`` row's ``step`` says of it being an entry (``Journey._entry_kinds``):
#: plain values, compared with ``==`` (a journey's cached kinds travel pickled to workers).
_BY_TIME, _ENTRY, _FIRST, _LATER = 0, 1, 2, 3


class JourneyError(_spec.SpecError):
    """An invalid journey; the message names the key path and the expected type."""


@dataclass(frozen=True)
class Condition:
    """``event`` (optionally on ``channel``) happened after ``since`` — or, with ``negate``,
    did not. ``own`` restricts to the journey's campaign (default: true for message events,
    false for behaviour events). Strictly after, except that an own event at the instant
    itself counts: the message a step sends goes out at the instant the step runs."""

    event: str
    since: str = "step"
    channel: str | None = None
    own: bool | None = None
    negate: bool = False

    def holds(self, ctx: Context, campaign: str, entered_at: datetime, step_at: datetime) -> bool:
        since = entered_at if self.since == "entry" else step_at
        own = self.own if self.own is not None else self.event in OWN_BY_DEFAULT
        found = any(
            (h.ts >= since if own else h.ts > since) and h.event == self.event
            and (self.channel is None or h.channel == self.channel)
            and (not own or h.campaign == campaign)
            for h in ctx.history)
        return found != self.negate


@dataclass(frozen=True)
class Step:
    """One journey step: wait (``delay_h`` hours, then until ``at_local_hour``), check
    ``when``, message on ``channel`` (``none`` for a pure branch/wait step). ``fallback``:
    the channels the sender may re-send on if the message is undeliverable (``()`` forbids
    it, ``None`` leaves the sender's default); sent as ``Decision.meta["fallback"]``.
    ``fallback_templates``: ``(channel, template)`` pairs, in chain order, naming the
    template of the re-sent message on each of those channels (channels without one are
    left out); sent as ``Decision.meta["fallback_templates"]``. ``fallback_if_unreachable``:
    message on the first reachable channel of ``fallback`` when ``channel`` is not reachable
    at decision time (:meth:`channel_for`)."""

    id: str
    channel: str
    delay_h: float = 0.0
    at_local_hour: float | None = None
    when: tuple[Condition, ...] = ()
    next: str | None = None
    otherwise: str | None = None
    template: str | None = None
    tag: str = "marketing"
    priority: int = 0
    expected_value: float = 0.0
    fallback: tuple[str, ...] | None = None
    fallback_templates: tuple[tuple[str, str], ...] = ()
    fallback_if_unreachable: bool = False

    @property
    def message_meta(self) -> dict[str, Any]:
        """Meta keys of the message this step sends, besides step, entry and dedup: a new
        dict (and new lists) on every call, so decisions share no mutable value."""
        meta: dict[str, Any] = {"template": self.template or self.id}
        if self.fallback is not None:
            meta["fallback"] = list(self.fallback)
        if self.fallback_templates:
            meta["fallback_templates"] = dict(self.fallback_templates)
        return meta

    def channel_for(self, ctx: Context) -> str | None:
        """The channel this step messages ``ctx``'s user on: its own when reachable; else,
        with ``fallback_if_unreachable``, the first reachable channel of its fallback chain;
        else ``None`` (suppressed, ``no_consent``)."""
        if ctx.can_message(self.channel):
            return self.channel
        if self.fallback_if_unreachable:
            for ch in self.fallback or ():
                if ctx.can_message(ch):
                    return ch
        return None

    def message_meta_on(self, channel: str) -> dict[str, Any]:
        """:attr:`message_meta` of this step's message sent on ``channel``: its own channel,
        or a channel of its fallback chain (:meth:`channel_for`) — then with the template
        named for that channel (else the step's, marked ``template_channel``),
        ``fallback_from`` and the chain's rest as ``fallback``."""
        meta = self.message_meta
        if channel == self.channel:
            return meta
        chain = list(self.fallback or ())
        rest = chain[chain.index(channel) + 1:]
        named = dict(self.fallback_templates)
        meta["fallback"] = rest
        meta["fallback_from"] = self.channel
        if named.get(channel):
            meta["template"] = named[channel]
        else:
            meta["template_channel"] = self.channel
        left = {ch: t for ch, t in named.items() if ch in rest}
        if left:
            meta["fallback_templates"] = left
        else:
            meta.pop("fallback_templates", None)
        return meta

    def due(self, after: datetime, timezone: str) -> datetime:
        """When this step runs if the previous one ran at ``after`` (UTC)."""
        at = after + timedelta(hours=self.delay_h)
        return next_local_hour(at, timezone, self.at_local_hour) if self.at_local_hour is not None else at


@dataclass(frozen=True)
class Journey:
    """A rule journey; a :class:`~omnisim.policies.base.Policy` named ``<journey>@<version>``."""

    journey: str
    triggers: tuple[str, ...]
    steps: tuple[Step, ...]
    version: int = 1
    exit_on: tuple[str, ...] = ("purchase", "unsubscribed")
    reentry_cooldown_h: float | None = None
    max_entries: int | None = None
    holdout_share: float = 0.0
    holdout_salt: str = "omnisim-journey"

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def name(self) -> str:
        return f"{self.journey}@{self.version}"

    @property
    def span_h(self) -> float:
        """An upper bound on the hours from entry to the last step."""
        return sum(s.delay_h + (24.0 if s.at_local_hour is not None else 0.0) for s in self.steps) + 1.0

    @property
    def longest_wait_h(self) -> float:
        """An upper bound on the hours between two consecutive decisions of one entry (the
        entry and its first step included): the longest step wait, plus 24 h for one until
        a local hour, plus 1 h (a DST change)."""
        return max(s.delay_h + (24.0 if s.at_local_hour is not None else 0.0) for s in self.steps) + 1.0

    @property
    def cooldown_h(self) -> float:
        """Hours after an entry before the next may start: ``reentry_cooldown_h``, default
        :attr:`span_h` (one run at a time is enforced apart, by :meth:`_may_enter`)."""
        return self.reentry_cooldown_h if self.reentry_cooldown_h is not None else self.span_h

    @property
    def trigger_kinds(self) -> frozenset[str]:
        """Trigger kinds ``decide`` may answer: the entry triggers and ``journey_step``
        (docs/decision-core.md, "Batch decisions")."""
        return frozenset(self.triggers) | {"journey_step"}

    @property
    def history_events(self) -> frozenset[str]:
        """The history events ``decide`` reads: its own ``decided`` and ``sent`` rows
        (re-entry), ``exit_on`` and the events its conditions name (docs/decision-core.md,
        "Batch decisions")."""
        return frozenset({*REENTRY_EVENTS, *self.exit_on, *(c.event for s in self.steps for c in s.when)})

    def step(self, step_id: str) -> Step | None:
        return next((s for s in self.steps if s.id == step_id), None)

    def target(self, index: int, ok: bool) -> Step | None:
        """The step after ``steps[index]`` given whether its conditions held."""
        s = self.steps[index]
        goto = s.next if ok else s.otherwise
        if goto is None:
            return self.steps[index + 1] if index + 1 < len(self.steps) else None
        return None if goto == EXIT else self.step(goto)

    # -- deciding --------------------------------------------------------------------------
    def decide(self, ctx: Context, rng: np.random.Generator) -> list[Decision]:
        trig = ctx.trigger
        if trig.kind == "journey_step":
            if trig.payload.get("journey") != self.journey:
                return []
            return self._run(ctx, dict(trig.payload))
        if trig.kind not in self.triggers or not self._may_enter(ctx):
            return []
        return self._enter(ctx, self._run)

    def _enter(self, ctx: Context, run: Any) -> list[Decision]:
        """Entry of a user allowed to enter: holdout, then the first step (``run``) or a wait."""
        if in_holdout(ctx.user_id, self.holdout_share, f"{self.holdout_salt}:{self.journey}"):
            return [no_message(self.name, self.holdout_share, self.journey, reason="holdout")]
        now = ctx.now.isoformat()
        payload = {"journey": self.journey, "entry_id": f"{self.journey}:{ctx.user_id}:{now}",
                   "entered_at": now, "step": self.steps[0].id, "step_at": now, "sent": []}
        at = self.steps[0].due(ctx.now, ctx.timezone)
        if at <= ctx.now:
            return run(ctx, payload)
        wait = no_message(self.name, 1.0 - self.holdout_share, self.journey)
        return [replace(wait, follow_ups=(FollowUp(at, payload),),
                        meta={"step": "entry", "entry_id": payload["entry_id"]})]

    def _may_enter(self, ctx: Context) -> bool:
        """Whether a behaviour trigger may enter (module docstring, "Re-entry"): reads the
        whole history, in time order."""
        own = sorted(((h.ts, h.event == "decided", h.step) for h in ctx.history
                      if h.campaign == self.journey and h.event in REENTRY_EVENTS),
                     key=lambda row: row[0])
        if not own:
            return True
        wait = timedelta(hours=self.longest_wait_h)
        if ctx.now - own[-1][0] < wait:
            return False  # a run may still be going
        kinds = self._entry_kinds
        entries: list[datetime] = []
        last: datetime | None = None  # the previous own row
        last_step: str | None = None  # the previous own decided row's step
        for ts, decided, step in own:
            if decided:
                kind = kinds.get(step, _BY_TIME)  # type: ignore[arg-type]
                if kind == _ENTRY or (kind == _FIRST and last_step != "entry") or (
                        kind == _BY_TIME and (last is None or ts - last >= wait)):
                    entries.append(ts)
                last_step = step
            last = ts
        if entries and ctx.now - entries[-1] < timedelta(hours=self.cooldown_h):
            return False
        return self.max_entries is None or len(entries) < self.max_entries

    @cached_property
    def _entry_kinds(self) -> dict[str, int]:
        """How an own ``decided`` row's ``step`` tells whether it is an entry (module
        docstring, "Re-entry"): ``entry`` is one; the first step's id is one unless the own
        decided row before it is an ``entry`` (the wait of the same run); the other steps'
        ids are none; any other step (``None``, a step of another version) by timing."""
        kinds: dict[str, int] = {s.id: _LATER for s in self.steps}
        kinds[self.steps[0].id] = _FIRST
        kinds["entry"] = _ENTRY
        return kinds

    def _may_enter_recent(self, ctx: Context) -> bool:
        """:meth:`_may_enter` without ``max_entries``, reading an oldest-first history newest
        first, only back to the last entry or the cooldown's start."""
        journey, now = self.journey, ctx.now
        wait = timedelta(hours=self.longest_wait_h)
        since = now - timedelta(hours=self.cooldown_h)
        kinds = self._entry_kinds
        newest = True
        # the own decided row just seen (within the cooldown) whose being an entry depends on
        # older rows: _BY_TIME, when the next older own row is a wait before it (``later``);
        # _FIRST, when the next older own decided row is not an ``entry``
        pending: int | None = None
        later: datetime | None = None
        for h in reversed(ctx.history):
            if h.campaign != journey or h.event not in REENTRY_EVENTS:
                continue
            if newest and now - h.ts < wait:
                return False  # a run may still be going
            newest = False
            if pending == _BY_TIME:
                if later - h.ts >= wait:  # type: ignore[operator]
                    return False  # ``later`` is the last entry, and it is after ``since``
                pending = None
            elif pending == _FIRST and h.event == "decided":
                if h.step != "entry":
                    return False  # the pending first step is the last entry, after ``since``
                pending = None  # ``h`` is its entry's wait, classified next
            if h.ts <= since:
                if pending is None:
                    return True  # the last entry is ``h`` or older: not within the cooldown
                continue  # a pending first step: look on for the own decided row before it
            if h.event == "decided":
                kind = kinds.get(h.step, _BY_TIME)  # type: ignore[arg-type]
                if kind == _ENTRY:
                    return False  # an entry within the cooldown
                pending, later = (kind, h.ts) if kind != _LATER else (None, None)
            elif pending != _FIRST:
                pending = None
        return pending is None  # pending: the oldest own (decided) row, an entry in the cooldown

    def _run(self, ctx: Context, payload: dict[str, Any]) -> list[Decision]:
        index = next((i for i, s in enumerate(self.steps) if s.id == payload.get("step")), None)
        meta: dict[str, Any] = {"step": payload.get("step"), "entry_id": payload.get("entry_id")}
        p = 1.0 - self.holdout_share
        if index is None:  # a payload from another version of this journey
            return [replace(no_message(self.name, p, self.journey), meta=meta | {"exit": "unknown_step"})]
        step = self.steps[index]
        try:
            entered_at = datetime.fromisoformat(payload["entered_at"])
            step_at = datetime.fromisoformat(payload["step_at"])
        except (KeyError, TypeError, ValueError) as exc:
            raise JourneyError(f"{self.name}: journey_step payload needs ISO 'entered_at' and "
                               f"'step_at' timestamps, got {dict(payload)!r} ({exc})") from None
        for event in self.exit_on:
            if any(h.event == event and h.ts > entered_at for h in ctx.history):
                return [replace(no_message(self.name, p, self.journey), meta=meta | {"exit": event})]
        ok = all(c.holds(ctx, self.journey, entered_at, step_at) for c in step.when)
        sent = list(payload.get("sent", []))
        if not ok or step.channel == NO_ACTION:
            decision = replace(no_message(self.name, p, self.journey),
                               meta=meta | {"branch": "next" if ok else "otherwise"})
        elif (channel := step.channel_for(ctx)) is None:
            decision = replace(no_message(self.name, p, self.journey, reason="no_consent"), meta=meta)
        else:
            sent.append(step.id)
            decision = Decision(
                action=channel, channel=channel, propensity=p, policy=self.name,
                campaign=self.journey, tag=step.tag, priority=step.priority,
                expected_value=step.expected_value,
                meta=meta | step.message_meta_on(channel) | {"dedup": index == 0})
        nxt = self.target(index, ok)
        if nxt is not None:
            follow = payload | {"step": nxt.id, "step_at": ctx.now.isoformat(), "sent": sent}
            decision = replace(decision, follow_ups=(FollowUp(nxt.due(ctx.now, ctx.timezone), follow),))
        return [decision]

    # -- batch (docs/decision-core.md, "Batch decisions") ------------------------------------
    def decide_batch(self, ctxs: Sequence[Context], rng: np.random.Generator) -> list[list[Decision]]:
        """``[decide(c, rng) for c in ctxs]``, faster: identical decisions for contexts whose
        history is oldest first (the :class:`Context` contract; engines guarantee it).

        History scans run newest first and stop at the instant they look back to (entry,
        previous step, last own send); the journey draws no random numbers."""
        return [self._decide_sorted(c) for c in ctxs]

    @cached_property
    def _step_index(self) -> dict[str, int]:
        index: dict[str, int] = {}
        for i, s in enumerate(self.steps):
            index.setdefault(s.id, i)
        return index

    def _decide_sorted(self, ctx: Context) -> list[Decision]:
        trig = ctx.trigger
        if trig.kind == "journey_step":
            if trig.payload.get("journey") != self.journey:
                return []
            return self._run_sorted(ctx, dict(trig.payload))
        if trig.kind not in self.triggers:
            return []
        may_enter = self._may_enter if self.max_entries is not None else self._may_enter_recent
        if not may_enter(ctx):
            return []
        return self._enter(ctx, self._run_sorted)

    def _run_sorted(self, ctx: Context, payload: dict[str, Any]) -> list[Decision]:
        try:
            index = self._step_index.get(payload.get("step"))  # type: ignore[arg-type]
            entered_at = datetime.fromisoformat(payload["entered_at"])
            step_at = datetime.fromisoformat(payload["step_at"])
            if index is None or step_at < entered_at:
                raise ValueError
        except (KeyError, TypeError, ValueError):
            return self._run(ctx, payload)  # the unusual payloads (and their errors), as decide
        step = self.steps[index]
        meta: dict[str, Any] = {"step": payload.get("step"), "entry_id": payload.get("entry_id")}
        p = 1.0 - self.holdout_share
        name, journey = self.name, self.journey
        history = ctx.history
        # newest first; everything before entry is irrelevant to exits and conditions (and
        # at entry, to all but conditions on own messages)
        recent = []
        for h in reversed(history):
            if h.ts < entered_at:
                break
            recent.append(h)
        seen = {h.event for h in recent if h.ts > entered_at}
        for event in self.exit_on:
            if event in seen:
                return [Decision(action=NO_ACTION, channel=NO_ACTION, propensity=p, policy=name,
                                 campaign=journey, meta=meta | {"exit": event})]
        ok = True
        for c in step.when:
            since = entered_at if c.since == "entry" else step_at
            own = c.own if c.own is not None else c.event in OWN_BY_DEFAULT
            found = False
            for h in recent:
                if h.ts <= since and (h.ts < since or not own):
                    break  # older than since (at since, only own messages count)
                if h.event == c.event and (c.channel is None or h.channel == c.channel) and (
                        not own or h.campaign == journey):
                    found = True
                    break
            if found == c.negate:
                ok = False
                break
        sent = list(payload.get("sent", []))
        nxt = self.target(index, ok)
        follow_ups: tuple[FollowUp, ...] = ()
        if not ok or step.channel == NO_ACTION:
            decision_args = dict(action=NO_ACTION, channel=NO_ACTION,
                                 meta=meta | {"branch": "next" if ok else "otherwise"})
        elif (channel := step.channel_for(ctx)) is None:
            decision_args = dict(action=NO_ACTION, channel=NO_ACTION, reason="no_consent", meta=meta)
        else:
            sent.append(step.id)
            decision_args = dict(action=channel, channel=channel, tag=step.tag,
                                 priority=step.priority, expected_value=step.expected_value,
                                 meta=meta | step.message_meta_on(channel) | {"dedup": index == 0})
        if nxt is not None:
            follow = payload | {"step": nxt.id, "step_at": ctx.now.isoformat(), "sent": sent}
            follow_ups = (FollowUp(nxt.due(ctx.now, ctx.timezone), follow),)
        return [Decision(propensity=p, policy=name, campaign=journey, follow_ups=follow_ups,
                         **decision_args)]


@dataclass(frozen=True)
class JourneySet:
    """Several journeys as one policy: every journey sees behaviour triggers; a
    ``journey_step`` goes to the journey named in its payload."""

    journeys: tuple[Policy, ...]
    label: str = "journeys"
    version: int = 1

    @property
    def name(self) -> str:
        return f"{self.label}@{self.version}"

    @property
    def trigger_kinds(self) -> frozenset[str] | None:
        """The union of the journeys' trigger kinds; ``None`` (any kind) when one of them
        does not declare its own."""
        return self._union("trigger_kinds")

    @property
    def history_events(self) -> frozenset[str] | None:
        """The union of the journeys' ``history_events``; ``None`` (any event) when one of
        them does not declare its own."""
        return self._union("history_events")

    def _union(self, declaration: str) -> frozenset[str] | None:
        out: set[str] = set()
        for j in self.journeys:
            declared = getattr(j, declaration, None)
            if declared is None:
                return None
            out |= set(declared)
        return frozenset(out)

    def decide(self, ctx: Context, rng: np.random.Generator) -> list[Decision]:
        out: list[Decision] = []
        for j in self.journeys:
            out.extend(j.decide(ctx, rng))
        return out

    def decide_batch(self, ctxs: Sequence[Context], rng: np.random.Generator) -> list[list[Decision]]:
        """``[decide(c, rng) for c in ctxs]``: each journey decides for all contexts at once
        when all members are :class:`Journey` (they draw nothing); a context's decisions keep
        the journeys' order. Otherwise one ``decide`` per context."""
        if not all(isinstance(j, Journey) for j in self.journeys):
            return [self.decide(c, rng) for c in ctxs]  # other members may draw: same order
        out: list[list[Decision]] = [[] for _ in ctxs]
        for j in self.journeys:
            for acc, res in zip(out, j.decide_batch(ctxs, rng)):
                acc.extend(res)
        return out


# -- validation and YAML ---------------------------------------------------------------------

def _validate(j: Journey) -> None:
    E = JourneyError
    if not j.steps:
        raise E(f"{j.journey}.steps: expected a non-empty list of steps")
    ids = [s.id for s in j.steps]
    for i, s in enumerate(j.steps):
        p = f"{j.journey}.steps[{i}]"
        if ids.count(s.id) > 1:
            raise E(f"{p}.id: step ids must be unique, {s.id!r} repeats")
        if s.id in (ENTRY_STEP, EXIT):
            raise E(f"{p}.id: {s.id!r} is reserved (the log's step of a journey's "
                    f"{'entry wait' if s.id == ENTRY_STEP else 'exit'}); name the step otherwise")
        if s.channel not in CHANNELS + (NO_ACTION,):
            raise _spec.fail(E, f"{p}.channel", "one of " + ", ".join(CHANNELS + (NO_ACTION,)), s.channel)
        for key in ("next", "otherwise"):
            goto = getattr(s, key)
            if goto is not None and goto != EXIT and goto not in ids:
                raise _spec.fail(E, f"{p}.{key}", "a step id or 'exit'", goto)
            if goto is not None and goto in ids and ids.index(goto) <= i:
                raise _spec.fail(E, f"{p}.{key}", "a later step id (journeys do not loop)", goto)
        if s.delay_h < 0:
            raise _spec.fail(E, f"{p}.delay_h", "a number >= 0", s.delay_h)
        if s.at_local_hour is not None and not 0 <= s.at_local_hour < 24:
            raise _spec.fail(E, f"{p}.at_local_hour", "a number in [0, 24)", s.at_local_hour)
        if s.fallback is not None:
            if isinstance(s.fallback, str) or not isinstance(s.fallback, (tuple, list)):
                raise _spec.fail(E, f"{p}.fallback", "a tuple of channels", s.fallback)
            _check_fallback(tuple(s.fallback), s.channel, f"{p}.fallback")
        _check_fallback_templates(s, f"{p}.fallback_templates")
        if not isinstance(s.fallback_if_unreachable, bool):
            raise _spec.fail(E, f"{p}.fallback_if_unreachable", "true or false", s.fallback_if_unreachable)
        if s.fallback_if_unreachable and not s.fallback:
            raise _spec.fail(E, f"{p}.fallback_if_unreachable", "a step with a fallback chain to "
                             "move to (add 'fallback:')", s.fallback)
        for k, c in enumerate(s.when):
            if c.event not in EVENTS:
                raise _spec.fail(E, f"{p}.when[{k}].event", "an engagement-log event", c.event)
            if c.since not in SINCE:
                raise _spec.fail(E, f"{p}.when[{k}].since", "entry or step", c.since)
            if c.channel is not None and c.channel not in LOG_CHANNELS:
                raise _spec.fail(E, f"{p}.when[{k}].channel", "one of " + ", ".join(LOG_CHANNELS), c.channel)
    if not 0.0 <= j.holdout_share <= 1.0:
        raise _spec.fail(E, f"{j.journey}.holdout_share", "a number in [0, 1]", j.holdout_share)
    _check_triggers(j.triggers, f"{j.journey}.triggers")


def _check_triggers(triggers: Any, where: str) -> None:
    """``Journey.triggers``: a non-empty tuple of :data:`BEHAVIOUR_TRIGGERS` — a typo would
    otherwise never fire."""
    E, known = JourneyError, "one of " + ", ".join(BEHAVIOUR_TRIGGERS)
    if isinstance(triggers, str) or not isinstance(triggers, (tuple, list)):
        raise _spec.fail(E, where, f"a tuple of trigger kinds ({known})", triggers)
    if not triggers:
        raise _spec.fail(E, where, f"at least one trigger kind ({known})", list(triggers))
    for i, kind in enumerate(triggers):
        if kind == "journey_step":
            raise E(f"{where}[{i}]: journey_step is reserved for follow-ups (expected {known})")
        if kind not in BEHAVIOUR_TRIGGERS:
            raise _spec.fail(E, f"{where}[{i}]", f"a behaviour trigger, {known}", kind)


def _check_fallback(chain: tuple[Any, ...], channel: str, where: str, single: bool = False,
                    paths: Sequence[str] | None = None, given: Any = ...) -> None:
    """A step's fallback chain: message channels other than the step's own, each once, and
    only on a step that messages. ``single``: the YAML gave one channel, not a list;
    ``paths``: the key path of each channel (default ``where[i]``); ``given``: the value
    shown when the step cannot have a fallback (default: the chain)."""
    E = JourneyError
    if channel == NO_ACTION:
        shown = given if given is not ... else chain[0] if single else list(chain)
        raise _spec.fail(E, where, "no fallback on a 'channel: none' step (it sends no message)", shown)
    for i, ch in enumerate(chain):
        at = paths[i] if paths is not None else where if single else f"{where}[{i}]"
        if not isinstance(ch, str):
            raise _spec.fail(E, at, "a string", ch)
        if ch not in CHANNELS:
            raise _spec.fail(E, at, "one of " + ", ".join(CHANNELS) + " (a channel to re-send on; "
                             "'fallback: []' forbids fallback)", ch)
        if ch == channel:
            raise _spec.fail(E, at, f"a channel other than the step's own ({channel})", ch)
        if ch in chain[:i]:
            raise _spec.fail(E, at, "each channel at most once", ch)


def _check_fallback_templates(s: Step, where: str) -> None:
    """``Step.fallback_templates``: ``(channel, template)`` pairs, each channel once and in
    the step's ``fallback`` chain, each template a non-empty string."""
    E, pairs = JourneyError, s.fallback_templates
    if not isinstance(pairs, tuple):
        raise _spec.fail(E, where, "a tuple of (channel, template) pairs", pairs)
    seen: list[str] = []
    for i, pair in enumerate(pairs):
        at = f"{where}[{i}]"
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)):
            raise _spec.fail(E, at, "a (channel, template) pair", pair)
        ch, template = pair
        if s.fallback is None or ch not in s.fallback:
            chain = "no fallback" if s.fallback is None else "fallback " + repr(list(s.fallback))
            raise _spec.fail(E, f"{at}[0]", f"a channel of the step's fallback chain (it has "
                             f"{chain})", ch)
        if ch in seen:
            raise _spec.fail(E, f"{at}[0]", "each channel at most once", ch)
        if not isinstance(template, str) or not template.strip():
            raise _spec.fail(E, f"{at}[1]", "a template name (a non-empty string)", template)
        seen.append(ch)


_TEMPLATE_EXPECTED = "a template name (a non-empty string), or null for none"
_FALLBACK_EXPECTED = ("a channel (" + ", ".join(CHANNELS) + "), a list of channels, or a mapping "
                     "channel -> template")


def _fallback(s: Mapping[str, Any], path: str) -> tuple[tuple[str, ...] | None, tuple[tuple[str, str], ...]]:
    """``fallback:`` of a step mapping: ``(chain, templates)``.

    Forms: a channel; a list whose items are channels or one-entry mappings ``{channel:
    template}`` (``[]``: no fallback); an ordered mapping ``{channel: template, ...}``. A
    ``null`` template names none; ``templates`` holds the ``(channel, template)`` pairs of
    the named ones, in chain order."""
    E, where = JourneyError, _spec.join(path, "fallback")
    value = s.get("fallback")
    if value is None:
        return None, ()
    if isinstance(value, str):
        items: list[tuple[Any, Any, str, str]] = [(value, None, where, where)]
    elif isinstance(value, Mapping):
        items = [(ch, t, _spec.join(where, str(ch)), _spec.join(where, str(ch))) for ch, t in value.items()]
    elif isinstance(value, list):
        items = []
        for i, item in enumerate(value):
            at = f"{where}[{i}]"
            if isinstance(item, Mapping):
                if len(item) != 1:
                    raise _spec.fail(E, at, "a channel or a one-entry mapping {channel: template}", item)
                ((ch, t),) = item.items()
                items.append((ch, t, at, _spec.join(at, str(ch))))
            else:
                items.append((item, None, at, at))
    else:
        raise _spec.fail(E, where, _FALLBACK_EXPECTED, value)
    chain = tuple(ch for ch, _, _, _ in items)
    channel = s.get("channel")
    _check_fallback(chain, channel if isinstance(channel, str) else "", where,
                    paths=[at for _, _, at, _ in items], given=value)
    templates = []
    for ch, template, _, at in items:
        if template is None:
            continue
        if not isinstance(template, str) or not template.strip():
            raise _spec.fail(E, at, _TEMPLATE_EXPECTED, template)
        templates.append((ch, template))
    return chain, tuple(templates)


def ordered_fallbacks(doc: Any) -> Any:
    """A journey document (YAML-shaped) whose mapping-form step ``fallback`` values are
    written as lists of one-entry mappings (``{email: a, sms: b}`` → ``[{email: a}, {sms:
    b}]``), the same chain in an order-keeping form: artifacts store JSON with sorted keys,
    which would reorder a mapping's channels. Anything else — other forms, malformed
    documents (left for the loader to report) — is returned as is, the same object; a
    changed document is a shallow copy."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("steps"), list):
        return doc
    if not any(isinstance(st, Mapping) and isinstance(st.get("fallback"), Mapping) for st in doc["steps"]):
        return doc
    steps = [dict(st, fallback=[{ch: t} for ch, t in st["fallback"].items()])
             if isinstance(st, Mapping) and isinstance(st.get("fallback"), Mapping) else st
             for st in doc["steps"]]
    return dict(doc, steps=steps)


def _strings(spec: Mapping[str, Any], key: str, path: str, default: Any = ...) -> tuple[str, ...]:
    items = _spec.get_list(spec, key, path, JourneyError, default=default)
    for i, v in enumerate(items):
        if not isinstance(v, str):
            raise _spec.fail(JourneyError, _spec.join(path, f"{key}[{i}]"), "a string", v)
    return tuple(items)


def _condition(spec: Any, path: str) -> Condition:
    E, g = JourneyError, _spec.get
    c = _spec.check_keys(spec, {"event", "since", "channel", "own", "negate"}, path, E)
    return Condition(event=g(c, "event", str, path, E, choices=EVENTS),
                     since=g(c, "since", str, path, E, default="step", choices=SINCE),
                     channel=g(c, "channel", str, path, E, default=None, choices=LOG_CHANNELS),
                     own=g(c, "own", bool, path, E, default=None),
                     negate=g(c, "negate", bool, path, E, default=False))


def _step(spec: Any, path: str) -> Step:
    E, g = JourneyError, _spec.get
    keys = {"id", "channel", "delay_h", "at_local_hour", "when", "next", "otherwise", "template",
            "tag", "priority", "expected_value", "fallback", "fallback_if_unreachable"}
    s = _spec.check_keys(spec, keys, path, E)
    when = [_condition(c, _spec.join(path, f"when[{i}]")) for i, c in enumerate(_spec.get_list(s, "when", path, E, []))]
    fields: dict[str, Any] = dict(
        id=g(s, "id", str, path, E),
        channel=g(s, "channel", str, path, E, choices=CHANNELS + (NO_ACTION,)),
        delay_h=g(s, "delay_h", float, path, E, default=0.0, minimum=0),
        at_local_hour=g(s, "at_local_hour", float, path, E, default=None, minimum=0),
        when=tuple(when), next=g(s, "next", str, path, E, default=None),
        otherwise=g(s, "otherwise", str, path, E, default=None),
        template=g(s, "template", str, path, E, default=None),
        tag=g(s, "tag", str, path, E, default="marketing"),
        priority=g(s, "priority", int, path, E, default=0),
        expected_value=g(s, "expected_value", float, path, E, default=0.0))
    fallback, fallback_templates = _fallback(s, path)  # checked last, as before
    unreachable = g(s, "fallback_if_unreachable", bool, path, E, default=False)
    return Step(**fields, fallback=fallback, fallback_templates=fallback_templates,
                fallback_if_unreachable=unreachable)


def journey_from_dict(spec: Any, path: str = "") -> Journey:
    """A :class:`Journey` from a YAML-shaped mapping; :class:`JourneyError` names the key."""
    E, g = JourneyError, _spec.get
    keys = {"name", "version", "triggers", "steps", "exit_on", "reentry_cooldown_h",
            "max_entries", "holdout_share", "holdout_salt", "description"}
    spec = _spec.check_keys(spec, keys, path, E)
    steps = [_step(s, _spec.join(path, f"steps[{i}]"))
             for i, s in enumerate(_spec.get_list(spec, "steps", path, E))]
    fields = dict(
        journey=g(spec, "name", str, path, E), triggers=_strings(spec, "triggers", path),
        steps=tuple(steps), version=g(spec, "version", int, path, E, default=1, minimum=0),
        exit_on=_strings(spec, "exit_on", path, default=["purchase", "unsubscribed"]),
        reentry_cooldown_h=g(spec, "reentry_cooldown_h", float, path, E, default=None, minimum=0),
        max_entries=g(spec, "max_entries", int, path, E, default=None, minimum=1),
        holdout_share=g(spec, "holdout_share", float, path, E, default=0.0, minimum=0),
        holdout_salt=g(spec, "holdout_salt", str, path, E, default="omnisim-journey"))
    try:
        return Journey(**fields)
    except JourneyError as exc:
        raise JourneyError(f"{path} {exc}" if path else str(exc)) from None


def load_journey(source: str | Path | Mapping[str, Any]) -> Journey:
    """A journey from a YAML file, a mapping, or a built-in name (``seed_journey`` …)."""
    if isinstance(source, str) and source in builtin_journeys():
        source = BUILTIN_DIR / f"{source}.yaml"
    data, label = _spec.load_yaml(source, JourneyError)
    return journey_from_dict(data, f"{label}:" if label else "")


def builtin_journeys() -> Sequence[str]:
    """Names of the built-in journeys (YAML files in ``omnisim/builtin/journeys``)."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


__all__ = ["Condition", "Step", "Journey", "JourneySet", "JourneyError", "journey_from_dict",
           "load_journey", "builtin_journeys", "ordered_fallbacks", "BEHAVIOUR_TRIGGERS"]
