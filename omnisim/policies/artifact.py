"""Policy artifacts: a tuned policy as data, for the production sender.

An artifact is **one JSON file** (its path ends in ``.json``); the payloads of kinds with
learned numbers are embedded in it, base64-encoded, under ``files``::

    {"format": "omnisim.policy", "format_version": 1, "kind": "uplift",
     "name": "uplift@1", "created_at": "...Z", "omnisim_version": "...",
     "parameters": {...JSON...}, "metrics": {...at export time...},
     "training_data": {"sha256", "rows", "start", "end"} or null,
     "files": {"model": {"type": "skops", "sha256": "...", "bytes": 1234, "base64": "..."}},
     "sha256": "<hex digest of the canonical JSON of everything above>"}

Payload types: ``skops`` (scikit-learn models, for the uplift kind) and ``npz`` (numpy
arrays of the learned kinds, read with ``allow_pickle=False``). One file travels whole: the
sender can receive it over HTTP, ``omnisim simulate --policy`` reads it like a rules artifact.

The artifact's checksum covers the payloads (and their own checksums), so one SHA-256
vouches for all contents. Kinds (:func:`policy_kinds`):

``rules``
    ``parameters`` is a policy document in the policy-file format of
    :mod:`omnisim.policies.registry` with every reference inlined (built-in journeys, rule
    files, modifiers); no payload.
``uplift``
    an :class:`~omnisim.policies.uplift.UpliftPolicy`: its parameters, threshold and trait
    encoding in JSON, the fitted uplift learner as a skops payload, loaded with an explicit list
    of trusted types (:data:`SKOPS_TRUSTED`).
learned kinds (``sendtime``, ``bandit_ts``, ``bandit_linucb``, ...)
    any class in :data:`LEARNED_MODULES` with a ``kind`` class attribute, ``decide``,
    ``to_artifact() -> (params, arrays)`` and ``from_artifact(params, arrays)``; found lazily
    (a module that does not exist simply adds no kind).

Loading verifies the format version, the artifact's checksum, the kind and every payload's
checksum before building anything, and never unpickles: artifacts are data, never code.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import importlib
import inspect
import io
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import yaml

from omnisim.errors import OmnisimError
from omnisim.policies.base import Policy

__all__ = [
    "ArtifactError", "FORMAT", "FORMAT_VERSION", "LEARNED_MODULES", "SKOPS_TRUSTED", "PolicyKind",
    "export_policy", "fingerprint", "load_artifact", "policy_document", "policy_kinds", "read_artifact",
    "register_kind", "train_policy",
]

FORMAT = "omnisim.policy"
FORMAT_VERSION = 1
#: Modules whose learned policy classes become kinds, when they exist.
LEARNED_MODULES = ("omnisim.policies.sendtime", "omnisim.policies.bandits", "omnisim.policies.ratio",
                   "omnisim.policies.budget")
#: Short kind names accepted by :func:`train_policy` and ``omnisim policy train --kind``.
KIND_ALIASES = {"bandit": "bandit_ts"}
#: Types a skops payload may hold beyond skops' own trusted scikit-learn/numpy types: the
#: uplift learners and the tree structures of scikit-learn's tree ensembles.
SKOPS_TRUSTED: tuple[str, ...] = (
    "omnisim.policies.uplift.TLearner", "omnisim.policies.uplift.XLearner",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor", "sklearn.tree._tree.Tree",
)


class ArtifactError(OmnisimError, ValueError):
    """An artifact that cannot be written or trusted; the message says which and why."""


# ------------------------------------------------------------------ policy documents
def _yaml_file(path: Path, what: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ArtifactError(f"{path}: cannot read {what}: not a text file (not UTF-8: {exc.reason} "
                            f"at byte {exc.start}); expected YAML") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ArtifactError(f"{path}: cannot read {what}: {exc}") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: expected a mapping ({what}), got {type(data).__name__}")
    return data


def _journey_doc(item: Any, root: Path) -> dict[str, Any]:
    """A journey inlined: mapping-form step fallbacks become order-keeping lists
    (:func:`~omnisim.policies.journeys.ordered_fallbacks`; the artifact's JSON sorts keys)."""
    from omnisim.policies.journeys import BUILTIN_DIR, builtin_journeys, ordered_fallbacks

    if isinstance(item, Mapping):
        return ordered_fallbacks(dict(item))
    if item in builtin_journeys():
        return ordered_fallbacks(_yaml_file(BUILTIN_DIR / f"{item}.yaml", "a journey"))
    return ordered_fallbacks(_yaml_file(root / item, "a journey"))


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


# ------------------------------------------------------------------ kinds
@dataclass(frozen=True)
class PolicyKind:
    """How one kind of policy becomes data and back.

    ``dump(policy) -> (parameters, arrays, files)``: JSON parameters, numpy arrays (embedded
    as the ``arrays`` npz payload) and other payloads as ``{role: (type, bytes)}``.
    ``load(parameters, arrays, files) -> Policy`` with ``files`` as ``{role: bytes}``.
    ``cls`` is the policy class (``None`` for ``rules``), used to pick the kind on export.
    """

    name: str
    cls: type | None
    dump: Callable[[Any], tuple[dict[str, Any], dict[str, np.ndarray], dict[str, tuple[str, bytes]]]]
    load: Callable[[Mapping[str, Any], Mapping[str, np.ndarray], Mapping[str, bytes]], Policy]


_KINDS: dict[str, PolicyKind] = {}
_BROKEN: dict[str, str] = {}  # learned module -> why it could not be imported


def register_kind(kind: PolicyKind) -> None:
    """Add (or replace) a kind; :func:`policy_kinds` then knows it."""
    _KINDS[kind.name] = kind


def _learned_kind(cls: type) -> PolicyKind:
    def dump(policy: Any) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, tuple[str, bytes]]]:
        params, arrays = policy.to_artifact()
        return dict(params), dict(arrays), {}

    def load(params: Mapping[str, Any], arrays: Mapping[str, np.ndarray], files: Mapping[str, bytes]) -> Policy:
        return cls.from_artifact(dict(params), dict(arrays))

    return PolicyKind(cls.kind, cls, dump, load)


