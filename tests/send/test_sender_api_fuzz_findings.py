"""Regressions for what fuzzing the sender API from its own OpenAPI document found (schemathesis,
run by hand; these tests are plain TestClient calls): invalid input answered 500, or answered
in a shape, or under a rule, other than the document states.

- A string holding a lone UTF-16 surrogate (a JSON ``\\ud800`` escape without its pair) is
  not Unicode text: UTF-8 cannot encode it, so the store's insert or the JSON answer raised
  (500) — in a key, a user id, a top-level item; in a callback's ``message_id`` processing
  raised (per-item 500); elsewhere (``properties``, a user's traits or addresses) it was
  stored. Now: 422 naming the field (an event's is quarantined).
- An integer of more than 4300 digits made :func:`json.loads` raise a ``ValueError`` that
  was not caught (500); ``PUT /users`` answered FastAPI's bare "There was an error parsing
  the body". Now: 400 saying why.
- The ``/users/{id}`` answers did not match the document: 404 undocumented; an invalid
  ``{user_id}``'s 422 (``{"detail": "text"}``) did not match the documented list of errors.
- The id ``pattern`` used ``\\s``, which ECMA 262 (what OpenAPI clients and fuzzers read)
  defines as another set than Python's ``str.strip`` the API applies: ``"\\x1e"`` was a
  valid id by the document and refused by the API.
- ``null`` for ``channel``, ``message_id``, ``value`` and ``properties.campaign`` is taken as
  absent by the API, but the schema refused it.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from sender_support import API_KEY, T0, add_user, artifact_path, make_service  # noqa: F401

from omnisim.send import validation
from omnisim.send.app import create_app

H = {"X-API-Key": API_KEY, "content-type": "application/json"}
TS = "2026-03-02T09:00:00Z"


@pytest.fixture
def api(tmp_path: Path, artifact_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:  # noqa: F811
    monkeypatch.setenv("OMNISIM_SEND_API_KEY", API_KEY)
    svc = make_service(f"sqlite:///{tmp_path / 'api.db'}", artifact_path)
    add_user(svc.store, "u1")
    return TestClient(create_app(svc), raise_server_exceptions=False), svc.store


def post(client: TestClient, raw: str | bytes, path: str = "/events", method: str = "POST") -> Any:
    """Send ``raw`` as is: JSON text written by hand, so a lone ``\\ud800`` escape reaches the
    server as the client wrote it."""
    body = raw.encode() if isinstance(raw, str) else raw
    return client.request(method, path, content=body, headers=H)


def n_quarantined(store: Any) -> int:
    return store.one("SELECT COUNT(*) FROM quarantine")[0]


def n_logged(store: Any) -> int:
    return store.one("SELECT COUNT(*) FROM log")[0]


LONE = "\\ud800"  # the JSON escape, as text: decodes to a lone surrogate


@pytest.mark.parametrize("field, extra", [
    ("key", f'"key":"{LONE}","user_id":"u1","type":"visit"'),
    ("user_id", f'"key":"k1","user_id":"{LONE}","type":"visit"'),
    ("message_id", f'"key":"k1","user_id":"u1","type":"opened","message_id":"{LONE}"'),
    ("message_id", f'"key":"k1","user_id":"u1","type":"visit","channel":"email","message_id":"{LONE}"'),
    ("properties.x", f'"key":"k1","user_id":"u1","type":"visit","properties":{{"x":"{LONE}"}}'),
    ("properties", f'"key":"k1","user_id":"u1","type":"visit","properties":{{"{LONE}":1}}'),
    ("properties.campaign", f'"key":"k1","user_id":"u1","type":"opened","channel":"email",'
                            f'"properties":{{"campaign":"{LONE}"}}'),
])
def test_a_lone_surrogate_in_an_event_is_refused_with_422_naming_the_field(api, field, extra):
    """Was: 500 (key, user_id: the answer or the store's insert raised UnicodeEncodeError),
    a per-item 500 (a callback's message_id: processing raised), or 202 and stored."""
    client, store = api
    r = post(client, "{" + extra + f',"ts":"{TS}"' + "}")
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error.startswith(f"{field}:") and "not valid Unicode text" in error
    assert n_quarantined(store) == 1 and n_logged(store) == 0


def test_a_batch_item_with_a_lone_surrogate_key_is_reported_not_a_500(api):
    """Was: 500 — the answer echoing the item's key could not be encoded."""
    client, store = api
    good = f'{{"key":"k1","user_id":"u1","type":"visit","ts":"{TS}"}}'
    bad = f'{{"key":"{LONE}","user_id":"nobody","type":"visit","ts":"{TS}"}}'
    r = post(client, f"[{good},{bad}]")
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["status"] for x in body["results"]] == ["accepted", "rejected"]
    assert body["results"][1]["key"] == "\ud800"  # echoed as the client's escape
    assert body["results"][1]["error"].startswith("key: not valid Unicode text")
    assert n_quarantined(store) == 1


def test_a_top_level_string_with_a_lone_surrogate_is_quarantined_not_a_500(api):
    """Was: 500 — the quarantine's insert of the item's text raised."""
    client, store = api
    r = post(client, f'"{LONE}"')
    assert r.status_code == 422 and "expected a JSON object" in r.json()["error"]
    ((reason, item),) = store.quarantined()
    assert json.loads(item) == "\ud800"


@pytest.mark.parametrize("where", ["value", "properties"])
def test_an_integer_over_the_parsers_digit_limit_is_a_400_not_a_500(api, where):
    """Was: 500 — json.loads raised ValueError (more than 4300 digits), not caught."""
    client, store = api
    number = "9" * 5000
    field = f'"value":{number}' if where == "value" else f'"properties":{{"n":{number}}}'
    r = post(client, f'{{"key":"k1","user_id":"u1","type":"purchase","ts":"{TS}",{field}}}')
    assert r.status_code == 400, r.text
    assert r.json()["detail"].startswith("malformed JSON: an integer of more than 4300 digits")
    assert n_quarantined(store) == 1


def test_put_user_says_why_a_body_could_not_be_parsed(api):
    """Was: 400 "There was an error parsing the body", which says neither what nor why."""
    client, _ = api
    r = post(client, b"\xad", "/users/u2", "PUT")
    assert r.status_code == 400 and "not UTF-8" in r.json()["detail"]
    r = post(client, '{"timezone":"UTC","traits":{"n":' + "9" * 5000 + "}}", "/users/u2", "PUT")
    assert r.status_code == 400 and "more than 4300 digits" in r.json()["detail"]


@pytest.mark.parametrize("body, field", [
    (f'{{"timezone":"{LONE}"}}', "timezone"),
    (f'{{"timezone":"UTC","traits":{{"a":"{LONE}"}}}}', "traits"),
    (f'{{"timezone":"UTC","addresses":{{"email":"{LONE}"}}}}', "addresses"),
])
def test_a_lone_surrogate_in_a_profile_is_refused_with_422(api, body, field):
    """Was: 500 for the timezone (FastAPI's 422 echoing the input could not be encoded); 200
    and stored for traits and addresses (an address no provider could send to)."""
    client, store = api
    r = post(client, body, "/users/u2", "PUT")
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", field]
    assert store.one("SELECT 1 FROM users WHERE user_id = 'u2'") is None


def _answer_schema(doc: dict[str, Any], op: dict[str, Any], code: int) -> dict[str, Any]:
    """The documented JSON schema of ``op``'s ``code`` answer, its $refs resolvable."""
    schema = op["responses"][str(code)]["content"]["application/json"]["schema"]
    return {**schema, "components": doc.get("components", {})}


@pytest.mark.parametrize("method, path", [("delete", "/users/{user_id}"),
                                          ("get", "/users/{user_id}/timeline"),
                                          ("put", "/users/{user_id}")])
def test_the_users_answers_match_the_document(api, method, path):
    """Was: 404 undocumented; the 422 of an invalid {user_id} (``{"detail": "text"}``) did
    not match the documented 422 (FastAPI's list of errors)."""
    import jsonschema  # installed with nbformat (papermill)

    client, _ = api
    doc = client.get("/openapi.json").json()
    op = doc["paths"][path][method]
    kw = {"json": {"timezone": "UTC"}} if method == "put" else {}
    r = client.request(method.upper(), path.format(user_id="u" * 201), headers=H, **kw)
    assert r.status_code == 422
    jsonschema.validate(r.json(), _answer_schema(doc, op, 422))
    if method != "put":
        r = client.request(method.upper(), path.format(user_id="nobody"), headers=H)
        assert r.status_code == 404
        jsonschema.validate(r.json(), _answer_schema(doc, op, 404))
    else:
        r = client.put(path.format(user_id="u2"), json={"timezone": "Nowhere/City"}, headers=H)
        assert r.status_code == 422
        jsonschema.validate(r.json(), _answer_schema(doc, op, 422))
        r = post(client, b"\xad", "/users/u2", "PUT")
        assert r.status_code == 400
        jsonschema.validate(r.json(), _answer_schema(doc, op, 400))


def test_the_id_pattern_refuses_the_blanks_the_api_refuses():
    """The pattern is read as ECMA 262 by OpenAPI clients and fuzzers, where ``\\s`` lacks
    U+001C..U+001F and U+0085 that ``str.strip`` removes: with ``\\s`` the document stated
    ``"\\x1e"`` a valid id (the fuzzer's example). Spelled out, the pattern means the same in
    ECMA 262 and Python, and agrees with :func:`id_error` on every blank character."""
    pattern = validation.NOT_BLANK_NO_NUL
    assert "\\s" not in pattern  # ECMA's \\s is not Python's
    for char in (c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace()):
        assert validation.id_error("key", char) is not None
        assert re.fullmatch(pattern, char) is None, repr(char)
        assert re.fullmatch(pattern, f"a{char}b")


def test_the_event_schema_accepts_the_nulls_the_api_takes_as_absent():
    """Was: the schema refused ``null`` where the API accepts it (as the field absent)."""
    import jsonschema  # installed with nbformat (papermill)

    item = {"key": "k1", "user_id": "u1", "type": "opened", "ts": TS, "channel": "email",
            "message_id": None, "value": None, "properties": {"campaign": None}}
    assert not isinstance(validation.parse_event(item, T0), str)
    jsonschema.validate(item, validation.EVENT_SCHEMA)
    item = {"key": "k1", "user_id": "u1", "type": "visit", "ts": TS, "channel": None}
    assert not isinstance(validation.parse_event(item, T0), str)
    jsonschema.validate(item, validation.EVENT_SCHEMA)
