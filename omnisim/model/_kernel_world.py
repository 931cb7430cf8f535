"""The compiled world loop: the fast engine's path for policies with a compiled form.

Users never interact, so this loop simulates one user at a time, start to horizon, as a
small discrete-event simulation (a binary heap of the user's queued events plus four
timers) — the reference engine's semantics (``engine_simpy``), compiled with numba. Every
model formula is the model modules' own (``*_core`` functions of
:mod:`~omnisim.model.behavior`, :mod:`~omnisim.model.channels` and
:mod:`~omnisim.model.fatigue`, and their per-user samplers ``*_one``), compiled here.

Policies run inside the loop through their compiled forms
(:mod:`omnisim.policies._kernel_policy`); the log is written as rows of codes
(:mod:`omnisim.policies._kernel_codes`), turned into the engagement log by
:mod:`omnisim.model._compiled`. Times are float hours since the scenario start.

Memory layout (few arrays, so that calls between the compiled functions stay cheap and
compilation short): ``F`` float64 constants (the scenario's parameters, then the current
user's attributes, activity profile and zone table), ``K`` int64 constants (codes and the
compiled policy), ``S`` float64 and ``I`` int64 scratch of the current user (state, event
heap, messages, history), ``Lf`` (rows, 3) float64 and ``Li`` (rows, 10) int32 the log.
"""

from __future__ import annotations

import math

import numpy as np

from omnisim._jit import njit

from omnisim.log import EVENTS
from omnisim.model import behavior as bh
from omnisim.model import channels as chm
from omnisim.model import fatigue as fat
from omnisim.policies import _kernel_journey as kj
from omnisim.policies import _kernel_pressure as kp
from omnisim.policies._kernel_codes import CH, EV, JOURNEY_STEP, TRIGGER
from omnisim.policies.runtime import DUE_TOLERANCE_H, MIN_DEFER_H

__all__ = ["run_users", "layout", "MARGIN_ROWS", "LF_COLUMNS", "LI_COLUMNS"]

# the loop's functions allocate nothing (run_users allocates the scratch): without numba's
# reference counting (_nrt=False), calls between them pass their arrays for free
_jit = njit(nogil=True, _nrt=False)

# the model's formulas and per-user samplers, compiled from their one source
_click_boost = _jit(bh.click_boost_core)
_visit_rate = _jit(bh.visit_rate_core)
_purchase_probability = _jit(bh.purchase_probability_core)
_session_funnel = _jit(bh.session_funnel_one)
_purchase_value = _jit(bh.purchase_value_one)
_open_probability = _jit(chm.open_probability_core)
_click_probability = _jit(chm.click_probability_core)
_delivery_outcome = _jit(chm.delivery_outcome_one)
_wait_until_active = _jit(chm.wait_until_active_one)
_read_delay = _jit(chm.read_delay_one)
_response_multiplier = _jit(fat.response_multiplier_core)
_unsubscribe_probability = _jit(fat.unsubscribe_probability_core)
_churn_probability = _jit(fat.churn_probability_core)
_decay = _jit(fat.decay_core)

#: the log as the loop writes it: ``Lf`` float columns and ``Li`` int32 columns (text columns
#: are codes into the run's ``Strings``, -1 null; ``msg`` is the user's message number,
#: logged as ``<user>-m<msg>``)
LF_COLUMNS = ("t", "propensity", "value")
LI_COLUMNS = ("user", "event", "channel", "action", "msg", "campaign", "policy", "reason", "tag",
              "step")
(LI_USER, LI_EVENT, LI_CHANNEL, LI_ACTION, LI_MSG, LI_CAMPAIGN, LI_POLICY, LI_REASON, LI_TAG,
 LI_STEP) = range(10)
#: rows kept free before starting a user (one user's 90 days log far fewer)
MARGIN_ROWS = 200_000

# --- F: float constants -------------------------------------------------------------------
(P_VIEW, P_CART, P_ABANDON_DELAY, P_CART_RETURN, P_CLICK_VISIT_BOOST, P_CLICK_HALF_LIFE,
 P_CLICK_PURCHASE, P_BASKET_SIGMA, P_INACTIVITY_H, P_CHURN_RATE_H, P_BOOST_WINDOW_H,
 P_FZ_ENABLED, P_HALF_LIFE_H, P_RESPONSE_STRENGTH, P_ACTIVITY_STRENGTH, P_UNSUB_GAIN,
 P_CHURN_GAIN, P_HORIZON_H, P_HISTORY_H) = range(19)
P_N = 19
# per-channel parameters: F[F_CH + row * 3 + channel]
(CP_BOUNCE, CP_FAIL, CP_DELIVERY_H, CP_OPEN, CP_CLICK, CP_TIMING, CP_UNSUB, CP_COST,
 CP_READ_MEDIAN_MIN, CP_READ_SIGMA, CP_WEIGHT) = range(11)
CP_N = 11
F_CH = P_N
# the current user's float attributes: F[F_U + column] (U_AFF + 0/1/2: email, sms, push)
(U_SIGNUP_H, U_LAST_ACTIVE, U_VISIT_RATE, U_ACT_MEAN, U_ACT_MAX, U_TOL, U_PROPENSITY, U_BASKET,
 U_PRICE_SENS, U_EMAIL_MEDIAN, U_AFF) = range(11)
U_N = 13
F_U = F_CH + CP_N * 3
F_PROF = F_U + U_N             # 24 hours of the user's activity profile
F_TZ = F_PROF + 24             # the zone's changes (K), then offsets (K + 1)

# --- K: int constants ----------------------------------------------------------------------
# Strings codes the loop writes; K[K_CAMP + trigger] the campaign a baseline names after its
# trigger kind
(K_NO_CONSENT, K_ACT_EMAIL, K_ACT_SMS, K_ACT_PUSH, K_ACT_NONE, K_POLICY, K_TAG_MARKETING,
 K_N_CHANGES, K_HAS_RULES, K_START_WEEKDAY, K_N_JOURNEYS, K_SCRATCH_N) = range(12)
