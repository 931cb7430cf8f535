"""Engagement analysis on any valid log: attribution, funnel, rates and lifts with CIs.

The unit of analysis is the **decision** (a ``decided`` row). Every later event is
attributed to at most one decision:

1. an event whose ``message_id`` equals a decided row's ``message_id`` goes to that decision;
2. otherwise, an event whose ``message_id`` equals a ``sent`` row's goes to the decision that
   ``sent`` row was attributed to;
3. otherwise (no usable ``message_id``: visits, purchases, sends of logs that do not put
   the message id on the decision) it goes to the **same user's latest decision** at or
   before the event — for message events (sent, delivered, opened, clicked) the latest
   decision *on the event's channel* — provided the event is at most
   ``outcome_window_days`` after it (inclusive); events with no such decision are not
   attributed (last-touch attribution).

:func:`decision_outcomes` returns one row per decision with a boolean column per funnel
stage present in the log (``sent``, ``delivered``, ``opened``, ``clicked``, ``visit``,
``purchase``: "did at least one such event follow this decision"), ``value`` (sum of
attributed ``purchase`` values, in the log's currency, 0 when none) and the decision's
``channel`` / ``campaign`` / ``action`` / ``policy``. Every other function accepts either a
log or that table.

Intervals: Wilson score for proportions; Student t for means; for differences (lift over
the baseline action) the normal (Wald, unpooled) interval for proportions and Welch's t
interval for means. ``confidence`` is the two-sided level, e.g. 0.95.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from omnisim.stats import mean_sd_ci, wald_diff_ci, welch_diff_ci, wilson_ci, z_value

__all__ = [
    "FUNNEL_STAGES", "GROUP_COLUMNS", "breakdown", "decision_outcomes", "funnel", "lift_table",
    "load_users", "mean_interval", "presentable", "with_attribute", "outcome_columns", "rates_with_ci", "summary", "to_records",
    "wilson_interval",
]

#: Funnel stages in order; a log shows the ones it has events for.
FUNNEL_STAGES: tuple[str, ...] = ("decided", "sent", "delivered", "opened", "clicked", "visit", "purchase")
#: Decision attributes the report groups by.
GROUP_COLUMNS: tuple[str, ...] = ("channel", "campaign", "action")
#: Stages that are message events (attributed within the message's channel).
MESSAGE_STAGES: tuple[str, ...] = ("sent", "delivered", "opened", "clicked")
MISSING_LABEL = "(none)"


# --------------------------------------------------------------------------- intervals

def _z(confidence: float) -> float:
    return z_value(confidence)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval ``(lo, hi)`` for ``successes / n``; ``(nan, nan)`` when n == 0.

    A thin view of :func:`omnisim.stats.wilson_ci` (the one implementation).
    """
    _, lo, hi = wilson_ci(successes, n, confidence)
    return (lo, hi)


def mean_interval(x: Sequence[float] | np.ndarray | pd.Series, confidence: float = 0.95) -> tuple[float, float, float, float]:
    """``(mean, sd, lo, hi)``: Student t interval for the mean of ``x`` (sd with ddof=1).

    With fewer than two values the interval is ``(nan, nan)``. See :func:`omnisim.stats.mean_sd_ci`.
    """
    return mean_sd_ci(x, confidence)


# --------------------------------------------------------------------------- attribution

def _is_units(df: pd.DataFrame) -> bool:
    return "decision_ts" in df.columns and "event" not in df.columns


