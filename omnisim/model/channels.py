"""Email, SMS and push: delivery, time-to-read, open and click, cost, content limits.

Every formula is a plain function over numpy arrays (scalars work too) so that the reference
engine (per user) and a vectorised engine (per batch) call the very same code.

Time-to-read ("seen delay", hours after delivery), by channel:

* **sms** — lognormal, median ``read_median_min`` minutes (default 3), log-sd ``read_sigma``
  (default 1.0). Industry sources commonly quote "90 % of SMS read within 3 minutes"
  (Gartner / mobile-marketing vendors); a median of 3 min with sigma 1 puts ~75 % under
  6 min — an assumption in that spirit. SMS does not wait for the user's active hours
  (the phone buzzes), which is why quiet hours matter.
* **push** — if the user is active at delivery it is seen after an exponential delay with
  mean ``read_median_min`` minutes (default 2); otherwise at a uniform time within the next
  local hour in which the user is active (:func:`wait_until_active_h`), then the same
  exponential delay.
* **email** — wait until the user is next active, then a lognormal delay with the user's
  own median (trait ``email_check_median_h``, hours) and log-sd ``read_sigma`` (default 1.2).

Open probability (given delivered), :func:`open_probability`::

    p_open = clip(open_prob * affinity * ((1 - timing_weight) + timing_weight * a) * f, 0, 1)

with ``affinity`` the user's channel affinity (mean 1), ``a`` the user's activity at the
local send hour relative to their peak hour (in [0, 1]), ``f`` the fatigue multiplier
(:func:`omnisim.model.fatigue.response_multiplier`). Click probability given open:
``clip(click_prob * affinity * f, 0, 1)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from omnisim.errors import OmnisimError
from omnisim.model._params import num, prob

__all__ = [
    "ChannelParams", "Channels", "ContentLimitError", "DELIVERED", "BOUNCED", "FAILED",
    "delivery_outcome", "open_probability", "click_probability", "wait_until_active_h",
    "sms_read_delay_h", "push_read_delay_h", "email_read_delay_h", "read_delay_h",
    "is_gsm7", "sms_segments", "message_cost", "check_content",
]

DELIVERED, BOUNCED, FAILED = 0, 1, 2

#: GSM 03.38 basic character set (one septet each).
GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
#: GSM 03.38 extension table (escape + char: two septets each).
GSM7_EXTENSION = set("^{}\\[~]|€\f")


class ContentLimitError(OmnisimError, ValueError):
    """A message's content exceeds its channel's limits (SMS segments, push lengths)."""


@dataclass(frozen=True)
class ChannelParams:
    """One channel's parameters.

    Attributes
    ----------
    enabled : bool
        ``False``: nobody is reachable on this channel in the scenario.
    bounce_prob, fail_prob : float
        Probability a send bounces (bad address / uninstalled app) or fails (provider
        error); otherwise it is delivered.
    delivery_delay_s : float
        Seconds from ``sent`` to ``delivered``.
    open_prob : float
        Probability a delivered message is opened by a rested user with affinity 1 at their
        peak hour.
    click_prob : float
        Probability of a click given an open (affinity 1, rested).
    timing_weight : float
        In [0, 1]: how much the local send hour matters (0 = not at all).
    unsubscribe_prob : float
        Per delivered message, probability the user unsubscribes from the channel (rested).
    cost : float
        Currency per message (per segment for SMS).
    read_median_min : float
        SMS: median minutes to read (lognormal); push: mean minutes to see once active
        (exponential). Unused by email (the median is a user trait).
    read_sigma : float
        Log-sd of the lognormal read delay (SMS, email).
    max_segments : int
        SMS: the most segments a message may have.
    title_max, body_max : int
        Push: maximum title / body length in characters.
    """

    enabled: bool = True
    bounce_prob: float = prob(0.01)
    fail_prob: float = prob(0.005)
    delivery_delay_s: float = num(5.0, lo=0.0)
    open_prob: float = prob(0.2)
    click_prob: float = prob(0.1)
    timing_weight: float = prob(0.5)
    unsubscribe_prob: float = prob(0.002)
    cost: float = num(0.0, lo=0.0)
    read_median_min: float = num(3.0, lo=0.0, lo_open=True)
    read_sigma: float = num(1.0, lo=0.0)
    max_segments: int = num(3, lo=1)
    title_max: int = num(50, lo=1)
    body_max: int = num(150, lo=1)


def _email() -> ChannelParams:
    # ~22 % open, ~2.6 % click-through (12 % of opens): Mailchimp / Campaign Monitor
    # cross-industry benchmarks (open rates 20-25 % before Apple MPP; CTR 2-3 %).
    return ChannelParams(bounce_prob=0.01, fail_prob=0.002, delivery_delay_s=30.0,
                         open_prob=0.22, click_prob=0.12, timing_weight=0.5,
                         unsubscribe_prob=0.002, cost=0.001, read_median_min=120.0,
                         read_sigma=1.2)


def _sms() -> ChannelParams:
    # ~95 % read (vendor-quoted 90-98 %), click-throughs ~6-10 % of reads (assumption from
    # vendor reports); cost ~0.0079 per segment (Twilio US list price, 2024).
    return ChannelParams(bounce_prob=0.02, fail_prob=0.005, delivery_delay_s=5.0,
                         open_prob=0.95, click_prob=0.08, timing_weight=0.2,
                         unsubscribe_prob=0.01, cost=0.0079, read_median_min=3.0,
                         read_sigma=1.0, max_segments=3)


def _push() -> ChannelParams:
    # Push "direct open" rates of a few percent (Airship / OneSignal benchmarks: 3-8 %);
    # here "open" means tapped, so the click given open is high.
    return ChannelParams(bounce_prob=0.05, fail_prob=0.005, delivery_delay_s=1.0,
                         open_prob=0.05, click_prob=0.6, timing_weight=0.7,
                         unsubscribe_prob=0.003, cost=0.0, read_median_min=2.0,
                         read_sigma=1.0, title_max=50, body_max=150)


@dataclass(frozen=True)
class Channels:
    """Parameters of the three message channels."""

    email: ChannelParams = field(default_factory=_email)
    sms: ChannelParams = field(default_factory=_sms)
    push: ChannelParams = field(default_factory=_push)

    def get(self, channel: str) -> ChannelParams:
        try:
            return getattr(self, channel)
        except AttributeError:
            raise KeyError(f"unknown channel {channel!r}; expected email, sms or push") from None


# --- delivery, open, click --------------------------------------------------------------

def delivery_outcome(rng: np.random.Generator, bounce_prob: ArrayLike,
                     fail_prob: ArrayLike, size: int | None = None) -> np.ndarray:
    """Outcome codes: :data:`DELIVERED` (0), :data:`BOUNCED` (1) or :data:`FAILED` (2)."""
    b = np.asarray(bounce_prob, dtype=float)
    f = np.asarray(fail_prob, dtype=float)
    shape = size if size is not None else np.broadcast(b, f).shape
    u = rng.random(shape)
    return np.where(u < b, BOUNCED, np.where(u < b + f, FAILED, DELIVERED))


def open_probability(open_prob: ArrayLike, affinity: ArrayLike, activity: ArrayLike,
                     timing_weight: ArrayLike, fatigue_mult: ArrayLike) -> np.ndarray:
    """Probability a delivered message is opened (see module docstring).

    ``activity`` is the user's activity at the local send hour relative to their peak hour,
    in [0, 1]; ``fatigue_mult`` in (0, 1].
    """
    f = lambda x: np.asarray(x, dtype=float)  # noqa: E731
    return open_probability_core(f(open_prob), f(affinity), f(activity), f(timing_weight),
                                 f(fatigue_mult))


def open_probability_core(open_prob: Any, affinity: Any, activity: Any, timing_weight: Any,
                          fatigue_mult: Any) -> Any:
    """:func:`open_probability` on floats or float arrays (the compiled engine calls this)."""
    p = open_prob * affinity * ((1.0 - timing_weight) + timing_weight * activity) * fatigue_mult
    return np.minimum(np.maximum(p, 0.0), 1.0)


def click_probability(click_prob: ArrayLike, affinity: ArrayLike,
                      fatigue_mult: ArrayLike) -> np.ndarray:
    """Probability of a click given an open."""
    return click_probability_core(np.asarray(click_prob, dtype=float),
                                  np.asarray(affinity, dtype=float),
                                  np.asarray(fatigue_mult, dtype=float))


def click_probability_core(click_prob: Any, affinity: Any, fatigue_mult: Any) -> Any:
    """:func:`click_probability` on floats or float arrays (the compiled engine calls this)."""
    return np.minimum(np.maximum(click_prob * affinity * fatigue_mult, 0.0), 1.0)


def delivery_outcome_one(rng: np.random.Generator, bounce_prob: float, fail_prob: float) -> int:
    """One message's :func:`delivery_outcome` (the compiled engine's per-message form: one
    uniform, the same thresholds)."""
    u = rng.random()
    if u < bounce_prob:
        return BOUNCED
    if u < bounce_prob + fail_prob:
        return FAILED
    return DELIVERED


# --- time to read -------------------------------------------------------------------------

def wait_until_active_h(rng: np.random.Generator, local_hour: ArrayLike,
                        profiles: ArrayLike, max_h: int = 72) -> np.ndarray:
    """Hours until the user is next active.

    ``local_hour`` (n,) is the fractional local clock hour now; ``profiles`` (n, 24) the
    probability of being active in each local hour. The user is active now with probability
    ``profile[floor(h)]`` (wait 0); otherwise each following local hour is tried in turn
    with its own probability, and the wait ends at a uniform time within the first active
    hour. Capped at ``max_h`` hours.
    """
    h = np.atleast_1d(np.asarray(local_hour, dtype=float)) % 24.0
    prof = np.asarray(profiles, dtype=float)
    if prof.ndim == 1:
        prof = np.broadcast_to(prof, (h.size, 24))
    n = h.size
    h0 = np.floor(h).astype(int) % 24
    rows = np.arange(n)
    wait = np.full(n, float(max_h))
    active_now = rng.random(n) < prof[rows, h0]
    wait[active_now] = 0.0
    todo = ~active_now
    to_next = np.ceil(h) - h
    to_next[to_next == 0] = 1.0
    for k in range(1, max_h):
        if not todo.any():
            break
        idx = np.flatnonzero(todo)
        hit = rng.random(idx.size) < prof[idx, (h0[idx] + k) % 24]
        got = idx[hit]
        wait[got] = to_next[got] + (k - 1) + rng.random(got.size)
        todo[got] = False
    return wait


def wait_until_active_one(rng: np.random.Generator, local_hour: float, profile: np.ndarray,
                          max_h: int = 72) -> float:
    """One user's :func:`wait_until_active_h` (the compiled engine's per-message form: the
    same draws, in the same order, for one user; ``profile`` (24,))."""
    h = local_hour % 24.0
    h0 = int(math.floor(h)) % 24
    if rng.random() < profile[h0]:
        return 0.0
    to_next = math.ceil(h) - h
    if to_next == 0:
        to_next = 1.0
    for k in range(1, max_h):
        if rng.random() < profile[(h0 + k) % 24]:
            return to_next + (k - 1) + rng.random()
    return float(max_h)


def read_delay_one(rng: np.random.Generator, channel: int, read_median_min: float,
                   read_sigma: float, wait_h: float, email_median_h: float) -> float:
    """One message's :func:`read_delay_h` in hours; ``channel`` 0 email, 1 sms, 2 push (the
    compiled engine's per-message form of the three delays). ``wait_h``: for email and push
    the :func:`wait_until_active_one` drawn just before (SMS draws none and ignores it)."""
    if channel == 1:
        return rng.lognormal(math.log(read_median_min), read_sigma) / 60.0
    if channel == 2:
        return wait_h + rng.exponential(read_median_min / 60.0)
    return wait_h + rng.lognormal(math.log(email_median_h), read_sigma)


def sms_read_delay_h(rng: np.random.Generator, size: int, median_min: float,
                     sigma: float) -> np.ndarray:
    """SMS: lognormal minutes with median ``median_min`` and log-sd ``sigma``, in hours."""
    return rng.lognormal(mean=math.log(median_min), sigma=sigma, size=size) / 60.0


def push_read_delay_h(rng: np.random.Generator, wait_h: ArrayLike,
                      mean_min: float) -> np.ndarray:
    """Push: ``wait_h`` (until active) + exponential with mean ``mean_min`` minutes, hours."""
    w = np.atleast_1d(np.asarray(wait_h, dtype=float))
    return w + rng.exponential(mean_min / 60.0, size=w.size)


def email_read_delay_h(rng: np.random.Generator, wait_h: ArrayLike, median_h: ArrayLike,
                       sigma: float) -> np.ndarray:
    """Email: ``wait_h`` + lognormal hours with the user's median ``median_h``."""
    w = np.atleast_1d(np.asarray(wait_h, dtype=float))
    med = np.broadcast_to(np.asarray(median_h, dtype=float), w.shape)
    return w + rng.lognormal(mean=np.log(med), sigma=sigma)


