"""The `omnisim` command: help everywhere, version, and bad input as exit 2 without traceback."""

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

import omnisim
from omnisim.cli import main


def all_commands(group: click.Group, prefix=()):
    for name, cmd in group.commands.items():
        yield prefix + (name,)
        if isinstance(cmd, click.Group):
            yield from all_commands(cmd, prefix + (name,))


@pytest.mark.parametrize("path", list(all_commands(main)), ids=lambda p: " ".join(p))
def test_every_command_has_help(path):
    res = CliRunner().invoke(main, [*path, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage:" in res.output and "Show this message and exit" in res.output


def test_version():
    res = CliRunner().invoke(main, ["--version"])
    assert res.exit_code == 0 and omnisim.__version__ in res.output


def test_installed_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "omnisim.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and omnisim.__version__ in out.stdout


def test_invalid_log_is_one_paragraph_and_exit_2(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("ts,user_id,event,channel\n2024-01-01T00:00Z,a,sent,email\n2024-13-01,b,opend,email\n")
    res = CliRunner().invoke(main, ["validate", str(bad)])
    assert res.exit_code == 2
    assert "Traceback" not in res.output
    msg = res.output.strip()
    assert "\n" not in msg  # one paragraph
    assert str(bad) in msg and "row 2: ts '2024-13-01' is not a timestamp" in msg
    assert "unknown value 'opend'" in msg


def test_missing_column_exit_2(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("ts,user\n2024-01-01T00:00Z,a\n")
    res = CliRunner().invoke(main, ["validate", str(bad)])
    assert res.exit_code == 2 and "missing required column(s) 'user_id', 'event', 'channel'" in res.output


def test_valid_log_summary(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("ts,user_id,event,channel\n2024-01-01T00:00Z,a,sent,email\n2024-01-02T00:00Z,a,opened,email\n")
    res = CliRunner().invoke(main, ["validate", str(good)])
    assert res.exit_code == 0 and "2 events, 1 users" in res.output


def test_bad_param_syntax_is_a_usage_error(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("ts,user_id,event,channel\n2024-01-01T00:00Z,a,sent,email\n")
    res = CliRunner().invoke(main, ["report", "engagement", "--log", str(good), "--param", "novalue"])
    assert res.exit_code == 2 and "key=value" in res.output


def test_report_notebook_unknown_name_lists_the_available_ones():
    res = CliRunner().invoke(main, ["report", "notebook", "nosuch"])
    assert res.exit_code == 2 and "unknown report 'nosuch'" in res.output
    assert "compare_policies" in res.output and "sim_vs_real" in res.output
