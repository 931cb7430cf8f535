"""The sender's decision path: events and due timers → policy → log, timers, outbox.

It drives the policy exactly as the reference engine does (``docs/decision-core.md``,
:mod:`omnisim.model.engine_simpy`): log the event; on a trigger build a
:class:`~omnisim.policies.base.Context` (traits, consent, the last 35 days of the user's log)
and call ``policy.decide``; log every decision (``decided``, plus ``suppressed`` for a
``none`` with a reason); store follow-ups and pending messages as durable jobs; admit due
pendings with the pressure rules (:func:`omnisim.policies.runtime.admit`) and turn each send
into a ``sent`` log row plus an outbox row for the worker to deliver.

All of one user's work runs in one transaction holding that user's lock, in logical-time
order: before an event at ``ts`` is decided, the user's timers due by ``ts`` run first. The
logical time of a trigger is its event ``ts`` or its timer's due time — unless that is more
than ``late_tolerance`` behind the clock (a backlog), in which case it is the clock's now,
so a late send is never judged against a past hour.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from omnisim.errors import OmnisimError
from omnisim.policies import runtime
from omnisim.policies.artifact import load_artifact, read_artifact
from omnisim.policies.base import BEHAVIOUR_TRIGGERS, Context, Decision, HistoryEvent, Policy, Trigger
from omnisim.policies.pressure import Pending
from omnisim.send import scheduler as sch
from omnisim.send.clock import Clock
from omnisim.send.store import LOG_COLUMNS, Store, from_us, to_us

log = logging.getLogger(__name__)

HISTORY_DAYS = 35
#: Behaviour events (logged on channel ``web``) and engagement callbacks the API accepts.
BEHAVIOUR_EVENTS = ("signup", "visit", "product_view", "cart_add", "cart_abandon", "purchase",
                    "churned")
CALLBACK_EVENTS = ("delivered", "opened", "clicked", "bounced", "failed", "unsubscribed")
#: Trigger-only events: decided on, not logged (not in the engagement-log vocabulary).
TRIGGER_ONLY = ("inactivity",)
EVENT_TYPES = BEHAVIOUR_EVENTS + CALLBACK_EVENTS + TRIGGER_ONLY
#: Events after which the policy is asked to decide (as in the reference engine).
TRIGGER_EVENTS = BEHAVIOUR_TRIGGERS
MESSAGE_CHANNELS = ("email", "sms", "push")


class PolicyLoadError(OmnisimError):
    """A policy artifact the sender refuses to run; the message says why."""


@dataclass(frozen=True)
class LoadedPolicy:
    """A verified policy artifact, built: ``version`` is the first 12 hex digits of its SHA-256."""

    policy: Policy
    name: str
    sha256: str
    document: str

    @property
    def version(self) -> str:
        return self.sha256[:12]

    @property
    def rules(self) -> Any:
        return getattr(self.policy, "rules", None)

    @classmethod
    def from_file(cls, path: str | Path) -> "LoadedPolicy":
        """Verify (format version, checksum, kind) and build; :class:`PolicyLoadError` if bad."""
        try:
            manifest = read_artifact(path)
            policy = load_artifact(path)
        except OmnisimError as exc:
            raise PolicyLoadError(f"cannot start with policy artifact {path}: {exc}") from None
        return cls(policy, manifest["name"], manifest["sha256"], Path(path).read_text())

    @classmethod
    def from_text(cls, text: str) -> "LoadedPolicy":
        """The same from an artifact's JSON text (``POST /admin/policy``)."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "artifact.json"
            path.write_text(text)
            return cls.from_file(path)


@dataclass(frozen=True)
class Event:
    """One validated inbound event (see :mod:`omnisim.send.app` for the JSON shape)."""

    key: str
    user_id: str
    type: str
    ts: datetime
    channel: str | None = None
    message_id: str | None = None
    value: float | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Ingested:
    """One event's outcome in :meth:`DecisionService.ingest_results`: ``status``, and for
    ``failed`` the ``error`` (which event, the exception)."""

    status: str
    error: str | None = None