K_CAMP = 12
K_POL = K_CAMP + len(TRIGGER)         # the compiled policy: kind, variant, n_channels, 3 channels
K_TRIG = K_POL + 6                    # 1 where the policy answers the trigger
K_KEPT = K_TRIG + len(TRIGGER)        # 1 where the event is kept in history
K_N = K_KEPT + len(EVENTS)
PK_NONE, PK_BASELINE, PK_JOURNEYS = 0, 1, 2   # policy kinds, as _kernel_policy writes them
PK_BLAST, PK_EMAIL_ONLY, PK_RANDOM_CHANNEL = 0, 1, 2

# --- S / I: the current user's scratch -----------------------------------------------------
_HEAP_CAP, _MSG_CAP, _HIST_CAP, _PEND_CAP, _FU_CAP = 4096, 8192, 8192, 256, 4096
MAX_JOURNEYS = 32
(S_PRESSURE, S_PRESSURE_T, S_LAST_CLICK, S_LAST_ACTIVE, S_BOUND, S_T_SIGNUP, S_T_VISIT,
 S_T_CHURN, S_T_INACT, S_BOUND_REST) = range(10)
S_HEAP = 16                            # heap times
S_MSG = S_HEAP + _HEAP_CAP             # per message 10: sent, pressure, 4 draws, 4 probabilities
S_HIST = S_MSG + _MSG_CAP * 10         # history times
S_PEND = S_HIST + _HIST_CAP            # per pending 3: expected value, created, due
S_DUE = S_PEND + _PEND_CAP * 3         # the pendings due now, as S_PEND
S_Q = S_DUE + _PEND_CAP * 3            # admission columns: value, created, until
S_OF = S_Q + _PEND_CAP * 3             # journey decisions' float columns (kj.F_*)
S_FU = S_OF + MAX_JOURNEYS * kj.N_OUT_FLOAT   # per follow-up 2: entered_at, step_at
S_N = S_FU + _FU_CAP * 2
(I_CART_OPEN, I_CART_SEQ, I_INACT_FIRED, I_CHURNED, I_STARTED, I_NMSG, I_HEAP_N, I_HEAP_SEQ,
 I_HIST_LO, I_HIST_N, I_NPEND, I_PSEQ, I_NFU, I_NDUE) = range(14)
_USER_STATE = 14                       # I[:_USER_STATE] is reset per user
I_POS = 15                             # the next log row (kept across users)
I_CONSENT = 16                         # 3: email, sms, push
I_HOLD = 32                            # per journey: the user is in its holdout
I_HEAP = I_HOLD + MAX_JOURNEYS         # per heap entry 3: seq, kind, ref
I_MSG = I_HEAP + _HEAP_CAP * 3         # per message 4: channel, campaign, tag, step
I_HIST = I_MSG + _MSG_CAP * 4          # history columns: event, channel, campaign, tag, step
I_PEND = I_HIST + _HIST_CAP * 5        # per pending 9 (PD_*)
I_DUE = I_PEND + _PEND_CAP * 9         # the pendings due now, as I_PEND
I_Q = I_DUE + _PEND_CAP * 9            # admission columns (Q_*), _PEND_CAP each
I_OI = I_Q + _PEND_CAP * 9             # journey decisions' int columns (kj.O_*)
I_FU = I_OI + MAX_JOURNEYS * kj.N_OUT_INT     # per follow-up 2: journey, step
I_SCRATCH = I_FU + _FU_CAP * 2        # the pressure kernel's scratch (K[K_SCRATCH_N] entries)
I_N = I_SCRATCH
# a pending's int fields (I_PEND + 9 * i + PD_*)
PD_CH, PD_TAG, PD_CAMP, PD_PRIORITY, PD_DEDUP, PD_SEQ, PD_ACTION, PD_POLICY, PD_STEP = range(9)
# admission columns (I_Q + Q_* * _PEND_CAP + i)
Q_CH, Q_TAG, Q_CAMP, Q_PRIORITY, Q_EXEMPT, Q_DEDUP, Q_SEQ, Q_ACTION, Q_REASON = range(9)

# event kinds of the heap
E_DELIVER, E_SEEN, E_CLICK, E_ABANDON, E_FOLLOW, E_WAKE = range(6)

_EV_DECIDED, _EV_SUPPRESSED, _EV_SENT = EV["decided"], EV["suppressed"], EV["sent"]
_EV_DELIVERED, _EV_BOUNCED, _EV_FAILED = EV["delivered"], EV["bounced"], EV["failed"]
_EV_OPENED, _EV_CLICKED, _EV_UNSUB = EV["opened"], EV["clicked"], EV["unsubscribed"]
_EV_SIGNUP, _EV_VISIT, _EV_VIEW = EV["signup"], EV["visit"], EV["product_view"]
_EV_CART_ADD, _EV_CART_ABANDON, _EV_PURCHASE, _EV_CHURNED = (
    EV["cart_add"], EV["cart_abandon"], EV["purchase"], EV["churned"])
_CH_WEB, _CH_NONE = CH["web"], CH["none"]
_TR_SIGNUP, _TR_VISIT, _TR_VIEW, _TR_CART_ADD = (
    TRIGGER["signup"], TRIGGER["visit"], TRIGGER["product_view"], TRIGGER["cart_add"])
_TR_CART_ABANDON, _TR_PURCHASE, _TR_OPENED, _TR_CLICKED, _TR_INACTIVITY = (
    TRIGGER["cart_abandon"], TRIGGER["purchase"], TRIGGER["opened"], TRIGGER["clicked"],
    TRIGGER["inactivity"])
_EV_DEFERRED = EV["deferred"]
_BOUNCED, _FAILED = chm.BOUNCED, chm.FAILED
_INF = math.inf
_NAN = math.nan


