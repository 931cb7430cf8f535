"""A sweep's runs per minute: sequential (no Dask) versus a 2-worker Dask LocalCluster.

    .venv/bin/python benchmarks/bench_sweep.py                       # 12 runs of 3,000 users x 30 d
    .venv/bin/python benchmarks/bench_sweep.py --users 5000 --seeds 6 --repeats 2

Same tasks both ways (seed_journey+pressure and blast × a fatigue half-life grid × seeds,
fast engine), alternating in one process; the LocalCluster is started inside the timed call
(what `omnisim sweep` pays), and its table must equal the sequential one. Also times the
same sequential sweep with a journal, to show what journaling every row costs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from omnisim.sweep import sweep, sweep_tasks  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    tasks = sweep_tasks("default", ["seed_journey+pressure", "blast"], args.seeds,
                        grid={"fatigue.half_life_h": [36, 144]}, n_users=args.users, days=args.days)
    print(f"{len(tasks)} runs of {args.users:,} users x {args.days:g} d, load {os.getloadavg()[0]:.2f}")
    print("| run | sequential s | sequential + journal s | LocalCluster(2) s | runs/min sequential | "
          "runs/min cluster | cluster / sequential speed |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(1, args.repeats + 1):
            t0 = time.perf_counter()
            seq = sweep(None, [], tasks=tasks, scheduler="sequential", progress=False)
            seq_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            jr = sweep(None, [], tasks=tasks, scheduler="sequential", progress=False,
                       journal=Path(tmp) / f"j{rep}.jsonl")
            jr_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            dist = sweep(None, [], tasks=tasks, n_workers=2, progress=False)
            dist_s = time.perf_counter() - t0
            pd.testing.assert_frame_equal(dist, seq)
            pd.testing.assert_frame_equal(jr, seq)
            n = len(tasks)
            print(f"| {rep} | {seq_s:.1f} | {jr_s:.1f} | {dist_s:.1f} | {60 * n / seq_s:.1f} | "
                  f"{60 * n / dist_s:.1f} | {seq_s / dist_s:.2f}× |", flush=True)
    print(f"load at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
