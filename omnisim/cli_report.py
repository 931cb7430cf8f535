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
    """List the report notebooks and their parameters (default and help)."""
    from omnisim.reports import report_infos

    for info in report_infos():
        click.echo(info.name)
        for p, meta in info.parameters.items():
            click.echo(f"    {p} = {meta['default']}" + (f"  # {meta['help']}" if meta["help"] else ""))


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
    from omnisim.reports import run_report

    # run_report validates the parameters, the log and the users table before starting a
    # kernel: bad input fails fast with the validation message and exit code 2
    params = {k: (str(Path(v).resolve()) if isinstance(v, Path) else v) for k, v in params.items()}
    res = run_report(name, out, params)
    click.echo(f"report:   {res.html_path}")
    click.echo(f"notebook: {res.notebook_path}")
    if res.json_path:
        click.echo(f"numbers:  {res.json_path}")


#: The report suite of issue 6: notebook name → one-line description for ``--help``.
SUITE: dict[str, str] = {
    "channel_comparison": "Channel comparison: rates, revenue and cost per message with CIs; first/last touch.",
    "send_time": "Send time: engagement by local hour x weekday, time to open, the hours a model would pick.",
    "fatigue": "Fatigue and saturation: response and unsubscribes vs pressure; under/well/over-messaged users.",
    "journey_funnel": "Journey funnel: entries, steps, conversions, exits, drop-off and time between steps.",
    "policy_evaluation": "Policy evaluation: off-policy estimates of candidate policies (all estimators, CIs).",
    "sim_vs_real": "Simulated vs real: a log simulated under the same decisions, rates and distributions side by side.",
}


def _suite_command(name: str, help_text: str) -> click.Command:
    @click.option("--log", "log_path", type=click.Path(path_type=Path), required=True,
                  help="Engagement log: Parquet file or directory of Parquet files, CSV or CSV.gz.")
    @click.option("--users", "users_path", type=click.Path(path_type=Path), default=None,
                  help="Users table (Parquet or CSV) keyed by user_id (timezones, attributes).")
    @click.option("--out", type=click.Path(path_type=Path), default=Path(f"reports/{name}.html"),
                  show_default=True, help="HTML to write; the executed notebook and the numbers (JSON) go next to it.")
    @click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
                  help="Notebook parameter (repeatable; YAML values), see 'omnisim report list'.")
    def cmd(log_path: Path, users_path: Path | None, out: Path, params: tuple[str, ...]) -> None:
        _run_report(name, out, {"log_path": log_path, "users_path": users_path, **parse_params(params)})

    cmd.__doc__ = help_text
    return click.command(name, help=help_text)(cmd)


for _name, _help in SUITE.items():
    report.add_command(_suite_command(_name, _help))


@report.command("notebook")
@click.argument("name")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="HTML to write (default reports/NAME.html); the executed notebook goes next to it.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Notebook parameter (repeatable; YAML values), see 'omnisim report list'.")
def report_notebook(name: str, out: Path | None, params: tuple[str, ...]) -> None:
    """Run any report notebook by NAME with parameters (e.g. compare_policies, sweep_fatigue,
    tuning_report, learn_and_export — the ones that simulate rather than read a log)."""
    _run_report(name, out or Path(f"reports/{name}.html"), parse_params(params))


@report.command("run")
@click.option("--config", "config", type=click.Path(path_type=Path), required=True,
              help="Schedule file (YAML): reports: [{name, log or results, users?, params?, out?}, ...].")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("reports"), show_default=True,
              help="Output folder; reports go to OUT/<YYYY-MM-DD>/ with an index.html.")
def report_run(config: Path, out_dir: Path) -> None:
    """Run every report of a schedule file; one failing report does not stop the others.

    Exit code 0 when all succeeded, 1 when any failed, 2 for a bad schedule file.
    """
    import sys

    from omnisim.schedule import load_schedule, run_schedule

    entries = load_schedule(config)
    index, outcomes = run_schedule(entries, out_dir, echo=click.echo)
    failed = sum(o.status != "ok" for o in outcomes)
    click.echo(f"index:    {index}  ({len(outcomes) - failed} ok, {failed} failed)")
    if failed:
        sys.exit(1)
