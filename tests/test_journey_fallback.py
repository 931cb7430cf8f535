"""A journey step's ``fallback:`` key: parsing and its errors, ``Decision.meta["fallback"]``
and ``meta["fallback_templates"]`` from ``decide`` and ``decide_batch``, ``check_policy``,
artifacts, the simulator (unchanged), and the sender end to end (an HTTP push gateway
answering 410, an aiosmtpd SMTP server)."""

from __future__ import annotations

import copy
import email
import email.policy
import json
import random
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from omnisim.cli import main
from omnisim.policies import Journey, JourneyError, Step, Trigger, load_journey, make_context
from omnisim.policies.artifact import export_policy, load_artifact, policy_document, read_artifact
from omnisim.policies.base import Decision
from omnisim.policies.check import PolicyCheckError, check_policy
from omnisim.policies.journeys import journey_from_dict, ordered_fallbacks
from omnisim.policies.registry import load_policy

sys.path.insert(0, str(Path(__file__).resolve().parent / "send"))
from providers_support import FakeTime, Gateway, Reply, smtpd  # noqa: E402, F401 - smtpd is a fixture
from sender_support import T0 as SEND_T0  # noqa: E402
from sender_support import at, ev, log_rows, store_url  # noqa: E402, F401 - store_url is a fixture

T0 = datetime(2026, 5, 4, 14, 0, tzinfo=timezone.utc)
RNG = np.random.default_rng(0)


def spec(fallback: Any = ..., channel: str = "push", name: str = "fb") -> dict[str, Any]:
    """A two-step journey: an email, then a step on ``channel`` with ``fallback``."""
    step: dict[str, Any] = {"id": "nudge", "channel": channel, "delay_h": 2, "template": "nudge"}
    if fallback is not ...:
        step["fallback"] = fallback
    return {"name": name, "triggers": ["product_view"],
            "steps": [{"id": "intro", "channel": "email"}, step]}


# -- parsing ----------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("email", ("email",)),
    (["email", "sms"], ("email", "sms")),
    (["sms"], ("sms",)),
    ([], ()),
    (None, None),  # `fallback: null`: the sender's default, as without the key
    (..., None),
])
def test_fallback_key_parses(value, expected):
    assert journey_from_dict(spec(value)).steps[1].fallback == expected


@pytest.mark.parametrize("value, chain, templates", [
    ({"email": "nudge_email"}, ("email",), (("email", "nudge_email"),)),
    ({"sms": "nudge_sms", "email": "nudge_email"}, ("sms", "email"),  # the mapping's order
     (("sms", "nudge_sms"), ("email", "nudge_email"))),
    ({"email": None, "sms": "nudge_sms"}, ("email", "sms"), (("sms", "nudge_sms"),)),
    ({"email": None}, ("email",), ()),
    ({}, (), ()),
    ([{"sms": "nudge_sms"}, "email"], ("sms", "email"), (("sms", "nudge_sms"),)),
    ([{"email": None}], ("email",), ()),
    ("email", ("email",), ()),
    (["email", "sms"], ("email", "sms"), ()),
])
def test_fallback_templates_parse(value, chain, templates):
    step = journey_from_dict(spec(value)).steps[1]
    assert (step.fallback, step.fallback_templates) == (chain, templates)
    hash(step)  # still hashable


def test_yaml_file_with_fallback(tmp_path):
    f = tmp_path / "j.yaml"
    f.write_text("name: j\ntriggers: [product_view]\nsteps:\n"
                 "  - {id: p, channel: push, fallback: email}\n"
                 "  - {id: s, channel: sms, delay_h: 1, fallback: [email, push]}\n"
                 "  - {id: e, channel: email, delay_h: 1, fallback: []}\n")
    j = load_journey(f)
    assert [s.fallback for s in j.steps] == [("email",), ("email", "push"), ()]


