"""environment.yml (conda) and pyproject.toml must agree on runtime dependencies."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names that differ from their PyPI names
CONDA_TO_PYPI = {"python-duckdb": "duckdb"}


def _split(req: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req)
    assert m, f"cannot parse requirement {req!r}"
    spec = re.sub(r"^\[[^\]]*\]", "", m.group(2).replace(" ", ""))  # pip extras are not versions
    return m.group(1).lower().replace("_", "-"), spec


def pyproject_runtime() -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return dict(_split(r) for r in data["project"]["dependencies"])


def conda_runtime() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = {}
    for d in env["dependencies"]:
        if isinstance(d, str):
            name, spec = _split(d)
            if name not in {"python", "pip"}:
                deps[CONDA_TO_PYPI.get(name, name)] = spec
    return deps


def test_environment_yml_matches_pyproject_runtime_dependencies():
    py, conda = pyproject_runtime(), conda_runtime()
    only_py = sorted(set(py) - set(conda))
    only_conda = sorted(set(conda) - set(py))
    assert not only_py and not only_conda, (
        f"runtime dependencies differ: only in pyproject.toml {only_py}, "
        f"only in environment.yml {only_conda}"
    )
    differ = {n: (py[n], conda[n]) for n in py if py[n] != conda[n]}
    assert not differ, f"version specifiers differ (pyproject, environment.yml): {differ}"


def test_environment_yml_python_matches_requires_python():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    python = [d for d in env["dependencies"] if isinstance(d, str) and re.match(r"python\b(?!-)", d)]
    assert python == ["python" + data["project"]["requires-python"]]
