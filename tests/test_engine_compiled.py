"""The fast engine's compiled path (``docs/engines.md``, "Compiled path").

Which policies it runs, that its log is the engine's log (validated, deterministic, the same
for any number of processes, chunk calls or Parquet parts), and that the decisions inside it
follow the Python policies: pressure rules never violated, journey steps at their exact
delays and only when their conditions held. Parity with the reference engine is in
``tests/test_engine_parity.py``; the compiled journeys and rules are compared with the
Python ones call by call in ``tests/test_kernel_journey.py`` / ``test_kernel_pressure.py``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from omnisim.log import validate
from omnisim.model import _compiled, engine_fast
from omnisim.model.scenario import load_scenario
from omnisim.policies._kernel_policy import compile_policy
from omnisim.policies.journeys import load_journey
from omnisim.policies.pressure import PressureRules, default_rules, with_pressure
from omnisim.policies.registry import get_policy
from omnisim.policies.violations import count_violations


@pytest.fixture(scope="module")
def sc():
    return load_scenario("default").replace(n_users=300, days=14, seed=3)


@pytest.fixture(scope="module")
def journey_run(sc):
    return engine_fast.simulate(sc, get_policy("seed_journey+pressure"), progress=False)


class _Silent:
    name = "silent@test"
    trigger_kinds = frozenset()

    def decide(self, ctx, rng):
        return []


class _Learner:
    name = "learner@test"
    update_every_h = 24.0

    def decide(self, ctx, rng):
        return []

    def partial_fit(self, rows):
        return self


def test_which_policies_are_compiled():
    compiled = ["blast", "email_only", "random_channel", "seed_journey", "blast+pressure",
                "seed_journey+pressure", "random_channel+pressure", "welcome", "journeys",
                "journeys+pressure"]
    for name in compiled:
        assert compile_policy(get_policy(name)) is not None, name
    assert compile_policy(_Silent()).pol[0] == 0  # the world model alone
    class Rules(PressureRules):
        pass
    rules = default_rules()
    other = Rules(**{f: getattr(rules, f) for f in rules.__dataclass_fields__})
    from dataclasses import replace

    from omnisim.policies.journeys import JourneySet

    seed = load_journey("seed_journey")
    many = JourneySet(tuple(replace(seed, journey=f"j{i}") for i in range(33)))
    assert compile_policy(JourneySet(many.journeys[:32])) is not None
    for policy in (get_policy("blast+holdout"), _Learner(),
                   with_pressure(load_journey("seed_journey"), other), many):
        assert compile_policy(policy) is None, policy.name


def test_log_is_valid_and_deterministic(sc, journey_run):
    log = journey_run.log
    assert validate(log, source="test").equals(log)
    again = engine_fast.simulate(sc, get_policy("seed_journey+pressure"), progress=False).log
    pd.testing.assert_frame_equal(log, again)
    other_seed = engine_fast.simulate(sc.replace(seed=4), get_policy("seed_journey+pressure"),
                                      progress=False).log
    assert len(other_seed) != len(log) or not other_seed.equals(log)
    sent = log[log["event"] == "sent"]
    assert sent["message_id"].is_unique and len(sent) > 100
    # message ids are <user>-m<k>, numbered from 1 per user in send order
    k = sent["message_id"].str.rsplit("-m", n=1).str[1].astype(int)
    assert (sent["message_id"].str.rsplit("-m", n=1).str[0] == sent["user_id"]).all()
    first = k.groupby(sent["user_id"]).min()
    assert (first == 1).all()
    assert set(log["event"].astype(str)) >= {"decided", "deferred", "suppressed", "sent",
                                            "delivered", "opened", "visit", "purchase"}


def test_same_log_for_any_jobs_chunk_calls_and_parts(sc, journey_run, tmp_path, monkeypatch):
    pol = get_policy("seed_journey+pressure")
    kw = dict(progress=False, chunk_users=120)
    one = engine_fast.simulate(sc, pol, **kw).log
    two = engine_fast.simulate(sc, pol, n_jobs=2, **kw).log
    pd.testing.assert_frame_equal(one, two)
    parts = engine_fast.simulate(sc, pol, out=tmp_path / "log", flush_rows=700, **kw)
    assert len(parts.log_parts) > 3
    back = pd.concat([pd.read_parquet(p) for p in parts.log_parts], ignore_index=True)
    back = back.iloc[np.argsort(back["ts"].to_numpy(), kind="stable")].reset_index(drop=True)
    pd.testing.assert_frame_equal(validate(back, source="test"), one, check_categorical=False)
    # users per call of the loop are progress granularity only
    monkeypatch.setattr(_compiled, "_USERS_PER_CALL", 7)
    pd.testing.assert_frame_equal(engine_fast.simulate(sc, pol, progress=False).log,
                                  journey_run.log)


def test_pressure_rules_are_never_violated(sc, journey_run):
    for name in ("blast+pressure", "seed_journey+pressure"):
        res = journey_run if name.startswith("seed") else engine_fast.simulate(
            sc, get_policy(name), progress=False)
        out = count_violations(res.log, res.users, default_rules())
        assert out["sends_checked"] > 100, name
        assert out["cap_violations"] == 0 and out["quiet_hour_violations"] == 0, (name, out)
        reasons = set(res.log["reason"].dropna())
        assert {"quiet_hours", "cap:all:cal-day"} <= reasons, reasons
    # without rules the same policy does break them: the check has teeth
    free = engine_fast.simulate(sc, get_policy("blast"), progress=False)
    assert count_violations(free.log, free.users, default_rules())["cap_violations"] > 0


def test_journey_steps_run_at_their_delays_and_only_when_their_conditions_hold(journey_run):
    log = journey_run.log
    own = log[log["campaign"] == "seed_journey"]
    dec = own[own["event"] == "decided"]
    by_step = {s: dec[dec["step"] == s] for s in ("offer_email", "sms_nudge", "visit_push")}
    assert all(len(v) > 20 for v in by_step.values()), {k: len(v) for k, v in by_step.items()}
    # each sms_nudge / visit_push decision follows the user's previous step of the run by
    # exactly its delay (4 h, 20 h)
    for step, prev, delay in (("sms_nudge", "offer_email", 4), ("visit_push", "sms_nudge", 20)):
        for _, row in by_step[step].iterrows():
            before = dec[(dec["user_id"] == row["user_id"]) & (dec["ts"] < row["ts"])]
            assert before.iloc[-1]["step"] == prev
            assert row["ts"] - before.iloc[-1]["ts"] == pd.Timedelta(hours=delay)
    # the journey decides an sms only for users who did not open its email since the entry
    # (checked when the step runs; the rules may send it later)
    sms = by_step["sms_nudge"][by_step["sms_nudge"]["channel"] == "sms"]
    assert len(sms) > 10
    opened = own[(own["event"] == "opened") & (own["channel"] == "email")]
    for _, row in sms.iterrows():
        entry = dec[(dec["user_id"] == row["user_id"]) & (dec["step"] == "offer_email")
                    & (dec["ts"] <= row["ts"])]["ts"].max()
        assert not ((opened["user_id"] == row["user_id"]) & (opened["ts"] > entry)
                    & (opened["ts"] <= row["ts"])).any()
    # re-entry: no two entries of one user within the 72 h cooldown
    entries = by_step["offer_email"].sort_values(["user_id", "ts"])
    gaps = entries.groupby("user_id")["ts"].diff().dropna()
    assert (gaps >= pd.Timedelta(hours=72)).all()


def test_random_channel_logs_its_propensity(sc):
    log = engine_fast.simulate(sc, get_policy("random_channel"), progress=False).log
    dec = log[(log["event"] == "decided") & (log["channel"] != "none")]
    assert set(np.round(1 / dec["propensity"]).astype(int)) <= {1, 2, 3}
    assert dec["channel"].nunique() == 3 and len(dec) > 200
    # one message per decision: RandomChannel picks one channel
    per = dec.groupby(["user_id", "ts"]).size()
    assert (per == 1).all()


def test_the_round_based_path_still_runs_what_has_no_compiled_form(sc):
    res = engine_fast.simulate(sc.replace(n_users=60, days=5), get_policy("blast+holdout"),
                               progress=False)
    assert (res.log["reason"] == "holdout").any()


def test_journey_set_steps_at_local_hours(sc):
    """The five built-in journeys with the rules: steps with ``at_local_hour`` run at that
    local clock time in each user's zone (DST-exact), delays and entries as declared."""
    res = engine_fast.simulate(sc.replace(days=21), get_policy("journeys+pressure"), progress=False)
    log, users = res.log, res.users.set_index("user_id")
    dec = log[log["event"] == "decided"]
    steps = {s.id: s for j in get_policy("journeys").journeys for s in j.steps}
    local = {s.id: s.at_local_hour for s in steps.values() if s.at_local_hour is not None}
    assert set(local) >= {"getting_started"}, local
    checked = 0
    for step_id, hour in local.items():
        rows = dec[dec["step"] == step_id]
        for _, row in rows.iterrows():
            zone = users.loc[row["user_id"], "timezone"]
            t = row["ts"].tz_convert(zone)
            assert (t.hour, t.minute, t.second) == (int(hour), 0, 0), (step_id, t)
            checked += 1
    assert checked > 10
    # welcome: one entry per user (max_entries 1), at sign-up
    welcome = dec[(dec["campaign"] == "welcome") & (dec["step"] == "welcome_email")]
    assert welcome["user_id"].is_unique and len(welcome) > 5
    out = count_violations(log, res.users, default_rules())
    assert out["cap_violations"] == 0 and out["quiet_hour_violations"] == 0


