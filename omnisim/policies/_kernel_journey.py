"""Compiled (numba) rule journeys: :meth:`Journey.decide` / :meth:`JourneySet.decide` for the
compiled engine loop, exactly equivalent to the Python classes (which stay the
specification, :mod:`omnisim.policies.journeys`; ``tests/test_kernel_journey.py`` shows the
equivalence on built-in and random journeys, random histories and follow-up chains).

Parts (codes: :mod:`omnisim.policies._kernel_codes`; interface: ``/tmp/spec/kernels.md``,
``docs/engines.md`` "Compiled path"):

- :func:`compile_journeys` (Python, once per run) turns a :class:`Journey` or a
  :class:`JourneySet` of journeys into :class:`CompiledJourneys`, a named tuple of eight
  numpy arrays (columns ``JI_*``, ``JF_*``, ``SI_*``, ``CI_*``);
- :func:`holdout_flags` (Python, once per user) gives each journey's holdout membership;
- :func:`journey_decide` (``numba.njit``) answers one trigger for one user from those, the
  user's history arrays, the follow-up payload and the user's zone row (for
  ``at_local_hour``), writing its decisions as rows of two output arrays (columns ``O_*``
  int64 and ``F_*`` float64).

Every :class:`Journey` compiles, ``at_local_hour`` steps included (see "Local hours").

Output per decision: what the engines log and act on — channel (the action is the
channel's name), propensity, policy, campaign, step (``Decision.step``), reason, tag,
priority, expected value, ``meta["dedup"]`` and the follow-up. Not output: templates,
fallback chains and other message meta, ``meta["exit"]`` / ``meta["branch"]`` (not logged).

Time: every instant is float64 **hours since the scenario start**; the engines turn hours
into datetimes as ``start + timedelta(microseconds=round(h * 3.6e9))``. The kernel compares
instants on that same microsecond grid (``round(h * 3.6e9)``, int64) and adds waits as
``timedelta(hours=delay_h)`` does (whole microseconds), so its comparisons are Python's on
the engine's datetimes, boundaries included, and a follow-up's ``F_FU_AT`` turns into
exactly ``Step.due`` (it may differ from ``now_h + delay_h`` in the last bits: schedule the
follow-up at ``F_FU_AT`` and pass that as the next ``now_h``).

Local hours: a step with ``at_local_hour`` is due at ``next_local_hour(after + delay_h,
timezone, at_local_hour)`` (``Step.due``), found in the user's zone row
(``tz_changes, tz_offsets`` of :func:`omnisim.policies._kernel_time.utc_offset_table`, built
with the run's ``start``) by :func:`~omnisim.policies._kernel_time.next_local_hour_us` on
the same microsecond grid: DST-aware (a skipped local time gives the change instant, a
repeated one its first occurrence at or after), the hour rounded to the minute as
``base.next_local_hour`` does (24:00 is 00:00). The entry computes the first step's due the
same way (a first step with ``at_local_hour`` usually makes the entry wait; it runs at once
only when the local clock reads that minute exactly at the trigger). The row must cover
the due instants (``utc_offset_table`` reaches ``margin_h``, 8 days, past the horizon;
beyond its range the last offset is assumed); should ``next_local_hour_us`` find none
(``I64_MAX``), ``F_FU_AT`` is ``+inf`` (never due).
Journeys without ``at_local_hour`` never read the zone row.

Follow-up payload in compiled form: ``(journey index in the set, step index within the
journey, entered_at hours, step_at hours)``. The Python payload's ``entry_id`` and ``sent``
are not carried: no log column and no decision reads them. A step index outside the journey
(Python: a payload of another version) gives the ``none`` exit decision with step ``-1``;
``fu_journey`` must be a valid index.
"""

from __future__ import annotations

from datetime import timedelta
from typing import NamedTuple, Sequence

import numpy as np

from omnisim._jit import njit

from omnisim.policies._kernel_codes import CH, CH_NONE, EV, JOURNEY_STEP, TRIGGER, Strings
from omnisim.policies._kernel_time import I64_MAX, minute_of_day, next_local_hour_us
from omnisim.policies.base import NO_ACTION
from omnisim.policies.holdout import in_holdout
from omnisim.policies.journeys import (
    _BY_TIME, _ENTRY, _FIRST, _LATER, ENTRY_STEP, EXIT, OWN_BY_DEFAULT, Journey, JourneySet,
)

