"""The tables of the report suite, aggregated in SQL on a :class:`~omnisim.report_data.LogSource`.

Each function runs one or a few DuckDB queries over the view ``log`` (and ``users``) and
returns small pandas tables (one row per group / bucket / step); intervals come from
:mod:`omnisim.stats`. Units: rates are shares in [0, 1]; money (``revenue``, ``cost``) is in
the log's currency units; durations in hours (``_h``) or days (``_days``).

Message outcomes (``delivered``, ``opened``, ``clicked``, ``unsubscribed``) are linked to
their ``sent`` row by ``message_id``; a message is "opened" when at least one ``opened`` row
carries its id. Purchases are attributed to messages by *touch*: the sends to the same user
at most ``attribution_window_h`` hours before the purchase (inclusive); the last touch gets
the conversion in per-message tables (sends at the same instant: the greatest ``message_id``
is the last, as in :func:`omnisim.metrics.attribute_conversions`).

- :func:`engagement_funnel` — the engagement report's funnel (decided → … → purchase per
  channel, campaign, action), the SQL twin of :func:`omnisim.analysis.funnel`.
- :func:`channel_table`, :func:`touch_shares` — the channel comparison report.
- :func:`send_time_heatmap`, :func:`time_to_open`, :func:`best_hours` — the send-time report.
- :func:`fatigue_curve`, :func:`user_saturation` — the fatigue report.
- :func:`journey_funnel`, :func:`journey_steps` — the journey funnel report.
- :func:`decision_rewards`, :func:`ope_table` — the policy-evaluation report.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

from omnisim.report_data import LogSource
from omnisim.stats import check_confidence, mean_ci_from_sums, wilson_ci

__all__ = [
    "best_hours", "channel_table", "decision_rewards", "engagement_funnel", "evaluate_candidates", "fatigue_curve",
    "has_step_ids", "journey_funnel", "journey_steps", "ope_table", "parse_candidate", "send_time_heatmap", "time_to_open",
    "touch_shares", "user_saturation",
]

#: Funnel stages of the engagement report (as :data:`omnisim.analysis.FUNNEL_STAGES`).
STAGES: tuple[str, ...] = ("decided", "sent", "delivered", "opened", "clicked", "visit", "purchase")
_MESSAGE_STAGES = ("sent", "delivered", "opened", "clicked")
MISSING = "(none)"
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
#: Edges (hours) of the time-to-open histogram; the last bin is open-ended.
OPEN_DELAY_EDGES_H: tuple[float, ...] = (0, 0.25, 1, 2, 4, 8, 24, 48, 96, 168)


def _interval_us(hours: float, name: str) -> str:
    """SQL INTERVAL of ``hours`` (checked >= 0), to the microsecond."""
    if not isinstance(hours, (int, float)) or not math.isfinite(hours) or hours < 0:
        raise ValueError(f"{name} must be a number of hours >= 0; got {hours!r}")
    return f"to_microseconds(CAST({float(hours) * 3.6e9:.0f} AS BIGINT))"


def _msg_cte(extra: str = "") -> str:
    """CTEs ``msg`` (one row per send) and ``mo`` (outcome flags per message_id)."""
    return f"""
    msg AS (SELECT message_id, user_id, channel, coalesce(campaign, '{MISSING}') AS campaign, ts AS sent_ts,
                   value AS cost {extra}
            FROM log WHERE event = 'sent'),
    mo AS (SELECT message_id,
                  bool_or(event = 'delivered') AS delivered, bool_or(event = 'opened') AS opened,
                  bool_or(event = 'clicked') AS clicked, bool_or(event = 'unsubscribed') AS unsubscribed,
                  min(ts) FILTER (WHERE event = 'opened') AS open_ts
           FROM log WHERE event IN ('delivered', 'opened', 'clicked', 'unsubscribed') AND message_id IS NOT NULL
           GROUP BY 1)"""


def _touch_cte(window_h: float) -> str:
    """CTEs ``purch`` (purchases) and ``touch`` (purchase × sends within the window)."""
    w = _interval_us(window_h, "attribution_window_h")
    return f"""
    purch AS (SELECT row_number() OVER () AS pid, user_id, ts, coalesce(value, 0) AS value
              FROM log WHERE event = 'purchase'),
    touch AS (SELECT p.pid, p.value, m.message_id, m.channel, m.campaign, m.sent_ts
              FROM purch p JOIN msg m ON p.user_id = m.user_id AND m.sent_ts <= p.ts AND m.sent_ts >= p.ts - {w}),
    fl AS (SELECT pid, any_value(value) AS value,
                  -- ties at one instant: by message_id, as metrics.attribute_conversions
                  arg_min(channel, (sent_ts, message_id)) AS first_channel,
                  arg_max(channel, (sent_ts, message_id)) AS last_channel,
                  arg_max(message_id, (sent_ts, message_id)) AS last_mid
           FROM touch GROUP BY pid)"""


def _with_wilson(df: pd.DataFrame, k: str, n: str, name: str, confidence: float) -> pd.DataFrame:
    rate, lo, hi = wilson_ci(df[k].to_numpy(float), df[n].to_numpy(float), confidence)
    df[f"{name}"] = rate
    df[f"{name}_lo"] = lo
    df[f"{name}_hi"] = hi
    return df


# --------------------------------------------------------------------------- engagement

def _attribution_ctes(stages: Sequence[str], window_days: float) -> str:
    """CTEs ``dec`` (decisions, id ``did``), ``ev`` (events of ``stages``, id ``eid``) and ``asg``
    (``eid`` → ``did``): the attribution of :mod:`omnisim.analysis` in SQL.

    An event goes to the decision with its ``message_id`` (r1); a ``sent`` row otherwise to the
    user's latest decision on its channel (rs); other events to the decision of the ``sent``
    row with their ``message_id`` (r2), else to the user's latest decision — on their channel
    for message events — (r3m / r3b); as-of matches at most ``window_days`` days back.
    """
    win = _interval_us(window_days * 24.0, "outcome_window_days × 24")
    stage_list = ", ".join(f"'{s}'" for s in dict.fromkeys(["sent", *stages]))
    msg_list = ", ".join(f"'{s}'" for s in _MESSAGE_STAGES)
    return f"""
    dec AS (SELECT row_number() OVER (ORDER BY ts, user_id, channel, action, campaign) AS did, ts, user_id, channel,
                   coalesce(campaign, '{MISSING}') AS campaign, coalesce(action, '{MISSING}') AS action,
                   coalesce(policy, '{MISSING}') AS policy, propensity, message_id
            FROM log WHERE event = 'decided'),
    ev AS (SELECT row_number() OVER () AS eid, ts, user_id, channel, event, message_id, value
           FROM log WHERE event IN ({stage_list})),
    dmid AS (SELECT message_id, max(did) AS did FROM dec WHERE message_id IS NOT NULL GROUP BY 1),
    r1 AS (SELECT e.eid, d.did FROM ev e JOIN dmid d USING (message_id)),
    sl AS (SELECT e.* FROM ev e ANTI JOIN r1 USING (eid) WHERE e.event = 'sent'),
    rs AS (SELECT s.eid, s.message_id, d.did FROM sl s ASOF JOIN dec d
             ON s.user_id = d.user_id AND s.channel = d.channel AND s.ts >= d.ts
           WHERE s.ts - d.ts <= {win}),
    smap AS (SELECT message_id, max(did) AS did FROM (
               SELECT e.message_id, r1.did FROM r1 JOIN ev e USING (eid) WHERE e.event = 'sent'
               UNION ALL SELECT message_id, did FROM rs) WHERE message_id IS NOT NULL GROUP BY 1),
    r2 AS (SELECT e.eid, m.did FROM ev e ANTI JOIN r1 USING (eid) JOIN smap m USING (message_id) WHERE e.event <> 'sent'),
    rest AS (SELECT e.* FROM ev e ANTI JOIN r1 USING (eid) ANTI JOIN r2 USING (eid) WHERE e.event <> 'sent'),
    r3m AS (SELECT r.eid, d.did FROM (SELECT * FROM rest WHERE event IN ({msg_list})) r ASOF JOIN dec d
              ON r.user_id = d.user_id AND r.channel = d.channel AND r.ts >= d.ts WHERE r.ts - d.ts <= {win}),
    r3b AS (SELECT r.eid, d.did FROM (SELECT * FROM rest WHERE event NOT IN ({msg_list})) r ASOF JOIN dec d
              ON r.user_id = d.user_id AND r.ts >= d.ts WHERE r.ts - d.ts <= {win}),
    asg AS (SELECT * FROM r1 UNION ALL SELECT eid, did FROM rs UNION ALL SELECT * FROM r2
            UNION ALL SELECT * FROM r3m UNION ALL SELECT * FROM r3b)"""


def engagement_funnel(src: LogSource, outcome_window_days: float = 14.0,
                      by: Sequence[str] = ("channel", "campaign", "action")) -> pd.DataFrame:
    """Decisions reaching each stage per group: the SQL twin of :func:`omnisim.analysis.funnel`.

    Attribution follows :mod:`omnisim.analysis`: an event goes to the decision with its
    ``message_id``, else to the decision of the ``sent`` row with its ``message_id``, else to
    the same user's latest decision at or before it (on the event's channel for message
    events) at most ``outcome_window_days`` days earlier. Returns the ``by`` columns, one
    count column per stage present in the log, ``purchases`` (attributed purchase rows) and
    ``value`` (their summed value, currency units).
    """
    by = list(by)
    bad = [c for c in by if c not in ("channel", "campaign", "action", "policy")]
    if bad:
        raise ValueError(f"cannot group the funnel by {bad}; use channel, campaign, action or policy")
    present = [r[0] for r in src.con.execute(
        f"SELECT DISTINCT event FROM log WHERE event IN ({', '.join(repr(s) for s in STAGES[1:])})").fetchall()]
    stages = [s for s in STAGES[1:] if s in present]
    if not src.scalar("SELECT count(*) FROM log WHERE event = 'decided'"):
        raise ValueError("the log has no 'decided' rows; the engagement funnel needs decisions")
    q = f"""
    WITH {_attribution_ctes(stages, outcome_window_days)},
    per AS (SELECT a.did, {', '.join(f"bool_or(e.event = '{s}') AS {s}" for s in stages) or 'NULL AS none_'},
                   count(*) FILTER (WHERE e.event = 'purchase') AS purchases,
                   coalesce(sum(e.value) FILTER (WHERE e.event = 'purchase'), 0) AS value
            FROM asg a JOIN ev e USING (eid) GROUP BY a.did)
    SELECT {', '.join(f'd.{c}' for c in by)}, count(*) AS decided,
           {''.join(f'count(*) FILTER (WHERE p.{s}) AS {s}, ' for s in stages)}
           coalesce(sum(p.purchases), 0) AS purchases, coalesce(sum(p.value), 0) AS value
    FROM dec d LEFT JOIN per p USING (did) GROUP BY {', '.join(f'd.{c}' for c in by)} ORDER BY {', '.join(by)}
    """
    out = src.sql(q)
    for s in ["decided", *stages, "purchases"]:
        out[s] = out[s].astype("int64")
    out["value"] = out["value"].astype("float64")
    return out


# --------------------------------------------------------------------------- channel comparison

def channel_table(src: LogSource, attribution_window_h: float = 336.0, confidence: float = 0.95,
                  by_campaign: bool = True) -> pd.DataFrame:
    """Per channel (``campaign`` = ``(all)``) and per channel × campaign: message outcomes.

    Columns: ``channel``, ``campaign``, ``messages`` (sent rows), ``delivered``, ``opened``,
    ``clicked``, ``converted`` (messages that were the last touch of >= 1 purchase within
    ``attribution_window_h`` hours), ``conversions`` (purchases so attributed), ``revenue``
    (their value), ``cost`` (sum of ``value`` on sent rows; NaN when no send has a cost),
    ``cost_known`` (sends with a cost); rates per message ``open_rate``, ``click_rate``,
    ``conversion_rate`` each with ``_lo`` / ``_hi`` (Wilson); ``revenue_per_message`` with
    ``_lo`` / ``_hi`` (Student t over messages); per cost unit ``opens_per_cost``,
    ``clicks_per_cost``, ``conversions_per_cost`` (converted messages, as ``conversion_rate``),
    ``revenue_per_cost`` (return on spend), the last two — ``conversion_rate`` and
    ``revenue_per_message`` divided by the mean cost per message — with ``_lo`` / ``_hi``: the
    per-message interval divided likewise (cost treated as fixed). Per-cost columns are NaN
    when cost is unknown or 0.
    """
    check_confidence(confidence)
    sets = "GROUPING SETS ((m.channel), (m.channel, m.campaign))" if by_campaign else "m.channel"
    q = f"""
    WITH {_msg_cte()}, {_touch_cte(attribution_window_h)},
    rev AS (SELECT last_mid AS message_id, count(*) AS conversions, sum(value) AS revenue FROM fl GROUP BY 1)
    SELECT m.channel, {"coalesce(m.campaign, '(all)')" if by_campaign else "'(all)'"} AS campaign,
           {"grouping(m.campaign)" if by_campaign else "1"} AS is_total,
           count(*) AS messages,
           count(*) FILTER (WHERE o.delivered) AS delivered, count(*) FILTER (WHERE o.opened) AS opened,
           count(*) FILTER (WHERE o.clicked) AS clicked, count(*) FILTER (WHERE r.conversions > 0) AS converted,
           coalesce(sum(r.conversions), 0) AS conversions, coalesce(sum(r.revenue), 0) AS revenue,
           coalesce(sum(r.revenue * r.revenue), 0) AS revenue_sq,
           sum(m.cost) AS cost, count(m.cost) AS cost_known
    FROM msg m LEFT JOIN mo o USING (message_id) LEFT JOIN rev r USING (message_id)
    GROUP BY {sets} ORDER BY m.channel, is_total DESC, campaign
    """
    df = src.sql(q)
    if by_campaign:
        df.loc[df["is_total"] == 1, "campaign"] = "(all)"
    df = df.drop(columns="is_total")
    present = src.events_present()
    for c in ("messages", "delivered", "opened", "clicked", "converted", "conversions", "cost_known"):
        df[c] = df[c].astype("int64")
    for k, name in (("opened", "open_rate"), ("clicked", "click_rate"), ("converted", "conversion_rate")):
        _with_wilson(df, k, "messages", name, confidence)
    for stage in ("delivered", "opened", "clicked"):  # not logged at all: unknown, not zero
        if stage not in present:
            df[stage] = np.nan
            rate = {"opened": "open_rate", "clicked": "click_rate"}.get(stage)
            if rate:
                df[[rate, f"{rate}_lo", f"{rate}_hi"]] = np.nan
    m, _, lo, hi = mean_ci_from_sums(df["messages"], df["revenue"], df["revenue_sq"], confidence)
    df["revenue_per_message"], df["revenue_per_message_lo"], df["revenue_per_message_hi"] = m, lo, hi
    cost = df["cost"].astype(float).where(df["cost_known"] > 0)
    cost = cost.where(cost > 0)
    cpm = cost / df["messages"]
    df["cost_per_message"] = cpm
    df["opens_per_cost"] = df["opened"] / cost
    df["clicks_per_cost"] = df["clicked"] / cost
    for name, base in (("conversions_per_cost", "conversion_rate"), ("revenue_per_cost", "revenue_per_message")):
        df[name] = df[base] / cpm  # the estimate and its interval measure the same thing
        df[f"{name}_lo"] = df[f"{base}_lo"] / cpm
        df[f"{name}_hi"] = df[f"{base}_hi"] / cpm
    return df.drop(columns="revenue_sq")


def touch_shares(src: LogSource, attribution_window_h: float = 336.0, confidence: float = 0.95) -> pd.DataFrame:
    """Share of conversions (purchases) each channel touched first / last within the window.

    For every purchase, the sends to the same user at most ``attribution_window_h`` hours
    before it are its touches; the earliest is the first touch, the latest the last touch.
    Returns one row per channel plus ``(no touch)``: ``first_touch`` / ``last_touch``
    (purchases), ``first_share`` / ``last_share`` of all purchases with Wilson ``_lo`` /
    ``_hi``, and ``purchases`` (the total).
    """
    q = f"""
    WITH {_msg_cte()}, {_touch_cte(attribution_window_h)}
    SELECT coalesce(fl.first_channel, '(no touch)') AS first_channel,
           coalesce(fl.last_channel, '(no touch)') AS last_channel, count(*) AS n
    FROM purch p LEFT JOIN fl USING (pid) GROUP BY 1, 2
    """
    raw = src.sql(q)
    total = int(raw["n"].sum())
    chans = sorted(set(raw["first_channel"]) | set(raw["last_channel"]), key=lambda c: (c == "(no touch)", c))
    out = pd.DataFrame({"channel": chans})
    out["first_touch"] = [int(raw.loc[raw["first_channel"] == c, "n"].sum()) for c in chans]
    out["last_touch"] = [int(raw.loc[raw["last_channel"] == c, "n"].sum()) for c in chans]
    out["purchases"] = total
    _with_wilson(out, "first_touch", "purchases", "first_share", confidence)
    _with_wilson(out, "last_touch", "purchases", "last_share", confidence)
    return out


# --------------------------------------------------------------------------- send time

def _local_sends(metric: str) -> str:
    if metric not in ("opened", "clicked"):
        raise ValueError(f"metric must be 'opened' or 'clicked'; got {metric!r}")
    return f"""
    WITH {_msg_cte()},
    loc AS (SELECT m.channel, timezone(coalesce(u.timezone, 'UTC'), m.sent_ts) AS lt,
                   coalesce(o.{metric}, false) AS hit
            FROM msg m LEFT JOIN users u USING (user_id) LEFT JOIN mo o USING (message_id))"""


def send_time_heatmap(src: LogSource, metric: str = "opened", confidence: float = 0.95) -> pd.DataFrame:
    """Sends and engagement per channel × local weekday × local hour of the send.

    Local time is the user's ``timezone`` from the users table (UTC when the user or the
    table has none). Columns: ``channel``, ``weekday`` (0 = Monday), ``hour`` (0–23),
    ``sends``, ``hits`` (messages with a ``metric`` event: ``opened`` or ``clicked``),
    ``rate`` with Wilson ``rate_lo`` / ``rate_hi``.
    """
    df = src.sql(_local_sends(metric) + """
    SELECT channel, isodow(lt) - 1 AS weekday, hour(lt) AS hour, count(*) AS sends, count(*) FILTER (WHERE hit) AS hits
    FROM loc GROUP BY ALL ORDER BY ALL""")
    for c in ("weekday", "hour", "sends", "hits"):
        df[c] = df[c].astype("int64")
    return _with_wilson(df, "hits", "sends", "rate", confidence)


def time_to_open(src: LogSource) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hours from send to first open, per channel: ``(quantiles, histogram)``.

    ``quantiles``: ``channel``, ``opened`` (messages), ``p25_h``, ``median_h``, ``p75_h``,
    ``p90_h``, ``mean_h``. ``histogram``: ``channel``, ``bin`` (label), ``lo_h``, ``hi_h``
    (bin edges, :data:`OPEN_DELAY_EDGES_H`; the last bin is open-ended), ``opened``,
    ``share`` (of the channel's opened messages).
    """
    edges = list(OPEN_DELAY_EDGES_H)
    case = " ".join(f"WHEN h < {hi} THEN {i}" for i, hi in enumerate(edges[1:]))
    base = f"""WITH {_msg_cte()},
    d AS (SELECT m.channel, epoch(o.open_ts - m.sent_ts) / 3600.0 AS h FROM msg m JOIN mo o USING (message_id)
          WHERE o.open_ts IS NOT NULL)"""
    quant = src.sql(base + """
    SELECT channel, count(*) AS opened, quantile_cont(h, 0.25) AS p25_h, quantile_cont(h, 0.5) AS median_h,
           quantile_cont(h, 0.75) AS p75_h, quantile_cont(h, 0.9) AS p90_h, avg(h) AS mean_h
    FROM d GROUP BY 1 ORDER BY 1""")
    hist = src.sql(base + f"""
    SELECT channel, CASE {case} ELSE {len(edges) - 1} END AS b, count(*) AS opened FROM d GROUP BY ALL ORDER BY ALL""")
    labels = [f"{lo:g}–{hi:g} h" for lo, hi in zip(edges[:-1], edges[1:])] + [f"≥ {edges[-1]:g} h"]
    hist["lo_h"] = [edges[b] for b in hist["b"]]
    hist["hi_h"] = [edges[b + 1] if b + 1 < len(edges) else math.inf for b in hist["b"]]
    hist["bin"] = [labels[b] for b in hist["b"]]
    hist["opened"] = hist["opened"].astype("int64")
    hist["share"] = hist["opened"] / hist.groupby("channel")["opened"].transform("sum")
    quant["opened"] = quant["opened"].astype("int64")
    return quant, hist[["channel", "bin", "lo_h", "hi_h", "opened", "share"]]


