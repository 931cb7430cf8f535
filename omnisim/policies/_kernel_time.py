"""Local time for the compiled (numba) kernels: per-zone UTC-offset tables and the local-clock
helpers the pressure rules and journeys need, exactly as :mod:`zoneinfo` and
:func:`omnisim.policies.base.local_hour` / :func:`~omnisim.policies.base.next_local_hour` /
``pressure._local_midnight`` compute them.

Time base (``/tmp/spec/kernels.md``, "Time"): every instant is float64 **hours since the
scenario start** ``start`` (tz-aware, possibly off the whole hour); the engines turn hours into
datetimes as ``start + timedelta(microseconds=round(h * 3.6e9))``. A zone is one row of the
table :func:`utc_offset_table` builds:

- ``tz_changes`` float64 (K,): instants [h since start] at which the zone's UTC offset
  changes, ascending, padded with ``+inf``;
- ``tz_offsets`` float64 (K + 1,): the offset [h] in force before the first change, after
  it, …, **plus the start's UTC clock hour** (``start`` minus its UTC midnight, hours).

``t + tz_offsets[k]`` (``k`` = number of changes ``<= t``) is then the local wall clock in
hours since the UTC midnight of the start's UTC date ("local abs"): its day index is the
local date relative to that UTC date.

Exactness: the helpers work in int64 **microseconds** (``round(h * 3.6e9)``, the engines'
grid; the table's entries are exact microsecond counts divided by ``3.6e9``), so their
comparisons and results are those of the Python datetimes, boundaries included, for any
instant on the microsecond grid within the table's range. ``local_hour`` truncates to the
second and adds ``hour + minute / 60 + second / 3600`` in that order, like ``base.local_hour``,
so the float is bit-identical. Outside the table's range the first / last offset is assumed.

Kernels call the ``*_us`` helpers (int64 µs in and out; inlined into the caller); the
hour-valued wrappers (:func:`local_hour`, :func:`next_local_hour` …) are for Python and tests.
``tests/test_kernel_time.py`` compares them with zoneinfo and the ``base`` functions.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone as dt_timezone
from typing import Sequence
from zoneinfo import ZoneInfo

import numpy as np

from omnisim._jit import njit

__all__ = ["utc_offset_table", "offset_at", "local_hour", "local_day", "local_midnight",
           "next_local_hour", "to_us", "offset_index_us", "offset_us", "local_abs_us",
           "local_hour_us", "local_day_us", "local_midnight_us", "next_local_hour_us",
           "US_PER_H", "US_PER_DAY", "I64_MAX", "minute_of_day"]

#: microseconds per hour / per day
US_PER_H = 3.6e9
US_PER_DAY = 86_400_000_000
#: "never" in µs (next_local_hour_us outside the table)
I64_MAX = np.iinfo(np.int64).max
_US = timedelta(microseconds=1)
_INF = math.inf


# -- the table (Python, once per run) ------------------------------------------------------

def _offset_s(zone: ZoneInfo, utc: datetime) -> int:
    """The UTC offset of ``zone`` at the UTC instant ``utc``, in whole seconds."""
    return int(utc.astimezone(zone).utcoffset().total_seconds())


def utc_offset_table(start: datetime, horizon_h: float, zone_names: Sequence[str],
                     margin_h: float = 192.0) -> tuple[np.ndarray, np.ndarray]:
    """Each zone's UTC-offset changes over ``[-margin_h, horizon_h + margin_h]`` hours after
    ``start`` (tz-aware), exact to the second.

    Returns ``(changes, offsets)``: ``changes`` float64 (Z, K) the instants [h after start]
    at which a zone's offset changes, ascending, padded with +inf; ``offsets`` float64
    (Z, K + 1) the offset [h] in force before the first change, after the first, …, plus the
    start's UTC clock hour (``start`` minus its UTC midnight). Offsets are sampled on a whole-
    second UTC grid every hour and each change is located by bisection on whole UTC seconds
    (tz changes happen on whole seconds), so entries are exact microsecond counts / 3.6e9.
    """
    if start.tzinfo is None:
        raise ValueError("utc_offset_table: start must be timezone-aware")
    start_utc = start.astimezone(dt_timezone.utc)
    midnight = start_utc.replace(hour=0, minute=0, second=0, microsecond=0)
    clock_us = (start_utc - midnight) // _US
    lo_dt = start_utc - timedelta(hours=margin_h)
    lo_dt = lo_dt.replace(microsecond=0)  # whole UTC seconds, at or before the range start
    n_hours = int(math.ceil(horizon_h + 2 * margin_h)) + 2
    grid = [lo_dt + timedelta(hours=k) for k in range(n_hours + 1)]
    sec = timedelta(seconds=1)

    per_zone: list[tuple[list[int], list[int]]] = []  # (change us since start, offsets in s)
    for name in zone_names:
        zone = ZoneInfo(name)
        offs = [_offset_s(zone, g) for g in grid]
        changes: list[int] = []
        values: list[int] = [offs[0]]
        for k in range(n_hours):
            if offs[k + 1] == offs[k]:
                continue
            lo, hi = 0, 3600  # seconds after grid[k]: offset(lo) is the old, offset(hi) the new
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if _offset_s(zone, grid[k] + mid * sec) == offs[k]:
                    lo = mid
                else:
                    hi = mid
            changes.append((grid[k] + hi * sec - start_utc) // _US)
            values.append(offs[k + 1])
        per_zone.append((changes, values))
    width = max((len(c) for c, _ in per_zone), default=0)
    out_changes = np.full((len(per_zone), width), _INF)
    out_offsets = np.zeros((len(per_zone), width + 1))
    for i, (c, v) in enumerate(per_zone):
        out_changes[i, :len(c)] = [x / US_PER_H for x in c]
        vals = [(s * 1_000_000 + clock_us) / US_PER_H for s in v]
        out_offsets[i, :] = vals[-1]
        out_offsets[i, :len(vals)] = vals
    return out_changes, out_offsets


# -- kernels (int64 microseconds) ------------------------------------------------------------

@njit(inline="always")
def to_us(h: float) -> np.int64:
    """Hours since start -> int64 microseconds since start, as the engines round."""
    return np.int64(np.rint(h * US_PER_H))


# The µs helpers are inlined (numba IR) into the kernels that call them and written without
# ``break`` / early ``return`` in loops: a kernel that makes no real call, allocates nothing
# and has such plain loops lets numba prune the reference counting of its array arguments
# (otherwise two atomic operations per array per call).

@njit(inline="always")
def offset_index_us(t_us: np.int64, tz_changes: np.ndarray) -> int:
    """The number of offset changes at or before ``t_us`` [µs since start]."""
    k = 0
    for j in range(tz_changes.shape[0]):
        c = tz_changes[j]
        if c < _INF and to_us(c) <= t_us:  # ascending: the count is the index
            k += 1
    return k


@njit(inline="always")
def offset_us(t_us: np.int64, tz_changes: np.ndarray, tz_offsets: np.ndarray) -> np.int64:
    """``tz_offsets[k]`` at ``t_us`` [µs since start] in µs (zone offset + start clock)."""
    return to_us(tz_offsets[offset_index_us(t_us, tz_changes)])


@njit(inline="always")
def local_abs_us(t_us: np.int64, tz_changes: np.ndarray, tz_offsets: np.ndarray) -> np.int64:
    """Local wall clock at ``t_us`` in µs since the UTC midnight of the start's UTC date."""
    return t_us + offset_us(t_us, tz_changes, tz_offsets)


