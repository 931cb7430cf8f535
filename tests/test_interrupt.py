"""Ctrl-C in `omnisim sweep` and `omnisim tune`: one line saying what was kept and how to go
on, exit code 130, and Dask's shutdown noise silenced (`omnisim.cluster.exit_interrupted`)."""

from __future__ import annotations

import json
import logging
import sys

import pytest
import yaml
from click.testing import CliRunner

from omnisim.cli import main
from omnisim.cluster import NOISY_LOGGERS


@pytest.fixture
def interrupted(monkeypatch):
    """Make the next sweep / tune raise KeyboardInterrupt; restore what exit_interrupted
    changes for the rest of the process (logger flags, the unraisable hook)."""
    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("omnisim.sweep.sweep", boom)
    monkeypatch.setattr("omnisim.tune.tune", boom)
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
    logging.getLogger("distributed.nanny")  # a child logger that exists before the interrupt
    names = [*NOISY_LOGGERS, "distributed.nanny"]
    saved = {n: logging.getLogger(n).disabled for n in names}
    yield names
    for n, flag in saved.items():
        logging.getLogger(n).disabled = flag


def _quiet_after(names, hook_before):
    assert all(logging.getLogger(n).disabled for n in names)
    assert sys.unraisablehook is not hook_before


def test_an_interrupted_sweep_says_what_is_kept_and_exits_130(tmp_path, interrupted):
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(yaml.safe_dump({"name": "s", "scenario": "default", "n_users": 20, "days": 2,
                                   "policies": ["email_only"], "seeds": 1}))
    hook = sys.unraisablehook
    res = CliRunner().invoke(main, ["sweep", "--config", str(cfg), "--out", str(tmp_path / "r.parquet")])
    assert res.exit_code == 130, res.output
    assert "interrupted: finished runs are kept in" in res.output and "--resume" in res.output
    _quiet_after(interrupted, hook)


def test_an_interrupted_tune_says_the_study_is_kept_and_exits_130(tmp_path, interrupted):
    cfg = {"name": "tiny", "scenario": "default", "n_users": 20, "days": 2, "policy": "seed_journey+pressure",
           "tunables": {"pressure.caps[1].max": {"low": 1, "high": 4, "type": "int"}},
           "objective": "revenue - cost", "trials": 2, "seeds": 1, "fresh_seeds": 1, "top_k": 1,
           "storage": str(tmp_path / "tiny.study.db")}
    (tmp_path / "tune.yaml").write_text(json.dumps(cfg))
    hook = sys.unraisablehook
    res = CliRunner().invoke(main, ["tune", "--config", str(tmp_path / "tune.yaml"),
                                    "--out", str(tmp_path / "t.json"), "--no-progress"])
    assert res.exit_code == 130, res.output  # was click's "Aborted!" with exit code 1
    assert "interrupted: finished trials are kept in the study in" in res.output
    assert "run the same command again to continue it" in res.output
    _quiet_after(interrupted, hook)


def test_ctrl_c_to_the_process_group_mid_sweep_ends_it_cleanly(tmp_path):
    """A real Ctrl-C reaches the terminal's whole process group: the LocalCluster's worker
    processes must not each print a KeyboardInterrupt traceback, and none may outlive the
    command. Sent once the sweep has finished two runs (read from its progress bar)."""
    import os
    import re
    import signal
    import subprocess
    import time

    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(yaml.safe_dump({"name": "s", "scenario": "default", "n_users": 300, "days": 10,
                                   "policies": ["email_only", "blast"], "seeds": 100}))
    omnisim = os.path.join(os.path.dirname(sys.executable), "omnisim")
    proc = subprocess.Popen([omnisim, "sweep", "--config", str(cfg), "--out", str(tmp_path / "r.parquet")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    err = b""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # the progress bar redraws with \r: read bytes
        chunk = os.read(proc.stderr.fileno(), 4096)
        if not chunk:
            break
        err += chunk
        done = [int(n) for n in re.findall(rb"\| *(\d+)/200 ", err)]
        if done and max(done) >= 2:
            break
    os.killpg(proc.pid, signal.SIGINT)
    rest = proc.communicate(timeout=120)[1]
    err = (err + rest).decode(errors="replace")
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted: finished runs are kept in" in err
    assert "KeyboardInterrupt" not in err, err[-3000:]  # no traceback from each worker
    for _ in range(100):  # every process of the group (the workers) is gone
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail("worker processes outlived the interrupted sweep")
    assert (tmp_path / "r.parquet.runs.jsonl").exists()  # what --resume continues from
