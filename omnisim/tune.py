"""Tuning: search a policy's parameters in the simulator against a business objective.

A data scientist declares which numbers of a policy may move (the *search space*), what is
good (an *objective* over the metrics of :func:`omnisim.metrics.log_metrics`) and what must
hold (*constraints*). :func:`tune` searches with Optuna's constrained TPE sampler, running
every candidate through the sweep machinery (:func:`omnisim.sweep.sweep`, so trials go to a
Dask cluster when a scheduler is given), and reports the winner against the starting policy
with a confidence interval.

Noise is handled with **common random numbers**: every candidate and the starting policy
run on the same ``seeds``, so their differences are not seed noise. The ``top_k`` best
candidates and the starting policy are then re-run on ``fresh_seeds`` (never used during the
search, so the search's luck does not carry over); the winner is the best of them there,
and its improvement is a paired-difference interval over the fresh seeds. When that
interval does not exclude 0, the result says that no candidate beats the starting policy
significantly.

Tunables are **paths into the policy document** (:func:`omnisim.policies.artifact.policy_document`,
the self-contained YAML-shaped form of a policy)::

    journeys[0].steps[1].delay_h       # the SMS wait after the email, hours
    pressure.caps[1].max               # the weekly cap (an integer)
    pressure.quiet_hours[0].start_h    # quiet hours start, local hour
    pressure.dedup_h                   # dedup window, hours
    holdout.share                      # global holdout share

Config file (``omnisim tune --config tune.yaml --out tuned.json``)::

    name: seed_journey_tuned          # the study name (resumes when it exists in storage)
    scenario: default                 # built-in name or YAML path
    n_users: 2000                     # optional overrides of the scenario
    days: 21
    engine: fast                      # fast | simpy
    policy: seed_journey+pressure     # the starting policy: name, YAML path or mapping
    tunables:
      journeys[0].steps[1].delay_h: {low: 1, high: 48, log: true}
      pressure.caps[1].max: {low: 1, high: 7, type: int}
      pressure.quiet_hours[0].start_h: {choices: [19, 20, 21, 22]}
    objective: revenue - cost - 5 * unsubscribes
    direction: maximize               # or minimize
    constraints:
      - unsubscribe_rate <= 0.002
      - conversions >= 0.98 * baseline   # baseline = the starting policy's value of the left side
    trials: 40                        # total trials of the study (a rerun continues up to it)
    seeds: 4                          # common random numbers: a count (0..K-1) or a list
    fresh_seeds: 6                    # re-evaluation seeds: a count (10000..) or a list
    top_k: 3                          # candidates re-evaluated on the fresh seeds
    batch: 2                          # trials evaluated together (one sweep call)
    prune_rounds: 2                   # seeds evaluated in rounds; median pruning between them
    confidence: 0.95
    sampler_seed: 0
    storage: tune.db                  # SQLite file of the study (relative to the config)

The volume formulation (fewest messages subject to engagement ≥ target and complaints ≤
tolerance; unsubscribes stand for complaints in the simulator)::

    objective: messages_per_user_week
    direction: minimize
    constraints: [clicks >= 0.95 * baseline, unsubscribe_rate <= 0.002]

Expressions are parsed with :mod:`ast` and evaluated by walking a whitelist of nodes
(numbers, metric names, ``+ - * / **``, unary minus, ``min``/``max``/``abs``); nothing is
passed to ``eval``.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import json
import math
import operator
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from omnisim.errors import OmnisimError
from omnisim.stats import mean_ci

__all__ = [
    "METRIC_NAMES",
    "Constraint",
    "Expression",
    "Tunable",
    "TuneConfig",
    "TuneError",
    "TuneResult",
    "apply_params",
    "describe_tuning",
    "export_tuned",
    "get_path",
    "load_study",
    "load_tune_config",
    "pareto_front",
    "parse_path",
    "run_tune_config",
    "set_path",
    "study_baseline",
    "trials_table",
    "tune",
    "validate_space",
    "volume_formulation",
]

#: Flat metric names of :func:`omnisim.metrics.log_metrics` usable in objectives/constraints.
METRIC_NAMES: tuple[str, ...] = (
    "users", "days", "messages", "messages_per_user", "messages_per_user_email", "messages_per_user_sms",
    "messages_per_user_push", "messages_per_user_week", "opens", "clicks", "open_rate", "click_rate",
    "clicks_per_user", "purchases", "conversions", "revenue", "attributed_revenue", "cost",
    "revenue_minus_cost", "unsubscribes", "unsubscribe_rate", "unsubscribes_per_user", "churn", "overload_rate", "deferred", "suppressed",
    "cap_violations", "quiet_hour_violations", "holdout_users", "conversion_rate_treated",
    "conversion_rate_holdout", "incremental_conversions",
)

CONFIG_KEYS = ("name", "scenario", "n_users", "days", "engine", "policy", "tunables", "objective",
               "direction", "constraints", "trials", "seeds", "fresh_seeds", "top_k", "batch",
               "prune_rounds", "confidence", "sampler_seed", "storage", "startup_trials")
#: First fresh seed when ``fresh_seeds`` is a count: far from the search's seeds.
FRESH_SEED_START = 10_000


class TuneError(OmnisimError, ValueError):
    """An invalid tuning setup (path, range, expression, config key) or a failed study; the
    message names the parameter or key."""


# ============================================================== paths into policy documents
_TOKEN = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|(\.)")


def parse_path(path: str) -> tuple[str | int, ...]:
    """``"journeys[0].steps[1].delay_h"`` → ``("journeys", 0, "steps", 1, "delay_h")``."""
    if not isinstance(path, str) or not path:
        raise TuneError(f"path {path!r}: expected a non-empty string like journeys[0].steps[1].delay_h")
    out: list[str | int] = []
    pos, expect_key = 0, True
    while pos < len(path):
        m = _TOKEN.match(path, pos)
        if m is None:
            raise TuneError(f"path {path!r}: cannot parse at {path[pos:]!r} "
                            f"(expected key names, [index] and dots, e.g. pressure.caps[1].max)")
        key, index, dot = m.groups()
        if dot:
            if expect_key:
                raise TuneError(f"path {path!r}: unexpected '.' at position {pos}")
            expect_key = True
        elif key is not None:
            if not expect_key:
                raise TuneError(f"path {path!r}: missing '.' before {key!r}")
            out.append(key)
            expect_key = False
        else:
            if expect_key and out:
                raise TuneError(f"path {path!r}: unexpected '[' after '.'")
            if not out:
                raise TuneError(f"path {path!r}: must start with a key name")
            out.append(int(index))
            expect_key = False
        pos = m.end()
    if expect_key:
        raise TuneError(f"path {path!r}: ends with '.'")
    return tuple(out)


def _walk(doc: Any, tokens: Sequence[str | int], path: str) -> Any:
    cur = doc
    for i, tok in enumerate(tokens):
        here = _fmt(tokens[: i + 1])
        if isinstance(tok, int):
            if not isinstance(cur, list):
                raise TuneError(f"path {path}: {_fmt(tokens[:i]) or '<document>'} is not a list "
                                f"(got {type(cur).__name__}), cannot index [{tok}]")
            if tok >= len(cur):
                raise TuneError(f"path {path}: {here} is out of range ({_fmt(tokens[:i])} has "
                                f"{len(cur)} item(s))")
            cur = cur[tok]
        else:
            if not isinstance(cur, Mapping):
                raise TuneError(f"path {path}: {_fmt(tokens[:i]) or '<document>'} is not a mapping "
                                f"(got {type(cur).__name__}), cannot read key {tok!r}")
            if tok not in cur:
                keys = ", ".join(map(str, cur)) or "none"
                raise TuneError(f"path {path}: {here} does not exist in the policy document "
                                f"(keys there: {keys})")
            cur = cur[tok]
    return cur


def _fmt(tokens: Sequence[str | int]) -> str:
    s = ""
    for t in tokens:
        s += f"[{t}]" if isinstance(t, int) else (f".{t}" if s else t)
    return s


def get_path(doc: Mapping[str, Any], path: str) -> Any:
    """The value at ``path`` in a policy document; :class:`TuneError` naming the missing part."""
    return _walk(doc, parse_path(path), path)


def set_path(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``doc`` with ``path`` set to ``value``.

    The parent must exist; the last key may be new (e.g. ``journeys[0].holdout_share`` on a
    journey that has none), list indices must exist.
    """
    tokens = parse_path(path)
    out = copy.deepcopy(dict(doc))
    parent = _walk(out, tokens[:-1], path)
    last = tokens[-1]
    if isinstance(last, int):
        _walk(out, tokens, path)  # index must exist
        parent[last] = value
    elif isinstance(parent, dict):
        parent[last] = value
    else:
        raise TuneError(f"path {path}: {_fmt(tokens[:-1]) or '<document>'} is not a mapping "
                        f"(got {type(parent).__name__})")
    return out


