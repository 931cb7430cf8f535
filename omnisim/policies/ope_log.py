"""Off-policy evaluation straight from an engagement log and a policy.

The array-level estimators of :mod:`omnisim.policies.ope` want obp-style arrays; this module
builds them from a log (pure functions over DataFrames, no I/O):

1. **Rounds** — every ``decided`` row with an ``action`` and a ``propensity`` in ``(0, 1]``
   is one round (:func:`decision_rewards`). ``pscore`` is the logged propensity.
2. **Reward per round** (``reward=``), attributed within ``window_h`` hours after the
   decision:

   ``open`` / ``click``
       1 if the message the decision produced was opened / clicked (the decision's
       ``message_id``, else its ``sent`` row: the same user, channel and campaign's
       decisions and ``sent`` / ``suppressed`` rows matched first in, first out, so a
       suppressed decision has no message); 0 for ``none`` decisions.
   ``visit`` / ``purchase``
       1 if the user visited / purchased strictly after the decision, the decision being
       the user's latest one before that event (last touch).
   ``revenue``
       purchase value attributed by last touch, minus the cost (``value`` on the ``sent``
       row) of the decision's message; currency units.
3. **Contexts** — a :class:`~omnisim.policies.base.Context` per round rebuilt from the log and
   an optional users table (:func:`log_contexts`): traits are the users table's observable
   columns (for a Hillstrom-style log the whole table), consent from ``consent_<channel>``
   columns (else every channel decided on in the log), timezone from ``timezone`` (else
   UTC), history = the user's earlier log rows within :data:`HISTORY_DAYS`, trigger = the
   behaviour event logged just before the decision at the same time (else the campaign).
4. **action_dist** — the evaluation policy's probability of each action in each round
   (:func:`policy_probabilities`): its optional ``action_probabilities(ctx)``, else one call
   of ``decide`` with a fixed generator putting probability 1 on the action it takes (the
   policy must then be deterministic, or ``mc_draws`` > 0 estimates its distribution by
   sampling). A policy that returns no decision counts as ``none``. ``action_map`` (e.g.
   :func:`channel_of_action`) renames its actions to the log's. Actions are indexed over the
   union of logged actions and the policy's.

:func:`evaluate_policy` runs the estimators on these arrays and returns one row per
estimator. The per-round approximation: each decision is a contextual-bandit round, so the
estimate is the evaluation policy's mean reward *per decision* on the logged contexts.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Literal, Sequence

import numpy as np
import pandas as pd

from omnisim.errors import OmnisimError
from omnisim.policies.base import (
    BEHAVIOUR_TRIGGERS,
    CHANNELS,
    NO_ACTION,
    Context,
    Decision,
    HistoryEvent,
    Policy,
    Trigger,
)

__all__ = [
    "REWARDS", "HISTORY_DAYS", "OPELogError", "LogFeedback", "FixedAction", "decision_rewards",
    "log_contexts", "policy_probabilities", "log_feedback", "evaluate_policy", "train_uplift",
    "channel_of_action",
]

Reward = Literal["open", "click", "visit", "purchase", "revenue"]
REWARDS: tuple[str, ...] = ("open", "click", "visit", "purchase", "revenue")
#: Days of history given to the evaluation policy (as the simulator does).
HISTORY_DAYS = 35
#: Default attribution window: two weeks (Hillstrom's outcome window), in hours.
DEFAULT_WINDOW_H = 14 * 24.0
_TRIGGER_EVENTS = tuple(k for k in BEHAVIOUR_TRIGGERS if k != "inactivity")  # logged ones
#: Users-table columns the simulator keeps hidden from policies (never used as traits).
_HIDDEN = ("activity", "visit_rate_per_day", "purchase_propensity", "basket_median", "price_sensitivity",
           "fatigue_tolerance", "email_check_median_h", "is_new", "signup_offset_h", "last_visit_days_ago")


class OPELogError(OmnisimError, ValueError):
    """A log, users table or policy that cannot be evaluated off-policy (message says why)."""


@dataclass(frozen=True)
class LogFeedback:
    """obp-style arrays built from a log (``n`` rounds, ``A`` actions, one slot).

    ``reward``, ``action`` (index into ``actions``), ``pscore``: ``(n,)``; ``action_dist``:
    ``(n, A, 1)``; ``context``: ``(n, d)`` features for a reward model; ``decisions``: the
    ``decided`` rows used, in round order, with their ``reward``; ``contexts``: the rebuilt
    :class:`Context` per round; ``unsupported_share``: mean evaluation probability on
    actions the log never took (that mass cannot be evaluated and counts as reward 0).
    """

    reward: np.ndarray
    action: np.ndarray
    pscore: np.ndarray
    action_dist: np.ndarray
    context: np.ndarray
    actions: tuple[str, ...]
    decisions: pd.DataFrame
    contexts: list[Context]
    unsupported_share: float

    def arrays(self) -> dict[str, Any]:
        """Keyword arguments for :func:`omnisim.policies.ope.estimate`."""
        return {"reward": self.reward, "action": self.action, "pscore": self.pscore,
                "action_dist": self.action_dist}


@dataclass(frozen=True)
class FixedAction:
    """Always take ``action`` on ``channel`` (e.g. "always the men's e-mail"), whenever the
    channel is reachable, else ``none``; on every trigger kind, or only on ``triggers``.
    Deterministic; the reference policy of A/B arms."""

    action: str
    channel: str = "email"
    triggers: tuple[str, ...] | None = None
    version: int = 1

    @property
    def name(self) -> str:
        return f"always_{self.action}@{self.version}"

    def decide(self, ctx: Context, rng: np.random.Generator) -> list[Decision]:
        if self.triggers is not None and ctx.trigger.kind not in self.triggers:
            return []
        if self.channel != NO_ACTION and not ctx.can_message(self.channel):
            return [Decision(NO_ACTION, NO_ACTION, 1.0, self.name, campaign=ctx.trigger.kind)]
        return [Decision(self.action, self.channel, 1.0, self.name, campaign=ctx.trigger.kind)]

    def action_probabilities(self, ctx: Context) -> dict[str, float]:
        decisions = self.decide(ctx, np.random.default_rng(0))
        return {decisions[0].action if decisions else NO_ACTION: 1.0}


# --------------------------------------------------------------------------- rewards


def _check_unique_index(log: pd.DataFrame) -> None:
    """Refuse a log whose index repeats a label: rows are matched by index label."""
    dup = log.index.duplicated()
    if dup.any():
        raise OPELogError(f"log: index label {log.index[np.flatnonzero(dup)[0]]} appears more than once "
                          f"({int(dup.sum())} repeated label(s), e.g. from pd.concat of several logs); "
                          f"expected a unique index: pass log.reset_index(drop=True)")


def _decided(log: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("ts", "user_id", "event", "action", "propensity") if c not in log.columns]
    if missing:
        raise OPELogError(f"log: missing column(s) {missing}; off-policy evaluation needs an engagement "
                          f"log with decided rows carrying action and propensity")
    _check_unique_index(log)
    dec = log.loc[(log["event"] == "decided") & log["action"].notna()].copy()
    if dec.empty:
        raise OPELogError("log: no 'decided' rows with an action; off-policy evaluation needs the "
                          "logging policy's decisions (DESIGN.md invariant 3)")
    p = pd.to_numeric(dec["propensity"], errors="coerce")
    bad = ~((p > 0) & (p <= 1))
    if bad.any():
        first = dec.index[np.flatnonzero(bad.to_numpy())[0]]
        raise OPELogError(f"log: propensity must be in (0, 1] on every decided row; row {first} has "
                          f"{log.loc[first, 'propensity']!r} ({int(bad.sum())} row(s) affected)")
    dec["propensity"] = p.astype(float)
    for col in ("channel", "campaign", "message_id"):
        if col not in dec:
            dec[col] = pd.NA
    dec["_row"] = dec.index
    return dec


def _link_messages(log: pd.DataFrame, dec: pd.DataFrame, window: pd.Timedelta) -> pd.Series:
    """message_id of each decision's send: its own, else matched by user, channel and campaign.

    A message decision without its own id ends in a ``sent`` or a ``suppressed`` row of the
    same user, channel and campaign (``deferred`` rows come in between). Per such key,
    decisions are matched first in, first out with those end rows within ``window`` after
    them; a decision that ends ``suppressed`` has no message, so it never takes the send of
    a later decision (e.g. one admitted once a cap had cleared).
    """
    own = dec["message_id"].astype("string")
    todo = own.isna() & (dec["action"] != NO_ACTION)
    ev = log["event"]
    ends = log.loc[(ev == "sent") | ((ev == "suppressed") & log["channel"].isin(CHANNELS)),
                   ["ts", "user_id", "event", "channel", "campaign", "message_id"]]
    ends = ends.loc[~ends["message_id"].astype("string").isin(own.dropna())]  # sends owned already
    if not (ends["event"] == "sent").any() or not todo.any():
        return own
    decs = dec.loc[todo]
    cols = ["user_id", "channel", "campaign"]
    both = pd.concat([decs[cols], ends[cols]]).astype(str)  # a missing campaign is one value
    k = both.groupby(cols, sort=False).ngroup().to_numpy()
    left = pd.DataFrame({"ts": decs["ts"].array, "k": k[: len(decs)], "is_end": 0, "end": 0,
                         "row": decs["_row"].to_numpy(), "mid": pd.NA})
    right = pd.DataFrame({"ts": ends["ts"].array, "k": k[len(decs):], "is_end": 1,
                          "end": np.where(ends["event"] == "sent", 2, 1),   # 2 sent, 1 suppressed
                          "row": None, "mid": ends["message_id"].astype("string").to_numpy()})
    linked = _fifo_links(left, right, window)
    out = own.copy()
    out.loc[todo] = pd.Series(linked, dtype="string").reindex(decs["_row"]).to_numpy()
    return out


def _fifo_links(left: pd.DataFrame, right: pd.DataFrame, window: pd.Timedelta) -> dict[Any, Any]:
    """``{decision row: message id}``: per key ``k``, decisions (``left``) matched first in,
    first out with end rows (``right``: ``end`` 2 sent, 1 suppressed) within ``window``.

    Vectorised for the keys where the i-th end row follows the i-th decision within
    ``window`` (then first in, first out is exactly that pairing: no decision expires); the
    other keys go through :func:`_fifo_walk`."""
    left = left.sort_values("ts", kind="stable")
    right = right.sort_values("ts", kind="stable")
    left = left.assign(rank=left.groupby("k", sort=False).cumcount())
    right = right.assign(rank=right.groupby("k", sort=False).cumcount())
    m = left[["k", "rank", "ts", "row"]].merge(
        right[["k", "rank", "ts", "end", "mid"]], on=["k", "rank"], how="left", suffixes=("", "_end"))
    paired = m["ts_end"].notna()
    bad = paired & ((m["ts_end"] < m["ts"]) | (m["ts_end"] - m["ts"] > window))
    bad_keys = set(m.loc[bad, "k"])
    ok = paired & (m["end"] == 2) & ~m["k"].isin(bad_keys)
    linked = dict(zip(m.loc[ok, "row"], m.loc[ok, "mid"]))
    if bad_keys:
        linked.update(_fifo_walk(left[left["k"].isin(bad_keys)], right[right["k"].isin(bad_keys)],
                                 window))
    return linked


def _fifo_walk(left: pd.DataFrame, right: pd.DataFrame, window: pd.Timedelta) -> dict[Any, Any]:
    """:func:`_fifo_links` one row at a time: in time order, decisions first at a tie, end
    rows of one instant in log order; a decision with no end row within ``window`` expires."""
    both = pd.concat([left, right]).sort_values(["ts", "is_end"], kind="stable")
    pending: dict[Any, deque[tuple[pd.Timestamp, Any]]] = {}
    linked: dict[Any, Any] = {}
    for ts, k, end, row, mid in both[["ts", "k", "end", "row", "mid"]].itertuples(index=False, name=None):
        queue = pending.setdefault(k, deque())
        if end == 0:
            queue.append((ts, row))
            continue
        while queue and ts - queue[0][0] > window:   # ended nowhere within the window
            queue.popleft()
        if queue:
            _, first = queue.popleft()
            if end == 2:
                linked[first] = mid
    return linked


def _last_touch(log: pd.DataFrame, dec: pd.DataFrame, event: str, window: pd.Timedelta) -> pd.DataFrame:
    """Rows of ``event`` with the ``_row`` of the user's latest decision strictly before them."""
    ev = log.loc[log["event"] == event, ["ts", "user_id", "value"]].copy()
    ev["user_id"] = ev["user_id"].astype(str)
    if ev.empty:
        return ev.assign(_row=pd.Series(dtype=float))
    d = dec[["ts", "user_id", "_row"]].assign(user_id=dec["user_id"].astype(str))
    return pd.merge_asof(ev.sort_values("ts", kind="stable"), d.sort_values("ts", kind="stable"), on="ts",
                         by="user_id", direction="backward", tolerance=window, allow_exact_matches=False)


