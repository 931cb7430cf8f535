"""`omnisim sweep`: scenarios × policies × seeds from a config file, on Dask distributed."""

from __future__ import annotations

from pathlib import Path

import click


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
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def sweep(config: Path, scheduler: str | None, n_workers: int, out: Path, log_dir: Path | None,
          progress: bool) -> None:
    """Run the sweep in CONFIG and write one metrics row per run to OUT."""
    from omnisim.sweep import load_sweep_config, sweep as run

    cfg = load_sweep_config(config)  # validate before starting any cluster
    click.echo(f"sweep {cfg.name}: {len(cfg.tasks)} runs", err=True)
    table = run(None, [], tasks=cfg.tasks, scheduler=scheduler, n_workers=n_workers,
                log_dir=log_dir, progress=progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        table.to_csv(out, index=False)
    else:
        table.to_parquet(out, index=False)
    click.echo(f"results: {out} ({len(table)} runs)")
    if log_dir is not None:
        click.echo(f"logs:    {log_dir}/run=<run_id>/part-00000.parquet")