def test_yaml_file_with_fallback_templates(tmp_path):
    f = tmp_path / "j.yaml"
    f.write_text("name: j\ntriggers: [product_view]\nsteps:\n"
                 "  - id: p\n    channel: push\n    fallback:\n      sms: p_sms\n      email: p_email\n"
                 "  - {id: s, channel: sms, delay_h: 1, fallback: {push: null, email: s_email}}\n"
                 "  - {id: e, channel: email, delay_h: 1, fallback: [{sms: e_sms}, push]}\n")
    j = load_journey(f)
    assert [(s.fallback, s.fallback_templates) for s in j.steps] == [
        (("sms", "email"), (("sms", "p_sms"), ("email", "p_email"))),
        (("push", "email"), (("email", "s_email"),)),
        (("sms", "push"), (("sms", "e_sms"),))]


def test_builtin_browse_push_falls_back_to_email_with_the_email_template():
    j = load_journey("browse_abandon")
    steps = {s.id: s for s in j.steps}
    assert j.name == "browse_abandon@3"
    assert steps["browse_push"].fallback == ("email",)
    assert steps["browse_push"].fallback_templates == (("email", "browse_email"),)
    assert steps["browse_push"].template == "browse_push"
    assert steps["browse_email"].fallback is None and steps["check_cart"].fallback is None
    assert steps["browse_email"].fallback_templates == () == steps["check_cart"].fallback_templates


FALLBACK_ERRORS = [
    # (fallback, step channel, message: path, what was expected, the value)
    ("fax", "push", "steps[1].fallback: expected one of email, sms, push (a channel to re-send on; "
                    "'fallback: []' forbids fallback), got str 'fax'"),
    (["email", "fax"], "push", "steps[1].fallback[1]: expected one of email, sms, push"),
    ("none", "push", "steps[1].fallback: expected one of email, sms, push (a channel to re-send on; "
                     "'fallback: []' forbids fallback), got str 'none'"),
    (["none"], "sms", "steps[1].fallback[0]: expected one of email, sms, push"),
    ("push", "push", "steps[1].fallback: expected a channel other than the step's own (push), got str 'push'"),
    (["email", "sms"], "sms", "steps[1].fallback[1]: expected a channel other than the step's own (sms), "
                              "got str 'sms'"),
    (["email", "sms", "email"], "push", "steps[1].fallback[2]: expected each channel at most once, "
                                        "got str 'email'"),
    ("email", "none", "steps[1].fallback: expected no fallback on a 'channel: none' step (it sends no "
                      "message), got str 'email'"),
    ([], "none", "steps[1].fallback: expected no fallback on a 'channel: none' step (it sends no "
                 "message), got list []"),
    (3, "push", "steps[1].fallback: expected a channel (email, sms, push), a list of channels, or a "
                "mapping channel -> template, got int 3"),
    ([["email"]], "push", "steps[1].fallback[0]: expected a string, got list ['email']"),
    (True, "push", "steps[1].fallback: expected a channel (email, sms, push), a list of channels, or a "
                   "mapping channel -> template, got bool True"),
    # the mapping form: channel keys as in the list form, then templates
    ({"push": "email"}, "push", "steps[1].fallback.push: expected a channel other than the step's own "
                                "(push), got str 'push'"),
    ({"fax": "t"}, "push", "steps[1].fallback.fax: expected one of email, sms, push (a channel to "
                           "re-send on; 'fallback: []' forbids fallback), got str 'fax'"),
    ({"none": None}, "push", "steps[1].fallback.none: expected one of email, sms, push"),
    ({1: "t"}, "push", "steps[1].fallback.1: expected a string, got int 1"),
    ({"email": 3}, "push", "steps[1].fallback.email: expected a template name (a non-empty string), "
                           "or null for none, got int 3"),
    ({"email": "ok", "sms": ""}, "push", "steps[1].fallback.sms: expected a template name (a non-empty "
                                         "string), or null for none, got str ''"),
    ({"email": ["t"]}, "push", "steps[1].fallback.email: expected a template name"),
    ({"email": "t"}, "none", "steps[1].fallback: expected no fallback on a 'channel: none' step (it "
                             "sends no message), got dict {'email': 't'}"),
    ({"email": "t"}, "email", "steps[1].fallback.email: expected a channel other than the step's own "
                              "(email)"),
    # one-entry mappings in the list form
    (["sms", {"email": 4}], "push", "steps[1].fallback[1].email: expected a template name (a non-empty "
                                    "string), or null for none, got int 4"),
    ([{"email": "a", "sms": "b"}], "push", "steps[1].fallback[0]: expected a channel or a one-entry "
                                           "mapping {channel: template}, got dict"),
    ([{}], "push", "steps[1].fallback[0]: expected a channel or a one-entry mapping"),
    (["email", {"email": "t"}], "push", "steps[1].fallback[1]: expected each channel at most once, "
                                        "got str 'email'"),
    ([{"fax": "t"}], "push", "steps[1].fallback[0]: expected one of email, sms, push"),
]


