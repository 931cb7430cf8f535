"""omnisim: simulate customers, evaluate and learn messaging policies, send, report."""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("omnisim")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"

from omnisim.log import (  # noqa: E402
    COLUMNS, EVENTS, LogValidationError, empty_log, read_log, summarize, validate, write_log,
)

__all__ = [
    "__version__",
    "COLUMNS", "EVENTS", "LogValidationError", "empty_log", "read_log", "summarize",
    "validate", "write_log",
]
