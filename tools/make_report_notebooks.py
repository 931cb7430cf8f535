"""Generate the report-suite notebooks: edit the cells here, run `.venv/bin/python tools/make_report_notebooks.py`.

Writes notebooks/{channel_comparison,send_time,fatigue,journey_funnel,policy_evaluation}.ipynb.
The notebooks are thin: numbers come from omnisim/report_tables.py (SQL on DuckDB, tested),
figures from omnisim/report_plots.py, the opening section from omnisim/report_view.py.
"""
from pathlib import Path

import nbformat as nbf

ROOT = Path(__file__).resolve().parents[1]

COMMON_PARAMS = '''
log_path = None  # engagement log: Parquet file, directory of Parquet files, CSV or CSV.gz. None means the shipped Hillstrom data
users_path = None  # users table keyed by user_id (Parquet or CSV), None means none (Hillstrom users when log_path is None)
title: str = "{title}"  # heading of the report
confidence: float = 0.95  # two-sided level of every interval
late_after_h: float = 168.0  # message events more than this many hours after their send are flagged as late
output_json = None  # write the numbers of the report to this JSON file, None means do not write
'''

SETUP = '''
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from omnisim import report_plots as P
from omnisim import report_tables as T
from omnisim.report_data import open_log
from omnisim.report_view import fmt_table, intro, records, write_numbers

%matplotlib inline
plt.rcParams.update({{"figure.dpi": 90, "axes.spines.top": False, "axes.spines.right": False}})
pd.set_option("display.max_columns", 40, "display.width", 200)

def show(df, **kw):
    """Display a table for reading (the numbers themselves go to the JSON)."""
    if df is not None and len(df):
        display(fmt_table(df, **kw).style.hide(axis="index"))

src = open_log(log_path, users_path)
text, summary, quality = intro(src, title, late_after_h, note={note})
display(Markdown(text))
numbers = {{"title": title, "summary": summary, "quality": quality}}
'''

FINISH = '''
if write_numbers(output_json, numbers):
    display(Markdown(f"_The numbers of this report are in `{output_json}`._"))
'''

