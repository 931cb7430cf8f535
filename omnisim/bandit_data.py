"""The real data sets as arrays for off-policy evaluation and uplift modelling.

- :func:`load_obd` — the Open Bandit Dataset sample as obp-style arrays (what obp's
  ``OpenBanditDataset.obtain_batch_bandit_feedback()`` returns), :func:`bts_action_dist`
  — the Bernoulli Thompson sampling policy's action distribution, and
  :func:`on_policy_rate` — a log's own click rate with a Wilson interval (the ground truth
  OPE estimates are compared with).
- :func:`load_hillstrom` — the Hillstrom e-mail experiment as features / treatment /
  outcome frames, and :func:`hillstrom_feedback` — the same as a 3-action bandit log
  (``none``, ``mens``, ``womens``; propensity 1/3).

Files are read from the repository's ``data/`` directory (or ``$OMNISIM_DATA_DIR``; see
:func:`omnisim.datasets.data_dir`). Unlike :mod:`omnisim.datasets`, nothing here converts to
the engagement log: these are model-ready arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypedDict

import numpy as np
import pandas as pd

from omnisim.datasets import data_dir
from omnisim.stats import wilson_ci

__all__ = [
    "BanditFeedback", "HillstromData", "OBD_N_ACTIONS", "OBD_LEN_LIST", "HILLSTROM_ACTIONS",
    "load_obd", "bts_action_dist", "on_policy_rate", "load_hillstrom", "hillstrom_feedback",
]

OBD_N_ACTIONS = 80
OBD_LEN_LIST = 3
#: Hillstrom treatments as action names, in action-index order (0 is the control).
HILLSTROM_ACTIONS: tuple[str, ...] = ("none", "mens", "womens")
_SEGMENTS = {"No E-Mail": "none", "Mens E-Mail": "mens", "Womens E-Mail": "womens"}
_HILLSTROM_FEATURES = ("recency", "history", "mens", "womens", "zip_code", "newbie", "channel")


class BanditFeedback(TypedDict):
    """Logged bandit feedback, with obp's keys (``(n,)`` arrays unless said otherwise)."""

    n_rounds: int
    n_actions: int
    len_list: int
    action: np.ndarray          # int, [0, n_actions)
    position: np.ndarray        # int, 0-based slot
    reward: np.ndarray          # float (clicks / visits: 0 or 1)
    pscore: np.ndarray          # logging policy's probability of (action, position)
    context: np.ndarray         # (n, d) float features
    action_context: np.ndarray  # (n_actions, d_a) float item features
    timestamp: np.ndarray       # datetime64[ns], UTC (OBD); empty for Hillstrom


def _read(relative: str, base: str | Path | None) -> pd.DataFrame:
    path = Path(base) if base is not None else data_dir()
    path = path / relative
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found; expected the data file {relative!r} under the "
                                f"data directory (set OMNISIM_DATA_DIR to use another one)")
    return pd.read_csv(path, index_col=0 if relative.startswith("obd/") else None)


def _obd_frame(kind: str, base: str | Path | None) -> pd.DataFrame:
    if kind not in ("random", "bts"):
        raise ValueError(f"kind must be 'random' or 'bts', got {kind!r}")
    df = _read(f"obd/{kind}/all/all.csv.gz", base)
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True)
    return df.sort_values("timestamp", kind="stable").reset_index(drop=True)


def load_obd(kind: Literal["random", "bts"], *, base: str | Path | None = None) -> BanditFeedback:
    """The OBD sample (campaign ``all``) logged by the ``random`` or ``bts`` policy.

    As obp's loader: rows sorted by timestamp; ``position`` 0-based (0 = left); ``reward`` =
    click; ``pscore`` = ``propensity_score``; ``context`` =
    ``get_dummies(user_feature_0..3, drop_first=True)``; ``action_context`` = the item
    table's categorical features label-encoded, then ``item_feature_0``. 10,000 rounds,
    80 actions, 3 slots. ``base`` overrides the data directory.
    """
    df = _obd_frame(kind, base)
    users = [f"user_feature_{i}" for i in range(4)]
    context = pd.get_dummies(df[users], drop_first=True).to_numpy(dtype=float)
    items = _read(f"obd/{kind}/all/item_context.csv", base).sort_values("item_id")
    cats = items.drop(columns=["item_id", "item_feature_0"]).apply(lambda c: pd.factorize(c, sort=True)[0])
    action_context = np.column_stack([cats.to_numpy(dtype=float), items["item_feature_0"].to_numpy(float)])
    return BanditFeedback(
        n_rounds=len(df), n_actions=OBD_N_ACTIONS, len_list=OBD_LEN_LIST,
        action=df["item_id"].to_numpy(np.int64), position=df["position"].to_numpy(np.int64) - 1,
        reward=df["click"].to_numpy(float), pscore=df["propensity_score"].to_numpy(float),
        context=context, action_context=action_context,
        timestamp=df["timestamp"].dt.tz_convert(None).to_numpy(dtype="datetime64[ns]"),
    )


