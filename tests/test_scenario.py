"""Scenarios: the built-in default, overrides, and clear errors for bad files."""

from datetime import datetime, timezone

import pytest

from omnisim.model.scenario import Scenario, ScenarioError, builtin_scenarios, load_scenario


def test_default_scenario_loads():
    sc = load_scenario("default")
    assert "default" in builtin_scenarios()
    assert sc.name == "default" and sc.n_users == 10000 and sc.days == 30
    assert sc.start == datetime(2026, 1, 5, tzinfo=timezone.utc)
    assert [s.name for s in sc.population.segments] == ["loyal", "casual", "bargain"]
    assert sc.channels.sms.open_prob == 0.95
    assert sc.enabled_channels == ("email", "sms", "push")


def test_replace_merges_nested_groups():
    sc = load_scenario("default")
    s2 = sc.replace(n_users=200, days=7, fatigue={"enabled": False},
                    channels={"sms": {"enabled": False}})
    assert (s2.n_users, s2.days, s2.fatigue.enabled) == (200, 7.0, False)
    assert s2.fatigue.half_life_h == sc.fatigue.half_life_h  # merged, not reset
    assert s2.channels.sms.open_prob == sc.channels.sms.open_prob
    assert s2.enabled_channels == ("email", "push")
    assert sc.n_users == 10000  # the original is unchanged
    with pytest.raises(ScenarioError, match=r"fatigue\.half_life_h: expected a number > 0"):
        sc.replace(fatigue={"half_life_h": 0})


def test_partial_file_keeps_defaults(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("name: small\nn_users: 50\nchannels:\n  email:\n    open_prob: 0.3\n")
    sc = load_scenario(f)
    assert sc.n_users == 50 and sc.channels.email.open_prob == 0.3
    assert sc.channels.email.click_prob == Scenario().channels.email.click_prob


BAD = [
    ("channels:\n  sms:\n    open_prob: high\n",
     r"channels\.sms\.open_prob: expected a number in \[0, 1\], got 'high'"),
    ("channels:\n  sms:\n    open_prob: 1.5\n",
     r"channels\.sms\.open_prob: expected a number in \[0, 1\], got 1\.5"),
    ("channels:\n  fax: {}\n", r"channels\.fax: unknown key; expected one of email, push, sms"),
    ("n_users: many\n", r"n_users: expected an integer >= 1, got 'many'"),
    ("n_users: 2.5\n", r"n_users: expected an integer >= 1, got 2\.5"),
    ("days: -1\n", r"days: expected a number > 0, got -1"),
    ("seed: true\n", r"seed: expected an integer >= 0, got True"),
    ("start: yesterday\n", r"start: expected UTC date-time"),
    ("fatigue:\n  enabled: 'no'\n", r"fatigue\.enabled: expected true or false, got 'no'"),
    ("fatigue:\n  weights: {email: 1, fax: 2}\n",
     r"fatigue\.weights\.fax: unknown key; expected one of email, sms, push"),
    ("fatigue:\n  weights: {email: -1}\n", r"fatigue\.weights\.email: expected a number >= 0"),
    ("fatigue: 3\n", r"fatigue: expected a mapping of FatigueParams keys, got 3"),
    ("behaviour:\n  view_prob: 0.5\n", r"behaviour: unknown key; expected one of .*behavior"),
    ("population:\n  segments:\n    - name: a\n      weight: 0\n",
     r"population\.segments\[0\]\.weight: expected a number > 0, got 0"),
    ("population:\n  segments:\n    - name: a\n      timezones: {Mars/Olympus: 1}\n",
     r"population\.segments\[0\]\.timezones\.Mars/Olympus: not an IANA timezone"),
    ("population:\n  segments:\n    - name: a\n      activity: sleepy\n",
     r"population\.segments\[0\]\.activity: unknown profile 'sleepy'"),
    ("population:\n  segments:\n    - name: a\n      activity: [0.5, 0.5]\n",
     r"population\.segments\[0\]\.activity: expected 24 probabilities"),
    ("population:\n  segments:\n    - name: a\n      reach: {email: yes}\n",
     r"population\.segments\[0\]\.reach\.email: expected a number in \[0, 1\], got True"),
    ("population:\n  segments: []\n", r"population\.segments: expected at least one segment"),
    ("population:\n  segments: {name: a}\n",
     r"population\.segments: expected a list of SegmentSpecs"),
    ("- 1\n- 2\n", r"expected a mapping of scenario keys at the top level, got list"),
    ("channels: {email: {open_prob: 0.2\n", r"not valid YAML"),
    # review fixes: infinite numbers, bounce + fail > 1, the bad activity hour named
    ("days: .inf\n", r"days: expected a finite number > 0, got inf"),
    ("fatigue:\n  half_life_h: .inf\n", r"fatigue\.half_life_h: expected a finite number > 0, got inf"),
    ("population:\n  segments:\n    - name: a\n      visit_rate_per_day: .inf\n",
     r"population\.segments\[0\]\.visit_rate_per_day: expected a finite number >= 0, got inf"),
    ("population:\n  segments:\n    - name: a\n      timezones: {UTC: .inf}\n",
     r"population\.segments\[0\]\.timezones\.UTC: expected a finite number >= 0, got inf"),
    ("channels:\n  email: {bounce_prob: 0.8, fail_prob: 0.5}\n",
     r"channels\.email: bounce_prob \+ fail_prob = 0\.8 \+ 0\.5 = 1\.3; expected at most 1"),
    ("population:\n  segments:\n    - name: a\n      activity: [" + ", ".join(["0.5"] * 23) + ", 1.5]\n",
     r"population\.segments\[0\]\.activity\[23\]: expected a probability in \[0, 1\] "
     r"\(local hour 23\), got 1\.5"),
]


@pytest.mark.parametrize("text, message", BAD, ids=[m[:40] for _, m in BAD])
def test_bad_scenario_files(tmp_path, text, message):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ScenarioError, match=message) as info:
        load_scenario(f)
    assert str(f) in str(info.value)  # names the file


def test_unknown_name_and_missing_file(tmp_path):
    with pytest.raises(ScenarioError, match=r"unknown scenario 'nope'; built-in scenarios: .*default"):
        load_scenario("nope")
    with pytest.raises(ScenarioError, match="file not found"):
        load_scenario(tmp_path / "missing.yaml")


def test_empty_file_is_all_defaults(tmp_path):
    f = tmp_path / "empty.yaml"
    f.write_text("")
    assert load_scenario(f) == Scenario()