def best_hours(heatmap: pd.DataFrame, prior_sends: float = 20.0, n_hours: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A per-channel send-time model: the local hours with the best *shrunk* engagement rate.

    Per channel and local hour ``h`` (weekdays pooled): ``rate_h = (hits_h + m·p) / (sends_h + m)``
    where ``p`` is the channel's overall rate and ``m = prior_sends`` (a pseudo-count of sends:
    an hour with few sends stays near the channel's rate). The model picks the ``n_hours``
    hours with the highest shrunk rate among hours with sends.

    Returns ``(hourly, summary)``: ``hourly`` has ``channel``, ``hour``, ``sends``, ``hits``,
    ``raw_rate``, ``shrunk_rate``, ``picked`` (bool); ``summary`` per channel: ``sends``,
    ``overall_rate``, ``model_hours`` (list), ``used_hours`` (the ``n_hours`` most used),
    ``share_sent_at_model_hours``, ``model_rate`` (mean shrunk rate of the picked hours) and
    ``expected_gain`` (``model_rate - overall_rate``, a share).
    """
    if prior_sends < 0:
        raise ValueError(f"prior_sends must be >= 0 (a pseudo-count of sends); got {prior_sends!r}")
    if int(n_hours) < 1 or int(n_hours) > 24:
        raise ValueError(f"n_hours must be in 1..24; got {n_hours!r}")
    hourly = heatmap.groupby(["channel", "hour"], as_index=False)[["sends", "hits"]].sum()
    rows, summ = [], []
    for ch, g in hourly.groupby("channel", sort=True):
        p = g["hits"].sum() / g["sends"].sum()
        g = g.copy()
        g["raw_rate"] = g["hits"] / g["sends"]
        g["shrunk_rate"] = (g["hits"] + prior_sends * p) / (g["sends"] + prior_sends)
        order = g.sort_values(["shrunk_rate", "sends", "hour"], ascending=[False, False, True])
        picked = order["hour"].head(int(n_hours)).tolist()
        g["picked"] = g["hour"].isin(picked)
        used = g.sort_values(["sends", "hour"], ascending=[False, True])["hour"].head(int(n_hours)).tolist()
        rows.append(g)
        summ.append({"channel": ch, "sends": int(g["sends"].sum()), "overall_rate": float(p),
                     "model_hours": sorted(int(h) for h in picked), "used_hours": sorted(int(h) for h in used),
                     "share_sent_at_model_hours": float(g.loc[g["picked"], "sends"].sum() / g["sends"].sum()),
                     "model_rate": float(g.loc[g["picked"], "shrunk_rate"].mean()),
                     "expected_gain": float(g.loc[g["picked"], "shrunk_rate"].mean() - p)})
    hourly = pd.concat(rows, ignore_index=True) if rows else hourly.assign(raw_rate=[], shrunk_rate=[], picked=[])
    return hourly, pd.DataFrame(summ)


# --------------------------------------------------------------------------- fatigue

def _pressure_cte() -> str:
    return f"""
    WITH {_msg_cte()},
    w AS (SELECT m.*, coalesce(o.opened OR o.clicked, false) AS responded, coalesce(o.unsubscribed, false) AS unsub,
                 count(*) OVER (PARTITION BY m.user_id ORDER BY m.sent_ts
                                RANGE BETWEEN INTERVAL 7 DAYS PRECEDING AND CURRENT ROW) - 1 AS prev7,
                 count(*) OVER (PARTITION BY m.user_id ORDER BY m.sent_ts
                                RANGE BETWEEN INTERVAL 30 DAYS PRECEDING AND CURRENT ROW) - 1 AS prev30
          FROM msg m LEFT JOIN mo o USING (message_id))"""


def fatigue_curve(src: LogSource, max_prev: int = 10, confidence: float = 0.95) -> pd.DataFrame:
    """Response and unsubscribe rates against the messages a user received before.

    For every send, ``prev7`` / ``prev30`` = other sends to the same user in the 7 / 30 days
    up to and including the send's instant (all channels). Buckets ``0 .. max_prev`` (the
    last is ``max_prev`` or more). Columns: ``window_days`` (7 or 30), ``prev`` (bucket),
    ``label``, ``sends``, ``responses`` (opened or clicked), ``unsubscribes`` (an
    ``unsubscribed`` row with the message's id), ``response_rate`` and ``unsub_rate`` with
    Wilson ``_lo`` / ``_hi``.
    """
    if int(max_prev) < 1:
        raise ValueError(f"max_prev must be >= 1 (messages); got {max_prev!r}")
    k = int(max_prev)
    df = src.sql(_pressure_cte() + f"""
    SELECT 7 AS window_days, least(prev7, {k}) AS prev, count(*) AS sends, count(*) FILTER (WHERE responded) AS responses,
           count(*) FILTER (WHERE unsub) AS unsubscribes FROM w GROUP BY ALL
    UNION ALL
    SELECT 30, least(prev30, {k}), count(*), count(*) FILTER (WHERE responded), count(*) FILTER (WHERE unsub)
    FROM w GROUP BY ALL ORDER BY 1, 2""")
    for c in ("window_days", "prev", "sends", "responses", "unsubscribes"):
        df[c] = df[c].astype("int64")
    df["label"] = [f"{p}+" if p == k else str(p) for p in df["prev"]]
    _with_wilson(df, "responses", "sends", "response_rate", confidence)
    _with_wilson(df, "unsubscribes", "sends", "unsub_rate", confidence)
    present = src.events_present()
    if not present & {"opened", "clicked"}:  # responses not logged: unknown, not zero
        df[["responses", "response_rate", "response_rate_lo", "response_rate_hi"]] = np.nan
    if "unsubscribed" not in present:
        df[["unsubscribes", "unsub_rate", "unsub_rate_lo", "unsub_rate_hi"]] = np.nan
    return df


def user_saturation(src: LogSource, low_per_week: float = 1.0, high_per_week: float = 5.0) -> tuple[pd.DataFrame, dict]:
    """Users classified under-, well- and over-messaged, with the counts in each class.

    Per messaged user over the log's period (``weeks`` = span in days / 7, at least 1/7):
    ``per_week`` = sends / weeks and ``response_rate`` = responded sends / sends. With ``p``
    the overall response rate (a response is an ``opened`` or ``clicked`` row of the message; when
    the log has neither, the response conditions are dropped and classes rest on volume and
    unsubscribes alone — ``info["responses_logged"]`` says which):

    - **over-messaged**: unsubscribed from any message, or ``per_week > high_per_week`` with
      ``response_rate < p`` (many messages, below-average response);
    - **under-messaged**: ``per_week < low_per_week`` with ``response_rate >= p`` (responsive,
      rarely messaged);
    - **well-messaged**: the other messaged users;
    - **not messaged**: users of the users table (or of the log, without one) with no send.

    Returns ``(table, info)``: ``table`` has ``class``, ``users``, ``share``, ``sends``,
    ``responses``, ``per_week`` (mean sends per user-week in the class), ``response_rate``;
    ``info`` holds ``weeks``, ``overall_response_rate`` and the thresholds.
    """
    if not 0 <= low_per_week <= high_per_week:
        raise ValueError(f"expected 0 <= low_per_week <= high_per_week (messages per week); got "
                         f"{low_per_week!r}, {high_per_week!r}")
    span_days = float(src.scalar("SELECT epoch(max(ts) - min(ts)) / 86400.0 FROM log") or 0.0)
    weeks = max(span_days / 7.0, 1 / 7)
    responses_logged = bool(src.events_present() & {"opened", "clicked"})
    p = src.scalar(_pressure_cte() + " SELECT avg(responded::INT) FROM w") if responses_logged else None
    p = float(p) if p is not None else math.nan
    low_ok = f"responses / sends >= {p}" if responses_logged and p == p else "true"
    high_ok = f"responses / sends < {p}" if responses_logged and p == p else "true"
    if src.users_df is not None:
        population = int(len(src.users_df))
    else:
        population = int(src.scalar("SELECT count(DISTINCT user_id) FROM log"))
    df = src.sql(_pressure_cte() + f""",
    u AS (SELECT user_id, count(*) AS sends, count(*) FILTER (WHERE responded) AS responses, bool_or(unsub) AS unsub
          FROM w GROUP BY 1),
    c AS (SELECT *, sends / {weeks} AS per_week, responses / sends AS rr,
                 CASE WHEN unsub OR (sends / {weeks} > {float(high_per_week)} AND {high_ok})
                        THEN 'over-messaged'
                      WHEN sends / {weeks} < {float(low_per_week)} AND {low_ok}
                        THEN 'under-messaged'
                      ELSE 'well-messaged' END AS class FROM u)
    SELECT class, count(*) AS users, sum(sends) AS sends, sum(responses) AS responses FROM c GROUP BY 1""")
    order = ["under-messaged", "well-messaged", "over-messaged"]
    df = df.set_index("class").reindex(order).fillna(0).reset_index()
    messaged = int(df["users"].sum())
    not_messaged = max(population - messaged, 0)
    df = pd.concat([df, pd.DataFrame([{"class": "not messaged", "users": not_messaged, "sends": 0, "responses": 0}])],
                   ignore_index=True)
    for c in ("users", "sends", "responses"):
        df[c] = df[c].astype("int64")
    df["share"] = df["users"] / max(int(df["users"].sum()), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        df["per_week"] = np.where(df["users"] > 0, df["sends"] / df["users"] / weeks, np.nan)
        df["response_rate"] = np.where((df["sends"] > 0) & responses_logged, df["responses"] / df["sends"], np.nan)
    info = {"weeks": weeks, "overall_response_rate": p, "responses_logged": responses_logged, "low_per_week": low_per_week,
            "high_per_week": high_per_week, "population": population}
    return df[["class", "users", "share", "sends", "responses", "per_week", "response_rate"]], info


# --------------------------------------------------------------------------- journeys

def _entries_cte(gap: str, has_step: bool) -> str:
    """CTEs ending in ``ent``: the log's ``decided`` rows of campaigns (``user_id``,
    ``campaign``, ``ts``, ``step``, ``rn`` — the row's position in the log, which orders rows
    at one instant as they happened), each with ``since`` (interval from the user's previous
    decision in the campaign), ``new_entry`` (1 when it starts an entry; rules in
    :func:`journey_funnel`) and ``entry_no`` (1, 2, … per user and campaign). ``gap``: SQL
    interval of ``entry_gap_h``; ``has_step``: whether the log has the ``step`` column."""
    step = "CAST(step AS VARCHAR)" if has_step else "CAST(NULL AS VARCHAR)"
    return f"""
    cdec AS (SELECT user_id, campaign, ts, {step} AS step, row_number() OVER () AS rn
             FROM log WHERE event = 'decided' AND campaign IS NOT NULL),
    -- the entry step: the step of users' first decision in the campaign (NULL: no step ids)
    firsts AS (SELECT campaign, step, row_number() OVER (PARTITION BY user_id, campaign ORDER BY ts, rn) AS k
               FROM cdec),
    entry_step AS (SELECT campaign, mode(step) AS entry_step FROM firsts WHERE k = 1 GROUP BY 1),
    ent1 AS (SELECT d.*, d.ts - lag(d.ts) OVER w AS since,
                    CASE WHEN lag(d.ts) OVER w IS NULL THEN 1
                         WHEN e.entry_step IS NOT NULL AND d.step IS NOT NULL
                           THEN CASE WHEN d.step = e.entry_step THEN 1 ELSE 0 END
                         WHEN d.ts - lag(d.ts) OVER w > {gap} THEN 1 ELSE 0 END AS new_entry
             FROM cdec d LEFT JOIN entry_step e USING (campaign)
             WINDOW w AS (PARTITION BY d.user_id, d.campaign ORDER BY d.ts, d.rn)),
    ent AS (SELECT *, sum(new_entry) OVER (PARTITION BY user_id, campaign ORDER BY ts, rn
                                           ROWS UNBOUNDED PRECEDING) AS entry_no FROM ent1)"""


def journey_funnel(src: LogSource, entry_gap_h: float = 72.0, conversion_window_h: float = 336.0,
                   max_steps: int = 8, confidence: float = 0.95) -> pd.DataFrame:
    """Per journey (``campaign`` of ``decided`` rows): entries → each step → conversion / exit.

    - **Entry**: with step ids (the log's ``step`` column), a ``decided`` row at the
      campaign's entry step — the step of users' first decision in the campaign (``entry``
      for a journey whose first step waits, else its first step; journeys do not loop), so a
      re-entry soon after the previous one is still an entry; without them, a ``decided``
      row of the campaign for a user whose previous decision in that campaign is more than
      ``entry_gap_h`` hours earlier (or who had none).
    - **Steps**: the campaign's ``sent`` rows of the user from the entry on (until the next
      entry), numbered in send order (labelled with the most common step id of each
      position when the log has step ids; :func:`journey_steps` counts by step id), capped at
      ``max_steps`` (the last is "that many or more").
    - **Conversion**: a purchase by the user within ``conversion_window_h`` hours after the
      entry (inclusive) and before the next entry.

    Returns one row per campaign × step (``step`` 0 = entry): ``reached`` (entries with at
    least that many sends), ``messages``, ``opened``, ``clicked`` (sends at that step and
    their outcomes), ``converted_here`` / ``exited_here`` (entries whose last step is this
    one, with / without conversion), ``drop_off`` (1 - reached / reached at the previous
    step), ``median_h_from_prev`` (hours from the previous step, or from the entry),
    ``step_label``, and per campaign ``entries``, ``conversions``, ``conversion_rate`` with
    Wilson ``_lo`` / ``_hi``.
    """
    if int(max_steps) < 1:
        raise ValueError(f"max_steps must be >= 1; got {max_steps!r}")
    gap = _interval_us(entry_gap_h, "entry_gap_h")
    cw = _interval_us(conversion_window_h, "conversion_window_h")
    k = int(max_steps)
    has_step = src.has_column("step")
    step_col = ", CAST(step AS VARCHAR) AS step_id" if has_step else ", NULL AS step_id"
    q = f"""
    WITH {_entries_cte(gap, has_step)},
    en AS (SELECT user_id, campaign, entry_no, min(ts) AS entry_ts FROM ent GROUP BY ALL),
    e2 AS (SELECT *, lead(entry_ts) OVER (PARTITION BY user_id, campaign ORDER BY entry_ts) AS next_ts FROM en),
    {_msg_cte(step_col)},
    s1 AS (SELECT m.*, e.entry_no, e.entry_ts FROM (SELECT * FROM msg WHERE campaign <> '{MISSING}') m ASOF JOIN e2 e
             ON m.user_id = e.user_id AND m.campaign = e.campaign AND m.sent_ts >= e.entry_ts),
    s2 AS (SELECT *, row_number() OVER p AS step_no, lag(sent_ts) OVER p AS prev_ts FROM s1
           WINDOW p AS (PARTITION BY user_id, campaign, entry_no ORDER BY sent_ts, message_id)),
    s3 AS (SELECT s2.*, least(step_no, {k}) AS step, coalesce(o.opened, false) AS opened, coalesce(o.clicked, false) AS clicked,
                  epoch(sent_ts - coalesce(prev_ts, entry_ts)) / 3600.0 AS h_from_prev
           FROM s2 LEFT JOIN mo o USING (message_id)),
    conv AS (SELECT DISTINCT e.user_id, e.campaign, e.entry_no FROM e2 e JOIN log p
               ON p.event = 'purchase' AND p.user_id = e.user_id AND p.ts >= e.entry_ts AND p.ts <= e.entry_ts + {cw}
              AND (e.next_ts IS NULL OR p.ts < e.next_ts)),
    last AS (SELECT e.user_id, e.campaign, e.entry_no, coalesce(max(s.step), 0) AS last_step,
                    bool_or(c.entry_no IS NOT NULL) AS converted
             FROM e2 e LEFT JOIN s3 s USING (user_id, campaign, entry_no) LEFT JOIN conv c USING (user_id, campaign, entry_no)
             GROUP BY ALL),
    steps AS (SELECT campaign, step, count(*) AS messages, count(*) FILTER (WHERE opened) AS opened,
                     count(*) FILTER (WHERE clicked) AS clicked, median(h_from_prev) AS median_h_from_prev,
                     mode(channel) AS channel, mode(step_id) AS step_id
              FROM s3 GROUP BY ALL),
    ends AS (SELECT campaign, last_step AS step, count(*) FILTER (WHERE converted) AS converted_here,
                    count(*) FILTER (WHERE NOT converted) AS exited_here FROM last GROUP BY ALL),
    tot AS (SELECT campaign, count(*) AS entries, count(*) FILTER (WHERE converted) AS conversions FROM last GROUP BY 1),
    grid AS (SELECT t.campaign, g.step FROM tot t, range(0, {k + 1}) g(step))
    SELECT g.campaign, g.step, coalesce(s.messages, 0) AS messages, coalesce(s.opened, 0) AS opened,
           coalesce(s.clicked, 0) AS clicked, coalesce(x.converted_here, 0) AS converted_here,
           coalesce(x.exited_here, 0) AS exited_here, s.median_h_from_prev, s.channel, s.step_id,
           t.entries, t.conversions
    FROM grid g JOIN tot t USING (campaign) LEFT JOIN steps s USING (campaign, step) LEFT JOIN ends x USING (campaign, step)
    ORDER BY g.campaign, g.step
    """
    df = src.sql(q)
    if df.empty:
        return df
    for c in ("step", "messages", "opened", "clicked", "converted_here", "exited_here", "entries", "conversions"):
        df[c] = df[c].astype("int64")
    parts = []
    for camp, g in df.groupby("campaign", sort=True):
        g = g.sort_values("step").copy()
        ends = (g["converted_here"] + g["exited_here"]).to_numpy()
        reached = ends[::-1].cumsum()[::-1]  # entries whose last step is >= this one
        g["reached"] = reached
        maxstep = int(g.loc[g["reached"] > 0, "step"].max())
        g = g[g["step"] <= max(maxstep, 0)]
        prev = np.r_[np.nan, g["reached"].to_numpy()[:-1]]
        with np.errstate(invalid="ignore", divide="ignore"):
            g["drop_off"] = 1 - g["reached"] / prev
        g["step_label"] = ["entry" if s == 0 else
                           f"step {s}{'+' if s == k else ''} ({sid if isinstance(sid, str) else ch})"
                           for s, sid, ch in zip(g["step"], g["step_id"], g["channel"])]
        parts.append(g)
    df = pd.concat(parts, ignore_index=True)
    _with_wilson(df, "conversions", "entries", "conversion_rate", confidence)
    return df[["campaign", "step", "step_label", "reached", "messages", "opened", "clicked", "converted_here",
               "exited_here", "drop_off", "median_h_from_prev", "entries", "conversions", "conversion_rate",
               "conversion_rate_lo", "conversion_rate_hi"]]


def has_step_ids(src: LogSource) -> bool:
    """Whether some row of the log carries a journey step id (the ``step`` column)."""
    return src.has_column("step") and bool(src.scalar("SELECT count(step) > 0 FROM log"))


def journey_steps(src: LogSource, entry_gap_h: float = 72.0, confidence: float = 0.95,
                  top_reasons: int = 3) -> pd.DataFrame:
    """Per journey step (``campaign`` × ``step`` of the log's ``step`` column): what the step
    decided, what pressure rules did to it, and how its messages fared.

    Needs the ``step`` column (written by both engines and the sender); returns an empty
    frame when the log has none or no row of a campaign carries a step.

    Returns one row per campaign × step, steps in the order of their median position in an
    entry (the n-th decision of the user in the campaign since the entry, decisions at one
    instant in the log's row order; ties: the step that decided first): ``decided``
    (decisions at the step), ``chose_message`` (those that chose a message), ``deferred`` /
    ``suppressed`` (admission rows — one message may be deferred several times),
    ``sent``, ``delivered``, ``opened``, ``clicked`` (messages; outcomes only of messages whose
    ``sent`` row is in the log), ``channel`` (the most common
    of its sends), ``open_rate`` and ``click_rate`` (per sent message, Wilson ``_lo`` /
    ``_hi``), ``median_h_from_prev`` (hours from the user's previous decision in the same
    entry; entries as in :func:`journey_funnel`) and ``top_reasons`` (the ``top_reasons``
    most common deferral / suppression reasons with their counts).
    """
    if not has_step_ids(src):
        return pd.DataFrame()
    gap = _interval_us(entry_gap_h, "entry_gap_h")
    q = f"""
    WITH {_entries_cte(gap, True)},
    sent_ids AS (SELECT DISTINCT message_id FROM log WHERE event = 'sent' AND message_id IS NOT NULL),
    s AS (SELECT ts, event, channel, message_id, campaign, reason, CAST(step AS VARCHAR) AS step,
                 -- outcomes count for messages sent in this log only (a log cut at its start
                 -- can hold opens of earlier sends): rates stay per sent message, at most 1
                 event = 'sent' OR message_id IN (SELECT message_id FROM sent_ids) AS of_sent
          FROM log WHERE step IS NOT NULL AND campaign IS NOT NULL),
    d3 AS (SELECT *, row_number() OVER (PARTITION BY user_id, campaign, entry_no ORDER BY ts, rn) AS pos
           FROM ent WHERE step IS NOT NULL),
    dec AS (SELECT campaign, step, median(pos) AS pos,
                   median(epoch(since) / 3600.0) FILTER (WHERE new_entry = 0) AS median_h_from_prev
            FROM d3 GROUP BY ALL),
    agg AS (SELECT campaign, step, min(ts) AS first_ts,
           count(*) FILTER (WHERE event = 'decided') AS decided,
           count(*) FILTER (WHERE event = 'decided' AND channel <> 'none') AS chose_message,
           count(*) FILTER (WHERE event = 'deferred') AS deferred,
           count(*) FILTER (WHERE event = 'suppressed') AS suppressed,
           count(*) FILTER (WHERE event = 'sent') AS sent,
           count(DISTINCT message_id) FILTER (WHERE event = 'delivered' AND of_sent) AS delivered,
           count(DISTINCT message_id) FILTER (WHERE event = 'opened' AND of_sent) AS opened,
           count(DISTINCT message_id) FILTER (WHERE event = 'clicked' AND of_sent) AS clicked,
           mode(channel) FILTER (WHERE event = 'sent') AS channel
    FROM s GROUP BY campaign, step)
    SELECT agg.*, dec.median_h_from_prev FROM agg LEFT JOIN dec USING (campaign, step)
    ORDER BY campaign, dec.pos NULLS LAST, first_ts, step
    """
    df = src.sql(q)
    if df.empty:
        return df
    reasons = src.sql("""
    SELECT campaign, CAST(step AS VARCHAR) AS step, event, reason, count(*) AS n FROM log
    WHERE step IS NOT NULL AND campaign IS NOT NULL AND event IN ('deferred', 'suppressed') AND reason IS NOT NULL
    GROUP BY ALL ORDER BY n DESC, event, reason""")
    top = {key: ", ".join(f"{e} {r} ({n:,})" for e, r, n in zip(g["event"], g["reason"], g["n"]))
           for key, g in ((k, g.head(int(top_reasons))) for k, g in reasons.groupby(["campaign", "step"]))}
    df["top_reasons"] = [top.get((c, st), "") for c, st in zip(df["campaign"], df["step"])]
    for c in ("decided", "chose_message", "deferred", "suppressed", "sent", "delivered", "opened", "clicked"):
        df[c] = df[c].astype("int64")
    _with_wilson(df, "opened", "sent", "open_rate", confidence)
    _with_wilson(df, "clicked", "sent", "click_rate", confidence)
    return df[["campaign", "step", "channel", "decided", "chose_message", "deferred", "suppressed", "sent",
               "delivered", "opened", "clicked", "open_rate", "open_rate_lo", "open_rate_hi", "click_rate",
               "click_rate_lo", "click_rate_hi", "median_h_from_prev", "top_reasons"]]


# --------------------------------------------------------------------------- policy evaluation

def decision_rewards(src: LogSource, reward: str = "auto", outcome_window_days: float = 14.0) -> tuple[pd.DataFrame, str]:
    """One row per logged decision with a propensity: ``action``, ``position`` (slot, from an
    action written ``item@posK``; 0 otherwise), ``propensity`` and ``reward``.

    ``reward`` is a funnel stage attributed as in :func:`engagement_funnel` (``opened``,
    ``clicked``, ``visit``, ``purchase``: 0/1 per decision) or ``value`` (attributed purchase
    value, currency units); ``auto`` picks ``clicked`` if the log has clicks, else ``visit``,
    else ``purchase``. Returns ``(table, reward_name)``. Decisions without a propensity
    (or with propensity 0) are left out: they cannot be reweighted.
    """
    present = {r[0] for r in src.con.execute("SELECT DISTINCT event FROM log").fetchall()}
    if reward == "auto":
        reward = next((r for r in ("clicked", "visit", "purchase") if r in present), "")
        if not reward:
            raise ValueError("the log has no clicked, visit or purchase rows: no reward to evaluate policies on")
    if reward not in ("opened", "clicked", "visit", "purchase", "value"):
        raise ValueError(f"reward must be auto, opened, clicked, visit, purchase or value; got {reward!r}")
    # per-decision outcomes: group by a per-decision key through engagement_funnel's attribution
    stage = "purchase" if reward == "value" else reward
    q = f"""
    WITH {_attribution_ctes([stage], outcome_window_days)},
    hit AS (SELECT a.did, count(*) AS n, coalesce(sum(e.value), 0) AS v FROM asg a JOIN ev e USING (eid)
            WHERE e.event = '{stage}' GROUP BY 1)
    SELECT d.did, d.action, d.propensity, {'coalesce(h.v, 0)' if reward == 'value' else '(h.n IS NOT NULL)::DOUBLE'} AS reward
    FROM dec d LEFT JOIN hit h USING (did) WHERE d.propensity > 0 ORDER BY d.did
    """
    df = src.sql(q)
    split = df["action"].str.extract(r"^(?P<item>.+)@pos(?P<pos>\d+)$")
    if len(df) and split["item"].notna().all():
        df["action"] = split["item"]
        df["position"] = split["pos"].astype(int) - split["pos"].astype(int).min()
    else:
        df["position"] = 0
    return df[["did", "action", "position", "propensity", "reward"]], reward


def parse_candidate(spec: str, actions: Sequence[str]) -> dict[str, float]:
    """A candidate policy given as text → its action probabilities (the same in every round).

    - ``uniform`` — every logged action with equal probability;
    - ``always:ACTION`` — that action;
    - ``mix:A=0.7,B=0.3`` — those probabilities (must sum to 1).

    Actions must be ones that appear in the log (an unseen action cannot be evaluated).
    """
    acts = list(actions)
    spec = str(spec).strip()
    if spec == "uniform":
        return {a: 1 / len(acts) for a in acts}
    if spec.startswith("always:"):
        a = spec.split(":", 1)[1]
        if a not in acts:
            raise ValueError(f"candidate {spec!r}: action {a!r} never appears in the log; logged actions: "
                             f"{', '.join(acts[:20])}{' …' if len(acts) > 20 else ''}")
        return {a: 1.0}
    if spec.startswith("mix:"):
        probs: dict[str, float] = {}
        for part in spec[4:].split(","):
            if "=" not in part:
                raise ValueError(f"candidate {spec!r}: expected mix:ACTION=PROB,ACTION=PROB")
            a, p = part.split("=", 1)
            if a.strip() not in acts:
                raise ValueError(f"candidate {spec!r}: action {a.strip()!r} never appears in the log")
            probs[a.strip()] = float(p)
        if abs(sum(probs.values()) - 1) > 1e-6 or min(probs.values()) < 0:
            raise ValueError(f"candidate {spec!r}: probabilities must be >= 0 and sum to 1; got {sum(probs.values())}")
        return probs
    raise ValueError(f"unknown candidate policy {spec!r}; expected uniform, always:ACTION, mix:A=p,B=q "
                     "or a policy artifact (.json)")


def ope_table(rewards: pd.DataFrame, candidates: Sequence[str], estimators: Sequence[str] | None = None,
              confidence: float = 0.95, n_bootstrap: int = 500, seed: int = 0) -> pd.DataFrame:
    """Off-policy estimates of each candidate from logged decisions, every estimator with its CI.

    ``rewards`` is :func:`decision_rewards`'s table. Each candidate (see
    :func:`parse_candidate`) puts the same distribution over actions in every slot; DM, DR,
    SNDR and Switch-DR use a cross-fitted reward model per (action, slot) without context
    (:func:`omnisim.policies.ope.fit_reward_model` on a constant feature). Intervals are
    bootstrap percentile intervals over decisions at ``confidence``. The logged policy's own
    mean reward (on-policy) is added as candidate ``logged (on-policy)`` with a Student t
    interval.

    Returns ``candidate``, ``estimator``, ``value``, ``lo``, ``hi``, ``n``.
    """
    from omnisim.policies import ope
    from omnisim.stats import mean_sd_ci

    check_confidence(confidence)
    names = list(estimators) if estimators else list(ope.ESTIMATORS)
    actions = sorted(rewards["action"].unique())
    index = {a: i for i, a in enumerate(actions)}
    a = rewards["action"].map(index).to_numpy(np.int64)
    pos = rewards["position"].to_numpy(np.int64)
    len_list = int(pos.max()) + 1 if len(pos) else 1
    r = rewards["reward"].to_numpy(float)
    ps = rewards["propensity"].to_numpy(float)
    n = len(r)
    need_q = any(ope._estimator(e).needs_reward_model for e in names)
    q = (ope.fit_reward_model(np.ones((n, 1)), a, r, n_actions=len(actions), position=pos, len_list=len_list)
         if need_q and n >= 4 else None)
    m, _, lo, hi = mean_sd_ci(r, confidence)
    rows = [{"candidate": "logged (on-policy)", "estimator": "on-policy mean", "value": m, "lo": lo, "hi": hi, "n": n}]
    for spec in candidates:
        probs = parse_candidate(spec, actions)
        vec = np.zeros(len(actions))
        for act, p in probs.items():
            vec[index[act]] = p
        dist = np.broadcast_to(np.repeat(vec[:, None], len_list, axis=1), (n, len(actions), len_list))
        res = ope.estimate_all(names, seed=seed, reward=r, action=a, pscore=ps, action_dist=dist,
                               position=pos, estimated_rewards=q, alpha=1 - confidence, n_bootstrap=n_bootstrap)
        rows += [{"candidate": spec, "estimator": x.name, "value": x.value, "lo": x.ci_low, "hi": x.ci_high, "n": x.n}
                 for x in res]
    return pd.DataFrame(rows)


def _unsupported_notes(rewards: pd.DataFrame, candidates: Sequence[str]) -> list[str]:
    """A note per text candidate putting probability on actions the logging policy could not
    take: a decision logged with propensity 1 gave every other action probability 0, so the
    candidate's mass there (``1 - π(logged action)``) has no support and no estimator sees it."""
    certain = rewards["propensity"].to_numpy(float) >= 1.0
    if not certain.any():
        return []
    actions = sorted(rewards["action"].unique())
    notes = []
    for spec in candidates:
        probs = parse_candidate(spec, actions)
        mass = 1.0 - rewards["action"].map(probs).fillna(0.0).to_numpy(float)
        share = float((mass * certain).mean())
        if share > 1e-12:
            notes.append(f"{spec}: {share:.1%} of its probability goes to actions the logging policy could not "
                         f"take ({certain.mean():.0%} of decisions were logged with propensity 1); estimates ignore "
                         "that part (unsupported) and are biased.")
    return notes


def evaluate_candidates(src: LogSource, candidates: Sequence[str], reward: str = "auto",
                        outcome_window_days: float = 14.0, estimators: Sequence[str] | None = None,
                        confidence: float = 0.95, n_bootstrap: int = 500,
                        seed: int = 0) -> tuple[pd.DataFrame, str, list[str]]:
    """The policy-evaluation report's table: :func:`ope_table` for the text candidates, and
    policy artifacts (``*.json``) through :func:`omnisim.policies.ope_log.evaluate_policy`
    (it rebuilds each decision's context — traits, consent, history — from the log, so for
    artifacts the log is read into pandas whole).

    Returns ``(table, reward_name, notes)``; ``notes`` says what could not be evaluated and why.
    """
    rewards, reward_name = decision_rewards(src, reward, outcome_window_days)
    notes: list[str] = []
    if rewards.empty:
        return pd.DataFrame(columns=["candidate", "estimator", "value", "lo", "hi", "n"]), reward_name, [
            "No decision in the log carries a propensity: nothing can be evaluated off-policy."]
    text = [c for c in candidates if not str(c).endswith(".json")]
    artifacts = [c for c in candidates if str(c).endswith(".json")]
    table = ope_table(rewards, text, estimators, confidence, n_bootstrap, seed)
    notes += _unsupported_notes(rewards, text)
    if artifacts:
        try:
            from omnisim.policies.ope_log import evaluate_policy  # OPE from the log, contexts rebuilt
        except ImportError:
            notes.append("Policy artifacts " + ", ".join(map(str, artifacts)) + " were not evaluated: "
                         "evaluating an artifact needs omnisim.policies.ope_log, which this installation lacks.")
            return table, reward_name, notes
        from omnisim.log import validate
        from omnisim.policies import ope
        from omnisim.policies.artifact import load_artifact

        their_reward = {"opened": "open", "clicked": "click", "visit": "visit", "purchase": "purchase",
                        "value": "revenue"}[reward_name]
        if reward_name == "value":
            notes.append("Artifacts are scored on revenue minus the message's cost (omnisim.policies.ope_log), "
                         "the text candidates on attributed purchase value.")
        # artifacts need each decision's context (history, traits): the one place the log is read whole
        log_df = validate(src.con.execute("SELECT * FROM log ORDER BY ts").df(), source=src.label)
        names = list(estimators) if estimators else list(ope.ESTIMATORS)
        for path in artifacts:
            res = evaluate_policy(log_df, load_artifact(path), src.users_df, estimators=names, reward=their_reward,
                                  alpha=1 - confidence, window_h=outcome_window_days * 24.0,
                                  n_bootstrap=n_bootstrap, seed=seed)
            share = float(res["unsupported_share"].iloc[0]) if len(res) else 0.0
            if share > 0:
                notes.append(f"{path}: {share:.1%} of its probability goes to actions never logged; "
                             "estimates ignore that part (unsupported).")
            rows = res.rename(columns={"ci_low": "lo", "ci_high": "hi"}).assign(candidate=str(path))
            table = pd.concat([table, rows[["candidate", "estimator", "value", "lo", "hi", "n"]]], ignore_index=True)
    return table, reward_name, notes
