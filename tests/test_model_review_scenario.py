"""Review fixes in the scenario loader and the population sampler.

Each test fails on the code before the fix: infinite numbers and bounce + fail > 1 were
accepted; an out-of-range activity value was reported as "got 24 values"; an existing
user's last visit could lie before their sign-up.
"""

from __future__ import annotations

import numpy as np
import pytest

from omnisim.model.population import PopulationSpec, SegmentSpec, sample_population
from omnisim.model.scenario import Scenario, ScenarioError, load_scenario

BAD = [
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
def test_nonsense_values_are_rejected_naming_key_and_value(tmp_path, text, message):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ScenarioError, match=message) as info:
        load_scenario(f)
    assert str(f) in str(info.value)


def test_bounce_plus_fail_of_exactly_one_is_valid():
    sc = Scenario().replace(channels={"sms": {"bounce_prob": 0.75, "fail_prob": 0.25}})
    assert sc.channels.sms.bounce_prob + sc.channels.sms.fail_prob == 1.0


def test_last_visit_is_never_before_signup():
    """Existing users: time since max(last visit, sign-up). With a short tenure and a low
    visit rate, the exponential draw often exceeds the tenure: capped at the sign-up."""
    spec = PopulationSpec(new_user_share=0.0, tenure_max_days=5.0,
                          segments=[SegmentSpec(visit_rate_per_day=0.05)])
    u = sample_population(spec, 2000, np.random.default_rng(0))
    tenure_days = -u["signup_offset_h"].to_numpy() / 24.0
    assert (u["last_visit_days_ago"].to_numpy() <= tenure_days + 1e-12).all()
    # the uncapped draws are exponential with mean 1 / rate: most exceed a <= 5-day tenure
    assert np.isclose(u["last_visit_days_ago"].to_numpy(), tenure_days).sum() > 1000