def decision_rewards(log: pd.DataFrame, reward: Reward = "click", *,
                     window_h: float = DEFAULT_WINDOW_H) -> pd.DataFrame:
    """The log's ``decided`` rows (with an action) plus ``message_id`` and ``reward`` columns.

    ``reward`` as in the module docstring; ``window_h`` (hours, inclusive) bounds how long
    after a decision an outcome still counts. Rows keep the log's order (stable by ``ts``).
    """
    if reward not in REWARDS:
        raise OPELogError(f"reward must be one of {', '.join(REWARDS)}, got {reward!r}")
    if not window_h > 0:
        raise OPELogError(f"window_h must be > 0 hours, got {window_h!r}")
    log = log.sort_values("ts", kind="stable")
    window = pd.Timedelta(hours=float(window_h))
    dec = _decided(log)
    dec["message_id"] = _link_messages(log, dec, window)
    r = pd.Series(0.0, index=dec.index)
    if reward in ("open", "click"):
        ev = log.loc[log["event"] == ("opened" if reward == "open" else "clicked"), ["ts", "message_id"]]
        ev = ev.dropna(subset=["message_id"])
        first = ev.groupby(ev["message_id"].astype(str))["ts"].min()
        mids = dec["message_id"].astype("string")
        known = mids.notna() & mids.isin(first.index)
        if known.any():
            hit_ts = pd.Series(first.reindex(mids[known].astype(str)).to_numpy(), index=dec.index[known.to_numpy()])
            r[hit_ts.index[(hit_ts - dec.loc[hit_ts.index, "ts"]) <= window]] = 1.0
    else:
        outcome = "visit" if reward == "visit" else "purchase"
        m = _last_touch(log, dec, outcome, window).dropna(subset=["_row"])
        if reward == "revenue":
            r = r.add(m.groupby("_row")["value"].sum(min_count=1).fillna(0.0), fill_value=0.0).reindex(dec.index)
            sent = log.loc[log["event"] == "sent", ["message_id", "value"]].dropna(subset=["message_id"])
            cost = dec["message_id"].astype("string").map(
                sent.groupby(sent["message_id"].astype(str))["value"].sum()).fillna(0.0)
            r = r - cost.astype(float)
        else:
            r[r.index.isin(m["_row"].astype(dec.index.dtype))] = 1.0
    dec["reward"] = r.astype(float).to_numpy()
    return dec.drop(columns="_row")


