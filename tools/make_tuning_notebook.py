"""Writes notebooks/tuning_report.ipynb (kept as code so diffs stay readable)."""

from pathlib import Path

import nbformat as nbf

cells = []
md = lambda s: cells.append(nbf.v4.new_markdown_cell(s))
code = lambda s, **kw: cells.append(nbf.v4.new_code_cell(s, **kw))

code('''# Parameters (papermill overrides this cell)
artifact = "reports/tuned.json"   # the artifact written by `omnisim tune --out`
storage = ""                      # the study's SQLite file; default: <artifact stem>.study.db beside it
study_name = ""                   # default: the study recorded in the artifact
out_dir = "reports"
output_json = None                # where the headline numbers go (run_report sets it)
title = "Tuning report"''', metadata={"tags": ["parameters"]})
code('''import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from omnisim.policies.artifact import read_artifact
from omnisim.tune import load_study, pareto_front, trials_table

manifest = read_artifact(artifact)
tuning = manifest.get("tuning")
if not tuning:
    raise ValueError(f"{artifact}: this artifact has no tuning block; export it with `omnisim tune`")
storage_path = storage or str(Path(artifact).with_name(Path(artifact).stem + ".study.db"))
study = load_study(storage_path, study_name or tuning["study"])
trials = trials_table(study)
done = trials[trials["state"] == "COMPLETE"].copy()
params = [p["path"] for p in tuning["search_space"]]
Path(out_dir).mkdir(parents=True, exist_ok=True)
trials.to_csv(Path(out_dir) / "tuning_trials.csv", index=False)
imp = tuning["improvement"]
display(Markdown(
    f"# {title}\\n\\nPolicy **{manifest['name']}** tuned on scenario **{tuning['scenario']}** "
    f"({tuning['n_users'] or 'scenario'} users × {tuning['days'] or 'scenario'} days, engine {tuning['engine']}).\\n\\n"
    f"Objective: `{tuning['objective']}` ({tuning['direction']}); constraints: "
    + (", ".join(f"`{c}`" for c in tuning["constraints"]) or "none") + ".\\n\\n"
    f"{len(trials)} trials ({len(done)} complete, {int((trials['state'] == 'PRUNED').sum())} pruned) on "
    f"{len(tuning['seeds'])} common seeds; top {tuning['top_k']} re-evaluated on {len(tuning['fresh_seeds'])} "
    f"fresh seeds.\\n\\n**{tuning['summary']}**"))''')
md("## Search space\n\nEach parameter's range, its value in the starting policy and in the winner.")
code('''space = pd.DataFrame(tuning["search_space"]).set_index("path")
space["start"] = [tuning["start_values"].get(p) for p in space.index]
space["winner"] = [(tuning["winning_values"] or {}).get(p) for p in space.index]
display(space)''')
md("## Objective against each parameter\n\nOne point per completed trial (mean over the common seeds); "
   "infeasible trials (a constraint violated) in grey; the dashed line is the starting policy's value on the "
   "same seeds.")
code('''from omnisim.tune import Expression, study_baseline

base_mean = study_baseline(study)
start_obj = Expression.parse(tuning["objective"])(base_mean) if base_mean else None
n = max(len(params), 1)
fig, axes = plt.subplots(1, n, figsize=(4 * n, 3.2), squeeze=False)
for ax, p in zip(axes.flat, params):
    if p not in done:
        ax.set_title(f"{p}: no completed trial")
        continue
    feas = done["feasible"].fillna(True).astype(bool)
    x = done[p].astype(str) if any(s["path"] == p and s["type"] == "choice" for s in tuning["search_space"]) else done[p]
    ax.scatter(x[~feas], done.loc[~feas, "value"], color="lightgrey", label="infeasible")
    ax.scatter(x[feas], done.loc[feas, "value"], color="tab:blue", label="feasible")
    sv = tuning["start_values"].get(p)
    if sv is not None and not isinstance(sv, str):
        ax.axvline(sv, color="tab:orange", ls=":", label="start value")
    if tuning["winning_values"] and p in tuning["winning_values"] and not isinstance(tuning["winning_values"][p], str):
        ax.axvline(tuning["winning_values"][p], color="tab:green", ls="-", label="winner")
    if start_obj is not None:
        ax.axhline(start_obj, color="tab:orange", ls="--")
    if any(s["path"] == p and s.get("log") for s in tuning["search_space"]):
        ax.set_xscale("log")
    ax.set_xlabel(p, fontsize=8)
    ax.set_ylabel("objective")
axes.flat[0].legend(fontsize=7)
fig.tight_layout()
plt.show()''')
md("## Parameter importances\n\nfANOVA importances of the parameters for the objective "
   "(`optuna.importance.get_param_importances`; needs a few completed trials with varied values).")
