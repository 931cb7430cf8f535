"""Benchmark the vectorised engine against the SimPy reference engine, and its scaling.

    python benchmarks/bench_engines.py                       # ratio at 10k x 30 d + scaling
    python benchmarks/bench_engines.py --ratio-users 2000 --budget-s 900 --md benchmarks/engines.md

Every measurement runs in a fresh subprocess (``python benchmarks/bench_engines.py --one
ENGINE POLICY USERS DAYS``) that reports wall seconds, user-days per second and its own peak
RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``), so memory is per run. Runs of the
ratio part alternate engines (simpy, fast, simpy, fast …) in one invocation: the machine is
shared, so only ratios measured side by side mean anything.

Part 1 — ratio: the default scenario, ``seed_journey+pressure`` and ``none`` (a policy that
declares it answers no trigger: the world model alone), ``--ratio-users`` × 30 days, both
engines, ``--repeats`` times each.
Part 2 — scaling: the fast engine at users 10k → 100k → 1M × days 30 → 90 with
``seed_journey+pressure`` (and the world alone), logs written as Parquet parts (``out=``).
A configuration whose run would exceed ``--budget-s`` by linear extrapolation from the
measured ones is not run and is reported as such (the table says "not run").

Writes a Markdown fragment (``--md``) and a log-log plot (``--plot``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


class NoPolicy:
    """Answers no trigger (declared), so only the world model runs: engines' own cost."""

    name = "none@bench"
    trigger_kinds = frozenset()

    def decide(self, ctx, rng):
        return []


def _policy(name: str):
    if name == "none":
        return NoPolicy()
    from omnisim.policies.registry import get_policy

    return get_policy(name)


def one(engine: str, policy: str, users: int, days: float, progress: bool, jobs: int = 1) -> dict:
    """One measured run in this process; prints and returns a JSON row.

    ``jobs`` > 1 (fast engine): chunks in that many forked processes; peak RSS is then
    reported for this process and, separately, for the largest worker."""
    from omnisim.experiment import get_engine
    from omnisim.model.scenario import load_scenario

    sc = load_scenario("default")
    simulate = get_engine(engine)
    kw = {}
    tmp = None
    if engine == "fast" and users >= 50_000:
        tmp = tempfile.TemporaryDirectory(prefix="omnisim-bench-")
        kw["out"] = tmp.name
    if engine == "fast" and jobs != 1:
        kw["n_jobs"] = jobs
    t0 = time.perf_counter()
    res = simulate(sc, _policy(policy), n_users=users, days=days, seed=0, progress=progress, **kw)
    wall = time.perf_counter() - t0
    rows = len(res.log) if res.log is not None else sum(
        __import__("pyarrow.parquet", fromlist=["x"]).ParquetFile(p).metadata.num_rows
        for p in res.log_parts)
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB
    child_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
    row = {"engine": engine, "policy": policy, "users": users, "days": days, "wall_s": round(wall, 2),
           "user_days_per_s": round(users * days / wall, 1), "events": rows,
           "peak_rss_gb": round(rss_gb, 2), "jobs": jobs, "peak_worker_rss_gb": round(child_gb, 2)}
    if tmp is not None:
        tmp.cleanup()
    print(json.dumps(row), flush=True)
    return row