# --------------------------------------------------------------------------- contexts


def _user_frame(users: pd.DataFrame | None) -> pd.DataFrame | None:
    if users is None:
        return None
    if "user_id" not in users.columns:
        raise OPELogError(f"users table: missing column 'user_id'; it has {list(users.columns)}")
    dup = users["user_id"].astype(str).duplicated()
    if dup.any():
        raise OPELogError(f"users table: user_id {users['user_id'].iloc[np.flatnonzero(dup)[0]]!r} appears "
                          f"more than once; expected one row per user")
    return users.assign(user_id=users["user_id"].astype(str)).set_index("user_id", drop=False)


def _trait_columns(users: pd.DataFrame) -> list[str]:
    skip = {"user_id", "timezone", *_HIDDEN}
    return [c for c in users.columns if c not in skip and not c.startswith(("consent_", "reach_", "affinity_"))]


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else (None if v is pd.NA else v)


def log_contexts(log: pd.DataFrame, decisions: pd.DataFrame, users: pd.DataFrame | None = None, *,
                 traits: Sequence[str] | None = None) -> list[Context]:
    """One :class:`Context` per row of ``decisions`` (rows of ``log``), rebuilt as the
    module docstring says. ``traits`` overrides the users-table columns used as traits."""
    _check_unique_index(log)
    u = _user_frame(users)
    if u is not None:
        unknown = sorted(set(decisions["user_id"].astype(str)) - set(u.index))
        if unknown:
            raise OPELogError(f"users table: no row for user_id {unknown[0]!r} ({len(unknown)} user(s) of the "
                              f"log missing); give the users table of this log")
    cols = list(traits) if traits is not None else (_trait_columns(u) if u is not None else [])
    logged_channels = {str(c) for c in decisions["channel"].dropna()} & set(CHANNELS)
    consent_cols = {ch: f"consent_{ch}" for ch in CHANNELS}
    has_consent = u is not None and any(c in u.columns for c in consent_cols.values())

    log = log.sort_values("ts", kind="stable")
    wanted = set(decisions["user_id"].astype(str))
    sub = log.loc[log["user_id"].astype(str).isin(wanted)]
    order = pd.Series(np.arange(len(log)), index=log.index)  # log index -> chronological position
    sub_pos = order[sub.index].to_numpy()
    per_user: dict[str, tuple[list[int], list[HistoryEvent]]] = {}
    get = lambda name: (sub[name].astype(object).where(sub[name].notna(), None).tolist()  # noqa: E731
                        if name in sub.columns else [None] * len(sub))
    cols_h = zip(sub["user_id"].astype(str).tolist(), sub_pos.tolist(), sub["ts"].dt.to_pydatetime(),
                 sub["event"].astype(str).tolist(), get("channel"), get("message_id"), get("campaign"),
                 get("tag"), get("value"), get("step"))
    for uid, p, ts, event, channel, mid, campaign, tag, value, step in cols_h:
        positions, events = per_user.setdefault(uid, ([], []))
        positions.append(p)
        events.append(HistoryEvent(ts, event, str(channel or "none"), mid, campaign, tag,
                                   None if value is None else float(value),
                                   None if step is None else str(step)))
    if u is not None:
        recs = u.loc[sorted(wanted)]
        trait_of = dict(zip(recs.index, ({c: _plain(v) for c, v in r.items()}
                                         for r in recs[cols].to_dict("records"))))
        tz_of = dict(zip(recs.index, recs["timezone"].astype(str))) if "timezone" in u.columns else {}
        if has_consent:
            flags = {ch: (recs[c].astype(bool).tolist() if c in u.columns else [False] * len(recs))
                     for ch, c in consent_cols.items()}
            consent_of = {uid: {ch: flags[ch][i] for ch in CHANNELS} for i, uid in enumerate(recs.index)}
        else:
            consent_of = {}
    else:
        trait_of, tz_of, consent_of = {}, {}, {}
    default_consent = {ch: ch in logged_channels for ch in CHANNELS}
    window = timedelta(days=HISTORY_DAYS)
    out = []
    dec_pos = order[decisions.index].tolist()
    for p, uid, now, campaign in zip(dec_pos, decisions["user_id"].astype(str).tolist(),
                                     decisions["ts"].dt.to_pydatetime(), decisions["campaign"].tolist()):
        positions, events = per_user[uid]
        k = bisect_left(positions, p)  # rows logged before this decision
        j = k
        while j > 0 and events[j - 1].ts >= now - window:
            j -= 1
        history = tuple(events[j:k])
        kind = next((h.event for h in reversed(history) if h.ts == now and h.event in _TRIGGER_EVENTS), None)
        if kind is None:
            kind = str(campaign) if campaign is not None and not pd.isna(campaign) else "decision"
        out.append(Context(user_id=uid, now=now, timezone=tz_of.get(uid, "UTC"), traits=trait_of.get(uid, {}),
                           consent=consent_of.get(uid, default_consent), history=history,
                           trigger=Trigger(kind=kind, ts=now)))
    return out


