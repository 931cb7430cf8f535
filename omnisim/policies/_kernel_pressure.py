"""Compiled (numba) pressure-rule admission: :meth:`PressureRules.admit` for the compiled
engine loop, exactly equivalent to the Python class (which stays the specification,
:mod:`omnisim.policies.pressure`; ``tests/test_kernel_pressure.py`` shows the equivalence on
the default rules and on random rule sets using every feature).

Two parts (codes: :mod:`omnisim.policies._kernel_codes`; local time:
:mod:`omnisim.policies._kernel_time`):

- :func:`compile_rules` (Python, once per run) turns a :class:`PressureRules` into
  :class:`CompiledRules`, a named tuple of numpy arrays and scalars;
- :func:`admit_kernel` (``numba.njit``) admits one user's due pendings at ``now`` from that
  table, the user's history arrays, consent and zone row, writing per pending an action
  (0 send, 1 defer, 2 drop), the defer instant and the reason.

Time: every instant is float64 **hours since the scenario start**; the engines turn hours
into datetimes as ``start + timedelta(microseconds=round(h * 3.6e9))``. The kernel compares
instants on that microsecond grid (int64, ``round(h * 3.6e9)``) and adds durations as
``timedelta(hours=x)`` does (rounded to the microsecond, done once in :func:`compile_rules`),
so every comparison is the Python one on the engines' datetimes, boundaries included.

History: the first ``n_h`` rows of ``h_t`` (hours), ``h_ev`` (EV), ``h_ch`` (CH), ``h_camp``,
``h_tag`` (Strings codes), **oldest first** (non-decreasing ``h_t``), as ``Context.history``
is. It must hold at least the events the rules declare (``sent``; ``opened`` / ``clicked``
with adaptive caps or escalations; ``unsubscribed`` rows, or consent with unsubscribes folded
in). It is scanned once per call; a rolling cap that binds reads the one counted send that
must leave its window with a second, partial pass.

Speed: no Python objects, no heap allocation (the caller lends the scratch — 4 int64 per
cap, 1 + 2 per escalation per pending, :func:`scratch_size`), no reference counting
(compiled with ``_nrt=False``) and no real calls (the helpers are inlined); about 0.2–0.3 µs
per call for the default rules on a 20-row history, against ~20–40 µs for
:meth:`PressureRules.admit`.

Not supported: pendings whose ``expected_value`` is NaN (Python's sort order is then
implementation-defined); pending seq numbers of 10**18 or more in absolute value (the
``str(seq)`` comparison); rule sets of a :class:`PressureRules` *subclass*
(:func:`compile_rules` returns ``None``: its methods may differ from the specification).
"""

from __future__ import annotations

from datetime import timedelta
from typing import NamedTuple

import numpy as np

from omnisim._jit import njit

from omnisim.log import CHANNELS as LOG_CHANNELS
from omnisim.policies._kernel_codes import CH, CH_NONE, EV, Strings
from omnisim.policies._kernel_time import (
    local_day_us, local_hour_us, local_midnight_us, next_local_hour_us, to_us,
)
from omnisim.policies.pressure import PressureRules

__all__ = ["CompiledRules", "compile_rules", "admit_kernel", "scratch_size", "SEND", "DEFER", "DROP",
           "ANY_TAG", "UNKNOWN_CH", "ROLLING", "CAL_DAY", "CAL_WEEK", "CAP_KIND", "CAP_WIN_US",
           "CAP_CH", "CAP_TAG", "CAP_MAX", "CAP_MAX_ENGAGED", "CAP_REASON", "CAP_RANK",
           "N_CAP_COLS", "Q_START", "Q_END", "Q_MINUTE", "Q_DROP", "Q_MASK", "E_CH", "E_AFTER",
           "E_WAIT_US", "E_LOOK_US"]

#: out_action values
SEND, DEFER, DROP = 0, 1, 2
#: cap_tag value of a cap on any tag (Strings codes are >= -1)
ANY_TAG = -2
#: channel code of a rule channel outside omnisim.log.CHANNELS (matches no pending)
UNKNOWN_CH = -3
#: cap kinds
ROLLING, CAL_DAY, CAL_WEEK = 0, 1, 2

