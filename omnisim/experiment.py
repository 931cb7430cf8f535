"""Policies × seeds on one scenario, scored from the logs, summarised with CIs over seeds.

Every policy runs on the same seeds, so each seed gives every policy the same population
and world randomness (common random numbers) and differences are not sampling noise alone.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from omnisim.errors import OmnisimError
from omnisim.metrics import combine_metrics, log_metrics
from omnisim.stats import mean_ci


class ExperimentError(OmnisimError, ValueError):
    """Bad arguments to an experiment (no policy, duplicate seeds or policies); says which."""


#: Metrics summarised by :func:`compare`, in display order. Units: ``messages_per_user*``,
#: ``clicks_per_user``, ``unsubscribes_per_user`` per user of the population over the
#: horizon; ``open_rate``, ``click_rate``, ``unsubscribe_rate`` per message sent (``open_rate``
#: and ``click_rate`` NaN in a run that sends nothing, ``unsubscribe_rate`` 0 there: see
#: :func:`omnisim.metrics.log_metrics`); counts and money per run.
SUMMARY_METRICS: tuple[str, ...] = (
    "messages_per_user", "messages_per_user_email", "messages_per_user_sms", "messages_per_user_push",
    "open_rate", "click_rate", "clicks_per_user", "conversions", "purchases", "revenue", "cost",
    "revenue_minus_cost", "unsubscribes", "unsubscribe_rate", "unsubscribes_per_user", "churn",
    "overload_rate", "cap_violations", "quiet_hour_violations", "incremental_conversions",
)


@dataclass(frozen=True)
class RunResult:
    """One simulation run: its log (``None`` when written to a ``log_dir``), users table and
    metrics."""

    policy: str
    seed: int
    log: pd.DataFrame | None
    users: pd.DataFrame
    metrics: dict[str, Any]


def _resolve_policy(policy):
    """A policy object from a built-in name, a policy YAML file or an artifact (.json)."""
    if isinstance(policy, (str, Path)):
        if str(policy).endswith(".json"):
            from omnisim.policies.artifact import load_artifact

            return load_artifact(policy)
        from omnisim.policies.registry import get_policy

        return get_policy(policy)
    return policy


def _resolve_scenario(scenario):
    if isinstance(scenario, str):
        from omnisim.model.scenario import load_scenario

        return load_scenario(scenario)
    return scenario


def reference_rules():
    """The rule set violations are counted against when a policy brings none of its own."""
    from omnisim.policies.pressure import default_rules

    return default_rules()


def holdout_members(policy, user_ids: Iterable[str]) -> set[str]:
    """Users a policy's global holdout withholds marketing from (empty if it has none)."""
    holdout = getattr(policy, "holdout", None)
    if holdout is None:
        return set()
    return {u for u in user_ids if holdout.contains(u)}


#: Simulation engines by name: ``fast`` (vectorised, the default; parity with the reference
#: engine is tested in tests/test_engine_parity.py) and ``simpy`` (the readable reference).
ENGINES: tuple[str, ...] = ("fast", "simpy")
DEFAULT_ENGINE = "fast"


def get_engine(engine: str):
    """The ``simulate`` function of engine ``engine`` (``fast`` or ``simpy``)."""
    if engine == "fast":
        from omnisim.model.engine_fast import simulate
    elif engine == "simpy":
        from omnisim.model.engine_simpy import simulate
    else:
        raise ValueError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    return simulate


