"""The ``omnisim`` command. Every sub-command has ``--help``; bad input exits 2 with a
one-paragraph message (never a traceback), a failed run exits 1."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from omnisim import __version__
from omnisim.errors import OmnisimError


class _Group(click.Group):
    """A click group that turns :class:`OmnisimError` into a message and an exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except OmnisimError as exc:
            click.echo(exc.one_paragraph(), err=True)
            sys.exit(exc.exit_code)


def _params(pairs: tuple[str, ...]) -> dict:
    """``k=v`` pairs to a dict; values parsed as YAML scalars (numbers, null, lists)."""
    import yaml

    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"{pair!r} is not of the form key=value", param_hint="--param")
        key, raw = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(raw) if raw != "" else ""
    return out


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
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
@main.group(cls=_Group)
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


# ---------------------------------------------------------------- report
@main.group(cls=_Group)
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
    _run_report("engagement_report", out, {"log_path": log_path, "users_path": users_path, **_params(params)})


def _run_report(name: str, out: Path, params: dict) -> None:
    from omnisim.log import read_log
    from omnisim.reports import run_report

    if "log_path" in params:  # fail fast, with the log's own message, before starting a kernel
        read_log(params["log_path"])
    params = {k: (str(Path(v).resolve()) if isinstance(v, Path) else v) for k, v in params.items()}
    res = run_report(name, out, params)
    click.echo(f"report:   {res.html_path}")
    click.echo(f"notebook: {res.notebook_path}")


if __name__ == "__main__":  # pragma: no cover
    main()
