"""The sweep_results report: a results table from `omnisim sweep` (failed runs included) read
by papermill on a real kernel — winners paired over common seeds, grid plots, failures listed;
and the helpers behind it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from omnisim.experiment import summarize_runs
from omnisim.reports import ReportError, run_report
from omnisim.sweep import sweep
from omnisim.sweep_results import (SweepResultsError, grid_columns, load_sweep_results, plot_grid,
                                   policy_leads)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """blast vs email_only vs a policy file that is missing (its runs fail), 2 half-lives."""
    tmp = tmp_path_factory.mktemp("sweep")
    table = sweep("default", ["blast", "email_only", str(tmp / "missing.yaml")], 4,
                  grid={"fatigue.half_life_h": [24, 168]}, n_users=150, days=7,
                  scheduler="sequential", progress=False, on_error="record")
    path = tmp / "results.parquet"
    table.to_parquet(path, index=False)
    return path, table


def test_leads_are_paired_over_seeds(results):
    _, table = results
    leads = policy_leads(table, "messages_per_user")
    assert list(leads["scenario"]) == list(table["scenario"].unique())
    for r in leads.itertuples():
        g = table[table["scenario"] == r.scenario].pivot(index="seed", columns="policy",
                                                        values="messages_per_user")
        assert r.best == "blast" and r.runner_up == "email_only"  # blast sends on every channel
        diff = (g["blast"] - g["email_only"]).to_numpy()
        assert r.lead_mean == pytest.approx(diff.mean()) and r.paired_seeds == 4
        assert r.lead_low < diff.mean() < r.lead_high
        assert r.p_value == pytest.approx(stats.ttest_1samp(diff, 0.0).pvalue)
    # Holm over the variants: the smaller p times 2, the larger at least that
    p = leads["p_value"].to_numpy()
    lo, hi = np.argsort(p)
    assert leads["p_holm"].iloc[lo] == pytest.approx(min(1, 2 * p[lo]))
    assert leads["p_holm"].iloc[hi] == pytest.approx(max(min(1, 2 * p[lo]), p[hi]))
    assert (leads["clear"] == (leads["p_holm"] < 0.05)).all()
    low = policy_leads(table, "messages_per_user", maximize=False)
    assert set(low["best"]) == {"email_only"}
    with pytest.raises(SweepResultsError, match="'nope' is not a column"):
        policy_leads(table, "nope")


def test_summary_leaves_failed_runs_out_and_counts_them(results):
    _, table = results
    s = summarize_runs(table, ["messages_per_user"], by=["scenario", "policy"])
    failed = s[s["policy"].str.endswith("missing.yaml")]
    assert (failed["failed"] == 4).all() and (failed["seeds"] == 0).all()
    assert failed["messages_per_user_mean"].isna().all()
    ok = s[s["policy"] == "blast"].iloc[0]
    runs = table[(table["policy"] == "blast") & (table["scenario"] == ok["scenario"])]
    assert ok["messages_per_user_mean"] == pytest.approx(runs["messages_per_user"].mean())
    assert grid_columns(table) == ["fatigue.half_life_h"]
    with pytest.raises(SweepResultsError, match="x='cap' is not a grid column"):
        plot_grid(table, "messages_per_user", x="cap")


def test_report_runs_on_a_results_file(results, tmp_path):
    path, table = results
    res = run_report("sweep_results", tmp_path / "sweep_results.html",
                     {"results_path": str(path), "objective": "messages_per_user",
                      "x_column": "fatigue.half_life_h",
                      "metrics": ["messages_per_user", "unsubscribes"], "out_dir": str(tmp_path)})
    html = res.html_path.read_text()
    assert "Failed runs" in html and "PolicyFileError" in html and html.count("<img") >= 2
    out = json.loads(res.json_path.read_text())
    assert out["runs"] == 24 and out["failed"] == 8 and out["grid"] == ["fatigue.half_life_h"]
    assert sorted(out["failed_run_ids"]) == sorted(table.loc[table["error"].notna(), "run_id"])
    assert {r["best"] for r in out["leads"]} == {"blast"}
    assert np.isclose(out["leads"][0]["lead_mean"],
                      policy_leads(table, "messages_per_user")["lead_mean"].iloc[0])


def test_bad_results_files_fail_before_the_kernel(tmp_path):
    with pytest.raises(ReportError, match="no such results file"):
        run_report("sweep_results", tmp_path / "r.html", {"results_path": str(tmp_path / "nope.parquet")})
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"policy": ["a"], "seed": [0]}).to_csv(bad, index=False)
    with pytest.raises(ReportError, match=r"bad\.csv: missing column\(s\) run_id, scenario") as exc:
        run_report("sweep_results", tmp_path / "r.html", {"results_path": str(bad)})
    assert exc.value.exit_code == 2
    with pytest.raises(SweepResultsError, match="cannot read it"):
        (tmp_path / "junk.parquet").write_text("not parquet")
        load_sweep_results(tmp_path / "junk.parquet")


def test_holm_and_paired_p_value():
    from omnisim.stats import holm, paired_p_value

    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(holm([0.5, np.nan, 0.6]), [1.0, np.nan, 1.0])
    assert np.isnan(holm([np.nan])).all() and holm([]).size == 0
    assert paired_p_value([1.0, 1.0, 1.0]) == 0.0 and paired_p_value([0.0, 0.0]) == 1.0
    assert np.isnan(paired_p_value([2.0]))
    d = [0.3, -0.1, 0.5, 0.2]
    assert paired_p_value(d) == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue)
