"""Every route that reads a body limits its size (413 saying the limit and what to do, before
the body is held whole in memory), and the fields that had no limit but the body's —
``message_id``, a user's addresses, an event's ``properties`` — have their own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest
from fastapi.testclient import TestClient
from sender_support import API_KEY, artifact_path, make_service  # noqa: F401

from omnisim.send import app as api
from omnisim.send import validation

H = {"X-API-Key": API_KEY}
JSON = {**H, "Content-Type": "application/json"}
LIMIT = 2 * max(validation.MAX_ADDRESS_CHARS.values())  # room for the longest address
USER = {"timezone": "UTC", "addresses": {"email": "u1@example.com"}, "consent": {"email": True}}


@pytest.fixture
def client(tmp_path: Path, artifact_path: Path, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    monkeypatch.setenv("OMNISIM_SEND_API_KEY", API_KEY)
    svc = make_service(f"sqlite:///{tmp_path / 'api.db'}", artifact_path)
    c = TestClient(api.create_app(svc, max_body_bytes=LIMIT))
    assert c.put("/users/u1", json=USER, headers=H).status_code == 200
    c.service = svc  # type: ignore[attr-defined]
    return c


def padded_user(size: int) -> bytes:
    """A valid ``PUT /users`` body of exactly ``size`` bytes."""
    body = json.dumps({**USER, "traits": {"pad": ""}}).encode()
    return body.replace(b'"pad": ""', b'"pad": "' + b"x" * (size - len(body)) + b'"')


def chunked(data: bytes, n: int = 1024) -> Iterator[bytes]:
    """``data`` streamed without a Content-Length (chunked transfer)."""
    for i in range(0, len(data), n):
        yield data[i:i + n]


def traits(client: TestClient) -> dict[str, Any]:
    return json.loads(client.service.store.one("SELECT traits FROM users WHERE user_id = 'u1'")[0])


@pytest.mark.parametrize("stream", [False, True], ids=["content-length", "chunked"])
def test_put_user_body_over_the_limit_is_413_and_stores_nothing(client, stream):
    """Used to: any size read whole and stored (the limit was POST /events' alone)."""
    assert len(padded_user(LIMIT)) == LIMIT
    assert client.put("/users/u1", content=padded_user(LIMIT), headers=JSON).status_code == 200
    assert len(traits(client)["pad"]) > 0
    big = padded_user(LIMIT + 1)
    r = client.put("/users/u1", content=chunked(big) if stream else big, headers=JSON)
    assert r.status_code == 413, r.text
    detail = r.json()["detail"]
    assert f"exceeds the limit of {LIMIT} bytes for PUT /users/u1" in detail
    assert "send a smaller body" in detail
    assert len(traits(client)["pad"]) == LIMIT - len(padded_user(0))  # unchanged


def test_chunked_event_body_over_the_limit_is_413(client):
    body = json.dumps([{"key": f"k{i}", "user_id": "u1", "type": "visit",
                        "ts": "2026-03-02T10:00:00Z"} for i in range(200)]).encode()
    assert len(body) > LIMIT
    r = client.post("/events", content=chunked(body), headers=JSON)
    assert r.status_code == 413 and f"limit of {LIMIT} bytes" in r.json()["detail"]
    assert "smaller batches" in r.json()["detail"]


def test_policy_upload_has_its_own_limit(client, tmp_path, artifact_path, monkeypatch):
    """An artifact over ``max_body_bytes`` installs (its own, larger limit); one over
    ``max_policy_bytes`` is 413 (used to: read whole whatever its size)."""
    text = artifact_path.read_text()
    padded = (text + " " * (LIMIT + 1)).encode()  # same artifact, whitespace-padded
    r = client.post("/admin/policy", content=padded, headers=JSON)
    assert r.status_code == 200, r.text
    svc = make_service(f"sqlite:///{tmp_path / 'small.db'}", artifact_path)
    small = TestClient(api.create_app(svc, max_body_bytes=LIMIT, max_policy_bytes=len(padded) - 1))
    r = small.post("/admin/policy", content=padded, headers=JSON)
    assert r.status_code == 413, r.text
    assert f"limit of {len(padded) - 1} bytes for POST /admin/policy" in r.json()["detail"]
    assert "--policy" in r.json()["detail"]
    assert api.MAX_POLICY_BYTES > api.MAX_BODY_BYTES


@pytest.mark.parametrize("channel", list(validation.MAX_ADDRESS_CHARS))
def test_addresses_have_a_length_limit_per_channel(client, channel):
    n = validation.MAX_ADDRESS_CHARS[channel]
    user = {**USER, "addresses": {channel: "a" * n}, "consent": {}}
    assert client.put("/users/u2", json=user, headers=H).status_code == 200
    user["addresses"] = {channel: "a" * (n + 1)}
    r = client.put("/users/u2", json=user, headers=H)
    assert r.status_code == 422, r.text
    assert f"addresses.{channel}: at most {n} characters" in r.text
    assert validation.MAX_ADDRESS_CHARS["email"] == 320  # RFC 5321: 64 + 1 + 255


@pytest.mark.parametrize("address", ["a\x00b@example.com", "a@example.com\r\nBcc: x@evil.test",
                                     "   ", "a\tb@example.com"])
def test_addresses_with_control_characters_or_blank_are_refused(client, address):
    """A NUL or line break in an address is garbage no provider takes (and a line break would
    split an SMTP header): refused with 422 naming the field, the stored profile unchanged."""
    user = {**USER, "addresses": {"email": address}}
    r = client.put("/users/u1", json=user, headers=H)
    assert r.status_code == 422, r.text
    assert "addresses.email: expected a non-blank address without control characters" in r.text
    stored = client.service.store.one("SELECT addresses FROM users WHERE user_id = 'u1'")
    assert "u1@example.com" in str(stored)


def event(**kw: Any) -> dict[str, Any]:
    return {"key": "k1", "user_id": "u1", "type": "product_view", "ts": "2026-03-02T10:00:00Z", **kw}


def test_message_id_and_properties_have_limits(tmp_path, artifact_path, monkeypatch):
    monkeypatch.setenv("OMNISIM_SEND_API_KEY", API_KEY)
    svc = make_service(f"sqlite:///{tmp_path / 'api.db'}", artifact_path)
    client = TestClient(api.create_app(svc))  # the default body limit, far above the fields'
    assert client.put("/users/u1", json=USER, headers=H).status_code == 200
    n = validation.MAX_MESSAGE_ID_CHARS
    assert n >= validation.MAX_ID_CHARS + len("-m") + 20  # any id the sender gives a message
    r = client.post("/events", json=event(type="opened", channel="email",
                                          message_id="m" * (n + 1)), headers=H)
    assert r.status_code == 422 and f"at most {n} characters" in r.json()["error"]
    r = client.post("/events", json=event(type="opened", channel="email", message_id="m" * n),
                    headers=H)
    assert r.status_code == 202, r.text
    limit = validation.MAX_PROPERTIES_BYTES
    pad = "x" * (limit - len('{"pad":""}'))
    r = client.post("/events", json=event(key="k2", properties={"pad": pad}), headers=H)
    assert r.status_code == 202, r.text
    r = client.post("/events", json=event(key="k3", properties={"pad": pad + "é"}), headers=H)
    assert r.status_code == 422 and f"limit of {limit} bytes" in r.json()["error"]
    assert "k3" in str(svc.store.quarantined())
DEEP = b"[" * 3000 + b"]" * 3000  # 6,000 bytes: under the limit, past the recursion limit


def test_deeply_nested_json_is_a_clear_400_not_a_500(client):
    """JSON nested past the parser's recursion limit is malformed input: 400 naming it, the
    body quarantined for /events; 400 for a user's body (FastAPI's parser) — never a 500."""
    body = b'{"key": "k", "user_id": "u1", "type": "visit", "ts": "2026-01-05T00:00:00Z", "properties": ' + DEEP + b"}"
    r = client.post("/events", content=body, headers=JSON)
    assert r.status_code == 400, r.text
    assert "nested too deeply" in r.json()["detail"]
    rows = client.service.store.query("SELECT reason FROM quarantine")
    assert any("nested too deeply" in row[0] for row in rows)
    user = b'{"timezone": "UTC", "traits": {"x": ' + DEEP + b"}}"
    r = client.put("/users/u2", content=user, headers=JSON)
    assert r.status_code == 400, r.text
    assert client.service.store.one("SELECT 1 FROM users WHERE user_id = 'u2'") is None
