"""`omnisim tune`: search a policy's parameters in the simulator and export the winner."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("tune")
@click.option("--config", "config", type=click.Path(path_type=Path), required=True,
              help="Tuning config YAML (see docs/tuning.md or examples/tune.yaml).")
@click.option("--scheduler", default=None, metavar="ADDR",
              help="Dask scheduler address (tcp://host:8786), or 'local' for a LocalCluster of "
                   "--workers; default: run in this process.")
@click.option("--workers", "n_workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Workers of the LocalCluster (with --scheduler local).")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Artifact manifest to write (.json); the study is stored beside it as "
                   "<stem>.study.db unless the config sets storage.")
@click.option("--trials", type=click.IntRange(min=1), default=None,
              help="Override the config's total number of trials (a rerun continues the study).")
@click.option("--require-significant", is_flag=True,
              help="Export the winner only if it beats the starting policy significantly "
                   "(default: if it beats it on average on the fresh seeds).")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def tune(config: Path, scheduler: str | None, n_workers: int, out: Path, trials: int | None,
         require_significant: bool, progress: bool) -> None:
    """Tune the policy in CONFIG and export the winner to OUT (resumable: rerun to continue)."""
    from omnisim.tune import TuneError, export_tuned, load_tune_config
    from omnisim.tune import tune as run

    cfg = load_tune_config(config)  # validate before any simulation or cluster
    from omnisim.cli_common import check_file_path

    check_file_path(out, "--out")
    if out.suffix != ".json":
        raise TuneError(f"--out {out}: an artifact path must end in .json")
    if scheduler is not None and scheduler != "sequential":
        from omnisim.cluster import check_scheduler_address

        check_scheduler_address(scheduler)  # before the study database is created
    storage = cfg.storage or str(out.with_name(out.stem + ".study.db"))
    click.echo(f"tune {cfg.name}: {len(cfg.space)} parameter(s), {trials or cfg.trials} trials × "
               f"{len(cfg.seeds)} seeds, then top {cfg.top_k} on {len(cfg.fresh_seeds)} fresh seeds; "
               f"study in {storage}", err=True)
    try:
        res = run(cfg, scheduler=scheduler, n_workers=n_workers, storage=storage, trials=trials,
                  progress=progress)
    except KeyboardInterrupt:
        from omnisim.cluster import exit_interrupted

        exit_interrupted(f"interrupted: finished trials are kept in the study in {storage}; run "
                         f"the same command again to continue it")
    path = export_tuned(res, out, require_significant=require_significant)
    click.echo(res.summary)
    exported = res.exports_winner(require_significant)
    for p, v in (res.winner_params or {}).items():  # the artifact has the start's values unless exported
        click.echo(f"  {p:<40} {res.base_params.get(p)!r} -> {v!r}" + ("" if exported else "  (not exported)"))
    holds = "the tuned winner" if exported else "the starting policy"
    click.echo(f"artifact: {path} ({holds})")