REPORTS = {
    "channel_comparison": dict(
        title="Channel comparison",
        params='''
attribution_window_h: float = 336.0  # a purchase counts for the sends to the user at most this many hours before it (inclusive)
by_campaign: bool = True  # also break each channel down by campaign
''',
        note='"Intervals: Wilson for rates, Student t for revenue per message. Conversions are purchases; the last send "'
             ' f"to the user within {attribution_window_h:g} h before a purchase gets it."',
        cells=[
            ("md", "## Per message and per cost unit\n\nOpen, click and conversion rate per message (Wilson "
                   "intervals), revenue per message (Student t), and the same per unit of cost where sends carry a "
                   "cost (`value` on `sent` rows). Per-cost intervals treat the cost per message as fixed."),
            ("code", '''
table = T.channel_table(src, attribution_window_h, confidence, by_campaign=by_campaign)
numbers["channels"] = records(table)
if table.empty:
    display(Markdown("_No `sent` rows in this log: there are no messages to compare._"))
else:
    missing = [s for s in ("opened", "clicked") if table[s].isna().all()]
    if missing:
        display(Markdown(f"_The log has no {' or '.join(missing)} rows: those rates are unknown (shown as –)._"))
    if table["cost"].isna().all():
        display(Markdown("_No send carries a cost: per-cost columns are unknown._"))
    P.plot_channel_rates(table); plt.show()
    show(table[["channel", "campaign", "messages", "opened", "clicked", "converted", "conversions", "revenue", "cost",
                "open_rate", "open_rate_lo", "open_rate_hi", "click_rate", "click_rate_lo", "click_rate_hi",
                "conversion_rate", "conversion_rate_lo", "conversion_rate_hi", "revenue_per_message",
                "revenue_per_message_lo", "revenue_per_message_hi"]],
         pct=["open_rate", "click_rate", "conversion_rate"],
         ci=["open_rate", "click_rate", "conversion_rate", "revenue_per_message"], money=["revenue", "cost"])
    show(table[["channel", "campaign", "cost_per_message", "opens_per_cost", "clicks_per_cost", "conversions_per_cost",
                "conversions_per_cost_lo", "conversions_per_cost_hi", "revenue_per_cost", "revenue_per_cost_lo",
                "revenue_per_cost_hi"]], ci=["conversions_per_cost", "revenue_per_cost"], money=["cost_per_message"])
'''),
            ("md", "## First and last touch\n\nFor every purchase, the channels of the sends to that user within the "
                   "attribution window before it: which channel touched it first, which last."),
            ("code", '''
shares = T.touch_shares(src, attribution_window_h, confidence)
numbers["touch_shares"] = records(shares)
if shares.empty:
    display(Markdown("_No purchases in this log: no conversions to attribute._"))
else:
    P.plot_touch_shares(shares); plt.show()
    show(shares, pct=["first_share", "last_share"], ci=["first_share", "last_share"])
'''),
        ]),
    "send_time": dict(
        title="Send time",
        params='''
metric: str = "opened"  # engagement shown: opened or clicked
prior_sends: float = 20.0  # shrinkage of the send-time model: pseudo-count of sends at the channel's overall rate
n_hours: int = 3  # hours the send-time model picks per channel
min_sends: int = 5  # heatmap cells with fewer sends are left blank
''',
        note='("Local time from the users table\'s `timezone`." if src.has_timezones else '
             '"**Times are UTC**: no users table with a `timezone` column was given, so local hours are UTC hours.")',
        cells=[
            ("md", "## Engagement by local hour × weekday\n\nShare of sends followed by the metric, by the local "
                   "weekday and hour at which they were sent."),
            ("code", '''
heat = T.send_time_heatmap(src, metric, confidence)
numbers["heatmap"] = records(heat)
if heat.empty:
    display(Markdown("_No `sent` rows in this log: no send times to show._"))
elif metric not in src.events_present():
    display(Markdown(f"_The log has no `{metric}` rows: engagement by hour is unknown; sends per hour below._"))
    show(heat.groupby(["channel", "hour"], as_index=False)["sends"].sum())
else:
    P.plot_heatmaps(heat, metric, min_sends); plt.show()
'''),
            ("md", "## Time to open\n\nHours from send to the first open, per channel."),
            ("code", '''
quant, hist = T.time_to_open(src)
numbers["time_to_open"] = records(quant)
numbers["time_to_open_hist"] = records(hist)
if quant.empty:
    display(Markdown("_No opened message with a known send in this log._"))
else:
    P.plot_time_to_open(hist); plt.show()
    show(quant)
'''),
            ("md", "## The hours a send-time model would pick\n\nPer channel and local hour, the engagement rate "
                   "shrunk toward the channel's overall rate (`prior_sends` pseudo-sends), the hours with the best "
                   "shrunk rate, against the hours actually used."),
            ("code", '''
if heat.empty or metric not in src.events_present():
    hourly, picks = pd.DataFrame(), pd.DataFrame()
    display(Markdown("_Not enough data for a send-time model._"))
else:
    hourly, picks = T.best_hours(heat, prior_sends, n_hours)
    P.plot_hours(hourly); plt.show()
    show(picks, pct=["overall_rate", "share_sent_at_model_hours", "model_rate", "expected_gain"])
numbers["hourly"] = records(hourly)
numbers["best_hours"] = records(picks)
'''),
        ]),
    "fatigue": dict(
        title="Fatigue and saturation",
        params='''
max_prev: int = 10  # last bucket of messages received before (that many or more)
low_per_week: float = 1.0  # fewer messages per week than this, with above-average response: under-messaged
high_per_week: float = 5.0  # more messages per week than this, with below-average response: over-messaged
''',
        note='"Pressure = messages the user received (all channels) in the 7 or 30 days up to each send."',
        cells=[
            ("md", "## Response against pressure\n\nShare of sends opened or clicked, by the number of messages the "
                   "user had received in the previous 7 and 30 days (Wilson intervals)."),
            ("code", '''
curve = T.fatigue_curve(src, max_prev, confidence)
numbers["fatigue"] = records(curve)
if curve.empty:
    display(Markdown("_No `sent` rows in this log: no pressure to relate responses to._"))
elif curve["response_rate"].isna().all():
    display(Markdown("_The log has no opened or clicked rows: response rates are unknown._"))
else:
    P.plot_fatigue(curve, "response_rate"); plt.show()
show(curve, pct=["response_rate", "unsub_rate"], ci=["response_rate", "unsub_rate"])
'''),
            ("md", "## Unsubscribes against pressure"),
            ("code", '''
if not curve.empty and curve["unsub_rate"].notna().any():
    P.plot_fatigue(curve, "unsub_rate"); plt.show()
else:
    display(Markdown("_No unsubscribe events in this log._"))
'''),
            ("md", "## Under-, well- and over-messaged users\n\nOver-messaged: unsubscribed, or more than "
                   "`high_per_week` messages a week with below-average response; under-messaged: fewer than "
                   "`low_per_week` with above-average response; well-messaged: the rest of the messaged users."),
            ("code", '''
classes, sat_info = T.user_saturation(src, low_per_week, high_per_week)
numbers["saturation"] = records(classes)
numbers["saturation_info"] = sat_info
if not sat_info["responses_logged"]:
    display(Markdown("_No opened or clicked rows: classes rest on message volume and unsubscribes alone._"))
P.plot_saturation(classes); plt.show()
show(classes, pct=["share", "response_rate"])
'''),
        ]),
    "journey_funnel": dict(
        title="Journey funnel",
        params='''
entry_gap_h: float = 72.0  # without step ids: a decision of a journey more than this many hours after the user's previous one in it starts a new entry
conversion_window_h: float = 336.0  # a purchase this many hours after the entry (inclusive) counts as a conversion
max_steps: int = 8  # steps shown per journey (the last is that many or more)
''',
        note='("Step labels come from the log\'s `step` column (the journey step behind each row)." '
             'if T.has_step_ids(src) else "The log has no step ids: steps are the journey\'s sends in order, '
             'and the per-step table is left out.")',
        cells=[
            ("md", "## Entries, steps, conversions and exits\n\nPer journey (`campaign` of the decisions): entries, "
                   "how many reach each step, drop-off per step, hours between steps, and where entries end "
                   "(converted or exited)."),
            ("code", '''
fun = T.journey_funnel(src, entry_gap_h, conversion_window_h, max_steps, confidence)
numbers["journeys"] = records(fun)
if fun.empty:
    display(Markdown("_No decision of the log names a campaign: no journey to show._"))
else:
    for camp in fun["campaign"].unique():
        P.plot_journey(fun, camp); plt.show()
    show(fun.drop(columns=["entries", "conversions", "conversion_rate", "conversion_rate_lo", "conversion_rate_hi"]),
         pct=["drop_off"])
    show(fun.drop_duplicates("campaign")[["campaign", "entries", "conversions", "conversion_rate",
                                          "conversion_rate_lo", "conversion_rate_hi"]],
         pct=["conversion_rate"], ci=["conversion_rate"])
'''),
            ("md", "## Per step: decisions, pressure rules, outcomes\n\nPer journey step (the log's `step` "
                   "column): decisions at the step, how many chose a message, what the pressure rules did "
                   "(deferred and suppressed rows, with the most common reasons), and how the sent messages "
                   "fared (open and click rates with Wilson intervals)."),
            ("code", '''
steps = T.journey_steps(src, entry_gap_h, confidence)
numbers["steps"] = records(steps)
if steps.empty:
    display(Markdown("_No row of the log carries a journey step id: nothing to show per step._"))
else:
    for camp in steps["campaign"].unique():
        if (steps.loc[steps["campaign"] == camp, "chose_message"] > 0).any():
            P.plot_journey_steps(steps, camp); plt.show()
    show(steps, pct=["open_rate", "click_rate"], ci=["open_rate", "click_rate"])
'''),
        ]),
    "policy_evaluation": dict(
        title="Policy evaluation",
        params='''
candidates = ["uniform"]  # candidate policies, each uniform, always:ACTION, mix:… (action probabilities, syntax in docs/reports.md) or a policy artifact .json file
reward: str = "auto"  # reward per decision: auto, opened, clicked, visit, purchase or value
outcome_window_days: float = 14.0  # days after a decision in which its reward events count (inclusive)
estimators = None  # list such as [ips, snips, dr], None means all
n_bootstrap: int = 500  # bootstrap resamples per interval
seed: int = 0  # seed of the bootstrap
compare_csv = None  # a compare_policies.csv from a simulated experiment, None means none
''',
        note='"Off-policy estimates reweight the logged decisions by their logged propensity."',
        cells=[
            ("md", "## Off-policy estimates\n\nEvery estimator with its bootstrap interval, for each candidate "
                   "policy; the logged policy's own mean reward is the first row."),
            ("code", '''
from omnisim.report_tables import evaluate_candidates
if isinstance(candidates, str):
    candidates = [candidates]
ope, reward_name, ope_notes = evaluate_candidates(src, candidates, reward, outcome_window_days, estimators,
                                                  confidence, n_bootstrap, seed)
numbers["reward"] = reward_name
numbers["ope"] = records(ope)
numbers["ope_notes"] = ope_notes
display(Markdown(f"Reward: **{reward_name}** per decision ({len(ope) and int(ope['n'].iloc[0]):,} decisions with a propensity)."
                 + "".join(f"\\n- {n}" for n in ope_notes)))
if len(ope):
    P.plot_ope(ope); plt.show()
    show(ope.rename(columns={"lo": "value_lo", "hi": "value_hi"}), ci=["value"])
'''),
            ("md", "## Simulated experiment\n\nThe comparison table of a simulated experiment (`compare_csv`), "
                   "when given."),
            ("code", '''
if compare_csv:
    from omnisim.experiment import plot_comparison
    comparison = pd.read_csv(compare_csv)
    numbers["comparison"] = records(comparison)
    plot_comparison(comparison); plt.show()
    cols = ["policy"] + [c for c in comparison.columns if c.endswith("_mean")]
    show(comparison[cols])
else:
    display(Markdown("_No `compare_csv` given._"))
'''),
        ]),
}


