"""UpliftPolicy.action_probabilities: the target policy's distribution for logged contexts,
consistent with decide(), so an uplift policy is evaluated off-policy on logged data (Hillstrom)
whatever its exploration, triggers, consent or wrappers."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest

from omnisim.datasets import hillstrom_log
from omnisim.policies.base import NO_ACTION, Trigger
from omnisim.policies.ope_log import decision_rewards, evaluate_policy, log_contexts, log_feedback, train_uplift
from omnisim.policies.pressure import with_pressure

CAMPAIGN = "hillstrom_2008"  # the trigger kind of every rebuilt Hillstrom context


@pytest.fixture(scope="module")
def hill():
    """An uplift policy trained on ~6 % of Hillstrom, and another ~6 % to evaluate it on, with
    e-mail consent withdrawn for a tenth of the users (so not every context is reachable)."""
    log, users = hillstrom_log()
    ids = users["user_id"].astype(str).to_numpy()
    part = np.random.default_rng(11).random(len(ids))
    train_ids, test_ids = set(ids[part < 0.06]), set(ids[(part >= 0.06) & (part < 0.12)])
    train = log[log["user_id"].astype(str).isin(train_ids)].reset_index(drop=True)
    test = log[log["user_id"].astype(str).isin(test_ids)].reset_index(drop=True)
    policy, _ = train_uplift(train, users, reward="visit", top_k_pct=40)
    users = users.assign(consent_email=np.random.default_rng(12).random(len(users)) >= 0.1)
    return test, users, policy


def _variant(policy, **params):
    return copy.deepcopy(policy).set_params(**params)


@pytest.mark.parametrize("epsilon", [0.0, 0.25])
def test_action_probabilities_are_what_decide_logs(hill, epsilon):
    test, users, policy = hill
    policy = _variant(policy, epsilon=epsilon)
    contexts = log_contexts(test, decision_rewards(test, "visit"), users)[:400]
    assert {c.trigger.kind for c in contexts} == {CAMPAIGN}
    assert any(not c.can_message("email") for c in contexts) and any(c.can_message("email") for c in contexts)
    dist = policy.action_dist(_traits(contexts))[:, :, 0]
    labels = [NO_ACTION, *policy.actions]
    for i, ctx in enumerate(contexts):
        probs = policy.action_probabilities(ctx)
        assert sum(probs.values()) == pytest.approx(1.0) and min(probs.values()) > 0
        for seed in range(4):
            (d,) = policy.decide(ctx, np.random.default_rng(seed))
            assert probs[d.action] == pytest.approx(d.propensity), (ctx.user_id, probs, d)
        if epsilon == 0:
            assert probs == {d.action: 1.0}
        if ctx.can_message("email"):  # every channel reachable: a row of action_dist
            assert probs == pytest.approx({a: p for a, p in zip(labels, dist[i]) if p > 0})
        else:                         # nothing reachable: none, whatever the exploration
            assert probs == {NO_ACTION: 1.0}


def test_action_probabilities_match_decide_frequencies_when_exploring(hill):
    test, users, policy = hill
    policy = _variant(policy, epsilon=0.3)
    ctx = next(c for c in log_contexts(test, decision_rewards(test, "visit"), users) if c.can_message("email"))
    probs = policy.action_probabilities(ctx)
    rng = np.random.default_rng(5)
    draws = [policy.decide(ctx, rng)[0].action for _ in range(4000)]
    for a, p in probs.items():
        assert draws.count(a) / len(draws) == pytest.approx(p, abs=0.03), (a, p)


def test_other_triggers_get_none(hill):
    test, users, policy = hill
    policy = _variant(policy, epsilon=0.25, triggers=(CAMPAIGN,))
    ctx = log_contexts(test, decision_rewards(test, "visit"), users)[0]
    other = replace(ctx, trigger=Trigger(kind="cart_abandon", ts=ctx.now))
    assert policy.decide(other, np.random.default_rng(0)) == []
    assert policy.action_probabilities(other) == {NO_ACTION: 1.0}
    assert policy.action_probabilities(ctx) == _variant(policy, triggers=None).action_probabilities(ctx)


@pytest.mark.parametrize("wrap", ["plain", "triggers", "pressure"])
def test_exploring_uplift_policy_is_evaluated_off_policy_on_hillstrom(hill, wrap):
    """An exploring uplift policy on the logged Hillstrom contexts, some without e-mail
    consent: OPE used to stop with "chose ... at random ... has no action_probabilities"."""
    test, users, policy = hill
    policy = _variant(policy, epsilon=0.2, triggers=(CAMPAIGN,) if wrap == "triggers" else None)
    target = with_pressure(policy) if wrap == "pressure" else policy
    fb = log_feedback(test, target, users, reward="visit")
    dist = fb.action_dist[:, :, 0]
    assert np.allclose(dist.sum(axis=1), 1) and fb.unsupported_share == 0
    expected = np.array([[policy.action_probabilities(c).get(a, 0.0) for a in fb.actions] for c in fb.contexts])
    assert np.allclose(dist, expected)
    res = evaluate_policy(test, target, users, reward="visit", method="normal", feedback=fb).set_index("estimator")
    assert len(res) == 3 and (res["n"] == len(fb.reward)).all()
    assert (res["ci_low"] < res["value"]).all() and (res["value"] < res["ci_high"]).all()


def _traits(contexts):
    import pandas as pd

    return pd.DataFrame([dict(c.traits) for c in contexts])
