"""The worker loop: due timers → decisions and admissions; queued messages → provider → log.

One :meth:`Worker.step` runs due timers (:meth:`DecisionService.run_due`), then claims a
batch of queued outbox rows and delivers each through the providers. Claiming sets a
lease (wall-clock seconds, independent of the sender's clock), restarted for each row just
before it is delivered (a row whose lease ran out while it waited its turn, and that
another worker claimed meanwhile, is left to that worker): a worker killed mid-delivery
leaves its rows ``sending``; when the lease runs out another worker claims them again and
delivers with the **same** idempotency key (the message id), which the providers dedup
through the store's ``sent_keys``. A row claimed more than ``max_claims`` times without
settling is dead-lettered. On PostgreSQL claims use ``FOR UPDATE SKIP LOCKED``, so workers
never wait on each other.

A provider outage (every provider of the channel exhausted its attempts or had its circuit
open: :attr:`DeliveryResult.transient`) does not fail the message: its row goes back to the
queue, due again after a capped exponential backoff with bounded random jitter
(:func:`retry_wait_s`; at least until a circuit breaker lets a request through), until
``max_delivery_delay_h`` after it was queued; then it is dead-lettered. Such requeues are
counted apart from claims (``outbox.retries``), so they never trip ``max_claims``. Retry
times and the deadline are on the sender's clock.

A channel fallback that raises (the policy, a due timer of the user, a decision the code cannot
rebuild) is retried the same way: the row goes back to the queue with the original's
refusal kept in its ``result`` (the original channel is not asked again), and after the
deadline or ``max_fallback_tries`` tries the message fails, with the reason in the log and
the row's body in quarantine. An error of the database itself still fails the step.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, NamedTuple, Protocol

from omnisim.errors import OmnisimError
from omnisim.policies.base import local_hour
from omnisim.send.providers.base import DeliveryResult, OutboundMessage
from omnisim.send.providers.resilience import capped_backoff_s
from omnisim.send.service import DecisionService
from omnisim.send.store import Store, to_us

log = logging.getLogger("omnisim.send.worker")


class Deliverer(Protocol):
    """What the worker needs of :class:`omnisim.send.providers.ProviderSet`."""

    def deliver(self, msg: OutboundMessage) -> DeliveryResult: ...


@dataclass
class WorkerConfig:
    """``batch``: rows per claim; ``lease_s``: seconds before a claimed row may be re-claimed;
    ``max_claims``: claims without settling (crashes) before dead-letter; ``poll_s``: idle
    sleep in seconds. A message failing for a provider outage (or whose channel fallback
    raised) is tried again after :func:`retry_wait_s` seconds: the capped backoff
    ``b = min(retry_max_s, retry_base_s * 2**(n - 1))`` (n = its n-th requeue) of which the
    fraction ``retry_jitter`` (0 to 1) is drawn at random, so that messages one outage held do
    not all come back at once; never before a circuit breaker half-opens. Tries stop
    ``max_delivery_delay_h`` hours after the message was queued (0: dead-letter at once;
    ``inf``: never), and a fallback that keeps raising stops after ``max_fallback_tries``
    tries. ``retry_jitter`` 0 gives exact times (tests, replays)."""

    batch: int = 50
    lease_s: float = 60.0
    max_claims: int = 5
    poll_s: float = 0.2
    max_delivery_delay_h: float = 1.0
    retry_base_s: float = 10.0
    retry_max_s: float = 300.0
    retry_jitter: float = 0.5
    max_fallback_tries: int = 20

    def __post_init__(self) -> None:
        if not 0.0 <= self.retry_jitter <= 1.0:  # also refuses NaN
            raise OmnisimError(f"retry_jitter {self.retry_jitter!r}: expected a fraction in [0, 1] "
                               "(0: exact backoff, 0.5: the commands' default, 1: full jitter)")
        if self.max_fallback_tries < 1:
            raise OmnisimError(f"max_fallback_tries {self.max_fallback_tries!r}: expected an "
                               "integer >= 1 (tries of a channel fallback that raises)")


def retry_wait_s(tries: int, base_s: float, max_s: float, jitter: float, u: float,
                 retry_after_s: float = 0.0) -> float:
    """Seconds before the next try of a message whose ``tries``-th try (1 = first) failed.

    ``b = min(max_s, base_s * 2**(tries - 1))`` is the capped backoff; the wait is
    ``max(retry_after_s, (1 - jitter) * b) + jitter * b * u`` with ``u`` uniform in [0, 1):
    with no circuit breaker wait, between ``(1 - jitter) * b`` and ``b`` (``jitter`` 0: exactly
    ``b``; 1: "full jitter", ``U(0, b)``); with one (``retry_after_s``, until a breaker lets a
    probe through), spread over ``jitter * b`` after it, never before it."""
    b = capped_backoff_s(tries, base_s, max_s)
    return max(retry_after_s, (1.0 - jitter) * b) + jitter * b * u


class Claimed(NamedTuple):
    """A claimed outbox row: ``claims`` counts every claim of the row, ``retries`` its
    requeues (an outage, a fallback that raised); ``queued_us``: when it was queued (sender
    clock, µs); ``result``: the last try's response (JSON), if any."""

    message_id: str
    body: str
    claims: int
    retries: int
    queued_us: int
    result: str | None = None


