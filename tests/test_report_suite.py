"""The five report notebooks of the suite, end to end through papermill on three logs.

Each report runs once per log (real Hillstrom, real Open Bandit random-policy log, a small
simulated log) in a module-scoped fixture, two kernels at a time; the tests read the numbers
each report writes to ``<out>.json`` and check them against values computed here from the raw
CSV files or the log with plain pandas / numpy / zoneinfo — not through omnisim.report_tables.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from omnisim import datasets as D
from omnisim.analysis import decision_outcomes
from omnisim.experiment import run_one
from omnisim.log import write_log
from omnisim.reports import external_references, run_report

REPORTS = ("channel_comparison", "send_time", "fatigue", "journey_funnel", "policy_evaluation")
EXTRA = {"policy_evaluation": {"n_bootstrap": 50}}


@pytest.fixture(scope="module")
def sim():
    return run_one("default", "seed_journey+pressure", 7, n_users=300, days=10)


@pytest.fixture(scope="module")
def logs(tmp_path_factory, sim):
    tmp = tmp_path_factory.mktemp("suite_logs")
    out = {}
    for name in ("hillstrom", "obd_random"):
        out[name] = D.convert(name, tmp / f"{name}.parquet")
    write_log(sim.log, tmp / "sim.parquet")
    sim.users.to_parquet(tmp / "sim_users.parquet")
    out["sim"] = (tmp / "sim.parquet", tmp / "sim_users.parquet")
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory, logs):
    """(log name, report) → (ReportResult, numbers); 15 papermill runs, two at a time."""
    tmp = tmp_path_factory.mktemp("suite_reports")
    from omnisim.policies.artifact import export_policy

    artifact = str(export_policy("email_only", tmp / "email_only.json"))
    cands = {"hillstrom": ["uniform", "always:mens_email", "mix:mens_email=0.5,none=0.5"],
             "obd_random": ["uniform", "always:item_3"], "sim": ["uniform", "always:email", artifact]}

    def one(key):
        data, rep = key
        log, users = logs[data]
        params = {"log_path": str(log), "users_path": str(users), **EXTRA.get(rep, {})}
        if rep == "policy_evaluation":
            params["candidates"] = cands[data]
        res = run_report(rep, tmp / data / f"{rep}.html", params)
        return key, (res, json.loads(res.json_path.read_text()))

    keys = [(d, r) for d in ("hillstrom", "obd_random", "sim") for r in REPORTS]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(one, keys))


@pytest.fixture(scope="module")
def hill_raw() -> pd.DataFrame:
    return pd.read_csv(D.data_dir() / "hillstrom" / "hillstrom.csv.gz")


@pytest.fixture(scope="module")
def obd_raw() -> pd.DataFrame:
    return pd.read_csv(D.data_dir() / "obd" / "random" / "all" / "all.csv.gz")


# ----------------------------------------------------------------------------- every report

@pytest.mark.parametrize("data", ["hillstrom", "obd_random", "sim"])
@pytest.mark.parametrize("rep", REPORTS)
def test_html_self_contained_inputs_hidden_and_summary(runs, logs, data, rep):
    res, numbers = runs[(data, rep)]
    html = res.html_path.read_text()
    assert external_references(html) == []
    assert "<script src" not in html and "require.js" not in html and "mathjax" not in html.lower()
    assert "open_log(" not in html and "import matplotlib" not in html  # input cells hidden
    assert "Data read:" in html and "Data quality:" in html
    log = pd.read_parquet(logs[data][0])
    s = numbers["summary"]
    assert s["events"] == len(log)
    assert s["users"] == log["user_id"].nunique()
    assert pd.Timestamp(s["start"]) == log["ts"].min() and pd.Timestamp(s["end"]) == log["ts"].max()
    assert s["channels"] == sorted(log["channel"].astype(str).unique())
    assert s["by_event"] == {k: int(v) for k, v in log["event"].astype(str).value_counts().items()}


def test_sim_reports_have_figures(runs):
    for rep in REPORTS:
        html = runs[("sim", rep)][0].html_path.read_text()
        assert "data:image/png;base64" in html, rep


def test_quality_flags_obd_clicks_linked_to_decisions_as_known(runs):
    # OBD clicks carry the decided row's message_id: not an unknown id
    checks = {c["check"]: c["count"] for c in runs[("obd_random", "channel_comparison")][1]["quality"]["checks"]}
    assert checks["unknown_message_ids"] == 0 and checks["duplicated_events"] == 0


# ----------------------------------------------------------------------------- channel comparison

def test_channel_comparison_hillstrom_against_raw_csv(runs, hill_raw):
    n = runs[("hillstrom", "channel_comparison")][1]
    ch = pd.DataFrame(n["channels"]).set_index("campaign")
    emailed = hill_raw[hill_raw["segment"] != "No E-Mail"]
    row = ch.loc["(all)"]
    assert row["messages"] == len(emailed)
    # outcomes are stamped 14 days = 336 h after the send: inside the default window (inclusive)
    assert row["converted"] == int(emailed["conversion"].sum())
    assert row["revenue"] == pytest.approx(emailed.loc[emailed["conversion"] == 1, "spend"].sum())
    assert row["conversion_rate"] == pytest.approx(emailed["conversion"].mean())
    assert row["open_rate"] is None and row["cost"] is None  # not in the data: unknown, not 0
    spend = emailed["spend"].where(emailed["conversion"] == 1, 0.0)
    half = 1.959964 * spend.std(ddof=1) / np.sqrt(len(spend))
    assert row["revenue_per_message_lo"] == pytest.approx(spend.mean() - half, rel=1e-5)
    shares = pd.DataFrame(n["touch_shares"]).set_index("channel")
    conv = hill_raw["conversion"] == 1
    assert shares.loc["email", "last_touch"] == int((conv & (hill_raw["segment"] != "No E-Mail")).sum())
    assert shares.loc["(no touch)", "first_touch"] == int((conv & (hill_raw["segment"] == "No E-Mail")).sum())
    assert shares["purchases"].iloc[0] == int(conv.sum())


def test_channel_comparison_sim_against_log(runs, sim):
    n = runs[("sim", "channel_comparison")][1]
    ch = pd.DataFrame(n["channels"])
    ch = ch[ch["campaign"] == "(all)"].set_index("channel")
    log = sim.log
    sent = log[log["event"] == "sent"]
    opened = set(log.loc[log["event"] == "opened", "message_id"])
    clicked = set(log.loc[log["event"] == "clicked", "message_id"])
    for c, g in sent.groupby(sent["channel"].astype(str)):
        assert ch.loc[c, "messages"] == len(g)
        assert ch.loc[c, "opened"] == g["message_id"].isin(opened).sum()
        assert ch.loc[c, "clicked"] == g["message_id"].isin(clicked).sum()
        assert ch.loc[c, "cost"] == pytest.approx(g["value"].sum())
    # last touch within 336 h, by brute force
    buys = log[log["event"] == "purchase"]
    last = {}
    for _, b in buys.iterrows():
        s = sent[(sent["user_id"] == b["user_id"]) & (sent["ts"] <= b["ts"])
                 & (sent["ts"] >= b["ts"] - pd.Timedelta(hours=336))]
        key = str(s.sort_values("ts")["channel"].iloc[-1]) if len(s) else "(no touch)"
        last[key] = last.get(key, 0) + 1
    shares = pd.DataFrame(n["touch_shares"]).set_index("channel")["last_touch"].to_dict()
    assert {k: v for k, v in shares.items() if v} == last


# ----------------------------------------------------------------------------- send time

def test_send_time_heatmap_uses_user_local_time(runs, sim):
    n = runs[("sim", "send_time")][1]
    heat = pd.DataFrame(n["heatmap"])
    log, users = sim.log, sim.users
    sent = log[log["event"] == "sent"].copy()
    tz = sent["user_id"].map(users.set_index("user_id")["timezone"])
    local = [t.astimezone(ZoneInfo(z)) for t, z in zip(sent["ts"], tz)]
    sent["weekday"] = [t.weekday() for t in local]
    sent["hour"] = [t.hour for t in local]
    sent["hit"] = sent["message_id"].isin(set(log.loc[log["event"] == "opened", "message_id"]))
    exp = sent.groupby([sent["channel"].astype(str), "weekday", "hour"]).agg(sends=("hit", "size"), hits=("hit", "sum"))
    got = heat.set_index(["channel", "weekday", "hour"])[["sends", "hits"]].sort_index()
    exp.index.names = got.index.names
    pd.testing.assert_frame_equal(got, exp.sort_index(), check_dtype=False)
    picks = pd.DataFrame(n["best_hours"]).set_index("channel")
    hourly = pd.DataFrame(n["hourly"])
    for c, g in hourly.groupby("channel"):
        p = g["hits"].sum() / g["sends"].sum()
        shrunk = (g["hits"] + 20 * p) / (g["sends"] + 20)  # default prior_sends = 20
        best = g.assign(s=shrunk).sort_values(["s", "sends", "hour"], ascending=[False, False, True])["hour"].head(3)
        assert picks.loc[c, "model_hours"] == sorted(best.tolist())
    tto = pd.DataFrame(n["time_to_open"]).set_index("channel")
    first_open = log[log["event"] == "opened"].groupby("message_id")["ts"].min()
    d = (first_open - sent.set_index("message_id")["ts"].reindex(first_open.index)).dt.total_seconds() / 3600
    ch = sent.set_index("message_id")["channel"].astype(str).reindex(first_open.index)
    for c, v in d.groupby(ch):
        assert tto.loc[c, "median_h"] == pytest.approx(v.median(), rel=1e-6)


def test_send_time_hillstrom_says_utc(runs):
    res, n = runs[("hillstrom", "send_time")]
    heat = pd.DataFrame(n["heatmap"])
    # 2008-03-03 09:00 UTC is a Monday; Hillstrom users have no timezone → UTC
    assert heat[["weekday", "hour", "sends"]].values.tolist() == [[0, 9, 42694]]
    assert "Times are UTC" in res.html_path.read_text()


# ----------------------------------------------------------------------------- fatigue

def test_fatigue_curve_against_brute_force(runs, sim):
    n = runs[("sim", "fatigue")][1]
    curve = pd.DataFrame(n["fatigue"])
    log = sim.log
    sent = log[log["event"] == "sent"].copy()
    resp = set(log.loc[log["event"].isin(["opened", "clicked"]), "message_id"])
    unsub = set(log.loc[log["event"] == "unsubscribed", "message_id"])
    for days in (7, 30):
        prev = []
        for _, s in sent.iterrows():
            u = sent[(sent["user_id"] == s["user_id"]) & (sent["ts"] <= s["ts"])
                     & (sent["ts"] >= s["ts"] - pd.Timedelta(days=days))]
            prev.append(min(len(u) - 1, 10))
        sent["prev"] = prev
        exp = sent.groupby("prev").agg(sends=("message_id", "size"),
                                       responses=("message_id", lambda m: m.isin(resp).sum()),
                                       unsubscribes=("message_id", lambda m: m.isin(unsub).sum()))
        got = curve[curve["window_days"] == days].set_index("prev")[["sends", "responses", "unsubscribes"]]
        if not unsub:  # no unsubscribe logged at all: unknown, not 0
            assert got["unsubscribes"].isna().all()
            got, exp = got.drop(columns="unsubscribes"), exp.drop(columns="unsubscribes")
        pd.testing.assert_frame_equal(got, exp, check_dtype=False, check_names=False)
    classes = pd.DataFrame(n["saturation"]).set_index("class")
    assert classes["users"].sum() == len(sim.users)
    assert classes.loc["not messaged", "users"] == len(sim.users) - sent["user_id"].nunique()
    unsubscribed_users = log.loc[log["event"] == "unsubscribed", "user_id"].nunique()
    assert classes.loc["over-messaged", "users"] >= unsubscribed_users


def test_fatigue_hillstrom_has_no_response_data(runs):
    n = runs[("hillstrom", "fatigue")][1]
    assert all(r["response_rate"] is None for r in n["fatigue"])
    assert n["saturation_info"]["responses_logged"] is False


# ----------------------------------------------------------------------------- journeys

def test_journey_funnel_hillstrom(runs, hill_raw):
    fun = pd.DataFrame(runs[("hillstrom", "journey_funnel")][1]["journeys"]).set_index("step")
    assert fun.loc[0, "entries"] == len(hill_raw)
    assert fun.loc[1, "reached"] == int((hill_raw["segment"] != "No E-Mail").sum())
    assert fun.loc[0, "conversions"] == int(hill_raw["conversion"].sum())
    assert fun.loc[1, "converted_here"] == int(((hill_raw["segment"] != "No E-Mail") & (hill_raw["conversion"] == 1)).sum())
    assert fun.loc[1, "drop_off"] == pytest.approx(1 - fun.loc[1, "reached"] / len(hill_raw))


def _gap_entries(log: pd.DataFrame, hours: float = 72.0) -> int:
    dec = log[(log["event"] == "decided") & log["campaign"].notna()].sort_values("ts", kind="stable")
    gap = dec.groupby(["user_id", "campaign"])["ts"].diff()
    return int((gap.isna() | (gap > pd.Timedelta(hours=hours))).sum())


def test_journey_funnel_sim_entries_and_steps(runs, sim):
    """With step ids an entry is a decision at the journey's first step (offer_email for the
    seed journey), re-entries within entry_gap_h included."""
    fun = pd.DataFrame(runs[("sim", "journey_funnel")][1]["journeys"])
    log = sim.log
    dec = log[(log["event"] == "decided") & (log["campaign"] == "seed_journey")]
    entries = int((dec["step"] == "offer_email").sum())
    assert entries > _gap_entries(log)  # some users re-enter within 72 h
    g = fun[fun["campaign"] == "seed_journey"].set_index("step")
    assert g.loc[0, "entries"] == entries == g.loc[0, "reached"]
    assert (g["converted_here"] + g["exited_here"]).sum() == entries
    sent = log[(log["event"] == "sent") & (log["campaign"] == "seed_journey")]
    assert g["messages"].sum() == len(sent)
    assert list(g["reached"]) == sorted(g["reached"], reverse=True)


def test_journey_funnel_without_step_ids_splits_entries_by_gap(sim):
    from omnisim import report_tables as T
    from omnisim.report_data import open_log

    log = sim.log.drop(columns=["step"])
    fun = T.journey_funnel(open_log(log), entry_gap_h=72.0)
    g = fun[fun["campaign"] == "seed_journey"].set_index("step")
    assert g.loc[0, "entries"] == _gap_entries(log) == g.loc[0, "reached"]
    assert (g["converted_here"] + g["exited_here"]).sum() == g.loc[0, "entries"]


def test_journey_steps_sim_against_the_log(runs, sim):
    """Per-step numbers of the report equal counts over the simulated log's ``step`` column."""
    steps = pd.DataFrame(runs[("sim", "journey_funnel")][1]["steps"])
    log = sim.log
    j = log[(log["campaign"] == "seed_journey") & log["step"].notna()]
    g = steps[steps["campaign"] == "seed_journey"].set_index("step")
    assert list(g.index) == ["offer_email", "sms_nudge", "visit_push"]  # the journey's order
    for step, rows in j.groupby("step"):
        ev = rows["event"].astype(str)
        assert g.loc[step, "decided"] == (ev == "decided").sum()
        assert g.loc[step, "chose_message"] == ((ev == "decided") & (rows["channel"] != "none")).sum()
        for name in ("deferred", "suppressed", "sent"):
            assert g.loc[step, name] == (ev == name).sum(), (step, name)
        assert g.loc[step, "opened"] == rows.loc[ev == "opened", "message_id"].nunique()
        assert g.loc[step, "open_rate"] == pytest.approx(g.loc[step, "opened"] / g.loc[step, "sent"])
    sms = g.loc["sms_nudge"]
    assert sms["channel"] == "sms" and sms["median_h_from_prev"] == pytest.approx(4.0)
    top = j[j["event"].isin(["deferred", "suppressed"])].groupby(["step", "event", "reason"]).size()
    first = top.loc["sms_nudge"].sort_values(ascending=False).index[0]
    assert g.loc["sms_nudge", "top_reasons"].startswith(f"{first[0]} {first[1]} (")


