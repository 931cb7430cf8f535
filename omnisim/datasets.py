"""The real data sets shipped in ``data/`` and their converters into the engagement log.

Three sets are known (see ``data/README.md`` for sources, licences and checksums):

``hillstrom``
    Kevin Hillstrom's MineThatData e-mail challenge (2008): 64,000 customers randomised,
    one third each, to a men's e-mail, a women's e-mail or no e-mail; outcomes (visit,
    conversion, spend) over the following two weeks. :func:`hillstrom_log`.
``obd_random`` / ``obd_bts``
    The 10,000-row samples of the Open Bandit Dataset (ZOZOTOWN) logged by a uniform-random
    and by a Bernoulli Thompson-sampling policy. :func:`obd_log`.

:func:`convert` writes a converted set as a log file (CSV or Parquet, via
:func:`omnisim.log.write_log`) plus, where the set has one, a users table next to it.

Data files are looked up under ``data/`` at the repository root (found from the package
location), or under the directory named by the ``OMNISIM_DATA_DIR`` environment variable.
A missing or garbled file raises :class:`DatasetError` naming the file and what was expected.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from omnisim.errors import OmnisimError
from omnisim.log import validate, write_log

__all__ = [
    "DatasetError", "DatasetInfo", "HILLSTROM_CAMPAIGN", "HILLSTROM_DECISION_TS",
    "HILLSTROM_OUTCOME_TS", "convert", "data_dir", "hillstrom_log", "list_datasets", "obd_log",
    "users_path_for",
]

#: Nominal date of the Hillstrom campaign: every decision and send is stamped with it (UTC).
HILLSTROM_DECISION_TS = pd.Timestamp("2008-03-03T09:00:00Z")
#: Hillstrom outcomes (visit, purchase) are stamped at the end of the two-week window:
#: exactly 14 days after the decision (UTC).
HILLSTROM_OUTCOME_TS = HILLSTROM_DECISION_TS + pd.Timedelta(days=14)
HILLSTROM_CAMPAIGN = "hillstrom_2008"
HILLSTROM_POLICY = "hillstrom_rct"
HILLSTROM_SEGMENTS = {"Mens E-Mail": "mens_email", "Womens E-Mail": "womens_email", "No E-Mail": "none"}
HILLSTROM_COLUMNS = (
    "recency", "history_segment", "history", "mens", "womens", "zip_code", "newbie", "channel",
    "segment", "visit", "conversion", "spend",
)
OBD_CAMPAIGN = "obd_all"
OBD_COLUMNS = ("timestamp", "item_id", "position", "click", "propensity_score")
OBD_USER_FEATURES = ("user_feature_0", "user_feature_1", "user_feature_2", "user_feature_3")
OBD_USER_PREFIX = {"random": "rand_i", "bts": "bts_i"}


class DatasetError(OmnisimError, ValueError):
    """A data file is missing, unreadable or not what its converter expects, or an unknown
    data set was asked for.

    ``path`` is the file concerned (None for an unknown name); the message says what was
    expected. The CLI prints it as one paragraph and exits with code 2.
    """

    exit_code = 2

    def __init__(self, path: str | Path | None, problem: str):
        self.path = Path(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)


@dataclass(frozen=True)
class DatasetInfo:
    """What :func:`list_datasets` says about one data set.

    ``rows`` counts data rows (header excluded) in the raw source file; ``files`` are
    paths relative to the data directory.
    """

    name: str
    description: str
    rows: int
    licence: str
    source: str
    citation: str
    files: tuple[str, ...]
    has_users: bool


def _obd_info(kind: str, policy: str) -> DatasetInfo:
    """The Open Bandit Dataset sample logged by ``policy`` (folder ``obd/<kind>/all``)."""
    return DatasetInfo(
        name=f"obd_{kind}",
        description=("Open Bandit Dataset sample (ZOZOTOWN, campaign 'all'): 10,000 "
                     f"recommendations by {policy}, clicks"),
        rows=10_000,
        licence="Apache-2.0 (shipped as package data of obp 0.5.7)",
        source=f"https://github.com/st-tech/zr-obp (obp 0.5.7 sdist, obp/dataset/obd/{kind}/all)",
        citation=("Saito, Aihara, Matsutani, Narita. Open Bandit Dataset and Pipeline: Towards "
                  "Realistic and Reproducible Off-Policy Evaluation. arXiv:2008.07146"),
        files=(f"obd/{kind}/all/all.csv.gz", f"obd/{kind}/all/item_context.csv"),
        has_users=True,
    )


_DATASETS: dict[str, DatasetInfo] = {
    "hillstrom": DatasetInfo(
        name="hillstrom",
        description=("MineThatData e-mail challenge (2008): 64,000 customers randomised to "
                     "men's e-mail / women's e-mail / no e-mail (propensity 1/3 each); "
                     "visit, conversion and spend over two weeks"),
        rows=64_000,
        licence="free public challenge data set published by Kevin Hillstrom (MineThatData); no formal licence",
        source="https://blog.minethatdata.com/2008/03/minethatdata-e-mail-analytics-and-data.html",
        citation="Kevin Hillstrom, 'The MineThatData E-Mail Analytics and Data Mining Challenge', 2008",
        files=("hillstrom/hillstrom.csv.gz",),
        has_users=True,
    ),
    "obd_random": _obd_info("random", "a uniform-random policy (propensity 1/80)"),
    "obd_bts": _obd_info("bts", "a Bernoulli Thompson-sampling policy"),
}


def data_dir() -> Path:
    """The data directory: ``$OMNISIM_DATA_DIR`` if set, else ``<repo>/data``."""
    env = os.environ.get("OMNISIM_DATA_DIR")
    if env:
        return Path(env)
    import omnisim

    return Path(omnisim.__file__).resolve().parents[1] / "data"


def list_datasets() -> list[DatasetInfo]:
    """The data sets :func:`convert` knows, in a stable order."""
    return list(_DATASETS.values())


def _info(name: str) -> DatasetInfo:
    try:
        return _DATASETS[name]
    except KeyError:
        raise DatasetError(
            None, f"unknown data set {name!r}; expected one of {', '.join(_DATASETS)} "
                  "(see `omnisim data list`)") from None


def _read_csv(path: Path, what: str, required: tuple[str, ...], **kwargs) -> pd.DataFrame:
    """Read a (gzipped) CSV, turning every failure into a DatasetError naming the file."""
    if not path.exists():
        raise DatasetError(path, f"file not found; expected {what} "
                                 f"(looked at {path.resolve()}; set OMNISIM_DATA_DIR to another data directory)")
    if path.stat().st_size == 0:
        raise DatasetError(path, f"the file is empty (0 bytes); expected {what}")
    try:
        header = pd.read_csv(path, nrows=0).columns
    except Exception as exc:  # gzip / parser errors
        raise DatasetError(path, f"cannot be read as CSV ({type(exc).__name__}: {exc}); expected {what}") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise DatasetError(
            path, f"missing column(s) {', '.join(map(repr, missing))}; expected {what} with columns "
                  f"{', '.join(required)}; found {', '.join(map(str, header)) or 'no columns'}")
    try:
        return pd.read_csv(path, **kwargs)
    except Exception as exc:
        raise DatasetError(path, f"cannot be read as CSV ({type(exc).__name__}: {exc}); expected {what}") from None


def _bad_rows(path: Path, mask: pd.Series | np.ndarray, column: str, values: pd.Series, expected: str) -> None:
    mask = np.asarray(mask, dtype=bool)
    if mask.any():
        pos = np.flatnonzero(mask)
        shown = ", ".join(str(int(i) + 1) for i in pos[:5]) + (f" and {len(pos) - 5} more" if len(pos) > 5 else "")
        value = values.iloc[pos[0]]
        value = value.item() if isinstance(value, np.generic) else value
        raise DatasetError(
            path, f"column {column!r}: value {value!r} in data row(s) {shown}; expected {expected}")


def _numeric(path: Path, df: pd.DataFrame, column: str, expected: str) -> pd.Series:
    num = pd.to_numeric(df[column], errors="coerce")
    _bad_rows(path, num.isna().to_numpy(), column, df[column], expected)
    return num


def hillstrom_log(path: str | Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Convert the Hillstrom e-mail challenge into an engagement log and a users table.

    Parameters
    ----------
    path
        the CSV (optionally gzipped); default ``<data dir>/hillstrom/hillstrom.csv.gz``.

    Returns
    -------
    (log, users)
        ``log`` is a validated engagement log; ``users`` has one row per customer, keyed by
        ``user_id``, with ``recency`` (months), ``history_segment``, ``history`` (dollars,
        past year), ``mens``, ``womens``, ``zip_code``, ``newbie`` and ``purchase_channel``
        (the raw ``channel`` column: Phone / Web / Multichannel).

    Log mapping
    -----------
    - ``user_id`` is ``h`` + the 1-based data-row number, zero-padded: ``h00001`` ... ``h64000``.
    - one ``decided`` row per customer at :data:`HILLSTROM_DECISION_TS` (2008-03-03T09:00Z,
      a nominal campaign date; the data carry no timestamps): action ``mens_email`` /
      ``womens_email`` / ``none``, channel ``email`` (or ``none``), propensity 1/3, policy
      ``hillstrom_rct``, campaign ``hillstrom_2008``. E-mailed customers' decisions carry
      the message_id of their send, ``hillstrom_2008:<user_id>``.
    - one ``sent`` row (channel ``email``, same ts and message_id) per e-mailed customer;
      ``value`` (cost) is unknown and left null.
    - outcomes at :data:`HILLSTROM_OUTCOME_TS` (the end of the two-week window, exactly 14
      days after the decision), channel ``web``: a ``visit`` row when ``visit == 1``, a
      ``purchase`` row with ``value = spend`` (dollars) when ``conversion == 1``.
      In the shipped file ``conversion == 1`` exactly when ``spend > 0`` (578 customers)
      and every converter also visited; this function raises :class:`DatasetError` if a
      file breaks the first rule.

    Rows are sorted by ``ts``, then ``user_id``, then event (decided, sent, visit, purchase).
    """
    path = Path(path) if path is not None else data_dir() / _DATASETS["hillstrom"].files[0]
    what = "the Hillstrom MineThatData e-mail CSV (64,000 customers)"
    raw = _read_csv(path, what, HILLSTROM_COLUMNS)
    if len(raw) == 0:
        raise DatasetError(path, f"no data rows; expected {what}")
    seg = raw["segment"].astype("string")
    _bad_rows(path, ~seg.isin(list(HILLSTROM_SEGMENTS)).fillna(False).to_numpy() | seg.isna().to_numpy(),
              "segment", raw["segment"], "one of " + ", ".join(HILLSTROM_SEGMENTS))
    visit = _numeric(path, raw, "visit", "0 or 1")
    conv = _numeric(path, raw, "conversion", "0 or 1")
    spend = _numeric(path, raw, "spend", "a number of dollars >= 0")
    for col, s in (("visit", visit), ("conversion", conv)):
        _bad_rows(path, ~s.isin([0, 1]).to_numpy(), col, raw[col], "0 or 1")
    _bad_rows(path, (spend < 0).to_numpy(), "spend", raw["spend"], "a number of dollars >= 0")
    _bad_rows(path, ((conv == 1) != (spend > 0)).to_numpy(), "spend", raw["spend"],
              "spend > 0 exactly on rows with conversion == 1")

    n = len(raw)
    user_id = pd.Series([f"h{i:05d}" for i in range(1, n + 1)], dtype="string")
    action = seg.map(HILLSTROM_SEGMENTS).astype("string")
    emailed = (action != "none").to_numpy()
    message_id = (HILLSTROM_CAMPAIGN + ":" + user_id).where(emailed, pd.NA)

    decided = pd.DataFrame({
        "ts": HILLSTROM_DECISION_TS, "user_id": user_id, "event": "decided",
        "channel": np.where(emailed, "email", "none"), "action": action, "message_id": message_id,
        "campaign": HILLSTROM_CAMPAIGN, "policy": HILLSTROM_POLICY, "propensity": 1.0 / 3.0,
        "value": np.nan,
    })
    sent = pd.DataFrame({
        "ts": HILLSTROM_DECISION_TS, "user_id": user_id[emailed], "event": "sent", "channel": "email",
        "message_id": message_id[emailed], "campaign": HILLSTROM_CAMPAIGN, "value": np.nan,
    })
    vis = (visit == 1).to_numpy()
    visits = pd.DataFrame({"ts": HILLSTROM_OUTCOME_TS, "user_id": user_id[vis], "event": "visit",
                           "channel": "web", "value": np.nan})
    buy = (conv == 1).to_numpy()
    purchases = pd.DataFrame({"ts": HILLSTROM_OUTCOME_TS, "user_id": user_id[buy], "event": "purchase",
                              "channel": "web", "value": spend[buy].astype("float64").to_numpy()})
    order = {"decided": 0, "sent": 1, "visit": 2, "purchase": 3}
    log = pd.concat([decided, sent, visits, purchases], ignore_index=True)
    log["_o"] = log["event"].map(order)
    log = log.sort_values(["ts", "user_id", "_o"], kind="stable").drop(columns="_o")
    log = validate(log, source=str(path))

    users = pd.DataFrame({
        "user_id": user_id,
        "recency": raw["recency"].to_numpy(),
        "history_segment": raw["history_segment"].astype("string").to_numpy(),
        "history": raw["history"].to_numpy(),
        "mens": raw["mens"].to_numpy(),
        "womens": raw["womens"].to_numpy(),
        "zip_code": raw["zip_code"].astype("string").to_numpy(),
        "newbie": raw["newbie"].to_numpy(),
        "purchase_channel": raw["channel"].astype("string").to_numpy(),
    })
    users["user_id"] = users["user_id"].astype("string")
    return log, users


