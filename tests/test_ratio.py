"""Engagement-ratio channel chooser: ratios, not-enough-data fallback, tie-breaks."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sklearn.base import clone

from omnisim.policies import (
    EngagementRatioChannel,
    HistoryEvent,
    check_policy,
    make_context,
    sample_contexts,
)

NOW = datetime(2026, 2, 1, 12, tzinfo=UTC)


def hist(ch: str, sends: int, interactions: int, days_ago: float = 1.0) -> list[HistoryEvent]:
    t = NOW - timedelta(days=days_ago)
    return [HistoryEvent(t, "sent", ch)] * sends + [HistoryEvent(t, "opened", ch)] * interactions


def choose(pol: EngagementRatioChannel, history, consent=None) -> str:
    ctx = make_context(NOW, "product_view", history=history, consent=consent)
    [d] = pol.decide(ctx, np.random.default_rng(0))
    assert d.propensity == 1.0 and d.policy == "ratio@1"
    return d.action


def test_best_ratio_wins_among_channels_with_enough_data():
    pol = EngagementRatioChannel(min_messages=3)
    h = hist("email", 10, 2) + hist("sms", 4, 3) + hist("push", 2, 2)   # push: not enough data
    assert choose(pol, h) == "sms"
    assert pol.rank(make_context(NOW, history=h)) == ["sms", "email", "push"]


def test_not_enough_data_falls_back_to_the_configured_order():
    pol = EngagementRatioChannel(min_messages=3, fallback_order=("push", "sms", "email"))
    assert choose(pol, hist("email", 2, 2)) == "push"
    assert choose(pol, [], consent={"email": True, "sms": True, "push": False}) == "sms"
    assert choose(pol, [], consent={"email": False, "sms": False, "push": False}) == "none"


def test_ties_broken_by_evidence_then_fallback_order():
    pol = EngagementRatioChannel(min_messages=2, fallback_order=("email", "sms", "push"))
    assert choose(pol, hist("email", 4, 2) + hist("sms", 8, 4)) == "sms"      # same ratio, more sends
    assert choose(pol, hist("push", 4, 2) + hist("sms", 4, 2)) == "sms"       # full tie: order


def test_window_and_unsubscribe_respected():
    pol = EngagementRatioChannel(min_messages=3, window_h=7 * 24)
    old = hist("sms", 10, 10, days_ago=10)                                    # outside the window
    assert choose(pol, old + hist("email", 5, 1)) == "email"
    unsub = hist("sms", 5, 5) + [HistoryEvent(NOW - timedelta(hours=1), "unsubscribed", "sms")]
    assert choose(pol, unsub + hist("email", 5, 1)) == "email"


def test_other_triggers_get_no_decision_and_check_policy_passes():
    pol = EngagementRatioChannel()
    assert pol.decide(make_context(NOW, "purchase"), np.random.default_rng(0)) == []
    check_policy(pol)


@pytest.mark.parametrize("kwargs, match", [
    ({"min_messages": 0}, "min_messages: expected an integer >= 1, got 0"),
    ({"window_h": -5}, "window_h: expected a positive number of hours, got -5"),
    ({"fallback_order": ("email",)}, r"fallback_order: must rank every channel; missing \['sms', 'push'\]"),
])
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        choose(EngagementRatioChannel(**kwargs), [])


def test_artifact_round_trip_and_clone():
    pol = EngagementRatioChannel(min_messages=2, window_h=100.0)
    params, arrays = pol.to_artifact()
    back = EngagementRatioChannel.from_artifact(json.loads(json.dumps(params)), arrays)
    assert back.get_params() == clone(pol).get_params()
    for i, ctx in enumerate(sample_contexts(40, seed=3)):
        assert pol.decide(ctx, np.random.default_rng(i)) == back.decide(ctx, np.random.default_rng(i))


def test_action_probabilities_put_one_on_the_decided_action():
    pol = EngagementRatioChannel()
    h = hist("email", 10, 2) + hist("sms", 4, 3)
    assert pol.action_probabilities(make_context(NOW, "product_view", history=h)) == {"sms": 1.0}
    nobody = make_context(NOW, "product_view", consent={"email": False, "sms": False, "push": False})
    assert pol.action_probabilities(nobody) == {"none": 1.0}
    assert pol.action_probabilities(make_context(NOW, "purchase")) == {"none": 1.0}   # not its trigger
    for i, ctx in enumerate(sample_contexts(48, seed=8)):
        ds = pol.decide(ctx, np.random.default_rng(i))
        assert pol.action_probabilities(ctx) == {ds[0].action if ds else "none": 1.0}
