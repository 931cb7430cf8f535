"""The policy registry, policy files, and check_policy."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import numpy as np
import pytest

from omnisim.policies import (
    Decision, PolicyCheckError, PolicyFileError, check_policy, get_policy, in_holdout,
    list_policies, make_context, no_message,
)
from omnisim.policies.holdout import HoldoutPolicy
from omnisim.policies.journeys import JourneyError, JourneySet
from omnisim.policies.pressure import PressuredPolicy, PressureRulesError

T = datetime(2026, 5, 4, 14, 0, tzinfo=timezone.utc)
BUILTINS = ["blast", "email_only", "random_channel", "seed_journey", "welcome", "cart_abandon",
            "browse_abandon", "reactivation"]


def test_list_policies_has_the_builtins():
    assert set(BUILTINS) <= set(list_policies())


@pytest.mark.parametrize("name", BUILTINS + ["journeys", "seed_journey+pressure", "blast+holdout+pressure"])
def test_builtins_pass_check_policy(name):
    policy = get_policy(name)
    assert "@" in policy.name
    assert check_policy(policy) > 0


def test_modifiers_compose():
    p = get_policy("seed_journey+pressure")
    assert isinstance(p, PressuredPolicy) and p.rules.caps and p.name == "seed_journey@1+pressure@1"
    assert isinstance(get_policy("blast+holdout"), HoldoutPolicy)
    with pytest.raises(PolicyFileError, match="unknown modifier 'turbo'"):
        get_policy("blast+turbo")
    with pytest.raises(PolicyFileError, match="unknown policy 'spam'"):
        get_policy("spam")


def test_policy_file_combines_journeys_pressure_and_holdout(tmp_path):
    (tmp_path / "mine.yaml").write_text(
        "name: mine\ntriggers: [visit]\nsteps:\n  - {id: hello, channel: push}\n")
    (tmp_path / "rules.yaml").write_text("caps:\n  - {max: 1, window_h: 24}\n")
    f = tmp_path / "policy.yaml"
    f.write_text("name: combo\njourneys: [seed_journey, mine.yaml, "
                 "{name: inline, triggers: [signup], steps: [{id: a, channel: email}]}]\n"
                 "pressure: rules.yaml\nholdout: {share: 0.1, salt: x}\n")
    p = get_policy(f)
    assert isinstance(p, PressuredPolicy) and isinstance(p.policy, HoldoutPolicy)
    inner = p.policy.policy
    assert isinstance(inner, JourneySet) and [j.name for j in inner.journeys] == ["seed_journey@1", "mine@1", "inline@1"]
    assert p.rules.caps[0].reason == "cap:all:1d"
    users = [f"u{i}" for i in range(50)]
    free = next(u for u in users if not in_holdout(u, 0.1, "x"))
    held = next(u for u in users if in_holdout(u, 0.1, "x"))
    (d,) = p.decide(make_context(T, "visit", user_id=free), np.random.default_rng(0))
    assert (d.channel, d.campaign, d.propensity) == ("push", "mine", pytest.approx(0.9))
    (d,) = p.decide(make_context(T, "visit", user_id=held), np.random.default_rng(0))
    assert (d.channel, d.reason) == ("none", "holdout")
    check_policy(p)


@pytest.mark.parametrize("text, error, message", [
    ("policy: blast\npressure: 3\n", PolicyFileError, r"pressure: expected 'default', a rules file path"),
    ("policy: blast\njourneys: [welcome]\n", PolicyFileError, "set exactly one of policy"),
    ("journeys: [welcome, 7]\n", PolicyFileError, r"journeys\[1\]: expected a journey name"),
    ("journeys: [{name: j, triggers: [signup], steps: [{id: a, channel: fax}]}]\n", JourneyError,
     r"journeys\[0\]\.steps\[0\]\.channel"),
    ("policy: blast\nholdout: {share: lots}\n", PolicyFileError, r"holdout\.share: expected a number"),
    ("policy: blast\npressure: {caps: [{max: 1}]}\n", PressureRulesError, r"pressure\.caps\[0\]: set exactly one"),
    ("policy: blast\nextra: 1\n", PolicyFileError, "extra: unknown key"),
])
def test_policy_file_errors_name_the_key(tmp_path, text, error, message):
    f = tmp_path / "p.yaml"
    f.write_text(text)
    with pytest.raises(error, match=message):
        get_policy(f)


class Bad:
    name = "bad@1"

    def __init__(self, **kw):
        self.kw = kw

    def decide(self, ctx, rng):
        d = Decision("email", "email", self.kw.get("p", 1.0), self.name)
        if self.kw.get("clock"):
            d = Decision("email", "email", (time.perf_counter_ns() % 1000) / 1000, self.name)
        if self.kw.get("ignore_consent"):
            return [Decision("sms", "sms", 1.0, self.name)]
        if self.kw.get("mutate"):
            ctx.history.append(ctx.history[0] if ctx.history else None)
        if self.kw.get("tuple"):
            return (d,)
        if self.kw.get("channel"):
            return [Decision("fax", "fax", 1.0, self.name)]
        return [d] if ctx.can_message("email") else [no_message(self.name)]


@pytest.mark.parametrize("kw, message", [
    ({"p": 1.5}, "propensity 1.5"), ({"p": float("nan")}, "propensity nan"),
    ({"clock": True}, "not deterministic"), ({"ignore_consent": True}, "cannot be messaged"),
    ({"mutate": True}, "mutated the context"), ({"tuple": True}, "must return a list"),
    ({"channel": True}, "channel 'fax'"),
])
def test_check_policy_catches_bad_policies(kw, message):
    with pytest.raises(PolicyCheckError, match=message):
        check_policy(Bad(**kw))


def test_check_policy_wants_a_versioned_name():
    class Nameless(Bad):
        name = "bad"
    with pytest.raises(PolicyCheckError, match="version"):
        check_policy(Nameless())
    assert check_policy(Bad()) > 0


def test_check_policy_checks_attached_pressure_rules():
    from dataclasses import dataclass

    from omnisim.policies import Admission, Blast, with_pressure

    class Forgetful:
        name = "forgetful@1"

        def admit(self, due, ctx):
            return Admission(send=list(due)[1:])

    @dataclass(frozen=True)
    class Backwards:
        name = "backwards@1"

        def admit(self, due, ctx):
            return Admission(defer=[(p, ctx.now, "cap:all:1d") for p in due])

    with pytest.raises(PolicyCheckError, match="exactly one of send/defer/drop"):
        check_policy(with_pressure(Blast(), Forgetful()))
    with pytest.raises(PolicyCheckError, match="defers need a later time"):
        check_policy(with_pressure(Blast(), Backwards()))
