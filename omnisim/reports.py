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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omnisim.errors import OmnisimError

__all__ = [
    "ReportError", "ReportInfo", "ReportResult", "export_html", "list_reports", "notebooks_dir", "report_infos",
    "run_report",
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


def export_html(notebook_path: Path, html_path: Path, title: str | None = None) -> Path:
    """Write ``notebook_path`` as standalone HTML with input cells and prompts hidden.

    ``title`` becomes the page title (default: the notebook's file name).
    """
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(notebook_path, as_version=4)
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    resources = {"metadata": {"name": title or Path(notebook_path).stem}}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    html_path.write_text(body, encoding="utf-8")
    return html_path


def run_report(name: str, out: str | Path, params: dict[str, Any] | None = None,
               timeout_s: float = 600) -> ReportResult:
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
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ReportError(f"unknown parameter(s) {', '.join(map(repr, unknown))} for report {name!r}; "
                          f"it takes: {', '.join(known)}", exit_code=2)
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
        pm.execute_notebook(
            str(nb_in), str(nb_out), parameters=params, kernel_name=KERNEL_NAME,
            execution_timeout=timeout_s, progress_bar=False, log_output=False, cwd=None,
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
    html = export_html(nb_out, out, title=str(title) if title else None)
    return ReportResult(html_path=html, notebook_path=nb_out,
                        json_path=json_path if json_path is not None and json_path.exists() else None)
