"""``ProviderSet``: per channel, an ordered list of providers (primary, then failover), each
behind its own rate limit, retries with full-jitter backoff, and circuit breaker.

``deliver`` is blocking and bounded: at most the sum of the providers' ``max_attempts``
requests, each bounded by its ``timeout_s``, with waits capped by ``backoff_max_s`` and
``retry_after_max_s``.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

from omnisim.policies import _spec
from omnisim.send.providers.base import (
    Attempt, DeliveryResult, MemorySentKeys, OutboundMessage, Provider, ProviderConfigError,
    RateStore, SentKeys,
)
from omnisim.send.providers.config import ProviderSpec, parse_providers
from omnisim.send.providers.resilience import (
    CircuitBreaker, Clock, Resilience, SharedTokenBucket, Sleep, TokenBucket, backoff_s,
)

__all__ = ["ProviderSet"]

log = logging.getLogger("omnisim.send.providers")


@dataclass
class _Guarded:
    """A provider with its resilience state."""

    provider: Provider
    resilience: Resilience
    breaker: CircuitBreaker
    bucket: TokenBucket | SharedTokenBucket | None


@dataclass
class _Run:
    """Bookkeeping of one ``deliver`` call across providers."""

    attempts: int = 0
    provider: str | None = None
    last: Attempt | None = None
    error: str | None = None

    def result(self, status: Literal["sent", "failed"], permanent: bool = False,
               retry_after_s: float | None = None) -> DeliveryResult:
        """The call's result; ``retry_after_s`` (seconds) marks a transient ``failed``."""
        last = self.last or Attempt("retry")
        return DeliveryResult(status=status, provider=self.provider, attempts=self.attempts,
                              provider_message_id=last.provider_message_id if status == "sent" else None,
                              response=last.response, error=None if status == "sent" else self.error,
                              permanent=permanent, transient=retry_after_s is not None,
                              retry_after_s=retry_after_s)


