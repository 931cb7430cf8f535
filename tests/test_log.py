"""The engagement log schema: one test per kind of bad input, plus round trips."""

import gzip

import numpy as np
import pandas as pd
import pytest

from omnisim.log import (
    CHANNELS, COLUMNS, EVENTS, LogValidationError, empty_log, read_log, summarize, validate,
    write_log,
)


def minimal(n: int = 3) -> pd.DataFrame:
    return pd.DataFrame({
        "ts": [f"2024-03-0{i + 1}T09:00:00Z" for i in range(n)],
        "user_id": [f"u{i}" for i in range(n)],
        "event": ["sent", "opened", "purchase"][:n],
        "channel": ["email", "email", "web"][:n],
    })


def problems_of(df: pd.DataFrame) -> str:
    with pytest.raises(LogValidationError) as exc:
        validate(df)
    return str(exc.value)


def test_four_column_export_is_valid_and_gains_optional_columns():
    out = validate(minimal())
    assert list(out.columns) == list(COLUMNS)
    assert str(out["ts"].dtype) == "datetime64[ns, UTC]" or "UTC" in str(out["ts"].dtype)
    assert out["action"].isna().all() and out["propensity"].isna().all()
    assert list(out["event"].cat.categories) == list(EVENTS)
    assert list(out["channel"].cat.categories) == list(CHANNELS)


def test_extra_columns_are_kept():
    df = minimal().assign(template="spring")
    assert validate(df)["template"].tolist() == ["spring"] * 3


def test_missing_column_is_named():
    msg = problems_of(minimal().drop(columns=["event", "channel"]))
    assert "missing required column(s) 'event', 'channel'" in msg


def test_bad_timestamp_names_row_and_value():
    df = minimal()
    df.loc[1, "ts"] = "2024-13-01"
    msg = problems_of(df)
    assert "row 2: ts '2024-13-01' is not a timestamp" in msg


def test_unknown_event_lists_rows_and_vocabulary():
    df = pd.concat([minimal()] * 4, ignore_index=True)
    df.loc[[3, 8, 10], "event"] = "opend"
    msg = problems_of(df)
    assert "column 'event': unknown value 'opend' in 3 rows (rows 4, 9, 11)" in msg
    assert "expected one of decided" in msg


def test_unknown_channel_is_named():
    df = minimal()
    df.loc[0, "channel"] = "fax"
    assert "column 'channel': unknown value 'fax'" in problems_of(df)


def test_negative_value_is_rejected():
    df = minimal().assign(value=[1.0, -5.0, 3.0])
    msg = problems_of(df)
    assert "negative value -5.0 in row 2" in msg


def test_non_numeric_value_is_named():
    df = minimal().assign(value=["1.0", "ten", ""])
    assert "row 2: value 'ten' is not a number" in problems_of(df)


def test_propensity_outside_unit_interval():
    df = minimal().assign(propensity=[0.5, 1.5, np.nan])
    assert "column 'propensity': 1.5 outside [0, 1] in row 2" in problems_of(df)


def test_duplicated_message_id_on_sent_rows():
    df = pd.DataFrame({
        "ts": ["2024-03-01T09:00Z"] * 3, "user_id": ["a", "b", "a"],
        "event": ["sent", "sent", "opened"], "channel": ["email"] * 3,
        "message_id": ["m1", "m1", "m1"],
    })
    msg = problems_of(df)
    assert "'m1' sent more than once (rows 1, 2)" in msg


def test_opened_rows_may_share_the_sent_message_id():
    df = pd.DataFrame({
        "ts": ["2024-03-01T09:00Z"] * 2, "user_id": ["a", "a"],
        "event": ["sent", "opened"], "channel": ["email"] * 2, "message_id": ["m1", "m1"],
    })
    assert len(validate(df)) == 2


def test_empty_user_id():
    df = minimal()
    df.loc[2, "user_id"] = " "
    assert "column 'user_id': empty in row 3" in problems_of(df)


def test_zero_rows_is_an_error():
    assert "no rows" in problems_of(minimal().iloc[:0])


def test_all_problems_reported_at_once():
    df = minimal()
    df.loc[0, "ts"] = "yesterday"
    df.loc[1, "event"] = "opend"
    err = pytest.raises(LogValidationError, validate, df).value
    assert len(err.problems) == 2


