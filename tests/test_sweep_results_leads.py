"""``policy_leads`` with a single paired seed: the lead has no interval (NaN bounds)."""

from __future__ import annotations

import math

import pandas as pd

from omnisim.sweep_results import policy_leads


def _results(seeds_b: list[int]) -> pd.DataFrame:
    rows = [{"scenario": "s", "policy": "a@1", "seed": s, "rmc": 10.0 + s, "error": None}
            for s in (0, 1, 2)]
    rows += [{"scenario": "s", "policy": "b@1", "seed": s, "rmc": 4.0 + s, "error": None}
             for s in seeds_b]
    return pd.DataFrame(rows)


def test_one_paired_seed_gives_no_interval():
    row = policy_leads(_results([1]), "rmc").iloc[0]
    assert (row["best"], row["runner_up"], row["paired_seeds"]) == ("a@1", "b@1", 1)
    assert row["lead_mean"] == 6.0
    assert math.isnan(row["lead_low"]) and math.isnan(row["lead_high"])
    assert math.isnan(row["p_value"]) and not row["clear"]


def test_several_paired_seeds_still_give_an_interval():
    results = _results([0, 1, 2])
    results.loc[results["policy"].eq("b@1") & results["seed"].eq(2), "rmc"] = 5.0
    row = policy_leads(results, "rmc").iloc[0]
    assert row["paired_seeds"] == 3
    assert row["lead_low"] < row["lead_mean"] < row["lead_high"]
