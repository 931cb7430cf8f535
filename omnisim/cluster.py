"""One way to reach Dask distributed, for sweeps, tuning studies and large fast-engine runs.

``scheduler`` is always one of: ``"local"`` (a ``LocalCluster`` started for the block and
closed after it), a scheduler address (``"tcp://10.0.0.5:8786"``), or a
``distributed.Client`` the caller owns (used, never closed). ``distributed`` is imported
only here and only when a cluster is asked for.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

__all__ = ["dask_client"]


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
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=processes,
                               dashboard_address=":0")  # any free port: no clash
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
