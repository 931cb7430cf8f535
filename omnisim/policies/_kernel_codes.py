"""Integer codes shared by the compiled (numba) decision kernels and the compiled engine loop.

Kernels see no strings: events, channels and trigger kinds are indices into fixed
vocabularies, and every other text (campaigns, policies, tags, steps, reasons) an index into
one run-wide :class:`Strings` table built in Python when a policy is compiled
(``docs/engines.md``, "Compiled path"). ``-1`` stands for ``None``.
"""

from __future__ import annotations

from omnisim.log import CHANNELS as LOG_CHANNELS, EVENTS
from omnisim.policies.base import BEHAVIOUR_TRIGGERS, CHANNELS as MSG_CHANNELS

__all__ = ["Strings", "EV", "CH", "TRIGGER", "NULL", "CH_NONE", "JOURNEY_STEP"]

NULL = -1
#: event name -> code (index into :data:`omnisim.log.EVENTS`)
EV: dict[str, int] = {e: i for i, e in enumerate(EVENTS)}
#: channel name -> code (index into :data:`omnisim.log.CHANNELS`); the message channels
#: ``email``, ``sms``, ``push`` are 0, 1, 2 (their order in ``policies.base.CHANNELS``)
CH: dict[str, int] = {c: i for i, c in enumerate(LOG_CHANNELS)}
CH_NONE = CH["none"]
#: trigger kind -> code: the behaviour triggers in :data:`BEHAVIOUR_TRIGGERS` order, then
#: ``journey_step``
TRIGGER: dict[str, int] = {k: i for i, k in enumerate((*BEHAVIOUR_TRIGGERS, "journey_step"))}
JOURNEY_STEP = TRIGGER["journey_step"]

assert tuple(LOG_CHANNELS[:3]) == tuple(MSG_CHANNELS), "message channels must come first"


class Strings:
    """A run-wide table of the texts kernels refer to by code (``-1``: ``None``)."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self._index: dict[str, int] = {}

    def code(self, value: str | None) -> int:
        """The code of ``value`` (added on first use); ``-1`` for ``None``."""
        if value is None:
            return NULL
        c = self._index.get(value)
        if c is None:
            c = self._index[value] = len(self.values)
            self.values.append(value)
        return c

    def value(self, code: int) -> str | None:
        return None if code < 0 else self.values[code]

    def __len__(self) -> int:
        return len(self.values)
