"""The JSON webhook provider against a real HTTP server on loopback: success, retries with
backoff, Retry-After, timeouts, permanent 4xx, circuit breaker, failover, dead-letter."""

from __future__ import annotations

import random
from email.utils import parsedate_to_datetime
from typing import Any, Iterator

import pytest

from omnisim.send.providers import ProviderSet
from omnisim.send.providers.resilience import backoff_s
from omnisim.send.providers.webhook import parse_retry_after
from providers_support import FakeTime, Gateway, Reply, free_port, message

BODY = {"to": "{address}", "text": "{body}", "ref": "{message_id}"}


@pytest.fixture
def gw() -> Iterator[Gateway]:
    with Gateway() as g:
        yield g


@pytest.fixture
def gw2() -> Iterator[Gateway]:
    with Gateway(default=Reply(200, {"id": "second-1"})) as g:
        yield g


@pytest.fixture
def ft() -> FakeTime:
    return FakeTime()


def http(url: str, name: str = "primary", **over: Any) -> dict[str, Any]:
    spec = {"name": name, "type": "http", "url": url, "body": BODY, "timeout_s": 2,
            "max_attempts": 3, "backoff_base_s": 1.0, "backoff_max_s": 8.0}
    spec.update(over)
    return spec


def pset(ft: FakeTime, *providers: dict[str, Any], seed: int = 7) -> ProviderSet:
    return ProviderSet.from_dict({"channels": {"sms": list(providers)}}, clock=ft.clock,
                                 sleep=ft.sleep, rng=random.Random(seed))


def test_success_posts_escaped_json_with_auth_and_idempotency_headers(gw, ft, monkeypatch):
    monkeypatch.setenv("GW_TOKEN", "s3cret")
    ps = pset(ft, http(gw.url, auth_env="GW_TOKEN", auth_prefix="Bearer ",
                       headers={"X-Tenant": "shop"}))
    tricky = 'He said "hi"\n{user_id} \\ ünïcode ✓ </script>'
    res = ps.deliver(message(body=tricky))
    assert (res.status, res.provider, res.attempts, res.error) == ("sent", "primary", 1, None)
    assert res.provider_message_id == "gw-1"
    assert res.response.startswith("200")
    (req,) = gw.requests
    assert req.path == "/v1/messages" and req.method == "POST"
    assert req.json() == {"to": "+15550100", "text": tricky, "ref": "m1"}  # not re-expanded
    assert req.headers["Authorization"] == "Bearer s3cret"
    assert req.headers["Idempotency-Key"] == "k1"
    assert req.headers["X-Tenant"] == "shop"
    assert req.headers["Content-Type"].startswith("application/json")
    assert ft.sleeps == []


def test_string_body_template_escapes_values(gw, ft):
    template = '{"to": "{address}", "text": "{body}", "tags": ["{campaign}"], "n": "{meta.count}"}'
    ps = pset(ft, http(gw.url, body=template))
    res = ps.deliver(message(body='a"b\n\\c', meta={"count": 3}))
    assert res.status == "sent"
    assert gw.requests[0].json() == {"to": "+15550100", "text": 'a"b\n\\c', "tags": ["welcome"], "n": "3"}


def test_whole_placeholder_keeps_json_type_and_missing_meta_is_permanent(gw, ft):
    ps = pset(ft, http(gw.url, body={"to": "{address}", "prio": "{meta.priority}", "subject": "{subject}"}))
    assert ps.deliver(message(subject=None, meta={"priority": 5})).status == "sent"
    assert gw.requests[0].json() == {"to": "+15550100", "prio": 5, "subject": None}
    res = ps.deliver(message(2, meta={}))
    assert res.status == "failed" and "priority" in res.error and res.attempts == 1
    assert len(gw.requests) == 1


def test_5xx_is_retried_with_full_jitter_backoff_and_constant_idempotency_key(gw, ft):
    gw.script = [Reply(500, {"err": "boom"}), Reply(503), Reply(201, {"id": "x9"})]
    res = pset(ft, http(gw.url), seed=3).deliver(message())
    assert (res.status, res.attempts, res.provider_message_id) == ("sent", 3, "x9")
    rng = random.Random(3)
    assert ft.sleeps == [backoff_s(1, 1.0, 8.0, rng), backoff_s(2, 1.0, 8.0, rng)]
    assert 0 <= ft.sleeps[0] <= 1.0 and 0 <= ft.sleeps[1] <= 2.0
    assert {r.headers["Idempotency-Key"] for r in gw.requests} == {"k1"}
    assert len({r.body for r in gw.requests}) == 1


def test_backoff_is_capped_by_backoff_max_s():
    rng = random.Random(0)
    delays = [backoff_s(k, 1.0, 4.0, rng) for k in range(1, 200)]
    assert max(delays) <= 4.0 and max(delays[10:]) > 3.0 and min(delays) >= 0.0


def test_429_retry_after_is_honoured(gw, ft):
    gw.script = [Reply(429, {"err": "slow down"}, {"Retry-After": "7"}), Reply(200, {"id": "ok"})]
    res = pset(ft, http(gw.url, retry_after_max_s=10)).deliver(message())
    assert (res.status, res.attempts) == ("sent", 2)
    assert ft.sleeps == [7.0]


def test_retry_after_beyond_max_fails_over_without_waiting(gw, gw2, ft):
    gw.script = [Reply(429, None, {"Retry-After": "3600"})]
    res = pset(ft, http(gw.url, retry_after_max_s=30), http(gw2.url, name="backup")).deliver(message())
    assert (res.status, res.provider, res.attempts) == ("sent", "backup", 2)
    assert ft.sleeps == []


