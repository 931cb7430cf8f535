"""`omnisim calibrate`: fit a scenario to an engagement log and write it as YAML."""

from __future__ import annotations

from pathlib import Path

import click


def _read_users(path: Path):
    from omnisim.model.calibrate import CalibrationError

    from omnisim.analysis import load_users

    if not path.exists():
        raise CalibrationError(f"--users {path}: file not found")
    try:  # the users table every command reads: unique user_id, IANA time zones
        return load_users(path)
    except ValueError as exc:
        raise CalibrationError(f"--users {exc}") from None
    except Exception as exc:  # noqa: BLE001 -- any parser error, reported with the file named
        raise CalibrationError(f"--users {path}: cannot be read ({type(exc).__name__}: {exc}); "
                               "expected Parquet or CSV with a user_id column") from None


@click.command("calibrate")
@click.option("--log", "log_path", type=click.Path(path_type=Path), required=True,
              help="Engagement log (CSV or Parquet).")
@click.option("--users", "users_path", type=click.Path(path_type=Path), default=None,
              help="Users table keyed by user_id (segment / timezone columns are used).")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Scenario YAML to write (with its calibration: block).")
@click.option("--segment-by", default=None, help="Users column defining segments (default: segment).")
@click.option("--base", default="default", show_default=True,
              help="Scenario whose values are kept where the log identifies nothing.")
@click.option("--confidence", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.95,
              show_default=True)
def calibrate_cmd(log_path: Path, users_path: Path | None, out: Path, segment_by: str | None,
                  base: str, confidence: float) -> None:
    """Fit a scenario to a real (or simulated) engagement log; write it as YAML.

    Every parameter is either estimated (value, CI, n) or kept at its default with the
    reason, in the YAML's calibration: block.
    """
    from omnisim.log import read_log
    from omnisim.model.calibrate import fit_calibration, write_scenario

    from omnisim.cli_common import check_file_path, check_users_match

    check_file_path(out, "--out")
    log = read_log(log_path)
    users = _read_users(users_path) if users_path is not None else None
    check_users_match(log, users, log_path, users_path)
    cal = fit_calibration(log, users, base=base, segment_by=segment_by, confidence=confidence,
                          source=str(log_path))
    write_scenario(cal.scenario, out)
    t = cal.table()
    for status in ("estimated", "derived", "default"):
        click.echo(f"{status:>9}: {int((t['status'] == status).sum())} parameters")
    for _, r in t[t["status"] == "estimated"].iterrows():
        v = r["value"]
        if isinstance(v, float):
            click.echo(f"  {r['key']:<48} {v:.4g} [{r['low']:.4g}, {r['high']:.4g}]  n={r['n']:,}")
    for note in cal.notes:
        click.echo(f"note: {note}")
    click.echo(f"scenario: {out}")


calibrate = calibrate_cmd
