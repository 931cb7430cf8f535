"""The fast engine: the same world model, policies and log as the reference engine.

Two paths (``docs/engines.md``). A policy with a compiled form
(:func:`~omnisim.policies._kernel_policy.compile_policy`: the world alone, the baselines,
journeys, each alone or with pressure rules) runs on the **compiled path**: each chunk's
users go one after the other through a numba event loop (:mod:`omnisim.model._kernel_world`,
driven by :mod:`omnisim.model._compiled`) — the reference engine's semantics over the same
model formulas. Every other policy runs on the **round-based path** described below;
``simulate(compiled=False)`` forces it. Chunks, processes, Dask, Parquet parts and the seed
contract are shared by both paths (each path its own sample).

Round-based path. Time advances in steps (``step_h``, default 1 h). Per-user state lives in numpy arrays of
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
one after the other — or ``n_jobs`` at a time in forked worker processes, or as tasks on a
Dask cluster (``scheduler=``), which gives the same log — and, with an output path, each
chunk's log is written as time-ordered Parquet parts (every ``flush_rows`` rows) and
dropped: memory is bounded by the chunks in flight, not the population. Same seed and
chunk size → identical log.

Per-row bookkeeping: log rows are stored by column (:class:`_Rows`; blocks of rows from
one model call stay numpy arrays) and become a frame once per chunk or part, built in the
dtypes :func:`~omnisim.log.validate` returns (categorical codes, pyarrow-backed strings), so
that validation is cheap. Per-user history
(:class:`~omnisim.policies.base.HistoryEvent` deques, last ``HISTORY_DAYS`` days) is kept
only when some context will read it (:func:`~omnisim.policies.declarations.needs_history`): not
for a policy that answers no trigger, nor for one declaring ``reads_history = False`` without
pressure rules; and of it only the events the policy and its rules declare they read
(:func:`~omnisim.policies.declarations.history_events`; journeys and ``PressureRules``
declare theirs), which the contexts' ``can_message`` does not need (consent is cleared on
``unsubscribed``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from omnisim.log import CHANNELS, COLUMNS, EVENTS, FLOAT_COLUMNS, STRING_COLUMNS, empty_log, validate
from omnisim.model import behavior as bh
from omnisim.model import channels as chm
from omnisim.model import fatigue as fat
from omnisim.model._gc import fewer_gc_passes
from omnisim.model._malloc import freed_memory_retained, retain_freed_memory
from omnisim.model._fast_policy import batch_decider, history_events, needs_history, trigger_kinds
from omnisim.model.engine_simpy import HISTORY_DAYS, SimulationResult
from omnisim.policies.runtime import update_cadence
from omnisim.model.population import MSG_CHANNELS, activity_matrix, sample_population
from omnisim.model.scenario import EmptySimulationError, Scenario
from omnisim.policies import runtime
from omnisim.policies.base import Context, Decision, FollowUp, HistoryEvent, Policy, Trigger
from omnisim.policies._kernel_policy import CompiledPolicy, compile_policy
from omnisim.policies._kernel_time import utc_offset_table
from omnisim.policies.pressure import Pending, PressureRules

__all__ = ["simulate", "FastSimulationResult", "DEFAULT_CHUNK_USERS", "DEFAULT_STEP_H"]

#: Users simulated together (and written as one Parquet part); part of the seed contract.
DEFAULT_CHUNK_USERS = 50_000
#: Hours of simulated time batched per step: batching only (the model and its event times
#: are exact), but which events share a round orders the world's random draws, so like
#: ``chunk_users`` it is part of the seed contract (same seed and step → identical log).
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
    chunk of users) instead of being held in memory; :meth:`read_log` reads it back, and
    :meth:`iter_chunks` one chunk of users at a time. ``chunk_size``: users per chunk.
    """

    log_parts: list[Path] = field(default_factory=list)
    chunk_size: int = 0

    def iter_chunks(self) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
        """``(users, log)`` of each chunk of users in turn — the chunk's rows of the users
        table and its validated log, read from its parts (or cut from the log in memory).
        Chunks are disjoint user sets, so per-chunk scores combine
        (:func:`omnisim.metrics.combine_metrics`)."""
        size = self.chunk_size or len(self.users)
        for i, start in enumerate(range(0, len(self.users), size)):
            users = self.users.iloc[start:start + size].reset_index(drop=True)
            if self.log is not None:
                log = self.log[self.log["user_id"].isin(users["user_id"])].reset_index(drop=True)
            else:
                parts = [p for p in self.log_parts if p.name.startswith(f"part-{i:05d}-")]
                frames = [pd.read_parquet(p) for p in parts]
                log = (validate(pd.concat(frames, ignore_index=True), source=str(parts[0].parent))
                       if frames else empty_log())
            yield users, log

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


#: log columns by position (:data:`COLUMNS` order): time, user, the two vocabularies, text, floats
_C_TS, _C_USER, _C_EVENT, _C_CHANNEL = 0, 1, 2, 3
_TEXT_COLS = tuple(j for j, c in enumerate(COLUMNS) if j > _C_CHANNEL and c in STRING_COLUMNS)
_FLOAT_COLS = tuple(j for j, c in enumerate(COLUMNS) if c in FLOAT_COLUMNS)
_EV_CODE = {e: i for i, e in enumerate(EVENTS)}
_CH_CODE = {c: i for i, c in enumerate(CHANNELS)}
#: a message channel's index (MSG_CHANNELS) -> its code in CHANNELS
_MSG_CH_CODE = np.array([_CH_CODE[c] for c in MSG_CHANNELS], np.int8)
_EV_DTYPE = pd.CategoricalDtype(list(EVENTS), ordered=False)
_CH_DTYPE = pd.CategoricalDtype(list(CHANNELS), ordered=False)