def build(name: str, spec: dict) -> nbf.NotebookNode:
    """One report notebook from its spec."""
    cells = []
    params = ("# Parameters: papermill injects overrides in a cell right after this one.\n"
              + COMMON_PARAMS.strip("\n").format(title=spec["title"]) + "\n" + spec["params"].strip("\n"))
    c = nbf.v4.new_code_cell(params)
    c.metadata["tags"] = ["parameters"]
    cells.append(c)
    cells.append(nbf.v4.new_code_cell(SETUP.strip("\n").format(note=spec["note"])))
    for kind, text in spec["cells"]:
        cells.append(nbf.v4.new_markdown_cell(text.strip("\n")) if kind == "md" else nbf.v4.new_code_cell(text.strip("\n")))
    cells.append(nbf.v4.new_code_cell(FINISH.strip("\n")))
    nb = nbf.v4.new_notebook(cells=cells)
    for i, cell in enumerate(nb.cells):  # stable ids: regenerating gives the same file
        cell["id"] = f"cell-{i:02d}"
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (omnisim)", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


if __name__ == "__main__":
    for name, spec in REPORTS.items():
        nbf.write(build(name, spec), ROOT / "notebooks" / f"{name}.ipynb")
        print(f"wrote notebooks/{name}.ipynb")
