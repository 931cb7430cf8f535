"""Converters of the shipped data sets: round trips, counts against the raw files, errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from omnisim import datasets as D
from omnisim.log import LogValidationError, read_log, validate

DATA = D.data_dir()
HILLSTROM_CSV = DATA / "hillstrom" / "hillstrom.csv.gz"
OBD_CSV = {k: DATA / "obd" / k / "all" / "all.csv.gz" for k in ("random", "bts")}


@pytest.fixture(scope="module")
def hill_raw() -> pd.DataFrame:
    return pd.read_csv(HILLSTROM_CSV)


@pytest.fixture(scope="module")
def hill() -> tuple[pd.DataFrame, pd.DataFrame]:
    return D.hillstrom_log()


def _counts(log: pd.DataFrame) -> dict[str, int]:
    return {k: int(v) for k, v in log["event"].value_counts().items() if v}


# ---------------------------------------------------------------- catalogue

def test_list_datasets_names_and_files_exist():
    infos = D.list_datasets()
    assert [i.name for i in infos] == ["hillstrom", "obd_random", "obd_bts"]
    assert {i.name: i.rows for i in infos} == {"hillstrom": 64_000, "obd_random": 10_000, "obd_bts": 10_000}
    for info in infos:
        assert info.licence and info.source and info.description and info.citation
        for f in info.files:
            assert (DATA / f).exists(), f


def test_data_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("OMNISIM_DATA_DIR", str(tmp_path))
    assert D.data_dir() == tmp_path
    with pytest.raises(D.DatasetError, match="file not found.*Hillstrom"):
        D.hillstrom_log()


# ---------------------------------------------------------------- Hillstrom

def test_hillstrom_counts_match_raw(hill, hill_raw):
    log, users = hill
    c = _counts(log)
    emailed = int((hill_raw["segment"] != "No E-Mail").sum())
    assert c == {"decided": 64_000, "sent": emailed, "visit": int(hill_raw["visit"].sum()),
                 "purchase": int(hill_raw["conversion"].sum())}
    assert c["purchase"] == 578 and emailed == 42_694
    assert log["value"][log["event"] == "purchase"].sum() == pytest.approx(hill_raw["spend"].sum(), rel=1e-12)
    dec = log[log["event"] == "decided"]
    assert dec["user_id"].is_unique and len(dec) == 64_000
    assert np.allclose(dec["propensity"], 1 / 3)
    assert set(dec["policy"]) == {"hillstrom_rct"} and set(dec["campaign"]) == {"hillstrom_2008"}
    # actions follow the raw segment, row by row (user h00001 is data row 1)
    expected = hill_raw["segment"].map({"Mens E-Mail": "mens_email", "Womens E-Mail": "womens_email",
                                        "No E-Mail": "none"})
    got = dec.set_index("user_id")["action"].reindex([f"h{i:05d}" for i in range(1, 64_001)])
    assert (got.to_numpy() == expected.to_numpy()).all()
    assert (dec["channel"].astype(str) == np.where(dec["action"] == "none", "none", "email")).all()


def test_hillstrom_timestamps_and_links(hill):
    log, _ = hill
    dec_ts = log["ts"][log["event"].isin(["decided", "sent"])]
    out_ts = log["ts"][log["event"].isin(["visit", "purchase"])]
    assert (dec_ts == pd.Timestamp("2008-03-03T09:00Z")).all()
    assert (out_ts == pd.Timestamp("2008-03-17T09:00Z")).all()
    assert log["ts"].is_monotonic_increasing
    sent = log[log["event"] == "sent"]
    dec = log[(log["event"] == "decided") & (log["action"] != "none")]
    assert sent["message_id"].is_unique
    assert set(sent["message_id"]) == set(dec["message_id"])
    assert log["message_id"][log["action"] == "none"].isna().all()
    assert set(log["channel"][log["event"].isin(["visit", "purchase"])].astype(str)) == {"web"}


def test_hillstrom_conversion_implies_purchase_and_spend(hill, hill_raw):
    """In the real file conversion == 1 exactly when spend > 0, and converters visited."""
    assert ((hill_raw["conversion"] == 1) == (hill_raw["spend"] > 0)).all()
    assert (hill_raw.loc[hill_raw["conversion"] == 1, "visit"] == 1).all()
    log, _ = hill
    buyers = set(log["user_id"][log["event"] == "purchase"])
    visitors = set(log["user_id"][log["event"] == "visit"])
    assert buyers <= visitors
    assert (log["value"][log["event"] == "purchase"] > 0).all()


def test_hillstrom_users_table(hill, hill_raw):
    log, users = hill
    assert users["user_id"].is_unique and len(users) == 64_000
    assert set(users["user_id"]) == set(log["user_id"])
    assert list(users.columns) == ["user_id", "recency", "history_segment", "history", "mens", "womens",
                                   "zip_code", "newbie", "purchase_channel"]
    assert (users["purchase_channel"].to_numpy() == hill_raw["channel"].to_numpy()).all()
    assert users["history"].sum() == pytest.approx(hill_raw["history"].sum())
    assert users.loc[users["user_id"] == "h00004", "zip_code"].item() == hill_raw["zip_code"].iloc[3]


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet"])
def test_hillstrom_convert_round_trip(tmp_path, hill, hill_raw, suffix):
    log_path, users_path = D.convert("hillstrom", tmp_path / f"hill{suffix}")
    assert log_path == tmp_path / f"hill{suffix}" and users_path == tmp_path / "hill_users.parquet"
    back = read_log(log_path)
    again = validate(back)  # what read_log returns is itself a valid log
    assert len(again) == len(hill[0])
    assert _counts(back) == _counts(hill[0])
    assert back["value"].sum() == pytest.approx(hill_raw["spend"].sum(), rel=1e-12)
    assert np.allclose(back["propensity"].dropna(), 1 / 3)
    pd.testing.assert_series_equal(back["user_id"], hill[0]["user_id"].reset_index(drop=True), check_names=False)
    assert (back["ts"].to_numpy() == hill[0]["ts"].to_numpy()).all()
    users = pd.read_parquet(users_path)
    assert users["user_id"].is_unique and len(users) == 64_000
    assert users["history"].sum() == pytest.approx(hill_raw["history"].sum())


# ---------------------------------------------------------------- Open Bandit Dataset

@pytest.mark.parametrize("kind, clicks", [("random", 38), ("bts", 42)])
def test_obd_counts_match_raw(kind, clicks):
    raw = pd.read_csv(OBD_CSV[kind], usecols=["timestamp", "item_id", "position", "click", "propensity_score"])
    assert int(raw["click"].sum()) == clicks
    log, users = D.obd_log(kind)
    dec = log[log["event"] == "decided"]
    clk = log[log["event"] == "clicked"]
    assert len(dec) == len(raw) == 10_000 and len(clk) == clicks
    assert len(log) == 10_000 + clicks
    assert set(dec["policy"]) == {f"obd_{kind}"} and set(dec["campaign"]) == {"obd_all"}
    assert set(log["channel"].astype(str)) == {"web"}
    # sorted like obp (by timestamp, stably); raw files are already in that order
    raw = raw.sort_values("timestamp", kind="stable").reset_index(drop=True)
    assert log["ts"].is_monotonic_increasing
    assert np.allclose(dec["propensity"].to_numpy(), raw["propensity_score"].to_numpy())
    expected = "item_" + raw["item_id"].astype(str) + "@pos" + raw["position"].astype(str)
    assert (dec["action"].to_numpy() == expected.to_numpy()).all()
    if kind == "random":
        assert np.allclose(dec["propensity"], 1 / 80)
    # each click links to a decision with the same message_id, user and ts
    d = dec.set_index("message_id")
    assert clk["message_id"].isin(d.index).all()
    assert (d.loc[clk["message_id"], "ts"].to_numpy() == clk["ts"].to_numpy()).all()
    assert (d.loc[clk["message_id"], "user_id"].to_numpy() == clk["user_id"].to_numpy()).all()
    assert dec["message_id"].is_unique and dec["user_id"].is_unique
    assert users["user_id"].is_unique and set(users["user_id"]) == set(dec["user_id"])


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("name, clicks", [("obd_random", 38), ("obd_bts", 42)])
def test_obd_convert_round_trip(tmp_path, name, clicks, suffix):
    log_path, users_path = D.convert(name, tmp_path / f"{name}{suffix}")
    back = read_log(log_path)
    assert _counts(back) == {"decided": 10_000, "clicked": clicks}
    assert users_path is not None and pd.read_parquet(users_path)["user_id"].is_unique
    kind = name.removeprefix("obd_")
    orig, _ = D.obd_log(kind)  # type: ignore[arg-type]
    assert np.allclose(back["propensity"].fillna(-1), orig["propensity"].fillna(-1).to_numpy())
    assert (back["ts"].to_numpy() == orig["ts"].to_numpy()).all()


# ---------------------------------------------------------------- paths and errors

@pytest.mark.parametrize("out, users", [
    ("x/hill.parquet", "x/hill_users.parquet"), ("x/hill.csv.gz", "x/hill_users.parquet"),
    ("hill.csv", "hill_users.parquet"), ("a.b/log.PARQUET", "a.b/log_users.parquet"),
])
def test_users_path_for(out, users):
    assert D.users_path_for(out) == Path(users)


def test_convert_unknown_name(tmp_path):
    from omnisim.errors import OmnisimError

    with pytest.raises(D.DatasetError, match="unknown data set 'nope'.*hillstrom, obd_random, obd_bts") as err:
        D.convert("nope", tmp_path / "x.csv")
    assert isinstance(err.value, OmnisimError) and err.value.exit_code == 2  # the CLI's one-paragraph error


def test_convert_bad_extension_before_work(tmp_path):
    with pytest.raises(LogValidationError, match=r"unsupported file type '\.xlsx'"):
        D.convert("hillstrom", tmp_path / "x.xlsx")
    assert not list(tmp_path.iterdir())


def _hill_lines(n: int = 5) -> list[str]:
    with gzip.open(HILLSTROM_CSV, "rt") as fh:
        return [next(fh) for _ in range(n + 1)]


@pytest.mark.parametrize("mutate, message", [
    (lambda lines: lines[:1] + [lines[1].replace("Womens E-Mail", "Kids E-Mail")] + lines[2:],
     r"column 'segment': value 'Kids E-Mail' in data row\(s\) 1; expected one of Mens E-Mail"),
    (lambda lines: [lines[0].replace(",spend", ",spent")] + lines[1:],
     r"missing column\(s\) 'spend'"),
    (lambda lines: lines[:2] + [lines[2].rstrip("\n")[:-1] + "abc\n"] + lines[3:],
     r"column 'spend': value 'abc' in data row\(s\) 2; expected a number"),
    (lambda lines: lines[:3] + [lines[3].rstrip("\n")[:-1] + "12.5\n"] + lines[4:],
     r"column 'spend'.*data row\(s\) 3; expected spend > 0 exactly on rows with conversion == 1"),
    (lambda lines: lines[:1], r"no data rows"),
])
def test_hillstrom_garbled_file(tmp_path, mutate, message):
    path = tmp_path / "hill.csv"
    path.write_text("".join(mutate(_hill_lines())))
    with pytest.raises(D.DatasetError, match=message) as err:
        D.hillstrom_log(path)
    assert str(path) in str(err.value)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(D.DatasetError, match=r"nothere\.csv\.gz: file not found; expected the Hillstrom"):
        D.hillstrom_log(tmp_path / "nothere.csv.gz")
    bad = tmp_path / "broken.csv.gz"
    bad.write_bytes(b"\x1f\x8b\x08not really gzip")
    with pytest.raises(D.DatasetError, match=r"broken\.csv\.gz: cannot be read as CSV"):
        D.obd_log("bts", bad)
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(D.DatasetError, match="empty"):
        D.obd_log("random", empty)


def test_obd_garbled_values(tmp_path):
    raw = pd.read_csv(OBD_CSV["random"], nrows=5, index_col=0)
    raw.loc[2, "click"] = 7
    path = tmp_path / "all.csv"
    raw.to_csv(path)
    with pytest.raises(D.DatasetError, match=r"column 'click': value 7 in data row\(s\) 3; expected 0 or 1"):
        D.obd_log("random", path)
    raw.loc[2, "click"] = 0
    raw.loc[4, "propensity_score"] = 1.5
    raw.to_csv(path)
    with pytest.raises(D.DatasetError, match=r"propensity_score.*data row\(s\) 5; expected a probability"):
        D.obd_log("random", path)
    with pytest.raises(ValueError, match="unknown OBD log kind 'ts'"):
        D.obd_log("ts")  # type: ignore[arg-type]


def test_data_readme_checksums_match_files():
    """data/README.md's checksum table is true of the files in data/."""
    import hashlib
    import re

    text = (DATA / "README.md").read_text()
    rows = re.findall(r"^\| `([^`]+)` \| (\d+) \| `([0-9a-f]{64})` \|$", text, flags=re.M)
    assert len(rows) >= 5
    listed = {f for info in D.list_datasets() for f in info.files}
    assert listed <= {r[0] for r in rows}
    for name, size, digest in rows:
        data = (DATA / name).read_bytes()
        assert len(data) == int(size), name
        assert hashlib.sha256(data).hexdigest() == digest, name
