"""The data the worker hands to providers and gets back, and what one attempt returns.

``OutboundMessage`` / ``DeliveryResult`` / ``SentKeys`` are the contract with the worker and
the store; ``Attempt`` is internal: one request to one provider, classified so the resilience
layer knows whether to retry, fail over or stop.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Protocol

from omnisim.policies._spec import SpecError

__all__ = ["OutboundMessage", "DeliveryResult", "SentKeys", "MemorySentKeys", "Attempt",
           "Provider", "ProviderConfigError"]

RESPONSE_MAX_CHARS = 500  # provider responses are kept for the log, truncated to this


class ProviderConfigError(SpecError):
    """A providers YAML file is invalid; the message names the file and key path."""


@dataclass(frozen=True)
class OutboundMessage:
    """One message to send; ``idempotency_key`` is identical on every retry of the same send."""

    message_id: str
    idempotency_key: str
    user_id: str
    channel: str
    address: str
    subject: str | None
    body: str
    campaign: str | None
    template: str | None
    meta: Mapping[str, Any]


@dataclass(frozen=True)
class DeliveryResult:
    """What happened to one ``ProviderSet.deliver`` call.

    ``attempts`` counts attempts across failover (0 when nothing was tried: undeliverable,
    duplicate key, every circuit open);
    ``provider`` is the provider that accepted, or the last one tried; ``error`` is the last
    error when the status is not ``"sent"``; ``permanent`` is true for a ``failed`` that was
    a permanent refusal of the message itself (HTTP 4xx, SMTP 5xx), false for exhausted
    retries or open circuits (the worker falls back to another channel only on permanent
    failures and ``undeliverable``). ``transient`` is true for a ``failed`` because every
    provider of the channel exhausted its attempts or had its circuit open (an outage: the
    worker puts the message back in its queue and tries again later); ``retry_after_s`` is
    then the time until a provider's circuit breaker lets a request through again (0 when
    one would now), in seconds.
    """

    status: Literal["sent", "failed", "undeliverable"]
    provider: str | None
    attempts: int
    provider_message_id: str | None
    response: str
    error: str | None
    permanent: bool = False
    transient: bool = False
    retry_after_s: float | None = None


class SentKeys(Protocol):
    """Idempotency keys already accepted by a provider (implemented by the store)."""

    def seen(self, key: str) -> bool: ...

    def mark(self, key: str, provider: str, provider_message_id: str | None) -> None: ...


class RateStore(Protocol):
    """Rate-limit reservations shared by every process on one store (implemented by
    :class:`omnisim.send.store.Store`): a GCRA bucket per ``key``."""

    def reserve_rate(self, key: str, interval_s: float, tolerance_s: float, now_s: float) -> float:
        """Reserve one request at ``now_s`` (epoch seconds); returns the wait before it (s)."""
        ...


class MemorySentKeys:
    """``SentKeys`` in a dict, for tests and dry runs; thread-safe, lost at exit."""

    def __init__(self) -> None:
        self._keys: dict[str, tuple[str, str | None]] = {}
        self._lock = threading.Lock()

    def seen(self, key: str) -> bool:
        with self._lock:
            return key in self._keys

    def mark(self, key: str, provider: str, provider_message_id: str | None) -> None:
        with self._lock:
            self._keys.setdefault(key, (provider, provider_message_id))

    def get(self, key: str) -> tuple[str, str | None] | None:
        """``(provider, provider_message_id)`` that accepted ``key``, if any."""
        with self._lock:
            return self._keys.get(key)

    def __len__(self) -> int:
        with self._lock:
            return len(self._keys)


Outcome = Literal["sent", "retry", "permanent", "failover"]


@dataclass(frozen=True)
class Attempt:
    """One request's outcome.

    ``retry``: transient (5xx, 408, 429, timeout, connection error) — try again after a backoff;
    ``permanent``: the message itself was refused (4xx) — stop, no retry, no failover;
    ``failover``: this provider cannot work now (auth, TLS) — skip to the next provider.
    ``retry_after_s`` is the server's ``Retry-After`` in seconds, when it sent one.
    """

    outcome: Outcome
    response: str = ""
    error: str | None = None
    provider_message_id: str | None = None
    retry_after_s: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "response", self.response[:RESPONSE_MAX_CHARS])


class Provider(Protocol):
    """A channel adapter: one request per ``send``, never raises for delivery problems."""

    name: str

    def send(self, msg: OutboundMessage) -> Attempt: ...

