"""Benchmark: tune the seed journey (+ default pressure rules) with omnisim.tune.

Reports, per scenario and scheduler: the winner's improvement over the untuned journey with
its paired CI on fresh seeds, trials per minute of the search, and wall time.

    python benchmarks/bench_tune.py --scenario default --scheduler sequential
    python benchmarks/bench_tune.py --scenario default --scheduler local --workers 2
    python benchmarks/bench_tune.py --scenario default --scheduler sequential,local   # side by side
    python benchmarks/bench_tune.py --scenario hillstrom          # calibrated on Hillstrom

Results are appended as JSON lines to ``--out`` (default benchmarks/tune_results.jsonl).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from omnisim.tune import load_tune_config, tune

SPACE: dict[str, Any] = {
    "journeys[0].steps[1].delay_h": {"low": 1, "high": 48, "log": True},     # SMS wait after the email, h
    "journeys[0].steps[2].delay_h": {"low": 2, "high": 72, "log": True},     # push wait after the SMS, h
    "pressure.caps[1].max": {"low": 1, "high": 6, "type": "int"},            # messages per 7 days
    "pressure.quiet_hours[0].start_h": {"choices": [19, 20, 21, 22]},        # local hour
    "pressure.dedup_h": {"low": 0, "high": 72},                              # h
}


def scenario_for(name: str) -> Any:
    """The default scenario, or one calibrated on the Hillstrom data."""
    from omnisim.model.scenario import load_scenario

    if name == "default":
        return load_scenario("default")
    from omnisim.datasets import hillstrom_log
    from omnisim.model.calibrate import calibrate

    log, users = hillstrom_log()
    return calibrate(log, users, name="hillstrom_calibrated")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="default", choices=["default", "hillstrom"])
    ap.add_argument("--scheduler", default="sequential",
                    help="sequential | local | tcp://host:8786, or a comma list run one after the other")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--days", type=float, default=14)
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--fresh", type=int, default=6)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--batch", type=int, default=None, help="default: 1 sequential, --workers on Dask")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("tune_results.jsonl"))
    a = ap.parse_args()
    scenario = scenario_for(a.scenario)
    rows = [run(a, scenario, sched) for sched in a.scheduler.split(",")]
    if len(rows) > 1:
        base = rows[0]["trials_per_min"]
        for r in rows:
            print(f"{r['scheduler']:<12} {r['wall_s']:>7.1f} s  {r['trials_per_min']:>6.2f} trials/min  "
                  f"speed vs {rows[0]['scheduler']}: {r['trials_per_min'] / base:.2f}x")


def run(a: argparse.Namespace, scenario: Any, scheduler: str) -> dict[str, Any]:
    """One study with ``scheduler``; prints and appends its row."""
    cfg = load_tune_config({
        "name": f"bench-{a.scenario}-{scheduler}", "policy": "seed_journey+pressure",
        "n_users": a.users, "days": a.days, "tunables": SPACE,
        "objective": "revenue - cost - 5 * unsubscribes", "constraints": ["unsubscribe_rate <= 0.005"],
        "trials": a.trials, "seeds": a.seeds, "fresh_seeds": a.fresh, "top_k": a.top_k,
        "batch": a.batch or (1 if scheduler == "sequential" else a.workers), "sampler_seed": 0})
    cfg.scenario = scenario
    with tempfile.TemporaryDirectory() as tmp:
        t1 = time.perf_counter()
        res = tune(cfg, scheduler=scheduler, n_workers=a.workers, storage=str(Path(tmp) / "study.db"),
                   progress=True)
        wall = time.perf_counter() - t1
    m, lo, hi = res.improvement
    row = {
        "scenario": a.scenario, "scheduler": scheduler, "workers": a.workers if scheduler != "sequential" else 1,
        "users": a.users, "days": a.days, "trials": a.trials, "seeds": a.seeds, "fresh_seeds": a.fresh,
        "top_k": a.top_k, "batch": cfg.batch, "wall_s": round(wall, 1),
        "runs": a.trials * a.seeds + a.seeds + (a.top_k + 1) * a.fresh,
        "trials_per_min": round(a.trials / (wall / 60), 2),
        "start_objective": res.metric_cis["start"]["objective"]["mean"], "improvement": m, "ci_low": lo,
        "ci_high": hi, "significant": res.significant, "winner": res.winner_params,
        "pruned": int((res.trials["state"] == "PRUNED").sum()),
        "cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0], "python": platform.python_version(),
    }
    print(res.summary)
    print(json.dumps(row, default=str))
    with a.out.open("a") as f:
        f.write(json.dumps(row, default=str) + "\n")
    return row


if __name__ == "__main__":
    main()