class _JobFailed(Exception):
    """The policy or the store raised while running timer job ``job_id`` (a journey
    follow-up or a pending message's admission) of ``user_id``."""

    def __init__(self, job_id: int, user_id: str, kind: str, due_us: int, body: str,
                 cause: Exception) -> None:
        super().__init__(f"timer job {job_id} ({kind}, due {from_us(due_us).isoformat()}) of user "
                         f"{user_id!r}: {type(cause).__name__}: {cause}")
        self.job_id, self.user_id, self.kind, self.due_us, self.body = job_id, user_id, kind, due_us, body
        self.cause = cause


class _EventFailed(Exception):
    """The policy or the store raised on ``events[index]`` (None: saving the user's work)."""

    def __init__(self, index: int | None, cause: Exception) -> None:
        super().__init__(str(cause))
        self.index, self.cause = index, cause


def _reject_user(events: Sequence[Event], indices: list[int], failed: _EventFailed,
                 out: list[Ingested]) -> None:
    """Mark one user's events ``failed``: the one that raised with the exception, the others
    as rolled back with it (all of them when storing the user's work raised)."""
    cause = f"{type(failed.cause).__name__}: {failed.cause}".strip()
    user = events[indices[0]].user_id
    if failed.index is None:
        keys = ", ".join(repr(events[i].key) for i in indices)
        for i in indices:
            out[i] = Ingested("failed", f"processing failed while storing the work of user "
                                        f"{user!r} for event key(s) {keys}: {cause}"[:1000])
        return
    bad = events[failed.index]
    for i in indices:
        error = (f"processing failed at event key {bad.key!r} (type {bad.type!r}, ts "
                 f"{bad.ts.isoformat()}) of user {user!r}: {cause}" if i == failed.index else
                 f"not processed: event key {bad.key!r} of the same user failed in this request "
                 f"({cause}); a user's events are rolled back together")
        out[i] = Ingested("failed", error[:1000])


@dataclass
class Observer:
    """Callbacks for metrics (no-ops by default): decisions by channel, latency in seconds."""

    decision: Callable[[str], None] = lambda channel: None
    latency: Callable[[float], None] = lambda seconds: None


@dataclass
class _UserState:
    user_id: str
    timezone: str
    traits: dict[str, Any]
    consent: dict[str, bool]
    addresses: dict[str, str]
    n_pending: int
    n_msg: int
    history: list[HistoryEvent]
    dirty_consent: bool = False
    rows: list[tuple] = field(default_factory=list)  # log rows not yet written
    #: Earliest due time (µs) of the user's open timers, or None; may be too early (a
    #: finished timer), never too late — it only spares queries when nothing can be due.
    next_due_us: int | None = None

    def scheduled(self, due: datetime) -> None:
        us = to_us(due)
        self.next_due_us = us if self.next_due_us is None else min(self.next_due_us, us)

    def may_be_due(self, until: datetime) -> bool:
        return self.next_due_us is not None and self.next_due_us <= to_us(until)


