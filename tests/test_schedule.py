"""`omnisim report run --config`: schedule validation, index page, statuses and exit code."""

from __future__ import annotations

import datetime as dt
import re

import pytest
import yaml
from click.testing import CliRunner

from omnisim.cli import main
from omnisim.experiment import run_one
from omnisim.log import write_log
from omnisim.schedule import ScheduleError, load_schedule


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("schedule")
    r = run_one("default", "seed_journey+pressure", 2, n_users=120, days=4)
    write_log(r.log, tmp / "sim.parquet")
    r.users.to_parquet(tmp / "users.parquet")
    (tmp / "broken.csv").write_text("ts,user_id,event,channel\n2024-01-01T00:00:00Z,u1,opend,email\n")
    return tmp


def _write(tmp, doc) -> str:
    path = tmp / "reports.yaml"
    path.write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc)
    return str(path)


@pytest.mark.parametrize("doc, expected", [
    ({"report": []}, "expected a mapping with the key 'reports'"),
    ({"reports": []}, "'reports' must be a non-empty list"),
    ({"reports": [], "extra": 1}, "unknown top-level key(s) 'extra'"),
    ({"reports": ["fatigue"]}, "reports[0]: expected a mapping"),
    ({"reports": [{"log": "sim.parquet"}]}, "reports[0].name: required"),
    ({"reports": [{"name": "fatigue"}]}, "reports[0].log: required"),
    ({"reports": [{"name": "fatigue", "log": "x", "param": {}}]}, "reports[0]: unknown key(s) 'param'"),
    ({"reports": [{"name": "fatigue", "log": "x"}, {"name": "fatige", "log": "x"}]}, "reports[1].name: unknown report 'fatige'"),
    ({"reports": [{"name": "fatigue", "log": "x", "params": [1]}]}, "reports[0].params: expected a mapping"),
    ({"reports": [{"name": "fatigue", "log": "x", "users": 3}]}, "reports[0].users: expected a path"),
    ({"reports": [{"name": "fatigue", "log": "x", "params": {"log_path": "y"}}]}, "reports[0].params.log_path"),
    ({"reports": [{"name": "fatigue", "log": "x", "out": "../up"}]}, "reports[0].out"),
    ({"reports": [{"name": "sweep_results", "log": "x", "results": "r.parquet"}]}, "exactly one of them"),
    ({"reports": [{"name": "sweep_results", "results": "r.parquet", "users": "u"}]},
     "reports[0].users: goes with a log"),
    ({"reports": [{"name": "sweep_results", "results": ""}]}, "reports[0].results: required"),
    ({"reports": [{"name": "fatigue", "log": "x", "params": {"results_path": "y"}}]}, "reports[0].params.results_path"),
    ("reports: [unclosed", "not valid YAML"),
    ({"reports": [{"name": "fatigue", "log": "x", "params": {"hihg_per_week": 3}}]},
     "reports[0].params.hihg_per_week: unknown parameter(s) 'hihg_per_week'"),
    ({"reports": [{"name": "fatigue", "log": "x"}, {"name": "send_time", "log": "x", "params": {"metric": "clicks"}}]},
     "reports[1].params.metric: report 'send_time': parameter metric = 'clicks' is invalid; expected one of"),
])
def test_config_errors_name_the_key(tmp_path, doc, expected):
    with pytest.raises(ScheduleError) as err:
        load_schedule(_write(tmp_path, doc))
    assert expected in str(err.value)
    res = CliRunner().invoke(main, ["report", "run", "--config", str(tmp_path / "reports.yaml")])
    assert res.exit_code == 2 and expected in res.output and "Traceback" not in res.output


def test_relative_paths_and_repeated_names(tmp_path):
    entries = load_schedule(_write(tmp_path, {"reports": [
        {"name": "fatigue", "log": "a.parquet"}, {"name": "fatigue", "log": "sub/b.parquet", "users": "u.csv"}]}))
    assert [e.out for e in entries] == ["fatigue", "fatigue-2"]
    assert entries[1].log == (tmp_path / "sub" / "b.parquet").resolve() and entries[1].users == (tmp_path / "u.csv").resolve()


def test_run_with_one_failing_report(files, tmp_path):
    config = _write(files, {"reports": [
        {"name": "fatigue", "log": "sim.parquet", "users": "users.parquet", "params": {"max_prev": 5},
         "out": "weekly_fatigue"},
        {"name": "channel_comparison", "log": "broken.csv"},
    ]})
    res = CliRunner().invoke(main, ["report", "run", "--config", config, "--out", str(tmp_path)])
    assert res.exit_code == 1, res.output
    folder = tmp_path / dt.date.today().isoformat()
    lines = [ln for ln in res.output.splitlines() if ln.startswith(("OK", "FAILED"))]
    assert len(lines) == 2 and lines[0].startswith("OK") and lines[1].startswith("FAILED")
    assert "unknown value 'opend'" in lines[1]
    assert (folder / "weekly_fatigue.html").exists() and (folder / "weekly_fatigue.json").exists()
    index = (folder / "index.html").read_text()
    rows = re.findall(r'<tr class="(ok|failed)">(.*?)</tr>', index, re.S)
    assert [r[0] for r in rows] == ["ok", "failed"]
    assert 'href="weekly_fatigue.html"' in rows[0][1] and "href" not in rows[1][1]
    assert "unknown value" in rows[1][1] and "1 ok, 1 failed" in index
    assert "http" not in index


def test_a_sweeps_results_table_on_the_schedule(tmp_path):
    from omnisim.sweep import sweep

    table = sweep("default", ["blast", "email_only"], 2, n_users=80, days=3, scheduler="sequential",
                  progress=False)
    (tmp_path / "sweeps").mkdir()
    table.to_parquet(tmp_path / "sweeps" / "nightly.parquet")
    config = _write(tmp_path, {"reports": [{"name": "sweep_results", "results": "sweeps/nightly.parquet",
                                            "params": {"objective": "messages_per_user"}}]})
    res = CliRunner().invoke(main, ["report", "run", "--config", config, "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    folder = tmp_path / "out" / dt.date.today().isoformat()
    assert "Best policy per scenario variant" in (folder / "sweep_results.html").read_text()
    index = (folder / "index.html").read_text()
    assert "sweeps/nightly.parquet" in index and "1 ok, 0 failed" in index
