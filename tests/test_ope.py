"""Off-policy estimators: hand-computed values, invalid inputs, a synthetic truth, real data."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omnisim.bandit_data import (
    HILLSTROM_ACTIONS, bts_action_dist, hillstrom_feedback, load_hillstrom, load_obd, on_policy_rate,
)
from omnisim.policies.ope import (
    DM, DR, ESTIMATORS, IPS, SNDR, SNIPS, OPEInputError, SwitchDR, estimate, estimate_all,
    fit_reward_model,
)
from omnisim.stats import wilson_ci

# --------------------------------------------------------------------------- small, by hand

# 4 rounds, 2 actions, 2 slots
HAND = dict(
    reward=np.array([1.0, 0.0, 1.0, 0.0]),
    action=np.array([0, 1, 1, 0]),
    position=np.array([0, 1, 0, 1]),
    pscore=np.array([0.5, 0.25, 0.5, 0.5]),
)
_DIST = np.zeros((4, 2, 2))
_DIST[:, 0, :] = 0.8
_DIST[:, 1, :] = 0.2
HAND["action_dist"] = _DIST
_Q = np.zeros((4, 2, 2))
_Q[:, 0, :] = 0.6
_Q[:, 1, :] = 0.3
W = np.array([0.8 / 0.5, 0.2 / 0.25, 0.2 / 0.5, 0.8 / 0.5])   # pi_e(a_i) / pscore_i
QF = np.array([0.6, 0.3, 0.3, 0.6])                             # q(x_i, a_i)
QPI = 0.8 * 0.6 + 0.2 * 0.3                                      # sum_a pi_e(a) q(a)


@pytest.mark.parametrize("est, expected", [
    (IPS(), np.mean(W * HAND["reward"])),
    (SNIPS(), np.sum(W * HAND["reward"]) / np.sum(W)),
    (DM(), QPI),
    (DR(), QPI + np.mean(W * (HAND["reward"] - QF))),
    (SNDR(), QPI + np.sum(W * (HAND["reward"] - QF)) / np.sum(W)),
    (SwitchDR(tau=1.0), QPI + np.mean(np.where(W <= 1.0, W, 0) * (HAND["reward"] - QF))),
    (SwitchDR(tau=0.0), QPI),
    (SwitchDR(), QPI + np.mean(W * (HAND["reward"] - QF))),
])
def test_estimators_match_obp_formulas_by_hand(est, expected):
    value = est.estimate_policy_value(**HAND, estimated_rewards_by_reg_model=_Q)
    assert value == pytest.approx(expected, rel=1e-12)
    v, low, high = est.estimate_interval(**HAND, estimated_rewards_by_reg_model=_Q,
                                         n_bootstrap=200, random_state=0)
    assert v == pytest.approx(expected) and low <= high


def test_interval_is_reproducible_from_a_seed_or_generator():
    a = estimate("ips", **HAND, rng=3)
    b = estimate("ips", **HAND, rng=np.random.default_rng(3))
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
    assert a.name == "ips" and a.n == 4


def _bad(**changes):
    args = {**HAND, "estimated_rewards": _Q, **changes}
    return args


_ROW2_BAD = _DIST.copy()
_ROW2_BAD[2, 0, 1] = 0.5


@pytest.mark.parametrize("name, args, message", [
    ("ips", _bad(pscore=np.array([0.5, 0.0, 0.5, 0.5])), r"pscore must be in \(0, 1\]; row 1"),
    ("ips", _bad(pscore=np.array([0.5, 1.5, 0.5, 0.5])), r"pscore must be in \(0, 1\]; row 1"),
    ("ips", _bad(pscore=np.array([0.5, np.nan, 0.5, 0.5])), r"pscore must be in \(0, 1\]"),
    ("ips", _bad(action=np.array([0, 2, 1, 0])), r"action out of range at row 1: 2 is not in \[0, 2\)"),
    ("ips", _bad(action=np.array([0, -1, 1, 0])), r"action out of range at row 1"),
    ("ips", _bad(action=np.array([0.0, 0.5, 1.0, 0.0])), r"action must hold integers"),
    ("ips", _bad(position=np.array([0, 2, 0, 0])), r"position out of range at row 1: 2 is not in \[0, 2\) \(len_list = 2\)"),
    ("ips", _bad(reward=np.ones(3)), r"action_dist has shape \(4, 2, 2\) but reward has shape \(3,\)"),
    ("ips", _bad(action=np.zeros(3, dtype=int)), r"action has shape \(3,\) but reward has shape \(4,\)"),
    ("ips", _bad(pscore=np.ones(5) / 2), r"pscore has shape \(5,\) but reward has shape \(4,\)"),
    ("ips", _bad(reward=np.ones((4, 1))), r"reward must be 1-dimensional .* got shape \(4, 1\)"),
    ("ips", _bad(reward=np.array([1.0, np.inf, 0, 0])), r"reward has a non-finite value at row 1"),
    ("ips", _bad(action_dist=_DIST[:3]), r"action_dist has shape \(3, 2, 2\) but reward has shape \(4,\)"),
    ("ips", _bad(action_dist=_DIST[:, :, 0]), r"action_dist must have shape \(n, n_actions, len_list\)"),
    ("ips", _bad(action_dist=_ROW2_BAD), r"row 2, slot 1 sums to 0.7"),
    ("ips", _bad(action_dist=-_DIST), r"action_dist must be finite and >= 0; row 0"),
    ("dr", _bad(estimated_rewards=_Q[:, :, :1]),
     r"estimated_rewards_by_reg_model has shape \(4, 2, 1\) but action_dist has shape \(4, 2, 2\)"),
    ("dm", _bad(estimated_rewards=None), r"dm needs estimated_rewards_by_reg_model"),
    ("sndr", _bad(estimated_rewards=None), r"sndr needs estimated_rewards_by_reg_model"),
    ("switch_dr", _bad(estimated_rewards=None), r"switch_dr needs estimated_rewards_by_reg_model"),
    ("dr", _bad(alpha=1.0), r"alpha must be in \(0, 1\)"),
    ("dr", _bad(method="jackknife"), r"method must be 'bootstrap' or 'normal'"),
    ("ipw", _bad(), r"unknown estimator 'ipw'; expected one of ips, snips, dm, dr, sndr, switch_dr"),
])
def test_invalid_inputs_get_clear_errors(name, args, message):
    with pytest.raises(OPEInputError, match=message):
        estimate(name, **args)


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 30), n_actions=st.integers(1, 5), len_list=st.integers(1, 3),
       seed=st.integers(0, 2**32 - 1))
def test_on_policy_evaluation_reduces_to_the_mean_reward(n, n_actions, len_list, seed):
    """Evaluating the logging policy itself: every weight is 1, IPS = SNIPS = mean reward,
    and DR with a flat reward model at the mean reward equals it too."""
    rng = np.random.default_rng(seed)
    dist = rng.dirichlet(np.ones(n_actions), size=(n, len_list)).transpose(0, 2, 1)
    position = rng.integers(0, len_list, n)
    action = np.array([rng.choice(n_actions, p=dist[i, :, position[i]]) for i in range(n)])
    pscore = dist[np.arange(n), action, position]
    reward = rng.random(n)
    args = dict(reward=reward, action=action, pscore=pscore, action_dist=dist, position=position)
    assert IPS().estimate_policy_value(**args) == pytest.approx(reward.mean())
    assert SNIPS().estimate_policy_value(**args) == pytest.approx(reward.mean())
    flat = np.full(dist.shape, reward.mean())
    assert DR().estimate_policy_value(**args, estimated_rewards_by_reg_model=flat) == pytest.approx(reward.mean())
    v, low, high = SNDR().estimate_interval(**args, estimated_rewards_by_reg_model=flat, n_bootstrap=50,
                                            random_state=seed)
    assert v == pytest.approx(reward.mean())
    assert low <= high if n >= 2 else np.isnan(low) and np.isnan(high)  # one round: no interval


def test_switch_dr_rejects_negative_tau():
    with pytest.raises(OPEInputError, match="tau must be >= 0"):
        SwitchDR(tau=-1)


# --------------------------------------------------------------------------- synthetic truth

N_ACTIONS = 4
THETA = np.array([[0.5, -1.0, 0.3], [-0.5, 0.8, 0.0], [1.0, 0.2, -0.7], [0.0, 0.0, 0.9]])   # reward
BETA = np.array([[0.2, 0.1, 0.0], [0.0, -0.3, 0.2], [-0.2, 0.0, 0.1], [0.1, 0.2, -0.2]])    # logging


def _softmax(z):
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _world(n, rng):
    """Contexts, true reward probabilities (n, 4), logging and evaluation policies (n, 4)."""
    x = rng.normal(size=(n, 3))
    q = 1 / (1 + np.exp(-(x @ THETA.T - 1.0)))
    return x, q, _softmax(x @ BETA.T), _softmax(2.0 * x @ THETA.T)


def _synthetic_log(n, seed):
    rng = np.random.default_rng(seed)
    x, q, logging, target = _world(n, rng)
    action = (rng.random((n, 1)) > logging.cumsum(axis=1)).sum(axis=1)
    reward = (rng.random(n) < q[np.arange(n), action]).astype(float)
    return dict(reward=reward, action=action, pscore=logging[np.arange(n), action],
                action_dist=target[:, :, None]), q[:, :, None], x


@pytest.fixture(scope="module")
def true_value():
    _, q, _, target = _world(400_000, np.random.default_rng(12345))
    return float((q * target).sum(axis=1).mean())


def test_synthetic_intervals_cover_the_true_value(true_value):
    reps, covered = 20, {name: 0 for name in ESTIMATORS}
    for seed in range(reps):
        log, q, _ = _synthetic_log(2000, seed)
        for res in estimate_all(seed=seed, estimated_rewards=q, n_bootstrap=400, **log):
            covered[res.name] += res.ci_low <= true_value <= res.ci_high
    # nominal 95 %: expect 19 of 20; 16 or fewer happens with probability < 2 %
    assert all(c >= 17 for c in covered.values()), covered


def test_dr_with_the_true_reward_model_has_lower_variance_than_ips(true_value):
    ips, dr = [], []
    for seed in range(40):
        log, q, _ = _synthetic_log(1000, 100 + seed)
        ips.append(IPS().estimate_policy_value(**log))
        dr.append(DR().estimate_policy_value(**log, estimated_rewards_by_reg_model=q))
    assert np.var(dr) < 0.5 * np.var(ips)
    assert abs(np.mean(dr) - true_value) < 3 * np.std(dr) / np.sqrt(40)


def test_dr_is_robust_to_a_wrong_reward_model_but_dm_is_not(true_value):
    log, _, _ = _synthetic_log(20_000, 7)
    wrong = np.full(log["action_dist"].shape, 0.5)
    dr = estimate("dr", **log, estimated_rewards=wrong, rng=0, n_bootstrap=400)
    dm = estimate("dm", **log, estimated_rewards=wrong, rng=0, n_bootstrap=400)
    assert dr.ci_low <= true_value <= dr.ci_high
    assert not dm.ci_low <= true_value <= dm.ci_high


def test_cross_fitted_reward_model_feeds_dr(true_value):
    log, q_true, x = _synthetic_log(8000, 11)
    q = fit_reward_model(x, log["action"], log["reward"], n_actions=N_ACTIONS, random_state=0)
    assert q.shape == log["action_dist"].shape and np.all((q > 0) & (q < 1))
    res = estimate("dr", **log, estimated_rewards=q, rng=0, n_bootstrap=400)
    assert res.ci_low <= true_value <= res.ci_high
    normal = estimate("dr", **log, estimated_rewards=q, method="normal")
    assert normal.value == res.value
    assert normal.ci_high - normal.ci_low == pytest.approx(res.ci_high - res.ci_low, rel=0.25)


# --------------------------------------------------------------------------- real data: OBD


def _overlap(a_low, a_high, b_low, b_high) -> bool:
    return a_low <= b_high and b_low <= a_high


@pytest.fixture(scope="module")
def obd_random():
    return load_obd("random")


def test_load_obd_follows_obp_conventions(obd_random):
    fb = obd_random
    assert fb["n_rounds"] == 10_000 and fb["n_actions"] == 80 and fb["len_list"] == 3
    assert set(np.unique(fb["position"])) == {0, 1, 2}
    assert fb["reward"].sum() == 38 and np.allclose(fb["pscore"], 1 / 80)
    assert np.all(np.diff(fb["timestamp"]) >= np.timedelta64(0))
    assert fb["context"].shape[0] == 10_000 and set(np.unique(fb["context"])) <= {0.0, 1.0}
    assert fb["action_context"].shape[0] == 80
    bts = load_obd("bts")
    assert bts["reward"].sum() == 42 and bts["pscore"].min() > 0


@pytest.mark.parametrize("method", ["frequency", "mean_pscore"])
def test_bts_action_dist_is_a_distribution_per_slot(method):
    dist = bts_action_dist(method=method)
    assert dist.shape == (80, 3) and np.allclose(dist.sum(axis=0), 1) and dist.min() >= 0
    assert bts_action_dist(5, method=method).shape == (5, 80, 3)


@pytest.mark.parametrize("name", ["ips", "snips"])
def test_obd_estimate_of_bts_overlaps_its_on_policy_rate(obd_random, name):
    """The standard real-data check: BTS's click rate estimated from the uniform-random log."""
    fb = obd_random
    truth, t_low, t_high = on_policy_rate("bts")
    assert truth == pytest.approx(0.0042) and t_low < truth < t_high
    res = estimate(name, reward=fb["reward"], action=fb["action"], pscore=fb["pscore"],
                   position=fb["position"], action_dist=bts_action_dist(fb["n_rounds"]), rng=0)
    assert res.ci_low < res.value < res.ci_high
    assert _overlap(res.ci_low, res.ci_high, t_low, t_high), (res, (truth, t_low, t_high))
    # and the estimate is informative: clearly above 0, narrower than 1 click-point
    assert res.ci_low > 0.001 and res.ci_high - res.ci_low < 0.01


