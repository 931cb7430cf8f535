"""One large fast-engine run spread over a Dask cluster: its chunks run as tasks on worker
processes (policy, scenario and users pickled to them) and the log is the log of a run in
one process — in memory or as Parquet parts."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from omnisim.cli import main
from omnisim.model import engine_fast
from omnisim.model.scenario import load_scenario
from omnisim.policies.bandits import ThompsonChannel
from omnisim.policies.registry import get_policy

KW = dict(n_users=300, days=5, seed=3, chunk_users=100, progress=False)


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as c:
        yield c


@pytest.fixture(scope="module")
def reference():
    return engine_fast.simulate(load_scenario("default"), get_policy("seed_journey+pressure"), **KW)


def test_chunks_on_dask_workers_give_the_one_process_log(cluster, reference):
    got = engine_fast.simulate(load_scenario("default"), get_policy("seed_journey+pressure"),
                               scheduler=cluster.scheduler_address, **KW)
    assert reference.log["user_id"].nunique() > 200  # every chunk has users with events
    pd.testing.assert_frame_equal(got.log, reference.log)


def test_parts_written_by_workers_equal_the_one_process_parts(cluster, tmp_path):
    sc, pol = load_scenario("default"), get_policy("seed_journey+pressure")
    one = engine_fast.simulate(sc, pol, out=tmp_path / "one", **KW)
    dist = engine_fast.simulate(sc, pol, out=tmp_path / "dist", scheduler=cluster.scheduler_address, **KW)
    assert dist.log is None
    assert [p.name for p in dist.log_parts] == [p.name for p in one.log_parts]
    assert len({p.name.split("-")[1] for p in dist.log_parts}) == 3  # one chunk each
    for a, b in zip(one.log_parts, dist.log_parts):
        pd.testing.assert_frame_equal(pd.read_parquet(b), pd.read_parquet(a))


def test_an_online_learner_runs_here_as_one_chunk(cluster):
    sc = load_scenario("default")
    kw = {**KW, "n_users": 120, "days": 3}
    here = engine_fast.simulate(sc, ThompsonChannel(update_every_h=12.0), **kw)
    asked = engine_fast.simulate(sc, ThompsonChannel(update_every_h=12.0),
                                 scheduler=cluster.scheduler_address, **kw)
    pd.testing.assert_frame_equal(asked.log, here.log)


def test_cli_simulate_on_a_local_cluster():
    args = ["simulate", "--policy", "seed_journey+pressure", "--users", "200", "--days", "3",
            "--seed", "2", "--json", "--no-progress"]
    one = CliRunner().invoke(main, args)
    dist = CliRunner().invoke(main, args + ["--scheduler", "local", "--jobs", "2"])
    assert one.exit_code == 0 and dist.exit_code == 0, dist.output
    assert json.loads(dist.output) == json.loads(one.output)
    res = CliRunner().invoke(main, args + ["--engine", "simpy", "--scheduler", "local"])
    assert res.exit_code == 2 and "--scheduler" in res.output


def test_the_bar_moves_while_chunks_run_on_workers(cluster, monkeypatch):
    updates: list[float] = []

    class Recorder:
        def __init__(self, *args, total=None, disable=False, **kwargs):
            self.total = total

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, h):
            updates.append(h)

    monkeypatch.setattr(engine_fast, "tqdm", Recorder)
    engine_fast.simulate(load_scenario("default"), get_policy("seed_journey+pressure"),
                         scheduler=cluster.scheduler_address, **{**KW, "progress": True})
    horizon_h = KW["days"] * 24
    assert sum(updates) == pytest.approx(3 * horizon_h)  # exactly the bar's total, no more
    assert len(updates) > 3 and min(updates) < horizon_h  # worker events, not whole chunks only
