"""Regression tests from the review of the learned policies and off-policy evaluation.

Each test failed before its fix: sklearn's NotFittedError before fit, a classifier T-learner
on an arm without a positive outcome, self-normalised estimators with no weight on the logged
actions, reward-model argument errors, send attribution after a suppression, logs with a
repeated index, and the interval helpers' documented input errors.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression, LogisticRegression

from omnisim.log import validate
from omnisim.policies.base import Context, Trigger
from omnisim.policies.budget import BudgetPolicy
from omnisim.policies.ope import OPEInputError, estimate, fit_reward_model
from omnisim.policies.ope_log import OPELogError, decision_rewards, log_contexts
from omnisim.policies.sendtime import SendTimeOptimizer
from omnisim.policies.uplift import TLearner, TraitEncoder, UpliftPolicy, XLearner, auuc
from omnisim.stats import mean_sd_ci, wilson_ci

NOW = datetime(2026, 1, 5, 9, tzinfo=UTC)


def _ctx() -> Context:
    return Context(user_id="u1", now=NOW, timezone="UTC", traits={"x": 1.0},
                   consent={"email": True, "sms": True, "push": True}, history=(),
                   trigger=Trigger(kind="product_view", ts=NOW))


# ------------------------------------------------------------------ scikit-learn conventions

@pytest.mark.parametrize("call", [
    lambda: TLearner(LinearRegression()).predict_uplift(np.zeros((2, 1))),
    lambda: TLearner(LinearRegression()).predict_outcomes(np.zeros((2, 1))),
    lambda: XLearner(LinearRegression()).predict_uplift(np.zeros((2, 1))),
    lambda: UpliftPolicy(TLearner(LinearRegression()), ("email",)).action_dist(pd.DataFrame({"x": [1.0]})),
    lambda: UpliftPolicy(TLearner(LinearRegression()), ("email",)).decide(_ctx(), np.random.default_rng(0)),
    lambda: TraitEncoder().transform(pd.DataFrame({"x": [1.0]})),
    lambda: TraitEncoder().transform_one({"x": 1.0}),
    lambda: SendTimeOptimizer().best_hour("u1", "email"),
    lambda: BudgetPolicy().decide(_ctx(), np.random.default_rng(0)),
], ids=["tlearner", "tlearner_outcomes", "xlearner", "uplift_dist", "uplift_decide", "encoder",
        "encoder_one", "sendtime", "budget"])
def test_using_an_unfitted_estimator_raises_sklearns_not_fitted_error(call):
    with pytest.raises(NotFittedError, match=r"not fitted.*fit\("):
        call()


@pytest.mark.parametrize("make", [lambda: TLearner(LogisticRegression()),
                                  lambda: XLearner(LogisticRegression())])
def test_classifier_learner_on_an_arm_without_any_conversion(make):
    """No control user converted (a rare outcome in a small sample): the control's
    conversion probability is 0, so the uplift is the treated arm's conversion rate."""
    rng = np.random.default_rng(0)
    n = 2000
    X = rng.normal(size=(n, 2))
    t = np.where(rng.random(n) < 0.5, "mens", "none").astype(object)
    p_treated = 1 / (1 + np.exp(-(X[:, 0] - 2.0)))          # planted: rises with x0
    y = np.where(t == "mens", rng.random(n) < p_treated, 0).astype(float)
    model = make().fit(X, t, y)
    up = model.predict_uplift(X)[:, 0]
    treated_rate = y[t == "mens"].mean()
    assert up.mean() == pytest.approx(treated_rate, abs=0.02)
    assert np.corrcoef(up, p_treated)[0, 1] > 0.8
    if isinstance(model, TLearner):
        assert np.all(model.predict_outcomes(X)[:, 0] == 0.0)


@pytest.mark.parametrize("field, row", [("uplift", 2), ("outcome", 1)])
def test_auuc_refuses_non_finite_scores_and_outcomes(field, row):
    args = {"uplift": np.array([0.3, 0.2, 0.1, 0.0]), "treatment": np.array([1, 0, 1, 0]),
            "outcome": np.array([1.0, 0.0, 0.0, 1.0])}
    args[field] = args[field].copy()
    args[field][row] = np.nan                # was: a NaN score ranked last, a NaN outcome gave nan
    with pytest.raises(ValueError, match=rf"{field} must be finite; row {row} is nan"):
        auuc(**args)


# ------------------------------------------------------------------ array-level OPE

@pytest.mark.parametrize("name", ["snips", "sndr"])
@pytest.mark.parametrize("method", ["bootstrap", "normal"])
def test_self_normalised_estimate_without_weight_on_logged_actions_is_a_clear_error(name, method):
    n = 6
    dist = np.zeros((n, 2, 1))
    dist[:, 1, 0] = 1.0                     # the evaluation policy always takes action 1 ...
    args = dict(reward=np.ones(n), action=np.zeros(n, dtype=int), pscore=np.full(n, 0.5),
                action_dist=dist, estimated_rewards=np.full((n, 2, 1), 0.3))   # ... never logged
    with pytest.raises(OPEInputError, match=rf"{name}: the importance weights sum to 0.0 over 6 rounds"):
        estimate(name, **args, method=method, rng=0, n_bootstrap=50)


