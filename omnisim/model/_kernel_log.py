"""Compiled helpers that turn the compiled world loop's rows into the log's columns.

The loop (:mod:`omnisim.model._kernel_world`) writes rows of numbers: a time, codes into the
run's texts, a message number. These functions sort them by time into columns and build the
text columns' Arrow buffers (``large_string``: int64 offsets and UTF-8 bytes) directly, so
that a chunk of millions of rows becomes its log frame in a fraction of a second.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa

from omnisim._jit import njit

__all__ = ["sorted_columns", "text_array", "message_ids"]


@njit(nogil=True)
def _sort_gather(Lf: np.ndarray, Li: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows by time, stable: ``(t_us, F, I)`` — times in µs, float and int columns as rows of
    contiguous arrays. A counting sort by hour, then a stable sort within each hour (the
    rows of an hour are few), then one gather."""
    n = Lf.shape[0]
    t_us = np.empty(n, np.int64)
    hi = 0
    for i in range(n):
        t_us[i] = np.int64(np.rint(Lf[i, 0] * 3.6e9))
        hi = max(hi, t_us[i] // 3_600_000_000)
    count = np.zeros(hi + 2, np.int64)
    for i in range(n):
        count[t_us[i] // 3_600_000_000 + 1] += 1
    for b in range(1, hi + 2):
        count[b] += count[b - 1]
    order = np.empty(n, np.int64)
    fill = count[:-1].copy()
    for i in range(n):
        b = t_us[i] // 3_600_000_000
        order[fill[b]] = i
        fill[b] += 1
    for b in range(hi + 1):
        lo, up = count[b], count[b + 1]
        if up - lo > 1:
            seg = order[lo:up].copy()
            keys = t_us[seg]
            order[lo:up] = seg[np.argsort(keys, kind="mergesort")]
    F = np.empty((Lf.shape[1], n))
    I = np.empty((Li.shape[1], n), Li.dtype)  # noqa: E741
    t_sorted = np.empty(n, np.int64)
    for i in range(n):
        r = order[i]
        t_sorted[i] = t_us[r]
        for j in range(Lf.shape[1]):
            F[j, i] = Lf[r, j]
        for j in range(Li.shape[1]):
            I[j, i] = Li[r, j]
    return t_sorted, F, I


def sorted_columns(Lf: np.ndarray, Li: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows sorted by time (stable: rows of one instant keep their order): ``(t_us, F, I)``
    with ``t_us`` int64 microseconds since the start (as the log's ``ts``), ``F`` / ``I`` the
    float and int columns as rows of contiguous arrays. Times must be >= 0."""
    return _sort_gather(Lf, Li)


@njit(nogil=True)
def _text_buffers(codes: np.ndarray, v_off: np.ndarray, v_data: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Offsets, bytes, packed validity bitmap (LSB first) and null count of the texts."""
    n = codes.shape[0]
    off = np.empty(n + 1, np.int64)
    bitmap = np.zeros((n + 7) // 8, np.uint8)
    off[0] = 0
    nulls = 0
    for i in range(n):
        c = codes[i]
        if c >= 0:
            bitmap[i >> 3] |= np.uint8(1 << (i & 7))
            off[i + 1] = off[i] + v_off[c + 1] - v_off[c]
        else:
            nulls += 1
            off[i + 1] = off[i]
    data = np.empty(off[n], np.uint8)
    for i in range(n):
        c = codes[i]
        if c >= 0:
            a, o = v_off[c], off[i]
            for k in range(v_off[c + 1] - a):
                data[o + k] = v_data[a + k]
    return off, data, bitmap, nulls


@njit(nogil=True)
def _message_buffers(users: np.ndarray, msgs: np.ndarray, u_off: np.ndarray, u_data: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """``<user id>-m<msg>`` where ``msgs >= 0`` (null elsewhere), as :func:`_text_buffers`."""
    n = users.shape[0]
    off = np.empty(n + 1, np.int64)
    bitmap = np.zeros((n + 7) // 8, np.uint8)
    off[0] = 0
    nulls = 0
    for i in range(n):
        k = msgs[i]
        size = 0
        if k >= 0:
            bitmap[i >> 3] |= np.uint8(1 << (i & 7))
            digits, x = 1, k
            while x >= 10:
                x //= 10
                digits += 1
            size = u_off[users[i] + 1] - u_off[users[i]] + 2 + digits
        else:
            nulls += 1
        off[i + 1] = off[i] + size
    data = np.empty(off[n], np.uint8)
    for i in range(n):
        k = msgs[i]
        if k < 0:
            continue
        o, a, b = off[i], u_off[users[i]], u_off[users[i] + 1]
        for j in range(b - a):
            data[o + j] = u_data[a + j]
        o += b - a
        data[o] = 45  # "-"
        data[o + 1] = 109  # "m"
        end = off[i + 1]
        x = k
        while True:  # the digits, from the last
            end -= 1
            data[end] = 48 + x % 10
            x //= 10
            if x == 0:
                break
    return off, data, bitmap, nulls


def _vocab(values: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    encoded = [v.encode("utf-8") for v in values]
    off = np.zeros(len(encoded) + 1, np.int64)
    np.cumsum([len(e) for e in encoded], out=off[1:])
    data = np.frombuffer(b"".join(encoded), np.uint8) if encoded else np.zeros(0, np.uint8)
    return off, data


def _array(off: np.ndarray, data: np.ndarray, bitmap: np.ndarray, nulls: int) -> pa.Array:
    n = off.shape[0] - 1
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(off), pa.py_buffer(data),
                                            pa.py_buffer(bitmap) if nulls else None, nulls)


def text_array(codes: np.ndarray, values: Sequence[str]) -> pa.Array:
    """``values[code]`` per row (null where ``code < 0``) as an Arrow ``large_string`` array."""
    v_off, v_data = _vocab(values)
    return _array(*_text_buffers(codes, v_off, v_data))


def message_ids(users: np.ndarray, msgs: np.ndarray, user_ids: Sequence[str]) -> pa.Array:
    """``<user_ids[user]>-m<msg>`` per row (null where ``msg < 0``), ``large_string``."""
    u_off, u_data = _vocab(user_ids)
    return _array(*_message_buffers(users, msgs, u_off, u_data))
