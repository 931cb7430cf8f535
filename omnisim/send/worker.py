"""The worker loop: due timers → decisions and admissions; queued messages → provider → log.

One :meth:`Worker.step` runs due timers (:meth:`DecisionService.run_due`), then claims a
batch of queued outbox rows and delivers each through the providers. Claiming sets a
lease (wall-clock seconds, independent of the sender's clock), restarted for each row just
before it is delivered (a row whose lease ran out while it waited its turn, and that
another worker claimed meanwhile, is left to that worker): a worker killed mid-delivery
leaves its rows ``sending``; when the lease runs out another worker claims them again and
delivers with the **same** idempotency key (the message id), which the providers dedup
through the store's ``sent_keys``. A row claimed more than ``max_claims`` times is
dead-lettered. On PostgreSQL claims use ``FOR UPDATE SKIP LOCKED``, so workers never wait
on each other.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from omnisim.send.providers.base import DeliveryResult, OutboundMessage
from omnisim.send.service import DecisionService
from omnisim.send.store import Store, to_us

log = logging.getLogger("omnisim.send.worker")


class Deliverer(Protocol):
    """What the worker needs of :class:`omnisim.send.providers.ProviderSet`."""

    def deliver(self, msg: OutboundMessage) -> DeliveryResult: ...


@dataclass
class WorkerConfig:
    """``batch``: rows per claim; ``lease_s``: seconds before a claimed row may be re-claimed;
    ``max_claims``: claims before dead-letter; ``poll_s``: idle sleep in seconds."""

    batch: int = 50
    lease_s: float = 60.0
    max_claims: int = 5
    poll_s: float = 0.2


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

    def claim(self) -> list[tuple[str, str, int]]:
        """Claim up to ``batch`` deliverable rows: ``(message_id, body, claims so far)``."""
        now_us = int(time.time() * 1e6)
        lease_us = now_us + int(self.config.lease_s * 1e6)
        pick = ("SELECT message_id FROM outbox WHERE (state = 'queued' OR (state = 'sending' "
                "AND lease_us < ?)) ORDER BY due_us LIMIT ?")
        if self.store.pg:
            pick += " FOR UPDATE SKIP LOCKED"
        with self.store.transaction():
            rows = self.store.query(
                f"UPDATE outbox SET state = 'sending', lease_us = ?, attempts = attempts + 1 "
                f"WHERE message_id IN ({pick}) RETURNING message_id, body, attempts",
                (lease_us, now_us, self.config.batch))
        return [(r[0], r[1], int(r[2])) for r in rows]

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
        for message_id, body, claims in rows:
            if not self.renew(message_id, claims):
                log.warning("outbox %s was re-claimed by another worker while waiting in this "
                            "worker's batch (lease %g s); skipped", message_id, self.config.lease_s)
                continue
            data = json.loads(body)
            extra = {k: data.pop(k) for k in ("fallback", "decision") if k in data}
            data["extra"] = extra
            if claims > self.config.max_claims:
                result = DeliveryResult("failed", None, 0, None, "",
                                        f"claimed {claims - 1} times without settling "
                                        "(worker crashes?); dead-lettered")
            elif not self._consented(data["user_id"], data["channel"]):
                result = DeliveryResult("failed", None, 0, None, "",
                                        f"no {data['channel']} consent any more (withdrawn, or the "
                                        "user erased, after the message was queued); not sent")
            else:
                msg = {k: v for k, v in data.items() if k != "extra"}
                result = self.deliverer.deliver(OutboundMessage(**msg))
            self._settle(message_id, data, result)
        return len(rows)

    def _consented(self, user_id: str, channel: str) -> bool:
        """Does the user still consent to ``channel``? Checked just before delivery: an
        ``unsubscribed`` event or a profile update may have withdrawn it since admission."""
        row = self.store.one("SELECT consent FROM users WHERE user_id = ?", (user_id,))
        return row is not None and bool(json.loads(row[0]).get(channel))

    def _settle(self, message_id: str, data: dict[str, Any], r: DeliveryResult) -> None:
        response = json.dumps({"status": r.status, "provider": r.provider, "attempts": r.attempts,
                               "provider_message_id": r.provider_message_id,
                               "response": r.response, "error": r.error})
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