def layout(n_changes: int) -> dict[str, int]:
    """Sizes of ``F`` / ``K`` for zone tables of ``n_changes`` columns (for the driver)."""
    return {"F": F_TZ + 2 * n_changes + 1, "K": K_N, "S": S_N, "I": I_N}


def pending_capacity() -> int:
    """The most pendings one user may have queued at once (the pressure scratch's size)."""
    return _PEND_CAP


# --- time ---------------------------------------------------------------------------------
@_jit
def _local_hour(F, K, t):
    """The user's local clock hour in [0, 24) at ``t`` [h] (its zone table in ``F``)."""
    n = K[K_N_CHANGES]
    k = 0
    while k < n and F[F_TZ + k] <= t:
        k += 1
    return (t + F[F_TZ + n + k]) % 24.0


# --- log ----------------------------------------------------------------------------------
@_jit
def _emit(Lf, Li, S, I, K, t, u, ev, ch, action, msg, camp, pol, prop, val, reason, tag, step):
    """Write one log row; keep it in the user's history when the policy reads its event."""
    i = I[I_POS]
    Lf[i, 0] = t
    Lf[i, 1] = prop
    Lf[i, 2] = val
    r = Li[i]
    r[LI_USER] = u
    r[LI_EVENT] = ev
    r[LI_CHANNEL] = ch
    r[LI_ACTION] = action
    r[LI_MSG] = msg
    r[LI_CAMPAIGN] = camp
    r[LI_POLICY] = pol
    r[LI_REASON] = reason
    r[LI_TAG] = tag
    r[LI_STEP] = step
    I[I_POS] = i + 1
    if K[K_KEPT + ev]:
        n = I[I_HIST_N]
        if n == _HIST_CAP:  # full: drop what fell out of the window (oldest first)
            lo = I[I_HIST_LO]
            m = n - lo
            for r in range(m):  # forward copy onto lower indices: no overlap problem
                S[S_HIST + r] = S[S_HIST + lo + r]
                for j in range(5):
                    b = I_HIST + j * _HIST_CAP
                    I[b + r] = I[b + lo + r]
            n = m
            I[I_HIST_LO] = 0
            if n == _HIST_CAP:
                raise RuntimeError("compiled engine: a user's history exceeds its buffer")
        S[S_HIST + n] = t
        I[I_HIST + n] = ev
        I[I_HIST + _HIST_CAP + n] = ch
        I[I_HIST + 2 * _HIST_CAP + n] = camp
        I[I_HIST + 3 * _HIST_CAP + n] = tag
        I[I_HIST + 4 * _HIST_CAP + n] = step
        I[I_HIST_N] = n + 1


@_jit
def _emit_plain(Lf, Li, S, I, K, t, u, ev, ch, val):
    """A row with no decision or message fields (behaviour events, churn)."""
    _emit(Lf, Li, S, I, K, t, u, ev, ch, -1, -1, -1, -1, _NAN, val, -1, -1, -1)


@_jit
def _emit_msg(Lf, Li, S, I, K, t, u, ev, k):
    """A message row (``delivered``, ``opened`` …): the message's id, campaign, tag, step."""
    b = I_MSG + 4 * k
    _emit(Lf, Li, S, I, K, t, u, ev, I[b], -1, k + 1, I[b + 1], -1, _NAN, _NAN, -1, I[b + 2],
          I[b + 3])


# --- the user's event heap ----------------------------------------------------------------
@_jit
def _before(S, I, i, t, seq):
    """Whether heap entry ``i`` comes before ``(t, seq)``."""
    ti = S[S_HEAP + i]
    return ti < t or (ti == t and I[I_HEAP + 3 * i] < seq)


@_jit
def _put(S, I, i, t, seq, kind, ref):
    S[S_HEAP + i] = t
    b = I_HEAP + 3 * i
    I[b] = seq
    I[b + 1] = kind
    I[b + 2] = ref


@_jit
def _move(S, I, dst, src):
    S[S_HEAP + dst] = S[S_HEAP + src]
    bd, bs = I_HEAP + 3 * dst, I_HEAP + 3 * src
    I[bd] = I[bs]
    I[bd + 1] = I[bs + 1]
    I[bd + 2] = I[bs + 2]


@_jit
def _push(S, I, t, kind, ref):
    """Queue event ``kind`` (with ``ref``) at ``t`` [h]; equal times keep their push order."""
    n = I[I_HEAP_N]
    if n == _HEAP_CAP:
        raise RuntimeError("compiled engine: too many queued events for one user")
    seq = I[I_HEAP_SEQ]
    I[I_HEAP_SEQ] = seq + 1
    i = n
    while i > 0:
        parent = (i - 1) // 2
        if _before(S, I, parent, t, seq):
            break
        _move(S, I, i, parent)
        i = parent
    _put(S, I, i, t, seq, kind, ref)
    I[I_HEAP_N] = n + 1


@_jit
def _pop(S, I):
    """Remove the earliest event; returns ``(kind, ref)``."""
    kind, ref = I[I_HEAP + 1], I[I_HEAP + 2]
    n = I[I_HEAP_N] - 1
    I[I_HEAP_N] = n
    if n > 0:
        t, b = S[S_HEAP + n], I_HEAP + 3 * n
        seq, k, r = I[b], I[b + 1], I[b + 2]
        i = 0
        while True:
            c = 2 * i + 1
            if c >= n:
                break
            if c + 1 < n and _before(S, I, c + 1, S[S_HEAP + c], I[I_HEAP + 3 * c]):
                c += 1
            if not _before(S, I, c, t, seq):
                break
            _move(S, I, i, c)
            i = c
        _put(S, I, i, t, seq, k, r)
    return kind, ref


