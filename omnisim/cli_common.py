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


class UsersLogMismatchError(OmnisimError, ValueError):
    """No user of the users table appears in the log: nothing to fit (bad input: exit 2)."""


def check_users_match(log, users, log_path, users_path) -> None:
    """Refuse a users table none of whose ``user_id`` values appear in the log (e.g. the
    table of another log, or ids written differently), naming both files and an id of each."""
    if users is None or "user_id" not in getattr(users, "columns", ()) or not len(log):
        return
    log_ids = log["user_id"].astype(str)
    user_ids = users["user_id"].astype(str)
    if user_ids.isin(set(log_ids)).any():
        return
    example = f"e.g. {user_ids.iloc[0]!r} in the users table, " if len(user_ids) else "the users table is empty, "
    raise UsersLogMismatchError(
        f"--users {users_path}: none of its {len(user_ids):,} user ids appear in the log {log_path} "
        f"({example}{log_ids.iloc[0]!r} in the log): the user ids do not match, so there is "
        f"nothing to fit; expected the users table of this log")


def check_file_path(path, option: str) -> None:
    """Fail fast, before any work, when an output ``path`` is an existing folder."""
    from pathlib import Path

    if path is not None and Path(path).is_dir():
        raise click.BadParameter(f"{path} is a directory; expected a file path (not a folder)",
                                 param_hint=option)


def check_file_suffix(path, option: str, suffixes: tuple[str, ...]) -> None:
    """Fail fast, before any work, when an output ``path`` does not end in one of ``suffixes``
    (compared case-insensitively; a suffix may be compound, such as ``.csv.gz``)."""
    from pathlib import Path

    if path is None or Path(path).name.lower().endswith(tuple(s.lower() for s in suffixes)):
        return
    got = "".join(Path(path).suffixes) or "no extension"
    expected = ", ".join(suffixes[:-1]) + " or " + suffixes[-1] if len(suffixes) > 1 else suffixes[0]
    raise click.BadParameter(f"{path}: unsupported file type ({got}); expected a path ending in "
                             f"{expected}", param_hint=option)


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
