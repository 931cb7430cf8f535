"""Sweeps that lose nothing: a failed run never stops the others, finished runs are
journaled as they arrive, and a resumed sweep runs only what is missing — with the same
table a fresh sweep gives."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

import omnisim.sweep as sweep_mod
from omnisim.cli import main
from omnisim.cli_sweep import journal_path
from omnisim.sweep import SweepError, sweep, sweep_tasks
from omnisim.sweep_journal import SweepJournalError, read_journal, task_key

SMALL = dict(n_users=60, days=3)


@pytest.fixture
def count_runs(monkeypatch):
    """Count (and optionally fail) the runs the sequential scheduler starts."""
    ran: list[int] = []
    fail: set[int] = set()
    real = sweep_mod.run_task

    def counted(task, log_dir=None):
        ran.append(task.run_id)
        if task.run_id in fail:
            raise RuntimeError(f"worker lost while running run {task.run_id}")
        return real(task, log_dir)

    monkeypatch.setattr(sweep_mod, "run_task", counted)
    return ran, fail


def _policy_file(tmp_path, text: str | None):
    path = tmp_path / "policy.yaml"
    if text is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(text)
    return str(path)


def test_a_failed_run_does_not_stop_the_sweep_and_the_error_carries_the_table(tmp_path):
    missing = _policy_file(tmp_path, None)
    with pytest.raises(SweepError) as exc:
        sweep("default", ["blast", missing], 2, scheduler="sequential", progress=False, **SMALL)
    table = exc.value.results
    assert list(table["run_id"]) == [0, 1, 2, 3]
    assert table["error"].isna().tolist() == [True, True, False, False]
    assert table.loc[2, "error"].startswith("PolicyFileError:") and "policy.yaml" in table.loc[2, "error"]
    assert "in run_task" in table.loc[2, "traceback"] and table.loc[:1, "traceback"].isna().all()
    assert table.loc[2:, "messages"].isna().all() and exc.value.exit_code == 1
    msg = str(exc.value)
    assert "2 of 4 sweep runs failed" in msg and "run 2 (default" in msg and "seed 1" in msg
    ok = sweep("default", ["blast"], 2, scheduler="sequential", progress=False, **SMALL)
    pd.testing.assert_frame_equal(table.loc[:1, ok.columns].astype(ok.dtypes), ok)


def test_failures_on_dask_workers_are_recorded_with_their_traceback_and_not_logged(tmp_path, caplog):
    missing = _policy_file(tmp_path, None)
    with caplog.at_level(logging.ERROR):
        table = sweep("default", ["blast", missing], 2, n_workers=2, processes=False,
                      progress=False, on_error="record", **SMALL)
    assert table["error"].notna().tolist() == [False, False, True, True]
    assert table.loc[:1, "messages"].gt(0).all()
    # the worker's traceback is in the table, not printed by Dask as "Compute Failed"
    assert table.loc[:1, "traceback"].isna().all()
    tb = table.loc[2, "traceback"]
    assert tb.startswith("Traceback") and "in run_task" in tb and "PolicyFileError" in tb
    assert not [r for r in caplog.records if "Compute Failed" in r.getMessage()]


def test_resume_runs_only_what_is_missing_and_equals_a_fresh_sweep(tmp_path, count_runs):
    ran, _ = count_runs
    path = _policy_file(tmp_path, None)
    kw = dict(scheduler="sequential", progress=False, log_dir=tmp_path / "logs",
              journal=tmp_path / "j.jsonl", **SMALL)
    with pytest.raises(SweepError, match="the 2 finished runs are in"):
        sweep("default", ["blast", path], 2, **kw)
    assert len(read_journal(tmp_path / "j.jsonl")) == 2  # only the finished runs
    _policy_file(tmp_path, "policy: email_only\n")  # the cause is fixed
    ran.clear()
    resumed = sweep("default", ["blast", path], 2, **kw)
    assert ran == [2, 3]
    fresh = sweep("default", ["blast", path], 2, scheduler="sequential", progress=False,
                  log_dir=tmp_path / "fresh_logs", **SMALL)
    pd.testing.assert_frame_equal(resumed.drop(columns="log_path"), fresh.drop(columns="log_path"))
    assert len(list((tmp_path / "logs").glob("run=*/part-00000.parquet"))) == 4
    # everything journaled now: a third call runs nothing and gives the same table
    ran.clear()
    again = sweep("default", ["blast", path], 2, **kw)
    assert ran == []
    pd.testing.assert_frame_equal(again, resumed)


def test_a_changed_task_or_a_missing_log_part_runs_again(tmp_path, count_runs):
    ran, _ = count_runs
    kw = dict(scheduler="sequential", progress=False, journal=tmp_path / "j.jsonl")
    sweep("default", ["blast"], [0, 1], log_dir=tmp_path / "logs", **kw, **SMALL)
    ran.clear()
    sweep("default", ["blast"], [0, 1], log_dir=tmp_path / "logs", **kw, n_users=61, days=3)
    assert ran == [0, 1]  # another population size: other keys
    ran.clear()
    (tmp_path / "logs" / "run=1" / "part-00000.parquet").unlink()
    sweep("default", ["blast"], [0, 1], log_dir=tmp_path / "logs", **kw, n_users=61, days=3)
    assert ran == [1]  # its promised log is gone
    ran.clear()
    sweep("default", ["blast"], [0, 1], log_dir=tmp_path / "other_logs", **kw, n_users=61, days=3)
    assert ran == [0, 1]  # logs asked for somewhere else


def test_task_keys_follow_what_the_result_depends_on(tmp_path):
    base = sweep_tasks("default", ["blast"], [0], **SMALL)[0]
    same = sweep_tasks("default", ["blast"], [0], **SMALL)[0]
    assert task_key(base) == task_key(same)
    for other in (sweep_tasks("default", ["blast"], [1], **SMALL)[0],
                  sweep_tasks("default", ["email_only"], [0], **SMALL)[0],
                  sweep_tasks("default", ["blast"], [0], engine="simpy", **SMALL)[0],
                  sweep_tasks("default", ["blast"], [0], grid={"fatigue.half_life_h": [48]}, **SMALL)[0]):
        assert task_key(other) != task_key(base)
    from omnisim.policies.bandits import ThompsonChannel

    def obj_key(policy):
        return task_key(sweep_tasks("default", [policy], [0], **SMALL)[0])

    assert obj_key(ThompsonChannel(update_every_h=6.0)) == obj_key(ThompsonChannel(update_every_h=6.0))
    assert obj_key(ThompsonChannel(update_every_h=6.0)) != obj_key(ThompsonChannel(update_every_h=12.0))
    path = _policy_file(tmp_path, "policy: blast\n")
    k1 = task_key(sweep_tasks("default", [path], [0], **SMALL)[0])
    _policy_file(tmp_path, "policy: email_only\n")  # the file's content, not its name, counts
    assert task_key(sweep_tasks("default", [path], [0], **SMALL)[0]) != k1


def test_a_cut_short_last_line_is_dropped_and_other_damage_is_named(tmp_path, count_runs):
    ran, _ = count_runs
    journal = tmp_path / "j.jsonl"
    kw = dict(scheduler="sequential", progress=False, journal=journal, **SMALL)
    sweep("default", ["blast"], [0, 1], **kw)
    lines = journal.read_text().splitlines()
    journal.write_text(lines[0] + "\n" + lines[1][:40])  # died while writing run 1
    ran.clear()
    with pytest.warns(UserWarning, match="line 2 is cut short"):
        table = sweep("default", ["blast"], [0, 1], **kw)
    assert ran == [1] and len(table) == 2
    assert [json.loads(x)["row"]["run_id"] for x in journal.read_text().splitlines()] == [0, 1]
    journal.write_text("not json\n" + journal.read_text())
    with pytest.raises(SweepJournalError, match=r"j\.jsonl: line 1: expected a JSON record"):
        sweep("default", ["blast"], [0, 1], **kw)


CONFIG = {"scenario": "default", "n_users": 60, "days": 3, "seeds": 2, "policies": ["blast", "email_only"]}


def test_cli_keeps_the_journal_on_failure_and_resumes(tmp_path, count_runs):
    ran, fail = count_runs
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    out = tmp_path / "results.parquet"
    args = ["sweep", "--config", str(cfg), "--scheduler", "sequential", "--out", str(out),
            "--no-progress"]
    fail.add(2)
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1, res.output
    assert "failed: run 2 (default, email_only, seed 0): RuntimeError: worker lost" in res.output
    assert "1 of 4 runs failed" in res.output and "--resume" in res.output
    table = pd.read_parquet(out)
    assert table["error"].notna().tolist() == [False, False, True, False]
    assert len(read_journal(journal_path(out))) == 3

    fail.clear()
    res = CliRunner().invoke(main, args)  # a journal is there: refuse to overwrite silently
    assert res.exit_code == 2 and "results.parquet.runs.jsonl holds 3 finished runs" in res.output

    ran.clear()
    res = CliRunner().invoke(main, args + ["--resume"])
    assert res.exit_code == 0, res.output
    assert ran == [2] and "3 already done" in res.output
    assert not journal_path(out).exists()
    fresh_out = tmp_path / "fresh.parquet"
    res = CliRunner().invoke(main, args[:-3] + ["--out", str(fresh_out), "--no-progress"])
    assert res.exit_code == 0, res.output
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(fresh_out))


class _KillsItsWorker:
    """A policy whose every decision kills the worker process running it (an OOM kill, say)."""

    name = "kills_worker@1"

    def decide(self, ctx, rng):
        import os

        os._exit(17)


def test_a_run_whose_worker_dies_is_recorded_and_the_rest_finish(tmp_path):
    import sys

    import cloudpickle
    import dask
    from distributed import LocalCluster

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    try:
        tasks = sweep_tasks("default", ["blast", _KillsItsWorker()], [0], **SMALL)
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}), LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as c:
            table = sweep(None, [], tasks=tasks, scheduler=c.scheduler_address, progress=False,
                          on_error="record", journal=tmp_path / "j.jsonl")
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert pd.isna(table.loc[0, "error"]) and table.loc[0, "messages"] > 0
    assert table.loc[1, "error"].startswith("KilledWorker")
    assert list(read_journal(tmp_path / "j.jsonl").values())[0]["run_id"] == 0  # only the finished run


def test_the_key_follows_omnisims_code(tmp_path, monkeypatch):
    import omnisim.sweep_journal as journal_mod
    from omnisim.sweep_journal import code_fingerprint

    pkg = tmp_path / "pkg"
    (pkg / "builtin").mkdir(parents=True)
    (pkg / "engine.py").write_text("RATE = 1\n")
    (pkg / "builtin" / "journey.yaml").write_text("steps: []\n")
    (pkg / "notes.txt").write_text("not code")
    before = code_fingerprint(pkg)
    (pkg / "notes.txt").write_text("still not code")
    assert code_fingerprint.__wrapped__(pkg) == before
    (pkg / "builtin" / "journey.yaml").write_text("steps: [1]\n")
    assert code_fingerprint.__wrapped__(pkg) != before
    task = sweep_tasks("default", ["blast"], [0], **SMALL)[0]
    key = task_key(task)
    monkeypatch.setattr(journal_mod, "code_fingerprint", lambda: "an edited engine")
    assert task_key(task) != key  # an edit to omnisim reruns every journaled run
