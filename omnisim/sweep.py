"""Sweeps: scenarios × policies × seeds on Dask distributed, streamed back as they finish.

:func:`sweep` builds one task per ``(scenario, policy, seed)``, submits them to a Dask
``distributed`` scheduler — a ``LocalCluster`` started for the call by default, or any
running scheduler given by address (``tcp://host:8786``) or an existing ``Client`` — and
collects each run's metrics as it finishes (tqdm progress bar). The result table is sorted
into task order, so it is identical to a sequential run of the same tasks
(``scheduler="sequential"``, no Dask at all): each run depends only on its scenario, policy
and seed.

With ``log_dir``, each run's engagement log is written by the worker that ran it as one
Parquet part, ``<log_dir>/run=<run_id>/part-00000.parquet`` (Hive-style partitions; read
them back with ``pandas.read_parquet(log_dir)`` or DuckDB); logs never travel back to the
client and are never all in memory at once.

A run that fails (raises, or its worker dies) does not stop the others: the sweep finishes,
then raises :class:`SweepError` carrying the whole table (or, with ``on_error="record"``,
returns it with ``error`` and ``traceback`` columns). With ``journal``, every finished row is appended to a
JSON-lines file as it arrives (:mod:`omnisim.sweep_journal`) and a sweep given the journal
of an interrupted or partly failed one runs only what is missing. ``omnisim sweep`` keeps
its journal beside ``--out`` and resumes with ``--resume``.

Config files (``omnisim sweep --config sweep.yaml``)::

    scenario: default            # base scenario: built-in name or YAML path, or a list of them
    n_users: 2000                # optional overrides of the base scenario
    days: 30
    engine: fast                 # fast | simpy
    seeds: 5                     # a count (0..K-1) or a list of seeds
    grid:                        # scenario variants: the product of these key paths' values
      fatigue.half_life_h: [36, 72, 144]
    policies:                    # names, or policy-file mappings (omnisim.policies.registry)
      - seed_journey+pressure
      - {name: cap1, journeys: [seed_journey], pressure: {caps: [{max: 1, window_h: 168}]}}
    policy_grid:                 # policy variants: paths into each policy's document (as in
      pressure.caps[0].max: [1, 3, 7]   # omnisim tune) -> values, their product

Every key is validated; an error names the file and key path
(``sweep.yaml: grid.fatigue.half_life_h: expected a non-empty list of values``).
"""

from __future__ import annotations

import itertools
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import pandas as pd
from tqdm.auto import tqdm

from omnisim.errors import OmnisimError
from omnisim.policies import _spec
from omnisim.sweep_journal import SweepJournal, read_journal, task_key

__all__ = ["SweepConfigError", "SweepError", "SweepTask", "SweepConfig", "load_sweep_config",
           "sweep_tasks", "policy_variants", "run_task", "log_part_path", "journaled_rows", "sweep",
           "run_sweep_config"]

CONFIG_KEYS = ("scenario", "n_users", "days", "engine", "seeds", "grid", "policies", "policy_grid",
               "name")


class SweepConfigError(_spec.SpecError):
    """An invalid sweep config; the message names the file and the key path."""


@dataclass(frozen=True)
class SweepTask:
    """One run of a sweep.

    Attributes
    ----------
    run_id : int
        Position in the task list (and the log partition name).
    scenario_name : str
        Label of the scenario variant (``default[fatigue.half_life_h=36]``).
    scenario : Scenario
        The scenario to run (overrides applied).
    policy : str | Mapping
        A policy name / YAML path, or a policy-file mapping (resolved on the worker).
    policy_label : str
        The label shown in the results (the name, or the mapping's ``name``).
    seed : int
    params : Mapping[str, Any]
        The grid values of this variant (one column each in the results).
    engine : str
        ``fast`` or ``simpy``.
    base_policy : str | None
        The label of the policy a ``policy_grid`` variant was made from (``None``: the
        policy is not a variant; its ``policy_label``).
    """

    run_id: int
    scenario_name: str
    scenario: Any
    policy: Any
    policy_label: str
    seed: int
    params: Mapping[str, Any] = field(default_factory=dict)
    engine: str = "fast"
    base_policy: str | None = None


@dataclass(frozen=True)
class SweepConfig:
    """A validated sweep config: the tasks it expands to, plus where it came from."""

    name: str
    tasks: list[SweepTask]
    source: str


