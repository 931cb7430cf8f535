"""numba compilation of omnisim's compiled kernels, cached on disk per version of their sources.

numba's own cache checks only the source file of each compiled function, not the modules it
calls into: after an edit of ``behavior.py`` the compiled world loop
(``omnisim/model/_kernel_world.py``) would still load the old formula. So every kernel is
compiled through :func:`njit`, whose cache lives in a folder named after a hash of all the
kernels' source files (:data:`SOURCES`): any edit starts a fresh cache, and an unchanged
checkout reuses its compiled code across processes (pytest workers, forked chunk workers,
Dask workers on the same machine).

The folder is ``$OMNISIM_NUMBA_CACHE`` or ``~/.cache/omnisim/numba`` (``$XDG_CACHE_HOME``
respected), one sub-folder per numba version and source hash. ``make venv`` fills it once
(``python -m omnisim._jit``), since compiling every kernel takes a minute or two.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable

import numba
from numba.core import config

__all__ = ["njit", "cache_dir", "SOURCES", "warm"]

_ROOT = Path(__file__).resolve().parent
#: every source file a compiled kernel is built from: an edit of any recompiles them all
SOURCES = (
    "_jit.py", "log.py", "model/behavior.py", "model/channels.py", "model/fatigue.py",
    "model/_kernel_world.py", "policies/runtime.py", "policies/_kernel_codes.py",
    "policies/_kernel_journey.py", "policies/_kernel_pressure.py", "policies/_kernel_time.py",
)


def cache_dir() -> Path:
    """The folder compiled kernels are cached in (see the module docstring)."""
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((_ROOT / name).read_bytes())
    base = os.environ.get("OMNISIM_NUMBA_CACHE")
    if not base:
        home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = str(Path(home) / "omnisim" / "numba")
    return Path(base) / f"numba-{numba.__version__}-{digest.hexdigest()[:16]}"


_CACHE_DIR = str(cache_dir())


def njit(**options: Any) -> Callable[[Callable[..., Any]], Any]:
    """``numba.njit(cache=True, **options)`` with the cache in :func:`cache_dir`."""
    def compile_(fn: Callable[..., Any]) -> Any:
        previous = config.CACHE_DIR
        config.CACHE_DIR = _CACHE_DIR  # read when the dispatcher's cache is set up, here
        try:
            return numba.njit(cache=True, **options)(fn)
        finally:
            config.CACHE_DIR = previous
    return compile_


def warm() -> float:
    """Compile (or load) every kernel by simulating a few users on the compiled path with
    each kind of compiled policy; returns the seconds it took."""
    import time

    from omnisim.model import engine_fast
    from omnisim.model.scenario import load_scenario
    from omnisim.policies.registry import get_policy

    t0 = time.perf_counter()
    sc = load_scenario("default")
    for name in ("seed_journey+pressure", "blast"):
        engine_fast.simulate(sc, get_policy(name), n_users=20, days=2, seed=0, progress=False)
    return time.perf_counter() - t0


if __name__ == "__main__":  # python -m omnisim._jit: fill the cache (make venv)
    print(f"omnisim: compiled kernels ready in {warm():.0f} s (cache: {_CACHE_DIR})")
