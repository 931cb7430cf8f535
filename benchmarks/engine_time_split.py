"""Where the fast engine's round-based path spends its time: policy calls versus the rest.

The round-based path (``compiled=False``) is what runs every policy without a compiled form
(learned policies, holdouts, your own classes); the built-in policies run on the compiled
path by default (docs/engines.md), which this script does not measure — it forces the
round-based path, to show what a Python policy costs there.

    python benchmarks/engine_time_split.py                      # seed_journey+pressure, 10k x 30 d
    python benchmarks/engine_time_split.py --policy journeys+pressure --users 5000 --repeats 3
    python benchmarks/engine_time_split.py --fast-only --users 50000   # one full chunk

Runs the SimPy reference engine and the vectorised engine alternately in this process (the
machine is shared: only side-by-side numbers compare). In the fast run, the wall time spent
inside the engine's policy calls is measured: ``_Chunk.decide`` (contexts, ``decide_batch``,
logging the decisions, admitting what is due now, sending) and the pressure-rule wake-ups
(``_Chunk.admit`` outside a decision). The rest is the world model, the queue and the log.

The *ceiling* column is simpy wall / fast rest: the fast/simpy ratio the engine would reach
if every policy call cost nothing, with the same world and the same traffic — an upper bound
on what any speed-up of the policy path alone can give.

``--fast-only`` skips the SimPy engine and instead runs the fast engine with the policy and
with no policy at all (the world alone), alternately, and splits the policy run's time by
the engine methods it was spent in (exclusive of their callees). The *free-policy bound*
column projects the policy run's rest — everything but the policy calls — to 1,000,000
users x 90 days on two worker processes, assuming cost proportional to user-days (as the
scaling table in BENCHMARKS.md shows beyond 100k users): the wall time such a run would
still take if every policy call cost nothing.
"""

from __future__ import annotations

import argparse
import collections
import os
import time

from omnisim.model import engine_fast, engine_simpy
from omnisim.model.scenario import load_scenario
from omnisim.policies.registry import get_policy

from bench_engines import NoPolicy  # this folder: answers no trigger, the world alone

#: the fast engine's methods the ``--fast-only`` breakdown times (exclusive of callees)
PARTS = {
    "policy calls": ("decide", "admit"),
    "rounds and queue": ("_step", "_round"),
    "log rows and history": ("_log_many",),
    "log frame": ("frame",),
    "deliveries, reads, clicks": ("on_deliver", "on_seen", "on_click", "after_effects"),
    "visits and sessions": ("on_visit_candidate", "session", "_draw_next_visit", "on_abandon"),
    "follow-ups": ("on_follow_up",),
}


class _PolicyClock:
    """Wall seconds spent in ``_Chunk.decide`` / ``_Chunk.admit`` (outermost calls only)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._depth = 0
        self._saved: dict[str, object] = {}

    def __enter__(self) -> "_PolicyClock":
        for name in ("decide", "admit"):
            orig = getattr(engine_fast._Chunk, name)
            self._saved[name] = orig
            setattr(engine_fast._Chunk, name, self._timed(orig))
        return self

    def __exit__(self, *exc: object) -> None:
        for name, orig in self._saved.items():
            setattr(engine_fast._Chunk, name, orig)

    def _timed(self, fn):
        clock = self

        def timed(chunk, *args, **kwargs):
            if clock._depth:
                return fn(chunk, *args, **kwargs)
            clock._depth += 1
            t0 = time.perf_counter()
            try:
                return fn(chunk, *args, **kwargs)
            finally:
                clock.seconds += time.perf_counter() - t0
                clock._depth -= 1

        return timed


class _ExclusiveClock:
    """Wall seconds spent in each of :data:`PARTS`' ``_Chunk`` methods, callees excluded."""

    def __init__(self) -> None:
        self.seconds: collections.Counter[str] = collections.Counter()
        self._stack: list[float] = []
        self._saved: dict[str, object] = {}

    def __enter__(self) -> "_ExclusiveClock":
        for part, names in PARTS.items():
            for name in names:
                orig = getattr(engine_fast._Chunk, name)
                self._saved[name] = orig
                setattr(engine_fast._Chunk, name, self._timed(part, orig))
        return self

    def __exit__(self, *exc: object) -> None:
        for name, orig in self._saved.items():
            setattr(engine_fast._Chunk, name, orig)

    def _timed(self, part: str, fn):
        stack, seconds = self._stack, self.seconds

        def timed(chunk, *args, **kwargs):
            t0 = time.perf_counter()
            stack.append(0.0)
            try:
                return fn(chunk, *args, **kwargs)
            finally:
                dt = time.perf_counter() - t0
                seconds[part] += dt - stack.pop()
                if stack:
                    stack[-1] += dt

        return timed


