"""Check that the fast engine's log is unchanged: SHA-256 of each log for a set of configs.

    python benchmarks/check_engine_identity.py --save /tmp/baseline.json   # before a change
    python benchmarks/check_engine_identity.py --check /tmp/baseline.json  # after: same hashes?

Each config runs ``engine_fast.simulate`` on the default scenario (``--users`` × ``--days``,
small ``--chunk-users`` so there are several chunks), in memory and with ``out=`` (Parquet
parts read back), and hashes the log (``to_csv`` of the frame plus its dtypes). ``--jobs``
is passed to ``simulate(n_jobs=...)`` when given (the log must not depend on it).
``--ignore-columns`` leaves columns out of the hash (e.g. a column a change adds: the
others must stay identical).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time

import pandas as pd
from bench_engines import _policy as bench_policy  # this folder: "none" = the world alone


def _policy(name: str):
    if name == "thompson":
        from omnisim.policies.bandits import ThompsonChannel

        return ThompsonChannel(update_every_h=48.0)
    return bench_policy(name)


def log_hash(log: pd.DataFrame) -> str:
    h = hashlib.sha256()
    h.update(repr(list(zip(log.columns, map(str, log.dtypes)))).encode())
    h.update(log.to_csv(index=False).encode())
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policies", default="none,blast,random_channel,seed_journey+pressure,"
                                          "journeys+pressure+holdout,thompson")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--days", type=float, default=14.0)
    ap.add_argument("--chunk-users", type=int, default=700)
    ap.add_argument("--flush-rows", type=int, default=20_000)
    ap.add_argument("--jobs", type=int, default=None, help="pass n_jobs=JOBS to simulate")
    ap.add_argument("--modes", default="mem,out")
    ap.add_argument("--ignore-columns", default="",
                    help="comma-separated columns left out of the hash")
    ap.add_argument("--save", help="write the hashes to this JSON file")
    ap.add_argument("--check", help="compare with the hashes in this JSON file")
    ap.add_argument("--engine-file", help="run this copy of engine_fast.py instead (e.g. the "
                                          "version before a change, to make a baseline)")
    args = ap.parse_args(argv)

    if args.engine_file:
        import importlib.util

        spec = importlib.util.spec_from_file_location("engine_fast_under_test", args.engine_file)
        engine_fast = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = engine_fast
        spec.loader.exec_module(engine_fast)
    else:
        from omnisim.model import engine_fast
    from omnisim.model.scenario import load_scenario

    sc = load_scenario("default")
    hashes: dict[str, str] = {}
    for pol in args.policies.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            for mode in args.modes.split(","):
                kw = {"chunk_users": args.chunk_users, "flush_rows": args.flush_rows}
                if args.jobs is not None:
                    kw["n_jobs"] = args.jobs
                t0 = time.perf_counter()
                with tempfile.TemporaryDirectory(prefix="omnisim-check-") as tmp:
                    if mode == "out":
                        kw["out"] = tmp
                    res = engine_fast.simulate(sc, _policy(pol), n_users=args.users,
                                               days=args.days, seed=seed, progress=False, **kw)
                    log = res.read_log()
                    log = log.drop(columns=[c for c in args.ignore_columns.split(",")
                                            if c in log.columns])
                    key = f"{pol}|seed={seed}|{mode}"
                    hashes[key] = log_hash(log)
                print(f"{key:50s} rows={len(log):8d} {time.perf_counter() - t0:6.1f}s "
                      f"{hashes[key][:16]}", flush=True)
    rc = 0
    if args.save:
        with open(args.save, "w") as f:
            json.dump(hashes, f, indent=1)
    if args.check:
        with open(args.check) as f:
            ref = json.load(f)
        bad = [k for k in hashes if k in ref and ref[k] != hashes[k]]
        missing = [k for k in hashes if k not in ref]
        print(f"identity: {len(hashes) - len(bad) - len(missing)} equal, {len(bad)} DIFFERENT"
              + (f", {len(missing)} not in reference" if missing else ""))
        for k in bad:
            print("  DIFFERENT:", k)
        rc = 1 if bad else 0
    return rc


if __name__ == "__main__":
    sys.exit(main())