class _FallbackFailed(Exception):
    """The channel fallback of a settled message raised ``cause`` (not a database error)."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause


class Worker:
    """Turns due work into sends. ``on_send(channel, status)`` feeds metrics.

    ``rng`` draws the retry jitter (``WorkerConfig.retry_jitter``); pass a seeded one for
    repeatable times. The default is seeded from the OS, so that workers do not share a
    stream (workers seeded alike would retry in step: the herd the jitter is there to
    break)."""

    def __init__(self, service: DecisionService, deliverer: Deliverer,
                 config: WorkerConfig | None = None,
                 on_send: Callable[[str, str], None] = lambda channel, status: None,
                 rng: random.Random | None = None):
        self.service = service
        self.store: Store = service.store
        self.deliverer = deliverer
        self.config = config or WorkerConfig()
        self.on_send = on_send
        self._rng = rng if rng is not None else random.Random()
        self._rng_lock = threading.Lock()  # one Worker may serve several threads

    def claim(self) -> list[Claimed]:
        """Claim up to ``batch`` deliverable rows: queued ones whose next try is due on the
        sender's clock, and claimed ones whose (wall-clock) lease ran out."""
        now_us = int(time.time() * 1e6)
        lease_us = now_us + int(self.config.lease_s * 1e6)
        pick = ("SELECT message_id FROM outbox WHERE ((state = 'queued' AND next_try_us <= ?) "
                "OR (state = 'sending' AND lease_us < ?)) ORDER BY due_us LIMIT ?")
        if self.store.pg:
            pick += " FOR UPDATE SKIP LOCKED"
        with self.store.transaction():
            rows = self.store.query(
                f"UPDATE outbox SET state = 'sending', lease_us = ?, attempts = attempts + 1 "
                f"WHERE message_id IN ({pick}) RETURNING message_id, body, attempts, retries, "
                "COALESCE(queued_us, due_us), result, due_us",
                (lease_us, to_us(self.service.clock.now()), now_us, self.config.batch))
        # RETURNING keeps no order (PostgreSQL): deliver in the order the messages fell due
        rows = sorted(rows, key=lambda r: (int(r[6]), r[0]))
        return [Claimed(r[0], r[1], int(r[2]), int(r[3]), int(r[4]), r[5]) for r in rows]

    def renew(self, message_id: str, claims: int) -> bool:
        """Restart the lease of a claimed row just before delivering it: the claim's lease
        kept running while the batch's earlier rows were delivered. False when another
        worker has re-claimed the row since (its claim count moved on): that worker
        delivers it, this one must not."""
        lease_us = int((time.time() + self.config.lease_s) * 1e6)
        cur = self.store.execute("UPDATE outbox SET lease_us = ? WHERE message_id = ? AND "
                                 "state = 'sending' AND attempts = ?", (lease_us, message_id, claims))
        return cur.rowcount == 1

    def deliver_claimed(self) -> int:
        """Deliver one claimed batch; returns how many rows were settled (or taken over by
        another worker while waiting their turn)."""
        rows = self.claim()
        for row in rows:
            message_id = row.message_id
            if not self.renew(message_id, row.claims):
                log.warning("outbox %s was re-claimed by another worker while waiting in this "
                            "worker's batch (lease %g s); skipped", message_id, self.config.lease_s)
                continue
            data = json.loads(row.body)
            extra = {k: data.pop(k) for k in ("fallback", "decision") if k in data}
            data["extra"] = extra
            unsettled = row.claims - row.retries  # this claim and the crashed ones before it
            if unsettled > self.config.max_claims:
                result = DeliveryResult("failed", None, 0, None, "",
                                        f"claimed {unsettled - 1} times without settling "
                                        "(worker crashes?); dead-lettered")
            elif (refused := _refusal_kept(row.result)) is not None:
                result = refused  # its fallback raised before: only the fallback is tried again
            elif (blocked := self._blocked(row, data)) is not None:
                result = DeliveryResult("failed", None, 0, None, "", blocked)
            else:
                msg = {k: v for k, v in data.items() if k != "extra"}
                result = self.deliverer.deliver(OutboundMessage(**msg))
                if result.transient:
                    result = self._retry_later(row, data["channel"], result)
                    if result is None:
                        continue
            try:
                self._settle(message_id, data, result)
            except _FallbackFailed as failed:  # rolled back: the row is still ours, claimed
                self._fallback_failed(row, data, result, failed.cause)
        return len(rows)

    def _deadline_us(self, row: Claimed) -> int:
        """When tries of ``row`` stop: ``max_delivery_delay_h`` after it was queued (µs)."""
        h = self.config.max_delivery_delay_h
        return row.queued_us + int(h * 3.6e9) if math.isfinite(h) else 2**62

    def _next_try_us(self, now_us: int, tries: int, deadline_us: int,
                     retry_after_s: float | None) -> int:
        """When a row whose ``tries``-th requeue this is is due again (µs, sender clock):
        :func:`retry_wait_s` with this worker's jitter draw, at the latest at the deadline."""
        cfg = self.config
        with self._rng_lock:
            u = self._rng.random()
        wait_s = retry_wait_s(tries, cfg.retry_base_s, cfg.retry_max_s, cfg.retry_jitter, u,
                              retry_after_s or 0.0)
        return min(now_us + max(1, int(wait_s * 1e6)), deadline_us)

    def _requeue(self, row: Claimed, next_us: int, result: str) -> bool:
        """Put a claimed row back in the queue, due at ``next_us``, with the try's ``result``;
        False when another worker re-claimed it meanwhile."""
        cur = self.store.execute(
            "UPDATE outbox SET state = 'queued', retries = retries + 1, next_try_us = ?, "
            "queued_us = ?, result = ? WHERE message_id = ? AND state = 'sending' AND attempts = ?",
            (next_us, row.queued_us, result, row.message_id, row.claims))
        return cur.rowcount == 1

    def _retry_later(self, row: Claimed, channel: str, r: DeliveryResult) -> DeliveryResult | None:
        """Put a row that failed for a provider outage back in the queue (None), due after
        the backoff or the breaker's wait, whichever is longer, and at the latest at the
        delivery deadline; past the deadline, the dead-letter result saying so."""
        cfg = self.config
        now_us = to_us(self.service.clock.now())
        tries = row.retries + 1
        deadline_us = self._deadline_us(row)
        if now_us >= deadline_us:
            return replace(r, error=(
                f"gave up after {_duration((now_us - row.queued_us) / 1e6)} and {tries} "
                f"{'try' if tries == 1 else 'tries'} (provider outage; max delivery delay "
                f"{cfg.max_delivery_delay_h:g} h); last: {r.error}"))
        next_us = self._next_try_us(now_us, tries, deadline_us, r.retry_after_s)
        if self._requeue(row, next_us, _response(r)):
            log.info("outbox %s: provider outage (%s); try %d failed, next in %.0f s",
                     row.message_id, r.error, tries, (next_us - now_us) / 1e6)
            self.on_send(channel, "requeued")
        return None

    def _fallback_failed(self, row: Claimed, data: dict[str, Any], r: DeliveryResult,
                         cause: Exception) -> None:
        """The fallback of a message its channel refused (``r``) raised ``cause``: put the row
        back in the queue like an outage (:meth:`_next_try_us`), keeping ``r`` in its
        ``result`` so that the next claim retries only the fallback; at the delivery deadline,
        or after ``max_fallback_tries`` tries, fail it with the reason and quarantine it."""
        cfg = self.config
        now_us = to_us(self.service.clock.now())
        what = f"{type(cause).__name__}: {cause}"
        tries = int(_kept(row.result).get("fallback_tries", 0)) + 1
        deadline_us = self._deadline_us(row)
        chain = ",".join(data["extra"].get("fallback") or ())
        limit = (f"max delivery delay {cfg.max_delivery_delay_h:g} h" if now_us >= deadline_us else
                 f"at most {cfg.max_fallback_tries} tries (max_fallback_tries)"
                 if tries >= cfg.max_fallback_tries else None)
        if limit is not None:
            gave_up = (f"fallback to {chain} failed {tries} {'time' if tries == 1 else 'times'} over "
                       f"{_duration((now_us - row.queued_us) / 1e6)} (last: {_cut(what, 150)}); "
                       f"gave up: {limit}; not sent on any channel")
            log.error("outbox %s of user %r: %s (last error: %s)", row.message_id, data["user_id"],
                      gave_up, what)
            self._settle(row.message_id, data, r, gave_up=gave_up, error=what)
            return
        next_us = self._next_try_us(now_us, row.retries + 1, deadline_us, None)
        kept = json.loads(_response(r)) | {"permanent": r.permanent, "fallback_error": what[:1000],
                                           "fallback_tries": tries}
        if self._requeue(row, next_us, json.dumps(kept)):
            log.warning("outbox %s: fallback to %s raised (%s); try %d, next in %.0f s",
                        row.message_id, chain, what, tries, (next_us - now_us) / 1e6)
            self.on_send(data["channel"], "requeued")

    def _blocked(self, row: Claimed, data: dict[str, Any]) -> str | None:
        """Why the message must not go out now (None: it may), checked just before delivery:

        - the user's consent to its channel is gone (an ``unsubscribed`` event or a profile
          update since admission, or the user erased);
        - it waited out a provider outage (``row.retries``) and the policy's quiet hours
          (:meth:`PressureRules.quiet_rule`, in the user's time zone, on the sender's clock)
          began meanwhile: admission checked them, the delay is the outage's. Exempt tags
          (``PressureRules.exempt_tags``, read from the message's ``sent`` row) still go."""
        user_id, channel = data["user_id"], data["channel"]
        user = self.store.one("SELECT consent, timezone FROM users WHERE user_id = ?", (user_id,))
        if user is None or not json.loads(user[0]).get(channel):
            return (f"no {channel} consent any more (withdrawn, or the user erased, after the "
                    "message was queued); not sent")
        rules = getattr(self.service.policy.policy, "rules", None)
        if not row.retries or rules is None or not rules.quiet_hours:
            return None
        sent = self.store.message_row(row.message_id, user_id)
        if sent is not None and sent[3] in rules.exempt_tags:
            return None
        quiet = rules.quiet_rule(channel, local_hour(self.service.clock.now(), user[1]))
        if quiet is None:
            return None
        return (f"quiet hours ({quiet.start_h:g}-{quiet.end_h:g} h local) began while the message "
                f"waited out a provider outage ({row.retries} tries); not sent")

    def _settle(self, message_id: str, data: dict[str, Any], r: DeliveryResult, *,
                gave_up: str | None = None, error: str | None = None) -> None:
        """Record the outcome ``r`` of a message: outbox row, ``sent`` row's response, a
        ``failed`` row, and the channel fallback when ``r`` allows one. ``gave_up``: why its
        fallback was given up (it raised until a limit; ``error``: the last exception, whole):
        added to the reason, no fallback, the row's body quarantined. Raises
        :class:`_FallbackFailed`, everything rolled back, when the fallback raises anything
        but a database error."""
        response = _response(r)
        now = self.service.clock.now()
        extra = data.get("extra") or {}
        # channel fallback: undeliverable, or refused for good (not a provider outage)
        chain: list[str] | None = extra.get("fallback") if gave_up is None and (
            r.status == "undeliverable" or (r.status == "failed" and r.permanent)) else None
        with self.store.transaction():
            # the user's lock first (the order of every other write path), then the outbox
            user = self.store.lock_user(data["user_id"]) if chain else None
            self.store.execute("UPDATE outbox SET state = ?, result = ? WHERE message_id = ?",
                               (r.status, response, message_id))
            self.store.execute("UPDATE log SET response = ? WHERE message_id = ? AND event = 'sent'",
                               (response, message_id))
            if r.status != "sent":
                sent = self.store.one("SELECT ts_us, campaign, tag, step FROM log WHERE "
                                      "message_id = ? AND event = 'sent'", (message_id,))
                ts_us = max(to_us(now), sent[0]) if sent else to_us(now)
                reason = f"{r.status}{' (permanent)' if r.permanent else ''}: {r.error or ''}"
                if user is not None and chain:
                    reason = f"{reason[:400]}; fallback to {','.join(chain)}"
                if gave_up is not None:
                    reason = f"{_cut(reason, 200)}; {gave_up}"
                self.store.append_log([(ts_us, data["user_id"], "failed", data["channel"], None,
                                        message_id, data.get("campaign"), None, None, None,
                                        reason[:500], sent[2] if sent else None,
                                        sent[3] if sent else None, None, None, response)])
                if gave_up is not None:
                    body = {k: v for k, v in data.items() if k != "extra"} | extra
                    self.store.quarantine(
                        f"outbox message {message_id!r} of user {data['user_id']!r}: {reason}; "
                        "fix the cause, then send it again (the body is kept here)",
                        {"message_id": message_id, "error": error, "body": body}, now)
                if user is not None and chain:
                    try:
                        self.service.fall_back(user, message_id, chain, extra["decision"],
                                               sent[0] if sent else None)
                    except Exception as exc:
                        if self.store.is_operational_error(exc):
                            raise
                        raise _FallbackFailed(exc) from exc
        self.on_send(data["channel"], r.status)

    def step(self) -> int:
        """One round: follow the policy swaps and learned states, learn if due (online
        learning), run due timers, deliver one batch."""
        self.service.sync_policy()
        self.service.learn()
        return self.service.run_due() + self.deliver_claimed()

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set; errors are logged and retried after ``poll_s``."""
        while not stop.is_set():
            try:
                busy = self.step()
            except Exception:  # keep the loop alive; the row stays claimable
                log.exception("worker step failed")
                busy = 0
            if not busy:
                stop.wait(self.config.poll_s)

    def drain(self, max_rounds: int = 10_000) -> None:
        """Step until nothing is due (tests and ``worker --drain``)."""
        for _ in range(max_rounds):
            if not self.step():
                return


def _kept(result: str | None) -> dict[str, Any]:
    """An outbox row's ``result`` as a dict ({} when none or not JSON)."""
    try:
        value = json.loads(result) if result else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _refusal_kept(result: str | None) -> DeliveryResult | None:
    """The original channel's refusal a row kept when its fallback raised (None: none): that
    delivery is over; the next claim only runs the fallback again."""
    d = _kept(result)
    if "fallback_error" not in d:
        return None
    return DeliveryResult(d.get("status") or "failed", d.get("provider"), int(d.get("attempts") or 0),
                          d.get("provider_message_id"), d.get("response") or "", d.get("error"),
                          permanent=bool(d.get("permanent")))


def _cut(text: str, n: int) -> str:
    """``text`` cut to ``n`` characters, marked with ``…`` when cut."""
    return text if len(text) <= n else text[:n - 1] + "…"


def _response(r: DeliveryResult) -> str:
    """A delivery result as the JSON kept on the outbox row and the ``sent`` log row."""
    return json.dumps({"status": r.status, "provider": r.provider, "attempts": r.attempts,
                       "provider_message_id": r.provider_message_id,
                       "response": r.response, "error": r.error})


def _duration(seconds: float) -> str:
    """``seconds`` for people: ``45 s``, ``12 min``, ``1.5 h``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
