"""The learned policies, proven in the simulator (small sizes, fixed seeds, CIs over seeds).

Each comparison runs the policies on the same seeds (common random numbers) and asserts that
the lower end of the 95 % t-interval of the per-seed difference is above zero. Numbers from
these runs and from bigger ones are in docs/learning.md.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd
import yaml
from sklearn.base import clone

from omnisim.log import empty_log
from omnisim.metrics import log_metrics
from omnisim.model.engine_fast import simulate as simulate_fast
from omnisim.model.engine_simpy import simulate
from omnisim.model.scenario import Scenario, load_scenario
from omnisim.policies import (
    Blast,
    BudgetPolicy,
    EngagementRatioChannel,
    LinUCBChannel,
    RandomChannel,
    SendTimeOptimizer,
    SendTimePolicy,
    ThompsonChannel,
    message_rewards,
)
from omnisim.policies.budget import week_start
from omnisim.stats import mean_ci

NO_USERS = pd.DataFrame({"user_id": [], "timezone": []})
#: First seed of the send-time comparison (other bases checked: see its docstring).
SEED_BASE = 0


def fixed_hour(hour: float) -> SendTimeOptimizer:
    """An optimizer fitted on nothing: every user's best hour is ``hour`` (the fallback)."""
    return SendTimeOptimizer(default_hour=hour).fit(empty_log(), NO_USERS)


def paired(a: list[float], b: list[float]) -> tuple[float, float, float]:
    return mean_ci(np.asarray(a) - np.asarray(b))


def test_sendtime_beats_fixed_10h_on_opens_and_conversions():
    """Learned local send hour vs every email at 10:00 local: more opens and more conversions.

    Scenario variant: email ``timing_weight`` 0.9 (the local send hour matters more, as the
    open-probability timing term of docs/model.md allows). Fast engine, 15 paired seeds ×
    4000 users × 14 days (~40 s on one core). The conversions asserted are ``click_conversions``
    (purchases attributed, last touch, to a *clicked* message within 72 h): +1.9 per 1000
    users (+39 %) at 200 seeds × 10,000 users. The send-attributed ``conversions`` gain is
    real but smaller than their noise at this size (+1.4 per 1000 users on ~51, most of them
    organic purchases that merely follow an email; CI clear of 0 only at ~10⁶ users per arm,
    benchmarks/bench_sendtime.py and docs/learning.md), so they are printed, not asserted.

    Not a lucky seed base: over 8 disjoint bases of 15 seeds (seeds 0-119, 4000 users) every
    lower bound of the click-conversion gain was above 0 — from 2.3 to 6.5 per run for
    means of 6.1 to 10.7 (this base, 0: 9.3 [6.5, 12.1]) — and of the opens gain above 870.
    With 12 seeds one base in 10 had its lower bound below 0: do not shrink the sizes.
    """
    sc = load_scenario("default").replace(channels={"email": {"timing_weight": 0.9}})
    explore = simulate_fast(sc, SendTimePolicy("email_only", fixed_hour(10), explore=1.0),
                            n_users=1500, days=21, seed=1000, progress=False)
    # simulated user ids restart at u000001 in every run: prefix the fit run's, or evaluation
    # user u000123 would get the counts (and the segment) of an unrelated fit user
    fit_log = explore.log.assign(user_id="fit-" + explore.log["user_id"].astype(str))
    fit_users = explore.users.assign(user_id="fit-" + explore.users["user_id"].astype(str))
    model = SendTimeOptimizer().fit(fit_log, fit_users)
    learned = SendTimePolicy("email_only", model, explore=0.0)
    fixed = SendTimePolicy("email_only", fixed_hour(10), explore=0.0)
    out: dict[str, list[list[float]]] = {k: [] for k in ("open_rate", "opens", "click_conversions",
                                                         "conversions", "purchases")}
    for seed in range(SEED_BASE, SEED_BASE + 15):
        ma, mb = (log_metrics(simulate_fast(sc, pol, n_users=4000, days=14, seed=seed, progress=False).log,
                              days=14) for pol in (learned, fixed))
        for k, rows in out.items():
            rows.append([ma[k], mb[k]])
    diffs = {k: paired(*np.asarray(v).T) for k, v in out.items()}
    print("sendtime - fixed 10h (per run of 4000 users):", {k: np.round(v, 4).tolist() for k, v in diffs.items()})
    assert diffs["open_rate"][1] > 0, diffs
    assert diffs["opens"][1] > 0, diffs
    assert diffs["click_conversions"][1] > 0, diffs