# --------------------------------------------------------------------------- probabilities


def policy_probabilities(policy: Policy, ctx: Context, *, seed: int = 0, mc_draws: int = 0) -> dict[str, float]:
    """The evaluation policy's ``{action: probability}`` in ``ctx`` (sums to 1).

    Uses ``policy.action_probabilities(ctx)`` when the policy has it (and it does not raise
    ``NotImplementedError``, which a wrapper such as ``SendTimePolicy`` raises when its inner
    policy's distribution is unknown); else calls ``decide``
    once with ``numpy.random.default_rng(seed)`` and puts probability 1 on its action (no
    decision counts as ``none``). A random decision (propensity < 1) then raises
    :class:`OPELogError`, unless ``mc_draws > 0``: the distribution is then estimated from
    that many ``decide`` calls (seeds ``[seed, 0..mc_draws-1]``) — unbiased, adds variance.
    Several decisions at once always raise.
    """
    probs = getattr(policy, "action_probabilities", None)
    known = None
    if callable(probs):
        try:
            known = probs(ctx)
        except NotImplementedError:
            known = None
    if known is not None:
        out = {str(a): float(p) for a, p in known.items() if p > 0}
        total = sum(out.values())
        if not out or abs(total - 1) > 1e-6:
            raise OPELogError(f"{policy.name}: action_probabilities() must sum to 1 over actions, "
                              f"got {total:.6g} for user {ctx.user_id} at {ctx.now:%Y-%m-%d %H:%M}Z")
        return out
    decisions = policy.decide(ctx, np.random.default_rng(seed))
    if not decisions:
        return {NO_ACTION: 1.0}
    if len(decisions) > 1:
        raise OPELogError(f"{policy.name}: decided {len(decisions)} actions at once for user {ctx.user_id}; "
                          f"off-policy evaluation needs one action per decision")
    d = decisions[0]
    if d.propensity < 1 - 1e-9 and mc_draws > 0:
        counts: dict[str, float] = {}
        for k in range(mc_draws):
            ds = policy.decide(ctx, np.random.default_rng([seed, k]))
            a = ds[0].action if ds else NO_ACTION
            counts[a] = counts.get(a, 0.0) + 1.0 / mc_draws
        return counts
    if d.propensity < 1 - 1e-9:
        raise OPELogError(f"{policy.name}: chose {d.action!r} at random (propensity {d.propensity:.3g}) and "
                          f"has no action_probabilities(ctx); add that method to evaluate it off-policy, or "
                          f"estimate its distribution by sampling (mc_draws > 0)")
    return {d.action: 1.0}


