"""The vectorised engine on its own: valid logs, causality, consent, determinism, chunked
Parquet output, local time, the batch/trigger contract and the online-learning hook."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from omnisim.log import validate
from omnisim.model import engine_fast
from omnisim.model._fast_policy import batch_decider, trigger_kinds
from omnisim.model.scenario import load_scenario
from omnisim.policies.base import Decision, no_message
from omnisim.policies.registry import get_policy


class OnTrigger:
    """``channel`` at every ``trigger``; declares nothing, so the engine asks it everything."""

    def __init__(self, channel: str = "email", trigger: str = "product_view"):
        self.channel, self.trigger = channel, trigger
        self.name = f"on_{trigger}_{channel}@test"
        self.calls: list[str] = []

    def decide(self, ctx, rng):
        self.calls.append(ctx.trigger.kind)
        if ctx.trigger.kind != self.trigger:
            return []
        if not ctx.can_message(self.channel):
            return [no_message(self.name, reason="no_consent")]
        return [Decision(action=self.channel, channel=self.channel, propensity=1.0,
                         policy=self.name, campaign="test")]


class Declared(OnTrigger):
    """The same policy, declaring the only trigger it answers."""

    @property
    def trigger_kinds(self):
        return frozenset({self.trigger})


@pytest.fixture(scope="module")
def small():
    return load_scenario("default").replace(n_users=300, days=10, seed=3)


@pytest.fixture(scope="module")
def run_sj(small):
    return engine_fast.simulate(small, get_policy("seed_journey+pressure"), progress=False)


def test_log_is_valid_complete_and_sorted(run_sj, small):
    log = validate(run_sj.log)
    ev = set(log["event"].astype(str))
    for e in ("decided", "sent", "delivered", "opened", "visit", "product_view", "cart_add",
              "purchase", "deferred", "suppressed"):
        assert e in ev, e
    assert log["ts"].is_monotonic_increasing
    assert (log["ts"] >= pd.Timestamp(small.start)).all()
    assert (log["ts"] < pd.Timestamp(small.start) + pd.Timedelta(days=small.days)).all()
    sent = log[log["event"] == "sent"]
    assert sent["message_id"].is_unique and sent["campaign"].notna().all()
    assert list(log.columns[:12]) == list(validate(log).columns[:12])


def test_message_events_follow_their_send(run_sj):
    log = run_sj.log
    sent = log[log["event"] == "sent"].set_index("message_id")
    for event in ("delivered", "opened", "clicked", "bounced", "unsubscribed"):
        rows = log[log["event"] == event]
        assert rows["message_id"].isin(sent.index).all(), event
        assert (rows["ts"].to_numpy() >= sent.loc[rows["message_id"], "ts"].to_numpy()).all(), event


def test_no_sends_without_consent(run_sj):
    log, users = run_sj.log, run_sj.users.set_index("user_id")
    sent = log[log["event"] == "sent"]
    for ch in ("email", "sms", "push"):
        ids = sent.loc[sent["channel"] == ch, "user_id"]
        assert users.loc[ids, f"consent_{ch}"].all(), ch
    # nothing is sent on a channel after the user unsubscribed from it
    unsub = log[log["event"] == "unsubscribed"].groupby(["user_id", "channel"], observed=True)["ts"].min()
    for (u, ch), t in unsub.items():
        later = sent[(sent["user_id"] == u) & (sent["channel"] == ch) & (sent["ts"] > t)]
        assert later.empty


def test_pressure_rules_hold(run_sj, small):
    from omnisim.policies.pressure import count_violations, default_rules

    v = count_violations(run_sj.log, run_sj.users, default_rules())
    assert v["cap_violations"] == 0 and v["quiet_hour_violations"] == 0


def test_same_seed_same_log_other_seed_other_log(small):
    sc = small.replace(n_users=120, days=7)
    pol = get_policy("random_channel")
    a = engine_fast.simulate(sc, pol, progress=False).log
    b = engine_fast.simulate(sc, pol, progress=False).log
    pd.testing.assert_frame_equal(a, b)
    c = engine_fast.simulate(sc, pol, seed=99, progress=False).log
    assert not a.equals(c)


def test_chunks_write_parquet_parts(small, tmp_path):
    sc = small.replace(n_users=250, days=5)
    pol = get_policy("email_only")
    res = engine_fast.simulate(sc, pol, progress=False, out=tmp_path / "log", chunk_users=100)
    assert res.log is None and [p.name for p in res.log_parts] == [
        "part-00000-0000.parquet", "part-00001-0000.parquet", "part-00002-0000.parquet"]
    # rows are flushed within a chunk too: more, smaller, time-ordered parts; same log
    small_parts = engine_fast.simulate(sc, pol, progress=False, out=tmp_path / "log2",
                                       chunk_users=100, flush_rows=300)
    assert len(small_parts.log_parts) > 3
    first_chunk = [pd.read_parquet(p) for p in small_parts.log_parts if "part-00000-" in p.name]
    assert all(a["ts"].max() <= b["ts"].min() for a, b in zip(first_chunk, first_chunk[1:]))
    pd.testing.assert_frame_equal(small_parts.read_log(), res.read_log())
    log = res.read_log()
    assert set(log["user_id"]) <= set(res.users["user_id"]) and len(log) > 0
    again = engine_fast.simulate(sc, pol, progress=False, chunk_users=100).log
    pd.testing.assert_frame_equal(log.sort_values(["ts", "user_id", "event"], kind="stable")
                                  .reset_index(drop=True),
                                  again.sort_values(["ts", "user_id", "event"], kind="stable")
                                  .reset_index(drop=True), check_categorical=False)


def test_step_size_changes_batching_only_in_distribution(small):
    # events keep exact float times: the step only batches work (same world statistics)
    sc = small.replace(n_users=400, days=10)
    a = engine_fast.simulate(sc, get_policy("email_only"), progress=False, step_h=1.0).log
    b = engine_fast.simulate(sc, get_policy("email_only"), progress=False, step_h=6.0).log
    na, nb = (a["event"] == "visit").sum(), (b["event"] == "visit").sum()
    assert abs(na - nb) < 4 * np.sqrt(na + nb)
    assert (b["ts"].dt.minute != 0).mean() > 0.9  # not snapped to the step grid


def test_local_hour_matches_zoneinfo(small):
    chunk = engine_fast._Chunk(small, get_policy("blast"), _users(small),
                               np.random.default_rng(0), np.random.default_rng(1), 1.0, None)
    rng = np.random.default_rng(5)
    users = rng.integers(0, chunk.n, 200)
    t = rng.uniform(0, small.horizon_h, 200)
    got = chunk.local_hour(users, t)
    for u, ti, g in zip(users, t, got):
        loc = chunk._dt(ti).astimezone(ZoneInfo(chunk.tz[u]))
        want = loc.hour + loc.minute / 60 + (loc.second + loc.microsecond / 1e6) / 3600
        assert abs(g - want) < 1e-6 or abs(abs(g - want) - 24) < 1e-6


@pytest.mark.parametrize("start, zone", [
    (datetime(2026, 3, 7, 0, 0, tzinfo=timezone.utc), "America/St_Johns"),  # changes at 05:30 UTC
    (datetime(2026, 3, 28, 0, 30, tzinfo=timezone.utc), "Europe/Paris"),  # start off the hour
    (datetime(2026, 10, 3, 0, 0, tzinfo=timezone.utc), "Australia/Lord_Howe"),  # 30-min DST
])
def test_local_hour_exact_around_offset_changes(small, start, zone):
    sc = small.replace(start=start, days=40)
    users = _users(sc).assign(timezone=zone)
    chunk = engine_fast._Chunk(sc, get_policy("blast"), users, np.random.default_rng(0),
                               np.random.default_rng(1), 1.0, None)
    tzinfo = ZoneInfo(zone)
    grid = [start + timedelta(minutes=m) for m in range(0, 40 * 24 * 60, 5)]
    changed = [i for i in range(1, len(grid)) if grid[i].astimezone(tzinfo).utcoffset()
               != grid[i - 1].astimezone(tzinfo).utcoffset()]
    assert changed, "the window must hold an offset change"
    # every 20 s through the 10 minutes around each change, and the change's own second
    t = np.array([chunk._h(grid[i] + timedelta(seconds=s)) for i in changed
                  for s in range(-600, 601, 20)])
    users_idx = np.zeros(len(t), np.int64)
    got = chunk.local_hour(users_idx, t)
    for ti, g in zip(t, got):
        loc = chunk._dt(ti).astimezone(tzinfo)
        want = loc.hour + loc.minute / 60 + (loc.second + loc.microsecond / 1e6) / 3600
        assert abs(g - want) < 1e-6 or abs(abs(g - want) - 24) < 1e-6, (chunk._dt(ti), g, want)


def _users(sc):
    from omnisim.model.population import sample_population

    return sample_population(sc.population, sc.n_users, np.random.default_rng(0),
                             horizon_days=sc.days)


def test_declared_trigger_kinds_skip_only_empty_calls(small):
    sc = small.replace(n_users=150, days=7)
    plain, declared = OnTrigger(), Declared()
    a = engine_fast.simulate(sc, plain, progress=False).log
    b = engine_fast.simulate(sc, declared, progress=False).log
    pd.testing.assert_frame_equal(a.drop(columns="policy"), b.drop(columns="policy"))
    assert set(plain.calls) > {"product_view"} and set(declared.calls) == {"product_view"}


def test_trigger_kinds_of_builtins_and_wrappers():
    assert trigger_kinds(get_policy("blast")) == {"signup", "product_view", "cart_abandon", "inactivity"}
    assert trigger_kinds(get_policy("seed_journey+pressure+holdout")) == {
        "product_view", "cart_abandon", "journey_step"}
    assert trigger_kinds(OnTrigger()) is None
    calls = []

    class Batch(OnTrigger):
        def decide_batch(self, ctxs, rng):
            calls.append(len(ctxs))
            return [self.decide(c, rng) for c in ctxs]

    assert batch_decider(Batch()).__name__ == "decide_batch"
    sc = load_scenario("default").replace(n_users=200, days=3, seed=1)
    engine_fast.simulate(sc, Batch(), progress=False)
    assert max(calls) > 1  # several users decided in one call


def test_online_learning_hook_is_called_with_new_rows_only(small):
    class Learner(OnTrigger):
        update_every_h = 24.0

        def __init__(self):
            super().__init__()
            self.batches: list[pd.DataFrame] = []

        def partial_fit(self, events):
            self.batches.append(validate(events))
            return self

    sc = small.replace(n_users=150, days=4)
    pol = Learner()
    res = engine_fast.simulate(sc, pol, progress=False, chunk_users=50)  # learners: one chunk
    assert 1 <= len(pol.batches) <= 3  # at 24 h, 48 h, 72 h (not at the horizon)
    fed = pd.concat(pol.batches)
    start = pd.Timestamp(sc.start)
    for i, b in enumerate(pol.batches):
        assert (b["ts"] < start + pd.Timedelta(hours=24 * (i + 1))).all()
    assert len(fed) <= len(res.log) and fed["ts"].is_monotonic_increasing


def test_parallel_chunks_give_the_same_log(small, tmp_path):
    sc = small.replace(n_users=260, days=6)
    pol = get_policy("seed_journey+pressure")
    kw = dict(progress=False, chunk_users=80)  # 4 chunks
    one = engine_fast.simulate(sc, pol, n_jobs=1, **kw).log
    two = engine_fast.simulate(sc, pol, n_jobs=2, **kw).log
    pd.testing.assert_frame_equal(one, two)
    a = engine_fast.simulate(sc, pol, n_jobs=1, out=tmp_path / "a", flush_rows=500, **kw)
    b = engine_fast.simulate(sc, pol, n_jobs=2, out=tmp_path / "b", flush_rows=500, **kw)
    assert [p.name for p in a.log_parts] == [p.name for p in b.log_parts]
    assert len({p.name.split("-")[1] for p in b.log_parts}) == 4
    for pa, pb in zip(a.log_parts, b.log_parts):
        pd.testing.assert_frame_equal(pd.read_parquet(pa), pd.read_parquet(pb))
    # -1: one process per CPU; still the same log
    pd.testing.assert_frame_equal(one, engine_fast.simulate(sc, pol, n_jobs=-1, **kw).log)


def test_history_is_kept_only_when_read_and_logs_do_not_depend_on_it(small):
    from omnisim.model._fast_policy import needs_history

    class Opaque:
        """Blast's decisions, declaring nothing: the engine keeps history and asks every kind."""

        def __init__(self):
            self.inner = get_policy("blast")
            self.name = self.inner.name

        def decide(self, ctx, rng):
            return self.inner.decide(ctx, rng)

    class Silent:
        name = "silent@test"
        trigger_kinds = frozenset()

        def decide(self, ctx, rng):
            return []

    assert needs_history(Opaque()) and not needs_history(get_policy("blast"))
    assert not needs_history(Silent()) and not needs_history(get_policy("random_channel+holdout"))
    assert needs_history(get_policy("blast+pressure"))  # rules read it at admission
    assert needs_history(get_policy("seed_journey"))
    sc = small.replace(n_users=200, days=6)
    # the round-based path (Opaque has no compiled form): history kept or not, the same log
    a = engine_fast.simulate(sc, get_policy("blast"), progress=False, compiled=False).log
    b = engine_fast.simulate(sc, Opaque(), progress=False).log
    pd.testing.assert_frame_equal(a, b)


