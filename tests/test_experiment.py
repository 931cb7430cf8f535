"""compare(), the simulate/compare commands and the comparison notebook."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from omnisim.cli import main
from omnisim.experiment import SUMMARY_METRICS, compare, run_one
from omnisim.model.scenario import load_scenario
from omnisim.stats import mean_ci

SMALL = dict(n_users=300, days=10)
REQUIRED_JSON_KEYS = {
    "users", "days", "seed", "policy", "messages", "messages_by_channel", "opens", "clicks",
    "conversions", "revenue", "cost", "unsubscribes", "messages_per_user", "overload_rate",
    "cap_violations", "quiet_hour_violations",
}


@pytest.fixture(scope="module")
def table():
    return compare("default", ["seed_journey+pressure", "blast", "email_only"], seeds=3,
                   progress=False, **SMALL)


def test_compare_one_row_per_policy_with_mean_and_ci(table):
    assert list(table["policy"]) == ["seed_journey@1+pressure@1", "blast@1", "email_only@1"]
    for m in SUMMARY_METRICS:
        low, mean, high = table[f"{m}_low"], table[f"{m}_mean"], table[f"{m}_high"]
        ok = (low <= mean + 1e-12) & (mean <= high + 1e-12) | mean.isna()
        assert ok.all(), m
    runs = table.attrs["runs"]
    assert len(runs) == 9 and set(runs["seed"]) == {0, 1, 2}


ENGAGEMENT = ("click_rate", "clicks_per_user", "unsubscribe_rate", "unsubscribes_per_user")


def test_compare_summarises_clicks_and_unsubscribes_with_cis_over_seeds(table):
    """Clicks per message and per user, unsubscribes per message and per user: each with its
    mean and CI over seeds, from the runs' counts (clicks / messages, clicks / users ...)."""
    runs = table.attrs["runs"]
    assert np.allclose(runs["clicks_per_user"], runs["clicks"] / runs["users"])
    assert np.allclose(runs["unsubscribes_per_user"], runs["unsubscribes"] / runs["users"])
    assert np.allclose(runs["unsubscribe_rate"], runs["unsubscribes"] / runs["messages"])
    assert np.allclose(runs["click_rate"], runs["clicks"] / runs["messages"])
    t = table.set_index("policy")
    for pol, grp in runs.groupby("policy"):
        for m in ENGAGEMENT:
            expected = mean_ci(grp.groupby("seed")[m].mean())
            got = tuple(t.loc[pol, f"{m}_{s}"] for s in ("mean", "low", "high"))
            assert got == pytest.approx(expected), (pol, m)
    # blast sends every day: its users click and unsubscribe, with an interval of some width
    # (3 seeds: Student-t's 4.3 half-widths may reach below 0 for a rare event)
    for m in ENGAGEMENT:
        assert t.loc["blast@1", f"{m}_mean"] > 0, m
        assert t.loc["blast@1", f"{m}_low"] < t.loc["blast@1", f"{m}_high"], m
    assert t.loc["blast@1", "unsubscribes_per_user_mean"] > t.loc["seed_journey@1+pressure@1",
                                                                  "unsubscribes_per_user_mean"]


def test_pressure_rules_are_never_violated_and_blast_overloads(table):
    t = table.set_index("policy")
    assert t.loc["seed_journey@1+pressure@1", "cap_violations_high"] == 0
    assert t.loc["seed_journey@1+pressure@1", "quiet_hour_violations_high"] == 0
    # the silo behaviour: blast sends more per user and overloads users, with CIs apart
    assert t.loc["blast@1", "messages_per_user_low"] > t.loc["seed_journey@1+pressure@1", "messages_per_user_high"]
    assert t.loc["blast@1", "overload_rate_low"] > t.loc["seed_journey@1+pressure@1", "overload_rate_high"]
    assert t.loc["blast@1", "cap_violations_low"] > 0


def test_common_random_numbers_same_population_for_every_policy():
    a = run_one("default", "blast", 4, **SMALL)
    b = run_one("default", "email_only", 4, **SMALL)
    pd.testing.assert_frame_equal(a.users, b.users)


