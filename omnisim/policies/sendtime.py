"""Send-time optimisation: each user's best local hour (and weekday) per channel.

:class:`SendTimeOptimizer` (a scikit-learn-style estimator) learns from an engagement log and
a users table (``user_id``, ``timezone``, optional ``segment``) the probability that a message
sent at local hour ``h`` on channel ``c`` is *engaged with* (opened, or clicked with
``target="click"``). Estimates are Beta posteriors shrunk along the fallback chain

    user → segment → population → configured default hour

Each level's posterior mean is the next level's prior mean, with ``strength`` pseudo-sends
(``user_strength``, ``segment_strength``, ``population_strength``)::

    mean_L[h] = (k_L[h] + m_L · mean_parent[h]) / (n_L[h] + m_L)
    Beta(alpha = k_L[h] + m_L · mean_parent[h], beta = n_L[h] - k_L[h] + m_L · (1 - mean_parent[h]))

and the population's parent is the channel's overall rate, flat over hours. The best hour is
the argmax of the posterior mean; ties (no data at all) go to the hour circularly closest to
``default_hour`` — so an unknown user on an unseen channel gets the configured default.

:class:`SendTimePolicy` wraps any policy: each non-exempt message decision is moved to the
user's best local hour (the next occurrence, :func:`~omnisim.policies.base.next_local_hour`)
and logged as ``email@09h``. With probability ``explore`` the hour is uniform over 0-23
instead, so later fits see every hour; the logged propensity is the inner decision's times

    P(hour) = (1 - explore) · 1[hour = best] + explore / 24.

:meth:`SendTimePolicy.action_probabilities` gives the same numbers for every action
(``email@HHh`` for all 24 hours) without drawing, for off-policy evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from omnisim.policies.base import CHANNELS, Context, Decision, Policy, next_local_hour

__all__ = [
    "SendTimeOptimizer",
    "SendTimePolicy",
    "hour_propensity",
    "learned_policy_class",
    "load_nested",
    "local_send_slots",
    "nested_artifact",
]

HOURS = 24
WEEKDAYS = 7
TARGETS = {"open": ("opened", "clicked"), "click": ("clicked",)}


def hour_propensity(hour: int, best: int, explore: float) -> float:
    """P(hour) under ``explore``-uniform exploration around ``best``: (1-e)·1[h=best] + e/24."""
    return (1.0 - explore) * float(hour == best) + explore / HOURS


def local_send_slots(log: pd.DataFrame, users: pd.DataFrame,
                     target: str = "open") -> pd.DataFrame:
    """One row per ``sent`` message with its local hour/weekday and whether it was engaged.

    Returns columns ``user_id``, ``channel``, ``segment``, ``hour`` (0-23), ``weekday``
    (0 = Monday), ``success`` (bool: a ``TARGETS[target]`` event on the message id).
    Sends of users missing from ``users`` are dropped.
    """
    if target not in TARGETS:
        raise ValueError(f"target: expected one of {', '.join(TARGETS)}, got {target!r}")
    for col in ("user_id", "timezone"):
        if col not in users.columns:
            raise ValueError(f"users table: missing column {col!r} (expected user_id, timezone "
                             "and optionally segment)")
    ev = log["event"].astype(str)
    sent = log.loc[ev == "sent", ["ts", "user_id", "channel", "message_id"]]
    hits = set(log.loc[ev.isin(TARGETS[target]), "message_id"].dropna().astype(str))
    u = users.assign(user_id=users["user_id"].astype(str)).set_index("user_id")
    seg = u["segment"].astype(str) if "segment" in u.columns else pd.Series("all", index=u.index)
    uid = sent["user_id"].astype(str)
    tz = uid.map(u["timezone"].astype(str))
    keep = tz.notna()
    sent, uid, tz = sent[keep], uid[keep], tz[keep]
    hour = pd.Series(0, index=sent.index, dtype=int)
    wday = pd.Series(0, index=sent.index, dtype=int)
    for name, idx in tz.groupby(tz).groups.items():
        local = sent.loc[idx, "ts"].dt.tz_convert(str(name))
        hour.loc[idx] = local.dt.hour.to_numpy()
        wday.loc[idx] = local.dt.day_of_week.to_numpy()
    return pd.DataFrame({
        "user_id": uid.to_numpy(), "channel": sent["channel"].astype(str).to_numpy(),
        "segment": uid.map(seg).to_numpy(), "hour": hour.to_numpy(), "weekday": wday.to_numpy(),
        "success": sent["message_id"].astype(str).isin(hits).to_numpy(),
    })


def _counts(slots: pd.DataFrame, keys: list[str], key_values: Sequence[Any], channels: Sequence[str],
            bucket: str, n_buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Successes and sends per (key, channel, bucket): arrays of shape (len(key_values), C, B)."""
    k = np.zeros((max(len(key_values), 1), len(channels), n_buckets))
    n = np.zeros_like(k)
    if slots.empty:
        return k[: len(key_values)], n[: len(key_values)]
    key_idx = {v: i for i, v in enumerate(key_values)}
    ch_idx = {c: i for i, c in enumerate(channels)}
    ki = slots[keys[0]].map(key_idx).to_numpy() if keys else np.zeros(len(slots), dtype=int)
    ci = slots["channel"].map(ch_idx)
    ok = ci.notna().to_numpy() & ~pd.isna(ki)
    ki, ci = ki[ok].astype(int), ci[ok].to_numpy().astype(int)
    bi = slots[bucket].to_numpy()[ok].astype(int)
    np.add.at(n, (ki, ci, bi), 1.0)
    np.add.at(k, (ki, ci, bi), slots["success"].to_numpy()[ok].astype(float))
    return k[: len(key_values)], n[: len(key_values)]


