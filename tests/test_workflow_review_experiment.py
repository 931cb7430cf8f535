"""Review fixes in the experiment workflow: CIs over seeds, distinct policy rows, bad input."""

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from omnisim.cli import main
from omnisim.errors import OmnisimError
from omnisim.experiment import compare, run_grid, summarize_runs
from omnisim.policies.artifact import export_policy
from omnisim.stats import mean_ci

TINY = dict(n_users=60, days=3, progress=False)


def test_compare_keeps_policies_sharing_a_name_apart(tmp_path):
    # a policy and its artifact (e.g. a start and its tuned export) share the name blast@1:
    # their runs were pooled into one row, a CI over 2 runs per seed
    art = export_policy("blast", tmp_path / "blast.json")
    table = compare("default", ["blast", str(art)], seeds=2, **TINY)
    assert list(table["policy"]) == ["blast@1 [blast]", f"blast@1 [{art}]"]
    assert (table["seeds"] == 2).all()
    assert len(table.attrs["runs"]) == 4


def test_summarize_runs_ci_is_over_seeds_not_rows():
    runs = pd.DataFrame({"policy": "p", "seed": [0, 0, 1, 1, 2, 2], "x": [1.0, 3.0, 2.0, 2.0, 5.0, 7.0]})
    row = summarize_runs(runs, ["x"]).iloc[0]
    m, lo, hi = mean_ci([2.0, 2.0, 6.0])  # one value per seed
    assert row["seeds"] == 3
    assert (row["x_mean"], row["x_low"], row["x_high"]) == pytest.approx((m, lo, hi))


def test_summarize_runs_has_no_interval_with_one_seed():
    row = summarize_runs(pd.DataFrame({"policy": "p", "seed": [0], "x": [4.0]}), ["x"]).iloc[0]
    assert row["x_mean"] == 4.0 and math.isnan(row["x_low"]) and math.isnan(row["x_high"])


@pytest.mark.parametrize("policies, seeds, match", [
    ([], 2, "at least one policy"),
    (["blast"], [0, 0, 1], r"seeds: \[0\] given more than once"),
    (["blast"], 0, "count >= 1"),
    (["blast", "blast"], 2, "blast@1 \\[blast\\] is given more than once"),
])
def test_run_grid_refuses_bad_arguments(policies, seeds, match):
    with pytest.raises(OmnisimError, match=match):
        run_grid("default", policies, seeds, **TINY)


def test_compare_cli_empty_policy_list_is_one_paragraph_exit_2():
    res = CliRunner().invoke(main, ["compare", "--policies", ",", "--seeds", "2", "--users", "60",
                                    "--days", "3", "--json"])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and "at least one policy" in res.output


def test_compare_cli_one_seed_shows_no_interval():
    res = CliRunner().invoke(main, ["compare", "--policies", "blast", "--seeds", "1", "--users", "60",
                                    "--days", "3"])
    assert res.exit_code == 0, res.output
    rows = [line for line in res.output.splitlines() if line.startswith("  blast@1")]
    assert "no confidence interval" in res.output and rows
    assert not any("[" in line for line in rows)  # was "[887, 887]": a zero-width "95% CI"


def test_simulate_writes_users_where_ope_and_train_look(tmp_path):
    log = tmp_path / "sim.v2.parquet"
    res = CliRunner().invoke(main, ["simulate", "--policy", "blast", "--users", "60", "--days", "3",
                                    "--log", str(log), "--json", "--no-progress"])
    assert res.exit_code == 0, res.output
    from omnisim.datasets import users_path_for

    assert users_path_for(log) == tmp_path / "sim.v2_users.parquet"
    assert (tmp_path / "sim.v2_users.parquet").exists()
    assert not (tmp_path / "sim_users.parquet").exists()


@pytest.mark.parametrize("code", [
    # README: omnisim.sweep(...) after anything imported the omnisim.sweep module
    "import omnisim, omnisim.sweep; assert callable(omnisim.sweep); "
    "assert omnisim.sweep.sweep_tasks",
    # docs/tuning.md: omnisim.tune.load_tune_config, and omnisim.tune(...) after `from omnisim.tune import`
    "import omnisim; assert omnisim.tune.load_tune_config; from omnisim.tune import tune; "
    "assert callable(omnisim.tune)",
    "import omnisim; from omnisim.tune import METRIC_NAMES; omnisim.tune({})",
])
def test_sweep_and_tune_are_both_module_and_function(code):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if "omnisim.tune({})" in code:  # reaches the function: a config error, not 'module not callable'
        assert "TuneError" in out.stderr and "not callable" not in out.stderr, out.stderr
    else:
        assert out.returncode == 0, out.stderr


def test_summary_metrics_ci_matches_runs_by_hand():
    table = compare("default", ["email_only"], seeds=3, **TINY)
    runs = table.attrs["runs"]
    m, lo, hi = mean_ci(runs["messages_per_user"].to_numpy(float))
    row = table.iloc[0]
    assert (row["messages_per_user_mean"], row["messages_per_user_low"],
            row["messages_per_user_high"]) == pytest.approx((m, lo, hi))
    assert np.isfinite(lo)


def test_ope_cli_empty_estimator_list_is_a_usage_error(tmp_path):
    # was an IndexError traceback (exit 1) after reading the whole log
    res = CliRunner().invoke(main, ["ope", "--log", str(tmp_path / "none.parquet"), "--policy",
                                    "always:email", "--estimators", ","])
    assert res.exit_code == 2, res.output
    assert "--estimators" in res.output and "names no estimator" in res.output


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_compare_out_writes_the_format_its_suffix_names(tmp_path, suffix):
    out = tmp_path / f"cmp{suffix}"
    res = CliRunner().invoke(main, ["compare", "--policies", "blast,email_only", "--seeds", "2",
                                    "--users", "60", "--days", "3", "--json", "--out", str(out)])
    assert res.exit_code == 0, res.output
    read = pd.read_parquet if suffix == ".parquet" else pd.read_csv  # .parquet was a CSV
    table, runs = read(out), read(tmp_path / f"cmp_runs{suffix}")
    assert list(table["policy"]) == ["blast@1", "email_only@1"] and len(runs) == 4


def test_run_grid_takes_one_policy_given_as_a_string():
    runs = run_grid("default", "blast", [0], n_users=40, days=2, progress=False)
    assert list(runs["policy"]) == ["blast@1"]  # was one run per character of "blast"


def test_ope_cli_says_what_it_is_doing_on_stderr(tmp_path):
    """A Hillstrom-size evaluation takes half a minute: the user sees its phases (not in --json)."""
    log = tmp_path / "sim.parquet"
    res = CliRunner().invoke(main, ["simulate", "--policy", "random_channel", "--users", "60",
                                    "--days", "3", "--log", str(log), "--json", "--no-progress"])
    assert res.exit_code == 0, res.output
    args = ["ope", "--log", str(log), "--policy", "always:email", "--reward", "open"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "rebuilding the logged decisions' contexts" in res.stderr
    assert "logged decisions" in res.stdout and "rebuilding" not in res.stdout
    res = CliRunner().invoke(main, args + ["--json"])
    assert res.exit_code == 0 and res.stderr == ""
