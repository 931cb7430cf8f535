"""Checking inbound event JSON item by item: an :class:`Event`, or a precise error message."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from typing import Any

from omnisim.send.service import CALLBACK_EVENTS, EVENT_TYPES, Event

FIELDS = ("key", "user_id", "type", "ts", "channel", "message_id", "value", "properties")
CHANNELS = ("email", "sms", "push", "web", "none")
MAX_ID_CHARS = 200
#: Longest ``message_id``: the sender names its messages ``{user_id}-m{n}``.
MAX_MESSAGE_ID_CHARS = MAX_ID_CHARS + 40
#: Longest address per channel (``PUT /users/{id}``): an email address (RFC 5321: a 64-octet
#: local part, ``@`` and a 255-octet domain), a phone number (E.164 has at most 15 digits;
#: room for ``+``, spaces and dashes), a push token (FCM/APNs tokens, or a Web Push URL).
MAX_ADDRESS_CHARS = {"email": 320, "sms": 32, "push": 4096}
#: Largest ``properties`` of an event: bytes of its compact JSON (UTF-8).
MAX_PROPERTIES_BYTES = 16_384
#: How far ahead of the clock an event's ts may be (clock skew), seconds.
MAX_FUTURE_S = 300
#: The earliest ts accepted (the store counts µs from it; earlier is a client bug).
MIN_TS = datetime(1970, 1, 1, tzinfo=timezone.utc)

#: JSON-schema patterns (ECMA 262, also Python ``re``): no NUL; and not blank either.
#: "Blank" is what :meth:`str.strip` removes (:func:`id_error`), spelled out: ECMA's ``\s``
#: is another set (it lacks U+001C..U+001F and U+0085, which Python strips, and has U+FEFF),
#: so a pattern with ``\s`` stated ids valid that the API refuses.
WHITESPACE = (r"\t-\r\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f"
              r"\u205f\u3000")
NO_NUL = r"^[^\u0000]*$"
NOT_BLANK_NO_NUL = rf"^[^\u0000]*[^{WHITESPACE}\u0000][^\u0000]*$"
_ID_RULE = f"a non-blank string of at most {MAX_ID_CHARS} characters, without NUL (\\u0000)"

#: JSON schema of one event, for the OpenAPI document. Its limits are the constants above,
#: which :func:`parse_event` enforces (``tests/send/test_sender_openapi_limits.py`` checks both).
EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["key", "user_id", "type", "ts"],
    "additionalProperties": False,
    "properties": {
        "key": {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS,
                "pattern": NOT_BLANK_NO_NUL,
                "description": f"Idempotency key: the same key twice is processed once; {_ID_RULE}."},
        "user_id": {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS,
                    "pattern": NOT_BLANK_NO_NUL,
                    "description": f"The customer (created first with PUT /users/{{id}}); {_ID_RULE}."},
        "type": {"type": "string", "enum": list(EVENT_TYPES)},
        "ts": {"type": "string", "format": "date-time",
               "description": (f"ISO 8601 with a timezone, e.g. 2024-03-01T09:30:00Z; not before "
                               f"{MIN_TS:%Y-%m-%dT%H:%M:%SZ} and at most {MAX_FUTURE_S} s ahead of "
                               "the server's clock.")},
        "channel": {"type": ["string", "null"], "enum": [*CHANNELS, None],
                    "description": "The channel (null: none given, as when absent)."},
        "message_id": {"type": ["string", "null"], "minLength": 1, "maxLength": MAX_MESSAGE_ID_CHARS,
                       "pattern": NO_NUL,
                       "description": ("The message a callback is about (one sent to this user); a "
                                       f"non-empty string of at most {MAX_MESSAGE_ID_CHARS} "
                                       "characters, without NUL (\\u0000); null: none "
                                       "given, as when absent.")},
        "value": {"type": ["number", "null"], "minimum": 0,
                  "description": "Revenue on purchase; finite, >= 0 (null: none, as when absent)."},
        "properties": {"type": "object", "x-max-json-bytes": MAX_PROPERTIES_BYTES,
                       "description": (f"Trigger payload for the policy; at most "
                                       f"{MAX_PROPERTIES_BYTES} bytes as compact JSON (UTF-8)."),
                       "properties": {"campaign": {
                           "type": ["string", "null"], "pattern": NO_NUL,
                           "description": ("A callback's campaign when its message is unknown; "
                                           "without NUL (\\u0000); null: none.")}}},
    },
}


def parse_event(item: Any, now: datetime) -> Event | str:
    """``item`` as an :class:`Event`, or the error message saying what is wrong."""
    if not isinstance(item, dict):
        return f"expected a JSON object, got {type(item).__name__}"
    if (error := unicode_error(item)) is not None:
        return error
    extra = sorted(set(item) - set(FIELDS))
    if extra:
        return f"unknown field(s) {', '.join(map(repr, extra))}; allowed: {', '.join(FIELDS)}"
    for name in ("key", "user_id", "type", "ts"):
        if name not in item:
            return f"missing required field {name!r}"
    for name in ("key", "user_id"):
        if (error := id_error(name, item[name])) is not None:
            return error
    kind = item["type"]
    if kind not in EVENT_TYPES:
        return f"type: unknown event type {kind!r}; expected one of {', '.join(EVENT_TYPES)}"
    ts = _parse_ts(item["ts"])
    if isinstance(ts, str):
        return ts
    if ts > now + timedelta(seconds=MAX_FUTURE_S):
        return (f"ts: {item['ts']!r} is in the future (server time {now.isoformat()}; at most "
                f"{MAX_FUTURE_S} s ahead allowed)")
    channel = item.get("channel")
    if channel is not None and channel not in CHANNELS:
        return f"channel: unknown channel {channel!r}; expected one of {', '.join(CHANNELS)}"
    mid = item.get("message_id")
    if mid is not None and (not isinstance(mid, str) or not mid or "\x00" in mid
                            or len(mid) > MAX_MESSAGE_ID_CHARS):
        return (f"message_id: expected a non-empty string without NUL, of at most "
                f"{MAX_MESSAGE_ID_CHARS} characters, got {_short(mid)}")
    if kind in CALLBACK_EVENTS and mid is None and channel in (None, "web", "none"):
        return f"type {kind!r} is a message callback: give message_id (or the channel)"
    value = item.get("value")
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or not _finite(value) or value < 0):
        return f"value: expected a finite number >= 0, got {_short(value)}"
    props = item.get("properties", {})
    if not isinstance(props, dict):
        return f"properties: expected a JSON object, got {type(props).__name__}"
    size = len(json.dumps(props, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))
    if size > MAX_PROPERTIES_BYTES:
        return (f"properties: {size} bytes as compact JSON exceeds the limit of "
                f"{MAX_PROPERTIES_BYTES} bytes; keep large data out of events")
    campaign = props.get("campaign")  # a callback's campaign when its message is unknown
    if campaign is not None and (not isinstance(campaign, str) or "\x00" in campaign):
        return f"properties.campaign: expected a string without NUL, got {_short(campaign)}"
    return Event(item["key"], item["user_id"], kind, ts, channel, mid,
                 float(value) if value is not None else None, props)


def id_error(name: str, value: Any) -> str | None:
    """Why ``value`` cannot be the id ``name`` (a key, a user id), or None when it can: a
    non-empty string of at most :data:`MAX_ID_CHARS` characters without NUL (which
    PostgreSQL text cannot hold)."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ID_CHARS or "\x00" in value:
        return (f"{name}: expected a non-empty string of at most {MAX_ID_CHARS} characters "
                f"without NUL, got {_short(value)}")
    return None


