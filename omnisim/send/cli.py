"""`omnisim send …`: run the production sender (API + workers), manage keys, export the log."""

from __future__ import annotations

import math
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from omnisim.cli_common import OmnisimGroup

DEFAULT_DB = "sqlite:///omnisim-send.db"
DRY_RUN_FILE = "omnisim-send-dryrun.jsonl"


@click.group(cls=OmnisimGroup)
def send() -> None:
    """The production sender: exported policies on real events, real providers."""


def _db_option(f: Any) -> Any:
    return click.option("--db", default=DEFAULT_DB, show_default=True, envvar="OMNISIM_SEND_DB",
                        help="sqlite:///PATH or postgresql://USER@HOST/DB[?schema=NAME].")(f)


def _runtime_options(f: Any) -> Any:
    opts = [
        click.option("--providers", type=click.Path(path_type=Path, exists=True, dir_okay=False),
                     help=f"providers YAML; default: a dry-run file sink ({DRY_RUN_FILE})."),
        click.option("--clock", default="system", show_default=True,
                     help="'system', or a fixed ISO instant (replays and tests)."),
        click.option("--late-tolerance-h", default="1", show_default=True,
                     help="Hours a trigger may lag the clock and still be decided at its own "
                          "time; 'inf' always."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed of the per-decision random streams."),
        click.option("--lease-s", type=float, default=60.0, show_default=True,
                     help="Seconds before a claimed, unsettled delivery is retried."),
        click.option("--max-delivery-delay-h", type=click.FloatRange(min=0), default=1.0,
                     show_default=True,
                     help="Hours after queueing during which a message a provider outage "
                          "stopped is tried again (backoff) before it is dead-lettered; "
                          "0: at once, 'inf': never."),
        click.option("--retry-jitter", type=click.FloatRange(min=0, max=1), default=0.5,
                     show_default=True,
                     help="Fraction of each retry's backoff drawn at random, so that messages "
                          "one provider outage held do not all come back at once; 0: exact "
                          "backoff, 1: full jitter."),
        click.option("--fallback", multiple=True, metavar="CHANNEL=CHANNEL[,CHANNEL]",
                     help="Channel fallback for decisions whose policy does not set "
                          "meta['fallback'] itself, e.g. push=email (repeatable)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def build(db: str, policy_path: Path | None, providers: Path | None, clock: str,
          late_tolerance_h: str, seed: int, lease_s: float,
          fallback: tuple[str, ...] = (), max_delivery_delay_h: float = 1.0,
          retry_jitter: float = 0.5) -> tuple[Any, Any]:
    """The :class:`DecisionService` and :class:`Worker` for these options (the worker's
    jitter is drawn from an OS-seeded generator: processes must not retry in step).

    Without ``policy_path`` the policy last recorded in the store is used.
    """
    from omnisim.errors import OmnisimError
    from omnisim.send.clock import parse_clock
    from omnisim.send.providers import ProviderSet
    from omnisim.send.service import DecisionService, LoadedPolicy, parse_fallback
    from omnisim.send.store import Store
    from omnisim.send.worker import Worker, WorkerConfig

    tol = _late_tolerance(late_tolerance_h)
    store = Store.open(db)
    if policy_path is not None:
        policy = LoadedPolicy.from_file(policy_path)
    else:
        doc = store.setting("policy_artifact")
        if not doc:
            raise OmnisimError("no --policy given and the store has none recorded; start "
                               "`omnisim send serve --policy ARTIFACT` first or pass --policy")
        policy = LoadedPolicy.from_text(doc)
    service = DecisionService(store, policy, parse_clock(clock), seed=seed, late_tolerance=tol,
                              fallback=parse_fallback(list(fallback)))
    if policy_path is not None and store.setting("policy_sha256") != policy.sha256:
        service.swap_policy(policy)
    if providers is not None:
        pset = ProviderSet.from_yaml(providers, sent_keys=store, rates=store)
    else:
        click.echo(f"no --providers: dry run, messages go to {DRY_RUN_FILE}", err=True)
        pset = ProviderSet.from_dict({"channels": {ch: [{"type": "file", "path": DRY_RUN_FILE}]
                                                   for ch in ("email", "sms", "push")}},
                                     sent_keys=store)
    return service, Worker(service, pset, WorkerConfig(lease_s=lease_s,
                                                       max_delivery_delay_h=max_delivery_delay_h,
                                                       retry_jitter=retry_jitter))


def _late_tolerance(text: str) -> timedelta | None:
    """``--late-tolerance-h``: hours >= 0, or ``inf`` (None: always at the trigger's time)."""
    from omnisim.errors import OmnisimError

    try:
        hours = float(text)
    except ValueError:
        hours = math.nan
    if math.isnan(hours) or hours < 0:
        raise OmnisimError(f"--late-tolerance-h {text!r}: expected a number of hours >= 0, "
                           "or 'inf'")
    return None if math.isinf(hours) else timedelta(hours=hours)


@send.command("serve")
@click.option("--policy", "policy_path", type=click.Path(path_type=Path), required=True,
              help="Policy artifact (omnisim policy export); verified before start-up.")
@_db_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8080, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=1, show_default=True,
              help="Worker threads in this process (0: API only).")
@_runtime_options
def serve_cmd(policy_path: Path, db: str, host: str, port: int, workers: int, **kw: Any) -> None:
    """Start the HTTP API and worker thread(s)."""
    import uvicorn

    from omnisim.send.app import create_app

    service, worker = build(db, policy_path, **kw)
    app = create_app(service)
    metrics = app.state.metrics
    worker.on_send = lambda channel, status: metrics.sends.labels(channel, status).inc()
    stop = threading.Event()
    threads = [threading.Thread(target=worker.run, args=(stop,), daemon=True, name=f"worker-{i}")
               for i in range(workers)]
    for t in threads:
        t.start()
    click.echo(f"omnisim sender: policy {service.policy.name} ({service.policy.version}) on "
               f"http://{host}:{port}, {workers} worker thread(s)", err=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        stop.set()


@send.command("worker")
@click.option("--policy", "policy_path", type=click.Path(path_type=Path),
              help="Policy artifact; default: the one the server recorded in the store.")
@_db_option
@click.option("--drain", is_flag=True, help="Exit once nothing is due instead of looping.")
@_runtime_options
def worker_cmd(policy_path: Path | None, db: str, drain: bool, **kw: Any) -> None:
    """Run a worker against the same database as the server (timers and deliveries)."""
    _, worker = build(db, policy_path, **kw)
    if drain:
        worker.drain()
        return
    stop = threading.Event()
    try:
        worker.run(stop)
    except KeyboardInterrupt:
        stop.set()


@send.group("key", cls=OmnisimGroup)
def key() -> None:
    """API keys (stored hashed)."""


@key.command("create")
@_db_option
@click.option("--label", default="default", show_default=True, help="What the key is for.")
def key_create(db: str, label: str) -> None:
    """Create an API key and print it once (only its SHA-256 is stored)."""
    from omnisim.send.clock import SystemClock
    from omnisim.send.store import Store

    store = Store.open(db)
    click.echo(store.create_api_key(label, SystemClock().now()))
    store.close()


@send.command("export-log")
@_db_option
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Engagement log to write (.csv, .csv.gz or .parquet).")
def export_log_cmd(db: str, out: Path) -> None:
    """Write the sender's log in the engagement-log format (validated)."""
    from omnisim.send.export import export_log
    from omnisim.send.store import Store

    store = Store.open(db, create=False)
    n = export_log(store, out)
    store.close()
    click.echo(f"wrote {n} rows → {out}")
