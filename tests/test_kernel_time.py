"""Differential tests: the numba local-time helpers (:mod:`omnisim.policies._kernel_time`)
against zoneinfo and :func:`omnisim.policies.base.local_hour` / ``next_local_hour`` /
``pressure._local_midnight``, on many instants in many zones (DST edges, half-hour and
45-minute zones, midnight changes, negative DST), with starts off the whole hour."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from omnisim.policies._kernel_time import (
    local_day, local_hour, local_midnight, next_local_hour, offset_at, utc_offset_table,
)
from omnisim.policies.base import local_hour as py_local_hour, next_local_hour as py_next_local_hour
from omnisim.policies.pressure import _local_midnight

UTC = timezone.utc
ZONES = ("UTC", "Europe/Paris", "America/New_York", "America/St_Johns", "Australia/Lord_Howe",
         "Asia/Kolkata", "America/Santiago", "Asia/Beirut", "America/Havana", "Pacific/Chatham",
         "Asia/Kathmandu", "Europe/Dublin", "Africa/Casablanca", "America/Asuncion",
         "Australia/Adelaide", "Europe/London")
#: starts near DST changes (US, EU, southern hemisphere, Chile, Lebanon), off the whole hour
STARTS = (
    datetime(2026, 3, 6, 13, 17, 23, 123456, tzinfo=UTC),
    datetime(2026, 3, 28, 22, 59, 59, tzinfo=UTC),
    datetime(2026, 4, 3, 5, 30, 0, 500000, tzinfo=UTC),
    datetime(2026, 9, 4, 0, 0, 1, tzinfo=UTC),
    datetime(2026, 10, 2, 11, 45, 0, tzinfo=ZoneInfo("Asia/Kolkata")),
    datetime(2026, 10, 23, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2026, 10, 30, 18, 0, 0, tzinfo=ZoneInfo("America/New_York")),
    datetime(2027, 1, 1, 0, 0, 0, tzinfo=UTC),
    datetime(2045, 3, 22, 7, 7, 7, tzinfo=UTC),  # zoneinfo's TZ-string rules, past the tables
    datetime(2045, 10, 24, 16, 40, 0, tzinfo=UTC),
)
HORIZON_H = 24 * 14.0
MARGIN_H = 192.0


def _dt(start: datetime, h: float) -> datetime:
    """The engines' datetime of ``h`` hours after ``start`` (UTC arithmetic)."""
    return start.astimezone(UTC) + timedelta(microseconds=round(h * 3.6e9))


def _us(start: datetime, dt: datetime) -> int:
    return (dt - start) // timedelta(microseconds=1)


def _instants(rng: np.random.Generator, changes: np.ndarray, n: int) -> list[float]:
    """Hours on a whole-second grid (some on the microsecond grid): random over the range
    the helpers may be asked about, plus seconds and hours around each change."""
    lo, hi = -MARGIN_H + 1, HORIZON_H + MARGIN_H - 73  # next_local_hour looks 3 days ahead
    secs = list(rng.integers(int(lo * 3600), int(hi * 3600), n))
    for c in changes[np.isfinite(changes)]:
        cs = int(round(c * 3600))
        secs += [cs + d for d in (-3601, -3600, -1800, -1, 0, 1, 59, 1800, 3599, 3600, 7200)]
        secs += list(cs + rng.integers(-86400 * 2, 86400 * 2, 8))
    out = [s / 3600.0 for s in secs if lo * 3600 <= s <= hi * 3600]
    out += [(s * 1_000_000 + int(rng.integers(0, 1_000_000))) / 3.6e9 for s in secs[:20]]
    return out


@pytest.mark.parametrize("start", STARTS, ids=lambda s: s.isoformat())
def test_time_helpers_match_zoneinfo(start: datetime) -> None:
    rng = np.random.default_rng(int(start.timestamp()) % 10_000)
    changes, offsets = utc_offset_table(start, HORIZON_H, ZONES, MARGIN_H)
    start_utc = start.astimezone(UTC)
    start_date = start_utc.date()
    clock = start_utc - start_utc.replace(hour=0, minute=0, second=0, microsecond=0)
    hours = (0.0, 8.0, 21.0, 23.999, 23.995, 2.5, 0.5, 1.0, 1.5, 2.0, 3.0, 23.0, 22.5,
             9.25, 12.0, 0.0083)
    checked = 0
    for z, name in enumerate(ZONES):
        zone = ZoneInfo(name)
        ch, off = changes[z], offsets[z]
        for t in _instants(rng, ch, 60):
            dt = _dt(start, t)
            # offset (zone offset + start clock), exact to the microsecond
            exp_off = (dt.astimezone(zone).utcoffset() + clock) // timedelta(microseconds=1)
            assert round(offset_at(t, ch, off) * 3.6e9) == exp_off, (name, t)
            # local hour: bit-identical floats
            assert local_hour(t, ch, off) == py_local_hour(dt, name), (name, dt)
            # local date
            day = local_day(t, ch, off)
            assert day == (dt.astimezone(zone).date() - start_date).days, (name, dt)
            # local midnight of that day and the next
            for d in (day - 6, day, day + 1):
                exp = _local_midnight(start_date + timedelta(days=int(d)), zone)
                if not -MARGIN_H < _us(start, exp) / 3.6e9 < HORIZON_H + MARGIN_H:
                    continue  # outside the table (callers look back at most 6 days from [0, horizon])
                got = local_midnight(d, ch, off)
                assert round(got * 3.6e9) == _us(start, exp), (name, dt, d)
            # next local hour
            for hour in (hours[int(rng.integers(len(hours)))], float(rng.uniform(0, 24)),
                         (dt.astimezone(zone) + timedelta(minutes=int(rng.integers(-90, 90)))).hour
                         + int(rng.integers(0, 4)) * 0.25):
                exp = py_next_local_hour(dt, name, hour)
                got = next_local_hour(t, hour, ch, off)
                assert round(got * 3.6e9) == _us(start, exp), (name, dt, hour)
            checked += 1
    assert checked > 1000