_new_context = object.__new__


class _Rows:
    """A chunk's log rows in the order they happened, stored by column.

    Rows logged one at a time (decisions, admissions, sends) are buffered as tuples and
    sealed into a segment when a block arrives; a block (:meth:`_Chunk._log_many`) is a
    segment already. A segment is ``(n, cols)``: an entry per column, in :data:`COLUMNS` order, with
    hours for ``ts`` and the user's index for ``user_id``; an entry is a sequence of ``n``
    values (``None`` a null), or one value for all ``n`` rows (a ``str`` or ``None``), or, for
    ``channel`` only, an integer array of :data:`MSG_CHANNELS` indices.
    """

    __slots__ = ("segs", "single", "n_segs")

    def __init__(self) -> None:
        self.segs: list[tuple[int, tuple[Any, ...]]] = []
        self.single: list[tuple[Any, ...]] = []
        self.n_segs = 0

    def __len__(self) -> int:
        return self.n_segs + len(self.single)

    def block(self, n: int, cols: tuple[Any, ...]) -> None:
        """Append a segment of ``n`` rows (after the single rows buffered so far)."""
        if self.single:
            self._seal()
        self.segs.append((n, cols))
        self.n_segs += n

    def _seal(self) -> None:
        self.segs.append((len(self.single), tuple(zip(*self.single))))
        self.n_segs += len(self.single)
        self.single = []

    def columns(self, first: int = 0) -> list[np.ndarray] | None:
        """The columns of rows ``first`` onwards as arrays (``None`` when there are none).

        ``ts`` float hours, ``user_id`` int64 indices, ``event`` / ``channel`` int8 codes into
        :data:`EVENTS` / :data:`CHANNELS` (an object array of the values instead when one is
        not in the vocabulary), text columns object arrays (``None`` for null; ``None``
        instead of the array when the whole column is null), floats float64 (NaN for null)."""
        if self.single:
            self._seal()
        segs = self.segs
        if first:
            segs, pos = [], 0
            for n, seg in self.segs:
                if pos + n > first:
                    lo = max(0, first - pos)
                    segs.append((n, seg) if lo == 0 else
                                (n - lo, tuple(c if c is None or isinstance(c, str) else c[lo:]
                                               for c in seg)))
                pos += n
        if not segs:
            return None
        # column by column, over all segments at once (segments are many and small)
        ns = np.array([n for n, _ in segs], np.int64)
        at = np.zeros(len(segs) + 1, np.int64)
        np.cumsum(ns, out=at[1:])
        total = int(at[-1])
        out: list[Any] = [None] * len(COLUMNS)
        out[_C_TS] = np.concatenate([np.asarray(seg[_C_TS], float) for _, seg in segs])
        out[_C_USER] = np.concatenate([np.asarray(seg[_C_USER], np.int64) for _, seg in segs])
        for j, vocab in ((_C_EVENT, _EV_CODE), (_C_CHANNEL, _CH_CODE)):
            out[j] = _codes([seg[j] for _, seg in segs], ns, vocab)
        for j in _TEXT_COLS + _FLOAT_COLS:
            vals = [seg[j] for _, seg in segs]
            some = [i for i, v in enumerate(vals) if v is not None]
            if j in _FLOAT_COLS:
                col = np.full(total, np.nan)
            elif not some:
                continue  # all null: None
            else:
                col = np.full(total, None, dtype=object)
            for i in some:  # None -> NaN in floats (numpy's float conversion)
                col[at[i]:at[i + 1]] = vals[i] if j in _TEXT_COLS else np.asarray(vals[i], float)
            out[j] = col
        return out


def _codes(vals: list[Any], ns: np.ndarray, vocab: Mapping[str, int]) -> np.ndarray:
    """A vocabulary column from its segments' entries ``vals`` (``ns`` rows each) as int8
    codes into ``vocab``; as an object array of the values when a value is not in it (so
    that validation reports it)."""
    if all(type(v) is str for v in vals):  # one value per segment (blocks of one event)
        cs = [vocab.get(v, -1) for v in vals]
        if -1 not in cs:
            return np.repeat(np.array(cs, np.int8), ns)
        return _values(vals, ns)
    parts = []
    for v, n in zip(vals, ns.tolist()):
        if isinstance(v, str):
            c = vocab.get(v)
            if c is None:
                return _values(vals, ns)
            parts.append(np.full(n, c, np.int8))
        elif isinstance(v, np.ndarray):  # channel: MSG_CHANNELS indices
            parts.append(_MSG_CH_CODE[v])
        else:
            cs = [vocab.get(x, -1) for x in v]
            if -1 in cs:
                return _values(vals, ns)
            parts.append(np.array(cs, np.int8))
    return np.concatenate(parts)


def _values(vals: list[Any], ns: np.ndarray) -> np.ndarray:
    """A column from its segments' entries ``vals`` (``ns`` rows each) as an object array."""
    col = np.empty(int(ns.sum()), dtype=object)
    at = 0
    for v, n in zip(vals, ns.tolist()):
        if isinstance(v, str) or v is None:
            col[at:at + n] = v
        elif isinstance(v, np.ndarray):
            col[at:at + n] = [MSG_CHANNELS[x] for x in v.tolist()]
        else:
            col[at:at + n] = list(v)
        at += n
    return col


