"""omnisim: simulate customers, evaluate and learn messaging policies, send, report.

The public API is listed in ``__all__``. Heavy parts (engines, learning, Dask, Optuna) are
imported on first use, so ``import omnisim`` and the command line stay quick.
"""

import sys
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version as _version
from types import ModuleType
from typing import Any

try:
    __version__ = _version("omnisim")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"

from omnisim.errors import OmnisimError  # noqa: E402
from omnisim.log import (  # noqa: E402
    COLUMNS, EVENTS, LogValidationError, empty_log, read_log, summarize, validate, write_log,
)

#: Public name → module it lives in (imported lazily, PEP 562).
_LAZY: dict[str, str] = {
    # the simulated world and experiments
    "load_scenario": "omnisim.model.scenario",
    "Scenario": "omnisim.model.scenario",
    "run_one": "omnisim.experiment",
    "compare": "omnisim.experiment",
    "plot_comparison": "omnisim.experiment",
    "sweep": "omnisim.sweep",
    "SweepError": "omnisim.sweep",
    "load_sweep_results": "omnisim.sweep_results",
    "policy_leads": "omnisim.sweep_results",
    "calibrate": "omnisim.model.calibrate",
    "fit_calibration": "omnisim.model.calibrate",
    "tune": "omnisim.tune",
    # the decision core
    "Context": "omnisim.policies.base",
    "Decision": "omnisim.policies.base",
    "Policy": "omnisim.policies.base",
    "get_policy": "omnisim.policies.registry",
    "list_policies": "omnisim.policies.registry",
    "check_policy": "omnisim.policies.check",
    "export_policy": "omnisim.policies.artifact",
    "load_artifact": "omnisim.policies.artifact",
    "train_policy": "omnisim.policies.artifact",
    "evaluate_policy": "omnisim.policies.ope_log",
    # data and reports
    "hillstrom_log": "omnisim.datasets",
    "obd_log": "omnisim.datasets",
    "run_report": "omnisim.reports",
}

__all__ = [
    "__version__", "OmnisimError",
    "COLUMNS", "EVENTS", "LogValidationError", "empty_log", "read_log", "summarize",
    "validate", "write_log",
    *_LAZY,
]


#: Public functions named like the submodule they live in: ``omnisim.sweep`` / ``omnisim.tune``
#: is that submodule, made callable as the function (``omnisim.sweep(...)``,
#: ``omnisim.tune.load_tune_config``), whichever was imported first.
_CALLABLE_MODULES = ("sweep", "tune")


class _CallableModule(ModuleType):
    """A submodule that calls its namesake function when called."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self, self.__name__.rpartition(".")[2])(*args, **kwargs)


class _Package(ModuleType):
    """``omnisim`` itself: the import system's ``setattr(omnisim, "sweep", <module>)`` (on the
    first ``import omnisim.sweep``) makes that submodule callable instead of hiding the function."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _CALLABLE_MODULES and type(value) is ModuleType:
            value.__class__ = _CallableModule
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name in _CALLABLE_MODULES:
        return import_module(f"omnisim.{name}")  # the import sets it (callable), see _Package
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'omnisim' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
