"""``check_policy``: test a policy against the decision-core rules (in gymnasium's
``env_checker`` spirit) before running it in the simulator or the sender.

It runs the policy on generated contexts (varied timezones around DST changes, consent,
histories and triggers), follows its journey follow-ups a few steps, and checks that

- ``decide`` returns a ``list`` of :class:`Decision`;
- every channel is one of ``email``, ``sms``, ``push``, ``none``; propensities are finite
  and in [0, 1]; ``policy`` names a version (``name@1``);
- no message goes to a channel the user cannot be messaged on;
- follow-ups are due at or after ``now`` and ``send_at`` is timezone-aware;
- a ``meta["fallback"]`` chain names channels other than the message's own, and
  ``meta["fallback_templates"]`` maps channels of that chain to template names;
- the same context and the same rng seed give the same decisions (no hidden randomness,
  no clock reads);
- the context is not mutated;
- a policy that declares the trigger kinds it answers (``trigger_kinds``) answers no other;
- a policy that declares which history events it reads (``history_events``, or
  ``reads_history = False``: none) decides the same on a history holding only those events
  (unsubscribes folded into consent, as engines that trim history do); the same for its
  rules' ``history_events`` and ``admit``. The generated histories hold ``decided`` and
  ``sent`` rows of the policy's own campaigns (:func:`policy_campaigns`), so a journey
  reading its ``decided`` rows (re-entry) without declaring them fails;
- if the policy carries pressure ``rules``, ``rules.admit`` accounts for every due pending
  exactly once, defers only to later times and gives every defer/drop a reason.
"""

from __future__ import annotations

import copy
import math
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Sequence

import numpy as np

from omnisim.policies.base import (
    CHANNELS, NO_ACTION, Context, Decision, FollowUp, HistoryEvent, Policy, Trigger,
)
from omnisim.policies.declarations import decide_events, trigger_kinds

TIMEZONES = ("UTC", "Europe/Paris", "America/New_York", "Asia/Tokyo", "Australia/Sydney",
             "America/Los_Angeles", "Asia/Kolkata")
TRIGGERS = ("signup", "product_view", "cart_add", "cart_abandon", "purchase", "visit", "inactivity")
#: Days around DST changes (US 2026-03-08 / 2026-11-01, EU 2026-03-29 / 2026-10-25).
ANCHORS = ("2026-03-08", "2026-03-29", "2026-06-15", "2026-10-25", "2026-11-01", "2026-12-31")
CAMPAIGNS = ("seed_journey", "welcome", "cart_abandon", "browse_abandon", "reactivation",
             "product_view", None)
#: Contexts ``check_policy`` samples by default: with 48, a journey that reads its entries
#: without declaring them escaped the check on 1 to 3 seeds in 10; with 192, on 1 of 250
#: (the five built-in journeys × 50 seeds).
CHECK_CONTEXTS = 192
#: A campaign no policy under check runs (``check_policy`` mixes its runs with the policy's own).
OTHER_CAMPAIGN = "other_campaign"
HISTORY_EVENTS = ("sent", "opened", "clicked", "product_view", "visit", "cart_add", "purchase",
                  "unsubscribed")


class PolicyCheckError(AssertionError):
    """A policy broke a decision-core rule; the message says which and on what context."""


def make_context(now: datetime, trigger: str | Trigger = "product_view", *, user_id: str = "u1",
                 timezone: str = "UTC", consent: dict[str, bool] | None = None,
                 history: Sequence[HistoryEvent] = (), traits: dict | None = None) -> Context:
    """A context for tests and notebooks: consent on every channel unless given; history
    sorted by time."""
    trig = trigger if isinstance(trigger, Trigger) else Trigger(kind=trigger, ts=now)
    return Context(user_id=user_id, now=now, timezone=timezone, traits=dict(traits or {}),
                   consent=dict(consent) if consent is not None else {ch: True for ch in CHANNELS},
                   history=sorted(history, key=lambda h: h.ts), trigger=trig)


