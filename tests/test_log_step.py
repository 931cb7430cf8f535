"""The ``step`` column: both engines log the journey step behind each row a journey
decision leads to (decisions, admissions, the sent message's life cycle), and nothing else."""

from __future__ import annotations

import pandas as pd
import pytest

from omnisim.log import validate
from omnisim.model import engine_fast, engine_simpy
from omnisim.model.scenario import load_scenario
from omnisim.policies.registry import get_policy

ENGINES = {"fast": engine_fast.simulate, "simpy": engine_simpy.simulate}
SEED_STEPS = {"offer_email", "sms_nudge", "visit_push"}


@pytest.fixture(scope="module")
def scenario():
    return load_scenario("default")


def _run(scenario, engine: str, policy: str) -> pd.DataFrame:
    res = ENGINES[engine](scenario, get_policy(policy), n_users=400, days=10, seed=3,
                          progress=False)
    return res.read_log() if hasattr(res, "read_log") else res.log


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_journey_rows_carry_their_step(scenario, engine):
    log = _run(scenario, engine, "seed_journey+pressure")
    assert str(log["step"].dtype) == "string"
    decided = log[log["event"] == "decided"]
    assert decided["step"].notna().all() and set(decided["step"]) <= SEED_STEPS | {"entry"}
    # every step of the journey decided something; each message's rows share its send's step
    sent = log[log["event"] == "sent"]
    assert set(sent["step"]) == SEED_STEPS
    msg = log[log["message_id"].notna()]
    of_send = sent.set_index("message_id")["step"]
    assert (msg["step"].to_numpy() == of_send.reindex(msg["message_id"]).to_numpy()).all()
    assert {"delivered", "opened"} <= set(msg["event"])
    # the step of a send is the step whose channel the journey names
    channel_of = {"offer_email": "email", "sms_nudge": "sms", "visit_push": "push"}
    assert (sent["channel"].astype(str) == sent["step"].map(channel_of)).all()
    # deferred / suppressed rows of the journey's messages name their step too
    admitted = log[log["event"].isin(["deferred", "suppressed"]) & log["campaign"].notna()]
    assert len(admitted) and admitted["step"].notna().all()
    behaviour = log[log["event"].isin(["visit", "product_view", "purchase", "signup"])]
    assert behaviour["step"].isna().all()


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_policies_without_steps_log_none(scenario, engine):
    log = _run(scenario, engine, "blast")
    assert (log["event"] == "sent").any() and log["step"].isna().all()


def test_a_log_without_the_column_reads_it_as_null():
    df = pd.DataFrame({"ts": ["2026-01-01T00:00:00Z"], "user_id": ["u1"], "event": ["visit"],
                       "channel": ["web"]})
    out = validate(df)
    assert "step" in out.columns and out["step"].isna().all()


def test_a_decisions_log_fields_are_the_columns_its_rows_carry():
    from omnisim.policies.base import Decision

    d = Decision("sms", "sms", 1.0, "seed_journey@1", campaign="seed", meta={"step": "sms_nudge"})
    assert d.log_fields() == {"action": "sms", "campaign": "seed", "policy": "seed_journey@1",
                              "step": "sms_nudge"}
    assert Decision("none", "none", 1.0, "blast@1", meta={"step": 3}).log_fields()["step"] is None
