"""``check_policy`` sees the policy's own ``decided`` / ``sent`` rows: ``sample_contexts``
builds histories with runs of the policy's campaigns, so a journey that reads its
``decided`` rows (re-entry) without declaring them fails the check."""

from __future__ import annotations

import dataclasses

import pytest

from omnisim.policies.check import (
    CAMPAIGNS, CHECK_CONTEXTS, OTHER_CAMPAIGN, PolicyCheckError, check_policy, policy_campaigns,
    sample_contexts,
)
from omnisim.policies.journeys import Journey, JourneySet, load_journey
from omnisim.policies.pressure import with_pressure
from omnisim.policies.registry import get_policy

BUILTIN_JOURNEYS = ("seed_journey", "welcome", "cart_abandon", "browse_abandon", "reactivation")


class ForgetsDecided(Journey):
    """A journey whose declaration leaves out ``decided``, which ``_may_enter`` reads."""

    @property
    def history_events(self) -> frozenset[str]:
        return super().history_events - {"decided"}


def forgets_decided(name: str) -> ForgetsDecided:
    j = load_journey(name)
    return ForgetsDecided(**{f.name: getattr(j, f.name) for f in dataclasses.fields(Journey)})


@pytest.mark.parametrize("name", BUILTIN_JOURNEYS)
def test_a_journey_that_does_not_declare_decided_fails(name):
    policy = forgets_decided(name)
    assert "decided" not in policy.history_events and "sent" in policy.history_events
    with pytest.raises(PolicyCheckError, match=r"declares it reads only \[.*\] from the history"):
        check_policy(policy)
    with pytest.raises(PolicyCheckError, match="declares it reads only"):
        check_policy(with_pressure(policy))  # looked through wrappers as well


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_default_sample_catches_it_on_other_seeds_too(seed):
    """Not a lucky seed: on other samples of the default size the check catches every
    mis-declared built-in journey (with 48 contexts it missed 1 to 3 seeds in 10)."""
    for name in BUILTIN_JOURNEYS:
        policy = forgets_decided(name)
        contexts = sample_contexts(CHECK_CONTEXTS, seed=seed,
                                   campaigns=policy_campaigns(policy) + (OTHER_CAMPAIGN,))
        with pytest.raises(PolicyCheckError, match="declares it reads only"):
            check_policy(policy, contexts)


@pytest.mark.parametrize("name", ["seed_journey", "seed_journey+pressure", "journeys+pressure+holdout",
                                  *BUILTIN_JOURNEYS, "blast", "blast+pressure", "email_only"])
def test_builtin_policies_pass(name):
    assert check_policy(get_policy(name)) > 0


def test_policy_campaigns_through_sets_and_wrappers():
    assert policy_campaigns(load_journey("welcome")) == ("welcome",)
    assert set(policy_campaigns(get_policy("journeys+pressure+holdout"))) == set(BUILTIN_JOURNEYS)
    pair = JourneySet((load_journey("welcome"), load_journey("cart_abandon")))
    assert policy_campaigns(with_pressure(pair)) == ("welcome", "cart_abandon")
    assert policy_campaigns(get_policy("blast")) == ()


def test_sample_contexts_hold_decided_and_sent_rows_of_the_campaigns():
    ctxs = sample_contexts(48, seed=0, campaigns=("welcome", OTHER_CAMPAIGN))
    rows = [(h, c) for c in ctxs for h in c.history]
    decided = [h for h, _ in rows if h.event == "decided"]
    assert {h.campaign for h in decided} == {"welcome", OTHER_CAMPAIGN}
    assert any(h.channel == "none" for h in decided) and any(h.channel != "none" for h in decided)
    assert any(h.event == "sent" and h.campaign == "welcome" for h, _ in rows)
    # some own decisions within hours of now: what re-entry rule 1 reads
    assert any(h.campaign == "welcome" and (c.now - h.ts).total_seconds() < 6 * 3600
               for h, c in rows if h.event == "decided")
    assert all(h.ts <= c.now for h, c in rows)
    assert all(list(c.history) == sorted(c.history, key=lambda h: h.ts) for c in ctxs)
    # default: plausible campaign names; the other events do not depend on the campaigns
    assert {h.campaign for c in sample_contexts(48) for h in c.history if h.event == "decided"} \
        <= set(CAMPAIGNS)
    strip = lambda cs: [[h for h in c.history if h.event != "decided" and not (  # noqa: E731
        h.event == "sent" and h.campaign in ("welcome", OTHER_CAMPAIGN))] for c in cs]
    assert strip(ctxs) == strip(sample_contexts(48, seed=0, campaigns=()))
    assert not any(h.event == "decided" for c in sample_contexts(48, seed=0, campaigns=()) for h in c.history)