_SENT, _OPENED, _CLICKED, _UNSUB = EV["sent"], EV["opened"], EV["clicked"], EV["unsubscribed"]
_I64_MAX = np.iinfo(np.int64).max
_FAR_US = 2 ** 62  # a duration beyond any datetime (timedelta overflow in Python)


#: columns of CompiledRules.caps (int64, one row per cap, in rule order)
CAP_KIND = 0         # ROLLING, CAL_DAY, CAL_WEEK
CAP_WIN_US = 1       # rolling window_h in µs (0 for calendar caps)
CAP_CH = 2           # CH code, -1 any channel
CAP_TAG = 3          # Strings code, ANY_TAG any tag
CAP_MAX = 4          # max
CAP_MAX_ENGAGED = 5  # the limit for engaged users (engaged_max, or max)
CAP_REASON = 6       # Strings code of Cap.reason ("cap:sms:7d")
CAP_RANK = 7         # rank of that reason in code-point order (max() ties on the instant)
N_CAP_COLS = 8
#: columns of CompiledRules.quiet_h (float64) and .quiet (int64), one row per rule
Q_START, Q_END = 0, 1        # start_h, end_h (local hours)
Q_MINUTE, Q_DROP, Q_MASK = 0, 1, 2  # end_h as minute of day (next_local_hour's rounding);
#                                     1 for action "drop"; bit set of the CH codes it applies to
#: columns of CompiledRules.esc (int64, one row per escalation)
E_CH, E_AFTER, E_WAIT_US, E_LOOK_US = 0, 1, 2, 3  # CH codes of channel / after; wait_h,
#                                                   lookback_h in µs


class CompiledRules(NamedTuple):
    """A :class:`PressureRules` as a few arrays and scalars (``C`` caps, ``Q`` quiet-hour
    rules, ``E`` escalations, ``T`` exempt tags), rule order kept; columns: ``CAP_*``,
    ``Q_*``, ``E_*``. Durations are int64 microseconds (``timedelta(hours=x)`` rounded as
    Python does); channels are CH codes (``-1``: any), tags / reasons Strings codes."""

    caps: np.ndarray            # int64 (C, N_CAP_COLS)
    quiet_h: np.ndarray         # float64 (Q, 2): Q_START, Q_END
    quiet: np.ndarray           # int64 (Q, 3): Q_MINUTE, Q_DROP, Q_MASK
    esc: np.ndarray             # int64 (E, 4): E_CH, E_AFTER, E_WAIT_US, E_LOOK_US
    exempt_tags: np.ndarray     # int64 (T,) Strings codes
    ch_rank: np.ndarray         # int64 (len(CH),) rank in channel_priority (len if absent)
    has_dedup: bool             # dedup_h is set
    dedup_us: int               # dedup_h in µs
    exempt_counts: bool
    max_defer_us: int           # max_defer_h in µs
    adaptive: bool              # some cap has engaged_max
    engaged_min: int            # engaged_min_interactions
    engaged_win_us: int         # engaged_window_h in µs
    # Strings codes of fixed reasons
    r_no_message: int
    r_no_consent: int
    r_quiet: int
    r_dedup: int
    r_priority: int
    r_expired: int


def _us(hours: float) -> int:
    """``timedelta(hours=hours)`` in whole microseconds (Python's rounding); durations
    Python could not represent (``OverflowError``) become 2**62 µs."""
    try:
        return timedelta(hours=hours) // timedelta(microseconds=1)
    except OverflowError:
        return _FAR_US if hours > 0 else -_FAR_US


def _ch(name: str | None) -> int:
    """CH code of a rule's channel name; -1 for None (any), UNKNOWN_CH outside the log's."""
    if name is None:
        return -1
    return CH.get(name, UNKNOWN_CH)


