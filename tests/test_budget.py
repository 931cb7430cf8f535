"""Joint time × channel × frequency under a weekly budget: fit, shadow price, budget, artifact."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from omnisim.log import empty_log, validate
from omnisim.policies import (
    BudgetPolicy,
    HistoryEvent,
    check_policy,
    local_hour,
    make_context,
    sample_contexts,
)
from omnisim.policies.budget import week_start

MONDAY = datetime(2026, 1, 5, tzinfo=UTC)
USERS = pd.DataFrame({"user_id": ["u1"], "timezone": ["UTC"]})


def click_log(best: dict[str, int], n_days: int = 40) -> pd.DataFrame:
    """Sends at every 3rd hour on each channel; clicked only at the channel's ``best`` hour."""
    rows, i = [], 0
    for d in range(n_days):
        for ch, hour in best.items():
            for h in range(0, 24, 3):
                ts = MONDAY + timedelta(days=d, hours=h)
                rows.append({"ts": ts, "user_id": "u1", "event": "sent", "channel": ch, "message_id": f"m{i}"})
                if h == hour:
                    rows.append({"ts": ts + timedelta(minutes=2), "user_id": "u1", "event": "clicked",
                                 "channel": ch, "message_id": f"m{i}"})
                i += 1
    return validate(pd.DataFrame(rows).sort_values("ts", kind="stable"))


def fitted(**kw) -> BudgetPolicy:
    return BudgetPolicy(**kw).fit(click_log({"email": 9, "sms": 18, "push": 21}), USERS)


def test_fit_learns_click_rate_by_channel_and_hour():
    pol = fitted()
    assert pol.rate_.shape == (3, 24)
    assert [int(np.argmax(r)) for r in pol.rate_] == [9, 18, 21]


def test_picks_channel_and_hour_jointly_within_the_week():
    pol = fitted(costs={"email": 0.0, "sms": 0.0, "push": 0.0})
    now = MONDAY + timedelta(days=2, hours=10)                      # Wednesday 10:00 UTC
    [d] = pol.decide(make_context(now, "product_view"), np.random.default_rng(0))
    assert d.channel in ("email", "sms", "push") and d.propensity == 1.0
    best = {"email": 9, "sms": 18, "push": 21}[d.channel]
    hour = d.meta["send_hour"]
    assert hour == best and d.action == f"{d.channel}@{hour:02d}h"
    assert local_hour(d.send_at, "UTC") == hour and now < d.send_at <= now + timedelta(hours=24)
    # Sunday 22:00: next 09:00 / 18:00 / 21:00 fall in next week -> only hours left this week
    late = MONDAY + timedelta(days=6, hours=22)
    [d2] = pol.decide(make_context(late, "product_view"), np.random.default_rng(0))
    assert d2.send_at is None or d2.send_at < MONDAY + timedelta(days=7)


def test_budget_is_spent_then_none_with_reason():
    pol = fitted(weekly_budget=2)
    now = MONDAY + timedelta(days=3)
    spent = [HistoryEvent(MONDAY + timedelta(days=1), "decided", "email"),
             HistoryEvent(MONDAY + timedelta(days=2), "decided", "sms")]
    [d] = pol.decide(make_context(now, "product_view", history=spent), np.random.default_rng(0))
    assert d.action == "none" and d.reason == "budget"
    # last week's messages do not count
    old = [HistoryEvent(MONDAY - timedelta(days=1), "decided", "email")] * 5
    assert pol.used(make_context(now, history=old)) == 0


def test_threshold_rises_with_budget_used_and_suppresses_weak_messages():
    pol = fitted(weekly_budget=4, threshold_min=0.0, threshold_max=0.4)
    assert [pol.threshold(u) for u in range(5)] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    now = MONDAY + timedelta(days=2, hours=10)
    best = max(s for s, *_ in pol.scores(make_context(now, "product_view")))
    assert best > 0.0
    pol.set_params(threshold_max=2 * best)        # threshold best/2 after 1 message, 1.5·best after 3
    one = [HistoryEvent(MONDAY + timedelta(days=1), "decided", "email")]
    decide = lambda h: pol.decide(make_context(now, "product_view", history=h), np.random.default_rng(0))[0]
    assert decide(one).is_message
    [weak] = [decide(one * 3)]
    assert not weak.is_message and weak.reason is None


def test_week_start_is_local_monday_midnight():
    # Sunday 23:30 UTC is Monday 08:30 in Tokyo
    t = datetime(2026, 1, 11, 23, 30, tzinfo=UTC)
    assert week_start(t, "UTC") == MONDAY
    assert week_start(t, "Asia/Tokyo") == datetime(2026, 1, 11, 15, tzinfo=UTC)


def test_unfitted_and_bad_parameters():
    with pytest.raises(NotFittedError, match="not fitted"):
        BudgetPolicy().decide(make_context(MONDAY), np.random.default_rng(0))
    with pytest.raises(ValueError, match="weekly_budget: expected an integer >= 0"):
        BudgetPolicy(weekly_budget=-1).fit(empty_log(), USERS)
    with pytest.raises(ValueError, match=r"threshold_max \(0.1\) must be >= threshold_min \(0.2\)"):
        BudgetPolicy(threshold_min=0.2, threshold_max=0.1).fit(empty_log(), USERS)


def test_check_policy_artifact_round_trip_and_clone():
    pol = fitted()
    check_policy(pol)
    params, arrays = pol.to_artifact()
    back = BudgetPolicy.from_artifact(json.loads(json.dumps(params)), arrays)
    for i, ctx in enumerate(sample_contexts(40, seed=4)):
        assert pol.decide(ctx, np.random.default_rng(i)) == back.decide(ctx, np.random.default_rng(i))
    assert clone(pol).get_params() == pol.get_params() and not hasattr(clone(pol), "rate_")


def test_action_probabilities_put_one_on_the_decided_action():
    pol = fitted()
    spent = [HistoryEvent(MONDAY + timedelta(days=1), "decided", "email")] * 3
    now = MONDAY + timedelta(days=2, hours=10)
    assert pol.action_probabilities(make_context(now, "product_view", history=spent)) == {"none": 1.0}
    assert pol.action_probabilities(make_context(now, "purchase")) == {"none": 1.0}   # not its trigger
    sent = 0
    for i, ctx in enumerate(sample_contexts(48, seed=9)):
        ds = pol.decide(ctx, np.random.default_rng(i))
        probs = pol.action_probabilities(ctx)
        assert probs == {ds[0].action if ds else "none": 1.0}
        sent += bool(ds) and ds[0].is_message
    assert sent > 5
