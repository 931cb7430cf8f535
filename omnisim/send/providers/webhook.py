"""SMS and push (or any channel) over a JSON HTTP webhook, the shape of common gateways.

One request per attempt through ``http.client``; success is 2xx; 408, 429, 5xx, timeouts and
connection errors are retryable; other 4xx are permanent. The body is a template whose
``{placeholders}`` are filled from the message, JSON-escaped, in one pass (a value that
itself contains ``{address}`` is not expanded again).
"""

from __future__ import annotations

import email.utils
import http.client
import json
import re
import ssl
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Mapping

from omnisim.send.providers.base import Attempt, OutboundMessage

__all__ = ["WebhookProvider", "BodyTemplate", "FIELDS", "parse_retry_after"]

FIELDS = ("message_id", "idempotency_key", "user_id", "channel", "address", "subject", "body",
          "campaign", "template")
_PLACEHOLDER = re.compile(r"\{(meta\.[A-Za-z0-9_\-]+|[a-z_]+)\}")
RETRYABLE_STATUS = frozenset({408, 429})


class TemplateError(ValueError):
    """A template names an unknown field, or a message lacks a ``meta`` key it needs."""


def _lookup(msg: OutboundMessage, name: str) -> Any:
    if name.startswith("meta."):
        key = name[5:]
        if key not in msg.meta:
            raise TemplateError(f"message meta has no key {key!r} (needed by the body template)")
        return msg.meta[key]
    return getattr(msg, name)


def _as_text(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else json.dumps(value)


@dataclass(frozen=True)
class BodyTemplate:
    """A JSON body: a mapping/list whose strings hold placeholders, or a JSON text.

    In a structure, a string that is exactly one placeholder keeps the value's JSON type
    (``None`` -> ``null``); otherwise values are inserted as text. In a JSON text, values are
    JSON-escaped before insertion.
    """

    source: Any

    def __post_init__(self) -> None:
        for name in self.placeholders():
            if not (name in FIELDS or name.startswith("meta.")):
                raise TemplateError(f"unknown placeholder {{{name}}} (expected one of "
                                    f"{', '.join(FIELDS)}, or meta.KEY)")

    def placeholders(self) -> list[str]:
        found: list[str] = []

        def walk(node: Any) -> None:
            if isinstance(node, str):
                found.extend(_PLACEHOLDER.findall(node))
            elif isinstance(node, Mapping):
                for k, v in node.items():
                    walk(k)
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)
        walk(self.source)
        return found

    def render(self, msg: OutboundMessage) -> bytes:
        if isinstance(self.source, str):
            text = _PLACEHOLDER.sub(
                lambda m: json.dumps(_as_text(_lookup(msg, m.group(1))))[1:-1], self.source)
            return text.encode("utf-8")
        return json.dumps(self._fill(self.source, msg), ensure_ascii=False).encode("utf-8")

    def _fill(self, node: Any, msg: OutboundMessage) -> Any:
        if isinstance(node, str):
            whole = _PLACEHOLDER.fullmatch(node)
            if whole:
                return _lookup(msg, whole.group(1))
            return _PLACEHOLDER.sub(lambda m: _as_text(_lookup(msg, m.group(1))), node)
        if isinstance(node, Mapping):
            return {self._fill(k, msg): self._fill(v, msg) for k, v in node.items()}
        if isinstance(node, list):
            return [self._fill(v, msg) for v in node]
        return node


def parse_retry_after(value: str | None, now_s: float | None = None) -> float | None:
    """``Retry-After`` (delta-seconds or an HTTP date) in seconds from now, or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now_s is None else now_s))


@dataclass
class WebhookProvider:
    """POST (or ``method``) a rendered JSON body to ``url``.

    ``auth_value`` is the auth header's value, read from the environment at load time;
    ``response_id_field`` is a dotted path into a JSON response holding the provider's id.
    """

    name: str
    url: str
    body: BodyTemplate
    method: str = "POST"
    headers: Mapping[str, str] = field(default_factory=dict)
    auth_header: str | None = None
    auth_value: str | None = None
    response_id_field: str | None = "id"
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname or "", parts.port
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    def send(self, msg: OutboundMessage) -> Attempt:
        try:
            body = self.body.render(msg)
        except TemplateError as exc:
            return Attempt("permanent", error=str(exc))
        headers = {"Content-Type": "application/json; charset=utf-8",
                   "Idempotency-Key": msg.idempotency_key, **self.headers}
        if self.auth_header and self.auth_value is not None:
            headers[self.auth_header] = self.auth_value
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=self.timeout_s)
        try:
            conn.request(self.method, self._target, body=body, headers=headers)
            resp = conn.getresponse()
            text = resp.read().decode("utf-8", "replace")
            return self._classify(resp.status, resp.getheader("Retry-After"), text)
        except TimeoutError:
            return Attempt("retry", error=f"timed out after {self.timeout_s} s")
        except ssl.SSLError as exc:
            return Attempt("failover", error=f"TLS error: {exc}")
        except (OSError, http.client.HTTPException) as exc:
            return Attempt("retry", error=f"connection error: {type(exc).__name__}: {exc}")
        finally:
            conn.close()

    def _classify(self, status: int, retry_after: str | None, text: str) -> Attempt:
        response = f"{status} {text}".strip()
        if 200 <= status < 300:
            return Attempt("sent", response=response, provider_message_id=self._message_id(text))
        error = f"HTTP {status}: {text[:200]}".strip()
        if status in RETRYABLE_STATUS or status >= 500:
            after = parse_retry_after(retry_after) if status in (429, 503) else None
            return Attempt("retry", response=response, error=error, retry_after_s=after)
        return Attempt("permanent", response=response, error=error)

    def _message_id(self, text: str) -> str | None:
        if not self.response_id_field:
            return None
        try:
            node: Any = json.loads(text)
        except ValueError:
            return None
        for part in self.response_id_field.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return None
            node = node[part]
        return None if node is None else str(node)