def decision_outcomes(
    log: pd.DataFrame,
    outcome_window_days: float = 14.0,
    *,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
    channels: Iterable[str] | None = None,
    keep_holdouts: bool = True,
) -> pd.DataFrame:
    """One row per decision with its attributed outcomes (see the module docstring).

    Parameters
    ----------
    log
        a validated engagement log (:func:`omnisim.log.validate` / ``read_log``).
    outcome_window_days
        how long after a decision (days, inclusive) an event without a usable message_id
        may be attributed to it.
    start, end
        keep decisions with ``start <= ts <= end`` (UTC; a date alone means its whole day for
        ``end``); ``None`` = unbounded. Outcomes after ``end`` still count within the window.
    channels
        keep decisions on these channels; ``None`` = all. With ``keep_holdouts`` the
        decisions on channel ``none`` (no message: the control group) are kept too.

    Returns
    -------
    DataFrame with ``decision_id`` (row of the decided event in ``log``), ``decision_ts``,
    ``user_id``, ``channel``, ``campaign``, ``action``, ``policy``, ``propensity``, a bool
    column per funnel stage present in the log (``decided`` is always True), ``value``
    (float, sum of attributed purchase values) and ``purchases`` (int count).

    Raises ``ValueError`` when no decision is left (none in the log, or none in the filter).
    """
    if outcome_window_days < 0:
        raise ValueError(f"outcome_window_days must be >= 0 (days); got {outcome_window_days!r}")
    log = log.reset_index(drop=True)
    event = log["event"].astype("string")
    dec_mask = (event == "decided").to_numpy()
    if not dec_mask.any():
        raise ValueError("the log has no 'decided' rows; the engagement report needs decisions "
                         f"to attribute outcomes to (events found: {', '.join(sorted(event.dropna().unique()))})")
    dec = log.loc[dec_mask, ["ts", "user_id", "channel", "campaign", "action", "policy", "propensity",
                             "message_id"]].copy()
    dec["decision_id"] = np.flatnonzero(dec_mask)
    later_stages = [s for s in FUNNEL_STAGES[1:] if (event == s).any()]
    ev_mask = event.isin(later_stages).fillna(False).to_numpy()
    ev = log.loc[ev_mask, ["ts", "user_id", "channel", "event", "message_id", "value"]].copy()
    ev["event"] = ev["event"].astype("string")
    ev["decision_id"] = pd.array([pd.NA] * len(ev), dtype="Int64")

    # 1. message_id of a decided row
    dmid = dec.dropna(subset=["message_id"]).drop_duplicates("message_id", keep="last")
    by_dec_mid = pd.Series(dmid["decision_id"].to_numpy(), index=dmid["message_id"].to_numpy())
    has_mid = ev["message_id"].notna()
    if len(by_dec_mid):
        ev.loc[has_mid, "decision_id"] = ev.loc[has_mid, "message_id"].map(by_dec_mid).astype("Int64")

    # 3 (for sends first, so that step 2 can follow them): latest decision of the same user
    window = pd.Timedelta(days=float(outcome_window_days))

    def asof(rows: pd.DataFrame, same_channel: bool) -> pd.Series:
        """Latest decision of the same user (and channel) at or before each row, within the window."""
        if rows.empty:
            return pd.Series([], dtype="Int64", index=rows.index)
        by = ["user_id", "channel"] if same_channel else ["user_id"]
        left = rows[["ts", *by]].assign(_i=rows.index).sort_values("ts", kind="stable")
        right = dec[["ts", *by, "decision_id"]].sort_values("ts", kind="stable")
        left = left.astype({c: object for c in by})
        right = right.astype({c: object for c in by})
        m = pd.merge_asof(left, right, on="ts", by=by, direction="backward", tolerance=window)
        return pd.Series(m["decision_id"].to_numpy(), index=m["_i"].to_numpy()).astype("Int64")

    message = ev["event"].isin(MESSAGE_STAGES).to_numpy()

    todo = ev["decision_id"].isna() & (ev["event"] == "sent")
    ev.loc[todo, "decision_id"] = asof(ev.loc[todo], same_channel=True)
    # 2. message_id of a sent row
    sent = ev[(ev["event"] == "sent") & ev["message_id"].notna() & ev["decision_id"].notna()]
    by_sent_mid = pd.Series(sent["decision_id"].to_numpy(), index=sent["message_id"].to_numpy())
    by_sent_mid = by_sent_mid[~by_sent_mid.index.duplicated(keep="last")]
    todo = ev["decision_id"].isna() & has_mid
    if todo.any() and len(by_sent_mid):
        ev.loc[todo, "decision_id"] = ev.loc[todo, "message_id"].map(by_sent_mid).astype("Int64")
    # 3. the rest: message events to a decision on their channel, behaviour to any decision
    todo = ev["decision_id"].isna() & message
    ev.loc[todo, "decision_id"] = asof(ev.loc[todo], same_channel=True)
    todo = ev["decision_id"].isna() & ~message
    ev.loc[todo, "decision_id"] = asof(ev.loc[todo], same_channel=False)
    ev = ev.dropna(subset=["decision_id"])

    units = pd.DataFrame({
        "decision_id": dec["decision_id"].to_numpy(),
        "decision_ts": dec["ts"].to_numpy(),
        "user_id": dec["user_id"].astype("string").to_numpy(),
    })
    for col in GROUP_COLUMNS + ("policy",):
        units[col] = dec[col].astype("string").fillna(MISSING_LABEL).to_numpy()
    units["propensity"] = dec["propensity"].to_numpy()
    units["decision_ts"] = pd.to_datetime(units["decision_ts"], utc=True)
    ids = units["decision_id"].to_numpy()
    units["decided"] = True
    for stage in later_stages:
        hit = ev.loc[ev["event"] == stage, "decision_id"].astype("int64").unique()
        units[stage] = np.isin(ids, hit)
    pur = ev[ev["event"] == "purchase"]
    val = pur.groupby(pur["decision_id"].astype("int64"))["value"].sum(min_count=1).fillna(0.0)
    cnt = pur.groupby(pur["decision_id"].astype("int64")).size()
    units["value"] = pd.Series(ids).map(val).fillna(0.0).astype("float64").to_numpy()
    units["purchases"] = pd.Series(ids).map(cnt).fillna(0).astype("int64").to_numpy()

    keep = np.ones(len(units), dtype=bool)
    if start is not None:
        keep &= (units["decision_ts"] >= _ts(start, "start")).to_numpy()
    if end is not None:
        end_ts = _ts(end, "end")
        if isinstance(end, str) and len(end.strip()) == 10:  # a bare date: the whole day
            end_ts = end_ts + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)
        keep &= (units["decision_ts"] <= end_ts).to_numpy()
    if channels is not None:
        chans = [channels] if isinstance(channels, str) else list(channels)
        ok = units["channel"].isin(chans + (["none"] if keep_holdouts else []))
        keep &= ok.to_numpy()
    units = units[keep].reset_index(drop=True)
    if units.empty:
        raise ValueError(f"no decisions left after filtering (start={start!r}, end={end!r}, "
                         f"channels={channels!r}); widen the date range or the channel list")
    return units