def run_one(scenario, policy, seed: int, *, n_users: int | None = None, days: float | None = None,
            rules=None, engine: str = DEFAULT_ENGINE, progress: bool = False,
            n_jobs: int = 1, scheduler: Any = None, log_dir: str | Path | None = None) -> RunResult:
    """Simulate one policy on one seed with ``engine`` (``fast`` | ``simpy``) and score the log.

    ``n_jobs`` / ``scheduler`` (fast engine only): processes simulating chunks of users at
    once, or a Dask cluster running them; the log does not depend on either (see
    :func:`omnisim.model.engine_fast.simulate`). ``log_dir`` (fast engine only): the log goes
    to Parquet parts there and is scored one chunk of users at a time
    (:func:`omnisim.metrics.combine_metrics`), so memory holds one chunk, never the whole
    log; ``result.log`` is then ``None``."""
    simulate = get_engine(engine)
    if (n_jobs != 1 or scheduler is not None or log_dir is not None) and engine != "fast":
        raise ValueError(f"n_jobs, scheduler and log_dir apply to the fast engine only "
                         f"(engine {engine!r})")
    kw: dict[str, Any] = {"n_jobs": n_jobs} if n_jobs != 1 else {}
    if scheduler is not None:
        kw["scheduler"] = scheduler
    if log_dir is not None:
        kw["out"] = log_dir
    scenario, policy = _resolve_scenario(scenario), _resolve_policy(policy)
    if getattr(policy, "update_every_h", None):
        # online learners change as they run: each run starts from the policy as given, so
        # seeds stay independent replicates and the caller's object is left untouched
        policy = copy.deepcopy(policy)
    res = simulate(scenario, policy, n_users=n_users, days=days, seed=seed, progress=progress,
                   **kw)
    horizon = days if days is not None else scenario.days
    rules = getattr(policy, "rules", None) or rules or reference_rules()
    holdout = holdout_members(policy, res.users["user_id"].astype(str))
    if log_dir is None:
        metrics = log_metrics(res.log, res.users, days=horizon, rules=rules, holdout_users=holdout)
    else:
        metrics = combine_metrics([log_metrics(log, users, days=horizon, rules=rules,
                                               holdout_users=holdout)
                                   for users, log in res.iter_chunks()])
    return RunResult(policy.name, seed, res.log, res.users, metrics)


def _check_seeds(seeds: int | Sequence[int]) -> list[int]:
    """``seeds`` as a list: a count K >= 1 gives 0..K-1; a list must be distinct integers
    (a repeated seed would count one replicate twice in the CIs over seeds)."""
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ExperimentError(f"seeds: expected a count >= 1 or a list of seeds, got {seeds!r}")
        return list(range(int(seeds)))
    out = list(seeds)
    if not out or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) for s in out):
        raise ExperimentError(f"seeds: expected a count >= 1 or a non-empty list of integers, got {seeds!r}")
    dup = sorted({int(s) for s in out if out.count(s) > 1})
    if dup:
        raise ExperimentError(f"seeds: {dup} given more than once in {out}; every seed is one replicate")
    return [int(s) for s in out]


def policy_labels(specs: Sequence, policies: Sequence) -> list[str]:
    """One distinct label per policy: its name, or ``"<name> [<spec>]"`` where two policies
    share a name (e.g. ``blast+pressure`` and a tuned artifact of it), so their runs are
    never pooled into one row. The same spec given twice is an :class:`ExperimentError`."""
    names = [str(p.name) for p in policies]
    labels = [n if names.count(n) == 1 else
              (f"{n} [{s}]" if isinstance(s, (str, Path)) else f"{n} #{i + 1}")
              for i, (n, s) in enumerate(zip(names, specs))]
    dup = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dup:
        raise ExperimentError(f"policies: {dup[0]} is given more than once; list each policy once")
    return labels


def run_grid(scenario, policies: Sequence, seeds: int | Sequence[int], *, n_users: int | None = None,
             days: float | None = None, progress: bool = True, keep_logs: bool = False,
             engine: str = DEFAULT_ENGINE) -> pd.DataFrame:
    """Every policy on every seed with ``engine``; one row per run with its metrics (flat columns
    of :func:`omnisim.metrics.log_metrics`).

    ``policy`` is the policy's name, or ``"<name> [<spec>]"`` when two policies share a name
    (:func:`policy_labels`)."""
    get_engine(engine)  # fail early on an unknown engine
    seeds = _check_seeds(seeds)
    specs = [policies] if isinstance(policies, (str, Path)) else list(policies)  # one policy
    if not specs:
        raise ExperimentError("policies: expected at least one policy name, file or object")
    scenario = _resolve_scenario(scenario)
    policies = [_resolve_policy(p) for p in specs]
    labels = policy_labels(specs, policies)
    rows, logs = [], {}
    bar = tqdm(total=len(policies) * len(seeds), desc="simulating", unit="run", disable=not progress)
    for seed in seeds:
        for pol, label in zip(policies, labels):
            r = run_one(scenario, pol, seed, n_users=n_users, days=days, engine=engine)
            flat = {k: v for k, v in r.metrics.items() if not isinstance(v, dict)}
            rows.append({"policy": label, "seed": seed, **flat})
            if keep_logs:
                logs[(label, seed)] = (r.log, r.users)
            bar.update()
    bar.close()
    runs = pd.DataFrame(rows)
    if keep_logs:
        runs.attrs["logs"] = logs
    return runs