def _sub(engine: str, policy: str, users: int, days: float, progress: bool = False,
         jobs: int = 1) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", engine, policy, str(users),
           str(days), "--jobs", str(jobs)] + (["--progress"] if progress else [])
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    row = json.loads(out.strip().splitlines()[-1])
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--one", nargs=4, metavar=("ENGINE", "POLICY", "USERS", "DAYS"))
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--ratio-users", type=int, default=10_000)
    ap.add_argument("--ratio-days", type=float, default=30.0)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--users", default="10000,100000,1000000")
    ap.add_argument("--days", default="30,90")
    ap.add_argument("--budget-s", type=float, default=600.0,
                    help="skip scaling runs predicted to take longer than this")
    ap.add_argument("--skip-ratio", action="store_true")
    ap.add_argument("--jobs", type=int, default=1,
                    help="fast engine: n_jobs for scaling runs of more than one chunk "
                         "(> 50,000 users); the ratio runs (one chunk) always use 1")
    ap.add_argument("--md", type=Path, default=HERE / "engines.md")
    ap.add_argument("--plot", type=Path, default=HERE / "engine_scaling.png")
    ap.add_argument("--json", type=Path, default=HERE / "engines.json")
    ap.add_argument("--add-extra", nargs=4, metavar=("ENGINE", "POLICY", "USERS", "DAYS"),
                    help="measure one more fast-engine run and add it to --json (separate "
                         "invocation, reported as such), then rewrite --md and --plot")
    ap.add_argument("--replot", action="store_true", help="rewrite --md and --plot from --json")
    args = ap.parse_args(argv)
    if args.add_extra or args.replot:
        results = json.loads(args.json.read_text())
        if args.add_extra:
            e, p, u, d = args.add_extra
            row = _sub(e, p, int(u), float(d), progress=True, jobs=args.jobs)
            row["command"] = "python benchmarks/bench_engines.py --add-extra " + " ".join(args.add_extra)
            results.setdefault("extra", []).append(row)
            args.json.write_text(json.dumps(results, indent=1))
        write_md(results, args.md)
        plot(results, args.plot)
        return
    if args.one:
        e, p, u, d = args.one
        one(e, p, int(u), float(d), args.progress, args.jobs)
        return
    results: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                                f"Python {platform.python_version()}",
                     "load_avg_start": os.getloadavg()[0], "ratio": [], "scaling": [],
                     "command": "python benchmarks/bench_engines.py " + " ".join(argv or sys.argv[1:])}
    if not args.skip_ratio:
        for policy in ("seed_journey+pressure", "none"):
            for _ in range(args.repeats):
                for engine in ("simpy", "fast"):
                    results["ratio"].append(_sub(engine, policy, args.ratio_users, args.ratio_days))
    users = [int(x) for x in args.users.split(",")]
    days = [float(x) for x in args.days.split(",")]
    for policy in ("seed_journey+pressure", "none"):
        rate = None  # user-days/s measured so far (for the budget prediction)
        for d in days:
            for u in users:
                predicted = u * d / rate if rate else 0.0
                if predicted > args.budget_s:
                    results["scaling"].append({"engine": "fast", "policy": policy, "users": u,
                                               "days": d, "not_run": True,
                                               "predicted_s": round(predicted)})
                    continue
                row = _sub("fast", policy, u, d, progress=u >= 1_000_000,
                           jobs=args.jobs if u > 50_000 else 1)
                rate = row["user_days_per_s"]
                results["scaling"].append(row)
    results["load_avg_end"] = os.getloadavg()[0]
    results["load_avg_end_5_15"] = list(os.getloadavg()[1:])
    args.json.write_text(json.dumps(results, indent=1))
    write_md(results, args.md)
    plot(results, args.plot)


#: The reading of the numbers (kept with the script so the fragment is regenerated whole).
VERDICT = [
    '### Verdict',
    '',
    "- **Both targets are met, the 1M × 90 d one at its edge.** The issue asks for fast ≥ 50× simpy with seed_journey+pressure at 10k × 30 d, and 1M users × 90 d in < 60 s / < 8 GB. At 10k × 30 d the table's pairs give **52.5×** (pairs 54.1× and 51.5×; each run in a fresh process, so the fast time includes ≈ 0.25 s of loading the compiled code from the cache; a second run in the same process takes ≈ 0.31 s, ≈ 100×); the world alone 29.9×. **1M × 90 d with the seed journey: 55.2 s** in this table on two worker processes (136 M log rows written as Parquet parts, peak RSS ≈ 0.6 GB main + ≈ 2 GB per worker); over the runs of the day with the final code 55.1, 55.2, 55.6 and 60.1 s — under 60 s in three runs of four, not with a margin. Before the compiled path the same runs took 1,256 s and 4.3× (the round-based path, section below).",
    "- **Keeping freed memory between chunks** (`omnisim/model/_malloc.py`, glibc's mmap/trim thresholds; docs/engines.md): side by side, alternating, 1M × 90 d with the journey, commit `a8b322c` against `43903f3`: 63.3 s → 55.6 s (a first pair was void: the old worktree recompiled its kernels). Each chunk's arrays no longer pay the kernel's first touch of fresh pages again.",
    "- **Where the time goes** (one 50,000-user chunk of the 20, one process, ≈ 5.2 s once memory is reused): the compiled loop ≈ 2.1–2.9 s (≈ 300–400 ns per log row; the world alone ≈ 250 ns), Parquet writing ≈ 1.2 s (dictionary pages for the columns of few values, statistics for `ts` only), time sort and column gather ≈ 1.1 s, the text columns ≈ 0.8 s, `validate` ≈ 0.3 s. A margin under 60 s needs a cheaper log (Arrow dictionary columns straight to Parquet, a one-pass sort) or a faster loop.",
    "- **The compiled path** (docs/engines.md): the reference engine's semantics as a numba per-user event loop over the same model formulas, with the journeys and pressure rules compiled and checked equal to the Python classes call by call. It runs every built-in policy; learned policies, holdouts and custom classes run on the round-based path (a few times simpy).",
    "- **Memory is not the limit**: peak RSS ≈ 2 GB per worker process at 1M × 90 d with the journey (the loop keeps one chunk's rows, ≈ 7 M, plus its frame).",
    "- **Compilation**: numba compiles the loop and the kernels once per machine and per source version (≈ 200 s here; `make venv` does it, cached in `~/.cache/omnisim/numba/`); the runs above load the cached code.",
]


def _rss(r: dict) -> str:
    """Peak RSS of the run's process (and of its largest worker when it forked any)."""
    if r.get("jobs", 1) > 1:
        return f"{r['peak_rss_gb']:.2f} / {r.get('peak_worker_rss_gb', 0):.2f}"
    return f"{r['peak_rss_gb']:.2f}"