def apply_params(doc: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """``doc`` with every ``path -> value`` of ``params`` set (a new document)."""
    out = copy.deepcopy(dict(doc))
    for path, value in params.items():
        out = set_path(out, path, value)
    return out


# ============================================================== the search space
@dataclass(frozen=True)
class Tunable:
    """One tunable parameter: a path into the policy document and its range or choices.

    Attributes
    ----------
    path : str
        e.g. ``"pressure.caps[1].max"``; its unit is the unit of the key (``*_h`` hours).
    kind : str
        ``"float"``, ``"int"`` or ``"choice"``.
    low, high : float | int | None
        Inclusive bounds (float/int kinds).
    log : bool
        Sample on a log scale (``low`` must be > 0).
    step : float | int | None
        Grid step (``int``: default 1).
    choices : tuple
        The values of a ``choice`` parameter (numbers, strings, booleans or null).
    """

    path: str
    kind: str = "float"
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    @classmethod
    def float(cls, path: str, low: float, high: float, *, log: bool = False,
              step: float | None = None) -> Tunable:
        """A real-valued parameter in ``[low, high]``."""
        return cls(path, "float", low, high, log, step).checked()

    @classmethod
    def int(cls, path: str, low: int, high: int, *, log: bool = False, step: int = 1) -> Tunable:
        """An integer parameter in ``[low, high]``."""
        return cls(path, "int", low, high, log, step).checked()

    @classmethod
    def choice(cls, path: str, choices: Sequence[Any]) -> Tunable:
        """A parameter taking one of ``choices``."""
        return cls(path, "choice", choices=tuple(choices)).checked()

    @classmethod
    def from_spec(cls, path: str, spec: Any) -> Tunable:
        """From a YAML spec: ``{low, high[, log][, step][, type: int|float]}``, ``{choices: [...]}``
        or a plain list (choices)."""
        where = f"tunables.{path}"
        if isinstance(spec, list):
            spec = {"choices": spec}
        if not isinstance(spec, Mapping):
            raise TuneError(f"{where}: expected a mapping {{low, high[, log, step, type]}} or {{choices: [...]}}, "
                            f"got {spec!r}")
        unknown = sorted(set(spec) - {"low", "high", "log", "step", "type", "choices"})
        if unknown:
            raise TuneError(f"{where}.{unknown[0]}: unknown key (expected low, high, log, step, type or choices)")
        if "choices" in spec:
            if set(spec) - {"choices"}:
                raise TuneError(f"{where}: choices cannot be combined with {', '.join(sorted(set(spec) - {'choices'}))}")
            ch = spec["choices"]
            if not isinstance(ch, list):
                raise TuneError(f"{where}.choices: expected a list, got {ch!r}")
            return cls(str(path), "choice", choices=tuple(ch)).checked()
        kind = spec.get("type")
        if kind is None:
            ints = all(isinstance(spec.get(k), int) and not isinstance(spec.get(k), bool) for k in ("low", "high"))
            kind = "int" if ints and isinstance(spec.get("step"), int) and not isinstance(spec.get("step"), bool) else "float"
        if kind not in ("int", "float"):
            raise TuneError(f"{where}.type: expected int or float, got {kind!r}")
        log = spec.get("log", False)
        if not isinstance(log, bool):
            raise TuneError(f"{where}.log: expected true or false, got {log!r}")
        step = spec.get("step", 1 if kind == "int" else None)
        return cls(str(path), kind, spec.get("low"), spec.get("high"), log, step).checked()

    def checked(self) -> Tunable:
        """``self`` if its range is valid, else :class:`TuneError` naming the parameter."""
        where = f"tunables.{self.path}"
        parse_path(self.path)
        if self.kind == "choice":
            if len(self.choices) < 1:
                raise TuneError(f"{where}.choices: expected at least one value")
            for c in self.choices:
                if not (c is None or isinstance(c, (bool, int, float, str))):
                    raise TuneError(f"{where}.choices: {c!r} is not a number, string, boolean or null")
            if len({json.dumps(c) for c in self.choices}) != len(self.choices):
                raise TuneError(f"{where}.choices: duplicate values in {list(self.choices)}")
            return self
        if self.kind not in ("float", "int"):
            raise TuneError(f"{where}: kind must be float, int or choice, got {self.kind!r}")
        num = (int,) if self.kind == "int" else (int, float)
        for k in ("low", "high"):
            v = getattr(self, k)
            if v is None:
                raise TuneError(f"{where}.{k}: required (a {'whole ' if self.kind == 'int' else ''}number)")
            if isinstance(v, bool) or not isinstance(v, num) or not math.isfinite(v):
                raise TuneError(f"{where}.{k}: expected a finite {'integer' if self.kind == 'int' else 'number'}, "
                                f"got {v!r}")
        if not self.low < self.high:
            raise TuneError(f"{where}: low ({self.low}) must be < high ({self.high})")
        if self.log and self.low <= 0:
            raise TuneError(f"{where}: log scale needs low > 0, got low={self.low}")
        if self.step is not None:
            if isinstance(self.step, bool) or not isinstance(self.step, num) or not self.step > 0:
                raise TuneError(f"{where}.step: expected a {'whole ' if self.kind == 'int' else ''}number > 0, "
                                f"got {self.step!r}")
            if self.step > self.high - self.low:
                raise TuneError(f"{where}.step: {self.step} is larger than the range {self.low}..{self.high}")
            if self.log and not (self.kind == "int" and self.step == 1):
                raise TuneError(f"{where}: log scale cannot be combined with step {self.step} "
                                f"(Optuna samples log ranges continuously, or integers with step 1)")
        return self

    def distribution(self) -> Any:
        """The Optuna distribution of this parameter."""
        import optuna.distributions as d

        if self.kind == "choice":
            return d.CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return d.IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return d.FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)

    def extremes(self) -> list[Any]:
        """The values validated against the policy: the bounds as the sampler draws them
        (floats for a ``float`` range, even with whole-number bounds), or every choice."""
        if self.kind == "choice":
            return list(self.choices)
        return [float(self.low), float(self.high)] if self.kind == "float" else [int(self.low), int(self.high)]

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data (the manifest's ``search_space`` entries)."""
        if self.kind == "choice":
            return {"path": self.path, "type": "choice", "choices": list(self.choices)}
        out = {"path": self.path, "type": self.kind, "low": self.low, "high": self.high, "log": self.log}
        if self.step is not None:
            out["step"] = self.step
        return out


def validate_space(space: Sequence[Tunable], base_doc: Mapping[str, Any]) -> None:
    """Check every tunable against the starting policy document: the path exists (or its
    parent does), and the policy builds at each bound / choice. Errors name the parameter."""
    from omnisim.policies.registry import load_policy

    paths = [t.path for t in space]
    if not space:
        raise TuneError("tunables: expected at least one tunable parameter")
    dup = sorted({p for p in paths if paths.count(p) > 1})
    if dup:
        raise TuneError(f"tunables.{dup[0]}: declared more than once")
    for t in space:
        tokens = parse_path(t.path)
        parent = _walk(base_doc, tokens[:-1], t.path)
        if isinstance(tokens[-1], int) or not isinstance(parent, Mapping):
            _walk(base_doc, tokens, t.path)
        for v in t.extremes():
            try:
                load_policy(set_path(dict(base_doc), t.path, v))
            except OmnisimError as exc:
                hint = "; declare it with type: int" if t.kind == "float" and "integer" in str(exc) else ""
                raise TuneError(f"tunables.{t.path}: the policy does not accept the value {v!r}: "
                                f"{exc}{hint}") from None


# ============================================================== expressions
_BINOPS: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[float], float]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_FUNCS: dict[str, Callable[..., float]] = {"min": min, "max": max, "abs": abs}
_CMP = {ast.LtE: "<=", ast.Lt: "<", ast.GtE: ">=", ast.Gt: ">"}


