"""Generate notebooks/engagement_report.ipynb: edit the cells here, run `.venv/bin/python tools/make_engagement_notebook.py`.

The notebook is thin: computations live in omnisim/analysis.py (tested); it loads, calls and plots.
"""
from pathlib import Path

import nbformat as nbf

nb = nbf.v4.new_notebook()
cells = []
def md(s): cells.append(nbf.v4.new_markdown_cell(s.strip("\n")))
def code(s, tags=()):
    c = nbf.v4.new_code_cell(s.strip("\n"))
    if tags: c.metadata["tags"] = list(tags)
    cells.append(c)

code('''
# Parameters: papermill injects overrides in a cell right after this one.
log_path = None  # engagement log (CSV, CSV.gz or Parquet), None means the shipped Hillstrom data, converted in memory
users_path = None  # users table keyed by user_id (Parquet or CSV), None means no breakdown (Hillstrom users when log_path is None)
title: str = "Engagement report"  # heading of the report
start = None  # first decision date, ISO 8601 UTC such as 2024-03-01, inclusive, None means from the first
end = None  # last decision date, inclusive, None means to the last
channels = None  # list of channels such as [email, sms], None means all. Holdouts on channel none are always kept
confidence: float = 0.95  # two-sided level of every interval
group_by = "zip_code"  # user attribute (users-table column) for the breakdown, None means no breakdown
outcome_window_days: float = 14.0  # days after a decision in which a visit or purchase counts for it (inclusive)
baseline_action: str = "none"  # lifts are measured against decisions that took this action
output_json = None  # write the tables of the report to this JSON file, None means do not write
show_tables: bool = True  # show the tables under the figures
max_levels: int = 20  # most levels in the breakdown (numbers with more values are cut in quintiles)
''', tags=["parameters"])

code('''
import json, math
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

import omnisim
from omnisim import analysis as A
from omnisim.log import read_log

%matplotlib inline
plt.rcParams.update({"figure.dpi": 100, "axes.spines.top": False, "axes.spines.right": False})
pd.set_option("display.max_columns", 30, "display.width", 200)

def show(df):
    """Display a table for reading (rates in %, CIs as [lo, hi]); the raw numbers go to the JSON."""
    if not show_tables or df is None or df.empty:
        return
    display(A.presentable(df).style.hide(axis="index"))

if isinstance(channels, str):
    channels = [channels]
if not 0 < confidence < 1:
    raise ValueError(f"parameter confidence must be in (0, 1), e.g. 0.95; got {confidence!r}")
if outcome_window_days < 0:
    raise ValueError(f"parameter outcome_window_days must be >= 0 (days); got {outcome_window_days!r}")
if log_path is None:
    from omnisim.datasets import hillstrom_log
    log, users = hillstrom_log()
    source = "the shipped Hillstrom data (data/hillstrom), converted in memory"
else:
    log = read_log(log_path)
    users = A.load_users(users_path)
    source = f"`{log_path}`" + (f" with users `{users_path}`" if users_path else "")
units = A.decision_outcomes(log, outcome_window_days, start=start, end=end, channels=channels)
summ = A.summary(log, units)
outcomes = A.outcome_columns(units)
has_value = "purchase" in units.columns
from omnisim.report_data import open_log
from omnisim.report_view import intro
opening, data_summary, data_quality = intro(
    open_log(log, users), title,
    note=(f"Data: {source}. omnisim {omnisim.__version__}; intervals at {confidence:.0%} "
          f"confidence; outcomes attributed within {outcome_window_days:g} days of a decision."))
display(Markdown(opening))
''')

md('''
## The data

What was read, and which decisions the report analyses (after the date and channel filters).
''')

code('''
ev = pd.DataFrame(list(summ["by_event"].items()), columns=["event", "rows"])
filters = []
if start or end: filters.append(f"decisions from {start or 'the start'} to {end or 'the end'}")
if channels: filters.append(f"channels {', '.join(channels)} (and holdouts)")
display(Markdown(
    f"- **Period:** {summ['start'][:19]} to {summ['end'][:19]} UTC\\n"
    f"- **Users:** {summ['users']:,}; **events:** {summ['events']:,}; "
    f"**channels:** {', '.join(summ['channels'])}\\n"
    f"- **Decisions analysed:** {summ['decisions_analysed']:,} "
    f"({summ['decision_start'][:10]} to {summ['decision_end'][:10]})"
    + (f"; filters: {'; '.join(filters)}" if filters else "")
    + f"\\n- **Users table:** {'%d users, attributes: %s' % (len(users), ', '.join(c for c in users.columns if c != 'user_id')) if users is not None else 'none'}"
))
show(ev)
''')

md('''
## Funnel

Per channel, campaign and action: how many decisions were followed by each stage
(decided → sent → delivered → opened → clicked → visit → purchase, the stages present in the
data). A message event counts for the decision with its `message_id`; a visit or purchase
counts for the same user's latest decision before it, within the outcome window.
''')

code('''
fun = A.funnel(units)
fig, ax = plt.subplots(figsize=(9, 4))
A.plot_funnel(fun, ax=ax)
plt.show()
show(fun)
''')

md('''
## Rates with confidence intervals

Share of decisions followed by each outcome (Wilson score interval) and, where the log has
purchases, the mean purchase value per decision (Student t interval; on Hillstrom this is
the spend per customer, in dollars).
''')