def _discover() -> None:
    for module_name in LEARNED_MODULES:
        if module_name in _BROKEN or any(k.cls is not None and k.cls.__module__ == module_name
                                         for k in _KINDS.values()):
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # not written yet: its kinds are simply not available
            _BROKEN[module_name] = f"{type(exc).__name__}: {exc}"
            continue
        except Exception as exc:  # a module that fails to import must not break the others
            _BROKEN[module_name] = f"{type(exc).__name__}: {exc}"
            continue
        for obj in vars(module).values():
            if (inspect.isclass(obj) and obj.__module__ == module_name and not obj.__name__.startswith("_")
                    and isinstance(getattr(obj, "kind", None), str) and callable(getattr(obj, "decide", None))
                    and callable(getattr(obj, "to_artifact", None)) and callable(getattr(obj, "from_artifact", None))):
                _KINDS.setdefault(obj.kind, _learned_kind(obj))


def policy_kinds() -> dict[str, PolicyKind]:
    """Every kind available now: ``rules``, ``uplift`` and the learned kinds that exist."""
    _builtin_kinds()
    _discover()
    return dict(_KINDS)


def _kind(name: str, where: str) -> PolicyKind:
    kinds = policy_kinds()
    name = KIND_ALIASES.get(name, name)
    if name not in kinds:
        broken = "".join(f"; {m} failed to import ({why})" for m, why in _BROKEN.items())
        raise ArtifactError(f"{where}unknown policy kind {name!r}; expected one of {', '.join(sorted(kinds))}{broken}")
    return kinds[name]


def _kind_of(policy: Any) -> PolicyKind:
    for kind in policy_kinds().values():
        if kind.cls is not None and type(policy) is kind.cls:
            return kind
    inner = getattr(policy, "policy", None)
    hint = (f"; it wraps {getattr(inner, 'name', inner)!r}: export the wrapped policy, or write the "
            f"wrapper as a policy file" if inner is not None else "")
    raise ArtifactError(f"cannot export policy object {getattr(policy, 'name', policy)!r} of type "
                        f"{type(policy).__name__}: no artifact kind for it (kinds: "
                        f"{', '.join(sorted(policy_kinds()))}); export rule policies by name or policy file{hint}")


# ---- rules
def _rules_load(params: Mapping[str, Any], arrays: Mapping[str, np.ndarray], files: Mapping[str, bytes]) -> Policy:
    from omnisim.policies.registry import load_policy

    return load_policy(dict(params))


def _rules_dump(policy: Any) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, tuple[str, bytes]]]:
    return policy_document(policy), {}, {}


