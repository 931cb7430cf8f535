"""Replay a log's decisions in the simulator: "what would the simulated users have done under
the very decisions the real policy logged?"

:func:`replay` takes the ``decided`` rows of a log (user, time, action, channel, propensity,
campaign, policy) and runs the reference engine with a :class:`ReplayPolicy` that, at each
logged decision time, returns exactly that decision (through the engine's ``scheduled``
trigger hook) and nothing on any other trigger. The simulated users carry the real user ids,
are drawn from the scenario's segment of each real user (``segment_by`` column of the users
table, or the scenario's mixture), and exist from the start unless the log shows their
sign-up. Where the scenario's ``calibration.campaigns`` holds per-action channel parameters
(randomised arms of different content, e.g. Hillstrom's men's / women's e-mails), the users of
each action are simulated with their action's parameters — exact, since users never
interact. Decisions and sends therefore match the log one for one (except sends the model
suppresses, e.g. no consent); outcomes are the model's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from omnisim.errors import OmnisimError
from omnisim.log import validate
from omnisim.model.population import PopulationSpec, sample_population
from omnisim.model.scenario import Scenario
from omnisim.policies.base import Context, Decision

__all__ = [
    "ReplayError",
    "ReplayPolicy",
    "ReplayResult",
    "compare_distributions",
    "compare_rates",
    "distribution_samples",
    "replay",
]


class ReplayError(OmnisimError, ValueError):
    """The log has nothing to replay, or the users / scenario do not fit it."""


@dataclass(frozen=True)
class ReplayPolicy:
    """Returns the logged decision carried by a ``scheduled`` trigger's payload; nothing
    on any other trigger. Pure and deterministic (the rng is not used)."""

    name: str = "replay"

    def decide(self, ctx: Context, rng: np.random.Generator) -> list[Decision]:
        if ctx.trigger.kind != "scheduled":
            return []
        p = ctx.trigger.payload
        return [Decision(action=str(p["action"]), channel=str(p["channel"]),
                         propensity=float(p["propensity"]), policy=str(p["policy"]),
                         campaign=p.get("campaign"))]


@dataclass
class ReplayResult:
    """The simulated log (validated), the simulated users, and the groups run."""

    log: pd.DataFrame
    users: pd.DataFrame
    scenario: Scenario
    groups: dict[str, int]


def _overrides(sc: Scenario, action: str) -> dict[str, Any]:
    """Channel parameters of ``action`` from ``calibration.campaigns`` as replace() kwargs."""
    table = (sc.calibration or {}).get("campaigns", {}).get(action, {})
    out: dict[str, Any] = {}
    for key, e in table.items():
        if e.get("status") == "default" or "value" not in e:
            continue
        parts = key.split(".")
        if parts[0] != "channels" or len(parts) != 3:
            continue
        out.setdefault("channels", {}).setdefault(parts[1], {})[parts[2]] = e["value"]
    return out


def _real_timezones(pop: pd.DataFrame, users: pd.DataFrame | None) -> None:
    """Give simulated users the real users' ``timezone`` where the users table has one (the
    sampled one stays for the others), so local-time comparisons (opens by send hour, visit
    hours) read the same clocks; an unknown zone is a :class:`ReplayError` naming it."""
    if users is None or "timezone" not in users.columns:
        return
    tz_of = (users.assign(user_id=users["user_id"].astype(str)).set_index("user_id")["timezone"]
             .dropna().astype(str))
    tz_of = tz_of[tz_of.str.strip() != ""]
    for zone in tz_of.unique():
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            uid = tz_of.index[tz_of == zone][0]
            raise ReplayError(f"users table: timezone {zone!r} of user_id {uid!r} is not an IANA time "
                              "zone name; expected e.g. 'Europe/Paris', or empty for the scenario's "
                              "segment mix") from None
    real = pop["user_id"].astype(str).map(tz_of.to_dict())
    has = real.notna().to_numpy()
    pop.loc[has, "timezone"] = real[has].to_numpy()


def replay(log: pd.DataFrame, scenario: Scenario, *, users: pd.DataFrame | None = None,
           segment_by: str | None = None, seed: int = 0, progress: bool = False,
           by_campaign: bool = True) -> ReplayResult:
    """Simulate ``scenario``'s users under ``log``'s decisions (see the module docstring).

    The horizon runs from the log's first row to its last (at least one hour); ``seed``
    seeds the population and world. Returns a :class:`ReplayResult`.
    """
    from omnisim.model.engine_simpy import simulate

    log = validate(log, source="replay")
    dec = log[log["event"] == "decided"].copy()
    if dec.empty:
        raise ReplayError("the log has no 'decided' rows: there is nothing to replay")
    t0 = log["ts"].min()
    days = max((log["ts"].max() - t0).total_seconds() / 86400.0, 1 / 24)
    dec["t_h"] = (dec["ts"] - t0).dt.total_seconds() / 3600.0
    dec["user_id"] = dec["user_id"].astype(str)
    ids = pd.Index(log["user_id"].astype(str).unique())
    sc = scenario.replace(start=t0.to_pydatetime(), days=days)
    # segment of each real user
    seg_names = [s.name for s in sc.population.segments]
    col = segment_by or ("segment" if users is not None and "segment" in users.columns else None)
    if users is not None and col is not None:
        seg_of = users.assign(user_id=users["user_id"].astype(str)).set_index("user_id")[col].astype(str)
        seg = seg_of.reindex(ids)
        unknown = sorted(set(seg.dropna()) - set(seg_names))
        if unknown:
            raise ReplayError(f"users' {col!r} values {unknown[:5]} are not segments of the scenario "
                              f"({', '.join(seg_names)}); calibrate with the same segment_by")
    else:
        seg = pd.Series(np.nan, index=ids, dtype=object)
    ss_pop, ss_world = np.random.SeedSequence(seed).spawn(2)
    rng = np.random.default_rng(ss_pop)
    weights = np.array([s.weight for s in sc.population.segments], dtype=float)
    missing = seg.isna().to_numpy()
    seg = seg.to_numpy(dtype=object).copy()
    seg[missing] = np.asarray(seg_names, dtype=object)[
        rng.choice(len(seg_names), size=int(missing.sum()), p=weights / weights.sum())]
    parts = []
    for s in sc.population.segments:
        sel = np.flatnonzero(seg == s.name)
        if sel.size == 0:
            continue
        pop = sample_population(PopulationSpec(new_user_share=0.0, tenure_max_days=sc.population.tenure_max_days,
                                               segments=[s]), int(sel.size), rng,
                                horizon_days=sc.days, enabled_channels=sc.enabled_channels)
        pop["user_id"] = pd.array(ids[sel], dtype="string")
        parts.append(pop)
    pop = pd.concat(parts, ignore_index=True)
    _real_timezones(pop, users)
    sg = log[log["event"] == "signup"]
    signup_h = ((sg["ts"] - t0).dt.total_seconds() / 3600.0).groupby(sg["user_id"].astype(str)).min()
    pop["is_new"] = False
    su = pop["user_id"].astype(str).map(signup_h.to_dict())
    has = su.notna().to_numpy()
    pop.loc[has, "is_new"] = True
    pop.loc[has, "signup_offset_h"] = su[has].astype(float).to_numpy()
    pop.loc[has, "last_visit_days_ago"] = 0.0
    # wakeups and groups
    payload_cols = ["t_h", "action", "channel", "propensity", "policy", "campaign"]
    wake: dict[str, list[tuple[float, Mapping[str, Any]]]] = {}
    for r in dec[["user_id"] + payload_cols].itertuples(index=False):
        wake.setdefault(r.user_id, []).append((float(r.t_h), {
            "action": r.action if isinstance(r.action, str) else "none",
            "channel": r.channel, "propensity": 1.0 if pd.isna(r.propensity) else float(r.propensity),
            "policy": r.policy if isinstance(r.policy, str) else "replay",
            "campaign": r.campaign if isinstance(r.campaign, str) else None}))
    camps = (sc.calibration or {}).get("campaigns", {}) if by_campaign else {}
    group = pd.Series("", index=pop["user_id"].astype(str))
    if camps:
        acts = dec.groupby("user_id")["action"].agg(lambda a: set(a.dropna()))
        for uid, a in acts.items():
            hit = [x for x in a if x in camps]
            if len(hit) == 1:
                group[uid] = hit[0]
    logs, users_out, sizes = [], [], {}
    names = sorted(group.unique())
    seeds = ss_world.spawn(len(names))
    for g, gs in zip(names, seeds):
        sel = (group == g).to_numpy()
        sub = pop[sel].reset_index(drop=True)
        g_sc = sc.replace(**_overrides(sc, g)) if g else sc
        sub_wake = {u: wake[u] for u in sub["user_id"].astype(str) if u in wake}
        res = simulate(g_sc, ReplayPolicy(), users=sub, wakeups=sub_wake,
                       seed=int(gs.generate_state(1)[0]), progress=progress)
        logs.append(res.log)
        users_out.append(sub)
        sizes[g or "(scenario)"] = int(sel.sum())
    out = pd.concat(logs, ignore_index=True)
    out = out.iloc[np.argsort(out["ts"].to_numpy(), kind="stable")].reset_index(drop=True)
    return ReplayResult(log=validate(out, source="replay"), users=pd.concat(users_out, ignore_index=True),
                        scenario=sc, groups=sizes)


# ----------------------------------------------------------------------------- comparison

def _t_h(log: pd.DataFrame) -> pd.DataFrame:
    return log.assign(t_h=(log["ts"] - log["ts"].min()).dt.total_seconds() / 3600.0)


def _verdict(diff: float, low: float, high: float, unit: str = "") -> str:
    if not (np.isfinite(low) and np.isfinite(high)):
        return "n/a (no spread)"
    if low <= 0 <= high:
        return "matches"
    return f"differs by {diff:+.4g}{unit} (CI {low:+.4g} to {high:+.4g})"


def compare_rates(real: pd.DataFrame, sim: pd.DataFrame, *, window_h: float | None = None,
                  confidence: float = 0.95) -> pd.DataFrame:
    """Real vs simulated rates with CIs, their difference and a verdict, one row per
    quantity: per logged action, the visit / conversion rate and spend per decision within
    ``window_h`` hours after it (default: the real log's span after its first decision) and
    the lift over ``none`` where the log has that arm; per message channel, the delivery,
    open, click-given-open and unsubscribe rates (where the real log records them).

    ``verdict`` is ``matches`` when the CI of sim − real contains 0, else ``differs by …``.
    """
    from omnisim.model.calibrate import window_outcomes
    from omnisim.stats import welch_diff_ci, wilson_ci, z_value

    z = z_value(confidence)
    real, sim = _t_h(real), _t_h(sim)
    dec_r = real[real["event"] == "decided"]
    if window_h is None:
        window_h = float(real["t_h"].max() - (dec_r["t_h"].min() if len(dec_r) else 0.0))
    rows: list[dict[str, Any]] = []
    wo = {k: window_outcomes(lg, lg[lg["event"] == "decided"], window_h)
          for k, lg in (("real", real), ("sim", sim))}

    def add(quantity: str, r: np.ndarray, s: np.ndarray, binary: bool) -> None:
        out = {"quantity": quantity, "n_real": r.size, "n_sim": s.size}
        for k, x in (("real", r), ("sim", s)):
            if binary:
                v, lo, hi = wilson_ci(int(x.sum()), x.size, confidence)
            else:
                v = float(x.mean()) if x.size else np.nan
                se = float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else np.nan
                lo, hi = v - z * se, v + z * se
            out.update({k: v, f"{k}_low": lo, f"{k}_high": hi})
        d, lo, hi, _ = welch_diff_ci(s, r, confidence) if r.size > 1 and s.size > 1 else (np.nan,) * 4
        out.update({"diff": d, "diff_low": lo, "diff_high": hi, "verdict": _verdict(d, lo, hi)})
        rows.append(out)

    for metric in ("visit", "conversion", "spend"):
        for a in sorted(set(wo["real"]["action"].dropna())):
            r = wo["real"].loc[wo["real"]["action"] == a, metric].to_numpy(float)
            s = wo["sim"].loc[wo["sim"]["action"] == a, metric].to_numpy(float)
            add(f"{metric} | {a}", r, s, metric != "spend")
    if "none" in set(wo["real"]["action"]):
        for metric in ("visit", "conversion", "spend"):
            for a in sorted(set(wo["real"]["action"].dropna()) - {"none"}):
                lifts = {}
                for k in ("real", "sim"):
                    t = wo[k]
                    x1 = t.loc[t["action"] == a, metric].to_numpy(float)
                    x0 = t.loc[t["action"] == "none", metric].to_numpy(float)
                    d, lo, hi, _ = welch_diff_ci(x1, x0, confidence)
                    lifts[k] = (d, (hi - lo) / (2 * z), lo, hi)
                (lr, sr, rlo, rhi), (ls, ss, slo, shi) = lifts["real"], lifts["sim"]
                dd, se = ls - lr, float(np.hypot(sr, ss))
                rows.append({"quantity": f"lift {metric} | {a} vs none", "n_real": np.nan, "n_sim": np.nan,
                             "real": lr, "real_low": rlo, "real_high": rhi, "sim": ls, "sim_low": slo,
                             "sim_high": shi, "diff": dd, "diff_low": dd - z * se, "diff_high": dd + z * se,
                             "verdict": _verdict(dd, dd - z * se, dd + z * se)})
    for ch in ("email", "sms", "push"):
        def msg(lg: pd.DataFrame, ch: str = ch) -> dict[str, set]:
            return {ev: set(lg.loc[(lg["event"] == ev) & (lg["channel"] == ch), "message_id"].dropna())
                    for ev in ("sent", "delivered", "opened", "clicked", "unsubscribed")}
        mr, ms = msg(real), msg(sim)
        for name, num, den in (("delivery_rate", "delivered", "sent"), ("open_rate", "opened", "delivered"),
                               ("click_given_open", "clicked", "opened"),
                               ("unsubscribe_rate", "unsubscribed", "delivered")):
            if not mr[num] or not mr[den]:
                continue  # the real log does not record it
            r = np.array([m in mr[num] for m in mr[den]], dtype=float)
            s = np.array([m in ms[num] for m in ms[den]], dtype=float)
            add(f"{ch} {name}", r, s, True)
    return pd.DataFrame(rows)


def distribution_samples(log: pd.DataFrame) -> dict[str, np.ndarray]:
    """Samples of the distributions the sim-vs-real report overlays: time to open and to
    click per channel (hours), purchase values (currency), visits per user, UTC hour of
    visits. Empty arrays where the log records nothing."""
    lg = _t_h(log)
    out: dict[str, np.ndarray] = {}
    for ch in ("email", "sms", "push"):
        first = {ev: lg[(lg["event"] == ev) & (lg["channel"] == ch)].groupby("message_id")["t_h"].min()
                 for ev in ("delivered", "opened", "clicked")}
        out[f"{ch} hours delivered→opened"] = (first["opened"] - first["delivered"]).dropna().to_numpy()
        out[f"{ch} hours opened→clicked"] = (first["clicked"] - first["opened"]).dropna().to_numpy()
    out["purchase value"] = lg.loc[lg["event"] == "purchase", "value"].dropna().to_numpy(float)
    visits = lg[lg["event"] == "visit"]
    users = lg["user_id"].astype(str).unique()
    out["visits per user"] = visits.groupby(visits["user_id"].astype(str)).size().reindex(
        users, fill_value=0).to_numpy(float)
    out["visit hour (UTC)"] = visits["ts"].dt.hour.to_numpy(float)
    return out


def compare_distributions(real: pd.DataFrame, sim: pd.DataFrame, *, min_n: int = 20,
                          alpha: float = 0.05) -> pd.DataFrame:
    """Two-sample Kolmogorov–Smirnov per distribution of :func:`distribution_samples`
    (those with at least ``min_n`` values on both sides and more than one distinct real
    value — a log with collapsed timestamps has none): KS statistic ``D`` (the largest gap
    between the two CDFs), p-value, medians, and a verdict (``matches`` when p >= alpha)."""
    from scipy import stats

    rs, ss = distribution_samples(real), distribution_samples(sim)
    rows = []
    for k in rs:
        r, s = rs[k], ss[k]
        if r.size < min_n or s.size < min_n or np.unique(r).size < 2:
            rows.append({"distribution": k, "n_real": r.size, "n_sim": s.size, "ks_D": np.nan,
                         "p_value": np.nan, "median_real": np.nan, "median_sim": np.nan,
                         "verdict": "not compared (too few values or no spread in the real log)"})
            continue
        res = stats.ks_2samp(r, s)
        rows.append({"distribution": k, "n_real": r.size, "n_sim": s.size, "ks_D": float(res.statistic),
                     "p_value": float(res.pvalue), "median_real": float(np.median(r)),
                     "median_sim": float(np.median(s)),
                     "verdict": "matches" if res.pvalue >= alpha else
                     f"differs (KS D = {res.statistic:.3f}: CDFs up to {100 * res.statistic:.1f} points apart)"})
    return pd.DataFrame(rows)
