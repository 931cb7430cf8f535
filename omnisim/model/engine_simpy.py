"""The reference engine: one simpy process per user, one per message and per scheduled step.

This is the readable specification of the simulated world; a vectorised engine must produce
the same kind of log from the same model functions. Time is ``env.now`` in **hours since the
scenario start**; log timestamps are UTC.

Per user (:meth:`_Sim._life`): new users sign up at their signup time; then sessions arrive
as a thinned Poisson process (:mod:`omnisim.model.behavior`), each running the funnel
visit → product_view → cart_add → purchase / cart_abandon; ``inactivity_days`` without a
session fire an ``inactivity`` trigger; a baseline churn time ends the user.

Every behaviour event, every open and click, and the inactivity timer are **triggers**: the
engine builds a :class:`~omnisim.policies.base.Context` (observable traits, consent, the last
35 days of history) and calls ``policy.decide(ctx, rng_policy)``, following
``docs/decision-core.md``: every decision is logged as ``decided``; a ``none`` decision with a
reason adds ``suppressed``; follow-ups come back as ``journey_step`` triggers; message
decisions become :class:`~omnisim.policies.pressure.Pending` items admitted by
``policy.rules.admit`` (if the policy has rules) when due.

Per message (:meth:`_Sim._message`): ``sent`` (value = cost), then after the channel's
delivery delay ``delivered`` / ``bounced`` / ``failed``; a delivered message is seen after the
channel's read delay and then maybe ``opened``, ``clicked`` (which starts a session and boosts
later visits), ``unsubscribed``, or the user ``churned`` (fatigue).

Online learning (``docs/decision-core.md``): when the policy has ``update_every_h`` and
``partial_fit``, a process calls ``policy.partial_fit(rows)`` every ``update_every_h``
simulated hours with the validated log rows (all users) written since the previous call
(never with zero rows). Updates happen at fixed simulated times and ties with other events
of the same instant follow simpy's schedule order: same seed, same updates, same log. The
policy object learns in place — pass ``sklearn.base.clone(policy)`` for a fresh learner.

Randomness: ``SeedSequence(seed).spawn(3)`` → population, world, policy; world and policy are
spawned again per user, so a user's draws do not depend on other users.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Iterator, Mapping
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import simpy
from tqdm.auto import tqdm

from omnisim.log import COLUMNS, validate
from omnisim.model import behavior as bh
from omnisim.model import channels as chm
from omnisim.model import fatigue as fat
from omnisim.model._gc import fewer_gc_passes
from omnisim.model.population import MSG_CHANNELS, activity_matrix, sample_population
from omnisim.model.scenario import EmptySimulationError, Scenario
from omnisim.policies import runtime
from omnisim.policies.base import (
    BEHAVIOUR_TRIGGERS, Context, Decision, FollowUp, HistoryEvent, Policy, Trigger,
)

try:  # the policies helper owns this module; the engine only needs the documented shape
    from omnisim.policies.pressure import Pending
except ImportError:  # pragma: no cover - only before pressure.py exists
    @dataclass(frozen=True, slots=True)
    class Pending:  # type: ignore[no-redef]
        pending_id: str
        decision: Decision
        due: datetime
        created: datetime

__all__ = ["simulate", "SimulationResult", "HISTORY_DAYS", "TRIGGER_EVENTS"]

#: Days of history kept per user and shown to policies.
HISTORY_DAYS = 35
#: Log events after which the policy is asked to decide (plus ``inactivity``, ``journey_step``).
#: Logged behaviour events that trigger a decision (``inactivity`` is raised apart).
TRIGGER_EVENTS = tuple(k for k in BEHAVIOUR_TRIGGERS if k != "inactivity")
_EPS_H = runtime.DUE_TOLERANCE_H     # time tolerance when comparing due times (hours)
_MIN_DEFER_H = runtime.MIN_DEFER_H   # a deferral moves a pending at least one minute ahead


@dataclass
class SimulationResult:
    """Output of :func:`simulate`.

    Attributes
    ----------
    log : pandas.DataFrame
        The engagement log, validated by :func:`omnisim.log.validate`.
    users : pandas.DataFrame
        One row per user, as :func:`~omnisim.model.population.sample_population` returns.
    scenario : Scenario
        The scenario actually run (overrides applied).
    policy : str
        The policy's name.
    wall_s : float
        Wall-clock seconds the simulation took.
    """

    log: pd.DataFrame
    users: pd.DataFrame
    scenario: Scenario
    policy: str
    wall_s: float

    @property
    def user_days(self) -> float:
        return len(self.users) * self.scenario.days


class _User:
    """Mutable per-user state (hidden traits included; policies never see this object)."""

    __slots__ = (
        "user_id", "tz", "zone", "profile", "act_mean", "act_max", "traits", "consent",
        "affinity", "tolerance", "visit_rate", "propensity", "basket", "price_sens",
        "email_median", "is_new", "signup_h", "rng", "prng", "history", "pressure",
        "pressure_t", "last_click_h", "cart_open", "cart_seq", "last_active_h",
        "inactive_fired", "churned", "queue", "n_msg", "n_pending", "life",
    )


class _Sim:
    def __init__(self, scenario: Scenario, policy: Policy, users: pd.DataFrame,
                 world_ss: np.random.SeedSequence, policy_ss: np.random.SeedSequence,
                 wakeups: Mapping[str, Any] | None = None):
        self.wakeups = wakeups or {}
        self.sc = scenario
        self.policy = policy
        self.rules = getattr(policy, "rules", None)
        self.env = simpy.Environment()
        self.start = scenario.start
        self.rows: list[tuple] = []
        self.hist_window = timedelta(days=HISTORY_DAYS)
        self.beh = scenario.behavior
        self.fat = scenario.fatigue
        # a click "boosts" purchases while its visit boost is above 1 % of its peak
        self.boost_window_h = self.beh.click_boost_half_life_h * math.log2(100)
        self.users = self._build_users(users, world_ss, policy_ss)
        self.update_every_h = runtime.update_cadence(policy)
        self.n_fed = 0  # rows already handed to policy.partial_fit

    # --- setup ---------------------------------------------------------------------------
    def _build_users(self, df: pd.DataFrame, world_ss: np.random.SeedSequence,
                     policy_ss: np.random.SeedSequence) -> list[_User]:
        prof = activity_matrix(df)
        wss, pss = world_ss.spawn(len(df)), policy_ss.spawn(len(df))
        zones: dict[str, ZoneInfo] = {}
        out = []
        for i, r in enumerate(df.itertuples(index=False)):
            u = _User()
            u.user_id, u.tz = str(r.user_id), str(r.timezone)
            u.zone = zones.setdefault(u.tz, ZoneInfo(u.tz))
            u.profile = prof[i]
            u.act_mean, u.act_max = float(prof[i].mean()), float(prof[i].max())
            u.signup_h = float(r.signup_offset_h)
            u.is_new = bool(r.is_new)
            u.traits = {"segment": str(r.segment), "signup_ts": self._dt(u.signup_h)}
            u.consent = {ch: bool(getattr(r, f"consent_{ch}")) for ch in MSG_CHANNELS}
            u.affinity = {ch: float(getattr(r, f"affinity_{ch}")) for ch in MSG_CHANNELS}
            u.tolerance = float(r.fatigue_tolerance)
            u.visit_rate = float(r.visit_rate_per_day)
            u.propensity = float(r.purchase_propensity)
            u.basket = float(r.basket_median)
            u.price_sens = float(r.price_sensitivity)
            u.email_median = float(r.email_check_median_h)
            u.rng = np.random.default_rng(wss[i])
            u.prng = np.random.default_rng(pss[i])
            u.history = deque()
            u.pressure, u.pressure_t = 0.0, 0.0
            u.last_click_h = -math.inf
            u.cart_open, u.cart_seq = False, 0
            u.last_active_h = -float(r.last_visit_days_ago) * 24.0 if not u.is_new else u.signup_h
            u.inactive_fired, u.churned = False, False
            u.queue, u.n_msg, u.n_pending = [], 0, 0
            u.life = None
            out.append(u)
        return out

    # --- time helpers ----------------------------------------------------------------------
    def _dt(self, h: float) -> datetime:
        """UTC datetime of simulation time ``h`` (hours since start), to the microsecond
        (rounded exactly as the log's ``ts`` column, so history and log agree)."""
        return self.start + timedelta(microseconds=round(h * 3.6e9))

    def _h(self, dt: datetime) -> float:
        return (dt - self.start).total_seconds() / 3600.0

    def _local_hour(self, u: _User, h: float) -> float:
        t = self._dt(h).astimezone(u.zone)
        return t.hour + t.minute / 60.0 + t.second / 3600.0

    # --- logging and context -----------------------------------------------------------------
    def _log(self, u: _User, event: str, channel: str = "none", *, action: str | None = None,
             message_id: str | None = None, campaign: str | None = None,
             policy: str | None = None, propensity: float | None = None,
             value: float | None = None, reason: str | None = None,
             tag: str | None = None, step: str | None = None) -> None:
        now = self.env.now
        self.rows.append((now, u.user_id, event, channel, action, message_id, campaign, policy,
                          propensity, value, reason, tag, step))
        ts = self._dt(now)
        hist = u.history
        hist.append(HistoryEvent(ts, event, channel, message_id, campaign, tag, value, step))
        cutoff = ts - self.hist_window
        while hist[0].ts < cutoff:
            hist.popleft()

    def _context(self, u: _User, trigger: Trigger) -> Context:
        now = self._dt(self.env.now)
        cutoff = now - self.hist_window
        while u.history and u.history[0].ts < cutoff:
            u.history.popleft()
        return Context(user_id=u.user_id, now=now, timezone=u.tz, traits=u.traits,
                       consent=dict(u.consent), history=tuple(u.history), trigger=trigger)

    # --- decisions -------------------------------------------------------------------------
    def _decide(self, u: _User, kind: str, payload: Mapping[str, Any] | None = None,
                ts: datetime | None = None) -> None:
        """Ask the policy about trigger ``kind`` now; log, queue and admit what it decides."""
        trig = Trigger(kind=kind, ts=ts or self._dt(self.env.now), payload=payload or {})
        decisions = self.policy.decide(self._context(u, trig), u.prng)
        now = self.env.now
        queued = False
        for d in decisions:
            self._log(u, "decided", d.channel, propensity=float(d.propensity), **d.log_fields())
            if not d.is_message:
                if d.reason:
                    self._log(u, "suppressed", "none", reason=d.reason, **d.log_fields())
            else:
                due_h = max(now, self._h(d.send_at)) if d.send_at is not None else now
                u.n_pending += 1
                p = Pending(f"{u.user_id}-p{u.n_pending}", d, self._dt(due_h), self._dt(now))
                u.queue.append(p)
                if due_h <= now + _EPS_H:
                    queued = True
                else:
                    self.env.process(self._wake(u, due_h))
            for f in d.follow_ups:
                self.env.process(self._follow_up(u, f))
        if queued:
            self._admit(u)

    def _follow_up(self, u: _User, f: FollowUp) -> Iterator[simpy.Event]:
        yield self.env.timeout(max(0.0, self._h(f.at) - self.env.now))
        self._decide(u, "journey_step", f.payload, ts=f.at)

    def _wake(self, u: _User, at_h: float) -> Iterator[simpy.Event]:
        yield self.env.timeout(max(0.0, at_h - self.env.now))
        self._admit(u)

    def _admit(self, u: _User) -> None:
        """Send, defer or drop this user's pendings that are due now."""
        cut = self._dt(self.env.now + _EPS_H)
        due = [p for p in u.queue if p.due <= cut]
        if not due:
            return
        u.queue = [p for p in u.queue if p.due > cut]
        if self.rules is None:
            for p in due:
                self._send(u, p)
            return
        ctx = self._context(u, Trigger("admission", self._dt(self.env.now)))
        adm = runtime.admit(self.rules, due, ctx, self.policy.name)
        for p in adm.send:
            self._send(u, p)
        for p, at, reason in adm.defer:
            d = p.decision
            self._log(u, "deferred", d.channel, reason=reason, **d.log_fields())
            at_h = max(self._h(at), self.env.now + _MIN_DEFER_H)
            u.queue.append(replace(p, due=self._dt(at_h)))
            self.env.process(self._wake(u, at_h))
        for p, reason in adm.drop:
            d = p.decision
            self._log(u, "suppressed", d.channel, reason=reason, **d.log_fields())

    # --- messages --------------------------------------------------------------------------
    def _pressure_now(self, u: _User) -> float:
        return float(fat.decay(u.pressure, self.env.now - u.pressure_t, self.fat.half_life_h))

    def _send(self, u: _User, p: Pending) -> None:
        d = p.decision
        ch = d.channel
        if ch not in MSG_CHANNELS or not u.consent.get(ch, False):
            self._log(u, "suppressed", ch if ch in MSG_CHANNELS else "none", reason="no_consent",
                      **d.log_fields())
            return
        params = self.sc.channels.get(ch)
        meta = d.meta or {}
        try:
            chm.check_content(ch, params, text=meta.get("text"), title=meta.get("title"),
                              body=meta.get("body"))
        except chm.ContentLimitError as exc:
            self._log(u, "suppressed", ch, reason=f"content_limit: {exc}", **d.log_fields())
            return
        u.n_msg += 1
        mid = f"{u.user_id}-m{u.n_msg}"
        pressure_before = self._pressure_now(u)
        u.pressure = float(fat.add_message(pressure_before, self.fat.weights.get(ch, 0.0)))
        u.pressure_t = self.env.now
        self._log(u, "sent", ch, message_id=mid, value=chm.message_cost(ch, params, meta.get("text")),
                  tag=d.tag, **d.log_fields())
        self.env.process(self._message(u, ch, params, mid, d, pressure_before))

    def _message(self, u: _User, ch: str, params: chm.ChannelParams, mid: str, d: Decision,
                 pressure: float) -> Iterator[simpy.Event]:
        """Life of one sent message: delivery, seen, open, click, unsubscribe, churn."""
        sent_h = self.env.now
        yield self.env.timeout(params.delivery_delay_s / 3600.0)
        kw = dict(message_id=mid, campaign=d.campaign, tag=d.tag, step=d.step)
        outcome = int(chm.delivery_outcome(u.rng, params.bounce_prob, params.fail_prob, size=1)[0])
        if outcome == chm.BOUNCED:
            self._log(u, "bounced", ch, **kw)
            return
        if outcome == chm.FAILED:
            self._log(u, "failed", ch, **kw)
            return
        self._log(u, "delivered", ch, **kw)
        if u.churned:
            return
        fz = self.fat
        hour = self._local_hour(u, sent_h)
        activity = u.profile[int(hour) % 24] / u.act_max
        f = float(fat.response_multiplier(pressure, u.tolerance, fz.response_strength)) \
            if fz.enabled else 1.0
        p_open = float(chm.open_probability(params.open_prob, u.affinity[ch], activity,
                                            params.timing_weight, f))
        p_click = float(chm.click_probability(params.click_prob, u.affinity[ch], f))
        if fz.enabled:
            p_unsub = float(fat.unsubscribe_probability(params.unsubscribe_prob, pressure,
                                                        u.tolerance, fz.unsubscribe_gain))
            p_churn = float(fat.churn_probability(pressure, u.tolerance, fz.churn_gain))
        else:
            p_unsub, p_churn = params.unsubscribe_prob, 0.0
        delay = float(chm.read_delay_h(u.rng, ch, params, [hour], u.profile[None, :],
                                       u.email_median)[0])
        draws = u.rng.random(4)
        yield self.env.timeout(delay)
        if u.churned:
            return
        if draws[0] < p_open:
            self._log(u, "opened", ch, **kw)
            self._decide(u, "opened", {"message_id": mid, "channel": ch})
            if draws[1] < p_click:
                yield self.env.timeout(float(u.rng.exponential(0.5)) / 60.0)
                self._log(u, "clicked", ch, **kw)
                u.last_click_h = self.env.now
                if (u.life is not None and u.life.is_alive and u.life is not self.env.active_process
                        and (not u.is_new or self.env.now >= u.signup_h)):
                    u.life.interrupt("click")
                self._decide(u, "clicked", {"message_id": mid, "channel": ch})
                self._session(u, from_click=True)
        if draws[2] < p_unsub and u.consent[ch]:
            u.consent[ch] = False
            self._log(u, "unsubscribed", ch, **kw)
        if draws[3] < p_churn and not u.churned:
            self._churn(u)

    # --- behaviour -------------------------------------------------------------------------
    def _churn(self, u: _User) -> None:
        u.churned = True
        self._log(u, "churned", "none")

    def _activity_mult(self, u: _User) -> float:
        if not self.fat.enabled:
            return 1.0
        return float(fat.response_multiplier(self._pressure_now(u), u.tolerance,
                                             self.fat.activity_strength))

    def _life(self, u: _User) -> Iterator[simpy.Event]:
        """Sign-up, then sessions by thinning, inactivity triggers and baseline churn.

        Thinning bound: the visit rate at peak activity, no fatigue, and the click boost as
        it is *now* (the boost only decays until the next click, which interrupts this
        process so that it redraws with the new bound — exact, as the process is Poisson).
        """
        env, beh, horizon = self.env, self.beh, self.sc.horizon_h
        if u.is_new:
            yield env.timeout(u.signup_h)
            self._log(u, "signup", "web")
            self._decide(u, "signup")
        rate_churn = beh.churn_rate_per_day / 24.0
        t_churn = env.now + u.rng.exponential(1.0 / rate_churn) if rate_churn > 0 else math.inf
        inactivity_h = beh.inactivity_days * 24.0
        while not u.churned:
            boost = float(bh.click_boost(env.now - u.last_click_h, beh.click_visit_boost,
                                         beh.click_boost_half_life_h))
            bound = float(bh.visit_rate_bound_h(u.visit_rate, u.act_max, u.act_mean, boost))
            t_next = env.now + (u.rng.exponential(1.0 / bound) if bound > 0 else math.inf)
            try:
                t_inact = u.last_active_h + inactivity_h
                if not u.inactive_fired and t_inact < min(t_next, t_churn, horizon):
                    yield env.timeout(max(0.0, t_inact - env.now))
                    if u.churned:
                        return
                    u.inactive_fired = True
                    self._decide(u, "inactivity",
                                 {"days_inactive": (env.now - u.last_active_h) / 24.0})
                t_wait = min(t_next, t_churn, horizon + 1.0)
                yield env.timeout(max(0.0, t_wait - env.now))
            except simpy.Interrupt:  # a click raised the visit rate: redraw
                continue
            if u.churned:
                return
            if t_churn <= t_next:
                self._churn(u)
                return
            h = self._local_hour(u, env.now)
            rate = float(bh.visit_rate_h(u.visit_rate, u.profile[int(h) % 24], u.act_mean,
                                         self._activity_mult(u),
                                         bh.click_boost(env.now - u.last_click_h,
                                                        beh.click_visit_boost,
                                                        beh.click_boost_half_life_h)))
            if u.rng.random() * bound < rate:
                self._session(u, from_click=False)

    def _session(self, u: _User, from_click: bool) -> None:
        """One site session: visit → product_view → cart_add → purchase or abandon later."""
        beh = self.beh
        u.last_active_h, u.inactive_fired = self.env.now, False
        self._log(u, "visit", "web")
        self._decide(u, "visit", {"from_click": from_click})
        f = float(fat.response_multiplier(self._pressure_now(u), u.tolerance,
                                          self.fat.response_strength)) if self.fat.enabled else 1.0
        boosted = (self.env.now - u.last_click_h) <= self.boost_window_h
        p_buy = bh.purchase_probability(u.propensity, f, u.cart_open, boosted, u.price_sens, beh)
        viewed, carted, bought = (bool(x[0]) for x in
                                  bh.session_funnel(u.rng, p_buy, beh, force_view=from_click))
        if viewed:
            self._log(u, "product_view", "web")
            self._decide(u, "product_view")
        if carted:
            self._log(u, "cart_add", "web")
            self._decide(u, "cart_add")
            u.cart_seq += 1
            if bought:
                value = float(bh.purchase_value(u.rng, u.basket, beh.basket_sigma)[0])
                u.cart_open = False
                self._log(u, "purchase", "web", value=value)
                self._decide(u, "purchase", {"value": value})
            else:
                u.cart_open = True
                self.env.process(self._abandon(u, u.cart_seq))

    def _abandon(self, u: _User, seq: int) -> Iterator[simpy.Event]:
        yield self.env.timeout(self.beh.abandon_delay_h)
        if u.cart_open and u.cart_seq == seq and not u.churned:
            self._log(u, "cart_abandon", "web")
            self._decide(u, "cart_abandon")

    def _scheduled(self, u: _User, items: Any) -> Iterator[simpy.Event]:
        """Replay hook: a ``scheduled`` trigger at each ``(hours, payload)`` of ``items``."""
        for at_h, payload in sorted(items, key=lambda it: it[0]):
            yield self.env.timeout(max(0.0, float(at_h) - self.env.now))
            self._decide(u, "scheduled", payload)

    # --- run -------------------------------------------------------------------------------
    def _ticker(self, bar: Any) -> Iterator[simpy.Event]:
        while True:
            yield self.env.timeout(24.0)
            bar.update(1)

    def _updater(self) -> Iterator[simpy.Event]:
        """Feed the rows logged since the last update to ``policy.partial_fit``."""
        while True:
            yield self.env.timeout(self.update_every_h)
            if len(self.rows) > self.n_fed:
                batch = self._frame(self.rows[self.n_fed:])
                self.n_fed = len(self.rows)
                self.policy.partial_fit(batch)

    def run(self, progress: bool) -> pd.DataFrame:
        if self.update_every_h is not None:
            self.env.process(self._updater())
        for u in self.users:
            u.life = self.env.process(self._life(u))
            if u.user_id in self.wakeups:
                self.env.process(self._scheduled(u, self.wakeups[u.user_id]))
        days = int(math.ceil(self.sc.days))
        with tqdm(total=days, unit="day", desc=f"simulate {self.policy.name}",
                  disable=not progress, leave=False) as bar:
            self.env.process(self._ticker(bar))
            self.env.run(until=self.sc.horizon_h)
        return self._frame(self.rows)

    def _frame(self, rows: list[tuple]) -> pd.DataFrame:
        if not rows:
            raise EmptySimulationError(self.sc.n_users, self.sc.days)
        cols = list(zip(*rows))
        hours = np.asarray(cols[0], dtype=float)
        ts = pd.Timestamp(self.start) + pd.to_timedelta(np.rint(hours * 3.6e9).astype(np.int64),
                                                        unit="us")
        df = pd.DataFrame({"ts": ts})
        for name, values in zip(COLUMNS[1:], cols[1:]):
            df[name] = list(values)
        order = np.argsort(hours, kind="stable")
        return validate(df.iloc[order].reset_index(drop=True), source="engine_simpy")


def simulate(scenario: Scenario, policy: Policy, *, n_users: int | None = None,
             days: float | None = None, seed: int | None = None,
             progress: bool = True, users: pd.DataFrame | None = None,
             wakeups: Mapping[str, Any] | None = None) -> SimulationResult:
    """Run ``policy`` in ``scenario`` with the reference engine.

    ``n_users``, ``days`` and ``seed`` override the scenario's. Returns the validated
    engagement log and the users table. Same scenario, policy and seed → identical log.

    Replay hooks (:mod:`omnisim.model.replay`): ``users`` is a ready population table (as
    :func:`~omnisim.model.population.sample_population` returns; ``n_users`` is then its
    length and no population is sampled); ``wakeups`` maps a user id to ``(hours since
    start, payload)`` pairs at which the policy is called with a ``scheduled`` trigger
    carrying ``payload``.
    """
    overrides = {k: v for k, v in (("n_users", n_users), ("days", days), ("seed", seed))
                 if v is not None}
    sc = scenario.replace(**overrides) if overrides else scenario
    if not hasattr(policy, "decide"):
        raise TypeError(f"policy must have a decide(ctx, rng) method (omnisim.policies.base."
                        f"Policy); got {type(policy).__name__}")
    t0 = time.perf_counter()
    pop_ss, world_ss, policy_ss = np.random.SeedSequence(sc.seed).spawn(3)
    if users is None:
        users = sample_population(sc.population, sc.n_users, np.random.default_rng(pop_ss),
                                  horizon_days=sc.days, enabled_channels=sc.enabled_channels)
    else:
        users = users.reset_index(drop=True)
        sc = sc.replace(n_users=len(users)) if len(users) != sc.n_users else sc
    sim = _Sim(sc, policy, users, world_ss, policy_ss, wakeups)
    with fewer_gc_passes():
        log = sim.run(progress)
    name = str(getattr(policy, "name", type(policy).__name__))
    return SimulationResult(log=log, users=users, scenario=sc, policy=name,
                            wall_s=time.perf_counter() - t0)