def _ts(value: str | pd.Timestamp, name: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise ValueError(f"{name} {value!r} is not a date; expected ISO 8601, e.g. '2024-03-01'") from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _units(df: pd.DataFrame, outcome_window_days: float) -> pd.DataFrame:
    return df if _is_units(df) else decision_outcomes(df, outcome_window_days)


def outcome_columns(units: pd.DataFrame, *, include_sent: bool = False) -> list[str]:
    """The binary outcomes present in ``units`` (funnel stages after ``decided``), in order.

    ``sent`` and ``delivered`` are left out unless ``include_sent`` (they describe delivery,
    not response).
    """
    skip = {"decided"} | (set() if include_sent else {"sent", "delivered"})
    return [s for s in FUNNEL_STAGES if s in units.columns and s not in skip]


# --------------------------------------------------------------------------- tables

def _group_frame(units: pd.DataFrame, by: Sequence[str]) -> list[str]:
    by = [by] if isinstance(by, str) else list(by)
    missing = [c for c in by if c not in units.columns]
    if missing:
        raise ValueError(f"cannot group by {', '.join(map(repr, missing))}: not a column; "
                         f"available: {', '.join(map(str, units.columns))}")
    return by


def funnel(log: pd.DataFrame, by: Sequence[str] = GROUP_COLUMNS, outcome_window_days: float = 14.0) -> pd.DataFrame:
    """Decisions reaching each funnel stage, per group.

    ``log`` is a log or a :func:`decision_outcomes` table. Returns the ``by`` columns and
    one count column per stage present in the data (``decided``, then ``sent``, ...,
    ``purchase``): the number of decisions followed by at least one event of that stage.
    Stages are not forced to nest (a click without a logged open still counts).
    """
    units = _units(log, outcome_window_days)
    by = _group_frame(units, by)
    stages = [s for s in FUNNEL_STAGES if s in units.columns]
    out = units.groupby(by, sort=True, dropna=False)[stages].sum().astype("int64").reset_index()
    return out


def rates_with_ci(
    log: pd.DataFrame,
    outcome: str,
    by: Sequence[str] = GROUP_COLUMNS,
    confidence: float = 0.95,
    outcome_window_days: float = 14.0,
) -> pd.DataFrame:
    """Per group, the rate of a binary outcome (Wilson CI) or the mean of ``value`` (t CI).

    Parameters
    ----------
    log
        a log or a :func:`decision_outcomes` table.
    outcome
        a funnel stage (``opened``, ``clicked``, ``visit``, ``purchase``, ...: share of
        decisions followed by it) or ``value`` (mean purchase value per decision, e.g.
        dollars of spend per customer on Hillstrom).

    Returns
    -------
    DataFrame: the ``by`` columns, ``outcome``, ``n`` (decisions), ``successes`` (binary;
    NaN for means), ``estimate`` (rate in [0, 1] or mean value), ``sd`` (means), ``lo``,
    ``hi``, ``method`` (``wilson`` or ``t``), ``confidence``.
    """
    units = _units(log, outcome_window_days)
    by = _group_frame(units, by)
    if outcome not in units.columns or outcome not in (*FUNNEL_STAGES[1:], "value"):
        raise ValueError(f"unknown outcome {outcome!r}; this log has: "
                         f"{', '.join(outcome_columns(units, include_sent=True) + ['value'])}")
    rows = []
    for key, g in units.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row: dict[str, Any] = dict(zip(by, key))
        row["outcome"] = outcome
        row["n"] = len(g)
        if outcome == "value":
            m, sd, lo, hi = mean_interval(g["value"], confidence)
            row.update(successes=math.nan, estimate=m, sd=sd, lo=lo, hi=hi, method="t")
        else:
            k = int(g[outcome].sum())
            lo, hi = wilson_interval(k, len(g), confidence)
            row.update(successes=k, estimate=k / len(g), sd=math.nan, lo=lo, hi=hi, method="wilson")
        row["confidence"] = confidence
        rows.append(row)
    return pd.DataFrame(rows)


LIFT_COLUMNS = ("outcome", "action", "baseline", "n", "n_baseline", "estimate", "baseline_estimate",
                "diff", "lo", "hi", "relative", "p_value", "method", "confidence")


def lift_table(
    log: pd.DataFrame,
    outcome: str,
    confidence: float = 0.95,
    *,
    baseline: str = "none",
    by: str | None = None,
    outcome_window_days: float = 14.0,
) -> pd.DataFrame:
    """The lift of each action over the ``baseline`` action, with a CI.

    ``diff = estimate(action) - estimate(baseline)`` where estimate is the rate of a binary
    ``outcome`` or the mean ``value`` per decision. Intervals: for proportions the normal
    (Wald) interval ``diff ± z·sqrt(p1(1-p1)/n1 + p0(1-p0)/n0)`` with a two-sided z-test
    p-value; for ``value`` Welch's t interval and test. ``relative = diff / baseline_estimate``.
    Decisions are pooled over channel and campaign; with ``by`` (a column of the table,
    e.g. a user attribute joined in) the comparison is made within each level.

    Returns an empty table (columns :data:`LIFT_COLUMNS`) when no decision took ``baseline``:
    the caller should say that lift cannot be computed.
    """
    units = _units(log, outcome_window_days)
    if outcome != "value" and (outcome not in units.columns or outcome not in FUNNEL_STAGES):
        raise ValueError(f"unknown outcome {outcome!r}; this log has: "
                         f"{', '.join(outcome_columns(units, include_sent=True) + ['value'])}")
    _z(confidence)
    cols = list(LIFT_COLUMNS) if by is None else [by, *LIFT_COLUMNS]
    if by is not None:
        _group_frame(units, [by])
        groups = list(units.groupby(by, sort=True, dropna=False))
    else:
        groups = [(None, units)]
    rows = []
    for level, g in groups:
        base = g[g["action"] == baseline]
        if base.empty:
            continue
        y0 = base[outcome].astype("float64").to_numpy()
        for action, t in g[g["action"] != baseline].groupby("action", sort=True):
            y1 = t[outcome].astype("float64").to_numpy()
            n1, n0 = len(y1), len(y0)
            m1, m0 = y1.mean(), y0.mean()
            if outcome == "value":
                diff, lo, hi, p = welch_diff_ci(y1, y0, confidence)
                method = "welch_t"
            else:
                diff, lo, hi, p = wald_diff_ci(y1.sum(), n1, y0.sum(), n0, confidence)
                method = "wald"
            row = {
                "outcome": outcome, "action": action, "baseline": baseline, "n": n1, "n_baseline": n0,
                "estimate": m1, "baseline_estimate": m0, "diff": diff,
                "lo": lo, "hi": hi,
                "relative": diff / m0 if m0 else math.nan, "p_value": p, "method": method,
                "confidence": confidence,
            }
            if by is not None:
                row[by] = level
            rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def load_users(path: str | Path | None) -> pd.DataFrame | None:
    """Read a users table (Parquet, CSV or CSV.gz) keyed by a unique ``user_id``; None → None."""
    if path is None or (isinstance(path, str) and not path.strip()):
        return None
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: users table not found (looked at {path.resolve()}); "
                                "expected a Parquet or CSV file with a 'user_id' column")
    name = path.name.lower()
    if not name.endswith((".parquet", ".pq", ".csv", ".csv.gz")):
        raise ValueError(f"{path}: unsupported users-table type; expected .parquet, .csv or .csv.gz")
    kind = "Parquet" if name.endswith((".parquet", ".pq")) else "CSV"
    try:
        if kind == "Parquet":
            users = pd.read_parquet(path)
        else:
            users = pd.read_csv(path, dtype={"user_id": str})  # ids are text: 00123 stays 00123
    except Exception as exc:  # noqa: BLE001 -- any reader error, reported with the file named
        raise ValueError(f"{path}: the users table cannot be read as {kind} "
                         f"({' '.join(str(exc).split())}); expected a {kind} file with a "
                         f"'user_id' column") from None
    if "user_id" not in users.columns:
        raise ValueError(f"{path}: the users table has no 'user_id' column; found "
                         f"{', '.join(map(str, users.columns))}")
    dup = users["user_id"].duplicated()
    if dup.any():
        raise ValueError(f"{path}: user_id {users['user_id'][dup].iloc[0]!r} appears more than once "
                         f"({int(dup.sum())} duplicates); expected one row per user")
    users["user_id"] = users["user_id"].astype("string")
    _check_iana_timezones(users, path)
    return users