# --- messages and policies -----------------------------------------------------------------
@_jit
def _pressure_now(F, S, now):
    if S[S_PRESSURE] == 0.0:  # never messaged: 0 · 2^x, without the exp2
        return 0.0
    return _decay(S[S_PRESSURE], now - S[S_PRESSURE_T], F[P_HALF_LIFE_H])


@_jit
def _fatigue_multiplier(F, S, now, strength):
    """``fatigue.response_multiplier`` of the user's pressure now (1 when the fatigue model is
    off); exactly 1.0 without the exp when the pressure is 0 (exp(-0.0) = 1)."""
    if F[P_FZ_ENABLED] <= 0:
        return 1.0
    pressure = _pressure_now(F, S, now)
    if pressure == 0.0:
        return 1.0
    return _response_multiplier(pressure, F[F_U + U_TOL], strength)


@_jit
def _send(Lf, Li, F, K, S, I, u, now, c, action, camp, pol, tag, step):
    """Send one admitted message on channel ``c`` (consent checked); queue its delivery."""
    if c > 2 or not I[I_CONSENT + c]:
        _emit(Lf, Li, S, I, K, now, u, _EV_SUPPRESSED, c if c <= 2 else _CH_NONE, action, -1,
              camp, pol, _NAN, _NAN, K[K_NO_CONSENT], -1, step)
        return
    k = I[I_NMSG]
    if k == _MSG_CAP:
        raise RuntimeError("compiled engine: too many messages for one user")
    I[I_NMSG] = k + 1
    before = _pressure_now(F, S, now)
    S[S_PRESSURE] = before + F[F_CH + CP_WEIGHT * 3 + c]
    S[S_PRESSURE_T] = now
    _emit(Lf, Li, S, I, K, now, u, _EV_SENT, c, action, k + 1, camp, pol, _NAN,
          F[F_CH + CP_COST * 3 + c], -1, tag, step)
    S[S_MSG + 10 * k] = now
    S[S_MSG + 10 * k + 1] = before
    b = I_MSG + 4 * k
    I[b], I[b + 1], I[b + 2], I[b + 3] = c, camp, tag, step
    _push(S, I, now + F[F_CH + CP_DELIVERY_H * 3 + c], E_DELIVER, k)


@_jit
def _trim_history(F, S, I, now):
    """Drop history rows older than the policies' window (``HISTORY_DAYS``) at ``now``."""
    lo, n = I[I_HIST_LO], I[I_HIST_N]
    cutoff = now - F[P_HISTORY_H]
    while lo < n and S[S_HIST + lo] < cutoff:
        lo += 1
    I[I_HIST_LO] = lo
    return lo, n


@_jit
def _add_pending(F, S, I, now, ch, tag, camp, priority, value, dedup, action, pol, step):
    """Queue a message decision due now (``Pending``; its id is ``<user>-p<seq>``)."""
    i = I[I_NPEND]
    if i == _PEND_CAP:
        raise RuntimeError("compiled engine: too many pending messages for one user")
    I[I_NPEND] = i + 1
    seq = I[I_PSEQ] + 1
    I[I_PSEQ] = seq
    b = I_PEND + 9 * i
    I[b + PD_CH], I[b + PD_TAG], I[b + PD_CAMP], I[b + PD_PRIORITY] = ch, tag, camp, priority
    I[b + PD_DEDUP], I[b + PD_SEQ], I[b + PD_ACTION], I[b + PD_POLICY] = dedup, seq, action, pol
    I[b + PD_STEP] = step
    S[S_PEND + 3 * i], S[S_PEND + 3 * i + 1], S[S_PEND + 3 * i + 2] = value, now, now


