"""notebooks/learn_and_export.ipynb runs through papermill (small sizes) and exports artifacts."""

import json

from omnisim.policies.artifact import load_artifact, read_artifact
from omnisim.reports import run_report


def test_learn_and_export_notebook_runs_and_exports_a_verified_winner(tmp_path):
    res = run_report("learn_and_export", tmp_path / "learn.html",
                     {"hillstrom_users": 6000, "n_users": 150, "days": 7, "seeds": 2, "mc_draws": 3,
                      "out_dir": str(tmp_path)})
    html = res.html_path.read_text()
    assert "Qini curves" in html and "<img" in html
    summary = json.loads((tmp_path / "learn_and_export.json").read_text())
    assert set(summary["auuc"]) == {"mens_email", "womens_email"}
    ope = {(r["policy"], r["estimator"]): r for r in summary["hillstrom_ope"]}
    assert ope[("always mens e-mail", "snips")]["n"] > 1000
    assert summary["simulation"][0]["policy"] == "seed_journey@1+pressure@1"
    winner = read_artifact(summary["winner"]["artifact"])
    assert winner["name"] == summary["winner"]["policy"]
    assert load_artifact(summary["uplift_artifact"]).name == "uplift@1"
