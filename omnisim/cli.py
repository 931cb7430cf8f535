"""The ``omnisim`` command. Every sub-command has ``--help``; bad input exits 2 with a
one-paragraph message (never a traceback), a failed run exits 1."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
import pandas as pd

from omnisim import __version__
from omnisim.cli_common import OmnisimGroup, check_file_path, check_file_suffix


@click.group(cls=OmnisimGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="omnisim")
def main() -> None:
    """omnisim: simulate customers, compare and learn messaging policies, report on real data.

    Start with `omnisim demo`, or `omnisim data list` to see the real data sets shipped.
    """


@main.command("validate")
@click.argument("log", type=click.Path(path_type=Path))
def validate_cmd(log: Path) -> None:
    """Check that LOG (CSV, CSV.gz or Parquet) is a valid engagement log and summarise it."""
    from omnisim.log import read_log, summarize

    s = summarize(read_log(log))
    click.echo(f"{log}: valid engagement log: {s.events} events, {s.users} users, "
               f"{s.start:%Y-%m-%d %H:%M} to {s.end:%Y-%m-%d %H:%M} UTC, channels {', '.join(s.channels) or 'none'}")


# ---------------------------------------------------------------- data
@main.group(cls=OmnisimGroup)
def data() -> None:
    """The real engagement data sets shipped in data/ (see data/README.md)."""


@data.command("list")
def data_list() -> None:
    """List the shipped data sets with their size, source and licence."""
    from omnisim.datasets import list_datasets

    for d in list_datasets():
        click.echo(f"{d.name:<12} {d.rows:>7,} rows  {d.description}  [{d.licence}]")


@data.command("convert")
@click.argument("name")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Where to write the log (.csv, .csv.gz or .parquet).")
def data_convert(name: str, out: Path) -> None:
    """Convert data set NAME into an engagement log at OUT (plus a users table if it has one)."""
    from omnisim.datasets import convert

    log_path, users_path = convert(name, out)
    click.echo(f"log:   {log_path}")
    if users_path is not None:
        click.echo(f"users: {users_path}")


# ---------------------------------------------------------------- simulate / compare
_scenario_opt = click.option("--scenario", default="default", show_default=True,
                             help="Built-in scenario name or a scenario YAML file.")
_users_opt = click.option("--users", "n_users", type=click.IntRange(min=1), default=None,
                          help="Number of users (default: the scenario's).")
def _finite_days(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not np.isfinite(value):  # FloatRange lets nan and inf through
        raise click.BadParameter(f"{value} is not a finite number of days; expected a number > 0")
    return value


_days_opt = click.option("--days", type=click.FloatRange(min=0, min_open=True), default=None,
                         callback=_finite_days, help="Horizon in days (default: the scenario's).")
_engine_opt = click.option("--engine", type=click.Choice(["fast", "simpy"]), default="fast",
                           show_default=True,
                           help="Simulation engine: fast (vectorised) or simpy (the reference).")


def _jsonable(o):
    """Plain JSON values: numpy scalars unwrapped, NaN as null (JSON has no NaN)."""
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.integer, np.bool_)):
        return o.item()
    if isinstance(o, (float, np.floating)):
        return None if np.isnan(o) else float(o)
    if isinstance(o, (str, int, bool)) or o is None:
        return o
    return str(o)


def _dumps(o) -> str:
    return json.dumps(_jsonable(o), allow_nan=False)


@main.command("simulate")
@_scenario_opt
@click.option("--policy", default="seed_journey+pressure", show_default=True,
              help="Policy name (see `omnisim policies`) or a policy YAML file.")
@_users_opt
@_days_opt
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same log).")
@click.option("--log", "log_out", type=click.Path(path_type=Path), default=None,
              help="Write the engagement log here (.parquet, .csv or .csv.gz); the users table next to it "
                   "as <stem>_users.parquet, where `ope` and `policy train` find it.")
@click.option("--log-dir", "log_dir", type=click.Path(path_type=Path), default=None,
              help="Fast engine, for large runs: write the log as Parquet parts in this folder and "
                   "score it one chunk of 50,000 users at a time (the whole log is never in "
                   "memory); users table next to the folder (<folder>_users.parquet).")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as one JSON object.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@_engine_opt
@click.option("--jobs", "n_jobs", type=click.IntRange(min=-1), default=1, show_default=True,
              help="Fast engine: processes simulating chunks of 50,000 users at once (-1: one "
                   "per CPU). Same log for any value; helps only above 50,000 users.")
@click.option("--scheduler", default=None, metavar="ADDR",
              help="Fast engine: run the chunks of 50,000 users as tasks on Dask distributed: "
                   "'local' (a LocalCluster of --jobs workers) or tcp://host:8786. Same log.")
def simulate_cmd(scenario: str, policy: str, n_users: int | None, days: float | None, seed: int,
                 log_out: Path | None, log_dir: Path | None, as_json: bool, progress: bool,
                 engine: str, n_jobs: int, scheduler: str | None) -> None:
    """Simulate one policy on a scenario and print its metrics."""
    from omnisim.experiment import run_one

    if n_jobs == 0:
        raise click.BadParameter("expected a number of processes >= 1, or -1 (one per CPU)",
                                 param_hint="--jobs")
    if n_jobs != 1 and engine != "fast":
        raise click.BadParameter("applies to the fast engine only", param_hint="--jobs")
    if scheduler is not None and engine != "fast":
        raise click.BadParameter("applies to the fast engine only", param_hint="--scheduler")
    check_file_path(log_out, "--log")
    check_file_suffix(log_out, "--log", (".parquet", ".pq", ".csv", ".csv.gz"))
    if log_dir is not None and (engine != "fast" or log_out is not None):
        raise click.BadParameter("applies to the fast engine only, without --log", param_hint="--log-dir")
    if log_dir is not None and log_dir.exists() and any(log_dir.glob("part-*.parquet")):
        raise click.BadParameter(f"{log_dir} already holds log parts (part-*.parquet) of another "
                                 f"run; give an empty or new folder", param_hint="--log-dir")
    r = run_one(scenario, policy, seed, n_users=n_users, days=days, engine=engine,
                progress=progress and not as_json, n_jobs=n_jobs, scheduler=scheduler,
                log_dir=log_dir)
    m = {"users": r.metrics["users"], "days": r.metrics["days"], "seed": seed, "policy": r.policy, **r.metrics}
    if log_out is not None or log_dir is not None:
        target = log_out if log_out is not None else log_dir
        if log_out is not None:
            from omnisim.log import write_log

            write_log(r.log, log_out)
        from omnisim.datasets import users_path_for  # where `ope`, `policy train` look for it

        users_path = users_path_for(target)
        r.users.to_parquet(users_path, index=False)
        m["log"], m["users_table"] = str(target), str(users_path)
    if as_json:
        click.echo(_dumps(m))
        return
    for k, v in m.items():
        click.echo(f"{k:>26}: {v}")


@main.command("compare")
@_scenario_opt
@click.option("--policies", default="seed_journey+pressure,blast,email_only", show_default=True,
              help="Comma-separated policy names, policy YAML files or artifacts (.json).")
@click.option("--seeds", type=click.IntRange(min=1), default=5, show_default=True,
              help="Number of seeds (0..K-1); every policy runs on the same seeds.")
@_users_opt
@_days_opt
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON records.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Also write the comparison table (.csv, or .parquet) and the per-run table "
                   "next to it (<name>_runs with the same suffix).")
@_engine_opt
def compare_cmd(scenario: str, policies: str, seeds: int, n_users: int | None, days: float | None,
                as_json: bool, out: Path | None, engine: str) -> None:
    """Compare policies over seeds: each metric's mean and 95 % CI."""
    from omnisim.experiment import compare

    check_file_path(out, "--out")
    check_file_suffix(out, "--out", (".csv", ".parquet", ".pq"))
    names = [p.strip() for p in policies.split(",") if p.strip()]
    table = compare(scenario, names, seeds, n_users=n_users, days=days, progress=not as_json,
                    engine=engine)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        runs = table.attrs["runs"]
        if out.suffix.lower() in (".parquet", ".pq"):
            summary = table.copy()
            summary.attrs = {}  # the runs table lives in attrs: written on its own below
            summary.to_parquet(out, index=False)
            runs.to_parquet(out.with_name(out.stem + "_runs" + out.suffix), index=False)
        else:
            table.to_csv(out, index=False)
            runs.to_csv(out.with_name(out.stem + "_runs.csv"), index=False)
    if as_json:
        click.echo(_dumps(table.to_dict(orient="records")))
        return
    show = ["messages_per_user", "open_rate", "click_rate", "conversions", "revenue_minus_cost",
            "unsubscribes", "unsubscribe_rate", "overload_rate", "cap_violations", "quiet_hour_violations"]
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        for m in show:
            click.echo(f"\n{m} (mean [95% CI] over {seeds} seeds)" if seeds > 1 else
                       f"\n{m} (one seed: no confidence interval; use --seeds 2 or more)")
            for _, row in table.iterrows():
                ci = ("" if np.isnan(row[m + "_low"]) else
                      f"  [{row[m + '_low']:.4g}, {row[m + '_high']:.4g}]")
                click.echo(f"  {row['policy']:<28} {row[m + '_mean']:>10.4g}{ci}")


