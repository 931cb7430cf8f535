"""omnisim.analysis: attribution rules, funnel, intervals and lifts on small hand-made logs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from omnisim import analysis as A
from omnisim.log import validate

T0 = pd.Timestamp("2024-03-01T09:00Z")


def _t(**kw) -> str:
    return (T0 + pd.Timedelta(**kw)).isoformat() if kw else T0.isoformat()


def sim_log() -> pd.DataFrame:
    """A simulator-like log: email / sms / push, no holdout, message ids only on message events."""
    rows = [
        # u1: email decision → sent → opened → clicked → visit → purchase 50
        (_t(), "u1", "decided", "email", "email", None, None),
        (_t(minutes=1), "u1", "sent", "email", None, "m1", None),
        (_t(hours=1), "u1", "opened", "email", None, "m1", None),
        (_t(hours=2), "u1", "clicked", "email", None, "m1", None),
        (_t(hours=3), "u1", "visit", "web", None, None, None),
        (_t(hours=4), "u1", "purchase", "web", None, None, 50.0),
        # u2: sms sent and delivered; a visit 20 days later is outside the 14-day window
        (_t(), "u2", "decided", "sms", "sms", None, None),
        (_t(minutes=1), "u2", "sent", "sms", None, "m2", None),
        (_t(minutes=2), "u2", "delivered", "sms", None, "m2", None),
        (_t(days=20), "u2", "visit", "web", None, None, None),
        # u3: push decided but suppressed; a purchase a day later still follows the decision
        (_t(), "u3", "decided", "push", "push", None, None),
        (_t(), "u3", "suppressed", "push", None, None, None),
        (_t(days=1), "u3", "purchase", "web", None, None, 20.0),
        # u4: email, then sms two days later; the open of the email (by message id) goes to
        # the email decision, the visit (no message id) to the latest decision, the sms
        (_t(), "u4", "decided", "email", "email", None, None),
        (_t(minutes=1), "u4", "sent", "email", None, "m4", None),
        (_t(days=2), "u4", "decided", "sms", "sms", None, None),
        (_t(days=2, minutes=1), "u4", "sent", "sms", None, "m5", None),
        (_t(days=3), "u4", "opened", "email", None, "m4", None),
        (_t(days=3), "u4", "visit", "web", None, None, None),
        # u5: a visit before any decision is not attributed; an email decision with no send
        (_t(hours=-5), "u5", "visit", "web", None, None, None),
        (_t(days=1), "u5", "decided", "email", "email", None, None),
    ]
    df = pd.DataFrame(rows, columns=["ts", "user_id", "event", "channel", "action", "message_id", "value"])
    df["campaign"] = "welcome"
    df["policy"] = "rules_v1"
    df.loc[df["event"] == "decided", "propensity"] = 1.0
    return validate(df.sort_values("ts", kind="stable"))


def test_decision_outcomes_attribution():
    units = A.decision_outcomes(sim_log(), 14)
    assert len(units) == 6
    by = units.set_index(["user_id", "action"])
    assert list(units.columns[units.columns.isin(A.FUNNEL_STAGES)]) == [
        "decided", "sent", "delivered", "opened", "clicked", "visit", "purchase"]
    assert by.loc[("u1", "email"), ["sent", "opened", "clicked", "visit", "purchase"]].all()
    assert by.loc[("u1", "email"), "value"] == 50.0
    assert by.loc[("u2", "sms"), ["sent", "delivered"]].all() and not by.loc[("u2", "sms"), "visit"]
    assert by.loc[("u3", "push"), "purchase"] and not by.loc[("u3", "push"), "sent"]
    assert by.loc[("u3", "push"), "value"] == 20.0
    assert by.loc[("u4", "email"), "opened"] and not by.loc[("u4", "email"), "visit"]
    assert by.loc[("u4", "sms"), "visit"] and by.loc[("u4", "sms"), "sent"] and not by.loc[("u4", "sms"), "opened"]
    assert not by.loc[("u5", "email"), ["sent", "visit"]].any()


def test_outcome_window_is_inclusive_and_configurable():
    log = sim_log()
    assert A.decision_outcomes(log, 20)["visit"].sum() == 3  # u2's visit 20 days later now counts
    short = A.decision_outcomes(log, 4 / 24).set_index("user_id")  # 4 hours, inclusive
    assert short.loc["u1", "purchase"]  # exactly 4 hours after the decision: counts
    assert not short.loc["u3", "purchase"]  # a day later: does not


def test_funnel_counts():
    fun = A.funnel(sim_log(), by=["channel"])
    expected = pd.DataFrame({
        "channel": ["email", "push", "sms"], "decided": [3, 1, 2], "sent": [2, 0, 2], "delivered": [0, 0, 1],
        "opened": [2, 0, 0], "clicked": [1, 0, 0], "visit": [1, 0, 1], "purchase": [1, 1, 0],
    })
    pd.testing.assert_frame_equal(fun.reset_index(drop=True), expected, check_dtype=False)


def test_filters():
    log = sim_log()
    assert set(A.decision_outcomes(log, channels=["email"])["channel"]) == {"email"}
    assert len(A.decision_outcomes(log, start="2024-03-02")) == 2  # u5 email (day 1) and u4 sms (day 2)
    assert len(A.decision_outcomes(log, end="2024-03-01")) == 4
    with pytest.raises(ValueError, match="no decisions left after filtering"):
        A.decision_outcomes(log, channels=["web"])
    with pytest.raises(ValueError, match="start 'yesterday' is not a date"):
        A.decision_outcomes(log, start="yesterday")
    with pytest.raises(ValueError, match="no 'decided' rows"):
        A.decision_outcomes(log[log["event"] != "decided"])


def test_lift_without_baseline_is_empty():
    lift = A.lift_table(sim_log(), "visit", 0.95)
    assert lift.empty and list(lift.columns) == list(A.LIFT_COLUMNS)
    assert not A.lift_table(sim_log(), "visit", 0.95, baseline="email").empty


@pytest.mark.parametrize("k, n", [(0, 10), (3, 10), (10, 10), (267, 21307), (1, 1)])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_wilson_matches_scipy(k, n, confidence):
    lo, hi = A.wilson_interval(k, n, confidence)
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    assert (lo, hi) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_mean_interval_matches_scipy():
    x = np.random.default_rng(1).exponential(3.0, size=50)
    m, sd, lo, hi = A.mean_interval(x, 0.9)
    assert (lo, hi) == pytest.approx(stats.t.interval(0.9, 49, loc=x.mean(), scale=stats.sem(x)))
    assert sd == pytest.approx(x.std(ddof=1))
    assert math.isnan(A.mean_interval([1.0])[2])


def test_rates_and_lift_against_hand_computation():
    rng = np.random.default_rng(7)
    n = 400
    action = rng.choice(["a", "b", "none"], size=n)
    p = np.select([action == "a", action == "b"], [0.3, 0.2], 0.1)
    visit = rng.random(n) < p
    spend = np.where(visit, rng.exponential(40, n), 0.0)
    users = [f"u{i}" for i in range(n)]
    dec = pd.DataFrame({"ts": T0, "user_id": users, "event": "decided",
                        "channel": np.where(action == "none", "none", "email"), "action": action})
    vis = pd.DataFrame({"ts": T0 + pd.Timedelta(days=1), "user_id": np.array(users)[visit], "event": "visit",
                        "channel": "web"})
    pur = vis.assign(event="purchase", value=spend[visit])
    log = validate(pd.concat([dec, vis, pur], ignore_index=True))
    rates = A.rates_with_ci(log, "visit", by=["action"], confidence=0.95).set_index("action")
    for a in ("a", "b", "none"):
        assert rates.loc[a, "successes"] == visit[action == a].sum()
        assert rates.loc[a, "n"] == (action == a).sum()
    lift = A.lift_table(log, "visit", 0.95).set_index("action")
    p1, p0 = visit[action == "a"].mean(), visit[action == "none"].mean()
    n1, n0 = (action == "a").sum(), (action == "none").sum()
    se = math.sqrt(p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0)
    assert lift.loc["a", "diff"] == pytest.approx(p1 - p0)
    assert (lift.loc["a", "lo"], lift.loc["a", "hi"]) == pytest.approx((p1 - p0 - 1.959963984540054 * se,
                                                                        p1 - p0 + 1.959963984540054 * se))
    lv = A.lift_table(log, "value", 0.9).set_index("action")
    ci = stats.ttest_ind(spend[action == "b"], spend[action == "none"], equal_var=False).confidence_interval(0.9)
    assert (lv.loc["b", "lo"], lv.loc["b", "hi"]) == pytest.approx((ci.low, ci.high))


def test_breakdown_levels_and_errors():
    log = sim_log()
    users = pd.DataFrame({"user_id": ["u1", "u2", "u3", "u4"], "tier": ["gold", "gold", "silver", "silver"]})
    t = A.breakdown(log, users, "tier", "visit")
    assert set(t["tier"]) == {"gold", "silver", "(none)"}  # u5 is not in the users table
    with pytest.raises(ValueError, match="group_by 'age' is not a column of the users table; available: tier"):
        A.breakdown(log, users, "age", "visit")
    with pytest.raises(ValueError, match="unknown outcome 'opens'"):
        A.rates_with_ci(log, "opens")


def test_deferred_send_goes_to_the_decision_on_its_channel():
    """email decided, deferred; a later 'none' decision must not take the email's send."""
    rows = [
        (_t(), "u1", "decided", "email", "email", None),
        (_t(), "u1", "deferred", "email", None, None),
        (_t(hours=1), "u1", "decided", "none", "none", None),
        (_t(hours=8), "u1", "sent", "email", None, "m1"),
        (_t(hours=9), "u1", "opened", "email", None, "m1"),
        (_t(hours=10), "u1", "visit", "web", None, None),
    ]
    log = validate(pd.DataFrame(rows, columns=["ts", "user_id", "event", "channel", "action", "message_id"]))
    units = A.decision_outcomes(log).set_index("action")
    assert units.loc["email", "sent"] and units.loc["email", "opened"]
    assert not units.loc["none", "sent"] and not units.loc["none", "opened"]
    assert units.loc["none", "visit"] and not units.loc["email", "visit"]  # last touch for behaviour


