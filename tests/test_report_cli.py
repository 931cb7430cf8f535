"""`omnisim report NAME …` and `omnisim report list`: bad input fails fast with exit 2, before any kernel."""

from __future__ import annotations

import time

import pandas as pd
import pytest
from click.testing import CliRunner

from omnisim.cli import main
from omnisim.experiment import run_one
from omnisim.log import write_log
from omnisim.reports import ReportError, check_params, run_report

SUITE = ("channel_comparison", "send_time", "fatigue", "journey_funnel", "policy_evaluation")


@pytest.fixture(scope="module")
def sim_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli_logs")
    r = run_one("default", "seed_journey+pressure", 5, n_users=120, days=4)
    write_log(r.log, tmp / "sim.parquet")
    r.users.to_parquet(tmp / "users.parquet")
    bad = r.log.copy()
    bad["event"] = bad["event"].astype(str).replace({"opened": "opend"})
    bad["channel"] = bad["channel"].astype(str)
    bad.to_parquet(tmp / "bad.parquet", index=False)
    return tmp


def test_list_shows_every_report_with_parameters():
    res = CliRunner().invoke(main, ["report", "list"])
    assert res.exit_code == 0, res.output
    for name in SUITE:
        assert f"\n{name}\n" in f"\n{res.output}"
    assert "attribution_window_h = 336.0  # a purchase counts" in res.output
    assert "prior_sends = 20.0" in res.output and "entry_gap_h = 72.0" in res.output


@pytest.mark.parametrize("rep, param, expected", [
    ("channel_comparison", "confidence=1.5", "confidence = 1.5 is invalid; expected a level in (0, 1)"),
    ("channel_comparison", "attribution_window_h=-2", "attribution_window_h = -2 is invalid"),
    ("channel_comparison", "attribution_window_h=soon", "expected a number"),
    ("send_time", "metric=visits", "expected one of opened, clicked"),
    ("send_time", "n_hours=0", "n_hours = 0 is invalid"),
    ("fatigue", "low_per_week=9", "at most high_per_week"),
    ("fatigue", "max_prev=2.5", "a whole number"),
    ("journey_funnel", "entry_gap=3", "unknown parameter(s) 'entry_gap'"),
    ("policy_evaluation", "reward=revenue", "expected one of auto"),
    ("channel_comparison", "by_campaign=maybe", "true or false"),
])
def test_bad_parameter_exits_2_fast_without_traceback(sim_files, tmp_path, rep, param, expected):
    t0 = time.perf_counter()
    res = CliRunner().invoke(main, ["report", rep, "--log", str(sim_files / "sim.parquet"), "--param", param,
                                    "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 2, res.output
    assert expected in res.output
    assert "Traceback" not in res.output
    assert time.perf_counter() - t0 < 10  # no kernel was started
    assert not (tmp_path / "r.ipynb").exists()


@pytest.mark.parametrize("rep", SUITE)
def test_invalid_log_exits_2_with_the_validation_message(sim_files, tmp_path, rep):
    res = CliRunner().invoke(main, ["report", rep, "--log", str(sim_files / "bad.parquet"),
                                    "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 2, res.output
    assert "is not a valid engagement log" in res.output and "unknown value 'opend'" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "r.ipynb").exists()


def test_missing_log_and_bad_users_table(sim_files, tmp_path):
    res = CliRunner().invoke(main, ["report", "fatigue", "--log", str(tmp_path / "nope.parquet")])
    assert res.exit_code == 2 and "file not found" in res.output
    (tmp_path / "users.csv").write_text("id,timezone\n1,UTC\n")
    res = CliRunner().invoke(main, ["report", "fatigue", "--log", str(sim_files / "sim.parquet"),
                                    "--users", str(tmp_path / "users.csv")])
    assert res.exit_code == 2 and "no 'user_id' column" in res.output


def test_check_params_direct():
    with pytest.raises(ReportError) as err:
        check_params("fatigue", {"high_per_week": "many"})
    assert err.value.exit_code == 2 and "high_per_week" in str(err.value)
    check_params("policy_evaluation", {"candidates": "uniform", "estimators": ["ips"], "seed": 3})


def test_a_failing_cell_still_reports_the_notebook_error(sim_files, tmp_path):
    with pytest.raises(ReportError) as err:
        run_report("policy_evaluation", tmp_path / "p.html",
                   {"log_path": str(sim_files / "sim.parquet"), "candidates": ["always:carrier_pigeon"]})
    assert err.value.exit_code == 1
    assert "ValueError" in str(err.value) and "carrier_pigeon" in str(err.value) and "never appears" in str(err.value)
    assert pd.notna(err.value.cell_index)


def test_list_parameters_get_range_checks_per_element():
    known = {"half_lives_h": {"default": "[24, 72]"}, "caps": {"default": "[1, 2]"}}
    check_params("x", {"half_lives_h": [12, 48]}, known)
    with pytest.raises(ReportError, match="half_lives_h"):
        check_params("x", {"half_lives_h": [12, -1]}, known)
