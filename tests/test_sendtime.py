"""Send-time optimisation: estimates, fallback chain, exploration propensities, the wrapper."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from omnisim.log import empty_log, validate
from omnisim.policies import (
    EmailOnly,
    check_policy,
    local_hour,
    make_context,
    sample_contexts,
)
from omnisim.policies.sendtime import (
    SendTimeOptimizer,
    SendTimePolicy,
    hour_propensity,
    local_send_slots,
)

START = datetime(2026, 1, 5, tzinfo=UTC)
USERS = pd.DataFrame({"user_id": ["u1", "u2", "u3"], "timezone": ["Europe/Paris", "Asia/Tokyo", "UTC"],
                      "segment": ["a", "a", "b"]})
NO_USERS = pd.DataFrame({"user_id": [], "timezone": []})


def sends_log(spec: list[tuple[str, str, int, int, bool]]) -> pd.DataFrame:
    """Log from ``(user, channel, day, utc_hour, opened)`` tuples, one send each."""
    rows = []
    for i, (user, ch, day, hour, opened) in enumerate(spec):
        ts = START + timedelta(days=day, hours=hour)
        rows.append({"ts": ts, "user_id": user, "event": "sent", "channel": ch, "message_id": f"m{i}"})
        if opened:
            rows.append({"ts": ts + timedelta(minutes=5), "user_id": user, "event": "opened",
                         "channel": ch, "message_id": f"m{i}"})
    return validate(pd.DataFrame(rows))


def test_local_send_slots_converts_to_user_local_hour_and_weekday():
    # 2026-01-05 is a Monday; 08:00 UTC is 09:00 in Paris, 17:00 in Tokyo
    slots = local_send_slots(sends_log([("u1", "email", 0, 8, True), ("u2", "email", 0, 8, False),
                                        ("ghost", "email", 0, 8, True)]), USERS)
    assert slots["user_id"].tolist() == ["u1", "u2"]          # unknown users dropped
    assert slots["hour"].tolist() == [9, 17]
    assert slots["weekday"].tolist() == [0, 0]
    assert slots["success"].tolist() == [True, False]


def test_user_best_hour_is_learned_and_unknowns_fall_back_along_the_chain():
    # u1 opens at 09:00 Paris (08 UTC), never at 15:00 Paris; u3 (segment b) opens at 20 UTC
    spec = [("u1", "email", d, 8, True) for d in range(30)] + \
           [("u1", "email", d, 14, False) for d in range(30)] + \
           [("u3", "email", d, 20, True) for d in range(30)] + \
           [("u3", "email", d, 3, False) for d in range(30)]
    m = SendTimeOptimizer(default_hour=10).fit(sends_log(spec), USERS)
    assert m.best_hour("u1", "email") == 9
    assert m.best_hour("u3", "email") == 20
    assert m.best_hour("new", "email", segment="b") == 20       # segment level
    # unseen channel everywhere: flat posterior -> the configured default hour
    assert m.best_hour("u1", "sms") == 10
    assert SendTimeOptimizer(default_hour=7).fit(empty_log(), NO_USERS).best_hour("x", "push") == 7


def test_shrinkage_keeps_a_single_lucky_open_from_moving_the_best_hour():
    spec = [("u2", "email", d, h, h == 9) for d in range(20) for h in (9, 2)]  # segment a: 18 Tokyo
    spec += [("u1", "email", 0, 1, True)]                                       # one open at 02 Paris
    m = SendTimeOptimizer(user_strength=20).fit(sends_log(spec), USERS)
    assert m.best_hour("u1", "email") == 18
    alpha, beta = m.posterior("u1", "email")
    assert alpha.shape == beta.shape == (24,) and np.all(alpha > 0) and np.all(beta > 0)
    # with almost no shrinkage the single open wins
    assert SendTimeOptimizer(user_strength=1e-6).fit(sends_log(spec), USERS).best_hour("u1", "email") == 2


def test_best_weekday_from_population():
    spec = [("u1", "email", d, 8, d % 7 == 2) for d in range(28)]  # Wednesdays open
    assert SendTimeOptimizer().fit(sends_log(spec), USERS).best_weekday("email") == 2


@pytest.mark.parametrize("explore", [0.0, 0.1, 1.0])
def test_hour_propensities_sum_to_one_and_match_frequencies(explore):
    assert sum(hour_propensity(h, 9, explore) for h in range(24)) == pytest.approx(1.0)
    m = SendTimeOptimizer(default_hour=9).fit(empty_log(), NO_USERS)
    pol = SendTimePolicy(EmailOnly(), m, explore=explore)
    ctx = make_context(START, "product_view", timezone="UTC")
    rng = np.random.default_rng(0)
    n = 4000
    hours = np.array([pol.choose_hour(ctx, "email", rng)[0] for _ in range(n)])
    k = int((hours == 9).sum())
    p = hour_propensity(9, 9, explore)
    half = 4 * np.sqrt(p * (1 - p) / n) + 1e-9                    # ~4 sigma band
    assert abs(k / n - p) <= half


def test_policy_moves_sends_to_best_local_hour_and_logs_propensity():
    m = SendTimeOptimizer(default_hour=9).fit(empty_log(), NO_USERS)
    pol = SendTimePolicy(EmailOnly(), m, explore=0.2)
    now = datetime(2026, 3, 28, 12, 30, tzinfo=UTC)   # Paris DST switch is the next night
    for seed in range(20):
        [d] = pol.decide(make_context(now, "product_view", timezone="Europe/Paris"),
                         np.random.default_rng(seed))
        hour = d.meta["send_hour"]
        assert d.action == f"email@{hour:02d}h" and d.policy == "sendtime(email_only@1)@1"
        assert d.send_at >= now and d.send_at - now <= timedelta(hours=24)
        assert local_hour(d.send_at, "Europe/Paris") == hour or hour == 2   # 02:00 does not exist
        assert d.propensity == pytest.approx(hour_propensity(hour, 9, 0.2))
    check_policy(pol)


def test_exempt_and_none_decisions_pass_through_unchanged():
    from omnisim.policies.base import Decision

    class Inner:
        name = "inner@1"

        def decide(self, ctx, rng):
            return [Decision("email", "email", 1.0, "inner@1", exempt=True, tag="transactional"),
                    Decision("none", "none", 1.0, "inner@1")]

    m = SendTimeOptimizer().fit(empty_log(), NO_USERS)
    out = SendTimePolicy(Inner(), m).decide(make_context(START), np.random.default_rng(0))
    assert out[0].send_at is None and out[0].action == "email"
    assert out[1].policy == "inner@1" and out[1].action == "none"


@pytest.mark.parametrize("kwargs, match", [
    ({"default_hour": 24}, r"default_hour: expected a local hour in \[0, 24\), got 24"),
    ({"user_strength": 0}, "user_strength: expected a positive number, got 0"),
    ({"channels": ("fax",)}, "channels: expected a non-empty subset of email, sms, push"),
])
def test_optimizer_rejects_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SendTimeOptimizer(**kwargs).fit(empty_log(), NO_USERS)


def test_bad_inputs_get_clear_errors():
    with pytest.raises(ValueError, match="missing column 'timezone'"):
        SendTimeOptimizer().fit(empty_log(), pd.DataFrame({"user_id": ["u1"]}))
    with pytest.raises(NotFittedError, match="not fitted"):
        SendTimeOptimizer().best_hour("u1", "email")
    m = SendTimeOptimizer().fit(empty_log(), NO_USERS)
    with pytest.raises(ValueError, match=r"explore: expected a share in \[0, 1\], got 1.5"):
        SendTimePolicy(EmailOnly(), m, explore=1.5).decide(make_context(START), np.random.default_rng(0))
    with pytest.raises(ValueError, match="channel 'web' is not modelled"):
        m.best_hour("u1", "web")


def _fitted() -> SendTimeOptimizer:
    spec = [(u, ch, d, h, (d + h) % 3 == 0) for u in ("u1", "u2", "u3") for ch in ("email", "push")
            for d in range(4) for h in (3, 8, 19)]
    return SendTimeOptimizer().fit(sends_log(spec), USERS)


@pytest.mark.parametrize("inner", ["email_only", "random_channel+pressure"])
def test_artifact_round_trip_decides_identically(inner):
    pol = SendTimePolicy(inner, _fitted(), explore=0.3)
    params, arrays = pol.to_artifact()
    json.dumps(params)                                        # JSON-able
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in arrays.values())
    back = SendTimePolicy.from_artifact(json.loads(json.dumps(params)), arrays)
    assert back.name == pol.name
    assert (back.rules is not None) == inner.endswith("+pressure")   # rules reach the engine
    ctxs = sample_contexts(40, seed=2) + [make_context(START, user_id=u, timezone=tz)
                                          for u, tz in zip(USERS.user_id, USERS.timezone)]
    for i, ctx in enumerate(ctxs):
        assert pol.decide(ctx, np.random.default_rng(i)) == back.decide(ctx, np.random.default_rng(i))


def test_artifact_nests_a_learned_inner_policy():
    from omnisim.policies import ThompsonChannel

    pol = SendTimePolicy(ThompsonChannel(), _fitted(), explore=0.1)
    params, arrays = pol.to_artifact()
    assert params["inner"]["kind"] == "bandit_ts" and "inner/A" in arrays and "model/user_k_" in arrays
    back = SendTimePolicy.from_artifact(params, arrays)
    for i, ctx in enumerate(sample_contexts(20, seed=5)):
        assert pol.decide(ctx, np.random.default_rng(i)) == back.decide(ctx, np.random.default_rng(i))


def test_sklearn_conventions():
    est = SendTimeOptimizer(default_hour=8)
    assert clone(est).get_params() == est.get_params()
    assert not any(k.endswith("_") for k in vars(est))       # __init__ stores params only
    assert est.fit(empty_log(), NO_USERS) is est
    pol = SendTimePolicy("email_only", est, explore=0.05)
    assert clone(pol).get_params()["explore"] == 0.05


# ------------------------------------------------------------------ action probabilities
def _with_inner(inner, explore=0.3) -> SendTimePolicy:
    return SendTimePolicy(inner, _fitted(), explore=explore)


@pytest.mark.parametrize("inner, explore", [("email_only", 0.3), ("email_only", 0.0), ("bandit", 0.2)])
def test_action_probabilities_match_decide_on_sample_contexts(inner, explore):
    from omnisim.policies import ThompsonChannel

    pol = _with_inner(ThompsonChannel() if inner == "bandit" else inner, explore)
    ctxs = sample_contexts(48, seed=6) + [make_context(START, user_id=u, timezone=tz)
                                          for u, tz in zip(USERS.user_id, USERS.timezone)]
    for i, ctx in enumerate(ctxs):
        probs = pol.action_probabilities(ctx)
        assert all(0.0 <= q <= 1.0 for q in probs.values()) and sum(probs.values()) == pytest.approx(1, abs=1e-9)
        ds = pol.decide(ctx, np.random.default_rng(i))
        if not ds:
            assert probs == {"none": 1.0}
            continue
        [d] = ds
        assert d.propensity == probs[d.action] > 0                       # logged = evaluated, exactly
        if d.is_message:
            assert len([a for a in probs if a.startswith(d.channel + "@")]) == (24 if explore else 1)


def test_exploration_frequencies_match_action_probabilities():
    from omnisim.policies import ThompsonChannel

    pol = _with_inner(ThompsonChannel(), explore=0.3)
    ctx = make_context(START, "product_view", user_id="u1", timezone="Europe/Paris")
    probs = pol.action_probabilities(ctx)
    assert len(probs) == 3 * 24 + 1
    n = 4000
    acts = [pol.decide(ctx, np.random.default_rng(s))[0].action for s in range(n)]
    # per channel: its best hour, any other hour; and none — binomial ~4.5 sigma bands
    best = {ch: f"{ch}@{pol.model.best_hour('u1', ch):02d}h" for ch in ("email", "sms", "push")}
    group_of = {a: a if a == "none" or a in best.values() else a.split("@")[0] + "@other" for a in probs}
    groups: dict[str, float] = {}
    for a, q in probs.items():
        groups[group_of[a]] = groups.get(group_of[a], 0.0) + q
    assert len(groups) == 7 and sum(0.02 < q < 0.98 for q in groups.values()) >= 4
    for key, p in groups.items():
        k = sum(group_of[a] == key for a in acts)
        assert abs(k / n - p) <= 4.5 * np.sqrt(p * (1 - p) / n) + 1e-9, (key, k / n, p)


def test_action_probabilities_needs_a_known_inner_distribution():
    from omnisim.policies.ope_log import policy_probabilities

    ctx = make_context(START, "product_view", user_id="u1", timezone="Europe/Paris")
    for inner in ("random_channel", "blast"):
        with pytest.raises(NotImplementedError, match="random or decides several actions"):
            _with_inner(inner).action_probabilities(ctx)
    # off-policy evaluation then falls back to sampling decide(), as for a policy without the method
    pol = _with_inner("random_channel", explore=0.0)
    sampled = policy_probabilities(pol, ctx, mc_draws=300)
    best = {ch: f"{ch}@{pol.model.best_hour('u1', ch):02d}h" for ch in ("email", "sms", "push")}
    assert set(sampled) == set(best.values()) and all(abs(q - 1 / 3) < 0.12 for q in sampled.values())


def test_declares_the_inner_policys_trigger_kinds_and_history_use():
    """The batch-contract attributes of the inner policy (docs/decision-core.md): the fast
    engine then skips triggers and history it does not need — with an identical log."""
    from omnisim.model.engine_fast import simulate
    from omnisim.model.scenario import load_scenario

    class Hidden:  # the same policy without the declarations
        def __init__(self, policy):
            self.policy, self.name = policy, policy.name

        def decide(self, ctx, rng):
            return self.policy.decide(ctx, rng)

    model = SendTimeOptimizer(default_hour=9).fit(empty_log(), NO_USERS)
    for inner, explore in (("email_only", 0.5), ("seed_journey", 0.3)):
        pol = SendTimePolicy(inner, model, explore=explore)
        assert pol.trigger_kinds == pol.inner_policy.trigger_kinds
        assert pol.reads_history == getattr(pol.inner_policy, "reads_history", None)
        runs = [simulate(load_scenario("default"), p, n_users=150, days=5, seed=2, progress=False).log
                for p in (pol, Hidden(pol))]
        pd.testing.assert_frame_equal(runs[0], runs[1])