def test_journey_steps_absent_without_step_ids(runs):
    assert runs[("hillstrom", "journey_funnel")][1]["steps"] == []


# ----------------------------------------------------------------------------- policy evaluation

def _ope(runs, data):
    return pd.DataFrame(runs[(data, "policy_evaluation")][1]["ope"]).set_index(["candidate", "estimator"])


def test_policy_evaluation_hillstrom_ips_against_raw_csv(runs, hill_raw):
    ope = _ope(runs, "hillstrom")
    mens = hill_raw["segment"] == "Mens E-Mail"
    assert ope.loc[("logged (on-policy)", "on-policy mean"), "value"] == pytest.approx(hill_raw["visit"].mean())
    assert ope.loc[("always:mens_email", "ips"), "value"] == pytest.approx(3 * (hill_raw["visit"] * mens).mean())
    assert ope.loc[("always:mens_email", "snips"), "value"] == pytest.approx(hill_raw.loc[mens, "visit"].mean())
    womens_or_none = hill_raw["segment"].isin(["Mens E-Mail", "No E-Mail"])
    mix = 0.5 * 3 * (hill_raw["visit"] * womens_or_none).mean()
    assert ope.loc[("mix:mens_email=0.5,none=0.5", "ips"), "value"] == pytest.approx(mix)
    assert set(ope.loc["always:mens_email"].index) == {"ips", "snips", "dm", "dr", "sndr", "switch_dr"}
    lo, hi = ope.loc[("always:mens_email", "ips"), ["lo", "hi"]]
    assert lo < hill_raw.loc[mens, "visit"].mean() < hi


