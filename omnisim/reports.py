"""Run report notebooks with papermill and export them as HTML with the code hidden.

Report notebooks live in ``notebooks/`` at the repository root (found from the package
location) or in the directory named by ``OMNISIM_NOTEBOOKS_DIR``; a report's name is its
file name without ``.ipynb``. Each has one cell tagged ``parameters``.

:func:`run_report` executes one on the real Jupyter kernel ``python3``, keeps the executed
notebook next to the HTML, and raises :class:`ReportError` carrying the notebook's own
error (exception name and message, and the failing cell) when a cell fails; the partly
executed notebook is kept for inspection.

The numbers of a report: reports that have an ``output_json`` parameter (the engagement
report does) get it set to ``<out>.json`` unless the caller sets it; that file holds the
report's tables (see ``notebooks/engagement_report.ipynb``'s last cell).

Computations used by the notebooks are in :mod:`omnisim.analysis`.
"""

from __future__ import annotations

import ast
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omnisim.errors import OmnisimError

__all__ = [
    "ReportError", "ReportInfo", "ReportResult", "check_inputs", "check_params", "export_html",
    "external_references", "list_reports", "notebooks_dir", "report_infos", "report_names", "run_report",
]

KERNEL_NAME = "python3"


class ReportError(OmnisimError, RuntimeError):
    """A report could not be run, or one of its cells failed.

    Attributes: ``notebook_path`` (the partly executed notebook, or None when execution did
    not start), ``ename`` / ``evalue`` (the notebook's exception, when a cell failed),
    ``cell_index`` (0-based index of the failing cell in the executed notebook, which
    includes papermill's injected-parameters cell), ``exit_code`` for the CLI (2 for a bad
    request: unknown report or parameter, bad output name; 1 when the run failed).
    """

    def __init__(self, message: str, *, notebook_path: Path | None = None, ename: str | None = None,
                 evalue: str | None = None, cell_index: int | None = None, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code
        self.notebook_path = notebook_path
        self.ename = ename
        self.evalue = evalue
        self.cell_index = cell_index


@dataclass(frozen=True)
class ReportResult:
    """Where :func:`run_report` put its outputs. ``json_path`` is None if the report has none."""

    html_path: Path
    notebook_path: Path
    json_path: Path | None = None


@dataclass(frozen=True)
class ReportInfo:
    """A report notebook and its parameters: name → ``{"default": str, "type": str, "help": str}``."""

    name: str
    path: Path
    parameters: dict[str, dict[str, str]]


def notebooks_dir() -> Path:
    """``$OMNISIM_NOTEBOOKS_DIR`` if set, else ``<repo>/notebooks``."""
    env = os.environ.get("OMNISIM_NOTEBOOKS_DIR")
    if env:
        return Path(env)
    import omnisim

    return Path(omnisim.__file__).resolve().parents[1] / "notebooks"


def _inspect(path: Path) -> dict[str, dict[str, str]]:
    import papermill as pm

    raw = pm.inspect_notebook(str(path))
    return {name: {"default": str(p.get("default")), "type": str(p.get("inferred_type_name")),
                   "help": str(p.get("help") or "")} for name, p in raw.items()}


def _has_parameters_cell(path: Path) -> bool:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    return any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb.cells)


def report_infos() -> list[ReportInfo]:
    """The report notebooks (those with a ``parameters`` cell) in :func:`notebooks_dir`, by name,
    with each parameter's default, inferred type and help text."""
    folder = notebooks_dir()
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob("*.ipynb")):
        if path.name.startswith(".") or not _has_parameters_cell(path):
            continue
        out.append(ReportInfo(name=path.stem, path=path, parameters=_inspect(path)))
    return out


def report_names() -> list[str]:
    """Names of the report notebooks (those with a ``parameters`` cell), without inspecting parameters."""
    folder = notebooks_dir()
    if not folder.is_dir():
        return []
    return [p.stem for p in sorted(folder.glob("*.ipynb")) if not p.name.startswith(".") and _has_parameters_cell(p)]


def list_reports() -> dict[str, dict[str, str]]:
    """Report name → {parameter name → default, as written in the notebook (Python source)}.

    :func:`report_infos` gives the type and help text too.
    """
    return {info.name: {p: meta["default"] for p, meta in info.parameters.items()} for info in report_infos()}