def sample_contexts(n: int = 48, seed: int = 0, campaigns: Sequence[str] | None = None) -> list[Context]:
    """``n`` varied contexts (seeded): timezones, consent, histories and triggers.

    Besides random behaviour and message events, each history holds a few *runs* of
    campaigns (``campaigns``, default :data:`CAMPAIGNS`): ``decided`` rows as engines log
    them (``none`` waits, held-out or ``no_consent`` entries alone; messages with their
    ``sent`` row), some within hours of ``now`` — what a journey reads for re-entry. Pass a
    policy's campaigns (:func:`policy_campaigns`) so its own rows appear. The runs come from
    a stream of their own: the other events are the same whatever ``campaigns`` is."""
    rng = np.random.default_rng(seed)
    runs_rng = np.random.default_rng([seed, 1])
    names = [c for c in (campaigns if campaigns is not None else CAMPAIGNS) if c]
    out = []
    for i in range(n):
        day = datetime.fromisoformat(ANCHORS[i % len(ANCHORS)]).replace(tzinfo=dt_timezone.utc)
        now = day + timedelta(hours=float(rng.uniform(-36, 36)))
        consent = {ch: bool(rng.random() < 0.7) for ch in CHANNELS}
        history = []
        for _ in range(int(rng.integers(0, 12))):
            ts = now - timedelta(hours=float(rng.uniform(0, 24 * 20)))
            event = str(rng.choice(HISTORY_EVENTS))
            channel = str(rng.choice(CHANNELS)) if event in ("sent", "opened", "clicked", "unsubscribed") else "web"
            campaign = CAMPAIGNS[int(rng.integers(len(CAMPAIGNS)))] if channel != "web" else None
            history.append(HistoryEvent(ts=ts, event=event, channel=channel, campaign=campaign,
                                        tag="marketing" if channel != "web" else None))
        if names:
            history.extend(_campaign_runs(runs_rng, now, names))
        history.sort(key=lambda h: h.ts)
        kind = TRIGGERS[i % len(TRIGGERS)]
        out.append(Context(user_id=f"check-{seed}-{i}", now=now,
                           timezone=TIMEZONES[int(rng.integers(len(TIMEZONES)))],
                           traits={"segment": "check"}, consent=consent, history=history,
                           trigger=Trigger(kind=kind, ts=now)))
    return out


def _campaign_runs(rng: np.random.Generator, now: datetime, names: Sequence[str]) -> list[HistoryEvent]:
    """0–4 runs of ``names`` before ``now``: each a ``decided`` row (a ``none`` alone — a
    wait, a holdout, ``no_consent`` — or a message with its ``sent`` row at the same
    instant), then up to two later decisions hours apart, none after ``now``. A third of
    the runs start within 12 hours of ``now``, a third within 2 days."""
    rows: list[HistoryEvent] = []
    for _ in range(int(rng.integers(0, 5))):
        campaign = names[int(rng.integers(len(names)))]
        ts = now - timedelta(hours=float(rng.uniform(0, (12, 48, 24 * 20)[int(rng.integers(3))])))
        for step in range(1 + int(rng.integers(0, 3))):
            if ts > now:
                break
            wait = step == 0 and rng.random() < 0.4  # an entry's wait, holdout, no_consent
            channel = NO_ACTION if wait else str(rng.choice(CHANNELS))
            message = channel != NO_ACTION
            rows.append(HistoryEvent(ts=ts, event="decided", channel=channel, campaign=campaign,
                                     tag="marketing" if message else None))
            if message and rng.random() < 0.8:  # else: not sent (capped, no consent …)
                rows.append(HistoryEvent(ts=ts, event="sent", channel=channel, campaign=campaign,
                                         tag="marketing"))
            ts = ts + timedelta(hours=float(rng.uniform(1, 30)))
    return rows


def policy_campaigns(policy: object) -> tuple[str, ...]:
    """The campaigns ``policy`` logs that it can name: a journey's name, a journey set's
    journeys', through wrappers (``.policy``, ``.inner_policy``); ``()`` for a policy that
    exposes none (generic policies such as the baselines use the trigger kind)."""
    found: list[str] = []
    todo, seen = [policy], set()
    while todo:
        p = todo.pop()
        if id(p) in seen:
            continue
        seen.add(id(p))
        journey = getattr(p, "journey", None)
        if isinstance(journey, str):
            found.append(journey)
        todo.extend(reversed(list(getattr(p, "journeys", None) or ())))
        for attr in ("policy", "inner_policy"):
            inner = getattr(p, attr, None)
            if inner is not None and callable(getattr(inner, "decide", None)):
                todo.append(inner)
    return tuple(dict.fromkeys(found))