# -- building tasks --------------------------------------------------------------------------

def _policy_label(policy: Any) -> str:
    if isinstance(policy, Mapping):
        return str(policy.get("name") or policy.get("policy") or "policy")
    if isinstance(policy, (str, Path)):
        return str(policy)
    return str(getattr(policy, "name", type(policy).__name__))


def _nested(path: str, value: Any) -> dict[str, Any]:
    """``"a.b.c", v`` → ``{"a": {"b": {"c": v}}}``."""
    out: dict[str, Any] = {}
    cur = out
    keys = path.split(".")
    for k in keys[:-1]:
        cur = cur.setdefault(k, {})
    cur[keys[-1]] = value
    return out


def _merge(a: dict[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def _combos(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of a grid's values, in order (``[{}]`` for no grid)."""
    return [dict(zip(grid, vals)) for vals in itertools.product(*grid.values())] or [{}]


def _suffix(combo: Mapping[str, Any]) -> str:
    """``[a.b=1,c=2]`` (empty for no combination): the label suffix of a grid variant."""
    return f"[{','.join(f'{k}={v}' for k, v in combo.items())}]" if combo else ""


def policy_variants(policies: Sequence[Any], policy_grid: Mapping[str, Sequence[Any]] | None
                    ) -> list[tuple[Any, str, dict[str, Any], str]]:
    """``(policy, label, grid values, base label)`` for every policy × combination of
    ``policy_grid``.

    ``policy_grid`` maps paths into a policy document (``pressure.caps[0].max``, as in
    :mod:`omnisim.tune`) to the values to try; each variant is the policy's self-contained
    document (:func:`~omnisim.policies.artifact.policy_document`) with those values set,
    labelled ``<label>[pressure.caps[0].max=2]``. Policies must then be names, files or
    mappings (a policy object has no document to edit).
    """
    if not policy_grid:
        return [(pol, _policy_label(pol), {}, _policy_label(pol)) for pol in policies]
    from omnisim.policies.artifact import policy_document
    from omnisim.tune import apply_params

    out = []
    for pol in policies:
        if not isinstance(pol, (str, Path, Mapping)):
            raise ValueError(f"policy_grid needs policies given by name, file or mapping; "
                             f"{_policy_label(pol)!r} is a {type(pol).__name__} object")
        doc = policy_document(dict(pol) if isinstance(pol, Mapping) else pol)
        for combo in _combos(policy_grid):
            base = _policy_label(pol)
            out.append((apply_params(doc, combo), base + _suffix(combo), combo, base))
    return out


def sweep_tasks(scenarios: Any, policies: Sequence[Any], seeds: int | Sequence[int], *,
                grid: Mapping[str, Sequence[Any]] | None = None,
                policy_grid: Mapping[str, Sequence[Any]] | None = None, n_users: int | None = None,
                days: float | None = None, engine: str = "fast") -> list[SweepTask]:
    """The task list of a sweep, in a fixed order (scenario variant, policy variant, seed).

    ``scenarios``: a :class:`~omnisim.model.scenario.Scenario`, a built-in name / YAML path,
    a list of those, or a mapping ``label -> scenario``. ``grid`` maps scenario key paths
    (``fatigue.half_life_h``) to the values to try; every scenario is crossed with their
    product. ``policy_grid`` does the same for paths into each policy's document
    (:func:`policy_variants`). ``n_users`` / ``days`` override every scenario. Each grid path
    becomes a column of the results.
    """
    from omnisim.experiment import ENGINES, _resolve_scenario

    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    grid, policy_grid = dict(grid or {}), dict(policy_grid or {})
    both = sorted(set(grid) & set(policy_grid))
    if both:
        raise ValueError(f"{', '.join(both)}: in both grid and policy_grid; a path names a "
                         f"scenario key or a policy key, not both")
    if isinstance(scenarios, Mapping):
        bases = [(str(k), _resolve_scenario(v)) for k, v in scenarios.items()]
    else:
        items = scenarios if isinstance(scenarios, (list, tuple)) else [scenarios]
        bases = [(_resolve_scenario(s).name, _resolve_scenario(s)) for s in items]
    seeds = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    variants = policy_variants(policies, policy_grid)
    base_over = {k: v for k, v in (("n_users", n_users), ("days", days)) if v is not None}
    tasks: list[SweepTask] = []
    for label, base in bases:
        for combo in _combos(grid):
            over: dict[str, Any] = dict(base_over)
            for path, value in combo.items():
                over = _merge(over, _nested(path, value))
            sc = base.replace(**over) if over else base
            for pol, pol_label, pol_combo, base_label in variants:
                for seed in seeds:
                    tasks.append(SweepTask(len(tasks), label + _suffix(combo), sc, pol, pol_label,
                                           seed, {**combo, **pol_combo}, engine, base_label))
    return tasks


# -- running one task ------------------------------------------------------------------------

def log_part_path(log_dir: str | Path, run_id: int) -> Path:
    """Where run ``run_id``'s log goes under ``log_dir`` (one Hive-style partition per run)."""
    return Path(log_dir) / f"run={run_id}" / "part-00000.parquet"


def run_task(task: SweepTask, log_dir: str | Path | None = None) -> dict[str, Any]:
    """Run one task (on a worker); return its flat metrics row, writing its log if asked.

    The log part is written to a temporary name and renamed, so a part that exists is whole.
    """
    from omnisim.experiment import run_one
    from omnisim.policies.registry import load_policy

    policy = load_policy(task.policy) if isinstance(task.policy, Mapping) else task.policy
    r = run_one(task.scenario, policy, task.seed, engine=task.engine)
    row: dict[str, Any] = _identity(task)
    row["policy_name"] = r.policy
    row.update({k: v for k, v in r.metrics.items() if not isinstance(v, dict)})
    if log_dir is not None:
        part = log_part_path(log_dir, task.run_id)
        part.parent.mkdir(parents=True, exist_ok=True)
        tmp = part.with_name(part.name + ".tmp")
        r.log.assign(scenario=task.scenario_name, policy_label=task.policy_label,
                     seed=task.seed).to_parquet(tmp, index=False)
        os.replace(tmp, part)
        row["log_path"] = str(part)
    return row


def _identity(task: SweepTask) -> dict[str, Any]:
    """The columns that name a run, in result-table order."""
    return {"run_id": task.run_id, "scenario": task.scenario_name, "policy": task.policy_label,
            "base_policy": task.base_policy or task.policy_label, "policy_name": None,
            "seed": task.seed, "engine": task.engine, **dict(task.params)}


@dataclass(frozen=True)
class _Failed:
    """A run's exception and its formatted traceback, returned (not raised) by a Dask task:
    the worker then logs nothing, and the traceback survives pickling."""

    exc: BaseException
    traceback: str


def _run_task_caught(task: SweepTask, log_dir: str | None) -> dict[str, Any] | _Failed:
    """:func:`run_task` on a Dask worker; a run's error comes back as :class:`_Failed`."""
    try:
        return run_task(task, log_dir)
    except Exception as exc:  # noqa: BLE001 - the run's error, recorded by the client
        return _Failed(exc, _format_traceback(exc))


def _format_traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _failed_row(task: SweepTask, failure: _Failed) -> dict[str, Any]:
    exc = failure.exc
    return {**_identity(task), "error": f"{type(exc).__name__}: {exc}",
            "traceback": failure.traceback}


# -- the sweep -------------------------------------------------------------------------------

class SweepError(OmnisimError):
    """Some runs of a sweep failed. Raised after every other run finished; ``results`` holds
    the whole table (failed runs with ``error`` and ``traceback`` columns and no metrics)."""

    exit_code = 1

    def __init__(self, message: str, results: pd.DataFrame):
        super().__init__(message)
        self.results = results


def _results(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    table = pd.DataFrame(sorted(rows, key=lambda r: r["run_id"])).reset_index(drop=True)
    if "error" in table.columns:  # last, after every metric
        last = [c for c in ("error", "traceback") if c in table.columns]
        table = table[[c for c in table.columns if c not in last] + last]
    return table


def _iter_sequential(tasks: list[SweepTask], log_dir: Any) -> Iterator[tuple[SweepTask, Any]]:
    for task in tasks:
        try:
            yield task, run_task(task, log_dir)
        except Exception as exc:  # noqa: BLE001 - recorded as the run's error, the sweep goes on
            yield task, _Failed(exc, _format_traceback(exc))


def _iter_dask(tasks: list[SweepTask], scheduler: Any, log_dir: Any, n_workers: int,
               processes: bool) -> Iterator[tuple[SweepTask, Any]]:
    from distributed import as_completed

    from omnisim.cluster import dask_client

    with dask_client("local" if scheduler is None else scheduler, n_workers=n_workers,
                     processes=processes) as client:
        task_of = {client.submit(_run_task_caught, t, None if log_dir is None else str(log_dir),
                                 key=f"omnisim-sweep-{t.run_id}-{id(tasks)}", pure=False): t
                   for t in tasks}
        for fut in as_completed(list(task_of)):
            task = task_of[fut]
            try:
                yield task, fut.result()
            except Exception as exc:  # noqa: BLE001 - a lost worker (KilledWorker), recorded
                yield task, _Failed(exc, _format_traceback(exc))
            fut.release()


def _reusable(row: Mapping[str, Any], log_dir: Any) -> bool:
    """A journaled row stands in for its run if the log it promises (or not) is there."""
    if log_dir is None:
        return True
    expected = log_part_path(log_dir, int(row["run_id"]))
    return row.get("log_path") == str(expected) and expected.is_file()


def journaled_rows(tasks: Sequence[SweepTask], journal: str | Path,
                   log_dir: str | Path | None = None,
                   keys: Mapping[int, str] | None = None) -> dict[int, dict[str, Any]]:
    """``{run_id: row}`` of the runs ``journal`` already holds for ``tasks``: same task key
    and, with ``log_dir``, the promised log part present. ``keys``: the tasks' keys by run id
    when already computed."""
    keys = keys if keys is not None else {t.run_id: task_key(t) for t in tasks}
    done = read_journal(journal)
    log_dir = Path(log_dir).absolute() if log_dir is not None else None
    return {rid: done[k] for rid, k in keys.items() if k in done and _reusable(done[k], log_dir)}


def sweep(scenarios: Any, policies: Sequence[Any], seeds: int | Sequence[int] = 3, *,
          grid: Mapping[str, Sequence[Any]] | None = None,
          policy_grid: Mapping[str, Sequence[Any]] | None = None, n_users: int | None = None,
          days: float | None = None, engine: str = "fast", scheduler: Any = None,
          n_workers: int = 2, processes: bool = True, log_dir: str | Path | None = None,
          progress: bool = True, tasks: list[SweepTask] | None = None,
          journal: str | Path | None = None, on_error: str = "raise") -> pd.DataFrame:
    """Run scenarios × policies × seeds and return one metrics row per run.

    Parameters
    ----------
    scenarios, policies, seeds, grid, policy_grid, n_users, days, engine
        See :func:`sweep_tasks` (ignored when ``tasks`` is given).
    scheduler
        ``None``: a ``LocalCluster`` of ``n_workers`` workers (one thread each; worker
        processes unless ``processes=False``) started for this call; a scheduler address
        (``"tcp://10.0.0.5:8786"``); a ``distributed.Client``; or ``"sequential"`` to run in
        this process without Dask (the reference the distributed results equal).
    log_dir
        Write each run's log as ``<log_dir>/run=<run_id>/part-00000.parquet`` (made absolute
        here; beyond one machine it must be a folder every worker sees).
    progress
        A tqdm bar advancing as runs finish (in completion order).
    journal
        A JSON-lines file (:mod:`omnisim.sweep_journal`): each finished run's row is appended
        as it arrives, and runs already in it with the same task key are not run again — pass
        the journal of an interrupted sweep to resume it. The rows it gives back equal the
        rows the runs would give.
    on_error
        A run that raises (or whose worker died) never stops the others. ``"raise"``: after
        all runs, raise :class:`SweepError`, whose ``results`` hold the table; ``"record"``:
        return the table, failed runs with an ``error`` message, the run's ``traceback``
        (formatted where it was raised) and no metrics.

    Returns
    -------
    pandas.DataFrame
        Sorted by ``run_id``: ``run_id, scenario, policy, base_policy, policy_name, seed,
        engine`` (``base_policy``: the policy a ``policy_grid`` variant was made from), the
        grid's columns, every flat metric of :func:`omnisim.metrics.log_metrics`,
        ``log_path`` when ``log_dir`` is given, and ``error``, ``traceback`` when a run failed.
    """
    if on_error not in ("raise", "record"):
        raise ValueError(f"on_error={on_error!r}; expected 'raise' or 'record'")
    if tasks is None:
        tasks = sweep_tasks(scenarios, policies, seeds, grid=grid, policy_grid=policy_grid,
                            n_users=n_users, days=days, engine=engine)
    if log_dir is not None:  # absolute: workers may run in another folder
        log_dir = Path(log_dir).absolute()
        log_dir.mkdir(parents=True, exist_ok=True)
    book = SweepJournal(journal) if journal is not None else None
    keys = {t.run_id: task_key(t) for t in tasks} if book is not None else {}
    reused = journaled_rows(tasks, journal, log_dir, keys) if book is not None else {}
    rows = list(reused.values())
    todo = [t for t in tasks if t.run_id not in reused]
    if scheduler == "sequential":
        stream = _iter_sequential(todo, log_dir)
    else:
        stream = _iter_dask(todo, scheduler, log_dir, n_workers, processes) if todo else iter(())
    failed: list[tuple[SweepTask, _Failed]] = []
    try:
        with tqdm(total=len(tasks), initial=len(rows), unit="run", desc="sweep",
                  disable=not progress) as bar:
            for task, got in stream:
                if isinstance(got, _Failed):
                    failed.append((task, got))
                    rows.append(_failed_row(task, got))
                else:
                    rows.append(got)
                    if book is not None:
                        book.append(keys[task.run_id], got)
                if failed:
                    bar.set_postfix(failed=len(failed), refresh=False)
                bar.update()
    finally:
        if book is not None:
            book.close()
        if hasattr(stream, "close"):  # a loop left early (Ctrl-C, an error): close its cluster
            stream.close()            # now, workers before scheduler, not at interpreter exit
    table = _results(rows)
    if failed and on_error == "raise":
        lines = [f"run {t.run_id} ({t.scenario_name}, {t.policy_label}, seed {t.seed}): "
                 f"{type(f.exc).__name__}: {f.exc}" for t, f in failed[:5]]
        more = f"; and {len(failed) - 5} more" if len(failed) > 5 else ""
        kept = f"; the {len(tasks) - len(failed)} finished runs are in {journal}" if book else ""
        raise SweepError(f"{len(failed)} of {len(tasks)} sweep runs failed: " + "; ".join(lines)
                         + more + kept + "; the error's .results holds the whole table "
                         "(or pass on_error='record')", table)
    return table


# -- config files ----------------------------------------------------------------------------

def _fail(source: str, key: str, expected: str, value: Any) -> SweepConfigError:
    return SweepConfigError(f"{source}: {key}: expected {expected}, got {value!r}")


def load_sweep_config(source: str | Path | Mapping[str, Any]) -> SweepConfig:
    """Read and validate a sweep config (module docstring); errors name the key path."""
    from omnisim.experiment import ENGINES
    from omnisim.model.scenario import ScenarioError, load_scenario
    from omnisim.policies.registry import get_policy, load_policy

    data, label = _spec.load_yaml(source, SweepConfigError)
    label = label or "<sweep config>"
    if not isinstance(data, Mapping):
        raise SweepConfigError(f"{label}: expected a mapping of sweep keys, got {type(data).__name__}")
    for key in data:
        if key not in CONFIG_KEYS:
            raise SweepConfigError(f"{label}: {key}: unknown key; expected one of "
                                   f"{', '.join(CONFIG_KEYS)}")
    scen = data.get("scenario", "default")
    items = scen if isinstance(scen, list) else [scen]
    if not items or not all(isinstance(x, str) and x for x in items):
        raise _fail(label, "scenario", "a built-in scenario name or a YAML path, or a non-empty "
                    "list of them", scen)
    bases: dict[str, Any] = {}  # label -> scenario, in the order given
    for i, item in enumerate(items):
        key = f"scenario[{i}]" if isinstance(scen, list) else "scenario"
        if isinstance(source, (str, Path)) and item.endswith((".yaml", ".yml")):
            item = str(Path(source).parent / item)
        try:
            sc = load_scenario(item)
        except ScenarioError as exc:
            raise SweepConfigError(f"{label}: {key}: {exc}") from None
        name = sc.name if sc.name not in bases else f"{sc.name}#{i}"
        bases[name] = sc
    n_users = data.get("n_users")
    if n_users is not None and (isinstance(n_users, bool) or not isinstance(n_users, int) or n_users < 1):
        raise _fail(label, "n_users", "an integer >= 1", n_users)
    days = data.get("days")
    if days is not None and (isinstance(days, bool) or not isinstance(days, (int, float))
                             or not 0 < days < float("inf")):  # NaN fails too
        raise _fail(label, "days", "a finite number > 0", days)
    engine = data.get("engine", "fast")
    if engine not in ENGINES:
        raise _fail(label, "engine", "one of " + ", ".join(ENGINES), engine)
    seeds = data.get("seeds", 3)
    if isinstance(seeds, bool) or not (
            (isinstance(seeds, int) and seeds >= 1)
            or (isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool)
                                                          and s >= 0 for s in seeds))):
        raise _fail(label, "seeds", "a count >= 1 or a non-empty list of integers >= 0", seeds)
    if isinstance(seeds, list):  # as compare: a repeated seed would count one replicate twice
        dup = sorted({s for s in seeds if seeds.count(s) > 1})
        if dup:
            raise SweepConfigError(f"{label}: seeds: {', '.join(map(str, dup))} given more than once "
                                   f"in {seeds}; list each seed once (every seed is one replicate)")
    grid = data.get("grid") or {}
    if not isinstance(grid, Mapping):
        raise _fail(label, "grid", "a mapping of scenario key paths to lists of values", grid)
    for path, values in grid.items():
        if not isinstance(values, list) or not values:
            raise _fail(label, f"grid.{path}", "a non-empty list of values", values)
        for v, base in itertools.product(values, bases.values()):  # against each scenario's schema
            try:
                base.replace(**_nested(str(path), v))
            except ScenarioError as exc:
                raise SweepConfigError(f"{label}: grid.{path}: {exc}") from None
            except TypeError as exc:
                raise SweepConfigError(f"{label}: grid.{path}: {exc}") from None
    policies = data.get("policies")
    if not isinstance(policies, list) or not policies:
        raise _fail(label, "policies", "a non-empty list of policy names or policy mappings", policies)
    for i, pol in enumerate(policies):
        if not isinstance(pol, (str, Mapping)):
            raise _fail(label, f"policies[{i}]", "a policy name or a policy mapping", pol)
        try:
            load_policy(pol) if isinstance(pol, Mapping) else get_policy(pol)
        except _spec.SpecError as exc:
            raise SweepConfigError(f"{label}: policies[{i}]: {exc}") from None
    policy_grid = data.get("policy_grid") or {}
    if not isinstance(policy_grid, Mapping):
        raise _fail(label, "policy_grid", "a mapping of policy document paths to lists of values",
                    policy_grid)
    for path, values in policy_grid.items():
        if not isinstance(values, list) or not values:
            raise _fail(label, f"policy_grid.{path}", "a non-empty list of values", values)
        if path in grid:
            raise SweepConfigError(f"{label}: policy_grid.{path}: also in grid; a path names a "
                                   f"scenario key or a policy key, not both")
    if policy_grid:  # every variant must load: check them all now, not on a worker
        from omnisim.tune import TuneError

        for i, pol in enumerate(policies):
            for path, values in policy_grid.items():
                for v in values:
                    try:
                        load_policy(policy_variants([pol], {path: [v]})[0][0])
                    except (TuneError, _spec.SpecError) as exc:
                        raise SweepConfigError(f"{label}: policy_grid.{path} = {v!r} on "
                                               f"policies[{i}] ({_policy_label(pol)}): {exc}") from None
    name = data.get("name", Path(label).stem if not isinstance(source, Mapping) else "sweep")
    tasks = sweep_tasks(bases, policies, seeds, grid=grid, policy_grid=policy_grid,
                        n_users=n_users, days=float(days) if days is not None else None,
                        engine=engine)
    return SweepConfig(str(name), tasks, label)


def run_sweep_config(source: str | Path | Mapping[str, Any], *, scheduler: Any = None,
                     n_workers: int = 2, log_dir: str | Path | None = None,
                     progress: bool = True, journal: str | Path | None = None,
                     on_error: str = "raise") -> pd.DataFrame:
    """Load a sweep config and run it (see :func:`sweep`)."""
    cfg = load_sweep_config(source)
    return sweep(None, [], tasks=cfg.tasks, scheduler=scheduler, n_workers=n_workers,
                 log_dir=log_dir, progress=progress, journal=journal, on_error=on_error)
