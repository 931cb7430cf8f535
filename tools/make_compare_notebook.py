"""Writes notebooks/compare_policies.ipynb (kept as code so diffs stay readable)."""

from pathlib import Path

import nbformat as nbf

cells = []
md = lambda s: cells.append(nbf.v4.new_markdown_cell(s))  # noqa: E731
code = lambda s, **kw: cells.append(nbf.v4.new_code_cell(s, **kw))  # noqa: E731

code('''# Parameters (papermill overrides this cell)
scenario = "default"
policies = ["seed_journey+pressure", "blast", "email_only"]
seeds = 3
n_users = 1500
days = 21
confidence = 0.95
out_dir = "reports"
title = "Policy comparison"''', metadata={"tags": ["parameters"]})
code('''import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from omnisim.experiment import compare, plot_comparison
from omnisim.model.scenario import load_scenario

sc = load_scenario(scenario) if isinstance(scenario, str) else scenario
table = compare(sc, policies, seeds, n_users=n_users, days=days, confidence=confidence, progress=False)
runs = table.attrs["runs"]
Path(out_dir).mkdir(parents=True, exist_ok=True)
table.to_csv(Path(out_dir) / "compare_policies.csv", index=False)
runs.to_csv(Path(out_dir) / "compare_policies_runs.csv", index=False)
display(Markdown(f"# {title}\\n\\nScenario **{scenario}**, {n_users:,} users × {days:g} days, "
                 f"{seeds} seeds (the same seeds for every policy), {confidence:.0%} confidence intervals over seeds."))''')
md("## Summary\n\nEach cell: mean over seeds [confidence interval].")
code('''def fmt(row, m):
    return f"{row[m + '_mean']:.4g} [{row[m + '_low']:.4g}, {row[m + '_high']:.4g}]"

shown = ["messages_per_user", "open_rate", "click_rate", "clicks_per_user", "conversions", "revenue",
         "cost", "revenue_minus_cost", "unsubscribes", "unsubscribe_rate", "unsubscribes_per_user",
         "churn", "overload_rate", "cap_violations", "quiet_hour_violations", "incremental_conversions"]
summary = pd.DataFrame({row["policy"]: {m: fmt(row, m) for m in shown if m + "_mean" in table}
                        for _, row in table.iterrows()})
display(summary)''')
md("## Outcomes side by side\n\nError bars are the confidence intervals over seeds.")
code('''fig = plot_comparison(table, ["messages_per_user", "open_rate", "conversions", "revenue_minus_cost",
                             "unsubscribes", "overload_rate"])
plt.show()''')
md("## Messages per user by channel")
code('''per_ch = table.set_index("policy")[[f"messages_per_user_{c}_mean" for c in ("email", "sms", "push")]]
per_ch.columns = ["email", "sms", "push"]
ax = per_ch.plot.bar(stacked=True, figsize=(7, 3.5), rot=15)
ax.set_ylabel("messages per user")
plt.show()''')
md("## Pressure rules\n\nCap and quiet-hour violations are counted against each policy's own rules, or "
   "against the reference rule set for policies without rules; a policy with pressure rules must show 0.")
code('''display(table[["policy", "cap_violations_mean", "quiet_hour_violations_mean", "overload_rate_mean"]])''')

nb = nbf.v4.new_notebook(cells=cells, metadata={
    "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
    "language_info": {"name": "python"}})
Path(__file__).resolve().parents[1].joinpath("notebooks", "compare_policies.ipynb").write_text(nbf.writes(nb))