def check_policy(policy: Policy, contexts: Sequence[Context] | None = None,
                 rng: np.random.Generator | None = None, follow_depth: int = 4) -> int:
    """Check ``policy`` on ``contexts`` (default :func:`sample_contexts` with the policy's
    :func:`policy_campaigns` and other plausible campaigns); returns the number
    of decisions checked. Raises :class:`PolicyCheckError` on the first broken rule."""
    name = getattr(policy, "name", None)
    if not isinstance(name, str) or "@" not in name:
        raise PolicyCheckError(f"policy.name must be a string with a version like 'mine@1', got {name!r}")
    if not callable(getattr(policy, "decide", None)):
        raise PolicyCheckError(f"{name}: has no decide(ctx, rng) method")
    rng = rng if rng is not None else np.random.default_rng(0)
    if contexts is None:
        # runs of the policy's own campaigns and of one it must tell apart from them; a
        # policy naming none: plausible names (journeys' and trigger kinds, as baselines use)
        own = policy_campaigns(policy)
        contexts = sample_contexts(CHECK_CONTEXTS,
                                   campaigns=own + (OTHER_CAMPAIGN,) if own else CAMPAIGNS + TRIGGERS)
    contexts = list(contexts)
    rules = getattr(policy, "rules", None)
    if rules is not None:
        _check_rules(policy.name, rules, contexts)
    todo = [(ctx, 0) for ctx in contexts]
    checked = 0
    while todo:
        ctx, depth = todo.pop()
        seed = int(rng.integers(2**32))
        decisions = _check_one(policy, ctx, seed)
        checked += len(decisions)
        if depth < follow_depth:
            for d in decisions:
                for fu in d.follow_ups:
                    trig = Trigger(kind="journey_step", ts=fu.at, payload=fu.payload)
                    todo.append((ctx.with_now(fu.at, trig), depth + 1))
    return checked


def _check_one(policy: Policy, ctx: Context, seed: int) -> list[Decision]:
    where = f"{policy.name} on user {ctx.user_id} at {ctx.now.isoformat()} (trigger {ctx.trigger.kind})"
    before = copy.deepcopy((dict(ctx.traits), dict(ctx.consent), list(ctx.history), ctx.trigger, ctx.now))
    out = policy.decide(ctx, np.random.default_rng(seed))
    after = (dict(ctx.traits), dict(ctx.consent), list(ctx.history), ctx.trigger, ctx.now)
    if after != before:
        raise PolicyCheckError(f"{where}: decide() mutated the context")
    if not isinstance(out, list):
        raise PolicyCheckError(f"{where}: decide() must return a list of Decision, got {type(out).__name__}")
    for d in out:
        _check_decision(d, ctx, where)
    again = policy.decide(ctx, np.random.default_rng(seed))
    if again != out:
        raise PolicyCheckError(f"{where}: not deterministic — the same context and rng seed gave "
                               f"{_brief(out)} then {_brief(again)}")
    kinds = trigger_kinds(policy)
    if out and kinds is not None and ctx.trigger.kind not in kinds:
        raise PolicyCheckError(f"{where}: declares trigger_kinds {sorted(kinds)} but answered a "
                               f"{ctx.trigger.kind!r} trigger with {_brief(out)}; engines skip "
                               "undeclared kinds, so add it to trigger_kinds")
    events = decide_events(policy)
    if events is not None:
        narrow = policy.decide(only_events(ctx, events), np.random.default_rng(seed))
        if narrow != out:
            raise PolicyCheckError(_undeclared(where, "decide()", events, _brief(out), _brief(narrow)))
    return out


def only_events(ctx: Context, events: frozenset[str]) -> Context:
    """``ctx`` with only ``events`` in its history, and ``consent`` cleared on channels the
    user unsubscribed from (so ``can_message`` answers the same without the history): what
    an engine that keeps only a policy's declared ``history_events`` hands it."""
    consent = {ch: bool(ok) and ctx.can_message(ch) for ch, ok in ctx.consent.items()}
    history = [h for h in ctx.history if h.event in events]
    return Context(user_id=ctx.user_id, now=ctx.now, timezone=ctx.timezone, traits=ctx.traits,
                   consent=consent, history=history, trigger=ctx.trigger)


def _undeclared(where: str, what: str, events: frozenset[str], full: str, narrow: str) -> str:
    return (f"{where}: declares it reads only {sorted(events)} from the history, but {what} "
            f"answers {full} on the full history and {narrow} on those events alone; declare "
            "every event it reads in history_events (or drop the declaration)")


def _check_decision(d: object, ctx: Context, where: str) -> None:
    if not isinstance(d, Decision):
        raise PolicyCheckError(f"{where}: decide() returned a {type(d).__name__}, expected Decision")
    if d.channel not in CHANNELS + (NO_ACTION,):
        raise PolicyCheckError(f"{where}: channel {d.channel!r} is not one of {CHANNELS + (NO_ACTION,)}")
    p = d.propensity
    if not isinstance(p, (int, float)) or not math.isfinite(p) or not 0.0 <= p <= 1.0:
        raise PolicyCheckError(f"{where}: propensity {p!r} of action {d.action!r} is not in [0, 1]")
    if not isinstance(d.policy, str) or "@" not in d.policy:
        raise PolicyCheckError(f"{where}: Decision.policy must name a version ('mine@1'), got {d.policy!r}")
    if d.is_message and not ctx.can_message(d.channel):
        raise PolicyCheckError(f"{where}: messages {d.channel} but the user cannot be messaged there "
                               "(no consent, unreachable or unsubscribed)")
    if d.send_at is not None and d.send_at.tzinfo is None:
        raise PolicyCheckError(f"{where}: send_at must be timezone-aware (UTC)")
    if d.meta.get("fallback") is not None:
        _check_fallback(d, where)
    if d.meta.get("fallback_templates") is not None:
        _check_fallback_templates(d, where)
    for fu in d.follow_ups:
        if not isinstance(fu, FollowUp) or fu.at.tzinfo is None or fu.at < ctx.now:
            raise PolicyCheckError(f"{where}: follow-up {fu!r} must be a FollowUp due at or after now (UTC)")


