"""Writes notebooks/sweep_fatigue.ipynb (kept as code so diffs stay readable)."""

from pathlib import Path

import nbformat as nbf

cells = []
md = lambda s: cells.append(nbf.v4.new_markdown_cell(s))  # noqa: E731
code = lambda s, **kw: cells.append(nbf.v4.new_code_cell(s, **kw))  # noqa: E731

code('''# Parameters (papermill overrides this cell)
scenario = "default"
base_policy = "blast"                # the policy whose frequency is capped
caps_per_week = [1, 2, 3, 5, 8, 14]  # pressure cap: at most this many messages per rolling 7 days
half_lives_hours = [24, 72, 168]         # fatigue half-life of the simulated users, hours
seeds = 2
n_users = 1000
days = 28
engine = "fast"
scheduler = "local"                  # "local": a Dask LocalCluster; "sequential"; or tcp://host:8786
n_workers = 2
processes = True                     # LocalCluster workers as processes (False: threads)
takeoff_ratio = 2.0                  # unsubscribes "take off" at this multiple of the lowest cap's
out_dir = "reports"
output_json = None
title = "Frequency cap × fatigue half-life"''', metadata={"tags": ["parameters"]})
code('''import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from omnisim.stats import mean_ci
from omnisim.sweep import sweep, sweep_tasks

# one policy, its weekly cap varied by policy_grid (a path into the policy document)
capped = {"name": "capped", "policy": base_policy,
          "pressure": {"name": "weekly_cap@1", "caps": [{"max": int(caps_per_week[0]), "window_h": 168}]}}
tasks = sweep_tasks(scenario, [capped], seeds, grid={"fatigue.half_life_h": list(half_lives_hours)},
                    policy_grid={"pressure.caps[0].max": [int(k) for k in caps_per_week]},
                    n_users=n_users, days=days, engine=engine)
sched = None if scheduler == "local" else scheduler
runs = sweep(None, [], tasks=tasks, scheduler=sched, n_workers=n_workers, processes=processes,
             progress=False)
runs["cap_per_week"] = runs["pressure.caps[0].max"].astype(int)
runs["half_life_h"] = runs["fatigue.half_life_h"].astype(float)
runs["unsubscribes_per_1k"] = runs["unsubscribes"] / runs["users"] * 1000
runs["revenue_minus_cost_per_user"] = runs["revenue_minus_cost"] / runs["users"]
Path(out_dir).mkdir(parents=True, exist_ok=True)
runs.to_csv(Path(out_dir) / "sweep_fatigue_runs.csv", index=False)
display(Markdown(f"# {title}\\n\\nScenario **{scenario}**, policy **{base_policy}** under a rolling "
                 f"7-day cap, {n_users:,} users × {days:g} days, {seeds} seeds per cell, "
                 f"{len(runs)} runs on the `{engine}` engine via Dask "
                 f"({'LocalCluster' if sched is None else scheduler})."))''')
md("## Summary over seeds\n\nMean and 95 % interval over seeds of revenue − cost per user and "
   "unsubscribes per 1,000 users, for every cap × half-life cell.")
code('''rows = []
for (hl, cap), g in runs.groupby(["half_life_h", "cap_per_week"]):
    m, lo, hi = mean_ci(g["revenue_minus_cost_per_user"])
    u, ulo, uhi = mean_ci(g["unsubscribes_per_1k"])
    rows.append({"half_life_h": hl, "cap_per_week": cap, "rmc_mean": m, "rmc_low": lo, "rmc_high": hi,
                 "unsub_mean": u, "unsub_low": ulo, "unsub_high": uhi,
                 "messages_per_user": g["messages_per_user"].mean()})
cells = pd.DataFrame(rows)
display(cells.round(3))''')
md("## Where revenue − cost peaks")
code('''fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for hl, g in cells.groupby("half_life_h"):
    g = g.sort_values("cap_per_week")
    err = np.vstack([g["rmc_mean"] - g["rmc_low"], g["rmc_high"] - g["rmc_mean"]])
    axes[0].errorbar(g["cap_per_week"], g["rmc_mean"], yerr=np.nan_to_num(err), marker="o",
                     capsize=3, label=f"half-life {hl:g} h")
    err = np.vstack([g["unsub_mean"] - g["unsub_low"], g["unsub_high"] - g["unsub_mean"]])
    axes[1].errorbar(g["cap_per_week"], g["unsub_mean"], yerr=np.nan_to_num(err), marker="o",
                     capsize=3, label=f"half-life {hl:g} h")
axes[0].set(xlabel="cap (messages per 7 days)", ylabel="revenue − cost per user", xscale="log",
            title="revenue − cost")
axes[1].set(xlabel="cap (messages per 7 days)", ylabel="unsubscribes per 1,000 users", xscale="log",
            title="unsubscribes")
for ax in axes:
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()''')
md("## The grid at a glance")
code('''pivot = cells.pivot(index="half_life_h", columns="cap_per_week", values="rmc_mean")
fig, ax = plt.subplots(figsize=(7, 3))
im = ax.imshow(pivot.to_numpy(), aspect="auto", cmap="viridis")
ax.set_xticks(range(pivot.shape[1]), pivot.columns)
ax.set_yticks(range(pivot.shape[0]), [f"{v:g} h" for v in pivot.index])
ax.set(xlabel="cap (messages per 7 days)", ylabel="fatigue half-life", title="revenue − cost per user")
fig.colorbar(im, ax=ax)
plt.show()''')
md("## Peak and take-off per half-life\n\n*Peak*: the cap with the highest mean revenue − cost. "
   "*Take-off*: the smallest cap whose unsubscribes exceed `takeoff_ratio` × those at the lowest cap.")
code('''summary = []
for hl, g in cells.groupby("half_life_h"):
    g = g.sort_values("cap_per_week")
    peak = g.loc[g["rmc_mean"].idxmax()]
    base = g["unsub_mean"].iloc[0]
    over = g[g["unsub_mean"] > takeoff_ratio * max(base, 1e-9)]
    summary.append({"half_life_h": float(hl), "peak_cap_per_week": int(peak["cap_per_week"]),
                    "peak_revenue_minus_cost_per_user": float(peak["rmc_mean"]),
                    "unsubscribe_takeoff_cap": int(over["cap_per_week"].iloc[0]) if len(over) else None})
summary = pd.DataFrame(summary)
display(summary)
if output_json:
    Path(output_json).write_text(json.dumps({"cells": cells.to_dict(orient="records"),
                                             "summary": summary.to_dict(orient="records")},
                                            default=float))''')

nb = nbf.v4.new_notebook(cells=cells, metadata={
    "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
    "language_info": {"name": "python"}})
Path(__file__).resolve().parents[1].joinpath("notebooks", "sweep_fatigue.ipynb").write_text(nbf.writes(nb))
