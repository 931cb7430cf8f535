"""Keep freed memory in the process while simulating large chunks (glibc only).

A chunk's log is a few hundred MB of arrays built, sorted, turned into columns and written
as Parquet, then freed; the next chunk allocates as much again. glibc returns such large
blocks to the operating system at once (they are mmap'ed), so every chunk pays the kernel's
first touch of fresh pages again — about a fifth of a chunk's time on the compiled path
(BENCHMARKS.md, "Engines"). Raising glibc's mmap and trim thresholds makes freed blocks
stay in the process for the next chunk to reuse: the forked chunk workers (dedicated
processes that exit with the run) keep this setting; a run in the calling process restores
the thresholds and hands the memory back when it ends (``malloc_trim``). Elsewhere (macOS,
musl, Windows) nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from contextlib import contextmanager
from typing import Any, Iterator

__all__ = ["retain_freed_memory", "freed_memory_retained"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_RETAIN = (1 << 30, 1 << 30)        # bytes: blocks up to 1 GiB from the heap, trim above 1 GiB free
_DEFAULT = (128 * 1024, 128 * 1024)  # glibc's initial values
_applied = False


def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None
    return libc


def _set(libc: Any, mmap_threshold: int, trim_threshold: int) -> bool:
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
                and libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold))


def retain_freed_memory() -> bool:
    """Keep freed large blocks in this process from now on (once per process); for
    dedicated worker processes. Returns whether the setting applies here."""
    global _applied
    libc = _libc()
    if libc is None:
        return False
    if not _applied:
        _applied = _set(libc, *_RETAIN)
    return _applied


@contextmanager
def freed_memory_retained() -> Iterator[None]:
    """Within the block, freed large blocks stay in the process; after it, glibc's default
    thresholds again and the retained memory handed back (``malloc_trim(0)``)."""
    libc = _libc()
    if libc is None or _applied or not _set(libc, *_RETAIN):
        yield
        return
    try:
        yield
    finally:
        _set(libc, *_DEFAULT)
        libc.malloc_trim(0)
