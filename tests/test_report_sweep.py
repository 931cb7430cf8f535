"""notebooks/sweep_fatigue.ipynb runs through papermill (a real kernel, a Dask LocalCluster)."""

import json

import pandas as pd

from omnisim.reports import run_report


def test_sweep_fatigue_notebook_runs_and_finds_peak_and_takeoff(tmp_path):
    res = run_report("sweep_fatigue", tmp_path / "sweep.html",
                     {"caps_per_week": [1, 7], "half_lives_hours": [24, 168], "seeds": 2,
                      "n_users": 150, "days": 7, "n_workers": 2, "processes": False,
                      "out_dir": str(tmp_path)})
    html = res.html_path.read_text()
    assert "Frequency cap" in html and html.count("<img") >= 2  # line plots and heat map
    runs = pd.read_csv(tmp_path / "sweep_fatigue_runs.csv")
    assert len(runs) == 2 * 2 * 2 and set(runs["cap_per_week"]) == {1, 7}
    # a tighter cap sends fewer messages, in every half-life
    per = runs.groupby(["half_life_h", "cap_per_week"])["messages_per_user"].mean().unstack()
    assert (per[1] < per[7]).all()
    out = json.loads(res.json_path.read_text())
    assert {s["half_life_h"] for s in out["summary"]} == {24.0, 168.0}
    assert all(s["peak_cap_per_week"] in (1, 7) for s in out["summary"])