def unicode_error(value: Any, where: str = "") -> str | None:
    """Why ``value`` (a parsed JSON value) cannot be stored or answered, or None when it can:
    some string of it (a value or an object's key) holds a lone UTF-16 surrogate — which a
    ``\\uD800``-style JSON escape without its pair decodes to — and so is not Unicode text:
    UTF-8 (SQLite, PostgreSQL, the JSON answer) cannot encode it. The error names where."""
    stack: list[tuple[str, Any]] = [(where, value)]
    while stack:  # iterative: a body may nest as deep as the parser allows
        path, v = stack.pop()
        if isinstance(v, str):
            if not _encodable(v):
                return (f"{_cut(path)}: not valid Unicode text (a lone surrogate such as "
                        f"\\ud800, an unpaired \\uXXXX escape); expected UTF-8 text, got {_short(v)}")
        elif isinstance(v, dict):
            for k, x in v.items():
                if isinstance(k, str) and not _encodable(k):
                    return (f"{_cut(path)}: key {_short(k)} is not valid Unicode text (a "
                            "lone surrogate, an unpaired \\uXXXX escape); expected UTF-8 text")
                stack.append((f"{path}.{k}" if path else str(k), x))
        elif isinstance(v, list):
            stack.extend((f"{path}[{i}]", x) for i, x in enumerate(v))
    return None


def _cut(path: str) -> str:
    """A JSON path for an error message: 'value' for the whole, else at most 120 characters."""
    return "value" if not path else path if len(path) <= 120 else path[:117] + "..."


def _encodable(text: str) -> bool:
    """True when ``text`` is valid Unicode (encodes as UTF-8: no lone surrogate)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def address_error(channel: str, address: Any) -> str | None:
    """Why ``address`` cannot be a user's ``channel`` address (blank, holding a control
    character such as NUL or a line break — no provider takes one, and an SMTP header
    would be split by it — or longer than :data:`MAX_ADDRESS_CHARS` allows), or None when
    it can."""
    limit = MAX_ADDRESS_CHARS.get(channel)
    if limit is None or not isinstance(address, str):
        return None
    if not address.strip() or any(ord(ch) < 32 or ord(ch) == 127 for ch in address):
        return (f"addresses.{channel}: expected a non-blank address without control characters "
                f"(NUL, line breaks, tabs), got {_short(address)}")
    if len(address) > limit:
        return (f"addresses.{channel}: at most {limit} characters, got {len(address)} "
                f"({_short(address)})")
    return None


def _parse_ts(raw: Any) -> datetime | str:
    if not isinstance(raw, str):
        return f"ts: expected an ISO 8601 string, got {raw!r}"
    try:
        ts = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return f"ts: {raw!r} is not a timestamp; expected ISO 8601, e.g. '2024-03-01T09:30:00Z'"
    if ts.tzinfo is None:
        return f"ts: {raw!r} has no timezone; add Z or an offset, e.g. '2024-03-01T09:30:00Z'"
    try:
        ts = ts.astimezone(timezone.utc)
    except OverflowError:  # year 1 or 9999 shifted out of range by its offset
        return f"ts: {raw!r} is out of range in UTC; expected a time after {MIN_TS.isoformat()}"
    if ts < MIN_TS:
        return f"ts: {raw!r} is before {MIN_TS.isoformat()}; expected a real event time"
    return ts


def _finite(value: int | float) -> bool:
    """True for a finite number, False for inf/nan and integers too large for a float."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _short(value: Any) -> str:
    """``repr(value)`` cut to 80 characters for error messages."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
