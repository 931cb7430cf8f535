"""Matplotlib figures for the report suite (tables from :mod:`omnisim.report_tables`).

Each function draws one figure from one table and returns the ``Figure``; rates are shown
in percent, error bars are the table's confidence intervals.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from omnisim.report_tables import WEEKDAYS

__all__ = ["plot_channel_rates", "plot_fatigue", "plot_heatmaps", "plot_hours", "plot_journey", "plot_ope",
           "plot_saturation", "plot_time_to_open", "plot_touch_shares"]


def _err(est: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.clip(np.nan_to_num(np.vstack([est - lo, hi - est])), 0, None)


def plot_channel_rates(table: pd.DataFrame, rates: Sequence[str] = ("open_rate", "click_rate", "conversion_rate")):
    """Per channel (campaign ``(all)``): bars of each rate per message with its CI (percent)."""
    import matplotlib.pyplot as plt

    t = table[table["campaign"] == "(all)"]
    rates = [r for r in rates if t[r].notna().any()]
    fig, axes = plt.subplots(1, max(len(rates), 1), figsize=(4.2 * max(len(rates), 1), 3.2), squeeze=False)
    x = np.arange(len(t))
    for ax, r in zip(axes[0], rates):
        est = 100 * t[r].to_numpy(float)
        ax.bar(x, est, yerr=_err(est, 100 * t[f"{r}_lo"].to_numpy(float), 100 * t[f"{r}_hi"].to_numpy(float)),
               capsize=4, color=[f"C{i}" for i in range(len(t))])
        ax.set_xticks(x, t["channel"])
        ax.set_title(f"{r.replace('_', ' ')} (% of messages)")
    fig.tight_layout()
    return fig


def plot_touch_shares(shares: pd.DataFrame):
    """Side-by-side bars: share of purchases each channel touched first and last (percent)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    x = np.arange(len(shares))
    for i, (col, label) in enumerate((("first_share", "first touch"), ("last_share", "last touch"))):
        est = 100 * shares[col].to_numpy(float)
        ax.bar(x + (i - 0.5) * 0.38, est, 0.38, label=label, capsize=3,
               yerr=_err(est, 100 * shares[f"{col}_lo"].to_numpy(float), 100 * shares[f"{col}_hi"].to_numpy(float)))
    ax.set_xticks(x, shares["channel"])
    ax.set_ylabel("% of purchases")
    ax.legend(fontsize=8)
    ax.set_title("Which channel touched the conversion")
    fig.tight_layout()
    return fig


def plot_heatmaps(heat: pd.DataFrame, metric: str = "opened", min_sends: int = 1):
    """One heatmap per channel: engagement rate (percent) by local weekday × hour; cells with
    fewer than ``min_sends`` sends are blank."""
    import matplotlib.pyplot as plt

    chans = sorted(heat["channel"].unique())
    fig, axes = plt.subplots(len(chans), 1, figsize=(10, 2.6 * len(chans)), squeeze=False)
    for ax, ch in zip(axes[:, 0], chans):
        g = heat[heat["channel"] == ch]
        grid = np.full((7, 24), np.nan)
        ok = g["sends"] >= min_sends
        grid[g.loc[ok, "weekday"], g.loc[ok, "hour"]] = 100 * g.loc[ok, "rate"]
        top = np.nanmax(grid) if np.isfinite(grid).any() else 1.0
        im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=max(float(top), 1.0))
        ax.set_yticks(range(7), WEEKDAYS)
        ax.set_xticks(range(0, 24, 2))
        ax.set_xlabel("local hour of the send")
        ax.set_title(f"{ch}: % {metric} by local weekday × hour ({int(g['sends'].sum()):,} sends)")
        fig.colorbar(im, ax=ax, label=f"% {metric}")
    fig.tight_layout()
    return fig


