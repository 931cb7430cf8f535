"""Writes notebooks/sweep_results.ipynb (kept as code so diffs stay readable)."""

from pathlib import Path

import nbformat as nbf

cells = []
md = lambda s: cells.append(nbf.v4.new_markdown_cell(s))  # noqa: E731
code = lambda s, **kw: cells.append(nbf.v4.new_code_cell(s, **kw))  # noqa: E731

code('''# Parameters (papermill overrides this cell)
results_path = "reports/sweep.parquet"   # the table `omnisim sweep --out` wrote (.parquet or .csv)
objective = "revenue_minus_cost"         # the metric that picks the best policy per scenario variant
minimize = False                         # True for a cost-like objective (e.g. unsubscribes)
metrics = ["messages_per_user", "open_rate", "conversions", "revenue_minus_cost", "unsubscribes"]
confidence = 0.95
x_column = None                          # the grid column on the plots' x axis (default: the first)
out_dir = "reports"
output_json = None
title = "Sweep results"''', metadata={"tags": ["parameters"]})
code('''import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from omnisim.experiment import summarize_runs
from omnisim.sweep_results import finished, grid_columns, load_sweep_results, plot_grid, policy_leads

runs = load_sweep_results(results_path)
ok = finished(runs)
failed = runs.drop(ok.index)
grid = grid_columns(runs)
metrics = [m for m in dict.fromkeys([objective, *metrics]) if m in runs.columns]
engines = ", ".join(sorted(runs["engine"].astype(str).unique())) if "engine" in runs else "?"
display(Markdown(
    f"# {title}\\n\\n`{results_path}`: **{len(runs)} runs** ({len(ok)} finished, {len(failed)} failed) — "
    f"{runs['scenario'].nunique()} scenario variant(s) × {runs['policy'].nunique()} policies × "
    f"{runs['seed'].nunique()} seeds, engine {engines}"
    + (f"; grid: {', '.join(f'`{g}`' for g in grid)}" if grid else "") + ".\\n\\n"
    f"Intervals are {confidence:.0%} Student-t intervals over seeds; the best policy's lead is paired "
    f"over the seeds both policies finished (a sweep's policies share seeds)."))''')
md("## Failed runs\n\nRuns that raised (or lost their worker): left out of every number below. "
   "`omnisim sweep ... --resume` reruns only these.")
code('''if len(failed):
    display(failed[["run_id", "scenario", "policy", "seed", "error"]])
else:
    display(Markdown("None: every run finished."))''')
md("## Best policy per scenario variant")
code('''leads = policy_leads(runs, objective, confidence=confidence, maximize=not minimize)
display(leads.round(4))
lines = []
for r in leads.itertuples():
    if pd.isna(r.runner_up):
        lines.append(f"- **{r.scenario}**: only **{r.best}** finished.")
        continue
    verdict = ("a clear lead" if r.clear else
               "not distinguishable from the runner-up at this many seeds")
    lines.append(f"- **{r.scenario}**: **{r.best}** ({objective} {r.best_mean:,.4g}) over {r.runner_up} by "
                 f"{r.lead_mean:,.4g} [{r.lead_low:,.4g}, {r.lead_high:,.4g}] over {r.paired_seeds} paired "
                 f"seeds (p = {r.p_value:.3g}, Holm-adjusted over {len(leads)} variants {r.p_holm:.3g}): {verdict}.")
display(Markdown("\\n".join(lines)))''')
md("## Every policy in every variant\n\nMean [low, high] over seeds.")
code('''summary = summarize_runs(runs, metrics, confidence, by=["scenario", *grid, "policy"])
shown = summary[["scenario", *grid, "policy", "seeds", *(["failed"] if "failed" in summary else [])]].copy()
for m in metrics:
    shown[m] = [f"{a:,.4g} [{b:,.4g}, {c:,.4g}]" if pd.notna(a) else "—" for a, b, c in
                zip(summary[f"{m}_mean"], summary[f"{m}_low"], summary[f"{m}_high"])]
display(shown)''')
md("## How the metrics move" + "\n\nOne panel per metric" + " (against the first grid column, a line per "
   "policy, when the sweep has a grid).")
code('''for m in metrics:
    fig = plot_grid(ok, m, x=x_column, confidence=confidence)
    fig.suptitle(m.replace("_", " "), y=1.02)
    plt.show()''')
code('''Path(out_dir).mkdir(parents=True, exist_ok=True)
if output_json:
    Path(output_json).write_text(json.dumps({
        "runs": int(len(runs)), "finished": int(len(ok)), "failed": int(len(failed)),
        "failed_run_ids": [int(i) for i in failed["run_id"]], "grid": grid, "objective": objective,
        "leads": json.loads(leads.to_json(orient="records")),
        "summary": json.loads(summary.to_json(orient="records"))}, indent=2))''')

nb = nbf.v4.new_notebook(cells=cells, metadata={
    "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
    "language_info": {"name": "python"}})
Path(__file__).resolve().parents[1].joinpath("notebooks", "sweep_results.ipynb").write_text(nbf.writes(nb))
