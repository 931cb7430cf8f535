"""DuckDB reading of logs (omnisim.report_data) and the SQL tables, without kernels.

Expected values come from plain pandas on the same log, or from omnisim.analysis (the
independent pandas implementation of the engagement attribution).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from omnisim import analysis as A
from omnisim import report_tables as T
from omnisim.datasets import hillstrom_log, obd_log
from omnisim.experiment import run_one
from omnisim.log import LogValidationError, write_log
from omnisim.report_data import LogSource, check_log, data_quality, data_summary
from omnisim.stats import mean_sd_ci


@pytest.fixture(scope="module")
def sim():
    return run_one("default", "seed_journey+pressure", 11, n_users=300, days=10)


def _tiny() -> pd.DataFrame:
    t0 = pd.Timestamp("2024-03-04T08:00:00Z")
    h = pd.Timedelta(hours=1)
    rows = [
        (t0, "u1", "decided", "email", "email", None, "welcome", 0.5, None),
        (t0, "u1", "sent", "email", None, "m1", "welcome", None, 0.01),
        (t0 + h, "u1", "opened", "email", None, "m1", "welcome", None, None),
        (t0 + 2 * h, "u1", "opened", "email", None, "m1", "welcome", None, None),    # re-open: not a duplicate
        (t0 + 2 * h, "u1", "opened", "email", None, "m1", "welcome", None, None),    # exact copy: duplicate
        (t0 - h, "u1", "clicked", "email", None, "m1", "welcome", None, None),       # before its send: late
        (t0 + 400 * h, "u1", "delivered", "email", None, "m1", "welcome", None, None),  # 400 h after: late
        (t0 + 3 * h, "u2", "opened", "sms", None, "m404", None, None, None),         # unknown message id
        (t0 + 5 * h, "u9", "purchase", "web", None, None, None, None, 20.0),         # unknown user
    ]
    return pd.DataFrame(rows, columns=["ts", "user_id", "event", "channel", "action", "message_id", "campaign",
                                       "propensity", "value"])


def test_data_quality_finds_each_problem():
    src = LogSource(_tiny(), pd.DataFrame({"user_id": ["u1", "u2"], "timezone": ["Europe/Paris", None]}))
    q = {c["check"]: c["count"] for c in data_quality(src, late_after_h=168)["checks"]}
    assert q == {"duplicated_events": 1, "unknown_message_ids": 1, "late_events_before_send": 1,
                 "late_events_after_168h": 1, "unknown_users": 1}
    warnings = " ".join(data_quality(src)["warnings"])
    assert "m404" in warnings and "u9" in warnings and "duplicated" in warnings
    s = data_summary(src)
    assert s["events"] == 9 and s["users"] == 3 and s["users_table"] == 2 and s["timezones"]


def test_clean_log_has_no_warnings(sim):
    assert data_quality(LogSource(sim.log, sim.users))["warnings"] == []


@pytest.mark.parametrize("make", ["sim", "hillstrom", "obd"])
def test_engagement_funnel_sql_equals_pandas(make, sim):
    log = {"sim": lambda: sim.log, "hillstrom": lambda: hillstrom_log()[0], "obd": lambda: obd_log("bts")[0]}[make]()
    got = T.engagement_funnel(LogSource(log))
    exp = A.funnel(log)
    pd.testing.assert_frame_equal(got[exp.columns].reset_index(drop=True), exp.reset_index(drop=True),
                                  check_dtype=False)
    units = A.decision_outcomes(log)
    assert got["value"].sum() == pytest.approx(units["value"].sum())


def test_partitioned_parquet_directory_reads_like_the_file(tmp_path, sim):
    log = sim.log.assign(day=sim.log["ts"].dt.strftime("%Y-%m-%d"))
    log.to_parquet(tmp_path / "parts", partition_cols=["day"], index=False)
    write_log(sim.log, tmp_path / "one.parquet")
    a = T.channel_table(LogSource(tmp_path / "parts"))
    b = T.channel_table(LogSource(tmp_path / "one.parquet"))
    c = T.channel_table(LogSource(sim.log))
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(a, c)
    assert data_summary(LogSource(tmp_path / "parts"))["events"] == len(sim.log)


def test_naive_parquet_timestamps_are_utc(tmp_path, sim):
    naive = sim.log.assign(ts=sim.log["ts"].dt.tz_localize(None))
    naive.to_parquet(tmp_path / "naive.parquet", index=False)
    assert data_summary(LogSource(tmp_path / "naive.parquet"))["start"] == sim.log["ts"].min().isoformat()


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d.drop(columns=["event"]), "missing required column(s) 'event'"),
    (lambda d: d.assign(event=d["event"].astype(str).replace({"opened": "opend"})), "unknown value 'opend'"),
    (lambda d: d.assign(channel=d["channel"].astype(str).replace({"sms": "fax"})), "unknown value 'fax'"),
    (lambda d: d.assign(ts=d["ts"].astype(str).where(d.index != 3, "2024-13-01")), "not a timestamp: '2024-13-01'"),
    (lambda d: d.assign(propensity=d["propensity"].where(d.index != 2, 1.5)), "'propensity': 1.5"),
    (lambda d: d.assign(value=d["value"].where(d.index != 1, -3.0)), "negative value -3.0"),
    (lambda d: d.assign(user_id=d["user_id"].where(d.index != 0, "")), "'user_id': empty in 1 row (row 1)"),
    (lambda d: pd.concat([d, d[d["event"].astype(str) == "sent"].head(1)]), "sent more than once"),
])
def test_check_log_parquet_messages(tmp_path, sim, mutate, expected):
    bad = mutate(sim.log.copy())
    for c in ("event", "channel"):
        if c in bad.columns:
            bad[c] = bad[c].astype(str)
    bad.to_parquet(tmp_path / "bad.parquet", index=False)
    with pytest.raises(LogValidationError) as err:
        check_log(tmp_path / "bad.parquet")
    assert expected in str(err.value)
    assert "bad.parquet" in str(err.value)


def test_check_log_empty_and_wrong_type(tmp_path):
    (tmp_path / "empty.parquet").write_bytes(b"")
    with pytest.raises(LogValidationError, match="empty"):
        check_log(tmp_path / "empty.parquet")
    (tmp_path / "log.txt").write_text("x")
    with pytest.raises(LogValidationError, match="unsupported file type"):
        check_log(tmp_path / "log.txt")
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(LogValidationError, match="cannot be read as parquet"):
        check_log(tmp_path / "junk.parquet")


def test_channel_table_revenue_interval_matches_direct_computation(sim):
    table = T.channel_table(LogSource(sim.log), attribution_window_h=72, by_campaign=False)
    log = sim.log
    sent = log[log["event"] == "sent"]
    rev = pd.Series(0.0, index=sent["message_id"].to_numpy())
    for _, b in log[log["event"] == "purchase"].iterrows():
        s = sent[(sent["user_id"] == b["user_id"]) & (sent["ts"] <= b["ts"]) & (sent["ts"] >= b["ts"] - pd.Timedelta(hours=72))]
        if len(s):
            rev[s.sort_values("ts")["message_id"].iloc[-1]] += b["value"]
    for ch, g in sent.groupby(sent["channel"].astype(str)):
        m, _, lo, hi = mean_sd_ci(rev[g["message_id"].to_numpy()].to_numpy(), 0.95)
        row = table.set_index("channel").loc[ch]
        assert row["revenue_per_message"] == pytest.approx(m)
        assert row["revenue_per_message_lo"] == pytest.approx(lo, abs=1e-9)
        assert row["revenue_per_message_hi"] == pytest.approx(hi, abs=1e-9)
        cost = g["value"].sum()
        if cost > 0:
            assert row["revenue_per_cost"] == pytest.approx(rev[g["message_id"].to_numpy()].sum() / cost)
        else:  # free channel (push): per-cost figures are undefined, not infinite
            assert np.isnan(row["revenue_per_cost"])


def test_best_hours_prefers_well_supported_hours():
    heat = pd.DataFrame({"channel": ["email"] * 3, "weekday": [0, 0, 0], "hour": [8, 9, 10],
                         "sends": [1, 400, 400], "hits": [1, 120, 40]})
    hourly, summ = T.best_hours(heat, prior_sends=20, n_hours=1)
    assert summ.loc[0, "model_hours"] == [9]  # 1/1 at 08h is shrunk toward the mean
    p = 161 / 801
    assert hourly.set_index("hour").loc[8, "shrunk_rate"] == pytest.approx((1 + 20 * p) / 21)
    with pytest.raises(ValueError, match="prior_sends"):
        T.best_hours(heat, prior_sends=-1)


def test_parse_candidate_errors():
    assert T.parse_candidate("mix:a=0.25,b=0.75", ["a", "b"]) == {"a": 0.25, "b": 0.75}
    with pytest.raises(ValueError, match="never appears"):
        T.parse_candidate("always:zz", ["a"])
    with pytest.raises(ValueError, match="sum to 1"):
        T.parse_candidate("mix:a=0.5", ["a", "b"])
    with pytest.raises(ValueError, match="unknown candidate"):
        T.parse_candidate("greedy", ["a"])


def test_interval_arguments_are_checked(sim):
    src = LogSource(sim.log)
    with pytest.raises(ValueError, match="attribution_window_h"):
        T.channel_table(src, attribution_window_h=-1)
    with pytest.raises(ValueError, match="confidence"):
        T.channel_table(src, confidence=1.5)
    with pytest.raises(ValueError, match="metric"):
        T.send_time_heatmap(src, metric="visits")
    assert np.isfinite(T.fatigue_curve(src)["response_rate"]).all()


@pytest.mark.parametrize("make, reward", [("sim", "clicked"), ("sim", "value"), ("hillstrom", "visit"),
                                          ("obd", "clicked")])
def test_decision_rewards_equal_pandas_attribution(make, reward, sim):
    log = {"sim": lambda: sim.log, "hillstrom": lambda: hillstrom_log()[0], "obd": lambda: obd_log("random")[0]}[make]()
    got, name = T.decision_rewards(LogSource(log), reward)
    units = A.decision_outcomes(log)
    units = units[units["propensity"] > 0].sort_values(["decision_ts", "user_id"], kind="stable")
    assert name == reward and len(got) == len(units)
    col = "value" if reward == "value" else reward
    assert got["reward"].sum() == pytest.approx(units[col].astype(float).sum())
    by_action = got.assign(a=got["action"] + (("@pos" + (got["position"] + 1).astype(str)) if make == "obd" else ""))
    exp = units.groupby("action")[col].sum().astype(float)
    pd.testing.assert_series_equal(by_action.groupby("a")["reward"].sum().sort_index(), exp.sort_index(),
                                   check_names=False, check_index_type=False)