class DecisionService:
    """Runs the loaded policy on events and due timers against a :class:`Store`.

    Parameters
    ----------
    store, policy, clock
        Where state lives, what decides, what time it is (never read by policies).
    seed : int
        Seeds the per-decision random streams (:func:`omnisim.policies.runtime.decision_rng`).
    late_tolerance : timedelta | None
        How far behind the clock a trigger may be and still be decided at its own time
        (``None``: always at its own time — replays and tests).
    """

    def __init__(self, store: Store, policy: LoadedPolicy, clock: Clock, *, seed: int = 0,
                 late_tolerance: timedelta | None = timedelta(hours=1),
                 observer: Observer | None = None,
                 fallback: Mapping[str, Sequence[str]] | None = None):
        self.store = store
        #: Default channel fallback chains (``--fallback push=email``), used for decisions
        #: whose ``meta`` has no ``"fallback"`` list of its own.
        self.fallback = parse_fallback(fallback or {})
        self.clock = clock
        self.seed = seed
        self.late_tolerance = late_tolerance
        self.observer = observer or Observer()
        self._base = policy  # the artifact as loaded or swapped in
        self._policy = policy  # what decides: the base, or its learned state
        self._learned_version = 0
        self._swap_lock = threading.Lock()
        from omnisim.send.learning import OnlineLearner

        self.learner = OnlineLearner(self)
        self._adopt_learned()
        if self.learner.cadence() is not None:
            self.learner.step()  # first start: the cadence starts now

    # -- the policy ------------------------------------------------------------------------
    @property
    def policy(self) -> LoadedPolicy:
        """The policy that decides: the loaded artifact, or its online-learned state."""
        return self._policy

    @property
    def base_policy(self) -> LoadedPolicy:
        """The artifact as loaded (or swapped in), before any online learning."""
        return self._base

    @property
    def learned_version(self) -> int:
        """Online-learning version the deciding policy is at (0: the artifact as loaded)."""
        return self._learned_version

    def swap_policy(self, new: LoadedPolicy) -> LoadedPolicy:
        """Atomically replace the policy (pending work is data and stays); returns the old one.

        The artifact is recorded in the store so other worker processes switch too. Online
        learning starts over from the new artifact.
        """
        with self._swap_lock:
            old, self._policy, self._base = self._policy, new, new
            self._learned_version = 0
            self.store.set_setting("policy_sha256", new.sha256)
            self.store.set_setting("policy_artifact", new.document)
        return old

    def sync_policy(self) -> None:
        """Switch to the policy recorded in the store if another process swapped it, and to
        the latest online-learned state (``docs/sender.md``, "Online learning")."""
        sha = self.store.setting("policy_sha256")
        if sha and sha != self._base.sha256:
            doc = self.store.setting("policy_artifact")
            if doc:
                new = LoadedPolicy.from_text(doc)
                with self._swap_lock:
                    self._base = self._policy = new
                    self._learned_version = 0
        self._adopt_learned()

    def _adopt_learned(self) -> None:
        """Decide with the stored learned state when it grew from our artifact and is newer."""
        if self.learner.cadence() is None:
            return
        st = self.learner.state()
        version = int(st.get("learn_version", 0))
        if st.get("learn_base") != self._base.sha256:
            version = 0
        if version != self._learned_version:
            self.use_learned(self.load_learned(version) if version else None, version)

    def load_learned(self, version: int) -> LoadedPolicy:
        """The stored learned state (``version`` 0: the base artifact)."""
        doc = self.store.setting("learn_artifact") if version else None
        return LoadedPolicy.from_text(doc) if doc else self._base

    def use_learned(self, learned: LoadedPolicy | None, version: int) -> None:
        """Decide with ``learned`` (None: the base artifact) from now on."""
        with self._swap_lock:
            self._policy = learned if learned is not None else self._base
            self._learned_version = version if learned is not None else 0

    def learn(self) -> Any:
        """Run online learning if due (:class:`omnisim.send.learning.OnlineLearner`)."""
        return self.learner.step()

    # -- time ----------------------------------------------------------------------------------
    def logical_now(self, ts: datetime) -> datetime:
        """``ts``, or the clock's now when ``ts`` is more than ``late_tolerance`` behind it."""
        if self.late_tolerance is None:
            return ts
        now = self.clock.now()
        return now if now - ts > self.late_tolerance else ts

    # -- entry points ----------------------------------------------------------------------
    def ingest(self, events: Sequence[Event]) -> list[str]:
        """Process events; per event its status (see :meth:`ingest_results`)."""
        return [r.status for r in self.ingest_results(events)]

    def ingest_results(self, events: Sequence[Event]) -> list[Ingested]:
        """Process events in one transaction; per event ``accepted``, ``duplicate``,
        ``unknown_user``, ``unknown_message`` (a callback without a message channel whose
        ``message_id`` names no message sent to its user: its channel is unknown, so an
        ``unsubscribed`` could not withdraw consent; not recorded) or ``failed`` (with the
        error).

        Users are locked in sorted order (no deadlocks between concurrent requests); each
        user's events run in ``ts`` order, inside a savepoint: when the policy or the store
        raises on one of them, that user's work in this call is rolled back and all their
        events are ``failed`` (nothing of them recorded, so a retry processes them again),
        while the other users' events are kept. An error of the database itself
        (:meth:`Store.is_operational_error`) aborts the whole call instead.
        """
        out = [Ingested("accepted")] * len(events)
        by_user: dict[str, list[int]] = {}
        for i, e in enumerate(events):
            by_user.setdefault(e.user_id, []).append(i)
        received = self.clock.now()
        policy = self._policy
        with self.store.transaction():
            for user_id in sorted(by_user):
                try:
                    with self.store.savepoint("user_events"):
                        self._ingest_user(policy, events, by_user[user_id], received, out)
                except _EventFailed as failed:
                    cause = failed.cause.cause if isinstance(failed.cause, _JobFailed) else failed.cause
                    if self.store.is_operational_error(cause):  # also inside a due timer of the user
                        raise cause from None
                    _reject_user(events, by_user[user_id], failed, out)
        return out

    def _ingest_user(self, policy: LoadedPolicy, events: Sequence[Event], indices: list[int],
                     received: datetime, out: list[Ingested]) -> None:
        """One user's events (``events[i]`` for ``i`` in ``indices``), their outcomes into
        ``out``; :class:`_EventFailed` says which event raised (None: saving the user)."""
        row = self.store.lock_user(events[indices[0]].user_id)
        if row is None:  # erased since the caller checked
            for i in indices:
                out[i] = Ingested("unknown_user")
            return
        state: _UserState | None = None
        for i in sorted(indices, key=lambda i: (events[i].ts, i)):
            e = events[i]
            t0 = time.perf_counter()
            try:
                if not self._channel_known(e, state):
                    out[i] = Ingested("unknown_message")
                    continue
                if not self.store.insert_event(e.key, e.user_id, e.type, e.ts, _event_body(e), received):
                    out[i] = Ingested("duplicate")
                    continue
                now = self.logical_now(e.ts)
                if state is None:
                    state = self._load(row, now)
                self._run_jobs(policy, state, now)
                self._on_event(policy, state, e, now)
            except Exception as exc:
                raise _EventFailed(i, exc) from exc
            self.observer.latency(time.perf_counter() - t0)
        if state is not None:
            try:
                self._save(state)
            except Exception as exc:
                raise _EventFailed(None, exc) from exc

    def _channel_known(self, e: Event, s: _UserState | None) -> bool:
        """False for a callback naming no message channel whose message was never sent
        (``s``: the user's state, whose unwritten rows may hold the message's ``sent``)."""
        if e.type not in CALLBACK_EVENTS or e.channel in MESSAGE_CHANNELS or e.message_id is None:
            return True
        if s is not None:
            self._flush(s)
        return self.store.message_row(e.message_id, e.user_id) is not None

    def run_due(self, limit: int = 100) -> int:
        """Run timers due by the clock's now for up to ``limit`` users; returns jobs run.

        On PostgreSQL a user locked by another worker is skipped (``SKIP LOCKED``).
        """
        until = self.clock.now()
        done = 0
        policy = self._policy
        for user_id in sch.users_with_due_jobs(self.store, until, limit):
            with self.store.transaction():
                row = self.store.lock_user(user_id, skip_locked=True)
                if row is None:
                    continue
                try:
                    with self.store.savepoint("user_jobs"):
                        state = self._load(row, until)
                        done += self._run_jobs(policy, state, until)
                        self._save(state)
                except _JobFailed as failed:
                    if self.store.is_operational_error(failed.cause):
                        raise failed.cause from None
                    self._set_aside(failed, until)
        return done

    def _set_aside(self, failed: _JobFailed, now: datetime) -> None:
        """Take a timer job the policy or the store raised on out of the due jobs (its
        state ``failed``) and quarantine it, so that it cannot stop every later
        :meth:`run_due` (and with it all delivery); the user's other jobs run next time."""
        sch.set_aside(self.store, failed.job_id)
        reason = (f"{failed}; set aside (jobs.state = 'failed'): fix the cause, then set its "
                  f"state back to 'pending' to run it")
        self.store.quarantine(reason, {"job_id": failed.job_id, "user_id": failed.user_id,
                                       "kind": failed.kind, "due": from_us(failed.due_us).isoformat(),
                                       "body": json.loads(failed.body)}, now)
        log.error("%s", reason)

    # -- per user --------------------------------------------------------------------------------
    def _load(self, row: tuple, now: datetime) -> _UserState:
        user_id, tz, traits, consent, addresses, n_pending, n_msg = row
        since = now - timedelta(days=HISTORY_DAYS)
        hist = [HistoryEvent(from_us(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[7])
                for r in self.store.history(user_id, to_us(since), 2**62)]
        return _UserState(user_id, tz, json.loads(traits), json.loads(consent),
                          json.loads(addresses), int(n_pending), int(n_msg), hist,
                          next_due_us=sch.user_next_due(self.store, user_id))

    def _flush(self, s: _UserState) -> None:
        self.store.append_log(s.rows)
        s.rows.clear()

    def _save(self, s: _UserState) -> None:
        self._flush(s)
        self.store.set_counters(s.user_id, s.n_pending, s.n_msg)
        if s.dirty_consent:
            self.store.set_consent(s.user_id, s.consent)

    def _context(self, s: _UserState, now: datetime, trigger: Trigger,
                 replaced: frozenset[str] = frozenset()) -> Context:
        """The decision context at ``now``. For admissions, rows logged at a later logical
        time (an out-of-order event, another worker ahead) are included stamped ``now``:
        their sends count towards caps, so caps hold whatever the processing order.
        ``replaced``: message ids whose ``sent`` rows are left out (the failed messages a
        channel fallback being admitted replaces — every hop of its chain: they count as one
        message)."""
        cutoff = now - timedelta(days=HISTORY_DAYS)
        reach = {ch: bool(s.consent.get(ch)) and bool(s.addresses.get(ch)) for ch in MESSAGE_CHANNELS}
        hist = [h for h in s.history if cutoff <= h.ts <= now]
        if trigger.kind == "admission":
            hist += [replace(h, ts=now) for h in s.history if h.ts > now]
            if replaced:
                hist = [h for h in hist if not (h.event == "sent" and h.message_id in replaced)]
        return Context(user_id=s.user_id, now=now, timezone=s.timezone, traits=s.traits,
                       consent=reach, history=tuple(hist), trigger=trigger)

    def _log(self, s: _UserState, pol: LoadedPolicy, now: datetime, event: str, channel: str,
             trigger_id: str, *, action: str | None = None, message_id: str | None = None,
             campaign: str | None = None, policy: str | None = None,
             propensity: float | None = None, value: float | None = None,
             reason: str | None = None, tag: str | None = None,
             step: str | None = None) -> None:
        row = (to_us(now), s.user_id, event, channel, action, message_id, campaign, policy,
               propensity, value, reason, tag, step, trigger_id,
               pol.version if policy is not None else None, None)
        assert len(row) == len(LOG_COLUMNS)
        s.rows.append(row)
        s.history.append(HistoryEvent(now, event, channel, message_id, campaign, tag, value, step))

    def _on_event(self, pol: LoadedPolicy, s: _UserState, e: Event, now: datetime) -> None:
        payload = dict(e.properties)
        if e.type in CALLBACK_EVENTS:
            self._flush(s)
            msg = self.store.message_row(e.message_id, e.user_id) if e.message_id else None
            channel = e.channel or (msg[1] if msg else "none")
            campaign, tag, step = (msg[2], msg[3], msg[4]) if msg else (
                e.properties.get("campaign"), None, None)
            if e.type == "unsubscribed" and channel in MESSAGE_CHANNELS:
                s.consent[channel] = False
                s.dirty_consent = True
            self._log(s, pol, now, e.type, channel, e.key, message_id=e.message_id,
                      campaign=campaign, tag=tag, step=step)
            payload.update({"message_id": e.message_id, "channel": channel})
        elif e.type in BEHAVIOUR_EVENTS:
            self._log(s, pol, now, e.type, "web", e.key, value=e.value)
            if e.value is not None:
                payload.setdefault("value", e.value)
        if e.type in TRIGGER_EVENTS:
            self._decide(pol, s, Trigger(e.type, e.ts, payload), now, e.key)

    def _run_jobs(self, pol: LoadedPolicy, s: _UserState, until: datetime) -> int:
        """Run the user's timers due by ``until`` in due order, each at its own time."""
        n = 0
        if not s.may_be_due(until):
            return 0
        while (job := sch.next_job(self.store, s.user_id, until)) is not None:
            job_id, kind, due_us, body = job
            now = self.logical_now(from_us(due_us))
            try:
                if kind == sch.FOLLOWUP:
                    sch.finish(self.store, job_id)
                    payload = json.loads(body)["payload"]
                    self._decide(pol, s, Trigger("journey_step", from_us(due_us), payload), now,
                                 f"job:{job_id}")
                else:
                    self._admit(pol, s, now, [], f"job:{job_id}")
            except Exception as exc:
                raise _JobFailed(job_id, s.user_id, kind, due_us, body, exc) from exc
            n += 1
        s.next_due_us = sch.user_next_due(self.store, s.user_id)
        return n

    def _decide(self, pol: LoadedPolicy, s: _UserState, trig: Trigger, now: datetime,
                trigger_id: str) -> None:
        rng = runtime.decision_rng(self.seed, s.user_id, trig.kind, trig.ts)
        decisions = pol.policy.decide(self._context(s, now, trig), rng)
        queued: list[Pending] = []
        for d in decisions:
            self.observer.decision(d.channel)
            self._log(s, pol, now, "decided", d.channel, trigger_id,
                      propensity=float(d.propensity), **d.log_fields())
            if not d.is_message:
                if d.reason:
                    self._log(s, pol, now, "suppressed", "none", trigger_id, reason=d.reason,
                              **d.log_fields())
            else:
                due = max(now, d.send_at) if d.send_at is not None else now
                s.n_pending += 1
                p = Pending(f"{s.user_id}-p{s.n_pending}", d, due, now)
                if due <= now + runtime.DUE_TOLERANCE:
                    queued.append(p)
                else:
                    sch.schedule_pending(self.store, s.user_id, p)
                    s.scheduled(p.due)
            for f in d.follow_ups:
                sch.schedule_followup(self.store, s.user_id, f, now)
                s.scheduled(f.at)
        if queued:
            self._admit(pol, s, now, queued, trigger_id)

    def _admit(self, pol: LoadedPolicy, s: _UserState, now: datetime, fresh: list[Pending],
               trigger_id: str) -> None:
        """Send, defer or drop the user's pendings due at ``now`` (stored ones and ``fresh``)."""
        cut = now + runtime.DUE_TOLERANCE
        stored = sch.due_pendings(self.store, s.user_id, to_us(cut)) if s.may_be_due(cut) else []
        job_of = {p.pending_id: job_id for job_id, p in stored}
        due = [p for _, p in stored] + fresh
        if not due:
            return
        rules = pol.rules
        if rules is None:
            for p in due:
                self._send(pol, s, now, p, trigger_id, job_of.get(p.pending_id))
            return
        replaced = frozenset(mid for p in due for mid in _replaced_ids(p.decision))
        ctx = self._context(s, now, Trigger("admission", now), replaced)
        adm = runtime.admit(rules, due, ctx, pol.name)
        for p in adm.send:
            self._send(pol, s, now, p, trigger_id, job_of.get(p.pending_id))
        for p, at, reason in adm.defer:
            d = p.decision
            self._log(s, pol, now, "deferred", d.channel, trigger_id, reason=reason,
                      **d.log_fields())
            when = runtime.defer_until(at, now)
            if p.pending_id in job_of:
                sch.reschedule(self.store, job_of[p.pending_id], when)
            else:
                sch.schedule_pending(self.store, s.user_id, replace(p, due=when))
                s.scheduled(when)
        for p, reason in adm.drop:
            d = p.decision
            self._log(s, pol, now, "suppressed", d.channel, trigger_id, reason=reason,
                      **d.log_fields())
            if p.pending_id in job_of:
                sch.finish(self.store, job_of[p.pending_id])

    def _send(self, pol: LoadedPolicy, s: _UserState, now: datetime, p: Pending,
              trigger_id: str, job_id: int | None) -> None:
        d = p.decision
        if job_id is not None:
            sch.finish(self.store, job_id)
        address = s.addresses.get(d.channel)
        if d.channel not in MESSAGE_CHANNELS or not s.consent.get(d.channel) or not address:
            self._log(s, pol, now, "suppressed", d.channel if d.channel in MESSAGE_CHANNELS else "none",
                      trigger_id, reason="no_consent", **d.log_fields())
            return
        s.n_msg += 1
        mid = f"{s.user_id}-m{s.n_msg}"
        replaces = d.meta.get("replaces")
        self._log(s, pol, now, "sent", d.channel, trigger_id, message_id=mid, tag=d.tag,
                  reason=f"fallback for {replaces} ({d.meta.get('fallback_from')})" if replaces else None,
                  **d.log_fields())
        body = _message_body(mid, s, d, address)
        chain = self.fallback_chain(d)
        if chain:  # what the worker needs to re-queue the message on another channel
            body["fallback"] = chain
            body["decision"] = sch.decision_to_dict(d)
        self.store.execute(
            "INSERT INTO outbox (message_id, user_id, channel, state, due_us, body, queued_us) "
            "VALUES (?, ?, ?, 'queued', ?, ?, ?)",
            (mid, s.user_id, d.channel, to_us(now), json.dumps(body, default=str),
             to_us(self.clock.now())))

    # -- channel fallback --------------------------------------------------------------------
    def fallback_chain(self, d: Decision) -> list[str]:
        """The channels ``d`` may fall back to, in order: ``d.meta["fallback"]`` when the
        policy set it (``[]`` forbids fallback), else the sender's ``--fallback`` default
        for ``d.channel``; channels other than email/sms/push and ``d.channel`` are ignored."""
        own = d.meta.get("fallback")
        if own is None:
            chain: Sequence[str] = self.fallback.get(d.channel, ())
        elif isinstance(own, str):
            chain = [own]
        else:
            chain = list(own)
        out: list[str] = []
        for ch in chain:
            if ch in MESSAGE_CHANNELS and ch != d.channel and ch not in out:
                out.append(ch)
        return out

    def fall_back(self, row: tuple, failed_id: str, chain: Sequence[str],
                  decision: Mapping[str, Any], sent_us: int | None) -> str | None:
        """Re-queue a message that could not be delivered on the next channel of ``chain``.

        Runs inside the caller's transaction, with the user's row ``row`` locked
        (:meth:`Store.lock_user`). The new pending goes through the same admission as any
        message (consent, caps, quiet hours, dedup off: it is a deliberate replacement);
        the failed message's ``sent`` row does not count towards caps for it. Returns the
        channel chosen, or None when ``chain`` is empty.

        Content: with a template named for the chosen channel
        (``meta["fallback_templates"][channel]``), the replacement's ``meta["template"]`` is
        that template, and the original channel's ``title`` / ``text`` / ``body`` are dropped
        (they would override the template's subject and text). Without one, the original
        content is kept (as before named templates existed) and ``meta["template_channel"]``
        says which channel it was written for, so providers can tell (docs/sender.md,
        "Channel fallback").
        """
        if not chain:
            return None
        d = sch.decision_from_dict(decision)
        pol = self._policy
        now = self.clock.now()
        if sent_us is not None and sent_us > to_us(now):
            now = from_us(sent_us)
        s = self._load(row, now)
        self._run_jobs(pol, s, now)
        reachable = [ch for ch in chain if s.consent.get(ch) and s.addresses.get(ch)]
        nxt = reachable[0] if reachable else chain[0]
        rest = [ch for ch in chain[chain.index(nxt) + 1:]]
        meta = dict(d.meta) | {"fallback": rest, "fallback_from": d.channel,
                               "replaces": failed_id, "replaces_all": [*_replaced_ids(d), failed_id],
                               "dedup": False}
        named = d.meta.get("fallback_templates")
        template = named.get(nxt) if isinstance(named, Mapping) else None
        if isinstance(template, str) and template:
            for key in ("title", "text", "body", "template_channel"):
                meta.pop(key, None)
            meta["template"] = template
        else:  # the content of the channel that failed (or of the one before it)
            meta["template_channel"] = d.meta.get("template_channel") or d.channel
        fd = replace(d, action=nxt, channel=nxt, send_at=None, follow_ups=(), reason=None,
                     meta=meta)
        s.n_pending += 1
        self._admit(pol, s, now, [Pending(f"{s.user_id}-p{s.n_pending}", fd, now, now)],
                    f"fallback:{failed_id}")
        self._save(s)
        return nxt


def _replaced_ids(d: Decision) -> list[str]:
    """Message ids a fallback decision replaces, first hop first: ``meta["replaces_all"]``
    (every failed message of its chain), else ``meta["replaces"]`` (the one it follows)."""
    chain = d.meta.get("replaces_all")
    if isinstance(chain, (list, tuple)):
        return [str(m) for m in chain]
    one = d.meta.get("replaces")
    return [str(one)] if one else []


def parse_fallback(spec: Mapping[str, Sequence[str]] | Sequence[str]) -> dict[str, list[str]]:
    """Fallback chains from ``{"push": ["email"]}`` or CLI strings ``["push=email,sms"]``;
    :class:`OmnisimError` names a bad entry."""
    items = spec.items() if isinstance(spec, Mapping) else []
    if not isinstance(spec, Mapping):
        pairs = []
        for text in spec:
            src, sep, dst = str(text).partition("=")
            if not sep:
                raise OmnisimError(f"--fallback {text!r}: expected CHANNEL=CHANNEL[,CHANNEL], "
                                   "e.g. push=email")
            pairs.append((src.strip(), [c.strip() for c in dst.split(",") if c.strip()]))
        items = pairs
    out: dict[str, list[str]] = {}
    for src, chain in items:
        chain = [chain] if isinstance(chain, str) else list(chain)
        for ch in [src, *chain]:
            if ch not in MESSAGE_CHANNELS:
                raise OmnisimError(f"--fallback {src}={','.join(chain)}: unknown channel {ch!r}; "
                                   f"expected one of {', '.join(MESSAGE_CHANNELS)}")
        if src in chain or not chain:
            raise OmnisimError(f"--fallback {src}={','.join(chain)}: expected other channels "
                               f"than {src} to fall back to")
        out[src] = chain
    return out


def _message_body(mid: str, s: _UserState, d: Decision, address: str) -> dict[str, Any]:
    """The outbox body of message ``mid``: ``template`` is ``meta["template"]`` (a channel
    fallback's is the template named for its channel, see :meth:`DecisionService.fall_back`),
    ``subject`` is ``meta["title"]`` or the template, ``body`` is ``meta["text"]`` /
    ``meta["body"]`` or ``[campaign] template``; ``meta`` keeps the decision's scalar meta
    keys (``template_channel`` among them: the content was written for that channel)."""
    meta = dict(d.meta)
    template = meta.get("template")
    text = meta.get("text") or meta.get("body") or f"[{d.campaign or 'message'}] {template or d.action}"
    return {"message_id": mid, "idempotency_key": mid, "user_id": s.user_id, "channel": d.channel,
            "address": address, "subject": meta.get("title") or template,
            "body": str(text), "campaign": d.campaign, "template": template,
            "meta": {k: v for k, v in meta.items() if _jsonable(v)}}


def _jsonable(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool, type(None))) and not (
        isinstance(v, float) and not math.isfinite(v))


def _event_body(e: Event) -> dict[str, Any]:
    return {"type": e.type, "ts": e.ts.isoformat(), "channel": e.channel,
            "message_id": e.message_id, "value": e.value, "properties": dict(e.properties)}