def test_holdout_gives_incremental_conversions():
    r = run_one("default", "seed_journey+holdout+pressure", 1, n_users=400, days=10)
    m = r.metrics
    assert m["holdout_users"] > 0
    assert np.isfinite(m["incremental_conversions"])
    held = r.log[(r.log["event"] == "suppressed") & (r.log["reason"] == "holdout")]["user_id"].unique()
    sent_to = set(r.log.loc[r.log["event"] == "sent", "user_id"])
    assert held.size > 0 and not (set(held) & sent_to)


def test_simulate_json_has_the_documented_keys(tmp_path):
    out = tmp_path / "sim.parquet"
    res = CliRunner().invoke(main, ["simulate", "--users", "80", "--days", "5", "--seed", "3",
                                    "--log", str(out), "--json"])
    assert res.exit_code == 0, res.output
    m = json.loads(res.output)
    assert REQUIRED_JSON_KEYS <= set(m)
    assert m["users"] == 80 and m["seed"] == 3 and m["messages"] == sum(m["messages_by_channel"].values())
    from omnisim.log import read_log

    log = read_log(out)
    assert int((log["event"] == "sent").sum()) == m["messages"]
    assert (tmp_path / "sim_users.parquet").exists()


def test_simulate_cli_is_deterministic():
    args = ["simulate", "--users", "60", "--days", "4", "--seed", "9", "--json"]
    a, b = (CliRunner().invoke(main, args).output for _ in range(2))
    assert a == b


def test_simulate_cli_jobs_same_output_and_fast_engine_only():
    args = ["simulate", "--users", "60", "--days", "4", "--seed", "9", "--json"]
    a = CliRunner().invoke(main, args)
    b = CliRunner().invoke(main, args + ["--jobs", "2"])
    assert a.exit_code == 0 and b.exit_code == 0, b.output
    assert a.output == b.output
    bad = CliRunner().invoke(main, args + ["--jobs", "2", "--engine", "simpy"])
    assert bad.exit_code == 2 and "--jobs" in bad.output
    assert CliRunner().invoke(main, args + ["--jobs", "0"]).exit_code == 2


def test_compare_cli_json():
    res = CliRunner().invoke(main, ["compare", "--policies", "blast,email_only", "--seeds", "2",
                                    "--users", "60", "--days", "4", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert [r["policy"] for r in rows] == ["blast@1", "email_only@1"]
    assert all("open_rate_low" in r and "open_rate_high" in r for r in rows)
    for m in ("click_rate", "clicks_per_user", "unsubscribe_rate", "unsubscribes_per_user"):
        assert all({f"{m}_mean", f"{m}_low", f"{m}_high"} <= set(r) for r in rows), m


def test_compare_cli_text_shows_click_and_unsubscribe_rates():
    res = CliRunner().invoke(main, ["compare", "--policies", "blast", "--seeds", "2",
                                    "--users", "60", "--days", "4"])
    assert res.exit_code == 0, res.output
    for m in ("click_rate", "unsubscribe_rate", "open_rate"):
        assert f"\n{m} (mean [95% CI] over 2 seeds)" in res.output, m


def test_unknown_policy_is_exit_2_naming_it():
    res = CliRunner().invoke(main, ["simulate", "--policy", "blsat", "--users", "10", "--days", "1"])
    assert res.exit_code == 2 and "blsat" in res.output and "Traceback" not in res.output


def test_bad_scenario_file_is_exit_2_naming_the_key(tmp_path):
    bad = tmp_path / "sc.yaml"
    bad.write_text("days: many\n")
    res = CliRunner().invoke(main, ["simulate", "--scenario", str(bad), "--users", "10"])
    assert res.exit_code == 2 and "days" in res.output and "Traceback" not in res.output


def test_scenario_default_loads():
    assert load_scenario("default").days > 0


@pytest.mark.parametrize("name", ["journeys+pressure+holdout", "journeys+holdout+pressure"])
def test_modifier_order_keeps_rules_and_holdout(name):
    from omnisim.policies.registry import get_policy

    p = get_policy(name)
    assert p.rules is not None and p.holdout is not None


def test_online_learners_start_fresh_on_every_run():
    from omnisim.policies.bandits import LinUCBChannel

    policy = LinUCBChannel(update_every_h=24)
    a = run_one("default", policy, 2, n_users=80, days=6, engine="simpy")
    b = run_one("default", policy, 2, n_users=80, days=6, engine="simpy")
    pd.testing.assert_frame_equal(a.log, b.log)  # the second run did not inherit the first's learning
