"""Baselines (blast, email_only, random_channel) and holdouts."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from datetime import datetime, timezone

import numpy as np
import pytest

from omnisim.policies import (
    Blast, Decision, EmailOnly, HistoryEvent, RandomChannel, in_holdout, load_journey,
    make_context, with_holdout,
)
from omnisim.policies.holdout import holdout_uniform

T = datetime(2026, 5, 4, 14, 0, tzinfo=timezone.utc)
ALL = {"email": True, "sms": True, "push": True}


def test_blast_every_reachable_channel_on_every_marketing_trigger():
    ds = Blast().decide(make_context(T, "cart_abandon", consent={"email": True, "sms": False, "push": True}), None)
    assert [d.channel for d in ds] == ["email", "push"]
    assert all(d.propensity == 1.0 and d.campaign == "cart_abandon" and d.policy == "blast@1" for d in ds)
    unsub = [HistoryEvent(T, "unsubscribed", "email")]
    assert [d.channel for d in Blast().decide(make_context(T, history=unsub), None)] == ["sms", "push"]
    assert Blast().decide(make_context(T, "purchase"), None) == []
    (none,) = Blast().decide(make_context(T, consent={}), None)
    assert none.channel == "none"


def test_email_only():
    assert [d.channel for d in EmailOnly().decide(make_context(T, "signup"), None)] == ["email"]
    assert EmailOnly().decide(make_context(T, "signup", consent={"sms": True}), None)[0].channel == "none"


def test_random_channel_is_uniform_over_reachable_with_logged_propensity():
    pol, rng = RandomChannel(), np.random.default_rng(1)
    ctx = make_context(T, consent={"email": True, "sms": True, "push": False})
    picks = [pol.decide(ctx, rng)[0] for _ in range(4000)]
    counts = Counter(d.channel for d in picks)
    assert set(counts) == {"email", "sms"}
    assert abs(counts["email"] / 4000 - 0.5) < 3 * np.sqrt(0.25 / 4000)
    assert all(d.propensity == 0.5 for d in picks)
    ctx3 = make_context(T, consent=ALL)
    assert pol.decide(ctx3, rng)[0].propensity == pytest.approx(1 / 3)


def test_random_channel_same_seed_same_choice():
    ctx = make_context(T, consent=ALL)
    a = [RandomChannel().decide(ctx, np.random.default_rng(s))[0].channel for s in range(20)]
    b = [RandomChannel().decide(ctx, np.random.default_rng(s))[0].channel for s in range(20)]
    assert a == b and len(set(a)) > 1


def test_holdout_share_within_ci_and_stable():
    users = [f"user-{i}" for i in range(20000)]
    held = [u for u in users if in_holdout(u, 0.1, "salt")]
    assert abs(len(held) / 20000 - 0.1) < 3 * np.sqrt(0.1 * 0.9 / 20000)
    assert held == [u for u in users if in_holdout(u, 0.1, "salt")]
    other = {u for u in users if in_holdout(u, 0.1, "other-salt")}
    assert 0 < len(other & set(held)) < len(held)  # another salt, another group
    assert {u for u in users if in_holdout(u, 0.05, "salt")} <= set(held)  # nested shares


def test_holdout_is_stable_across_processes():
    code = "from omnisim.policies.holdout import holdout_uniform; print(repr(holdout_uniform('user-7', 'salt')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123"}).stdout.strip()
    assert float(out) == holdout_uniform("user-7", "salt")


def test_global_holdout_blocks_marketing_but_not_exempt():
    class Mixed:
        name = "mixed@1"

        def decide(self, ctx, rng):
            return [Decision("email", "email", 1.0, self.name, campaign="promo"),
                    Decision("sms", "sms", 1.0, self.name, campaign="receipt", tag="transactional")]

    pol = with_holdout(Mixed(), share=0.5, salt="s")
    held = next(u for u in (f"u{i}" for i in range(100)) if in_holdout(u, 0.5, "s"))
    free = next(u for u in (f"u{i}" for i in range(100)) if not in_holdout(u, 0.5, "s"))
    ds = pol.decide(make_context(T, user_id=held), None)
    assert [(d.channel, d.reason) for d in ds] == [("sms", None), ("none", "holdout")]
    assert ds[1].propensity == 0.5
    ds = pol.decide(make_context(T, user_id=free), None)
    assert [d.channel for d in ds] == ["email", "sms"] and all(d.propensity == 0.5 for d in ds)


def test_holdout_members_are_visible_through_pressure():
    from omnisim.policies import get_policy

    p = get_policy("blast+holdout+pressure")
    assert p.holdout.share == 0.05
    members = [u for u in (f"u{i}" for i in range(2000)) if p.holdout.contains(u)]
    assert 0 < len(members) < 200
    assert all(p.decide(make_context(T, user_id=u), None)[0].reason == "holdout" for u in members[:20])
    assert get_policy("blast+pressure").holdout is None


def test_global_holdout_stops_journeys():
    pol = with_holdout(load_journey("seed_journey"), share=1.0)
    (d,) = pol.decide(make_context(T, "product_view"), None)
    assert d.reason == "holdout" and not d.follow_ups
