"""Where the fast engine's time goes with a policy: its policy calls versus everything else.

    python benchmarks/engine_time_split.py                      # seed_journey+pressure, 10k x 30 d
    python benchmarks/engine_time_split.py --policy journeys+pressure --users 5000 --repeats 3

Runs the SimPy reference engine and the vectorised engine alternately in this process (the
machine is shared: only side-by-side numbers compare). In the fast run, the wall time spent
inside the engine's policy calls is measured: ``_Chunk.decide`` (contexts, ``decide_batch``,
logging the decisions, admitting what is due now, sending) and the pressure-rule wake-ups
(``_Chunk.admit`` outside a decision). The rest is the world model, the queue and the log.

The *ceiling* column is simpy wall / fast rest: the fast/simpy ratio the engine would reach
if every policy call cost nothing, with the same world and the same traffic — an upper bound
on what any speed-up of the policy path alone can give.
"""

from __future__ import annotations

import argparse
import os
import time

from omnisim.model import engine_fast, engine_simpy
from omnisim.model.scenario import load_scenario
from omnisim.policies.registry import get_policy


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default="seed_journey+pressure")
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    sc = load_scenario("default")
    kw = dict(n_users=args.users, days=args.days, seed=0, progress=False)
    print(f"{args.policy}, {args.users:,} users x {args.days:g} d, load {os.getloadavg()[0]:.2f}")
    print("| run | simpy wall s | fast wall s | fast: policy calls s | fast: rest s | fast / simpy | ceiling (simpy / rest) |")
    print("|---|---|---|---|---|---|---|")
    for rep in range(1, args.repeats + 1):
        t0 = time.perf_counter()
        engine_simpy.simulate(sc, get_policy(args.policy), **kw)
        simpy_s = time.perf_counter() - t0
        with _PolicyClock() as clock:
            t0 = time.perf_counter()
            engine_fast.simulate(sc, get_policy(args.policy), **kw)
            fast_s = time.perf_counter() - t0
        rest = fast_s - clock.seconds
        print(f"| {rep} | {simpy_s:.1f} | {fast_s:.2f} | {clock.seconds:.2f} ({clock.seconds / fast_s:.0%}) "
              f"| {rest:.2f} | {simpy_s / fast_s:.1f}× | {simpy_s / rest:.1f}× |", flush=True)
    print(f"load at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