@njit(inline="always")
def local_hour_us(t_us: np.int64, tz_changes: np.ndarray, tz_offsets: np.ndarray) -> float:
    """Local clock hour in [0, 24) at ``t_us`` [µs since start], as ``base.local_hour``
    computes it (whole seconds: ``hour + minute / 60 + second / 3600``)."""
    sec = local_abs_us(t_us, tz_changes, tz_offsets) // 1_000_000
    sod = sec % 86_400
    h = sod // 3600
    m = (sod % 3600) // 60
    s = sod % 60
    return h + m / 60.0 + s / 3600.0


@njit(inline="always")
def local_day_us(t_us: np.int64, tz_changes: np.ndarray, tz_offsets: np.ndarray) -> np.int64:
    """Local date at ``t_us`` [µs since start] as a day index relative to the start's UTC date."""
    return local_abs_us(t_us, tz_changes, tz_offsets) // US_PER_DAY


@njit(inline="always")
def _wall_index(w_us: np.int64, fold: int, tz_changes: np.ndarray, tz_offsets: np.ndarray) -> int:
    """Offset index zoneinfo uses for the local wall time ``w_us`` (local abs, µs) with
    ``fold``: change ``i`` is in force from wall ``change + max(old, new)`` (fold 0) or
    ``change + min(old, new)`` (fold 1) on (changes are months apart: those walls ascend)."""
    k = 0
    for j in range(tz_changes.shape[0]):
        c = tz_changes[j]
        if c < _INF:
            a = to_us(tz_offsets[j])
            b = to_us(tz_offsets[j + 1])
            edge = max(a, b) if fold == 0 else min(a, b)
            if w_us >= to_us(c) + edge:
                k += 1
    return k


