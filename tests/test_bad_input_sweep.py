"""Malformed input to the user-facing commands: exit 2 with a message naming the file / key /
value and what was expected — never a traceback (README, 'A short tour')."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from omnisim.cli import main

BINARY = b"\x00\x01\xff\xfe not utf-8"


def run(args: list[str], cwd: Path | None = None):
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in res.output, res.output
    assert not (res.exception and not isinstance(res.exception, SystemExit)), repr(res.exception)
    return res


def expect_bad(args: list[str], *words: str):
    res = run(args)
    assert res.exit_code == 2, (res.exit_code, res.output)
    for w in words:
        assert w in res.output, (w, res.output)
    return res


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> dict[str, Path]:
    """A small simulated log, its users table, and a few broken files beside them."""
    d = tmp_path_factory.mktemp("bad")
    log = d / "sim.parquet"
    res = CliRunner().invoke(main, ["simulate", "--policy", "email_only", "--users", "60", "--days", "3",
                                    "--seed", "1", "--log", str(log), "--no-progress", "--json"])
    assert res.exit_code == 0, res.output
    users = pd.read_parquet(d / "sim_users.parquet")
    bad_tz = users.copy()
    bad_tz["timezone"] = "Mars/Olympus"
    bad_tz.to_parquet(d / "badtz_users.parquet")
    (d / "binary.yaml").write_bytes(BINARY)
    (d / "folder.yaml").mkdir()
    (d / "folder.json").mkdir()
    (d / "folder.parquet").mkdir()
    (d / "folder.csv").mkdir()
    return {"dir": d, "log": log, "users": d / "sim_users.parquet", "badtz": d / "badtz_users.parquet",
            "binary": d / "binary.yaml", "folder_yaml": d / "folder.yaml",
            "folder_json": d / "folder.json", "folder_parquet": d / "folder.parquet",
            "folder_csv": d / "folder.csv"}


# ---------------------------------------------------------------- the log
def test_validate_refuses_an_infinite_value(tmp_path, sim):
    df = pd.read_parquet(sim["log"]).head(20)
    df["value"] = df["value"].astype(float)
    df.loc[3, "value"] = np.inf
    path = tmp_path / "inf.parquet"
    df.to_parquet(path)
    expect_bad(["validate", path], "inf.parquet", "'value'", "inf", "row 4", "finite")


def test_validate_refuses_an_infinite_value_in_csv(tmp_path, sim):
    df = pd.read_parquet(sim["log"]).head(20)
    df["value"] = df["value"].astype(object)
    df.loc[1, "value"] = "-inf"
    path = tmp_path / "inf.csv"
    df.to_csv(path, index=False)
    expect_bad(["validate", path], "inf.csv", "'value'", "row 2")


# ---------------------------------------------------------------- YAML files that are not text / not files
#: Commands reading a YAML file ``{f}`` (``{d}``: a scratch folder), by id.
YAML_READERS = {
    "scenario": ["simulate", "--scenario", "{f}", "--users", "5", "--days", "1", "--no-progress"],
    "policy": ["simulate", "--policy", "{f}", "--users", "5", "--days", "1", "--no-progress"],
    "export": ["policy", "export", "{f}", "--out", "{d}/p.json"],
    "sweep": ["sweep", "--config", "{f}", "--out", "{d}/s.parquet", "--scheduler", "sequential"],
    "tune": ["tune", "--config", "{f}", "--out", "{d}/t.json"],
    "report-run": ["report", "run", "--config", "{f}", "--out", "{d}/r"],
    "calibrate-base": ["calibrate", "--log", "{log}", "--base", "{f}", "--out", "{d}/c.yaml"],
}


@pytest.mark.parametrize("cmd", list(YAML_READERS.values()), ids=list(YAML_READERS))
@pytest.mark.parametrize("kind", ["binary", "folder_yaml"])
def test_yaml_inputs_that_are_not_text_files(cmd, kind, sim):
    f = sim[kind]
    args = [a.format(f=f, d=sim["dir"], log=sim["log"]) for a in cmd]
    res = expect_bad(args, f.name)
    assert ("UTF-8" in res.output) if kind == "binary" else ("directory" in res.output), res.output


# ---------------------------------------------------------------- outputs that are folders
@pytest.mark.parametrize("cmd", [
    ["simulate", "--policy", "blast", "--users", "5", "--days", "1", "--no-progress", "--log", "{folder_parquet}"],
    ["compare", "--policies", "blast", "--seeds", "1", "--users", "5", "--days", "1", "--out", "{folder_csv}"],
    ["policy", "export", "blast", "--out", "{folder_json}"],
    ["policy", "train", "--kind", "sendtime", "--log", "{log}", "--out", "{folder_json}"],
    ["calibrate", "--log", "{log}", "--out", "{folder_yaml}"],
], ids=["simulate-log", "compare-out", "export-out", "train-out", "calibrate-out"])
def test_an_output_path_that_is_a_folder(cmd, sim):
    args = [a.format(**sim) for a in cmd]
    expect_bad(args, "folder.", "directory")


def test_sweep_out_that_is_a_folder(sim):
    cfg = sim["dir"] / "sweep_ok.yaml"
    cfg.write_text("policies: [blast]\nseeds: 1\nn_users: 5\ndays: 1\n")
    expect_bad(["sweep", "--config", cfg, "--out", sim["folder_parquet"], "--scheduler", "sequential",
                "--no-progress"], "folder.parquet", "directory")


# ---------------------------------------------------------------- --scheduler
def test_simulate_bad_scheduler_address():
    expect_bad(["simulate", "--policy", "blast", "--users", "5", "--days", "1", "--no-progress",
                "--scheduler", "bogus"], "--scheduler", "'bogus'", "tcp://")


def test_sweep_bad_scheduler_address(sim):
    cfg = sim["dir"] / "sweep_ok.yaml"
    cfg.write_text("policies: [blast]\nseeds: 1\nn_users: 5\ndays: 1\n")
    expect_bad(["sweep", "--config", cfg, "--out", sim["dir"] / "s2.parquet", "--scheduler", "bogus",
                "--no-progress"], "--scheduler", "'bogus'", "tcp://")


# ---------------------------------------------------------------- --param
def test_param_value_that_is_not_yaml(sim):
    expect_bad(["report", "engagement", "--log", sim["log"], "--param", "title=[unclosed",
                "--out", sim["dir"] / "r.html"], "--param", "title", "[unclosed")


# ---------------------------------------------------------------- users tables
def test_policy_train_users_with_unknown_timezone(sim):
    expect_bad(["policy", "train", "--kind", "sendtime", "--log", sim["log"], "--users", sim["badtz"],
                "--out", sim["dir"] / "t.json"], "badtz_users.parquet", "timezone", "Mars/Olympus", "IANA")


def test_ope_users_with_unknown_timezone(sim):
    expect_bad(["ope", "--log", sim["log"], "--users", sim["badtz"], "--policy", "email_only"],
               "badtz_users.parquet", "timezone", "Mars/Olympus", "IANA")


def test_calibrate_users_with_duplicate_ids(sim, tmp_path):
    users = pd.read_parquet(sim["users"])
    dup = tmp_path / "dup_users.parquet"
    pd.concat([users, users.head(2)]).to_parquet(dup)
    expect_bad(["calibrate", "--log", sim["log"], "--users", dup, "--out", tmp_path / "c.yaml"],
               "dup_users.parquet", "more than once", "one row per user")


def test_users_table_that_is_not_parquet(sim, tmp_path):
    broken = tmp_path / "broken_users.parquet"
    broken.write_bytes(b"PAR1" + b"\x00" * 64)
    expect_bad(["ope", "--log", sim["log"], "--users", broken, "--policy", "email_only"],
               "broken_users.parquet", "Parquet")


# ---------------------------------------------------------------- report parameters, before any kernel
def test_report_start_that_is_not_a_date_fails_fast(sim):
    expect_bad(["report", "engagement", "--log", sim["log"], "--param", "start=yesterday",
                "--out", sim["dir"] / "r.html"], "start", "'yesterday'", "ISO 8601")


# ---------------------------------------------------------------- NaN in configs: refused at load, file named
@pytest.mark.parametrize("command", ["sweep", "tune"])
def test_config_days_nan_is_refused_with_the_file_named(command, sim, tmp_path):
    cfg = tmp_path / f"{command}_nan.yaml"
    if command == "sweep":
        cfg.write_text("policies: [blast]\nseeds: 1\nn_users: 5\ndays: .nan\n")
        args = ["sweep", "--config", cfg, "--out", tmp_path / "s.parquet", "--scheduler", "sequential"]
    else:
        cfg.write_text("name: t\nn_users: 5\ndays: .nan\npolicy: seed_journey+pressure\n"
                       "tunables:\n  pressure.dedup_h: {low: 0, high: 72}\nobjective: revenue - cost\n"
                       "trials: 1\nseeds: 1\nfresh_seeds: 1\ntop_k: 1\n")
        args = ["tune", "--config", cfg, "--out", tmp_path / "t.json", "--no-progress"]
    expect_bad(args, f"{command}_nan.yaml", "days", "nan", "finite number > 0")


def test_policy_export_unknown_key_names_the_file(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("name: mine\npolicy: blast\nfoo: 1\n")
    expect_bad(["policy", "export", f, "--out", tmp_path / "p.json"], "mine.yaml", "foo", "unknown key")


def test_policy_train_parameter_of_the_wrong_type_is_named(tmp_path):
    from omnisim.datasets import convert

    log, users = convert("hillstrom", tmp_path / "h.parquet")
    expect_bad(["policy", "train", "--kind", "uplift", "--log", log, "--users", users,
                "--param", "top_k_pct=abc", "--out", tmp_path / "u.json"],
               "uplift", "top_k_pct='abc'")


@pytest.mark.parametrize("days", ["nan", "inf"])
def test_simulate_days_not_finite(days):
    expect_bad(["simulate", "--policy", "blast", "--users", "5", "--days", days, "--no-progress"],
               "--days", days, "finite")


# ---------------------------------------------------------------- repeated seeds in a sweep config
def test_sweep_config_repeated_seed_is_refused(tmp_path):
    cfg = tmp_path / "dup_seeds.yaml"
    cfg.write_text("policies: [blast]\nseeds: [1, 1]\nn_users: 5\ndays: 1\n")
    out = tmp_path / "s.parquet"
    expect_bad(["sweep", "--config", cfg, "--out", out, "--scheduler", "sequential", "--no-progress"],
               "dup_seeds.yaml", "seeds", "1", "more than once")
    assert not out.exists()


# ---------------------------------------------------------------- output extensions, checked before any work
@pytest.mark.parametrize("cmd,expected", [
    (["simulate", "--policy", "blast", "--users", "30", "--days", "2", "--no-progress", "--log", "{out}"],
     [".parquet", ".csv", ".csv.gz"]),
    (["compare", "--policies", "blast", "--seeds", "1", "--users", "30", "--days", "2", "--json",
      "--out", "{out}"], [".csv", ".parquet"]),
    (["sweep", "--config", "{cfg}", "--out", "{out}", "--scheduler", "sequential", "--no-progress"],
     [".parquet", ".csv"]),
], ids=["simulate-log", "compare-out", "sweep-out"])
def test_output_with_an_unsupported_extension_fails_fast(cmd, expected, tmp_path, monkeypatch):
    import omnisim.experiment

    def no_run(*a, **k):
        raise AssertionError("ran a simulation before checking the output path")

    monkeypatch.setattr(omnisim.experiment, "run_one", no_run)
    monkeypatch.setattr(omnisim.experiment, "compare", no_run)
    cfg = tmp_path / "sweep_ok.yaml"
    cfg.write_text("policies: [blast]\nseeds: 1\nn_users: 5\ndays: 1\n")
    out = tmp_path / "out.txt"
    args = [a.format(out=out, cfg=cfg) for a in cmd]
    expect_bad(args, "out.txt", ".txt", *expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep_ok.yaml"]


def test_tune_bad_scheduler_address_creates_nothing(tmp_path):
    cfg = tmp_path / "tune_ok.yaml"
    cfg.write_text("name: t\nn_users: 5\ndays: 1\npolicy: seed_journey+pressure\n"
                   "tunables:\n  pressure.dedup_h: {low: 0, high: 72}\nobjective: revenue - cost\n"
                   "trials: 1\nseeds: 1\nfresh_seeds: 1\ntop_k: 1\n")
    expect_bad(["tune", "--config", cfg, "--out", tmp_path / "t.json", "--scheduler", "bogus",
                "--no-progress"], "--scheduler", "'bogus'", "tcp://")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tune_ok.yaml"]  # no study database


# ---------------------------------------------------------------- a YAML list where a mapping is expected
MAPPING_READERS = ("scenario", "policy", "export", "sweep", "tune")


@pytest.mark.parametrize("cmd", [YAML_READERS[k] for k in MAPPING_READERS], ids=MAPPING_READERS)
def test_yaml_list_instead_of_a_mapping_has_one_colon(cmd, tmp_path):
    f = tmp_path / "list.yaml"
    f.write_text("- a\n- b\n")
    res = expect_bad([a.format(f=f, d=tmp_path) for a in cmd], "list.yaml: expected a mapping")
    assert "::" not in res.output, res.output


# ---------------------------------------------------------------- a users table of another log
@pytest.mark.parametrize("cmd", [
    ["calibrate", "--log", "{log}", "--users", "{users}", "--out", "{d}/c.yaml"],
    ["policy", "train", "--kind", "sendtime", "--log", "{log}", "--users", "{users}", "--out", "{d}/t.json"],
], ids=["calibrate", "train-sendtime"])
def test_users_table_with_no_user_of_the_log(cmd, sim, tmp_path):
    users = pd.read_parquet(sim["users"])
    users["user_id"] = "x" + users["user_id"].astype(str)
    other = tmp_path / "other_users.parquet"
    users.to_parquet(other)
    first_log_id = str(pd.read_parquet(sim["log"])["user_id"].iloc[0])
    expect_bad([a.format(log=sim["log"], users=other, d=tmp_path) for a in cmd],
               "other_users.parquet", "sim.parquet", "do not match", repr(users["user_id"].iloc[0]),
               repr(first_log_id))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other_users.parquet"]


@pytest.mark.parametrize("engine", ["fast", "simpy"])
def test_a_run_too_small_to_log_anything_is_a_clear_error(engine):
    res = CliRunner().invoke(main, ["compare", "--policies", "blast", "--seeds", "1", "--users", "5",
                                    "--days", "0.01", "--engine", engine])
    assert res.exit_code == 2, res.output
    assert "produced no events; raise --users or --days" in res.output
    assert "Traceback" not in res.output