def _check_node(node: ast.AST, text: str, names: set[str], where: str) -> None:
    if isinstance(node, ast.Expression):
        return _check_node(node.body, text, names, where)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return None
    if isinstance(node, ast.Name):
        if node.id not in names:
            raise TuneError(f"{where}: unknown name {node.id!r} in {text!r}; expected a metric "
                            f"({', '.join(sorted(names - {'baseline'}))})"
                            + (" or baseline" if "baseline" in names else ""))
        return None
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        _check_node(node.left, text, names, where)
        return _check_node(node.right, text, names, where)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _check_node(node.operand, text, names, where)
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS
            and not node.keywords and node.args):
        for a in node.args:
            _check_node(a, text, names, where)
        return None
    raise TuneError(f"{where}: {text!r} uses {type(node).__name__}, which is not allowed; expressions "
                    f"may use numbers, metric names, + - * / **, unary minus and min/max/abs")


def _eval(node: ast.AST, env: Mapping[str, float]) -> float:
    if isinstance(node, ast.Expression):
        return _eval(node.body, env)
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return float(env[node.id])
    if isinstance(node, ast.BinOp):
        a, b = _eval(node.left, env), _eval(node.right, env)
        try:
            return float(_BINOPS[type(node.op)](a, b))
        except ZeroDivisionError:
            return math.nan
        except OverflowError:
            return math.inf
    if isinstance(node, ast.UnaryOp):
        return float(_UNARY[type(node.op)](_eval(node.operand, env)))
    if isinstance(node, ast.Call):
        return float(_FUNCS[node.func.id](*(_eval(a, env) for a in node.args)))  # type: ignore[attr-defined]
    raise AssertionError(node)  # unreachable: checked at parse time


def _parse(text: Any, where: str, expected: str, what: str) -> ast.Expression:
    """``ast.parse(text, mode="eval")`` with errors naming ``where``."""
    if not isinstance(text, str) or not text.strip():
        raise TuneError(f"{where}: expected {expected}, got {text!r}")
    try:
        return ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise TuneError(f"{where}: {text!r} is not a valid {what} ({exc.msg})") from None


@dataclass(frozen=True)
class Expression:
    """An arithmetic expression over metric names, parsed safely (no ``eval``).

    ``Expression.parse("revenue - cost - 5 * unsubscribes")``; ``expr(metrics)`` evaluates it
    on a mapping of metric values (missing metrics raise :class:`TuneError`).
    """

    text: str
    tree: ast.Expression = field(repr=False, compare=False)
    names: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str, *, where: str = "objective", allowed: Sequence[str] = METRIC_NAMES,
              baseline: bool = False) -> Expression:
        """Parse ``text``; names must be in ``allowed`` (plus ``baseline`` when allowed)."""
        tree = _parse(text, where, "an expression over metrics, e.g. revenue - cost", "expression")
        names = set(allowed) | ({"baseline"} if baseline else set())
        _check_node(tree, text, names, where)
        used = frozenset(n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id not in _FUNCS)
        return cls(text.strip(), tree, used)

    def __call__(self, metrics: Mapping[str, Any], **extra: float) -> float:
        env = dict(extra)
        for n in self.names:
            if n in env:
                continue
            if n not in metrics:
                raise TuneError(f"expression {self.text!r}: metric {n!r} is not among the evaluated metrics")
            v = metrics[n]
            env[n] = math.nan if v is None else float(v)
        return _eval(self.tree, env)


@dataclass(frozen=True)
class Constraint:
    """``lhs <= rhs`` / ``lhs >= rhs`` over metrics; ``baseline`` in it is the starting
    policy's value of ``lhs``. :meth:`violation` is <= 0 when it holds (Optuna's convention)."""

    text: str
    lhs: Expression
    op: str
    rhs: Expression

    @classmethod
    def parse(cls, text: str, *, where: str = "constraints", allowed: Sequence[str] = METRIC_NAMES) -> Constraint:
        """Parse ``"unsubscribe_rate <= 0.002"`` or ``"conversions >= 0.98 * baseline"``."""
        tree = _parse(text, where, "a comparison like unsubscribe_rate <= 0.002", "comparison")
        body = tree.body
        if not (isinstance(body, ast.Compare) and len(body.ops) == 1 and type(body.ops[0]) in _CMP):
            raise TuneError(f"{where}: {text!r} must be one comparison with <=, <, >= or > "
                            f"(e.g. messages_per_user_week <= 4)")
        seg = lambda n: ast.get_source_segment(text.strip(), n) or ""
        lhs = Expression.parse(seg(body.left), where=where, allowed=allowed)
        rhs = Expression.parse(seg(body.comparators[0]), where=where, allowed=allowed, baseline=True)
        return cls(text.strip(), lhs, _CMP[type(body.ops[0])], rhs)

    @property
    def uses_baseline(self) -> bool:
        return "baseline" in self.rhs.names

    def violation(self, metrics: Mapping[str, Any], baseline: Mapping[str, Any] | None = None) -> float:
        """``lhs - rhs`` for ``<=``/``<``, ``rhs - lhs`` for ``>=``/``>`` (feasible when <= 0;
        NaN → +inf; equality under ``<``/``>`` → the least positive float, i.e. violated)."""
        extra = {}
        if self.uses_baseline:
            if baseline is None:
                raise TuneError(f"constraint {self.text!r} refers to baseline, but no baseline metrics were given")
            extra["baseline"] = self.lhs(baseline)
        a, b = self.lhs(metrics), self.rhs(metrics, **extra)
        v = a - b if self.op in ("<=", "<") else b - a
        if not math.isfinite(v):
            return math.inf
        # a strict comparison that holds with equality is violated (by the least positive float)
        return math.ulp(0.0) if v == 0 and self.op in ("<", ">") else float(v)


