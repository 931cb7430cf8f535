"""`omnisim send …`: key creation, export-log, and a bad artifact stopping start-up."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sender_support import add_user, artifact_path, at, ev, make_service  # noqa: F401

from omnisim.cli import main
from omnisim.log import read_log
from omnisim.send.store import Store


def test_key_create_prints_a_key_once_and_stores_its_hash(tmp_path):
    db = f"sqlite:///{tmp_path / 'k.db'}"
    r = CliRunner().invoke(main, ["send", "key", "create", "--db", db, "--label", "ci"])
    assert r.exit_code == 0, r.output
    key = r.output.strip()
    store = Store.open(db)
    assert key.startswith("osk_") and store.api_key_valid(key)
    assert not store.api_key_valid(key + "x")
    assert key not in json.dumps(store.query("SELECT * FROM api_keys"))


def test_export_log_writes_a_valid_engagement_log(tmp_path, artifact_path):
    db = f"sqlite:///{tmp_path / 'e.db'}"
    svc = make_service(db, artifact_path)
    add_user(svc.store, "u1")
    svc.ingest([ev("k1", "u1", "product_view", at(0)), ev("k2", "u1", "opened", at(1), message_id="u1-m1")])
    out = tmp_path / "log.csv"
    r = CliRunner().invoke(main, ["send", "export-log", "--db", db, "--out", str(out)])
    assert r.exit_code == 0, r.output
    log = read_log(out)
    assert list(log["event"].astype(str)) == ["product_view", "decided", "sent", "opened"]
    sent = log[log["event"] == "sent"].iloc[0]
    assert sent["message_id"] == "u1-m1" and sent["campaign"] == "seed_journey"
    opened = log[log["event"] == "opened"].iloc[0]
    assert opened["campaign"] == "seed_journey" and opened["channel"] == "email"
    assert log.loc[log["event"] == "decided", "propensity"].notna().all()
    assert {"trigger_id", "artifact", "response"} <= set(log.columns)


def test_export_of_an_empty_log_is_a_clear_error(tmp_path):
    db = f"sqlite:///{tmp_path / 'x.db'}"
    Store.open(db).close()
    r = CliRunner().invoke(main, ["send", "export-log", "--db", db, "--out", str(tmp_path / "l.csv")])
    assert r.exit_code == 2 and "log is empty" in r.output


def test_bad_artifact_stops_start_up(tmp_path, artifact_path):
    bad = tmp_path / "bad.json"
    doc = json.loads(artifact_path.read_text())
    doc["name"] = "tampered"
    bad.write_text(json.dumps(doc))
    for path, words in [(bad, "checksum mismatch"), (tmp_path / "none.json", "no such artifact file")]:
        r = CliRunner().invoke(main, ["send", "serve", "--policy", str(path),
                                      "--db", f"sqlite:///{tmp_path / 's.db'}"])
        assert r.exit_code == 2, r.output
        assert "cannot start with policy artifact" in r.output and words in r.output


def test_bad_db_url_is_a_clear_error(tmp_path):
    r = CliRunner().invoke(main, ["send", "key", "create", "--db", "mysql://x"])
    assert r.exit_code == 2 and "expected sqlite:///PATH or postgresql://" in r.output


def test_bad_fallback_option_is_a_clear_error(tmp_path, artifact_path):
    r = CliRunner().invoke(main, ["send", "worker", "--drain", "--policy", str(artifact_path),
                                  "--db", f"sqlite:///{tmp_path / 'f.db'}", "--fallback", "push=fax"])
    assert r.exit_code == 2, r.output
    assert "--fallback push=fax: unknown channel 'fax'" in r.output


def test_worker_drain_accepts_fallback(tmp_path, artifact_path):
    db = f"sqlite:///{tmp_path / 'g.db'}"
    r = CliRunner().invoke(main, ["send", "worker", "--drain", "--policy", str(artifact_path),
                                  "--db", db, "--fallback", "push=email,sms"])
    assert r.exit_code == 0, r.output


def test_export_of_a_missing_store_is_a_clear_error_and_creates_nothing(tmp_path):
    missing = tmp_path / "missing.db"
    r = CliRunner().invoke(main, ["send", "export-log", "--db", f"sqlite:///{missing}",
                                  "--out", str(tmp_path / "l.csv")])
    assert r.exit_code == 2, r.output  # used to be a traceback (no such table: log)
    assert f"no such file {missing}" in r.output and not missing.exists()


@pytest.mark.parametrize("value", ["abc", "-1", "nan"])
def test_bad_late_tolerance_is_a_clear_error(tmp_path, artifact_path, value):
    r = CliRunner().invoke(main, ["send", "worker", "--drain", "--policy", str(artifact_path),
                                  "--db", f"sqlite:///{tmp_path / 'f.db'}", "--late-tolerance-h", value])
    assert r.exit_code == 2, r.output  # used to be a ValueError traceback, or accepted (-1)
    assert f"--late-tolerance-h {value!r}: expected a number of hours >= 0, or 'inf'" in r.output


@pytest.mark.parametrize("value", ["inf", "Infinity", "0.5"])
def test_late_tolerance_accepts_hours_and_inf(tmp_path, artifact_path, value):
    r = CliRunner().invoke(main, ["send", "worker", "--drain", "--policy", str(artifact_path),
                                  "--db", f"sqlite:///{tmp_path / 'f.db'}", "--late-tolerance-h", value])
    assert r.exit_code == 0, r.output
