"""Clocks the sender reads (policies never do): the system clock, or a manual one for tests.

The clock only says *when* durable work becomes eligible and stamps receipt times; the time
a decision is made at is the logical time of its trigger (the event's ``ts``, the timer's
due time), so the same events give the same decisions however late they are processed.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import Protocol

from omnisim.errors import OmnisimError


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    """Wall-clock UTC time."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)


class ManualClock:
    """A clock that moves only when told to (``set``); thread-safe."""

    def __init__(self, start: datetime):
        self._now = _aware(start)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, ts: datetime) -> None:
        with self._lock:
            self._now = _aware(ts)


def parse_clock(spec: str) -> Clock:
    """``system`` or a fixed ISO 8601 instant (``2030-01-01T00:00:00Z``, for replays/tests)."""
    if spec == "system":
        return SystemClock()
    try:
        return ManualClock(datetime.fromisoformat(spec.replace("Z", "+00:00")))
    except ValueError:
        raise OmnisimError(f"--clock {spec!r}: expected 'system' or an ISO 8601 instant "
                           "with a timezone, e.g. 2030-01-01T00:00:00Z") from None


def _aware(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        raise OmnisimError(f"clock time {ts.isoformat()} has no timezone; expected UTC")
    return ts.astimezone(timezone.utc)
