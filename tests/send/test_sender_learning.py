"""Online learning in the sender: ``partial_fit`` every ``update_every_h`` of the sender's
clock, with the learned state in the store (restarts, several workers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sender_support import (  # noqa: F401 - fixtures
    T0,
    FakeDeliverer,
    add_user,
    at,
    ev,
    log_rows,
    store_url,
)

from omnisim.policies.artifact import export_policy
from omnisim.policies.bandits import LinUCBChannel
from omnisim.send.clock import ManualClock
from omnisim.send.service import DecisionService, LoadedPolicy
from omnisim.send.store import Store
from omnisim.send.worker import Worker

USERS = [f"u{i}" for i in range(8)]


@pytest.fixture(scope="module")
def bandit_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    policy = LinUCBChannel(update_every_h=6.0, reward_window_h=2.0, allow_none=False)
    return export_policy(policy, tmp_path_factory.mktemp("art") / "linucb.json")


def service(url: str, artifact: Path, clock: ManualClock) -> DecisionService:
    return DecisionService(Store.open(url), LoadedPolicy.from_file(artifact), clock,
                           late_tolerance=None)


def feed(svc: DecisionService, hour: float, tag: str) -> list[dict]:
    """A product view per user at ``hour``; every email sent is clicked 30 min later."""
    svc.ingest([ev(f"{tag}-{u}", u, "product_view", at(hour)) for u in USERS])
    sent = [r for r in log_rows(svc.store) if r["event"] == "sent" and r["ts"] == at(hour)]
    clicks = [ev(f"{tag}-c-{r['message_id']}", r["user_id"], "clicked", at(hour + 0.5),
                 message_id=r["message_id"]) for r in sent if r["channel"] == "email"]
    svc.ingest(clicks)
    return sent


def test_partial_fit_every_update_every_h_and_restart(store_url, bandit_artifact):
    clock = ManualClock(at(0))
    svc = service(store_url, bandit_artifact, clock)
    base = svc.policy
    assert svc.learned_version == 0
    for u in USERS:
        add_user(svc.store, u)
    sent = feed(svc, 0.0, "a")
    assert sent
    feed(svc, 3.0, "b")  # rows after the first sends' 2 h reward window
    clock.set(at(5.9))
    assert svc.learn() is None and svc.learned_version == 0  # not due before 6 h
    clock.set(at(6.5))
    result = svc.learn()
    assert result is not None and result.version == 1 and result.rows == len(log_rows(svc.store))
    assert svc.learned_version == 1 and svc.policy.sha256 != base.sha256
    learned = svc.policy.policy
    assert learned.n_updates_.sum() >= len(sent)  # the first round's sends were learned
    assert not np.allclose(learned.A_, base.policy.to_artifact()[1]["A"])
    assert svc.learn() is None  # nothing due again until 12 h
    # decisions now use the learned state: the log names its artifact
    svc.ingest([ev("c-u0", "u0", "product_view", at(7.0))])
    decided = [r for r in log_rows(svc.store, "u0") if r["event"] == "decided"]
    assert decided[-1]["artifact"] == svc.policy.version != base.version
    assert all(r["artifact"] == base.version for r in decided[:-1])
    svc.store.close()

    # a restarted service (same artifact, same store) loads the learned state
    svc2 = service(store_url, bandit_artifact, clock)
    assert svc2.learned_version == 1 and svc2.policy.sha256 == svc.policy.sha256
    np.testing.assert_allclose(svc2.policy.policy.A_, learned.A_)
    np.testing.assert_allclose(svc2.policy.policy.b_, learned.b_)
    svc2.ingest([ev("d-u1", "u1", "product_view", at(8.0))])
    assert [r for r in log_rows(svc2.store, "u1") if r["event"] == "decided"][-1]["artifact"] \
        == svc.policy.version


def test_one_learner_and_other_workers_follow(store_url, bandit_artifact):
    clock = ManualClock(at(0))
    a = service(store_url, bandit_artifact, clock)
    b = service(store_url, bandit_artifact, clock)
    for u in USERS:
        add_user(a.store, u)
    feed(a, 0.0, "a")
    feed(b, 3.0, "b")
    clock.set(at(6.5))
    assert b.learn() is None  # the first process holds the learning lease
    wb = Worker(b, FakeDeliverer())
    wb.step()
    assert b.learned_version == 0
    Worker(a, FakeDeliverer()).step()  # the lease holder learns
    assert a.learned_version == 1
    wb.step()  # the other worker sees the new version and loads it
    assert b.learned_version == 1 and b.policy.sha256 == a.policy.sha256
    np.testing.assert_allclose(b.policy.policy.A_, a.policy.policy.A_)
    # a second update feeds only the rows since the first: its cursor moved
    n_before = a.policy.policy.n_updates_.sum()
    rows_before = len(log_rows(a.store))
    feed(a, 7.0, "c")
    feed(a, 10.0, "d")
    clock.set(at(12.5))
    result = a.learn()
    assert result.version == 2 and result.rows == len(log_rows(a.store)) - rows_before > 0
    assert a.policy.policy.n_updates_.sum() > n_before
    assert int(a.store.setting("learn_cursor")) == a.store.one("SELECT MAX(id) FROM log")[0]


def test_a_policy_swap_starts_learning_over(store_url, bandit_artifact, tmp_path):
    clock = ManualClock(at(0))
    svc = service(store_url, bandit_artifact, clock)
    for u in USERS:
        add_user(svc.store, u)
    feed(svc, 0.0, "a")
    feed(svc, 3.0, "b")
    clock.set(at(6.5))
    assert svc.learn().version == 1
    other = export_policy(LinUCBChannel(update_every_h=12.0, reward_window_h=2.0, version=2),
                          tmp_path / "v2.json")
    svc.swap_policy(LoadedPolicy.from_file(other))
    assert svc.learned_version == 0 and svc.policy.name.endswith("@2")
    svc.learn()  # the new artifact's cadence starts at the swap
    assert svc.store.setting("learn_version") == "0"
    clock.set(at(12.0))
    assert svc.learn() is None  # 12 h cadence from 6.5 h


def _run_with_takeover(url: str, artifact: Path, takeover: bool, rebuild: bool = True) -> np.ndarray:
    """Learn at 6.5 h and 12.5 h (sends of 11 h still in their reward window at the second
    update), then at 18.5 h — by another process when ``takeover`` (the first one's lease
    has run out). Returns the A matrices of version 3."""
    clock = ManualClock(at(0))
    a = service(url, artifact, clock)
    a.learner.lease_s = 0.0  # its lease expires at once: anyone may take over when due
    for u in USERS:
        add_user(a.store, u)
    for hour, tag in ((0.0, "a"), (3.0, "b"), (7.0, "c"), (11.0, "d")):
        if hour == 7.0:
            clock.set(at(6.5))
            assert a.learn().version == 1
        feed(a, hour, tag)
    clock.set(at(12.5))
    assert a.learn().version == 2  # the 11 h sends are in a's replay buffer, not learned yet
    feed(a, 14.0, "e")
    clock.set(at(18.5))
    learner = a
    if takeover:  # a new process: it takes over learning when it starts (the update is due)
        from omnisim.policies.bandits import _LinearChannelBandit

        saved = _LinearChannelBandit.rebuild_working_state
        if not rebuild:  # as a policy without the method
            del _LinearChannelBandit.rebuild_working_state
        try:
            learner = service(url, artifact, clock)
            if learner.learned_version == 2:
                learner.learn()
        finally:
            _LinearChannelBandit.rebuild_working_state = saved
        assert a.learned_version == 2  # the old owner did not learn again
    else:
        learner.learn()
    assert learner.learned_version == 3
    return learner.policy.policy.A_.copy()


def test_a_takeover_learns_the_sends_in_flight_like_the_owner(tmp_path, bandit_artifact):
    """The process taking over learning rebuilds the owner's replay buffer from the log, so
    version 3 is the same as without the takeover; with empty buffers it would miss the
    sends whose reward window was open at the handover."""
    own = _run_with_takeover(f"sqlite:///{tmp_path / 'own.db'}", bandit_artifact, takeover=False)
    took = _run_with_takeover(f"sqlite:///{tmp_path / 'took.db'}", bandit_artifact, takeover=True)
    np.testing.assert_allclose(took, own)
    cold = _run_with_takeover(f"sqlite:///{tmp_path / 'cold.db'}", bandit_artifact, takeover=True,
                              rebuild=False)
    assert not np.allclose(cold, own)


def test_wrappers_forward_rebuilding_the_working_state():
    from omnisim.policies.pressure import with_pressure
    from omnisim.policies.registry import get_policy

    bandit = LinUCBChannel(update_every_h=6.0, reward_window_h=2.0)
    wrapped = with_pressure(bandit)
    assert hasattr(wrapped, "rebuild_working_state")
    assert wrapped.working_state_lookback_h == bandit.working_state_lookback_h == 35 * 24 + 2.0
    assert wrapped.rebuild_working_state(pd.DataFrame()) is wrapped
    assert bandit._tracker is not None  # the inner policy got a fresh tracker
    assert not hasattr(get_policy("seed_journey+pressure"), "rebuild_working_state")