@_jit
def _admit(Lf, Li, F, K, S, I, T, u, now):
    """Send, defer or drop the user's pendings due at ``now`` (the engines' ``admit``)."""
    cut = now + DUE_TOLERANCE_H
    n, nd, keep = I[I_NPEND], 0, 0
    for i in range(n):  # split the queue: due ones to I_DUE / S_DUE, the rest stay in order
        src_i, src_s = I_PEND + 9 * i, S_PEND + 3 * i
        if S[src_s + 2] <= cut:
            dst_i, dst_s = I_DUE + 9 * nd, S_DUE + 3 * nd
            nd += 1
        else:
            dst_i, dst_s = I_PEND + 9 * keep, S_PEND + 3 * keep
            keep += 1
        for j in range(9):
            I[dst_i + j] = I[src_i + j]
        for j in range(3):
            S[dst_s + j] = S[src_s + j]
    I[I_NPEND] = keep
    if nd == 0:
        return
    if not K[K_HAS_RULES]:
        for d in range(nd):
            b = I_DUE + 9 * d
            _send(Lf, Li, F, K, S, I, u, now, I[b + PD_CH], I[b + PD_ACTION], I[b + PD_CAMP],
                  I[b + PD_POLICY], I[b + PD_TAG], I[b + PD_STEP])
        return
    for d in range(nd):  # the admission's columns
        b = I_DUE + 9 * d
        I[I_Q + Q_CH * _PEND_CAP + d] = I[b + PD_CH]
        I[I_Q + Q_TAG * _PEND_CAP + d] = I[b + PD_TAG]
        I[I_Q + Q_CAMP * _PEND_CAP + d] = I[b + PD_CAMP]
        I[I_Q + Q_PRIORITY * _PEND_CAP + d] = I[b + PD_PRIORITY]
        I[I_Q + Q_EXEMPT * _PEND_CAP + d] = 0
        I[I_Q + Q_DEDUP * _PEND_CAP + d] = I[b + PD_DEDUP]
        I[I_Q + Q_SEQ * _PEND_CAP + d] = I[b + PD_SEQ]
        S[S_Q + d] = S[S_DUE + 3 * d]
        S[S_Q + _PEND_CAP + d] = S[S_DUE + 3 * d + 1]
    lo, n_h = _trim_history(F, S, I, now)
    q = lambda col: I[I_Q + col * _PEND_CAP:I_Q + col * _PEND_CAP + nd]  # noqa: E731
    hc = lambda col: I[I_HIST + col * _HIST_CAP + lo:I_HIST + col * _HIST_CAP + n_h]  # noqa: E731
    nk = K[K_N_CHANGES]
    kp.admit_kernel(T[1], q(Q_CH), q(Q_TAG), q(Q_CAMP), q(Q_PRIORITY), S[S_Q:S_Q + nd],
                    q(Q_EXEMPT), q(Q_DEDUP), S[S_Q + _PEND_CAP:S_Q + _PEND_CAP + nd], q(Q_SEQ),
                    nd, S[S_HIST + lo:S_HIST + n_h], hc(0), hc(1), hc(2), hc(3), n_h - lo, now,
                    I[I_CONSENT:I_CONSENT + 3], F[F_TZ:F_TZ + nk], F[F_TZ + nk:F_TZ + 2 * nk + 1],
                    K[K_START_WEEKDAY], q(Q_ACTION), S[S_Q + 2 * _PEND_CAP:S_Q + 2 * _PEND_CAP + nd],
                    q(Q_REASON), I[I_SCRATCH:I_SCRATCH + K[K_SCRATCH_N]])
    for rnd in range(3):  # as the engines: the sends, then the deferrals, then the drops
        for d in range(nd):
            act = I[I_Q + Q_ACTION * _PEND_CAP + d]
            if act != rnd:
                continue
            b = I_DUE + 9 * d
            ch, action, camp, pol, step = (I[b + PD_CH], I[b + PD_ACTION], I[b + PD_CAMP],
                                           I[b + PD_POLICY], I[b + PD_STEP])
            reason = I[I_Q + Q_REASON * _PEND_CAP + d]
            if act == kp.SEND:
                _send(Lf, Li, F, K, S, I, u, now, ch, action, camp, pol, I[b + PD_TAG], step)
            elif act == kp.DEFER:
                _emit(Lf, Li, S, I, K, now, u, _EV_DEFERRED, ch, action, -1, camp, pol, _NAN,
                      _NAN, reason, -1, step)
                at = max(S[S_Q + 2 * _PEND_CAP + d], now + MIN_DEFER_H)
                i = I[I_NPEND]  # back in the queue: same id, created; due at ``at``
                if i == _PEND_CAP:
                    raise RuntimeError("compiled engine: too many pending messages for one user")
                I[I_NPEND] = i + 1
                for j in range(9):
                    I[I_PEND + 9 * i + j] = I[b + j]
                S[S_PEND + 3 * i] = S[S_DUE + 3 * d]
                S[S_PEND + 3 * i + 1] = S[S_DUE + 3 * d + 1]
                S[S_PEND + 3 * i + 2] = at
                _push(S, I, at, E_WAKE, -1)
            else:
                _emit(Lf, Li, S, I, K, now, u, _EV_SUPPRESSED, ch, action, -1, camp, pol, _NAN,
                      _NAN, reason, -1, step)


@_jit
def _decide_baseline(Lf, Li, F, K, S, I, T, prng, u, now, trig):
    """``Blast`` / ``EmailOnly`` / ``RandomChannel``: the reachable channels of the policy's
    list; ``none`` when there is none (omnisim/policies/baselines.py)."""
    camp, name = K[K_CAMP + trig], K[K_POLICY]
    n_ch = K[K_POL + 2]
    n_opt = 0
    for j in range(n_ch):
        if I[I_CONSENT + K[K_POL + 3 + j]]:
            n_opt += 1
    if n_opt == 0:
        _emit(Lf, Li, S, I, K, now, u, _EV_DECIDED, _CH_NONE, K[K_ACT_NONE], -1, camp, name, 1.0,
              _NAN, -1, -1, -1)
        return
    pick, prop = -1, 1.0
    if K[K_POL + 1] == PK_RANDOM_CHANNEL:
        # uniform over the options (floor(u * k), u in [0, 1)): RandomChannel's draw, made
        # without the allocation Generator.integers does
        pick, prop = min(int(prng.random() * n_opt), n_opt - 1), 1.0 / n_opt
    i = 0
    for j in range(n_ch):
        c = K[K_POL + 3 + j]
        if not I[I_CONSENT + c]:
            continue
        if pick < 0 or i == pick:
            _emit(Lf, Li, S, I, K, now, u, _EV_DECIDED, c, K[K_ACT_EMAIL + c], -1, camp, name,
                  prop, _NAN, -1, -1, -1)
            _add_pending(F, S, I, now, c, K[K_TAG_MARKETING], camp, 0, 0.0, 1, K[K_ACT_EMAIL + c],
                         name, -1)
        i += 1
    _admit(Lf, Li, F, K, S, I, T, u, now)