def _check_iana_timezones(users: pd.DataFrame, path: Path) -> None:
    """Raise ``ValueError`` naming the file, rows, user and value of a ``timezone`` that is not
    an IANA name (policies compute local time with zoneinfo); empty means UTC."""
    import zoneinfo

    if "timezone" not in users.columns:
        return
    tz = users["timezone"].astype("string").reset_index(drop=True)
    given = tz.notna() & (tz.str.strip() != "")
    bad_names = []
    for name in pd.unique(tz[given]):
        try:
            zoneinfo.ZoneInfo(str(name))
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            bad_names.append(name)
    if not bad_names:
        return
    pos = np.flatnonzero((given & tz.isin(bad_names)).to_numpy(bool))
    rows = ", ".join(str(i + 1) for i in pos[:5]) + (f" and {len(pos) - 5} more" if len(pos) > 5 else "")
    raise ValueError(f"{path}: column 'timezone': unknown time zone {tz.iloc[pos[0]]!r} in "
                     f"{'row' if len(pos) == 1 else 'rows'} {rows} (user_id "
                     f"{str(users['user_id'].iloc[pos[0]])!r}); expected an IANA name such as "
                     f"'Europe/Paris', or empty for UTC")


def _levels(values: pd.Series, max_levels: int) -> pd.Series:
    """Group an attribute for a breakdown: many-valued numbers → quintiles, strings → top levels."""
    if pd.api.types.is_numeric_dtype(values) and values.nunique() > max_levels:
        bins = pd.qcut(values, q=5, duplicates="drop")
        lo = values.min()
        names = {iv: f"Q{i + 1} [{max(iv.left, lo):.4g}, {iv.right:.4g}]" if i == 0 else
                 f"Q{i + 1} ({iv.left:.4g}, {iv.right:.4g}]" for i, iv in enumerate(bins.cat.categories)}
        return bins.map(names).astype("string")  # 'Q1 [29.99, 50.3]' sorts in order
    s = values.astype("string").fillna(MISSING_LABEL)
    if s.nunique() > max_levels:
        top = s.value_counts().index[: max_levels - 1]
        s = s.where(s.isin(top), "(other)")
    return s


