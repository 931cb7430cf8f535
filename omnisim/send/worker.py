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
queue, due again after a capped exponential backoff (at least until a circuit breaker lets
a request through), until ``max_delivery_delay_h`` after it was queued; then it is
dead-lettered. Such requeues are counted apart from claims (``outbox.retries``), so they
never trip ``max_claims``. Retry times and the deadline are on the sender's clock.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, NamedTuple, Protocol

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
    sleep in seconds. A message failing for a provider outage is tried again after
    ``min(retry_max_s, retry_base_s * 2**(n - 1))`` seconds (n = its n-th requeue), or
    when a circuit breaker half-opens if later, until ``max_delivery_delay_h`` hours after it
    was queued (0: dead-letter at once; ``inf``: never)."""

    batch: int = 50
    lease_s: float = 60.0
    max_claims: int = 5
    poll_s: float = 0.2
    max_delivery_delay_h: float = 1.0
    retry_base_s: float = 10.0
    retry_max_s: float = 300.0


class Claimed(NamedTuple):
    """A claimed outbox row: ``claims`` counts every claim of the row, ``retries`` its
    requeues after an outage; ``queued_us``: when it was queued (sender clock, µs)."""

    message_id: str
    body: str
    claims: int
    retries: int
    queued_us: int


class Worker:
    """Turns due work into sends. ``on_send(channel, status)`` feeds metrics."""

    def __init__(self, service: DecisionService, deliverer: Deliverer,
                 config: WorkerConfig | None = None,
                 on_send: Callable[[str, str], None] = lambda channel, status: None):
        self.service = service
        self.store: Store = service.store
        self.deliverer = deliverer
        self.config = config or WorkerConfig()
        self.on_send = on_send

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
                "COALESCE(queued_us, due_us)",
                (lease_us, to_us(self.service.clock.now()), now_us, self.config.batch))
        return [Claimed(r[0], r[1], int(r[2]), int(r[3]), int(r[4])) for r in rows]

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
            elif (blocked := self._blocked(row, data)) is not None:
                result = DeliveryResult("failed", None, 0, None, "", blocked)
            else:
                msg = {k: v for k, v in data.items() if k != "extra"}
                result = self.deliverer.deliver(OutboundMessage(**msg))
                if result.transient:
                    result = self._retry_later(row, data["channel"], result)
                    if result is None:
                        continue
            self._settle(message_id, data, result)
        return len(rows)

    def _retry_later(self, row: Claimed, channel: str, r: DeliveryResult) -> DeliveryResult | None:
        """Put a row that failed for a provider outage back in the queue (None), due after
        the backoff or the breaker's wait, whichever is longer, and at the latest at the
        delivery deadline; past the deadline, the dead-letter result saying so."""
        cfg = self.config
        now_us = to_us(self.service.clock.now())
        tries = row.retries + 1
        deadline_us = (row.queued_us + int(cfg.max_delivery_delay_h * 3.6e9)
                       if math.isfinite(cfg.max_delivery_delay_h) else 2**62)
        if now_us >= deadline_us:
            return replace(r, error=(
                f"gave up after {_duration((now_us - row.queued_us) / 1e6)} and {tries} "
                f"{'try' if tries == 1 else 'tries'} (provider outage; max delivery delay "
                f"{cfg.max_delivery_delay_h:g} h); last: {r.error}"))
        wait_s = max(capped_backoff_s(tries, cfg.retry_base_s, cfg.retry_max_s), r.retry_after_s or 0.0)
        next_us = min(now_us + int(wait_s * 1e6), deadline_us)
        cur = self.store.execute(
            "UPDATE outbox SET state = 'queued', retries = retries + 1, next_try_us = ?, "
            "queued_us = ?, result = ? WHERE message_id = ? AND state = 'sending' AND attempts = ?",
            (next_us, row.queued_us, _response(r), row.message_id, row.claims))
        if cur.rowcount == 1:
            log.info("outbox %s: provider outage (%s); try %d failed, next in %.0f s",
                     row.message_id, r.error, tries, (next_us - now_us) / 1e6)
            self.on_send(channel, "requeued")
        return None

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

    def _settle(self, message_id: str, data: dict[str, Any], r: DeliveryResult) -> None:
        response = _response(r)
        now = self.service.clock.now()
        extra = data.get("extra") or {}
        # channel fallback: undeliverable, or refused for good (not a provider outage)
        chain: list[str] | None = extra.get("fallback") if (r.status == "undeliverable" or (
            r.status == "failed" and r.permanent)) else None
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
                self.store.append_log([(ts_us, data["user_id"], "failed", data["channel"], None,
                                        message_id, data.get("campaign"), None, None, None,
                                        reason[:500], sent[2] if sent else None,
                                        sent[3] if sent else None, None, None, response)])
                if user is not None and chain:
                    self.service.fall_back(user, message_id, chain, extra["decision"],
                                           sent[0] if sent else None)
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