def _uplift_batch(policy: Any, contexts: Sequence[Context]) -> list[dict[str, float]] | None:
    """Vectorised probabilities for an :class:`~omnisim.policies.uplift.UpliftPolicy` when
    every context can be messaged on all its channels and it reacts to every trigger."""
    from omnisim.policies.uplift import UpliftPolicy

    if not isinstance(policy, UpliftPolicy) or policy.triggers is not None:
        return None
    chans = set(policy._channels())
    if not all(all(c.can_message(ch) for ch in chans) for c in contexts):
        return None
    frame = pd.DataFrame([dict(c.traits) for c in contexts])
    dist = policy.action_dist(frame)[:, :, 0]
    names = [NO_ACTION, *policy.actions]
    return [{names[j]: float(p) for j, p in enumerate(row) if p > 0} for row in dist]


def _features(contexts: Sequence[Context]) -> np.ndarray:
    """Reward-model features per round: traits (one-hot), consent, trigger kind, and the
    number of messages sent in the last 7 days. ``(n, d)`` float."""
    from omnisim.policies.uplift import TraitEncoder

    rows = []
    for c in contexts:
        week = c.now - timedelta(days=7)
        row = {f"trait:{k}": v for k, v in c.traits.items() if isinstance(v, (int, float, str, bool))}
        row.update({f"consent:{ch}": float(c.can_message(ch)) for ch in CHANNELS})
        row["trigger"] = c.trigger.kind
        row["sent_7d"] = float(sum(1 for h in c.history if h.event == "sent" and h.ts >= week))
        rows.append(row)
    frame = pd.DataFrame(rows)
    for col in frame.columns:
        if frame[col].dtype == bool:
            frame[col] = frame[col].astype(float)
    return TraitEncoder().fit_transform(frame.fillna(0))


