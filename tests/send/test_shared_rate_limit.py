"""Provider rate limits shared by every process on the sender's store (``rate_scope:
shared``, the default): GCRA reservations in SQLite / PostgreSQL, two provider sets (two
workers) on one store, and two real processes sending at once."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from omnisim.send.providers import ProviderConfigError, ProviderSet, SharedTokenBucket, TokenBucket
from omnisim.send.store import Store
from providers_support import FakeTime, message
from sender_support import store_url  # noqa: F401 - fixture


def _providers(path: Path, scope: str | None = None, rate: float = 2.0) -> dict:
    sms = {"name": "sms-sink", "type": "file", "path": str(path), "rate_per_s": rate, "burst": 1}
    if scope is not None:
        sms["rate_scope"] = scope
    return {"channels": {"sms": [sms]}}


def test_reservations_follow_the_token_bucket(store_url):
    """1 request/s with bursts of 2: the same waits as TokenBucket, per key."""
    store = Store.open(store_url)
    waits = [store.reserve_rate("p", 1.0, 1.0, 100.0) for _ in range(4)]
    assert waits == [0.0, 0.0, 1.0, 2.0]
    assert store.reserve_rate("other", 1.0, 1.0, 100.0) == 0.0  # its own bucket
    assert store.reserve_rate("p", 1.0, 1.0, 110.0) == 0.0  # refilled after idling
    assert store.reserve_rate("p", 1.0, 1.0, 110.0) == 0.0  # up to the burst, not beyond
    assert store.reserve_rate("p", 1.0, 1.0, 110.0) == 1.0
    ft_local, ft_shared = FakeTime(), FakeTime()  # each sleeps on its own fake clock
    local = TokenBucket(4, 3, ft_local.clock, ft_local.sleep)
    shared = SharedTokenBucket(store, "q", 4, 3, ft_shared.clock, ft_shared.sleep)
    for gap_s in (0.0, 0.0, 0.0, 0.0, 0.1, 2.0, 0.0, 0.0):
        ft_local.advance(gap_s), ft_shared.advance(gap_s)
        assert shared.acquire() == pytest.approx(local.acquire())
    store.close()


@pytest.mark.parametrize("scope, total_wait_s", [(None, 2.5), ("shared", 2.5), ("process", 1.0)])
def test_two_workers_share_one_providers_limit(store_url, tmp_path, scope, total_wait_s):
    """Two provider sets (two workers) on one store, 2 SMS/s each configured, 6 messages:
    shared, the provider sees 2/s in all (5 waits of 0.5 s); per process, twice that."""
    store = Store.open(store_url)
    ft = FakeTime()
    sets = [ProviderSet.from_dict(_providers(tmp_path / "sms.jsonl", scope), rates=store,
                                  clock=ft.clock, wall_clock=ft.clock, sleep=ft.sleep)
            for _ in range(2)]
    for i in range(6):
        assert sets[i % 2].deliver(message(f"m{i}", channel="sms")).status == "sent"
    assert sum(ft.sleeps) == pytest.approx(total_wait_s)
    assert len((tmp_path / "sms.jsonl").read_text().splitlines()) == 6
    store.close()


def test_without_a_store_the_limit_is_the_processes():
    ft = FakeTime()
    ps = ProviderSet.from_dict(_providers(Path("unused.jsonl")), clock=ft.clock, sleep=ft.sleep)
    assert isinstance(ps._chains["sms"][0].bucket, TokenBucket)


def test_rate_scope_is_checked():
    with pytest.raises(ProviderConfigError, match=r"channels\.sms\[0\]\.rate_scope: expected one of"):
        ProviderSet.from_dict(_providers(Path("x.jsonl"), "cluster"))


_SENDER = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, {support!r})
    from omnisim.send.providers import ProviderSet
    from omnisim.send.store import Store
    from providers_support import message
    store = Store.open({url!r})
    ps = ProviderSet.from_dict(json.loads({doc!r}), rates=store)
    stamps = []
    for i in range({n}):
        assert ps.deliver(message(f"{{sys.argv[1]}}-{{i}}", channel="sms")).status == "sent"
        stamps.append(time.time())
    print(json.dumps(stamps))
""")


def test_two_processes_stay_under_the_providers_rate(store_url, tmp_path):
    """Two real processes, 10 SMS each, at 20/s burst 1 (shared by default): the 20 sends
    span at least 19 intervals (0.95 s, less the first send's scheduling slack), where each
    process alone would need only 9 (the fake-clock test above shows the per-process case)."""
    Store.open(store_url).close()  # the tables, before both processes start
    doc = json.dumps(_providers(tmp_path / "sms.jsonl", rate=20.0))
    code = _SENDER.format(support=str(Path(__file__).parent), url=store_url, doc=doc, n=10)
    procs = [subprocess.Popen([sys.executable, "-c", code, name], stdout=subprocess.PIPE, text=True)
             for name in ("a", "b")]
    stamps = sorted(t for p in procs for t in json.loads(p.communicate(timeout=60)[0]))
    assert all(p.returncode == 0 for p in procs) and len(stamps) == 20
    assert stamps[-1] - stamps[0] >= 0.9
    assert len((tmp_path / "sms.jsonl").read_text().splitlines()) == 20