code('''
rate_tables = {o: A.rates_with_ci(units, o, confidence=confidence) for o in outcomes}
if has_value:
    rate_tables["value"] = A.rates_with_ci(units, "value", confidence=confidence)
if rate_tables:
    k = len(rate_tables)
    fig, axes = plt.subplots(1, k, figsize=(min(4.5 * k, 16), 3.8), squeeze=False)
    for ax, (o, t) in zip(axes[0], rate_tables.items()):
        A.plot_rates(t, ax=ax)
    fig.tight_layout(); plt.show()
    rates = pd.concat(rate_tables.values(), ignore_index=True)
    show(rates)
else:
    rates = pd.DataFrame()
    display(Markdown("_No outcome events (opens, clicks, visits, purchases) in this log: nothing to rate._"))
''')

md('''
## Lift over the baseline action

Each action's rate (or mean value) minus the baseline's, with its interval: normal (Wald)
for a difference of proportions, Welch t for a difference of means. When the actions were
assigned at random (Hillstrom: propensity 1/3 each) this is the causal effect of the message;
otherwise it is a plain comparison, since the policy chose whom to message.
''')

code('''
lift_tables = {o: A.lift_table(units, o, confidence, baseline=baseline_action) for o in rate_tables}
lift = pd.concat([t for t in lift_tables.values() if not t.empty], ignore_index=True) if any(
    not t.empty for t in lift_tables.values()) else pd.DataFrame(columns=list(A.LIFT_COLUMNS))
if (units["action"] == baseline_action).sum() == 0:
    lift_note = (f"No decision took the baseline action '{baseline_action}' (a holdout with no message), "
                 "so lift cannot be estimated: add a holdout group, or set baseline_action to one of "
                 f"{', '.join(sorted(units['action'].unique()))}.")
elif lift.empty:
    lift_note = "There is no outcome to compare or only the baseline action was taken: no lift to show."
else:
    lift_note = None
if lift_note:
    display(Markdown(f"**Lift skipped.** {lift_note}"))
else:
    k = len([t for t in lift_tables.values() if not t.empty])
    fig, axes = plt.subplots(1, k, figsize=(min(5 * k, 16), 0.6 * lift["action"].nunique() + 2), squeeze=False)
    for ax, t in zip(axes[0], [t for t in lift_tables.values() if not t.empty]):
        A.plot_lift(t, ax=ax)
    fig.tight_layout(); plt.show()
    show(lift)
''')

md('''
## Breakdown by a user attribute

The same rates per level of the chosen user attribute (`group_by`) and action.
''')

code('''
breakdown_tables = {}
breakdown_note = None
if group_by is None:
    breakdown_note = "No user attribute chosen (group_by is None)."
elif users is None:
    breakdown_note = "No users table given (users_path is None): no breakdown."
elif group_by not in users.columns:
    breakdown_note = (f"group_by {group_by!r} is not a column of the users table; available: "
                      f"{', '.join(c for c in users.columns if c != 'user_id')}.")
if breakdown_note:
    display(Markdown(f"**Breakdown skipped.** {breakdown_note}"))
else:
    breakdown_tables = {o: A.breakdown(units, users, group_by, o, confidence, max_levels=max_levels)
                        for o in rate_tables}
    k = len(breakdown_tables)
    fig, axes = plt.subplots(k, 1, figsize=(9, 3.6 * k), squeeze=False)
    for ax, t in zip(axes[:, 0], breakdown_tables.values()):
        A.plot_breakdown(t, group_by, ax=ax)
    fig.tight_layout(); plt.show()
    show(pd.concat(breakdown_tables.values(), ignore_index=True))
breakdown = (pd.concat(breakdown_tables.values(), ignore_index=True) if breakdown_tables else pd.DataFrame())
breakdown_lift = pd.DataFrame()
if breakdown_tables and lift_note is None:
    ua = A.with_attribute(units, users, group_by, max_levels=max_levels)
    parts = [A.lift_table(ua, o, confidence, baseline=baseline_action, by=group_by) for o in rate_tables]
    breakdown_lift = pd.concat([p for p in parts if not p.empty], ignore_index=True)
    display(Markdown(f"Lift over '{baseline_action}' within each level of `{group_by}` "
                     "(differences between levels hint at whom to target):"))
    show(breakdown_lift)
''')

code('''
numbers = {
    "title": title,
    "params": {"log_path": log_path, "users_path": users_path, "start": start, "end": end,
               "channels": channels, "confidence": confidence, "group_by": group_by,
               "outcome_window_days": outcome_window_days, "baseline_action": baseline_action},
    "summary": summ,
    "data_quality": data_quality,
    "funnel": A.to_records(fun),
    "rates": A.to_records(rates),
    "lift": A.to_records(lift),
    "lift_note": lift_note,
    "breakdown": A.to_records(breakdown),
    "breakdown_lift": A.to_records(breakdown_lift),
    "breakdown_note": breakdown_note,
}
if output_json:
    Path(output_json).parent.mkdir(parents=True, exist_ok=True)
    Path(output_json).write_text(json.dumps(numbers, indent=1, allow_nan=False))
    display(Markdown(f"_The tables of this report are in `{output_json}`._"))
''')

nb.cells = cells
for i, c in enumerate(nb.cells):  # stable ids: regenerating gives the same file
    c["id"] = f"cell-{i:02d}"
nb.metadata["kernelspec"] = {"display_name": "Python 3 (omnisim)", "language": "python", "name": "python3"}
nb.metadata["language_info"] = {"name": "python"}
nbf.write(nb, Path(__file__).resolve().parents[1] / "notebooks" / "engagement_report.ipynb")
