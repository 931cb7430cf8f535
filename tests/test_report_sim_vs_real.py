"""notebooks/sim_vs_real.ipynb runs through papermill with a real kernel, at small sizes."""

from __future__ import annotations

import json

import numpy as np

from omnisim.datasets import convert
from omnisim.log import write_log
from omnisim.model.calibrate import fit_calibration, write_scenario
from omnisim.model.engine_simpy import simulate
from omnisim.model.replay import ReplayPolicy, compare_distributions, compare_rates
from omnisim.model.scenario import Scenario
from omnisim.reports import run_report


def test_sim_vs_real_on_hillstrom_calibrated_on_the_fly(tmp_path):
    log_path, users_path = convert("hillstrom", tmp_path / "hill.parquet")
    res = run_report("sim_vs_real", tmp_path / "svr.html",
                     {"log_path": str(log_path), "users_path": str(users_path), "max_users": 1500, "seed": 1})
    html = res.html_path.read_text()
    assert "Simulated vs real" in html and "<img" in html
    out = json.loads(res.json_path.read_text())
    q = {r["quantity"]: r for r in out["rates"]}
    assert {"visit | mens_email", "conversion | none", "lift visit | womens_email vs none"} <= set(q)
    assert all(r["verdict"] for r in out["rates"])
    assert out["n_compared"] >= 10 and out["n_match"] >= 0.7 * out["n_compared"]


def _small_log(seed: int, open_prob: float):
    sc = Scenario.from_dict({"days": 6, "n_users": 150, "seed": seed,
                             "channels": {"email": {"open_prob": open_prob}}})
    wake = {f"u{i + 1:06d}": [(float(h), {"action": "email", "channel": "email", "propensity": 1.0,
                                          "policy": "p", "campaign": "c"}) for h in (10, 40, 80)]
            for i in range(150)}
    return simulate(sc, ReplayPolicy(), wakeups=wake, progress=False)


def test_sim_vs_real_with_a_scenario_file(tmp_path):
    real = _small_log(5, 0.3)
    write_log(real.log, tmp_path / "real.parquet")
    real.users.drop(columns=["activity"]).to_parquet(tmp_path / "users.parquet")
    cal = fit_calibration(real.log, real.users)
    write_scenario(cal.scenario, tmp_path / "cal.yaml")
    res = run_report("sim_vs_real", tmp_path / "svr.html",
                     {"log_path": str(tmp_path / "real.parquet"), "users_path": str(tmp_path / "users.parquet"),
                      "scenario_path": str(tmp_path / "cal.yaml"), "max_users": None})
    out = json.loads(res.json_path.read_text())
    names = {r["distribution"] for r in out["distributions"]}
    assert "email hours delivered→opened" in names
    assert any(r["quantity"] == "email open_rate" for r in out["rates"])


def test_compare_flags_a_real_difference():
    """A world with a far lower open rate must be told apart (the verdicts can fail)."""
    a, b = _small_log(1, 0.6), _small_log(2, 0.05)
    rates = compare_rates(a.log, b.log).set_index("quantity")
    assert rates.loc["email open_rate", "verdict"].startswith("differs")
    same = compare_rates(a.log, _small_log(3, 0.6).log).set_index("quantity")
    assert same.loc["email open_rate", "verdict"] == "matches"
    d = compare_distributions(a.log, b.log).set_index("distribution")
    assert np.isfinite(d.loc["visits per user", "ks_D"])
