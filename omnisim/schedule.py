"""`omnisim report run`: run a schedule of reports unattended and write an index page.

A schedule file (YAML)::

    reports:
      - name: channel_comparison          # a report notebook (``omnisim report list``)
        log: exports/engagement.parquet   # the engagement log (file or Parquet directory)
        users: exports/users.parquet      # optional users table
        params: {attribution_window_h: 72} # optional notebook parameters
        out: channels_72h                 # optional output name (default: the report name, numbered if repeated)
      - name: sweep_results               # a sweep's table instead of a log
        results: sweeps/nightly.parquet   # what `omnisim sweep --out` wrote

Relative paths are relative to the schedule file's directory. :func:`run_schedule` runs
every entry (one failing report does not stop the others), writes
``<out_dir>/<YYYY-MM-DD>/<out>.html`` (+ ``.ipynb`` and ``.json``) and an ``index.html``
linking every report with its status and time, and logs one line per report.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from omnisim.errors import OmnisimError

__all__ = ["ScheduleError", "ScheduledReport", "ReportOutcome", "load_schedule", "run_schedule", "write_index"]

log = logging.getLogger("omnisim.schedule")
_KEYS = ("name", "log", "results", "users", "params", "out")


class ScheduleError(OmnisimError, ValueError):
    """The schedule file is missing or malformed; the message names the key at fault."""

    exit_code = 2


@dataclass(frozen=True)
class ScheduledReport:
    """One entry of a schedule: report ``name``, its input — an engagement ``log`` (with an
    optional ``users`` table) or a sweep's ``results`` table — ``params`` and ``out`` stem."""

    name: str
    log: Path | None
    users: Path | None = None
    params: dict[str, Any] = field(default_factory=dict)
    out: str = ""
    results: Path | None = None

    @property
    def input(self) -> Path | None:
        """The file the report reads (the log or the results table)."""
        return self.log if self.log is not None else self.results

    def input_params(self) -> dict[str, Any]:
        """The notebook parameters naming the inputs (``log_path`` / ``users_path`` or
        ``results_path``)."""
        if self.results is not None:
            return {"results_path": str(self.results)}
        return {"log_path": str(self.log), "users_path": str(self.users) if self.users else None}


@dataclass(frozen=True)
class ReportOutcome:
    """What happened to one scheduled report: ``status`` is ``ok`` or ``failed``; ``seconds`` wall time."""

    entry: ScheduledReport
    status: str
    html: Path | None
    message: str
    seconds: float


def load_schedule(path: str | Path) -> list[ScheduledReport]:
    """Read and validate a schedule file — each entry's ``params`` too, against its report's
    notebook (:func:`omnisim.reports.check_params`) — and raise :class:`ScheduleError` naming
    the bad key (e.g. ``reports[2].params: expected a mapping of parameter names to values,
    got list``; ``reports[0].params.max_prev: … expected a whole number``)."""
    import yaml

    from omnisim.reports import report_names

    path = Path(path)
    if not path.exists():
        raise ScheduleError(f"{path}: schedule file not found (looked at {path.resolve()})")
    if path.is_dir():
        raise ScheduleError(f"{path}: is a directory; expected a schedule YAML file")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ScheduleError(f"{path}: not a text file (not UTF-8: {exc.reason} at byte "
                            f"{exc.start}); expected a schedule YAML file") from None
    except yaml.YAMLError as exc:
        raise ScheduleError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict) or "reports" not in doc:
        raise ScheduleError(f"{path}: expected a mapping with the key 'reports' (a list of "
                            "{name, log or results, users?, params?, out?})")
    extra = sorted(set(doc) - {"reports"})
    if extra:
        raise ScheduleError(f"{path}: unknown top-level key(s) {', '.join(map(repr, extra))}; expected only 'reports'")
    items = doc["reports"]
    if not isinstance(items, list) or not items:
        raise ScheduleError(f"{path}: 'reports' must be a non-empty list; got {type(items).__name__}")
    known = set(report_names())
    known_params: dict[str, dict[str, dict[str, str]]] = {}
    base = path.resolve().parent
    out: list[ScheduledReport] = []
    stems: dict[str, int] = {}
    for i, item in enumerate(items):
        where = f"{path}: reports[{i}]"
        if not isinstance(item, dict):
            raise ScheduleError(f"{where}: expected a mapping with keys name, log or results (users, "
                                f"params, out optional); got {type(item).__name__}")
        bad = sorted(set(item) - set(_KEYS))
        if bad:
            raise ScheduleError(f"{where}: unknown key(s) {', '.join(map(repr, bad))}; allowed: {', '.join(_KEYS)}")
        if not isinstance(item.get("name"), str) or not item["name"].strip():
            raise ScheduleError(f"{where}.name: required, a non-empty string")
        if ("log" in item) == ("results" in item):
            raise ScheduleError(f"{where}.log: required, a non-empty string (or results: a sweep's "
                                f"results table, for sweep_results) — exactly one of them")
        source = "log" if "log" in item else "results"
        if not isinstance(item[source], str) or not item[source].strip():
            raise ScheduleError(f"{where}.{source}: required, a non-empty string")
        if source == "results" and item.get("users") is not None:
            raise ScheduleError(f"{where}.users: goes with a log, not with results")
        if item["name"] not in known:
            raise ScheduleError(f"{where}.name: unknown report {item['name']!r}; available: {', '.join(sorted(known))}")
        users = item.get("users")
        if users is not None and not isinstance(users, str):
            raise ScheduleError(f"{where}.users: expected a path (string); got {type(users).__name__}")
        params = item.get("params") or {}
        if not isinstance(params, dict):
            raise ScheduleError(f"{where}.params: expected a mapping of parameter names to values, "
                                f"got {type(params).__name__}")
        for reserved in ("log_path", "users_path", "results_path", "output_json"):
            if reserved in params:
                raise ScheduleError(f"{where}.params.{reserved}: set by the schedule ('log' / 'users' / "
                                    f"'results' / the output)")
        _check_params(where, item["name"], params, known_params)
        stem = item.get("out") or item["name"]
        if not isinstance(stem, str) or "/" in stem or stem.startswith("."):
            raise ScheduleError(f"{where}.out: expected a plain file name without '/'; got {stem!r}")
        stem = stem.removesuffix(".html")
        stems[stem] = stems.get(stem, 0) + 1
        if stems[stem] > 1:
            stem = f"{stem}-{stems[stem]}"
        out.append(ScheduledReport(
            name=item["name"], log=(base / item["log"]).resolve() if source == "log" else None,
            users=(base / users).resolve() if users else None, params=dict(params), out=stem,
            results=(base / item["results"]).resolve() if source == "results" else None))
    return out


