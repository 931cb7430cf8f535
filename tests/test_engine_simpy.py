"""The SimPy reference engine: valid logs, causality, consent, determinism, calibration,
fatigue effects, and the decision-core contract (follow-ups, pressure-rule admissions)."""

import math
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from omnisim.log import validate
from omnisim.model.engine_simpy import simulate
from omnisim.model.scenario import load_scenario
from omnisim.policies.base import Decision, FollowUp, no_message

Z99 = stats.norm.ppf(0.995)


class OnTrigger:
    """Test policy: ``k`` messages on ``channel`` at every ``trigger`` (propensity 1)."""

    def __init__(self, channel="email", trigger="product_view", k=1, ignore_consent=False):
        self.channel, self.trigger, self.k, self.ignore_consent = channel, trigger, k, ignore_consent
        self.name = f"on_{trigger}_{channel}x{k}@test"

    def decide(self, ctx, rng):
        if ctx.trigger.kind != self.trigger:
            return []
        if not self.ignore_consent and not ctx.can_message(self.channel):
            return [no_message(self.name, reason="no_consent")]
        return [Decision(action=self.channel, channel=self.channel, propensity=1.0,
                         policy=self.name, campaign="test") for _ in range(self.k)]


@pytest.fixture(scope="module")
def small():
    return load_scenario("default").replace(n_users=300, days=14, seed=7)


@pytest.fixture(scope="module")
def run_blast(small):
    class AllChannels(OnTrigger):
        def decide(self, ctx, rng):
            if ctx.trigger.kind not in ("product_view", "cart_abandon", "inactivity"):
                return []
            return [Decision(action=ch, channel=ch, propensity=1.0, policy="all@test",
                             campaign=ctx.trigger.kind) for ch in ("email", "sms", "push")]
    return simulate(small, AllChannels(ignore_consent=True), progress=False)


def test_log_is_valid_and_complete(run_blast):
    log = validate(run_blast.log)
    ev = set(log["event"].astype(str))
    for e in ("decided", "sent", "delivered", "opened", "clicked", "visit", "product_view",
              "cart_add", "cart_abandon", "purchase", "suppressed"):
        assert e in ev, e
    assert (log["ts"] >= pd.Timestamp("2026-01-05", tz="UTC")).all()
    assert (log["ts"] < pd.Timestamp("2026-01-19", tz="UTC")).all()
    assert log["ts"].is_monotonic_increasing
    dec = log[log["event"] == "decided"]
    assert dec["propensity"].notna().all() and dec["policy"].notna().all()
    sent = log[log["event"] == "sent"]
    assert sent["message_id"].is_unique and sent["campaign"].notna().all()
    assert (sent["value"] >= 0).all()
    assert (log.loc[log["event"] == "purchase", "value"] > 0).all()
    assert len(run_blast.users) == 300 and run_blast.users["user_id"].is_unique


def test_message_events_follow_their_send(run_blast):
    log = run_blast.log
    sent = log[log["event"] == "sent"].set_index("message_id")
    for event in ("delivered", "opened", "clicked", "bounced", "unsubscribed"):
        rows = log[log["event"] == event]
        assert rows["message_id"].isin(sent.index).all()
        t_sent = sent.loc[rows["message_id"], "ts"].to_numpy()
        assert (rows["ts"].to_numpy() >= t_sent).all(), event
        assert (rows["channel"].to_numpy() == sent.loc[rows["message_id"], "channel"].to_numpy()).all()
    opened = log[log["event"] == "opened"].set_index("message_id")["ts"]
    clicked = log[log["event"] == "clicked"].set_index("message_id")["ts"]
    assert clicked.index.isin(opened.index).all()
    assert (clicked.to_numpy() >= opened.loc[clicked.index].to_numpy()).all()
    assert not log.loc[log["event"].isin(["sent", "opened"]), "message_id"].isna().any()


