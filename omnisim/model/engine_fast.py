"""The vectorised engine: the same world model, policies and log as the reference engine.

Time advances in steps (``step_h``, default 1 h). Per-user state lives in numpy arrays of
shape ``(n_users,)`` (``(n_users, 3)`` per message channel, ``(n_users, 24)`` for activity).
Within a step the engine runs *rounds*: in each round every user with something due before
the step's end handles exactly its earliest pending item — a timer (sign-up, next visit
candidate, baseline churn, inactivity) or a queued event (delivery, seen, click, cart
abandonment, journey follow-up, pressure-rule wake-up). A user's events are therefore handled
in exact time order, as in the reference engine, while the model's functions
(:mod:`~omnisim.model.behavior`, :mod:`~omnisim.model.channels`,
:mod:`~omnisim.model.fatigue`) are called once per round on all the users concerned —
the very same functions, never a copy of their formulas. The step only batches work; it
does not discretise time (events keep their exact float times, hours since the start).

Policies are called as ``docs/decision-core.md`` says, through the optional batch contract
of :mod:`omnisim.model._fast_policy`: triggers the policy declares it ignores are skipped,
the others are decided for all users of a round at once (``decide_batch``, or ``decide``
per context for a policy without it). Pending messages, deferrals, follow-ups, admissions
and online learning (``partial_fit`` every ``update_every_h``) follow the reference engine.

Randomness: ``SeedSequence(seed).spawn(3)`` → population, world, policy; the world and
policy streams are spawned again per chunk of ``chunk_users`` users. Users never interact
(except through a learning policy, which makes the whole population one chunk), so chunks run
one after the other and, with an output path, each chunk's log is written as time-ordered
Parquet parts (every ``flush_rows`` rows) and dropped: memory is bounded by the chunk, not
the population. Same seed and chunk size → identical log.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Mapping, Sequence
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from omnisim.log import COLUMNS, validate
from omnisim.model import behavior as bh
from omnisim.model import channels as chm
from omnisim.model import fatigue as fat
from omnisim.model._fast_policy import batch_decider, trigger_kinds
from omnisim.model.engine_simpy import HISTORY_DAYS, SimulationResult
from omnisim.policies.runtime import update_cadence
from omnisim.model.population import MSG_CHANNELS, activity_matrix, sample_population
from omnisim.model.scenario import Scenario
from omnisim.policies import runtime
from omnisim.policies.base import Context, Decision, FollowUp, HistoryEvent, Policy, Trigger
from omnisim.policies.pressure import Pending

__all__ = ["simulate", "FastSimulationResult", "DEFAULT_CHUNK_USERS", "DEFAULT_STEP_H"]

#: Users simulated together (and written as one Parquet part); part of the seed contract.
DEFAULT_CHUNK_USERS = 50_000
#: Hours of simulated time batched per step (does not change results, only batching).
DEFAULT_STEP_H = 1.0
_EPS_H = runtime.DUE_TOLERANCE_H
_MIN_DEFER_H = runtime.MIN_DEFER_H
_INF = math.inf
_CH_INDEX = {ch: i for i, ch in enumerate(MSG_CHANNELS)}

# queued event kinds (timers are handled separately)
K_DELIVER, K_SEEN, K_CLICK, K_ABANDON, K_FOLLOW, K_WAKE = range(6)
# timers: columns of the (n_users, 4) timer array
T_SIGNUP, T_VISIT, T_CHURN, T_INACT = range(4)


@dataclass
class FastSimulationResult(SimulationResult):
    """:class:`~omnisim.model.engine_simpy.SimulationResult` plus where the log went.

    ``log`` is ``None`` when the log was written to ``log_parts`` (Parquet, one file per
    chunk of users) instead of being held in memory; :meth:`read_log` reads it back.
    """

    log_parts: list[Path] = field(default_factory=list)

    def read_log(self) -> pd.DataFrame:
        """The whole log (from memory, or concatenated from its Parquet parts)."""
        if self.log is not None:
            return self.log
        return validate(pd.concat([pd.read_parquet(p) for p in self.log_parts], ignore_index=True),
                        source="engine_fast")


class _Queue:
    """Events keyed by time: a calendar of step buckets holding columnar arrays.

    Each event is ``(t_h, user, kind, ref)``; ``ref`` indexes the engine's message table
    (deliver / seen / click), a cart sequence number (abandon) or an object list
    (follow-ups). Shapes: all ``(m,)``.
    """

    def __init__(self, step_h: float):
        self.step_h = step_h
        self.buckets: dict[int, list[tuple[np.ndarray, ...]]] = {}
        self.t: list[float] = []
        self.u: list[int] = []
        self.k: list[int] = []
        self.r: list[int] = []

    def push(self, t: float, u: int, kind: int, ref: int) -> None:
        """Buffer one event (flushed by :meth:`flush`)."""
        self.t.append(t)
        self.u.append(u)
        self.k.append(kind)
        self.r.append(ref)

    def push_many(self, t: np.ndarray, u: np.ndarray, kind: int, ref: np.ndarray) -> None:
        self._add(np.asarray(t, float), np.asarray(u, np.int64),
                  np.full(len(t), kind, np.int64), np.asarray(ref, np.int64))

    def flush(self) -> None:
        if self.t:
            self._add(np.asarray(self.t, float), np.asarray(self.u, np.int64),
                      np.asarray(self.k, np.int64), np.asarray(self.r, np.int64))
            self.t, self.u, self.k, self.r = [], [], [], []

    def _add(self, t: np.ndarray, u: np.ndarray, k: np.ndarray, r: np.ndarray) -> None:
        if t.size == 0:
            return
        b = np.floor(t / self.step_h).astype(np.int64)
        for key in np.unique(b):
            m = b == key
            self.buckets.setdefault(int(key), []).append((t[m], u[m], k[m], r[m]))

    def take(self, key: int) -> tuple[np.ndarray, ...]:
        """Remove and return the events of bucket ``key`` (and any earlier leftovers)."""
        keys = [k for k in self.buckets if k <= key]
        parts = [p for k in sorted(keys) for p in self.buckets.pop(k)]
        if not parts:
            e = np.empty(0, np.int64)
            return np.empty(0), e, e, e
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(4))  # type: ignore


class _EngineContext(Context):
    """A :class:`Context` built by this engine: ``can_message`` reads ``consent`` only.

    Exactly :meth:`Context.can_message`: the engine clears a channel's consent when it logs
    an ``unsubscribed`` event on it and never sets it again, so an ``unsubscribed`` event in
    the history always comes with ``consent[channel] is False`` (and the history scan is
    redundant)."""

    def can_message(self, channel: str) -> bool:
        return self.consent.get(channel, False)


class _Chunk:
    """One chunk of users simulated together (module docstring)."""

    def __init__(self, sc: Scenario, policy: Policy, users: pd.DataFrame,
                 world: np.random.Generator, prng: np.random.Generator, step_h: float,
                 learner: Any):
        self.sc, self.policy, self.rng, self.prng = sc, policy, world, prng
        self.rules = getattr(policy, "rules", None)
        self.kinds = trigger_kinds(policy)
        self.decide_batch = batch_decider(policy)
        self.learner = learner
        self.start = sc.start
        self.beh, self.fz = sc.behavior, sc.fatigue
        self.step_h = step_h
        self.horizon = sc.horizon_h
        self.boost_window_h = self.beh.click_boost_half_life_h * math.log2(100)
        self.hist_window = timedelta(days=HISTORY_DAYS)
        n = self.n = len(users)
        # --- traits (n,) / (n, 3) / (n, 24)
        self.uid = users["user_id"].astype(str).to_numpy(dtype=object)
        self.prof = activity_matrix(users)
        self.act_mean, self.act_max = self.prof.mean(axis=1), self.prof.max(axis=1)
        self.consent = np.column_stack([users[f"consent_{c}"].to_numpy(bool) for c in MSG_CHANNELS])
        self.affinity = np.column_stack([users[f"affinity_{c}"].to_numpy(float) for c in MSG_CHANNELS])
        col = lambda c: users[c].to_numpy(float)  # noqa: E731
        self.tol, self.visit_rate = col("fatigue_tolerance"), col("visit_rate_per_day")
        self.propensity, self.basket = col("purchase_propensity"), col("basket_median")
        self.price_sens, self.email_median = col("price_sensitivity"), col("email_check_median_h")
        self.is_new, self.signup_h = users["is_new"].to_numpy(bool), col("signup_offset_h")
        self.segment = users["segment"].astype(str).to_numpy(dtype=object)
        tz = users["timezone"].astype(str).to_numpy(dtype=object)
        self.tz_names, self.tz_idx = np.unique(tz, return_inverse=True)
        self.tz = tz
        self._offsets = self._utc_offsets()
        # --- per-channel parameters as (3,) arrays
        chs = [sc.channels.get(c) for c in MSG_CHANNELS]
        self.ch_params = chs
        pa = lambda a: np.array([getattr(p, a) for p in chs], float)  # noqa: E731
        self.bounce, self.fail, self.deliv_h = pa("bounce_prob"), pa("fail_prob"), pa("delivery_delay_s") / 3600
        self.open_p, self.click_p, self.tw, self.unsub_p = (pa("open_prob"), pa("click_prob"),
                                                            pa("timing_weight"), pa("unsubscribe_prob"))
        self.weight = np.array([self.fz.weights.get(c, 0.0) for c in MSG_CHANNELS])
        # --- dynamic state
        self.pressure, self.pressure_t = np.zeros(n), np.zeros(n)
        self.last_click = np.full(n, -_INF)
        self.cart_open, self.cart_seq = np.zeros(n, bool), np.zeros(n, np.int64)
        self.last_active = np.where(self.is_new, self.signup_h,
                                    -users["last_visit_days_ago"].to_numpy(float) * 24.0)
        self.inactive_fired, self.churned = np.zeros(n, bool), np.zeros(n, bool)
        self.started = ~self.is_new  # life process running (signed up)
        self.bound = np.zeros(n)
        self.timers = np.full((n, 4), _INF)
        self.n_msg, self.n_pending = np.zeros(n, np.int64), np.zeros(n, np.int64)
        self.queues: dict[int, list[Pending]] = {}
        self.history: list[deque[HistoryEvent] | None] = [None] * n
        self.traits: list[dict[str, Any] | None] = [None] * n
        self.q = _Queue(step_h)
        self.objs: list[Any] = []
        # message table (growing arrays, index = ref)
        self.m_cap = 0
        self.m_n = 0
        self.m_user = np.empty(0, np.int64)
        self.m_ch = np.empty(0, np.int64)
        self.m_sent = np.empty(0)
        self.m_pressure = np.empty(0)
        self.m_draws = np.empty((0, 4))
        self.m_probs = np.empty((0, 4))  # p_open, p_click, p_unsub, p_churn
        self.m_meta: list[tuple[str, str | None, str | None]] = []  # (message id, campaign, tag)
        self.rows: list[tuple] = []
        self.rows_since_fit = 0
        self._init_timers()

    # --- time ------------------------------------------------------------------------
    def _utc_offsets(self) -> np.ndarray:
        """UTC offsets (hours) per timezone per whole UTC hour of the horizon: (n_tz, H)."""
        hours = int(math.ceil(self.horizon)) + 2
        base = pd.Timestamp(self.start).tz_convert("UTC")
        idx = pd.date_range(base, periods=hours, freq="h")
        out = np.zeros((len(self.tz_names), hours))
        for i, name in enumerate(self.tz_names):
            loc = idx.tz_convert(name)
            off = (loc.tz_localize(None) - idx.tz_localize(None)).total_seconds() / 3600.0
            out[i] = np.asarray(off)
        return out

    def local_hour(self, users: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Fractional local clock hour in [0, 24) of users ``(m,)`` at times ``t`` (m,) [h]."""
        k = np.clip(np.floor(t).astype(np.int64), 0, self._offsets.shape[1] - 1)
        return np.mod(t + self._offsets[self.tz_idx[users], k], 24.0)

    def _dt(self, h: float) -> datetime:
        return self.start + timedelta(microseconds=round(h * 3.6e9))

    def _h(self, dt: datetime) -> float:
        return (dt - self.start).total_seconds() / 3600.0

    # --- logging, history, contexts ----------------------------------------------------
    def _log(self, u: int, t: float, event: str, channel: str = "none", action: str | None = None,
             message_id: str | None = None, campaign: str | None = None, policy: str | None = None,
             propensity: float | None = None, value: float | None = None,
             reason: str | None = None, tag: str | None = None) -> None:
        self.rows.append((t, u, event, channel, action, message_id, campaign, policy, propensity,
                          value, reason, tag))
        hist = self.history[u]
        if hist is None:
            hist = self.history[u] = deque()
        ts = self.start + timedelta(microseconds=round(t * 3.6e9))  # self._dt(t), inlined
        hist.append(HistoryEvent(ts, event, channel, message_id, campaign, tag, value))
        cutoff = ts - self.hist_window
        while hist[0].ts < cutoff:
            hist.popleft()

    def _log_many(self, users: np.ndarray, t: np.ndarray, event: str, channel: str | Sequence[str],
                  msgs: np.ndarray | None = None, value: np.ndarray | None = None) -> None:
        """Log one row per user (``users``, ``t``: (m,)); message rows carry their id/campaign/tag.

        The same rows and history events as one :meth:`_log` call per user, inlined."""
        n = len(users)
        if n == 0:
            return
        chans = [channel] * n if isinstance(channel, str) else channel
        us, ts_h = users.tolist(), np.asarray(t, float).tolist()
        if msgs is not None:
            meta = self.m_meta
            metas = [meta[m] for m in np.asarray(msgs).tolist()]
        else:
            metas = [(None, None, None)] * n
        vals = [None] * n if value is None else np.asarray(value, float).tolist()
        rows, history, start, window = self.rows, self.history, self.start, self.hist_window
        for u, th, ch, (mid, camp, tag), val in zip(us, ts_h, chans, metas, vals):
            rows.append((th, u, event, ch, None, mid, camp, None, None, val, None, tag))
            hist = history[u]
            if hist is None:
                hist = history[u] = deque()
            ts = start + timedelta(microseconds=round(th * 3.6e9))
            hist.append(HistoryEvent(ts, event, ch, mid, camp, tag, val))
            cutoff = ts - window
            while hist[0].ts < cutoff:
                hist.popleft()

    def _traits(self, u: int) -> dict[str, Any]:
        """Observable traits of user ``u`` (built once, shared by its contexts)."""
        tr = self.traits[u]
        if tr is None:
            tr = self.traits[u] = {"segment": self.segment[u], "signup_ts": self._dt(self.signup_h[u])}
        return tr

    def _context(self, u: int, t: float, trigger: Trigger) -> Context:
        now = self._dt(t)
        hist = self.history[u]
        if hist is None:
            hist = self.history[u] = deque()
        cutoff = now - self.hist_window
        while hist and hist[0].ts < cutoff:
            hist.popleft()
        c = self.consent[u].tolist()
        consent = {MSG_CHANNELS[0]: c[0], MSG_CHANNELS[1]: c[1], MSG_CHANNELS[2]: c[2]}
        return _EngineContext(user_id=self.uid[u], now=now, timezone=self.tz[u],
                              traits=self._traits(u), consent=consent, history=tuple(hist),
                              trigger=trigger)

    # --- decisions ---------------------------------------------------------------------
    def decide(self, users: np.ndarray, t: np.ndarray, kind: str,
               payloads: Sequence[Mapping[str, Any]] | None = None,
               trig_ts: Sequence[datetime] | None = None) -> None:
        """Ask the policy about trigger ``kind`` for ``users`` (m,) at ``t`` (m,) [h]."""
        if len(users) == 0 or (self.kinds is not None and kind not in self.kinds):
            return
        ctxs = []
        for i in range(len(users)):
            u, ti = int(users[i]), float(t[i])
            trig = Trigger(kind=kind, ts=trig_ts[i] if trig_ts is not None else self._dt(ti),
                           payload=payloads[i] if payloads is not None else {})
            ctxs.append(self._context(u, ti, trig))
        results = self.decide_batch(ctxs, self.prng)
        for i, decisions in enumerate(results):
            self._apply(int(users[i]), float(t[i]), decisions)

    def _apply(self, u: int, now: float, decisions: list[Decision]) -> None:
        """Log, queue and (when due now) admit user ``u``'s decisions, as the reference engine."""
        queued = False
        for d in decisions:
            self._log(u, now, "decided", d.channel, action=d.action, campaign=d.campaign,
                      policy=d.policy, propensity=float(d.propensity))
            if not d.is_message:
                if d.reason:
                    self._log(u, now, "suppressed", "none", action=d.action, campaign=d.campaign,
                              policy=d.policy, reason=d.reason)
            else:
                due_h = max(now, self._h(d.send_at)) if d.send_at is not None else now
                self.n_pending[u] += 1
                p = Pending(f"{self.uid[u]}-p{self.n_pending[u]}", d, self._dt(due_h), self._dt(now))
                self.queues.setdefault(u, []).append(p)
                if due_h <= now + _EPS_H:
                    queued = True
                else:
                    self.q.push(due_h, u, K_WAKE, -1)
            for f in d.follow_ups:
                self.objs.append(f)
                self.q.push(max(now, self._h(f.at)), u, K_FOLLOW, len(self.objs) - 1)
        if queued:
            self.admit(u, now)

    def admit(self, u: int, now: float) -> None:
        """Send, defer or drop user ``u``'s pendings due at ``now`` (as the reference engine)."""
        queue = self.queues.get(u)
        if not queue:
            return
        cut = self._dt(now + _EPS_H)
        due = [p for p in queue if p.due <= cut]
        if not due:
            return
        rest = [p for p in queue if p.due > cut]
        if rest:
            self.queues[u] = rest
        else:
            del self.queues[u]
        if self.rules is None:
            for p in due:
                self._send(u, now, p)
            return
        ctx = self._context(u, now, Trigger("admission", self._dt(now)))
        adm = runtime.admit(self.rules, due, ctx, self.policy.name)
        for p in adm.send:
            self._send(u, now, p)
        for p, at, reason in adm.defer:
            d = p.decision
            self._log(u, now, "deferred", d.channel, action=d.action, campaign=d.campaign,
                      policy=d.policy, reason=reason)
            at_h = max(self._h(at), now + _MIN_DEFER_H)
            self.queues.setdefault(u, []).append(replace(p, due=self._dt(at_h)))
            self.q.push(at_h, u, K_WAKE, -1)
        for p, reason in adm.drop:
            d = p.decision
            self._log(u, now, "suppressed", d.channel, action=d.action, campaign=d.campaign,
                      policy=d.policy, reason=reason)

    # --- messages ------------------------------------------------------------------------
    def _pressure_now(self, users: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Pressure of ``users`` (m,) at ``t`` (m,) [h], decayed since their last send."""
        return fat.decay(self.pressure[users], t - self.pressure_t[users], self.fz.half_life_h)

    def _grow_messages(self) -> None:
        """Double the capacity of the message table."""
        cap = max(1024, 2 * self.m_cap)
        for name in ("m_user", "m_ch", "m_sent", "m_pressure", "m_draws", "m_probs"):
            old = getattr(self, name)
            new = np.zeros((cap,) + old.shape[1:], old.dtype)
            new[: self.m_n] = old[: self.m_n]
            setattr(self, name, new)
        self.m_cap = cap

    def _send(self, u: int, now: float, p: Pending) -> None:
        """Send one admitted pending (consent and content checked), queue its delivery."""
        d = p.decision
        ch = d.channel
        if ch not in _CH_INDEX or not self.consent[u, _CH_INDEX[ch]]:
            self._log(u, now, "suppressed", ch if ch in _CH_INDEX else "none", action=d.action,
                      campaign=d.campaign, policy=d.policy, reason="no_consent")
            return
        c = _CH_INDEX[ch]
        params = self.ch_params[c]
        meta = d.meta or {}
        try:
            chm.check_content(ch, params, text=meta.get("text"), title=meta.get("title"),
                              body=meta.get("body"))
        except chm.ContentLimitError as exc:
            self._log(u, now, "suppressed", ch, action=d.action, campaign=d.campaign,
                      policy=d.policy, reason=f"content_limit: {exc}")
            return
        self.n_msg[u] += 1
        mid = f"{self.uid[u]}-m{self.n_msg[u]}"
        before = float(fat.decay(self.pressure[u], now - self.pressure_t[u], self.fz.half_life_h))
        self.pressure[u] = float(fat.add_message(before, self.weight[c]))
        self.pressure_t[u] = now
        self._log(u, now, "sent", ch, action=d.action, message_id=mid, campaign=d.campaign,
                  policy=d.policy, value=chm.message_cost(ch, params, meta.get("text")), tag=d.tag)
        if self.m_n == self.m_cap:
            self._grow_messages()
        k = self.m_n
        self.m_n += 1
        self.m_user[k], self.m_ch[k], self.m_sent[k], self.m_pressure[k] = u, c, now, before
        self.m_meta.append((mid, d.campaign, d.tag))
        self.q.push(now + self.deliv_h[c], u, K_DELIVER, k)

    def on_deliver(self, users: np.ndarray, t: np.ndarray, msgs: np.ndarray) -> None:
        """Delivery outcome; for delivered messages draw when they are seen and what follows."""
        c = self.m_ch[msgs]
        out = chm.delivery_outcome(self.rng, self.bounce[c], self.fail[c])
        for code, name in ((chm.BOUNCED, "bounced"), (chm.FAILED, "failed"), (chm.DELIVERED, "delivered")):
            m = out == code
            if m.any():
                self._log_many(users[m], t[m], name, [MSG_CHANNELS[x] for x in c[m]], msgs=msgs[m])
        ok = (out == chm.DELIVERED) & ~self.churned[users]
        if not ok.any():
            return
        users, t, msgs, c = users[ok], t[ok], msgs[ok], c[ok]
        pressure, tol = self.m_pressure[msgs], self.tol[users]
        hour = self.local_hour(users, self.m_sent[msgs])
        activity = self.prof[users, hour.astype(np.int64) % 24] / self.act_max[users]
        fz = self.fz
        f = fat.response_multiplier(pressure, tol, fz.response_strength) if fz.enabled else np.ones(len(msgs))
        aff = self.affinity[users, c]
        probs = np.empty((len(msgs), 4))
        probs[:, 0] = chm.open_probability(self.open_p[c], aff, activity, self.tw[c], f)
        probs[:, 1] = chm.click_probability(self.click_p[c], aff, f)
        if fz.enabled:
            probs[:, 2] = fat.unsubscribe_probability(self.unsub_p[c], pressure, tol, fz.unsubscribe_gain)
            probs[:, 3] = fat.churn_probability(pressure, tol, fz.churn_gain)
        else:
            probs[:, 2], probs[:, 3] = self.unsub_p[c], 0.0
        delay = np.empty(len(msgs))
        for ci, ch in enumerate(MSG_CHANNELS):
            m = c == ci
            if m.any():
                delay[m] = chm.read_delay_h(self.rng, ch, self.ch_params[ci], hour[m],
                                            self.prof[users[m]], self.email_median[users[m]])
        self.m_probs[msgs] = probs
        self.m_draws[msgs] = self.rng.random((len(msgs), 4))
        self.q.push_many(t + delay, users, K_SEEN, msgs)

    def on_seen(self, users: np.ndarray, t: np.ndarray, msgs: np.ndarray) -> None:
        """A delivered message is seen: maybe opened (trigger), then a click or the after-effects."""
        live = ~self.churned[users]
        users, t, msgs = users[live], t[live], msgs[live]
        if users.size == 0:
            return
        d, p = self.m_draws[msgs], self.m_probs[msgs]
        opened = d[:, 0] < p[:, 0]
        chans = [MSG_CHANNELS[x] for x in self.m_ch[msgs]]
        if opened.any():
            ou, ot, om = users[opened], t[opened], msgs[opened]
            self._log_many(ou, ot, "opened", [c for c, o in zip(chans, opened) if o], msgs=om)
            self.decide(ou, ot, "opened", [{"message_id": self.m_meta[m][0],
                                            "channel": MSG_CHANNELS[self.m_ch[m]]} for m in om])
        click = opened & (d[:, 1] < p[:, 1])
        if click.any():
            wait = self.rng.exponential(0.5, size=int(click.sum())) / 60.0
            self.q.push_many(t[click] + wait, users[click], K_CLICK, msgs[click])
        self.after_effects(users[~click], t[~click], msgs[~click])

    def on_click(self, users: np.ndarray, t: np.ndarray, msgs: np.ndarray) -> None:
        """A click: boost and redraw the visit process, trigger, a session, then after-effects."""
        self._log_many(users, t, "clicked", [MSG_CHANNELS[x] for x in self.m_ch[msgs]], msgs=msgs)
        self.last_click[users] = t
        redraw = self.started[users] & ~self.churned[users]
        self._draw_next_visit(users[redraw], t[redraw])
        self.decide(users, t, "clicked", [{"message_id": self.m_meta[m][0],
                                           "channel": MSG_CHANNELS[self.m_ch[m]]} for m in msgs])
        self.session(users, t, from_click=True)
        self.after_effects(users, t, msgs)

    def after_effects(self, users: np.ndarray, t: np.ndarray, msgs: np.ndarray) -> None:
        """Unsubscribe from the message's channel and fatigue-driven churn (drawn at delivery)."""
        if users.size == 0:
            return
        d, p, c = self.m_draws[msgs], self.m_probs[msgs], self.m_ch[msgs]
        unsub = (d[:, 2] < p[:, 2]) & self.consent[users, c]
        if unsub.any():
            self.consent[users[unsub], c[unsub]] = False
            self._log_many(users[unsub], t[unsub], "unsubscribed",
                           [MSG_CHANNELS[x] for x in c[unsub]], msgs=msgs[unsub])
        churn = d[:, 3] < p[:, 3]
        for i in np.flatnonzero(churn):  # sequential: one message's churn ends the user
            if not self.churned[users[i]]:
                self.churn(users[i:i + 1], t[i:i + 1])

    # --- behaviour -------------------------------------------------------------------------
    def churn(self, users: np.ndarray, t: np.ndarray) -> None:
        """Users ``(m,)`` churn at ``t`` (m,) [h]: no more visits, reads or timers."""
        self.churned[users] = True
        self.timers[users] = _INF
        self._log_many(users, t, "churned", "none")

    def _draw_next_visit(self, users: np.ndarray, t: np.ndarray) -> None:
        """Next thinning candidate: bound = rate at peak activity, rested, boost as of ``t``."""
        if users.size == 0:
            return
        beh = self.beh
        boost = bh.click_boost(t - self.last_click[users], beh.click_visit_boost,
                               beh.click_boost_half_life_h)
        bound = bh.visit_rate_bound_h(self.visit_rate[users], self.act_max[users],
                                      self.act_mean[users], boost)
        self.bound[users] = bound
        with np.errstate(divide="ignore"):
            gap = np.where(bound > 0, self.rng.exponential(1.0, users.size) / np.where(bound > 0, bound, 1.0), _INF)
        self.timers[users, T_VISIT] = t + gap

    def _start_life(self, users: np.ndarray, t: np.ndarray) -> None:
        """Start the life process of ``users`` at ``t``: baseline churn time, first visit
        candidate, inactivity timer (the reference engine's ``_life`` preamble)."""
        rate = self.beh.churn_rate_per_day / 24.0
        self.timers[users, T_CHURN] = (t + self.rng.exponential(1.0 / rate, users.size)) if rate > 0 else _INF
        self._draw_next_visit(users, t)
        self._set_inactivity(users)

    def _set_inactivity(self, users: np.ndarray) -> None:
        """Inactivity timer: ``inactivity_days`` after the last session, once per spell."""
        t_in = self.last_active[users] + self.beh.inactivity_days * 24.0
        live = self.started[users] & ~self.inactive_fired[users] & ~self.churned[users]
        self.timers[users, T_INACT] = np.where(live, np.maximum(t_in, 0.0), _INF)

    def on_signup(self, users: np.ndarray, t: np.ndarray) -> None:
        """New users sign up: ``signup`` row, trigger, then their life starts."""
        self.timers[users, T_SIGNUP] = _INF
        self.started[users] = True
        self._log_many(users, t, "signup", "web")
        self.decide(users, t, "signup")
        self._start_life(users, t)

    def on_inactivity(self, users: np.ndarray, t: np.ndarray) -> None:
        """The ``inactivity`` trigger (no log row; the policy's decisions are logged)."""
        self.inactive_fired[users] = True
        self.timers[users, T_INACT] = _INF
        self.decide(users, t, "inactivity",
                    [{"days_inactive": (ti - self.last_active[u]) / 24.0} for u, ti in zip(users, t)])

    def on_visit_candidate(self, users: np.ndarray, t: np.ndarray) -> None:
        """Thinning: accept the candidate with probability rate(t) / bound; draw the next."""
        beh = self.beh
        hour = self.local_hour(users, t)
        f_act = (fat.response_multiplier(self._pressure_now(users, t), self.tol[users],
                                         self.fz.activity_strength)
                 if self.fz.enabled else np.ones(users.size))
        rate = bh.visit_rate_h(self.visit_rate[users], self.prof[users, hour.astype(np.int64) % 24],
                               self.act_mean[users], f_act,
                               bh.click_boost(t - self.last_click[users], beh.click_visit_boost,
                                              beh.click_boost_half_life_h))
        accept = self.rng.random(users.size) * self.bound[users] < rate
        self._draw_next_visit(users, t)
        if accept.any():
            self.session(users[accept], t[accept], from_click=False)

    def session(self, users: np.ndarray, t: np.ndarray, from_click: bool) -> None:
        """Sessions of ``users`` at ``t``: visit → product_view → cart_add → purchase / abandon."""
        if users.size == 0:
            return
        beh = self.beh
        self.last_active[users] = t
        self.inactive_fired[users] = False
        self._set_inactivity(users)
        self._log_many(users, t, "visit", "web")
        self.decide(users, t, "visit", [{"from_click": from_click}] * users.size)
        f = (fat.response_multiplier(self._pressure_now(users, t), self.tol[users],
                                     self.fz.response_strength)
             if self.fz.enabled else np.ones(users.size))
        boosted = (t - self.last_click[users]) <= self.boost_window_h
        p_buy = bh.purchase_probability(self.propensity[users], f, self.cart_open[users], boosted,
                                        self.price_sens[users], beh)
        viewed, carted, bought = bh.session_funnel(self.rng, p_buy, beh, force_view=from_click)
        if viewed.any():
            self._log_many(users[viewed], t[viewed], "product_view", "web")
            self.decide(users[viewed], t[viewed], "product_view")
        if carted.any():
            cu, ct = users[carted], t[carted]
            self._log_many(cu, ct, "cart_add", "web")
            self.decide(cu, ct, "cart_add")
            self.cart_seq[cu] += 1
            b = bought[carted]
            if b.any():
                bu, btt = cu[b], ct[b]
                value = bh.purchase_value(self.rng, self.basket[bu], beh.basket_sigma)
                self.cart_open[bu] = False
                self._log_many(bu, btt, "purchase", "web", value=value)
                self.decide(bu, btt, "purchase", [{"value": float(v)} for v in value])
            if (~b).any():
                au = cu[~b]
                self.cart_open[au] = True
                self.q.push_many(ct[~b] + beh.abandon_delay_h, au, K_ABANDON, self.cart_seq[au])

    def on_abandon(self, users: np.ndarray, t: np.ndarray, seq: np.ndarray) -> None:
        """``cart_abandon`` unless the cart (sequence ``seq``) was bought or replaced since."""
        ok = self.cart_open[users] & (self.cart_seq[users] == seq) & ~self.churned[users]
        if ok.any():
            self._log_many(users[ok], t[ok], "cart_abandon", "web")
            self.decide(users[ok], t[ok], "cart_abandon")

    def on_follow_up(self, users: np.ndarray, t: np.ndarray, refs: np.ndarray) -> None:
        """Due journey follow-ups: ``journey_step`` triggers with ``ts`` = the follow-up's ``at``."""
        fus: list[FollowUp] = [self.objs[r] for r in refs]
        for r in refs:
            self.objs[r] = None  # consumed
        self.decide(users, t, "journey_step", [f.payload for f in fus], [f.at for f in fus])

    # --- the loop ------------------------------------------------------------------------
    def _init_timers(self) -> None:
        """Sign-up timers of new users; existing users start their life at t = 0."""
        new = self.is_new
        self.timers[new, T_SIGNUP] = self.signup_h[new]
        old = np.flatnonzero(~new)
        self._start_life(old, np.zeros(old.size))

    def _round(self, cand: np.ndarray, t1: float, pool: list[np.ndarray]) -> tuple[bool, np.ndarray]:
        """Handle each candidate user's earliest item due before ``t1``; returns (any, users)."""
        pt, pu, pk, pr = pool
        tm = self.timers[cand]
        t_timer = tm.min(axis=1)
        which = tm.argmin(axis=1)
        t_pool = np.full(cand.size, _INF)
        first = np.empty(0, np.int64)
        if pt.size:
            order = np.lexsort((pt, pu))
            su = pu[order]
            head = np.ones(su.size, bool)
            head[1:] = su[1:] != su[:-1]
            first = order[head]
            pos = np.searchsorted(cand, pu[first])
            t_pool[pos] = pt[first]
        use_pool = t_pool <= t_timer
        t_best = np.where(use_pool, t_pool, t_timer)
        due = t_best < t1
        if not due.any():
            return False, cand[:0]
        # timers
        tsel = due & ~use_pool
        for kind, fn in ((T_SIGNUP, self.on_signup), (T_CHURN, self.churn),
                         (T_INACT, self.on_inactivity), (T_VISIT, self.on_visit_candidate)):
            m = tsel & (which == kind)
            if m.any():
                fn(cand[m], t_timer[m])
        # queued events
        psel = due & use_pool
        if psel.any():
            pos_of_first = np.searchsorted(cand, pu[first])
            chosen = first[psel[pos_of_first]]
            ck, cu, ctt, cr = pk[chosen], pu[chosen], pt[chosen], pr[chosen]
            keep = np.ones(pt.size, bool)
            keep[chosen] = False
            pool[:] = [a[keep] for a in pool]
            for kind, fn in ((K_DELIVER, self.on_deliver), (K_SEEN, self.on_seen),
                             (K_CLICK, self.on_click), (K_ABANDON, self.on_abandon),
                             (K_FOLLOW, self.on_follow_up)):
                m = ck == kind
                if m.any():
                    fn(cu[m], ctt[m], cr[m])
            m = ck == K_WAKE
            for u, ti in zip(cu[m], ctt[m]):
                self.admit(int(u), float(ti))
        return True, cand[due]

    def _step(self, k: int, t0: float, t1: float) -> None:
        """Rounds until nothing is due before ``t1`` [h] (bucket ``k`` of the calendar)."""
        pool = list(self.q.take(k))
        hot = np.flatnonzero(self.timers.min(axis=1) < t1)
        while True:
            self.q.flush()
            # events queued during this step that are due before t1 join the pool
            extra = self.q.take(k)
            if extra[0].size:
                pool = [np.concatenate([a, b]) for a, b in zip(pool, extra)]
            cand = np.union1d(hot, pool[1]) if pool[1].size else hot
            if cand.size == 0:
                break
            any_due, done = self._round(cand, t1, pool)
            if not any_due:
                break
            hot = np.union1d(hot, done)
            hot = hot[self.timers[hot].min(axis=1) < t1]
        self.q.flush()
        left = self.q.take(k)  # nothing should be left before t1; keep later ones queued
        if pool[0].size or left[0].size:
            rest = [np.concatenate([a, b]) for a, b in zip(pool, left)]
            if (rest[0] < t1).any():  # pragma: no cover - defensive
                raise RuntimeError("engine_fast: events left unprocessed in a step")
            self.q._add(*rest)

    def run(self, bar: Any, t_edges: np.ndarray, sink: "_Sink | None" = None) -> None:
        """Run every step between ``t_edges`` (hours); with a ``sink``, hand it the rows
        logged so far whenever there are many (the rows of a step all precede the next's)."""
        for k in range(len(t_edges) - 1):
            t0, t1 = float(t_edges[k]), float(t_edges[k + 1])
            self._step(int(math.floor(t0 / self.step_h + 1e-9)), t0, t1)
            if self.learner is not None and t1 < self.horizon - _EPS_H:  # none at the horizon
                self.learner.maybe_update(self, t1)
            if sink is not None and len(self.rows) >= sink.flush_rows:
                sink.write(self.frame())
                self.rows = []
            bar.update(t1 - t0)

    def frame(self) -> pd.DataFrame | None:
        """This chunk's log rows as an (unvalidated) frame sorted by time, or ``None``."""
        return _frame(self.rows, self.start, self.uid)


def _frame(rows: list[tuple], start: datetime, uid: np.ndarray) -> pd.DataFrame | None:
    """Log rows ``(t_h, user_index, event, channel, …)`` as a frame in the log's column order,
    sorted by time (stable: rows at the same instant keep the order they happened in)."""
    if not rows:
        return None
    cols = list(zip(*rows))
    hours = np.asarray(cols[0], dtype=float)
    ts = pd.Timestamp(start) + pd.to_timedelta(np.rint(hours * 3.6e9).astype(np.int64), unit="us")
    df = pd.DataFrame({"ts": ts, "user_id": uid[np.asarray(cols[1], dtype=np.int64)]})
    for name, values in zip(COLUMNS[2:], cols[2:]):
        df[name] = list(values)
    order = np.argsort(hours, kind="stable")
    return df.iloc[order].reset_index(drop=True)


class _Sink:
    """Writes a chunk's log as Parquet parts ``part-<chunk>-<k>.parquet`` (time-ordered)."""

    def __init__(self, out_dir: Path, chunk: int, flush_rows: int):
        self.out_dir, self.chunk, self.flush_rows = out_dir, chunk, flush_rows
        self.parts: list[Path] = []

    def write(self, df: pd.DataFrame | None) -> None:
        if df is None:
            return
        part = self.out_dir / f"part-{self.chunk:05d}-{len(self.parts):04d}.parquet"
        validate(df, source="engine_fast").to_parquet(part, index=False)
        self.parts.append(part)


class _Learner:
    """Calls ``policy.partial_fit(rows since the last call)`` every ``update_every_h`` hours."""

    def __init__(self, policy: Any, every_h: float):
        self.policy = policy
        self.every = every_h
        self.next = self.every
        self.mark = 0

    def maybe_update(self, chunk: _Chunk, t: float) -> None:
        """At the update instants (step edges), feed the validated rows since the last call;
        never called with zero rows (as the reference engine)."""
        if t + _EPS_H < self.next:
            return
        self.next += self.every
        df = _frame(chunk.rows[self.mark:], chunk.start, chunk.uid)
        if df is None:
            return
        self.mark = len(chunk.rows)
        self.policy.partial_fit(validate(df, source="engine_fast"))


def _edges(horizon_h: float, step_h: float, update_every_h: float | None) -> np.ndarray:
    """Step boundaries [h]: the regular grid, plus online-update times, up to the horizon."""
    grid = np.arange(0.0, horizon_h, step_h)
    pts = [grid, [horizon_h]]
    if update_every_h:
        pts.append(np.arange(update_every_h, horizon_h, update_every_h))
    return np.unique(np.concatenate([np.asarray(p, float) for p in pts]))


def simulate(scenario: Scenario, policy: Policy, *, n_users: int | None = None,
             days: float | None = None, seed: int | None = None, progress: bool = True,
             out: str | Path | None = None, chunk_users: int = DEFAULT_CHUNK_USERS,
             step_h: float = DEFAULT_STEP_H, flush_rows: int = 1_000_000) -> FastSimulationResult:
    """Run ``policy`` in ``scenario`` with the vectorised engine.

    Parameters
    ----------
    scenario, policy
        As for :func:`omnisim.model.engine_simpy.simulate`.
    n_users, days, seed
        Override the scenario's.
    progress
        Show a tqdm bar over simulated hours (all chunks).
    out
        A directory: the log is written there as time-ordered Parquet parts
        ``part-<chunk>-<k>.parquet`` (a chunk's rows are written whenever ``flush_rows`` have
        accumulated) and never held in memory at once (``result.log`` is ``None``).
    chunk_users
        Users simulated together; bounds memory. Part of the seed contract (same seed and
        chunk size → identical log). A policy with ``partial_fit`` runs as one chunk.
    step_h
        Hours of simulated time batched per step (performance only).
    flush_rows
        With ``out``: write a part whenever a chunk has logged this many rows.

    Returns
    -------
    FastSimulationResult
        The validated log (or its parts), the users table, the scenario run, the policy's
        name and the wall time in seconds.
    """
    overrides = {k: v for k, v in (("n_users", n_users), ("days", days), ("seed", seed)) if v is not None}
    sc = scenario.replace(**overrides) if overrides else scenario
    if not hasattr(policy, "decide"):
        raise TypeError(f"policy must have a decide(ctx, rng) method (omnisim.policies.base."
                        f"Policy); got {type(policy).__name__}")
    if chunk_users < 1 or step_h <= 0:
        raise ValueError(f"chunk_users must be >= 1 and step_h > 0, got {chunk_users}, {step_h}")
    t0 = time.perf_counter()
    pop_ss, world_ss, policy_ss = np.random.SeedSequence(sc.seed).spawn(3)
    users = sample_population(sc.population, sc.n_users, np.random.default_rng(pop_ss),
                              horizon_days=sc.days, enabled_channels=sc.enabled_channels)
    learning = update_cadence(policy)  # hours, or None when the policy does not learn online
    size = len(users) if learning else chunk_users
    starts = list(range(0, len(users), size))
    wss, pss = world_ss.spawn(len(starts)), policy_ss.spawn(len(starts))
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    edges = _edges(sc.horizon_h, step_h, learning)
    frames, parts = [], []
    name = str(getattr(policy, "name", type(policy).__name__))
    with tqdm(total=sc.horizon_h * len(starts), unit="h", desc=f"simulate {name} (fast)",
              disable=not progress, leave=False) as bar:
        for i, s in enumerate(starts):
            chunk = _Chunk(sc, policy, users.iloc[s:s + size].reset_index(drop=True),
                           np.random.default_rng(wss[i]), np.random.default_rng(pss[i]), step_h,
                           _Learner(policy, learning) if learning else None)
            # a learner slices chunk.rows by position: keep them all in memory
            sink = _Sink(out_dir, i, flush_rows) if out_dir is not None and not learning else None
            chunk.run(bar, edges, sink)
            df = chunk.frame()
            del chunk
            if out_dir is not None:
                sink = sink or _Sink(out_dir, i, flush_rows)
                sink.write(df)
                parts.extend(sink.parts)
            elif df is not None:
                frames.append(df)
    log = None
    if out_dir is None:
        if not frames:
            raise RuntimeError("the simulation produced no events; raise n_users or days")
        log = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        if len(frames) > 1:
            log = log.iloc[np.argsort(log["ts"].to_numpy(), kind="stable")].reset_index(drop=True)
        log = validate(log, source="engine_fast")
    return FastSimulationResult(log=log, users=users, scenario=sc, policy=name,
                                wall_s=time.perf_counter() - t0, log_parts=parts)
