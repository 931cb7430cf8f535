"""``with_holdout`` passes the wrapped policy's exact action probabilities through (OPE)."""

from __future__ import annotations

import numpy as np
import pytest

from omnisim.experiment import run_one
from omnisim.policies import RandomChannel, ThompsonChannel, with_holdout
from omnisim.policies.check import sample_contexts
from omnisim.policies.ope_log import OPELogError, evaluate_policy, log_feedback, policy_probabilities


class DecideOnly:
    """The policy without ``action_probabilities``: OPE must sample ``decide``."""

    def __init__(self, policy):
        self.policy = policy
        self.name = policy.name

    def decide(self, ctx, rng):
        return self.policy.decide(ctx, rng)


@pytest.fixture(scope="module")
def random_log():
    r = run_one("default", "random_channel", 5, n_users=150, days=8)
    return r.log, r.users


def test_holdout_users_get_the_no_message_distribution():
    inner = ThompsonChannel(exploration=1.0)
    wrapped = with_holdout(inner, share=0.5, salt="ope")
    contexts = sample_contexts(40, seed=2)
    held = [wrapped.holdout.contains(c.user_id) for c in contexts]
    assert any(held) and not all(held)
    for ctx, h in zip(contexts, held):
        probs = wrapped.action_probabilities(ctx)
        if h:
            assert probs == {"none": 1.0}
            # and decide agrees: the holdout's none, whatever the wrapped policy drew
            assert [d.action for d in wrapped.decide(ctx, np.random.default_rng(0))] in ([], ["none"])
        else:
            assert probs == inner.action_probabilities(ctx)
        assert sum(probs.values()) == pytest.approx(1.0)
        assert policy_probabilities(wrapped, ctx) == pytest.approx(probs)


def test_holdout_exposes_probabilities_only_when_the_wrapped_policy_has_them(random_log):
    log, users = random_log
    plain = with_holdout(RandomChannel(), share=0.3)
    assert not hasattr(plain, "action_probabilities")
    assert hasattr(with_holdout(ThompsonChannel(), share=0.3), "action_probabilities")
    with pytest.raises(OPELogError, match="mc_draws"):
        log_feedback(log, plain, users, reward="open", window_h=72)
    fb = log_feedback(log, plain, users, reward="open", window_h=72, mc_draws=4)  # Monte Carlo still works
    assert np.allclose(fb.action_dist[:, :, 0].sum(axis=1), 1)


def test_exact_ope_of_a_holdout_wrapped_bandit_agrees_with_monte_carlo(random_log):
    log, users = random_log
    policy = with_holdout(ThompsonChannel(exploration=1.0).fit(log), share=0.3)
    kw = {"reward": "open", "window_h": 72}
    fb = log_feedback(log, policy, users, **kw)                      # exact: no mc_draws
    dist = fb.action_dist[:, :, 0]
    assert np.allclose(dist.sum(axis=1), 1) and dist.min() >= 0
    held = fb.decisions["user_id"].astype(str).map(policy.holdout.contains).to_numpy()
    assert 0 < held.mean() < 1
    none = fb.actions.index("none")
    assert (dist[held, none] == 1).all()                             # holdout rounds: all mass on none
    assert ((dist[~held] > 0) & (dist[~held] < 1)).any(axis=1).mean() > 0.5   # the bandit's own randomness
    exact = evaluate_policy(log, policy, users, estimators=("ips", "snips"), method="normal", feedback=fb)
    sampled = evaluate_policy(log, DecideOnly(policy), users, estimators=("ips", "snips"), method="normal",
                              mc_draws=24, **kw)
    for (_, e), (_, m) in zip(exact.iterrows(), sampled.iterrows()):
        assert e["ci_low"] <= m["value"] <= e["ci_high"] and m["ci_low"] <= e["value"] <= m["ci_high"], (e, m)
