"""One way to reach Dask distributed, for sweeps, tuning studies and large fast-engine runs.

``scheduler`` is always one of: ``"local"`` (a ``LocalCluster`` started for the block and
closed after it), a scheduler address (``"tcp://10.0.0.5:8786"``), or a
``distributed.Client`` the caller owns (used, never closed). ``distributed`` is imported
only here and only when a cluster is asked for.
"""

from __future__ import annotations

import multiprocessing
import sys
from contextlib import contextmanager
from typing import Any, Iterator

from omnisim.errors import OmnisimError

__all__ = ["ClusterError", "dask_client"]


class ClusterError(OmnisimError):
    """A local Dask cluster could not start; the message says the likely cause and the fix."""

    exit_code = 1


def _start_failure(exc: Exception, n_workers: int, processes: bool) -> str:
    script = getattr(sys.modules.get("__main__"), "__file__", None)
    kind = "processes" if processes else "threads"
    text = f"could not start a Dask LocalCluster of {n_workers} worker {kind} ({str(exc).rstrip('.')})"
    if processes and script and multiprocessing.current_process().name == "MainProcess":
        text += (f". Worker processes start by re-importing the script {script}: put the code "
                 f"that starts the sweep or simulation under `if __name__ == \"__main__\":`, or "
                 f"pass processes=False (threads) or scheduler=\"sequential\"")
    return text


@contextmanager
def dask_client(scheduler: Any, *, n_workers: int = 2, processes: bool = True) -> Iterator[Any]:
    """A ``distributed.Client`` for ``scheduler`` (module docstring) for the ``with`` block.

    ``n_workers`` / ``processes``: the ``LocalCluster`` of ``"local"`` (one thread per
    worker; worker processes unless ``processes=False``); ignored otherwise.
    """
    from distributed import Client, LocalCluster

    if isinstance(scheduler, Client):
        yield scheduler
        return
    cluster = None
    if scheduler == "local":
        try:
            cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=processes,
                                   dashboard_address=":0")  # any free port: no clash
        except RuntimeError as exc:
            raise ClusterError(_start_failure(exc, n_workers, processes)) from exc
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