__all__ = ["CompiledJourneys", "compile_journeys", "journey_decide", "holdout_flags",
           "O_CH", "O_POLICY", "O_CAMPAIGN", "O_STEP", "O_REASON", "O_TAG", "O_PRIORITY",
           "O_DEDUP", "O_FU_STEP", "O_FU_JOURNEY", "N_OUT_INT", "F_PROPENSITY",
           "F_EXPECTED_VALUE", "F_FU_AT", "F_FU_ENTERED", "F_FU_STEP_AT", "N_OUT_FLOAT",
           "JI_NAME", "JI_POLICY", "JI_TRIGGERS", "JI_COOLDOWN_US", "JI_WAIT_US",
           "JI_MAX_ENTRIES", "JI_STEP0", "JI_NSTEPS", "JI_EXIT0", "JI_EXIT1", "JI_KIND0",
           "JI_KIND1", "JI_SALT0", "JI_SALT1", "N_JI", "JF_HOLDOUT_SHARE", "JF_PROPENSITY",
           "N_JF", "SI_ID", "SI_CH", "SI_DELAY_US", "SI_COND0", "SI_COND1", "SI_NEXT",
           "SI_OTHERWISE", "SI_TAG", "SI_PRIORITY", "SI_FB0", "SI_FB1", "SI_FB_UNREACHABLE",
           "SI_AT_MINUTE", "N_SI", "CI_EV", "CI_SINCE_ENTRY", "CI_CH", "CI_OWN", "CI_NEGATE", "N_CI", "C_ENTRY",
           "C_HOLDOUT", "C_NO_CONSENT", "C_MARKETING", "N_CODES"]

#: Columns of ``out_i`` (int64, one row per decision).
O_CH = 0          # CH code of the decision's channel (CH_NONE: no message); action = its name
O_POLICY = 1      # Strings code of the journey's policy name ("<journey>@<version>")
O_CAMPAIGN = 2    # Strings code of the campaign (the journey name)
O_STEP = 3        # Strings code of Decision.step (log ``step``): "entry", a step id; -1 none
O_REASON = 4      # Strings code of Decision.reason ("holdout", "no_consent"); -1 none
O_TAG = 5         # Strings code of Decision.tag
O_PRIORITY = 6    # Decision.priority
O_DEDUP = 7       # meta["dedup"] (1 when absent, as the pressure rules read it)
O_FU_STEP = 8     # follow-up's step index within its journey; -1: no follow-up
O_FU_JOURNEY = 9  # follow-up's journey index in the set; -1: no follow-up
N_OUT_INT = 10
#: Columns of ``out_f`` (float64, one row per decision).
F_PROPENSITY = 0
F_EXPECTED_VALUE = 1
F_FU_AT = 2       # follow-up instant, hours (NaN: no follow-up)
F_FU_ENTERED = 3  # follow-up payload's entered_at, hours (NaN: no follow-up)
F_FU_STEP_AT = 4  # follow-up payload's step_at (the instant this decision ran), hours
N_OUT_FLOAT = 5

_US_PER_H = 3.6e9
_DECIDED, _SENT, _UNSUB = EV["decided"], EV["sent"], EV["unsubscribed"]