def volume_formulation(engagement: str = "clicks", target: str = ">= 0.95 * baseline",
                       complaints: str = "unsubscribe_rate", tolerance: float = 0.002,
                       volume: str = "messages_per_user_week") -> tuple[str, str, list[str]]:
    """The email-volume formulation: minimise ``volume`` subject to ``engagement target`` and
    ``complaints <= tolerance``. Returns ``(objective, direction, constraints)`` for
    :func:`tune` / the config file."""
    return volume, "minimize", [f"{engagement} {target}", f"{complaints} <= {tolerance}"]


# ============================================================== config
@dataclass
class TuneConfig:
    """A validated tuning setup (see the module docstring for the file format)."""

    name: str
    scenario: Any
    policy: dict[str, Any]
    space: list[Tunable]
    objective: Expression
    direction: str = "maximize"
    constraints: list[Constraint] = field(default_factory=list)
    trials: int = 20
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    fresh_seeds: list[int] = field(default_factory=lambda: [FRESH_SEED_START + i for i in range(5)])
    top_k: int = 3
    batch: int = 1
    prune_rounds: int = 2
    confidence: float = 0.95
    sampler_seed: int = 0
    startup_trials: int | None = None
    n_users: int | None = None
    days: float | None = None
    engine: str = "fast"
    storage: str | None = None
    source: str = "<python>"

    def fingerprint(self) -> str:
        """What a resumed study must share with the one in storage (space, objective, world)."""
        sc = self.scenario
        body = {"space": [t.to_dict() for t in self.space], "objective": self.objective.text,
                "direction": self.direction, "constraints": [c.text for c in self.constraints],
                "seeds": self.seeds, "policy": self.policy, "scenario": getattr(sc, "name", str(sc)),
                "n_users": self.n_users, "days": self.days, "engine": self.engine}
        return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _seeds(value: Any, key: str, label: str, start: int = 0) -> list[int]:
    if isinstance(value, bool) or not ((isinstance(value, int) and value >= 1) or (
            isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                      for s in value))):
        raise TuneError(f"{label}: {key}: expected a count >= 1 or a non-empty list of integers >= 0, got {value!r}")
    seeds = list(range(start, start + value)) if isinstance(value, int) else [int(s) for s in value]
    if len(set(seeds)) != len(seeds):
        raise TuneError(f"{label}: {key}: duplicate seeds in {seeds}")
    return seeds


def _int(data: Mapping[str, Any], key: str, label: str, default: int, minimum: int) -> int:
    v = data.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise TuneError(f"{label}: {key}: expected an integer >= {minimum}, got {v!r}")
    return v


