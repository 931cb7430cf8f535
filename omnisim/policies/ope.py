"""Off-policy estimators: the value of an evaluation policy from another policy's logs.

Conventions follow Open Bandit Pipeline (obp) so results compare line for line:

``reward``, ``action``, ``position``, ``pscore`` : arrays of shape ``(n,)``
    Observed reward (e.g. click 0/1), logged action index in ``[0, n_actions)``, slot in
    ``[0, len_list)`` (``None`` means every round uses slot 0), and the logging policy's
    probability of the logged action at that slot, in ``(0, 1]``.
``action_dist`` : array ``(n, n_actions, len_list)``
    The evaluation policy's probability of each action in each slot of each round; for
    every round and slot it sums to 1 over actions.
``estimated_rewards_by_reg_model`` : array shaped like ``action_dist``
    A reward model's prediction ``q(x_i, a, k)``; required by DM, DR, SNDR and Switch-DR.
    :func:`fit_reward_model` makes one by cross-fitting a scikit-learn model.

Each estimator is a small frozen dataclass with ``estimate_policy_value(...) -> float`` and
``estimate_interval(...) -> (value, low, high)``; the value is a mean reward per round (for
clicks: a click rate). Every estimator here can be written as

    value = mean(base) + sum(num) / sum(den)

with per-round arrays ``base``, ``num``, ``den`` (``den`` = 1 except for the self-normalised
kinds). The bootstrap resamples rounds and recomputes that expression, so the
self-normalisation is redone in each resample (obp resamples already-normalised terms);
the normal interval linearises it (delta method).

The module is pure: no I/O, randomness only from the generator or seed passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from scipy import stats
from omnisim.errors import OmnisimError

__all__ = [
    "IPS", "SNIPS", "DM", "DR", "SNDR", "SwitchDR", "ESTIMATORS", "OPEInputError",
    "OPEResult", "OffPolicyEstimator", "estimate", "estimate_all", "fit_reward_model",
    "check_ope_inputs",
]

CIMethod = Literal["bootstrap", "normal"]


class OPEInputError(OmnisimError, ValueError):
    """Arrays given to an estimator do not follow the conventions (message says which)."""


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class _Arrays:
    """Validated inputs; ``q`` is ``None`` when no reward model was given."""

    reward: np.ndarray       # (n,) float
    action: np.ndarray       # (n,) int
    position: np.ndarray     # (n,) int
    pscore: np.ndarray       # (n,) float
    action_dist: np.ndarray  # (n, n_actions, len_list)
    q: np.ndarray | None     # (n, n_actions, len_list) or None

    @property
    def n(self) -> int:
        return len(self.reward)

    @property
    def iw(self) -> np.ndarray:
        """Importance weight ``pi_e(a_i | x_i, k_i) / pscore_i``, shape ``(n,)``."""
        rows = np.arange(self.n)
        return self.action_dist[rows, self.action, self.position] / self.pscore

    @property
    def q_factual(self) -> np.ndarray:
        """``q(x_i, a_i, k_i)``, shape ``(n,)``."""
        return self.q[np.arange(self.n), self.action, self.position]

    @property
    def q_pi(self) -> np.ndarray:
        """``sum_a pi_e(a | x_i, k_i) q(x_i, a, k_i)``, shape ``(n,)`` (the DM term)."""
        rows = np.arange(self.n)
        return np.einsum("na,na->n", self.action_dist[rows, :, self.position],
                         self.q[rows, :, self.position])


def _vector(name: str, x: Any, n: int | None, ref: str = "reward has shape") -> np.ndarray:
    """``x`` as a 1-d array of length ``n``; ``ref`` names what fixed ``n`` in the message."""
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise OPEInputError(f"{name} must be 1-dimensional of shape (n,), got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise OPEInputError(f"{name} has shape {arr.shape} but {ref} ({n},); "
                            f"all per-round arrays must have the same length")
    return arr


def _integers(name: str, arr: np.ndarray, upper: int, upper_name: str) -> np.ndarray:
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind != "f" or not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise OPEInputError(f"{name} must hold integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    bad = np.flatnonzero((arr < 0) | (arr >= upper))
    if len(bad):
        raise OPEInputError(f"{name} out of range at row {bad[0]}: {arr[bad[0]]} is not in "
                            f"[0, {upper}) ({upper_name} = {upper}); {len(bad)} row(s) affected")
    return arr


def check_ope_inputs(
    *, reward: Any, action: Any, pscore: Any, action_dist: Any, position: Any = None,
    estimated_rewards_by_reg_model: Any = None, atol: float = 1e-6,
) -> _Arrays:
    """Validate the OBP-style arrays; raise :class:`OPEInputError` naming the problem.

    Checks: shapes (naming both shapes on a mismatch); ``pscore`` in ``(0, 1]``; ``action``
    in ``[0, n_actions)`` and ``position`` in ``[0, len_list)``; rewards finite;
    ``action_dist`` non-negative and summing to 1 over actions (within ``atol``) for every
    round and slot (naming the first bad row and slot).
    """
    reward = _vector("reward", reward, None).astype(float)
    n = reward.shape[0]
    if n == 0:
        raise OPEInputError("reward is empty; need at least one logged round")
    if not np.all(np.isfinite(reward)):
        raise OPEInputError(f"reward has a non-finite value at row {np.flatnonzero(~np.isfinite(reward))[0]}")
    dist = np.asarray(action_dist, dtype=float)
    if dist.ndim != 3:
        raise OPEInputError(f"action_dist must have shape (n, n_actions, len_list), got shape {dist.shape}")
    if dist.shape[0] != n:
        raise OPEInputError(f"action_dist has shape {dist.shape} but reward has shape ({n},); "
                            f"action_dist's first axis must be the number of rounds")
    _, n_actions, len_list = dist.shape
    action = _integers("action", _vector("action", action, n), n_actions, "n_actions")
    if position is None:
        position = np.zeros(n, dtype=np.int64)
    else:
        position = _integers("position", _vector("position", position, n), len_list, "len_list")
    pscore = _vector("pscore", pscore, n).astype(float)
    bad = np.flatnonzero(~((pscore > 0) & (pscore <= 1)))
    if len(bad):
        raise OPEInputError(f"pscore must be in (0, 1]; row {bad[0]} has {pscore[bad[0]]!r} "
                            f"({len(bad)} row(s) affected)")
    bad_p = ~np.isfinite(dist) | (dist < 0)
    if bad_p.any():
        i, a, k = np.argwhere(bad_p)[0]
        raise OPEInputError(f"action_dist must be finite and >= 0; row {i}, action {a}, slot {k} "
                            f"has {dist[i, a, k]!r}")
    sums = dist.sum(axis=1)  # (n, len_list)
    off = np.argwhere(np.abs(sums - 1.0) > atol)
    if len(off):
        i, k = off[0]
        raise OPEInputError(f"action_dist must sum to 1 over actions for every round and slot; "
                            f"row {i}, slot {k} sums to {sums[i, k]:.6g} "
                            f"({len(off)} (row, slot) pair(s) affected)")
    q = None
    if estimated_rewards_by_reg_model is not None:
        q = np.asarray(estimated_rewards_by_reg_model, dtype=float)
        if q.shape != dist.shape:
            raise OPEInputError(f"estimated_rewards_by_reg_model has shape {q.shape} but action_dist "
                                f"has shape {dist.shape}; they must be equal")
        if not np.all(np.isfinite(q)):
            raise OPEInputError("estimated_rewards_by_reg_model has non-finite values")
    return _Arrays(reward, action, position, pscore, dist, q)


# --------------------------------------------------------------------------- estimators


def _as_rng(random_state: int | np.random.Generator | None) -> np.random.Generator:
    if isinstance(random_state, np.random.Generator):
        return random_state
    return np.random.default_rng(random_state)


def _combine(base: np.ndarray | None, num: np.ndarray | None, den: np.ndarray | None) -> float:
    value = 0.0 if base is None else float(base.mean())
    if num is not None:
        value += float(num.sum() / (den.sum() if den is not None else len(num)))
    return value


@dataclass(frozen=True)
class OffPolicyEstimator:
    """Base of the estimators: subclasses define :meth:`_terms` only.

    ``value = mean(base) + sum(num) / sum(den)`` over rounds (see the module docstring).
    """

    estimator_name: ClassVar[str] = "base"
    needs_reward_model: ClassVar[bool] = False

    def _terms(self, v: _Arrays) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        raise NotImplementedError

    def _checked(self, **arrays: Any) -> _Arrays:
        v = check_ope_inputs(**arrays)
        if self.needs_reward_model and v.q is None:
            raise OPEInputError(f"{self.estimator_name} needs estimated_rewards_by_reg_model "
                                f"(shape like action_dist); see fit_reward_model()")
        return v

    def _checked_terms(self, v: _Arrays) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """:meth:`_terms`, refusing a self-normalisation by ``sum(den) == 0`` (undefined)."""
        base, num, den = self._terms(v)
        if den is not None and not den.sum() > 0:
            raise OPEInputError(
                f"{self.estimator_name}: the importance weights sum to {float(den.sum())!r} over "
                f"{v.n} rounds: the evaluation policy gives probability 0 to every logged "
                f"(action, slot), so a self-normalised estimate is undefined; expected some "
                f"round with action_dist[i, action[i], position[i]] > 0")
        return base, num, den

    def estimate_policy_value(
        self, *, reward: Any, action: Any, pscore: Any, action_dist: Any, position: Any = None,
        estimated_rewards_by_reg_model: Any = None,
    ) -> float:
        """Estimated value of the evaluation policy: mean reward per round (a rate for 0/1)."""
        v = self._checked(reward=reward, action=action, pscore=pscore, action_dist=action_dist,
                          position=position, estimated_rewards_by_reg_model=estimated_rewards_by_reg_model)
        return _combine(*self._checked_terms(v))

    def estimate_interval(
        self, *, reward: Any, action: Any, pscore: Any, action_dist: Any, position: Any = None,
        estimated_rewards_by_reg_model: Any = None, alpha: float = 0.05, n_bootstrap: int = 2000,
        random_state: int | np.random.Generator | None = None, method: CIMethod = "bootstrap",
    ) -> tuple[float, float, float]:
        """``(value, low, high)``: the estimate and a two-sided ``1 - alpha`` interval.

        ``method="bootstrap"``: percentile bootstrap over rounds (``n_bootstrap`` resamples,
        drawn from ``random_state`` — a seed or a ``numpy.random.Generator``).
        ``method="normal"``: normal approximation with the delta-method standard error.

        With fewer than two rounds carrying the estimate — one logged round, or for the
        self-normalised kinds (SNIPS, SNDR) one round with a non-zero importance weight —
        no spread can be estimated: ``low`` and ``high`` are NaN (as
        :func:`omnisim.stats.mean_sd_ci` with one value), never a zero-width interval.
        """
        if not 0 < alpha < 1:
            raise OPEInputError(f"alpha must be in (0, 1), got {alpha!r}")
        v = self._checked(reward=reward, action=action, pscore=pscore, action_dist=action_dist,
                          position=position, estimated_rewards_by_reg_model=estimated_rewards_by_reg_model)
        base, num, den = self._checked_terms(v)
        value = _combine(base, num, den)
        if method not in ("normal", "bootstrap"):
            raise OPEInputError(f"method must be 'bootstrap' or 'normal', got {method!r}")
        if method == "bootstrap" and n_bootstrap < 1:
            raise OPEInputError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
        if _interval_rounds(den, v.n) < 2:
            return value, math.nan, math.nan
        if method == "normal":
            low, high = _normal_interval(base, num, den, v.n, alpha)
        else:
            low, high = _bootstrap_interval(base, num, den, v.n, alpha, n_bootstrap, _as_rng(random_state))
        return value, low, high


def _interval_rounds(den: np.ndarray | None, n: int) -> int:
    """Rounds an interval rests on: all ``n``, or for a self-normalised estimate those with
    a non-zero weight (the others add nothing to its ratio term)."""
    return n if den is None else int(np.count_nonzero(den))


def _normal_interval(base, num, den, n: int, alpha: float) -> tuple[float, float]:
    """Delta-method interval: influence ``(base - mean) + (num - R den) / mean(den)``."""
    psi = np.zeros(n)
    if base is not None:
        psi += base - base.mean()
    if num is not None:
        d = np.ones(n) if den is None else den
        ratio = num.sum() / d.sum()
        psi += (num - ratio * d) / d.mean()
    value = _combine(base, num, den)
    half = float(stats.norm.ppf(1 - alpha / 2) * psi.std(ddof=1) / np.sqrt(n))
    return value - half, value + half


def _bootstrap_interval(base, num, den, n: int, alpha: float, n_bootstrap: int,
                        rng: np.random.Generator) -> tuple[float, float]:
    """Percentile bootstrap, resampling rounds; chunked to keep memory near 16 MB."""
    if n_bootstrap < 1:
        raise OPEInputError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
    chunk = max(1, 2_000_000 // n)
    out = np.empty(n_bootstrap)
    for start in range(0, n_bootstrap, chunk):
        stop = min(n_bootstrap, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        val = np.zeros(stop - start)
        if base is not None:
            val += base[idx].mean(axis=1)
        if num is not None:
            d = den[idx].sum(axis=1) if den is not None else n
            with np.errstate(invalid="ignore", divide="ignore"):
                val += num[idx].sum(axis=1) / d
        out[start:stop] = val
    out = out[np.isfinite(out)]  # a resample with sum(den) == 0 has no self-normalised value
    low, high = np.quantile(out, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


@dataclass(frozen=True)
class IPS(OffPolicyEstimator):
    """Inverse propensity scoring: ``mean(w_i r_i)``, ``w_i = pi_e(a_i|x_i,k_i) / pscore_i``.

    Unbiased when ``pscore`` is the true logging probability and the logging policy covers
    the evaluation policy's actions; high variance when weights are large.
    """

    estimator_name: ClassVar[str] = "ips"

    def _terms(self, v):
        return None, v.iw * v.reward, None


@dataclass(frozen=True)
class SNIPS(OffPolicyEstimator):
    """Self-normalised IPS: ``sum(w_i r_i) / sum(w_i)``; slightly biased, lower variance."""

    estimator_name: ClassVar[str] = "snips"

    def _terms(self, v):
        w = v.iw
        return None, w * v.reward, w


@dataclass(frozen=True)
class DM(OffPolicyEstimator):
    """Direct method: ``mean_i sum_a pi_e(a|x_i,k_i) q(x_i,a,k_i)``; as good as the model."""

    estimator_name: ClassVar[str] = "dm"
    needs_reward_model: ClassVar[bool] = True

    def _terms(self, v):
        return v.q_pi, None, None


@dataclass(frozen=True)
class DR(OffPolicyEstimator):
    """Doubly robust: DM plus the IPS-weighted residual ``w_i (r_i - q(x_i,a_i,k_i))``.

    Unbiased if either the propensities or the reward model are right.
    """

    estimator_name: ClassVar[str] = "dr"
    needs_reward_model: ClassVar[bool] = True

    def _terms(self, v):
        return v.q_pi, v.iw * (v.reward - v.q_factual), None


@dataclass(frozen=True)
class SNDR(OffPolicyEstimator):
    """Self-normalised DR: the residual term divided by ``sum(w_i)`` instead of ``n``."""

    estimator_name: ClassVar[str] = "sndr"
    needs_reward_model: ClassVar[bool] = True

    def _terms(self, v):
        w = v.iw
        return v.q_pi, w * (v.reward - v.q_factual), w


@dataclass(frozen=True)
class SwitchDR(OffPolicyEstimator):
    """Switch-DR: DR on rounds with weight ``w_i <= tau``, DM alone on the others.

    ``tau`` is obp's ``lambda_``; ``tau = inf`` is DR, ``tau = 0`` is DM.
    """

    tau: float = float("inf")
    estimator_name: ClassVar[str] = "switch_dr"
    needs_reward_model: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not (self.tau >= 0):
            raise OPEInputError(f"tau must be >= 0, got {self.tau!r}")

    def _terms(self, v):
        w = v.iw
        return v.q_pi, np.where(w <= self.tau, w, 0.0) * (v.reward - v.q_factual), None


#: Estimator kinds by name, for :func:`estimate`.
ESTIMATORS: dict[str, type[OffPolicyEstimator]] = {
    cls.estimator_name: cls for cls in (IPS, SNIPS, DM, DR, SNDR, SwitchDR)
}


# --------------------------------------------------------------------------- entry point


@dataclass(frozen=True)
class OPEResult:
    """An off-policy estimate: ``value`` with its ``[ci_low, ci_high]`` interval over ``n``
    rounds (NaN bounds when fewer than two rounds carry it; see
    :meth:`OffPolicyEstimator.estimate_interval`)."""

    value: float
    ci_low: float
    ci_high: float
    name: str
    n: int

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "ci_low": self.ci_low,
                "ci_high": self.ci_high, "n": self.n}


def _estimator(name: str | OffPolicyEstimator) -> OffPolicyEstimator:
    if isinstance(name, OffPolicyEstimator):
        return name
    try:
        return ESTIMATORS[name]()
    except KeyError:
        raise OPEInputError(f"unknown estimator {name!r}; expected one of "
                            f"{', '.join(ESTIMATORS)}") from None


def estimate(
    name: str | OffPolicyEstimator, *, reward: Any, action: Any, pscore: Any, action_dist: Any,
    position: Any = None, estimated_rewards: Any = None, alpha: float = 0.05,
    rng: int | np.random.Generator | None = None, n_bootstrap: int = 2000,
    method: CIMethod = "bootstrap",
) -> OPEResult:
    """Estimate the evaluation policy's value with a ``1 - alpha`` interval.

    ``name`` is one of ``ips, snips, dm, dr, sndr, switch_dr`` (or an estimator instance,
    e.g. ``SwitchDR(tau=20)``); ``estimated_rewards`` (shape of ``action_dist``) is
    required by the dm/dr kinds. Arrays follow the module's conventions.
    """
    est = _estimator(name)
    value, low, high = est.estimate_interval(
        reward=reward, action=action, pscore=pscore, action_dist=action_dist, position=position,
        estimated_rewards_by_reg_model=estimated_rewards, alpha=alpha, n_bootstrap=n_bootstrap,
        random_state=rng, method=method)
    return OPEResult(value, low, high, est.estimator_name, int(np.shape(reward)[0]))


def estimate_all(
    names: list[str | OffPolicyEstimator] | tuple[str | OffPolicyEstimator, ...] = tuple(ESTIMATORS),
    *, seed: int = 0, **arrays: Any,
) -> list[OPEResult]:
    """:func:`estimate` for several estimators, each with its own bootstrap stream from ``seed``.

    Kinds needing a reward model are skipped when ``estimated_rewards`` is missing.
    """
    have_q = arrays.get("estimated_rewards") is not None
    out = []
    for i, name in enumerate(names):
        if _estimator(name).needs_reward_model and not have_q:
            continue
        out.append(estimate(name, rng=np.random.default_rng([seed, i]), **arrays))
    return out


# --------------------------------------------------------------------------- reward model


def fit_reward_model(
    context: Any, action: Any, reward: Any, *, n_actions: int, position: Any = None,
    len_list: int = 1, model: Any = None, n_folds: int = 2, action_context: Any = None,
    random_state: int | np.random.Generator = 0,
) -> np.ndarray:
    """Cross-fitted reward model ``q(x, a, k)`` for DM/DR: shape ``(n, n_actions, len_list)``.

    ``random_state``: a seed or a ``numpy.random.Generator`` for the folds' shuffle (a
    Generator gives a seed drawn from it).

    Features are ``[context, action features, one-hot slot]`` where action features are
    ``action_context[a]`` (shape ``(n_actions, d)``) or a one-hot of ``a``. Each round's
    predictions come from a model fitted on the other folds (``n_folds`` >= 2), so DR keeps
    its guarantees. ``model`` is any scikit-learn regressor or classifier (for a classifier
    the probability of the largest class label — 1 for clicks — is used); the default is
    an L2 logistic regression (``C=1``, Newton solver) for 0/1 rewards, else a ridge
    regression.
    """
    from sklearn.base import clone, is_classifier
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.model_selection import KFold

    x = np.asarray(context, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    n = x.shape[0]
    rows = "context has rows"
    a = _integers("action", _vector("action", action, n, rows), n_actions, "n_actions")
    r = _vector("reward", reward, n, rows).astype(float)
    if not np.all(np.isfinite(r)):
        raise OPEInputError(f"reward has a non-finite value at row {np.flatnonzero(~np.isfinite(r))[0]}")
    k = (np.zeros(n, dtype=np.int64) if position is None
         else _integers("position", _vector("position", position, n, rows), len_list, "len_list"))
    if n_folds < 2:
        raise OPEInputError(f"n_folds must be >= 2 (cross-fitting), got {n_folds}")
    if n < n_folds:
        raise OPEInputError(f"context has {n} round(s), fewer than n_folds={n_folds}: a cross-fitted "
                            f"reward model needs at least one round per fold; log more rounds, or use "
                            f"an estimator without a reward model (ips, snips)")
    act = np.eye(n_actions) if action_context is None else np.asarray(action_context, dtype=float)
    if act.ndim != 2 or act.shape[0] != n_actions:
        raise OPEInputError(f"action_context must have shape (n_actions, d) = ({n_actions}, d), "
                            f"got {act.shape}")
    slot = np.eye(len_list)[:, 1:]  # drop_first: no column at all when len_list == 1
    if model is None:
        binary = set(np.unique(r)) <= {0.0, 1.0}
        model = LogisticRegression(solver="newton-cholesky", max_iter=200) if binary else Ridge()
    classify = is_classifier(model)

    def features(rows: np.ndarray, acts: np.ndarray, slots: np.ndarray) -> np.ndarray:
        return np.hstack([x[rows], act[acts], slot[slots]])

    q = np.empty((n, n_actions, len_list))
    combos = [(aa, kk) for aa in range(n_actions) for kk in range(len_list)]
    seed = (int(random_state.integers(2**31 - 1)) if isinstance(random_state, np.random.Generator)
            else random_state)
    folds = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for train, test in folds.split(x):
        m = clone(model)
        y = r[train]
        if classify and len(np.unique(y)) < 2:  # a fold without clicks: predict its constant
            q[test] = y[0]
            continue
        m.fit(features(train, a[train], k[train]), y.astype(int) if classify else y)
        # predict many (action, slot) pairs per call: few large calls are much faster
        per_call = max(1, 200_000 // len(test))
        for start in range(0, len(combos), per_call):
            batch = combos[start:start + per_call]
            rows = np.tile(test, len(batch))
            acts = np.repeat([c[0] for c in batch], len(test))
            slots = np.repeat([c[1] for c in batch], len(test))
            f = features(rows, acts, slots)
            pred = m.predict_proba(f)[:, -1] if classify else np.asarray(m.predict(f), dtype=float)
            for i, (aa, kk) in enumerate(batch):
                q[test, aa, kk] = pred[i * len(test):(i + 1) * len(test)]
    return q
