"""The served OpenAPI document states the limits the ingest API enforces — body size, batch
size, id lengths, timestamps, the timeline's row cap — with the values the code enforces
(read from the same constants and ``create_app`` arguments), and its event schema refuses
what the validator refuses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient


from sender_support import API_KEY, T0, artifact_path, make_service  # noqa: F401

from omnisim.send import app as api
from omnisim.send import validation
from omnisim.send.validation import (MAX_ADDRESS_CHARS, MAX_FUTURE_S, MAX_ID_CHARS,
                                     MAX_MESSAGE_ID_CHARS, MAX_PROPERTIES_BYTES, MIN_TS,
                                     parse_event)

H = {"X-API-Key": API_KEY}


def serve(tmp_path: Path, artifact: Path, monkeypatch: pytest.MonkeyPatch, **limits: int) -> TestClient:
    monkeypatch.setenv("OMNISIM_SEND_API_KEY", API_KEY)
    svc = make_service(f"sqlite:///{tmp_path / 'api.db'}", artifact)
    client = TestClient(api.create_app(svc, **limits))
    user = {"timezone": "UTC", "addresses": {"email": "u1@example.com"}, "consent": {"email": True}}
    assert client.put("/users/u1", json=user, headers=H).status_code == 200
    return client


def events_op(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["paths"]["/events"]["post"]


def event(i: int = 0, **kw: Any) -> dict[str, Any]:
    return {"key": f"k{i}", "user_id": "u1", "type": "product_view", "ts": "2026-03-02T10:00:00Z", **kw}


@pytest.mark.parametrize("limits", [{}, {"max_body_bytes": 4096, "max_batch": 3}])
def test_openapi_states_the_body_and_batch_limits_the_api_enforces(tmp_path, artifact_path,
                                                                  monkeypatch, limits):
    """Default limits and custom ones: the document says what ``POST /events`` enforces
    (used to: no body limit, no minimum batch, no 413 in the document)."""
    client = serve(tmp_path, artifact_path, monkeypatch, **limits)
    max_bytes = limits.get("max_body_bytes", api.MAX_BODY_BYTES)
    max_batch = limits.get("max_batch", api.MAX_BATCH)
    op = events_op(client.get("/openapi.json").json())
    body = op["requestBody"]
    assert body["x-max-body-bytes"] == max_bytes
    assert f"at most {max_bytes} bytes" in body["description"]
    single, batch = body["content"]["application/json"]["schema"]["oneOf"]
    assert (batch["minItems"], batch["maxItems"]) == (1, max_batch)
    assert f"at most {max_bytes} bytes" in op["responses"]["413"]["description"]
    assert f"at most {max_batch} events" in op["responses"]["413"]["description"]
    assert {"200", "202", "400", "413", "422", "500"} <= set(op["responses"])
    # what the document says is what the API does
    ok = client.post("/events", json=[event(i) for i in range(max_batch)], headers=H)
    assert ok.status_code == 200, ok.text
    assert client.post("/events", json=[event(100 + i) for i in range(max_batch + 1)],
                       headers=H).status_code == 413
    assert client.post("/events", json=[], headers=H).status_code == 422
    big = json.dumps(event(999, properties={"pad": "x" * max_bytes})).encode()
    assert len(big) > max_bytes
    assert client.post("/events", content=big, headers={**H, "Content-Type": "application/json"}
                       ).status_code == 413


def test_openapi_states_the_field_limits_of_an_event(tmp_path, artifact_path, monkeypatch):
    op = events_op(serve(tmp_path, artifact_path, monkeypatch).get("/openapi.json").json())
    single, batch = op["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert batch["items"] == single
    props = single["properties"]
    for name in ("key", "user_id"):
        assert (props[name]["minLength"], props[name]["maxLength"]) == (1, MAX_ID_CHARS)
        assert f"at most {MAX_ID_CHARS} characters" in props[name]["description"]
        assert "NUL" in props[name]["description"]
    assert props["message_id"]["minLength"] == 1 and "NUL" in props["message_id"]["description"]
    assert props["message_id"]["maxLength"] == MAX_MESSAGE_ID_CHARS
    assert f"at most {MAX_MESSAGE_ID_CHARS} characters" in props["message_id"]["description"]
    assert props["properties"]["x-max-json-bytes"] == MAX_PROPERTIES_BYTES
    assert f"at most {MAX_PROPERTIES_BYTES} bytes" in props["properties"]["description"]
    assert f"at most {MAX_FUTURE_S} s ahead" in props["ts"]["description"]
    assert MIN_TS.strftime("%Y-%m-%dT%H:%M:%SZ") in props["ts"]["description"]
    assert props["value"]["minimum"] == 0
    assert "NUL" in props["properties"]["properties"]["campaign"]["description"]


def test_openapi_states_the_limits_of_the_user_routes(tmp_path, artifact_path, monkeypatch):
    client = serve(tmp_path, artifact_path, monkeypatch)
    doc = client.get("/openapi.json").json()
    for path, method in (("/users/{user_id}", "put"), ("/users/{user_id}", "delete"),
                         ("/users/{user_id}/timeline", "get")):
        (param,) = [p for p in doc["paths"][path][method]["parameters"] if p["name"] == "user_id"]
        assert (param["schema"]["minLength"], param["schema"]["maxLength"]) == (1, MAX_ID_CHARS)
    (limit,) = [p for p in doc["paths"]["/users/{user_id}/timeline"]["get"]["parameters"]
                if p["name"] == "limit"]
    assert f"1 to {api.MAX_TIMELINE_ROWS}" in limit["description"]
    user = doc["components"]["schemas"]["UserIn"]["properties"]
    for name in ("addresses", "consent"):
        assert user[name]["propertyNames"] == {"enum": ["email", "sms", "push"]}
    # enforced as stated
    assert client.put("/users/" + "u" * (MAX_ID_CHARS + 1), json={"timezone": "UTC"},
                      headers=H).status_code == 422
    assert client.put("/users/" + "u" * MAX_ID_CHARS, json={"timezone": "UTC"},
                      headers=H).status_code == 200


@pytest.mark.parametrize("item", [
    event(key="k" * (MAX_ID_CHARS + 1)),
    event(user_id="u" * (MAX_ID_CHARS + 1)),
    event(key=""),
    event(key="   "),
    event(user_id="u\x001"),
    event(message_id=""),
    event(message_id="m" * (MAX_MESSAGE_ID_CHARS + 1), channel="email"),
    event(message_id="m\x001", channel="email"),
    event(properties={"campaign": "c\x00"}),
    event(value=-1),
    event(colour="blue"),
])
def test_the_event_schema_refuses_what_the_validator_refuses(item):
    import jsonschema  # installed with nbformat (papermill)
    schema = validation.EVENT_SCHEMA
    assert isinstance(parse_event(item, T0), str)  # the validator refuses it
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(item, schema)


def test_the_event_schema_accepts_the_longest_valid_ids():
    import jsonschema  # installed with nbformat (papermill)
    item = event(key="k" * MAX_ID_CHARS, user_id="u" * MAX_ID_CHARS,
                 message_id="m" * MAX_MESSAGE_ID_CHARS,
                 channel="email", properties={"campaign": "spring"})
    assert not isinstance(parse_event(item, T0), str)
    jsonschema.validate(item, validation.EVENT_SCHEMA)


@pytest.mark.parametrize("limits", [{}, {"max_body_bytes": 4096, "max_policy_bytes": 8192}])
def test_openapi_states_the_body_limit_of_every_route_with_a_body(tmp_path, artifact_path,
                                                                 monkeypatch, limits):
    """PUT /users and POST /admin/policy state their body limits and 413 (used to: none
    stated, none enforced); every route with a body states one."""
    client = serve(tmp_path, artifact_path, monkeypatch, **limits)
    doc = client.get("/openapi.json").json()
    max_bytes = limits.get("max_body_bytes", api.MAX_BODY_BYTES)
    max_policy = limits.get("max_policy_bytes", api.MAX_POLICY_BYTES)
    expected = {("/events", "post"): max_bytes, ("/users/{user_id}", "put"): max_bytes,
                ("/admin/policy", "post"): max_policy}
    with_body = {(path, method) for path, ops in doc["paths"].items()
                 for method, op in ops.items() if "requestBody" in op}
    assert with_body == set(expected)
    for (path, method), limit in expected.items():
        op = doc["paths"][path][method]
        assert op["requestBody"]["x-max-body-bytes"] == limit
        assert f"at most {limit} bytes" in op["requestBody"]["description"]
        assert f"at most {limit} bytes" in op["responses"]["413"]["description"]
    # enforced as stated
    pad = json.dumps({"timezone": "UTC", "traits": {"pad": ""}}).encode()
    body = pad.replace(b'""', b'"' + b"x" * (max_bytes + 1 - len(pad)) + b'"')
    r = client.put("/users/u1", content=body, headers={**H, "Content-Type": "application/json"})
    assert r.status_code == 413 and f"limit of {max_bytes} bytes" in r.json()["detail"]


def test_openapi_states_the_address_limits(tmp_path, artifact_path, monkeypatch):
    client = serve(tmp_path, artifact_path, monkeypatch)
    doc = client.get("/openapi.json").json()
    addresses = doc["components"]["schemas"]["UserIn"]["properties"]["addresses"]
    assert set(addresses["properties"]) == set(MAX_ADDRESS_CHARS) == set(api.MESSAGE_CHANNELS)
    for channel, n in MAX_ADDRESS_CHARS.items():
        assert addresses["properties"][channel]["maxLength"] == n
        user = {"timezone": "UTC", "addresses": {channel: "a" * (n + 1)}}
        assert client.put("/users/u2", json=user, headers=H).status_code == 422