def compile_rules(rules: PressureRules, strings: Strings) -> CompiledRules | None:
    """``rules`` as a :class:`CompiledRules` table for :func:`admit_kernel`; interns the
    reasons and tags it needs in ``strings``. ``None`` for a :class:`PressureRules`
    subclass (its methods may not be the specification's); every feature of the class
    itself is supported."""
    if type(rules) is not PressureRules:
        return None
    caps = rules.caps
    i64 = lambda xs: np.array(list(xs), dtype=np.int64)  # noqa: E731
    reasons = [c.reason for c in caps]
    order = sorted(set(reasons))
    quiet = rules.quiet_hours
    all_mask = (1 << len(LOG_CHANNELS)) - 1

    def mask(channels: tuple[str, ...] | None) -> int:
        if channels is None:
            return all_mask
        return sum(1 << CH[c] for c in set(channels) if c in CH)

    def minute(hour: float) -> int:
        h, m = divmod(round(hour * 60), 60)
        return (h % 24) * 60 + m

    def table(rows: list[list], ncols: int, dtype: type) -> np.ndarray:
        return np.array(rows, dtype=dtype).reshape(len(rows), ncols)

    prio = rules.channel_priority
    return CompiledRules(
        caps=table([[ROLLING if c.window_h is not None else CAL_DAY if c.calendar == "day"
                     else CAL_WEEK,
                     _us(c.window_h) if c.window_h is not None else 0,
                     _ch(c.channel),
                     ANY_TAG if c.tag is None else strings.code(c.tag),
                     c.max, c.limit(True), strings.code(r), order.index(r)]
                    for c, r in zip(caps, reasons)], N_CAP_COLS, np.int64),
        quiet_h=table([[q.start_h, q.end_h] for q in quiet], 2, np.float64),
        quiet=table([[minute(q.end_h), q.action == "drop", mask(q.channels)] for q in quiet],
                    3, np.int64),
        esc=table([[_ch(e.channel), _ch(e.after), _us(e.wait_h), _us(e.lookback_h)]
                   for e in rules.escalations], 4, np.int64),
        exempt_tags=i64(strings.code(t) for t in rules.exempt_tags),
        ch_rank=i64(prio.index(c) if c in prio else len(prio) for c in LOG_CHANNELS),
        has_dedup=rules.dedup_h is not None,
        dedup_us=_us(rules.dedup_h) if rules.dedup_h is not None else 0,
        exempt_counts=bool(rules.exempt_counts),
        max_defer_us=_us(rules.max_defer_h),
        adaptive=bool(rules._adaptive_caps),
        engaged_min=int(rules.engaged_min_interactions),
        engaged_win_us=_us(rules.engaged_window_h),
        r_no_message=strings.code("no_message"),
        r_no_consent=strings.code("no_consent"),
        r_quiet=strings.code("quiet_hours"),
        r_dedup=strings.code("dedup"),
        r_priority=strings.code("priority"),
        r_expired=strings.code("expired"),
    )


# -- the kernel -------------------------------------------------------------------------------

def scratch_size(cr: CompiledRules, n_p: int) -> int:
    """The int64 scratch :func:`admit_kernel` needs for ``n_p`` pendings."""
    return 4 * cr.caps.shape[0] + n_p + 2 * n_p * cr.esc.shape[0]


@njit(inline="always")
def _is_exempt_tag(cr, tag):
    for k in range(cr.exempt_tags.shape[0]):
        if cr.exempt_tags[k] == tag:
            return True
    return False


@njit(inline="always")
def _applies(cr, i, ch, tag):
    """Cap.applies: cap ``i`` on channel ``ch`` and tag ``tag``."""
    c = cr.caps[i, CAP_CH]
    t = cr.caps[i, CAP_TAG]
    return (c == -1 or c == ch) and (t == ANY_TAG or t == tag)


@njit(inline="always")
def _can_message(ch, consent, unsub_mask):
    """Context.can_message for a CH code (only email / sms / push can be consented)."""
    if ch < 0 or ch >= consent.shape[0] or ch > 2:
        return False
    return consent[ch] and (unsub_mask >> ch) & 1 == 0


@njit(inline="always")
def _seq_less(a, b):
    """``str(a) < str(b)`` for int64 ``a``, ``b`` with ``|a|, |b| < 10**18`` (the pending_id
    tie-break): a negative sign sorts before the digits; between digit strings, the shorter
    one scaled to the longer's length compares as the strings do (equal: a prefix, first)."""
    res = False
    if a != b:
        if (a < 0) != (b < 0):
            res = a < 0
        else:
            x = -a if a < 0 else a
            y = -b if b < 0 else b
            nx = 1
            tx = x
            while tx >= 10:
                tx //= 10
                nx += 1
            ny = 1
            ty = y
            while ty >= 10:
                ty //= 10
                ny += 1
            while nx < ny:
                x *= 10
                nx += 1
                res = True  # x's string is the shorter: on equal digits it is a prefix
            while ny < nx:
                y *= 10
                ny += 1
            if x != y:
                res = x < y
    return res