# --------------------------------------------------------------------------- entry points


def channel_of_action(action: str) -> str:
    """``"email@09h"`` → ``"email"``: an ``action_map`` that evaluates only the channel choice
    of a send-time policy on a log whose actions are channels."""
    return action.split("@", 1)[0]



def log_feedback(log: pd.DataFrame, policy: Policy, users: pd.DataFrame | None = None, *,
                 reward: Reward = "click", window_h: float = DEFAULT_WINDOW_H,
                 traits: Sequence[str] | None = None, mc_draws: int = 0,
                 action_map: Callable[[str], str] | None = None) -> LogFeedback:
    """obp-style arrays to evaluate ``policy`` on ``log`` (see :class:`LogFeedback`;
    ``mc_draws`` as in :func:`policy_probabilities`). ``action_map`` renames the evaluation
    policy's actions before matching them with logged ones (probabilities of actions mapped
    to one name add up), e.g. :func:`channel_of_action`."""
    dec = decision_rewards(log, reward, window_h=window_h)
    contexts = log_contexts(log, dec, users, traits=traits)
    probs = _uplift_batch(policy, contexts) or [policy_probabilities(policy, c, mc_draws=mc_draws)
                                                for c in contexts]
    if action_map is not None:
        mapped = []
        for p in probs:
            m: dict[str, float] = {}
            for a, v in p.items():
                m[action_map(a)] = m.get(action_map(a), 0.0) + v
            mapped.append(m)
        probs = mapped
    logged = list(dict.fromkeys(dec["action"].astype(str)))
    extra = sorted({a for p in probs for a in p} - set(logged))
    actions = tuple(logged + extra)
    index = {a: i for i, a in enumerate(actions)}
    dist = np.zeros((len(dec), len(actions), 1))
    for i, p in enumerate(probs):
        for a, v in p.items():
            dist[i, index[a], 0] = v
    unsupported = float(dist[:, len(logged):, 0].sum(axis=1).mean()) if extra else 0.0
    return LogFeedback(
        reward=dec["reward"].to_numpy(float), action=dec["action"].astype(str).map(index).to_numpy(np.int64),
        pscore=dec["propensity"].to_numpy(float), action_dist=dist, context=_features(contexts),
        actions=actions, decisions=dec.reset_index(drop=True), contexts=contexts,
        unsupported_share=unsupported)


