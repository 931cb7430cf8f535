"""The sender's HTTP API (FastAPI). Build it with :func:`create_app`; see ``docs/sender.md``.

Every route but ``/health`` needs an ``X-API-Key`` header holding a key created with
``omnisim send key create`` (stored hashed) or the ``OMNISIM_SEND_API_KEY`` environment
variable. ``POST /events`` validates item by item: rejected items are reported with their
index and reason and kept in the ``quarantine`` table; the valid ones are processed.
"""

from __future__ import annotations

import hmac
import json
import os
import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import Body, Depends, FastAPI, Header, HTTPException, Path, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from pydantic import BaseModel, Field, ValidationInfo, field_validator

from omnisim.errors import OmnisimError
from omnisim.send.metrics import Metrics
from omnisim.send.service import MESSAGE_CHANNELS, DecisionService, Event, Ingested, LoadedPolicy
from omnisim.send.validation import (EVENT_SCHEMA, MAX_ADDRESS_CHARS, MAX_ID_CHARS,
                                     NOT_BLANK_NO_NUL, address_error, id_error, parse_event,
                                     unicode_error)

#: Largest request body accepted, bytes, on every route but the policy upload; largest
#: batch, events (``create_app`` defaults).
MAX_BODY_BYTES = 1_048_576
MAX_BATCH = 1000
#: Largest body of ``POST /admin/policy``, bytes (``create_app(max_policy_bytes=…)``): an
#: artifact carries its fitted models' arrays (base64) and may well pass MAX_BODY_BYTES.
MAX_POLICY_BYTES = 64 * MAX_BODY_BYTES
POLICY_PATH = "/admin/policy"
#: The answer to a JSON body nested deeper than the parser's recursion limit (400).
TOO_DEEP = ("malformed JSON: nested too deeply (deeper than the parser's recursion limit, "
            "about 1,000 levels); flatten the structure")
#: FastAPI's answer to a body its JSON parser raised on (other than a JSON syntax error),
#: which :func:`create_app` replaces with :func:`malformed_json`'s reason.
_FASTAPI_PARSE_ERROR = "There was an error parsing the body"
#: Most log rows ``GET /users/{id}/timeline`` returns (its ``limit`` is clamped to 1..this).
MAX_TIMELINE_ROWS = 10_000
API_KEY_ENV = "OMNISIM_SEND_API_KEY"
#: The ``{user_id}`` of the /users routes, as the OpenAPI document states it: the rule of
#: event ids (:func:`omnisim.send.validation.id_error`, which the routes enforce with its
#: message, so the limits are stated here, not enforced twice).
USER_ID_PATH = Path(description=f"The user: a non-blank string of at most {MAX_ID_CHARS} "
                                "characters, without NUL (else 422).",
                    json_schema_extra={"minLength": 1, "maxLength": MAX_ID_CHARS,
                                       "pattern": NOT_BLANK_NO_NUL})
_CHANNEL_KEYS = {"propertyNames": {"enum": list(MESSAGE_CHANNELS)}}
_ADDRESSES = {**_CHANNEL_KEYS, "properties": {
    ch: {"type": "string", "maxLength": n, "description": f"At most {n} characters."}
    for ch, n in MAX_ADDRESS_CHARS.items()}}


#: OpenAPI answers of the /users and policy routes: ``{"detail": text}`` (ours), or FastAPI's
#: list of ``{loc, msg, type}`` for a body or parameter its validation refused.
_DETAIL_TEXT = {"type": "object", "required": ["detail"],
                "properties": {"detail": {"type": "string"}}}
_DETAIL_ANY = {"type": "object", "required": ["detail"], "properties": {"detail": {"anyOf": [
    {"type": "string"},
    {"type": "array", "items": {"type": "object", "required": ["loc", "msg", "type"], "properties": {
        "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
        "msg": {"type": "string"}, "type": {"type": "string"}}}}]}}}