def test_obd_data_dir_override(tmp_path, monkeypatch):
    monkeypatch.setenv("OMNISIM_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="OMNISIM_DATA_DIR"):
        load_obd("random")
    with pytest.raises(ValueError, match="kind must be 'random' or 'bts'"):
        load_obd("greedy")


# --------------------------------------------------------------------------- real data: Hillstrom


@pytest.fixture(scope="module")
def hillstrom():
    return load_hillstrom()


@pytest.mark.parametrize("outcome", ["visit", "conversion"])
def test_hillstrom_always_mens_equals_mens_arm_mean(hillstrom, outcome):
    fb = hillstrom_feedback(outcome, data=hillstrom)
    n = fb["n_rounds"]
    assert n == 64_000 and np.allclose(fb["pscore"], 1 / 3)
    always_mens = np.zeros((n, 3, 1))
    always_mens[:, HILLSTROM_ACTIONS.index("mens"), 0] = 1.0
    arm = fb["action"] == HILLSTROM_ACTIONS.index("mens")
    arm_mean, arm_low, arm_high = wilson_ci(fb["reward"][arm].sum(), arm.sum())
    q = fit_reward_model(fb["context"], fb["action"], fb["reward"], n_actions=3, random_state=0)
    for name in ("ips", "snips", "dr"):
        res = estimate(name, reward=fb["reward"], action=fb["action"], pscore=fb["pscore"],
                       action_dist=always_mens, estimated_rewards=q, rng=1, n_bootstrap=300)
        assert res.ci_low <= arm_mean <= res.ci_high, (name, res, arm_mean)
        assert _overlap(res.ci_low, res.ci_high, arm_low, arm_high)
    # SNIPS of a deterministic policy on one arm is that arm's mean exactly
    snips = SNIPS().estimate_policy_value(reward=fb["reward"], action=fb["action"],
                                          pscore=fb["pscore"], action_dist=always_mens)
    assert snips == pytest.approx(arm_mean, rel=1e-12)


# --------------------------------------------------------------------------- too few rounds


@pytest.mark.parametrize("method", ["normal", "bootstrap"])
@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_one_round_gives_no_interval_instead_of_a_zero_width_one(name, method):
    """One logged round: the estimate exists but its spread cannot be estimated. The bounds
    were the value itself (a zero-width interval claiming certainty); now NaN, as
    ``omnisim.stats.mean_sd_ci`` with one value."""
    one = dict(reward=[1.0], action=[0], pscore=[0.5], action_dist=[[[0.8], [0.2]]])
    q = np.array([[[0.6], [0.3]]])
    res = estimate(name, **one, estimated_rewards=q, method=method, rng=0, n_bootstrap=50)
    assert np.isfinite(res.value) and res.n == 1
    assert np.isnan(res.ci_low) and np.isnan(res.ci_high), res


@pytest.mark.parametrize("method", ["normal", "bootstrap"])
@pytest.mark.parametrize("name", ["snips", "sndr"])
def test_one_matching_round_gives_no_self_normalised_interval(name, method):
    """50 rounds, but the evaluation policy's action was logged once: SNIPS is that one
    round's reward (the interval was [1, 1]), so no interval; IPS keeps its interval."""
    n = 50
    dist = np.zeros((n, 2, 1))
    dist[:, 0, 0] = 1.0                                  # always action 0
    action = np.ones(n, dtype=int)
    action[0] = 0                                        # ... logged on round 0 only
    reward = np.zeros(n)
    reward[0] = 1.0
    args = dict(reward=reward, action=action, pscore=np.full(n, 0.5), action_dist=dist,
                estimated_rewards=np.full((n, 2, 1), 0.5), method=method, rng=0, n_bootstrap=200)
    res = estimate(name, **args)
    assert np.isfinite(res.value) and np.isnan(res.ci_low) and np.isnan(res.ci_high), res
    ips = estimate("ips", **args)
    assert ips.ci_low < ips.value < ips.ci_high


@pytest.mark.parametrize("method", ["normal", "bootstrap"])
@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_two_rounds_give_an_interval(name, method):
    two = dict(reward=[1.0, 0.0], action=[0, 0], pscore=[0.5, 0.5],
               action_dist=[[[0.8], [0.2]], [[0.8], [0.2]]])
    q = np.array([[[0.9], [0.3]], [[0.1], [0.3]]])
    res = estimate(name, **two, estimated_rewards=q, method=method, rng=0, n_bootstrap=200)
    assert res.ci_low < res.ci_high, res


def test_reward_model_needs_a_round_per_fold():
    with pytest.raises(OPEInputError, match=r"context has 1 round\(s\), fewer than n_folds=2.*ips, snips"):
        fit_reward_model(np.zeros((1, 2)), [0], [1.0], n_actions=2)
