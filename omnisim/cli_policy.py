"""`omnisim policy …`: export policies as artifacts and inspect them."""

from __future__ import annotations

import json
from pathlib import Path

import click

from omnisim.cli_common import OmnisimGroup


@click.group(cls=OmnisimGroup)
def policy() -> None:
    """Policy artifacts: the data the production sender runs."""


@policy.command("export")
@click.argument("name_or_path")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Artifact file to write (.json).")
def policy_export(name_or_path: str, out: Path) -> None:
    """Export a built-in policy (e.g. seed_journey+pressure) or a policy YAML file as an artifact."""
    from omnisim.policies.artifact import export_policy, read_artifact

    path = export_policy(name_or_path, out)
    m = read_artifact(path)
    click.echo(f"exported {m['name']} → {path} (sha256 {m['sha256'][:12]}…)")


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
    params = m["parameters"]
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