# ---- uplift
def _skops() -> Any:
    try:
        import skops.io as sio
    except ImportError:  # pragma: no cover - skops is a dependency
        raise ArtifactError("the uplift kind stores scikit-learn models with skops, which is not installed; "
                            "run `pip install skops`") from None
    return sio


def _uplift_dump(policy: Any) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, tuple[str, bytes]]]:
    if not hasattr(policy, "model_"):
        raise ArtifactError(f"uplift policy {policy.name!r} is not fitted; call fit() before exporting it")
    enc = policy.encoder_
    params = {k: v for k, v in policy.get_params(deep=False).items() if k != "model"}
    params = json.loads(json.dumps(params, default=list))  # tuples -> lists
    params.update(threshold_=float(policy.threshold_),
                  encoder_={"columns_": list(enc.columns_), "categories_": dict(enc.categories_)})
    return params, {}, {"model": ("skops", _skops().dumps(policy.model_))}


def _uplift_load(params: Mapping[str, Any], arrays: Mapping[str, np.ndarray], files: Mapping[str, bytes]) -> Policy:
    from omnisim.policies.uplift import TraitEncoder, UpliftPolicy

    sio = _skops()
    if "model" not in files:
        raise ArtifactError("uplift artifact has no embedded 'model' payload")
    untrusted = sorted(set(sio.get_untrusted_types(data=files["model"])) - set(SKOPS_TRUSTED))
    if untrusted:
        raise ArtifactError(f"the model file holds untrusted type(s) {', '.join(untrusted)}; omnisim loads only "
                            f"scikit-learn estimators and {', '.join(SKOPS_TRUSTED)}; refusing to load it")
    model = sio.loads(files["model"], trusted=list(SKOPS_TRUSTED))
    p = {k: v for k, v in params.items() if not k.endswith("_")}
    policy = UpliftPolicy(model=model, **p)
    enc = TraitEncoder(params["encoder_"]["columns_"])
    enc.columns_ = list(params["encoder_"]["columns_"])
    enc.categories_ = {k: list(v) for k, v in params["encoder_"]["categories_"].items()}
    enc.feature_names_out_ = np.array(
        [n for c in enc.columns_ for n in ([f"{c}={v}" for v in enc.categories_[c]] if c in enc.categories_ else [c])],
        dtype=object)
    policy.encoder_, policy.model_, policy.threshold_ = enc, model, float(params["threshold_"])
    return policy


def _builtin_kinds() -> None:
    """Register ``rules`` and ``uplift`` (on first use: importing scikit-learn is slow)."""
    from omnisim.policies.uplift import UpliftPolicy

    _KINDS.setdefault("rules", PolicyKind("rules", None, _rules_dump, _rules_load))
    _KINDS.setdefault("uplift", PolicyKind("uplift", UpliftPolicy, _uplift_dump, _uplift_load))


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


def fingerprint(log: pd.DataFrame) -> dict[str, Any]:
    """The training data's fingerprint: ``sha256`` of the log's canonical bytes, ``rows``,
    ``start`` / ``end`` (ISO UTC).

    Canonical bytes: CSV (UTF-8, ``\\n``) of the log in its row order, columns sorted by name,
    timestamps as ISO UTC with microseconds, floats with 17 significant digits, nulls empty.
    """
    cols = sorted(map(str, log.columns))
    frame = log[cols].copy()
    for c in cols:
        if pd.api.types.is_datetime64_any_dtype(frame[c]):
            ts = frame[c].dt.tz_convert("UTC") if frame[c].dt.tz is not None else frame[c]
            frame[c] = ts.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    data = frame.to_csv(index=False, lineterminator="\n", float_format="%.17g").encode()
    ts = pd.to_datetime(log["ts"], utc=True) if "ts" in log.columns and len(log) else None
    iso = lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    return {"sha256": hashlib.sha256(data).hexdigest(), "rows": int(len(log)),
            "start": iso(ts.min()) if ts is not None else None, "end": iso(ts.max()) if ts is not None else None}


