"""Small helpers to validate YAML-shaped specs (journeys, pressure rules, policy files).

Every error names the key path (``steps[1].wait_h``) and the expected type, so a user can
fix a file without reading the code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import yaml
from omnisim.errors import OmnisimError


class SpecError(OmnisimError, ValueError):
    """A journey, pressure-rule or policy spec is invalid; the message names the key path."""


_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
               list: "a list", dict: "a mapping"}


def join(path: str, key: str) -> str:
    """``a.b`` / ``file.yaml: b`` / ``b``: the key path shown in errors."""
    if not path:
        return key
    if path.endswith(":"):
        return f"{path} {key}"
    return f"{path}{key}" if key.startswith("[") else f"{path}.{key}"


def describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"[:80]


def fail(err: type[SpecError], path: str, expected: str, value: Any) -> SpecError:
    prefix = path if path.endswith(":") else f"{path}:"  # a file's own label is "file.yaml:"
    return err(f"{prefix} expected {expected}, got {describe(value)}")


def get(spec: Mapping[str, Any], key: str, kind: type, path: str, err: type[SpecError],
        default: Any = ..., choices: tuple[Any, ...] | None = None,
        minimum: float | None = None) -> Any:
    """``spec[key]`` checked against ``kind`` (and ``choices`` / ``minimum``).

    ``default=...`` makes the key required. ``float`` accepts integers; ``int`` and
    ``float`` refuse booleans.
    """
    where = join(path, key)
    if key not in spec or spec[key] is None:
        if default is ...:
            raise err(f"{where}: required key is missing (expected {_TYPE_NAMES.get(kind, kind.__name__)})")
        return default
    value = spec[key]
    ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok, value = True, float(value)
    if not ok:
        raise fail(err, where, _TYPE_NAMES.get(kind, kind.__name__), value)
    if choices is not None and value not in choices:
        raise fail(err, where, "one of " + ", ".join(map(str, choices)), value)
    if minimum is not None and value < minimum:
        raise fail(err, where, f"a value >= {minimum}", value)
    return value


def check_keys(spec: Any, allowed: set[str], path: str, err: type[SpecError]) -> Mapping[str, Any]:
    """``spec`` must be a mapping whose keys are all in ``allowed``."""
    if not isinstance(spec, Mapping):
        raise fail(err, path or "<top level>", "a mapping", spec)
    unknown = sorted(set(map(str, spec)) - allowed)
    if unknown:
        raise err(f"{join(path, unknown[0])}: unknown key "
                  f"(expected one of {', '.join(sorted(allowed))})")
    return spec


def get_list(spec: Mapping[str, Any], key: str, path: str, err: type[SpecError],
             default: Any = ...) -> list[Any]:
    value = get(spec, key, list, path, err, default=default)
    return list(value)


def load_yaml(source: str | Path | Mapping[str, Any], err: type[SpecError]) -> tuple[Any, str]:
    """A mapping from a path or a mapping; returns ``(data, label)`` for error messages."""
    if isinstance(source, Mapping):
        return source, ""
    path = Path(source)
    try:
        text = path.read_text()
    except OSError as exc:
        raise err(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise err(f"{path}: not a text file (not UTF-8: {exc.reason} at byte {exc.start}); "
                  "expected a YAML file") from None
    try:
        return yaml.safe_load(text), str(path)
    except yaml.YAMLError as exc:
        raise err(f"{path}: not valid YAML ({exc})") from None