def evaluate_policy(
    log: pd.DataFrame, policy: Policy, users: pd.DataFrame | None = None, *,
    estimators: Sequence[str] = ("ips", "snips", "dr"), reward: Reward = "click", alpha: float = 0.05,
    window_h: float = DEFAULT_WINDOW_H, method: Literal["bootstrap", "normal"] = "bootstrap",
    n_bootstrap: int = 1000, seed: int = 0, mc_draws: int = 0, action_map: Callable[[str], str] | None = None,
    feedback: LogFeedback | None = None,
) -> pd.DataFrame:
    """The value of ``policy`` estimated from ``log``: one row per estimator.

    Columns: ``estimator``, ``value`` (mean reward per decision, in the reward's unit),
    ``ci_low``, ``ci_high`` (two-sided ``1 - alpha``), ``n`` (rounds), ``reward``,
    ``policy``, ``unsupported_share``. The dm/dr kinds use a cross-fitted reward model
    (:func:`omnisim.policies.ope.fit_reward_model`) on the context features. Pass
    ``feedback`` (from :func:`log_feedback`) to reuse arrays already built; ``mc_draws`` and
    ``action_map`` as in :func:`log_feedback`.

    SNIPS and DR assume the logging policy could take, in every logged context, each action
    the evaluation policy takes there; ``unsupported_share`` only catches actions never
    logged at all (e.g. a policy answering ``none`` where the logger always messaged is
    unsupported there, and SNIPS then ignores those rounds).
    """
    from omnisim.policies.ope import ESTIMATORS, estimate, fit_reward_model

    unknown = [e for e in estimators if e not in ESTIMATORS]
    if unknown:
        raise OPELogError(f"unknown estimator(s) {unknown}; expected some of {', '.join(ESTIMATORS)}")
    fb = feedback if feedback is not None else log_feedback(log, policy, users, reward=reward, window_h=window_h,
                                                            mc_draws=mc_draws, action_map=action_map)
    q = None
    if any(ESTIMATORS[e].needs_reward_model for e in estimators):
        q = fit_reward_model(fb.context, fb.action, fb.reward, n_actions=len(fb.actions), random_state=seed)
    rows = []
    for i, name in enumerate(estimators):
        res = estimate(name, **fb.arrays(), estimated_rewards=q, alpha=alpha, method=method,
                       n_bootstrap=n_bootstrap, rng=np.random.default_rng([seed, i]))
        rows.append({"estimator": name, "value": res.value, "ci_low": res.ci_low, "ci_high": res.ci_high,
                     "n": res.n, "reward": reward, "policy": policy.name,
                     "unsupported_share": fb.unsupported_share})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- training