def test_400_is_permanent_no_retry_no_failover(gw, gw2, ft):
    gw.script = [Reply(400, {"error": "invalid number"})]
    res = pset(ft, http(gw.url), http(gw2.url, name="backup")).deliver(message())
    assert (res.status, res.provider, res.attempts) == ("failed", "primary", 1)
    assert "HTTP 400" in res.error and "invalid number" in res.error
    assert len(gw.requests) == 1 and gw2.requests == [] and ft.sleeps == []


@pytest.mark.parametrize("status", [408, 429, 502])
def test_408_429_5xx_are_retryable(gw, ft, status):
    gw.script = [Reply(status)]
    assert pset(ft, http(gw.url)).deliver(message()).attempts == 2


def test_slow_response_beyond_timeout_is_retried(gw, ft, caplog):
    gw.script = [Reply(200, {"id": "late"}, delay_s=1.5)]
    res = pset(ft, http(gw.url, timeout_s=0.5)).deliver(message())
    assert (res.status, res.attempts, res.provider_message_id) == ("sent", 2, "gw-1")
    assert len(ft.sleeps) == 1
    assert "attempt 1/3 for m1 failed: timed out after 0.5 s" in caplog.text


def test_connection_refused_dead_letters_with_last_error(ft):
    url = f"http://127.0.0.1:{free_port()}/x"
    res = pset(ft, http(url, max_attempts=2)).deliver(message())
    assert (res.status, res.attempts, res.provider) == ("failed", 2, "primary")
    assert res.error.startswith("primary: connection error")
    assert len(ft.sleeps) == 1


def test_dead_letter_after_all_attempts_of_all_providers(gw, gw2, ft):
    gw.default = Reply(500, {"e": "p"})
    gw2.default = Reply(503, {"e": "s"})
    res = pset(ft, http(gw.url, max_attempts=2), http(gw2.url, name="backup", max_attempts=3)).deliver(message())
    assert (res.status, res.attempts, res.provider) == ("failed", 5, "backup")
    assert res.error.startswith("backup: HTTP 503")
    assert res.provider_message_id is None
    assert (len(gw.requests), len(gw2.requests)) == (2, 3)


def test_breaker_opens_fails_over_and_recovers_half_open(gw, gw2, ft):
    gw.default = Reply(500)
    ps = pset(ft, http(gw.url, max_attempts=2, failure_threshold=2, reset_after_s=60),
              http(gw2.url, name="backup"))
    first = ps.deliver(message(1))
    assert (first.status, first.provider, first.attempts) == ("sent", "backup", 3)
    assert ps.breaker_states()["primary"] == "open"

    second = ps.deliver(message(2))  # breaker open: primary is not even asked
    assert (second.status, second.provider, second.attempts) == ("sent", "backup", 1)
    assert len(gw.requests) == 2

    ft.advance(60)  # half-open: one probe; it fails, breaker reopens, failover at once
    assert ps.breaker_states()["primary"] == "half_open"
    third = ps.deliver(message(3))
    assert (third.provider, third.attempts) == ("backup", 2)
    assert len(gw.requests) == 3 and ps.breaker_states()["primary"] == "open"

    gw.default = Reply(200, {"id": "back"})
    ft.advance(59)
    assert ps.deliver(message(4)).provider == "backup"  # still open
    ft.advance(1)
    fourth = ps.deliver(message(5))  # probe succeeds: closed again
    assert (fourth.status, fourth.provider, fourth.provider_message_id) == ("sent", "primary", "back")
    assert ps.breaker_states()["primary"] == "closed"


def test_breaker_open_on_every_provider_fails_without_requests(gw, ft):
    gw.default = Reply(500)
    ps = pset(ft, http(gw.url, max_attempts=1, failure_threshold=1))
    assert ps.deliver(message(1)).attempts == 1
    res = ps.deliver(message(2))
    assert (res.status, res.attempts, res.error) == ("failed", 0, "primary: circuit open")
    assert len(gw.requests) == 1


def test_rate_limit_waits_for_tokens(gw, ft):
    ps = pset(ft, http(gw.url, rate_per_s=2, burst=2))
    for n in range(4):
        assert ps.deliver(message(n)).status == "sent"
    assert ft.sleeps == [0.5, 0.5]  # two in the burst, then one token every 0.5 s


def test_sent_key_is_not_sent_again_through_failover(gw, ft):
    ps = pset(ft, http(gw.url))
    assert ps.deliver(message()).status == "sent"
    again = ps.deliver(message())
    assert (again.status, again.attempts) == ("sent", 0) and "duplicate" in again.response
    assert len(gw.requests) == 1


def test_undeliverable_without_provider_or_address(gw, ft):
    ps = pset(ft, http(gw.url))
    assert ps.channels() == {"sms"}
    res = ps.deliver(message(channel="push"))
    assert (res.status, res.attempts) == ("undeliverable", 0) and "push" in res.error
    res = ps.deliver(message(address="  "))
    assert res.status == "undeliverable" and "address" in res.error
    assert gw.requests == []


@pytest.mark.parametrize("header, expected", [
    ("120", 120.0), (" 1.5 ", 1.5), ("-3", 0.0), ("soon", None), (None, None),
    ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),
])
def test_parse_retry_after(header, expected):
    now = parsedate_to_datetime("Wed, 21 Oct 2015 07:28:00 GMT").timestamp()
    assert parse_retry_after(header, now_s=now) == expected
