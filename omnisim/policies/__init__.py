"""The decision core: pure policies shared by the simulator and the sender."""

from omnisim.policies.base import (
    CHANNELS, NO_ACTION, Context, Decision, FollowUp, HistoryEvent, Policy, Trigger,
    local_hour, next_local_hour, no_message,
)
from omnisim.policies.bandits import LinUCBChannel, ThompsonChannel, message_rewards
from omnisim.policies.artifact import (
    ArtifactError, export_policy, fingerprint, load_artifact, policy_kinds, read_artifact, train_policy,
)
from omnisim.policies.baselines import Blast, EmailOnly, RandomChannel
from omnisim.policies.budget import BudgetPolicy
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
from omnisim.policies.ratio import EngagementRatioChannel
from omnisim.policies.ope_log import FixedAction, OPELogError, evaluate_policy, log_feedback, train_uplift
from omnisim.policies.registry import PolicyFileError, get_policy, list_policies, load_policy
from omnisim.policies.sendtime import SendTimeOptimizer, SendTimePolicy

__all__ = [
    "CHANNELS", "NO_ACTION", "Context", "Decision", "FollowUp", "HistoryEvent", "Policy",
    "Trigger", "local_hour", "next_local_hour", "no_message",
    "ArtifactError", "export_policy", "fingerprint", "load_artifact", "policy_kinds", "read_artifact",
    "train_policy",
    "Blast", "EmailOnly", "RandomChannel",
    "PolicyCheckError", "check_policy", "make_context", "sample_contexts",
    "HoldoutPolicy", "in_holdout", "with_holdout",
    "Condition", "Journey", "JourneyError", "JourneySet", "Step", "builtin_journeys",
    "journey_from_dict", "load_journey",
    "Admission", "Cap", "Escalation", "Pending", "PressuredPolicy", "PressureRules",
    "PressureRulesError", "QuietHours", "count_violations", "default_rules", "load_rules",
    "with_pressure",
    "PolicyFileError", "get_policy", "list_policies", "load_policy",
    "SendTimeOptimizer", "SendTimePolicy", "ThompsonChannel", "LinUCBChannel", "message_rewards",
    "EngagementRatioChannel", "BudgetPolicy",
]