def fast_only(args: argparse.Namespace, sc, kw: dict) -> None:
    """The ``--fast-only`` table and the breakdown of the last run (module docstring)."""
    scale = 1_000_000 * 90.0 / (args.users * args.days) / 2  # two worker processes
    print("| run | policy run wall s | policy calls s | rest s | world alone wall s "
          "| rest / world alone | events (policy / world) | free-policy bound, 1M x 90 d on 2 workers |")
    print("|---|---|---|---|---|---|---|---|")
    for rep in range(1, args.repeats + 1):
        t0 = time.perf_counter()
        world = engine_fast.simulate(sc, NoPolicy(), **kw)
        world_s = time.perf_counter() - t0
        with _ExclusiveClock() as clock:
            t0 = time.perf_counter()
            res = engine_fast.simulate(sc, get_policy(args.policy), **kw)
            wall = time.perf_counter() - t0
        calls = clock.seconds["policy calls"]
        rest = wall - calls
        print(f"| {rep} | {wall:.1f} | {calls:.1f} ({calls / wall:.0%}) | {rest:.1f} | {world_s:.1f} "
              f"| {rest / world_s:.1f}× | {len(res.log):,} / {len(world.log):,} "
              f"| {rest * scale:,.0f} s |", flush=True)
    print("\nlast policy run, by part (exclusive wall s):\n")
    print("| part | s | share |")
    print("|---|---|---|")
    timed = sum(clock.seconds.values())
    for part, sec in clock.seconds.most_common():
        print(f"| {part} | {sec:.2f} | {sec / wall:.0%} |")
    print(f"| other (set-up, chunk loop) | {wall - timed:.2f} | {(wall - timed) / wall:.0%} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default="seed_journey+pressure")
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--fast-only", action="store_true",
                    help="no SimPy run: the fast engine with the policy versus the world alone")
    args = ap.parse_args(argv)
    sc = load_scenario("default")
    kw = dict(n_users=args.users, days=args.days, seed=0, progress=False)
    fast_kw = dict(kw, compiled=False)  # the round-based path (module docstring)
    print(f"{args.policy}, {args.users:,} users x {args.days:g} d, load {os.getloadavg()[0]:.2f}")
    if args.fast_only:
        fast_only(args, sc, fast_kw)
        print(f"load at end {os.getloadavg()[0]:.2f}")
        return 0
    print("| run | simpy wall s | fast wall s | fast: policy calls s | fast: rest s | fast / simpy | ceiling (simpy / rest) |")
    print("|---|---|---|---|---|---|---|")
    for rep in range(1, args.repeats + 1):
        t0 = time.perf_counter()
        engine_simpy.simulate(sc, get_policy(args.policy), **kw)
        simpy_s = time.perf_counter() - t0
        with _PolicyClock() as clock:
            t0 = time.perf_counter()
            engine_fast.simulate(sc, get_policy(args.policy), **fast_kw)
            fast_s = time.perf_counter() - t0
        rest = fast_s - clock.seconds
        print(f"| {rep} | {simpy_s:.1f} | {fast_s:.2f} | {clock.seconds:.2f} ({clock.seconds / fast_s:.0%}) "
              f"| {rest:.2f} | {simpy_s / fast_s:.1f}× | {simpy_s / rest:.1f}× |", flush=True)
    print(f"load at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
