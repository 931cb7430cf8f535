"""Policy artifacts: data only, verified on load, and the loaded policy decides identically."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from omnisim.cli import main
from omnisim.policies.artifact import (
    ArtifactError,
    export_policy,
    load_artifact,
    read_artifact,
)
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


# ------------------------------------------------------------------ learned kinds
import base64  # noqa: E402
import hashlib  # noqa: E402

from omnisim.datasets import hillstrom_log  # noqa: E402
from omnisim.experiment import run_one  # noqa: E402
from omnisim.policies.artifact import fingerprint, policy_kinds, train_policy  # noqa: E402
from omnisim.policies.ope_log import decision_rewards, log_contexts, train_uplift  # noqa: E402


@pytest.fixture(scope="module")
def hill_sample():
    log, users = hillstrom_log()
    keep = set(users["user_id"].astype(str)[:8000])
    return (log[log["user_id"].astype(str).isin(keep)].reset_index(drop=True),
            users[users["user_id"].astype(str).isin(keep)].reset_index(drop=True))


@pytest.fixture(scope="module")
def sim_log():
    r = run_one("default", "random_channel", 0, n_users=150, days=7)
    return r.log, r.users


@pytest.mark.parametrize("epsilon, learner, model", [(0.0, "t", "logistic"), (0.2, "x", "ridge")])
def test_uplift_round_trip_decides_like_the_original(tmp_path, hill_sample, epsilon, learner, model):
    log, users = hill_sample
    pol, metrics = train_uplift(log, users, reward="visit", epsilon=epsilon, learner=learner, model=model)
    path = export_policy(pol, tmp_path / "u.json", metrics=metrics, training_data=log)
    body = json.loads(path.read_text())
    assert body["kind"] == "uplift" and body["files"]["model"]["type"] == "skops"
    assert list(tmp_path.iterdir()) == [path]  # one self-contained file
    assert body["training_data"]["rows"] == len(log) and body["training_data"]["sha256"] == fingerprint(log)["sha256"]
    loaded = load_artifact(path)
    contexts = log_contexts(log, decision_rewards(log, "visit").iloc[:300], users)
    assert decisions(loaded, contexts) == decisions(pol, contexts)
    assert {d[0].action for d in decisions(pol, contexts)} >= {"none", "womens_email"}


LEARNED = ["sendtime", "bandit_ts", "bandit_linucb", "ratio", "budget"]


@pytest.mark.parametrize("kind", LEARNED)
def test_learned_kind_round_trip(tmp_path, sim_log, kind):
    assert kind in policy_kinds()
    log, users = sim_log
    pol, _ = train_policy(kind, log, users)
    path = export_policy(pol, tmp_path / f"{kind}.json", training_data=log)
    loaded = load_artifact(path)
    assert loaded.name == pol.name and read_artifact(path)["kind"] == kind
    contexts = sample_contexts(120, seed=5)
    assert decisions(loaded, contexts, seed=9) == decisions(pol, contexts, seed=9)


def edit(path, fn, *, resign_payloads=True):
    """Edit an artifact's JSON and recompute its checksums, as an attacker who edits it would."""
    from omnisim.policies.artifact import _canonical

    body = json.loads(path.read_text())
    body.pop("sha256")
    fn(body)
    for f in body.get("files", {}).values():
        if resign_payloads:
            data = base64.b64decode(f["base64"])
            f["sha256"], f["bytes"] = hashlib.sha256(data).hexdigest(), len(data)
    body["sha256"] = hashlib.sha256(_canonical(body)).hexdigest()
    path.write_text(json.dumps(body))


@pytest.fixture(scope="module")
def uplift_text(tmp_path_factory, hill_sample):
    log, users = hill_sample
    pol, _ = train_uplift(log, users, reward="visit")
    return export_policy(pol, tmp_path_factory.mktemp("u") / "u.json").read_text()


def put_model(data):
    return lambda body: body["files"]["model"].update(base64=base64.b64encode(data).decode())


def test_skops_payload_with_untrusted_types_is_refused(tmp_path, uplift_text):
    import os

    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    path = tmp_path / "u.json"
    path.write_text(uplift_text)
    edit(path, put_model(sio.dumps(FunctionTransformer(func=os.system))))
    read_artifact(path)  # the checksums are right: only the type check stands in the way
    with pytest.raises(ArtifactError, match="untrusted type\\(s\\) posix.system; .*refusing to load it"):
        load_artifact(path)


@pytest.mark.parametrize("damage, message", [
    (put_model(b"garbage"), "payload 'model' checksum mismatch"),
    (lambda body: body["files"]["model"].pop("base64"), "payload 'model' is not embedded"),
])
def test_damaged_payloads_are_refused(tmp_path, uplift_text, damage, message):
    path = tmp_path / "u.json"
    path.write_text(uplift_text)
    edit(path, damage, resign_payloads=False)
    with pytest.raises(ArtifactError, match=message):
        read_artifact(path)
    r = CliRunner().invoke(main, ["policy", "show", str(path)])
    assert r.exit_code == 2 and "error:" in r.output


def test_fingerprint_changes_with_the_data(sim_log):
    log, _ = sim_log
    a = fingerprint(log)
    assert a == fingerprint(log.copy()) and a["rows"] == len(log) and a["start"] < a["end"]
    changed = log.copy()
    changed.loc[changed.index[3], "value"] = 1.5
    assert fingerprint(changed)["sha256"] != a["sha256"]


def test_exporting_an_unknown_object_or_path_fails_clearly(tmp_path):
    from omnisim.policies.pressure import with_pressure

    with pytest.raises(ArtifactError, match="no artifact kind"):
        export_policy(with_pressure(get_policy("email_only")), tmp_path / "x.json")
    with pytest.raises(ArtifactError, match="must end in .json"):
        export_policy("email_only", tmp_path / "x.yaml")


def test_cli_train_show_and_evaluate(tmp_path, hill_sample):
    log, users = hill_sample
    log.to_csv(tmp_path / "h.csv", index=False)
    users.to_parquet(tmp_path / "h_users.parquet")
    out = tmp_path / "art" / "uplift.json"
    r = CliRunner().invoke(main, ["policy", "train", "--kind", "uplift", "--log", str(tmp_path / "h.csv"),
                                  "--param", "top_k_pct=30", "--param", "reward=visit", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "trained uplift policy uplift@1 on" in r.output and "auuc_womens_email" in r.output
    r = CliRunner().invoke(main, ["policy", "show", str(out)])
    assert r.exit_code == 0 and "verified" in r.output and "u" in r.output and "training data" in r.output
    r = CliRunner().invoke(main, ["ope", "--log", str(tmp_path / "h.csv"), "--policy", str(out),
                                  "--reward", "visit", "--estimators", "snips", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)[0]["policy"] == "uplift@1"
    r = CliRunner().invoke(main, ["policy", "train", "--kind", "nope", "--log", str(tmp_path / "h.csv"),
                                  "--out", str(out)])
    assert r.exit_code == 2 and "unknown policy kind 'nope'" in r.output
    r = CliRunner().invoke(main, ["policy", "train", "--kind", "uplift", "--log", str(tmp_path / "h.csv"),
                                  "--param", "colour=red", "--out", str(out)])
    assert r.exit_code == 2 and "bad parameter" in r.output