def obd_log(kind: Literal["random", "bts"], path: str | Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Convert an Open Bandit Dataset sample (campaign ``all``) into an engagement log.

    Parameters
    ----------
    kind
        ``"random"`` (uniform-random logging policy) or ``"bts"`` (Bernoulli Thompson sampling).
    path
        the ``all.csv`` (optionally gzipped); default ``<data dir>/obd/<kind>/all/all.csv.gz``.

    Returns
    -------
    (log, users)
        ``users`` holds the hashed categorical context ``user_feature_0..3`` keyed by
        ``user_id`` (the 80 ``user-item_affinity_*`` columns are not carried over).

    Log mapping
    -----------
    OBD records web recommendations (ZOZOTOWN), one row per (impression, position); it has
    no user ids. Each raw row becomes its own "user": ``user_id`` =
    ``rand_i<index>`` / ``bts_i<index>`` from the file's unnamed 0-based row index, zero-padded
    to 5 digits. Per raw row:

    - a ``decided`` row at the row's ``timestamp`` (UTC), channel ``web``, action
      ``item_<item_id>@pos<position>`` (position 1, 2, 3 = left, centre, right, as in the
      raw file; obp maps them to 0, 1, 2), ``propensity`` = ``propensity_score``, policy
      ``obd_random`` / ``obd_bts``, campaign ``obd_all``, message_id ``obd_<kind>:<index>``;
    - a ``clicked`` row with the same ts, user, channel, campaign and message_id when ``click == 1``.

    Rows are sorted by timestamp (stable, as obp's loader does), a decision before its click.
    """
    if kind not in OBD_USER_PREFIX:
        raise DatasetError(None, f"unknown OBD log kind {kind!r}; expected 'random' or 'bts'")
    name = f"obd_{kind}"
    path = Path(path) if path is not None else data_dir() / _DATASETS[name].files[0]
    what = f"an Open Bandit Dataset {kind} log 'all.csv' (columns {', '.join(OBD_COLUMNS)}, ...)"
    raw = _read_csv(path, what, OBD_COLUMNS + OBD_USER_FEATURES,
                    usecols=lambda c: c in OBD_COLUMNS or c in OBD_USER_FEATURES or c.startswith("Unnamed: 0"),
                    dtype={c: "string" for c in OBD_USER_FEATURES + ("timestamp",)})
    if len(raw) == 0:
        raise DatasetError(path, f"no data rows; expected {what}")
    index_col = next((c for c in raw.columns if str(c).startswith("Unnamed: 0")), None)
    index = (_numeric(path, raw, index_col, "an integer row index") if index_col is not None
             else pd.Series(np.arange(len(raw))))
    ts = pd.to_datetime(raw["timestamp"], utc=True, errors="coerce", format="mixed")
    _bad_rows(path, ts.isna().to_numpy(), "timestamp", raw["timestamp"], "a timestamp like '2019-11-24 00:00:34.762830+00:00'")
    item = _numeric(path, raw, "item_id", "an integer item id >= 0")
    pos = _numeric(path, raw, "position", "1, 2 or 3")
    _bad_rows(path, ~pos.isin([1, 2, 3]).to_numpy(), "position", raw["position"], "1, 2 or 3")
    click = _numeric(path, raw, "click", "0 or 1")
    _bad_rows(path, ~click.isin([0, 1]).to_numpy(), "click", raw["click"], "0 or 1")
    prop = _numeric(path, raw, "propensity_score", "a probability in (0, 1]")
    _bad_rows(path, ((prop <= 0) | (prop > 1)).to_numpy(), "propensity_score", raw["propensity_score"],
              "a probability in (0, 1]")
    _bad_rows(path, (item < 0).to_numpy() | (item != item.round()).to_numpy(), "item_id", raw["item_id"],
              "an integer item id >= 0")

    idx = index.astype("int64").to_numpy()
    user_id = pd.Series([f"{OBD_USER_PREFIX[kind]}{i:05d}" for i in idx], dtype="string")
    message_id = pd.Series([f"{name}:{i:05d}" for i in idx], dtype="string")
    action = pd.Series([f"item_{int(i)}@pos{int(p)}" for i, p in zip(item, pos)], dtype="string")
    decided = pd.DataFrame({
        "ts": ts.to_numpy(), "user_id": user_id, "event": "decided", "channel": "web",
        "action": action, "message_id": message_id, "campaign": OBD_CAMPAIGN, "policy": name,
        "propensity": prop.astype("float64").to_numpy(), "value": np.nan, "_row": np.arange(len(raw)),
        "_o": 0,
    })
    clicked_mask = (click == 1).to_numpy()
    clicked = pd.DataFrame({
        "ts": ts.to_numpy()[clicked_mask], "user_id": user_id[clicked_mask], "event": "clicked",
        "channel": "web", "message_id": message_id[clicked_mask], "campaign": OBD_CAMPAIGN,
        "value": np.nan, "_row": np.flatnonzero(clicked_mask), "_o": 1,
    })
    log = pd.concat([decided, clicked], ignore_index=True)
    log = log.sort_values(["ts", "_row", "_o"], kind="stable").drop(columns=["_row", "_o"])
    log = validate(log, source=str(path))

    users = pd.DataFrame({"user_id": user_id})
    for col in OBD_USER_FEATURES:
        users[col] = raw[col].astype("string").to_numpy()
    return log, users


def users_path_for(log_path: str | Path) -> Path:
    """Where :func:`convert` puts the users table for a log written to ``log_path``.

    ``out/hill.parquet`` → ``out/hill_users.parquet``; ``out/hill.csv.gz`` → ``out/hill_users.parquet``.
    """
    log_path = Path(log_path)
    name = log_path.name
    for suffix in (".csv.gz", ".csv", ".parquet", ".pq"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return log_path.with_name(f"{name}_users.parquet")


def load(name: str) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The (log, users) pair of a named data set, converted in memory from ``data/``."""
    _info(name)
    if name == "hillstrom":
        return hillstrom_log()
    return obd_log(name.removeprefix("obd_"))  # type: ignore[arg-type]


def convert(name: str, out_path: str | Path) -> tuple[Path, Path | None]:
    """Convert data set ``name`` and write it.

    The log goes to ``out_path`` (CSV, CSV.gz or Parquet, chosen by extension, written by
    :func:`omnisim.log.write_log`); the users table, where the set has one, goes next to it
    as ``<out stem>_users.parquet`` (see :func:`users_path_for`). Parent directories are
    created. Returns ``(log_path, users_path or None)``.

    Raises :class:`DatasetError` for an unknown name or a missing or garbled source file,
    :class:`omnisim.log.LogValidationError` for an unsupported output extension (both are
    :class:`omnisim.errors.OmnisimError`, which the CLI reports in one paragraph).
    """
    out_path = Path(out_path)
    from omnisim.log import _kind  # noqa: PLC0415  -- reject a bad extension before converting

    _kind(out_path)
    log, users = load(name)
    log_path = write_log(log, out_path)
    users_path = None
    if users is not None:
        users_path = users_path_for(out_path)
        users.to_parquet(users_path, index=False)
    return log_path, users_path
