"""`omnisim sweep`: scenarios × policies × seeds from a config file, on Dask distributed.

Finished runs are journaled beside ``--out`` (``<out>.runs.jsonl``) as they arrive. If the
sweep is stopped or some runs fail, the journal stays and ``--resume`` runs only the rest;
once every run finished and ``--out`` is written, the journal is deleted.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click


def journal_path(out: Path) -> Path:
    """The journal of a sweep writing ``out``: ``results.parquet`` → ``results.parquet.runs.jsonl``."""
    return out.with_name(out.name + ".runs.jsonl")


def _write(table, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".csv":
        table.to_csv(out, index=False)
    else:
        table.to_parquet(out, index=False)


@click.command("sweep")
@click.option("--config", "config", type=click.Path(path_type=Path), required=True,
              help="Sweep config YAML (see omnisim/sweep.py or docs/engines.md).")
@click.option("--scheduler", default=None, metavar="ADDR",
              help="Dask scheduler address (tcp://host:8786); default: a LocalCluster; "
                   "'sequential' runs without Dask.")
@click.option("--workers", "n_workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Workers of the LocalCluster (ignored with --scheduler).")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Results table: one row per run (.parquet or .csv).")
@click.option("--logs", "log_dir", type=click.Path(path_type=Path), default=None,
              help="Also write every run's log as partitioned Parquet under this folder.")
@click.option("--resume", is_flag=True,
              help="Keep the runs journaled by an earlier, unfinished sweep to the same --out "
                   "and run only the rest.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def sweep(config: Path, scheduler: str | None, n_workers: int, out: Path, log_dir: Path | None,
          resume: bool, progress: bool) -> None:
    """Run the sweep in CONFIG and write one metrics row per run to OUT.

    Exits 1 when runs failed: OUT then holds every run (failed ones with an `error` column),
    and `--resume` reruns only the failed ones.
    """
    from omnisim.cluster import exit_interrupted
    from omnisim.sweep import journaled_rows, load_sweep_config, sweep as run
    from omnisim.sweep_journal import read_journal

    from omnisim.cli_common import check_file_path, check_file_suffix

    check_file_path(out, "--out")
    check_file_suffix(out, "--out", (".parquet", ".pq", ".csv"))
    cfg = load_sweep_config(config)  # validate before starting any cluster
    journal = journal_path(out)
    if journal.exists() and not resume:
        n = len(read_journal(journal))
        raise click.UsageError(
            f"{journal} holds {n} finished runs of an earlier sweep to {out} that did not "
            f"finish; rerun with --resume to keep them and run only the rest, or delete that "
            f"file to start over")
    kept = len(journaled_rows(cfg.tasks, journal, log_dir)) if resume else 0
    click.echo(f"sweep {cfg.name}: {len(cfg.tasks)} runs"
               + (f" ({kept} already done, from {journal})" if resume else ""), err=True)
    try:
        table = run(None, [], tasks=cfg.tasks, scheduler=scheduler, n_workers=n_workers,
                    log_dir=log_dir, progress=progress, journal=journal, on_error="record")
    except KeyboardInterrupt:
        exit_interrupted(f"interrupted: finished runs are kept in {journal}; run the same "
                         f"command with --resume to run only the rest")
    _write(table, out)
    failed = table[table["error"].notna()] if "error" in table.columns else table.iloc[:0]
    click.echo(f"results: {out} ({len(table)} runs)")
    if log_dir is not None:
        click.echo(f"logs:    {log_dir}/run=<run_id>/part-00000.parquet")
    click.echo(f"report:  omnisim report notebook sweep_results --param results_path={out}")
    if len(failed):
        for r in failed.itertuples():
            click.echo(f"failed: run {r.run_id} ({r.scenario}, {r.policy}, seed {r.seed}): "
                       f"{r.error}", err=True)
        click.echo(f"error: {len(failed)} of {len(table)} runs failed (listed above; their rows "
                   f"in {out} have an error, its traceback and no metrics); fix the cause and "
                   f"rerun with --resume to run only those", err=True)
        sys.exit(1)
    journal.unlink(missing_ok=True)