@main.command("policies")
def policies_cmd() -> None:
    """List the built-in policies."""
    from omnisim.policies.registry import list_policies

    for name in list_policies():
        click.echo(name)


@main.command("demo")
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports"), show_default=True,
              help="Folder for the reports, logs and the exported policy.")
@click.option("--users", "n_users", type=click.IntRange(min=1), default=1500, show_default=True)
@click.option("--days", type=float, default=21, show_default=True)
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True)
def demo_cmd(out: Path, n_users: int, days: float, seeds: int) -> None:
    """The main job on embedded defaults: real-data report, simulate, compare, export, report."""
    from omnisim.demo import run_demo

    for line in run_demo(out, n_users=n_users, days=days, seeds=seeds):
        click.echo(line)


# ---------------------------------------------------------------- command groups in their own modules
# One line per group; each module defines a click command or group named as imported.
from omnisim.cli_calibrate import calibrate  # noqa: E402
from omnisim.cli_ope import ope  # noqa: E402
from omnisim.cli_policy import policy  # noqa: E402
from omnisim.cli_report import report  # noqa: E402
from omnisim.cli_sweep import sweep  # noqa: E402
from omnisim.cli_tune import tune  # noqa: E402
from omnisim.send.cli import send  # noqa: E402

for _command in (policy, report, send, ope, sweep, calibrate, tune):
    main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    main()
