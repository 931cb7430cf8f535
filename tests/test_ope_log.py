"""Off-policy evaluation from an engagement log: attribution, contexts, and agreement with
the truth on Hillstrom (a randomised experiment) and in the simulator (on-policy runs)."""

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from omnisim.cli import main
from omnisim.datasets import hillstrom_log
from omnisim.experiment import run_one
from omnisim.log import validate
from omnisim.policies.base import Context, Decision, no_message
from omnisim.policies.baselines import MARKETING_TRIGGERS
from omnisim.policies.ope import estimate
from omnisim.policies.ope_log import (
    FixedAction,
    OPELogError,
    channel_of_action,
    decision_rewards,
    evaluate_policy,
    log_contexts,
    log_feedback,
    train_uplift,
)
from omnisim.policies.registry import get_policy


@pytest.fixture(scope="module")
def hillstrom():
    return hillstrom_log()


def inside(row, truth):
    return row["ci_low"] <= truth <= row["ci_high"]


# ------------------------------------------------------------------ attribution


def T(h):
    return pd.Timestamp("2026-01-05T00:00Z") + pd.Timedelta(hours=h)


def tiny_log():
    rows = [
        # u1: decided email → sent m1 → opened, clicked; purchase 5 h later (value 30)
        (T(0), "u1", "product_view", "web", None, None, "product_view", None, None),
        (T(0), "u1", "decided", "email", "email", None, "product_view", 0.5, None),
        (T(0), "u1", "sent", "email", None, "m1", "product_view", None, 0.25),
        (T(1), "u1", "opened", "email", None, "m1", "product_view", None, None),
        (T(1), "u1", "clicked", "email", None, "m1", "product_view", None, None),
        (T(5), "u1", "purchase", "web", None, None, None, None, 30.0),
        # u2: decided none; a purchase at the same instant as the decision is not attributed
        (T(2), "u2", "purchase", "web", None, None, None, None, 10.0),
        (T(2), "u2", "decided", "none", "none", None, "purchase", 1.0, None),
        # u3: decided sms, sent, never opened; visit after the 24 h window
        (T(3), "u3", "decided", "sms", "sms", None, "signup", 0.25, None),
        (T(3), "u3", "sent", "sms", None, "m3", "signup", None, 0.05),
        (T(30), "u3", "visit", "web", None, None, None, None, None),
    ]
    cols = ["ts", "user_id", "event", "channel", "action", "message_id", "campaign", "propensity", "value"]
    return validate(pd.DataFrame(rows, columns=cols))


@pytest.mark.parametrize("reward, expected", [
    ("open", [1, 0, 0]), ("click", [1, 0, 0]), ("purchase", [1, 0, 0]), ("visit", [0, 0, 0]),
    ("revenue", [30 - 0.25, 0, -0.05]),
])
def test_rewards_are_attributed_to_the_right_decision(reward, expected):
    dec = decision_rewards(tiny_log(), reward, window_h=24)
    assert list(dec["user_id"]) == ["u1", "u2", "u3"]
    assert dec["reward"].tolist() == pytest.approx(expected)
    assert list(dec["message_id"].fillna("-")) == ["m1", "-", "m3"]


def test_visit_inside_a_long_window_counts():
    assert decision_rewards(tiny_log(), "visit", window_h=48)["reward"].tolist() == [0, 0, 1]


def test_contexts_are_rebuilt_from_the_log_and_users_table():
    log = tiny_log()
    users = pd.DataFrame({"user_id": ["u1", "u2", "u3"], "segment": ["a", "b", "c"],
                          "timezone": ["Europe/Paris", "UTC", "Asia/Tokyo"], "consent_email": [True, True, False],
                          "consent_sms": [False, True, True], "consent_push": [True, False, False],
                          "affinity_email": [0.9, 0.1, 0.2]})
    dec = decision_rewards(log, "click")
    ctx = log_contexts(log, dec, users)
    assert [c.trigger.kind for c in ctx] == ["product_view", "purchase", "signup"]
    assert ctx[0].traits == {"segment": "a"}  # hidden model traits (affinity) are not shown
    assert ctx[0].timezone == "Europe/Paris" and ctx[2].consent == {"email": False, "sms": True, "push": False}
    assert [h.event for h in ctx[0].history] == ["product_view"]  # rows before the decision only
    assert ctx[1].history[-1].event == "purchase"
    no_users = log_contexts(log, dec)
    assert no_users[0].consent == {"email": True, "sms": True, "push": False}  # channels decided in the log


