"""Durable timers: journey follow-ups and pending messages as rows of the ``jobs`` table.

A job is ``(job_id, user_id, kind, due, body)``: ``kind = "followup"`` holds a
:class:`~omnisim.policies.base.FollowUp` payload (the journey's whole state), ``kind =
"pending"`` a :class:`~omnisim.policies.pressure.Pending` (its decision as JSON). Jobs are
written in the same transaction as the decision that made them, so a crash either keeps
the decision and its timers or neither. Nothing is kept in memory between transactions.
"""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import datetime
from typing import Any, Mapping

from omnisim.policies.base import Decision, FollowUp
from omnisim.policies.pressure import Pending
from omnisim.send.store import Store, from_us, to_us

FOLLOWUP, PENDING = "followup", "pending"
_DECISION_FIELDS = tuple(f.name for f in fields(Decision) if f.name != "follow_ups")


def decision_to_dict(d: Decision) -> dict[str, Any]:
    """A JSON-able decision (follow-ups dropped: they are jobs of their own)."""
    out = {name: getattr(d, name) for name in _DECISION_FIELDS}
    out["send_at"] = d.send_at.isoformat() if d.send_at is not None else None
    out["meta"] = dict(d.meta)
    return out


def decision_from_dict(data: Mapping[str, Any]) -> Decision:
    kw = dict(data)
    if kw.get("send_at") is not None:
        kw["send_at"] = datetime.fromisoformat(kw["send_at"])
    return Decision(**kw)


def schedule_followup(store: Store, user_id: str, f: FollowUp, now: datetime) -> None:
    """Store a journey step to run at ``f.at``."""
    store.execute("INSERT INTO jobs (user_id, kind, due_us, body, created_us) VALUES (?, ?, ?, ?, ?)",
                  (user_id, FOLLOWUP, to_us(f.at), json.dumps({"payload": f.payload}, default=str),
                   to_us(now)))


def schedule_pending(store: Store, user_id: str, p: Pending) -> None:
    """Store a message decision waiting for admission at ``p.due``."""
    body = {"pending_id": p.pending_id, "created": p.created.isoformat(),
            "decision": decision_to_dict(p.decision)}
    store.execute("INSERT INTO jobs (user_id, kind, due_us, body, created_us) VALUES (?, ?, ?, ?, ?)",
                  (user_id, PENDING, to_us(p.due), json.dumps(body, default=str), to_us(p.created)))


def pending_from_row(due_us: int, body: str) -> Pending:
    data = json.loads(body)
    return Pending(data["pending_id"], decision_from_dict(data["decision"]), from_us(due_us),
                   datetime.fromisoformat(data["created"]))


def next_job(store: Store, user_id: str, until: datetime) -> tuple | None:
    """The user's earliest open job due at or before ``until``: ``(job_id, kind, due_us, body)``."""
    return store.one("SELECT job_id, kind, due_us, body FROM jobs WHERE user_id = ? AND "
                     "state = 'pending' AND due_us <= ? ORDER BY due_us, job_id LIMIT 1",
                     (user_id, to_us(until)))


def due_pendings(store: Store, user_id: str, until_us: int) -> list[tuple[int, Pending]]:
    """The user's pending messages due at or before ``until_us``, as ``(job_id, Pending)``."""
    rows = store.query("SELECT job_id, due_us, body FROM jobs WHERE user_id = ? AND kind = ? "
                       "AND state = 'pending' AND due_us <= ? ORDER BY due_us, job_id",
                       (user_id, PENDING, until_us))
    return [(r[0], pending_from_row(r[1], r[2])) for r in rows]


def finish(store: Store, job_id: int) -> None:
    store.execute("UPDATE jobs SET state = 'done' WHERE job_id = ?", (job_id,))


def set_aside(store: Store, job_id: int) -> None:
    """Take a job that raised out of the due jobs (state ``failed``; ``pending`` runs it again)."""
    store.execute("UPDATE jobs SET state = 'failed' WHERE job_id = ?", (job_id,))


def reschedule(store: Store, job_id: int, due: datetime) -> None:
    store.execute("UPDATE jobs SET due_us = ? WHERE job_id = ?", (to_us(due), job_id))


def users_with_due_jobs(store: Store, until: datetime, limit: int) -> list[str]:
    """Users that have open jobs due at or before ``until`` (earliest first)."""
    rows = store.query("SELECT user_id, MIN(due_us) AS d FROM jobs WHERE state = 'pending' AND "
                       "due_us <= ? GROUP BY user_id ORDER BY d LIMIT ?", (to_us(until), limit))
    return [r[0] for r in rows]


def user_next_due(store: Store, user_id: str) -> int | None:
    """Earliest due time (µs since the epoch) of the user's open jobs, or None."""
    row = store.one("SELECT MIN(due_us) FROM jobs WHERE user_id = ? AND state = 'pending'", (user_id,))
    return int(row[0]) if row and row[0] is not None else None


def next_due(store: Store) -> datetime | None:
    """When the earliest open job is due (``None``: no open job)."""
    row = store.one("SELECT MIN(due_us) FROM jobs WHERE state = 'pending'")
    return from_us(row[0]) if row and row[0] is not None else None
