"""Online learning in the sender: ``partial_fit`` every ``update_every_h`` of the sender's clock.

A policy learns online when it has ``update_every_h`` and ``partial_fit``
(``docs/decision-core.md``, "Learning policies"), e.g.
:class:`~omnisim.policies.bandits.LinUCBChannel`. The sender then calls
``partial_fit(rows)`` with its own ``log`` rows (engagement-log format) written since the
previous update, whenever the clock has moved ``update_every_h`` hours past it.

The learned state lives in the store, so it survives restarts and every worker decides with
the same one (``settings`` rows):

``learn_base``      SHA-256 of the policy artifact the state grew from (a policy swap starts over)
``learn_version``   0, 1, 2 … — one more at every update that fed rows
``learn_artifact``  the learned policy as an artifact (:func:`omnisim.policies.artifact.export_policy`,
                    i.e. its ``to_artifact()``), verified and rebuilt with ``from_artifact()``
``learn_cursor``    the last ``log.id`` fed to ``partial_fit``
``learn_at_us``     the clock time of the last update (µs since the epoch)
``learn_owner``     ``<owner>|<wall-clock expiry µs>``: the one process that runs updates

One update is one transaction holding the learning lock (``pg_advisory_xact_lock`` on
PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite) and, on PostgreSQL, a ``SHARE`` lock on ``log``
while the rows are read (so no row of a transaction still in flight is skipped by the
cursor). The fit runs on a copy of the policy; the copy replaces the in-memory policy only
after the commit, so a failed update changes nothing. Other workers see ``learn_version``
change (:meth:`DecisionService.sync_policy`) and load ``learn_artifact``.

Only the lease owner updates: a policy's working buffers (the bandits' replay buffer of
sends whose reward window is still open) are not learned parameters and are not in the
artifact, so the owner keeps its warm copy across updates. A process that takes over (the
owner stopped renewing its lease for ``lease_s`` wall-clock seconds, or a restart) rebuilds
them before its first update when the policy can (``rebuild_working_state(rows)`` with the
log rows of its ``working_state_lookback_h`` hours up to the cursor), so the sends in flight
at the takeover are learned as the previous owner would have; a policy without that method
starts from the stored state with empty buffers, like any loaded artifact.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from omnisim.policies.runtime import update_cadence
from omnisim.send.export import rows_frame
from omnisim.send.store import LOG_COLUMNS, to_us

if TYPE_CHECKING:  # pragma: no cover
    from omnisim.send.service import DecisionService

log = logging.getLogger("omnisim.send.learning")

KEYS = ("learn_base", "learn_version", "learn_cursor", "learn_at_us", "learn_owner")
_LOCK_ID = 724362


@dataclass
class UpdateResult:
    """What :meth:`OnlineLearner.step` did: ``version`` after it, rows fed (0: no update)."""

    version: int
    rows: int


class OnlineLearner:
    """The sender's online-learning loop for one :class:`DecisionService` (one process)."""

    def __init__(self, service: DecisionService, *, lease_s: float = 300.0):
        self.service = service
        self.store = service.store
        self.lease_s = lease_s
        self.owner = uuid.uuid4().hex[:16]
        self.disabled: str | None = None  # why learning stopped (the policy cannot be exported)
        #: the learned version whose working buffers this process holds (its own last update)
        self.warm_version: int | None = None

    def cadence(self) -> float | None:
        """Hours between updates of the loaded artifact's policy (None: it does not learn)."""
        return update_cadence(self.service.base_policy.policy)

    # -- state -----------------------------------------------------------------------------
    def state(self) -> dict[str, str]:
        marks = ",".join("?" * len(KEYS))
        return dict(self.store.query(f"SELECT name, value FROM settings WHERE name IN ({marks})", KEYS))

    def _set(self, **values: Any) -> None:
        for k, v in values.items():
            self.store.set_setting(k, str(v))

    def _lease_ok(self, st: dict[str, str], wall_us: int) -> bool:
        owner, _, expiry = st.get("learn_owner", "|0").partition("|")
        return owner == self.owner or int(expiry or 0) < wall_us

    # -- the loop --------------------------------------------------------------------------
    def step(self) -> UpdateResult | None:
        """Update when due and this process holds (or can take) the lease; cheap otherwise.

        Returns None when the policy does not learn online or nothing was due.
        """
        svc = self.service
        base = svc.base_policy
        every = self.cadence()
        if every is None or self.disabled:
            return None
        now = svc.clock.now()
        wall_us = int(time.time() * 1e6)
        st = self.state()
        fresh = st.get("learn_base") != base.sha256
        due = not fresh and to_us(now) >= int(st.get("learn_at_us", 0)) + int(every * 3.6e9)
        owner, _, expiry = st.get("learn_owner", "|0").partition("|")
        renew = owner == self.owner and int(expiry or 0) - wall_us < self.lease_s * 5e5
        if not (fresh or renew or (due and self._lease_ok(st, wall_us))):
            return None
        with self.store.transaction():
            if self.store.pg:
                self.store.execute("SELECT pg_advisory_xact_lock(?)", (_LOCK_ID,))
            st = self.state()
            lease = f"{self.owner}|{wall_us + int(self.lease_s * 1e6)}"
            if st.get("learn_base") != base.sha256:  # first start, or a new policy: start over
                self._set(learn_base=base.sha256, learn_version=0, learn_cursor=0,
                          learn_at_us=to_us(now), learn_owner=lease)
                self.store.execute("DELETE FROM settings WHERE name = 'learn_artifact'")
                fitted = None
                result = UpdateResult(0, 0)
                self.warm_version = 0  # nothing learned yet: empty buffers are the right ones
            elif not self._lease_ok(st, wall_us):
                return None
            else:
                self._set(learn_owner=lease)
                at_us = int(st.get("learn_at_us", 0))
                step_us = int(every * 3.6e9)
                if to_us(now) < at_us + step_us:
                    return None
                version, cursor = int(st.get("learn_version", 0)), int(st.get("learn_cursor", 0))
                at_us += (to_us(now) - at_us) // step_us * step_us  # keep the cadence's phase
                fitted, rows, cursor = self._fit(version, cursor)
                if fitted is None:
                    self._set(learn_at_us=at_us)
                    return UpdateResult(version, 0)
                version += 1
                text = self._export(fitted, version, rows, cursor, base.sha256)
                if text is None:
                    return None
                self._set(learn_version=version, learn_cursor=cursor, learn_at_us=at_us)
                self.store.set_setting("learn_artifact", text)
                result = UpdateResult(version, rows)
        if fitted is not None:
            from omnisim.send.service import LoadedPolicy

            self.warm_version = result.version
            assert text is not None

            loaded = LoadedPolicy.from_text(text)
            svc.use_learned(LoadedPolicy(fitted, loaded.name, loaded.sha256, text), result.version)
            log.info("online learning: %s version %d from %d log rows", loaded.name,
                     result.version, result.rows)
        elif result.version == 0:
            svc.use_learned(None, 0)
        return result

    def _fit(self, version: int, cursor: int) -> tuple[Any, int, int]:
        """A copy of the current learned policy after ``partial_fit`` of the rows after
        ``cursor``; ``(None, 0, cursor)`` when there are none."""
        if self.store.pg:
            self.store.execute("LOCK TABLE log IN SHARE MODE")
        rows = self.store.query(f"SELECT id, {','.join(LOG_COLUMNS)} FROM log WHERE id > ? "
                                "ORDER BY id", (cursor,))
        if not rows:
            return None, 0, cursor
        svc = self.service
        current = svc.policy if svc.learned_version == version else svc.load_learned(version)
        policy: Any = copy.deepcopy(current.policy)
        if self.warm_version != version and hasattr(policy, "rebuild_working_state"):
            self._rebuild(policy, cursor)
        policy.partial_fit(log_frame([r[1:] for r in rows]))
        return policy, len(rows), int(rows[-1][0])

    def _rebuild(self, policy: Any, cursor: int) -> None:
        """Give ``policy`` (learned from the rows up to ``cursor``) the working buffers the
        previous owner had: its ``rebuild_working_state`` with the rows of its lookback."""
        last = self.store.one("SELECT max(ts_us) FROM log WHERE id <= ?", (cursor,))
        if not last or last[0] is None:
            return
        since_us = int(last[0]) - int(float(policy.working_state_lookback_h) * 3.6e9)
        rows = self.store.query(f"SELECT {','.join(LOG_COLUMNS)} FROM log WHERE id <= ? "
                                "AND ts_us >= ? ORDER BY id", (cursor, since_us))
        if rows:
            policy.rebuild_working_state(log_frame(rows))
            log.info("online learning: rebuilt the working buffers of %s from %d log rows",
                     getattr(policy, "name", policy), len(rows))

    def _export(self, policy: Any, version: int, rows: int, cursor: int, base: str) -> str | None:
        from omnisim.policies.artifact import ArtifactError, export_policy

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "learned.json"
            try:
                export_policy(policy, path, metrics={
                    "online_learning": {"version": version, "rows": rows, "cursor": cursor,
                                        "base_sha256": base}})
            except ArtifactError as exc:
                self.disabled = (f"online learning disabled: the learned state of "
                                 f"{getattr(policy, 'name', policy)!r} cannot be stored as an "
                                 f"artifact ({exc})")
                log.error(self.disabled)
                return None
            return path.read_text()


def log_frame(rows: list[tuple]) -> pd.DataFrame:
    """Log rows (``LOG_COLUMNS`` order) as an engagement-log frame in time order."""
    return rows_frame(rows)


__all__ = ["OnlineLearner", "UpdateResult", "log_frame"]