def test_rebuilt_histories_carry_the_logs_journey_steps():
    """A journey tells its entries by the ``step`` of its own decided rows: contexts rebuilt
    from a log must carry that column, as the engines' and the sender's histories do."""
    from omnisim.model.scenario import load_scenario

    res = run_one(load_scenario("default"), get_policy("seed_journey"), seed=0, n_users=300, days=10)
    log = res.log
    dec = decision_rewards(log, "click")
    ctxs = log_contexts(log, dec, res.users)
    own = [h for c in ctxs for h in c.history if h.event == "decided" and h.campaign == "seed_journey"]
    assert own and {h.step for h in own} <= set(log["step"].dropna().astype(str))
    assert any(h.step is not None for h in own)


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("change, message", [
    (lambda log: log[log["event"] != "decided"], "no 'decided' rows"),
    (lambda log: log.assign(propensity=log["propensity"].where(log["user_id"] != "u3", 0.0)),
     "propensity must be in \\(0, 1\\]"),
    (lambda log: log.drop(columns="propensity"), "missing column"),
])
def test_bad_logs_are_refused_with_the_reason(change, message):
    with pytest.raises(OPELogError, match=message):
        decision_rewards(change(tiny_log()), "click")


def test_bad_arguments_and_random_policies_without_probabilities():
    log = tiny_log()
    with pytest.raises(OPELogError, match="reward must be one of"):
        decision_rewards(log, "likes")
    with pytest.raises(OPELogError, match="unknown estimator"):
        evaluate_policy(log, FixedAction("email"), estimators=("ipw",))
    with pytest.raises(OPELogError, match="no row for user_id 'u3'"):
        log_feedback(log, FixedAction("email"), pd.DataFrame({"user_id": ["u1", "u2"]}))
    with pytest.raises(OPELogError, match="has no action_probabilities"):
        log_feedback(log, get_policy("random_channel"))


# ------------------------------------------------------------------ Hillstrom


def test_always_mens_email_equals_the_mens_arm_mean(hillstrom):
    log, users = hillstrom
    res = evaluate_policy(log, FixedAction("mens_email"), users, reward="visit", method="normal").set_index("estimator")
    dec = decision_rewards(log, "visit")
    arms = dec.groupby("action")["reward"].mean()
    assert res.loc["snips", "value"] == pytest.approx(arms["mens_email"])  # exact: matched rows' mean
    for est in ("ips", "snips", "dr"):
        assert inside(res.loc[est], arms["mens_email"]), est
        assert not inside(res.loc[est], arms["none"]) and not inside(res.loc[est], arms["womens_email"])
    assert (res["n"] == 64_000).all() and (res["unsupported_share"] == 0).all()


def test_uplift_policy_on_held_out_hillstrom(hillstrom):
    log, users = hillstrom
    ids = users["user_id"].astype(str)
    held = set(ids[np.random.default_rng(7).random(len(ids)) < 0.3])
    train = log[~log["user_id"].astype(str).isin(held)]
    test = log[log["user_id"].astype(str).isin(held)]
    policy, metrics = train_uplift(train, users, reward="visit", top_k_pct=50, holdout_share=0.3)
    assert metrics["auuc_womens_email"] > 0
    fb = log_feedback(test, policy, users, reward="visit")
    res = evaluate_policy(test, policy, users, reward="visit", method="normal", feedback=fb).set_index("estimator")
    # the truth on randomised data: the mean outcome of held-out users whose arm matched the policy
    chosen = fb.action_dist[:, :, 0].argmax(axis=1)
    matched = fb.action == chosen
    truth = fb.reward[matched].mean()
    for est in ("ips", "snips", "dr"):
        assert inside(res.loc[est], truth), est
    none_value = fb.reward[fb.action == fb.actions.index("none")].mean()
    assert res.loc["dr", "ci_low"] > none_value  # targeting half of the users beats no e-mail


# ------------------------------------------------------------------ the simulator


@dataclass(frozen=True)
class PreferPush:
    """Push if reachable, else email, else SMS: every choice has support under random_channel."""

    name: str = "prefer_push@1"

    def decide(self, ctx: Context, rng: np.random.Generator) -> list[Decision]:
        if ctx.trigger.kind not in MARKETING_TRIGGERS:
            return []
        for ch in ("push", "email", "sms"):
            if ctx.can_message(ch):
                return [Decision(ch, ch, 1.0, self.name, campaign=ctx.trigger.kind)]
        return [no_message(self.name, campaign=ctx.trigger.kind)]


