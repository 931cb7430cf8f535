"""`omnisim ope`: estimate a policy's value from an engagement log, off-policy."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pandas as pd

from omnisim.errors import OmnisimError

__all__ = ["ope", "read_log_and_users", "resolve_policy"]


class CLIInputError(OmnisimError, ValueError):
    """A file or policy given on the command line that cannot be used (message says why)."""


def read_log_and_users(log_path: Path, users_path: Path | None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The validated log and its users table: ``users_path``, else ``<log stem>_users.parquet``
    beside the log when it exists, else ``None``."""
    from omnisim.datasets import users_path_for
    from omnisim.log import read_log

    log = read_log(log_path)
    if users_path is None:
        guess = users_path_for(log_path)
        users_path = guess if guess.exists() else None
    if users_path is None:
        return log, None
    from omnisim.analysis import load_users

    try:
        return log, load_users(users_path)
    except (OSError, ValueError) as exc:
        raise CLIInputError(str(exc)) from None


def resolve_policy(spec: str):
    """A policy from an artifact (``.json``), ``always:ACTION[@CHANNEL]`` (a fixed action, e.g.
    ``always:mens_email``), a built-in name or a policy YAML file."""
    if spec.endswith(".json"):
        from omnisim.policies.artifact import load_artifact

        return load_artifact(spec)
    if spec.startswith("always:"):
        from omnisim.policies.ope_log import FixedAction

        action, _, channel = spec.removeprefix("always:").partition("@")
        if not action:
            raise CLIInputError(f"--policy {spec!r}: expected always:ACTION or always:ACTION@CHANNEL")
        return FixedAction(action, channel or ("none" if action == "none" else "email"))
    from omnisim.policies.registry import get_policy

    return get_policy(spec)


@click.command("ope")
@click.option("--log", "log_path", type=click.Path(path_type=Path), required=True,
              help="Engagement log with decided rows (action, propensity): .csv(.gz) or .parquet.")
@click.option("--users", "users_path", type=click.Path(path_type=Path), default=None,
              help="Users table (traits, consent, timezone); default <log stem>_users.parquet if present.")
@click.option("--policy", "policy_spec", required=True,
              help="Evaluation policy: an artifact (.json), a built-in name, a policy YAML, or always:ACTION.")
@click.option("--estimators", default="ips,snips,dr", show_default=True,
              help="Comma-separated: ips, snips, dm, dr, sndr, switch_dr.")
@click.option("--reward", type=click.Choice(["click", "open", "visit", "purchase", "revenue"]),
              default="click", show_default=True, help="Reward per decision (see omnisim.policies.ope_log).")
@click.option("--window-h", type=click.FloatRange(min=0, min_open=True), default=336.0, show_default=True,
              help="Hours after a decision during which an outcome counts.")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05,
              show_default=True, help="1 - confidence of the intervals.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap and reward model.")
@click.option("--mc-draws", type=click.IntRange(min=0), default=0, show_default=True,
              help="For a random policy without action_probabilities: decide() draws per decision "
                   "to estimate its probabilities (0: refuse such policies).")
@click.option("--channel-level", is_flag=True,
              help="Compare channels only (email@09h counts as email), e.g. a send-time policy on a channel log.")
@click.option("--json", "as_json", is_flag=True, help="Print the estimates as JSON records.")
def ope(log_path: Path, users_path: Path | None, policy_spec: str, estimators: str, reward: str,
        window_h: float, alpha: float, seed: int, mc_draws: int, channel_level: bool, as_json: bool) -> None:
    """Estimate a policy's mean reward per decision from another policy's logged decisions."""
    from omnisim.policies.ope_log import channel_of_action, evaluate_policy

    names = [e.strip() for e in estimators.split(",") if e.strip()]
    if not names:
        raise click.BadParameter(f"{estimators!r} names no estimator; expected a comma-separated list "
                                 f"of ips, snips, dm, dr, sndr, switch_dr", param_hint="--estimators")
    say = (lambda text: None) if as_json else (lambda text: click.echo(text, err=True))
    say(f"reading {log_path} …")
    log, users = read_log_and_users(log_path, users_path)
    policy = resolve_policy(policy_spec)
    say(f"rebuilding the logged decisions' contexts ({len(log):,} log rows), asking {policy_spec} "
        f"for its probabilities and estimating ({', '.join(names)}) …")
    table = evaluate_policy(log, policy, users, estimators=names, reward=reward, alpha=alpha,
                            window_h=window_h, seed=seed, mc_draws=mc_draws,
                            action_map=channel_of_action if channel_level else None)
    if as_json:
        click.echo(json.dumps(table.to_dict(orient="records"), allow_nan=False))
        return
    row0 = table.iloc[0]
    click.echo(f"{row0['policy']} on {log_path}: {int(row0['n']):,} logged decisions, reward {reward} "
               f"per decision, {1 - alpha:.0%} intervals")
    if row0["unsupported_share"] > 0:
        click.echo(f"  warning: {row0['unsupported_share']:.1%} of the policy's probability is on actions "
                   f"the log never took; that share is not evaluable and counts as 0")
    for _, r in table.iterrows():
        click.echo(f"  {r['estimator']:<10} {r['value']:.5g}  [{r['ci_low']:.5g}, {r['ci_high']:.5g}]")