# Columns of CompiledJourneys.ji (int64, one row per journey)
JI_NAME = 0          # Strings code of the journey name (its campaign)
JI_POLICY = 1        # Strings code of "<journey>@<version>"
JI_TRIGGERS = 2      # bit mask over TRIGGER codes: the behaviour triggers that enter
JI_COOLDOWN_US = 3   # Journey.cooldown_h, microseconds
JI_WAIT_US = 4       # Journey.longest_wait_h, microseconds
JI_MAX_ENTRIES = 5   # max_entries; -1: no limit
JI_STEP0 = 6         # global index of the journey's first step (its steps are contiguous)
JI_NSTEPS = 7        # number of steps
JI_EXIT0 = 8         # [JI_EXIT0, JI_EXIT1): exit_on EV codes in `lists` (names outside
JI_EXIT1 = 9         #   EVENTS dropped: nothing in a history matches them)
JI_KIND0 = 10        # [JI_KIND0, JI_KIND1): Journey._entry_kinds in `lists` as (step code,
JI_KIND1 = 11        #   kind) pairs, kinds _ENTRY, _FIRST, _LATER; other steps _BY_TIME
JI_SALT0 = 12        # [JI_SALT0, JI_SALT1): UTF-8 of f"{holdout_salt}:{journey}" in `salt`
JI_SALT1 = 13
N_JI = 14
# Columns of CompiledJourneys.jf (float64, one row per journey)
JF_HOLDOUT_SHARE = 0  # the holdout none's propensity
JF_PROPENSITY = 1     # 1 - holdout_share: the propensity of every other decision
N_JF = 2
# Columns of CompiledJourneys.si (int64, one row per step, all journeys)
SI_ID = 0            # Strings code of the step id
SI_CH = 1            # CH code (CH_NONE for a "none" step)
SI_DELAY_US = 2      # delay_h, microseconds
SI_COND0 = 3         # [SI_COND0, SI_COND1): the step's rows of `ci`
SI_COND1 = 4
SI_NEXT = 5          # step index (within the journey) after the conditions held; -1 exit/end
SI_OTHERWISE = 6     # ... after they did not (both resolved as Journey.target)
SI_TAG = 7           # Strings code of the tag
SI_PRIORITY = 8
SI_FB0 = 9           # [SI_FB0, SI_FB1): the fallback chain's CH codes in `lists`
SI_FB1 = 10
SI_FB_UNREACHABLE = 11  # fallback_if_unreachable (0/1)
SI_AT_MINUTE = 12    # at_local_hour as minute of the local day (0 .. 1439, _kernel_time's
                     #   minute_of_day: rounded to the minute, 24:00 -> 0); -1: none
N_SI = 13
# Columns of CompiledJourneys.ci (int64, one row per condition)
CI_EV = 0            # EV code
CI_SINCE_ENTRY = 1   # 1: since entry, 0: since the previous step
CI_CH = 2            # CH code; -1: any channel
CI_OWN = 3           # 1: the journey's own events only (the default resolved)
CI_NEGATE = 4
N_CI = 5
# Entries of CompiledJourneys.codes: Strings codes of fixed texts
C_ENTRY = 0          # "entry"
C_HOLDOUT = 1        # "holdout"
C_NO_CONSENT = 2     # "no_consent"
C_MARKETING = 3      # "marketing" (the tag of a none decision)
N_CODES = 4


class CompiledJourneys(NamedTuple):
    """A :class:`Journey` / :class:`JourneySet` as a few numpy arrays (``J`` journeys, ``S``
    steps of all journeys, ``C`` conditions of all steps), columns ``JI_*``, ``JF_*``,
    ``SI_*``, ``CI_*``. Packed into few arrays on purpose: numba passes every array of an
    argument tuple as separate scalars, so fewer arrays make a cheaper call. Durations are
    microseconds (``timedelta(hours=x)`` rounded as Python does); step indices in ``si``
    (``SI_NEXT``, ``SI_OTHERWISE``) and in follow-ups are within the journey."""

    ji: np.ndarray      # int64 (J, N_JI)
    jf: np.ndarray      # float64 (J, N_JF)
    si: np.ndarray      # int64 (S, N_SI)
    sf: np.ndarray      # float64 (S,): expected_value (currency units)
    ci: np.ndarray      # int64 (C, N_CI)
    lists: np.ndarray   # int64: exit events, entry kinds, fallback chains (see JI_*, SI_*)
    salt: np.ndarray    # uint8: holdout salts (see JI_SALT0)
    codes: np.ndarray   # int64 (N_CODES,)

    @property
    def n_journeys(self) -> int:
        return int(self.ji.shape[0])


def _us(hours: float) -> int:
    """``timedelta(hours=hours)`` in whole microseconds (Python's rounding)."""
    return timedelta(hours=hours) // timedelta(microseconds=1)


