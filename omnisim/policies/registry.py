"""Find policies by name or load them from a policy file.

Names: the baselines (``blast``, ``email_only``, ``random_channel``), the built-in journeys
(``seed_journey``, ``welcome``, ``cart_abandon``, ``browse_abandon``, ``reactivation``) and
``journeys`` (all built-in journeys together), each optionally followed by modifiers:
``+pressure`` (the default pressure rules) and ``+holdout`` (a 5 % global holdout), e.g.
``seed_journey+pressure``.

A policy file (YAML)::

    name: my_policy            # optional label
    policy: blast              # a name as above, or:
    journeys: [seed_journey, my_journey.yaml, {name: inline, triggers: [...], steps: [...]}]
    pressure: default          # or a rules file path, or an inline mapping (see pressure.py)
    holdout: {share: 0.05, salt: my-salt}

Relative paths inside a policy file are relative to the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from omnisim.policies import _spec
from omnisim.policies.base import Policy
from omnisim.policies.baselines import Blast, EmailOnly, RandomChannel
from omnisim.policies.holdout import with_holdout
from omnisim.policies.journeys import JourneySet, builtin_journeys, journey_from_dict, load_journey
from omnisim.policies.pressure import default_rules, load_rules, rules_from_dict, with_pressure

BASELINES: Mapping[str, Callable[[], Policy]] = {
    "blast": Blast, "email_only": EmailOnly, "random_channel": RandomChannel,
}
MODIFIERS = ("pressure", "holdout")


class PolicyFileError(_spec.SpecError):
    """An unknown policy name or an invalid policy file; the message names the key."""


def list_policies() -> list[str]:
    """Built-in policy names (modifiers ``+pressure`` / ``+holdout`` apply to each)."""
    return [*BASELINES, *builtin_journeys(), "journeys"]


def get_policy(name_or_path: str | Path) -> Policy:
    """A policy from a built-in name (with ``+pressure`` / ``+holdout``) or a YAML file."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or Path(text).is_file():
        return load_policy(text)
    base, *mods = text.split("+")
    policy = _base(base, "policy")
    for mod in mods:
        if mod == "pressure":
            policy = with_pressure(policy, default_rules())
        elif mod == "holdout":
            policy = with_holdout(policy)
        else:
            raise PolicyFileError(f"policy {text!r}: unknown modifier {mod!r} "
                                  f"(expected one of {', '.join(MODIFIERS)})")
    return policy


def _base(name: str, where: str) -> Policy:
    if name in BASELINES:
        return BASELINES[name]()
    if name in builtin_journeys():
        return load_journey(name)
    if name == "journeys":
        return JourneySet(tuple(load_journey(n) for n in builtin_journeys()))
    raise PolicyFileError(f"{where}: unknown policy {name!r} (expected one of "
                          f"{', '.join(list_policies())}, or a .yaml file)")


def load_policy(source: str | Path | Mapping[str, Any]) -> Policy:
    """A policy from a policy file (see the module docstring) or an equivalent mapping."""
    E, g = PolicyFileError, _spec.get
    data, label = _spec.load_yaml(source, E)
    where = f"{label}:" if label else ""
    root = Path(label).parent if label else Path(".")
    spec = _spec.check_keys(data, {"name", "policy", "journeys", "pressure", "holdout"}, where, E)
    if ("policy" in spec) == ("journeys" in spec):
        raise E(f"{_spec.join(where, 'policy')}: set exactly one of policy (a name) or journeys (a list)")
    if "policy" in spec:
        name = g(spec, "policy", str, where, E)
        policy = get_policy(root / name if name.endswith((".yaml", ".yml")) else name)
    else:
        items = _spec.get_list(spec, "journeys", where, E)
        journeys = tuple(_journey(item, root, _spec.join(where, f"journeys[{i}]"))
                         for i, item in enumerate(items))
        if len(journeys) == 1 and "name" not in spec:
            policy = journeys[0]  # logs under the journey's own name, as get_policy(name) does
        else:
            policy = JourneySet(journeys, label=g(spec, "name", str, where, E, default="journeys"))
    if "holdout" in spec:
        p = _spec.join(where, "holdout")
        h = _spec.check_keys(spec["holdout"], {"share", "salt"}, p, E)
        share = g(h, "share", float, p, E, minimum=0.0)
        if share > 1:
            raise _spec.fail(E, _spec.join(p, "share"), "a number in [0, 1]", share)
        policy = with_holdout(policy, share, g(h, "salt", str, p, E, default="omnisim-holdout"))
    if "pressure" in spec:
        policy = with_pressure(policy, _rules(spec["pressure"], root, _spec.join(where, "pressure")))
    return policy


def _journey(item: Any, root: Path, path: str) -> Policy:
    if isinstance(item, Mapping):
        return journey_from_dict(item, path)
    if not isinstance(item, str):
        raise _spec.fail(PolicyFileError, path, "a journey name, a .yaml path or a mapping", item)
    if item in builtin_journeys():
        return load_journey(item)
    if item.endswith((".yaml", ".yml")):
        return load_journey(root / item)
    raise PolicyFileError(f"{path}: unknown journey {item!r} (expected one of "
                          f"{', '.join(builtin_journeys())}, or a .yaml file)")


def _rules(item: Any, root: Path, path: str) -> Any:
    if item == "default":
        return default_rules()
    if isinstance(item, str):
        return load_rules(root / item)
    if isinstance(item, Mapping):
        return rules_from_dict(item, path)
    raise _spec.fail(PolicyFileError, path, "'default', a rules file path or a mapping", item)