def breakdown(
    log: pd.DataFrame,
    users: pd.DataFrame,
    attribute: str,
    outcome: str,
    confidence: float = 0.95,
    *,
    by: Sequence[str] = ("action",),
    max_levels: int = 20,
    outcome_window_days: float = 14.0,
) -> pd.DataFrame:
    """:func:`rates_with_ci` per level of a user ``attribute`` (a column of ``users``) × ``by``.

    Numeric attributes with more than ``max_levels`` distinct values are cut into quintiles;
    string ones keep their ``max_levels - 1`` most frequent levels plus ``(other)``.
    Decisions whose user is not in ``users`` fall in level ``(none)``.
    """
    units = with_attribute(_units(log, outcome_window_days), users, attribute, max_levels=max_levels)
    return rates_with_ci(units, outcome, by=[attribute, *by], confidence=confidence)


def with_attribute(units: pd.DataFrame, users: pd.DataFrame, attribute: str, *, max_levels: int = 20) -> pd.DataFrame:
    """``units`` with a column ``attribute`` taken from ``users`` (grouped as in :func:`breakdown`).

    Use it to compute :func:`lift_table` within each level (``by=attribute``).
    """
    if attribute not in users.columns or attribute == "user_id":
        raise ValueError(f"group_by {attribute!r} is not a column of the users table; available: "
                         f"{', '.join(c for c in users.columns if c != 'user_id')}")
    lv = _levels(users[attribute], max_levels)
    lookup = pd.Series(lv.to_numpy(), index=users["user_id"].astype("string").to_numpy())
    return units.assign(**{attribute: units["user_id"].map(lookup).astype("string").fillna(MISSING_LABEL)})


