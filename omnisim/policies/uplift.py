"""Targeting with uplift models: whom to message at all, and with which message.

- :class:`TLearner` and :class:`XLearner` estimate, for each treatment ``t`` against the
  control, the uplift ``tau_t(x) = E[Y | x, t] - E[Y | x, control]`` on any scikit-learn
  regressor or classifier (scikit-learn conventions: ``__init__`` stores parameters,
  ``fit`` returns ``self``, learned attributes end in ``_``, ``sklearn.base.clone`` works).
- :func:`qini_curve` and :func:`auuc` score a ranking on a randomised hold-out set.
- :class:`UpliftPolicy` turns a fitted model into a :class:`~omnisim.policies.base.Policy`:
  message the top ``k`` % of users by predicted uplift, with the best action.
- :class:`TraitEncoder` maps user traits (numbers and category strings) to the model's
  feature vector, for a data frame at fit time and for one ``Context.traits`` mapping at
  decision time.

Outcomes are per-user quantities (visit 0/1, conversion 0/1, spend in currency units);
uplifts are in the outcome's unit (for 0/1 outcomes: a probability difference).
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin, clone, is_classifier, is_regressor
from sklearn.dummy import DummyRegressor
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.utils.validation import check_is_fitted

from omnisim.errors import OmnisimError
from omnisim.policies.base import CHANNELS, NO_ACTION, Context, Decision, no_message


class MissingTraitError(OmnisimError, KeyError):
    """A user's context lacks a trait the fitted model needs (the message names it)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])

__all__ = [
    "TraitEncoder", "TLearner", "XLearner", "UpliftPolicy", "qini_curve", "auuc",
]


# --------------------------------------------------------------------------- features


class TraitEncoder(TransformerMixin, BaseEstimator):
    """Numbers pass through; strings (categories) become one-hot columns.

    Parameters
    ----------
    columns : sequence of str or None
        Traits to use, in order; ``None`` means every column of the frame given to ``fit``.

    Learned: ``columns_``, ``categories_`` (``{column: [category, ...]}`` for non-numeric
    columns, sorted) and ``feature_names_out_``. A category unseen at fit time encodes as all
    zeros.
    """

    def __init__(self, columns: Sequence[str] | None = None):
        self.columns = columns

    def fit(self, X: pd.DataFrame, y: Any = None) -> "TraitEncoder":
        cols = list(X.columns if self.columns is None else self.columns)
        missing = [c for c in cols if c not in X.columns]
        if missing:
            raise ValueError(f"TraitEncoder: column(s) {missing} not in the data; it has {list(X.columns)}")
        self.columns_ = cols
        self.categories_ = {c: sorted(map(str, X[c].dropna().unique())) for c in cols
                            if not pd.api.types.is_numeric_dtype(X[c])}
        names = []
        for c in cols:
            names += [f"{c}={v}" for v in self.categories_[c]] if c in self.categories_ else [c]
        self.feature_names_out_ = np.array(names, dtype=object)
        return self

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        """``(n, n_features)`` float array."""
        _check_fitted(self, "columns_", "fit(X)")
        blocks = []
        for c in self.columns_:
            if c not in X.columns:
                raise ValueError(f"TraitEncoder: column {c!r} missing; fitted on {self.columns_}")
            if c in self.categories_:
                vals = X[c].astype(str).to_numpy()
                blocks.append((vals[:, None] == np.array(self.categories_[c])[None, :]).astype(float))
            else:
                blocks.append(pd.to_numeric(X[c]).to_numpy(dtype=float)[:, None])
        return np.hstack(blocks)

    def transform_one(self, traits: Mapping[str, Any]) -> np.ndarray:
        """One user's traits (e.g. ``Context.traits``) as a ``(1, n_features)`` array; no pandas."""
        _check_fitted(self, "columns_", "fit(X)")
        row: list[float] = []
        for c in self.columns_:
            if c not in traits:
                raise MissingTraitError(
                    f"trait {c!r} missing from the user's context; the uplift "
                    f"model needs {self.columns_}: use a users table with these columns (e.g. the "
                    f"data the model was trained on)")
            v = traits[c]
            if c in self.categories_:
                row += [float(str(v) == cat) for cat in self.categories_[c]]
            else:
                row.append(float(v))
        return np.array([row])

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return self.feature_names_out_