def test_empty_file(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("")
    err = pytest.raises(LogValidationError, read_log, p).value
    assert str(p) in str(err) and "empty" in str(err)


def test_header_only_file(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("ts,user_id,event,channel\n")
    assert "no rows" in str(pytest.raises(LogValidationError, read_log, p).value)


def test_wrong_file_type(tmp_path):
    p = tmp_path / "log.xlsx"
    p.write_bytes(b"PK\x03\x04")
    msg = str(pytest.raises(LogValidationError, read_log, p).value)
    assert "unsupported file type '.xlsx'" in msg and "expected .csv, .csv.gz or .parquet" in msg


def test_garbled_parquet_names_the_file(tmp_path):
    p = tmp_path / "log.parquet"
    p.write_text("this is not parquet")
    msg = str(pytest.raises(LogValidationError, read_log, p).value)
    assert str(p) in msg and "cannot be read as parquet" in msg


def test_missing_file(tmp_path):
    msg = str(pytest.raises(LogValidationError, read_log, tmp_path / "nope.csv").value)
    assert "file not found" in msg


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet"])
def test_round_trip(tmp_path, suffix):
    df = minimal().assign(propensity=[1 / 3, np.nan, np.nan], value=[np.nan, np.nan, 12.5],
                          action=["mens_email", None, None])
    path = write_log(df, tmp_path / f"log{suffix}")
    back = read_log(path)
    pd.testing.assert_frame_equal(back, validate(df), check_dtype=False)
    assert back["ts"].iloc[0] == pd.Timestamp("2024-03-01T09:00:00Z")


def test_csv_row_numbers_refer_to_data_rows(tmp_path):
    p = tmp_path / "log.csv.gz"
    with gzip.open(p, "wt") as f:
        f.write("ts,user_id,event,channel\n2024-01-01T00:00Z,a,sent,email\n2024-01-01T00:00Z,b,sent,pigeon\n")
    err = pytest.raises(LogValidationError, read_log, p).value
    assert "unknown value 'pigeon' in 1 row (row 2)" in str(err) and str(p) in str(err)


def test_timestamps_with_offsets_become_utc():
    df = minimal(1)
    df.loc[0, "ts"] = "2024-03-01T10:00:00+01:00"
    assert validate(df)["ts"].iloc[0] == pd.Timestamp("2024-03-01T09:00Z")


def test_empty_log_is_valid_schema():
    e = empty_log()
    assert list(e.columns) == list(COLUMNS) and len(e) == 0


def test_summarize():
    s = summarize(validate(minimal()))
    assert s.users == 3 and s.events == 3 and s.channels == ["email", "web"]
    assert s.by_event == {"sent": 1, "opened": 1, "purchase": 1}


def _as_categoricals(df: pd.DataFrame, events=EVENTS, channels=CHANNELS) -> pd.DataFrame:
    out = df.copy()
    out["event"] = pd.Categorical(out["event"], categories=list(events))
    out["channel"] = pd.Categorical(out["channel"], categories=list(channels))
    return out


def test_categorical_and_float_input_validates_as_strings_do():
    """Frames already in the normalised dtypes (as the fast engine builds them) take the
    cheap checks; the result is the one the string input gives."""
    df = minimal()
    df["message_id"] = ["m1", "m1", None]
    df["value"] = [0.5, np.nan, 12.0]
    df["propensity"] = [1.0, np.nan, np.nan]
    ref = validate(df)
    pd.testing.assert_frame_equal(validate(_as_categoricals(df)), ref)
    pd.testing.assert_frame_equal(validate(ref), ref)
    # categories in another order (or a subset) are normalised to the full vocabulary
    pd.testing.assert_frame_equal(
        validate(_as_categoricals(df, events=("purchase", "opened", "sent"),
                                  channels=("web", "email"))), ref)


def test_categorical_input_reports_the_same_problems():
    df = minimal()
    df.loc[1, "event"] = "teleported"
    assert problems_of(_as_categoricals(df, events=EVENTS + ("teleported",))) == problems_of(df)
    dup = pd.DataFrame({
        "ts": ["2024-03-01T09:00Z"] * 3, "user_id": ["a", "b", "a"],
        "event": ["sent", "sent", "opened"], "channel": ["email"] * 3,
        "message_id": ["m1", "m1", "m1"], "value": [-1.0, 0.0, 0.0],
    })
    assert problems_of(_as_categoricals(dup)) == problems_of(dup)
    missing = _as_categoricals(minimal())
    missing.loc[2, "channel"] = np.nan
    assert "column 'channel': empty in row 3" in problems_of(missing)