def test_policy_evaluation_obd_against_raw_csv(runs, obd_raw):
    ope = _ope(runs, "obd_random")
    assert ope.loc[("logged (on-policy)", "on-policy mean"), "value"] == pytest.approx(obd_raw["click"].mean())
    # uniform over the 80 items in each slot = the logging policy: IPS weight 1 for every round
    assert obd_raw["item_id"].nunique() == 80
    assert ope.loc[("uniform", "ips"), "value"] == pytest.approx(obd_raw["click"].mean())
    three = obd_raw["item_id"] == 3
    exp = (obd_raw["click"] * three / obd_raw["propensity_score"]).mean()
    assert ope.loc[("always:item_3", "ips"), "value"] == pytest.approx(exp)


def test_policy_evaluation_sim_against_pandas_attribution(runs, sim):
    ope = _ope(runs, "sim")
    units = decision_outcomes(sim.log)
    units = units[units["propensity"] > 0]
    r = units["clicked"].astype(float)
    assert ope.loc[("logged (on-policy)", "on-policy mean"), "value"] == pytest.approx(r.mean())
    w = (units["action"] == "email") / units["propensity"]
    assert ope.loc[("always:email", "ips"), "value"] == pytest.approx((r * w).mean())


def test_policy_evaluation_sim_artifact_through_ope_log(runs, sim):
    from omnisim.policies.artifact import load_artifact
    from omnisim.policies.ope_log import evaluate_policy

    ope = pd.DataFrame(runs[("sim", "policy_evaluation")][1]["ope"])
    art = ope[ope["candidate"].str.endswith("email_only.json")].set_index("estimator")
    assert set(art.index) == {"ips", "snips", "dm", "dr", "sndr", "switch_dr"}
    path = ope.loc[ope["candidate"].str.endswith("email_only.json"), "candidate"].iloc[0]
    direct = evaluate_policy(sim.log, load_artifact(path), sim.users, estimators=("ips",), reward="click",
                             n_bootstrap=50).set_index("estimator")
    assert art.loc["ips", "value"] == pytest.approx(direct.loc["ips", "value"])
