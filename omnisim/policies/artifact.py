"""Policy artifacts: a tuned policy as data, for the production sender.

An artifact is one JSON file::

    {"format": "omnisim.policy", "format_version": 1, "kind": "rules",
     "name": "seed_journey@1+pressure@1", "created_at": "...Z", "omnisim_version": "...",
     "parameters": {...a self-contained policy document...},
     "metrics": {...at export time...}, "training_data": null,
     "sha256": "<hex digest of the canonical JSON of everything above>"}

``parameters`` of kind ``rules`` is a policy document in the policy-file format of
:mod:`omnisim.policies.registry` with every reference inlined (built-in journeys, rule files,
modifiers), so the artifact does not depend on files beside it. Loading verifies the format
version, the checksum and the kind before building anything, and never unpickles: artifacts
are data, never code.
"""

from __future__ import annotations

import copy
import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import yaml

from omnisim.errors import OmnisimError
from omnisim.policies.base import Policy

FORMAT = "omnisim.policy"
FORMAT_VERSION = 1
KINDS = ("rules",)


class ArtifactError(OmnisimError, ValueError):
    """An artifact that cannot be written or trusted; the message says which and why."""


# ------------------------------------------------------------------ policy documents
def _yaml_file(path: Path, what: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ArtifactError(f"{path}: cannot read {what}: {exc}") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: expected a mapping ({what}), got {type(data).__name__}")
    return data


def _journey_doc(item: Any, root: Path) -> dict[str, Any]:
    from omnisim.policies.journeys import BUILTIN_DIR, builtin_journeys

    if isinstance(item, Mapping):
        return dict(item)
    if item in builtin_journeys():
        return _yaml_file(BUILTIN_DIR / f"{item}.yaml", "a journey")
    return _yaml_file(root / item, "a journey")


def _rules_doc(item: Any, root: Path) -> dict[str, Any]:
    from omnisim.policies.pressure import DEFAULT_RULES_PATH

    if isinstance(item, Mapping):
        return dict(item)
    if item == "default":
        return _yaml_file(DEFAULT_RULES_PATH, "pressure rules")
    return _yaml_file(root / item, "pressure rules")


def policy_document(name_or_path: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """A self-contained policy document for a built-in name (with ``+pressure`` /
    ``+holdout``), a policy YAML file, or a policy mapping: every reference inlined."""
    from omnisim.policies.holdout import with_holdout
    from omnisim.policies.journeys import builtin_journeys
    from omnisim.policies.registry import BASELINES

    if isinstance(name_or_path, Mapping):
        data, root = dict(name_or_path), Path(".")
    elif str(name_or_path).endswith((".yaml", ".yml")) or Path(str(name_or_path)).is_file():
        path = Path(name_or_path)
        data, root = _yaml_file(path, "a policy file"), path.parent
    else:
        base, *mods = str(name_or_path).split("+")
        data: dict[str, Any] = {}
        if base in BASELINES:
            data["policy"] = base
        elif base in builtin_journeys():
            data["journeys"] = [base]
        elif base == "journeys":
            data["journeys"] = list(builtin_journeys())
        else:
            from omnisim.policies.registry import get_policy

            get_policy(base)  # raises the registry's own "unknown policy" error
        defaults = with_holdout.__defaults__ or (0.05, "omnisim-holdout")
        for mod in mods:
            if mod == "pressure":
                data["pressure"] = "default"
            elif mod == "holdout":
                data["holdout"] = {"share": defaults[0], "salt": defaults[1]}
        root = Path(".")
    doc = copy.deepcopy(data)
    if "journeys" in doc:
        doc["journeys"] = [_journey_doc(j, root) for j in doc["journeys"]]
    if "pressure" in doc:
        doc["pressure"] = _rules_doc(doc["pressure"], root)
    if isinstance(doc.get("policy"), str) and "+" in doc["policy"] or str(doc.get("policy", "")).endswith((".yaml", ".yml")):
        inner_ref = doc.pop("policy")
        inner = policy_document(root / inner_ref if inner_ref.endswith((".yaml", ".yml")) else inner_ref)
        inner.pop("name", None)
        doc = {**inner, **doc}
    return doc


# ------------------------------------------------------------------ artifact files
def _canonical(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


def _clean_metrics(metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    out = {}
    for k, v in (metrics or {}).items():
        v = float(v) if hasattr(v, "__float__") and not isinstance(v, (bool, int)) else v
        out[str(k)] = None if isinstance(v, float) and v != v else v
    return out


def export_policy(policy: str | Path | Mapping[str, Any], path: str | Path, *,
                  metrics: Mapping[str, Any] | None = None,
                  training_data: Mapping[str, Any] | None = None) -> Path:
    """Write ``policy`` (a name, a policy file or a policy mapping) as an artifact at ``path``.

    The policy is built once from the document to check it and to record its logged name.
    Returns the path written.
    """
    from omnisim.policies.registry import load_policy

    document = policy_document(policy)
    built = load_policy(document)
    body = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": "rules",
        "name": built.name,
        "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "omnisim_version": _version(),
        "parameters": document,
        "metrics": _clean_metrics(metrics),
        "training_data": dict(training_data) if training_data else None,
    }
    body["sha256"] = hashlib.sha256(_canonical(body)).hexdigest()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    return path


def read_artifact(path: str | Path) -> dict[str, Any]:
    """The verified manifest of an artifact: format, version, kind and checksum checked."""
    path = Path(path)
    try:
        body = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no such artifact file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: not a policy artifact (expected JSON): {exc}") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not a policy artifact (expected \"format\": \"{FORMAT}\")")
    if body.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{path}: unknown format_version {body.get('format_version')!r}; this omnisim "
                            f"reads version {FORMAT_VERSION} (upgrade omnisim or re-export the policy)")
    if body.get("kind") not in KINDS:
        raise ArtifactError(f"{path}: unknown policy kind {body.get('kind')!r}; expected one of {', '.join(KINDS)}")
    claimed = body.pop("sha256", None)
    actual = hashlib.sha256(_canonical(body)).hexdigest()
    if claimed != actual:
        raise ArtifactError(f"{path}: checksum mismatch (file says {claimed}, contents hash to {actual}); "
                            "the artifact was modified or corrupted — re-export it")
    body["sha256"] = claimed
    return body


def load_artifact(path: str | Path) -> Policy:
    """The policy in a verified artifact, built by the same code as a policy file."""
    from omnisim.policies.registry import load_policy

    manifest = read_artifact(path)
    policy = load_policy(manifest["parameters"])
    if policy.name != manifest["name"]:
        raise ArtifactError(f"{path}: the parameters build policy {policy.name!r}, "
                            f"but the artifact was exported as {manifest['name']!r}")
    return policy


def _version() -> str:
    from omnisim import __version__

    return __version__
