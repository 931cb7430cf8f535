"""The HTTP API: auth, validation item by item, quarantine, users, timeline, metrics, swap."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from sender_support import API_KEY, T0, artifact_path, at, log_rows, make_service  # noqa: F401

from omnisim.policies.artifact import export_policy
from omnisim.send.app import create_app

H = {"X-API-Key": API_KEY}
USER = {"timezone": "UTC", "traits": {"segment": "a"},
        "addresses": {"email": "u1@example.com", "sms": "+3360000000"},
        "consent": {"email": True, "sms": True}}


@pytest.fixture
def client(tmp_path, artifact_path, monkeypatch):
    monkeypatch.setenv("OMNISIM_SEND_API_KEY", API_KEY)
    svc = make_service(f"sqlite:///{tmp_path / 'api.db'}", artifact_path)
    c = TestClient(create_app(svc, max_body_bytes=20_000, max_batch=50))
    assert c.put("/users/u1", json=USER, headers=H).status_code == 200
    c.service = svc
    return c


def event(key="k1", user="u1", kind="product_view", ts="2026-03-02T10:00:00Z", **kw):
    return {"key": key, "user_id": user, "type": kind, "ts": ts, **kw}


def test_health_is_open_everything_else_needs_a_key(client):
    assert client.get("/health").json()["status"] == "ok"
    for method, path in [("get", "/metrics"), ("post", "/events"), ("get", "/users/u1/timeline"),
                         ("delete", "/users/u1"), ("post", "/admin/policy")]:
        r = getattr(client, method)(path, headers={"X-API-Key": "wrong"})
        assert r.status_code == 401 and "X-API-Key" in r.json()["detail"]
    assert client.get("/metrics").status_code == 401


def test_stored_key_works_and_only_its_hash_is_kept(client):
    key = client.service.store.create_api_key("ops", T0)
    assert client.get("/metrics", headers={"X-API-Key": key}).status_code == 200
    stored = client.service.store.query("SELECT key_hash FROM api_keys")
    assert stored and key not in {r[0] for r in stored}


def test_single_event_accepted_then_duplicate(client):
    r = client.post("/events", json=event(), headers=H)
    assert r.status_code == 202 and r.json()["status"] == "accepted"
    r = client.post("/events", json=event(), headers=H)
    assert r.status_code == 200 and r.json()["status"] == "duplicate"
    assert len([x for x in log_rows(client.service.store) if x["event"] == "decided"]) == 1


@pytest.mark.parametrize("item, code, words", [
    (event(kind="teleport"), 422, "unknown event type 'teleport'"),
    (event(ts="yesterday"), 422, "'yesterday' is not a timestamp"),
    (event(ts="2026-03-02T10:00:00"), 422, "has no timezone"),
    (event(ts="2030-01-01T00:00:00Z"), 422, "in the future"),
    (event(user="ghost"), 404, "unknown user 'ghost'"),
    ({"user_id": "u1", "type": "visit", "ts": "2026-03-02T10:00:00Z"}, 422, "missing required field 'key'"),
    (event(value=-3), 422, "value: expected a finite number >= 0"),
    (event(colour="red"), 422, "unknown field(s) 'colour'"),
    (event(kind="opened"), 422, "give message_id"),
    # used to answer 500 and lose the event (not quarantined)
    (event(ts="0001-01-01T00:00:00+01:00"), 422, "is out of range in UTC"),
    (event(ts="9999-12-31T23:30:00-01:00"), 422, "is out of range in UTC"),
    (event(ts="1969-12-31T23:59:59Z"), 422, "is before 1970-01-01"),
    (event(kind="purchase", value=10 ** 400), 422, "value: expected a finite number >= 0"),
    (event(kind="opened", channel="email", properties={"campaign": {"a": 1}}), 422,
     "properties.campaign: expected a string"),
    # NUL cannot be stored in PostgreSQL text (500 there)
    (event(key="k\x00"), 422, "key: expected a non-empty string of at most 200 characters without NUL"),
    (event(kind="opened", message_id="m\x00"), 422, "message_id: expected a non-empty string without NUL"),
    # an unknown message id says no channel: an unsubscribe could not withdraw consent
    (event(kind="unsubscribed", message_id="u1-m99"), 422, "no message was sent as 'u1-m99'"),
])
def test_bad_single_event_is_a_precise_4xx_and_quarantined(client, item, code, words):
    r = client.post("/events", json=item, headers=H)
    assert r.status_code == code, r.text
    assert words in r.json()["error"]
    reasons = [q[0] for q in client.service.store.quarantined()]
    assert any(words in q for q in reasons)


def test_batch_reports_item_by_item(client):
    batch = [event("a"), event("b", kind="nope"), event("c", user="ghost"), event("a")]
    r = client.post("/events", json=batch, headers=H)
    assert r.status_code == 200
    body = r.json()
    assert [x["status"] for x in body["results"]] == ["accepted", "rejected", "rejected", "duplicate"]
    assert body["results"][1]["index"] == 1 and "nope" in body["results"][1]["error"]
    assert (body["accepted"], body["rejected"], body["duplicates"]) == (1, 2, 1)
    assert len(client.service.store.quarantined()) == 2
    r = client.post("/events", json=[event("x", kind="nope")], headers=H)
    assert r.status_code == 422


def test_malformed_and_oversized_bodies(client):
    r = client.post("/events", content=b'{"key": "a",', headers={**H, "content-type": "application/json"})
    assert r.status_code == 400 and r.json()["detail"].startswith("malformed JSON")
    assert client.service.store.quarantined()[0][0].startswith("malformed JSON")
    r = client.post("/events", content=b"[" + b" " * 30_000 + b"]", headers=H)
    assert r.status_code == 413 and "exceeds the limit of 20000 bytes" in r.json()["detail"]
    r = client.post("/events", json=[event(str(i)) for i in range(51)], headers=H)
    assert r.status_code == 413 and "batch of 51" in r.json()["detail"]
    assert client.post("/events", json=[], headers=H).status_code == 422


def test_far_past_ts_with_no_late_tolerance_is_rejected_not_a_500(client):
    client.service.late_tolerance = None  # --late-tolerance-h inf: decided at its own time
    r = client.post("/events", json=event(ts="0001-01-02T00:00:00Z"), headers=H)
    assert r.status_code == 422 and "is before 1970-01-01" in r.json()["error"]


def test_unsubscribe_for_an_unknown_message_is_quarantined_and_a_known_one_withdraws(client):
    store = client.service.store
    r = client.post("/events", json=event("u", kind="unsubscribed", message_id="nope"), headers=H)
    assert r.status_code == 422 and "give the channel" in r.json()["error"]
    assert "nope" in store.quarantined()[0][1]
    assert json.loads(store.one("SELECT consent FROM users")[0])["email"] is True
    assert store.one("SELECT COUNT(*) FROM events WHERE idem_key = 'u'")[0] == 0  # retry may pass
    client.post("/events", json=event("pv"), headers=H)  # sends u1-m1 by email
    r = client.post("/events", json=event("u", kind="unsubscribed", message_id="u1-m1",
                                          ts="2026-03-02T10:01:00Z"), headers=H)
    assert r.status_code == 202, r.text
    assert json.loads(store.one("SELECT consent FROM users")[0])["email"] is False
    r = client.post("/events", json=event("u2", kind="unsubscribed", message_id="nope",
                                          channel="sms", ts="2026-03-02T10:02:00Z"), headers=H)
    assert r.status_code == 202, r.text  # the channel is given: no message needed


def test_a_large_malformed_body_is_quarantined_whole(tmp_path, artifact_path, monkeypatch):
    monkeypatch.setenv("OMNISIM_SEND_API_KEY", API_KEY)
    svc = make_service(f"sqlite:///{tmp_path / 'q.db'}", artifact_path)
    c = TestClient(create_app(svc))
    body = '[{"key": "a", "properties": {"x": "' + "y" * 200_000 + '"}}, {"key": "b",\x00'
    r = c.post("/events", content=body.encode(), headers={**H, "content-type": "application/json"})
    assert r.status_code == 400
    kept = svc.store.quarantined()[0][1]
    assert len(kept) == len(body) + 5 and kept.endswith('"b",\\u0000')  # used to be cut at 64 KiB


def test_user_validation_timeline_and_erasure(client):
    r = client.put("/users/u2", json={**USER, "timezone": "Mars/Olympus"}, headers=H)
    assert r.status_code == 422 and "unknown IANA timezone" in r.text
    r = client.put("/users/u2", json={**USER, "consent": {"fax": True}}, headers=H)
    assert r.status_code == 422 and "unknown channel(s) fax" in r.text
    client.post("/events", json=event(), headers=H)
    tl = client.get("/users/u1/timeline", headers=H).json()
    assert [e["event"] for e in tl["events"]] == ["product_view", "decided", "sent"]
    assert {s["kind"] for s in tl["scheduled"]} == {"followup"}
    r = client.delete("/users/u1", headers=H)
    anon = r.json()["pseudonym"]
    assert r.status_code == 200 and anon.startswith("anon-")
    rows = log_rows(client.service.store)
    assert {x["user_id"] for x in rows} == {anon}
    assert all("u1" not in (x["message_id"] or "") for x in rows)
    assert client.get("/users/u1/timeline", headers=H).status_code == 404
    assert client.delete("/users/u1", headers=H).status_code == 404
    assert client.post("/events", json=event("k9"), headers=H).status_code == 404


def test_metrics_and_openapi(client):
    client.post("/events", json=event(), headers=H)
    text = client.get("/metrics", headers=H).text
    assert 'omnisim_events_total{status="accepted"} 1.0' in text
    assert 'omnisim_decisions_total{channel="email"} 1.0' in text
    assert 'omnisim_queue_depth{queue="jobs_followup"} 1.0' in text
    assert "omnisim_decision_latency_seconds_bucket" in text
    schema = client.get("/openapi.json").json()
    assert {"/events", "/users/{user_id}", "/users/{user_id}/timeline", "/health", "/metrics",
            "/admin/policy"} <= set(schema["paths"])
    body = schema["paths"]["/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["oneOf"][0]["properties"]["type"]["enum"][0] == "signup"


def test_policy_swap_is_verified_and_recorded(client, tmp_path):
    new = export_policy("welcome+pressure", tmp_path / "welcome.json")
    bad = json.loads(new.read_text())
    bad["parameters"]["journeys"][0]["version"] = 99  # tampered: checksum no longer matches
    r = client.post("/admin/policy", json=bad, headers=H)
    assert r.status_code == 422 and "checksum mismatch" in r.json()["detail"]
    old_version = client.service.policy.version
    client.post("/events", json=event("before"), headers=H)
    r = client.post("/admin/policy", json=json.loads(new.read_text()), headers=H)
    assert r.status_code == 200 and r.json()["old"]["version"] == old_version
    assert client.get("/health").json()["policy"].startswith("welcome")
    r2 = client.post("/events", json=event("after", kind="signup", ts="2026-03-02T10:03:00Z"), headers=H)
    assert r2.status_code == 202, r2.text
    decided = [x for x in log_rows(client.service.store) if x["event"] == "decided"]
    assert decided[0]["artifact"] == old_version and decided[-1]["artifact"] == r.json()["new"]["version"]
    # pending work of the old policy is kept
    assert client.service.store.one("SELECT COUNT(*) FROM jobs WHERE state = 'pending'")[0] >= 1