def test_no_sends_without_consent(run_blast):
    log, users = run_blast.log, run_blast.users.set_index("user_id")
    sent = log[log["event"] == "sent"]
    for ch in ("email", "sms", "push"):
        s = sent[sent["channel"] == ch]
        assert users.loc[s["user_id"], f"consent_{ch}"].all(), ch
    # the policy ignored consent: the engine suppressed instead of sending
    sup = log[(log["event"] == "suppressed") & (log["reason"] == "no_consent")]
    assert len(sup) > 0
    # nothing is sent on a channel after the user unsubscribed from it
    uns = log[log["event"] == "unsubscribed"][["user_id", "channel", "ts"]]
    m = sent.merge(uns, on=["user_id", "channel"], suffixes=("", "_unsub"))
    assert (m["ts"] <= m["ts_unsub"]).all()


def test_same_seed_same_log_different_seed_different_log(small):
    pol = OnTrigger()
    a = simulate(small.replace(n_users=120), pol, progress=False)
    b = simulate(small.replace(n_users=120), pol, progress=False)
    pd.testing.assert_frame_equal(a.log, b.log)
    pd.testing.assert_frame_equal(a.users, b.users)
    c = simulate(small.replace(n_users=120), pol, seed=8, progress=False)
    assert len(a.log) != len(c.log) or not a.log.equals(c.log)


@pytest.fixture(scope="module")
def calibration():
    """One channel (email), fatigue off, affinity 1, timing ignored, no churn."""
    sc = load_scenario("default")
    segs = [{"name": s.name, "weight": s.weight, "timezones": s.timezones, "activity": s.activity,
             "affinity": {"email": 1.0, "sms": 1.0, "push": 1.0}, "affinity_cv": 0.0,
             "visit_rate_per_day": 0.6}
            for s in sc.population.segments]
    return sc.replace(n_users=400, days=20, seed=3, population={"segments": segs},
                      channels={"sms": {"enabled": False}, "push": {"enabled": False},
                                "email": {"timing_weight": 0.0, "open_prob": 0.22,
                                          "click_prob": 0.12, "unsubscribe_prob": 0.02}},
                      fatigue={"enabled": False}, behavior={"churn_rate_per_day": 0.0})


def _rates(log, cutoff_days=3):
    """Open and unsubscribe rates among delivered messages sent at least ``cutoff_days``
    before the end (so late reads are not cut off by the horizon)."""
    end = log["ts"].max()
    sent = log[(log["event"] == "sent") & (log["ts"] < end - pd.Timedelta(days=cutoff_days))]
    ids = set(sent["message_id"])
    deliv = log[(log["event"] == "delivered") & log["message_id"].isin(ids)]
    n = len(deliv)
    opens = log[(log["event"] == "opened") & log["message_id"].isin(ids)]["message_id"].nunique()
    unsubs = log[(log["event"] == "unsubscribed") & log["message_id"].isin(ids)].shape[0]
    return n, opens, unsubs


def test_open_rate_matches_configuration_without_fatigue(calibration):
    res = simulate(calibration, OnTrigger("email", "visit"), progress=False)
    assert set(res.log.loc[res.log["event"] == "sent", "channel"].astype(str)) == {"email"}
    n, opens, _ = _rates(res.log)
    assert n > 1500
    p = 0.22
    assert abs(opens / n - p) < Z99 * math.sqrt(p * (1 - p) / n), (opens / n, n)


def test_more_pressure_fewer_opens_more_unsubscribes(calibration):
    sc = calibration.replace(fatigue={"enabled": True, "half_life_h": 72})
    light = simulate(sc, OnTrigger("email", "visit", k=1), progress=False)
    heavy = simulate(sc, OnTrigger("email", "visit", k=4), progress=False)
    n1, o1, u1 = _rates(light.log)
    n2, o2, u2 = _rates(heavy.log)

    def z(x1, m1, x2, m2):
        pool = (x1 + x2) / (m1 + m2)
        return (x1 / m1 - x2 / m2) / math.sqrt(pool * (1 - pool) * (1 / m1 + 1 / m2))

    assert z(o1, n1, o2, n2) > stats.norm.ppf(0.99)       # open rate lower under pressure
    assert z(u2, n2, u1, n1) > stats.norm.ppf(0.99)       # unsubscribes per message higher
    users_unsub = lambda r: r.log.loc[r.log["event"] == "unsubscribed", "user_id"].nunique()
    assert users_unsub(heavy) > users_unsub(light)


