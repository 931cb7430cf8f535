"""Outcome metrics of one engagement log: volume, engagement, money, harm, rule violations.

Everything is computed from the log (and the users table for timezones), so the same
function scores a simulated run, the sender's exported log, or a real export.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

MESSAGE_CHANNELS = ("email", "sms", "push")

#: Default attribution windows, hours after a send within which a purchase counts for it
#: (last touch). Email is read over days; SMS and push act within hours.
DEFAULT_ATTRIBUTION_H: dict[str, float] = {"email": 72.0, "sms": 24.0, "push": 24.0}

#: A user-day with at least this many messages counts as overloaded.
OVERLOAD_MESSAGES_PER_DAY = 3


#: Touches a purchase can be attributed to: ``sent`` (any message sent) or ``clicked``
#: (click-through attribution: only messages the user clicked).
ATTRIBUTION_TOUCHES = ("sent", "clicked")


def attribute_conversions(log: pd.DataFrame, window_h: Mapping[str, float] | None = None,
                          touch: str = "sent") -> pd.DataFrame:
    """Purchases attributed to the last message sent to the same user before them.

    A purchase is attributed to the latest ``sent`` message of the user whose send time is
    at most ``window_h[channel]`` hours earlier (last touch). Returns the purchase rows
    with ``message_id``, ``msg_channel`` and ``msg_campaign`` of the attributed message
    (null where none qualifies). ``touch="clicked"`` attributes to the latest *click* on a
    message instead (click-through attribution; the window counts from the click). Among
    touches at the same instant (e.g. one send per channel at once), the greatest
    ``message_id`` is the last.
    """
    if touch not in ATTRIBUTION_TOUCHES:
        raise ValueError(f"touch: expected one of {', '.join(ATTRIBUTION_TOUCHES)}, got {touch!r}")
    window_h = {**DEFAULT_ATTRIBUTION_H, **(window_h or {})}
    # among touches at the same instant the greatest message_id is the last touch, whatever
    # else the frame holds (as report_tables' SQL); an unstable sort on ts alone let the
    # other users' rows decide
    buys = log.loc[log["event"] == "purchase", ["ts", "user_id", "value"]].sort_values("ts", kind="stable")
    sends = log.loc[log["event"] == touch, ["ts", "user_id", "channel", "message_id", "campaign"]]
    sends = sends.rename(columns={"ts": "sent_ts", "channel": "msg_channel", "campaign": "msg_campaign"})
    sends = sends.assign(msg_channel=sends["msg_channel"].astype(str)).sort_values(
        ["sent_ts", "message_id"], kind="stable")
    if buys.empty:
        return buys.assign(message_id=pd.Series(dtype="string"), msg_channel=pd.Series(dtype="string"),
                           msg_campaign=pd.Series(dtype="string"))
    if sends.empty:
        return buys.assign(message_id=pd.NA, msg_channel=pd.NA, msg_campaign=pd.NA)
    max_h = max(window_h.values())
    merged = pd.merge_asof(
        buys, sends, left_on="ts", right_on="sent_ts", by="user_id",
        direction="backward", tolerance=pd.Timedelta(hours=max_h),
    )
    age_h = (merged["ts"] - merged["sent_ts"]).dt.total_seconds() / 3600.0
    limit = merged["msg_channel"].map(window_h).astype(float)
    ok = merged["message_id"].notna() & (age_h <= limit)
    for col in ("message_id", "msg_channel", "msg_campaign"):
        merged[col] = merged[col].where(ok)
    return merged.drop(columns=["sent_ts"])


def _local_days(ts: pd.Series, users: pd.DataFrame | None, user_ids: pd.Series) -> pd.Series:
    """Calendar date of each timestamp in its user's timezone (UTC when unknown)."""
    if users is None or "timezone" not in users.columns:
        return ts.dt.tz_convert("UTC").dt.date
    tz = user_ids.map(users.set_index("user_id")["timezone"]).fillna("UTC")
    out = pd.Series(index=ts.index, dtype="object")
    for name, idx in tz.groupby(tz).groups.items():
        out.loc[idx] = ts.loc[idx].dt.tz_convert(name).dt.date
    return out


def overload_rate(log: pd.DataFrame, users: pd.DataFrame | None, n_users: int, days: float) -> float:
    """Share of user-days (user-local calendar days) with 3 or more messages sent."""
    sent = log.loc[log["event"] == "sent", ["ts", "user_id"]]
    if sent.empty or n_users == 0 or days <= 0:
        return 0.0
    day = _local_days(sent["ts"], users, sent["user_id"])
    per_day = sent.assign(day=day.values).groupby(["user_id", "day"]).size()
    return float((per_day >= OVERLOAD_MESSAGES_PER_DAY).sum()) / (n_users * days)