def compile_journeys(policy: object, strings: Strings) -> CompiledJourneys | None:
    """The compiled form of ``policy`` — a :class:`Journey`, or a :class:`JourneySet` whose
    members are all :class:`Journey` with distinct ``journey`` names — interning its texts in
    ``strings``; ``None`` for anything else (other policies, a set holding anything but
    journeys, or two journeys of one name).

    Supported: every :class:`Journey` — behaviour-trigger entry (the re-entry rules,
    ``reentry_cooldown_h``, ``max_entries``, the per-journey holdout), ``delay_h`` waits,
    ``at_local_hour`` (the user's zone row passed to :func:`journey_decide`; the re-entry
    waits ``span_h`` / ``longest_wait_h`` include its +24 h as the Python properties do),
    ``when`` conditions (``since`` entry/step, ``channel``, ``own`` true/false/default,
    ``negate``), ``next`` / ``otherwise`` / ``exit`` branches, ``none`` steps, ``exit_on``,
    tags, priorities, expected values, ``fallback_if_unreachable`` (the channel it picks).
    Templates, ``fallback`` chains and other message meta are not output (not logged, not
    read by the simulators)."""
    if isinstance(policy, Journey):
        journeys: Sequence[Journey] = (policy,)
    elif isinstance(policy, JourneySet) and all(isinstance(j, Journey) for j in policy.journeys):
        journeys = tuple(policy.journeys)  # type: ignore[assignment]
        if len({j.journey for j in journeys}) != len(journeys):
            return None  # a journey_step would go to every journey of that name
    else:
        return None
    ji, jf, si, sf, ci, lists, salt = [], [], [], [], [], [], bytearray()
    for j in journeys:
        mask = 0
        for kind in j.triggers:
            mask |= 1 << TRIGGER[kind]
        exit0 = len(lists)
        lists.extend(EV[e] for e in j.exit_on if e in EV)
        kind0 = len(lists)
        for sid, kind in j._entry_kinds.items():
            lists.extend((strings.code(sid), kind))
        salt0 = len(salt)
        salt.extend(f"{j.holdout_salt}:{j.journey}".encode())
        ji.append([0] * N_JI)
        row = ji[-1]
        row[JI_NAME], row[JI_POLICY], row[JI_TRIGGERS] = strings.code(j.journey), strings.code(j.name), mask
        row[JI_COOLDOWN_US], row[JI_WAIT_US] = _us(j.cooldown_h), _us(j.longest_wait_h)
        row[JI_MAX_ENTRIES] = -1 if j.max_entries is None else int(j.max_entries)
        row[JI_STEP0], row[JI_NSTEPS] = len(si), len(j.steps)
        row[JI_EXIT0], row[JI_EXIT1], row[JI_KIND0], row[JI_KIND1] = exit0, kind0, kind0, len(lists)
        row[JI_SALT0], row[JI_SALT1] = salt0, len(salt)
        jf.append([float(j.holdout_share), 1.0 - j.holdout_share])
        ids = [s.id for s in j.steps]
        for i, s in enumerate(j.steps):
            cond0 = len(ci)
            for c in s.when:
                own = c.own if c.own is not None else c.event in OWN_BY_DEFAULT
                ci.append([EV[c.event], int(c.since == "entry"),
                           -1 if c.channel is None else CH[c.channel], int(own), int(c.negate)])
            goto = []
            for g in (s.next, s.otherwise):  # as Journey.target
                if g is None:
                    goto.append(i + 1 if i + 1 < len(j.steps) else -1)
                else:
                    goto.append(-1 if g == EXIT else ids.index(g))
            fb0 = len(lists)
            lists.extend(CH[ch] for ch in (s.fallback or ()))
            srow = [0] * N_SI
            srow[SI_ID] = strings.code(s.id)
            srow[SI_CH] = CH_NONE if s.channel == NO_ACTION else CH[s.channel]
            srow[SI_DELAY_US] = _us(s.delay_h)
            srow[SI_COND0], srow[SI_COND1] = cond0, len(ci)
            srow[SI_NEXT], srow[SI_OTHERWISE] = goto
            srow[SI_TAG], srow[SI_PRIORITY] = strings.code(s.tag), int(s.priority)
            srow[SI_FB0], srow[SI_FB1] = fb0, len(lists)
            srow[SI_FB_UNREACHABLE] = int(bool(s.fallback_if_unreachable))
            srow[SI_AT_MINUTE] = -1 if s.at_local_hour is None else int(minute_of_day(float(s.at_local_hour)))
            si.append(srow)
            sf.append(float(s.expected_value))
    codes = [0] * N_CODES
    codes[C_ENTRY], codes[C_HOLDOUT] = strings.code(ENTRY_STEP), strings.code("holdout")
    codes[C_NO_CONSENT], codes[C_MARKETING] = strings.code("no_consent"), strings.code("marketing")

    def table(rows: list, width: int, dtype: type) -> np.ndarray:
        return np.asarray(rows, dtype=dtype).reshape(len(rows), width)

    return CompiledJourneys(
        ji=table(ji, N_JI, np.int64), jf=table(jf, N_JF, np.float64), si=table(si, N_SI, np.int64),
        sf=np.asarray(sf, dtype=np.float64), ci=table(ci, N_CI, np.int64),
        lists=np.asarray(lists, dtype=np.int64), salt=np.frombuffer(bytes(salt), dtype=np.uint8).copy(),
        codes=np.asarray(codes, dtype=np.int64))


