"""`omnisim policy …`: train, export and inspect policy artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import click

from omnisim.cli_common import OmnisimGroup, check_file_path, check_users_match, parse_params


@click.group(cls=OmnisimGroup)
def policy() -> None:
    """Policy artifacts: the data the production sender runs."""


@policy.command("export")
@click.argument("name_or_path")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Artifact file to write (.json).")
def policy_export(name_or_path: str, out: Path) -> None:
    """Export a built-in policy (e.g. seed_journey+pressure) or a policy YAML file as an artifact."""
    from omnisim.policies.artifact import export_policy, read_artifact

    check_file_path(out, "--out")
    path = export_policy(name_or_path, out)
    m = read_artifact(path)
    click.echo(f"exported {m['name']} → {path} (sha256 {m['sha256'][:12]}…)")


@policy.command("train")
@click.option("--kind", required=True,
              help="uplift, sendtime, bandit (= bandit_ts), bandit_linucb, ratio, budget — those installed.")
@click.option("--log", "log_path", type=click.Path(path_type=Path), required=True,
              help="Training engagement log (.csv(.gz) or .parquet).")
@click.option("--users", "users_path", type=click.Path(path_type=Path), default=None,
              help="Users table; default <log stem>_users.parquet beside the log if present.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A parameter of the kind (repeatable), e.g. --param top_k_pct=30.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Artifact manifest to write (.json).")
def policy_train(kind: str, log_path: Path, users_path: Path | None, params: tuple[str, ...], out: Path) -> None:
    """Fit a learned policy on a log and export it, with the log's fingerprint and the metrics."""
    from omnisim.cli_ope import read_log_and_users
    from omnisim.policies.artifact import export_policy, read_artifact, train_policy

    check_file_path(out, "--out")
    log, users = read_log_and_users(log_path, users_path)
    if users is not None:
        from omnisim.datasets import users_path_for  # the table beside the log, when not given

        check_users_match(log, users, log_path, users_path or users_path_for(log_path))
    pol, metrics = train_policy(kind, log, users, **parse_params(params))
    path = export_policy(pol, out, metrics=metrics, training_data=log)
    m = read_artifact(path)
    click.echo(f"trained {m['kind']} policy {m['name']} on {m['training_data']['rows']:,} log rows "
               f"→ {path} (sha256 {m['sha256'][:12]}…)")
    for k, v in metrics.items():
        click.echo(f"  metric {k:<24} {v}")


@policy.command("show")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the whole verified manifest as JSON.")
def policy_show(artifact: Path, as_json: bool) -> None:
    """Verify an artifact (format version, checksum, kind) and describe it; exit 2 if it fails."""
    from omnisim.policies.artifact import load_artifact, read_artifact

    m = read_artifact(artifact)
    load_artifact(artifact)  # builds it: a document that no longer builds fails here
    if as_json:
        click.echo(json.dumps(m, indent=2, sort_keys=True))
        return
    click.echo(f"{artifact}: verified")
    for key in ("name", "kind", "format_version", "created_at", "omnisim_version", "sha256"):
        click.echo(f"  {key:<16} {m[key]}")
    for role, f in (m.get("files") or {}).items():
        click.echo(f"  payload {role:<8} {f['type']}, {f['bytes']:,} bytes, sha256 {f['sha256'][:12]}…")
    if m.get("training_data"):
        t = m["training_data"]
        click.echo(f"  training data    {t.get('rows', '?'):,} rows, {t.get('start')} to {t.get('end')}, "
                   f"sha256 {str(t.get('sha256'))[:12]}…")
    params = m["parameters"] if m["kind"] == "rules" else {}
    if "journeys" in params:
        click.echo("  journeys         " + ", ".join(j.get("name", "?") for j in params["journeys"]))
    if "policy" in params:
        click.echo(f"  policy           {params['policy']}")
    if "pressure" in params:
        click.echo(f"  pressure rules   {params['pressure'].get('name', 'inline')}")
    if "holdout" in params:
        click.echo(f"  holdout          {params['holdout']}")
    for k, v in (m.get("metrics") or {}).items():
        click.echo(f"  metric {k:<24} {v}")
    if m.get("tuning"):
        from omnisim.tune import describe_tuning

        click.echo("\n".join(describe_tuning(m["tuning"])))
