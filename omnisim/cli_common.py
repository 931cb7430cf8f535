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
        except IsADirectoryError as exc:  # a folder given where a file is read or written
            where = exc.filename if exc.filename is not None else " ".join(str(exc).split())
            click.echo(f"error: {where}: is a directory; expected a file path (not a folder)", err=True)
            sys.exit(2)


def check_file_path(path, option: str) -> None:
    """Fail fast, before any work, when an output ``path`` is an existing folder."""
    from pathlib import Path

    if path is not None and Path(path).is_dir():
        raise click.BadParameter(f"{path} is a directory; expected a file path (not a folder)",
                                 param_hint=option)


def parse_params(pairs: tuple[str, ...]) -> dict:
    """``k=v`` pairs to a dict; values parsed as YAML scalars (numbers, null, lists)."""
    import yaml

    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"{pair!r} is not of the form key=value", param_hint="--param")
        key, raw = pair.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or "not valid YAML"
            raise click.BadParameter(
                f"{key.strip()}: value {raw!r} is not valid YAML ({problem}); expected a number, "
                f"a word, null, or a list such as [a, b] (put a text with brackets in quotes)",
                param_hint="--param") from None
    return out
