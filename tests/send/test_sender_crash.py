"""Crash safety with real process kills: ``kill -9`` the server and a worker at random points
while thousands of events come in, restart them, and check nothing was lost or sent twice.

The server and worker are ``omnisim send serve`` / ``omnisim send worker`` subprocesses with
the real providers (a file sink). The clock is fixed days after the events, so every timer
(journey steps, deferrals) falls due during the run and the final drain empties the queues.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import httpx
from sender_support import API_KEY, T0, free_port, pg_schema_url, requires_pg, wait_http

from omnisim.policies.artifact import export_policy
from omnisim.policies.violations import count_violations
from omnisim.send.export import log_frame
from omnisim.send.store import Store

N_USERS, N_EVENTS, BATCH = 300, 3000, 50
CLOCK = (T0 + timedelta(days=12)).isoformat().replace("+00:00", "Z")
CLI = [sys.executable, "-c", "from omnisim.cli import main; main()", "send"]
KINDS = ("product_view", "cart_abandon", "signup", "visit", "cart_add", "purchase")


def _proc(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMNISIM_SEND_API_KEY": API_KEY}
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(CLI + args, env=env, stdout=out, stderr=subprocess.STDOUT)


def _kill(p: subprocess.Popen) -> None:
    if p.poll() is None:
        os.kill(p.pid, signal.SIGKILL)
    p.wait(10)


def _run(tmp_path: Path, db: str) -> None:
    rng = random.Random(5)
    art = export_policy("journeys+pressure", tmp_path / "policy.json")
    sink = tmp_path / "sent.jsonl"
    providers = tmp_path / "providers.yaml"
    providers.write_text("channels:\n" + "".join(
        f"  {ch}:\n    - {{type: file, path: {sink}, fsync: true}}\n" for ch in ("email", "sms", "push")))
    store = Store.open(db)
    with store.transaction():
        for i in range(N_USERS):
            store.upsert_user(f"u{i}", ("UTC", "Europe/Paris", "Asia/Tokyo")[i % 3], {},
                              {"email": True, "sms": i % 4 != 0, "push": True},
                              {"email": f"u{i}@x", "sms": f"+{i}", "push": f"tok{i}"}, T0)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    common = ["--db", db, "--providers", str(providers), "--clock", CLOCK,
              "--late-tolerance-h", "inf", "--lease-s", "1"]
    serve = ["serve", "--policy", str(art), "--port", str(port)] + common
    work = ["worker", "--policy", str(art)] + common
    log = tmp_path / "procs.log"
    procs = {"serve": _proc(serve, log), "worker": _proc(work, log)}
    wait_http(url, 240)

    kills: Counter[str] = Counter()
    n_batches = N_EVENTS // BATCH
    kill_at = {int(n_batches * f): rng.choice(["serve", "worker"]) for f in (0.15, 0.35, 0.55, 0.75)}
    kill_at[int(n_batches * 0.55)] = "serve"  # both kinds die at least once
    kill_at[int(n_batches * 0.75)] = "worker"

    def kill_and_restart(name: str) -> None:
        _kill(procs[name])
        kills[name] += 1
        procs[name] = _proc(serve if name == "serve" else work, log)

    events = []
    for i in range(N_EVENTS):
        ts = T0 + timedelta(seconds=int(i * 57 + rng.randrange(50)))
        events.append({"key": f"ev{i}", "user_id": f"u{rng.randrange(N_USERS)}",
                       "type": rng.choice(KINDS), "ts": ts.isoformat().replace("+00:00", "Z")})
    retries = 0
    try:
        with httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}, timeout=30) as http:
            for b in range(n_batches):
                batch = events[b * BATCH:(b + 1) * BATCH]
                if b in kill_at:  # kill -9 while this batch is in flight
                    timer = threading.Timer(rng.uniform(0.0, 0.08), kill_and_restart, (kill_at[b],))
                    timer.start()
                deadline = time.monotonic() + 240
                while True:  # the client retries a batch until answered: keys make it safe
                    try:
                        r = http.post("/events", json=batch)
                        if r.status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    assert time.monotonic() < deadline, "the restarted server never answered"
                    retries += 1
                    time.sleep(0.2)
                if b in kill_at:
                    timer.join()
                assert all(x["status"] in ("accepted", "duplicate") for x in r.json()["results"])
            time.sleep(1.0)  # let the worker run a little before the end
    finally:
        for p in procs.values():
            _kill(p)
    assert kills["serve"] >= 1 and kills["worker"] >= 1, kills
    time.sleep(1.2)  # leases of deliveries in flight at the last kill run out
    from omnisim.send.cli import build  # a fresh worker (as after a restart) drains what is left

    _, worker = build(db, art, providers, CLOCK, "inf", 0, 1.0)
    worker.drain()
    worker.store.close()

    # nothing lost: every event stored and decided once; every timer ran, each exactly once
    assert store.one("SELECT COUNT(*) FROM events")[0] == N_EVENTS
    assert store.one("SELECT COUNT(*) FROM jobs WHERE state = 'pending'")[0] == 0
    steps = store.query("SELECT job_id FROM jobs WHERE kind = 'followup' AND state = 'done'")
    per_trigger = Counter(r[0] for r in store.query(
        "SELECT trigger_id FROM log WHERE event = 'decided' AND trigger_id LIKE 'job:%'"))
    assert len(steps) > 100
    assert all(per_trigger[f"job:{s[0]}"] == 1 for s in steps)
    behaviour = Counter(r[0] for r in store.query(
        "SELECT trigger_id FROM log WHERE event IN ('product_view', 'cart_abandon', 'signup', "
        "'visit', 'cart_add', 'purchase')"))
    assert len(behaviour) == N_EVENTS and set(behaviour.values()) == {1}
    # never twice: each admitted message reached the sink exactly once, none is left over
    sent = {r[0] for r in store.query("SELECT message_id FROM log WHERE event = 'sent'")}
    lines = Counter(json.loads(x)["message_id"] for x in sink.read_text().splitlines())
    assert len(sent) > 300
    assert set(lines) == sent and max(lines.values()) == 1, lines.most_common(3)
    assert store.one("SELECT COUNT(*) FROM outbox WHERE state != 'sent'")[0] == 0
    # and the pressure rules held throughout
    log_df = log_frame(store)
    import pandas as pd

    users = pd.DataFrame({"user_id": [f"u{i}" for i in range(N_USERS)],
                          "timezone": [("UTC", "Europe/Paris", "Asia/Tokyo")[i % 3] for i in range(N_USERS)]})
    from omnisim.policies.pressure import default_rules

    v = count_violations(log_df, users, default_rules())
    assert v["cap_violations"] == 0 and v["quiet_hour_violations"] == 0, v
    print(f"kills {dict(kills)}, client retries {retries}, sent {len(sent)}, steps {len(steps)}")
    store.close()


def test_kill_9_during_load_sqlite(tmp_path):
    _run(tmp_path, f"sqlite:///{tmp_path / 'crash.db'}")


@requires_pg
def test_kill_9_during_load_postgresql(tmp_path):
    url = pg_schema_url()
    try:
        _run(tmp_path, url)
    finally:
        s = Store.open(url, create=False)
        s.drop_schema()
        s.close()