def holdout_flags(cj_or_policy: CompiledJourneys | Journey | JourneySet,
                  user_ids: Sequence[str]) -> np.ndarray:
    """``bool (n_users, n_journeys)``: whether each user is in each journey's holdout
    (``in_holdout(user_id, holdout_share, f"{holdout_salt}:{journey}")``, as
    ``Journey._enter``), for :func:`journey_decide`'s ``holdout`` argument (one row)."""
    if isinstance(cj_or_policy, CompiledJourneys):
        cj = cj_or_policy
        raw = cj.salt.tobytes()
        salts = [raw[r[JI_SALT0]:r[JI_SALT1]].decode() for r in cj.ji]
        shares = [float(x) for x in cj.jf[:, JF_HOLDOUT_SHARE]]
    else:
        members = (cj_or_policy,) if isinstance(cj_or_policy, Journey) else cj_or_policy.journeys
        salts = [f"{j.holdout_salt}:{j.journey}" for j in members]
        shares = [float(j.holdout_share) for j in members]
    out = np.zeros((len(user_ids), len(salts)), dtype=np.bool_)
    for k, (share, salt) in enumerate(zip(shares, salts)):
        if share > 0:
            out[:, k] = [in_holdout(str(u), share, salt) for u in user_ids]
    return out


# -- the kernel -------------------------------------------------------------------------------
# _nrt=False: the kernel allocates nothing, and without reference counting on the many
# arrays it reads a call costs a fraction (the caller keeps the arrays alive).

@njit(inline="always", _nrt=False)
def _to_us(h):
    """Hours since start -> microseconds since start, as the engines round."""
    return np.int64(np.rint(h * _US_PER_H))


@njit(inline="always", _nrt=False)
def _kind(cj, j, step_code):
    """Journey._entry_kinds.get(step, _BY_TIME) for journey ``j``."""
    lists = cj.lists
    for k in range(cj.ji[j, JI_KIND0], cj.ji[j, JI_KIND1], 2):
        if lists[k] == step_code:
            return lists[k + 1]
    return np.int64(_BY_TIME)


@njit(inline="always", _nrt=False)
def _may_enter_recent(cj, j, now_us, h_t, h_ev, h_camp, h_step, n_h):
    """Journey._may_enter_recent: newest first, back to the last entry / cooldown start."""
    name, wait = cj.ji[j, JI_NAME], cj.ji[j, JI_WAIT_US]
    since = now_us - cj.ji[j, JI_COOLDOWN_US]
    code_entry = cj.codes[C_ENTRY]
    newest = True
    pending = -1
    later = np.int64(0)
    for i in range(n_h - 1, -1, -1):
        ev = h_ev[i]
        if h_camp[i] != name or (ev != _DECIDED and ev != _SENT):
            continue
        t = _to_us(h_t[i])
        if newest and now_us - t < wait:
            return False  # a run may still be going
        newest = False
        if pending == _BY_TIME:
            if later - t >= wait:
                return False  # ``later`` is the last entry, after ``since``
            pending = -1
        elif pending == _FIRST and ev == _DECIDED:
            if h_step[i] != code_entry:
                return False  # the pending first step is the last entry, after ``since``
            pending = -1
        if t <= since:
            if pending == -1:
                return True  # the last entry is this row or older
            continue
        if ev == _DECIDED:
            kind = _kind(cj, j, h_step[i])
            if kind == _ENTRY:
                return False
            if kind != _LATER:
                pending = kind
                later = t
            else:
                pending = -1
        elif pending != _FIRST:
            pending = -1
    return pending == -1


