"""Per-provider resilience: token-bucket rate limit, retry backoff, circuit breaker.

Time comes from an injected ``clock`` (seconds, monotonic) and waits go through an injected
``sleep`` (seconds), so tests run instantly and deterministically. A rate limit is either
this process's (:class:`TokenBucket`) or shared by every process on the sender's store
(:class:`SharedTokenBucket`, ``rate_scope: shared``, the default with a store).
"""

from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass
from typing import Callable, Literal

from omnisim.send.providers.base import RateStore

__all__ = ["Resilience", "TokenBucket", "SharedTokenBucket", "CircuitBreaker", "backoff_s",
           "capped_backoff_s", "RATE_SCOPES"]

log = logging.getLogger("omnisim.send.providers")

Clock = Callable[[], float]
Sleep = Callable[[float], None]
#: ``shared``: one bucket for every process on the sender's store; ``process``: per process.
RATE_SCOPES = ("shared", "process")


@dataclass(frozen=True)
class Resilience:
    """One provider's limits and retry settings (see ``docs/providers.md``).

    rate_per_s, burst : token bucket; ``rate_per_s=None`` means unlimited.
    rate_scope : ``shared`` (every process on the store takes from one bucket; per process
        when there is no store) or ``process``.
    timeout_s : socket timeout of one request.
    max_attempts : requests to this provider per message before failing over.
    backoff_base_s, backoff_max_s : full-jitter backoff, ``U(0, min(max, base * 2**k))``.
    retry_after_max_s : longest ``Retry-After`` honoured; a longer one fails over instead.
    failure_threshold : consecutive failures that open the circuit breaker.
    reset_after_s : time the breaker stays open before letting one probe through.
    """

    rate_per_s: float | None = None
    burst: float | None = None
    rate_scope: str = "shared"
    timeout_s: float = 10.0
    max_attempts: int = 3
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    retry_after_max_s: float = 60.0
    failure_threshold: int = 5
    reset_after_s: float = 30.0


def capped_backoff_s(retry: int, base_s: float, max_s: float) -> float:
    """Capped exponential delay before retry number ``retry`` (1 = first retry):
    ``min(max_s, base_s * 2**(retry - 1))``, in seconds."""
    return min(max_s, base_s * 2.0 ** (retry - 1))


def backoff_s(retry: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Full-jitter delay before retry number ``retry`` (1 = first retry), in seconds."""
    return rng.uniform(0.0, capped_backoff_s(retry, base_s, max_s))


class TokenBucket:
    """Rate limit of ``rate_per_s`` requests per second with bursts up to ``burst``.

    ``acquire`` reserves a token and sleeps for the debt, if any: one sleep, no polling, so
    it is bounded even with a fake clock. Thread-safe.
    """

    def __init__(self, rate_per_s: float, burst: float, clock: Clock, sleep: Sleep) -> None:
        self.rate_per_s, self.burst = rate_per_s, burst
        self._clock, self._sleep = clock, sleep
        self._tokens = burst
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, waiting if needed; returns the wait in seconds."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate_per_s)
            self._last = now
            self._tokens -= 1.0
            wait_s = -self._tokens / self.rate_per_s if self._tokens < 0 else 0.0
        if wait_s > 0:
            self._sleep(wait_s)
        return wait_s


class SharedTokenBucket:
    """:class:`TokenBucket` kept in the sender's store, so every process (workers, servers,
    hosts on one PostgreSQL) takes from the same bucket: ``rate_per_s`` is the provider's
    rate, not each process's. Each ``acquire`` is one atomic reservation in the store (GCRA,
    the same limits as :class:`TokenBucket`), then one sleep for the wait it returns.

    ``clock``: wall-clock seconds (comparable across processes; default ``time.time``)."""

    def __init__(self, rates: RateStore, key: str, rate_per_s: float, burst: float, clock: Clock,
                 sleep: Sleep) -> None:
        self.rate_per_s, self.burst = rate_per_s, burst
        self._rates, self._key = rates, key
        self._interval_s = 1.0 / rate_per_s
        self._tolerance_s = (burst - 1.0) * self._interval_s
        self._clock, self._sleep = clock, sleep

    def acquire(self) -> float:
        """Take one token, waiting if needed; returns the wait in seconds."""
        wait_s = self._rates.reserve_rate(self._key, self._interval_s, self._tolerance_s, self._clock())
        if wait_s > 0:
            self._sleep(wait_s)
        return wait_s


State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Opens after ``failure_threshold`` consecutive failures; after ``reset_after_s`` it lets
    one probe through (half-open): success closes it, failure opens it again. Thread-safe."""

    def __init__(self, name: str, failure_threshold: int, reset_after_s: float,
                 clock: Clock) -> None:
        self.name = name
        self.failure_threshold, self.reset_after_s = failure_threshold, reset_after_s
        self._clock = clock
        self._state: State = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self._lock = threading.Lock()

    @property
    def state(self) -> State:
        with self._lock:
            if self._state == "open" and self._clock() - self._opened_at >= self.reset_after_s:
                return "half_open"
            return self._state

    def retry_in_s(self) -> float:
        """Seconds until :meth:`allow` may let a request through again: what remains of
        ``reset_after_s`` while open, else 0."""
        with self._lock:
            if self._state != "open":
                return 0.0
            return max(0.0, self.reset_after_s - (self._clock() - self._opened_at))

    def allow(self) -> bool:
        """May a request go out now? In half-open state only one probe at a time."""
        with self._lock:
            if self._state == "closed":
                return True
            if self._state == "open":
                if self._clock() - self._opened_at < self.reset_after_s:
                    return False
                self._set("half_open")
            if self._probing:
                return False
            self._probing = True
            return True

    def success(self) -> None:
        with self._lock:
            self._failures, self._probing = 0, False
            if self._state != "closed":
                self._set("closed")

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            self._probing = False
            if self._state == "half_open" or self._failures >= self.failure_threshold:
                self._opened_at = self._clock()
                if self._state != "open":
                    self._set("open")

    def _set(self, state: State) -> None:
        log.info("provider %s: circuit %s -> %s", self.name, self._state, state)
        self._state = state