def summary(log: pd.DataFrame, units: pd.DataFrame | None = None) -> dict[str, Any]:
    """Headline facts: period (ISO UTC), users, events, decisions, channels, events by type."""
    counts = log["event"].value_counts()
    out: dict[str, Any] = {
        "start": log["ts"].min().isoformat(), "end": log["ts"].max().isoformat(),
        "users": int(log["user_id"].nunique()), "events": int(len(log)),
        "channels": sorted(str(c) for c in log["channel"].dropna().unique()),
        "by_event": {str(k): int(v) for k, v in counts.items() if v},
    }
    if units is not None:
        out["decisions_analysed"] = int(len(units))
        out["decision_start"] = units["decision_ts"].min().isoformat()
        out["decision_end"] = units["decision_ts"].max().isoformat()
    return out


def to_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """A DataFrame as JSON-ready records: NaN/NA → None, numpy scalars → Python ones."""
    return json.loads(df.to_json(orient="records", date_format="iso", double_precision=15, default_handler=str))


def group_labels(table: pd.DataFrame, by: Sequence[str] = GROUP_COLUMNS) -> pd.Series:
    """Short labels for groups: the ``by`` columns that vary in ``table``, joined by ' · '."""
    by = [c for c in by if c in table.columns]
    varying = [c for c in by if table[c].nunique(dropna=False) > 1] or by[-1:]
    return table[varying].astype("string").fillna(MISSING_LABEL).agg(" · ".join, axis=1)


