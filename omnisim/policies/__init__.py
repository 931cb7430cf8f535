"""The decision core: pure policies shared by the simulator and the sender."""

from omnisim.policies.base import (
    CHANNELS, NO_ACTION, Context, Decision, FollowUp, HistoryEvent, Policy, Trigger,
    local_hour, next_local_hour, no_message,
)
from omnisim.policies.baselines import Blast, EmailOnly, RandomChannel
from omnisim.policies.check import PolicyCheckError, check_policy, make_context, sample_contexts
from omnisim.policies.holdout import HoldoutPolicy, in_holdout, with_holdout
from omnisim.policies.journeys import (
    Condition, Journey, JourneyError, JourneySet, Step, builtin_journeys, journey_from_dict,
    load_journey,
)
from omnisim.policies.pressure import (
    Admission, Cap, Escalation, Pending, PressuredPolicy, PressureRules, PressureRulesError,
    QuietHours, count_violations, default_rules, load_rules, with_pressure,
)
from omnisim.policies.registry import PolicyFileError, get_policy, list_policies, load_policy

__all__ = [
    "CHANNELS", "NO_ACTION", "Context", "Decision", "FollowUp", "HistoryEvent", "Policy",
    "Trigger", "local_hour", "next_local_hour", "no_message",
    "Blast", "EmailOnly", "RandomChannel",
    "PolicyCheckError", "check_policy", "make_context", "sample_contexts",
    "HoldoutPolicy", "in_holdout", "with_holdout",
    "Condition", "Journey", "JourneyError", "JourneySet", "Step", "builtin_journeys",
    "journey_from_dict", "load_journey",
    "Admission", "Cap", "Escalation", "Pending", "PressuredPolicy", "PressureRules",
    "PressureRulesError", "QuietHours", "count_violations", "default_rules", "load_rules",
    "with_pressure",
    "PolicyFileError", "get_policy", "list_policies", "load_policy",
]
