"""Contextual channel bandits: features, rewards, propensities, learning, artifacts, engine hook."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from omnisim.log import validate
from omnisim.policies import (
    HistoryEvent,
    LinUCBChannel,
    ThompsonChannel,
    check_policy,
    make_context,
    message_rewards,
    sample_contexts,
    with_holdout,
    with_pressure,
)
from omnisim.policies.bandits import DEFAULT_COSTS, arm_features

START = datetime(2026, 1, 5, tzinfo=UTC)


def reward_log(n: int, click: dict[str, bool], hours_apart: float = 30.0) -> pd.DataFrame:
    """``n`` rounds for one user each: a send on every channel, clicked per ``click``."""
    rows, i = [], 0
    for r in range(n):
        for ch, clicked in click.items():
            ts = START + timedelta(hours=r * hours_apart)
            user = f"u{r % 7}"
            rows.append({"ts": ts, "user_id": user, "event": "sent", "channel": ch, "message_id": f"m{i}"})
            if clicked:
                rows.append({"ts": ts + timedelta(minutes=10), "user_id": user, "event": "clicked",
                             "channel": ch, "message_id": f"m{i}"})
            i += 1
    return validate(pd.DataFrame(rows).sort_values("ts", kind="stable"))


def test_arm_features_pressure_and_recovery():
    now = START + timedelta(days=10)
    hist = [HistoryEvent(now - timedelta(days=8), "sent", "sms"),      # outside 7 d, inside 35 d
            HistoryEvent(now - timedelta(hours=48), "sent", "email"),
            HistoryEvent(now - timedelta(hours=47), "opened", "email"),
            HistoryEvent(now - timedelta(hours=24), "sent", "email")]
    x = arm_features(hist, now, ["email", "sms", "push"], tau_h=24.0)
    assert x.shape == (3, 5)
    assert np.all(x[:, 0] == 1) and np.allclose(x[:, 1], 2 / 7)
    assert x[0, 2] == pytest.approx(1 - math.exp(-1))               # email last used 24 h ago
    assert x[1, 2] == pytest.approx(1 - math.exp(-8))
    assert x[2, 2] == 1.0                                            # push never used: recovered
    assert np.allclose(x[:, 3], 1 - math.exp(-1))                    # any channel: 24 h ago
    assert x[0, 4] == pytest.approx((1 + 1) / (2 + 2)) and x[1, 4] == pytest.approx(1 / 3)


def test_message_rewards_click_unsubscribe_purchase_and_window():
    t = START
    rows = [
        (t, "a", "sent", "sms", "m1", None), (t + timedelta(hours=1), "a", "clicked", "sms", "m1", None),
        (t, "b", "sent", "email", "m2", None), (t + timedelta(hours=30), "b", "clicked", "email", "m2", None),
        (t, "c", "sent", "push", "m3", None), (t + timedelta(hours=2), "c", "unsubscribed", "push", "m3", None),
        (t, "d", "sent", "email", "m4", None), (t + timedelta(hours=3), "d", "sent", "push", "m5", None),
        (t + timedelta(hours=5), "d", "purchase", "web", None, 40.0),
    ]
    log = validate(pd.DataFrame(rows, columns=["ts", "user_id", "event", "channel", "message_id", "value"])
                   .sort_values("ts", kind="stable"))
    r = message_rewards(log, click_value=1.0, purchase_share=0.1, unsubscribe_cost=0.5,
                        reward_window_h=24).set_index("message_id")["reward"]
    assert r["m1"] == pytest.approx(1 - DEFAULT_COSTS["sms"])
    assert r["m2"] == pytest.approx(-DEFAULT_COSTS["email"])       # click after the window
    assert r["m3"] == pytest.approx(-0.5)
    assert r["m4"] == pytest.approx(-DEFAULT_COSTS["email"])       # last touch is m5
    assert r["m5"] == pytest.approx(4.0)


def _contexts_with_choice():
    return [make_context(START + timedelta(hours=i), "product_view", user_id=f"u{i}") for i in range(3)]


def _mixed_log():
    return reward_log(3, {"email": True, "sms": True, "push": False})


@pytest.mark.parametrize("make", [lambda: ThompsonChannel(),
                                  lambda: ThompsonChannel(epsilon=0.1).fit(_mixed_log()),
                                  lambda: ThompsonChannel().fit(_mixed_log()),
                                  lambda: LinUCBChannel(epsilon=0.2).fit(_mixed_log())])
def test_decide_frequencies_match_action_probabilities(make):
    pol = make()
    ctx = _contexts_with_choice()[0]
    probs = pol.action_probabilities(ctx)
    assert set(probs) == {"email", "sms", "push", "none"} and sum(probs.values()) == pytest.approx(1, abs=1e-12)
    assert sum(1 for q in probs.values() if 0.02 < q < 0.98) >= 2        # a real choice
    n = 3000
    counts = dict.fromkeys(probs, 0)
    for s in range(n):
        [d] = pol.decide(ctx, np.random.default_rng(s))
        assert d.propensity == probs[d.action]                         # logged = evaluated, exactly
        counts[d.action] += 1
    for action, p in probs.items():                                    # binomial ~4.5 sigma band
        assert abs(counts[action] / n - p) <= 4.5 * math.sqrt(p * (1 - p) / n) + 1e-9, (action, counts, probs)


@pytest.mark.parametrize("make", [ThompsonChannel, lambda: ThompsonChannel(epsilon=0.05),
                                  LinUCBChannel, lambda: LinUCBChannel(epsilon=0.0)])
def test_action_probabilities_on_sample_contexts(make):
    pol = make().fit(_mixed_log())
    for i, ctx in enumerate(sample_contexts(48, seed=3)):
        probs = pol.action_probabilities(ctx)
        assert all(0.0 <= q <= 1.0 for q in probs.values()) and sum(probs.values()) == pytest.approx(1, abs=1e-9)
        assert all(a == "none" or ctx.can_message(a) for a in probs)
        ds = pol.decide(ctx, np.random.default_rng(i))
        if not ds:
            assert probs == {"none": 1.0}                               # a trigger it does not decide on
        else:
            [d] = ds
            assert d.propensity == probs[d.action] and probs[d.action] > 0


def test_gaussian_argmax_probabilities_is_exact():
    from scipy import integrate, stats

    from omnisim.policies.bandits import gaussian_argmax_probabilities as g

    rng = np.random.default_rng(0)
    for _ in range(8):
        k = int(rng.integers(2, 5))
        m, s = rng.normal(0, 0.3, k), np.exp(rng.normal(-2, 1.5, k))   # sds over decades
        ref = []
        for i in range(k):
            def f(t, i=i, m=m, s=s):
                return stats.norm.pdf(t, m[i], s[i]) * np.prod(
                    [stats.norm.cdf(t, m[j], s[j]) for j in range(len(m)) if j != i])
            lo, hi = m[i] - 12 * s[i], m[i] + 12 * s[i]
            ref.append(integrate.quad(f, lo, hi, points=[x for x in m if lo < x < hi], limit=400,
                                      epsabs=1e-13)[0])
        assert np.allclose(g(m, s), ref, atol=2e-8, rtol=0)
    # a point mass (``none``: 0 with sd 0) wins when every Gaussian falls below it
    p = g([0.1, 0.0], [0.2, 0.0])
    assert p[1] == pytest.approx(stats.norm.cdf(-0.5)) and p.sum() == pytest.approx(1)
    assert list(g([0.3, 0.5, 0.5], [0.0, 0.0, 0.0])) == [0.0, 1.0, 0.0]   # no noise: first argmax
    assert list(g([0.0, 0.0], [0.1, 0.1])) == pytest.approx([0.5, 0.5])
    with pytest.raises(ValueError, match="sd >= 0"):
        g([0.0, 1.0], [0.1, -1.0])


def test_learns_the_clicked_channel_and_is_cost_aware():
    log = reward_log(40, {"email": False, "sms": True, "push": False})
    ctx = _contexts_with_choice()[0]
    for pol in (ThompsonChannel(), LinUCBChannel(epsilon=0.0)):
        pol.fit(log)
        acts = [pol.decide(ctx, np.random.default_rng(s))[0].action for s in range(50)]
        assert acts.count("sms") >= 45, (pol.name, acts)
    # same click rates, but sms costs more than a click is worth: email or push wins
    equal = reward_log(40, {"email": True, "sms": True, "push": True})
    pol = LinUCBChannel(epsilon=0.0, costs={"sms": 2.0}).fit(equal)
    assert pol.decide(ctx, np.random.default_rng(0))[0].action in ("email", "push")
    # nothing is worth its cost: none
    never = reward_log(40, {"email": False, "sms": False, "push": False})
    pol = LinUCBChannel(epsilon=0.0, exploration=0.0, costs={"email": 0.1, "sms": 0.1, "push": 0.1}).fit(never)
    [d] = pol.decide(ctx, np.random.default_rng(0))
    assert d.action == "none" and d.propensity == 1.0


def test_fatigue_aware_prefers_a_rested_channel():
    # sms clicks only when it was not used in the last ~day (recovery feature high)
    rows = []
    for r in range(120):
        ts = START + timedelta(hours=12 * r)
        rows.append({"ts": ts, "user_id": "u", "event": "sent", "channel": "sms", "message_id": f"m{r}"})
        if r % 3 == 0:            # every third send (36 h rest): clicked
            rows.append({"ts": ts + timedelta(minutes=5), "user_id": "u", "event": "clicked",
                         "channel": "sms", "message_id": f"m{r}"})
    pol = LinUCBChannel(epsilon=0.0, exploration=0.0, tau_h=24.0, channels=("sms",)).fit(
        validate(pd.DataFrame(rows)))
    assert pol.theta_[0, 2] > 0                     # value recovers with time since last use
    now = START + timedelta(days=100)
    tired = make_context(now, history=[HistoryEvent(now - timedelta(minutes=30), "sent", "sms")])
    rested = make_context(now, history=[HistoryEvent(now - timedelta(days=5), "sent", "sms")])
    _, m_tired, _ = pol._arms(tired)
    _, m_rested, _ = pol._arms(rested)
    assert m_rested[0] > m_tired[0]


def test_partial_fit_in_chunks_equals_fit():
    log = reward_log(30, {"email": True, "sms": False, "push": True}, hours_apart=7)
    whole = ThompsonChannel().partial_fit(log)
    chunked = ThompsonChannel()
    for part in np.array_split(np.arange(len(log)), 5):
        chunked.partial_fit(log.iloc[part])
    assert np.allclose(whole.A_, chunked.A_) and np.allclose(whole.b_, chunked.b_)
    assert whole.n_updates_.sum() > 0


def test_check_policy_and_sklearn_conventions():
    for pol in (ThompsonChannel(), LinUCBChannel()):
        check_policy(pol)
        c = clone(pol)
        assert c.get_params() == pol.get_params() and not hasattr(c, "A_")
        assert not hasattr(pol, "A_")                    # deciding did not fit anything
        assert pol.partial_fit(reward_log(3, {"sms": True})) is pol


@pytest.mark.parametrize("kwargs, match", [
    ({"channels": ("fax",)}, "channels: expected a non-empty subset"),
    ({"tau_h": 0}, "tau_h: expected a positive number, got 0"),
    ({"epsilon": 2.0}, r"epsilon: expected a probability in \[0, 1\], got 2.0"),
    ({"costs": {"sms": -1.0}}, "costs: expected non-negative"),
])
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ThompsonChannel(**kwargs).fit(reward_log(2, {"sms": True}))


def test_thompson_rejects_a_negative_exploration():
    with pytest.raises(ValueError, match="exploration: expected a number >= 0, got -0.1"):
        ThompsonChannel(exploration=-0.1).decide(_contexts_with_choice()[0], np.random.default_rng(0))


@pytest.mark.parametrize("cls", [ThompsonChannel, LinUCBChannel])
def test_artifact_round_trip_decides_identically(cls):
    pol = cls(epsilon=0.1).fit(reward_log(25, {"email": True, "sms": False, "push": True}, hours_apart=5))
    params, arrays = pol.to_artifact()
    back = cls.from_artifact(json.loads(json.dumps(params)), arrays)
    assert back.kind == pol.kind and back.name == pol.name
    for i, ctx in enumerate(sample_contexts(40, seed=1)):
        assert pol.decide(ctx, np.random.default_rng(i)) == back.decide(ctx, np.random.default_rng(i))
        assert pol.action_probabilities(ctx) == back.action_probabilities(ctx)
    # artifacts from before exact Thompson probabilities carry n_draws: still loadable
    old = cls.from_artifact({**json.loads(json.dumps(params)), "n_draws": 256}, arrays)
    assert old.get_params() == back.get_params()


def test_engine_calls_partial_fit_deterministically_through_wrappers():
    from omnisim.model.engine_simpy import simulate
    from omnisim.model.scenario import load_scenario

    sc = load_scenario("default")
    proto = with_pressure(with_holdout(ThompsonChannel(update_every_h=6.0), share=0.1))
    assert proto.update_every_h == 6.0
    a = clone(proto.policy.policy)
    b = clone(proto.policy.policy)
    ra = simulate(sc, with_pressure(with_holdout(a, 0.1)), n_users=60, days=5, seed=3, progress=False)
    rb = simulate(sc, with_pressure(with_holdout(b, 0.1)), n_users=60, days=5, seed=3, progress=False)
    pd.testing.assert_frame_equal(ra.log, rb.log)
    assert a.n_updates_.sum() > 0 and np.array_equal(a.A_, b.A_)


def test_engine_rejects_a_bad_update_cadence():
    from omnisim.model.engine_simpy import simulate
    from omnisim.model.scenario import load_scenario

    with pytest.raises(ValueError, match="update_every_h must be a positive number of hours, got -1"):
        simulate(load_scenario("default"), ThompsonChannel(update_every_h=-1), n_users=5, days=1,
                 seed=0, progress=False)