def test_admission_reusing_the_decision_context_is_exact(small):
    # PressureRules (exactly) lets an admission reuse its decision's context; a subclass
    # does not, and must give the same log
    from dataclasses import fields

    from omnisim.policies.journeys import load_journey
    from omnisim.policies.pressure import PressureRules, default_rules, with_pressure

    class Rules(PressureRules):
        pass

    base = default_rules()
    other = Rules(**{f.name: getattr(base, f.name) for f in fields(PressureRules)})
    sc = small.replace(n_users=250, days=8)
    # the round-based path (a PressureRules subclass has no compiled form)
    a = engine_fast.simulate(sc, with_pressure(load_journey("seed_journey"), base), progress=False,
                             compiled=False)
    b = engine_fast.simulate(sc, with_pressure(load_journey("seed_journey"), other), progress=False)
    assert (a.log["event"] == "deferred").any()
    pd.testing.assert_frame_equal(a.log, b.log)


def test_bad_arguments():
    sc = load_scenario("default").replace(n_users=10, days=1)
    with pytest.raises(TypeError, match="decide"):
        engine_fast.simulate(sc, object(), progress=False)
    with pytest.raises(ValueError, match="chunk_users"):
        engine_fast.simulate(sc, get_policy("blast"), chunk_users=0, progress=False)
    with pytest.raises(ValueError, match="n_jobs"):
        engine_fast.simulate(sc, get_policy("blast"), n_jobs=0, progress=False)


def test_collector_runs_less_often_during_a_run_and_is_restored(small):
    import gc

    class Records(Declared):
        def decide(self, ctx, rng):
            self.threshold = gc.get_threshold()
            return super().decide(ctx, rng)

    before = gc.get_threshold()
    pol = Records()
    engine_fast.simulate(small.replace(n_users=100, days=3), pol, progress=False)
    assert pol.threshold[0] >= 100_000 and gc.get_threshold() == before

    class Fails(Records):
        def decide(self, ctx, rng):
            raise ValueError("policy failed")

    with pytest.raises(ValueError, match="policy failed"):
        engine_fast.simulate(small.replace(n_users=100, days=3), Fails(), progress=False)
    assert gc.get_threshold() == before
