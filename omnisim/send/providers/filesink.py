"""A file sink for dry runs: one JSON line per message, appended; ``fsync`` optional.

The sink is idempotent by itself, across threads, processes and crashes: under an exclusive
``flock`` it reads the lines appended since it last looked, and does not write a message
whose idempotency key is already in the file. So a worker killed between writing a line and
recording the key in the store does not write the line twice when the send is retried.
POSIX only (``fcntl``).
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

from omnisim.send.providers.base import Attempt, OutboundMessage

__all__ = ["FileSink"]

_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()
_CHUNK = 1 << 20


def _lock_for(path: Path) -> threading.Lock:
    """One lock per file, so sinks of several channels can share a file line by line."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(path.resolve(), threading.Lock())


@dataclass
class FileSink:
    """Append each message as a JSON object (its fields plus ``ts`` UTC and ``provider``).

    Keeps the set of idempotency keys in the file in memory (one string per line).
    """

    name: str
    path: Path
    fsync: bool = False
    _lock: threading.Lock = field(init=False, repr=False, compare=False)
    _keys: set[str] = field(default_factory=set, init=False, repr=False, compare=False)
    _offset: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._lock = _lock_for(self.path)

    def send(self, msg: OutboundMessage) -> Attempt:
        record = {"ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                  "provider": self.name,
                  **{f.name: getattr(msg, f.name) for f in fields(msg)}, "meta": dict(msg.meta)}
        line = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        try:
            with self._lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    cut_short = self._catch_up(fd)
                    if msg.idempotency_key in self._keys:
                        return Attempt("sent", provider_message_id=msg.message_id,
                                       response=f"already in {self.path}; not written again")
                    os.write(fd, b"\n" + line if cut_short else line)
                    if self.fsync:
                        os.fsync(fd)
                    self._keys.add(msg.idempotency_key)
                finally:
                    os.close(fd)  # releases the flock
        except OSError as exc:
            return Attempt("failover", error=f"cannot write {self.path}: {exc.strerror or exc}")
        return Attempt("sent", response=f"written to {self.path}",
                       provider_message_id=msg.message_id)

    def _catch_up(self, fd: int) -> bool:
        """Read the complete lines appended since ``_offset`` and remember their keys.

        Returns True when the file ends in a line cut short (a crash mid-write).
        """
        os.lseek(fd, self._offset, os.SEEK_SET)
        tail = b""
        while chunk := os.read(fd, _CHUNK):
            lines = (tail + chunk).split(b"\n")
            tail = lines.pop()
            for raw in lines:
                self._offset += len(raw) + 1
                try:
                    key = json.loads(raw).get("idempotency_key")
                except (ValueError, AttributeError):
                    continue  # not ours, or a line cut short by a crash
                if isinstance(key, str):
                    self._keys.add(key)
        return bool(tail)
