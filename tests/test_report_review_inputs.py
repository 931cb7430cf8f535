"""Bad input to the report suite, caught before a kernel starts and named precisely: Parquet
logs with text in number columns, row and file of the first offending row, unknown time zones
in the users table; and notes where off-policy numbers would mislead. No kernel runs here."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from omnisim import report_tables as T
from omnisim.log import LogValidationError
from omnisim.report_data import LogSource, check_log
from omnisim.reports import ReportError, check_inputs, report_infos


def _log(n_days: int = 2) -> pd.DataFrame:
    """A small valid log: per day and user a decision (propensity 1), a send and an open."""
    rows = []
    for day in range(n_days):
        t = pd.Timestamp("2024-03-04T09:00:00Z") + pd.Timedelta(days=day)
        for u, ch in (("u1", "email"), ("u2", "sms"), ("u3", "email")):
            mid = f"m{day}{u}"
            rows += [(t, u, "decided", ch, ch, mid, "welcome", 1.0, None),
                     (t, u, "sent", ch, None, mid, "welcome", None, "0.01"),
                     (t + pd.Timedelta(hours=1), u, "opened", ch, None, mid, "welcome", None, None)]
    return pd.DataFrame(rows, columns=["ts", "user_id", "event", "channel", "action", "message_id", "campaign",
                                       "propensity", "value"])


def test_parquet_text_that_is_not_a_number_is_refused_with_its_row(tmp_path):
    log = _log()
    log["value"] = log["value"].fillna("")          # numbers as text, blanks for none (as an export may)
    log.to_parquet(tmp_path / "ok.parquet", index=False)
    check_log(tmp_path / "ok.parquet")
    src = LogSource(tmp_path / "ok.parquet")         # blanks read as null, text numbers as numbers
    assert src.scalar("SELECT sum(value) FROM log") == pytest.approx(0.06)
    assert src.scalar("SELECT count(value) FROM log") == 6

    log.loc[4, "value"] = "12,5"                     # a decimal comma: not a number
    log.to_parquet(tmp_path / "bad.parquet", index=False)
    with pytest.raises(LogValidationError) as err:
        check_log(tmp_path / "bad.parquet")
    assert "column 'value': not a number: '12,5' in 1 row (row 5)" in str(err.value)


def test_parquet_problems_name_the_first_row_and_its_file(tmp_path):
    log = _log()
    log["event"] = log["event"].where(log.index != 10, "opend")   # day 2's second row
    log.assign(day=log["ts"].dt.strftime("%Y-%m-%d")).to_parquet(tmp_path / "parts", partition_cols=["day"],
                                                                 index=False)
    with pytest.raises(LogValidationError) as err:
        check_log(tmp_path / "parts")
    msg = str(err.value)
    assert re.search(r"unknown value 'opend' in 1 row \(row 2 of day=2024-03-05/[^)]+\.parquet\)", msg), msg

    log = _log().assign(ts=_log()["ts"].astype(str))
    log.loc[[3, 7], "ts"] = "yesterday"
    log.to_parquet(tmp_path / "ts.parquet", index=False)
    with pytest.raises(LogValidationError, match=r"'yesterday' in 2 rows \(first: row 4\)"):
        check_log(tmp_path / "ts.parquet")


def test_unknown_time_zone_in_users_table_fails_fast(tmp_path):
    users = pd.DataFrame({"user_id": ["u1", "u2", "u3"], "timezone": ["Europe/Paris", None, "Mars/Olympus"]})
    users.to_csv(tmp_path / "users.csv", index=False)
    with pytest.raises(ReportError) as err:
        check_inputs({"users_path": str(tmp_path / "users.csv")})
    assert err.value.exit_code == 2
    msg = str(err.value)
    assert "users.csv" in msg and "'Mars/Olympus' in row 3 (user_id 'u3')" in msg and "IANA" in msg
    with pytest.raises(ValueError, match="Mars/Olympus"):
        LogSource(_log(), users)
    LogSource(_log(), users.iloc[:2])                # known names and empty ones are fine


def test_policy_evaluation_says_when_a_candidate_has_no_support():
    # every decision logged with propensity 1: the logging policy never tried the other action
    _, _, notes = T.evaluate_candidates(LogSource(_log()), ["uniform", "always:email"], reward="opened",
                                        n_bootstrap=20)
    assert any(n.startswith("uniform: 50.0% of its probability") and "propensity 1" in n for n in notes), notes
    assert any(n.startswith("always:email: 33.3%") for n in notes), notes


def test_candidates_help_does_not_advertise_a_syntax_that_fails():
    # the help of `omnisim report list` (papermill cannot parse a '=' in it, so it points to the docs)
    info = next(i for i in report_infos() if i.name == "policy_evaluation")
    helptext = info.parameters["candidates"]["help"]
    assert "docs/reports.md" in helptext
    with pytest.raises(ValueError):              # what the old help, "mix:ACTION:PROB pairs", suggested
        T.parse_candidate("mix:a:0.5,b:0.5", ["a", "b"])
    assert "mix:ACTION:PROB" not in helptext


def test_conversions_per_cost_is_the_quantity_its_interval_is_for():
    # one e-mail is the last touch of two purchases: 1 converted message, 2 conversions
    t0 = pd.Timestamp("2024-03-04T09:00:00Z")
    h = pd.Timedelta(hours=1)
    rows = [(t0, "u1", "sent", "email", "m1", 0.5), (t0, "u2", "sent", "email", "m2", 0.5),
            (t0, "u3", "sent", "email", "m3", 0.5),
            (t0 + h, "u1", "purchase", "web", None, 10.0), (t0 + 2 * h, "u1", "purchase", "web", None, 20.0)]
    log = pd.DataFrame(rows, columns=["ts", "user_id", "event", "channel", "message_id", "value"])
    row = T.channel_table(LogSource(log), by_campaign=False).iloc[0]
    assert (row["converted"], row["conversions"], row["cost"]) == (1, 2, 1.5)
    assert row["conversions_per_cost"] == pytest.approx(row["conversion_rate"] / row["cost_per_message"])
    assert row["conversions_per_cost"] == pytest.approx(1 / 1.5)
    assert row["conversions_per_cost_lo"] <= row["conversions_per_cost"] <= row["conversions_per_cost_hi"]
    assert row["revenue_per_cost"] == pytest.approx(30 / 1.5)


def test_journey_steps_count_outcomes_only_of_messages_sent_in_the_log(tmp_path):
    """A log cut at its start holds opens of messages sent before it: they must not count
    (an open rate above 1 made the Wilson interval refuse the table)."""
    from omnisim import report_tables as T
    from omnisim.report_data import open_log

    t0 = pd.Timestamp("2024-03-01T10:00:00Z")
    row = dict(user_id="u1", campaign="welcome", step="hello", policy="welcome@1")
    log = pd.DataFrame([
        dict(ts=t0, event="decided", channel="email", action="email", propensity=1.0, **row),
        dict(ts=t0, event="sent", channel="email", message_id="m2", **row),
        dict(ts=t0 + pd.Timedelta(hours=1), event="opened", channel="email", message_id="m2", **row),
        # opens of two messages sent before the log starts, at the same step
        dict(ts=t0 + pd.Timedelta(hours=2), event="opened", channel="email", message_id="m0", **row),
        dict(ts=t0 + pd.Timedelta(hours=2), event="opened", channel="email", message_id="m1", **row),
    ])
    steps = T.journey_steps(open_log(log))
    g = steps.set_index("step").loc["hello"]
    assert (g["sent"], g["opened"]) == (1, 1)
    assert g["open_rate"] == 1.0 and g["open_rate_lo"] < 1.0


def test_rows_differing_only_by_step_are_not_duplicates():
    """Duplicates are rows identical in every schema column; the key left ``step`` out."""
    from omnisim.report_data import data_quality, open_log

    t0 = pd.Timestamp("2024-03-01T21:30:00Z")
    row = dict(ts=t0, user_id="u1", event="opened", channel="email", campaign="welcome",
               message_id="m1")
    log = pd.DataFrame([{**row, "step": "hello"}, {**row, "step": "reminder"},
                        {**row, "step": "reminder"}])
    checks = {c["check"]: c["count"] for c in data_quality(open_log(log))["checks"]}
    assert checks["duplicated_events"] == 1  # the repeated "reminder" row only (was 2)


@pytest.mark.parametrize("name, params, expected", [
    ("send_time", {"n_hours": 30}, "n_hours = 30 is invalid; expected a whole number of hours of the day, 1 to 24"),
    ("policy_evaluation", {"estimators": ["ipss"]}, "expected a list of ips, snips, dm, dr, sndr, switch_dr (unknown: 'ipss')"),
    ("policy_evaluation", {"estimators": "ips"}, "expected a list such as [ips, snips, dr]"),
])
def test_params_a_kernel_would_fail_on_are_refused_before_it(name, params, expected):
    from omnisim.reports import ReportError, check_params

    with pytest.raises(ReportError) as info:
        check_params(name, params)
    assert expected in str(info.value) and info.value.exit_code == 2
    check_params(name, {"n_hours": 24} if name == "send_time" else {"estimators": ["ips", "dr"]})