def train_uplift(
    log: pd.DataFrame, users: pd.DataFrame | None, *, reward: Reward = "visit",
    window_h: float = DEFAULT_WINDOW_H, top_k_pct: float = 20.0, learner: Literal["t", "x"] = "t",
    model: Literal["logistic", "ridge", "hgb"] = "logistic", epsilon: float = 0.0, name: str = "uplift@1",
    control: str = NO_ACTION, holdout_share: float = 0.3, seed: int = 0,
) -> tuple[Any, dict[str, Any]]:
    """Fit an :class:`~omnisim.policies.uplift.UpliftPolicy` on a randomised log.

    Treatment = each decision's logged action (``control`` = no message), outcome = its
    ``reward`` (:func:`decision_rewards`), features = the users table's traits. The uplift
    is scored on a random ``holdout_share`` of decisions (model fitted on the rest):
    ``auuc_<action>`` per treatment (:func:`omnisim.policies.uplift.auuc`); the returned
    policy is then refitted on every decision. Returns ``(policy, metrics)``.
    """
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
    )
    from sklearn.linear_model import LogisticRegression, Ridge

    from omnisim.policies.uplift import TLearner, UpliftPolicy, XLearner, auuc

    if users is None:
        raise OPELogError("uplift training needs the users table (--users): its traits are the features")
    if learner not in ("t", "x") or model not in ("logistic", "ridge", "hgb"):
        raise OPELogError(f"learner must be 't' or 'x' and model one of logistic, ridge, hgb; got "
                          f"learner={learner!r}, model={model!r}")
    if not 0 < holdout_share < 1:
        raise OPELogError(f"holdout_share must be in (0, 1), got {holdout_share!r}")
    dec = decision_rewards(log, reward, window_h=window_h)
    u = _user_frame(users)
    missing = sorted(set(dec["user_id"].astype(str)) - set(u.index))
    if missing:
        raise OPELogError(f"users table: no row for user_id {missing[0]!r} ({len(missing)} user(s) missing)")
    cols = _trait_columns(u)
    X = u.loc[dec["user_id"].astype(str), cols].reset_index(drop=True)
    t = dec["action"].astype(str).to_numpy(dtype=object)
    y = dec["reward"].to_numpy(float)
    treated = sorted(set(t) - {control})
    if control not in set(t) or not treated:
        raise OPELogError(f"the log's actions {sorted(set(t))} need the control {control!r} and at least one "
                          f"treatment to learn uplift")
    chan = dec.assign(channel=dec["channel"].astype(str)).groupby(dec["action"].astype(str))["channel"]
    channels = [chan.agg(lambda c: c.mode().iat[0])[a] for a in treated]
    binary = set(np.unique(y)) <= {0.0, 1.0}
    logistic = LogisticRegression(solver="newton-cholesky", max_iter=200)
    base = {"logistic": logistic if binary else Ridge(), "ridge": Ridge(),
            "hgb": (HistGradientBoostingClassifier if binary else HistGradientBoostingRegressor)(
                max_iter=100, random_state=seed)}[model]
    wrap = TLearner(base, control=control) if learner == "t" else XLearner(base, control=control)

    def make() -> UpliftPolicy:
        return UpliftPolicy(wrap, actions=tuple(treated), top_k_pct=top_k_pct, feature_columns=cols,
                            name=name, channels=tuple(channels), epsilon=epsilon)

    rng = np.random.default_rng(seed)
    test = rng.random(len(y)) < holdout_share
    scored = make().fit(X[~test], t[~test], y[~test])
    up = scored.model_.predict_uplift(scored.encoder_.transform(X[test]))
    metrics: dict[str, Any] = {"train_rows": int(len(y)), "holdout_rows": int(test.sum()), "reward": reward}
    for j, a in enumerate(treated):
        keep = np.isin(t[test], [control, a])
        metrics[f"auuc_{a}"] = auuc(up[keep, j], t[test][keep] == a, y[test][keep])
    return make().fit(X, t, y), metrics