def test_log_columns_are_built_exactly():
    """The compiled log's text columns and time sort (omnisim/model/_kernel_log.py) against
    plain Python on random rows, nulls, non-ASCII texts and ties."""
    from omnisim.model import _kernel_log as kl

    rng = np.random.default_rng(0)
    vocab = ["email", "seed_journey@1", "cap:all:cal-day", "é€ü", ""]
    codes = rng.integers(-1, len(vocab), 5000).astype(np.int32)
    got = kl.text_array(codes, vocab).to_pylist()
    assert got == [None if c < 0 else vocab[c] for c in codes]
    users = rng.integers(0, 3, 5000)
    msgs = rng.integers(-1, 120, 5000).astype(np.int32)
    uids = ["u1", "user-éé", "u000000003"]
    got = kl.message_ids(users, msgs, uids).to_pylist()
    assert got == [None if m < 0 else f"{uids[u]}-m{m}" for u, m in zip(users, msgs)]
    # rows by time, stable for ties (hours on a coarse grid make many), across hour buckets
    t = rng.integers(0, 400, 3000) / 8.0
    Lf = np.column_stack([t, rng.random(3000), rng.random(3000)])
    Li = rng.integers(0, 1000, (3000, 10)).astype(np.int32)
    t_us, F, I = kl.sorted_columns(Lf, Li)
    order = np.argsort(np.rint(t * 3.6e9).astype(np.int64), kind="stable")
    assert np.array_equal(t_us, np.rint(t[order] * 3.6e9).astype(np.int64))
    assert np.array_equal(F, Lf[order].T) and np.array_equal(I, Li[order].T)