code('''import optuna

try:
    importances = optuna.importance.get_param_importances(study)
except (RuntimeError, ValueError) as exc:
    importances = {}
    display(Markdown(f"Importances not available: {exc}"))
if importances:
    s = pd.Series(importances).sort_values()
    ax = s.plot.barh(figsize=(6, 0.5 + 0.4 * len(s)))
    ax.set_xlabel("importance (share of objective variance)")
    plt.show()''')
md("## Pareto front: revenue against unsubscribes and messages per user\n\n"
   "Each completed trial; the front (no trial has more revenue with fewer unsubscribes / messages) is joined by a line.")
code('''pairs = [("m_unsubscribes", "unsubscribes"), ("m_messages_per_user", "messages per user")]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
fronts = {}
for ax, (col, label) in zip(axes, pairs):
    if "m_revenue" not in done or col not in done:
        ax.set_title(f"{label}: not recorded")
        continue
    front = pareto_front(done, maximize=["m_revenue"], minimize=[col])
    fronts[col] = done.loc[front, ["number", col, "m_revenue"]].sort_values(col)
    ax.scatter(done[col], done["m_revenue"], color="lightgrey", label="trials")
    f = fronts[col]
    ax.plot(f[col], f["m_revenue"], "o-", color="tab:red", label="Pareto front")
    if tuning["winner_trial"] is not None and tuning["winner_trial"] in set(done["number"]):
        w = done[done["number"] == tuning["winner_trial"]]
        ax.scatter(w[col], w["m_revenue"], marker="*", s=200, color="tab:green", label="winner", zorder=5)
    ax.set_xlabel(label)
    ax.set_ylabel("revenue")
axes[0].legend(fontsize=7)
fig.tight_layout()
plt.show()
for col, f in fronts.items():
    display(Markdown(f"Front on {col[2:]}: trials {', '.join(map(str, f['number']))}"))''')
md("## The winner against the starting policy\n\nMeans over the fresh seeds with confidence intervals; "
   "`difference` is the paired per-seed difference winner − start (common random numbers).")
code('''ms = tuning["metrics"]
cols = [k for k in ("start", "winner", "difference") if k in ms]
fmt = lambda b: "—" if b["mean"] is None else (  # noqa: E731
    f"{b['mean']:.4g}" + ("" if b["low"] is None else f" [{b['low']:.4g}, {b['high']:.4g}]"))
table = pd.DataFrame({c: {m: fmt(b) for m, b in ms[c].items()} for c in cols})
display(table)
if "winner" in ms:
    shown = [m for m in ("objective", "revenue", "cost", "conversions", "unsubscribes", "messages_per_user_week")
             if m in ms["difference"]]
    fig, axes = plt.subplots(1, len(shown), figsize=(2.6 * len(shown), 3), squeeze=False)
    for ax, m in zip(axes.flat, shown):
        vals = [ms["start"][m], ms["winner"][m]]
        mean = np.array([v["mean"] if v["mean"] is not None else np.nan for v in vals], dtype=float)
        lo = np.array([v["low"] if v["low"] is not None else np.nan for v in vals], dtype=float)
        hi = np.array([v["high"] if v["high"] is not None else np.nan for v in vals], dtype=float)
        ax.bar([0, 1], mean, yerr=np.nan_to_num(np.vstack([mean - lo, hi - mean])), capsize=4,
               color=["tab:orange", "tab:green"])
        ax.set_xticks([0, 1], ["start", "winner"])
        ax.set_title(m.replace("_", " "), fontsize=9)
    fig.tight_layout()
    plt.show()
else:
    display(Markdown("No candidate met the constraints on the fresh seeds: the artifact holds the starting policy."))''')
code('''numbers = {"study": tuning["study"], "trials": int(len(trials)), "complete": int(len(done)),
           "pruned": int((trials["state"] == "PRUNED").sum()), "improvement": imp,
           "winning_values": tuning["winning_values"], "importances": {k: float(v) for k, v in importances.items()},
           "pareto_trials": {k[2:]: [int(x) for x in f["number"]] for k, f in fronts.items()}}
if output_json:
    Path(output_json).parent.mkdir(parents=True, exist_ok=True)
    Path(output_json).write_text(json.dumps(numbers, indent=2, default=str))''')

nb = nbf.v4.new_notebook(cells=cells, metadata={
    "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
    "language_info": {"name": "python"}})
Path(__file__).resolve().parents[1].joinpath("notebooks", "tuning_report.ipynb").write_text(nbf.writes(nb))