@pytest.mark.parametrize("seed", [0, 1])
def test_simulator_ope_agrees_with_the_on_policy_value(seed):
    """Log random_channel, estimate PreferPush from it, then run PreferPush itself."""
    kw = dict(n_users=400, days=14)
    logged = run_one("default", "random_channel", seed, **kw)
    policy = PreferPush()
    res = evaluate_policy(logged.log, policy, logged.users, reward="open", window_h=72,
                          method="normal").set_index("estimator")
    on = decision_rewards(run_one("default", policy, seed, **kw).log, "open", window_h=72)["reward"]
    half = 1.96 * on.std() / np.sqrt(len(on))
    naive = decision_rewards(logged.log, "open", window_h=72)["reward"].mean()
    for est in ("ips", "snips", "dr"):
        row = res.loc[est]
        assert row["ci_low"] <= on.mean() + half and on.mean() - half <= row["ci_high"], (est, row, on.mean())
        assert not inside(row, naive), (est, naive)  # the estimate is not just the logging policy's value


def test_random_policy_by_sampling_equals_its_own_logged_value():
    """random_channel evaluated (mc_draws) on its own log: the estimate is its observed mean."""
    logged = run_one("default", "random_channel", 3, n_users=300, days=10)
    fb = log_feedback(logged.log, get_policy("random_channel"), logged.users, reward="open", window_h=72,
                      mc_draws=40)
    observed = fb.reward.mean()
    ips = estimate("ips", **fb.arrays(), method="normal")
    assert ips.ci_low <= observed <= ips.ci_high
    assert np.allclose(fb.action_dist.sum(axis=1), 1)


def test_action_map_compares_channels_only():
    log = tiny_log()
    hourly = log_feedback(log, FixedAction("email@09h"), reward="open", action_map=channel_of_action)
    plain = log_feedback(log, FixedAction("email"), reward="open")
    assert hourly.actions == plain.actions and np.array_equal(hourly.action_dist, plain.action_dist)
    unmapped = log_feedback(log, FixedAction("email@09h"), reward="open")
    assert unmapped.unsupported_share == 1.0  # the log never took "email@09h"


# ------------------------------------------------------------------ CLI