def test_per_user_samplers_draw_as_the_array_samplers():
    """Each ``*_one`` sampler the compiled loop uses has the distribution of its array
    form (two-sample KS, fixed seeds); a changed array sampler alone would fail this."""
    from scipy import stats

    from omnisim.model import behavior as bh, channels as chm

    n = 4000
    prof = np.clip(np.random.default_rng(9).random(24) - 0.3, 0.0, 1.0)
    params = chm.Channels()
    for c, name in enumerate(("email", "sms", "push")):
        p = params.get(name)
        a = chm.read_delay_h(np.random.default_rng(1), name, p, np.full(n, 7.5),
                             np.tile(prof, (n, 1)), np.full(n, 2.0))
        rng = np.random.default_rng(2)
        b = [chm.read_delay_one(rng, c, p.read_median_min, p.read_sigma,
                                0.0 if c == 1 else chm.wait_until_active_one(rng, 7.5, prof),
                                2.0) for _ in range(n)]
        assert stats.ks_2samp(a, b).pvalue > 0.001, name
    rng = np.random.default_rng(3)
    one = np.array([bh.session_funnel_one(rng, 0.3, 0.7, 0.12, False) for _ in range(n)])
    arr = np.array(bh.session_funnel(np.random.default_rng(4), np.full(n, 0.3),
                                     bh.BehaviorParams())).T
    assert np.allclose(one.mean(axis=0), arr.mean(axis=0), atol=0.03)
    rng = np.random.default_rng(5)
    one = [chm.delivery_outcome_one(rng, 0.1, 0.2) for _ in range(n)]
    arr = chm.delivery_outcome(np.random.default_rng(6), 0.1, 0.2, size=n)
    assert abs(np.bincount(one, minlength=3) - np.bincount(arr, minlength=3)).max() < 0.04 * n
    rng = np.random.default_rng(7)
    one = [bh.purchase_value_one(rng, 40.0, 0.5) for _ in range(n)]
    assert stats.ks_2samp(one, bh.purchase_value(np.random.default_rng(8), np.full(n, 40.0),
                                                 0.5)).pvalue > 0.001