def read_delay_h(rng: np.random.Generator, channel: str, params: ChannelParams,
                 local_hour: ArrayLike, profiles: ArrayLike,
                 email_median_h: ArrayLike) -> np.ndarray:
    """Seen delay in hours after delivery for ``channel`` (dispatches to the above)."""
    h = np.atleast_1d(np.asarray(local_hour, dtype=float))
    if channel == "sms":
        return sms_read_delay_h(rng, h.size, params.read_median_min, params.read_sigma)
    wait = wait_until_active_h(rng, h, profiles)
    if channel == "push":
        return push_read_delay_h(rng, wait, params.read_median_min)
    if channel == "email":
        return email_read_delay_h(rng, wait, email_median_h, params.read_sigma)
    raise KeyError(f"unknown channel {channel!r}; expected email, sms or push")


# --- content and cost ---------------------------------------------------------------------

def is_gsm7(text: str) -> bool:
    """True if ``text`` can be sent in the GSM-7 alphabet (basic + extension table)."""
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text)


def sms_segments(text: str) -> int:
    """Number of SMS segments for ``text``.

    GSM-7: up to 160 septets in one segment, else 153 per segment (extension characters
    such as ``€`` or ``{`` take two septets). Otherwise UCS-2: up to 70 UTF-16 code units in
    one segment, else 67 per segment (characters outside the BMP, e.g. most emoji, take
    two). An empty text is one segment.
    """
    if is_gsm7(text):
        units = sum(2 if ch in GSM7_EXTENSION else 1 for ch in text)
        single, multi = 160, 153
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, multi = 70, 67
    if units <= single:
        return 1
    return math.ceil(units / multi)


