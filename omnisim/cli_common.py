"""Shared pieces of the command line: the error-handling group and ``k=v`` parsing."""

from __future__ import annotations

import sys

import click

from omnisim.errors import OmnisimError


class OmnisimGroup(click.Group):
    """A click group that turns :class:`OmnisimError` into a message and an exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except OmnisimError as exc:
            click.echo(exc.one_paragraph(), err=True)
            sys.exit(exc.exit_code)


def parse_params(pairs: tuple[str, ...]) -> dict:
    """``k=v`` pairs to a dict; values parsed as YAML scalars (numbers, null, lists)."""
    import yaml

    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"{pair!r} is not of the form key=value", param_hint="--param")
        key, raw = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(raw) if raw != "" else ""
    return out
