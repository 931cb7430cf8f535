"""Writes notebooks/learn_and_export.ipynb (kept as code so diffs stay readable)."""

from pathlib import Path

import nbformat as nbf

cells = []
md = lambda s: cells.append(nbf.v4.new_markdown_cell(s))  # noqa: E731
code = lambda s, **kw: cells.append(nbf.v4.new_code_cell(s, **kw))  # noqa: E731

code('''# Parameters (papermill overrides this cell)
hillstrom_users = 20000      # Hillstrom customers used (of 64,000), sampled with `seed`
holdout_share = 0.3          # share of them held out for the Qini curves and off-policy evaluation
uplift_reward = "visit"      # visit | purchase | revenue
top_k_pct = 30.0             # the uplift policy e-mails this share of customers
scenario = "default"
n_users = 300                # simulated users per run
days = 14
seeds = 2
learned_kinds = ["sendtime", "bandit_ts", "bandit_linucb", "ratio", "budget"]
sim_reward = "click"         # reward per decision for off-policy evaluation in the simulator
mc_draws = 10                # decide() draws per context for random policies without action_probabilities
seed = 0
out_dir = "reports"
title = "Learn, evaluate and export a policy"''', metadata={"tags": ["parameters"]})
code('''import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from omnisim.datasets import hillstrom_log
from omnisim.experiment import compare, run_one
from omnisim.policies.artifact import export_policy, policy_kinds, read_artifact, train_policy
from omnisim.policies.ope_log import (
    FixedAction, OPELogError, channel_of_action, evaluate_policy, log_feedback, train_uplift,
)
from omnisim.policies.uplift import qini_curve

out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)
summary = {}
display(Markdown(f"# {title}\\n\\nUplift targeting on the Hillstrom e-mail experiment "
                 f"({hillstrom_users:,} customers), learned send-time and channel policies in the simulator "
                 f"(scenario **{scenario}**, {n_users} users × {days:g} days, {seeds} seeds), off-policy "
                 f"evaluation on logs, and the export of the winner as an artifact."))''')

md('''## 1. Whom to e-mail: uplift targeting on Hillstrom

A T-learner (one logistic regression per arm) predicts each customer's uplift of the men's and
the women's e-mail over no e-mail; the policy e-mails the top `top_k_pct` % with their best
e-mail. Training and held-out customers are split at random; the Qini curves are on the held-out
ones (a randomised experiment, so the curves are unbiased).''')
code('''log_all, users_all = hillstrom_log()
rng = np.random.default_rng(seed)
ids = users_all["user_id"].astype(str).to_numpy()
ids = rng.choice(ids, size=min(hillstrom_users, len(ids)), replace=False)
held = ids[rng.random(len(ids)) < holdout_share]
users = users_all[users_all["user_id"].astype(str).isin(ids)]
in_train = log_all["user_id"].astype(str).isin(set(ids) - set(held))
train_log, test_log = log_all[in_train], log_all[log_all["user_id"].astype(str).isin(held)]
uplift, uplift_metrics = train_uplift(train_log, users, reward=uplift_reward, top_k_pct=top_k_pct, seed=seed)

fb = log_feedback(test_log, uplift, users, reward=uplift_reward)
X_test = pd.DataFrame([dict(c.traits) for c in fb.contexts])
scores = uplift.model_.predict_uplift(uplift.encoder_.transform(X_test))
arm = fb.decisions["action"].astype(str).to_numpy()
fig, ax = plt.subplots(figsize=(6, 4))
auuc = {}
for j, a in enumerate(uplift.actions):
    keep = np.isin(arm, ["none", a])
    frac, gain = qini_curve(scores[keep, j], arm[keep] == a, fb.reward[keep])
    auuc[a] = float(np.trapezoid(gain - frac * gain[-1], frac))
    ax.plot(frac, gain, label=f"{a} (AUUC {auuc[a]:.4f})")
    ax.plot([0, 1], [0, gain[-1]], ls=":", color=ax.lines[-1].get_color())
ax.set_xlabel("share of customers targeted (by predicted uplift)")
ax.set_ylabel(f"incremental {uplift_reward} per treated customer")
ax.set_title("Qini curves on held-out Hillstrom customers")
ax.legend()
plt.show()
summary["auuc"] = auuc''')

md('''## 2. Off-policy evaluation on the Hillstrom log

Each policy's mean reward per customer, estimated from the held-out part of the randomised
log (IPS, self-normalised IPS, doubly robust; 95 % intervals). "Always men's e-mail" must match
the men's arm's observed mean — the check that the estimators are right.''')
code('''candidates = {"uplift": uplift, "always mens e-mail": FixedAction("mens_email"),
              "always womens e-mail": FixedAction("womens_email"), "no e-mail": FixedAction("none", "none")}
rows = []
for label, pol in candidates.items():
    t = evaluate_policy(test_log, pol, users, reward=uplift_reward, method="normal", seed=seed)
    rows.append(t.assign(policy=label))
hill_ope = pd.concat(rows, ignore_index=True)
display(hill_ope.pivot(index="policy", columns="estimator", values="value").round(4))
arms = fb.decisions.groupby("action")["reward"].mean()
display(Markdown(f"Observed arm means on the same customers: " + ", ".join(f"{a} {v:.4f}" for a, v in arms.items())))
dr = hill_ope[hill_ope["estimator"] == "dr"].set_index("policy")
fig, ax = plt.subplots(figsize=(6, 3))
ax.errorbar(dr["value"], range(len(dr)), xerr=[dr["value"] - dr["ci_low"], dr["ci_high"] - dr["value"]], fmt="o", capsize=4)
ax.set_yticks(range(len(dr)), dr.index)
ax.set_xlabel(f"{uplift_reward} per customer (DR, 95 % CI)")
plt.show()
summary["hillstrom_ope"] = hill_ope.to_dict(orient="records")''')

