"""Review fixes in the scenario loader and the population sampler (the refused values are
cases of ``tests/test_scenario.py``'s ``BAD``): a bounce + fail sum of exactly 1 stays valid;
an existing user's last visit never lies before their sign-up.
"""

from __future__ import annotations

import numpy as np

from omnisim.model.population import PopulationSpec, SegmentSpec, sample_population
from omnisim.model.scenario import Scenario


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