@njit(inline="always", _nrt=False)
def _may_enter_counted(cj, j, now_us, h_t, h_ev, h_camp, h_step, n_h):
    """Journey._may_enter (with max_entries): the entries of the whole history, in order."""
    name, wait = cj.ji[j, JI_NAME], cj.ji[j, JI_WAIT_US]
    code_entry = cj.codes[C_ENTRY]
    last_i = -1
    for i in range(n_h - 1, -1, -1):
        if h_camp[i] == name and (h_ev[i] == _DECIDED or h_ev[i] == _SENT):
            last_i = i
            break
    if last_i < 0:
        return True
    if now_us - _to_us(h_t[last_i]) < wait:
        return False  # a run may still be going
    n_entries = 0
    last_entry = np.int64(0)
    last = np.int64(0)
    has_last = False
    last_step = -1
    for i in range(last_i + 1):
        ev = h_ev[i]
        if h_camp[i] != name or (ev != _DECIDED and ev != _SENT):
            continue
        t = _to_us(h_t[i])
        if ev == _DECIDED:
            step = h_step[i]
            kind = _kind(cj, j, step)
            if (kind == _ENTRY or (kind == _FIRST and last_step != code_entry)
                    or (kind == _BY_TIME and (not has_last or t - last >= wait))):
                n_entries += 1
                last_entry = t
            last_step = step
        last = t
        has_last = True
    if n_entries > 0 and now_us - last_entry < cj.ji[j, JI_COOLDOWN_US]:
        return False
    return n_entries < cj.ji[j, JI_MAX_ENTRIES]


@njit(inline="always", _nrt=False)
def _can_message(ch, consent, h_ev, h_ch, n_h):
    """Context.can_message: consent, and no ``unsubscribed`` on ``ch`` in the history."""
    if not consent[ch]:
        return False
    for i in range(n_h - 1, -1, -1):
        if h_ev[i] == _UNSUB and h_ch[i] == ch:
            return False
    return True


@njit(inline="always", _nrt=False)
def _write(cj, out_i, out_f, row, j, ch, step, reason, tag, priority, dedup, propensity,
           expected_value):
    """One decision of journey ``j`` at ``row``, without a follow-up."""
    out_i[row, O_CH] = ch
    out_i[row, O_POLICY] = cj.ji[j, JI_POLICY]
    out_i[row, O_CAMPAIGN] = cj.ji[j, JI_NAME]
    out_i[row, O_STEP] = step
    out_i[row, O_REASON] = reason
    out_i[row, O_TAG] = tag
    out_i[row, O_PRIORITY] = priority
    out_i[row, O_DEDUP] = dedup
    out_i[row, O_FU_STEP] = -1
    out_i[row, O_FU_JOURNEY] = -1
    out_f[row, F_PROPENSITY] = propensity
    out_f[row, F_EXPECTED_VALUE] = expected_value
    out_f[row, F_FU_AT] = np.nan
    out_f[row, F_FU_ENTERED] = np.nan
    out_f[row, F_FU_STEP_AT] = np.nan


@njit(inline="always", _nrt=False)
def _none(cj, out_i, out_f, row, j, step, reason):
    """A ``none`` decision (Journey's ``no_message``) of journey ``j``."""
    _write(cj, out_i, out_f, row, j, CH_NONE, step, reason, cj.codes[C_MARKETING], 0, 1,
           cj.jf[j, JF_PROPENSITY], 0.0)