def _string_array(values: np.ndarray | None, n: int) -> Any:
    """``values`` (object array, ``None`` for null; ``None``: all null) as a pandas ``string``
    array: the array ``pd.array(values, dtype="string")`` gives, built by pyarrow directly."""
    if pd.StringDtype().storage == "pyarrow":
        import pyarrow as pa

        try:
            arr = (pa.nulls(n, pa.large_string()) if values is None
                   else pa.array(values, type=pa.large_string(), from_pandas=True))
            return pd.arrays.ArrowStringArray(pa.chunked_array([arr]))
        except (pa.ArrowException, TypeError, ValueError):  # not all str: pandas converts
            pass
    return pd.array(np.full(n, None, dtype=object) if values is None else values, dtype="string")


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
        self.uid_l = self.uid.tolist()
        self.uid_arr = pd.array(self.uid, dtype="string")  # for the log frame (take by index)
        self.prof = activity_matrix(users)
        self.act_mean, self.act_max = self.prof.mean(axis=1), self.prof.max(axis=1)
        self.consent = np.column_stack([users[f"consent_{c}"].to_numpy(bool) for c in MSG_CHANNELS])
        # the same per user as a {channel: bool} mapping for contexts, built on first use and
        # shared by the user's contexts; replaced (never changed) when the user unsubscribes
        self.consent_maps: list[dict[str, bool] | None] = [None] * n
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
        self.tz_l = tz.tolist()
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
        # column-major: a user's earliest timer is a fast reduction over 4 contiguous columns
        self.timers = np.full((n, 4), _INF, order="F")
        self._mark = np.zeros(n, bool)  # scratch mask for set unions of user indices
        self.n_msg, self.n_pending = [0] * n, [0] * n  # per-user counters (message, pending ids)
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
        # (message id, campaign, tag, step) of each message
        self.m_meta: list[tuple[str, str | None, str | None, str | None]] = []
        self.rows = _Rows()
        self._dt_memo: dict[float, datetime] = {}  # hours -> datetime, cleared every step
        self.policy_name = str(getattr(policy, "name", type(policy).__name__))
        # PressureRules.admit reads only sent / opened / clicked history events, consent and
        # the time: an admission right after a decision can reuse the decision's context
        self.reuse_ctx = type(self.rules) is PressureRules
        # the events kept in per-user history (HistoryEvents): none unless some context will
        # read it, and then only those the policy and its rules read (undeclared: all)
        declared = history_events(policy)
        self.kept_events: frozenset[str] = (
            frozenset() if not needs_history(policy, self.kinds)
            else frozenset(EVENTS) if declared is None else declared)
        self._init_timers()

    # --- time ------------------------------------------------------------------------
    def _utc_offsets(self) -> tuple[np.ndarray, np.ndarray]:
        return utc_offset_table(self.start, self.horizon, list(self.tz_names))

    def local_hour(self, users: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Fractional local clock hour in [0, 24) of users ``(m,)`` at times ``t`` (m,) [h]."""
        zone = self.tz_idx[users]
        changes, offsets = self._offsets
        k = (np.asarray(t)[:, None] >= changes[zone]).sum(axis=1) if changes.shape[1] else 0
        return np.mod(t + offsets[zone, k], 24.0)

    def _dt(self, h: float) -> datetime:
        """The UTC instant ``h`` hours after the start (memoised within a step)."""
        dt = self._dt_memo.get(h)
        if dt is None:
            dt = self._dt_memo[h] = self.start + timedelta(microseconds=round(h * 3.6e9))
        return dt

    def _h(self, dt: datetime) -> float:
        return (dt - self.start).total_seconds() / 3600.0

    # --- logging, history, contexts ----------------------------------------------------
    def _log(self, u: int, t: float, event: str, channel: str = "none", action: str | None = None,
             message_id: str | None = None, campaign: str | None = None, policy: str | None = None,
             propensity: float | None = None, value: float | None = None,
             reason: str | None = None, tag: str | None = None, step: str | None = None) -> None:
        self.rows.single.append((t, u, event, channel, action, message_id, campaign, policy,
                                 propensity, value, reason, tag, step))
        if event not in self.kept_events:
            return
        hist = self.history[u]
        if hist is None:
            hist = self.history[u] = deque()
        ts = self._dt(t)
        hist.append(HistoryEvent(ts, event, channel, message_id, campaign, tag, value, step))
        cutoff = ts - self.hist_window
        while hist[0].ts < cutoff:
            hist.popleft()

    def _log_decision(self, u: int, t: float, event: str, channel: str, d: Decision, *,
                      propensity: float | None = None, value: float | None = None,
                      reason: str | None = None, tag: str | None = None,
                      message_id: str | None = None) -> None:
        """Log a row decision ``d`` leads to: :meth:`Decision.log_fields`' columns
        (``action``, ``campaign``, ``policy``, ``step``), passed by position (hot path)."""
        self._log(u, t, event, channel, d.action, message_id, d.campaign, d.policy, propensity,
                  value, reason, tag, d.step)

    def _log_many(self, users: np.ndarray, t: np.ndarray, event: str,
                  channel: str | Sequence[str] | np.ndarray, msgs: np.ndarray | None = None,
                  value: np.ndarray | None = None) -> None:
        """Log one row per user (``users``, ``t``: (m,)); message rows carry their id, campaign,
        tag and step.

        ``channel``: one name for all rows, a name per row, or an integer array of
        :data:`MSG_CHANNELS` indices. The same rows and history events as one :meth:`_log`
        call per user, inlined; the rows are stored as one block of arrays (:class:`_Rows`)."""
        n = len(users)
        if n == 0:
            return
        if msgs is not None:
            meta = self.m_meta
            mids, camps, tags, steps = zip(*[meta[m] for m in np.asarray(msgs).tolist()])
        else:
            mids = camps = tags = steps = None
        us = np.array(users, dtype=np.int64)  # copies: the caller's arrays may change later
        ts_h = np.array(t, dtype=float)
        vals = None if value is None else np.array(value, dtype=float)
        if isinstance(channel, np.ndarray):
            channel = np.array(channel, dtype=np.int64)
        self.rows.block(n, (ts_h, us, event, channel, None, mids, camps, None, None, vals,
                            None, tags, steps))
        if event not in self.kept_events:
            return
        if isinstance(channel, str):
            chans: Sequence[str] = [channel] * n
        elif isinstance(channel, np.ndarray):
            chans = [MSG_CHANNELS[x] for x in channel.tolist()]
        else:
            chans = channel
        nones = [None] * n
        if mids is None:
            mids = camps = tags = steps = nones
        vals_l = nones if vals is None else vals.tolist()
        history, start, window = self.history, self.start, self.hist_window
        for u, th, ch, mid, camp, tag, val, step in zip(us.tolist(), ts_h.tolist(), chans, mids,
                                                        camps, tags, vals_l, steps):
            hist = history[u]
            if hist is None:
                hist = history[u] = deque()
            ts = start + timedelta(microseconds=round(th * 3.6e9))
            hist.append(HistoryEvent(ts, event, ch, mid, camp, tag, val, step))
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
        if hist is None:  # no event yet, or no history kept (module docstring)
            history: tuple[HistoryEvent, ...] = ()
        else:
            cutoff = now - self.hist_window
            while hist and hist[0].ts < cutoff:
                hist.popleft()
            history = tuple(hist)
        consent = self.consent_maps[u]
        if consent is None:
            consent = self.consent_maps[u] = dict(zip(MSG_CHANNELS, self.consent[u].tolist()))
        # _EngineContext(user_id=…, …, trigger=…) without the frozen dataclass's __init__
        # (one object.__setattr__ per field): the same fields, in the same order
        ctx = _new_context(_EngineContext)
        ctx.__dict__.update(user_id=self.uid_l[u], now=now, timezone=self.tz_l[u],
                            traits=self._traits(u), consent=consent, history=history,
                            trigger=trigger)
        return ctx

    # --- decisions ---------------------------------------------------------------------
    def decide(self, users: np.ndarray, t: np.ndarray, kind: str,
               payloads: Sequence[Mapping[str, Any]] | None = None,
               trig_ts: Sequence[datetime] | None = None) -> None:
        """Ask the policy about trigger ``kind`` for ``users`` (m,) at ``t`` (m,) [h]."""
        if len(users) == 0 or (self.kinds is not None and kind not in self.kinds):
            return
        ctxs = []
        us, ts = np.asarray(users).tolist(), np.asarray(t, dtype=float).tolist()
        for i, (u, ti) in enumerate(zip(us, ts)):
            trig = Trigger(kind=kind, ts=trig_ts[i] if trig_ts is not None else self._dt(ti),
                           payload=payloads[i] if payloads is not None else {})
            ctxs.append(self._context(u, ti, trig))
        results = self.decide_batch(ctxs, self.prng)
        # a user's admission right after its decision may reuse the decision's context
        # (only its decided / suppressed rows are new), unless a user is here twice
        reuse = self.reuse_ctx and len(set(us)) == len(us)
        for i, decisions in enumerate(results):
            self._apply(us[i], ts[i], decisions, ctxs[i] if reuse else None)

    def _apply(self, u: int, now: float, decisions: list[Decision],
               ctx: Context | None = None) -> None:
        """Log, queue and (when due now) admit user ``u``'s decisions, as the reference engine.

        ``ctx``: the decision's context, for the admission to reuse (see :meth:`admit`)."""
        queued = False
        for d in decisions:
            self._log_decision(u, now, "decided", d.channel, d, propensity=float(d.propensity))
            if not d.is_message:
                if d.reason:
                    self._log_decision(u, now, "suppressed", "none", d, reason=d.reason)
            else:
                due_h = max(now, self._h(d.send_at)) if d.send_at is not None else now
                k = self.n_pending[u] = self.n_pending[u] + 1
                p = Pending(f"{self.uid_l[u]}-p{k}", d, self._dt(due_h), self._dt(now))
                self.queues.setdefault(u, []).append(p)
                if due_h <= now + _EPS_H:
                    queued = True
                else:
                    self.q.push(due_h, u, K_WAKE, -1)
            for f in d.follow_ups:
                self.objs.append(f)
                self.q.push(max(now, self._h(f.at)), u, K_FOLLOW, len(self.objs) - 1)
        if queued:
            self.admit(u, now, ctx)

    def admit(self, u: int, now: float, decision_ctx: Context | None = None) -> None:
        """Send, defer or drop user ``u``'s pendings due at ``now`` (as the reference engine).

        ``decision_ctx``: the context of a decision just made for ``u`` at ``now``; with
        :class:`PressureRules` the admission context is that one with the ``admission``
        trigger — the history it lacks (this decision's ``decided`` / ``suppressed`` rows)
        is none of what ``PressureRules.admit`` reads."""
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
        trigger = Trigger("admission", self._dt(now))
        if decision_ctx is not None:
            ctx = _new_context(_EngineContext)
            ctx.__dict__.update(decision_ctx.__dict__)
            ctx.__dict__["trigger"] = trigger
        else:
            ctx = self._context(u, now, trigger)
        adm = runtime.admit(self.rules, due, ctx, self.policy_name)
        for p in adm.send:
            self._send(u, now, p)
        for p, at, reason in adm.defer:
            d = p.decision
            self._log_decision(u, now, "deferred", d.channel, d, reason=reason)
            at_h = max(self._h(at), now + _MIN_DEFER_H)
            # replace(p, due=…), without dataclasses.replace's field introspection
            self.queues.setdefault(u, []).append(Pending(p.pending_id, d, self._dt(at_h), p.created))
            self.q.push(at_h, u, K_WAKE, -1)
        for p, reason in adm.drop:
            d = p.decision
            self._log_decision(u, now, "suppressed", d.channel, d, reason=reason)

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
            self._log_decision(u, now, "suppressed", ch if ch in _CH_INDEX else "none", d,
                               reason="no_consent")
            return
        c = _CH_INDEX[ch]
        params = self.ch_params[c]
        meta = d.meta or {}
        try:
            chm.check_content(ch, params, text=meta.get("text"), title=meta.get("title"),
                              body=meta.get("body"))
        except chm.ContentLimitError as exc:
            self._log_decision(u, now, "suppressed", ch, d, reason=f"content_limit: {exc}")
            return
        k = self.n_msg[u] = self.n_msg[u] + 1
        mid = f"{self.uid_l[u]}-m{k}"
        before = float(fat.decay(self.pressure[u], now - self.pressure_t[u], self.fz.half_life_h))
        self.pressure[u] = float(fat.add_message(before, self.weight[c]))
        self.pressure_t[u] = now
        self._log_decision(u, now, "sent", ch, d, message_id=mid, tag=d.tag,
                           value=chm.message_cost(ch, params, meta.get("text")))
        if self.m_n == self.m_cap:
            self._grow_messages()
        k = self.m_n
        self.m_n += 1
        self.m_user[k], self.m_ch[k], self.m_sent[k], self.m_pressure[k] = u, c, now, before
        self.m_meta.append((mid, d.campaign, d.tag, d.step))
        self.q.push(now + self.deliv_h[c], u, K_DELIVER, k)

    def on_deliver(self, users: np.ndarray, t: np.ndarray, msgs: np.ndarray) -> None:
        """Delivery outcome; for delivered messages draw when they are seen and what follows."""
        c = self.m_ch[msgs]
        out = chm.delivery_outcome(self.rng, self.bounce[c], self.fail[c])
        for code, name in ((chm.BOUNCED, "bounced"), (chm.FAILED, "failed"), (chm.DELIVERED, "delivered")):
            m = out == code
            if m.any():
                self._log_many(users[m], t[m], name, c[m], msgs=msgs[m])
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
        if opened.any():
            ou, ot, om = users[opened], t[opened], msgs[opened]
            self._log_many(ou, ot, "opened", self.m_ch[om], msgs=om)
            self.decide(ou, ot, "opened", [{"message_id": self.m_meta[m][0],
                                            "channel": MSG_CHANNELS[self.m_ch[m]]} for m in om])
        click = opened & (d[:, 1] < p[:, 1])
        if click.any():
            wait = self.rng.exponential(0.5, size=int(click.sum())) / 60.0
            self.q.push_many(t[click] + wait, users[click], K_CLICK, msgs[click])
        self.after_effects(users[~click], t[~click], msgs[~click])

    def on_click(self, users: np.ndarray, t: np.ndarray, msgs: np.ndarray) -> None:
        """A click: boost and redraw the visit process, trigger, a session, then after-effects."""
        self._log_many(users, t, "clicked", self.m_ch[msgs], msgs=msgs)
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
            for uu in users[unsub].tolist():
                self.consent_maps[uu] = None  # rebuilt from self.consent on next use
            self._log_many(users[unsub], t[unsub], "unsubscribed", c[unsub], msgs=msgs[unsub])
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

    def _draw_next_visit(self, users: np.ndarray, t: np.ndarray,
                         known: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> None:
        """Next thinning candidate: bound = rate at peak activity, rested, boost as of ``t``.

        ``known``: ``(visit rate, mean activity, click boost at t)`` of ``users`` when the
        caller has them already (the same values this would compute)."""
        if users.size == 0:
            return
        if known is None:
            beh = self.beh
            rate, mean = self.visit_rate[users], self.act_mean[users]
            boost = bh.click_boost(t - self.last_click[users], beh.click_visit_boost,
                                   beh.click_boost_half_life_h)
        else:
            rate, mean, boost = known
        bound = bh.visit_rate_bound_h(rate, self.act_max[users], mean, boost)
        self.bound[users] = bound
        # (no division by zero: the divisor is 1 where bound is not > 0)
        pos = bound > 0
        gap = np.where(pos, self.rng.exponential(1.0, users.size) / np.where(pos, bound, 1.0), _INF)
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
        v_rate, mean = self.visit_rate[users], self.act_mean[users]
        boost = bh.click_boost(t - self.last_click[users], beh.click_visit_boost,
                               beh.click_boost_half_life_h)
        rate = bh.visit_rate_h(v_rate, self.prof[users, hour.astype(np.int64) % 24], mean, f_act,
                               boost)
        accept = self.rng.random(users.size) * self.bound[users] < rate
        self._draw_next_visit(users, t, (v_rate, mean, boost))  # last_click unchanged since
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
        tm = np.take(self.timers.T, cand, axis=1)  # (4, m)
        t_timer = tm.min(axis=0)
        which = tm.argmin(axis=0)
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
        self._dt_memo.clear()
        pool = list(self.q.take(k))
        hot = np.flatnonzero(self.timers.min(axis=1) < t1)
        while True:
            self.q.flush()
            # events queued during this step that are due before t1 join the pool
            extra = self.q.take(k)
            if extra[0].size:
                pool = [np.concatenate([a, b]) for a, b in zip(pool, extra)]
            if pool[1].size:  # np.union1d(hot, pool users), without sorting
                mark = self._mark
                mark[hot] = True
                mark[pool[1]] = True
                cand = np.flatnonzero(mark)
                mark[cand] = False
            else:
                cand = hot
            if cand.size == 0:
                break
            any_due, _ = self._round(cand, t1, pool)
            if not any_due:
                break
            # users with a timer before t1: only candidates' timers changed in the round, and
            # a candidate not due had none (its earliest item was at or after t1)
            hot = cand[np.take(self.timers.T, cand, axis=1).min(axis=0) < t1]
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
                self.rows = _Rows()
            bar.update(t1 - t0)

    def frame(self) -> pd.DataFrame | None:
        """This chunk's log rows as an (unvalidated) frame sorted by time, or ``None``."""
        return _frame(self.rows, self.start, self.uid_arr)


def _frame(rows: _Rows, start: datetime, uid: Any, first: int = 0) -> pd.DataFrame | None:
    """Log rows ``first`` onwards as a frame in the log's column order, sorted by time
    (stable: rows at the same instant keep the order they happened in).

    ``uid``: the chunk's user ids as a pandas string array. Columns are built in the dtypes
    :func:`~omnisim.log.validate` gives them (``event`` / ``channel`` categoricals over the
    full vocabularies from their codes, text columns pandas ``string`` arrays built by
    pyarrow, floats float64), so that ``validate`` checks them without converting; it still
    checks and normalises the frame."""
    cols = rows.columns(first)
    if cols is None:
        return None
    order = np.argsort(cols[_C_TS], kind="stable")
    hours = cols[_C_TS][order]
    n = len(order)
    ts = pd.Timestamp(start) + pd.to_timedelta(np.rint(hours * 3.6e9).astype(np.int64), unit="us")
    data: dict[str, Any] = {"ts": ts, "user_id": uid.take(cols[_C_USER][order])}
    for j, name in enumerate(COLUMNS):
        if j < 2:
            continue
        v = cols[j]
        if j in (_C_EVENT, _C_CHANNEL):
            data[name] = (pd.Categorical.from_codes(v[order], dtype=_EV_DTYPE if j == _C_EVENT
                                                    else _CH_DTYPE)
                          if v.dtype == np.int8 else pd.array(v[order], dtype="string"))
        elif j in _FLOAT_COLS:
            data[name] = v[order]
        else:
            data[name] = _string_array(None if v is None else v[order], n)
    return pd.DataFrame(data, copy=False)


class _Sink:
    """Writes a chunk's log as Parquet parts ``part-<chunk>-<k>.parquet`` (time-ordered)."""

    def __init__(self, out_dir: Path, chunk: int, flush_rows: int):
        self.out_dir, self.chunk, self.flush_rows = out_dir, chunk, flush_rows
        self.parts: list[Path] = []

    def write(self, df: pd.DataFrame | None) -> None:
        if df is None:
            return
        part = self.out_dir / f"part-{self.chunk:05d}-{len(self.parts):04d}.parquet"
        validate(df, source="engine_fast").to_parquet(part, index=False, **_PARQUET_OPTIONS)
        self.parts.append(part)


#: Parquet writer options of the parts: dictionary pages for the columns of few values (not
#: for message ids, times and numbers) and min/max statistics for ``ts`` only (what readers
#: filter on) — a quarter less writing time than pyarrow's defaults for the same data
_PARQUET_OPTIONS = {
    "use_dictionary": ["user_id", "event", "channel", "action", "campaign", "policy", "reason",
                       "tag", "step"],
    "write_statistics": ["ts"],
}


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
        df = _frame(chunk.rows, chunk.start, chunk.uid_arr, self.mark)
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


def _resolve_jobs(n_jobs: int) -> int:
    """``n_jobs`` as a number of processes (``-1``: one per CPU)."""
    if n_jobs == -1:
        return max(1, os.cpu_count() or 1)
    if n_jobs < 1:
        raise ValueError(f"n_jobs must be >= 1 or -1 (one process per CPU), got {n_jobs}")
    return int(n_jobs)


@dataclass
class _Run:
    """Everything a chunk needs, shared by the chunks of one run (and, forked, by workers)."""

    sc: Scenario
    policy: Policy
    users: pd.DataFrame
    starts: list[int]
    size: int
    world_seeds: list[np.random.SeedSequence]
    policy_seeds: list[np.random.SeedSequence]
    step_h: float
    learning: float | None
    out_dir: Path | None
    flush_rows: int
    edges: np.ndarray

    #: the policy's compiled form when the run takes the compiled path
    compiled: CompiledPolicy | None = None

    def chunk(self, i: int, bar: Any) -> tuple[pd.DataFrame | None, list[Path]]:
        """Simulate chunk ``i``: its (unvalidated, time-sorted) frame, or its Parquet parts."""
        if self.compiled is not None:
            return self._compiled_chunk(i, bar)
        s = self.starts[i]
        chunk = _Chunk(self.sc, self.policy, self.users.iloc[s:s + self.size].reset_index(drop=True),
                       np.random.default_rng(self.world_seeds[i]),
                       np.random.default_rng(self.policy_seeds[i]), self.step_h,
                       _Learner(self.policy, self.learning) if self.learning else None)
        # a learner slices chunk.rows by position: keep them all in memory
        sink = (_Sink(self.out_dir, i, self.flush_rows)
                if self.out_dir is not None and not self.learning else None)
        chunk.run(bar, self.edges, sink)
        df = chunk.frame()
        del chunk
        if self.out_dir is None:
            return df, []
        sink = sink or _Sink(self.out_dir, i, self.flush_rows)
        sink.write(df)
        return None, sink.parts

    def _compiled_chunk(self, i: int, bar: Any) -> tuple[pd.DataFrame | None, list[Path]]:
        """Chunk ``i`` through the compiled world loop (``docs/engines.md``, "Compiled path")."""
        from omnisim.model import _compiled  # numba: imported when first used

        s = self.starts[i]
        users = self.users.iloc[s:s + self.size].reset_index(drop=True)
        tz = users["timezone"].astype(str).to_numpy(dtype=object)
        tz_names, tz_idx = np.unique(tz, return_inverse=True)
        run = _compiled.run_chunk(self.sc, self.compiled, users,
                                  utc_offset_table(self.sc.start, self.sc.horizon_h, tz_names),
                                  tz_idx, np.random.default_rng(self.world_seeds[i]),
                                  np.random.default_rng(self.policy_seeds[i]), bar)
        if run is None:
            return None, []
        df = _compiled.frame(run, self.sc.start, users["user_id"].astype(str).tolist())
        del run
        if self.out_dir is None:
            return df, []
        sink = _Sink(self.out_dir, i, self.flush_rows)
        for lo in range(0, len(df), self.flush_rows):  # time-ordered parts of flush_rows rows
            sink.write(df.iloc[lo:lo + self.flush_rows].reset_index(drop=True))
        return None, sink.parts


#: The run a forked worker executes chunks of, and its progress queue (set in the parent
#: just before the workers are forked; see :func:`_run_parallel`).
_WORKER_RUN: _Run | None = None
_WORKER_PROGRESS: Any = None


class _RelayBar:
    """Stands in for the tqdm bar in a worker: ``send(hours)`` every ``every_h`` simulated
    hours (to a queue read by the parent, or as a Dask event the client subscribes to)."""

    def __init__(self, send: Callable[[float], None], every_h: float = 24.0):
        self.send, self.every_h, self.acc = send, every_h, 0.0

    def update(self, h: float) -> None:
        self.acc += h
        if self.acc >= self.every_h:
            self.flush()

    def flush(self) -> None:
        if self.acc:
            self.send(self.acc)
            self.acc = 0.0


def _worker_chunk(i: int) -> tuple[int, pd.DataFrame | None, list[Path]]:
    """Run chunk ``i`` of the forked-in run (in a worker process)."""
    assert _WORKER_RUN is not None
    retain_freed_memory()  # a dedicated process: keep freed blocks for the next chunk
    bar = _RelayBar(_WORKER_PROGRESS.put)
    df, parts = _WORKER_RUN.chunk(i, bar)
    bar.flush()
    return i, df, parts


def _run_parallel(run: _Run, n_jobs: int, bar: Any) -> list[tuple[pd.DataFrame | None, list[Path]]]:
    """The chunks of ``run`` in ``n_jobs`` forked processes; results in chunk order.

    Chunks are independent (own users, own spawned seeds), so each gives exactly the rows it
    gives when run in the parent. Workers are forked (they inherit ``run``, nothing is
    pickled but the results); progress comes back through a queue."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from queue import Empty

    global _WORKER_RUN, _WORKER_PROGRESS
    ctx = mp.get_context("fork")
    progress = ctx.Queue()

    def drain() -> None:
        while True:
            try:
                bar.update(progress.get_nowait())
            except Empty:
                return

    _WORKER_RUN, _WORKER_PROGRESS = run, progress
    results: dict[int, tuple[pd.DataFrame | None, list[Path]]] = {}
    try:
        with ProcessPoolExecutor(max_workers=n_jobs, mp_context=ctx) as pool:
            pending = {pool.submit(_worker_chunk, i) for i in range(len(run.starts))}
            try:
                while pending:
                    done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                    for fut in done:
                        i, df, parts = fut.result()  # a worker's exception is raised here
                        results[i] = (df, parts)
                    drain()
            except BaseException:
                for fut in pending:
                    fut.cancel()  # chunks not started yet
                raise
        drain()
    finally:
        _WORKER_RUN, _WORKER_PROGRESS = None, None
        progress.close()
    return [results[i] for i in range(len(run.starts))]


def _dask_chunk(run: _Run, i: int, topic: str) -> tuple[int, pd.DataFrame | None, list[Path]]:
    """Run chunk ``i`` of ``run`` on a Dask worker; progress goes out as events on ``topic``."""
    from distributed import get_worker

    worker = get_worker()
    bar = _RelayBar(lambda h: worker.log_event(topic, (i, h)))
    with fewer_gc_passes():
        df, parts = run.chunk(i, bar)
    return i, df, parts


class _ChunkProgress:
    """The client's bar for chunks on Dask: worker events advance it while a chunk runs,
    and a finished chunk tops it up to the chunk's whole horizon (late events are ignored)."""

    def __init__(self, bar: Any, horizon_h: float):
        self.bar, self.horizon_h = bar, horizon_h
        self.shown: dict[int, float] = {}
        self.finished: set[int] = set()
        self.lock = threading.Lock()

    def event(self, event: tuple[float, tuple[int, float]]) -> None:
        i, h = event[1]
        with self.lock:
            if i in self.finished:
                return
            h = min(h, self.horizon_h - self.shown.get(i, 0.0))
            self.shown[i] = self.shown.get(i, 0.0) + h
            self.bar.update(h)

    def finish(self, i: int) -> None:
        with self.lock:
            self.finished.add(i)
            self.bar.update(self.horizon_h - self.shown.get(i, 0.0))


def _run_dask(run: _Run, scheduler: Any, n_workers: int,
              bar: Any) -> list[tuple[pd.DataFrame | None, list[Path]]]:
    """The chunks of ``run`` as tasks on a Dask cluster; results in chunk order.

    ``run`` (scenario, policy, the users table) is scattered once; each task returns its
    chunk's frame or, with ``out``, writes its Parquet parts there — a folder every worker
    must see (a shared file system beyond one machine). Workers report simulated hours as
    Dask events (``Worker.log_event``), so the bar moves while chunks run."""
    from distributed import as_completed

    from omnisim.cluster import dask_client

    if run.out_dir is not None:  # workers may run in another folder
        run = dataclasses.replace(run, out_dir=run.out_dir.absolute())
    results: dict[int, tuple[pd.DataFrame | None, list[Path]]] = {}
    token = f"{os.getpid()}-{id(run)}-{time.time_ns()}"
    topic = f"omnisim-progress-{token}"
    progress = _ChunkProgress(bar, run.sc.horizon_h)
    with dask_client(scheduler, n_workers=n_workers) as client:
        client.subscribe_topic(topic, progress.event)
        try:
            shared = client.scatter(run, hash=False)
            futures = [client.submit(_dask_chunk, shared, i, topic, key=f"omnisim-chunk-{token}-{i}",
                                     pure=False) for i in range(len(run.starts))]
            for fut in as_completed(futures):
                i, df, parts = fut.result()  # a chunk's exception is raised here
                results[i] = (df, parts)
                fut.release()
                progress.finish(i)
        finally:
            client.unsubscribe_topic(topic)
    return [results[i] for i in range(len(run.starts))]


def simulate(scenario: Scenario, policy: Policy, *, n_users: int | None = None,
             days: float | None = None, seed: int | None = None, progress: bool = True,
             out: str | Path | None = None, chunk_users: int = DEFAULT_CHUNK_USERS,
             step_h: float = DEFAULT_STEP_H, flush_rows: int = 1_000_000,
             n_jobs: int = 1, scheduler: Any = None, compiled: bool = True) -> FastSimulationResult:
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
        Hours of simulated time batched per step (performance; the same model and event
        times, but the random draws are made in another order, so another ``step_h`` gives
        another sample — part of the seed contract, like ``chunk_users``).
    flush_rows
        With ``out``: write a part whenever a chunk has logged this many rows.
    n_jobs
        Processes simulating chunks at once (``-1``: one per CPU). Performance only: the
        log is the same for any ``n_jobs`` (chunks are independent); memory grows with the
        number of chunks in flight. Workers are forked (Linux/macOS); with ``out`` each
        writes its own chunk's parts. A policy that learns online is one chunk, run here.
    scheduler
        Run the chunks as tasks on Dask distributed instead (:mod:`omnisim.cluster`):
        ``"local"`` (a ``LocalCluster`` of ``n_jobs`` worker processes), a scheduler address
        (``"tcp://host:8786"``) or a ``distributed.Client``. The same log as ``n_jobs=1``;
        with ``out`` every worker writes its chunks' parts there, so beyond one machine
        ``out`` must be a shared folder. A policy that learns online still runs here.

    compiled
        Run a policy that has a compiled form (:mod:`omnisim.policies._kernel_policy`: the
        world model alone, the baselines) in the compiled world loop, user by user
        (``docs/engines.md``, "Compiled path"); ``False`` forces the round-based path. The
        two paths draw in another order: each is its own sample (same seed, same path, same
        log); ``step_h`` does not apply to the compiled path.

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
    jobs = _resolve_jobs(n_jobs)
    t0 = time.perf_counter()
    pop_ss, world_ss, policy_ss = np.random.SeedSequence(sc.seed).spawn(3)
    users = sample_population(sc.population, sc.n_users, np.random.default_rng(pop_ss),
                              horizon_days=sc.days, enabled_channels=sc.enabled_channels)
    learning = update_cadence(policy)  # hours, or None when the policy does not learn online
    size = len(users) if learning else chunk_users
    starts = list(range(0, len(users), size))
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    run = _Run(sc, policy, users, starts, size, world_ss.spawn(len(starts)),
               policy_ss.spawn(len(starts)), step_h, learning, out_dir, flush_rows,
               _edges(sc.horizon_h, step_h, learning))
    if compiled and not learning:
        run.compiled = compile_policy(policy)
    workers = jobs  # the LocalCluster of scheduler="local"
    jobs = min(jobs, len(starts))
    if jobs > 1 and "fork" not in _mp_methods():
        jobs = 1  # pragma: no cover - no fork (Windows): run here
    name = str(getattr(policy, "name", type(policy).__name__))
    with tqdm(total=sc.horizon_h * len(starts), unit="h", desc=f"simulate {name} (fast)",
              disable=not progress, leave=False) as bar, fewer_gc_passes():
        if scheduler is not None and not learning:
            results = _run_dask(run, scheduler, workers, bar)
        elif jobs > 1:
            results = _run_parallel(run, jobs, bar)
        else:
            with freed_memory_retained():
                results = [run.chunk(i, bar) for i in range(len(starts))]
    frames = [df for df, _ in results if df is not None]
    parts = [p for _, ps in results for p in ps]
    log = None
    if out_dir is None:
        if not frames:
            raise EmptySimulationError(sc.n_users, sc.days)
        log = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        if len(frames) > 1:
            log = log.iloc[np.argsort(log["ts"].to_numpy(), kind="stable")].reset_index(drop=True)
        log = validate(log, source="engine_fast")
    return FastSimulationResult(log=log, users=users, scenario=sc, policy=name, chunk_size=size,
                                wall_s=time.perf_counter() - t0, log_parts=parts)


def _mp_methods() -> list[str]:
    import multiprocessing as mp

    return mp.get_all_start_methods()
