"""The JSON-lines file sink: format, paths relative to the YAML, idempotency across
processes, restarts and a line cut short by a crash."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

from omnisim.send.providers import FileSink, MemorySentKeys, ProviderSet
from providers_support import message


def test_file_sink_writes_json_lines_relative_to_the_yaml(tmp_path):
    (tmp_path / "p.yaml").write_text("channels:\n  push:\n    - {type: file, path: out/dry.jsonl, fsync: true}\n")
    keys = MemorySentKeys()
    ps = ProviderSet.from_yaml(tmp_path / "p.yaml", sent_keys=keys)
    for n in (1, 2, 1):  # the third is a duplicate key
        res = ps.deliver(message(n, channel="push", body="Grüße\n{\"x\"}", meta={"n": n}))
        assert res.status == "sent"
    lines = (tmp_path / "out" / "dry.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and len(keys) == 2
    first = json.loads(lines[0])
    assert first["provider"] == "push-file-0" and first["message_id"] == "m1"
    assert first["body"] == "Grüße\n{\"x\"}" and first["meta"] == {"n": 1}
    assert first["ts"].endswith("+00:00")


def test_file_sink_write_error_fails_over(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    sink = FileSink("f", blocker / "x.jsonl")
    attempt = sink.send(message())
    assert attempt.outcome == "failover" and "cannot write" in attempt.error


def _write_keys(path: str, keys: range) -> None:
    sink = FileSink("proc", Path(path))
    for k in keys:
        assert sink.send(message(k)).outcome == "sent"


def test_file_sink_is_idempotent_across_processes_and_restarts(tmp_path):
    out = tmp_path / "sink.jsonl"
    ctx = multiprocessing.get_context("fork")  # children inherit the imports: fast
    procs = [ctx.Process(target=_write_keys, args=(str(out), range(40))) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    keys = [json.loads(x)["idempotency_key"] for x in out.read_text().splitlines()]
    assert sorted(keys) == sorted(f"k{k}" for k in range(40))
    # a restarted sender (fresh memory, key never marked in the store) does not write again
    again = ProviderSet.from_dict({"channels": {"sms": [{"type": "file", "path": str(out)}]}})
    res = again.deliver(message(7))
    assert res.status == "sent" and "not written again" in res.response
    assert len(out.read_text().splitlines()) == 40


def test_file_sink_survives_a_line_cut_short(tmp_path):
    out = tmp_path / "sink.jsonl"
    out.write_text('{"idempotency_key": "k1"}\n{"idempotency_key": "k2", "bo')  # crash mid-write
    sink = FileSink("f", out)
    assert "not written again" in sink.send(message(1)).response
    assert sink.send(message(2)).response.startswith("written")  # the cut line did not count
    lines = out.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[2])["idempotency_key"] == "k2"
    assert "not written again" in FileSink("g", out).send(message(2)).response