md('''## 3. When and where: learned send-time and channel policies in the simulator

An exploration log is simulated with `random_channel` (every reachable channel with known
propensity); its user ids are prefixed, since each simulated run draws new people. Each
learned kind available in this installation is fitted on it, then every policy is compared
with the seed journey over the same seeds (common random numbers); learned policies keep
learning online during the runs.''')
code('''explore = run_one(scenario, "random_channel", 10_000 + seed, n_users=n_users, days=days)
# every simulated run draws a new population whose ids restart at u000001: prefix the
# exploration run's ids, so a per-user estimate is never applied to a different simulated
# person with the same id in the comparison runs (they fall back to segment and population)
explore.log["user_id"] = "explore-" + explore.log["user_id"].astype(str)
explore.users["user_id"] = "explore-" + explore.users["user_id"].astype(str)
available = [k for k in learned_kinds if k in policy_kinds()]
missing = [k for k in learned_kinds if k not in policy_kinds()]
learned = {}
for k in available:
    learned[k], _ = train_policy(k, explore.log, explore.users)
display(Markdown(f"Learned kinds fitted: **{', '.join(available) or 'none'}**"
                 + (f"; not available in this installation: {', '.join(missing)}" if missing else "")))
sim = compare(scenario, ["seed_journey+pressure", *learned.values()], seeds, n_users=n_users, days=days, progress=False)
cols = ["open_rate", "click_rate", "conversions", "revenue_minus_cost", "unsubscribes", "messages_per_user"]
display(pd.DataFrame({r["policy"]: {m: f"{r[m + '_mean']:.4g} [{r[m + '_low']:.4g}, {r[m + '_high']:.4g}]" for m in cols}
                      for _, r in sim.iterrows()}))
fig, ax = plt.subplots(figsize=(7, 3.2))
m = sim["revenue_minus_cost_mean"]
ax.bar(range(len(sim)), m, yerr=[m - sim["revenue_minus_cost_low"], sim["revenue_minus_cost_high"] - m], capsize=4)
ax.set_xticks(range(len(sim)), sim["policy"], rotation=20, ha="right", fontsize=8)
ax.set_title("revenue − cost per run (mean and 95 % CI over seeds)")
plt.show()
summary["simulation"] = sim.to_dict(orient="records")''')

md('''## 4. Off-policy evaluation in the simulator

The same learned policies estimated from the exploration log alone, before any of them is run:
reward = a click on the decision's message. Random policies without `action_probabilities`
are evaluated from `mc_draws` sampled decisions per context. The exploration log chose channels,
not send hours, so actions are compared at channel level (`email@09h` counts as `email`): for the
send-time and budget policies this evaluates their channel and whether-to-send choices only.
`unsupported_share` is the share of a policy's probability on actions the log never took
(not evaluable; counted as reward 0).''')
code('''rows = []
for k, pol in learned.items():
    try:
        t = evaluate_policy(explore.log, pol, explore.users, reward=sim_reward, window_h=72, method="normal",
                            mc_draws=mc_draws, action_map=channel_of_action, seed=seed)
        rows.append(t.assign(kind=k))
    except OPELogError as exc:
        rows.append(pd.DataFrame([{"kind": k, "policy": pol.name, "estimator": "—", "error": str(exc)}]))
sim_ope = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
display(sim_ope.round(4))
summary["simulator_ope"] = sim_ope.astype(object).where(sim_ope.notna(), None).to_dict(orient="records")''')

md('''## 5. Export the winner

The policy with the highest mean revenue − cost in the simulator is exported as an artifact (the
production sender loads it with `omnisim.policies.artifact.load_artifact`); the uplift policy is
exported for the e-mail campaign it was trained for. Both carry their training data's fingerprint
and the metrics at export time.''')
code('''best = sim.loc[sim["revenue_minus_cost_mean"].idxmax()]
winner = next((p for p in learned.values() if p.name == best["policy"]), "seed_journey+pressure")
metrics = {k: best[k] for k in ("revenue_minus_cost_mean", "revenue_minus_cost_low", "revenue_minus_cost_high",
                                "open_rate_mean", "conversions_mean")}
sim_artifact = export_policy(winner, out / "winner.json", metrics=metrics,
                             training_data=None if isinstance(winner, str) else explore.log)
uplift_artifact = export_policy(uplift, out / "uplift.json", metrics={**uplift_metrics, **{f"heldout_auuc_{a}": v for a, v in auuc.items()}},
                                training_data=train_log)
for path in (sim_artifact, uplift_artifact):
    m = read_artifact(path)
    payloads = ", ".join(f"{role} ({f['type']}, {f['bytes']:,} bytes)" for role, f in (m.get("files") or {}).items())
    display(Markdown(f"**{m['name']}** (kind `{m['kind']}`) → `{path}`, sha256 `{m['sha256'][:16]}…`, "
                     f"embedded payloads: {payloads or 'none'}"))
summary["winner"] = {"policy": best["policy"], "artifact": str(sim_artifact)}
summary["uplift_artifact"] = str(uplift_artifact)
(out / "learn_and_export.json").write_text(json.dumps(summary, indent=2, default=str))''')

nb = nbf.v4.new_notebook(cells=cells, metadata={
    "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
    "language_info": {"name": "python"}})
Path(__file__).resolve().parents[1].joinpath("notebooks", "learn_and_export.ipynb").write_text(nbf.writes(nb))