def test_presentable_formats_rates_and_lifts():
    rates = A.presentable(A.rates_with_ci(sim_log(), "opened", by=["channel"], confidence=0.9))
    assert list(rates["estimate"]) == ["66.67 %", "0.00 %", "0.00 %"]
    assert "90% CI" in rates.columns and rates["90% CI"].iloc[1].startswith("[0.00 %, ")
    lift = A.presentable(A.lift_table(sim_log(), "value", baseline="email"))
    assert set(lift["action"]) == {"push", "sms"} and lift["diff"].str.match(r"^[+-]\d").all()


# --------------------------------------------------------------------------- one home for intervals

def test_analysis_intervals_are_the_stats_ones():
    from omnisim import stats as S

    for k, n in [(0, 10), (3, 10), (10, 10), (267, 21307)]:
        assert A.wilson_interval(k, n, 0.9) == S.wilson_ci(k, n, 0.9)[1:]
    x = np.random.default_rng(3).normal(size=30)
    assert A.mean_interval(x, 0.9) == S.mean_sd_ci(x, 0.9)
    vec = S.wilson_ci(np.array([0, 3, 10]), np.array([10, 10, 10]))
    assert vec[1][0] == 0.0 and vec[2][2] == 1.0 and np.isnan(S.wilson_ci(0, 0)[0])