def _check_fallback(d: Decision, where: str) -> None:
    """``meta["fallback"]``: the channels the sender may re-send on (docs/sender.md) — a
    channel or a list of channels other than the message's own; the sender ignores anything
    else, so a typo would silently turn fallback off."""
    chain = d.meta["fallback"]
    items = [chain] if isinstance(chain, str) else chain
    if (not d.is_message or not isinstance(items, (list, tuple))
            or any(ch not in CHANNELS or ch == d.channel for ch in items)):
        raise PolicyCheckError(f"{where}: meta['fallback'] must be a channel or a list of "
                               f"channels ({', '.join(CHANNELS)}) other than the message's own, "
                               f"on a message; got {chain!r} on a {d.channel!r} decision")


def _check_fallback_templates(d: Decision, where: str) -> None:
    """``meta["fallback_templates"]``: a dict channel → template name (a non-empty string)
    for the channels the message may fall back to — those of ``meta["fallback"]`` when the
    policy set it, else any message channel other than its own (the sender's ``--fallback``
    default decides the chain). The sender uses the template of the channel it falls back
    to; a channel outside the chain would never be used, a typo would silently keep the
    original channel's template."""
    templates = d.meta["fallback_templates"]
    chain = d.meta.get("fallback")
    allowed = ([chain] if isinstance(chain, str) else list(chain)) if chain is not None else [
        ch for ch in CHANNELS if ch != d.channel]
    if (not d.is_message or not isinstance(templates, dict)
            or any(ch not in allowed or ch == d.channel or not isinstance(t, str) or not t.strip()
                   for ch, t in templates.items())):
        raise PolicyCheckError(f"{where}: meta['fallback_templates'] must be a dict channel -> "
                               f"template name (a non-empty string) whose channels are in the "
                               f"fallback chain {allowed}, on a message; got {templates!r} on a "
                               f"{d.channel!r} decision")


def _check_rules(name: str, rules: object, contexts: Sequence[Context]) -> None:
    """``rules.admit`` on a few pendings per context: one outcome each, defers to the future."""
    from omnisim.policies.pressure import Pending

    if not callable(getattr(rules, "admit", None)):
        raise PolicyCheckError(f"{name}: .rules has no admit(due, ctx) method")
    for ctx in contexts:
        due = [Pending(f"chk{i}", Decision(ch, ch, 1.0, "check@1", campaign=camp, priority=i % 2,
                                            tag="transactional" if i == 3 else "marketing"),
                       ctx.now, ctx.now - timedelta(hours=i))
               for i, (ch, camp) in enumerate([("email", "a"), ("sms", "a"), ("push", "b"), ("email", "c")])]
        adm = rules.admit(due, ctx)
        events = getattr(rules, "history_events", None)
        if events is not None:
            narrow = rules.admit(due, only_events(ctx, frozenset(events)))
            if narrow != adm:
                raise PolicyCheckError(_undeclared(f"{name}: rules.admit at {ctx.now.isoformat()}",
                                                   "admit()", frozenset(events), repr(adm),
                                                   repr(narrow)))
        ids = sorted([p.pending_id for p in adm.send] + [p.pending_id for p, _, _ in adm.defer]
                     + [p.pending_id for p, _ in adm.drop])
        where = f"{name}: rules.admit at {ctx.now.isoformat()} ({ctx.timezone})"
        if ids != sorted(p.pending_id for p in due):
            raise PolicyCheckError(f"{where} must put every due pending in exactly one of "
                                   f"send/defer/drop; got {ids}")
        for p, until, reason in adm.defer:
            if until <= ctx.now or not reason:
                raise PolicyCheckError(f"{where}: deferred {p.pending_id} to {until} ({reason!r}); "
                                       "defers need a later time and a reason")
        for p, reason in adm.drop:
            if not reason:
                raise PolicyCheckError(f"{where}: dropped {p.pending_id} without a reason")


def _brief(ds: Sequence[Decision]) -> str:
    return "[" + ", ".join(f"{d.action}(p={d.propensity:g})" for d in ds) + "]"