def test_cli_ope_on_a_hillstrom_sample(tmp_path, hillstrom):
    log, users = hillstrom
    keep = set(users["user_id"].astype(str)[:6000])
    log[log["user_id"].astype(str).isin(keep)].to_csv(tmp_path / "h.csv", index=False)
    users[users["user_id"].astype(str).isin(keep)].to_parquet(tmp_path / "h_users.parquet")
    r = CliRunner().invoke(main, ["ope", "--log", str(tmp_path / "h.csv"), "--policy", "always:mens_email",
                                  "--reward", "visit", "--estimators", "ips,snips", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert [o["estimator"] for o in out] == ["ips", "snips"] and out[0]["n"] == 6000
    assert 0.1 < out[1]["value"] < 0.3
    tiny_log().to_csv(tmp_path / "tiny.csv", index=False)
    r = CliRunner().invoke(main, ["ope", "--log", str(tmp_path / "tiny.csv"), "--policy", "random_channel"])
    assert r.exit_code == 2 and "action_probabilities" in r.output
    r = CliRunner().invoke(main, ["ope", "--log", str(tmp_path / "tiny.csv"), "--policy", "email_only",
                                  "--estimators", "ips", "--reward", "open"])
    assert r.exit_code == 0 and "email_only@1" in r.output and "ips" in r.output, r.output
    r = CliRunner().invoke(main, ["ope", "--log", str(tmp_path / "nope.csv"), "--policy", "blast"])
    assert r.exit_code == 2 and "nope.csv" in r.output


# ------------------------------------------------------------------ exact probabilities of learned policies


@dataclass(frozen=True)
class DecideOnly:
    """A policy seen through ``decide`` only (no ``action_probabilities``): OPE must sample it."""

    policy: object

    @property
    def name(self) -> str:
        return self.policy.name

    def decide(self, ctx: Context, rng: np.random.Generator) -> list[Decision]:
        return self.policy.decide(ctx, rng)


@pytest.fixture(scope="module")
def random_log():
    r = run_one("default", "random_channel", 5, n_users=150, days=8)
    return r.log, r.users


def _learned(kind, log, users):
    from omnisim.policies import (
        BudgetPolicy,
        EngagementRatioChannel,
        LinUCBChannel,
        SendTimeOptimizer,
        SendTimePolicy,
        ThompsonChannel,
    )

    return {
        "ts": lambda: ThompsonChannel(exploration=1.0).fit(log),
        "linucb": lambda: LinUCBChannel(epsilon=0.3).fit(log),
        "sendtime": lambda: SendTimePolicy(ThompsonChannel(exploration=1.0).fit(log),
                                           SendTimeOptimizer().fit(log, users), explore=0.5),
        "budget": lambda: BudgetPolicy(threshold_max=0.0).fit(log, users),
        "ratio": lambda: EngagementRatioChannel(),
    }[kind]()


@pytest.mark.parametrize("kind", ["ts", "linucb", "sendtime", "budget", "ratio"])
def test_learned_policies_are_evaluated_exactly_and_agree_with_sampling(random_log, kind):
    log, users = random_log
    policy = _learned(kind, log, users)
    amap = channel_of_action if kind in ("sendtime", "budget") else None
    kw = {"reward": "open", "window_h": 72, "action_map": amap}
    fb = log_feedback(log, policy, users, **kw)                     # no mc_draws needed any more
    dist = fb.action_dist[:, :, 0]
    assert np.allclose(dist.sum(axis=1), 1) and dist.min() >= 0 and fb.unsupported_share < 0.2
    random_policy = kind in ("ts", "linucb", "sendtime")
    assert (((dist > 0) & (dist < 1)).any(axis=1).mean() > 0.5) == random_policy
    exact = evaluate_policy(log, policy, users, estimators=("ips", "snips"), method="normal", feedback=fb)
    sampled = evaluate_policy(log, DecideOnly(policy), users, estimators=("ips", "snips"), method="normal",
                              mc_draws=24 if random_policy else 0, **kw)
    for (_, e), (_, m) in zip(exact.iterrows(), sampled.iterrows()):
        assert e["ci_low"] <= m["value"] <= e["ci_high"] and m["ci_low"] <= e["value"] <= m["ci_high"], (e, m)
        if not random_policy:
            assert e["value"] == pytest.approx(m["value"])            # deterministic: the same arrays


def test_pressure_wrapper_passes_exact_probabilities_through():
    from omnisim.policies.bandits import LinUCBChannel
    from omnisim.policies.check import sample_contexts
    from omnisim.policies.pressure import with_pressure

    inner = LinUCBChannel(epsilon=0.2)
    wrapped = with_pressure(inner)
    for ctx in sample_contexts(30, seed=4):
        assert wrapped.action_probabilities(ctx) == inner.action_probabilities(ctx)
    from omnisim.policies.baselines import EmailOnly

    with pytest.raises(NotImplementedError):
        with_pressure(EmailOnly()).action_probabilities(sample_contexts(1, seed=0)[0])


def test_vectorised_send_linking_equals_the_row_by_row_walk():
    """``_fifo_links`` pairs the i-th decision with the i-th end row per key and falls back
    to the walk only for keys where that pairing breaks; both must give the same links."""
    from omnisim.policies.ope_log import _fifo_links, _fifo_walk

    t = lambda h: pd.Timestamp("2024-03-01", tz="UTC") + pd.Timedelta(hours=h)  # noqa: E731
    # key 0: regular (decide, end) pairs, one suppressed; key 1: a decision that never ends
    # within the window, then a pair; key 2: an end row before any decision
    dec = [(0, 0.0, "d0"), (0, 5.0, "d1"), (0, 9.0, "d2"), (1, 0.0, "d3"), (1, 60.0, "d4"),
           (2, 3.0, "d5")]
    end = [(0, 1.0, 2, "m0"), (0, 6.0, 1, None), (0, 9.0, 2, "m2"), (1, 61.0, 2, "m4"),
           (2, 1.0, 2, "x"), (2, 4.0, 2, "m5")]
    left = pd.DataFrame({"ts": [t(h) for _, h, _ in dec], "k": [k for k, _, _ in dec], "is_end": 0,
                         "end": 0, "row": [r for _, _, r in dec], "mid": pd.NA})
    right = pd.DataFrame({"ts": [t(h) for _, h, _, _ in end], "k": [k for k, *_ in end], "is_end": 1,
                          "end": [e for _, _, e, _ in end], "row": None,
                          "mid": pd.array([m for *_, m in end], dtype="string")})
    window = pd.Timedelta(hours=48)
    walked = _fifo_walk(left, right, window)
    assert walked == {"d0": "m0", "d2": "m2", "d4": "m4", "d5": "m5"}
    assert _fifo_links(left, right, window) == walked


def test_a_single_logged_decision_gives_no_interval_and_dr_says_why():
    """One decided row: IPS / SNIPS have a value but no interval (it was zero-width, [v, v]);
    DR cannot cross-fit its reward model and says so (it was scikit-learn's KFold error)."""
    from omnisim.policies.ope import OPEInputError

    log = tiny_log()
    one = log[log["user_id"] == "u1"].reset_index(drop=True)
    res = evaluate_policy(one, FixedAction("email"), reward="click", estimators=("ips", "snips"),
                          method="normal").set_index("estimator")
    assert (res["n"] == 1).all() and res.loc["ips", "value"] == pytest.approx(2.0)
    assert res[["ci_low", "ci_high"]].isna().all().all(), res
    with pytest.raises(OPEInputError, match="1 round.*n_folds=2"):
        evaluate_policy(one, FixedAction("email"), reward="click", estimators=("dr",))