def test_welch_and_wald_against_scipy():
    from omnisim import stats as S

    rng = np.random.default_rng(5)
    a, b = rng.exponential(2.0, 80), rng.exponential(1.5, 120)
    d, lo, hi, p = S.welch_diff_ci(a, b, 0.9)
    res = stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(0.9)
    assert (d, lo, hi, p) == pytest.approx((a.mean() - b.mean(), ci.low, ci.high, res.pvalue))
    d, lo, hi, p = S.wald_diff_ci(30, 100, 20, 120, 0.95)
    p1, p0 = 0.3, 20 / 120
    se = math.sqrt(p1 * (1 - p1) / 100 + p0 * (1 - p0) / 120)
    assert (lo, hi) == pytest.approx((p1 - p0 - 1.959964 * se, p1 - p0 + 1.959964 * se), rel=1e-6)
    assert p == pytest.approx(2 * stats.norm.sf((p1 - p0) / se))


def test_mean_ci_from_sums_equals_mean_sd_ci():
    from omnisim import stats as S

    x = np.random.default_rng(9).gamma(2.0, 3.0, 57)
    m, sd, lo, hi = S.mean_ci_from_sums(len(x), x.sum(), (x ** 2).sum(), 0.95)
    assert (m, sd, lo, hi) == pytest.approx(S.mean_sd_ci(x, 0.95))
    assert np.isnan(S.mean_ci_from_sums(1, 2.0, 4.0)[2]) and np.isnan(S.mean_ci_from_sums(0, 0.0, 0.0)[0])
    with pytest.raises(ValueError, match="confidence"):
        S.mean_ci_from_sums(3, 1, 1, confidence=95)


def test_users_csv_keeps_user_ids_as_text(tmp_path):
    """Ids like 00123 must stay 00123 (the log reads them as text); a users CSV read with
    inferred types made them 123, and no user of the log matched its row."""
    from omnisim.cli_calibrate import _read_users

    path = tmp_path / "users.csv"
    path.write_text("user_id,segment,timezone\n00123,a,UTC\n123,b,UTC\n")
    users = A.load_users(path)
    assert users["user_id"].tolist() == ["00123", "123"]  # two users, not a duplicate 123
    assert _read_users(path)["user_id"].tolist() == ["00123", "123"]