def _npz_bytes(arrays: Mapping[str, np.ndarray], where: str) -> bytes:
    for k, v in arrays.items():
        if np.asarray(v).dtype.kind == "O":
            raise ArtifactError(f"{where}array {k!r} has dtype object; artifacts hold numeric or string "
                                f"arrays only (object arrays would need pickle)")
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def export_policy(policy: Any, path: str | Path, *, metrics: Mapping[str, Any] | None = None,
                  training_data: pd.DataFrame | Mapping[str, Any] | None = None,
                  tuning: Mapping[str, Any] | None = None) -> Path:
    """Write ``policy`` as a one-file artifact at ``path`` (``.json``); returns the path.

    ``policy`` is a rule policy's name, policy file or policy mapping (kind ``rules``), or a
    fitted policy object of a registered kind (``uplift``, learned kinds). ``training_data``
    is the training log (fingerprinted with :func:`fingerprint`) or a ready mapping. The
    artifact is loaded back once to check that it builds under the same name. ``tuning``
    (plain JSON, from :func:`omnisim.tune.export_tuned`) records how the policy was tuned;
    it is stored under ``tuning`` (covered by the checksum) when given.
    """
    path = Path(path)
    if path.suffix != ".json":
        raise ArtifactError(f"{path}: an artifact path must end in .json (one JSON file)")
    if isinstance(policy, (str, Path, Mapping)):
        kind = policy_kinds()["rules"]
        from omnisim.policies.registry import load_policy

        params, arrays, files = _rules_dump(policy)
        try:
            name = load_policy(params).name
        except OmnisimError as exc:  # the document was inlined: name the file it came from
            if isinstance(policy, Mapping) or str(policy) in str(exc):
                raise
            raise ArtifactError(f"{policy}: {' '.join(str(exc).split())}") from None
    else:
        kind = _kind_of(policy)
        params, arrays, files = kind.dump(policy)
        name = policy.name
    payloads = dict(files)
    if arrays:
        payloads["arrays"] = ("npz", _npz_bytes(arrays, f"{path}: "))
    if isinstance(training_data, pd.DataFrame):
        training_data = fingerprint(training_data)
    manifest_files = {role: {"type": ext, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                             "base64": base64.b64encode(data).decode("ascii")}
                      for role, (ext, data) in sorted(payloads.items())}
    body = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind.name,
        "name": name,
        "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "omnisim_version": _version(),
        "parameters": params,
        "metrics": _clean_metrics(metrics),
        "training_data": dict(training_data) if training_data else None,
    }
    if manifest_files:
        body["files"] = manifest_files
    if tuning is not None:
        body["tuning"] = dict(tuning)
    try:
        _canonical(body)  # plain JSON only (no NaN, no numpy or custom objects)
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"{path}: the {kind.name} policy's parameters are not plain JSON ({exc})") from None
    body["sha256"] = hashlib.sha256(_canonical(body)).hexdigest()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    loaded = load_artifact(path)
    if loaded.name != name:
        raise ArtifactError(f"{path}: the exported {kind.name} policy loads back as {loaded.name!r}, not {name!r}")
    return path


def read_artifact(path: str | Path) -> dict[str, Any]:
    """The verified JSON of an artifact (the manifest, payloads still base64): format, version,
    kind, checksum and every payload's own checksum checked."""
    path = Path(path)
    try:
        body = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no such artifact file") from None
    except IsADirectoryError:
        raise ArtifactError(f"{path}: is a directory; give the artifact's .json file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: not a policy artifact (expected JSON): {exc}") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not a policy artifact (expected \"format\": \"{FORMAT}\")")
    if body.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{path}: unknown format_version {body.get('format_version')!r}; this omnisim "
                            f"reads version {FORMAT_VERSION} (upgrade omnisim or re-export the policy)")
    _kind(str(body.get("kind")) if isinstance(body.get("kind"), str) else repr(body.get("kind")), f"{path}: ")
    claimed = body.pop("sha256", None)
    try:
        actual = hashlib.sha256(_canonical(body)).hexdigest()
    except ValueError as exc:  # NaN / Infinity: never written by export_policy
        raise ArtifactError(f"{path}: not a policy artifact (it holds values that are not plain "
                            f"JSON: {exc}); the artifact was modified or corrupted — re-export it") from None
    if claimed != actual:
        raise ArtifactError(f"{path}: checksum mismatch (file says {claimed}, contents hash to {actual}); "
                            "the artifact was modified or corrupted — re-export it")
    body["sha256"] = claimed
    for key, kind in (("name", str), ("parameters", dict), ("files", dict)):
        value = body.get(key) if key != "files" else body.get(key) or {}
        if not isinstance(value, kind):
            raise ArtifactError(f"{path}: not a policy artifact ({key!r}: expected "
                                f"{'a string' if kind is str else 'a mapping'}, got {value!r:.60})")
    for role, f in (body.get("files") or {}).items():
        _payload(path, role, f)
    return body