def check_params(est: Any, positive: Sequence[str], channels: Sequence[str]) -> None:
    """Raise ``ValueError`` naming the first of ``positive`` parameters of ``est`` that is not
    a finite positive number, or channels outside ``CHANNELS``."""
    for name in positive:
        v = getattr(est, name)
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"{name}: expected a positive number, got {v!r}")
    bad = [c for c in channels if c not in CHANNELS]
    if bad or not channels:
        raise ValueError(f"channels: expected a non-empty subset of {', '.join(CHANNELS)}, "
                         f"got {tuple(channels)!r}")


def _shrink(k: np.ndarray, n: np.ndarray, prior_mean: np.ndarray, strength: float) -> np.ndarray:
    """Posterior mean of a Beta with ``strength`` pseudo-observations at ``prior_mean``."""
    return (k + strength * prior_mean) / (n + strength)


class SendTimeOptimizer(BaseEstimator):
    """Per-user best local send hour (and weekday) per channel, with Beta shrinkage.

    Parameters
    ----------
    channels : tuple of str
        Channels modelled.
    target : {"open", "click"}
        What counts as engagement with a send (``open``: an open or a click).
    default_hour : float
        Local hour returned when there is no data anywhere (end of the fallback chain).
    user_strength, segment_strength, population_strength : float
        Pseudo-sends of the prior at each level (larger = more shrinkage to the parent).

    Attributes (after ``fit``)
    --------------------------
    channels_ : list[str]
    base_rate_ : ndarray (C,)           overall engagement rate per channel
    pop_k_, pop_n_ : ndarray (C, 24)     population successes / sends by local hour
    segments_ : list[str]; seg_k_, seg_n_ : ndarray (S, C, 24)
    user_ids_ : ndarray (U,) of str; user_segment_ : ndarray (U,) of str
    user_k_, user_n_ : ndarray (U, C, 24)
    pop_wk_, pop_wn_ : ndarray (C, 7)    population by local weekday (0 = Monday)
    n_sends_ : int
    """

    def __init__(self, channels: tuple[str, ...] = CHANNELS, target: str = "open",
                 default_hour: float = 10.0, user_strength: float = 20.0,
                 segment_strength: float = 50.0, population_strength: float = 50.0):
        self.channels = channels
        self.target = target
        self.default_hour = default_hour
        self.user_strength = user_strength
        self.segment_strength = segment_strength
        self.population_strength = population_strength

    # --------------------------------------------------------------------- fitting
    def _check_params(self) -> None:
        if not 0.0 <= float(self.default_hour) < 24.0:
            raise ValueError(f"default_hour: expected a local hour in [0, 24), got {self.default_hour!r}")
        check_params(self, ("user_strength", "segment_strength", "population_strength"), self.channels)

    def fit(self, log: pd.DataFrame, users: pd.DataFrame) -> SendTimeOptimizer:
        """Count engaged sends by local hour at every level of the chain; returns self."""
        self._check_params()
        slots = local_send_slots(log, users, self.target)
        chans = list(self.channels)
        self.channels_ = chans
        self.pop_k_, self.pop_n_ = (a[0] for a in _counts(slots, [], ["all"], chans, "hour", HOURS))
        self.pop_wk_, self.pop_wn_ = (a[0] for a in _counts(slots, [], ["all"], chans, "weekday", WEEKDAYS))
        tot_k, tot_n = self.pop_k_.sum(axis=1), self.pop_n_.sum(axis=1)
        self.base_rate_ = np.where(tot_n > 0, (tot_k + 0.5) / (tot_n + 1.0), 0.5)
        seg_col = users["segment"].astype(str) if "segment" in users.columns else None
        self.segments_ = sorted(set(seg_col)) if seg_col is not None else ["all"]
        self.seg_k_, self.seg_n_ = _counts(slots, ["segment"], self.segments_, chans, "hour", HOURS)
        ids = sorted(set(slots["user_id"]))
        self.user_ids_ = np.asarray(ids, dtype=str)
        seg_of = dict(zip(users["user_id"].astype(str), seg_col)) if seg_col is not None else {}
        self.user_segment_ = np.asarray([seg_of.get(u, "all") for u in ids], dtype=str)
        self.user_k_, self.user_n_ = _counts(slots, ["user_id"], ids, chans, "hour", HOURS)
        self.n_sends_ = len(slots)
        self._index: dict[str, int] | None = None
        return self

    # --------------------------------------------------------------------- estimates
    def _check_fitted(self) -> None:
        if not hasattr(self, "pop_k_"):
            raise NotFittedError("SendTimeOptimizer is not fitted; call fit(log, users) first")

    def _user_row(self, user_id: str) -> int | None:
        index: dict[str, int] | None = getattr(self, "_index", None)
        if index is None:
            index = self._index = {u: i for i, u in enumerate(self.user_ids_.tolist())}
        return index.get(str(user_id))

    def _channel(self, channel: str) -> int:
        try:
            return self.channels_.index(channel)
        except ValueError:
            raise ValueError(f"channel {channel!r} is not modelled; expected one of "
                             f"{', '.join(self.channels_)}") from None

    def _levels(self, user_id: str, c: int, segment: str | None,
                 weekday: bool = False) -> list[tuple[np.ndarray, np.ndarray, float]]:
        """``(k, n, strength)`` from the population down to the most specific level known."""
        if weekday:
            return [(self.pop_wk_[c], self.pop_wn_[c], float(self.population_strength))]
        levels = [(self.pop_k_[c], self.pop_n_[c], float(self.population_strength))]
        row = self._user_row(user_id)
        seg = str(self.user_segment_[row]) if row is not None else segment
        if seg in self.segments_:
            s = self.segments_.index(seg)
            levels.append((self.seg_k_[s, c], self.seg_n_[s, c], float(self.segment_strength)))
        if row is not None:
            levels.append((self.user_k_[row, c], self.user_n_[row, c], float(self.user_strength)))
        return levels

    def posterior(self, user_id: str, channel: str, segment: str | None = None,
                  weekday: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Beta ``(alpha, beta)`` per local hour (shape (24,)) for this user and channel.

        ``segment`` is used for users absent from the fitted log. ``weekday=True`` gives the
        population's posterior per local weekday instead (shape (7,), Monday first).
        """
        self._check_fitted()
        c = self._channel(channel)
        levels = self._levels(user_id, c, segment, weekday)
        parent = np.full(len(levels[0][0]), self.base_rate_[c])
        for k, n, m in levels[:-1]:
            parent = _shrink(k, n, parent, m)
        k, n, m = levels[-1]
        return k + m * parent, n - k + m * (1.0 - parent)

    def engagement(self, user_id: str, channel: str, segment: str | None = None) -> np.ndarray:
        """Posterior mean engagement probability per local hour, shape (24,)."""
        alpha, beta = self.posterior(user_id, channel, segment)
        return alpha / (alpha + beta)

    def best_hour(self, user_id: str, channel: str, segment: str | None = None) -> int:
        """The local hour (0-23) with the highest posterior mean; ties → closest to default."""
        return _argmax_near(self.engagement(user_id, channel, segment), self.default_hour)

    def best_weekday(self, channel: str) -> int:
        """The population's best local weekday for ``channel`` (0 = Monday; ties → Monday)."""
        alpha, beta = self.posterior("", channel, weekday=True)
        return _argmax_near(alpha / (alpha + beta), 0.0)

    # --------------------------------------------------------------------- artifact
    kind = "sendtime_model"
    _ARRAYS = ("base_rate_", "pop_k_", "pop_n_", "pop_wk_", "pop_wn_", "seg_k_", "seg_n_",
               "user_ids_", "user_segment_", "user_k_", "user_n_")

    def to_artifact(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``(params, arrays)``: JSON-able parameters and the fitted count arrays."""
        self._check_fitted()
        params = {**_jsonable(self.get_params()), "channels_": list(self.channels_),
                  "segments_": list(self.segments_), "n_sends_": self.n_sends_}
        return params, {name: np.asarray(getattr(self, name)) for name in self._ARRAYS}

    @classmethod
    def from_artifact(cls, params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> SendTimeOptimizer:
        """The fitted optimizer back from :meth:`to_artifact` output."""
        learned = {k: params[k] for k in ("channels_", "segments_", "n_sends_")}
        est = cls(**_init_params(cls, params))
        est.channels_, est.segments_ = list(learned["channels_"]), list(learned["segments_"])
        est.n_sends_ = int(learned["n_sends_"])
        for name in cls._ARRAYS:
            est.__dict__[name] = np.asarray(arrays[name])
        est._index = None
        return est


def _argmax_near(values: np.ndarray, default: float) -> int:
    """Index of the maximum; ties broken by circular distance to ``default`` then index."""
    n = len(values)
    top = np.flatnonzero(values >= values.max() - 1e-12)
    dist = np.minimum(np.abs(top - default), n - np.abs(top - default))
    return int(top[np.lexsort((top, dist))[0]])


def _jsonable(value: Any) -> Any:
    """Tuples → lists, numpy scalars → Python, recursively (for artifact params)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _init_params(cls: type[BaseEstimator], params: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor parameters of ``cls`` found in ``params`` (lists → tuples)."""
    names = cls._get_param_names()
    return {k: tuple(v) if isinstance(v, list) else v for k, v in params.items() if k in names}


# ------------------------------------------------------------------ nested artifacts
def learned_policy_class(kind: str) -> Any:
    """The class of a learned policy ``kind`` (``sendtime``, ``bandit_ts``, ...)."""
    from omnisim.policies.bandits import LinUCBChannel, ThompsonChannel
    from omnisim.policies.budget import BudgetPolicy
    from omnisim.policies.ratio import EngagementRatioChannel

    kinds = {c.kind: c for c in (SendTimePolicy, SendTimeOptimizer, ThompsonChannel,
                                 LinUCBChannel, EngagementRatioChannel, BudgetPolicy)}
    if kind not in kinds:
        raise ValueError(f"unknown learned policy kind {kind!r}; expected one of {', '.join(sorted(kinds))}")
    return kinds[kind]


def nested_artifact(obj: Any, prefix: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``({"kind", "params"}, arrays with keys prefixed by ``prefix/``)`` for a learned object."""
    params, arrays = obj.to_artifact()
    return {"kind": obj.kind, "params": params}, {f"{prefix}/{k}": v for k, v in arrays.items()}


def load_nested(spec: Mapping[str, Any], arrays: Mapping[str, np.ndarray], prefix: str) -> Any:
    """Inverse of :func:`nested_artifact`."""
    cut = len(prefix) + 1
    own = {k[cut:]: v for k, v in arrays.items() if k.startswith(prefix + "/")}
    return learned_policy_class(spec["kind"]).from_artifact(spec["params"], own)


# ------------------------------------------------------------------ the policy
class SendTimePolicy(BaseEstimator):
    """Move an inner policy's messages to each user's best local hour, with exploration.

    Parameters
    ----------
    inner : Policy, str or mapping
        The policy deciding whether and on which channel; a built-in name / policy document
        (resolved by :func:`omnisim.policies.registry.load_policy`) or a policy object.
    model : SendTimeOptimizer
        A fitted optimizer.
    explore : float
        Share of message decisions sent at a uniformly random local hour, in [0, 1].
    version : int
        Logged in the policy name.
    """

    kind = "sendtime"

    def __init__(self, inner: Policy | str | Mapping[str, Any] = "email_only",
                 model: SendTimeOptimizer | None = None, explore: float = 0.1, version: int = 1):
        self.inner = inner
        self.model = model
        self.explore = explore
        self.version = version

    @property
    def inner_policy(self) -> Policy:
        """The inner policy object (built once from a name or document)."""
        if not isinstance(self.inner, (str, Mapping)):
            return self.inner
        cached = self.__dict__.get("_inner_built")
        if cached is None or cached[0] is not self.inner:
            from omnisim.policies.registry import get_policy, load_policy

            built = get_policy(self.inner) if isinstance(self.inner, str) else load_policy(self.inner)
            self.__dict__["_inner_built"] = cached = (self.inner, built)
        return cached[1]

    @property
    def name(self) -> str:
        return f"sendtime({self.inner_policy.name})@{self.version}"

    @property
    def rules(self) -> Any:
        """The inner policy's pressure rules, if any (engines admit sends through them)."""
        return getattr(self.inner_policy, "rules", None)

    @property
    def holdout(self) -> Any:
        """The inner policy's global holdout, if any."""
        return getattr(self.inner_policy, "holdout", None)

    @property
    def trigger_kinds(self) -> frozenset[str] | None:
        """The inner policy's (docs/decision-core.md, "Batch decisions"): this wrapper decides
        nothing where the inner policy decides nothing, and draws no hour then."""
        return getattr(self.inner_policy, "trigger_kinds", None)

    @property
    def reads_history(self) -> bool | None:
        """The inner policy's: the wrapper itself reads the user id, traits and timezone only."""
        return getattr(self.inner_policy, "reads_history", None)

    @property
    def history_events(self) -> frozenset[str] | None:
        """The inner policy's (as :attr:`reads_history`)."""
        return getattr(self.inner_policy, "history_events", None)

    def _check(self) -> SendTimeOptimizer:
        if not 0.0 <= float(self.explore) <= 1.0:
            raise ValueError(f"explore: expected a share in [0, 1], got {self.explore!r}")
        if self.model is None:
            raise ValueError("SendTimePolicy needs a fitted SendTimeOptimizer as model=")
        self.model._check_fitted()
        return self.model

    def choose_hour(self, ctx: Context, channel: str, rng: np.random.Generator) -> tuple[int, float]:
        """``(local hour, its propensity)`` for one message on ``channel``."""
        model = self._check()
        best = model.best_hour(ctx.user_id, channel, ctx.traits.get("segment"))
        explore = float(self.explore)
        hour = int(rng.integers(HOURS)) if explore > 0 and rng.random() < explore else best
        return hour, hour_propensity(hour, best, explore)

    def decide(self, ctx: Context, rng: np.random.Generator) -> list[Decision]:
        out = []
        for d in self.inner_policy.decide(ctx, rng):
            if not d.is_message or d.exempt or d.channel not in self._check().channels_:
                out.append(replace(d, policy=self.name) if d.is_message else d)
                continue
            hour, p = self.choose_hour(ctx, d.channel, rng)
            start = max(ctx.now, d.send_at) if d.send_at is not None else ctx.now
            out.append(replace(d, action=f"{d.channel}@{hour:02d}h", policy=self.name,
                               propensity=d.propensity * p,
                               send_at=next_local_hour(start, ctx.timezone, hour),
                               meta={**d.meta, "send_hour": hour}))
        return out

    def action_probabilities(self, ctx: Context) -> dict[str, float]:
        """``{action: probability}`` in ``ctx`` without drawing (off-policy evaluation).

        Each inner message action ``c`` (non-exempt, on a modelled channel) with probability
        ``q`` becomes the 24 actions ``c@HHh`` with ``q · hour_propensity(h, best, explore)``;
        other inner actions (``none``, exempt messages, unmodelled channels) keep their
        probability. The inner distribution is the inner policy's ``action_probabilities``
        (its actions must then be channel names or ``none``, as the channel bandits' are), else
        one ``decide`` with ``numpy.random.default_rng(0)`` — the inner policy must then be
        deterministic (propensity 1) and decide at most one action. Otherwise (e.g. inner
        ``random_channel``) it raises ``NotImplementedError``, and
        :func:`~omnisim.policies.ope_log.policy_probabilities` falls back to ``decide`` as for a
        policy without the method (``mc_draws`` sampling). A trigger the inner policy does not
        answer gives ``{"none": 1.0}``.
        """
        model = self._check()
        inner = self.inner_policy
        probs = getattr(inner, "action_probabilities", None)
        moved: list[tuple[str, str | None, float]] = []   # (action, channel to move or None, q)
        if callable(probs):
            for a, q in probs(ctx).items():
                if q <= 0:
                    continue
                if a not in CHANNELS and a != "none":
                    raise NotImplementedError(
                        f"{self.name}: inner action {a!r} of {inner.name!r} is not a channel name; "
                        f"action_probabilities needs inner actions among {', '.join(CHANNELS)}, none")
                moved.append((a, a if a in model.channels_ else None, float(q)))
        else:
            decisions = inner.decide(ctx, np.random.default_rng(0))
            if len(decisions) > 1 or (decisions and decisions[0].propensity < 1 - 1e-9):
                raise NotImplementedError(
                    f"{self.name}: the inner policy {inner.name!r} is random or decides several "
                    f"actions at once and has no action_probabilities(ctx)")
            if not decisions:
                return {"none": 1.0}
            d = decisions[0]
            move = d.is_message and not d.exempt and d.channel in model.channels_
            moved.append((d.action, d.channel if move else None, 1.0))
        out: dict[str, float] = {}
        explore = float(self.explore)
        for a, channel, q in moved:
            if channel is None:
                out[a] = out.get(a, 0.0) + q
                continue
            best = model.best_hour(ctx.user_id, channel, ctx.traits.get("segment"))
            for h in range(HOURS):
                ph = hour_propensity(h, best, explore)
                if ph > 0:
                    key = f"{channel}@{h:02d}h"
                    out[key] = out.get(key, 0.0) + q * ph
        return out

    # --------------------------------------------------------------------- artifact
    def to_artifact(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Params ``{explore, version, model: {kind, params}, inner: ...}`` and arrays.

        The model's arrays are under ``model/``. The inner policy is ``{"document": ...}``
        (a self-contained policy document) when given as a name or document, or a nested
        ``{"kind", "params"}`` with arrays under ``inner/`` when it is a learned policy.
        """
        model_spec, arrays = nested_artifact(self._check(), "model")
        if isinstance(self.inner, (str, Mapping)):
            from omnisim.policies.artifact import policy_document

            inner_spec: dict[str, Any] = {"document": policy_document(self.inner)}
        elif hasattr(self.inner, "to_artifact"):
            inner_spec, inner_arrays = nested_artifact(self.inner, "inner")
            arrays.update(inner_arrays)
        else:
            raise ValueError(f"SendTimePolicy.to_artifact: inner policy {self.inner_policy.name!r} "
                             "is neither a policy name/document nor a learned policy with "
                             "to_artifact(); build SendTimePolicy with inner='<name>' instead")
        params = {"explore": float(self.explore), "version": int(self.version),
                  "model": model_spec, "inner": inner_spec}
        return params, arrays

    @classmethod
    def from_artifact(cls, params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> SendTimePolicy:
        """The policy back from :meth:`to_artifact` output."""
        inner_spec = params["inner"]
        inner = (dict(inner_spec["document"]) if "document" in inner_spec
                 else load_nested(inner_spec, arrays, "inner"))
        return cls(inner=inner, model=load_nested(params["model"], arrays, "model"),
                   explore=float(params["explore"]), version=int(params["version"]))
