"""Reading a sweep's results table and answering its questions: which policy wins in each
scenario variant, by how much (paired over common seeds), and how metrics move with the
grid. Used by the ``sweep_results`` report (``notebooks/sweep_results.ipynb``).

A results table is what :func:`omnisim.sweep.sweep` returns and ``omnisim sweep --out``
writes: one row per run with ``run_id, scenario, policy, seed``, the grid's columns (named
by their scenario key path, e.g. ``fatigue.half_life_h``), every flat metric, and ``error``
and ``traceback`` for runs that failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from omnisim.errors import OmnisimError
from omnisim.stats import holm, mean_ci, paired_p_value

__all__ = ["SweepResultsError", "REQUIRED_COLUMNS", "load_sweep_results", "grid_columns",
           "finished", "policy_leads", "plot_grid"]

REQUIRED_COLUMNS = ("run_id", "scenario", "policy", "seed")


class SweepResultsError(OmnisimError):
    """A results table that cannot be read or lacks what a sweep writes."""


def load_sweep_results(path: str | Path) -> pd.DataFrame:
    """Read a results table (``.parquet`` or ``.csv``), checking the columns a sweep writes."""
    path = Path(path)
    if not path.is_file():
        raise SweepResultsError(f"{path}: no such results file; write one with "
                                f"`omnisim sweep --config sweep.yaml --out {path}`")
    try:
        table = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any reader error is the file's problem
        raise SweepResultsError(f"{path}: cannot read it as a sweep results table "
                                f"({type(exc).__name__}: {exc})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise SweepResultsError(f"{path}: missing column(s) {', '.join(missing)}; expected the "
                                f"table `omnisim sweep --out` writes ({', '.join(REQUIRED_COLUMNS)}, "
                                f"metrics...)")
    if table.empty:
        raise SweepResultsError(f"{path}: the table has no runs")
    return table


def grid_columns(results: pd.DataFrame) -> list[str]:
    """The grid's columns: scenario key paths (``fatigue.half_life_h``), in table order."""
    return [c for c in results.columns if "." in str(c)]


def finished(results: pd.DataFrame) -> pd.DataFrame:
    """The runs that did not fail."""
    return results[results["error"].isna()] if "error" in results.columns else results


def policy_leads(results: pd.DataFrame, objective: str, *, confidence: float = 0.95,
                 maximize: bool = True) -> pd.DataFrame:
    """Per scenario variant: the best policy on ``objective`` and its lead over the runner-up.

    The lead is the mean of per-seed differences over the seeds both policies finished
    (policies of a sweep share seeds: common random numbers), with its Student-t interval
    and the paired t-test's two-sided ``p_value``. A sweep asks this once per variant, so
    ``p_holm`` adjusts the p-values over the variants (Holm) and ``clear`` is
    ``p_holm < 1 - confidence``: the chance that any variant's "clear" lead is a fluke stays
    below ``1 - confidence``.

    Returns one row per scenario variant: ``scenario, best, best_mean, runner_up,
    runner_up_mean, lead_mean, lead_low, lead_high, paired_seeds, p_value, p_holm, clear``.
    """
    ok = finished(results)
    if objective not in ok.columns:
        raise SweepResultsError(f"objective {objective!r} is not a column of the results; "
                                f"expected one of the metrics, e.g. revenue_minus_cost")
    sign = 1.0 if maximize else -1.0
    rows = []
    for scenario, grp in ok.groupby("scenario", sort=False):
        per_seed = grp.pivot_table(index="seed", columns="policy", values=objective, aggfunc="mean")
        means = per_seed.mean().sort_values(ascending=not maximize)
        row: dict[str, Any] = {"scenario": scenario, "best": means.index[0],
                               "best_mean": float(means.iloc[0])}
        if len(means) > 1:
            diff = sign * (per_seed[means.index[0]] - per_seed[means.index[1]]).dropna()
            m, lo, hi = mean_ci(diff.to_numpy(float), confidence)
            row.update(runner_up=means.index[1], runner_up_mean=float(means.iloc[1]),
                       lead_mean=m, lead_low=lo, lead_high=hi, paired_seeds=int(len(diff)),
                       p_value=paired_p_value(diff.to_numpy(float)))
        rows.append(row)
    cols = ["scenario", "best", "best_mean", "runner_up", "runner_up_mean", "lead_mean",
            "lead_low", "lead_high", "paired_seeds", "p_value", "p_holm", "clear"]
    out = pd.DataFrame(rows).reindex(columns=cols)
    out["p_holm"] = holm(out["p_value"].to_numpy(float))
    out["clear"] = (out["p_holm"] < 1 - confidence).to_numpy(bool)
    return out


def plot_grid(results: pd.DataFrame, metric: str, *, x: str | None = None,
              confidence: float = 0.95, max_panels: int = 6):
    """``metric`` against grid column ``x`` (default: the first), one line per policy (per
    ``base_policy``: a ``policy_grid``'s variants are the points of their policy's line), mean
    and CI over seeds; one panel per combination of the other grid columns (at most
    ``max_panels``). Without a grid: one bar per (scenario, policy)."""
    import matplotlib.pyplot as plt

    from omnisim.experiment import summarize_runs

    grid = grid_columns(results)
    if not grid:
        summary = summarize_runs(results, [metric], confidence, by=["scenario", "policy"])
        fig, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(summary)), 3.4))
        mean = summary[f"{metric}_mean"].to_numpy(float)
        err = np.vstack([mean - summary[f"{metric}_low"], summary[f"{metric}_high"] - mean])
        x = np.arange(len(summary))
        ax.bar(x, mean, yerr=np.nan_to_num(err), capsize=4, color=plt.cm.tab10(x % 10))
        labels = summary["policy"] if summary["scenario"].nunique() == 1 else \
            summary["scenario"] + " · " + summary["policy"]
        ax.set_xticks(x, labels, rotation=20, ha="right", fontsize=8)
        ax.set_title(metric.replace("_", " "))
        fig.tight_layout()
        return fig
    if x is not None and x not in grid:
        raise SweepResultsError(f"x={x!r} is not a grid column of the results; expected one of "
                                f"{', '.join(grid)}")
    x_col = x or grid[0]
    facets = [g for g in grid if g != x_col]
    # a line per policy; policy_grid variants of one policy are points of its line
    line = "base_policy" if "base_policy" in results.columns else "policy"
    summary = summarize_runs(results, [metric], confidence, by=[*facets, x_col, line])
    panels = [((), summary)] if not facets else list(summary.groupby(facets, sort=True))[:max_panels]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.4), squeeze=False)
    for ax, (key, part) in zip(axes.flat, panels):
        for policy, g in part.groupby(line, sort=False):
            g = g.sort_values(x_col)
            mean = g[f"{metric}_mean"].to_numpy(float)
            err = np.vstack([mean - g[f"{metric}_low"], g[f"{metric}_high"] - mean])
            ax.errorbar(g[x_col], mean, yerr=np.nan_to_num(err), marker="o", capsize=3, label=policy)
        key = key if isinstance(key, tuple) else (key,)
        where = ", ".join(f"{f}={v}" for f, v in zip(facets, key))
        ax.set(xlabel=x_col, ylabel=metric.replace("_", " "), title=where or metric.replace("_", " "))
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