def load_tune_config(source: str | Path | Mapping[str, Any]) -> TuneConfig:
    """Read and validate a tuning config (file or mapping); errors name the key."""
    from omnisim.experiment import ENGINES
    from omnisim.model.scenario import ScenarioError, load_scenario
    from omnisim.policies.artifact import policy_document

    if isinstance(source, Mapping):
        data, label, root = dict(source), "<tune config>", Path(".")
    else:
        p = Path(source)
        label, root = str(p), p.parent
        if p.is_dir():
            raise TuneError(f"{label}: is a directory; expected a tuning config YAML file")
        if not p.is_file():
            raise TuneError(f"{label}: file not found (looked at {p.resolve()})")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise TuneError(f"{label}: not a text file (not UTF-8: {exc.reason} at byte "
                            f"{exc.start}); expected a tuning config in YAML") from None
        except yaml.YAMLError as exc:
            raise TuneError(f"{label}: not valid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise TuneError(f"{label}: expected a mapping of tuning keys, got {type(data).__name__}")
    for key in data:
        if key not in CONFIG_KEYS:
            raise TuneError(f"{label}: {key}: unknown key; expected one of {', '.join(CONFIG_KEYS)}")
    for key in ("policy", "tunables", "objective"):
        if key not in data:
            raise TuneError(f"{label}: {key}: required key is missing")
    scen = data.get("scenario", "default")
    if not isinstance(scen, str):
        raise TuneError(f"{label}: scenario: expected a built-in scenario name or a YAML path, got {scen!r}")
    if scen.endswith((".yaml", ".yml")) and not Path(scen).is_absolute():
        scen = str(root / scen)
    try:
        scenario = load_scenario(scen)
    except ScenarioError as exc:
        raise TuneError(f"{label}: scenario: {exc}") from None
    n_users = data.get("n_users")
    if n_users is not None and (isinstance(n_users, bool) or not isinstance(n_users, int) or n_users < 1):
        raise TuneError(f"{label}: n_users: expected an integer >= 1, got {n_users!r}")
    days = data.get("days")
    if days is not None and (isinstance(days, bool) or not isinstance(days, (int, float))
                             or not 0 < days < math.inf):  # NaN fails too
        raise TuneError(f"{label}: days: expected a finite number > 0, got {days!r}")
    engine = data.get("engine", "fast")
    if engine not in ENGINES:
        raise TuneError(f"{label}: engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
    pol = data["policy"]
    if isinstance(pol, str) and pol.endswith((".yaml", ".yml")) and not Path(pol).is_absolute():
        pol = str(root / pol)
    if not isinstance(pol, (str, Mapping)):
        raise TuneError(f"{label}: policy: expected a policy name, a policy YAML path or a mapping, got {pol!r}")
    try:
        doc = policy_document(pol)
    except OmnisimError as exc:
        raise TuneError(f"{label}: policy: {exc}") from None
    tunables = data["tunables"]
    if not isinstance(tunables, Mapping) or not tunables:
        raise TuneError(f"{label}: tunables: expected a mapping of parameter paths to ranges, got {tunables!r}")
    try:
        space = [Tunable.from_spec(str(path), spec) for path, spec in tunables.items()]
        validate_space(space, doc)
    except TuneError as exc:
        raise TuneError(f"{label}: {exc}") from None
    direction = data.get("direction", "maximize")
    if direction not in ("maximize", "minimize"):
        raise TuneError(f"{label}: direction: expected maximize or minimize, got {direction!r}")
    try:
        objective = Expression.parse(data["objective"], where="objective")
        cons = data.get("constraints") or []
        if not isinstance(cons, list):
            raise TuneError(f"constraints: expected a list of comparisons, got {cons!r}")
        constraints = [Constraint.parse(c, where=f"constraints[{i}]") for i, c in enumerate(cons)]
    except TuneError as exc:
        raise TuneError(f"{label}: {exc}") from None
    seeds = _seeds(data.get("seeds", 3), "seeds", label)
    fresh = _seeds(data.get("fresh_seeds", 5), "fresh_seeds", label, start=FRESH_SEED_START)
    overlap = sorted(set(seeds) & set(fresh))
    if overlap:
        raise TuneError(f"{label}: fresh_seeds: must not reuse the search seeds (both have {overlap})")
    conf = data.get("confidence", 0.95)
    if isinstance(conf, bool) or not isinstance(conf, (int, float)) or not 0 < conf < 1:
        raise TuneError(f"{label}: confidence: expected a level in (0, 1), got {conf!r}")
    storage = data.get("storage")
    if storage is not None:
        if not isinstance(storage, str):
            raise TuneError(f"{label}: storage: expected a SQLite file path or a database URL, got {storage!r}")
        if "://" not in storage and not Path(storage).is_absolute():
            storage = str(root / storage)
    startup = data.get("startup_trials")
    if startup is not None:
        startup = _int(data, "startup_trials", label, 10, 1)
    name = data.get("name", Path(label).stem if not isinstance(source, Mapping) else "tune")
    return TuneConfig(
        name=str(name), scenario=scenario, policy=doc, space=space, objective=objective, direction=direction,
        constraints=constraints, trials=_int(data, "trials", label, 20, 1), seeds=seeds, fresh_seeds=fresh,
        top_k=_int(data, "top_k", label, 3, 1), batch=_int(data, "batch", label, 1, 1),
        prune_rounds=_int(data, "prune_rounds", label, 2, 1), confidence=float(conf),
        sampler_seed=_int(data, "sampler_seed", label, 0, 0), startup_trials=startup, n_users=n_users,
        days=float(days) if days is not None else None, engine=engine, storage=storage, source=label)


# ============================================================== evaluation
#: ``evaluator(policy_document, seed) -> metrics`` replaces the simulator (tests, custom worlds).
Evaluator = Callable[[Mapping[str, Any], int], Mapping[str, Any]]


@contextmanager
def _scheduler(scheduler: Any, n_workers: int) -> Iterator[Any]:
    """``None``/``"sequential"`` → run in this process; ``"local"`` → a LocalCluster of
    ``n_workers`` for the whole study; an address or a ``distributed.Client`` → that."""
    if scheduler is None or scheduler == "sequential":
        yield "sequential"
        return
    from omnisim.cluster import dask_client

    with dask_client(scheduler, n_workers=n_workers) as client:
        yield client


def _numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
            continue
        out[str(k)] = float(v)
    return out


def _evaluate(cfg: TuneConfig, docs: Sequence[Mapping[str, Any]], seeds: Sequence[int], scheduler: Any,
              evaluator: Evaluator | None, progress: bool = False) -> list[list[dict[str, float]]]:
    """Metrics of every document on every seed: ``out[i][j]`` = doc ``i`` on ``seeds[j]``
    (``progress``: a bar over the simulation runs)."""
    if evaluator is not None:
        return [[_numeric(evaluator(d, s)) for s in seeds] for d in docs]
    from omnisim.sweep import sweep, sweep_tasks

    tasks = sweep_tasks({cfg.scenario.name: cfg.scenario}, [dict(d) for d in docs], list(seeds),
                        n_users=cfg.n_users, days=cfg.days, engine=cfg.engine)
    table = sweep(None, [], tasks=tasks, scheduler=scheduler, progress=progress)
    rows = table.sort_values("run_id").to_dict("records")
    k = len(seeds)
    return [[_numeric({m: r[m] for m in r if m not in ("run_id", "seed")}) for r in rows[i * k:(i + 1) * k]]
            for i in range(len(docs))]


def _mean(per_seed: Sequence[Mapping[str, float]]) -> dict[str, float]:
    keys = set().union(*per_seed) if per_seed else set()
    out = {}
    for k in sorted(keys):
        vals = np.array([m.get(k, math.nan) for m in per_seed], dtype=float)
        out[k] = float(np.nanmean(vals)) if np.isfinite(vals).any() else math.nan
    return out


def _json_num(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _to_attr(per_seed: Sequence[Mapping[str, float]]) -> dict[str, list[float | None]]:
    keys = sorted(set().union(*per_seed)) if per_seed else []
    return {k: [_json_num(m.get(k, math.nan)) for m in per_seed] for k in keys}


def _from_attr(attr: Mapping[str, Sequence[float | None]]) -> list[dict[str, float]]:
    n = max((len(v) for v in attr.values()), default=0)
    return [{k: (math.nan if v[j] is None else float(v[j])) for k, v in attr.items()} for j in range(n)]


# ============================================================== results
@dataclass
class TuneResult:
    """What :func:`tune` found.

    ``winner_params`` is ``None`` when no candidate met the constraints on the fresh seeds;
    ``improvement`` is ``(mean, low, high)`` of the paired per-seed objective difference
    winner − start on the fresh seeds (in the objective's units); ``significant`` says
    whether that interval excludes 0 in the objective's direction. ``reevaluation`` has one
    row per candidate (``start`` and ``trial <n>``) and fresh seed with the metrics.
    """

    config: TuneConfig
    study_name: str
    storage: str | None
    trials: pd.DataFrame
    base_params: dict[str, Any]
    baseline_metrics: dict[str, float]
    candidates: list[dict[str, Any]]
    reevaluation: pd.DataFrame
    winner_params: dict[str, Any] | None
    winner_trial: int | None
    improvement: tuple[float, float, float]
    significant: bool
    metric_cis: dict[str, dict[str, dict[str, float | None]]]
    summary: str

    @property
    def winner_document(self) -> dict[str, Any] | None:
        """The tuned policy document (``None`` when no candidate was feasible)."""
        if self.winner_params is None:
            return None
        return apply_params(self.config.policy, self.winner_params)

    def exports_winner(self, require_significant: bool = False) -> bool:
        """Whether :func:`export_tuned` writes the winner rather than the starting policy:
        a winner exists and beats the start on the fresh seeds — significantly, or (unless
        ``require_significant``) at least on average."""
        if self.winner_params is None:
            return False
        if self.significant:
            return True
        mean = self.improvement[0]
        sign = 1.0 if self.config.direction == "maximize" else -1.0
        return not require_significant and math.isfinite(mean) and sign * mean > 0

    def manifest(self, exported: str = "winner") -> dict[str, Any]:
        """The ``tuning`` block recorded in the exported artifact's manifest (plain JSON);
        ``exported`` says which policy the artifact holds (``winner`` or ``start``)."""
        cfg = self.config
        mean, low, high = self.improvement
        return {
            "study": self.study_name,
            "exported": exported,
            "search_space": [t.to_dict() for t in cfg.space],
            "objective": cfg.objective.text,
            "direction": cfg.direction,
            "constraints": [c.text for c in cfg.constraints],
            "scenario": cfg.scenario.name, "n_users": cfg.n_users, "days": cfg.days, "engine": cfg.engine,
            "trials": len(self.trials),
            "seeds": list(cfg.seeds), "fresh_seeds": list(cfg.fresh_seeds), "top_k": cfg.top_k,
            "confidence": cfg.confidence,
            "start_values": self.base_params,
            "winning_values": self.winner_params,
            "winner_trial": self.winner_trial,
            "improvement": {"mean": _json_num(mean), "low": _json_num(low), "high": _json_num(high),
                            "significant": bool(self.significant)},
            "metrics": self.metric_cis,
            "summary": self.summary,
        }


def _ci_block(values: Sequence[float] | np.ndarray, confidence: float) -> dict[str, float | None]:
    m, lo, hi = mean_ci(values, confidence)
    return {"mean": _json_num(m), "low": _json_num(lo), "high": _json_num(hi)}


# ============================================================== the study
def _storage_url(storage: str | None) -> str | None:
    if storage is None:
        return None
    if "://" in storage:
        return storage
    p = Path(storage).resolve()
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TuneError(f"storage {storage}: cannot create its folder ({exc.strerror}); "
                        f"expected a writable SQLite file path or a database URL") from None
    return f"sqlite:///{p}"


def _constraints_func(trial: Any) -> Sequence[float]:
    """Optuna < 5: the constrained TPE reads violations through this (<= 0 is feasible)."""
    return [v if math.isfinite(v) else 1e300 for v in trial.user_attrs.get("constraints", [])]


def tune(config: TuneConfig | str | Path | Mapping[str, Any], *, scheduler: Any = None, n_workers: int = 2,
         storage: str | None = None, study_name: str | None = None, trials: int | None = None,
         progress: bool = True, evaluator: Evaluator | None = None) -> TuneResult:
    """Run (or continue) the study of ``config`` and re-evaluate its best candidates.

    Parameters
    ----------
    config
        A :class:`TuneConfig`, a config file or mapping (:func:`load_tune_config`).
    scheduler
        ``None`` / ``"sequential"``: in this process; ``"local"``: a LocalCluster of
        ``n_workers`` worker processes for the whole study; a scheduler address
        (``tcp://host:8786``) or a ``distributed.Client``. Every evaluation goes through
        :func:`omnisim.sweep.sweep` with it.
    storage, study_name
        Override the config's; storage is a SQLite file (or an SQLAlchemy URL). A study
        that exists there with that name is continued up to ``trials`` finished trials.
    trials
        Override the config's total trial count.
    evaluator
        ``evaluator(policy_document, seed) -> metrics`` instead of the simulator.
    """
    cfg = config if isinstance(config, TuneConfig) else load_tune_config(config)
    n_trials = trials if trials is not None else cfg.trials
    name = study_name or cfg.name
    url = _storage_url(storage if storage is not None else cfg.storage)
    study = _open_study(cfg, name, url, n_trials)
    base_params = {t.path: _base_value(cfg.policy, t.path) for t in cfg.space}
    with _scheduler(scheduler, n_workers) as sched:
        base_mean = _search(study, cfg, n_trials, sched, evaluator, progress)
        # the top candidates and the start, re-run on the fresh seeds (paired)
        sign = 1.0 if cfg.direction == "maximize" else -1.0
        cands = [{"label": "start", "trial": None, "params": base_params}] + [
            {"label": f"trial {t.number}", "trial": t.number, "params": dict(t.params),
             "search_objective": t.value, "feasible_in_search": _feasible(t)}
            for t in _ranked(study, sign)[: cfg.top_k]]
        docs = [cfg.policy] + [apply_params(cfg.policy, c["params"]) for c in cands[1:]]
        fresh = _evaluate(cfg, docs, cfg.fresh_seeds, sched, evaluator, progress)
    return _reevaluate(cfg, name, url, trials_table(study), base_params, base_mean, cands, fresh)


def _open_study(cfg: TuneConfig, name: str, url: str | None, n_trials: int) -> Any:
    """Create or load the study; refuse one started with another setup; fail trials left
    running by an interrupted run."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    startup = cfg.startup_trials if cfg.startup_trials is not None else max(2, min(10, n_trials // 3))
    native = hasattr(optuna.trial.Trial, "set_constraint")  # Optuna >= 5: constraints live on the trial
    sampler = optuna.samplers.TPESampler(
        seed=cfg.sampler_seed, n_startup_trials=startup,
        constraints_func=_constraints_func if cfg.constraints and not native else None)
    pruner = (_feasible_median_pruner(max(2, startup // 2))
              if cfg.prune_rounds > 1 and len(cfg.seeds) > 1 else optuna.pruners.NopPruner())
    from sqlalchemy.exc import SQLAlchemyError

    try:
        study = optuna.create_study(study_name=name, storage=url, direction=cfg.direction, sampler=sampler,
                                    pruner=pruner, load_if_exists=True)
    except (ImportError, OSError, ValueError, SQLAlchemyError) as exc:  # bad URL, no driver, not a database
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TuneError(f"storage {url}: cannot open the study database ({reason}); expected a "
                        f"writable SQLite file path or a database URL whose driver is installed") from None
    fp = cfg.fingerprint()
    if study.user_attrs.get("omnisim_fingerprint", fp) != fp:
        raise TuneError(f"study {name!r} in {url} was started with a different search space, objective, "
                        f"constraints, seeds, policy or scenario; use another name or storage to start afresh")
    study.set_user_attr("omnisim_fingerprint", fp)
    study.set_user_attr("objective", cfg.objective.text)
    study.set_user_attr("constraints", [c.text for c in cfg.constraints])
    study.set_user_attr("space", [t.to_dict() for t in cfg.space])
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    return study


def _search(study: Any, cfg: TuneConfig, n_trials: int, sched: Any, evaluator: Evaluator | None,
            progress: bool) -> dict[str, float]:
    """Ask/evaluate/tell batches until the study has ``n_trials`` finished trials; returns
    the starting policy's mean metrics on the search seeds (stored in the study)."""
    import optuna
    from tqdm.auto import tqdm

    State = optuna.trial.TrialState
    if "baseline" in study.user_attrs:
        base_mean = _mean(_from_attr(study.user_attrs["baseline"]))
    else:
        base_seeds = _evaluate(cfg, [cfg.policy], cfg.seeds, sched, evaluator, progress)[0]
        study.set_user_attr("baseline", _to_attr(base_seeds))
        base_mean = _mean(base_seeds)
    cache = {_key(t.params): _from_attr(t.user_attrs["per_seed"])
             for t in study.get_trials(deepcopy=False, states=(State.COMPLETE,)) if "per_seed" in t.user_attrs}
    dists = {t.path: t.distribution() for t in cfg.space}
    n_rounds = min(cfg.prune_rounds, len(cfg.seeds))
    rounds = [[int(x) for x in a] for a in np.array_split(np.array(cfg.seeds), n_rounds)]
    prune = n_rounds > 1 and not isinstance(study.pruner, optuna.pruners.NopPruner)
    finished = lambda: len(study.get_trials(deepcopy=False, states=(State.COMPLETE, State.PRUNED)))
    done = finished()
    bar = tqdm(total=n_trials, initial=min(done, n_trials), desc=f"tuning {study.study_name}", unit="trial",
               disable=not progress)
    while done < n_trials:
        batch = [study.ask(dists) for _ in range(min(cfg.batch, n_trials - done))]
        per_seed = {t.number: list(cache.get(_key(t.params), [])) for t in batch}
        active = list(batch)
        for r, seeds in enumerate(rounds):
            todo = [t for t in active if len(per_seed[t.number]) < sum(map(len, rounds[:r + 1]))]
            if todo:
                try:
                    res = _evaluate(cfg, [apply_params(cfg.policy, t.params) for t in todo], seeds, sched, evaluator)
                except Exception:
                    for t in active:
                        study.tell(t, state=State.FAIL)
                    raise
                for t, ms in zip(todo, res):
                    per_seed[t.number].extend(ms)
            if prune and r < len(rounds) - 1:
                for t in list(active):
                    m = _mean(per_seed[t.number])
                    value = cfg.objective(m)
                    if math.isfinite(value):
                        t.report(value, step=len(per_seed[t.number]))
                    if t.should_prune():
                        _set_attrs(t, cfg, m, base_mean, per_seed[t.number])
                        study.tell(t, state=State.PRUNED)
                        active.remove(t)
        for t in active:
            m = _mean(per_seed[t.number])
            _set_attrs(t, cfg, m, base_mean, per_seed[t.number])
            value = cfg.objective(m)
            if math.isfinite(value):
                study.tell(t, value)
                cache[_key(t.params)] = per_seed[t.number]
            else:
                t.set_user_attr("fail_reason", f"objective is {value} (a metric was undefined)")
                study.tell(t, state=State.FAIL)
        done = finished()
        bar.update(min(done, n_trials) - bar.n)
        best = _best_feasible(study)
        if best is not None:
            bar.set_postfix(best=f"{best.value:.4g}")
    bar.close()
    return base_mean


def _reevaluate(cfg: TuneConfig, name: str, url: str | None, trials: pd.DataFrame, base_params: dict[str, Any],
                base_mean: dict[str, float], cands: list[dict[str, Any]],
                fresh: list[list[dict[str, float]]]) -> TuneResult:
    """Pick the winner among the candidates from their fresh-seed runs (``fresh[0]`` is the
    start): the feasible one (constraints on the mean metrics) with the best mean per-seed
    objective; and measure its paired improvement (per-seed objective differences)."""
    sign = 1.0 if cfg.direction == "maximize" else -1.0
    conf = cfg.confidence
    reeval = pd.DataFrame([{"candidate": c["label"], "trial": c["trial"], "seed": s, "objective": cfg.objective(m),
                            **m} for c, ms in zip(cands, fresh) for s, m in zip(cfg.fresh_seeds, ms)])
    base_fresh = fresh[0]
    base_fresh_mean = _mean(base_fresh)
    base_obj = np.array([cfg.objective(m) for m in base_fresh])
    best_i, best_val = None, -math.inf
    for i, (c, ms) in enumerate(zip(cands[1:], fresh[1:]), start=1):
        mm = _mean(ms)
        # the mean of the per-seed objectives: the quantity whose paired difference is the
        # improvement (for a ratio such as revenue / cost, the objective of the mean metrics
        # could pick a candidate with a smaller improvement than another's)
        c["fresh_objective"] = mean_ci([cfg.objective(m) for m in ms], conf)[0]
        c["fresh_violations"] = [con.violation(mm, base_fresh_mean) for con in cfg.constraints]
        c["fresh_feasible"] = all(v <= 0 for v in c["fresh_violations"])
        if c["fresh_feasible"] and math.isfinite(c["fresh_objective"]) and sign * c["fresh_objective"] > best_val:
            best_i, best_val = i, sign * c["fresh_objective"]

    def block(per_seed: Sequence[Mapping[str, float]], objective: np.ndarray) -> dict[str, Any]:
        return {"objective": _ci_block(objective, conf),
                **{m: _ci_block([x.get(m, math.nan) for x in per_seed], conf) for m in _shown(cfg)}}

    metric_cis = {"start": block(base_fresh, base_obj)}
    if best_i is None:
        improvement, significant, winner_params, winner_trial = (math.nan,) * 3, False, None, None
        summary = (f"No candidate among the top {len(cands) - 1} met the constraints on the {len(cfg.fresh_seeds)} "
                   f"fresh seeds; keep the starting policy.")
    else:
        win = fresh[best_i]
        win_obj = np.array([cfg.objective(m) for m in win])
        improvement = mean_ci(win_obj - base_obj, conf)
        significant = bool(improvement[1] > 0) if sign > 0 else bool(improvement[2] < 0)
        winner_params, winner_trial = cands[best_i]["params"], cands[best_i]["trial"]
        metric_cis["winner"] = block(win, win_obj)
        metric_cis["difference"] = block([{k: a.get(k, math.nan) - b.get(k, math.nan) for k in a}
                                          for a, b in zip(win, base_fresh)], win_obj - base_obj)
        m, lo, hi = improvement
        verdict = ("beats the starting policy significantly" if significant else
                   "does not beat the starting policy significantly (its interval includes 0): "
                   "no candidate beats it significantly" if math.isfinite(lo) else
                   "cannot be called significant: an interval needs at least 2 fresh seeds")
        summary = (f"Winner: trial {winner_trial} {winner_params}; {cfg.objective.text} "
                   f"{'+' if m >= 0 else ''}{m:.4g} vs the start [{conf:.0%} CI {lo:.4g}, {hi:.4g}] over "
                   f"{len(cfg.fresh_seeds)} fresh seeds (paired); it {verdict}.")
    return TuneResult(cfg, name, url, trials, base_params, base_mean, cands, reeval, winner_params,
                      winner_trial, improvement, significant, metric_cis, summary)


def _feasible_median_pruner(n_startup: int) -> Any:
    """Median pruning against *feasible* completed trials only.

    Optuna's ``MedianPruner`` compares a trial's running objective with every completed
    trial's; infeasible trials often have the best raw objective (e.g. sending nothing
    minimises volume) and would make it prune the good feasible candidates. This pruner
    prunes a trial whose running mean objective at step ``k`` (seeds evaluated) is worse
    than the median of the feasible completed trials at the same step, once ``n_startup``
    of them exist.
    """
    import optuna

    class FeasibleMedianPruner(optuna.pruners.BasePruner):
        def prune(self, study: Any, trial: Any) -> bool:
            step = trial.last_step
            if step is None:
                return False
            done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            ref = [t.intermediate_values[step] for t in done if _feasible(t) and step in t.intermediate_values]
            if len(ref) < n_startup:
                return False
            med = float(np.median(ref))
            value = trial.intermediate_values[step]
            return value < med if study.direction.name == "MAXIMIZE" else value > med

    return FeasibleMedianPruner()


def _shown(cfg: TuneConfig) -> list[str]:
    """Metrics whose CIs go in the manifest: those the objective/constraints use, plus the
    headline business metrics."""
    names = set(cfg.objective.names)
    for c in cfg.constraints:
        names |= set(c.lhs.names) | (set(c.rhs.names) - {"baseline"})
    head = ("revenue", "cost", "conversions", "messages_per_user_week", "unsubscribes", "unsubscribe_rate",
            "clicks")
    return sorted(names | set(head))


def _key(params: Mapping[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def _base_value(doc: Mapping[str, Any], path: str) -> Any:
    try:
        return get_path(doc, path)
    except TuneError:
        return None  # a key the starting policy leaves at its default


def _set_attrs(trial: Any, cfg: TuneConfig, mean: Mapping[str, float], base_mean: Mapping[str, float],
               per_seed: Sequence[Mapping[str, float]]) -> None:
    values = [con.violation(mean, base_mean) for con in cfg.constraints]
    trial.set_user_attr("constraints", values)
    if hasattr(trial, "set_constraint"):  # Optuna >= 5: the constrained TPE reads these
        for con, v in zip(cfg.constraints, values):
            trial.set_constraint(con.text, v if math.isfinite(v) else 1e300)
    trial.set_user_attr("metrics", {k: _json_num(v) for k, v in mean.items()})
    trial.set_user_attr("per_seed", _to_attr(per_seed))


def _feasible(t: Any) -> bool:
    return all(v <= 0 for v in t.user_attrs.get("constraints", []))


def _ranked(study: Any, sign: float) -> list[Any]:
    """Completed trials, feasible ones first by objective, then the rest by total violation;
    one trial per distinct parameter set."""
    import optuna

    seen, out = set(), []
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    order = sorted(done, key=lambda t: (not _feasible(t),
                                        sum(max(v, 0) for v in t.user_attrs.get("constraints", [])),
                                        -sign * t.value))
    for t in order:
        k = _key(t.params)
        if k not in seen:
            seen.add(k)
            out.append(t)
    return out


def _best_feasible(study: Any) -> Any:
    sign = 1.0 if study.direction.name == "MAXIMIZE" else -1.0
    ranked = _ranked(study, sign)
    return ranked[0] if ranked and _feasible(ranked[0]) else None


def trials_table(study: Any) -> pd.DataFrame:
    """One row per trial: ``number, state, value, feasible``, the parameters (by path) and
    the mean metrics (``m_<metric>``)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"number": t.number, "state": t.state.name, "value": t.value,
                               "feasible": _feasible(t) if t.user_attrs.get("constraints") is not None else None}
        row.update(t.params)
        row.update({f"m_{k}": (math.nan if v is None else v) for k, v in (t.user_attrs.get("metrics") or {}).items()})
        rows.append(row)
    return pd.DataFrame(rows)


def study_baseline(study: Any) -> dict[str, float]:
    """The starting policy's mean metrics on the search seeds, as stored in ``study``
    (empty when the study has none yet)."""
    attr = study.user_attrs.get("baseline")
    return _mean(_from_attr(attr)) if attr else {}


def load_study(storage: str, study_name: str) -> Any:
    """The Optuna study ``study_name`` in ``storage`` (SQLite file or URL), for reports."""
    import optuna

    url = _storage_url(storage)
    try:
        return optuna.load_study(study_name=study_name, storage=url)
    except KeyError:
        raise TuneError(f"no study named {study_name!r} in {url}") from None


def pareto_front(table: pd.DataFrame, maximize: Sequence[str] = (), minimize: Sequence[str] = ()) -> pd.Series:
    """Boolean mask of the rows not dominated on ``maximize`` / ``minimize`` columns (rows
    with a missing value are never on the front)."""
    cols = list(maximize) + list(minimize)
    x = np.column_stack([table[c].to_numpy(float) for c in maximize] + [-table[c].to_numpy(float) for c in minimize]) \
        if cols else np.empty((len(table), 0))
    ok = np.isfinite(x).all(axis=1) if cols else np.zeros(len(table), bool)
    mask = np.zeros(len(table), bool)
    for i in np.flatnonzero(ok):
        others = x[ok]
        dominated = ((others >= x[i]).all(axis=1) & (others > x[i]).any(axis=1)).any()
        mask[i] = not dominated
    return pd.Series(mask, index=table.index)


def export_tuned(result: TuneResult, path: str | Path, *, require_significant: bool = False) -> Path:
    """Export the tuned policy as a rules artifact whose manifest's ``tuning`` block records
    the study (:meth:`TuneResult.manifest`, with ``exported``).

    The artifact holds the winner when :meth:`TuneResult.exports_winner` (it beats the start
    on the fresh seeds — on average, or significantly with ``require_significant``), else
    the starting policy, so a search that only overfitted its seeds never ships a worse policy.
    """
    from omnisim.policies.artifact import export_policy

    winner = result.exports_winner(require_significant)
    doc = result.winner_document if winner else result.config.policy
    ci = result.metric_cis["winner" if winner else "start"]
    metrics = {f"{k}_mean": v["mean"] for k, v in ci.items()}
    return export_policy(doc, path, metrics=metrics, tuning=result.manifest("winner" if winner else "start"))


def describe_tuning(tuning: Mapping[str, Any]) -> list[str]:
    """Lines describing an artifact's ``tuning`` block (``omnisim policy show``)."""

    def ci(b: Mapping[str, Any] | None) -> str:
        if not b or b.get("mean") is None:
            return "—"
        if b.get("low") is None:
            return f"{b['mean']:.4g}"
        return f"{b['mean']:.4g} [{b['low']:.4g}, {b['high']:.4g}]"

    imp = tuning.get("improvement") or {}
    conf = tuning.get("confidence", 0.95)
    lines = [(f"  tuning           study {tuning.get('study')!r} on {tuning.get('scenario')}: "
              f"{tuning.get('trials')} trials × {len(tuning.get('seeds') or [])} seeds, top {tuning.get('top_k')} "
              f"on {len(tuning.get('fresh_seeds') or [])} fresh seeds"),
             f"  objective        {tuning.get('objective')} ({tuning.get('direction')})",
             f"  artifact holds   the {tuning.get('exported', 'winner')} policy"]
    for c in tuning.get("constraints") or []:
        lines.append(f"  constraint       {c}")
    start, win = tuning.get("start_values") or {}, tuning.get("winning_values") or {}
    for p in tuning.get("search_space") or []:
        rng = (f"choices {p['choices']}" if p.get("type") == "choice" else
               f"{p.get('type')} [{p.get('low')}, {p.get('high')}]" + (" log" if p.get("log") else ""))
        lines.append(f"  tuned {p['path']:<34} {start.get(p['path'])!r} -> {win.get(p['path'], '(start kept)')!r}"
                     f"   ({rng})")
    lines.append(f"  improvement      {ci(imp)} ({conf:.0%} CI, paired over fresh seeds); "
                 f"{'significant' if imp.get('significant') else 'NOT significant'}")
    ms = tuning.get("metrics") or {}
    for m in sorted(set(ms.get("start", {})) | set(ms.get("winner", {}))):
        lines.append(f"  {m:<24} start {ci(ms.get('start', {}).get(m))}   winner {ci(ms.get('winner', {}).get(m))}")
    return lines


def run_tune_config(config: str | Path | Mapping[str, Any], out: str | Path, *, scheduler: Any = None,
                    n_workers: int = 2, progress: bool = True,
                    require_significant: bool = False) -> tuple[TuneResult, Path]:
    """Load ``config``, tune (storage default: ``<out stem>.study.db`` beside ``out``) and
    export the result to ``out``."""
    cfg = load_tune_config(config)
    out = Path(out)
    if out.suffix != ".json":
        raise TuneError(f"--out {out}: an artifact path must end in .json")
    storage = cfg.storage or str(out.with_name(out.stem + ".study.db"))
    res = tune(cfg, scheduler=scheduler, n_workers=n_workers, storage=storage, progress=progress)
    return res, export_tuned(res, out, require_significant=require_significant)
