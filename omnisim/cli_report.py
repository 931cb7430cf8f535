"""`omnisim report …`: run parameterised report notebooks with papermill."""

from __future__ import annotations

from pathlib import Path

import click

from omnisim.cli_common import OmnisimGroup, parse_params

# ---------------------------------------------------------------- report
@click.group(cls=OmnisimGroup)
def report() -> None:
    """Run parameterised report notebooks with papermill and export HTML."""


@report.command("list")
def report_list() -> None:
    """List the report notebooks and their parameters."""
    from omnisim.reports import list_reports

    for name, params in list_reports().items():
        click.echo(name)
        for p, default in params.items():
            click.echo(f"    {p} = {default}")


@report.command("engagement")
@click.option("--log", "log_path", type=click.Path(path_type=Path), required=True,
              help="Engagement log (CSV or Parquet).")
@click.option("--users", "users_path", type=click.Path(path_type=Path), default=None,
              help="Users table (Parquet or CSV) keyed by user_id, for breakdowns.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports/engagement.html"),
              show_default=True, help="HTML to write; the executed notebook is kept next to it.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Extra notebook parameter (repeatable), e.g. --param group_by=zip_code.")
def report_engagement(log_path: Path, users_path: Path | None, out: Path, params: tuple[str, ...]) -> None:
    """Render the engagement report (funnel, rates with CIs, lift over no message)."""
    _run_report("engagement_report", out, {"log_path": log_path, "users_path": users_path, **parse_params(params)})


def _run_report(name: str, out: Path, params: dict) -> None:
    from omnisim.log import read_log
    from omnisim.reports import run_report

    if "log_path" in params:  # fail fast, with the log's own message, before starting a kernel
        read_log(params["log_path"])
    params = {k: (str(Path(v).resolve()) if isinstance(v, Path) else v) for k, v in params.items()}
    res = run_report(name, out, params)
    click.echo(f"report:   {res.html_path}")
    click.echo(f"notebook: {res.notebook_path}")