@pytest.mark.parametrize("value, channel, message", FALLBACK_ERRORS)
def test_fallback_errors_name_path_value_and_expectation(value, channel, message):
    with pytest.raises(JourneyError) as exc:
        journey_from_dict(spec(value, channel))
    assert message in str(exc.value)


def test_fallback_error_in_a_file_and_in_a_policy_file_name_the_path(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("name: j\ntriggers: [product_view]\nsteps:\n  - {id: p, channel: push, fallback: [email, fax]}\n")
    with pytest.raises(JourneyError, match=r"bad\.yaml: steps\[0\]\.fallback\[1\]: expected one of email"):
        load_journey(f)
    with pytest.raises(JourneyError, match=r"journeys\[0\]\.steps\[1\]\.fallback: expected a channel other"):
        load_policy({"journeys": [spec("push")]})


@pytest.mark.parametrize("fallback, message", [
    (("push",), "fb.steps[0].fallback[0]: expected a channel other than the step's own (push)"),
    (("email", "email"), "fb.steps[0].fallback[1]: expected each channel at most once"),
    (("fax",), "fb.steps[0].fallback[0]: expected one of email, sms, push"),
    ("email", "fb.steps[0].fallback: expected a tuple of channels, got str 'email'"),
])
def test_python_steps_are_validated_too(fallback, message):
    with pytest.raises(JourneyError) as exc:
        Journey("fb", ("product_view",), (Step("p", "push", fallback=fallback),))
    assert message in str(exc.value)
    with pytest.raises(JourneyError, match="no fallback on a 'channel: none' step"):
        Journey("fb", ("product_view",), (Step("w", "none", fallback=("email",)),))


@pytest.mark.parametrize("fallback, templates, message", [
    (None, (("email", "t"),), "fb.steps[0].fallback_templates[0][0]: expected a channel of the step's "
                              "fallback chain (it has no fallback), got str 'email'"),
    (("email",), (("sms", "t"),), "fb.steps[0].fallback_templates[0][0]: expected a channel of the "
                                  "step's fallback chain (it has fallback ['email']), got str 'sms'"),
    ((), (("email", "t"),), "fb.steps[0].fallback_templates[0][0]: expected a channel of the step's "
                            "fallback chain (it has fallback []), got str 'email'"),
    (("email", "sms"), (("email", "a"), ("email", "b")),
     "fb.steps[0].fallback_templates[1][0]: expected each channel at most once, got str 'email'"),
    (("email",), (("email", ""),), "fb.steps[0].fallback_templates[0][1]: expected a template name (a "
                                   "non-empty string), got str ''"),
    (("email",), (("email", None),), "fb.steps[0].fallback_templates[0][1]: expected a template name"),
    (("email",), (("email",),), "fb.steps[0].fallback_templates[0]: expected a (channel, template) "
                                "pair, got tuple ('email',)"),
    (("email",), {"email": "t"}, "fb.steps[0].fallback_templates: expected a tuple of (channel, "
                                 "template) pairs, got dict"),
])
def test_python_fallback_templates_are_validated(fallback, templates, message):
    with pytest.raises(JourneyError) as exc:
        Journey("fb", ("product_view",), (Step("p", "push", fallback=fallback, fallback_templates=templates),))
    assert message in str(exc.value)


def test_message_meta_names_fallback_templates_only_when_some_are_named():
    named = Step("p", "push", template="p_push", fallback=("sms", "email"),
                 fallback_templates=(("sms", "p_sms"), ("email", "p_email")))
    assert named.message_meta == {"template": "p_push", "fallback": ["sms", "email"],
                                  "fallback_templates": {"sms": "p_sms", "email": "p_email"}}
    assert list(named.message_meta["fallback_templates"]) == ["sms", "email"]
    assert named.message_meta["fallback_templates"] is not named.message_meta["fallback_templates"]
    assert Step("p", "push", fallback=("email",)).message_meta == {"template": "p", "fallback": ["email"]}
    assert Step("p", "push").message_meta == {"template": "p"}


# -- decisions --------------------------------------------------------------------------------

def _walk(journey: Journey, consent: dict[str, bool] | None = None) -> list[list]:
    """Entry, then each follow-up in turn: the decisions of ``decide`` and of ``decide_batch``."""
    ctx = make_context(T0, "product_view", consent=consent)
    out = []
    while ctx is not None:
        one = journey.decide(ctx, RNG)
        batch = journey.decide_batch([ctx], RNG)[0]
        assert one == batch
        out.append(one)
        fus = [fu for d in one for fu in d.follow_ups]
        ctx = ctx.with_now(fus[0].at, Trigger("journey_step", fus[0].at, fus[0].payload)) if fus else None
    return out


@pytest.mark.parametrize("value, meta", [("email", ["email"]), (["email", "sms"], ["email", "sms"]),
                                         ([], []), (..., None)])
def test_decisions_carry_meta_fallback_from_decide_and_decide_batch(value, meta):
    j = journey_from_dict(spec(value))
    (intro,), (nudge,) = _walk(j)
    assert intro.channel == "email" and "fallback" not in intro.meta
    assert nudge.channel == "push" and nudge.meta.get("fallback") == meta
    assert nudge.meta["template"] == "nudge" and nudge.meta["dedup"] is False
    if meta is not None:  # each decision has its own list
        assert nudge.meta["fallback"] is not _walk(j)[1][0].meta["fallback"]


@pytest.mark.parametrize("value, templates", [
    ({"email": "nudge_email"}, {"email": "nudge_email"}),
    ({"sms": "nudge_sms", "email": None}, {"sms": "nudge_sms"}),
    ([{"email": None}, "sms"], None),
    ("email", None),
])
def test_decisions_carry_fallback_templates_from_decide_and_decide_batch(value, templates):
    (intro,), (nudge,) = _walk(journey_from_dict(spec(value)))  # _walk: decide == decide_batch
    assert "fallback_templates" not in intro.meta
    assert nudge.meta.get("fallback_templates") == templates
    assert nudge.meta["template"] == "nudge"  # the push's own template is unchanged
    assert nudge.meta["fallback"] == list(journey_from_dict(spec(value)).steps[1].fallback)


def test_check_policy_accepts_journeys_with_fallback_templates():
    j = journey_from_dict(spec({"sms": "nudge_sms", "email": "nudge_email"}))
    assert check_policy(j) > 0


@pytest.mark.parametrize("meta", [
    {"fallback": ["email"], "fallback_templates": {"sms": "t"}},        # not in the chain
    {"fallback": ["email"], "fallback_templates": {"email": ""}},       # empty name
    {"fallback": ["email"], "fallback_templates": {"email": 3}},        # not a string
    {"fallback": ["email"], "fallback_templates": [("email", "t")]},    # not a dict
    {"fallback": [], "fallback_templates": {"email": "t"}},            # fallback forbidden
    {"fallback_templates": {"push": "t"}},                             # the message's own channel
    {"fallback_templates": {"fax": "t"}},
])
def test_check_policy_rejects_bad_fallback_templates(meta):
    class Falls:
        name = "falls@test"

        def decide(self, ctx, rng):
            return [Decision("push", "push", 1.0, self.name, meta=dict(meta))] if ctx.can_message("push") else []

    with pytest.raises(PolicyCheckError, match=r"meta\['fallback_templates'\] must be a dict channel -> "
                                               r"template name"):
        check_policy(Falls())


def test_check_policy_accepts_fallback_templates_for_the_sender_default_chain():
    """No ``meta["fallback"]``: the chain is the sender's ``--fallback``; any other channel."""
    class Named:
        name = "named@test"

        def decide(self, ctx, rng):
            meta = {"template": "p", "fallback_templates": {"email": "e", "sms": "s"}}
            return [Decision("push", "push", 1.0, self.name, meta=meta)] if ctx.can_message("push") else []

    assert check_policy(Named()) > 0


def test_no_fallback_on_decisions_that_do_not_message():
    j = journey_from_dict(spec("email"))
    (_, (nudge,)) = _walk(j, consent={"email": True, "sms": True, "push": False})
    assert nudge.channel == "none" and nudge.reason == "no_consent" and "fallback" not in nudge.meta


def test_builtin_journeys_batch_equals_decide_with_fallback():
    """Many contexts through the builtin browse journey (its push step has ``fallback``)."""
    j = load_journey("browse_abandon")
    ctxs = [make_context(T0 + timedelta(hours=i), "product_view", user_id=f"u{i}",
                         consent={"email": True, "sms": True, "push": i % 3 != 0}) for i in range(12)]
    steps = [c.with_now(fu.at, Trigger("journey_step", fu.at, fu.payload))
             for c in ctxs for d in j.decide(c, RNG) for fu in d.follow_ups]
    steps += [c.with_now(fu.at, Trigger("journey_step", fu.at, fu.payload))
              for c in steps for d in j.decide(c, RNG) for fu in d.follow_ups]
    assert [j.decide(c, RNG) for c in steps] == j.decide_batch(steps, RNG)
    pushes = [d for ds in j.decide_batch(steps, RNG) for d in ds if d.channel == "push"]
    assert pushes and all(d.meta["fallback"] == ["email"] for d in pushes)
    assert all(d.meta["fallback_templates"] == {"email": "browse_email"} for d in pushes)
    assert all(d.meta["template"] == "browse_push" for d in pushes)


# -- artifacts --------------------------------------------------------------------------------

def test_artifact_round_trip_keeps_fallback(tmp_path):
    doc = {"name": "two", "journeys": [spec("email"), spec([], name="fb_none")], "pressure": "default"}
    path = export_policy(doc, tmp_path / "p.json")
    params = read_artifact(path)["parameters"]
    assert [j["steps"][1]["fallback"] for j in params["journeys"]] == ["email", []]
    pol = load_artifact(path)
    fbs = {j.journey: j.steps[1].fallback for j in pol.policy.journeys}
    assert fbs == {"fb": ("email",), "fb_none": ()}
    # exported again from the artifact's own document: still there
    again = export_policy(params, tmp_path / "again.json")
    assert read_artifact(again)["parameters"]["journeys"] == params["journeys"]


def test_artifact_round_trip_keeps_fallback_templates_and_their_order(tmp_path):
    """The artifact's JSON sorts keys: a mapping ``{sms: …, email: …}`` is exported as a list
    of one-entry mappings, so the chain stays sms first."""
    mapping = {"sms": "nudge_sms", "email": "nudge_email"}
    doc = {"name": "ordered", "journeys": [spec(mapping), spec({"email": None}, name="fb_null")],
           "pressure": "default"}
    path = export_policy(doc, tmp_path / "p.json")
    params = read_artifact(path)["parameters"]
    assert params["journeys"][0]["steps"][1]["fallback"] == [{"sms": "nudge_sms"}, {"email": "nudge_email"}]
    assert params["journeys"][1]["steps"][1]["fallback"] == [{"email": None}]
    assert doc["journeys"][0]["steps"][1]["fallback"] == mapping  # the caller's document untouched
    loaded = {j.journey: j.steps[1] for j in load_artifact(path).policy.journeys}
    direct = journey_from_dict(spec(mapping)).steps[1]
    assert loaded["fb"] == direct
    assert loaded["fb"].fallback == ("sms", "email")
    assert loaded["fb"].fallback_templates == (("sms", "nudge_sms"), ("email", "nudge_email"))
    assert (loaded["fb_null"].fallback, loaded["fb_null"].fallback_templates) == (("email",), ())
    again = export_policy(params, tmp_path / "again.json")
    assert read_artifact(again)["parameters"]["journeys"] == params["journeys"]


def test_documents_without_a_fallback_mapping_export_unchanged():
    """``ordered_fallbacks`` hands back the very same document unless a step's fallback is a
    mapping: artifacts of such journeys are byte-identical to before."""
    for name in ("seed_journey", "welcome", "cart_abandon", "reactivation"):
        doc = policy_document(name)["journeys"][0]
        assert ordered_fallbacks(doc) is doc
    for value in ("email", ["email", "sms"], [], None, [{"email": "t"}]):
        doc = spec(value)
        assert ordered_fallbacks(doc) is doc
    for bad in (None, "x", {"steps": "x"}, {"name": "n"}):
        assert ordered_fallbacks(bad) is bad
    mixed = {"name": "m", "steps": [{"id": "a", "channel": "push", "fallback": {"sms": "s", "email": None}},
                                    {"id": "b", "channel": "push", "fallback": "email"}, "junk"]}
    out = ordered_fallbacks(mixed)
    assert out["steps"] == [{"id": "a", "channel": "push", "fallback": [{"sms": "s"}, {"email": None}]},
                            mixed["steps"][1], "junk"]
    assert mixed["steps"][0]["fallback"] == {"sms": "s", "email": None}


def test_an_older_artifact_without_templates_still_loads(tmp_path):
    """The built-in journey as version 2 exported it (``fallback: email``, no templates)."""
    doc = policy_document("browse_abandon+pressure")
    old = copy.deepcopy(doc)
    old["journeys"][0]["version"] = 2
    old["journeys"][0]["steps"][1]["fallback"] = "email"
    path = export_policy(old, tmp_path / "v2.json")
    assert read_artifact(path)["parameters"]["journeys"][0]["steps"][1]["fallback"] == "email"
    step = load_artifact(path).policy.step("browse_push")
    assert (step.fallback, step.fallback_templates) == (("email",), ())
    assert "fallback_templates" not in step.message_meta


def test_policy_document_and_cli_export_keep_builtin_fallback(tmp_path):
    doc = policy_document("browse_abandon+pressure")
    assert doc["journeys"][0]["steps"][1]["fallback"] == [{"email": "browse_email"}]
    out = tmp_path / "browse.json"
    r = CliRunner().invoke(main, ["policy", "export", "browse_abandon+pressure", "--out", str(out)])
    assert r.exit_code == 0, r.output
    body = json.loads(out.read_text())
    assert body["parameters"]["journeys"][0]["steps"][1]["fallback"] == [{"email": "browse_email"}]
    step = load_artifact(out).policy.step("browse_push")
    assert (step.fallback, step.fallback_templates) == (("email",), (("email", "browse_email"),))
    assert load_artifact(out).policy.name == "browse_abandon@3"


def test_policy_yaml_file_export_keeps_fallback(tmp_path):
    (tmp_path / "j.yaml").write_text(
        "name: j\ntriggers: [product_view]\nsteps:\n  - {id: p, channel: push, fallback: [email, sms]}\n")
    (tmp_path / "policy.yaml").write_text("journeys: [j.yaml]\npressure: default\n")
    out = tmp_path / "p.json"
    r = CliRunner().invoke(main, ["policy", "export", str(tmp_path / "policy.yaml"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert read_artifact(out)["parameters"]["journeys"][0]["steps"][0]["fallback"] == ["email", "sms"]


def test_policy_yaml_file_export_keeps_the_fallback_mapping_order(tmp_path):
    (tmp_path / "j.yaml").write_text(
        "name: j\ntriggers: [product_view]\nsteps:\n"
        "  - {id: p, channel: push, fallback: {sms: p_sms, email: p_email}}\n")
    (tmp_path / "policy.yaml").write_text("journeys: [j.yaml]\npressure: default\n")
    out = tmp_path / "p.json"
    r = CliRunner().invoke(main, ["policy", "export", str(tmp_path / "policy.yaml"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    step = load_artifact(out).policy.steps[0]
    assert step.fallback == ("sms", "email")
    assert step.fallback_templates == (("sms", "p_sms"), ("email", "p_email"))


def test_simulator_results_do_not_depend_on_fallback():
    """The simulator does not re-route bounces: the key changes no simulated row."""
    from omnisim.experiment import run_one

    doc = policy_document("journeys+pressure")
    without = copy.deepcopy(doc)
    for j in without["journeys"]:
        for s in j["steps"]:
            s.pop("fallback", None)
    with_all = copy.deepcopy(without)
    for j in with_all["journeys"]:
        for s in j["steps"]:
            if s["channel"] == "push":
                s["fallback"] = ["email", "sms"]
    bounced = 0
    for engine in ("fast", "simpy"):
        logs = [run_one("default", load_policy(d), seed=5, n_users=400, days=7, engine=engine).log
                for d in (without, doc, with_all)]
        bounced += int(((logs[0]["event"] == "bounced") & (logs[0]["channel"] == "push")).sum())
        assert logs[0].equals(logs[1]) and logs[0].equals(logs[2])
    assert bounced > 0  # bounced pushes exist, and are not re-routed


# -- the sender, end to end -------------------------------------------------------------------

@pytest.fixture
def gateway() -> Iterator[Gateway]:
    with Gateway(default=Reply(410, {"error": "device token unregistered"})) as gw:
        yield gw


def _providers(smtp_port: int, push_url: str):
    from omnisim.send.providers import ProviderSet

    ft = FakeTime()
    return ProviderSet.from_dict({"channels": {
        "email": [{"name": "mail", "type": "smtp", "host": "127.0.0.1", "port": smtp_port,
                   "from": "Shop <news@shop.example>", "timeout_s": 5, "max_attempts": 1}],
        "push": [{"name": "push-gw", "type": "http", "url": push_url, "max_attempts": 2,
                  "body": {"token": "{address}", "text": "{body}"}, "timeout_s": 5}]}},
        clock=ft.clock, sleep=ft.sleep, rng=random.Random(1))


def _service(url: str, artifact: Path, sender_default: dict[str, list[str]], clock=None):
    from omnisim.send.clock import ManualClock
    from omnisim.send.service import DecisionService, LoadedPolicy
    from omnisim.send.store import Store

    svc = DecisionService(Store.open(url), LoadedPolicy.from_file(artifact),
                          clock or ManualClock(SEND_T0), late_tolerance=None, fallback=sender_default)
    with svc.store.transaction():
        svc.store.upsert_user("u1", "UTC", {}, {"email": True, "push": True},
                              {"email": "u1@example.org", "push": "tok-u1"}, SEND_T0)
    return svc


def _push_journey(fallback: Any) -> dict[str, Any]:
    return {"journeys": [{"name": "push_offer", "triggers": ["product_view"],
                          "steps": [{"id": "offer_push", "channel": "push", "template": "offer_push",
                                     "fallback": fallback}]}],
            "pressure": "default"}


def _events(store) -> list[tuple]:
    return [(r["event"], r["channel"], r["message_id"]) for r in log_rows(store, "u1")
            if r["event"] in ("sent", "failed", "suppressed", "deferred")]


def test_journey_fallback_email_goes_out_over_smtp_when_push_gets_410(store_url, tmp_path, smtpd, gateway):
    """No sender default: the journey step's ``fallback: email`` alone re-sends the push."""
    from omnisim.send.worker import Worker

    box, port = smtpd
    svc = _service(store_url, export_policy(_push_journey("email"), tmp_path / "p.json"), {})
    svc.ingest([ev("k1", "u1", "product_view", at(0))])
    Worker(svc, _providers(port, gateway.url)).drain()
    assert len(gateway.requests) == 1
    assert _events(svc.store) == [("sent", "push", "u1-m1"), ("failed", "push", "u1-m1"),
                                  ("sent", "email", "u1-m2")]
    rows = log_rows(svc.store, "u1")
    failed = next(r for r in rows if r["event"] == "failed")
    assert failed["reason"].startswith("failed (permanent): push-gw: ") and "410" in failed["reason"]
    assert failed["reason"].endswith("; fallback to email")
    mail = next(r for r in rows if r["event"] == "sent" and r["channel"] == "email")
    assert mail["reason"] == "fallback for u1-m1 (push)"
    assert mail["campaign"] == "push_offer" and mail["policy"] == "push_offer@1"
    assert [m["to"] for m in box.messages] == [["u1@example.org"]]
    msg = email.message_from_bytes(box.messages[0]["raw"], policy=email.policy.default)
    assert msg["Message-ID"] == "<u1-m2@shop.example>"


def test_journey_fallback_empty_overrides_the_sender_default(store_url, tmp_path, smtpd, gateway):
    """``fallback: []`` on the step beats ``--fallback push=email``: no email."""
    from omnisim.send.service import parse_fallback
    from omnisim.send.worker import Worker

    box, port = smtpd
    svc = _service(store_url, export_policy(_push_journey([]), tmp_path / "p.json"),
                   parse_fallback(["push=email"]))
    svc.ingest([ev("k1", "u1", "product_view", at(0))])
    Worker(svc, _providers(port, gateway.url)).drain()
    assert _events(svc.store) == [("sent", "push", "u1-m1"), ("failed", "push", "u1-m1")]
    failed = next(r for r in log_rows(svc.store, "u1") if r["event"] == "failed")
    assert "fallback" not in failed["reason"]
    assert box.messages == []


def test_builtin_browse_abandon_push_falls_back_in_the_sender(store_url, tmp_path, smtpd, gateway):
    """The built-in journey as exported: the 2-hour push refused with 410 becomes an email
    with the email template (``browse_email``, not the push's ``browse_push``), and the
    journey's own next-morning email (for users without a push) does not follow."""
    from omnisim.send.clock import ManualClock
    from omnisim.send.worker import Worker

    box, port = smtpd
    clock = ManualClock(at(0))
    svc = _service(store_url, export_policy("browse_abandon+pressure", tmp_path / "b.json"), {}, clock)
    svc.ingest([ev("k1", "u1", "product_view", at(0))])
    worker = Worker(svc, _providers(port, gateway.url))
    for h in (2, 30):
        clock.set(at(h))
        worker.drain()
    assert _events(svc.store) == [("sent", "push", "u1-m1"), ("failed", "push", "u1-m1"),
                                  ("sent", "email", "u1-m2")]
    mail = [r for r in log_rows(svc.store, "u1") if r["event"] == "sent" and r["channel"] == "email"]
    assert [r["reason"] for r in mail] == ["fallback for u1-m1 (push)"]
    assert len(box.messages) == 1
    msg = email.message_from_bytes(box.messages[0]["raw"], policy=email.policy.default)
    assert msg["Subject"] == "browse_email"
    assert msg.get_content().strip() == "[browse_abandon] browse_email"
    push_body, mail_body = (json.loads(svc.store.one("SELECT body FROM outbox WHERE message_id = ?", (m,))[0])
                            for m in ("u1-m1", "u1-m2"))
    assert push_body["template"] == "browse_push" and mail_body["template"] == "browse_email"
    assert "template_channel" not in mail_body["meta"]
    assert json.loads(gateway.requests[0].body)["text"] == "[browse_abandon] browse_push"