def _answer(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


#: The answers of ``DELETE /users/{id}`` and ``GET /users/{id}/timeline``; with a body
#: (``PUT /users/{id}``, ``POST /admin/policy``) also 400.
ID_ANSWERS: dict[int | str, dict[str, Any]] = {
    404: _answer("Unknown user.", _DETAIL_TEXT),
    422: _answer("Invalid: the field and what was expected (an invalid {user_id} or policy as "
                 "text; a body or parameter FastAPI refused as its list of {loc, msg, type}).",
                 _DETAIL_ANY)}
BODY_ANSWERS: dict[int | str, dict[str, Any]] = {
    400: _answer("Malformed JSON (not UTF-8, a syntax error, a number over 4300 digits, nested "
                 "too deeply): the reason.", _DETAIL_TEXT),
    422: ID_ANSWERS[422]}


class UserIn(BaseModel):
    """A user's profile: IANA timezone, observable traits, addresses and consent per channel."""

    timezone: str = Field(examples=["Europe/Paris"])
    traits: dict[str, Any] = Field(default_factory=dict)
    addresses: dict[str, str] = Field(default_factory=dict, examples=[{"email": "a@example.com"}],
                                      json_schema_extra=_ADDRESSES)
    consent: dict[str, bool] = Field(default_factory=dict, examples=[{"email": True, "sms": False}],
                                     json_schema_extra=_CHANNEL_KEYS)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA timezone {v!r}; expected e.g. 'Europe/Paris'") from None
        return v

    @field_validator("addresses", "consent")
    @classmethod
    def _channels(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = sorted(set(v) - set(MESSAGE_CHANNELS))
        if bad:
            raise ValueError(f"unknown channel(s) {', '.join(bad)}; expected {', '.join(MESSAGE_CHANNELS)}")
        return v

    @field_validator("traits", "addresses", "consent")
    @classmethod
    def _unicode(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if (error := unicode_error(v, info.field_name or "")) is not None:
            raise ValueError(error)  # a lone surrogate: UTF-8 (the store) cannot hold it
        return v

    @field_validator("addresses")
    @classmethod
    def _address_lengths(cls, v: dict[str, str]) -> dict[str, str]:
        for channel, address in v.items():
            if (error := address_error(channel, address)) is not None:
                raise ValueError(error)
        return v


class SafeJSONResponse(JSONResponse):
    """A JSON answer that can echo any parsed input: a string holding a lone surrogate (an
    unpaired ``\\uD800`` escape, which UTF-8 cannot encode) is written back as that escape
    instead of failing the answer with a 500."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, allow_nan=False,
                              separators=(",", ":")).encode("ascii")


def malformed_json(exc: BaseException) -> str:
    """The 400 answer to a body :func:`json.loads` raised ``exc`` on."""
    if isinstance(exc, RecursionError):
        return TOO_DEEP
    if isinstance(exc, UnicodeDecodeError):
        return f"malformed JSON: the body is not UTF-8 text ({exc}); send UTF-8 JSON"
    if isinstance(exc, ValueError) and not isinstance(exc, json.JSONDecodeError) and "digits" in str(exc):
        return ("malformed JSON: an integer of more than 4300 digits (the parser's limit); "
                "send shorter numbers")
    return f"malformed JSON: {exc}"


class BodyLimit:
    """ASGI middleware: reads a request's body, up to the limit of its path, before the app
    does, and answers 413 as soon as the declared ``Content-Length`` or the bytes received
    pass it — so no client makes the sender hold more than the limit in memory, a chunked
    body without ``Content-Length`` included. Every route that reads a body is covered."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_policy_bytes: int,
                 max_batch: int) -> None:
        self.app = app
        self.max_body_bytes, self.max_policy_bytes = max_body_bytes, max_policy_bytes
        self.max_batch = max_batch

    def limit(self, path: str) -> tuple[int, str]:
        """The body limit of ``path``, bytes, and what a client over it should do."""
        if path == POLICY_PATH:
            return self.max_policy_bytes, ("a larger artifact can be installed by restarting "
                                           "`omnisim send serve --policy FILE`")
        if path == "/events":
            return self.max_body_bytes, (f"send the events in smaller batches (at most "
                                         f"{self.max_batch} events a request)")
        return self.max_body_bytes, "send a smaller body"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, hint = self.limit(scope["path"])
        declared = Headers(scope=scope).get("content-length")
        size: int | None = int(declared) if declared and declared.isdigit() else None
        received: list[Message] = []
        if size is None or size <= limit:
            size, more = 0, True
            while more and (size <= limit):
                message = await receive()
                received.append(message)
                size += len(message.get("body", b""))
                more = message["type"] == "http.request" and message.get("more_body", False)
        if size > limit:
            what = f"{size} bytes" if declared else f"more than {limit} bytes (cut off there)"
            await _error(413, f"request body of {what} exceeds the limit of {limit} bytes for "
                              f"{scope['method']} {scope['path']}; {hint}")(scope, receive, send)
            return

        async def replay() -> Message:
            return received.pop(0) if received else await receive()

        await self.app(scope, replay, send)


def create_app(service: DecisionService, *, metrics: Metrics | None = None,
               max_body_bytes: int = MAX_BODY_BYTES, max_batch: int = MAX_BATCH,
               max_policy_bytes: int = MAX_POLICY_BYTES) -> FastAPI:
    """The API over ``service`` (its store, policy and clock). Request bodies are limited to
    ``max_body_bytes`` (``max_policy_bytes`` for ``POST /admin/policy``) by :class:`BodyLimit`."""
    store = service.store
    metrics = metrics or Metrics(store.counts)
    service.observer.decision = lambda ch: metrics.decisions.labels(ch).inc()
    service.observer.latency = metrics.decision_latency.observe
    app = FastAPI(title="omnisim sender", version="1",
                  description="Events in, policy decisions, durable scheduled sends out.")
    app.state.service, app.state.metrics = service, metrics
    known_keys: set[str] = set()

    def api_key(x_api_key: str | None = Header(default=None)) -> None:
        if x_api_key:
            dev = os.environ.get(API_KEY_ENV)
            if dev and hmac.compare_digest(dev, x_api_key):
                return
            if x_api_key in known_keys or store.api_key_valid(x_api_key):
                known_keys.add(x_api_key)
                return
        raise HTTPException(401, "missing or invalid API key: send it in the X-API-Key header")

    auth = [Depends(api_key)]

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        # FastAPI's answer, but one that can echo an input holding a lone surrogate.
        return SafeJSONResponse({"detail": jsonable_encoder(exc.errors())}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400 and exc.detail == _FASTAPI_PARSE_ERROR and exc.__cause__:
            # FastAPI's parser failed past JSON syntax (not UTF-8, a 5000-digit number…):
            # say why, as POST /events does.
            return _error(400, malformed_json(exc.__cause__))
        return await http_exception_handler(request, exc)
    app.add_middleware(BodyLimit, max_body_bytes=max_body_bytes,
                       max_policy_bytes=max_policy_bytes, max_batch=max_batch)

    def limited_body(what: str, limit: int) -> dict[str, Any]:
        """The OpenAPI ``requestBody`` additions stating a route's body limit."""
        return {"x-max-body-bytes": limit,
                "description": f"{what}; the body at most {limit} bytes (else 413)."}

    def too_large_answer(limit: int) -> dict[int | str, dict[str, Any]]:
        return {413: {"description": f"Too large: a body has at most {limit} bytes."}}

    @app.middleware("http")
    async def _timing(request: Request, call_next: Any) -> Response:
        t0 = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        metrics.request_latency.labels(getattr(route, "path", "other")).observe(time.perf_counter() - t0)
        return response

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Liveness and readiness: the store answers; which policy runs. No key needed."""
        try:
            store.one("SELECT 1")
        except Exception as exc:  # noqa: BLE001 - report, do not crash the probe
            return JSONResponse({"status": "error", "error": str(exc)}, status_code=503)
        p = service.policy
        return {"status": "ok", "policy": p.name, "policy_version": p.version}

    @app.get("/metrics", dependencies=auth, response_class=PlainTextResponse)
    def metrics_text() -> Response:
        """Prometheus text format: events, decisions, sends, queue depths, latencies."""
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    too_large = (f"Too large: a body has at most {max_body_bytes} bytes, a batch at most "
                 f"{max_batch} events.")
    events_body = {
        "required": True, "x-max-body-bytes": max_body_bytes,
        "description": (f"One event (object) or a batch (array of 1 to {max_batch} events); the "
                        f"body at most {max_body_bytes} bytes (else 413)."),
        "content": {"application/json": {"schema": {"oneOf": [
            EVENT_SCHEMA,
            {"type": "array", "items": EVENT_SCHEMA, "minItems": 1, "maxItems": max_batch}]}}}}

    @app.post("/events", dependencies=auth, openapi_extra={"requestBody": events_body}, responses={
        200: {"description": "A duplicate event (its key was seen), or a batch of which some "
                             "item was processed: one result per item."},
        202: {"description": "A single event, accepted."},
        400: {"description": "Malformed JSON (kept in quarantine)."},
        404: {"description": "A single event of an unknown user (create it with PUT /users/{id})."},
        413: {"description": too_large},
        422: {"description": "An invalid single event (the field and what was expected), an "
                             "empty batch, or a batch none of whose items could be processed."},
        500: {"description": "A single event whose processing raised (quarantined; may be "
                             "sent again)."}})
    async def post_events(request: Request) -> JSONResponse:
        """One event (object) or a batch (array), each with an idempotency ``key``.

        Batch answer: 200 with one result per item (``accepted``, ``duplicate`` or
        ``rejected`` with ``error`` and ``code``) when any item was processed, 422 when none
        was. A single event: 202 accepted, 200 duplicate, else the item's ``code``: 4xx for a
        bad item, 500 when processing it raised (its user's events in the request are rolled
        back and quarantined; the rest of the batch is kept).
        """
        raw = await request.body()  # at most max_body_bytes (BodyLimit)
        now = service.clock.now()
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # ValueError: JSONDecodeError, UnicodeDecodeError,
            why = malformed_json(exc)  # and an integer over the parser's 4300 digits
            store.quarantine(why, raw.decode("utf-8", "replace"), now)
            metrics.events.labels("rejected").inc()
            return _error(400, why)
        single = not isinstance(data, list)
        items = [data] if single else data
        if not items:
            return _error(422, "empty batch: send one event object or a non-empty array")
        if len(items) > max_batch:
            return _error(413, f"batch of {len(items)} events exceeds the limit of {max_batch}")
        from starlette.concurrency import run_in_threadpool

        results = await run_in_threadpool(_ingest, items, now)
        if single:
            r = results[0]
            code = {"accepted": 202, "duplicate": 200}.get(r["status"], r.get("code", 422))
            return SafeJSONResponse(r, status_code=code)
        ok = any(r["status"] != "rejected" for r in results)
        body = {"accepted": sum(r["status"] == "accepted" for r in results),
                "duplicates": sum(r["status"] == "duplicate" for r in results),
                "rejected": sum(r["status"] == "rejected" for r in results), "results": results}
        return SafeJSONResponse(body, status_code=200 if ok else 422)

    def _ingest(items: list[Any], now: datetime) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        parsed = [parse_event(item, now) for item in items]
        users = store.known_users([e.user_id for e in parsed if not isinstance(e, str)])
        good = []
        for i, (item, e) in enumerate(zip(items, parsed)):
            key = item.get("key") if isinstance(item, dict) else None
            if not isinstance(e, str) and e.user_id not in users:
                e = f"unknown user {e.user_id!r}: create it first with PUT /users/{e.user_id}"
                results.append({"index": i, "key": key, "status": "rejected", "error": e, "code": 404})
            elif isinstance(e, str):
                results.append({"index": i, "key": key, "status": "rejected", "error": e, "code": 422})
            else:
                results.append({"index": i, "key": key, "status": "accepted"})
                good.append((i, e))
        for r, item in zip(results, items):
            if r["status"] == "rejected":
                store.quarantine(r["error"], _storable(item), now)
                metrics.events.labels("rejected").inc()
        if good:
            outcomes = service.ingest_results([e for _, e in good])
            for (i, e), outcome in zip(good, outcomes):
                status = outcome.status
                if status in ("unknown_user", "unknown_message", "failed"):
                    error, code = _rejection(e, outcome)
                    results[i].update(status="rejected", error=error, code=code)
                    store.quarantine(error, items[i], now)
                    status = "rejected"
                else:
                    results[i]["status"] = status
                metrics.events.labels(status).inc()
        return results

    def valid_id(user_id: str) -> None:
        """422 for a user id no event could name (empty, too long, a NUL)."""
        if (error := id_error("user_id", user_id)) is not None:
            raise HTTPException(422, error)

    @app.put("/users/{user_id}", dependencies=auth,
             responses={**BODY_ANSWERS, **too_large_answer(max_body_bytes)},
             openapi_extra={"requestBody": limited_body("A user's profile", max_body_bytes)})
    def put_user(user: UserIn, user_id: str = USER_ID_PATH) -> dict[str, Any]:
        """Create or replace a user's timezone, traits, addresses and consent."""
        valid_id(user_id)
        with store.transaction():
            store.upsert_user(user_id, user.timezone, user.traits, user.consent, user.addresses,
                              service.clock.now())
        return {"user_id": user_id, "status": "stored"}

    @app.delete("/users/{user_id}", dependencies=auth, responses=ID_ANSWERS)
    def delete_user(user_id: str = USER_ID_PATH) -> dict[str, Any]:
        """Erase a user: profile and pending work deleted; the log keeps a pseudonymous id."""
        valid_id(user_id)
        with store.transaction():
            if store.lock_user(user_id) is None:
                raise HTTPException(404, f"unknown user {user_id!r}")
            anon = store.erase_user(user_id)
        return {"user_id": user_id, "status": "erased", "pseudonym": anon}

    @app.get("/users/{user_id}/timeline", dependencies=auth, responses=ID_ANSWERS)
    def timeline(user_id: str = USER_ID_PATH, limit: int = Query(200, description=(
            f"Most log rows to return; clamped to 1 to {MAX_TIMELINE_ROWS}."))) -> dict[str, Any]:
        """The user's latest log rows (oldest first) and open timers."""
        valid_id(user_id)
        if store.one("SELECT 1 FROM users WHERE user_id = ?", (user_id,)) is None:
            raise HTTPException(404, f"unknown user {user_id!r}")
        rows = store.timeline(user_id, max(1, min(limit, MAX_TIMELINE_ROWS)))
        pending = store.query("SELECT kind, due_us FROM jobs WHERE user_id = ? AND state = "
                              "'pending' ORDER BY due_us", (user_id,))
        from omnisim.send.store import from_us

        return {"user_id": user_id, "events": rows,
                "scheduled": [{"kind": k, "due": from_us(d).isoformat()} for k, d in pending]}

    @app.post(POLICY_PATH, dependencies=auth,
              responses={**BODY_ANSWERS, **too_large_answer(max_policy_bytes)},
              openapi_extra={"requestBody": limited_body("A policy artifact (JSON)",
                                                         max_policy_bytes)})
    def swap_policy(artifact: dict[str, Any] = Body(..., description="A policy artifact (JSON)")) -> dict[str, Any]:
        """Verify an artifact and swap it in atomically; pending timers and messages stay."""
        try:
            new = LoadedPolicy.from_text(json.dumps(artifact))
        except OmnisimError as exc:
            raise HTTPException(422, str(exc).replace("cannot start with", "refused")) from None
        old = service.swap_policy(new)
        return {"status": "swapped", "old": {"name": old.name, "version": old.version},
                "new": {"name": new.name, "version": new.version}}

    return app


def _rejection(e: Event, outcome: Ingested) -> tuple[str, int]:
    """The error and per-item HTTP code of an event the service did not process."""
    if outcome.status == "unknown_user":
        return f"unknown user {e.user_id!r}: create it first with PUT /users/{e.user_id}", 404
    if outcome.status == "unknown_message":
        return (f"message_id: no message was sent as {e.message_id!r} to user {e.user_id!r}, so "
                f"the {e.type!r} callback's channel is unknown; give the channel (email, sms or "
                "push)", 422)
    return f"{outcome.error}; kept in quarantine, not stored: it may be sent again", 500


def _storable(item: Any) -> Any:
    """``item`` as :meth:`Store.quarantine` can keep it: a string item holding a lone
    surrogate (not UTF-8 text) as its JSON text, the surrogate escaped; else as is (parsed
    objects and arrays are stored as JSON, which escapes it)."""
    if isinstance(item, str) and unicode_error(item) is not None:
        return json.dumps(item)
    return item


def _error(code: int, message: str) -> JSONResponse:
    return SafeJSONResponse({"detail": message}, status_code=code)
