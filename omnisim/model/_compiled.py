"""The fast engine's compiled path: one chunk of users through the compiled world loop.

Used by :mod:`omnisim.model.engine_fast` when :func:`~omnisim.policies._kernel_policy.
compile_policy` compiles the policy (``docs/engines.md``, "Compiled path"): the chunk's
users are simulated one after the other by :func:`omnisim.model._kernel_world.run_users`,
whose columns of codes become the chunk's log frame here.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from omnisim.log import COLUMNS
from omnisim.model import _kernel_log as kl
from omnisim.model import _kernel_world as kw
from omnisim.model.engine_simpy import HISTORY_DAYS
from omnisim.model.population import MSG_CHANNELS, activity_matrix
from omnisim.model.scenario import Scenario
from omnisim.policies._kernel_codes import Strings, TRIGGER
from omnisim.policies._kernel_journey import compile_journeys, holdout_flags
from omnisim.policies._kernel_policy import MAX_JOURNEYS, CompiledPolicy
from omnisim.policies._kernel_pressure import compile_rules, scratch_size

__all__ = ["run_chunk", "frame"]

assert kw.MAX_JOURNEYS == MAX_JOURNEYS, "the loop's journey slots and what compiles must agree"

#: users per call of the loop (progress granularity)
_USERS_PER_CALL = 2_000


def _constants(sc: Scenario, cp: CompiledPolicy, n_changes: int) -> tuple[np.ndarray, np.ndarray]:
    """The loop's float constants ``F`` (the scenario's parameters; the per-user part is
    filled by the loop) and int constants ``K`` (codes, the compiled policy)."""
    beh, fz, strings = sc.behavior, sc.fatigue, cp.strings
    size = kw.layout(n_changes)
    F = np.zeros(size["F"])
    F[kw.P_VIEW], F[kw.P_CART], F[kw.P_ABANDON_DELAY] = beh.view_prob, beh.cart_prob, beh.abandon_delay_h
    F[kw.P_CART_RETURN], F[kw.P_CLICK_VISIT_BOOST] = beh.cart_return_boost, beh.click_visit_boost
    F[kw.P_CLICK_HALF_LIFE], F[kw.P_CLICK_PURCHASE] = beh.click_boost_half_life_h, beh.click_purchase_boost
    F[kw.P_BASKET_SIGMA], F[kw.P_INACTIVITY_H] = beh.basket_sigma, beh.inactivity_days * 24.0
    F[kw.P_CHURN_RATE_H] = beh.churn_rate_per_day / 24.0
    F[kw.P_BOOST_WINDOW_H] = beh.click_boost_half_life_h * math.log2(100)
    F[kw.P_FZ_ENABLED] = 1.0 if fz.enabled else 0.0
    F[kw.P_HALF_LIFE_H], F[kw.P_RESPONSE_STRENGTH] = fz.half_life_h, fz.response_strength
    F[kw.P_ACTIVITY_STRENGTH], F[kw.P_UNSUB_GAIN] = fz.activity_strength, fz.unsubscribe_gain
    F[kw.P_CHURN_GAIN], F[kw.P_HORIZON_H] = fz.churn_gain, sc.horizon_h
    F[kw.P_HISTORY_H] = HISTORY_DAYS * 24.0
    for i, name in enumerate(MSG_CHANNELS):
        c = sc.channels.get(name)
        for row, value in ((kw.CP_BOUNCE, c.bounce_prob), (kw.CP_FAIL, c.fail_prob),
                           (kw.CP_DELIVERY_H, c.delivery_delay_s / 3600.0),
                           (kw.CP_OPEN, c.open_prob), (kw.CP_CLICK, c.click_prob),
                           (kw.CP_TIMING, c.timing_weight), (kw.CP_UNSUB, c.unsubscribe_prob),
                           (kw.CP_COST, c.cost),  # one SMS segment: compiled policies send no text
                           (kw.CP_READ_MEDIAN_MIN, c.read_median_min),
                           (kw.CP_READ_SIGMA, c.read_sigma),
                           (kw.CP_WEIGHT, fz.weights.get(name, 0.0))):
            F[kw.F_CH + row * 3 + i] = value
    K = np.zeros(size["K"], np.int64)
    K[kw.K_NO_CONSENT] = strings.code("no_consent")
    for i, ch in enumerate((*MSG_CHANNELS, "none")):
        K[kw.K_ACT_EMAIL + i] = strings.code(ch)
    K[kw.K_POLICY] = strings.code(cp.name)
    K[kw.K_TAG_MARKETING] = strings.code("marketing")
    K[kw.K_N_CHANGES] = n_changes
    for kind, code in TRIGGER.items():
        K[kw.K_CAMP + code] = strings.code(kind)
    K[kw.K_HAS_RULES] = cp.rules is not None
    K[kw.K_SCRATCH_N] = scratch_size(_tables(cp)[1], kw.pending_capacity())
    K[kw.K_START_WEEKDAY] = sc.start.astimezone(timezone.utc).weekday()
    K[kw.K_N_JOURNEYS] = 0 if cp.journeys is None else cp.journeys.n_journeys
    K[kw.K_POL:kw.K_POL + 6] = cp.pol
    K[kw.K_TRIG:kw.K_TRIG + len(TRIGGER)] = cp.trig_mask
    K[kw.K_KEPT:kw.K_KEPT + len(cp.kept)] = cp.kept
    return F, K


@lru_cache(maxsize=1)
def _placeholders() -> tuple[Any, Any]:
    """Compiled journeys and rules of the right types for a policy without them (never
    read: ``K`` says the policy has none)."""
    from omnisim.policies.journeys import Journey, Step
    from omnisim.policies.pressure import PressureRules

    strings = Strings()
    journey = Journey("placeholder", ("signup",), (Step("s", "email"),))
    return compile_journeys(journey, strings), compile_rules(PressureRules(), strings)


def _tables(cp: CompiledPolicy) -> tuple[Any, Any]:
    """``T`` of the loop: the policy's compiled journeys and rules, or placeholders."""
    cj, cr = _placeholders()
    return (cp.journeys if cp.journeys is not None else cj,
            cp.rules if cp.rules is not None else cr)