@_jit
def _decide_journeys(Lf, Li, F, K, S, I, T, u, now, trig, fu):
    """A journey or a set of journeys (``_kernel_journey.journey_decide``): log, queue and
    admit the decisions; schedule their follow-ups (the engines' ``_apply``)."""
    lo, n_h = _trim_history(F, S, I, now)
    hc = lambda col: I[I_HIST + col * _HIST_CAP + lo:I_HIST + col * _HIST_CAP + n_h]  # noqa: E731
    fj, fs, fe, fa = -1, -1, _NAN, _NAN
    if fu >= 0:
        fj, fs = I[I_FU + 2 * fu], I[I_FU + 2 * fu + 1]
        fe, fa = S[S_FU + 2 * fu], S[S_FU + 2 * fu + 1]
    nj, nk = K[K_N_JOURNEYS], K[K_N_CHANGES]
    OI = I[I_OI:I_OI + nj * kj.N_OUT_INT].reshape((nj, kj.N_OUT_INT))
    OF = S[S_OF:S_OF + nj * kj.N_OUT_FLOAT].reshape((nj, kj.N_OUT_FLOAT))
    nd = kj.journey_decide(T[0], trig, fj, fs, fe, fa, now, S[S_HIST + lo:S_HIST + n_h], hc(0),
                           hc(1), hc(2), hc(3), hc(4), n_h - lo, I[I_CONSENT:I_CONSENT + 3],
                           I[I_HOLD:I_HOLD + nj], OI, OF, F[F_TZ:F_TZ + nk],
                           F[F_TZ + nk:F_TZ + 2 * nk + 1])
    queued = False
    for d in range(nd):
        ch = OI[d, kj.O_CH]
        action = K[K_ACT_EMAIL + ch] if ch <= 2 else K[K_ACT_NONE]
        camp, pol, step = OI[d, kj.O_CAMPAIGN], OI[d, kj.O_POLICY], OI[d, kj.O_STEP]
        _emit(Lf, Li, S, I, K, now, u, _EV_DECIDED, ch, action, -1, camp, pol,
              OF[d, kj.F_PROPENSITY], _NAN, -1, -1, step)
        if ch > 2:
            if OI[d, kj.O_REASON] >= 0:
                _emit(Lf, Li, S, I, K, now, u, _EV_SUPPRESSED, _CH_NONE, action, -1, camp, pol,
                      _NAN, _NAN, OI[d, kj.O_REASON], -1, step)
        else:
            _add_pending(F, S, I, now, ch, OI[d, kj.O_TAG], camp, OI[d, kj.O_PRIORITY],
                         OF[d, kj.F_EXPECTED_VALUE], OI[d, kj.O_DEDUP], action, pol, step)
            queued = True
        if OI[d, kj.O_FU_STEP] >= 0:
            k = I[I_NFU]
            if k == _FU_CAP:
                raise RuntimeError("compiled engine: too many journey follow-ups for one user")
            I[I_NFU] = k + 1
            I[I_FU + 2 * k], I[I_FU + 2 * k + 1] = OI[d, kj.O_FU_JOURNEY], OI[d, kj.O_FU_STEP]
            S[S_FU + 2 * k], S[S_FU + 2 * k + 1] = OF[d, kj.F_FU_ENTERED], OF[d, kj.F_FU_STEP_AT]
            _push(S, I, max(now, OF[d, kj.F_FU_AT]), E_FOLLOW, k)
    if queued:
        _admit(Lf, Li, F, K, S, I, T, u, now)


@_jit
def _decide(Lf, Li, F, K, S, I, T, prng, u, now, trig, fu):
    """Ask the policy about trigger ``trig`` (a TRIGGER code; ``fu`` the follow-up of a
    ``journey_step``, else -1) now; apply what it decides."""
    kind = K[K_POL]
    if kind == PK_NONE or not K[K_TRIG + trig]:
        return
    if kind == PK_BASELINE:
        _decide_baseline(Lf, Li, F, K, S, I, T, prng, u, now, trig)
    else:
        _decide_journeys(Lf, Li, F, K, S, I, T, u, now, trig, fu)


# --- one user's world -----------------------------------------------------------------------
@_jit
def _deliver(Lf, Li, F, K, S, I, rng, u, now, k):
    """Delivery outcome; for a delivered message draw when it is seen and what follows."""
    c = I[I_MSG + 4 * k]
    ch = F_CH + c
    out = _delivery_outcome(rng, F[ch + CP_BOUNCE * 3], F[ch + CP_FAIL * 3])
    _emit_msg(Lf, Li, S, I, K, now, u, _EV_BOUNCED if out == _BOUNCED else _EV_FAILED
              if out == _FAILED else _EV_DELIVERED, k)
    if out == _BOUNCED or out == _FAILED or I[I_CHURNED]:
        return
    m = S_MSG + 10 * k
    pressure, tol = S[m + 1], F[F_U + U_TOL]
    hour = _local_hour(F, K, S[m])
    activity = F[F_PROF + int(hour) % 24] / F[F_U + U_ACT_MAX]
    enabled = F[P_FZ_ENABLED] > 0
    f = _response_multiplier(pressure, tol, F[P_RESPONSE_STRENGTH]) if enabled else 1.0
    aff = F[F_U + U_AFF + c]
    S[m + 6] = _open_probability(F[ch + CP_OPEN * 3], aff, activity, F[ch + CP_TIMING * 3], f)
    S[m + 7] = _click_probability(F[ch + CP_CLICK * 3], aff, f)
    if enabled:
        S[m + 8] = _unsubscribe_probability(F[ch + CP_UNSUB * 3], pressure, tol, F[P_UNSUB_GAIN])
        S[m + 9] = _churn_probability(pressure, tol, F[P_CHURN_GAIN])
    else:
        S[m + 8], S[m + 9] = F[ch + CP_UNSUB * 3], 0.0
    wait = 0.0 if c == 1 else _wait_until_active(rng, hour, F[F_PROF:F_PROF + 24], 72)
    delay = _read_delay(rng, c, F[ch + CP_READ_MEDIAN_MIN * 3], F[ch + CP_READ_SIGMA * 3], wait,
                        F[F_U + U_EMAIL_MEDIAN])
    for j in range(4):
        S[m + 2 + j] = rng.random()
    _push(S, I, now + delay, E_SEEN, k)


@_jit
def _churn(Lf, Li, K, S, I, u, now):
    I[I_CHURNED] = 1
    S[S_T_SIGNUP] = S[S_T_VISIT] = S[S_T_CHURN] = S[S_T_INACT] = _INF
    _emit_plain(Lf, Li, S, I, K, now, u, _EV_CHURNED, _CH_NONE, _NAN)


@_jit
def _after_effects(Lf, Li, K, S, I, u, now, k):
    """Unsubscribe from the message's channel and fatigue-driven churn (drawn at delivery)."""
    c, m = I[I_MSG + 4 * k], S_MSG + 10 * k
    if S[m + 4] < S[m + 8] and I[I_CONSENT + c]:
        I[I_CONSENT + c] = 0
        _emit_msg(Lf, Li, S, I, K, now, u, _EV_UNSUB, k)
    if S[m + 5] < S[m + 9] and not I[I_CHURNED]:
        _churn(Lf, Li, K, S, I, u, now)


