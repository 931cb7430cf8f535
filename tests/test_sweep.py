"""Sweeps on Dask distributed: identical to a sequential run, streamed, partitioned logs,
config validation naming the key, and the `omnisim sweep` command."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from omnisim.cli import main
from omnisim.sweep import SweepConfigError, load_sweep_config, run_task, sweep, sweep_tasks

CONFIG = {
    "scenario": "default", "n_users": 80, "days": 4, "seeds": 2,
    "grid": {"fatigue.half_life_h": [24, 144]},
    "policies": ["email_only",
                 {"name": "cap1", "policy": "blast", "pressure": {"caps": [{"max": 1, "window_h": 168}]}}],
}


@pytest.fixture(scope="module")
def tasks():
    return load_sweep_config(CONFIG).tasks


@pytest.fixture(scope="module")
def sequential(tasks):
    return sweep(None, [], tasks=tasks, scheduler="sequential", progress=False)


def test_tasks_expand_the_grid_in_a_fixed_order(tasks):
    assert len(tasks) == 2 * 2 * 2
    assert [t.run_id for t in tasks] == list(range(8))
    assert tasks[0].scenario.fatigue.half_life_h == 24 and tasks[-1].scenario.fatigue.half_life_h == 144
    assert tasks[0].scenario.n_users == 80 and {t.policy_label for t in tasks} == {"email_only", "cap1"}


def test_local_cluster_of_two_workers_equals_sequential(tasks, sequential, tmp_path):
    dist = sweep(None, [], tasks=tasks, n_workers=2, processes=False, progress=False,
                 log_dir=tmp_path / "logs")
    pd.testing.assert_frame_equal(dist.drop(columns="log_path"), sequential)
    assert sequential["messages"].gt(0).all()
    # one Parquet part per run, readable as one partitioned dataset
    parts = sorted((tmp_path / "logs").glob("run=*/part-*.parquet"))
    assert len(parts) == len(tasks)
    logs = pd.read_parquet(tmp_path / "logs")
    assert logs["run"].nunique() == len(tasks)
    counts = logs[logs["event"] == "sent"].groupby("run", observed=True).size()
    assert sorted(counts.to_numpy()) == sorted(sequential["messages"].to_numpy())


def test_any_scheduler_address(tasks, sequential):
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=None) as cluster:
        got = sweep(None, [], tasks=tasks[:3], scheduler=cluster.scheduler_address, progress=False)
    pd.testing.assert_frame_equal(got, sequential.iloc[:3].reset_index(drop=True))


def test_run_task_matches_run_one(tasks):
    from omnisim.experiment import run_one
    from omnisim.policies.registry import get_policy

    row = run_task(tasks[0])
    ref = run_one(tasks[0].scenario, get_policy("email_only"), tasks[0].seed)
    assert row["messages"] == ref.metrics["messages"] and row["revenue"] == ref.metrics["revenue"]


def test_python_api_with_scenario_objects_and_grid():
    from omnisim.model.scenario import load_scenario

    sc = load_scenario("default")
    t = sweep_tasks({"a": sc, "b": sc.replace(fatigue={"enabled": False})}, ["blast"], [3, 4],
                    n_users=50, days=2)
    assert [x.scenario_name for x in t] == ["a", "a", "b", "b"] and [x.seed for x in t] == [3, 4, 3, 4]
    assert t[2].scenario.fatigue.enabled is False and t[0].scenario.n_users == 50


def test_policy_grid_sweeps_paths_into_the_policy_document():
    cfg = {"scenario": "default", "n_users": 120, "days": 10, "seeds": 2,
           "grid": {"fatigue.half_life_h": [24, 168]},
           "policies": [{"name": "capped", "policy": "blast",
                         "pressure": {"caps": [{"max": 1, "window_h": 168}]}}],
           "policy_grid": {"pressure.caps[0].max": [1, 7]}}
    tasks = load_sweep_config(cfg).tasks
    assert [(t.scenario.fatigue.half_life_h, t.policy_label, t.seed) for t in tasks[:4]] == [
        (24, "capped[pressure.caps[0].max=1]", 0), (24, "capped[pressure.caps[0].max=1]", 1),
        (24, "capped[pressure.caps[0].max=7]", 0), (24, "capped[pressure.caps[0].max=7]", 1)]
    assert tasks[2].policy["pressure"]["caps"][0]["max"] == 7 and len(tasks) == 8
    table = sweep(None, [], tasks=tasks, scheduler="sequential", progress=False)
    per = table.groupby(["fatigue.half_life_h", "pressure.caps[0].max"])["messages_per_user"].mean().unstack()
    assert (per[1] < per[7]).all()  # the cap the grid set is the cap the runs obeyed
    assert table["cap_violations"].eq(0).all()
    assert set(table["base_policy"]) == {"capped"} and table["policy"].nunique() == 2
    # the report's plot: one line per base policy along the cap, a panel per half-life
    from omnisim.sweep_results import plot_grid

    fig = plot_grid(table, "messages_per_user", x="pressure.caps[0].max")
    assert [ax.get_legend_handles_labels()[1] for ax in fig.axes] == [["capped"], ["capped"]]
    assert [ax.get_title() for ax in fig.axes] == ["fatigue.half_life_h=24", "fatigue.half_life_h=168"]


def test_policy_grid_needs_documents_and_distinct_paths():
    from omnisim.policies.registry import get_policy

    with pytest.raises(ValueError, match="policy_grid needs policies given by name, file or mapping"):
        sweep_tasks("default", [get_policy("blast")], 1, policy_grid={"pressure.caps[0].max": [1]})
    with pytest.raises(ValueError, match="in both grid and policy_grid"):
        sweep_tasks("default", ["blast+pressure"], 1, grid={"a.b": [1]}, policy_grid={"a.b": [1]})


@pytest.mark.parametrize("patch, key", [
    ({"policy_grid": {"pressure.caps[0].max": 3}}, "policy_grid.pressure.caps[0].max: expected a non-empty list"),
    ({"policy_grid": {"pressure.caps[0].max": [2]}},  # email_only has no pressure rules
     "policy_grid.pressure.caps[0].max = 2 on policies[0] (email_only): path pressure.caps[0].max: pressure does not exist"),
    ({"policies": CONFIG["policies"][1:], "policy_grid": {"pressure.caps[0].max": ["x"]}},
     "policy_grid.pressure.caps[0].max = 'x' on policies[0] (cap1): pressure.caps[0].max: expected an integer"),
    ({"policies": CONFIG["policies"][1:], "policy_grid": {"pressure.caps[9].max": [1]}}, "out of range"),
    ({"policy_grid": ["x"]}, "policy_grid: expected a mapping"),
    ({"bogus": 1}, "bogus: unknown key"),
    ({"seeds": 0}, "seeds: expected"),
    ({"seeds": [1, "x"]}, "seeds: expected"),
    ({"n_users": -5}, "n_users: expected"),
    ({"days": "long"}, "days: expected"),
    ({"engine": "turbo"}, "engine: expected one of fast, simpy"),
    ({"policies": []}, "policies: expected a non-empty list"),
    ({"policies": ["nope"]}, "policies[0]"),
    ({"policies": [3]}, "policies[0]: expected a policy name"),
    ({"policies": [{"policy": "blast", "pressure": {"caps": [{"max": "x", "window_h": 1}]}}]},
     "policies[0]"),
    ({"grid": {"fatigue.half_life_h": 3}}, "grid.fatigue.half_life_h: expected a non-empty list"),
    ({"grid": {"fatigue.half_life_h": [-1]}}, "grid.fatigue.half_life_h"),
    ({"grid": {"fatigue.nope": [1]}}, "grid.fatigue.nope"),
    ({"scenario": "no_such_scenario"}, "scenario:"),
    ({"scenario": ["default", "no_such_scenario"]}, "scenario[1]:"),
    ({"scenario": []}, "scenario: expected a built-in scenario name or a YAML path, or a non-empty list"),
])
def test_config_errors_name_the_key(tmp_path, patch, key):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, **patch}))
    with pytest.raises(SweepConfigError) as exc:
        load_sweep_config(path)
    assert str(path) in str(exc.value) and key in str(exc.value)


def test_cli_sweep_writes_results_and_logs(tmp_path):
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(yaml.safe_dump({**CONFIG, "seeds": 1, "grid": {}}))
    out = tmp_path / "results.parquet"
    res = CliRunner().invoke(main, ["sweep", "--config", str(cfg), "--scheduler", "sequential",
                                    "--out", str(out), "--logs", str(tmp_path / "logs"),
                                    "--no-progress"])
    assert res.exit_code == 0, res.output
    table = pd.read_parquet(out)
    assert len(table) == 2 and list(table["policy"]) == ["email_only", "cap1"]
    assert len(list((tmp_path / "logs").glob("run=*/part-00000.parquet"))) == 2
    # the report command it prints runs as printed
    hint = next(ln for ln in res.output.splitlines() if ln.startswith("report:"))
    args = hint.split()[2:] + ["--out", str(tmp_path / "sweep_results.html")]
    rep = CliRunner().invoke(main, args)
    assert rep.exit_code == 0, rep.output
    assert "Best policy per scenario variant" in (tmp_path / "sweep_results.html").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**CONFIG, "seeds": -1}))
    res = CliRunner().invoke(main, ["sweep", "--config", str(bad), "--out", str(out)])
    assert res.exit_code == 2 and "seeds" in res.output


def test_cli_engine_option(tmp_path):
    res = CliRunner().invoke(main, ["simulate", "--policy", "email_only", "--users", "40", "--days", "2",
                                    "--engine", "simpy", "--json", "--no-progress"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["compare", "--policies", "email_only", "--users", "40", "--days", "2",
                                    "--seeds", "2", "--engine", "fast", "--json"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["simulate", "--engine", "warp"])
    assert res.exit_code == 2


def test_config_with_several_scenarios(tmp_path):
    from omnisim.model.scenario import load_scenario

    (tmp_path / "quiet.yaml").write_text(yaml.safe_dump({"name": "quiet", "fatigue": {"half_life_h": 12}}))
    cfg = tmp_path / "sweep.yaml"  # the YAML path is relative to the config file
    cfg.write_text(yaml.safe_dump({**CONFIG, "grid": {}, "seeds": 1, "scenario": ["default", "quiet.yaml"]}))
    tasks = load_sweep_config(cfg).tasks
    assert [t.scenario_name for t in tasks] == ["default", "default", "quiet", "quiet"]
    assert tasks[2].scenario.fatigue.half_life_h == 12 and tasks[2].scenario.n_users == 80
    assert tasks[0].scenario.fatigue.half_life_h == load_scenario("default").fatigue.half_life_h
