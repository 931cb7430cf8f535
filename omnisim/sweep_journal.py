"""The journal of a sweep: one JSON line per finished run, so an interrupted or partly
failed sweep loses nothing and resumes where it stopped.

Each line is ``{"key": <task key>, "row": <the run's metrics row>}``, appended and flushed
as soon as the run's row reaches the client. A task's key is a SHA-256 over everything its
result depends on: run id, the scenario's every parameter, the policy (its full document
for names, files and mappings, with every reference inlined; for a policy object, the digest
of its artifact payload — parameters and fitted arrays — or, if it has no artifact kind, its
``repr``), seed, engine, the omnisim version and a digest of omnisim's code and built-in data
(:func:`code_fingerprint`). A resumed sweep reuses a journaled row only when the key matches
— change a grid value, a policy file or omnisim's code, and the affected runs run again.
Failed runs are never journaled, so a resume runs them again.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from omnisim.errors import OmnisimError

__all__ = ["SweepJournalError", "code_fingerprint", "task_key", "read_journal", "SweepJournal"]


class SweepJournalError(OmnisimError):
    """A journal file that cannot be read (a line other than the last is not a record)."""


def _policy_identity(policy: Any) -> Any:
    from omnisim.policies.artifact import policy_document

    if isinstance(policy, (str, Path, Mapping)):
        try:
            return policy_document(policy if not isinstance(policy, Mapping) else dict(policy))
        except (OmnisimError, OSError) as exc:  # unreadable now: the run will fail and rerun
            return {"unresolved": str(policy), "error": str(exc)}
    cls = f"{type(policy).__module__}.{type(policy).__qualname__}"
    try:  # an exportable policy object: the digest of its artifact payload
        from omnisim.policies.artifact import _kind_of

        kind = _kind_of(policy)
        params, arrays, files = kind.dump(policy)
    except Exception:  # noqa: BLE001 - not exportable: its repr (an address in it only reruns)
        return {"object": cls, "repr": repr(policy)}
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arrays[name]).tobytes())
    for role in sorted(files):
        digest.update(role.encode())
        digest.update(files[role][1])
    return {"object": cls, "kind": kind.name, "payload": digest.hexdigest()}


@functools.lru_cache(maxsize=8)
def code_fingerprint(root: str | Path | None = None) -> str:
    """SHA-256 over omnisim's own code and built-in data (``*.py``, ``*.yaml`` under ``root``,
    default: the installed package), so an edited engine, model or policy — in a development
    checkout, without a new version — changes every task key. Cached per process."""
    root = Path(root) if root is not None else Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".yaml", ".yml")
                       and "__pycache__" not in p.parts):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def task_key(task: Any) -> str:
    """The SHA-256 hex key of a :class:`~omnisim.sweep.SweepTask` (module docstring)."""
    import omnisim

    body = {"run_id": task.run_id, "scenario_name": task.scenario_name,
            "scenario": dataclasses.asdict(task.scenario), "policy": _policy_identity(task.policy),
            "policy_label": task.policy_label, "seed": task.seed, "params": dict(task.params),
            "engine": task.engine, "omnisim": omnisim.__version__, "code": code_fingerprint()}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _plain(value: Any) -> Any:
    """numpy scalars to Python scalars so a row is JSON (floats round-trip exactly)."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot journal a value of type {type(value).__name__}: {value!r}")


def read_journal(path: str | Path) -> dict[str, dict[str, Any]]:
    """``{task key: row}`` of a journal file; ``{}`` when it does not exist.

    A last line cut short (the process died while writing it) is dropped; any other line
    that is not a record raises :class:`SweepJournalError` naming the file and line.
    """
    path = Path(path)
    if not path.exists():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    out: dict[str, dict[str, Any]] = {}
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            key, row = rec["key"], rec["row"]
            if not isinstance(key, str) or not isinstance(row, dict):
                raise TypeError("key must be a string and row a mapping")
        except (ValueError, KeyError, TypeError) as exc:
            if i == len(lines):
                warnings.warn(f"{path}: line {i} is cut short (the sweep was stopped while "
                              f"writing it); that run will run again", stacklevel=2)
                continue
            raise SweepJournalError(
                f"{path}: line {i}: expected a JSON record {{\"key\": ..., \"row\": {{...}}}}, "
                f"got {line[:80]!r} ({exc}); fix or delete that line (its run will run again)"
            ) from None
        out[key] = row
    return out


class SweepJournal:
    """Append-only journal of finished runs at ``path`` (created with its folder)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = None

    def append(self, key: str, row: Mapping[str, Any]) -> None:
        """Write one finished run and flush it to disk."""
        if self._fh is None:
            self._ensure_line_start()
            self._fh = open(self.path, "a", encoding="utf-8")
        self._fh.write(json.dumps({"key": key, "row": dict(row)}, default=_plain) + "\n")
        self._fh.flush()

    def _ensure_line_start(self) -> None:
        """Drop a cut-short last line (no newline yet) before appending after it."""
        if self.path.exists() and self.path.stat().st_size:
            data = self.path.read_bytes()
            if not data.endswith(b"\n"):
                with open(self.path, "r+b") as fh:
                    fh.truncate(data.rfind(b"\n") + 1)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def remove(self) -> None:
        """Delete the journal (the sweep finished and its results are written)."""
        self.close()
        self.path.unlink(missing_ok=True)