def log_metrics(
    log: pd.DataFrame,
    users: pd.DataFrame | None = None,
    *,
    days: float | None = None,
    rules: Any = None,
    holdout_users: set[str] | None = None,
    attribution_h: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Score one log. Money is in the log's currency units; rates are per message sent.

    Parameters
    ----------
    log : validated engagement log.
    users : users table (``user_id``, ``timezone``); its length is the population size.
    days : horizon in days (default: the log's span).
    rules : a ``PressureRules``; cap and quiet-hour violations are counted against it.
    holdout_users : ids of the global holdout, for incremental conversions.
    attribution_h : per-channel attribution windows in hours (see :func:`attribute_conversions`).

    ``conversions`` are purchases attributed to the last message *sent* within its channel's
    window; ``click_conversions`` those attributed to the last message *clicked* within it
    (click-through attribution: fewer organic purchases that merely follow a send).
    """
    ev = log["event"].astype(str)
    n_users = int(len(users)) if users is not None else int(log["user_id"].nunique())
    if days is None:
        days = max((log["ts"].max() - log["ts"].min()).total_seconds() / 86400.0, 1.0)
    sent = log[ev == "sent"]
    by_channel = {ch: int((sent["channel"] == ch).sum()) for ch in MESSAGE_CHANNELS}
    messages = int(len(sent))
    opens = int((ev == "opened").sum())
    clicks = int((ev == "clicked").sum())
    purchases = log[ev == "purchase"]
    attributed = attribute_conversions(log, attribution_h)
    conv_mask = attributed["message_id"].notna()
    revenue = float(purchases["value"].fillna(0).sum())
    cost = float(sent["value"].fillna(0).sum())
    out: dict[str, Any] = {
        "users": n_users,
        "days": float(days),
        "messages": messages,
        "messages_by_channel": by_channel,
        "messages_per_user": messages / n_users if n_users else 0.0,
        **{f"messages_per_user_{ch}": by_channel[ch] / n_users if n_users else 0.0 for ch in MESSAGE_CHANNELS},
        "messages_per_user_week": messages / n_users / days * 7 if n_users else 0.0,
        "opens": opens,
        "clicks": clicks,
        "open_rate": opens / messages if messages else float("nan"),
        "click_rate": clicks / messages if messages else float("nan"),
        "clicks_per_user": clicks / n_users if n_users else 0.0,
        "purchases": int(len(purchases)),
        "conversions": int(conv_mask.sum()),
        "conversions_by_channel": {ch: int((attributed["msg_channel"] == ch).sum()) for ch in MESSAGE_CHANNELS},
        "click_conversions": int(attribute_conversions(log, attribution_h, touch="clicked")["message_id"]
                                 .notna().sum()),
        "revenue": revenue,
        "attributed_revenue": float(attributed.loc[conv_mask, "value"].fillna(0).sum()),
        "cost": cost,
        "revenue_minus_cost": revenue - cost,
        "unsubscribes": int((ev == "unsubscribed").sum()),
        "unsubscribe_rate": int((ev == "unsubscribed").sum()) / messages if messages else 0.0,
        "unsubscribes_per_user": int((ev == "unsubscribed").sum()) / n_users if n_users else 0.0,
        "churn": int((ev == "churned").sum()),
        "overload_rate": overload_rate(log, users, n_users, days),
        "deferred": int((ev == "deferred").sum()),
        "suppressed": int((ev == "suppressed").sum()),
    }
    out.update(_violations(log, users, rules))
    out.update(_incremental(log, users, holdout_users))
    return out


#: Metrics that are counts or money sums over users: those of disjoint user sets add up.
_ADDITIVE_COUNTS = ("users", "messages", "opens", "clicks", "purchases", "conversions",
                    "click_conversions", "unsubscribes", "churn", "deferred", "suppressed",
                    "cap_violations", "quiet_hour_violations", "holdout_users")
_ADDITIVE_SUMS = ("revenue", "attributed_revenue", "cost")


def combine_metrics(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The :func:`log_metrics` of a log from those of its parts over disjoint sets of users
    (e.g. the fast engine's chunks), all over the same ``days``: counts and sums add up, and
    every rate is recomputed from them — equal to scoring the whole log at once (up to float
    rounding), with one part in memory at a time.
    """
    if not parts:
        raise ValueError("combine_metrics needs at least one part")
    days = float(parts[0]["days"])
    if any(abs(float(p["days"]) - days) > 1e-9 for p in parts):
        raise ValueError("combine_metrics: the parts cover different horizons (days)")
    out: dict[str, Any] = {k: int(sum(p[k] for p in parts)) for k in _ADDITIVE_COUNTS}
    out.update({k: sum(p[k] for p in parts) for k in _ADDITIVE_SUMS})
    for k in ("messages_by_channel", "conversions_by_channel"):
        out[k] = {ch: int(sum(p[k][ch] for p in parts)) for ch in MESSAGE_CHANNELS}
    n, messages = out["users"], out["messages"]
    overloaded = sum(p["overload_rate"] * p["users"] * days for p in parts)  # overloaded user-days
    out.update({
        "days": days,
        "messages_per_user": messages / n if n else 0.0,
        **{f"messages_per_user_{ch}": out["messages_by_channel"][ch] / n if n else 0.0
           for ch in MESSAGE_CHANNELS},
        "messages_per_user_week": messages / n / days * 7 if n else 0.0,
        "open_rate": out["opens"] / messages if messages else float("nan"),
        "click_rate": out["clicks"] / messages if messages else float("nan"),
        "revenue_minus_cost": out["revenue"] - out["cost"],
        "unsubscribe_rate": out["unsubscribes"] / messages if messages else 0.0,
        "clicks_per_user": out["clicks"] / n if n else 0.0,
        "unsubscribes_per_user": out["unsubscribes"] / n if n else 0.0,
        "overload_rate": overloaded / (n * days) if n and days > 0 else 0.0,
    })
    out.update(_combined_incremental(parts))
    return {k: out[k] for k in parts[0]}  # log_metrics' keys, in its order (a new one: KeyError)


def _combined_incremental(parts: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Treated and holdout purchase rates are means over users: weight each part's by its users."""
    nan = float("nan")
    control = sum(p["holdout_users"] for p in parts)
    treated = sum(p["users"] - p["holdout_users"] for p in parts)
    if not control or not treated or all(math.isnan(p["conversion_rate_holdout"]) for p in parts):
        return {"conversion_rate_treated": nan, "conversion_rate_holdout": nan,
                "incremental_conversions": nan}
    rt = sum(_nan0(p["conversion_rate_treated"]) * (p["users"] - p["holdout_users"]) for p in parts) / treated
    rc = sum(_nan0(p["conversion_rate_holdout"]) * p["holdout_users"] for p in parts) / control
    return {"conversion_rate_treated": rt, "conversion_rate_holdout": rc,
            "incremental_conversions": (rt - rc) * treated}


def _nan0(x: float) -> float:
    """A part without treated (or holdout) users contributes nothing to that mean."""
    return 0.0 if math.isnan(x) else x


def _violations(log: pd.DataFrame, users: pd.DataFrame | None, rules: Any) -> dict[str, int]:
    if rules is None or users is None:
        return {"cap_violations": 0, "quiet_hour_violations": 0}
    from omnisim.policies.pressure import count_violations

    v = count_violations(log, users, rules)
    return {"cap_violations": int(v["cap_violations"]), "quiet_hour_violations": int(v["quiet_hour_violations"])}


def _incremental(log: pd.DataFrame, users: pd.DataFrame | None, holdout: set[str] | None) -> dict[str, float]:
    """Purchases per user, treated vs global holdout, and the implied incremental purchases."""
    nan = float("nan")
    if not holdout or users is None:
        return {"holdout_users": 0, "conversion_rate_treated": nan, "conversion_rate_holdout": nan,
                "incremental_conversions": nan}
    ids = users["user_id"].astype(str)
    in_holdout = ids.isin(holdout)
    buyers = log.loc[log["event"] == "purchase"].groupby("user_id").size()
    per_user = ids.map(buyers).fillna(0).to_numpy(dtype=float)
    treated, control = per_user[~in_holdout.to_numpy()], per_user[in_holdout.to_numpy()]
    if len(control) == 0 or len(treated) == 0:
        return {"holdout_users": int(len(control)), "conversion_rate_treated": nan,
                "conversion_rate_holdout": nan, "incremental_conversions": nan}
    rt, rc = float(np.mean(treated)), float(np.mean(control))
    return {"holdout_users": int(len(control)), "conversion_rate_treated": rt,
            "conversion_rate_holdout": rc, "incremental_conversions": (rt - rc) * len(treated)}