def bts_action_dist(
    n_rounds: int | None = None, *, method: Literal["frequency", "mean_pscore"] = "frequency",
    base: str | Path | None = None,
) -> np.ndarray:
    """The BTS policy's action distribution, estimated from the BTS log; time-invariant.

    obp builds it by re-running BTS with the item-level priors of the full data set, which
    the sample does not carry. Here it is estimated from the BTS log itself, as one
    distribution per slot, the same for every round (obp's is time-invariant too):

    ``"frequency"`` (default)
        the share of the slot's BTS rows that show each item. An item is logged at a slot
        with probability ``p_t(item, slot)``, so the share is an unbiased estimate of the
        time-averaged BTS probability — the quantity whose value is the on-policy click
        rate.
    ``"mean_pscore"``
        the mean ``propensity_score`` over the BTS rows where the item was logged at that
        slot, normalised per slot. Size-biased: a row is sampled with probability ``p_t``,
        so the mean over logged rows is ``E[p^2]/E[p] >= E[p]``; the unnormalised means sum
        to 3.7, 2.3 and 2.0 over items in the three slots, not 1 — BTS's probabilities moved
        during the week. Kept for comparison.

    Items BTS never showed at a slot get probability 0 there. Returns shape
    ``(n_actions, len_list)`` if ``n_rounds`` is ``None``, else a read-only broadcast view
    of shape ``(n_rounds, n_actions, len_list)`` (obp's ``action_dist``).
    """
    df = _obd_frame("bts", base)
    pos = df["position"].to_numpy() - 1
    dist = np.zeros((OBD_N_ACTIONS, OBD_LEN_LIST))
    if method == "frequency":
        np.add.at(dist, (df["item_id"].to_numpy(), pos), 1.0)
    elif method == "mean_pscore":
        means = df.groupby([df["item_id"], pos])["propensity_score"].mean()
        items, slots = (np.asarray(v) for v in zip(*means.index))
        dist[items, slots] = means.to_numpy()
    else:
        raise ValueError(f"method must be 'frequency' or 'mean_pscore', got {method!r}")
    dist /= dist.sum(axis=0, keepdims=True)
    if n_rounds is None:
        return dist
    return np.broadcast_to(dist, (n_rounds, *dist.shape))


def on_policy_rate(kind: Literal["random", "bts"] = "bts", *, confidence: float = 0.95,
                   base: str | Path | None = None) -> tuple[float, float, float]:
    """A log's own click rate per impression with its Wilson interval: ``(rate, low, high)``."""
    clicks = _obd_frame(kind, base)["click"]
    rate, low, high = wilson_ci(int(clicks.sum()), len(clicks), confidence)
    return float(rate), float(low), float(high)


@dataclass(frozen=True)
class HillstromData:
    """The Hillstrom experiment, one row per customer (64,000).

    ``X``: ``recency`` (months), ``history`` (dollars), ``mens``, ``womens``, ``newbie``
    (0/1), ``zip_code`` and ``channel`` (strings; one-hot them, e.g. with
    :class:`omnisim.policies.uplift.TraitEncoder`). ``treatment``: ``none`` / ``mens`` /
    ``womens``. ``outcome``: ``visit``, ``conversion`` (0/1), ``spend`` (dollars).
    """

    X: pd.DataFrame
    treatment: pd.Series
    outcome: pd.DataFrame


def load_hillstrom(*, base: str | Path | None = None) -> HillstromData:
    """Read ``hillstrom/hillstrom.csv.gz`` into :class:`HillstromData`."""
    df = _read("hillstrom/hillstrom.csv.gz", base)
    unknown = sorted(set(df["segment"]) - set(_SEGMENTS))
    if unknown:
        raise ValueError(f"hillstrom: unknown segment value(s) {unknown}; expected {sorted(_SEGMENTS)}")
    return HillstromData(
        X=df[list(_HILLSTROM_FEATURES)].copy(),
        treatment=df["segment"].map(_SEGMENTS).rename("treatment"),
        outcome=df[["visit", "conversion", "spend"]].astype(float),
    )


def hillstrom_feedback(outcome: Literal["visit", "conversion", "spend"] = "visit", *,
                       data: HillstromData | None = None) -> BanditFeedback:
    """Hillstrom as a 3-action bandit log: action ``HILLSTROM_ACTIONS.index(treatment)``,
    one slot, ``pscore`` 1/3 (the randomisation), ``context`` = one-hot features."""
    from omnisim.policies.uplift import TraitEncoder

    data = data if data is not None else load_hillstrom()
    if outcome not in data.outcome.columns:
        raise ValueError(f"outcome={outcome!r}: not an outcome of the Hillstrom data; expected one "
                         f"of {', '.join(map(str, data.outcome.columns))}")
    action = data.treatment.map({a: i for i, a in enumerate(HILLSTROM_ACTIONS)}).to_numpy(np.int64)
    n = len(action)
    return BanditFeedback(
        n_rounds=n, n_actions=len(HILLSTROM_ACTIONS), len_list=1, action=action,
        position=np.zeros(n, dtype=np.int64), reward=data.outcome[outcome].to_numpy(float),
        pscore=np.full(n, 1 / 3), context=TraitEncoder().fit_transform(data.X),
        action_context=np.eye(len(HILLSTROM_ACTIONS)), timestamp=np.array([], dtype="datetime64[ns]"),
    )