def _users(users: pd.DataFrame) -> tuple[np.ndarray, ...]:
    col = lambda c: users[c].to_numpy(float)  # noqa: E731
    uf = np.zeros((len(users), kw.U_N))
    is_new = users["is_new"].to_numpy(bool)
    uf[:, kw.U_SIGNUP_H] = col("signup_offset_h")
    uf[:, kw.U_LAST_ACTIVE] = np.where(is_new, uf[:, kw.U_SIGNUP_H],
                                       -col("last_visit_days_ago") * 24.0)
    prof = np.ascontiguousarray(activity_matrix(users), dtype=float)
    uf[:, kw.U_VISIT_RATE] = col("visit_rate_per_day")
    uf[:, kw.U_ACT_MEAN], uf[:, kw.U_ACT_MAX] = prof.mean(axis=1), prof.max(axis=1)
    uf[:, kw.U_TOL], uf[:, kw.U_PROPENSITY] = col("fatigue_tolerance"), col("purchase_propensity")
    uf[:, kw.U_BASKET], uf[:, kw.U_PRICE_SENS] = col("basket_median"), col("price_sensitivity")
    uf[:, kw.U_EMAIL_MEDIAN] = col("email_check_median_h")
    for i, c in enumerate(MSG_CHANNELS):
        uf[:, kw.U_AFF + i] = col(f"affinity_{c}")
    consent = np.ascontiguousarray(
        np.column_stack([users[f"consent_{c}"].to_numpy(bool) for c in MSG_CHANNELS]))
    return uf, is_new, consent, prof


