"""Token bucket, circuit breaker and a ProviderSet shared by threads."""

from __future__ import annotations

import random
import threading

from omnisim.send.providers import CircuitBreaker, FileSink, ProviderSet, TokenBucket
from providers_support import FakeTime, Gateway, message


def test_token_bucket_burst_then_rate_then_refill():
    ft = FakeTime()
    bucket = TokenBucket(rate_per_s=4, burst=2, clock=ft.clock, sleep=ft.sleep)
    assert [bucket.acquire() for _ in range(4)] == [0.0, 0.0, 0.25, 0.25]
    ft.advance(10)  # refills to burst, not beyond
    assert [bucket.acquire() for _ in range(3)] == [0.0, 0.0, 0.25]
    assert ft.sleeps == [0.25, 0.25, 0.25]


def test_breaker_opens_after_consecutive_failures_only():
    ft = FakeTime()
    br = CircuitBreaker("p", failure_threshold=3, reset_after_s=10, clock=ft.clock)
    br.failure(), br.failure(), br.success(), br.failure(), br.failure()
    assert br.state == "closed" and br.allow()
    br.failure()
    assert br.state == "open" and not br.allow()
    ft.advance(9.9)
    assert not br.allow()


def test_breaker_half_open_lets_one_probe_through():
    ft = FakeTime()
    br = CircuitBreaker("p", failure_threshold=1, reset_after_s=10, clock=ft.clock)
    br.failure()
    ft.advance(10)
    assert br.state == "half_open"
    assert br.allow() and not br.allow()  # a second caller waits for the probe's verdict
    br.failure()  # probe failed: open for another reset_after_s
    assert br.state == "open" and not br.allow()
    ft.advance(10)
    assert br.allow()
    br.success()
    assert br.state == "closed" and br.allow() and br.allow()


def test_provider_set_shared_by_threads_sends_each_message_once():
    with Gateway() as gw:
        ps = ProviderSet.from_dict({"channels": {"sms": [{"type": "http", "url": gw.url,
                                                          "body": {"to": "{address}"}}]}},
                                   rng=random.Random(0))
        results: list[str] = []
        lock = threading.Lock()

        def work(offset: int) -> None:
            for n in range(10):
                status = ps.deliver(message(offset + n % 5)).status  # every key twice per thread
                with lock:
                    results.append(status)

        threads = [threading.Thread(target=work, args=(100 * t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
        assert results == ["sent"] * 40
        keys = [r.headers["Idempotency-Key"] for r in gw.requests]
        assert len(keys) == 20 and len(set(keys)) == 20


def test_adapter_bug_fails_over_and_releases_the_half_open_probe(monkeypatch):
    ft = FakeTime()
    ps = ProviderSet.from_dict({"channels": {"push": [
        {"name": "buggy", "type": "file", "path": "unused.jsonl", "failure_threshold": 1,
         "reset_after_s": 5}]}}, clock=ft.clock, sleep=ft.sleep)

    def boom(self, msg):
        raise RuntimeError("adapter bug")

    monkeypatch.setattr(FileSink, "send", boom)
    res = ps.deliver(message(1, channel="push"))
    assert (res.status, res.attempts) == ("failed", 1) and "RuntimeError: adapter bug" in res.error
    ft.advance(5)
    assert ps.deliver(message(2, channel="push")).attempts == 1  # the probe went out
    ft.advance(5)
    assert ps.deliver(message(3, channel="push")).attempts == 1  # and was released again