@njit(inline="always", _nrt=False)
def _due_us(cj, s, after_us, tz_changes, tz_offsets):
    """Step.due of global step ``s`` after ``after_us`` [µs since start]: its delay added as
    whole microseconds, then (``at_local_hour``) the next instant the local clock reads that
    minute; ``I64_MAX`` when the zone row does not reach it."""
    t = after_us + cj.si[s, SI_DELAY_US]
    minute = cj.si[s, SI_AT_MINUTE]
    if minute >= 0:
        t = next_local_hour_us(t, minute, tz_changes, tz_offsets)
    return t


@njit(inline="always", _nrt=False)
def _follow(cj, out_i, out_f, row, j, k, at_us, now_h, entered_h):
    """Row's follow-up: journey ``j``'s step ``k`` (within it), due at ``at_us`` (its
    :func:`_due_us`, so the engines' datetime of it is Step.due's; ``I64_MAX``: +inf)."""
    out_i[row, O_FU_STEP] = k
    out_i[row, O_FU_JOURNEY] = j
    out_f[row, F_FU_AT] = np.inf if at_us == I64_MAX else at_us / _US_PER_H
    out_f[row, F_FU_ENTERED] = entered_h
    out_f[row, F_FU_STEP_AT] = now_h


@njit(inline="always", _nrt=False)
def _run(cj, j, k, entered_h, step_at_h, now_h, now_us, h_t, h_ev, h_ch, h_camp, n_h,
         consent, out_i, out_f, row, tz_changes, tz_offsets):
    """Journey._run of step ``k`` (within journey ``j``): one decision at ``row``."""
    if k < 0 or k >= cj.ji[j, JI_NSTEPS]:  # not a step of this journey: exit (step unknown)
        _none(cj, out_i, out_f, row, j, -1, -1)
        return
    s = cj.ji[j, JI_STEP0] + k
    si, h_name = cj.si, cj.ji[j, JI_NAME]
    step_code = si[s, SI_ID]
    entered = _to_us(entered_h)
    # exits: an exit_on event strictly after entry (newest first, back to entry)
    e0, e1 = cj.ji[j, JI_EXIT0], cj.ji[j, JI_EXIT1]
    if e1 > e0:
        for i in range(n_h - 1, -1, -1):
            if _to_us(h_t[i]) <= entered:
                break
            ev = h_ev[i]
            for e in range(e0, e1):
                if cj.lists[e] == ev:
                    _none(cj, out_i, out_f, row, j, step_code, -1)
                    return
    ok = True
    step_at = _to_us(step_at_h)
    for c in range(si[s, SI_COND0], si[s, SI_COND1]):
        since = entered if cj.ci[c, CI_SINCE_ENTRY] else step_at
        own, ev, ch = cj.ci[c, CI_OWN] != 0, cj.ci[c, CI_EV], cj.ci[c, CI_CH]
        found = False
        for i in range(n_h - 1, -1, -1):
            t = _to_us(h_t[i])
            if t < since or (t == since and not own):
                break  # older than since (at since, only own messages count)
            if h_ev[i] == ev and (ch < 0 or h_ch[i] == ch) and (not own or h_camp[i] == h_name):
                found = True
                break
        if found == (cj.ci[c, CI_NEGATE] != 0):
            ok = False
            break
    nxt = si[s, SI_NEXT] if ok else si[s, SI_OTHERWISE]
    step_ch = si[s, SI_CH]
    if not ok or step_ch == CH_NONE:
        _none(cj, out_i, out_f, row, j, step_code, -1)
    else:
        channel = -1
        if _can_message(step_ch, consent, h_ev, h_ch, n_h):
            channel = step_ch
        elif si[s, SI_FB_UNREACHABLE]:
            for f in range(si[s, SI_FB0], si[s, SI_FB1]):
                if _can_message(cj.lists[f], consent, h_ev, h_ch, n_h):
                    channel = cj.lists[f]
                    break
        if channel < 0:
            _none(cj, out_i, out_f, row, j, step_code, cj.codes[C_NO_CONSENT])
        else:
            _write(cj, out_i, out_f, row, j, channel, step_code, -1, si[s, SI_TAG],
                   si[s, SI_PRIORITY], 1 if k == 0 else 0, cj.jf[j, JF_PROPENSITY], cj.sf[s])
    if nxt >= 0:
        at = _due_us(cj, cj.ji[j, JI_STEP0] + nxt, now_us, tz_changes, tz_offsets)
        _follow(cj, out_i, out_f, row, j, nxt, at, now_h, entered_h)