def _payload(path: Path, role: str, entry: Any) -> bytes:
    """The verified bytes of embedded payload ``role``."""
    try:
        data = base64.b64decode(entry["base64"], validate=True)
    except (TypeError, KeyError, ValueError, binascii.Error):
        raise ArtifactError(f"{path}: payload {role!r} is not embedded as base64 data") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.get("sha256"):
        raise ArtifactError(f"{path}: payload {role!r} checksum mismatch (says {entry.get('sha256')}, "
                            f"its data hashes to {digest}); re-export the policy")
    return data


def load_artifact(path: str | Path) -> Policy:
    """The policy in a verified artifact (see :func:`read_artifact`), built by its kind."""
    path = Path(path)
    manifest = read_artifact(path)
    kind = _kind(manifest["kind"], f"{path}: ")
    files = {role: _payload(path, role, f) for role, f in (manifest.get("files") or {}).items()}
    arrays: dict[str, np.ndarray] = {}
    if "arrays" in files:
        try:
            with np.load(io.BytesIO(files.pop("arrays")), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except ValueError as exc:
            raise ArtifactError(f"{path}: the arrays file needs pickle to load ({exc}); refusing it") from None
    try:
        policy = kind.load(manifest["parameters"], arrays, files)
    except ArtifactError as exc:
        raise ArtifactError(f"{path}: {exc}") from None
    except OmnisimError as exc:  # e.g. a journey this omnisim no longer accepts
        raise ArtifactError(f"{path}: the {kind.name} parameters do not build a policy ({exc})") from None
    except Exception as exc:
        raise ArtifactError(f"{path}: the {kind.name} parameters do not build a policy "
                            f"({type(exc).__name__}: {exc})") from None
    if policy.name != manifest["name"]:
        raise ArtifactError(f"{path}: the parameters build policy {policy.name!r}, "
                            f"but the artifact was exported as {manifest['name']!r}")
    return policy


# ------------------------------------------------------------------ training
def train_policy(kind: str, log: pd.DataFrame, users: pd.DataFrame | None = None,
                 **params: Any) -> tuple[Policy, dict[str, Any]]:
    """Fit a policy of ``kind`` on an engagement log; returns ``(policy, metrics)``.

    ``uplift``: :func:`omnisim.policies.ope_log.train_uplift` (``users`` required).
    ``sendtime``: a :class:`~omnisim.policies.sendtime.SendTimeOptimizer` fitted on the log
    (``params`` that are not the policy's go to the optimizer), wrapped in the policy.
    Other learned kinds: ``cls(**params).fit(log, users)`` when the class has ``fit``, else
    ``cls(**params)`` (nothing to learn, e.g. ``ratio``). ``bandit`` means ``bandit_ts``.
    """
    k = _kind(kind, "")
    if k.cls is None:
        raise ArtifactError(f"kind {k.name!r} is not trained; export rule policies with `omnisim policy export`")
    metrics: dict[str, Any] = {"train_rows": int(len(log))}
    try:
        if k.name == "uplift":
            from omnisim.policies.ope_log import train_uplift

            return train_uplift(log, users, **params)
        if callable(getattr(k.cls, "fit", None)):
            return k.cls(**params).fit(log, users), metrics
        if k.name == "sendtime":
            from omnisim.policies.sendtime import SendTimeOptimizer

            own = set(inspect.signature(k.cls).parameters)
            model = SendTimeOptimizer(**{p: v for p, v in params.items() if p not in own}).fit(log, users)
            return k.cls(model=model, **{p: v for p, v in params.items() if p in own}), metrics
        return k.cls(**params), {**metrics, "learned": "nothing (transparent rule)"}
    except TypeError as exc:
        if k.name == "uplift":
            from omnisim.policies.ope_log import train_uplift as target
        else:
            target = k.cls
        names = sorted(p for p in inspect.signature(target).parameters if p not in ("log", "users"))
        given = ", ".join(f"{p}={v!r}" for p, v in params.items())
        raise ArtifactError(f"kind {k.name}: bad parameter ({exc})"
                            + (f" among the given {given}" if given else "")
                            + f"; it takes {', '.join(names)}") from None


def _version() -> str:
    from omnisim import __version__

    return __version__