def write_md(res: dict, path: Path) -> None:
    lines = ["## Engines: fast (compiled path) vs SimPy reference (`simpy`)", "",
             f"Machine: {res['machine']}; load average {res['load_avg_start']:.1f} at start, "
             f"{res['load_avg_end']:.1f} at end (1-min"
             + (", 5/15-min at end {:.1f} / {:.1f}".format(*res["load_avg_end_5_15"])
                if res.get("load_avg_end_5_15") else "")
             + "; shared by several engineers: compare ratios "
             "measured side by side, not absolute speeds). Command: "
             f"`{res['command'].strip()}`.", ""]
    if res["ratio"]:
        lines += ["### Ratio (default scenario, measured in one run, alternating engines)", "",
                  "| policy | users × days | simpy user-days/s | fast user-days/s | fast / simpy |",
                  "|---|---|---|---|---|"]
        by: dict = {}
        for r in res["ratio"]:
            by.setdefault((r["policy"], r["users"], r["days"]), {}).setdefault(r["engine"], []).append(
                r["user_days_per_s"])
        for (pol, u, d), e in by.items():
            s_med = sorted(e["simpy"])[len(e["simpy"]) // 2]
            f_med = sorted(e["fast"])[len(e["fast"]) // 2]
            lines.append(f"| {pol} | {u:,} × {d:g} | {s_med:,.0f} | {f_med:,.0f} | "
                         f"**{f_med / s_med:.2f}×** |")
        lines.append("")
    lines += ["### Scaling of the fast engine (each run in its own process; runs of more than one "
              "50,000-user chunk with `--jobs` worker processes; peak RSS of the main process "
              "and of the largest worker)",
              "", "| policy | users | days | user-days | jobs | wall s | user-days/s | events | "
              "peak RSS GB (main / largest worker) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in res["scaling"]:
        if r.get("not_run"):
            lines.append(f"| {r['policy']} | {r['users']:,} | {r['days']:g} | "
                         f"{r['users'] * r['days']:,.0f} | | not run (predicted ≈ "
                         f"{r['predicted_s']:,} s) | | | |")
        else:
            lines.append(f"| {r['policy']} | {r['users']:,} | {r['days']:g} | "
                         f"{r['users'] * r['days']:,.0f} | {r.get('jobs', 1)} | {r['wall_s']:,.1f} | "
                         f"{r['user_days_per_s']:,.0f} | {r['events']:,} | {_rss(r)} |")
    if res.get("extra"):
        lines += ["", "Extra runs (separate invocations, same machine, same table columns):", "",
                  "| policy | users | days | user-days | wall s | user-days/s | events | peak RSS GB | command |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in res["extra"]:
            lines.append(f"| {r['policy']} | {r['users']:,} | {r['days']:g} | "
                         f"{r['users'] * r['days']:,.0f} | {r['wall_s']:,.1f} | "
                         f"{r['user_days_per_s']:,.0f} | {r['events']:,} | {_rss(r)} | "
                         f"`{r['command']}` |")
    lines += ["", "![cost growth, log-log](engine_scaling.png)", "", *VERDICT, ""]
    path.write_text("\n".join(lines))


def plot(res: dict, path: Path) -> None:
    """Log-log: wall seconds vs user-days per policy (marker = horizon), measured points
    joined; dashed: the extrapolation at the slowest measured user-days/s, up to 1M × 90 d."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    markers = {7.0: "v", 30.0: "o", 90.0: "s"}
    for policy, color in (("seed_journey+pressure", "C0"), ("none", "C1")):
        pts = sorted((r for r in res["scaling"] + res.get("extra", [])
                      if r["policy"] == policy and not r.get("not_run")),
                     key=lambda r: r["users"] * r["days"])
        if not pts:
            continue
        x = [r["users"] * r["days"] for r in pts]
        ax.plot(x, [r["wall_s"] for r in pts], color=color, lw=1,
                label=f"{policy} (world only)" if policy == "none" else policy)
        for r in pts:
            ax.plot(r["users"] * r["days"], r["wall_s"], color=color,
                    marker=markers.get(r["days"], "D"), ls="none")
        slow = min(r["user_days_per_s"] for r in pts)
        xs = [max(x), 9e7]
        ax.plot(xs, [v / slow for v in xs], color=color, ls="--", lw=1)
    for d, m in markers.items():
        ax.plot([], [], color="grey", marker=m, ls="none", label=f"{d:g} days")
    ax.axhline(60, color="grey", ls=":", lw=1)
    ax.axvline(9e7, color="grey", ls=":", lw=1)
    ax.text(9e7, 60, " 60 s / 1M×90 d", fontsize=7, va="bottom", ha="right")
    ax.set(xscale="log", yscale="log", xlabel="user-days simulated (users × days)",
           ylabel="wall seconds (fast engine)",
           title="Fast engine: cost growth (dashed: extrapolated)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
