"""One fast-engine run's chunks on Dask distributed versus forked processes, side by side.

    .venv/bin/python benchmarks/bench_fast_dask.py                       # 100k users x 30 d
    .venv/bin/python benchmarks/bench_fast_dask.py --users 200000 --days 30 --repeats 3

Same policy (seed_journey+pressure), same seed, same chunks of 50,000 users, two workers
either way: ``n_jobs=2`` (forked processes), ``scheduler="local"`` (a Dask LocalCluster of
two worker processes, started and stopped inside the timed call — the cost a user pays) and
the address of a LocalCluster of two worker processes started beforehand (a running
cluster: no start-up), alternating. Both logs are written as Parquet parts and must be byte-for-byte the same
frames; the ratio is Dask wall / forked wall. On a cluster of N cores the Dask path runs N
chunks at once; this 2-core machine shows only its overhead.
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

from omnisim.model import engine_fast  # noqa: E402
from omnisim.model.scenario import load_scenario  # noqa: E402
from omnisim.policies.registry import get_policy  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default="seed_journey+pressure")
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    sc = load_scenario("default")
    print(f"{args.policy}, {args.users:,} users x {args.days:g} d, chunks of "
          f"{engine_fast.DEFAULT_CHUNK_USERS:,}, load {os.getloadavg()[0]:.2f}")
    print("| run | forked n_jobs=2 wall s | Dask, cluster started in the call, wall s | Dask, running "
          "cluster, wall s | Dask / forked (started / running) |")
    print("|---|---|---|---|---|")
    from distributed import LocalCluster

    with tempfile.TemporaryDirectory() as tmp, LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as running:
        for rep in range(1, args.repeats + 1):
            walls = {}
            for label, kw in (("forked", {"n_jobs": 2}), ("dask", {"scheduler": "local", "n_jobs": 2}),
                              ("running", {"scheduler": running.scheduler_address})):
                out = Path(tmp) / f"{label}-{rep}"
                t0 = time.perf_counter()
                res = engine_fast.simulate(sc, get_policy(args.policy), n_users=args.users,
                                           days=args.days, seed=0, progress=False, out=out, **kw)
                walls[label] = (time.perf_counter() - t0, res.log_parts)
            (fw, fparts), (dw, dparts), (rw, rparts) = walls["forked"], walls["dask"], walls["running"]
            for other in (dparts, rparts):
                assert [p.name for p in fparts] == [p.name for p in other]
                for a, b in zip(fparts, other):
                    pd.testing.assert_frame_equal(pd.read_parquet(a), pd.read_parquet(b))
            print(f"| {rep} | {fw:.1f} | {dw:.1f} | {rw:.1f} | {dw / fw:.2f} / {rw / fw:.2f} |",
                  flush=True)
    print(f"load at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
