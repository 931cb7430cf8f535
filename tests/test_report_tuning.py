"""notebooks/tuning_report.ipynb runs through papermill on a tiny study."""

import json

from omnisim.reports import run_report
from omnisim.tune import export_tuned, load_tune_config, tune


def test_tuning_report_runs(tmp_path):
    cfg = load_tune_config({
        "name": "report-tiny", "n_users": 60, "days": 3, "policy": "seed_journey+pressure",
        "tunables": {"journeys[0].steps[1].delay_h": {"low": 1, "high": 24, "log": True},
                     "pressure.caps[1].max": {"low": 1, "high": 4, "type": "int"}},
        "objective": "revenue - cost - 5 * unsubscribes", "constraints": ["unsubscribe_rate <= 0.05"],
        "trials": 4, "seeds": 1, "fresh_seeds": 2, "top_k": 1})
    art = tmp_path / "tuned.json"
    res = tune(cfg, storage=str(tmp_path / "tuned.study.db"), progress=False)
    export_tuned(res, art)
    out = run_report("tuning_report", tmp_path / "tuning.html", {"artifact": str(art), "out_dir": str(tmp_path)})
    html = out.html_path.read_text()
    assert "Tuning report" in html and "Pareto front" in html and "<img" in html
    numbers = json.loads(out.json_path.read_text())
    assert numbers["trials"] == 4 and numbers["study"] == "report-tiny"
    assert numbers["pareto_trials"]["unsubscribes"]  # at least one trial on the front
    assert (tmp_path / "tuning_trials.csv").exists()
