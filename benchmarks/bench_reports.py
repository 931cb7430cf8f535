"""Benchmark: the engagement and channel reports' aggregation on large Parquet logs.

Builds a synthetic log with the simulator's shape (decided → sent → delivered → opened →
clicked, visits, purchases, unsubscribes; three journeys, three channels) as hive-partitioned
Parquet (``day=YYYY-MM-DD/chunk-K.parquet``), generated with numpy in chunks of about one
million events — the simulator itself is not run. Then, each in a fresh subprocess so that
peak memory is its own:

- **duckdb**: the reports' path — :class:`omnisim.report_data.LogSource` over the directory,
  :func:`~omnisim.report_data.data_summary`, :func:`~omnisim.report_tables.engagement_funnel`
  (engagement report), :func:`~omnisim.report_tables.channel_table` and
  :func:`~omnisim.report_tables.touch_shares` (channel report);
- **pandas**: the in-memory path — ``omnisim.log.validate(pd.read_parquet(dir))``,
  :func:`omnisim.analysis.funnel` (engagement) and a pandas channel table (sends, opens,
  clicks, cost per channel × campaign; last-touch conversions with
  :func:`omnisim.metrics.attribute_conversions`).

Usage::

    .venv/bin/python benchmarks/bench_reports.py --events 1000000 10000000 --pandas-max 1000000

Prints a Markdown table (wall seconds, peak RSS of the worker process in MB).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CHANNELS = np.array(["email", "sms", "push"])
CAMPAIGNS = np.array(["welcome", "cart_recovery", "winback"])
OPEN_P = np.array([0.22, 0.70, 0.10])
COST = np.array([0.001, 0.0079, 0.0])
START = np.datetime64("2026-01-05T00:00:00", "us")
DAYS = 28
#: Expected events per decision in the generator below (decided, sent, delivered, opens,
#: clicks, visits, purchases, unsubscribes) — used to size the chunks.
EVENTS_PER_DECISION = 1 + 1 + 0.96 + 0.29 + 0.045 + 0.6 + 0.03 + 0.002


def _chunk(rng: np.random.Generator, n_dec: int, first_id: int, n_users: int) -> "pa.Table":
    """About ``n_dec * EVENTS_PER_DECISION`` events of ``n_dec`` decisions, as an Arrow table."""
    import pyarrow as pa

    ch = rng.choice(3, n_dec, p=[0.7, 0.2, 0.1])
    camp = rng.integers(0, 3, n_dec)
    user = rng.integers(0, n_users, n_dec)
    t_dec = START + (rng.random(n_dec) * DAYS * 86400e6).astype("timedelta64[us]")
    mid = np.char.add("m", (first_id + np.arange(n_dec)).astype(str))
    delivered = rng.random(n_dec) < 0.96
    opened = delivered & (rng.random(n_dec) < OPEN_P[ch])
    clicked = opened & (rng.random(n_dec) < 0.15)
    visit = rng.random(n_dec) < 0.6
    purchase = rng.random(n_dec) < 0.03
    unsub = delivered & (rng.random(n_dec) < 0.002)
    delay = lambda h: (rng.exponential(h, n_dec) * 3600e6).astype("timedelta64[us]")  # noqa: E731
    t_open = t_dec + delay(3.0)
    parts = []

    def add(mask, ts, event, channel, message_id=None, action=None, propensity=None, value=None, campaign=True):
        idx = np.flatnonzero(mask)
        k = len(idx)
        parts.append({
            "ts": ts[idx], "user_id": np.char.add("u", user[idx].astype(str)),
            "event": np.full(k, event, dtype=object), "channel": (channel[idx] if isinstance(channel, np.ndarray)
                                                                 else np.full(k, channel, dtype=object)),
            "action": action[idx] if action is not None else np.full(k, None, dtype=object),
            "message_id": message_id[idx] if message_id is not None else np.full(k, None, dtype=object),
            "campaign": CAMPAIGNS[camp[idx]] if campaign else np.full(k, None, dtype=object),
            "policy": np.full(k, None, dtype=object),
            "propensity": propensity[idx] if propensity is not None else np.full(k, np.nan),
            "value": value[idx] if value is not None else np.full(k, np.nan),
        })

    chan = CHANNELS[ch]
    every = np.ones(n_dec, dtype=bool)
    add(every, t_dec, "decided", chan, action=chan, propensity=np.ones(n_dec))
    add(every, t_dec, "sent", chan, message_id=mid, value=COST[ch])
    add(delivered, t_dec + np.timedelta64(30, "s"), "delivered", chan, message_id=mid)
    add(opened, t_open, "opened", chan, message_id=mid)
    add(clicked, t_open + np.timedelta64(40, "s"), "clicked", chan, message_id=mid)
    add(unsub, t_open + np.timedelta64(60, "s"), "unsubscribed", chan, message_id=mid)
    add(visit, t_dec + delay(20.0), "visit", "web", campaign=False)
    add(purchase, t_dec + delay(30.0), "purchase", "web", value=rng.lognormal(3.5, 0.6, n_dec), campaign=False)
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    ts = cols.pop("ts")
    schema = pa.schema([("ts", pa.timestamp("us", tz="UTC"))] + [(k, pa.string()) for k in
                       ("user_id", "event", "channel", "action", "message_id", "campaign", "policy")]
                       + [("propensity", pa.float64()), ("value", pa.float64())])
    arrays = [pa.array(ts, type=pa.timestamp("us", tz="UTC"))]
    for name in schema.names[1:]:
        v = cols[name]
        arrays.append(pa.array(v, type=schema.field(name).type, from_pandas=True))
    table = pa.Table.from_arrays(arrays, schema=schema)
    return table, ts.astype("datetime64[D]")


def generate(path: Path, n_events: int, seed: int = 0, chunk_events: int = 1_000_000) -> int:
    """Write ~``n_events`` events under ``path`` (hive partitions by day); returns the exact count."""
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    n_dec_total = int(n_events / EVENTS_PER_DECISION)
    n_users = max(n_dec_total // 10, 100)
    per_chunk = max(int(chunk_events / EVENTS_PER_DECISION), 1)
    written, first, k = 0, 0, 0
    while first < n_dec_total:
        n = min(per_chunk, n_dec_total - first)
        table, days = _chunk(rng, n, first, n_users)
        for day in np.unique(days):
            sel = np.flatnonzero(days == day)
            d = path / f"day={day}"
            d.mkdir(parents=True, exist_ok=True)
            pq.write_table(table.take(sel), d / f"chunk-{k:04d}.parquet")
        written += table.num_rows
        first += n
        k += 1
    return written


def _peak_mb() -> float:
    """Peak resident memory of this process (MB): ``VmHWM`` from /proc (reset at exec, unlike
    ``ru_maxrss``, which a child inherits from the process that started it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def worker(kind: str, path: Path, memory_limit: str | None = None, threads: int | None = None) -> dict:
    """One measurement in this process: wall seconds and peak RSS (MB)."""
    import pandas as pd  # noqa: F401 - imported before the baseline, as both paths need it

    from omnisim import report_tables as T  # noqa: F401
    from omnisim.report_data import LogSource, data_summary

    base = _peak_mb()
    t0 = time.perf_counter()
    if kind == "duckdb":
        src = LogSource(path, check=False, memory_limit=memory_limit, threads=threads)
        summ = data_summary(src)
        fun = T.engagement_funnel(src)
        ch = T.channel_table(src)
        sh = T.touch_shares(src)
        out = {"events": summ["events"], "decisions": int(fun["decided"].sum()), "messages": int(ch.loc[ch["campaign"] == "(all)", "messages"].sum()),
               "purchases": int(sh["purchases"].iloc[0])}
    elif kind == "pandas":
        import pandas as pd

        from omnisim import analysis as A
        from omnisim.log import validate
        from omnisim.metrics import attribute_conversions

        log = validate(pd.read_parquet(path).drop(columns=["day"], errors="ignore"))
        fun = A.funnel(log)
        sent = log[log["event"] == "sent"]
        opened = set(log.loc[log["event"] == "opened", "message_id"])
        clicked = set(log.loc[log["event"] == "clicked", "message_id"])
        att = attribute_conversions(log, {c: 336.0 for c in ("email", "sms", "push")})
        conv = att.dropna(subset=["message_id"]).groupby("message_id").size()
        tab = sent.assign(opened=sent["message_id"].isin(opened), clicked=sent["message_id"].isin(clicked),
                          conversions=sent["message_id"].map(conv).fillna(0)).groupby(
            ["channel", "campaign"], observed=True).agg(messages=("message_id", "size"), opened=("opened", "sum"),
                                                        clicked=("clicked", "sum"), cost=("value", "sum"),
                                                        conversions=("conversions", "sum"))
        out = {"events": len(log), "decisions": int(fun["decided"].sum()), "messages": int(tab["messages"].sum()),
               "purchases": int((log["event"] == "purchase").sum())}
    else:
        raise ValueError(kind)
    out.update(kind=kind, seconds=time.perf_counter() - t0, peak_rss_mb=_peak_mb(), baseline_rss_mb=base)
    return out


def measure(kind: str, path: Path, memory_limit: str | None = None, threads: int | None = None) -> dict:
    """Run :func:`worker` in a fresh interpreter (its own peak memory)."""
    extra = (["--memory-limit", memory_limit] if memory_limit else []) + (["--threads", str(threads)] if threads else [])
    res = subprocess.run([sys.executable, __file__, "--worker", kind, "--path", str(path), *extra],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        return {"kind": kind, "error": res.stderr.strip().splitlines()[-1] if res.stderr else f"exit {res.returncode}"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--pandas-max", type=int, default=1_000_000, help="largest size run through pandas")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/omnisim_bench_reports"))
    ap.add_argument("--keep", action="store_true", help="keep the generated Parquet")
    ap.add_argument("--memory-limit", default="1GB", help="DuckDB memory_limit (it spills to disk beyond)")
    ap.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: all cores)")
    ap.add_argument("--worker", choices=["duckdb", "pandas"], help=argparse.SUPPRESS)
    ap.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.path, args.memory_limit, args.threads)))
        return
    import shutil

    rows = []
    for n in args.events:
        path = args.dir / f"log_{n}"
        shutil.rmtree(path, ignore_errors=True)
        t0 = time.perf_counter()
        exact = generate(path, n)
        gen_s = time.perf_counter() - t0
        size_mb = sum(p.stat().st_size for p in path.rglob("*.parquet")) / 2**20
        print(f"generated {exact:,} events in {gen_s:.0f} s ({size_mb:.0f} MB Parquet) at {path}", file=sys.stderr)
        for kind in ("duckdb", "pandas"):
            if kind == "pandas" and n > args.pandas_max:
                continue
            r = measure(kind, path, args.memory_limit, args.threads)
            r.update(n=exact, parquet_mb=size_mb)
            print(json.dumps(r), file=sys.stderr)
            rows.append(r)
        if not args.keep:
            shutil.rmtree(path, ignore_errors=True)
    print("| events | path | wall time (s) | peak RSS (MB) | RSS over imports (MB) | Parquet (MB) | check |")
    print("|---:|---|---:|---:|---:|---:|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['n']:,} | {r['kind']} | – | – | – | {r['parquet_mb']:.0f} | error: {r['error']} |")
            continue
        print(f"| {r['n']:,} | {r['kind']} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | "
              f"{r['peak_rss_mb'] - r['baseline_rss_mb']:.0f} | {r['parquet_mb']:.0f} | "
              f"{r['decisions']:,} decisions, {r['messages']:,} messages, {r['purchases']:,} purchases |")
    by = {(r["n"], r["kind"]): r for r in rows if "error" not in r}
    for (n, kind), d in by.items():
        p = by.get((n, "pandas"))
        if kind == "duckdb" and p:
            print(f"\nAt {n:,} events: DuckDB {p['seconds'] / d['seconds']:.1f}x faster, "
                  f"{p['peak_rss_mb'] / d['peak_rss_mb']:.1f}x less peak memory than pandas.")

if __name__ == "__main__":
    main()