class ProviderSet:
    """Deliver ``OutboundMessage``s through the configured providers of their channel.

    ``sent_keys`` records accepted idempotency keys (default: in memory); a key already seen
    is not sent again by any provider, which is what makes SMTP and the file sink safe to
    retry after a crash. ``rates`` (the sender's store) holds the rate limits shared by every
    process on it (``rate_scope: shared``, the default; without ``rates`` every limit is this
    process's). ``clock`` (monotonic seconds), ``wall_clock`` (epoch seconds, for shared
    limits), ``sleep`` (seconds) and ``rng`` are injected so tests control time and jitter.
    """

    def __init__(self, specs: list[ProviderSpec], *, sent_keys: SentKeys | None = None,
                 rates: RateStore | None = None, clock: Clock = time.monotonic,
                 wall_clock: Clock = time.time, sleep: Sleep = time.sleep,
                 rng: random.Random | None = None) -> None:
        self.sent_keys: SentKeys = sent_keys if sent_keys is not None else MemorySentKeys()
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._chains: dict[str, list[_Guarded]] = {}
        for spec in specs:
            res = spec.resilience
            bucket: TokenBucket | SharedTokenBucket | None = None
            burst = res.burst or max(1.0, res.rate_per_s or 1.0)
            if res.rate_per_s is not None and rates is not None and res.rate_scope == "shared":
                bucket = SharedTokenBucket(rates, f"provider:{spec.provider.name}", res.rate_per_s,
                                           burst, wall_clock, sleep)
            elif res.rate_per_s is not None:
                bucket = TokenBucket(res.rate_per_s, burst, clock, sleep)
            breaker = CircuitBreaker(spec.provider.name, res.failure_threshold, res.reset_after_s, clock)
            self._chains.setdefault(spec.channel, []).append(_Guarded(spec.provider, res, breaker, bucket))

    @classmethod
    def from_yaml(cls, path: str | Path, **kwargs: Any) -> "ProviderSet":
        """Load a providers YAML file; relative file paths in it are relative to the file.
        Keyword arguments as for the constructor."""
        data, label = _spec.load_yaml(path, ProviderConfigError)
        return cls(parse_providers(data, label, Path(path).parent), **kwargs)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, base_dir: str | Path = ".",
                  **kwargs: Any) -> "ProviderSet":
        """Build from an already-parsed document (same format as the YAML file); keyword
        arguments as for the constructor."""
        return cls(parse_providers(data, "", Path(base_dir)), **kwargs)

    def channels(self) -> set[str]:
        return set(self._chains)

    def providers(self, channel: str) -> list[str]:
        """Provider names of ``channel`` in failover order."""
        return [g.provider.name for g in self._chains.get(channel, [])]

    def resilience(self, provider: str) -> Resilience:
        """The effective settings of ``provider`` (defaults merged with its own keys)."""
        for chain in self._chains.values():
            for g in chain:
                if g.provider.name == provider:
                    return g.resilience
        raise KeyError(provider)

    def breaker_states(self) -> dict[str, str]:
        """``{provider name: "closed" | "open" | "half_open"}``, for health and metrics."""
        return {g.provider.name: g.breaker.state for chain in self._chains.values() for g in chain}

    def deliver(self, msg: OutboundMessage) -> DeliveryResult:
        """Send ``msg`` once: retries, then failover, then ``failed`` with the last error
        (``transient`` when no provider refused the message itself: an outage)."""
        chain = self._chains.get(msg.channel)
        if not chain:
            return DeliveryResult("undeliverable", None, 0, None, "",
                                  f"no provider serves channel {msg.channel!r}")
        if not msg.address or not msg.address.strip():
            return DeliveryResult("undeliverable", None, 0, None, "",
                                  f"empty {msg.channel} address for user {msg.user_id}")
        if self.sent_keys.seen(msg.idempotency_key):
            return DeliveryResult("sent", None, 0, None,
                                  "duplicate: idempotency key already accepted; not sent again", None)
        run = _Run()
        for guarded in chain:
            outcome = self._try(guarded, msg, run)
            if outcome == "sent":
                self._mark(msg, guarded.provider.name, run)
                return run.result("sent")
            if outcome == "permanent":
                return run.result("failed", permanent=True)
        # an outage: worth trying again once some provider's breaker lets a request through
        return run.result("failed", retry_after_s=min(g.breaker.retry_in_s() for g in chain))

    def _mark(self, msg: OutboundMessage, provider: str, run: _Run) -> None:
        """Record the accepted key; a store error must not turn a sent message into a retry."""
        try:
            self.sent_keys.mark(msg.idempotency_key, provider,
                                run.last.provider_message_id if run.last else None)
        except Exception:  # noqa: BLE001 - logged; the message has left already
            log.exception("provider %s: sent %s but could not record key %s", provider,
                          msg.message_id, msg.idempotency_key)

    def _try(self, g: _Guarded, msg: OutboundMessage, run: _Run) -> str:
        """Up to ``max_attempts`` requests to one provider; returns the final outcome."""
        name, res = g.provider.name, g.resilience
        for attempt_no in range(1, res.max_attempts + 1):
            if not g.breaker.allow():
                if attempt_no == 1:
                    run.error = "; ".join(filter(None, [run.error, f"{name}: circuit open"]))
                log.info("provider %s: circuit open, failing over", name)
                return "failover"
            if g.bucket is not None:
                g.bucket.acquire()
            attempt = self._send(g.provider, msg)
            run.attempts += 1
            run.provider, run.last = name, attempt
            if attempt.outcome in ("sent", "permanent"):
                g.breaker.success()  # the provider answered; a refused message is not an outage
                run.error = None if attempt.outcome == "sent" else f"{name}: {attempt.error}"
                return attempt.outcome
            g.breaker.failure()
            run.error = f"{name}: {attempt.error}"
            log.warning("provider %s: attempt %d/%d for %s failed: %s", name, attempt_no,
                        res.max_attempts, msg.message_id, attempt.error)
            if attempt.outcome == "failover" or attempt_no == res.max_attempts:
                return "failover"
            delay = self._delay(attempt, attempt_no, res)
            if delay is None:
                run.error += f" (Retry-After {attempt.retry_after_s:g} s exceeds retry_after_max_s)"
                return "failover"
            self._sleep(delay)
        return "failover"

    @staticmethod
    def _send(provider: Provider, msg: OutboundMessage) -> Attempt:
        """``provider.send``; a bug in an adapter fails over instead of wedging the breaker."""
        try:
            return provider.send(msg)
        except Exception as exc:  # noqa: BLE001 - logged with its traceback
            log.exception("provider %s: unexpected error sending %s", provider.name, msg.message_id)
            return Attempt("failover", error=f"unexpected {type(exc).__name__}: {exc}")

    def _delay(self, attempt: Attempt, attempt_no: int, res: Resilience) -> float | None:
        """Seconds before the next attempt; None when the server asks for too long a wait."""
        if attempt.retry_after_s is not None:
            return attempt.retry_after_s if attempt.retry_after_s <= res.retry_after_max_s else None
        return backoff_s(attempt_no, res.backoff_base_s, res.backoff_max_s, self._rng)