def test_table_shape_and_changes() -> None:
    """Changes are exact UTC seconds (start off the second), padded with +inf (UTC here);
    zones without changes give one offset."""
    start = datetime(2026, 3, 7, 13, 17, 23, 250000, tzinfo=UTC)
    changes, offsets = utc_offset_table(start, 24 * 30, ("UTC", "America/New_York", "Europe/Paris"))
    assert changes.shape == (3, 1) and offsets.shape == (3, 2)
    assert np.isinf(changes[0]).all()
    ny = start + timedelta(microseconds=round(changes[1, 0] * 3.6e9))
    assert ny == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)  # 02:00 EST
    paris = start + timedelta(microseconds=round(changes[2, 0] * 3.6e9))
    assert paris == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    clock_h = (13 * 3600 + 17 * 60 + 23.25) / 3600
    assert offsets[1, 0] == pytest.approx(-5 + clock_h) and offsets[1, 1] == pytest.approx(-4 + clock_h)
    none_c, none = utc_offset_table(start, 24, ("Asia/Tokyo",))
    assert none_c.shape == (1, 0) and none.shape == (1, 1) and none[0, 0] == pytest.approx(9 + clock_h)


def test_negative_check_detects_a_wrong_table() -> None:
    """The comparison above would fail on a table one second off."""
    start = STARTS[0]
    changes, offsets = utc_offset_table(start, HORIZON_H, ("America/New_York",), MARGIN_H)
    bad = changes.copy()
    bad[0, 0] += 1 / 3600
    t = float(changes[0, 0])  # the change instant itself
    dt = _dt(start, t)
    assert local_hour(t, changes[0], offsets[0]) == py_local_hour(dt, "America/New_York")
    assert local_hour(t, bad[0], offsets[0]) != py_local_hour(dt, "America/New_York")


def test_next_local_hour_in_gaps_and_repeats() -> None:
    """Every zone change in the table: local hours around its wall time (in the skipped or
    repeated hour, at its edges), asked from a day, a second and zero before the change."""
    start = STARTS[1]
    changes, offsets = utc_offset_table(start, 24 * 200, ZONES, MARGIN_H)
    n = 0
    for z, name in enumerate(ZONES):
        zone = ZoneInfo(name)
        for c in changes[z][np.isfinite(changes[z])]:
            if c > 24 * 200 - 80:
                continue
            at = _dt(start, c)
            for ask in (c - 20.0, c - 1 / 3600, c, c + 0.25):
                dt = _dt(start, ask)
                for before_after in (-1, 1):
                    wall = (at + timedelta(seconds=before_after)).astimezone(zone)
                    base_h = wall.hour + wall.minute / 60
                    for dq in range(-8, 9):
                        hour = (base_h + dq * 0.25) % 24
                        exp = py_next_local_hour(dt, name, hour)
                        got = next_local_hour(ask, hour, changes[z], offsets[z])
                        assert round(got * 3.6e9) == _us(start, exp), (name, dt, hour)
                        n += 1
    assert n > 1000


def test_every_local_midnight() -> None:
    """Local 00:00 of every day of a 200-day table in every zone (midnight gaps in
    America/Santiago, Asia/Beirut, America/Havana, America/Asuncion included)."""
    start = STARTS[1]
    changes, offsets = utc_offset_table(start, 24 * 200, ZONES, MARGIN_H)
    start_date = start.astimezone(UTC).date()
    for z, name in enumerate(ZONES):
        zone = ZoneInfo(name)
        for d in range(-6, 200):
            exp = _local_midnight(start_date + timedelta(days=d), zone)
            assert round(local_midnight(d, changes[z], offsets[z]) * 3.6e9) == _us(start, exp), (name, d)
