"""Benchmark the SimPy reference engine: simulated user-days per second.

    python benchmarks/bench_engine_simpy.py [--users 10000] [--days 30] [--policy seed_journey+pressure]
    python benchmarks/bench_engine_simpy.py --policy seed_journey+pressure,blast,email_only

Prints one JSON line per policy: engine, scenario, policy, users, days, seed, wall_s,
user_days_per_s, events, events_per_s, and with several policies their speed relative to the
first, measured side by side in one process (the machine is shared: compare ratios).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

from omnisim.model.engine_simpy import simulate
from omnisim.model.scenario import load_scenario
from omnisim.policies.base import Decision


class EmailOnProductView:
    """Fallback policy: one email on every product view to users who can get one."""

    name = "email_on_product_view@bench"

    def decide(self, ctx, rng):
        if ctx.trigger.kind != "product_view" or not ctx.can_message("email"):
            return []
        return [Decision("email", "email", 1.0, self.name, campaign="bench")]


def _policy(name: str):
    try:
        from omnisim.policies.registry import get_policy
    except ImportError as exc:
        print(f"note: omnisim.policies.registry not importable ({exc}); "
              "using the built-in fallback policy email_on_product_view", file=sys.stderr)
        return EmailOnProductView()
    return get_policy(name)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scenario", default="default")
    ap.add_argument("--policy", default="seed_journey+pressure",
                    help="a policy name for omnisim.policies.registry.get_policy")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args(argv)
    rows = [run(args, name.strip()) for name in args.policy.split(",") if name.strip()]
    for row in rows:
        row["speed_vs_first"] = round(row["user_days_per_s"] / rows[0]["user_days_per_s"], 3)
        print(json.dumps(row))
    return rows


def run(args: argparse.Namespace, policy_name: str) -> dict:
    policy = _policy(policy_name)
    sc = load_scenario(args.scenario)
    t0 = time.perf_counter()
    res = simulate(sc, policy, n_users=args.users, days=args.days, seed=args.seed,
                   progress=args.progress)
    wall = time.perf_counter() - t0
    out = {
        "benchmark": "engine_simpy", "scenario": args.scenario,
        "policy": getattr(policy, "name", policy_name), "users": args.users, "days": args.days,
        "seed": args.seed, "wall_s": round(wall, 3),
        "user_days_per_s": round(args.users * args.days / wall, 1),
        "events": len(res.log), "events_per_s": round(len(res.log) / wall, 1),
        "python": platform.python_version(),
    }
    return out


if __name__ == "__main__":
    main()
