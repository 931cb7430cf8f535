"""OPE on the Open Bandit Dataset sample: BTS's click rate estimated from the random log.

For each estimator: the estimate, its 95 % bootstrap interval, the relative error against
BTS's on-policy click rate (from the BTS log, with its Wilson interval), and the time per
estimate (point estimate, and point + bootstrap interval), all measured in one run.
Prints a markdown table and writes ``benchmarks/ope_obd.md``.

    .venv/bin/python benchmarks/bench_ope_obd.py [--n-bootstrap 2000] [--seed 0] [--out PATH]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np

from omnisim.bandit_data import bts_action_dist, load_obd, on_policy_rate
from omnisim.policies.ope import DM, DR, IPS, SNDR, SNIPS, SwitchDR, estimate, fit_reward_model

SWITCH_TAU = 5.0
ESTIMATORS = [IPS(), SNIPS(), DM(), DR(), SNDR(), SwitchDR(tau=SWITCH_TAU)]
COMMAND = ".venv/bin/python benchmarks/bench_ope_obd.py"


def _best_time(fn, repeats: int) -> float:
    """Best wall time of ``repeats`` calls, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run(n_bootstrap: int, seed: int, repeats: int) -> tuple[str, dict]:
    fb = load_obd("random")
    truth, t_low, t_high = on_policy_rate("bts")
    t0 = time.perf_counter()
    q = fit_reward_model(fb["context"], fb["action"], fb["reward"], n_actions=fb["n_actions"],
                         position=fb["position"], len_list=fb["len_list"], random_state=seed)
    fit_s = time.perf_counter() - t0
    rows, sensitivity = [], []
    for method in ("frequency", "mean_pscore"):
        arrays = dict(reward=fb["reward"], action=fb["action"], pscore=fb["pscore"],
                      position=fb["position"], action_dist=bts_action_dist(fb["n_rounds"], method=method),
                      estimated_rewards=q)
        for i, est in enumerate(ESTIMATORS):
            res = estimate(est, n_bootstrap=n_bootstrap, rng=np.random.default_rng([seed, i]), **arrays)
            row = dict(name=res.name, value=res.value, low=res.ci_low, high=res.ci_high,
                       rel_err=(res.value - truth) / truth,
                       overlap=res.ci_low <= t_high and t_low <= res.ci_high,
                       covers=res.ci_low <= truth <= res.ci_high)
            if method == "frequency":
                point = dict(arrays)
                point["estimated_rewards_by_reg_model"] = point.pop("estimated_rewards")
                row["t_point_ms"] = 1e3 * _best_time(lambda: est.estimate_policy_value(**point), repeats)
                row["t_ci_ms"] = 1e3 * _best_time(
                    lambda: estimate(est, n_bootstrap=n_bootstrap, rng=seed, **arrays), max(1, repeats // 5))
                rows.append(row)
            else:
                sensitivity.append(row)
    meta = dict(truth=truth, t_low=t_low, t_high=t_high, fit_s=fit_s, n=fb["n_rounds"],
                clicks=int(fb["reward"].sum()), n_bootstrap=n_bootstrap, seed=seed)
    return _markdown(rows, sensitivity, meta), meta


def _name(row: dict) -> str:
    return f"switch_dr (tau={SWITCH_TAU:g})" if row["name"] == "switch_dr" else row["name"]


def _markdown(rows: list[dict], sensitivity: list[dict], m: dict) -> str:
    pct = lambda x: f"{100 * x:.3f} %"  # noqa: E731
    lines = [
        "## Off-policy evaluation on the Open Bandit Dataset sample",
        "",
        "Bernoulli Thompson sampling's click rate, estimated from the uniform-random log "
        f"({m['n']:,} impressions, {m['clicks']} clicks; `omnisim.bandit_data.load_obd`) and compared "
        "with its on-policy rate in its own log: "
        f"**{pct(m['truth'])}**, 95 % Wilson interval [{pct(m['t_low'])}, {pct(m['t_high'])}] "
        "(42 clicks in 10,000 impressions).",
        "",
        "| estimator | estimate | 95 % CI | relative error | CI overlaps truth's CI | CI covers truth | "
        "time, point (ms) | time, point + CI (ms) |",
        "|---|---:|---|---:|:---:|:---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {_name(r)} | {pct(r['value'])} | [{pct(r['low'])}, {pct(r['high'])}] | "
            f"{100 * r['rel_err']:+.1f} % | {'yes' if r['overlap'] else 'no'} | "
            f"{'yes' if r['covers'] else 'no'} | {r['t_point_ms']:.2f} | {r['t_ci_ms']:.0f} |")
    lines += [
        "",
        f"Intervals: percentile bootstrap over impressions, {m['n_bootstrap']} resamples, seed {m['seed']}. "
        "Times: best of several runs on one machine, same process; \"point + CI\" includes input "
        "validation and the bootstrap. DM and the DR family use one cross-fitted reward model "
        "(`fit_reward_model`: logistic regression on user features, item one-hot and slot one-hot, "
        f"2 folds), fitted once in {m['fit_s']:.1f} s — not included in the times above.",
        "",
        "**Caveats.**",
        "",
        "- The truth is itself uncertain: with 10,000 impressions and 42 clicks, BTS's on-policy "
        f"rate is only known to lie in [{pct(m['t_low'])}, {pct(m['t_high'])}] — relative errors "
        f"between {100 * (m['t_low'] / m['truth'] - 1):+.0f} % and {100 * (m['t_high'] / m['truth'] - 1):+.0f} % "
        "are indistinguishable from zero, and the estimators' own intervals "
        "(38 clicks in the random log) are wider still. The meaningful checks are the overlap "
        "columns; `tests/test_ope.py` asserts overlap for IPS and SNIPS.",
        "- The evaluation policy's action distribution is estimated, not BTS's own: obp re-runs "
        "BTS from item-level priors of the full data set, which the sample lacks. "
        "`bts_action_dist()` uses, per slot, the share of BTS impressions showing each item "
        "(an unbiased estimate of BTS's time-averaged probability; time-invariant, like obp's). "
        "The alternative — the mean logged `propensity_score` per (item, slot), normalised — "
        "is size-biased (a row is logged with probability p, so the mean is E[p²]/E[p]; the "
        "unnormalised means sum to 3.7, 2.3 and 2.0 over the three slots) and gives:",
        "",
        "| estimator (mean-propensity action distribution) | estimate | 95 % CI | relative error | "
        "CI overlaps truth's CI |",
        "|---|---:|---|---:|:---:|",
    ]
    for r in sensitivity:
        lines.append(f"| {_name(r)} | {pct(r['value'])} | [{pct(r['low'])}, {pct(r['high'])}] | "
                     f"{100 * r['rel_err']:+.1f} % | {'yes' if r['overlap'] else 'no'} |")
    lines += [
        "",
        "- DM's interval is conditional on the fitted reward model (it resamples rounds only), "
        "so it is far too narrow: it ignores the model's own error, which dominates with 38 clicks. "
        "Read it as a sampling interval, not as coverage. Its small error says little: the reward "
        "model is nearly flat (few clicks), so DM is close to the random log's own click rate "
        f"({pct(m['clicks'] / m['n'])}), which happens to be near BTS's.",
        f"- Switch-DR's threshold tau = {SWITCH_TAU:g} was set by hand (importance weights here are "
        "80 × BTS's probability, up to about 10); tau = inf is DR.",
        "",
        f"Reproduce: `{COMMAND}` (Python {platform.python_version()}, numpy {np.__version__}).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-bootstrap", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=20, help="timing repeats (best of)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("ope_obd.md"))
    args = parser.parse_args()
    text, _ = run(args.n_bootstrap, args.seed, args.repeats)
    print(text)
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