class Journey:
    """Signup → email now with a follow-up in 2 h; the step sends push (send_at +1 h)."""

    name = "mini_journey@test"

    def decide(self, ctx, rng):
        k = ctx.trigger.kind
        if k == "signup":
            return [Decision("email", "email", 1.0, self.name, campaign="welcome",
                             follow_ups=(FollowUp(ctx.now + timedelta(hours=2),
                                                  {"step": 2, "entry": ctx.now.isoformat()}),))]
        if k == "journey_step":
            assert ctx.trigger.payload["step"] == 2
            assert ctx.now == ctx.trigger.ts
            return [Decision("push", "push", 0.5, self.name, campaign="welcome",
                             send_at=ctx.now + timedelta(hours=1)),
                    no_message(self.name, 0.5, campaign="welcome", reason="holdout")]
        return []


def test_follow_ups_and_send_at(small):
    sc = small.replace(population={"new_user_share": 1.0}, n_users=80)
    log = simulate(sc, Journey(), progress=False).log
    users = log[log["event"] == "signup"].set_index("user_id")["ts"]
    dec = log[(log["event"] == "decided") & (log["action"] == "push")]
    assert len(dec) > 0
    lag = dec["ts"].reset_index(drop=True) - users.loc[dec["user_id"]].reset_index(drop=True)
    assert ((lag - pd.Timedelta(hours=2)).abs() < pd.Timedelta(seconds=1)).all()
    push = log[(log["event"] == "sent") & (log["channel"] == "push")]
    assert len(push) > 0
    lag = push["ts"].reset_index(drop=True) - users.loc[push["user_id"]].reset_index(drop=True)
    assert ((lag - pd.Timedelta(hours=3)).abs() < pd.Timedelta(seconds=1)).all()
    sup = log[(log["event"] == "suppressed") & (log["reason"] == "holdout")]
    assert len(sup) == len(dec)


@dataclass
class FakeAdmission:
    send: list = field(default_factory=list)
    defer: list = field(default_factory=list)
    drop: list = field(default_factory=list)


class FakeRules:
    """Defers every email once by 30 min (reason ``quiet_hours``), drops every sms."""

    def admit(self, due, ctx):
        out = FakeAdmission()
        for p in due:
            if p.decision.channel == "sms":
                out.drop.append((p, "cap:sms:7d"))
            elif p.due == p.created:
                out.defer.append((p, ctx.now + timedelta(minutes=30), "quiet_hours"))
            else:
                out.send.append(p)
        return out


class WithRules:
    name = "ruled@test"
    rules = FakeRules()

    def decide(self, ctx, rng):
        if ctx.trigger.kind != "product_view":
            return []
        return [Decision(ch, ch, 1.0, self.name, campaign="x") for ch in ("email", "sms")]


def test_pressure_rule_admissions_are_followed_and_logged(small):
    log = simulate(small.replace(n_users=150), WithRules(), progress=False).log
    deferred = log[log["event"] == "deferred"]
    assert (deferred["reason"] == "quiet_hours").all() and (deferred["channel"] == "email").all()
    dropped = log[(log["event"] == "suppressed") & (log["channel"] == "sms")]
    assert (dropped["reason"] == "cap:sms:7d").all() and len(dropped) > 0
    sent = log[log["event"] == "sent"]
    assert (sent["channel"] == "email").all()
    # each email goes out 30 min after its deferral
    d = deferred.sort_values(["user_id", "ts"]).groupby("user_id")["ts"].apply(list)
    s = sent.sort_values(["user_id", "ts"]).groupby("user_id")["ts"].apply(list)
    for uid, times in s.items():
        dts = d[uid]
        assert len(times) <= len(dts)
        for ts_def, ts_sent in zip(dts, times):
            assert abs((ts_sent - ts_def) - pd.Timedelta(minutes=30)) < pd.Timedelta(seconds=1)