def presentable(table: pd.DataFrame) -> pd.DataFrame:
    """A rates / lift / breakdown table as display strings: rates in %, lifts of rates in
    percentage points, means and their differences with 3 decimals, the CI as '[lo, hi]'.

    For reading only; the numbers stay in the input table (and the report's JSON).
    """
    out = table.copy()
    if "method" not in out.columns:
        return out
    prop = out["method"].isin(["wilson", "wald"]).to_numpy()

    def fmt(v: float, pct: bool, pp: bool = False) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "–"
        if pct:
            return f"{100 * v:+.2f} pp" if pp else f"{100 * v:.2f} %"
        return f"{v:+,.3f}" if pp else f"{v:,.3f}"

    is_lift = "diff" in out.columns
    if is_lift:
        for col in ("estimate", "baseline_estimate"):
            out[col] = [fmt(v, p) for v, p in zip(table[col], prop)]
        out["diff"] = [fmt(v, p, pp=True) for v, p in zip(table["diff"], prop)]
        out["relative"] = [("–" if pd.isna(v) else f"{100 * v:+.1f} %") for v in table["relative"]]
        out["p_value"] = [("–" if pd.isna(v) else f"{v:.2g}") for v in table["p_value"]]
    else:
        out["estimate"] = [fmt(v, p) for v, p in zip(table["estimate"], prop)]
        if "successes" in out.columns:
            out["successes"] = ["" if pd.isna(v) else f"{int(v):,}" for v in table["successes"]]
        if "sd" in out.columns:
            out["sd"] = ["" if pd.isna(v) else f"{v:,.3f}" for v in table["sd"]]
    level = f"{table['confidence'].iloc[0]:.0%} CI" if "confidence" in table.columns and len(table) else "CI"
    out[level] = [f"[{fmt(lo, p, pp=is_lift)}, {fmt(hi, p, pp=is_lift)}]"
                  for lo, hi, p in zip(table["lo"], table["hi"], prop)]
    return out.drop(columns=[c for c in ("lo", "hi", "confidence") if c in out.columns])


# --------------------------------------------------------------------------- figures