@njit(inline="always")
def _order_less(pr_a, v_a, rank_a, cr_a, seq_a, pr_b, v_b, rank_b, cr_b, seq_b):
    """``PressureRules._order(a) < _order(b)`` for two pendings of the same exemption:
    higher priority, higher expected value, lower channel_priority rank, earlier created
    [µs], then pending_id (``str(seq)``). Scalars only (no array reference counting)."""
    if pr_a != pr_b:
        res = pr_a > pr_b
    elif v_a != v_b:
        res = v_a > v_b
    elif rank_a != rank_b:
        res = rank_a < rank_b
    elif cr_a != cr_b:
        res = cr_a < cr_b
    else:
        res = _seq_less(seq_a, seq_b)
    return res


# _nrt=False: the kernel allocates nothing (the caller lends the scratch), so it runs without
# reference counting on its many array arguments
@njit(_nrt=False)
def admit_kernel(cr, p_ch, p_tag, p_camp, p_priority, p_value, p_exempt, p_dedup, p_created,
                 p_seq, n_p, h_t, h_ev, h_ch, h_camp, h_tag, n_h, now_h, consent,
                 tz_changes, tz_offsets, start_weekday, out_action, out_until, out_reason,
                 scratch):
    """:meth:`PressureRules.admit` of the first ``n_p`` due pendings at ``now_h``.

    Pendings (``n_p`` rows): ``p_ch`` CH code (CH_NONE: no message), ``p_tag`` /
    ``p_camp`` Strings codes (-1: None), ``p_priority`` int, ``p_value`` expected value
    (currency units), ``p_exempt`` Decision.exempt, ``p_dedup`` ``meta.get("dedup", True)``,
    ``p_created`` [h since start], ``p_seq`` the number in the pending id
    ``f"{user_id}-p{seq}"``. History: first ``n_h`` rows, oldest first (times in h since
    start). ``consent`` bool (3,) per message channel. ``tz_changes`` / ``tz_offsets``: the
    user's zone row (:func:`~omnisim.policies._kernel_time.utc_offset_table`);
    ``start_weekday``: weekday (Monday 0) of the start's UTC date.

    Writes, per pending ``p``: ``out_action[p]`` 0 send / 1 defer / 2 drop; ``out_until[p]``
    the defer instant [h since start] (NaN unless deferred); ``out_reason[p]`` Strings code
    of the reason (-1 for a send). Pendings are decided in ``_order`` and each sees the sends
    admitted before it in this call, as in ``admit``.
    """
    now_us = to_us(now_h)
    C = cr.caps.shape[0]
    E = cr.esc.shape[0]
    do_dedup = cr.has_dedup
    # scratch: per cap window start / next start / count / count at or before now; per
    # pending: dedup hit in the history, per escalation first earlier send and last engagement
    base_p = 4 * C
    base_e = base_p + n_p
    # ``scratch``: int64, at least scratch_size(cr, n_p) = base_e + 2 * n_p * E entries
    # out_action -1 marks "not decided yet" (the selection below picks the next in _order)
    for p in range(n_p):
        out_action[p] = -1
        out_until[p] = np.nan
        scratch[base_p + p] = 0
        for e in range(E):
            scratch[base_e + 2 * (p * E + e)] = _I64_MAX
            scratch[base_e + 2 * (p * E + e) + 1] = -_I64_MAX

    # cap windows at now (Cap.window)
    day_s = np.int64(0)
    day_n = np.int64(0)
    week_s = np.int64(0)
    week_n = np.int64(0)
    have_day = False
    have_week = False
    for i in range(C):
        kind = cr.caps[i, CAP_KIND]
        scratch[2 * C + i] = 0
        scratch[3 * C + i] = 0
        if kind == ROLLING:
            scratch[i] = now_us - cr.caps[i, CAP_WIN_US]
            scratch[C + i] = 0
        elif kind == CAL_DAY:
            if not have_day:
                d = local_day_us(now_us, tz_changes, tz_offsets)
                day_s = local_midnight_us(d, tz_changes, tz_offsets)
                day_n = local_midnight_us(d + 1, tz_changes, tz_offsets)
                have_day = True
            scratch[i] = day_s
            scratch[C + i] = day_n
        else:
            if not have_week:
                d = local_day_us(now_us, tz_changes, tz_offsets)
                d0 = d - (start_weekday + d) % 7
                week_s = local_midnight_us(d0, tz_changes, tz_offsets)
                week_n = local_midnight_us(d0 + 7, tz_changes, tz_offsets)
                have_week = True
            scratch[i] = week_s
            scratch[C + i] = week_n

    # one pass over the history
    unsub_mask = 0
    n_eng = 0
    eng_since = now_us - cr.engaged_win_us
    dedup_since = now_us - cr.dedup_us
    for r in range(n_h):
        ev = h_ev[r]
        if ev == _SENT:
            t = to_us(h_t[r])
            ch = h_ch[r]
            tag = h_tag[r]
            if cr.exempt_counts or not _is_exempt_tag(cr, tag):
                for i in range(C):
                    if not _applies(cr, i, ch, tag):
                        continue
                    if (t > scratch[i]) if cr.caps[i, CAP_KIND] == ROLLING else (t >= scratch[i]):
                        scratch[2 * C + i] += 1
                        if t <= now_us:
                            scratch[3 * C + i] += 1
            if do_dedup or E > 0:
                camp = h_camp[r]
                for p in range(n_p):
                    if camp != p_camp[p]:
                        continue
                    if do_dedup and t > dedup_since:
                        scratch[base_p + p] = 1
                    for e in range(E):
                        if (p_ch[p] == cr.esc[e, E_CH] and ch == cr.esc[e, E_AFTER]
                                and t > now_us - cr.esc[e, E_LOOK_US]):
                            k = base_e + 2 * (p * E + e)
                            if t < scratch[k]:
                                scratch[k] = t
        elif ev == _OPENED or ev == _CLICKED:
            if cr.adaptive or E > 0:
                t = to_us(h_t[r])
                if eng_since < t and t <= now_us:
                    n_eng += 1
                if E > 0:
                    ch = h_ch[r]
                    camp = h_camp[r]
                    for p in range(n_p):
                        if camp != p_camp[p]:
                            continue
                        for e in range(E):
                            if p_ch[p] == cr.esc[e, E_CH] and ch == cr.esc[e, E_AFTER]:
                                k = base_e + 2 * (p * E + e) + 1
                                if t > scratch[k]:
                                    scratch[k] = t
        elif ev == _UNSUB:
            ch = h_ch[r]
            if 0 <= ch < 3:
                unsub_mask |= 1 << ch
    engaged = cr.adaptive and n_eng >= cr.engaged_min

    have_hour = False
    hour = 0.0
    for _ in range(n_p):
        # the next pending in _order (selection: n_p is small)
        p = -1
        for q in range(n_p):
            if out_action[q] != -1:
                continue
            if p == -1:
                p = q
            elif n_p > 1:
                eq = p_exempt[q] or _is_exempt_tag(cr, p_tag[q])
                ep = p_exempt[p] or _is_exempt_tag(cr, p_tag[p])
                if eq != ep:
                    if eq:
                        p = q
                elif _order_less(p_priority[q], p_value[q], cr.ch_rank[p_ch[q]],
                                 to_us(p_created[q]), p_seq[q], p_priority[p], p_value[p],
                                 cr.ch_rank[p_ch[p]], to_us(p_created[p]), p_seq[p]):
                    p = q
        ch = p_ch[p]
        tag = p_tag[p]
        if ch == CH_NONE:
            out_action[p] = DROP
            out_reason[p] = cr.r_no_message
            continue
        if not _can_message(ch, consent, unsub_mask):
            out_action[p] = DROP
            out_reason[p] = cr.r_no_consent
            continue
        if not (p_exempt[p] or _is_exempt_tag(cr, tag)):
            until = np.int64(-1)
            reason = -1
            dropped = False
            decided = False
            # 2. a cap closed for this user
            for i in range(C):
                lim = cr.caps[i, CAP_MAX_ENGAGED] if engaged else cr.caps[i, CAP_MAX]
                if lim <= 0 and _applies(cr, i, ch, tag):
                    dropped = True
                    decided = True
                    reason = cr.caps[i, CAP_REASON]
                    break
            # 3. quiet hours
            if not decided and cr.quiet_h.shape[0] > 0:
                if not have_hour:
                    hour = local_hour_us(now_us, tz_changes, tz_offsets)
                    have_hour = True
                for j in range(cr.quiet_h.shape[0]):
                    if (cr.quiet[j, Q_MASK] >> ch) & 1 == 0:
                        continue
                    s = cr.quiet_h[j, Q_START]
                    e_ = cr.quiet_h[j, Q_END]
                    active = (s <= hour and hour < e_) if s <= e_ else (hour >= s or hour < e_)
                    if active:
                        decided = True
                        reason = cr.r_quiet
                        if cr.quiet[j, Q_DROP]:
                            dropped = True
                        else:
                            until = next_local_hour_us(now_us, cr.quiet[j, Q_MINUTE], tz_changes,
                                                       tz_offsets)
                        break
            # 4. dedup
            camp = p_camp[p]
            if not decided and do_dedup and camp != -1 and p_dedup[p]:
                hit = scratch[base_p + p] == 1
                if not hit and now_us > dedup_since:
                    for q in range(n_p):
                        if out_action[q] == SEND and p_camp[q] == camp:
                            hit = True
                            break
                if hit:
                    decided = True
                    dropped = True
                    reason = cr.r_dedup
            # 5. escalation
            if not decided:
                for e in range(E):
                    after = cr.esc[e, E_AFTER]
                    if ch != cr.esc[e, E_CH] or not _can_message(after, consent, unsub_mask):
                        continue
                    k = base_e + 2 * (p * E + e)
                    first = scratch[k]
                    if now_us > now_us - cr.esc[e, E_LOOK_US] and now_us < first:
                        for q in range(n_p):
                            if out_action[q] == SEND and p_ch[q] == after and p_camp[q] == camp:
                                first = now_us
                                break
                    if first == _I64_MAX or scratch[k + 1] >= first:
                        decided = True
                        dropped = True
                        reason = cr.r_priority
                        break
                    ready = first + cr.esc[e, E_WAIT_US]
                    if now_us < ready:
                        decided = True
                        until = ready
                        reason = cr.r_priority
                        break
            # 6. caps
            if not decided:
                best_rank = -1
                for i in range(C):
                    if not _applies(cr, i, ch, tag):
                        continue
                    start = scratch[i]
                    rolling = cr.caps[i, CAP_KIND] == ROLLING
                    m = 0
                    if (now_us > start) if rolling else (now_us >= start):
                        for q in range(n_p):
                            if (out_action[q] == SEND and _applies(cr, i, p_ch[q], p_tag[q])
                                    and (cr.exempt_counts or not _is_exempt_tag(cr, p_tag[q]))):
                                m += 1
                    c = scratch[2 * C + i] + m
                    lim = cr.caps[i, CAP_MAX_ENGAGED] if engaged else cr.caps[i, CAP_MAX]
                    if c < lim:
                        continue
                    if lim <= 0:
                        free = _I64_MAX
                    elif not rolling:
                        free = scratch[C + i]
                    else:
                        # the send that must leave the window: counted[c - lim] of the
                        # sorted counted sends = history sends at or before now, then the
                        # m sends admitted now, then any later history sends
                        jj = c - lim
                        le = scratch[3 * C + i]
                        v = now_us
                        if jj < le or jj >= le + m:
                            nth = jj if jj < le else jj - m
                            kk = 0
                            for r in range(n_h):
                                if h_ev[r] != _SENT or not _applies(cr, i, h_ch[r], h_tag[r]):
                                    continue
                                if not cr.exempt_counts and _is_exempt_tag(cr, h_tag[r]):
                                    continue
                                t = to_us(h_t[r])
                                if t > start:
                                    if kk == nth:
                                        v = t
                                        break
                                    kk += 1
                        free = v + cr.caps[i, CAP_WIN_US]
                    rank = cr.caps[i, CAP_RANK]
                    if best_rank == -1 or free > until or (free == until and rank > best_rank):
                        until = free
                        best_rank = rank
                        reason = cr.caps[i, CAP_REASON]
                if best_rank != -1:
                    decided = True
            if decided:
                out_action[p] = DROP
                out_reason[p] = reason
                if not dropped:
                    if until == _I64_MAX or until - to_us(p_created[p]) > cr.max_defer_us:
                        out_reason[p] = cr.r_expired
                    else:
                        out_action[p] = DEFER
                        out_until[p] = until / 3.6e9
                continue
        out_action[p] = SEND
        out_reason[p] = -1
