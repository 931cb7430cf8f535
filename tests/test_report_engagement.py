"""The engagement report end to end through papermill, checked against the raw Hillstrom CSV.

The report exposes its numbers in ``<out>.json`` (``run_report`` sets the notebook's
``output_json`` parameter); the expected values are computed here from the raw file with
pandas and scipy, independently of omnisim.analysis.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from omnisim import datasets as D
from omnisim.reports import ReportError, list_reports, report_infos, run_report

SEGMENTS = {"Mens E-Mail": "mens_email", "Womens E-Mail": "womens_email", "No E-Mail": "none"}
CONF = 0.95
Z = stats.norm.ppf(0.975)


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    df = pd.read_csv(D.data_dir() / "hillstrom" / "hillstrom.csv.gz")
    df["action"] = df["segment"].map(SEGMENTS)
    return df


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hillstrom_report")
    log_path, users_path = D.convert("hillstrom", tmp / "hillstrom.parquet")
    result = run_report("engagement_report", tmp / "hillstrom.html",
                        {"log_path": str(log_path), "users_path": str(users_path),
                         "title": "Hillstrom test report", "group_by": "zip_code", "confidence": CONF})
    numbers = json.loads(result.json_path.read_text())
    return result, numbers


def _table(records, outcome, key="action"):
    df = pd.DataFrame(records)
    return df[df["outcome"] == outcome].set_index(key)


def test_outputs_exist_and_code_is_hidden(report):
    result, numbers = report
    assert result.html_path.exists() and result.notebook_path.exists()
    assert result.notebook_path == result.html_path.with_suffix(".ipynb")
    assert result.json_path == result.html_path.with_suffix(".json")
    html = result.html_path.read_text()
    assert "Hillstrom test report" in html
    assert "decision_outcomes" not in html and "import omnisim" not in html  # inputs hidden
    assert html.count("data:image/png;base64") >= 4  # funnel, rates, lift, breakdown
    assert numbers["title"] == "Hillstrom test report"
    assert numbers["lift_note"] is None and numbers["breakdown_note"] is None


def test_summary_and_funnel(report, raw):
    _, numbers = report
    s = numbers["summary"]
    assert s["users"] == 64_000 and s["decisions_analysed"] == 64_000
    assert s["start"].startswith("2008-03-03T09:00") and s["end"].startswith("2008-03-17T09:00")
    fun = pd.DataFrame(numbers["funnel"]).set_index("action")
    for seg, action in SEGMENTS.items():
        g = raw[raw["segment"] == seg]
        assert fun.loc[action, "decided"] == len(g)
        assert fun.loc[action, "sent"] == (0 if action == "none" else len(g))
        assert fun.loc[action, "visit"] == g["visit"].sum()
        assert fun.loc[action, "purchase"] == g["conversion"].sum()
    assert "opened" not in fun.columns  # stages absent from the data are not shown


@pytest.mark.parametrize("outcome, column", [("visit", "visit"), ("purchase", "conversion")])
def test_rates_with_wilson_ci(report, raw, outcome, column):
    _, numbers = report
    rates = _table(numbers["rates"], outcome)
    for seg, action in SEGMENTS.items():
        y = raw.loc[raw["segment"] == seg, column]
        k, n = int(y.sum()), len(y)
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=CONF, method="wilson")
        row = rates.loc[action]
        assert (row["n"], row["successes"]) == (n, k)
        assert row["estimate"] == pytest.approx(y.mean(), rel=1e-12)
        assert (row["lo"], row["hi"]) == pytest.approx((ci.low, ci.high), rel=1e-9)


def test_spend_per_customer_with_t_ci(report, raw):
    _, numbers = report
    rates = _table(numbers["rates"], "value")
    for seg, action in SEGMENTS.items():
        y = raw.loc[raw["segment"] == seg, "spend"]
        lo, hi = stats.t.interval(CONF, len(y) - 1, loc=y.mean(), scale=stats.sem(y))
        assert rates.loc[action, "estimate"] == pytest.approx(y.mean(), rel=1e-12)
        assert (rates.loc[action, "lo"], rates.loc[action, "hi"]) == pytest.approx((lo, hi), rel=1e-9)


@pytest.mark.parametrize("outcome, column", [("visit", "visit"), ("purchase", "conversion")])
@pytest.mark.parametrize("action", ["mens_email", "womens_email"])
def test_lift_over_no_email_proportions(report, raw, outcome, column, action):
    _, numbers = report
    lift = _table(numbers["lift"], outcome).loc[action]
    t = raw.loc[raw["action"] == action, column]
    c = raw.loc[raw["action"] == "none", column]
    diff = t.mean() - c.mean()
    se = math.sqrt(t.mean() * (1 - t.mean()) / len(t) + c.mean() * (1 - c.mean()) / len(c))
    assert lift["baseline"] == "none"
    assert lift["diff"] == pytest.approx(diff, rel=1e-9)
    assert (lift["lo"], lift["hi"]) == pytest.approx((diff - Z * se, diff + Z * se), rel=1e-9)
    assert lift["lo"] > 0  # both e-mails raise visits and conversions on Hillstrom


def test_lift_mens_minus_none_spend_welch(report, raw):
    _, numbers = report
    lift = _table(numbers["lift"], "value").loc["mens_email"]
    t = raw.loc[raw["action"] == "mens_email", "spend"]
    c = raw.loc[raw["action"] == "none", "spend"]
    ci = stats.ttest_ind(t, c, equal_var=False).confidence_interval(CONF)
    assert lift["diff"] == pytest.approx(t.mean() - c.mean(), rel=1e-9)
    assert (lift["lo"], lift["hi"]) == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert lift["diff"] == pytest.approx(0.7698, abs=1e-4)


def test_breakdown_by_zip_code(report, raw):
    _, numbers = report
    bd = pd.DataFrame(numbers["breakdown"])
    visit = bd[bd["outcome"] == "visit"].set_index(["zip_code", "action"])
    expected = raw.groupby(["zip_code", "action"])["visit"].agg(["sum", "count", "mean"])
    assert len(visit) == len(expected) == 9
    for key, row in expected.iterrows():
        assert visit.loc[key, "successes"] == row["sum"] and visit.loc[key, "n"] == row["count"]
        assert visit.loc[key, "estimate"] == pytest.approx(row["mean"], rel=1e-12)
    bl = pd.DataFrame(numbers["breakdown_lift"])
    rural = bl[(bl["outcome"] == "visit") & (bl["zip_code"] == "Rural") & (bl["action"] == "mens_email")].iloc[0]
    r = raw[raw["zip_code"] == "Rural"]
    assert rural["diff"] == pytest.approx(r.loc[r["action"] == "mens_email", "visit"].mean()
                                          - r.loc[r["action"] == "none", "visit"].mean(), rel=1e-9)


def test_failing_notebook_raises_report_error_with_its_message(tmp_path):
    missing = tmp_path / "no_such_log.parquet"
    out = tmp_path / "broken.html"
    with pytest.raises(ReportError) as fast:  # by default the log is checked before any kernel starts
        run_report("engagement_report", out, {"log_path": str(missing)})
    assert fast.value.exit_code == 2 and "file not found" in str(fast.value)
    assert fast.value.notebook_path is None and not out.with_suffix(".ipynb").exists()
    with pytest.raises(ReportError) as err:  # unchecked: the notebook's own error surfaces
        run_report("engagement_report", out, {"log_path": str(missing)}, check=False)
    msg = str(err.value)
    assert "LogValidationError" in msg and "file not found" in msg and "no_such_log.parquet" in msg
    assert "cell" in msg
    assert err.value.ename == "LogValidationError" and err.value.exit_code == 1
    assert err.value.notebook_path == out.with_suffix(".ipynb") and err.value.notebook_path.exists()
    assert not out.exists()  # no HTML for a failed report
    assert not out.with_suffix(".json").exists()


def test_report_kernel_talks_over_its_own_unix_sockets(tmp_path, monkeypatch):
    """Over TCP a port picked for the kernel can be taken by any process before the kernel
    binds it (seen in CI: parallel reports and test servers, "Kernel didn't respond in 60
    seconds"); the kernel must use socket files in a directory of the run's own instead."""
    from jupyter_client.manager import KernelManager

    seen = []
    launch = KernelManager._async_launch_kernel

    async def recording_launch(self, kernel_cmd, **kw):
        seen.append((self.transport, json.loads(Path(self.connection_file).read_text())))
        return await launch(self, kernel_cmd, **kw)

    monkeypatch.setattr(KernelManager, "_async_launch_kernel", recording_launch)
    with pytest.raises(ReportError, match="LogValidationError"):  # cheap: fails in its first cell
        run_report("engagement_report", tmp_path / "r.html",
                   {"log_path": str(tmp_path / "missing.parquet")}, check=False)
    assert len(seen) == 1
    transport, info = seen[0]
    assert transport == "ipc" and info["transport"] == "ipc"
    sockets = Path(info["ip"]).parent
    assert sockets.name.startswith("omnisim-kernel-")
    assert not sockets.exists()  # removed with the kernel


def test_unknown_report_and_parameter(tmp_path):
    with pytest.raises(ReportError, match="unknown report 'nope'.*engagement_report"):
        run_report("nope", tmp_path / "x.html", {})
    with pytest.raises(ReportError, match="unknown parameter\\(s\\) 'colour'.*log_path") as err:
        run_report("engagement_report", tmp_path / "x.html", {"colour": "red"})
    assert err.value.exit_code == 2
    with pytest.raises(ReportError, match="expected an .html file name"):
        run_report("engagement_report", tmp_path / "x.pdf", {})


def test_list_reports():
    params = list_reports()["engagement_report"]
    for name in ("log_path", "users_path", "title", "start", "end", "channels", "confidence", "group_by",
                 "outcome_window_days", "output_json"):
        assert name in params
    assert params["confidence"] == "0.95"
    info = {i.name: i for i in report_infos()}["engagement_report"]
    assert info.parameters["confidence"]["type"] == "float"
    assert "level" in info.parameters["confidence"]["help"]


def test_report_on_a_multichannel_log_without_holdout(tmp_path):
    """Any valid log works: email/sms/push, opens and clicks, no 'none' action, no users table."""
    t0 = pd.Timestamp("2024-05-01T08:00Z")
    rng = np.random.default_rng(3)
    rows = []
    for i in range(300):
        u, ch, mid = f"u{i:03d}", ["email", "sms", "push"][i % 3], f"m{i:03d}"
        rows += [(t0, u, "decided", ch, ch, None, None), (t0, u, "sent", ch, None, mid, None)]
        if rng.random() < 0.5:
            rows.append((t0 + pd.Timedelta(hours=1), u, "opened", ch, None, mid, None))
            if rng.random() < 0.3:
                rows.append((t0 + pd.Timedelta(hours=2), u, "clicked", ch, None, mid, None))
                rows.append((t0 + pd.Timedelta(days=1), u, "purchase", "web", None, None, 30.0))
    log = pd.DataFrame(rows, columns=["ts", "user_id", "event", "channel", "action", "message_id", "value"])
    log["ts"] = log["ts"].map(lambda t: t.isoformat())
    log_path = tmp_path / "sim.csv"
    log.to_csv(log_path, index=False)
    result = run_report("engagement_report", tmp_path / "sim.html",
                        {"log_path": str(log_path), "channels": ["email", "sms"], "group_by": None})
    numbers = json.loads(result.json_path.read_text())
    assert numbers["lift"] == [] and "No decision took the baseline action 'none'" in numbers["lift_note"]
    assert "group_by is None" in numbers["breakdown_note"]
    fun = pd.DataFrame(numbers["funnel"]).set_index("action")
    assert set(fun.index) == {"email", "sms"}  # the channel filter
    for ch in ("email", "sms"):
        users = {f"u{i:03d}" for i in range(300) if i % 3 == ("email", "sms").index(ch)}
        sub = log[log["user_id"].isin(users)]
        assert fun.loc[ch, "decided"] == fun.loc[ch, "sent"] == 100
        assert fun.loc[ch, "opened"] == (sub["event"] == "opened").sum()
        assert fun.loc[ch, "clicked"] == (sub["event"] == "clicked").sum()
        assert fun.loc[ch, "purchase"] == (sub["event"] == "purchase").sum()
    assert "Lift skipped" in result.html_path.read_text()


def test_report_opens_with_data_summary_and_quality(tmp_path):
    """The engagement report, like the rest of the suite, says what it read and what looks wrong."""
    import pandas as pd

    from omnisim.log import write_log
    from omnisim.reports import run_report as run

    log = pd.DataFrame({
        "ts": ["2024-03-01T09:00Z", "2024-03-01T10:00Z", "2024-03-02T09:00Z", "2024-03-02T09:00Z"],
        "user_id": ["a", "a", "a", "a"],
        "event": ["decided", "sent", "purchase", "purchase"],   # the purchase is exported twice
        "channel": ["email", "email", "web", "web"],
        "action": ["email", None, None, None],
        "propensity": [1.0, None, None, None],
        "message_id": [None, "m1", None, None],
        "value": [None, None, 10.0, 10.0],
    })
    path = write_log(log, tmp_path / "dup.parquet")
    res = run("engagement_report", tmp_path / "r.html", {"log_path": str(path), "group_by": None})
    html = res.html_path.read_text()
    assert "Data read" in html and "Data quality" in html
    numbers = json.loads(res.json_path.read_text())
    assert any("duplicat" in w for w in numbers["data_quality"]["warnings"])
