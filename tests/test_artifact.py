"""Policy artifacts: data only, verified on load, and the loaded policy decides identically."""

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from click.testing import CliRunner

from omnisim.cli import main
from omnisim.policies.artifact import ArtifactError, export_policy, load_artifact, read_artifact
from omnisim.policies.check import sample_contexts
from omnisim.policies.registry import get_policy

NAMES = ["seed_journey+pressure", "blast+pressure", "email_only", "random_channel+holdout",
         "journeys+holdout+pressure", "welcome", "cart_abandon+pressure"]


def decisions(policy, contexts, seed=3):
    rng = np.random.default_rng(seed)
    return [policy.decide(ctx, rng) for ctx in contexts]


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_decides_like_the_original(tmp_path, name):
    path = export_policy(name, tmp_path / "p.json", metrics={"revenue": np.float64(12.5)})
    loaded = load_artifact(path)
    original = get_policy(name)
    assert loaded.name == original.name
    contexts = sample_contexts(150, seed=11)
    assert decisions(loaded, contexts) == decisions(original, contexts)
    assert getattr(loaded, "rules", None) == getattr(original, "rules", None)


def test_artifact_is_plain_json_and_self_contained(tmp_path):
    path = export_policy("seed_journey+pressure", tmp_path / "p.json")
    body = json.loads(path.read_text())
    assert body["format_version"] == 1 and body["kind"] == "rules" and len(body["sha256"]) == 64
    journey = body["parameters"]["journeys"][0]
    assert journey["name"] == "seed_journey" and journey["steps"][1]["channel"] == "sms"
    assert body["parameters"]["pressure"]["caps"]


def tamper(path, fn):
    body = json.loads(path.read_text())
    fn(body)
    path.write_text(json.dumps(body))


@pytest.mark.parametrize("change, message", [
    (lambda b: b["parameters"]["pressure"]["caps"][0].update(max=99), "checksum mismatch"),
    (lambda b: b.update(format_version=2), "unknown format_version 2"),
    (lambda b: b.update(kind="pickle"), "unknown policy kind 'pickle'"),
    (lambda b: b.update(format="something"), "not a policy artifact"),
])
def test_loading_refuses_untrustworthy_artifacts(tmp_path, change, message):
    path = export_policy("seed_journey+pressure", tmp_path / "p.json")
    tamper(path, change)
    with pytest.raises(ArtifactError, match=message):
        load_artifact(path)


def test_not_json(tmp_path):
    p = tmp_path / "p.json"
    p.write_bytes(b"\x80\x04\x95pickle")
    with pytest.raises(ArtifactError, match="not a policy artifact"):
        read_artifact(p)


def test_cli_export_show_and_failed_verification(tmp_path):
    out = tmp_path / "p.json"
    r = CliRunner().invoke(main, ["policy", "export", "seed_journey+pressure", "--out", str(out)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["policy", "show", str(out)])
    assert r.exit_code == 0 and "verified" in r.output and "seed_journey@1+pressure@1" in r.output
    tamper(out, lambda b: b.update(name="other"))
    r = CliRunner().invoke(main, ["policy", "show", str(out)])
    assert r.exit_code == 2 and "checksum mismatch" in r.output


def test_simulate_accepts_an_artifact(tmp_path):
    out = export_policy("seed_journey+pressure", tmp_path / "p.json")
    r = CliRunner().invoke(main, ["simulate", "--policy", str(out), "--users", "40", "--days", "3", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["policy"] == "seed_journey@1+pressure@1"
