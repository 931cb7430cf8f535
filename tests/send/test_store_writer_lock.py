"""SQLite transactions of one process queue on one lock per database file (the busy
handler's polling let newcomers overtake long waiters: BENCHMARKS.md, "Production sender")."""

from __future__ import annotations

import threading

from omnisim.send.store import Store, _sqlite_writer


def _held_elsewhere(lock) -> bool:
    """Whether another thread holds ``lock`` now."""
    out: list[bool] = []

    def probe() -> None:
        got = lock.acquire(blocking=False)
        if got:
            lock.release()
        out.append(got)

    t = threading.Thread(target=probe)
    t.start()
    t.join()
    return not out[0]


def test_a_transaction_holds_its_files_lock_and_releases_it(tmp_path):
    a = Store.open(f"sqlite:///{tmp_path / 's.db'}")
    b = Store.open(f"sqlite:///{tmp_path / '.' / 's.db'}")  # another Store, the same file
    other = Store.open(f"sqlite:///{tmp_path / 'other.db'}")
    lock = _sqlite_writer(str(tmp_path / "s.db"))
    assert not _held_elsewhere(lock)
    with a.transaction():
        assert _held_elsewhere(lock)  # b's transactions in other threads wait here
        assert not _held_elsewhere(_sqlite_writer(str(tmp_path / "other.db")))
        with other.transaction():  # another file: its own lock
            pass
    assert not _held_elsewhere(lock)
    try:
        with b.transaction():
            raise RuntimeError("rolled back")
    except RuntimeError:
        pass
    assert not _held_elsewhere(lock)  # released on rollback too
    for s in (a, b, other):
        s.close()
