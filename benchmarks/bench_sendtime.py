"""Send-time optimisation vs a fixed local send hour, with CIs over seeds (docs/learning.md).

    python benchmarks/bench_sendtime.py                                  # default + timing_weight 0.9
    python benchmarks/bench_sendtime.py --seeds 100 --users 10000 --jobs 2 --json st.json

Design (the numbers of docs/learning.md, "Send-time optimisation vs a fixed 10:00 local send"):

1. **Fit.** ``SendTimePolicy(inner, fixed, explore=1.0)`` (every message at a uniformly random
   local hour) runs on ``--fit-users`` × ``--fit-days`` with seed ``--fit-seed``; a
   ``SendTimeOptimizer`` is fitted on that log. Its user ids are prefixed with ``fit-`` first:
   simulated ids restart at ``u000001`` in every run, so without the prefix evaluation user
   ``u000123`` would inherit the per-user counts *and the segment* of an unrelated fit user.
   With it, evaluation users get their own segment's estimate (they have no history of
   their own in the fit log).
2. **Compare.** ``explore=0`` (each user's best hour) against the same wrapper fitted on
   nothing (every user at ``--hour``, the optimizer's fallback), on seeds ``--seed-base`` …
   ``--seed-base + --seeds - 1``, both arms on every seed (common random numbers: the same
   population; the world's draws diverge at the first send that differs).
3. **Score.** :func:`omnisim.metrics.log_metrics` per run; per seed the paired difference
   learned − fixed; mean and 95 % Student-t interval over seeds. Counts are per 1,000 users.

``conversions`` is the repo's metric: purchases attributed (last touch) to the latest message
*sent* within 72 h (email). ``click_conversions``: to the latest message *clicked* within 72 h.
Both arms run the fast engine by default (``--engine simpy`` for the reference engine).

Prints a Markdown table (and ``--md FILE`` writes it); ``--json FILE`` keeps every run's
metrics, and ``--from-json A.json B.json`` re-derives the table from saved runs without
simulating (runs of several files are pooled, e.g. seeds 0-99 and 100-199: the same rows as
one ``--seeds 200`` run, since every run is deterministic given its seed).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

#: Scored per run (per-1,000-user counts are derived from the counts).
METRICS = ("messages", "opens", "clicks", "open_rate", "click_rate", "conversions",
           "click_conversions", "purchases", "revenue_minus_cost")
COUNTS = ("messages", "opens", "clicks", "conversions", "click_conversions", "purchases",
          "revenue_minus_cost")


def scenario(timing_weight: str):
    """The default scenario, or it with the email ``timing_weight`` replaced."""
    from omnisim.model.scenario import load_scenario

    sc = load_scenario("default")
    if timing_weight != "default":
        sc = sc.replace(channels={"email": {"timing_weight": float(timing_weight)}})
    return sc


def fixed_hour(hour: float):
    """An optimizer fitted on nothing: every user's best hour is ``hour`` (the fallback)."""
    from omnisim.log import empty_log
    from omnisim.policies import SendTimeOptimizer

    return SendTimeOptimizer(default_hour=hour).fit(empty_log(), pd.DataFrame({"user_id": [], "timezone": []}))


@lru_cache(maxsize=None)
def policies(timing_weight: str, inner: str, hour: float, fit_users: int, fit_days: float, fit_seed: int,
             engine: str):
    """``{"learned": ..., "fixed": ...}`` (cached per process: workers fit once per scenario)."""
    from omnisim.experiment import get_engine
    from omnisim.policies import SendTimeOptimizer, SendTimePolicy

    explore = get_engine(engine)(scenario(timing_weight), SendTimePolicy(inner, fixed_hour(hour), explore=1.0),
                                 n_users=fit_users, days=fit_days, seed=fit_seed, progress=False)
    log = explore.log.assign(user_id="fit-" + explore.log["user_id"].astype(str))
    users = explore.users.assign(user_id="fit-" + explore.users["user_id"].astype(str))
    model = SendTimeOptimizer(default_hour=hour).fit(log, users)
    return {"learned": SendTimePolicy(inner, model, explore=0.0),
            "fixed": SendTimePolicy(inner, fixed_hour(hour), explore=0.0)}


def run(job: tuple) -> dict:
    """One (scenario, seed, arm) run → a row of metrics."""
    from omnisim.experiment import get_engine
    from omnisim.metrics import log_metrics

    timing_weight, seed, arm, a = job
    pol = policies(timing_weight, a["inner"], a["hour"], a["fit_users"], a["fit_days"], a["fit_seed"],
                   a["engine"])[arm]
    res = get_engine(a["engine"])(scenario(timing_weight), pol, n_users=a["users"], days=a["days"], seed=seed,
                                  progress=False)
    m = log_metrics(res.log, res.users, days=a["days"])
    return {"timing_weight": timing_weight, "seed": seed, "arm": arm, "users": a["users"],
            **{k: float(m[k]) for k in METRICS}}


def ci(values) -> tuple[float, float, float]:
    from omnisim.stats import mean_ci

    return mean_ci(np.asarray(values, dtype=float))


def fmt(m: float, lo: float, hi: float, digits: int) -> str:
    s = f"{m:+.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
    return f"**{s}**" if lo > 0 or hi < 0 else s


