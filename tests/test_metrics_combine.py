"""Scoring a large run one chunk of users at a time: combine_metrics of the chunks equals
log_metrics of the whole log, and `omnisim simulate --log-dir` never holds the whole log."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from click.testing import CliRunner

from omnisim.cli import main
from omnisim.experiment import holdout_members, run_one
from omnisim.metrics import combine_metrics, log_metrics
from omnisim.model import engine_fast
from omnisim.model.scenario import load_scenario
from omnisim.policies.registry import get_policy


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


@pytest.mark.parametrize("policy", ["seed_journey+pressure+holdout", "blast"])
def test_chunks_combine_to_the_whole_logs_metrics(tmp_path, policy):
    pol = get_policy(policy)
    res = engine_fast.simulate(load_scenario("default"), pol, n_users=400, days=10, seed=1,
                               chunk_users=100, out=tmp_path, progress=False)
    hold = holdout_members(pol, res.users["user_id"].astype(str))
    rules = getattr(pol, "rules", None)
    whole = log_metrics(res.read_log(), res.users, days=10, rules=rules, holdout_users=hold)
    chunks = list(res.iter_chunks())
    assert len(chunks) == 4 and sum(len(u) for u, _ in chunks) == 400
    assert all(set(log["user_id"]) <= set(users["user_id"]) for users, log in chunks)
    parts = [log_metrics(log, users, days=10, rules=rules, holdout_users=hold) for users, log in chunks]
    combined = combine_metrics(parts)
    assert list(combined) == list(whole)
    assert [k for k in whole if not _same(whole[k], combined[k])] == []
    assert whole["messages"] > 0
    if policy == "blast":  # overloaded user-days exist only without pressure rules
        assert whole["overload_rate"] > 0
    if "holdout" in policy:
        assert whole["holdout_users"] > 0 and not math.isnan(whole["incremental_conversions"])


def test_combine_refuses_mixed_horizons_and_nothing():
    m = log_metrics(run_one("default", "blast", 0, n_users=30, days=2).log, None, days=2)
    with pytest.raises(ValueError, match="different horizons"):
        combine_metrics([m, {**m, "days": 3.0}])
    with pytest.raises(ValueError, match="at least one part"):
        combine_metrics([])


def test_cli_log_dir_scores_chunk_by_chunk_with_the_same_metrics(tmp_path):
    args = ["simulate", "--policy", "seed_journey+pressure", "--users", "150", "--days", "4",
            "--seed", "3", "--json", "--no-progress"]
    mem = CliRunner().invoke(main, args)
    big = CliRunner().invoke(main, args + ["--log-dir", str(tmp_path / "big")])
    assert mem.exit_code == 0 and big.exit_code == 0, big.output
    a, b = json.loads(mem.output), json.loads(big.output)
    assert b.pop("log") == str(tmp_path / "big") and b.pop("users_table") == str(tmp_path / "big_users.parquet")
    assert [k for k in a if not _same(a[k], b[k])] == []
    parts = sorted((tmp_path / "big").glob("part-*.parquet"))
    assert parts and len(pd.read_parquet(tmp_path / "big")) == sum(len(pd.read_parquet(p)) for p in parts)
    again = CliRunner().invoke(main, args + ["--log-dir", str(tmp_path / "big")])
    assert again.exit_code == 2 and "already holds log parts" in again.output
    simpy = CliRunner().invoke(main, args + ["--engine", "simpy", "--log-dir", str(tmp_path / "s")])
    assert simpy.exit_code == 2 and "--log-dir" in simpy.output
