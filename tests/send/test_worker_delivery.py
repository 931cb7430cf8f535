"""The worker's delivery over a real HTTP gateway on loopback (SQLite, and PostgreSQL when
``OMNISIM_TEST_PG_URL`` is set): a row whose lease ran out while it waited in one worker's
batch, and that another worker re-claimed, is delivered once; a message whose consent was
withdrawn after it was queued is not delivered."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from sender_support import add_user, artifact_path, at, ev, make_service, store_url  # noqa: F401

from omnisim.send.providers import DeliveryResult, OutboundMessage, ProviderSet
from omnisim.send.store import Store
from omnisim.send.worker import Worker, WorkerConfig


class SlowGateway:
    """An HTTP gateway that records each message id it receives and answers 200, after
    ``delay_s[message_id]`` seconds for the ids listed there."""

    def __init__(self, delay_s: dict[str, float]) -> None:
        self.received: list[str] = []
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                mid = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["ref"]
                gateway.received.append(mid)
                time.sleep(delay_s.get(mid, 0.0))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/send"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slow_gateway() -> Iterator[SlowGateway]:
    gw = SlowGateway({"u2-m1": 1.0})
    yield gw
    gw.close()


def provider_set(url: str, store: Store) -> ProviderSet:
    return ProviderSet.from_dict({"channels": {"email": [{
        "type": "http", "url": url, "max_attempts": 1, "timeout_s": 5,
        "body": {"to": "{address}", "ref": "{message_id}"}}]}}, sent_keys=store)


class ExpiringFirst:
    """Worker A's deliverer: while A delivers its first row, the leases of the rows still
    waiting in A's batch run out (as when deliveries are slow) and worker B claims them;
    A goes on once B's first delivery is at the gateway."""

    def __init__(self, inner: ProviderSet, store: Store, other: Worker, gw: SlowGateway) -> None:
        self.inner, self.store, self.other, self.gw = inner, store, other, gw
        self.thread: threading.Thread | None = None

    def deliver(self, msg: OutboundMessage) -> DeliveryResult:
        if self.thread is None:
            self.store.execute("UPDATE outbox SET lease_us = 0 WHERE message_id <> ?", (msg.message_id,))
            self.thread = threading.Thread(target=self.other.deliver_claimed)
            self.thread.start()
            deadline = time.monotonic() + 10
            while "u2-m1" not in self.gw.received and time.monotonic() < deadline:
                time.sleep(0.01)
        return self.inner.deliver(msg)


def test_a_row_reclaimed_while_waiting_in_a_batch_is_delivered_once(store_url, artifact_path,
                                                                    slow_gateway):
    svc_a = make_service(store_url, artifact_path)
    for uid in ("u1", "u2", "u3"):
        add_user(svc_a.store, uid, channels=("email",))
    svc_a.ingest([ev(f"k-{uid}", uid, "product_view", at(0)) for uid in ("u1", "u2", "u3")])
    svc_b = make_service(store_url, artifact_path)
    worker_b = Worker(svc_b, provider_set(slow_gateway.url, svc_b.store))
    deliverer = ExpiringFirst(provider_set(slow_gateway.url, svc_a.store), svc_a.store, worker_b,
                              slow_gateway)
    worker_a = Worker(svc_a, deliverer, WorkerConfig(lease_s=60))
    try:
        worker_a.deliver_claimed()
        assert deliverer.thread is not None
        deliverer.thread.join(10)
        # the old worker A sent u2-m1 again while B's request was in flight (no key marked yet)
        assert Counter(slow_gateway.received) == {"u1-m1": 1, "u2-m1": 1, "u3-m1": 1}
        rows = svc_a.store.query("SELECT message_id, state, result FROM outbox ORDER BY message_id")
        assert [(m, st) for m, st, _ in rows] == [("u1-m1", "sent"), ("u2-m1", "sent"), ("u3-m1", "sent")]
        # each row's result is its real delivery, not a later "duplicate: not sent again"
        assert all(json.loads(r)["attempts"] == 1 for _, _, r in rows)
    finally:
        svc_a.store.close()
        svc_b.store.close()


@pytest.mark.parametrize("withdraw", ["unsubscribed", "profile"])
def test_consent_withdrawn_after_queueing_stops_the_delivery(store_url, artifact_path,
                                                            slow_gateway, withdraw):
    svc = make_service(store_url, artifact_path)
    add_user(svc.store, "u1", channels=("email",))
    add_user(svc.store, "u2", channels=("email",))
    svc.ingest([ev("k1", "u1", "product_view", at(0)), ev("k2", "u2", "product_view", at(0))])
    assert svc.store.one("SELECT COUNT(*) FROM outbox WHERE state = 'queued'")[0] == 2
    if withdraw == "unsubscribed":  # e.g. from a link in an earlier email
        svc.ingest([ev("k3", "u1", "unsubscribed", at(0.1), channel="email")])
    else:  # PUT /users/u1 with the email consent off
        with svc.store.transaction():
            svc.store.upsert_user("u1", "UTC", {}, {"email": False}, {"email": "u1@email"}, at(0.1))
    try:
        Worker(svc, provider_set(slow_gateway.url, svc.store)).deliver_claimed()
        assert slow_gateway.received == ["u2-m1"]  # u1's email used to go out
        state, result = svc.store.one("SELECT state, result FROM outbox WHERE message_id = 'u1-m1'")
        assert state == "failed" and json.loads(result)["attempts"] == 0
        (reason,) = svc.store.one("SELECT reason FROM log WHERE message_id = 'u1-m1' AND event = 'failed'")
        assert "no email consent any more" in reason
    finally:
        svc.store.close()
