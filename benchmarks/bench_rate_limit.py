"""Shared provider rate limits: reservations per second the store sustains.

Each send attempt through a rate-limited provider with ``rate_scope: shared`` (the default
with a store) is one ``Store.reserve_rate`` statement; this measures how many the store
serves per second — the ceiling on a shared limit's useful rate and the cost per attempt —
beside the in-process ``TokenBucket`` it replaces, in one run.

    .venv/bin/python benchmarks/bench_rate_limit.py                      # SQLite
    .venv/bin/python benchmarks/bench_rate_limit.py --db postgresql://postgres@127.0.0.1:5432/test

Threads share one Store (a connection each); the bucket's rate is set high enough that
nobody waits, so only the reservation is timed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _stores import bench_store_url  # noqa: E402 - this folder
from omnisim.send.providers import SharedTokenBucket, TokenBucket  # noqa: E402
from omnisim.send.store import Store  # noqa: E402


def _rate(acquire, threads: int, seconds: float) -> float:
    """Acquisitions per second with ``threads`` threads calling ``acquire`` for ``seconds``."""
    counts = [0] * threads
    stop = time.perf_counter() + seconds

    def loop(i: int) -> None:
        n = 0
        while time.perf_counter() < stop:
            acquire()
            n += 1
        counts[i] = n

    ts = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", default="sqlite", help="sqlite (a temporary file) or a PostgreSQL URL")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--threads", default="1,4")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(bench_store_url(args.db, Path(tmp), "rates.db"))
        try:
            print("| store | threads | in-process TokenBucket acquires/s | shared (store) acquires/s "
                  "| ratio | µs per shared acquire |")
            print("|---|---:|---:|---:|---:|---:|")
            no_sleep = lambda s: None  # noqa: E731 - nobody waits at this rate anyway
            for n in (int(x) for x in args.threads.split(",")):
                local = TokenBucket(1e9, 1e9, time.monotonic, no_sleep)
                shared = SharedTokenBucket(store, f"bench-{n}", 1e9, 1e9, time.time, no_sleep)
                r_local = _rate(local.acquire, n, args.seconds)
                r_shared = _rate(shared.acquire, n, args.seconds)
                print(f"| {store.url.kind} | {n} | {r_local:,.0f} | {r_shared:,.0f} | "
                      f"{r_local / r_shared:,.0f}× | {1e6 / r_shared * n:,.0f} |")
        finally:
            if store.pg:
                store.drop_schema()
            store.close()


if __name__ == "__main__":
    main()