def message_cost(channel: str, params: ChannelParams, text: str | None = None) -> float:
    """Cost of one message in currency units: SMS ``cost * segments`` (1 segment without
    text), other channels ``cost``."""
    if channel == "sms":
        return params.cost * (sms_segments(text) if text is not None else 1)
    return params.cost


def check_content(channel: str, params: ChannelParams, *, text: str | None = None,
                  title: str | None = None, body: str | None = None) -> None:
    """Raise :class:`ContentLimitError` if the content exceeds the channel's limits."""
    if channel == "sms" and text is not None:
        n = sms_segments(text)
        if n > params.max_segments:
            enc = "GSM-7" if is_gsm7(text) else "UCS-2"
            raise ContentLimitError(
                f"sms text needs {n} segments ({len(text)} characters, {enc}); the limit is "
                f"{params.max_segments} (channels.sms.max_segments). Shorten the text"
                + ("" if enc == "GSM-7" else " or drop non-GSM characters (emoji, accents)")
                + " or raise the limit.")
    if channel == "push":
        for what, value, limit in (("title", title, params.title_max),
                                   ("body", body, params.body_max)):
            if value is not None and len(value) > limit:
                raise ContentLimitError(
                    f"push {what} has {len(value)} characters; the limit is {limit} "
                    f"(channels.push.{what}_max). Shorten it or raise the limit.")