def plot_time_to_open(hist: pd.DataFrame):
    """Per channel: distribution of hours from send to first open (share per bin)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.2))
    bins = list(dict.fromkeys(hist.sort_values("lo_h")["bin"]))
    chans = sorted(hist["channel"].unique())
    w = 0.8 / max(len(chans), 1)
    for i, ch in enumerate(chans):
        g = hist[hist["channel"] == ch].set_index("bin").reindex(bins)
        ax.bar(np.arange(len(bins)) + i * w - 0.4 + w / 2, 100 * g["share"].fillna(0), w, label=ch)
    ax.set_xticks(np.arange(len(bins)), bins, rotation=30, ha="right")
    ax.set_ylabel("% of opened messages")
    ax.set_title("Time from send to first open")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_hours(hourly: pd.DataFrame):
    """Per channel: sends per local hour (bars) and the shrunk rate (line), picked hours marked."""
    import matplotlib.pyplot as plt

    chans = sorted(hourly["channel"].unique())
    fig, axes = plt.subplots(1, len(chans), figsize=(4.5 * len(chans), 3.2), squeeze=False)
    for ax, ch in zip(axes[0], chans):
        g = hourly[hourly["channel"] == ch].set_index("hour").reindex(range(24))
        ax.bar(range(24), g["sends"].fillna(0), color=["C1" if p is True else "C0" for p in g["picked"]])
        ax.set_xlabel("local hour (orange: the model's hours)")
        ax.set_ylabel("sends")
        ax2 = ax.twinx()
        ax2.plot(range(24), 100 * g["shrunk_rate"], "k.-", lw=1)
        ax2.set_ylabel("% engaged (shrunk)")
        ax.set_title(ch)
    fig.tight_layout()
    return fig


def plot_fatigue(curve: pd.DataFrame, column: str = "response_rate"):
    """Rate (percent, CI) against messages received in the previous 7 and 30 days."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    for wd, g in curve.groupby("window_days"):
        est = 100 * g[column].to_numpy(float)
        ax.errorbar(g["prev"] + (0.1 if wd == 30 else -0.1), est, capsize=3, marker="o", label=f"previous {wd} days",
                    yerr=_err(est, 100 * g[f"{column}_lo"].to_numpy(float), 100 * g[f"{column}_hi"].to_numpy(float)))
    ax.set_xlabel("messages the user received before (all channels)")
    ax.set_ylabel(f"% {column.replace('_', ' ')}")
    labels = curve.drop_duplicates("prev").sort_values("prev")
    ax.set_xticks(labels["prev"], labels["label"])
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_saturation(classes: pd.DataFrame):
    """Users per class (under-, well-, over-messaged, not messaged)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 2.8))
    colors = {"under-messaged": "C0", "well-messaged": "C2", "over-messaged": "C3", "not messaged": "0.7"}
    ax.barh(classes["class"], classes["users"], color=[colors.get(c, "C0") for c in classes["class"]])
    for y, (u, s) in enumerate(zip(classes["users"], classes["share"])):
        ax.annotate(f"{u:,} ({100 * s:.1f} %)", (u, y), va="center", fontsize=8)
    ax.set_xlabel("users")
    ax.invert_yaxis()
    fig.tight_layout()
    return fig


def plot_journey(funnel: pd.DataFrame, campaign: str):
    """One journey: entries reaching each step, with exits and conversions per step."""
    import matplotlib.pyplot as plt

    g = funnel[funnel["campaign"] == campaign]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    x = np.arange(len(g))
    ax.bar(x, g["reached"], color="C0", label="reached")
    ax.bar(x, g["exited_here"], color="C3", alpha=0.7, label="exited after this step")
    ax.bar(x, g["converted_here"], bottom=g["exited_here"], color="C2", label="converted (last step here)")
    ax.set_xticks(x, g["step_label"], rotation=15, ha="right")
    ax.set_ylabel("entries")
    conv = g["conversion_rate"].iloc[0]
    ax.set_title(f"{campaign}: {int(g['entries'].iloc[0]):,} entries, {100 * conv:.2f} % converted")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_journey_steps(steps: pd.DataFrame, campaign: str):
    """One journey's steps (:func:`omnisim.report_tables.journey_steps`): messages chosen,
    sent, deferred and suppressed rows (a message may be deferred several times; suppressed
    rows include decisions that could not message, e.g. ``no_consent``), opened and clicked,
    per step that messages."""
    import matplotlib.pyplot as plt

    g = steps[(steps["campaign"] == campaign) & (steps["chose_message"] > 0)]
    bars = (("chose_message", "chose a message", "0.6"), ("sent", "sent", "C0"),
            ("deferred", "deferred (rows)", "C1"), ("suppressed", "suppressed (rows)", "C3"),
            ("opened", "opened", "C2"), ("clicked", "clicked", "C4"))
    fig, ax = plt.subplots(figsize=(9, 0.9 * len(g) + 1.4))
    y = np.arange(len(g))
    h = 0.8 / len(bars)
    for i, (col, label, color) in enumerate(bars):
        ax.barh(y - 0.4 + (i + 0.5) * h, g[col], height=h, color=color, label=label)
    ax.set_yticks(y, [f"{s} ({c})" for s, c in zip(g["step"], g["channel"].fillna("-"))])
    ax.invert_yaxis()
    ax.set_xlabel("messages / rows")
    ax.set_title(f"{campaign}: per step")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def plot_ope(table: pd.DataFrame):
    """Estimates with CIs: one row per candidate × estimator (the on-policy mean first)."""
    import matplotlib.pyplot as plt

    t = table.reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(t) + 1.2))
    y = np.arange(len(t))[::-1]
    est = t["value"].to_numpy(float)
    cands = list(dict.fromkeys(t["candidate"]))
    ax.errorbar(est, y, xerr=_err(est, t["lo"].to_numpy(float), t["hi"].to_numpy(float)), fmt="none", ecolor="0.4",
                capsize=3)
    ax.scatter(est, y, c=[f"C{cands.index(c) % 10}" for c in t["candidate"]], zorder=3)
    ax.set_yticks(y, [f"{c} · {e}" for c, e in zip(t["candidate"], t["estimator"])], fontsize=8)
    ax.set_xlabel("estimated mean reward per decision")
    fig.tight_layout()
    return fig