def test_real_pressure_rules_are_never_violated(small):
    registry = pytest.importorskip("omnisim.policies.registry")
    pressure = pytest.importorskip("omnisim.policies.pressure")
    pol = registry.get_policy("blast+pressure")
    res = simulate(small.replace(n_users=200), pol, progress=False)
    v = pressure.count_violations(res.log, res.users, pol.rules)
    assert v["cap_violations"] == 0 and v["quiet_hour_violations"] == 0
    assert (res.log["event"] == "deferred").any()


def test_logged_sms_read_delays_match_their_distribution(run_blast, small):
    """In the log, SMS opened − delivered is the specified lognormal (KS test)."""
    log = run_blast.log
    sms = log[log["channel"] == "sms"]
    deliv = sms[sms["event"] == "delivered"].set_index("message_id")["ts"]
    opened = sms[sms["event"] == "opened"].set_index("message_id")["ts"]
    assert len(opened) > 100
    minutes = (opened - deliv.loc[opened.index]).dt.total_seconds().to_numpy() / 60
    p = small.channels.sms
    dist = stats.lognorm(s=p.read_sigma, scale=p.read_median_min)
    assert stats.kstest(minutes, dist.cdf).pvalue > 0.01
    assert stats.kstest(minutes, stats.lognorm(s=p.read_sigma, scale=2 * p.read_median_min).cdf).pvalue < 0.01


def test_progress_bar_and_overrides(small, capsys):
    res = simulate(small, OnTrigger(), n_users=20, days=2, seed=1, progress=True)
    assert len(res.users) == 20 and res.scenario.days == 2 and res.scenario.seed == 1
    assert res.log["ts"].max() < pd.Timestamp("2026-01-07", tz="UTC")
    assert "day" in capsys.readouterr().err


def test_sms_cost_by_segments_and_content_limits(small):
    class Texts:
        name = "texts@test"

        def decide(self, ctx, rng):
            if ctx.trigger.kind != "product_view" or not ctx.can_message("sms"):
                return []
            return [Decision("sms", "sms", 1.0, self.name, campaign="two", meta={"text": "a" * 161}),
                    Decision("sms", "sms", 1.0, self.name, campaign="long", meta={"text": "a" * 500})]

    log = simulate(small.replace(n_users=150), Texts(), progress=False).log
    sent = log[log["event"] == "sent"]
    assert len(sent) > 0 and (sent["campaign"] == "two").all()
    assert np.allclose(sent["value"], 2 * small.channels.sms.cost)
    sup = log[(log["event"] == "suppressed") & (log["campaign"] == "long")]
    assert len(sup) == len(sent)
    assert sup["reason"].str.startswith("content_limit: sms text needs 4 segments").all()


def test_clicks_raise_visits_and_purchases(calibration):
    """Same world and seed; only the click boosts differ → more spontaneous visits."""
    sc = calibration.replace(channels={"email": {"click_prob": 0.5}})
    pol = OnTrigger("email", "product_view")
    runs = {b: simulate(sc.replace(behavior={"click_visit_boost": b}), pol, progress=False)
            for b in (0.0, 5.0)}

    def spontaneous_visits(r):
        v = r.log[r.log["event"] == "visit"]
        clicks = r.log[r.log["event"] == "clicked"]
        return len(v) - len(clicks)  # each click starts one landing session

    v0, v5 = spontaneous_visits(runs[0.0]), spontaneous_visits(runs[5.0])
    assert (v5 - v0) / math.sqrt(v5 + v0) > stats.norm.ppf(0.99), (v0, v5)
