"""Checking inbound event JSON item by item: an :class:`Event`, or a precise error message."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any

from omnisim.send.service import CALLBACK_EVENTS, EVENT_TYPES, Event

FIELDS = ("key", "user_id", "type", "ts", "channel", "message_id", "value", "properties")
CHANNELS = ("email", "sms", "push", "web", "none")
MAX_ID_CHARS = 200
#: How far ahead of the clock an event's ts may be (clock skew), seconds.
MAX_FUTURE_S = 300

#: JSON schema of one event, for the OpenAPI document.
EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["key", "user_id", "type", "ts"],
    "additionalProperties": False,
    "properties": {
        "key": {"type": "string", "maxLength": MAX_ID_CHARS,
                "description": "Idempotency key: the same key twice is processed once."},
        "user_id": {"type": "string", "maxLength": MAX_ID_CHARS},
        "type": {"type": "string", "enum": list(EVENT_TYPES)},
        "ts": {"type": "string", "format": "date-time",
               "description": "ISO 8601 with a timezone, e.g. 2024-03-01T09:30:00Z"},
        "channel": {"type": "string", "enum": list(CHANNELS)},
        "message_id": {"type": "string", "description": "The message a callback is about."},
        "value": {"type": "number", "minimum": 0, "description": "Revenue on purchase."},
        "properties": {"type": "object", "description": "Trigger payload for the policy."},
    },
}


def parse_event(item: Any, now: datetime) -> Event | str:
    """``item`` as an :class:`Event`, or the error message saying what is wrong."""
    if not isinstance(item, dict):
        return f"expected a JSON object, got {type(item).__name__}"
    extra = sorted(set(item) - set(FIELDS))
    if extra:
        return f"unknown field(s) {', '.join(map(repr, extra))}; allowed: {', '.join(FIELDS)}"
    for name in ("key", "user_id", "type", "ts"):
        if name not in item:
            return f"missing required field {name!r}"
    for name in ("key", "user_id"):
        v = item[name]
        if not isinstance(v, str) or not v.strip() or len(v) > MAX_ID_CHARS:
            return f"{name}: expected a non-empty string of at most {MAX_ID_CHARS} characters, got {v!r}"
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
    if mid is not None and (not isinstance(mid, str) or not mid):
        return f"message_id: expected a non-empty string, got {mid!r}"
    if kind in CALLBACK_EVENTS and mid is None and channel in (None, "web", "none"):
        return f"type {kind!r} is a message callback: give message_id (or the channel)"
    value = item.get("value")
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or not math.isfinite(value) or value < 0):
        return f"value: expected a finite number >= 0, got {value!r}"
    props = item.get("properties", {})
    if not isinstance(props, dict):
        return f"properties: expected a JSON object, got {type(props).__name__}"
    return Event(item["key"], item["user_id"], kind, ts, channel, mid,
                 float(value) if value is not None else None, props)


def _parse_ts(raw: Any) -> datetime | str:
    if not isinstance(raw, str):
        return f"ts: expected an ISO 8601 string, got {raw!r}"
    try:
        ts = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return f"ts: {raw!r} is not a timestamp; expected ISO 8601, e.g. '2024-03-01T09:30:00Z'"
    if ts.tzinfo is None:
        return f"ts: {raw!r} has no timezone; add Z or an offset, e.g. '2024-03-01T09:30:00Z'"
    return ts.astimezone(timezone.utc)
