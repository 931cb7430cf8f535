"""One way to reach Dask distributed, for sweeps, tuning studies and large fast-engine runs.

``scheduler`` is always one of: ``"local"`` (a ``LocalCluster`` started for the block and
closed after it), a scheduler address (``"tcp://10.0.0.5:8786"``), or a
``distributed.Client`` the caller owns (used, never closed). ``distributed`` is imported
only here and only when a cluster is asked for.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import sys
from contextlib import contextmanager
from typing import Any, Iterator

from omnisim.errors import OmnisimError

__all__ = ["ClusterError", "SchedulerAddressError", "check_scheduler_address", "dask_client",
           "exit_interrupted"]

#: Loggers that report a cluster torn down mid-flight (closed comms, tasks destroyed while
#: pending, workers lost): silenced by :func:`exit_interrupted`, never otherwise.
NOISY_LOGGERS = ("distributed", "tornado", "asyncio")


class ClusterError(OmnisimError):
    """A local Dask cluster could not start; the message says the likely cause and the fix."""

    exit_code = 1


class SchedulerAddressError(OmnisimError, ValueError):
    """``scheduler`` is neither ``"local"`` nor a scheduler address (bad input: exit 2)."""


def _address_error(scheduler: Any, exc: Exception) -> SchedulerAddressError:
    return SchedulerAddressError(
        f"--scheduler {scheduler!r}: not a Dask scheduler address ({exc}); expected "
        f"'local' or an address such as tcp://host:8786")


def check_scheduler_address(scheduler: Any) -> None:
    """Raise :class:`SchedulerAddressError` unless ``scheduler`` is ``"local"``, a
    ``distributed.Client`` or a well-formed scheduler address — without connecting, so that
    commands can check it before they create or start anything."""
    if scheduler == "local" or not isinstance(scheduler, str):
        return  # "local" or a Client (anything else fails in Client(), as before)
    from distributed.comm import get_address_host_port, parse_address

    try:
        if parse_address(scheduler)[0] != "inproc":  # inproc:// has no host and port
            get_address_host_port(scheduler)
    except (ValueError, TypeError) as exc:
        raise _address_error(scheduler, exc) from None


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
def _sigint_blocked() -> Iterator[None]:
    """Block ``SIGINT`` in this thread for the block: the threads it starts (the cluster's IO
    loop) and the processes they start (its workers) keep it blocked, so a Ctrl-C sent to the
    terminal's process group reaches only this process — not workers that would each print a
    ``KeyboardInterrupt`` traceback. A Ctrl-C during the block is raised at its end."""
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - not POSIX
        yield
        return
    from multiprocessing import resource_tracker

    # started later from the loop thread, the resource tracker would unblock SIGINT there
    resource_tracker.ensure_running()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


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
            with _sigint_blocked():
                cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=processes,
                                       dashboard_address=":0")  # any free port: no clash
        except RuntimeError as exc:
            raise ClusterError(_start_failure(exc, n_workers, processes)) from exc
        client = Client(cluster)
    else:
        check_scheduler_address(scheduler)
        try:
            client = Client(scheduler)
        except (ValueError, TypeError) as exc:  # not an address at all: the user's input
            raise _address_error(scheduler, exc) from None
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def exit_interrupted(message: str, code: int = 130) -> None:
    """End a command line interrupted by Ctrl-C: print ``message`` (one line, stderr) and exit
    with ``code``. The cluster it interrupted is closed at exit by Dask's own ``atexit``
    handler, which then reports closed comms and half-started clusters: :data:`NOISY_LOGGERS`
    and errors raised while the interpreter exits are silenced, as the process is ending and
    the message already said why."""
    import click

    known = [n for n, lg in list(logging.root.manager.loggerDict.items()) if isinstance(lg, logging.Logger)]
    for name in {*NOISY_LOGGERS, *(n for n in known if n.split(".")[0] in NOISY_LOGGERS)}:
        logging.getLogger(name).disabled = True  # a child logger's flag is its own
    sys.unraisablehook = lambda unraisable: None
    click.echo(message, err=True)
    sys.exit(code)