def summarize_runs(runs: pd.DataFrame, metrics: Sequence[str] = SUMMARY_METRICS,
                   confidence: float = 0.95, by: Sequence[str] = ("policy",)) -> pd.DataFrame:
    """One row per group of ``by`` (default: per policy; a sweep: ``["scenario", "policy"]``):
    ``seeds`` (distinct seeds of its finished runs) and, for each metric, ``<m>_mean``,
    ``<m>_low``, ``<m>_high`` over seeds (Student t, ``confidence``). The seed is the unit:
    a group's runs on one seed are averaged first, and with fewer than two seeds the
    interval is NaN (no spread can be estimated).

    Failed sweep runs (an ``error``, :func:`omnisim.sweep.sweep`) are left out of the
    statistics; when there are any, a ``failed`` column counts them per group."""
    by = list(by)
    failed = runs["error"].notna() if "error" in runs.columns else pd.Series(False, index=runs.index)
    out = []
    for key, grp in runs.groupby(by, sort=False):
        ok = grp[~failed.loc[grp.index]]
        row: dict[str, Any] = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        row["seeds"] = int(ok["seed"].nunique())
        if failed.any():
            row["failed"] = int(failed.loc[grp.index].sum())
        for m in metrics:
            if m in ok:
                row[f"{m}_mean"], row[f"{m}_low"], row[f"{m}_high"] = _ci_over_seeds(ok, m, confidence)
        out.append(row)
    return pd.DataFrame(out)


def _ci_over_seeds(runs: pd.DataFrame, metric: str, confidence: float) -> tuple[float, float, float]:
    """Mean and CI of ``metric`` over seeds: one value per seed (the mean of that seed's
    runs), NaN bounds with fewer than two finite seed values."""
    per_seed = pd.to_numeric(runs[metric], errors="coerce").groupby(runs["seed"]).mean()
    return mean_ci(per_seed, confidence)


def compare(scenario, policies: Sequence, seeds: int | Sequence[int] = 5, *, n_users: int | None = None,
            days: float | None = None, confidence: float = 0.95, progress: bool = True,
            engine: str = DEFAULT_ENGINE) -> pd.DataFrame:
    """Compare policies on a scenario: one row per policy, each metric's mean and CI over seeds.

    ``policies`` are names (see ``omnisim.policies.registry.list_policies``), policy objects,
    paths to policy YAML files or artifacts (``.json``); two that share a policy name are
    labelled ``"<name> [<spec>]"``. ``seeds`` is a count (0..K-1) or a list of distinct seeds;
    the intervals are over seeds (NaN with one seed). ``engine`` is ``fast`` (default) or
    ``simpy``. The per-run table is kept in ``result.attrs["runs"]``.

    Columns: ``policy``, ``seeds`` and ``<m>_mean``, ``<m>_low``, ``<m>_high`` for every
    ``m`` in :data:`SUMMARY_METRICS` (units there), e.g. ``click_rate`` (clicks per message
    sent), ``clicks_per_user``, ``unsubscribe_rate`` (unsubscribes per message sent) and
    ``unsubscribes_per_user`` (over the horizon).
    """
    runs = run_grid(scenario, policies, seeds, n_users=n_users, days=days, progress=progress,
                    engine=engine)
    summary = summarize_runs(runs, confidence=confidence)
    summary.attrs["runs"] = runs
    summary.attrs["confidence"] = confidence
    return summary


def plot_comparison(summary: pd.DataFrame, metrics: Sequence[str] = (
        "messages_per_user", "open_rate", "conversions", "revenue_minus_cost", "unsubscribes", "overload_rate"),
        ncols: int = 3):
    """One bar chart per metric, policies side by side, error bars = the CI over seeds."""
    import matplotlib.pyplot as plt

    metrics = [m for m in metrics if f"{m}_mean" in summary]
    nrows = int(np.ceil(len(metrics) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    x = np.arange(len(summary))
    for ax, m in zip(axes.flat, metrics):
        mean = summary[f"{m}_mean"].to_numpy(float)
        err = np.vstack([mean - summary[f"{m}_low"].to_numpy(float), summary[f"{m}_high"].to_numpy(float) - mean])
        ax.bar(x, mean, yerr=np.nan_to_num(err), capsize=4, color=plt.cm.tab10(x % 10))
        ax.set_xticks(x, summary["policy"], rotation=20, ha="right", fontsize=8)
        ax.set_title(m.replace("_", " "))
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def sweep(*args: Any, **kwargs: Any):
    """Scenarios × policies × seeds on Dask distributed; see :func:`omnisim.sweep.sweep`."""
    from omnisim.sweep import sweep as _sweep

    return _sweep(*args, **kwargs)
