"""notebooks/compare_policies.ipynb runs through papermill with a real kernel."""

import pandas as pd

from omnisim.reports import run_report


def test_compare_notebook_runs_and_writes_its_table(tmp_path):
    res = run_report("compare_policies", tmp_path / "compare.html",
                     {"policies": ["seed_journey+pressure", "blast"], "seeds": 2, "n_users": 120,
                      "days": 5, "out_dir": str(tmp_path)})
    html = res.html_path.read_text()
    assert "Policy comparison" in html and "<img" in html  # figures embedded
    assert res.notebook_path.exists()
    table = pd.read_csv(tmp_path / "compare_policies.csv")
    assert list(table["policy"]) == ["seed_journey@1+pressure@1", "blast@1"]
    assert table.loc[0, "cap_violations_mean"] == 0
    runs = pd.read_csv(tmp_path / "compare_policies_runs.csv")
    assert len(runs) == 4
