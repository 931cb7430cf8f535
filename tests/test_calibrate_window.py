"""The window fit (indicator-window logs such as Hillstrom) on data it cannot solve.

Its visit rate and purchase propensity are solved (brentq) from the no-message arm's shares;
a share the model cannot reach on the search range — no buyer in a small sample's control
arm, no visitor, only visitors — used to stop calibration with scipy's bare
"f(a) and f(b) must have different signs". Like every other parameter the log cannot
identify, such a parameter now keeps the base scenario's value, with the arm's counts in its
reason and in the calibration notes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from omnisim.datasets import hillstrom_log
from omnisim.model.calibrate import _solve, fit_calibration
from omnisim.model.scenario import load_scenario

VISIT = "population.segments[*].visit_rate_per_day"
PURCHASE = "population.segments[*].purchase_propensity"


@pytest.fixture(scope="module")
def hillstrom():
    return hillstrom_log()


def _sample(log: pd.DataFrame, users: pd.DataFrame, ids) -> tuple[pd.DataFrame, pd.DataFrame]:
    ids = set(ids)
    return (log[log["user_id"].astype(str).isin(ids)].reset_index(drop=True),
            users[users["user_id"].astype(str).isin(ids)].reset_index(drop=True))


def _control(log: pd.DataFrame) -> pd.Series:
    dec = log[log["event"] == "decided"]
    return dec.loc[dec["action"] == "none", "user_id"].astype(str)


def _who(log: pd.DataFrame, event: str) -> set[str]:
    return set(log.loc[log["event"] == event, "user_id"].astype(str))


def test_small_sample_without_a_control_buyer_keeps_the_base_purchase_propensity(hillstrom):
    """300 random Hillstrom customers: 94 got no e-mail and none of them bought (0.6 % do)."""
    log, users = hillstrom
    ids = np.random.default_rng(0).choice(users["user_id"].astype(str).to_numpy(), 300, replace=False)
    sub, sub_users = _sample(log, users, ids)
    ctl = _control(sub)
    assert len(ctl) == 94 and not set(ctl) & _who(sub, "purchase")       # the data, as described
    cal = fit_calibration(sub, sub_users)                                 # was: ValueError from brentq
    p = cal.scenario.calibration["parameters"]
    assert p[PURCHASE]["status"] == "default"
    assert "0 of the 94 no-message users purchased within 14 days" in p[PURCHASE]["reason"]
    note = next(n for n in cal.notes if "0 of the 94 no-message users purchased" in n)
    assert "base scenario's value" in note and "buyers and non-buyers" in note
    base = load_scenario("default").population.segments[0].purchase_propensity
    assert all(s.purchase_propensity == base for s in cal.scenario.population.segments)
    assert p[VISIT]["status"] == "estimated"                              # the rest is still fitted
    assert set(cal.scenario.calibration["campaigns"]) == {"mens_email", "womens_email"}


@pytest.mark.parametrize("visitors, share", [(False, "0 of the 60"), (True, "60 of the 60")],
                         ids=["no-visitor", "only-visitors"])
def test_control_arm_visit_share_out_of_reach_keeps_what_depends_on_it(hillstrom, visitors, share):
    """A control arm with no visitor (or only visitors) gives no visit rate; the purchase
    propensity and the e-mails' click-through are solved from it, so they keep the base too."""
    log, users = hillstrom
    visited = _who(log, "visit")
    ctl = [u for u in _control(log) if (u in visited) == visitors][:60]
    dec = log[log["event"] == "decided"]
    mailed = dec.loc[dec["action"] != "none", "user_id"].astype(str).tolist()[:240]
    sub, sub_users = _sample(log, users, ctl + mailed)
    cal = fit_calibration(sub, sub_users)
    p = cal.scenario.calibration["parameters"]
    assert p[VISIT]["status"] == "default" and share in p[VISIT]["reason"]
    for key in (PURCHASE, "channels.email.open_prob", "channels.email.click_prob"):
        assert p[key]["status"] == "default" and "needs the no-message arm's visit rate" in p[key]["reason"], key
    assert "campaigns" not in cal.scenario.calibration
    assert any(share in n and "both visitors and non-visitors" in n for n in cal.notes), cal.notes
    base = load_scenario("default")
    assert cal.scenario.population.segments[0].visit_rate_per_day == base.population.segments[0].visit_rate_per_day
    assert cal.scenario.channels.get("email").open_prob == base.channels.get("email").open_prob


@pytest.mark.parametrize("target, expected", [(0.0, (0.0, "below")), (-1.0, (0.0, "below")),
                                              (0.5, (0.5, "")), (0.9, (0.8, "above")), (1.0, (0.8, "above"))])
def test_solve_gives_the_boundary_for_a_target_out_of_reach(target, expected):
    x, side = _solve(lambda v: v, target, 1e-9, 0.8)
    assert side == expected[1] and x == pytest.approx(expected[0], abs=1e-6)
