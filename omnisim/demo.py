"""`omnisim demo` / `make demo`: the main job end to end on embedded defaults.

1. the engagement report on the real Hillstrom experiment;
2. simulate and compare policies on the default scenario (papermill notebook);
3. export the best policy (by revenue minus cost, with no rule violations) as an artifact;
4. the engagement report on the winning policy's simulated log — the same report as on real data;
5. learn targeting (uplift on Hillstrom), send time and channel choice in the simulator,
   evaluate them off-policy and export the winner (``learn_and_export`` notebook);
6. a sweep on a Dask LocalCluster — a weekly cap × the users' fatigue half-life — and its
   ``sweep_results`` report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

DEMO_POLICIES = ("seed_journey+pressure", "blast", "email_only")


def run_demo(out: Path, *, n_users: int = 1500, days: float = 21, seeds: int = 3,
             policies: tuple[str, ...] = DEMO_POLICIES) -> Iterator[str]:
    """Run the demo, yielding one progress line per step. Files land under ``out``."""
    import pandas as pd

    from omnisim.datasets import convert
    from omnisim.experiment import run_one
    from omnisim.log import write_log
    from omnisim.policies.artifact import export_policy
    from omnisim.reports import run_report

    out = Path(out)
    data_dir = out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)

    yield "1/6 real data: converting Hillstrom and rendering its engagement report …"
    log_path, users_path = convert("hillstrom", data_dir / "hillstrom.parquet")
    r = run_report("engagement_report", out / "engagement_hillstrom.html",
                   {"log_path": str(log_path.resolve()), "users_path": str(users_path.resolve()),
                    "title": "Hillstrom e-mail experiment (real data)", "group_by": "zip_code"})
    yield f"    report: {r.html_path}"

    yield f"2/6 simulating {', '.join(policies)} on {seeds} seeds × {n_users} users × {days:g} days …"
    r = run_report("compare_policies", out / "compare_policies.html",
                   {"policies": list(policies), "seeds": seeds, "n_users": n_users, "days": days,
                    "out_dir": str(out.resolve())})
    yield f"    report: {r.html_path}"
    table = pd.read_csv(out / "compare_policies.csv")
    clean = table[(table["cap_violations_mean"] == 0) & (table["quiet_hour_violations_mean"] == 0)]
    best = (clean if len(clean) else table).sort_values("revenue_minus_cost_mean", ascending=False).iloc[0]
    yield (f"    best policy without rule violations: {best['policy']} "
           f"(revenue - cost {best['revenue_minus_cost_mean']:.1f} "
           f"[{best['revenue_minus_cost_low']:.1f}, {best['revenue_minus_cost_high']:.1f}])")

    name = _policy_name(str(best["policy"]), policies)
    artifact = export_policy(name, out / "policy.json",
                             metrics={k: float(best[k]) for k in best.index if k.endswith("_mean")})
    yield f"3/6 exported policy {name!r}: {artifact}"

    yield "4/6 the same engagement report (and, for a journey, its funnel) on the winning policy's simulated log …"
    run = run_one("default", name, seed=0, n_users=n_users, days=days)
    sim_log = write_log(run.log, data_dir / "simulated.parquet")
    sim_users = data_dir / "simulated_users.parquet"
    run.users.to_parquet(sim_users, index=False)
    r = run_report("engagement_report", out / "engagement_simulated.html",
                   {"log_path": str(sim_log.resolve()), "users_path": str(sim_users.resolve()),
                    "title": f"Simulated log: {run.policy}", "group_by": "segment"})
    yield f"    report: {r.html_path}"
    if run.log["step"].notna().any():  # a journey: entries, steps and what each step did
        r = run_report("journey_funnel", out / "journey_funnel_simulated.html",
                       {"log_path": str(sim_log.resolve()), "users_path": str(sim_users.resolve()),
                        "title": f"Journey funnel, simulated: {run.policy}"})
        yield f"    report: {r.html_path}"

    yield "5/6 learning policies (uplift on Hillstrom; send time and channel choice in the simulator) …"
    r = run_report("learn_and_export", out / "learn_and_export.html",
                   {"hillstrom_users": 20000, "n_users": 300, "days": 14, "seeds": 2,
                    "out_dir": str(out.resolve())})
    yield f"    report: {r.html_path}"

    yield "6/6 a sweep on a Dask LocalCluster: weekly cap 1 / 3 / 7 × fatigue half-life 24 / 168 h …"
    from omnisim.sweep import sweep

    capped = [{"name": f"{base}_capped", "policy": base,
               "pressure": {"name": "weekly_cap@1", "caps": [{"max": 1, "window_h": 168}]}}
              for base in ("blast", "email_only")]
    runs = sweep("default", capped, 3, grid={"fatigue.half_life_h": [24, 168]},
                 policy_grid={"pressure.caps[0].max": [1, 3, 7]}, n_users=800, days=14,
                 progress=False)
    runs.to_parquet(data_dir / "sweep.parquet", index=False)
    r = run_report("sweep_results", out / "sweep_results.html",
                   {"results_path": str((data_dir / "sweep.parquet").resolve()),
                    "x_column": "pressure.caps[0].max", "out_dir": str(out.resolve())})
    yield f"    report: {r.html_path} ({len(runs)} runs)"
    yield f"done: open {out / 'compare_policies.html'} first"


def _policy_name(logged_name: str, candidates: tuple[str, ...]) -> str:
    """The candidate name whose policy logged ``logged_name`` (``seed_journey@1`` …)."""
    from omnisim.policies.registry import get_policy

    for cand in candidates:
        if get_policy(cand).name == logged_name:
            return cand
    raise LookupError(f"no candidate policy is named {logged_name!r}")
