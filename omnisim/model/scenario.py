"""A scenario: population + behaviour + channels + fatigue + horizon, loaded from YAML.

``load_scenario("default")`` reads a built-in scenario (``omnisim/builtin/scenarios/``);
``load_scenario("path/to/file.yaml")`` a file. Keys left out keep their defaults; an unknown
key, a value of the wrong type or out of range raises :class:`ScenarioError` naming the file
and the key path, e.g. ``channels.sms.open_prob: expected a number in [0, 1], got 'high'``.

``scenario.replace(n_users=200, days=14, fatigue={"enabled": False})`` returns a validated
copy; nested dataclass fields take dicts that are merged into the current values.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from omnisim.errors import OmnisimError
from omnisim.model._params import num
from omnisim.model.behavior import BehaviorParams
from omnisim.model.channels import Channels
from omnisim.model.fatigue import FatigueParams
from omnisim.model.population import ACTIVITY_PROFILES, PopulationSpec

__all__ = ["Scenario", "ScenarioError", "load_scenario", "builtin_scenarios"]


class ScenarioError(OmnisimError, ValueError):
    """A scenario file or override is invalid; the message names the file and key path."""

    def __init__(self, message: str, source: str | None = None):
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)


class EmptySimulationError(OmnisimError, RuntimeError):
    """A run produced no events at all (too few users or too short a horizon to log even a
    visit): nothing to score; both engines raise it."""

    def __init__(self, n_users: int, days: float) -> None:
        super().__init__(f"the simulation of {n_users} user(s) over {days:g} day(s) produced no "
                         "events; raise --users or --days")


@dataclass(frozen=True)
class Scenario:
    """A complete simulated world and horizon.

    Attributes
    ----------
    name : str
    start : datetime
        Start of the horizon, UTC.
    days : float
        Horizon length in days.
    n_users : int
    seed : int
        Seeds population, world and policy random streams.
    population, behavior, channels, fatigue
        See :mod:`omnisim.model.population`, :mod:`~omnisim.model.behavior`,
        :mod:`~omnisim.model.channels`, :mod:`~omnisim.model.fatigue`.
    """

    name: str = "custom"
    description: str = ""
    start: datetime = datetime(2026, 1, 5, tzinfo=timezone.utc)
    days: float = num(30.0, lo=0.0, lo_open=True)
    n_users: int = num(1000, lo=1)
    seed: int = num(0, lo=0)
    population: PopulationSpec = field(default_factory=PopulationSpec)
    behavior: BehaviorParams = field(default_factory=BehaviorParams)
    channels: Channels = field(default_factory=Channels)
    fatigue: FatigueParams = field(default_factory=FatigueParams)
    #: Provenance of fitted values (written by :func:`omnisim.model.calibrate.calibrate`):
    #: ``{"parameters": {key path: {"status": "estimated", "value", "ci", "n"} or
    #: {"status": "default", "reason"}}, ...}``. Metadata only: the model never reads it;
    #: it is validated by :func:`_check_calibration`.
    calibration: dict[str, Any] = field(default_factory=dict)

    @property
    def horizon_h(self) -> float:
        return self.days * 24.0

    @property
    def enabled_channels(self) -> tuple[str, ...]:
        return tuple(ch for ch in ("email", "sms", "push") if self.channels.get(ch).enabled)

    def replace(self, **overrides: Any) -> "Scenario":
        """A validated copy with ``overrides`` (dicts merge into nested parameter groups)."""
        return _finish(_merge(self, overrides, "", "<override>"), "<override>")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> "Scenario":
        """Build and validate a scenario from a mapping (as read from YAML)."""
        if not isinstance(data, Mapping):
            raise ScenarioError(f"expected a mapping of scenario keys at the top level, "
                                f"got {type(data).__name__}", source)
        return _finish(_merge(cls(), data, "", source), source)


# --- validation --------------------------------------------------------------------------

def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is dict:
        return f"a mapping of names to {_type_name(typing.get_args(tp)[1])}s"
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}s"
    return {float: "number", int: "integer", bool: "true or false", str: "string",
            datetime: "UTC date-time (e.g. 2026-01-05T00:00:00Z)"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _range_text(meta: Mapping[str, Any]) -> str:
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and hi is not None:
        return f" in {'(' if meta.get('lo_open') else '['}{lo:g}, {hi:g}]"
    if lo is not None:
        return f" {'>' if meta.get('lo_open') else '>='} {lo:g}"
    if hi is not None:
        return f" <= {hi:g}"
    return ""


def _expected(tp: Any, meta: Mapping[str, Any]) -> str:
    name = _type_name(tp)
    article = "" if name.startswith(("a ", "true", "UTC")) else (
        "an " if name[0] in "aeiou" else "a ")
    return f"expected {article}{name}{_range_text(meta) if tp in (int, float) else ''}"


def _bad(path: str, tp: Any, meta: Mapping[str, Any], value: Any) -> ScenarioError:
    return ScenarioError(f"{path}: {_expected(tp, meta)}, got {value!r}")


def _in_range(v: float, meta: Mapping[str, Any]) -> bool:
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and (v < lo or (meta.get("lo_open") and v == lo)):
        return False
    return hi is None or v <= hi


def _coerce(value: Any, tp: Any, path: str, meta: Mapping[str, Any]) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ScenarioError(f"{path}: expected a mapping of {tp.__name__} keys, got {value!r}")
        return _merge(tp(), value, path, None)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, path, meta)
            except ScenarioError:
                continue
        raise _bad(path, tp, meta, value)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _bad(path, tp, meta, value)
        keys = meta.get("keys")
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ScenarioError(f"{path}: keys must be strings, got {k!r}")
            if keys is not None and k not in keys:
                raise ScenarioError(f"{path}.{k}: unknown key; expected one of {', '.join(keys)}")
            out[k] = _coerce(v, typing.get_args(tp)[1], f"{path}.{k}", meta)
        return out
    if origin is list:
        if not isinstance(value, list):
            raise _bad(path, tp, meta, value)
        (arg,) = typing.get_args(tp)
        return [_coerce(v, arg, f"{path}[{i}]", meta) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise _bad(path, tp, meta, value)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int) or not _in_range(value, meta):
            raise _bad(path, tp, meta, value)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or not _in_range(float(value), meta):
            err = _bad(path, tp, meta, value)
            if isinstance(value, float) and math.isinf(value):  # YAML .inf: say "finite"
                err = ScenarioError(str(err).replace("expected a number", "expected a finite number"))
            raise err
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _bad(path, tp, meta, value)
        return value
    if tp is datetime:
        if isinstance(value, datetime):
            dt = value
        elif isinstance(value, date):
            dt = datetime(value.year, value.month, value.day)
        elif isinstance(value, str):
            try:
                dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise _bad(path, tp, meta, value) from None
        else:
            raise _bad(path, tp, meta, value)
        return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)
    return value


def _merge(obj: Any, data: Mapping[str, Any], prefix: str, source: str | None) -> Any:
    """``obj`` (a dataclass instance) with ``data`` applied and type-checked."""
    hints = typing.get_type_hints(type(obj))
    fields = {f.name: f for f in dataclasses.fields(obj)}
    changes = {}
    try:
        for key, value in data.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in fields:
                raise ScenarioError(f"{path}: unknown key; expected one of "
                                    f"{', '.join(sorted(fields))}")
            tp = hints[key]
            if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
                changes[key] = _merge(getattr(obj, key), value, path, None)
            else:
                changes[key] = _coerce(value, tp, path, fields[key].metadata)
    except ScenarioError as exc:
        if source is not None and exc.source is None:
            raise ScenarioError(str(exc), source) from None
        raise
    return dataclasses.replace(obj, **changes)


def _finish(sc: Scenario, source: str) -> Scenario:
    """Cross-field checks that types alone cannot express."""
    try:
        segs = sc.population.segments
        if not segs:
            raise ScenarioError("population.segments: expected at least one segment")
        for i, seg in enumerate(segs):
            p = f"population.segments[{i}]"
            if not seg.timezones or sum(seg.timezones.values()) <= 0:
                raise ScenarioError(f"{p}.timezones: expected at least one timezone with "
                                    "a positive weight")
            for tz in seg.timezones:
                try:
                    ZoneInfo(tz)
                except (ZoneInfoNotFoundError, ValueError):
                    raise ScenarioError(f"{p}.timezones.{tz}: not an IANA timezone name "
                                        "(e.g. Europe/Paris, America/New_York)") from None
            if isinstance(seg.activity, str):
                if seg.activity not in ACTIVITY_PROFILES:
                    raise ScenarioError(f"{p}.activity: unknown profile {seg.activity!r}; "
                                        f"expected one of {', '.join(ACTIVITY_PROFILES)} "
                                        "or a list of 24 probabilities")
            elif len(seg.activity) != 24:
                raise ScenarioError(f"{p}.activity: expected 24 probabilities in [0, 1] "
                                    f"(not all 0), got {len(seg.activity)} values")
            else:
                for h, a in enumerate(seg.activity):
                    if not 0 <= a <= 1:
                        raise ScenarioError(f"{p}.activity[{h}]: expected a probability in "
                                            f"[0, 1] (local hour {h}), got {a!r}")
                if max(seg.activity) <= 0:
                    raise ScenarioError(f"{p}.activity: expected 24 probabilities in [0, 1] "
                                        "(not all 0), got all 0")
        for ch in ("email", "sms", "push"):
            cp = sc.channels.get(ch)
            if cp.bounce_prob + cp.fail_prob > 1:
                raise ScenarioError(
                    f"channels.{ch}: bounce_prob + fail_prob = {cp.bounce_prob:g} + "
                    f"{cp.fail_prob:g} = {cp.bounce_prob + cp.fail_prob:g}; expected at most 1 "
                    "(they are exclusive outcomes of a send; the rest is delivered)")
        names = [s.name for s in segs]
        if len(set(names)) != len(names):
            raise ScenarioError(f"population.segments: duplicate segment names in {names}")
        if sc.calibration:
            _check_calibration(sc.calibration)
    except ScenarioError as exc:
        raise ScenarioError(str(exc), source) from None
    return sc


_CALIBRATION_KEYS = ("source", "notes", "parameters", "campaigns", "report")
_STATUS = ("estimated", "default", "derived")


def _check_calibration(block: Mapping[str, Any]) -> None:
    """Validate the ``calibration:`` block (provenance of fitted parameters).

    Keys: ``source`` / ``notes`` / ``report`` (free-form), ``parameters`` (key path →
    entry) and ``campaigns`` (campaign → key path → entry). An entry is
    ``{status: estimated, value, ci: [low, high], n}``, ``{status: derived, value, reason}``
    or ``{status: default, reason}``; ``reason`` says why a value is not estimated.
    """
    for k in block:
        if k not in _CALIBRATION_KEYS:
            raise ScenarioError(f"calibration.{k}: unknown key; expected one of "
                                f"{', '.join(_CALIBRATION_KEYS)}")

    def entries(table: Any, path: str) -> None:
        if not isinstance(table, Mapping):
            raise ScenarioError(f"{path}: expected a mapping of key paths to entries, got {table!r}")
        for key, e in table.items():
            p = f"{path}.{key}"
            if not isinstance(e, Mapping) or e.get("status") not in _STATUS:
                raise ScenarioError(f"{p}: expected a mapping with status one of "
                                    f"{', '.join(_STATUS)}, got {e!r}")
            st = e["status"]
            if st == "estimated":
                ci, n = e.get("ci"), e.get("n")
                if not (isinstance(ci, list) and len(ci) == 2
                        and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in ci)
                        and ci[0] <= ci[1]):
                    raise ScenarioError(f"{p}.ci: expected [low, high] with low <= high, got {ci!r}")
                if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                    raise ScenarioError(f"{p}.n: expected an integer >= 0 (data volume), got {n!r}")
                if "value" not in e:
                    raise ScenarioError(f"{p}.value: missing; an estimated entry needs its value")
            elif not isinstance(e.get("reason"), str) or not e["reason"]:
                raise ScenarioError(f"{p}.reason: a {st} entry must say why "
                                    f"(e.g. 'not identifiable from this log: no opened rows')")

    if "parameters" in block:
        entries(block["parameters"], "calibration.parameters")
    camps = block.get("campaigns", {})
    if not isinstance(camps, Mapping):
        raise ScenarioError(f"calibration.campaigns: expected a mapping, got {camps!r}")
    for name, table in camps.items():
        entries(table, f"calibration.campaigns.{name}")


# --- loading -----------------------------------------------------------------------------

def builtin_scenarios() -> list[str]:
    """Names of the built-in scenarios."""
    root = resources.files("omnisim") / "builtin" / "scenarios"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load a built-in scenario by name or a YAML file by path, validated."""
    text: str
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        source = str(p)
        if not p.exists():
            raise ScenarioError(f"file not found (looked at {p.resolve()}); pass a built-in "
                                f"name ({', '.join(builtin_scenarios())}) or a YAML path")
        if p.is_dir():
            raise ScenarioError(f"{p} is a directory; expected a scenario YAML file")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ScenarioError(f"{p}: not a text file (not UTF-8: {exc.reason} at byte "
                                f"{exc.start}); expected a scenario YAML file") from None
    else:
        name = str(name_or_path)
        res = resources.files("omnisim") / "builtin" / "scenarios" / f"{name}.yaml"
        if not res.is_file():
            raise ScenarioError(f"unknown scenario {name!r}; built-in scenarios: "
                                f"{', '.join(builtin_scenarios())}, or pass a .yaml path")
        source = f"builtin:{name}"
        text = res.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"not valid YAML: {exc}", source) from None
    if data is None:
        data = {}
    return Scenario.from_dict(data, source)