# --------------------------------------------------------------------------- learners


def _check_fitted(est: BaseEstimator, attribute: str, fit_call: str) -> None:
    """Raise scikit-learn's ``NotFittedError`` (naming ``fit_call``) unless ``attribute`` is set."""
    check_is_fitted(est, attribute, msg=f"This %(name)s instance is not fitted yet; call "
                                        f"{fit_call} before using it.")


def _group_model(model: Any, X: np.ndarray, y: np.ndarray) -> Any:
    """``model`` cloned and fitted on one group; a classifier on a group whose outcome has a
    single value (e.g. no conversion at all) becomes the constant predictor of that value."""
    if is_classifier(model):
        values = np.unique(y)
        if len(values) == 1:
            return DummyRegressor(strategy="constant", constant=float(values[0])).fit(X, y)
        return clone(model).fit(X, y.astype(int))
    return clone(model).fit(X, y)


def _predict_outcome(model: Any, X: np.ndarray) -> np.ndarray:
    """Expected outcome: the largest class's probability for a classifier, else ``predict``."""
    if is_classifier(model):
        return model.predict_proba(X)[:, -1]
    return np.asarray(model.predict(X), dtype=float)


def _prepare(X: Any, treatment: Any, y: Any, control: Hashable
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(X, treatment, y, treatment labels without the control)`` as arrays, checked."""
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    n = len(X)
    if y.shape != (n,):
        raise ValueError(f"y has shape {y.shape} but X has {n} rows; expected shape ({n},)")
    t = np.asarray(treatment, dtype=object)
    if t.shape != (n,):
        raise ValueError(f"treatment has shape {t.shape} but X has {n} rows; expected shape ({n},)")
    labels = pd.unique(t)
    if control not in set(labels):
        raise ValueError(f"control label {control!r} not found in treatment; labels are {sorted(map(str, labels))}")
    treated = np.array(sorted((lab for lab in labels if lab != control), key=str), dtype=object)
    if len(treated) == 0:
        raise ValueError("treatment holds only the control label; need at least one treatment")
    return X, t, y, treated


class TLearner(BaseEstimator):
    """One outcome model per group; uplift = treated prediction − control prediction.

    Parameters
    ----------
    model : scikit-learn regressor or classifier
        Cloned once per group (control and each treatment).
    control : hashable
        The control label in ``treatment`` (default ``"none"``, omnisim's no-message action).

    Learned: ``treatments_`` (treatment labels, sorted, control excluded) and ``models_``
    (``{label: fitted model}``, control included). With a classifier, a group whose outcome
    takes one value only (e.g. nobody converted) gets a constant model predicting that value.
    """

    def __init__(self, model: Any, control: Hashable = NO_ACTION):
        self.model = model
        self.control = control

    def fit(self, X: Any, treatment: Any, y: Any) -> "TLearner":
        """Fit on ``X (n, d)``, ``treatment (n,)`` labels and outcome ``y (n,)``."""
        X, t, y, self.treatments_ = _prepare(X, treatment, y, self.control)
        self.models_ = {}
        for lab in (self.control, *self.treatments_):
            rows = t == lab
            self.models_[lab] = _group_model(self.model, X[rows], y[rows])
        return self

    def predict_outcomes(self, X: Any) -> np.ndarray:
        """``(n, 1 + n_treatments)`` expected outcomes: control first, then ``treatments_``."""
        _check_fitted(self, "models_", "fit(X, treatment, y)")
        X = np.asarray(X, dtype=float)
        return np.column_stack([_predict_outcome(self.models_[lab], X)
                                for lab in (self.control, *self.treatments_)])

    def predict_uplift(self, X: Any) -> np.ndarray:
        """``(n, n_treatments)`` uplift of each treatment in ``treatments_`` over the control."""
        mu = self.predict_outcomes(X)
        return mu[:, 1:] - mu[:, :1]


class XLearner(BaseEstimator):
    """Künzel et al. (2019) X-learner, one treatment at a time against the control.

    Stage 1 fits outcome models per group (a :class:`TLearner`). Stage 2 fits effect models on
    imputed effects: ``y - mu_0(x)`` on the treated, ``mu_t(x) - y`` on the controls. The two
    are blended with the propensity ``g_t(x) = P(t | x, t or control)``:
    ``tau_t = g_t tau_t^control + (1 - g_t) tau_t^treated``.

    Parameters
    ----------
    model : scikit-learn regressor or classifier
        Stage-1 outcome model.
    propensity : scikit-learn classifier or None
        Fitted per treatment on treated-vs-control rows; ``None`` uses the constant share
        ``n_t / (n_t + n_control)`` (right for a randomised experiment).
    effect_model : scikit-learn regressor or None
        Stage-2 model; ``None`` means a clone of ``model`` if it is a regressor, else a
        small ``HistGradientBoostingRegressor(max_depth=3, max_iter=100, random_state=0)``.
    control : hashable
        The control label.

    Learned: ``treatments_``, ``outcome_model_`` (fitted :class:`TLearner`),
    ``effect_models_`` (``{label: (tau_control, tau_treated)}``), ``propensity_models_``
    (``{label: classifier or share}``).
    """

    def __init__(self, model: Any, propensity: Any = None, effect_model: Any = None,
                 control: Hashable = NO_ACTION):
        self.model = model
        self.propensity = propensity
        self.effect_model = effect_model
        self.control = control

    def _effect_model(self) -> Any:
        if self.effect_model is not None:
            return self.effect_model
        if is_regressor(self.model):
            return self.model
        return HistGradientBoostingRegressor(max_depth=3, max_iter=100, random_state=0)

    def fit(self, X: Any, treatment: Any, y: Any) -> "XLearner":
        """Fit on ``X (n, d)``, ``treatment (n,)`` labels and outcome ``y (n,)``."""
        X, t, y, self.treatments_ = _prepare(X, treatment, y, self.control)
        self.outcome_model_ = TLearner(self.model, self.control).fit(X, t, y)
        mu = self.outcome_model_.predict_outcomes(X)
        ctrl = t == self.control
        self.effect_models_, self.propensity_models_ = {}, {}
        for j, lab in enumerate(self.treatments_, start=1):
            trt = t == lab
            tau_c = clone(self._effect_model()).fit(X[ctrl], mu[ctrl, j] - y[ctrl])
            tau_t = clone(self._effect_model()).fit(X[trt], y[trt] - mu[trt, 0])
            self.effect_models_[lab] = (tau_c, tau_t)
            both = ctrl | trt
            if self.propensity is None:
                self.propensity_models_[lab] = float(trt.sum() / both.sum())
            else:
                self.propensity_models_[lab] = clone(self.propensity).fit(X[both], trt[both].astype(int))
        return self

    def predict_uplift(self, X: Any) -> np.ndarray:
        """``(n, n_treatments)`` uplift of each treatment in ``treatments_`` over the control."""
        _check_fitted(self, "effect_models_", "fit(X, treatment, y)")
        X = np.asarray(X, dtype=float)
        out = np.empty((len(X), len(self.treatments_)))
        for j, lab in enumerate(self.treatments_):
            tau_c, tau_t = self.effect_models_[lab]
            g = self.propensity_models_[lab]
            g = g if isinstance(g, float) else g.predict_proba(X)[:, -1]
            out[:, j] = g * tau_c.predict(X) + (1 - g) * tau_t.predict(X)
        return out


# --------------------------------------------------------------------------- evaluation


def qini_curve(uplift: Any, treatment: Any, outcome: Any) -> tuple[np.ndarray, np.ndarray]:
    """Qini curve of a ranking on randomised data: ``(fraction, gain)``.

    Users are sorted by ``uplift`` (descending). For the top ``phi`` of them,
    ``gain(phi) = [Y_t(phi) - Y_c(phi) * N_t(phi) / N_c(phi)] / N_t`` where ``Y_t, N_t``
    (``Y_c, N_c``) are the summed outcome and count of treated (control) users in the top
    ``phi``, and ``N_t`` alone is the total treated count: the incremental outcome won by
    treating the top ``phi``, per treated user. ``gain(0) = 0`` and ``gain(1)`` is the
    average treatment effect (``mean_t - mean_c``). Tied scores form one step, joined
    linearly (the expectation over orders within the tie).

    Parameters
    ----------
    uplift : (n,) scores; treatment : (n,) 0/1 or bool (1 = treated; restrict a
    multi-treatment experiment to control + one treatment first); outcome : (n,) float.

    Returns ``fraction`` (points in [0, 1], starting at 0, ending at 1) and ``gain``.
    """
    s = np.asarray(uplift, dtype=float)
    w = np.asarray(treatment)
    y = np.asarray(outcome, dtype=float)
    if not (s.ndim == 1 and s.shape == w.shape == y.shape):
        raise ValueError(f"uplift, treatment and outcome must have one shape (n,); got "
                         f"{s.shape}, {w.shape}, {y.shape}")
    for name, v in (("uplift", s), ("outcome", y)):
        bad = np.flatnonzero(~np.isfinite(v))
        if bad.size:
            raise ValueError(f"{name} must be finite; row {bad[0]} is {float(v[bad[0]])!r} "
                             f"({bad.size} non-finite row(s))")
    if not set(np.unique(w).tolist()) <= {0, 1, True, False}:
        raise ValueError(f"treatment must be 0/1 (control/treated); got values {np.unique(w)[:5]}; "
                         f"for several treatments, keep control rows and one treatment's rows")
    w = w.astype(bool)
    if w.all() or not w.any():
        raise ValueError("qini_curve needs both treated and control rows")
    order = np.argsort(-s, kind="stable")
    s, w, y = s[order], w[order], y[order]
    ends = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # last index of each tie group
    n_t, n_c = np.cumsum(w)[ends], np.cumsum(~w)[ends]
    y_t, y_c = np.cumsum(y * w)[ends], np.cumsum(y * ~w)[ends]
    with np.errstate(invalid="ignore", divide="ignore"):
        gain = np.where(n_c > 0, y_t - y_c * n_t / n_c, y_t) / n_t[-1]
    frac = (ends + 1) / len(s)
    return np.r_[0.0, frac], np.r_[0.0, gain]


def auuc(uplift: Any, treatment: Any, outcome: Any) -> float:
    """Area between the Qini curve and the random-targeting line (normalised Qini area).

    ``auuc = integral_0^1 [gain(phi) - phi * gain(1)] dphi`` with ``gain`` from
    :func:`qini_curve` (trapezoids). Units: outcome per treated user (the curve's) times a
    population share. A random ranking scores about 0, a worse-than-random one below 0; the
    best possible depends on the data, so compare models on the same hold-out set.
    """
    frac, gain = qini_curve(uplift, treatment, outcome)
    return float(np.trapezoid(gain - frac * gain[-1], frac))


# --------------------------------------------------------------------------- policy


class UpliftPolicy(BaseEstimator):
    """Message the top ``top_k_pct`` % of users by predicted uplift, with their best action.

    ``fit`` encodes the traits (:class:`TraitEncoder`), fits a clone of ``model``
    (:class:`TLearner`, :class:`XLearner` or anything with ``fit(X, treatment, y)`` and
    ``predict_uplift``) and sets ``threshold_``: the ``1 - top_k_pct/100`` quantile of the
    training users' best predicted uplift. At decision time, pure: a user whose best uplift is
    ``>= threshold_`` and ``> min_uplift`` gets the action of highest uplift, else ``none``.

    Parameters
    ----------
    model : uplift learner (unfitted; cloned).
    actions : sequence of str
        Action names logged for the model's ``treatments_``, in that order (e.g. the
        Hillstrom treatments ``("mens", "womens")`` as ``("email:mens", "email:womens")``).
    top_k_pct : float
        Share of users to message, in percent (0–100].
    feature_columns : sequence of str or None
        Traits the model reads from ``Context.traits`` (``None``: every column at fit).
    name : str
        Policy name and version logged in ``Decision.policy``.
    channels : str or sequence of str
        Channel of each action (one string: the same channel for all).
    epsilon : float
        Exploration share in [0, 1): with probability ``epsilon`` the action is drawn
        uniformly among ``none`` and the reachable actions; propensities are logged exactly.
        With 0 the policy is deterministic (propensity 1) and uses no randomness.
    min_uplift : float
        Never message a user whose best predicted uplift is not above this (outcome units).
    triggers : sequence of str or None
        Trigger kinds it decides on (others get no decision); ``None``: every trigger.

    Learned: ``encoder_``, ``model_``, ``threshold_``.
    """

    def __init__(self, model: Any, actions: Sequence[str], top_k_pct: float = 20.0,
                 feature_columns: Sequence[str] | None = None, name: str = "uplift@1",
                 channels: str | Sequence[str] = "email", epsilon: float = 0.0,
                 min_uplift: float = 0.0, triggers: Sequence[str] | None = None):
        self.model = model
        self.actions = actions
        self.top_k_pct = top_k_pct
        self.feature_columns = feature_columns
        self.name = name
        self.channels = channels
        self.epsilon = epsilon
        self.min_uplift = min_uplift
        self.triggers = triggers

    def _channels(self) -> list[str]:
        chans = [self.channels] * len(self.actions) if isinstance(self.channels, str) else list(self.channels)
        if len(chans) != len(self.actions) or any(c not in CHANNELS for c in chans):
            raise ValueError(f"channels must be one of {CHANNELS} per action; got {self.channels!r} "
                             f"for actions {list(self.actions)}")
        return chans

    def fit(self, X: pd.DataFrame, treatment: Any, y: Any) -> "UpliftPolicy":
        """Fit on traits ``X`` (a frame), treatment labels ``(n,)`` and outcomes ``(n,)``."""
        if not 0 < self.top_k_pct <= 100:
            raise ValueError(f"top_k_pct must be in (0, 100], got {self.top_k_pct!r}")
        if not 0 <= self.epsilon < 1:
            raise ValueError(f"epsilon must be in [0, 1), got {self.epsilon!r}")
        self._channels()
        self.encoder_ = TraitEncoder(self.feature_columns).fit(X)
        Xe = self.encoder_.transform(X)
        self.model_ = clone(self.model).fit(Xe, treatment, y)
        n_treat = len(self.model_.treatments_)
        if len(self.actions) != n_treat:
            raise ValueError(f"{len(self.actions)} action(s) {list(self.actions)} for {n_treat} "
                             f"treatment(s) {list(self.model_.treatments_)}; give one per treatment")
        best = self.model_.predict_uplift(Xe).max(axis=1)
        self.threshold_ = float(np.quantile(best, 1 - self.top_k_pct / 100))
        return self

    def _greedy(self, uplift: np.ndarray) -> np.ndarray:
        """Index into ``[none, *actions]`` of the greedy choice, per row of ``(n, n_treat)``."""
        best = uplift.max(axis=1)
        target = (best >= self.threshold_) & (best > self.min_uplift)
        return np.where(target, uplift.argmax(axis=1) + 1, 0)

    def action_dist(self, X: pd.DataFrame) -> np.ndarray:
        """``(n, 1 + n_actions, 1)`` probabilities over ``[none, *actions]`` (every channel
        reachable): the ``action_dist`` to evaluate this policy off-policy."""
        _check_fitted(self, "threshold_", "fit(X, treatment, y)")
        greedy = self._greedy(self.model_.predict_uplift(self.encoder_.transform(X)))
        k = len(self.actions) + 1
        dist = np.full((len(greedy), k), self.epsilon / k)
        dist[np.arange(len(greedy)), greedy] += 1 - self.epsilon
        return dist[:, :, None]

    def _options(self, ctx: Context) -> tuple[np.ndarray, list[str], list[int], int]:
        """``(uplift, channels, allowed, greedy)`` in ``ctx``: the predicted uplift per action,
        each action's channel, the indices of actions whose channel ``ctx`` can message, and
        the greedy choice as an index into ``[none, *actions]``."""
        _check_fitted(self, "threshold_", "fit(X, treatment, y)")
        uplift = self.model_.predict_uplift(self.encoder_.transform_one(ctx.traits))[0]
        chans = self._channels()
        allowed = [j for j, ch in enumerate(chans) if ctx.can_message(ch)]
        masked = np.full_like(uplift, -np.inf)
        masked[allowed] = uplift[allowed]
        greedy = int(self._greedy(masked[None, :])[0]) if allowed else 0
        return uplift, chans, allowed, greedy

    def _label(self, choice: int) -> str:
        """The action name of an index into ``[none, *actions]``."""
        return NO_ACTION if choice == 0 else str(self.actions[choice - 1])

    def action_probabilities(self, ctx: Context) -> dict[str, float]:
        """``{action: probability}`` in ``ctx`` without drawing: exactly the propensities
        :meth:`decide` logs, for off-policy evaluation on logged contexts.

        With ``epsilon == 0``: probability 1 on the greedy action (``none`` when no action's
        channel is reachable). With ``epsilon > 0``: ``epsilon / m`` on each of the ``m``
        options (``none`` and every reachable action) plus ``1 - epsilon`` on the greedy one.
        Triggers the policy does not decide on: ``{"none": 1.0}`` (``decide`` returns no
        decision there). Over every channel reachable it equals a row of :meth:`action_dist`.
        """
        if self.triggers is not None and ctx.trigger.kind not in self.triggers:
            return {NO_ACTION: 1.0}
        _, _, allowed, greedy = self._options(ctx)
        if self.epsilon <= 0:
            return {self._label(greedy): 1.0}
        options = [0] + [j + 1 for j in allowed]
        out: dict[str, float] = {}
        for o in options:
            p = self.epsilon / len(options) + (1 - self.epsilon) * (o == greedy)
            out[self._label(o)] = out.get(self._label(o), 0.0) + p
        return out

    def decide(self, ctx: Context, rng: np.random.Generator) -> list[Decision]:
        """One decision from ``ctx.traits``; unreachable channels are never chosen."""
        kind = ctx.trigger.kind
        if self.triggers is not None and kind not in self.triggers:
            return []
        uplift, chans, allowed, greedy = self._options(ctx)
        choice, propensity = greedy, 1.0
        if self.epsilon > 0:
            options = [0] + [j + 1 for j in allowed]
            if rng.random() < self.epsilon:
                choice = options[int(rng.integers(len(options)))]
            propensity = (1 - self.epsilon) * (choice == greedy) + self.epsilon / len(options)
        if choice == 0:
            reason = None if allowed else "no_consent"
            return [no_message(self.name, propensity=propensity, campaign=kind, reason=reason)]
        j = choice - 1
        return [Decision(action=self.actions[j], channel=chans[j], propensity=propensity,
                         policy=self.name, campaign=kind, expected_value=float(uplift[j]),
                         meta={"uplift": float(uplift[j])})]
