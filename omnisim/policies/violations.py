"""Count pressure-rule violations in an engagement log (the experiment layer's
``cap_violations`` and ``quiet_hour_violations`` metrics).

Vectorised per rule with numpy; sends are grouped by user and ordered by time (log order
for ties). Re-exported from :mod:`omnisim.policies.pressure`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from omnisim.policies.pressure import PressureRules

#: History events that make a user "engaged" for adaptive caps.
ENGAGEMENT_EVENTS = ("opened", "clicked")


def count_violations(log: pd.DataFrame, users: pd.DataFrame, rules: PressureRules) -> dict[str, int]:
    """Cap and quiet-hour violations among a log's ``sent`` rows.

    A violation is a non-exempt send (by its ``tag`` column if the log has one, else
    ``marketing``) that falls in an applicable quiet window, or that makes a cap's window
    ending at it hold more counted sends than the cap's limit (the engaged limit when the
    user had enough ``opened``/``clicked`` rows in the log). Sends at equal timestamps are
    taken in log order. ``users`` needs ``user_id`` and ``timezone``. Returns
    ``{"cap_violations", "quiet_hour_violations", "sends_checked"}``.
    """
    sent = log.loc[log["event"] == "sent"]
    tz_of = dict(zip(users["user_id"].astype(str), users["timezone"].astype(str)))
    uid = sent["user_id"].astype(str).to_numpy()
    codes, names = pd.factorize(uid)
    ts = pd.to_datetime(sent["ts"], utc=True).reset_index(drop=True)
    ns = _ns(ts)
    order = np.lexsort((ns, codes))  # by user, then time; stable, so ties keep log order
    raw_tags = sent["tag"] if "tag" in sent.columns else pd.Series(None, index=sent.index, dtype=object)
    tags = raw_tags.astype(object).where(raw_tags.notna(), "marketing").to_numpy()[order]
    chans = sent["channel"].astype(str).to_numpy()[order]
    zones = pd.Series(names[codes]).map(tz_of).fillna("UTC").to_numpy()
    hour, day_start, week_start = _local_features(ts, zones)
    codes, ns, hour = codes[order], ns[order], hour[order]
    starts = {"day": day_start[order], "week": week_start[order]}

    exempt = np.isin(tags, list(rules.exempt_tags))
    counts = ~exempt | rules.exempt_counts
    quiet = np.zeros(len(ns), dtype=bool)
    for q in rules.quiet_hours:
        active = ((hour >= q.start_h) & (hour < q.end_h) if q.start_h <= q.end_h
                  else (hour >= q.start_h) | (hour < q.end_h))
        quiet |= active & (np.isin(chans, q.channels) if q.channels is not None else True)
    bounds = np.flatnonzero(np.diff(codes)) + 1
    segments = list(zip(np.r_[0, bounds], np.r_[bounds, len(ns)]))
    engaged = _engaged(log, names, codes, ns, segments, rules)

    cap_v = 0
    for cap in rules.caps:
        applies = ((chans == cap.channel) if cap.channel is not None else True) & (
            (tags == cap.tag) if cap.tag is not None else True) & np.ones(len(ns), dtype=bool)
        cum = np.r_[0, np.cumsum(applies & counts)]
        if cap.window_h is not None:
            bound, side = ns - int(round(cap.window_h * 3600e9)), "right"
        else:
            bound, side = starts[cap.calendar], "left"
        lo = np.empty(len(ns), dtype=np.int64)
        for a, b in segments:
            lo[a:b] = a + np.searchsorted(ns[a:b], bound[a:b], side=side)
        n_in_window = cum[np.arange(len(ns)) + 1] - cum[lo]
        limit = np.where(engaged, cap.limit(True), cap.limit(False))
        cap_v += int(np.sum(applies & ~exempt & (n_in_window > limit)))
    return {"cap_violations": cap_v, "quiet_hour_violations": int(np.sum(quiet & ~exempt)),
            "sends_checked": int(len(ns))}


def _ns(ts: pd.Series) -> np.ndarray:
    """UTC timestamps as int64 nanoseconds since the epoch."""
    return ts.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[ns]").astype(np.int64)


def _local_features(ts: pd.Series, zones: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: local fractional hour, and the UTC ns of the local day's and week's start."""
    hour = np.zeros(len(ts))
    day_start = np.zeros(len(ts), dtype=np.int64)
    week_start = np.zeros(len(ts), dtype=np.int64)
    for tz in pd.unique(zones):
        m = zones == tz
        local = ts[m].dt.tz_convert(tz)
        hour[m] = (local.dt.hour + local.dt.minute / 60 + local.dt.second / 3600).to_numpy()
        day = local.dt.tz_localize(None).dt.normalize()
        week = day - pd.to_timedelta(local.dt.day_of_week, unit="D")
        for naive, out in ((day, day_start), (week, week_start)):
            aware = naive.dt.tz_localize(tz, ambiguous=np.ones(len(naive), dtype=bool),
                                         nonexistent="shift_forward")
            out[m] = _ns(aware)
    return hour, day_start, week_start


def _engaged(log: pd.DataFrame, names: np.ndarray, codes: np.ndarray, ns: np.ndarray,
             segments: list[tuple[int, int]], rules: PressureRules) -> np.ndarray:
    """Per (sorted) send: was the user engaged then (opens/clicks in the window)?"""
    if not any(c.engaged_max is not None for c in rules.caps) or not len(ns):
        return np.zeros(len(ns), dtype=bool)
    eng = log.loc[log["event"].isin(ENGAGEMENT_EVENTS)]
    eng_ns = _ns(pd.to_datetime(eng["ts"], utc=True).reset_index(drop=True))
    eng_codes = pd.Index(names).get_indexer(eng["user_id"].astype(str))
    keep = eng_codes >= 0
    order = np.lexsort((eng_ns[keep], eng_codes[keep]))
    eng_ns, eng_codes = eng_ns[keep][order], eng_codes[keep][order]
    window = int(round(rules.engaged_window_h * 3600e9))
    out = np.zeros(len(ns), dtype=bool)
    for a, b in segments:
        code = codes[a]
        mine = eng_ns[np.searchsorted(eng_codes, code, "left"):np.searchsorted(eng_codes, code, "right")]
        n = np.searchsorted(mine, ns[a:b], "right") - np.searchsorted(mine, ns[a:b] - window, "right")
        out[a:b] = n >= rules.engaged_min_interactions
    return out