def _all_reachable_scenario() -> Scenario:
    """Everyone reachable on every channel (so every decision is a real choice) and SMS
    click-through 0.3 instead of 0.08, so that the best arm is learnable in 14 days × 200
    users (in the default scenario the channels' rewards differ by less than the noise of
    such a run; docs/learning.md)."""
    data = yaml.safe_load((resources.files("omnisim") / "builtin" / "scenarios" / "default.yaml").read_text())
    for seg in data["population"]["segments"]:
        seg["reach"] = {c: 1.0 for c in ("email", "sms", "push")}
        seg["consent"] = {c: 1.0 for c in ("email", "sms", "push")}
    data["channels"]["sms"]["click_prob"] = 0.3
    return Scenario.from_dict(data)


def reward_last_third(log: pd.DataFrame) -> float:
    """Reward (clicks − unsubscribe penalty − cost) per decision in the run's last third."""
    cut = log["ts"].min() + (log["ts"].max() - log["ts"].min()) * 2 / 3
    r = message_rewards(log)
    decisions = int(((log["event"] == "decided") & (log["ts"] >= cut)).sum())
    return float(r.loc[r["ts"] >= cut, "reward"].sum()) / max(decisions, 1)


def test_bandits_learn_to_beat_random_channel_and_are_compared_with_the_ratio_chooser():
    sc = _all_reachable_scenario()
    policies = {"bandit_ts": ThompsonChannel(), "bandit_linucb": LinUCBChannel(),
                "random": RandomChannel(), "ratio": EngagementRatioChannel()}
    scores: dict[str, list[float]] = {k: [] for k in policies}
    for seed in range(3):
        for name, proto in policies.items():
            pol = clone(proto) if hasattr(proto, "get_params") else proto
            scores[name].append(reward_last_third(
                simulate(sc, pol, n_users=200, days=14, seed=seed, progress=False).log))
    res = {k: paired(v, scores["random"]) for k, v in scores.items() if k != "random"}
    print("reward/decision, last third:", {k: round(float(np.mean(v)), 4) for k, v in scores.items()})
    print("minus random_channel:", {k: np.round(v, 4).tolist() for k, v in res.items()})
    assert res["bandit_ts"][1] > 0, res
    assert res["bandit_linucb"][1] > 0, res
    assert np.mean(scores["bandit_ts"]) > np.mean(scores["ratio"])


def test_budget_policy_respects_the_weekly_budget_and_beats_blast():
    # Revenue − cost is noisy at test sizes (purchases are rare and lognormal): the test
    # asserts the hard budget, the harm reduction with a CI, and revenue − cost ahead on
    # these seeds; docs/learning.md has the CI from a bigger run.
    sc = load_scenario("default")
    explore = simulate(sc, SendTimePolicy("random_channel", fixed_hour(10), explore=1.0),
                       n_users=300, days=14, seed=1000, progress=False)
    budget = BudgetPolicy(weekly_budget=3).fit(explore.log, explore.users)
    out: dict[str, list[list[float]]] = {"revenue_minus_cost": [], "unsubscribes": []}
    for seed in range(4):
        runs = {name: simulate(sc, pol, n_users=300, days=14, seed=seed, progress=False)
                for name, pol in (("budget", budget), ("blast", Blast()))}
        metrics = [log_metrics(r.log, r.users, days=14) for r in runs.values()]
        for k, rows in out.items():
            rows.append([m[k] for m in metrics])
        res = runs["budget"]
        sent = res.log[res.log["event"] == "sent"].merge(res.users[["user_id", "timezone"]])
        weeks = [week_start(t.to_pydatetime(), tz) for t, tz in zip(sent["ts"], sent["timezone"])]
        per_week = sent.assign(week=weeks).groupby(["user_id", "week"]).size()
        assert per_week.max() <= 3, per_week[per_week > 3]
    diffs = {k: paired(*np.asarray(v).T) for k, v in out.items()}
    print("budget - blast:", {k: np.round(v, 1).tolist() for k, v in diffs.items()})
    assert diffs["unsubscribes"][2] < 0, diffs
    assert diffs["revenue_minus_cost"][0] > 0, diffs