def _notebook(name: str) -> Path:
    folder = notebooks_dir()
    path = folder / f"{name}.ipynb"
    if not path.exists():
        known = [p.stem for p in sorted(folder.glob("*.ipynb"))] if folder.is_dir() else []
        raise ReportError(f"unknown report {name!r}: {path} does not exist; "
                          f"available: {', '.join(known) or 'none'} (in {folder})", exit_code=2)
    return path


TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
_EXTERNAL_REF = re.compile(r"""<(?:script|link|img|iframe)\b[^>]*?\b(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.I)


def external_references(html: str) -> list[str]:
    """Script, link, image or frame tags in ``html`` that would fetch from the network
    (``src`` / ``href`` starting with ``http://``, ``https://`` or ``//``); [] when self-contained."""
    return [m.group(0) for m in _EXTERNAL_REF.finditer(html)]


def export_html(notebook_path: Path, html_path: Path, title: str | None = None) -> Path:
    """Write ``notebook_path`` as self-contained HTML with input cells and prompts hidden.

    Uses ``omnisim/templates/offline`` (JupyterLab's template without require.js, MathJax,
    mermaid or widget scripts from a CDN); figures are embedded as base64 PNG. ``title``
    becomes the page title (default: the notebook's file name). Raises :class:`ReportError`
    if the page would still fetch anything from the network.
    """
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(notebook_path, as_version=4)
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True,
                            embed_images=True, extra_template_basedirs=[str(TEMPLATE_DIR)],
                            template_name="offline")
    resources = {"metadata": {"name": title or Path(notebook_path).stem}}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    refs = external_references(body)
    if refs:
        raise ReportError(f"the HTML of {notebook_path} would fetch from the network: {refs[0][:120]}")
    html_path.write_text(body, encoding="utf-8")
    return html_path


#: Allowed values of parameters with a fixed vocabulary (any report).
PARAM_CHOICES: dict[str, tuple[str, ...]] = {
    "metric": ("opened", "clicked"),
    "reward": ("auto", "opened", "clicked", "visit", "purchase", "value"),
}


def check_params(name: str, params: dict[str, Any], known: dict[str, dict[str, str]] | None = None) -> None:
    """Check ``params`` for report ``name`` before any kernel starts; raise :class:`ReportError`
    (exit code 2) naming the parameter, its value and what is expected.

    Checks: the name is a parameter of the notebook; the value's type matches the default's
    (a number where the default is a number, a bool for a bool, text for text; ``None``
    defaults take anything); ``confidence`` in (0, 1); durations (``*_h``, ``*_days``) and
    the thresholds ``low_per_week`` / ``high_per_week`` / ``prior_sends`` >= 0; counts
    (``max_*``, ``n_*``, ``min_*``) whole numbers >= 1 (``min_*`` >= 0), ``n_hours`` at most 24;
    vocabularies in :data:`PARAM_CHOICES`; ``estimators`` names of
    :data:`omnisim.policies.ope.ESTIMATORS`.
    """
    known = known if known is not None else _inspect(_notebook(name))
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ReportError(f"unknown parameter(s) {', '.join(map(repr, unknown))} for report {name!r}; "
                          f"it takes: {', '.join(known)}", exit_code=2)

    def bad(p: str, v: Any, expected: str) -> ReportError:
        return ReportError(f"report {name!r}: parameter {p} = {v!r} is invalid; expected {expected}", exit_code=2)

    for p, v in params.items():
        default = _default(known, p)
        if v is None:
            continue
        if isinstance(default, bool):
            if not isinstance(v, bool):
                raise bad(p, v, "true or false")
        elif isinstance(default, (int, float)):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise bad(p, v, "a number")
            if isinstance(default, int) and not isinstance(default, bool) and p != "seed" and v != int(v):
                raise bad(p, v, "a whole number")
        elif isinstance(default, str) and not isinstance(v, str):
            raise bad(p, v, "text")
        elif isinstance(default, list) and not isinstance(v, (list, str)):
            raise bad(p, v, "a list")
        # range checks apply to a number, or to each number of a list (e.g. half_lives_h)
        numbers = [x for x in (v if isinstance(v, list) else [v])
                   if isinstance(x, (int, float)) and not isinstance(x, bool)]
        for x in numbers:
            if p == "confidence" and not 0 < x < 1:
                raise bad(p, v, "a level in (0, 1), e.g. 0.95")
            if (p.endswith(("_h", "_days")) or p in ("prior_sends", "low_per_week", "high_per_week")) and x < 0:
                raise bad(p, v, "a number >= 0 (the unit is in the name)")
            if p.startswith(("max_", "n_")) and x < 1:
                raise bad(p, v, "a whole number >= 1")
            if p.startswith("min_") and x < 0:
                raise bad(p, v, "a whole number >= 0")
        if p in PARAM_CHOICES and v not in PARAM_CHOICES[p]:
            raise bad(p, v, "one of " + ", ".join(PARAM_CHOICES[p]))
        if p in ("start", "end") and isinstance(v, str) and v.strip():
            import pandas as pd  # the notebooks read these with pandas.Timestamp

            try:
                pd.Timestamp(v)
            except (ValueError, TypeError):
                raise bad(p, v, "an ISO 8601 date, e.g. '2024-03-01'") from None
        if p == "n_hours" and any(x > 24 for x in numbers):
            raise bad(p, v, "a whole number of hours of the day, 1 to 24")
        if p == "estimators":
            from omnisim.policies.ope import ESTIMATORS

            if not isinstance(v, list):
                raise bad(p, v, "a list such as [ips, snips, dr]")
            wrong = [e for e in v if e not in ESTIMATORS]
            if wrong:
                raise bad(p, v, "a list of " + ", ".join(ESTIMATORS) + f" (unknown: {wrong[0]!r})")
    if "low_per_week" in known and "high_per_week" in known:
        lo = params.get("low_per_week", _default(known, "low_per_week"))
        hi = params.get("high_per_week", _default(known, "high_per_week"))
        if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and lo > hi:
            raise bad("low_per_week", lo, f"at most high_per_week ({hi})")


def _default(known: dict[str, dict[str, str]], p: str) -> Any:
    try:
        return ast.literal_eval(known[p]["default"])
    except (ValueError, SyntaxError, KeyError):
        return None


def check_inputs(params: dict[str, Any]) -> None:
    """Validate the log (``log_path``), users table (``users_path``) and sweep results
    (``results_path``) named in ``params`` before any kernel starts:
    :func:`omnisim.report_data.check_log` (in SQL for Parquet),
    :func:`omnisim.analysis.load_users` with :func:`omnisim.report_data.check_timezones`, and
    :func:`omnisim.sweep_results.load_sweep_results`.
    Raises :class:`ReportError` (exit code 2) carrying the validation message."""
    from omnisim.analysis import load_users
    from omnisim.log import LogValidationError
    from omnisim.report_data import check_log, check_timezones

    if params.get("log_path") is not None:
        try:
            check_log(params["log_path"])
        except LogValidationError as exc:
            raise ReportError(exc.one_paragraph(), exit_code=2) from None
    if params.get("users_path") is not None:
        try:
            users = load_users(params["users_path"])
            if users is not None:
                check_timezones(users, str(params["users_path"]))
        except (OSError, ValueError) as exc:
            raise ReportError(f"users table: {exc}", exit_code=2) from None
    if params.get("results_path") is not None:
        from omnisim.sweep_results import SweepResultsError, load_sweep_results

        try:
            load_sweep_results(params["results_path"])
        except SweepResultsError as exc:
            raise ReportError(exc.one_paragraph(), exit_code=2) from None


def _unix_socket_kernel(sockets: Path) -> Any:
    """Kernel-manager config that talks to the kernel over Unix sockets in ``sockets``.

    Over TCP, jupyter_client picks free ports, releases them and lets the kernel bind them
    later; any process binding a port in between (another report, a test server, a Dask
    worker) makes the kernel die at start-up and the run fail with "Kernel didn't respond
    in 60 seconds". Socket files in a directory of this run's own cannot be taken.
    """
    from traitlets.config import Config

    return Config({"KernelManager": {"transport": "ipc",
                                     "connection_file": str(sockets / "kernel.json")}})


def run_report(name: str, out: str | Path, params: dict[str, Any] | None = None,
               timeout_s: float = 600, check: bool = True) -> ReportResult:
    """Execute report ``name`` with ``params`` and write ``out`` (HTML).

    Parameters
    ----------
    name
        a report in :func:`notebooks_dir`, e.g. ``"engagement_report"``.
    out
        the HTML file to write; the executed notebook goes to ``out.with_suffix('.ipynb')``
        and, for reports with an ``output_json`` parameter, the numbers to
        ``out.with_suffix('.json')`` (unless ``params`` sets ``output_json``).
    params
        values for the notebook's ``parameters`` cell; unknown names are refused. Relative
        paths are read relative to the current directory (the kernel runs there).
    timeout_s
        the longest any single cell may run (seconds; papermill's per-cell timeout).
    check
        validate the parameters (:func:`check_params`, always) and the log and users table
        (:func:`check_inputs`) before starting the kernel, so that bad input fails fast with
        the validation message (exit code 2) rather than a notebook traceback.

    Raises
    ------
    ReportError
        unknown report or parameter, kernel failure, timeout, or a failing cell: the
        message then holds ``ename: evalue`` of the notebook's exception and the failing
        cell; the partly executed notebook is kept at ``notebook_path``.
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    nb_in = _notebook(name)
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ReportError(f"--out {out}: expected an .html file name (the executed notebook and "
                          "the numbers are written next to it)", exit_code=2)
    params = dict(params or {})
    known = _inspect(nb_in)
    check_params(name, params, known)
    if check:
        check_inputs(params)
    json_path: Path | None = None
    if "output_json" in known:
        if params.get("output_json") is None:
            params["output_json"] = str(out.with_suffix(".json").resolve())
        json_path = Path(params["output_json"])
    out.parent.mkdir(parents=True, exist_ok=True)
    nb_out = out.with_suffix(".ipynb")
    if json_path is not None and json_path.exists():
        json_path.unlink()  # never leave numbers from an earlier run next to a failed one
    try:
        with tempfile.TemporaryDirectory(prefix="omnisim-kernel-") as sockets:
            pm.execute_notebook(
                str(nb_in), str(nb_out), parameters=params, kernel_name=KERNEL_NAME,
                execution_timeout=timeout_s, progress_bar=False, log_output=False, cwd=None,
                config=_unix_socket_kernel(Path(sockets)),
                # the kernel's own start-up errors still show, its chatter does not
                extra_arguments=["--IPKernelApp.log_level=ERROR"],
            )
    except PapermillExecutionError as exc:
        cell = f"cell {exc.cell_index}" + (f" (execution count {exc.exec_count})" if exc.exec_count else "")
        first_line = next((ln for ln in (exc.source or "").splitlines() if ln.strip()), "")
        raise ReportError(
            f"report {name!r} failed in {cell}"
            + (f", which starts {first_line.strip()[:60]!r}" if first_line else "")
            + f" (partly executed notebook kept at {nb_out}): {exc.ename}: {exc.evalue}",
            notebook_path=nb_out, ename=exc.ename, evalue=exc.evalue, cell_index=exc.cell_index,
        ) from None
    except Exception as exc:  # kernel not found, timeout, ... : say what and keep what exists
        kept = nb_out if nb_out.exists() else None
        raise ReportError(
            f"report {name!r} could not be run: {type(exc).__name__}: {exc}"
            + (f"; partly executed notebook kept at {kept}" if kept else ""),
            notebook_path=kept, ename=type(exc).__name__, evalue=str(exc),
        ) from None
    title = params.get("title")
    if title is None and "title" in known:
        try:
            title = ast.literal_eval(known["title"]["default"])
        except (ValueError, SyntaxError):
            title = None
    try:
        html = export_html(nb_out, out, title=str(title) if title else None)
    except ReportError:
        raise
    except Exception as exc:  # template or conversion failure: say so, keep the executed notebook
        raise ReportError(f"report {name!r} ran, but its HTML could not be written: {type(exc).__name__}: {exc}; "
                          f"the executed notebook is at {nb_out}", notebook_path=nb_out) from None
    return ReportResult(html_path=html, notebook_path=nb_out,
                        json_path=json_path if json_path is not None and json_path.exists() else None)
