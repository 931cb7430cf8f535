"""The sender store a benchmark runs on: ``sqlite`` (a file in a folder) or a PostgreSQL URL
(a fresh schema, so runs never meet; the benchmark drops it)."""

from __future__ import annotations

import uuid
from pathlib import Path


def bench_store_url(db: str, folder: Path, file_name: str = "bench.db") -> str:
    """``sqlite:///<folder>/<file_name>`` for ``db == "sqlite"``, else ``db`` with a new
    ``schema=omnisim_bench_<hex>``."""
    if db == "sqlite":
        return f"sqlite:///{Path(folder) / file_name}"
    sep = "&" if "?" in db else "?"
    return f"{db}{sep}schema=omnisim_bench_{uuid.uuid4().hex[:8]}"
