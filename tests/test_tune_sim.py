"""omnisim.tune on the real simulator: a brute-forced optimum, CRN, export, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from omnisim.experiment import run_one
from omnisim.model.scenario import load_scenario
from omnisim.policies.registry import load_policy
from omnisim.tune import load_tune_config, tune

CAPS = (1, 2, 3, 4)
SEEDS = (0, 1)
# A tiny world where marketing pressure bites hard (strong fatigue on response and opt-out),
# so the best weekly cap of a blast policy is not simply the largest.
WORLD = {"response_strength": 4.0, "unsubscribe_gain": 4.0}


def _doc(cap: int) -> dict:
    return {"policy": "blast", "pressure": {"caps": [{"max": cap, "window_h": 168}]}}


@pytest.fixture(scope="module")
def scenario():
    return load_scenario("default").replace(n_users=100, days=7, fatigue=WORLD)


def test_tuner_finds_the_brute_forced_best_cap(scenario):
    # brute force, independently of the tuner: every cap on the same seeds
    objective = {}
    for cap in CAPS:
        ms = [run_one(scenario, load_policy(_doc(cap)), s).metrics for s in SEEDS]
        objective[cap] = sum(m["revenue"] - m["cost"] - 20 * m["unsubscribes"] for m in ms) / len(ms)
    best = max(objective, key=objective.get)
    cfg = load_tune_config({"policy": _doc(3), "tunables": {"pressure.caps[0].max": {"low": 1, "high": 4, "type": "int"}},
                            "objective": "revenue - cost - 20 * unsubscribes", "trials": 12, "seeds": list(SEEDS),
                            "fresh_seeds": 1, "top_k": 1, "prune_rounds": 1, "sampler_seed": 0})
    cfg.scenario = scenario
    res = tune(cfg, progress=False)
    done = res.trials[res.trials["state"] == "COMPLETE"]
    # common random numbers: the tuner's value for a cap equals the brute force's exactly
    for _, row in done.iterrows():
        assert row["value"] == pytest.approx(objective[int(row["pressure.caps[0].max"])], rel=1e-9)
    assert set(done["pressure.caps[0].max"]) == set(CAPS)  # 12 trials covered the 4 values (repeats are cached)
    assert res.winner_params == {"pressure.caps[0].max": best}


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tune")
    cfg = {"name": "tiny", "scenario": "default", "n_users": 60, "days": 3, "policy": "seed_journey+pressure",
           "tunables": {"journeys[0].steps[1].delay_h": {"low": 1, "high": 24, "log": True},
                        "pressure.caps[1].max": {"low": 1, "high": 4, "type": "int"}},
           "objective": "revenue - cost - 5 * unsubscribes", "constraints": ["unsubscribe_rate <= 0.05"],
           "trials": 3, "seeds": 1, "fresh_seeds": 2, "top_k": 1, "storage": str(tmp / "tiny.study.db")}
    (tmp / "tune.yaml").write_text(json.dumps(cfg))  # JSON is YAML
    return tmp


def test_cli_tunes_exports_and_policy_show_prints_it(tuned):
    from omnisim.cli import main
    from omnisim.policies.artifact import load_artifact, read_artifact

    out = tuned / "tuned.json"
    r = CliRunner().invoke(main, ["tune", "--config", str(tuned / "tune.yaml"), "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "artifact:" in r.output and out.exists()
    m = read_artifact(out)
    t = m["tuning"]
    assert t["objective"] == "revenue - cost - 5 * unsubscribes" and t["constraints"] == ["unsubscribe_rate <= 0.05"]
    assert [p["path"] for p in t["search_space"]] == ["journeys[0].steps[1].delay_h", "pressure.caps[1].max"]
    assert set(t["metrics"]["start"]) >= {"objective", "revenue", "unsubscribes"}
    assert set(t["improvement"]) == {"mean", "low", "high", "significant"}
    pol = load_artifact(out)
    assert pol.name.startswith("seed_journey@1")
    if t["winning_values"]:
        assert m["parameters"]["pressure"]["caps"][1]["max"] == t["winning_values"]["pressure.caps[1].max"]
    shown = CliRunner().invoke(main, ["policy", "show", str(out)])
    assert shown.exit_code == 0, shown.output
    assert "tuning" in shown.output and "revenue - cost - 5 * unsubscribes" in shown.output
    assert "pressure.caps[1].max" in shown.output
    # resumable: a rerun with more trials continues the stored study
    r2 = CliRunner().invoke(main, ["tune", "--config", str(tuned / "tune.yaml"), "--out", str(out),
                                   "--trials", "4", "--no-progress"])
    assert r2.exit_code == 0, r2.output
    assert read_artifact(out)["tuning"]["trials"] == 4


def test_cli_reports_bad_config_with_the_key(tmp_path):
    from omnisim.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("policy: seed_journey+pressure\nobjective: revenue\n"
                   "tunables:\n  pressure.caps[9].max: {low: 1, high: 3, type: int}\n")
    r = CliRunner().invoke(main, ["tune", "--config", str(bad), "--out", str(tmp_path / "x.json")])
    assert r.exit_code == 2
    assert "pressure.caps[9] is out of range" in r.output


def test_dask_scheduler_gives_the_sequential_results():
    from distributed import Client, LocalCluster, get_task_stream

    spec = {"n_users": 50, "days": 2, "policy": "seed_journey+pressure",
            "tunables": {"pressure.caps[1].max": {"low": 1, "high": 4, "type": "int"}},
            "objective": "revenue - cost", "trials": 2, "seeds": 1, "fresh_seeds": 1, "top_k": 1, "batch": 2}
    seq = tune(load_tune_config(spec), progress=False)
    with (LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as cluster,
          Client(cluster) as client, get_task_stream(client) as stream):
        dist = tune(load_tune_config(spec), scheduler=client, progress=False)
    # every run went to the cluster: the start + 2 trials on 1 seed, start + top 1 on 1 fresh seed
    assert sum(t["key"].startswith("omnisim-sweep") for t in stream.data) == 5
    assert list(dist.trials["value"]) == list(seq.trials["value"])
    np.testing.assert_equal(dist.improvement, seq.improvement)  # NaN-aware