def run_chunk(sc: Scenario, cp: CompiledPolicy, users: pd.DataFrame,
              zones: tuple[np.ndarray, np.ndarray], tz_idx: np.ndarray, world: np.random.Generator,
              prng: np.random.Generator, bar: Any) -> tuple[Any, ...] | None:
    """Simulate a chunk's ``users`` with the compiled loop (``cp``: the policy as
    :func:`~omnisim.policies._kernel_policy.compile_policy` gives it); returns
    ``(Lf, Li, strings)``:
    the log's rows in the order they were logged (float columns
    :data:`~omnisim.model._kernel_world.LF_COLUMNS`, int columns ``LI_COLUMNS``) and the
    run's texts, or ``None`` when nothing was logged.

    ``zones``: the chunk's zone tables ``(changes, offsets)``, ``tz_idx`` (n,) each user's
    row; ``bar`` advances by ``sc.horizon_h`` per chunk (hours)."""
    changes, offsets = (np.ascontiguousarray(a, dtype=float) for a in zones)
    F, K = _constants(sc, cp, changes.shape[1])
    T = _tables(cp)
    uf, is_new, consent, prof = _users(users)
    n_j = max(1, int(K[kw.K_N_JOURNEYS]))
    if cp.journeys is not None:
        holdout = holdout_flags(cp.journeys, users["user_id"].astype(str).tolist())
    else:
        holdout = np.zeros((len(users), n_j), bool)
    tz_idx = np.ascontiguousarray(tz_idx, dtype=np.int64)
    n = len(users)
    cap = max(2 * kw.MARGIN_ROWS, int(n * max(sc.days, 1.0) * 3))
    blocks: list[tuple[np.ndarray, np.ndarray]] = []
    Lf, Li = np.empty((cap, 3)), np.empty((cap, len(kw.LI_COLUMNS)), np.int32)
    pos = np.zeros(1, np.int64)
    u = 0
    while u < n:
        stop = min(n, u + _USERS_PER_CALL)
        nxt = kw.run_users(u, stop, Lf, Li, pos, F, K, T, uf, is_new, consent, holdout, prof,
                           tz_idx, changes, offsets, world, prng)
        if nxt < stop or pos[0] + kw.MARGIN_ROWS > cap:  # this block is full: start another
            blocks.append((Lf[:pos[0]], Li[:pos[0]]))
            Lf, Li = np.empty((cap, 3)), np.empty((cap, len(kw.LI_COLUMNS)), np.int32)
            pos[0] = 0
        bar.update(sc.horizon_h * (nxt - u) / n)
        u = nxt
    blocks.append((Lf[:pos[0]], Li[:pos[0]]))
    Lf = np.concatenate([b[0] for b in blocks]) if len(blocks) > 1 else blocks[0][0]
    Li = np.concatenate([b[1] for b in blocks]) if len(blocks) > 1 else blocks[0][1]
    if len(Lf) == 0:
        return None
    return Lf, Li, cp.strings


def frame(run: tuple[Any, ...], start: datetime, user_ids: Sequence[str]) -> pd.DataFrame:
    """The chunk's log frame from :func:`run_chunk`'s result, sorted by time (stable), in
    the dtypes :func:`omnisim.log.validate` gives (as ``engine_fast``'s frames); text columns
    are built as Arrow buffers directly (:mod:`omnisim.model._kernel_log`)."""
    from omnisim.model.engine_fast import _CH_DTYPE, _EV_DTYPE

    Lf, Li, strings = run
    t_us, F, I = kl.sorted_columns(Lf, Li)  # noqa: E741
    del Lf, Li
    base_us = int(pd.Timestamp(start).value // 1000)
    ts = pd.array((t_us + base_us).view("M8[us]"), dtype=pd.DatetimeTZDtype("us", "UTC"))
    vocab = strings.values

    def text(a: pa.Array) -> Any:
        return pd.arrays.ArrowStringArray(pa.chunked_array([a]))

    def codes(j: int) -> Any:
        return text(kl.text_array(I[j], vocab))

    data = {
        "ts": ts, "user_id": text(kl.text_array(I[kw.LI_USER], user_ids)),
        "event": pd.Categorical.from_codes(I[kw.LI_EVENT].astype(np.int8), dtype=_EV_DTYPE),
        "channel": pd.Categorical.from_codes(I[kw.LI_CHANNEL].astype(np.int8), dtype=_CH_DTYPE),
        "action": codes(kw.LI_ACTION),
        "message_id": text(kl.message_ids(I[kw.LI_USER], I[kw.LI_MSG], user_ids)),
        "campaign": codes(kw.LI_CAMPAIGN), "policy": codes(kw.LI_POLICY),
        "propensity": F[1], "value": F[2],
        "reason": codes(kw.LI_REASON), "tag": codes(kw.LI_TAG), "step": codes(kw.LI_STEP),
    }
    assert list(data) == list(COLUMNS)
    return pd.DataFrame(data, copy=False)
