"""Sender benchmark: sustained events/s end-to-end and decision latency.

End-to-end means HTTP in → validation → decision (journeys + pressure rules) → durable
schedule (log rows, timers, outbox) committed, as ``POST /events`` answers only after the
transaction commits. Servers are real ``omnisim send serve`` subprocesses.

- throughput: ``--clients`` threads post batches of ``--batch`` events for ``--seconds``;
- latency: single-event requests one at a time (p50/p99 of the request, client side) and
  the server's own per-event decision time (p50/p99 from its Prometheus histogram).

Usage::

    .venv/bin/python benchmarks/bench_sender.py --db sqlite --seconds 15
    .venv/bin/python benchmarks/bench_sender.py --db postgresql://postgres@127.0.0.1:5432/test \\
        --servers 1,2,4 --seconds 15
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _stores import bench_store_url  # noqa: E402 - this folder
from omnisim.policies.artifact import export_policy  # noqa: E402
from omnisim.send.store import Store  # noqa: E402

KEY = "bench-key"
CLI = [sys.executable, "-c", "from omnisim.cli import main; main()", "send", "serve"]
KINDS = ("product_view", "cart_abandon", "visit", "cart_add", "signup", "purchase")
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not start")


def _events(n: int, n_users: int, rng: random.Random, prefix: str) -> list[dict]:
    out = []
    for i in range(n):
        ts = T0 + timedelta(seconds=rng.randrange(12 * 3600))
        out.append({"key": f"{prefix}-{i}", "user_id": f"u{rng.randrange(n_users)}",
                    "type": rng.choice(KINDS), "ts": ts.isoformat().replace("+00:00", "Z")})
    return out


def _cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds used so far by these processes (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _quantiles_from_histogram(text: str, name: str) -> tuple[float, float, int]:
    """p50, p99 (upper bucket bounds, seconds) and count from a Prometheus histogram."""
    buckets = []
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    total = buckets[-1][1] if buckets else 0
    def q(p: float) -> float:
        return next((le for le, c in buckets if c >= p * total), float("nan"))
    return q(0.5), q(0.99), int(total)


def run(db: str, servers: int, seconds: float, clients: int, batch: int, n_users: int,
        workdir: Path) -> dict:
    art = export_policy("journeys+pressure", workdir / "policy.json")
    providers = workdir / "providers.yaml"
    providers.write_text("channels:\n" + "".join(
        f"  {ch}:\n    - {{type: file, path: {workdir / 'sent.jsonl'}}}\n" for ch in ("email", "sms", "push")))
    store = Store.open(db)
    with store.transaction():
        for i in range(n_users):
            store.upsert_user(f"u{i}", "UTC", {}, {"email": True, "sms": True, "push": True},
                              {"email": f"u{i}@x", "sms": f"+{i}", "push": f"t{i}"}, T0)
    clock = (T0 + timedelta(hours=13)).isoformat()
    env = {**os.environ, "OMNISIM_SEND_API_KEY": KEY}
    procs, urls = [], []
    for k in range(servers):
        port = _free_port()
        procs.append(subprocess.Popen(
            CLI + ["--policy", str(art), "--db", db, "--port", str(port), "--providers", str(providers),
                   "--clock", clock, "--workers", "1" if k == 0 else "0"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        urls.append(f"http://127.0.0.1:{port}")
    try:
        for u in urls:
            _wait(u)
        rng = random.Random(1)
        counts = [0] * clients
        stop = time.monotonic() + seconds
        batch_lat: list[float] = []

        def client(c: int) -> None:
            r = random.Random(c)
            with httpx.Client(base_url=urls[c % len(urls)], headers={"X-API-Key": KEY}, timeout=60) as http:
                j = 0
                while time.monotonic() < stop:
                    evs = _events(batch, n_users, r, f"c{c}-{j}")
                    t = time.perf_counter()
                    resp = http.post("/events", json=evs)
                    batch_lat.append(time.perf_counter() - t)
                    resp.raise_for_status()
                    counts[c] += resp.json()["accepted"]
                    j += 1

        cpu0 = _cpu_s([p.pid for p in procs])
        t0 = time.perf_counter()
        threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        cpu = _cpu_s([p.pid for p in procs]) - cpu0
        # single-event latency, one request at a time
        single = []
        with httpx.Client(base_url=urls[0], headers={"X-API-Key": KEY}, timeout=60) as http:
            for e in _events(300, n_users, rng, f"single-{uuid.uuid4().hex[:6]}"):
                t = time.perf_counter()
                http.post("/events", json=e).raise_for_status()
                single.append(time.perf_counter() - t)
            text = http.get("/metrics").text
        p50_srv, p99_srv, n_srv = _quantiles_from_histogram(text, "omnisim_decision_latency_seconds")
        return {"db": db.split(":")[0], "servers": servers, "clients": clients, "batch": batch,
                "events": sum(counts), "wall_s": round(wall, 1),
                "events_per_s": round(sum(counts) / wall),
                "events_per_cpu_s": round(sum(counts) / cpu) if cpu > 0 else 0,
                "batch_p50_ms": round(1000 * float(np.percentile(batch_lat, 50)), 1),
                "batch_p99_ms": round(1000 * float(np.percentile(batch_lat, 99)), 1),
                "single_p50_ms": round(1000 * float(np.percentile(single, 50)), 1),
                "single_p99_ms": round(1000 * float(np.percentile(single, 99)), 1),
                "decision_p50_ms_le": p50_srv * 1000, "decision_p99_ms_le": p99_srv * 1000}
    finally:
        for p in procs:
            p.kill()
            p.wait()
        if store.pg:
            store.drop_schema()
        store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", default="sqlite", help="'sqlite' or a postgresql:// URL")
    ap.add_argument("--servers", default="1", help="comma-separated server process counts")
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--users", type=int, default=2000)
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("| db | servers | clients × batch | events | wall (s) | events/s | events per server CPU-s "
          "| batch p50 / p99 (ms) "
          "| single-event p50 / p99 (ms) | server decision p50 / p99 (ms, ≤ bucket) |")
    print("|---|---:|---|---:|---:|---:|---:|---|---|---|")
    for n in [int(x) for x in args.servers.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            db = bench_store_url(args.db, Path(tmp))
            r = run(db, n, args.seconds, args.clients, args.batch, args.users, Path(tmp))
        print(f"| {r['db']} | {n} | {r['clients']} × {r['batch']} | {r['events']:,} | {r['wall_s']} | "
              f"{r['events_per_s']:,} | {r['events_per_cpu_s']:,} | {r['batch_p50_ms']} / {r['batch_p99_ms']} | "
              f"{r['single_p50_ms']} / {r['single_p99_ms']} | "
              f"{r['decision_p50_ms_le']:g} / {r['decision_p99_ms_le']:g} |", flush=True)


if __name__ == "__main__":
    main()