@_jit
def _boost_now(F, S, now):
    if S[S_LAST_CLICK] == -_INF:  # no click yet: the boost is exactly 0
        return 0.0
    return _click_boost(now - S[S_LAST_CLICK], F[P_CLICK_VISIT_BOOST], F[P_CLICK_HALF_LIFE])


@_jit
def _draw_next_visit(F, S, rng, now, boost):
    """Next thinning candidate: bound = rate at peak activity, rested, boost as of ``now``."""
    bound = (S[S_BOUND_REST] if boost == 0.0 else  # the rested, unboosted bound: per user
             _visit_rate(F[F_U + U_VISIT_RATE], F[F_U + U_ACT_MAX], F[F_U + U_ACT_MEAN], 1.0, boost))
    S[S_BOUND] = bound
    S[S_T_VISIT] = now + rng.exponential(1.0) / bound if bound > 0 else _INF


@_jit
def _set_inactivity(F, S, I):
    """Inactivity timer: ``inactivity_days`` after the last session, once per spell."""
    if I[I_STARTED] and not I[I_INACT_FIRED] and not I[I_CHURNED]:
        S[S_T_INACT] = max(S[S_LAST_ACTIVE] + F[P_INACTIVITY_H], 0.0)
    else:
        S[S_T_INACT] = _INF


@_jit
def _start_life(F, S, I, rng, now):
    """Baseline churn time, first visit candidate, inactivity timer."""
    rate = F[P_CHURN_RATE_H]
    S[S_T_CHURN] = now + rng.exponential(1.0 / rate) if rate > 0 else _INF
    _draw_next_visit(F, S, rng, now, _boost_now(F, S, now))
    _set_inactivity(F, S, I)


@_jit
def _session(Lf, Li, F, K, S, I, T, rng, prng, u, now, from_click):
    """One site session: visit → product_view → cart_add → purchase or abandon later."""
    S[S_LAST_ACTIVE] = now
    I[I_INACT_FIRED] = 0
    _set_inactivity(F, S, I)
    _emit_plain(Lf, Li, S, I, K, now, u, _EV_VISIT, _CH_WEB, _NAN)
    _decide(Lf, Li, F, K, S, I, T, prng, u, now, _TR_VISIT, -1)
    f = _fatigue_multiplier(F, S, now, F[P_RESPONSE_STRENGTH])
    boosted = 1.0 if now - S[S_LAST_CLICK] <= F[P_BOOST_WINDOW_H] else 0.0
    p_buy = _purchase_probability(F[F_U + U_PROPENSITY], f, float(I[I_CART_OPEN]), boosted,
                                  F[F_U + U_PRICE_SENS], F[P_CART_RETURN], F[P_CLICK_PURCHASE])
    viewed, carted, bought = _session_funnel(rng, p_buy, F[P_VIEW], F[P_CART], from_click)
    if viewed:
        _emit_plain(Lf, Li, S, I, K, now, u, _EV_VIEW, _CH_WEB, _NAN)
        _decide(Lf, Li, F, K, S, I, T, prng, u, now, _TR_VIEW, -1)
    if carted:
        _emit_plain(Lf, Li, S, I, K, now, u, _EV_CART_ADD, _CH_WEB, _NAN)
        _decide(Lf, Li, F, K, S, I, T, prng, u, now, _TR_CART_ADD, -1)
        I[I_CART_SEQ] += 1
        if bought:
            value = _purchase_value(rng, F[F_U + U_BASKET], F[P_BASKET_SIGMA])
            I[I_CART_OPEN] = 0
            _emit_plain(Lf, Li, S, I, K, now, u, _EV_PURCHASE, _CH_WEB, value)
            _decide(Lf, Li, F, K, S, I, T, prng, u, now, _TR_PURCHASE, -1)
        else:
            I[I_CART_OPEN] = 1
            _push(S, I, now + F[P_ABANDON_DELAY], E_ABANDON, I[I_CART_SEQ])


@_jit
def _seen(Lf, Li, F, K, S, I, T, rng, prng, u, now, k):
    """A delivered message is seen: maybe opened (trigger), then a click or the after-effects."""
    if I[I_CHURNED]:
        return
    m = S_MSG + 10 * k
    if S[m + 2] < S[m + 6]:
        _emit_msg(Lf, Li, S, I, K, now, u, _EV_OPENED, k)
        _decide(Lf, Li, F, K, S, I, T, prng, u, now, _TR_OPENED, -1)
        if S[m + 3] < S[m + 7]:
            _push(S, I, now + rng.exponential(0.5) / 60.0, E_CLICK, k)
            return
    _after_effects(Lf, Li, K, S, I, u, now, k)


@_jit
def _click(Lf, Li, F, K, S, I, T, rng, prng, u, now, k):
    """A click: boost and redraw the visit process, trigger, a session, then after-effects."""
    _emit_msg(Lf, Li, S, I, K, now, u, _EV_CLICKED, k)
    S[S_LAST_CLICK] = now
    if I[I_STARTED] and not I[I_CHURNED]:
        _draw_next_visit(F, S, rng, now, _boost_now(F, S, now))
    _decide(Lf, Li, F, K, S, I, T, prng, u, now, _TR_CLICKED, -1)
    _session(Lf, Li, F, K, S, I, T, rng, prng, u, now, True)
    _after_effects(Lf, Li, K, S, I, u, now, k)