@njit(_nrt=False)
def journey_decide(cj, trigger, fu_journey, fu_step, fu_entered_h, fu_step_at_h, now_h,
                   h_t, h_ev, h_ch, h_camp, h_tag, h_step, n_h, consent, holdout, out_i, out_f,
                   tz_changes, tz_offsets):
    """The decisions of ``JourneySet.decide`` / ``Journey.decide`` for one user and trigger.

    Parameters
    ----------
    cj : CompiledJourneys
    trigger : int
        TRIGGER code; ``JOURNEY_STEP`` for a follow-up, whose payload ``fu_*`` give.
    fu_journey, fu_step : int
        The follow-up's journey index in the set and step index within that journey
        (``O_FU_JOURNEY`` / ``O_FU_STEP`` of the decision that scheduled it).
    fu_entered_h, fu_step_at_h : float
        The follow-up's ``entered_at`` and ``step_at``, hours since start (``F_FU_ENTERED``,
        ``F_FU_STEP_AT``); ignored for behaviour triggers.
    now_h : float
        The decision instant (a follow-up's: its ``F_FU_AT``), hours since start.
    h_t, h_ev, h_ch, h_camp, h_tag, h_step : arrays
        The user's history, oldest first: hours since start, EV, CH and Strings codes (campaign,
        tag, log step); the first ``n_h`` rows are read. ``h_tag`` is not (journeys read no tag).
    consent : bool array (3,)
        Per message channel (CH code): reachable and consented.
    holdout : bool array (J,)
        Whether the user is in each journey's holdout (:func:`holdout_flags`).
    out_i : int64 (>= J, N_OUT_INT), out_f : float64 (>= J, N_OUT_FLOAT)
        Decisions written from row 0, columns ``O_*`` / ``F_*``.
    tz_changes : float64 (K,), tz_offsets : float64 (K + 1,)
        The user's zone row of :func:`~omnisim.policies._kernel_time.utc_offset_table`
        (built with the run's ``start``), for steps with ``at_local_hour``; read only for
        those (journeys without any may pass a zone without changes, e.g. ``np.zeros(0)``
        and ``np.zeros(1)``).

    Returns
    -------
    int
        The number of decisions written: for a behaviour trigger at most one per journey, in
        the set's order; for a ``journey_step`` one, from journey ``fu_journey``.
    """
    now_us = _to_us(now_h)
    if trigger == JOURNEY_STEP:
        _run(cj, fu_journey, fu_step, fu_entered_h, fu_step_at_h, now_h, now_us, h_t, h_ev,
             h_ch, h_camp, n_h, consent, out_i, out_f, 0, tz_changes, tz_offsets)
        return 1
    n = 0
    bit = np.int64(1) << trigger
    ji = cj.ji
    for j in range(ji.shape[0]):
        if not ji[j, JI_TRIGGERS] & bit:
            continue
        if ji[j, JI_MAX_ENTRIES] < 0:
            if not _may_enter_recent(cj, j, now_us, h_t, h_ev, h_camp, h_step, n_h):
                continue
        elif not _may_enter_counted(cj, j, now_us, h_t, h_ev, h_camp, h_step, n_h):
            continue
        if holdout[j]:
            _write(cj, out_i, out_f, n, j, CH_NONE, -1, cj.codes[C_HOLDOUT],
                   cj.codes[C_MARKETING], 0, 1, cj.jf[j, JF_HOLDOUT_SHARE], 0.0)
        else:
            at = _due_us(cj, ji[j, JI_STEP0], now_us, tz_changes, tz_offsets)
            if at <= now_us:  # the first step is due at once
                _run(cj, j, 0, now_h, now_h, now_h, now_us, h_t, h_ev, h_ch, h_camp, n_h,
                     consent, out_i, out_f, n, tz_changes, tz_offsets)
            else:  # the wait before the first step
                _none(cj, out_i, out_f, n, j, cj.codes[C_ENTRY], -1)
                _follow(cj, out_i, out_f, n, j, 0, at, now_h, now_h)
        n += 1
    return n