@njit(inline="always")
def local_midnight_us(day: np.int64, tz_changes: np.ndarray, tz_offsets: np.ndarray) -> np.int64:
    """The UTC instant [µs since start] of local 00:00 on local ``day`` (index relative to
    the start's UTC date), as ``datetime(y, m, d, tzinfo=zone)`` (fold 0) converted to UTC:
    in a gap the offset before the change, in a repeated hour the first occurrence."""
    w = day * US_PER_DAY
    return w - to_us(tz_offsets[_wall_index(w, 0, tz_changes, tz_offsets)])


@njit(inline="always")
def next_local_hour_us(t_us: np.int64, minute_of_day: np.int64, tz_changes: np.ndarray,
                       tz_offsets: np.ndarray) -> np.int64:
    """The first instant ``>= t_us`` [µs since start] at which the local clock reads
    ``minute_of_day`` (0 .. 1439), as ``base.next_local_hour`` finds it: in a spring-forward
    gap the change instant, in a fall-back repeat the first occurrence ``>= t_us``. Returns
    the int64 maximum when none is found within three local days (outside the table)."""
    d0 = local_day_us(t_us, tz_changes, tz_offsets)
    res = I64_MAX
    for days in range(3):
        if res == I64_MAX:
            w = (d0 + days) * US_PER_DAY + minute_of_day * 60_000_000
            k0 = _wall_index(w, 0, tz_changes, tz_offsets)
            k1 = _wall_index(w, 1, tz_changes, tz_offsets)
            before = to_us(tz_offsets[k0])
            later = to_us(tz_offsets[k1])
            if before < later:  # a skipped local time: the change that opened the gap
                cand = to_us(tz_changes[k1 - 1])
                if cand >= t_us:
                    res = cand
            elif w - before >= t_us:
                res = w - before
            elif w - later >= t_us:
                res = w - later
    return res


@njit(inline="always")
def minute_of_day(hour: float) -> np.int64:
    """``divmod(round(hour * 60), 60)`` with the hour taken mod 24, as minutes (0 .. 1439)."""
    mins = np.int64(np.rint(hour * 60.0))
    h = mins // 60
    m = mins % 60
    return (h % 24) * 60 + m


# -- hour-valued wrappers ----------------------------------------------------------------------

@njit()
def offset_at(t: float, tz_changes: np.ndarray, tz_offsets: np.ndarray) -> float:
    """``tz_offsets[k]`` [h] in force at ``t`` [h since start] (zone offset + start clock)."""
    return tz_offsets[offset_index_us(to_us(t), tz_changes)]


@njit()
def local_hour(t: float, tz_changes: np.ndarray, tz_offsets: np.ndarray) -> float:
    """Local clock hour in [0, 24) at ``t`` [h since start], bit-identical to
    ``base.local_hour`` on the engine's datetime."""
    return local_hour_us(to_us(t), tz_changes, tz_offsets)


@njit()
def local_day(t: float, tz_changes: np.ndarray, tz_offsets: np.ndarray) -> np.int64:
    """Local date at ``t`` [h since start]: day index relative to the start's UTC date."""
    return local_day_us(to_us(t), tz_changes, tz_offsets)


@njit()
def local_midnight(day: np.int64, tz_changes: np.ndarray, tz_offsets: np.ndarray) -> float:
    """Hours since start of local 00:00 on local ``day`` (relative to the start's UTC date),
    as ``pressure._local_midnight``."""
    return local_midnight_us(day, tz_changes, tz_offsets) / US_PER_H


@njit()
def next_local_hour(t: float, hour: float, tz_changes: np.ndarray, tz_offsets: np.ndarray) -> float:
    """``base.next_local_hour`` in hours since start: the first instant ``>= t`` [h] at which
    the local clock reads ``hour`` (fractional, rounded to the minute; 24:00 is 00:00). +inf
    when outside the table."""
    r = next_local_hour_us(to_us(t), minute_of_day(hour), tz_changes, tz_offsets)
    if r == I64_MAX:
        return np.inf
    return r / US_PER_H