def plot_funnel(fun: pd.DataFrame, by: Sequence[str] = GROUP_COLUMNS, ax=None):
    """Funnel: decisions reaching each stage (log scale) per group, one line per group."""
    import matplotlib.pyplot as plt

    stages = [s for s in FUNNEL_STAGES if s in fun.columns]
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 4))
    labels = group_labels(fun, by)
    x = np.arange(len(stages))
    width = 0.8 / max(1, len(fun))
    for i, (label, (_, row)) in enumerate(zip(labels, fun.iterrows())):
        vals = row[stages].astype(float).to_numpy()
        bars = ax.bar(x + i * width - 0.4 + width / 2, np.where(vals > 0, vals, np.nan), width, label=label)
        for b, v in zip(bars, vals):
            if v > 0:
                ax.annotate(f"{int(v):,}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, stages)
    ax.set_yscale("log")
    ax.set_ylabel("decisions reaching the stage (log scale)")
    ax.set_title("Funnel")
    ax.legend(fontsize=8)
    return ax


def plot_rates(rates: pd.DataFrame, by: Sequence[str] = GROUP_COLUMNS, ax=None, percent: bool = True):
    """Bars with CI error bars for one outcome of :func:`rates_with_ci`."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    labels = group_labels(rates, by)
    scale = 100.0 if percent and rates["method"].iloc[0] == "wilson" else 1.0
    est = rates["estimate"].to_numpy(dtype=float) * scale
    err = np.vstack([est - rates["lo"].to_numpy(dtype=float) * scale,
                     rates["hi"].to_numpy(dtype=float) * scale - est])
    ax.bar(np.arange(len(est)), est, yerr=np.clip(np.nan_to_num(err), 0, None), capsize=4, color="C0")
    ax.set_xticks(np.arange(len(est)), labels, rotation=20, ha="right")
    outcome = rates["outcome"].iloc[0]
    unit = "% of decisions" if scale == 100 else "mean per decision"
    ax.set_title(f"{outcome} ({unit}, {rates['confidence'].iloc[0]:.0%} CI)")
    return ax


def plot_lift(lift: pd.DataFrame, ax=None, percent: bool = True):
    """Horizontal bars of ``diff`` with CI for one outcome of :func:`lift_table`."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 2.5))
    scale = 100.0 if percent and lift["method"].iloc[0] == "wald" else 1.0
    d = lift["diff"].to_numpy(dtype=float) * scale
    err = np.vstack([d - lift["lo"].to_numpy(dtype=float) * scale, lift["hi"].to_numpy(dtype=float) * scale - d])
    y = np.arange(len(d))
    ax.barh(y, d, xerr=np.clip(np.nan_to_num(err), 0, None), capsize=4, color=["C2" if v >= 0 else "C3" for v in d])
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y, lift["action"].astype(str))
    unit = "percentage points" if scale == 100 else "per decision"
    ax.set_title(f"lift in {lift['outcome'].iloc[0]} over '{lift['baseline'].iloc[0]}' ({unit}, "
                 f"{lift['confidence'].iloc[0]:.0%} CI)")
    return ax


def plot_breakdown(table: pd.DataFrame, attribute: str, ax=None, percent: bool = True):
    """Grouped bars (level × action) with CI error bars for one outcome of :func:`breakdown`."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.5))
    scale = 100.0 if percent and table["method"].iloc[0] == "wilson" else 1.0
    levels = list(dict.fromkeys(table[attribute].astype(str)))
    actions = list(dict.fromkeys(table["action"].astype(str)))
    width = 0.8 / max(1, len(actions))
    x = np.arange(len(levels))
    for i, a in enumerate(actions):
        t = table[table["action"].astype(str) == a].set_index(table[attribute].astype(str)[table["action"].astype(str) == a])
        t = t.reindex(levels)
        est = t["estimate"].to_numpy(dtype=float) * scale
        err = np.vstack([est - t["lo"].to_numpy(dtype=float) * scale, t["hi"].to_numpy(dtype=float) * scale - est])
        ax.bar(x + i * width - 0.4 + width / 2, est, width, yerr=np.clip(np.nan_to_num(err), 0, None), capsize=3, label=a)
    ax.set_xticks(x, levels, rotation=20, ha="right")
    unit = "% of decisions" if scale == 100 else "mean per decision"
    ax.set_title(f"{table['outcome'].iloc[0]} by {attribute} ({unit}, {table['confidence'].iloc[0]:.0%} CI)")
    ax.legend(fontsize=8)
    return ax
