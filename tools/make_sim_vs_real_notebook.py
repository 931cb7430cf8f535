"""Writes notebooks/sim_vs_real.ipynb (kept as code so diffs stay readable)."""

from pathlib import Path

import nbformat as nbf

cells = []
md = lambda s: cells.append(nbf.v4.new_markdown_cell(s))  # noqa: E731
code = lambda s, **kw: cells.append(nbf.v4.new_code_cell(s, **kw))  # noqa: E731

code('''# Parameters (papermill overrides this cell)
log_path = None               # the real engagement log (CSV / Parquet); required
users_path = None             # users table keyed by user_id (Parquet / CSV), optional
scenario_path = None          # calibrated scenario YAML; None: calibrate from the log on the fly
segment_by = None             # users column defining segments (calibration on the fly)
seed = 0                      # seed of the replay (population and world)
max_users = 6000              # replay (and compare) a random subset of this many users; None: all
window_days = None            # outcome window after each decision (days); None: the log's span
confidence = 0.95
output_json = None            # where to write the comparison tables (run_report sets it)
title = "Simulated vs real"''', metadata={"tags": ["parameters"]})
code('''import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from omnisim.analysis import load_users
from omnisim.log import read_log
from omnisim.model.calibrate import fit_calibration
from omnisim.model.replay import compare_distributions, compare_rates, distribution_samples, replay
from omnisim.model.scenario import load_scenario

if not log_path:
    raise ValueError("log_path is required: the real engagement log (CSV or Parquet), e.g. from "
                     "`omnisim data convert hillstrom --out hill.parquet`")
real = read_log(log_path)
users = load_users(users_path)
if scenario_path:
    scenario = load_scenario(scenario_path)
    how = f"scenario **{scenario_path}**"
else:
    scenario = fit_calibration(real, users, segment_by=segment_by, confidence=confidence,
                               source=str(log_path)).scenario
    how = "a scenario calibrated from this log on the fly (`omnisim.model.calibrate`)"
ids = real["user_id"].astype(str).unique()
if max_users is not None and len(ids) > max_users:
    keep = set(np.random.default_rng(seed).choice(ids, int(max_users), replace=False))
    real = real[real["user_id"].astype(str).isin(keep)].reset_index(drop=True)
rep = replay(real, scenario, users=users, segment_by=segment_by, seed=seed)
sim = rep.log
window_h = None if window_days is None else float(window_days) * 24
display(Markdown(f"# {title}\\n\\nReal log **{log_path}**: {len(real):,} rows, "
                 f"{real['user_id'].nunique():,} users (random subset of at most {max_users} users). "
                 f"Simulated under the **same logged decisions** ({(real['event'] == 'decided').sum():,} "
                 f"decisions replayed at their logged times) in {how}, seed {seed}: {len(sim):,} rows. "
                 f"Intervals are {confidence:.0%}."))
notes = (scenario.calibration or {}).get("notes", [])
if notes:
    display(Markdown("**Calibration notes:** " + " ".join(f"{n}." for n in notes)))''')
md("## Rates side by side\n\nPer logged action: visit and conversion rates and spend per decision "
   "within the outcome window; lifts over no message where the log has a `none` arm; message rates "
   "per channel where the real log records them. **Verdict**: *matches* when the interval of "
   "simulated − real contains 0, else the size of the difference. With many quantities, about one "
   "in twenty 'differs' by chance at 95 %.")
code('''rates = compare_rates(real, sim, window_h=window_h, confidence=confidence)
def ci(row, k):
    return f"{row[k]:.4g} [{row[k + '_low']:.4g}, {row[k + '_high']:.4g}]"
shown = pd.DataFrame({"quantity": rates["quantity"],
                      "real": [ci(r, "real") for _, r in rates.iterrows()],
                      "simulated": [ci(r, "sim") for _, r in rates.iterrows()],
                      "sim - real": [ci(r, "diff") for _, r in rates.iterrows()],
                      "verdict": rates["verdict"]})
display(shown.style.hide(axis="index"))''')
code('''plot = rates[~rates["quantity"].str.startswith("spend") & ~rates["quantity"].str.startswith("lift spend")]
if len(plot):
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(plot) + 1))
    y = np.arange(len(plot))
    for off, k, c in ((-0.15, "real", "C0"), (0.15, "sim", "C1")):
        ax.errorbar(plot[k], y + off, xerr=[plot[k] - plot[k + "_low"], plot[k + "_high"] - plot[k]],
                    fmt="o", color=c, label={"real": "real", "sim": "simulated"}[k], capsize=3)
    ax.set_yticks(y, plot["quantity"]); ax.invert_yaxis(); ax.legend(); ax.set_xlabel("rate")
    plt.tight_layout(); plt.show()''')
md("## Distributions\n\nEmpirical distributions overlaid, with the two-sample Kolmogorov–Smirnov "
   "statistic D (largest gap between the two CDFs) and its p-value; *matches* when p ≥ 0.05. "
   "Distributions the real log cannot show (no opens, collapsed timestamps) are listed as not compared.")
code('''dists = compare_distributions(real, sim)
display(dists.style.hide(axis="index").format(precision=4))
rs, ss = distribution_samples(real), distribution_samples(sim)
shown_d = dists[dists["ks_D"].notna()]
if len(shown_d):
    fig, axes = plt.subplots(1, len(shown_d), figsize=(4 * len(shown_d), 3), squeeze=False)
    for ax, (_, row) in zip(axes[0], shown_d.iterrows()):
        k = row["distribution"]
        r, s = rs[k], ss[k]
        bins = np.histogram_bin_edges(np.concatenate([r, s]), bins=30)
        ax.hist(r, bins=bins, density=True, alpha=0.5, label="real")
        ax.hist(s, bins=bins, density=True, alpha=0.5, label="simulated")
        ax.set_title(f"{k}\\nKS D={row['ks_D']:.3f}, p={row['p_value']:.2g}", fontsize=9)
        ax.legend(fontsize=8)
    plt.tight_layout(); plt.show()''')
md("## Verdicts")
code('''verdicts = pd.concat([rates[["quantity", "verdict"]],
                      dists.rename(columns={"distribution": "quantity"})[["quantity", "verdict"]]])
n_match = int((verdicts["verdict"] == "matches").sum())
n_cmp = int((~verdicts["verdict"].str.startswith(("not compared", "n/a"))).sum())
display(Markdown(f"**{n_match} of {n_cmp} compared quantities match** the real log."))
display(verdicts.style.hide(axis="index"))
if output_json:
    Path(output_json).parent.mkdir(parents=True, exist_ok=True)
    Path(output_json).write_text(json.dumps({
        "rates": json.loads(rates.to_json(orient="records")),
        "distributions": json.loads(dists.to_json(orient="records")),
        "n_match": n_match, "n_compared": n_cmp, "groups": rep.groups}, indent=1))''')

nb = nbf.v4.new_notebook(cells=cells, metadata={
    "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
    "language_info": {"name": "python"}})
Path(__file__).resolve().parents[1].joinpath("notebooks", "sim_vs_real.ipynb").write_text(nbf.writes(nb))