def summarize(rows: list[dict], a: dict) -> tuple[str, list[dict]]:
    """The Markdown table and one summary dict per scenario."""
    df = pd.DataFrame(rows)
    lines = ["| scenario (email `timing_weight`) | size | open rate learned / fixed | Δ open rate | "
             "Δ opens / 1k users | Δ clicks / 1k | Δ conversions / 1k (sent-attributed) | "
             "Δ click conversions / 1k | Δ purchases / 1k | Δ revenue − cost / 1k | "
             "conversions / 1k learned / fixed | sd of Δ conversions per seed, corr(arms) |",
             "|" + "---|" * 12]
    out = []
    for tw, g in df.groupby("timing_weight", sort=False):
        w = g.pivot(index="seed", columns="arm")
        per_k = 1000.0 / w[("users", "learned")]
        d = {k: (w[(k, "learned")] - w[(k, "fixed")]) * (per_k if k in COUNTS else 1.0) for k in METRICS}
        r = {k: ci(v) for k, v in d.items()}
        conv_l, conv_f = w[("conversions", "learned")] * per_k, w[("conversions", "fixed")] * per_k
        corr = float(np.corrcoef(conv_l, conv_f)[0, 1]) if len(w) > 2 else math.nan
        sd = float(d["conversions"].std(ddof=1))
        name = "default (0.5)" if tw == "default" else f"variant ({tw})"
        size = (f"fit {a['fit_users']} × {a['fit_days']:g} d; {len(w)} seeds × {a['users']} users × "
                f"{a['days']:g} d")
        lines.append(
            f"| {name} | {size} | {w[('open_rate', 'learned')].mean():.3f} / {w[('open_rate', 'fixed')].mean():.3f} | "
            f"{fmt(*r['open_rate'], 3)} | {fmt(*r['opens'], 1)} | {fmt(*r['clicks'], 1)} | "
            f"{fmt(*r['conversions'], 2)} | {fmt(*r['click_conversions'], 2)} | {fmt(*r['purchases'], 2)} | "
            f"{fmt(*r['revenue_minus_cost'], 0)} | {conv_l.mean():.1f} / {conv_f.mean():.1f} | "
            f"{sd:.2f}, {corr:+.2f} |")
        out.append({"timing_weight": tw, "seeds": len(w), **{f"d_{k}": v for k, v in r.items()},
                    "sd_d_conversions": sd, "corr_conversions": corr})
    return "\n".join(lines), out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--timing-weight", nargs="+", default=["default", "0.9"],
                   help="scenarios: 'default' and/or the email timing_weight of a variant (default: default 0.9)")
    p.add_argument("--seeds", type=int, default=20, help="paired seeds per scenario (default 20)")
    p.add_argument("--seed-base", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--users", type=int, default=5000, help="users per run (default 5000)")
    p.add_argument("--days", type=float, default=14.0, help="days per run (default 14)")
    p.add_argument("--fit-users", type=int, default=1500, help="users of the exploration run (default 1500)")
    p.add_argument("--fit-days", type=float, default=21.0, help="days of the exploration run (default 21)")
    p.add_argument("--fit-seed", type=int, default=1000, help="seed of the exploration run (default 1000)")
    p.add_argument("--hour", type=float, default=10.0, help="the fixed local send hour (default 10)")
    p.add_argument("--inner", default="email_only", help="inner policy (default email_only)")
    p.add_argument("--engine", default="fast", choices=("fast", "simpy"))
    p.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--json", help="write every run's metrics and the summary here")
    p.add_argument("--md", help="write the Markdown table here")
    p.add_argument("--from-json", nargs="+", metavar="FILE",
                   help="summarize the runs saved by --json in these files (pooled) instead of simulating")
    args = p.parse_args(argv)
    if args.from_json:
        saved = [json.load(open(f)) for f in args.from_json]
        a = {k: saved[0]["args"][k] for k in ("inner", "hour", "fit_users", "fit_days", "fit_seed", "engine",
                                              "users", "days")}
        for other in saved[1:]:
            if any(other["args"][k] != v for k, v in a.items()):
                p.error(f"--from-json: files differ in their design ({a} vs {other['args']})")
        runs = {(r["timing_weight"], r["seed"], r["arm"]): r for d in saved for r in d["runs"]}
        table, _ = summarize(list(runs.values()), a)
        print(table)
        if args.md:
            with open(args.md, "w") as fh:
                fh.write(table + "\n")
        return 0
    if args.fit_seed in range(args.seed_base, args.seed_base + args.seeds):
        p.error("--fit-seed must not be one of the evaluation seeds")
    a = {k: getattr(args, k) for k in ("inner", "hour", "fit_users", "fit_days", "fit_seed", "engine", "users",
                                       "days")}
    jobs = [(tw, seed, arm, a) for tw in args.timing_weight
            for seed in range(args.seed_base, args.seed_base + args.seeds) for arm in ("learned", "fixed")]
    t0 = time.perf_counter()
    rows: list[dict] = []
    with tqdm(total=len(jobs), desc="runs", unit="run") as bar:
        if args.jobs > 1:
            with ProcessPoolExecutor(args.jobs) as pool:
                for row in pool.map(run, jobs, chunksize=1):
                    rows.append(row)
                    bar.update()
        else:
            for job in jobs:
                rows.append(run(job))
                bar.update()
    table, summary = summarize(rows, a)
    wall = time.perf_counter() - t0
    print(table)
    print(f"\n{len(jobs)} runs in {wall:.0f} s ({args.engine} engine, {args.jobs} job(s)); command: "
          f"python benchmarks/bench_sendtime.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    if args.md:
        with open(args.md, "w") as fh:
            fh.write(table + "\n")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "wall_s": wall, "runs": rows, "summary": summary}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