@_jit
def _visit_candidate(Lf, Li, F, K, S, I, T, rng, prng, u, now):
    """Thinning: accept the candidate with probability rate(now) / bound; draw the next."""
    hour = _local_hour(F, K, now)
    f_act = _fatigue_multiplier(F, S, now, F[P_ACTIVITY_STRENGTH])
    boost = _boost_now(F, S, now)
    rate = _visit_rate(F[F_U + U_VISIT_RATE], F[F_PROF + int(hour) % 24], F[F_U + U_ACT_MEAN],
                       f_act, boost)
    accept = rng.random() * S[S_BOUND] < rate
    _draw_next_visit(F, S, rng, now, boost)
    if accept:
        _session(Lf, Li, F, K, S, I, T, rng, prng, u, now, False)


@_jit
def _run_user(Lf, Li, F, K, S, I, T, rng, prng, u, is_new):
    """Simulate user ``u`` from the start to the horizon."""
    horizon = F[P_HORIZON_H]
    if is_new:
        S[S_T_SIGNUP] = F[F_U + U_SIGNUP_H]
    else:
        I[I_STARTED] = 1
        _start_life(F, S, I, rng, 0.0)
    while True:
        tt, tk = S[S_T_SIGNUP], 0
        for j in range(1, 4):
            if S[S_T_SIGNUP + j] < tt:
                tt, tk = S[S_T_SIGNUP + j], j
        th = S[S_HEAP] if I[I_HEAP_N] > 0 else _INF
        if th <= tt:  # queued events first at equal times (as the round-based path)
            if th >= horizon:
                break
            kind, ref = _pop(S, I)
            if kind == E_DELIVER:
                _deliver(Lf, Li, F, K, S, I, rng, u, th, ref)
            elif kind == E_SEEN:
                _seen(Lf, Li, F, K, S, I, T, rng, prng, u, th, ref)
            elif kind == E_CLICK:
                _click(Lf, Li, F, K, S, I, T, rng, prng, u, th, ref)
            elif kind == E_FOLLOW:
                _decide(Lf, Li, F, K, S, I, T, prng, u, th, JOURNEY_STEP, ref)
            elif kind == E_WAKE:
                _admit(Lf, Li, F, K, S, I, T, u, th)
            elif kind == E_ABANDON:
                if I[I_CART_OPEN] and I[I_CART_SEQ] == ref and not I[I_CHURNED]:
                    _emit_plain(Lf, Li, S, I, K, th, u, _EV_CART_ABANDON, _CH_WEB, _NAN)
                    _decide(Lf, Li, F, K, S, I, T, prng, u, th, _TR_CART_ABANDON, -1)
            continue
        if tt >= horizon:
            break
        if tk == 0:  # sign-up
            S[S_T_SIGNUP] = _INF
            I[I_STARTED] = 1
            _emit_plain(Lf, Li, S, I, K, tt, u, _EV_SIGNUP, _CH_WEB, _NAN)
            _decide(Lf, Li, F, K, S, I, T, prng, u, tt, _TR_SIGNUP, -1)
            _start_life(F, S, I, rng, tt)
        elif tk == 1:
            _visit_candidate(Lf, Li, F, K, S, I, T, rng, prng, u, tt)
        elif tk == 2:
            _churn(Lf, Li, K, S, I, u, tt)
        else:  # inactivity: a trigger, no log row
            I[I_INACT_FIRED] = 1
            S[S_T_INACT] = _INF
            _decide(Lf, Li, F, K, S, I, T, prng, u, tt, _TR_INACTIVITY, -1)


@njit(nogil=True)
def run_users(u0, u1, Lf, Li, pos, F, K, T, uf, is_new, consent, holdout, prof, tz_idx, changes,
              offsets, rng, prng):
    """Simulate users ``u0 .. u1 - 1`` of a chunk, appending their rows to the log ``Lf`` /
    ``Li`` from row ``pos[0]``; stops early, before a user, when fewer than
    :data:`MARGIN_ROWS` rows are free. Returns the next user to simulate.

    ``F`` / ``K``: the run's constants (:func:`layout` sizes; the user part of ``F`` is
    filled here); ``T``: the compiled journeys and pressure rules (placeholders when the
    policy has none: ``K`` says); ``uf`` (n, U_N) float attributes, ``is_new`` (n,),
    ``consent`` (n, 3), ``holdout`` (n, journeys) each journey's holdout,
    ``prof`` (n, 24), ``tz_idx`` (n,) rows of the zone tables ``changes`` (Z, K) /
    ``offsets`` (Z, K + 1); ``rng`` / ``prng`` the chunk's world and policy generators."""
    cap = Lf.shape[0]
    S = np.empty(S_N)
    I = np.zeros(I_N + K[K_SCRATCH_N], np.int64)  # noqa: E741
    I[I_POS] = pos[0]
    nk = K[K_N_CHANGES]
    for u in range(u0, u1):
        if I[I_POS] + MARGIN_ROWS > cap:
            pos[0] = I[I_POS]
            return u
        S[:16] = 0.0
        S[S_LAST_CLICK] = -_INF
        S[S_LAST_ACTIVE] = uf[u, U_LAST_ACTIVE]
        S[S_T_SIGNUP] = S[S_T_VISIT] = S[S_T_CHURN] = S[S_T_INACT] = _INF
        I[:_USER_STATE] = 0
        for c in range(3):
            I[I_CONSENT + c] = consent[u, c]
        for j in range(K[K_N_JOURNEYS]):
            I[I_HOLD + j] = holdout[u, j]
        F[F_U:F_U + U_N] = uf[u]
        S[S_BOUND_REST] = _visit_rate(F[F_U + U_VISIT_RATE], F[F_U + U_ACT_MAX],
                                      F[F_U + U_ACT_MEAN], 1.0, 0.0)
        F[F_PROF:F_PROF + 24] = prof[u]
        z = tz_idx[u]
        F[F_TZ:F_TZ + nk] = changes[z]
        F[F_TZ + nk:F_TZ + 2 * nk + 1] = offsets[z]
        _run_user(Lf, Li, F, K, S, I, T, rng, prng, u, is_new[u])
    pos[0] = I[I_POS]
    return u1
