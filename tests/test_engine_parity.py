"""Parity of the vectorised engine with the SimPy reference engine.

Both engines run every built-in policy below on the default scenario over the same seeds
(same population per seed; different world draws). For each policy, every metric of
``compare()`` (``run_grid`` + ``summarize_runs``) must agree within the combined confidence
interval: ``|mean_fast - mean_simpy| <= half_fast + half_simpy`` (the two CIs overlap). The
CIs are 99 % Student-t intervals over seeds because 17 metrics × 4 policies are checked at
once: with 95 % intervals about one comparison in five runs of this file would fail by
chance. Time-to-read and inter-message gaps must pass a two-sample KS test.

The fast engine has two paths (``docs/engines.md``): the compiled world loop, which runs these
four policies, and the round-based path, which runs every other policy; both are checked
(``rounds``: the same runs with ``compiled=False``).

The negative check doubles the fatigue half-life in the fast engine only (its scenario is
overridden; the reference engine keeps 72 h) and asserts that the same check then fails.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from omnisim.experiment import SUMMARY_METRICS, run_grid, summarize_runs
from omnisim.model.scenario import load_scenario

POLICIES = ["blast", "email_only", "random_channel", "seed_journey+pressure"]
SEEDS = list(range(6))
N_USERS, DAYS = 400, 21
CONFIDENCE = 0.99
KS_ALPHA = 0.001


def parity_failures(a: pd.DataFrame, b: pd.DataFrame) -> list[str]:
    """Metrics whose means differ by more than the sum of the two CI half-widths."""
    bad = []
    a, b = a.set_index("policy"), b.set_index("policy")
    for pol in a.index:
        for m in SUMMARY_METRICS:
            ma, mb = a.loc[pol, f"{m}_mean"], b.loc[pol, f"{m}_mean"]
            if np.isnan(ma) and np.isnan(mb):
                continue
            tol = (a.loc[pol, f"{m}_high"] - a.loc[pol, f"{m}_low"]) / 2 \
                + (b.loc[pol, f"{m}_high"] - b.loc[pol, f"{m}_low"]) / 2
            if not abs(ma - mb) <= tol + 1e-12:
                bad.append(f"{pol} {m}: simpy {ma:.4g} vs fast {mb:.4g} (combined CI ±{tol:.3g})")
    return bad


def _grid(engine: str, scenario, policies=POLICIES):
    """``engine``: ``simpy``, ``fast`` (the compiled path for these policies) or ``rounds``
    (the fast engine's round-based path)."""
    if engine == "rounds":
        from omnisim.model import engine_fast

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(engine_fast, "simulate",
                       functools.partial(engine_fast.simulate, compiled=False))
            return _grid("fast", scenario, policies)
    return run_grid(scenario, policies, SEEDS, n_users=N_USERS, days=DAYS, progress=False,
                    keep_logs=True, engine=engine)


@pytest.fixture(scope="module")
def scenario():
    return load_scenario("default")


@pytest.fixture(scope="module")
def runs(scenario):
    return {eng: _grid(eng, scenario) for eng in ("simpy", "fast", "rounds")}


def _read_delays_h(logs) -> np.ndarray:
    out = []
    for log, _ in logs:
        sent = log[log["event"] == "sent"].set_index("message_id")["ts"]
        op = log[log["event"] == "opened"]
        out.append(((op["ts"].to_numpy() - sent.loc[op["message_id"]].to_numpy())
                    / np.timedelta64(1, "s")) / 3600.0)
    return np.concatenate(out)


def _gaps_h(logs) -> np.ndarray:
    out = []
    for log, _ in logs:
        sent = log.loc[log["event"] == "sent", ["user_id", "ts"]].sort_values(["user_id", "ts"])
        gap = sent.groupby("user_id")["ts"].diff().dropna()
        out.append(gap.dt.total_seconds().to_numpy() / 3600.0)
    return np.concatenate(out)


def _logs(runs_table: pd.DataFrame, policy_name: str):
    return [v for (p, _), v in runs_table.attrs["logs"].items() if p == policy_name]


def test_fast_paths_run_as_documented():
    from omnisim.policies._kernel_policy import compile_policy
    from omnisim.policies.registry import get_policy

    assert all(compile_policy(get_policy(p)) is not None for p in POLICIES)


@pytest.mark.parametrize("path", ["fast", "rounds"])
def test_every_compare_metric_agrees_within_combined_ci(runs, path):
    a = summarize_runs(runs["simpy"], confidence=CONFIDENCE)
    b = summarize_runs(runs[path], confidence=CONFIDENCE)
    assert list(a["policy"]) == list(b["policy"]) and len(a) == len(POLICIES)
    assert (a["messages_per_user_mean"] > 0).all()
    assert parity_failures(a, b) == []


@pytest.mark.parametrize("path", ["fast", "rounds"])
@pytest.mark.parametrize("policy", ["blast@1", "seed_journey@1+pressure@1"])
def test_time_to_read_and_gaps_pass_ks(runs, policy, path):
    for name, sample in (("time to read", _read_delays_h), ("inter-message gap", _gaps_h)):
        x, y = sample(_logs(runs["simpy"], policy)), sample(_logs(runs[path], policy))
        assert len(x) > 200 and len(y) > 200, name
        p = stats.ks_2samp(x, y).pvalue
        assert p > KS_ALPHA, f"{policy} {name}: KS p = {p:.2g}"


def test_negative_check_doubled_half_life_in_fast_engine_only_fails(runs, scenario):
    """The same check must catch a model change made in one engine only."""
    changed = scenario.replace(fatigue={"half_life_h": 2 * scenario.fatigue.half_life_h})
    pols = ["blast", "email_only"]
    fast = summarize_runs(_grid("fast", changed, pols), confidence=CONFIDENCE)
    ref = summarize_runs(runs["simpy"][runs["simpy"]["policy"].isin(["blast@1", "email_only@1"])],
                         confidence=CONFIDENCE)
    failures = parity_failures(ref, fast)
    assert len(failures) >= 2, failures
    # and the unchanged fast runs of the same policies pass
    same = summarize_runs(runs["fast"][runs["fast"]["policy"].isin(["blast@1", "email_only@1"])],
                          confidence=CONFIDENCE)
    assert parity_failures(ref, same) == []


def test_ks_negative_check_detects_a_read_delay_change(runs, scenario):
    """KS power: email read delays with a larger log-sd in the fast engine are caught."""
    changed = scenario.replace(channels={"email": {"read_sigma": 1.8}})
    fast = run_grid(changed, ["email_only"], SEEDS[:3], n_users=N_USERS, days=DAYS,
                    progress=False, keep_logs=True, engine="fast")
    x = _read_delays_h(_logs(runs["simpy"], "email_only@1"))
    y = _read_delays_h(_logs(fast, "email_only@1"))
    assert stats.ks_2samp(x, y).pvalue < KS_ALPHA