def _check_params(where: str, name: str, params: dict[str, Any],
                  cache: dict[str, dict[str, dict[str, str]]]) -> None:
    """Check an entry's ``params`` against report ``name``'s notebook (names, types, ranges:
    :func:`omnisim.reports.check_params`) so that a typo fails the whole file at load time,
    naming the key; ``cache`` keeps each notebook's inspected parameters."""
    from omnisim.reports import ReportError, _inspect, _notebook, check_params

    if name not in cache:
        cache[name] = _inspect(_notebook(name))
    for key, value in params.items():
        try:
            check_params(name, {key: value}, cache[name])
        except ReportError as exc:
            raise ScheduleError(f"{where}.params.{key}: {exc}") from None
    try:  # constraints between parameters (low_per_week <= high_per_week)
        check_params(name, params, cache[name])
    except ReportError as exc:
        raise ScheduleError(f"{where}.params: {exc}") from None


def run_schedule(entries: list[ScheduledReport], out_dir: str | Path = "reports", *,
                 date: dt.date | None = None, echo: Callable[[str], None] | None = None,
                 timeout_s: float = 600) -> tuple[Path, list[ReportOutcome]]:
    """Run every entry; write ``<out_dir>/<date>/<out>.html`` and ``index.html``.

    A failing report (bad input, failing cell) is recorded with its message and the others
    still run. ``echo`` receives one line per report (default: the module's logger at INFO).
    Returns ``(index_path, outcomes)``.
    """
    from omnisim.reports import ReportError, run_report

    date = date or dt.date.today()
    folder = Path(out_dir) / date.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    say = echo or log.info
    outcomes = []
    for e in entries:
        t0 = time.perf_counter()
        params = {**e.input_params(), **e.params}
        try:
            res = run_report(e.name, folder / f"{e.out}.html", params, timeout_s=timeout_s)
            oc = ReportOutcome(e, "ok", res.html_path, "", time.perf_counter() - t0)
        except ReportError as exc:
            oc = ReportOutcome(e, "failed", None, str(exc), time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001 - one report must not stop the others
            oc = ReportOutcome(e, "failed", None, f"{type(exc).__name__}: {exc}", time.perf_counter() - t0)
        outcomes.append(oc)
        first = oc.message.splitlines()[0][:300] if oc.message else ""
        say(f"{oc.status.upper():6} {e.out:28} {oc.seconds:6.1f} s  {oc.html or ''}{'  ' + first if first else ''}")
    index = write_index(folder, outcomes, date)
    return index, outcomes


def write_index(folder: Path, outcomes: list[ReportOutcome], date: dt.date) -> Path:
    """``folder/index.html``: one row per report with its status, link (if it ran), inputs,
    time and the error message of failures. Self-contained (inline CSS, no scripts)."""
    rows = []
    for oc in outcomes:
        link = (f'<a href="{html.escape(oc.html.name)}">{html.escape(oc.entry.out)}</a>' if oc.html
                else html.escape(oc.entry.out))
        cls = "ok" if oc.status == "ok" else "failed"
        rows.append(
            f'<tr class="{cls}"><td>{link}</td><td>{html.escape(oc.entry.name)}</td>'
            f'<td class="status">{oc.status}</td><td>{oc.seconds:.1f} s</td>'
            f"<td><code>{html.escape(str(oc.entry.input))}</code></td>"
            f"<td>{html.escape(oc.message)}</td></tr>")
    n_fail = sum(oc.status != "ok" for oc in outcomes)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>omnisim reports {date.isoformat()}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; }}
table {{ border-collapse: collapse; width: 100%; font-size: 14px; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 6px 8px; text-align: left; vertical-align: top; }}
tr.ok .status {{ color: #1a7f37; font-weight: bold; }} tr.failed .status {{ color: #cf222e; font-weight: bold; }}
code {{ font-size: 12px; }}
</style></head><body>
<h1>Reports of {date.isoformat()}</h1>
<p>{len(outcomes)} reports, {len(outcomes) - n_fail} ok, {n_fail} failed.</p>
<table><thead><tr><th>report</th><th>notebook</th><th>status</th><th>time</th><th>input</th><th>message</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table></body></html>
"""
    path = folder / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