def test_fit_reward_model_errors_name_the_right_arrays():
    x = np.zeros((50, 2))
    with pytest.raises(OPEInputError, match=r"reward has shape \(49,\) but context has rows \(50,\)"):
        fit_reward_model(x, np.zeros(50, dtype=int), np.zeros(49), n_actions=2)
    with pytest.raises(OPEInputError, match=r"action has shape \(49,\) but context has rows \(50,\)"):
        fit_reward_model(x, np.zeros(49, dtype=int), np.zeros(50), n_actions=2)
    with pytest.raises(OPEInputError, match="reward has a non-finite value at row 3"):
        fit_reward_model(x, np.zeros(50, dtype=int), np.r_[np.zeros(3), np.nan, np.zeros(46)], n_actions=2)


# ------------------------------------------------------------------ log-level OPE

def _T(h: float) -> pd.Timestamp:
    return pd.Timestamp("2026-01-05T00:00Z") + pd.Timedelta(hours=h)


def _capped_log() -> pd.DataFrame:
    """u1's first email decision is suppressed by a cap; the second, a day later, is sent
    and clicked. The click belongs to the second decision."""
    cols = ["ts", "user_id", "event", "channel", "action", "message_id", "campaign", "propensity",
            "reason"]
    rows = [
        (_T(0), "u1", "decided", "email", "email", None, "product_view", 0.5, None),
        (_T(0), "u1", "suppressed", "email", "email", None, "product_view", None, "cap:all:7d"),
        (_T(24), "u1", "decided", "email", "email", None, "product_view", 0.25, None),
        (_T(24), "u1", "sent", "email", "email", "u1-m1", "product_view", None, None),
        (_T(25), "u1", "opened", "email", None, "u1-m1", "product_view", None, None),
        (_T(25), "u1", "clicked", "email", None, "u1-m1", "product_view", None, None),
        # u2: deferred for quiet hours, then sent: still its own decision's message
        (_T(2), "u2", "decided", "sms", "sms", None, "cart_abandon", 0.5, None),
        (_T(2), "u2", "deferred", "sms", "sms", None, "cart_abandon", None, "quiet_hours"),
        (_T(8), "u2", "sent", "sms", "sms", "u2-m1", "cart_abandon", None, None),
        (_T(9), "u2", "clicked", "sms", None, "u2-m1", "cart_abandon", None, None),
        # u3: two decisions deferred to the same instant; the first is sent, the second
        # suppressed there (dedup), logged in that order
        (_T(1), "u3", "decided", "push", "push", None, "visit", 0.5, None),
        (_T(3), "u3", "decided", "push", "push", None, "visit", 0.5, None),
        (_T(8), "u3", "sent", "push", "push", "u3-m1", "visit", None, None),
        (_T(8), "u3", "suppressed", "push", "push", None, "visit", None, "dedup"),
        (_T(8.5), "u3", "clicked", "push", None, "u3-m1", "visit", None, None),
    ]
    return validate(pd.DataFrame(rows, columns=cols))


def test_a_suppressed_decision_does_not_take_the_send_of_a_later_decision():
    dec = decision_rewards(_capped_log(), "click")
    assert dec["message_id"].fillna("").tolist() == ["", "u3-m1", "u2-m1", "", "u1-m1"]
    assert dec["reward"].tolist() == [0.0, 1.0, 1.0, 0.0, 1.0]


def test_a_log_with_a_repeated_index_is_refused():
    log = _capped_log()
    twice = pd.concat([log, log.assign(user_id=log["user_id"].astype(str) + "b")])  # index 0..14 twice
    for reward in ("click", "revenue"):
        with pytest.raises(OPELogError, match=r"index label 0 appears more than once .*reset_index"):
            decision_rewards(twice, reward)
    with pytest.raises(OPELogError, match="reset_index"):
        log_contexts(twice, decision_rewards(log, "click"))


# ------------------------------------------------------------------ interval helpers

def test_interval_helpers_refuse_what_their_docstrings_call_errors():
    with pytest.raises(ValueError, match=r"values must be finite; values\[1\] is nan"):
        mean_sd_ci([1.0, np.nan, 3.0])
    with pytest.raises(ValueError, match=r"successes must be in \[0, trials\]; got 5 successes in 3 trials"):
        wilson_ci(5, 3)
    with pytest.raises(ValueError, match="at index 1"):
        wilson_ci([1, -1], [3, 3])
    assert np.isnan(wilson_ci(0, 0)[0])                         # documented: NaN, no error


def test_fit_reward_model_takes_a_generator_and_hillstrom_names_its_outcomes():
    from omnisim.bandit_data import hillstrom_feedback
    from omnisim.policies.ope import fit_reward_model

    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 2))
    a = rng.integers(0, 2, 60)
    r = (rng.random(60) < 0.3).astype(float)
    q = fit_reward_model(x, a, r, n_actions=2, random_state=np.random.default_rng(5))
    again = fit_reward_model(x, a, r, n_actions=2, random_state=np.random.default_rng(5))
    assert q.shape == (60, 2, 1) and np.array_equal(q, again)  # used to fail inside KFold
    with pytest.raises(ValueError, match="outcome='clicks': not an outcome of the Hillstrom data; expected one of"):
        hillstrom_feedback("clicks")
