"""``history_events``: a policy (and its pressure rules) declares which history events it
reads; the vectorised engine keeps only those; ``check_policy`` catches a wrong declaration."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest

from omnisim.model import engine_fast
from omnisim.model.scenario import load_scenario
from omnisim.policies.bandits import ThompsonChannel
from omnisim.policies.base import Decision
from omnisim.policies.check import PolicyCheckError, check_policy, only_events, sample_contexts
from omnisim.policies.declarations import history_events
from omnisim.policies.journeys import load_journey
from omnisim.policies.pressure import Cap, PressureRules, default_rules, with_pressure
from omnisim.policies.registry import get_policy


def test_declared_events_of_journeys_rules_and_wrappers():
    seed = load_journey("seed_journey")
    assert seed.history_events == {"decided", "sent", "purchase", "unsubscribed", "opened", "product_view"}
    assert default_rules().history_events == {"sent"}
    engaged = PressureRules(caps=(Cap(max=1, window_h=24, engaged_max=3),))
    assert engaged.history_events == {"sent", "opened", "clicked"}
    assert history_events(get_policy("seed_journey+pressure")) == seed.history_events
    assert history_events(with_pressure(seed, engaged)) == seed.history_events | {"clicked"}
    assert history_events(get_policy("blast")) == frozenset()  # reads_history = False
    assert history_events(get_policy("blast+pressure+holdout")) == {"sent"}
    everything = get_policy("journeys+pressure+holdout")
    assert not {"deferred", "delivered", "suppressed"} & history_events(everything)
    assert history_events(ThompsonChannel()) is None  # undeclared: every event
    assert history_events(with_pressure(ThompsonChannel())) is None


@pytest.mark.parametrize("name", ["seed_journey+pressure", "journeys+pressure+holdout",
                                  "welcome", "reactivation+pressure", "blast+pressure"])
def test_builtin_declarations_pass_check_policy(name):
    assert check_policy(get_policy(name)) > 0


class ExitsOnPurchase:
    """Messages on product views unless the user bought in the history; declares only
    ``sent``, so a trimmed history hides the purchase."""

    name = "exits_on_purchase@test"
    trigger_kinds = frozenset({"product_view"})
    history_events = frozenset({"sent"})

    def decide(self, ctx, rng):
        if ctx.trigger.kind != "product_view" or not ctx.can_message("email"):
            return []
        if any(h.event == "purchase" for h in ctx.history):
            return []
        return [Decision("email", "email", 1.0, self.name, campaign="t")]


def test_check_policy_catches_an_undeclared_history_event():
    with pytest.raises(PolicyCheckError, match=r"declares it reads only \['sent'\].*purchase|"
                                                r"declares it reads only \['sent'\]"):
        check_policy(ExitsOnPurchase())
    fixed = type("Fixed", (ExitsOnPurchase,), {"history_events": frozenset({"sent", "purchase"})})
    assert check_policy(fixed()) > 0


@dataclass(frozen=True)
class ForgetsEngagement(PressureRules):
    """Adaptive caps read opens/clicks, but this declares ``sent`` only."""

    @property
    def history_events(self) -> frozenset[str]:
        return frozenset({"sent"})


def test_check_policy_catches_rules_that_under_declare():
    rules = ForgetsEngagement(caps=(Cap(max=0, window_h=720, engaged_max=5),))
    ctxs = [c for c in sample_contexts(96, seed=2)
            if sum(h.event in ("opened", "clicked") for h in c.history) >= 2]
    assert ctxs, "the sample needs engaged users"
    with pytest.raises(PolicyCheckError, match="rules.admit.*declares it reads only"):
        check_policy(with_pressure(get_policy("blast"), rules), contexts=ctxs)


def test_only_events_keeps_can_message_answers():
    for ctx in sample_contexts(48, seed=5):
        narrow = only_events(ctx, frozenset({"sent"}))
        assert {h.event for h in narrow.history} <= {"sent"}
        for ch in ("email", "sms", "push"):
            assert narrow.can_message(ch) == ctx.can_message(ch)


class Spy:
    """Answers product views with nothing; records the events its contexts' histories hold."""

    trigger_kinds = frozenset({"product_view"})

    def __init__(self, declared):
        self.name = "spy@test"
        self.seen: set[str] = set()
        if declared is not None:
            self.history_events = declared

    def decide(self, ctx, rng):
        self.seen |= {h.event for h in ctx.history}
        return []


def test_engine_keeps_only_declared_events_and_the_log_does_not_change(monkeypatch):
    sc = load_scenario("default").replace(n_users=300, days=8, seed=11)
    undeclared, declared = Spy(None), Spy(frozenset({"product_view"}))
    engine_fast.simulate(sc, undeclared, progress=False)
    engine_fast.simulate(sc, declared, progress=False)
    assert {"visit", "product_view"} <= undeclared.seen
    assert declared.seen == {"product_view"}
    # the journeys and the rules see less history, and decide exactly as with all of it
    for name in ("seed_journey+pressure", "journeys+pressure+holdout"):
        trimmed = engine_fast.simulate(sc, get_policy(name), progress=False).log
        with monkeypatch.context() as m:
            m.setattr(engine_fast, "history_events", lambda policy: None)
            full = engine_fast.simulate(sc, get_policy(name), progress=False).log
        assert (trimmed["event"] == "sent").sum() > 50
        pd.testing.assert_frame_equal(trimmed, full)


@pytest.mark.parametrize("chain", [["emial"], ["email", "push"], "sms-ish"])
def test_check_policy_catches_a_fallback_the_sender_would_ignore(chain):
    class Falls:
        name = "falls@test"

        def decide(self, ctx, rng):
            if not ctx.can_message("email"):
                return []
            return [Decision("email", "email", 1.0, self.name, meta={"fallback": chain})]

    with pytest.raises(PolicyCheckError, match=r"meta\['fallback'\]"):
        check_policy(Falls())
    ok = load_journey("browse_abandon")  # push step with fallback: email
    assert any(s.fallback for s in ok.steps) and check_policy(ok) > 0


def test_check_policy_catches_an_answer_to_an_undeclared_trigger_kind():
    class Undeclared(ExitsOnPurchase):
        trigger_kinds = frozenset({"signup"})  # but answers product views

    with pytest.raises(PolicyCheckError, match=r"declares trigger_kinds \['signup'\].*'product_view'"):
        check_policy(Undeclared())
