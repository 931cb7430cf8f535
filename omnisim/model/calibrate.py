"""Calibration: fit a scenario to an engagement log, with uncertainty and provenance.

:func:`fit_calibration` reads any valid engagement log (the converted real data sets, the
sender's exported log, simulated logs) and, optionally, a users table keyed by ``user_id``,
and estimates what the log supports. Each model parameter ends up in one of three states,
recorded in the scenario's ``calibration:`` block under its key path:

``estimated``
    fitted from the log: ``value``, ``ci`` (two-sided, ``confidence``), ``n`` (the data
    volume it rests on: users, messages, opens ...) and ``method``;
``derived``
    computed from estimated values under a stated model assumption (``reason`` says which);
``default``
    not identifiable from this log; the base scenario's value is kept and ``reason`` says
    why (``not identifiable from this log: no opened rows``). Never silently guessed.

What is fitted (see ``docs/model.md``, "Calibration", for the volumes needed):

* segment mix from the users table (``segment_by`` column; one segment ``all`` without);
* per channel: bounce / fail probabilities (sent → outcome), open and click probabilities
  and the fatigue response (half-life, strength) by maximum likelihood of opens and clicks
  given each user's send history under :mod:`omnisim.model.fatigue`'s formula, with the
  per-user tolerance integrated out (Gauss–Hermite); the unsubscribe base probability and
  its pressure gain likewise; per-segment affinities from per-segment open rates;
* read delays (lognormal / exponential MLE, as in :mod:`omnisim.model.channels`);
* local-hour activity profiles from spontaneous visits (user timezones; UTC if absent);
* visit rate, funnel (view, cart, purchase) and basket value;
* the lift of each logged action over ``none`` where decisions carry propensities and a
  randomised ``none`` arm exists (self-normalised IPS with delta-method CIs); for logs
  whose outcomes are only known as indicators over a window (Hillstrom), the visit rate,
  the purchase propensity and each campaign's click-through are solved from the arms.

Times: hours since the log's first row unless a name says otherwise.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
import yaml
from scipy import optimize, special, stats

from omnisim.errors import OmnisimError
from omnisim.log import validate
from omnisim.model.population import MSG_CHANNELS, _beta_mean, sample_population
from omnisim.model.scenario import Scenario, load_scenario
from omnisim.stats import wilson_ci, z_value

__all__ = [
    "Calibration",
    "CalibrationError",
    "Estimate",
    "calibrate",
    "fit_calibration",
    "pressure_before",
    "scenario_to_dict",
    "window_outcomes",
    "write_scenario",
]

#: Hours before the end of the log in which sends are left out of open/click fits
#: (their opens may fall after the log ends).
CENSOR_H = 72.0
#: Previous sends per message kept when computing pressure (older ones are negligible).
MAX_LAGS = 64
#: Bound on messages x lags held in memory by the fatigue fit (two float arrays of this size).
MAX_LAG_CELLS = 20_000_000
_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(9)
_GH_W = _GH_W / _GH_W.sum()


class CalibrationError(OmnisimError, ValueError):
    """The log (or users table) cannot be calibrated from; the message says why."""


@dataclass(frozen=True)
class Estimate:
    """One parameter's calibration outcome.

    ``key`` is the scenario key path (``channels.email.open_prob``,
    ``population.segments[all].visit_rate_per_day``); ``value`` in the parameter's own unit;
    ``low`` / ``high`` the confidence interval; ``n`` the data volume; ``status`` one of
    ``estimated`` / ``derived`` / ``default``.
    """

    key: str
    status: str
    value: Any = None
    low: float | None = None
    high: float | None = None
    n: int = 0
    method: str = ""
    reason: str = ""

    def entry(self) -> dict[str, Any]:
        """The ``calibration.parameters`` entry written to YAML."""
        if self.status == "estimated":
            return {"status": "estimated", "value": _plain(self.value),
                    "ci": [_plain(self.low), _plain(self.high)], "n": int(self.n),
                    "method": self.method}
        out: dict[str, Any] = {"status": self.status, "reason": self.reason}
        if self.value is not None:
            out["value"] = _plain(self.value)
        return out


@dataclass
class Calibration:
    """What :func:`fit_calibration` returns.

    Attributes
    ----------
    scenario : Scenario
        The fitted scenario, its ``calibration`` block filled in.
    estimates : list[Estimate]
        One per parameter considered (estimated, derived or kept at default).
    campaigns : dict[str, list[Estimate]]
        Per-campaign channel parameters (where the log separates campaigns by randomised
        arms), used by :mod:`omnisim.model.replay` when replaying that campaign.
    rates : pandas.DataFrame
        Descriptive rates per channel and segment with CIs (delivery, open, click,
        unsubscribe, conversion within 24 h of delivery).
    lifts : pandas.DataFrame
        Per action: SNIPS value of visit / conversion / spend within the window, and the
        lift over ``none`` with CIs (empty without a randomised control).
    delays : pandas.DataFrame
        Time-to-open / time-to-click fits per channel.
    notes : list[str]
        Caveats that apply to the whole fit (UTC assumed, collapsed timestamps ...).
    """

    scenario: Scenario
    estimates: list[Estimate]
    campaigns: dict[str, list[Estimate]]
    rates: pd.DataFrame
    lifts: pd.DataFrame
    delays: pd.DataFrame
    notes: list[str]

    def table(self) -> pd.DataFrame:
        """The estimates as a table (one row per key path)."""
        return pd.DataFrame([{"key": e.key, "status": e.status, "value": e.value, "low": e.low,
                              "high": e.high, "n": e.n, "method": e.method, "reason": e.reason}
                             for e in self.estimates])

    def get(self, key: str) -> Estimate:
        """The estimate for ``key`` (KeyError naming the known keys otherwise)."""
        for e in self.estimates:
            if e.key == key:
                return e
        raise KeyError(f"no estimate for {key!r}; known: {', '.join(e.key for e in self.estimates)}")


# ----------------------------------------------------------------------------- helpers

def _plain(v: Any) -> Any:
    """numpy scalars / arrays → plain Python for YAML."""
    if isinstance(v, np.ndarray):
        return [_plain(x) for x in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (np.floating, float)):
        return float(round(float(v), 6)) if math.isfinite(float(v)) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def _est(key: str, value: float, low: float, high: float, n: int, method: str) -> Estimate:
    return Estimate(key, "estimated", float(value), float(min(low, value)), float(max(high, value)),
                    int(n), method)


def _default(key: str, reason: str) -> Estimate:
    return Estimate(key, "default", reason=f"not identifiable from this log: {reason}")


def _loglik_ci(theta: np.ndarray, f, confidence: float) -> np.ndarray:
    """Standard errors from the numerical Hessian of ``f`` (negative log-likelihood) at
    ``theta``; NaN where it is not positive definite."""
    k = theta.size
    h = 1e-3 * np.maximum(1.0, np.abs(theta))
    H = np.zeros((k, k))
    f0 = f(theta)
    for i in range(k):
        for j in range(i, k):
            ei, ej = np.zeros(k), np.zeros(k)
            ei[i], ej[j] = h[i], h[j]
            if i == j:
                H[i, i] = (f(theta + ei) - 2 * f0 + f(theta - ei)) / h[i] ** 2
            else:
                H[i, j] = H[j, i] = (f(theta + ei + ej) - f(theta + ei - ej) - f(theta - ei + ej)
                                     + f(theta - ei - ej)) / (4 * h[i] * h[j])
    try:
        cov = np.linalg.inv(H)
    except np.linalg.LinAlgError:
        return np.full(k, np.nan)
    d = np.diag(cov)
    return np.where(d > 0, np.sqrt(np.abs(d)), np.nan)


def scenario_to_dict(sc: Scenario) -> dict[str, Any]:
    """A scenario as plain data that :meth:`Scenario.from_dict` reads back."""
    def conv(v: Any) -> Any:
        if is_dataclass(v):
            return {k: conv(x) for k, x in asdict(v).items()}
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, datetime):
            return v.isoformat().replace("+00:00", "Z")
        return _plain(v)
    return {k: conv(getattr(sc, k)) for k in ("name", "description", "start", "days", "n_users",
                                              "seed", "population", "behavior", "channels",
                                              "fatigue", "calibration")}


def write_scenario(sc: Scenario, path: str | Path) -> Path:
    """Write ``sc`` as YAML (``calibration:`` block last); it loads back with
    :func:`~omnisim.model.scenario.load_scenario`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = scenario_to_dict(sc)
    head = ("# Calibrated by omnisim.model.calibrate. Every parameter the log could not identify\n"
            "# keeps its default and is listed under calibration.parameters with status 'default'\n"
            "# and the reason.\n")
    path.write_text(head + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100),
                    encoding="utf-8")
    return path


def pressure_before(user: np.ndarray, t_h: np.ndarray, weight: np.ndarray,
                    half_life_h: float) -> np.ndarray:
    """Pressure just before each send (:mod:`~omnisim.model.fatigue`'s formula, starting
    from 0 at the log's start): ``sum_j w_j 2^(-(t_i - t_j)/half_life_h)`` over the same
    user's earlier sends. Inputs must be sorted by user, then time."""
    lags, w = _lag_matrix(user, t_h, weight)
    return np.sum(w * np.exp2(-lags / half_life_h), axis=1)


def _lag_matrix(user: np.ndarray, t_h: np.ndarray, weight: np.ndarray,
                max_lags: int = MAX_LAGS) -> tuple[np.ndarray, np.ndarray]:
    """(lags in hours, weights) of up to ``max_lags`` earlier sends of the same user;
    padding has lag +inf and weight 0. Memory is bounded: with many messages fewer lags are
    kept (at least 8; ``MAX_LAG_CELLS`` cells in all)."""
    m = len(t_h)
    max_lags = int(min(max_lags, max(8, MAX_LAG_CELLS // max(m, 1))))
    lags = np.full((m, max_lags), np.inf)
    w = np.zeros((m, max_lags))
    for k in range(1, max_lags + 1):
        same = np.zeros(m, dtype=bool)
        same[k:] = user[k:] == user[:-k]
        if not same.any():
            break
        idx = np.flatnonzero(same)
        lags[idx, k - 1] = t_h[idx] - t_h[idx - k]
        w[idx, k - 1] = weight[idx - k]
    return lags, w


# ----------------------------------------------------------------------------- preparation

@dataclass
class _Data:
    log: pd.DataFrame
    users: pd.DataFrame          # user_id, segment, timezone
    t0: pd.Timestamp
    end_h: float
    msgs: pd.DataFrame           # one row per sent message
    collapsed: bool              # behaviour timestamps carry no timing (window indicators)
    notes: list[str] = field(default_factory=list)


def _prepare(log: pd.DataFrame, users: pd.DataFrame | None, segment_by: str | None) -> _Data:
    if len(log) == 0:
        raise CalibrationError("the log is empty; calibration needs at least one event")
    log = validate(log, source="calibrate")
    if len(log) == 0:
        raise CalibrationError("the log is empty; calibration needs at least one event")
    notes: list[str] = []
    t0 = log["ts"].min()
    log = log.assign(t_h=(log["ts"] - t0).dt.total_seconds() / 3600.0)
    ids = pd.Index(log["user_id"].astype(str).unique())
    if users is None:
        u = pd.DataFrame({"user_id": ids})
    else:
        if "user_id" not in users.columns:
            raise CalibrationError(f"the users table has no 'user_id' column; found "
                                   f"{', '.join(map(str, users.columns))}")
        u = users.copy()
        u["user_id"] = u["user_id"].astype(str)
        extra = ids.difference(pd.Index(u["user_id"]))
        if len(extra):
            u = pd.concat([u, pd.DataFrame({"user_id": extra})], ignore_index=True)
    col = segment_by or ("segment" if "segment" in u.columns else None)
    if segment_by and segment_by not in u.columns:
        raise CalibrationError(f"segment_by={segment_by!r}: no such column in the users table; "
                               f"found {', '.join(map(str, u.columns))}")
    u["segment"] = u[col].astype(str).fillna("unknown") if col else "all"
    if "timezone" in u.columns:
        u["timezone"] = u["timezone"].astype(str).fillna("UTC")
        _check_timezones(u)
    else:
        u["timezone"] = "UTC"
        notes.append("no timezone column in the users table: local hours are UTC hours")
    u = u[["user_id", "segment", "timezone"]].drop_duplicates("user_id").reset_index(drop=True)

    sent = log[log["event"] == "sent"]
    msgs = pd.DataFrame({"message_id": sent["message_id"].astype(str).to_numpy(),
                         "user_id": sent["user_id"].astype(str).to_numpy(),
                         "channel": sent["channel"].astype(str).to_numpy(),
                         "campaign": sent["campaign"].astype("string").fillna("").to_numpy(),
                         "t_sent": sent["t_h"].to_numpy()})
    for ev in ("delivered", "bounced", "failed", "opened", "clicked", "unsubscribed"):
        rows = log[(log["event"] == ev) & log["message_id"].notna()]
        first = rows.groupby(rows["message_id"].astype(str))["t_h"].min()
        msgs[f"t_{ev}"] = msgs["message_id"].map(first).astype(float)
    msgs = msgs.merge(u[["user_id", "segment", "timezone"]], on="user_id", how="left")
    msgs = msgs.sort_values(["user_id", "t_sent"], kind="stable").reset_index(drop=True)

    beh = log[log["event"].isin(["visit", "purchase", "product_view", "cart_add"])]
    collapsed = bool(len(beh) >= 20 and beh["ts"].value_counts().iloc[0] >= 0.9 * len(beh))
    if collapsed:
        notes.append(f"behaviour events carry no timing ({beh['ts'].value_counts().iloc[0]:,} of "
                     f"{len(beh):,} at one timestamp, {beh['ts'].mode().iloc[0]}): outcomes are read "
                     "as indicators over the window from the first decision to that time")
    return _Data(log=log, users=u, t0=t0, end_h=float(log["t_h"].max()), msgs=msgs,
                 collapsed=collapsed, notes=notes)


def _check_timezones(u: pd.DataFrame) -> None:
    """Raise :class:`CalibrationError` naming the first users-table row whose ``timezone``
    is not an IANA name (the scenario and the engines need one: ``Europe/Paris``)."""
    for tz in pd.unique(u["timezone"]):
        try:
            ZoneInfo(str(tz))
        except (ZoneInfoNotFoundError, ValueError):
            row = int(np.flatnonzero((u["timezone"] == tz).to_numpy())[0])
            raise CalibrationError(
                f"users table row {row} (user_id {u['user_id'].iloc[row]!r}): timezone {tz!r} "
                "is not an IANA timezone name; expected e.g. Europe/Paris or America/New_York "
                "(leave it empty for UTC)") from None


# ----------------------------------------------------------------------------- estimators

def _segments(d: _Data, confidence: float) -> list[Estimate]:
    counts = d.users["segment"].value_counts().sort_index()
    n = int(counts.sum())
    out = []
    for seg, k in counts.items():
        p, lo, hi = wilson_ci(int(k), n, confidence)
        out.append(_est(f"population.segments[{seg}].weight", p, lo, hi, n,
                        "share of users (Wilson interval)"))
    tz = d.users.groupby("segment")["timezone"].value_counts(normalize=True)
    for seg in counts.index:
        shares = tz.loc[seg]
        out.append(Estimate(f"population.segments[{seg}].timezones", "derived",
                            {str(k): float(v) for k, v in shares.items()}, n=int(counts[seg]),
                            reason="share of the segment's users per timezone in the users table"))
    return out


def _delivery(d: _Data, confidence: float) -> list[Estimate]:
    out = []
    m = d.msgs
    for ch in MSG_CHANNELS:
        mc = m[m["channel"] == ch]
        known = mc[["t_delivered", "t_bounced", "t_failed"]].notna().any(axis=1)
        n = int(known.sum())
        for what in ("bounce", "fail"):
            key = f"channels.{ch}.{what}_prob"
            if n < 30:
                out.append(_default(key, f"{n} {ch} sends with a delivery outcome (need >= 30)"
                                    if len(mc) else f"no {ch} sends"))
                continue
            k = int(mc[f"t_{what}ed" if what == "fail" else "t_bounced"].notna().sum())
            p, lo, hi = wilson_ci(k, n, confidence)
            out.append(_est(key, p, lo, hi, n, "share of sends with that outcome (Wilson)"))
    return out


def _consent(d: _Data, confidence: float) -> list[Estimate]:
    """Share of users reachable and opted in per channel: among users the log decided to
    message on a channel, those with a send (the rest were suppressed ``no_consent``)."""
    out = []
    dec = d.log[(d.log["event"] == "decided")]
    sup = d.log[(d.log["event"] == "suppressed") & (d.log["reason"] == "no_consent")]
    for ch in MSG_CHANNELS:
        asked = set(dec.loc[dec["channel"] == ch, "user_id"].astype(str))
        key = f"population.segments[*].consent.{ch}"
        if len(asked) < 30:
            out.append(_default(key, f"{len(asked)} users with a decision to message on {ch}"))
            continue
        sent = set(d.msgs.loc[d.msgs["channel"] == ch, "user_id"])
        refused = set(sup.loc[sup["channel"] == ch, "user_id"].astype(str)) - sent
        k = len(asked & sent)
        n = k + len(asked & refused)
        if n < 30:
            out.append(_default(key, f"{n} users with a send or a no_consent suppression on {ch}"))
            continue
        p, lo, hi = wilson_ci(k, n, confidence)
        out.append(_est(key, p, lo, hi, n, "users with a send / users with a send or a "
                                           "no_consent suppression (reach set to 1)"))
        out.append(Estimate(f"population.segments[*].reach.{ch}", "derived", 1.0, n=n,
                            reason="reach and consent are not separable: consent carries both"))
    return out


def _profile(seg_profile: np.ndarray, hours: np.ndarray) -> np.ndarray:
    prof = np.asarray(seg_profile, dtype=float)
    return prof[np.asarray(hours, dtype=int) % 24] / prof.max()


def _local_hours(t_h: np.ndarray, t0: pd.Timestamp, tz: np.ndarray) -> np.ndarray:
    ts = t0 + pd.to_timedelta(t_h, unit="h")
    out = np.zeros(len(t_h), dtype=int)
    tz = np.asarray(tz, dtype=object)
    for z in pd.unique(tz):
        sel = tz == z
        out[sel] = pd.DatetimeIndex(ts[sel]).tz_convert(str(z)).hour
    return out


def _fatigue_fit(d: _Data, base: Scenario, confidence: float) -> tuple[list[Estimate], dict]:
    """Joint MLE of open / click probabilities per channel and the fatigue half-life and
    response strength, tolerance integrated over its lognormal (population defaults)."""
    m = d.msgs
    seg0 = base.population.segments[0]
    tol_med, tol_sig = seg0.fatigue_tolerance, seg0.fatigue_tolerance_sigma
    tols = tol_med * np.exp(tol_sig * _GH_X)                        # (K,)
    fz = base.fatigue
    w = m["channel"].map(lambda c: fz.weights.get(c, 0.0)).to_numpy(float)
    user_codes = pd.factorize(m["user_id"])[0]
    lags, lw = _lag_matrix(user_codes, m["t_sent"].to_numpy(float), w)
    churn = d.log[d.log["event"] == "churned"].groupby(d.log["user_id"].astype(str))["t_h"].min()
    t_churn = m["user_id"].map(churn).fillna(np.inf).to_numpy(float)
    use = (m["t_delivered"].notna() & (m["t_sent"] <= d.end_h - CENSOR_H)
           & (m["t_sent"] + CENSOR_H < t_churn)).to_numpy()
    chans = [c for c in MSG_CHANNELS if ((m["channel"] == c) & use & m["t_opened"].notna()).sum() >= 30]
    info: dict[str, Any] = {"channels": chans}
    if not chans or d.msgs["t_sent"].nunique() < 2:
        return [], info
    sel = use & m["channel"].isin(chans).to_numpy()
    ch_idx = pd.Categorical(m["channel"][sel], categories=chans).codes
    opened = m["t_opened"][sel].notna().to_numpy()
    clicked = m["t_clicked"][sel].notna().to_numpy()
    seg_prof = {s.name: s.profile() for s in base.population.segments}
    default_prof = base.population.segments[0].profile()
    hours = _local_hours(m["t_sent"][sel].to_numpy(float), d.t0, m["timezone"][sel].to_numpy())
    a_rel = np.array([_profile(seg_prof.get(s, default_prof), [h])[0]
                      for s, h in zip(m["segment"][sel], hours)])
    tw = np.array([base.channels.get(c).timing_weight for c in chans])[ch_idx]
    timing = (1 - tw) + tw * a_rel
    cv2 = np.array([1.0 + seg0.affinity_cv ** 2])
    L, LW = lags[sel], lw[sel]
    users_sel = pd.factorize(user_codes[sel])[0]
    n_users = int(users_sel.max()) + 1
    n_ch = len(chans)
    n_with_history = int((LW.sum(axis=1) > 0).sum())
    info.update(n=int(sel.sum()), n_opened=int(opened.sum()), n_history=n_with_history)

    def nll(theta: np.ndarray) -> float:
        po = special.expit(theta[:n_ch])[ch_idx]
        pc = special.expit(theta[n_ch:2 * n_ch])[ch_idx]
        s, h = math.exp(theta[-2]), math.exp(theta[-1])
        P = np.sum(LW * np.exp2(-L / h), axis=1)
        f = np.exp(-s * P[:, None] / tols[None, :])                # (M, K)
        p_o = np.clip(po[:, None] * timing[:, None] * f, 1e-12, 1 - 1e-12)
        p_c = np.clip(pc[:, None] * cv2 * f, 1e-12, 1 - 1e-12)
        ll = np.where(opened[:, None], np.log(p_o), np.log1p(-p_o))
        ll = ll + np.where(opened[:, None], np.where(clicked[:, None], np.log(p_c), np.log1p(-p_c)), 0.0)
        per_user = np.zeros((n_users, len(tols)))
        np.add.at(per_user, users_sel, ll)
        return -float(np.sum(special.logsumexp(per_user + np.log(_GH_W)[None, :], axis=1)))

    raw_o = np.array([opened[ch_idx == i].mean() for i in range(n_ch)])
    raw_c = np.array([clicked[(ch_idx == i) & opened].mean() if opened[ch_idx == i].any() else 0.1
                      for i in range(n_ch)])
    th0 = np.concatenate([special.logit(np.clip(raw_o * 1.3, 0.01, 0.98)),
                          special.logit(np.clip(raw_c * 1.2, 0.01, 0.98)),
                          [0.0, math.log(fz.half_life_h)]])
    res = optimize.minimize(nll, th0, method="L-BFGS-B",
                            bounds=[(-9, 9)] * (2 * n_ch) + [(-6, 3), (math.log(0.5), math.log(5000))])
    th = res.x
    se = _loglik_ci(th, nll, confidence)
    z = z_value(confidence)
    out: list[Estimate] = []
    fatigue_ok = (n_with_history >= 200 and np.isfinite(se[-2:]).all()
                  and se[-1] < 1.0 and th[-2] - z * se[-2] > -4.5)
    info["fatigue_identified"] = fatigue_ok
    s_base = fz.response_strength if fz.enabled else 0.0
    if not fatigue_ok:  # refit the rates with fatigue at the base values the scenario keeps
        fixed = [math.log(s_base) if s_base > 0 else -30.0, math.log(fz.half_life_h)]

        def nll0(t: np.ndarray) -> float:
            return nll(np.concatenate([t, fixed]))
        r0 = optimize.minimize(nll0, th[:2 * n_ch], method="L-BFGS-B", bounds=[(-9, 9)] * (2 * n_ch))
        th = np.concatenate([r0.x, fixed])
        se = np.concatenate([_loglik_ci(r0.x, nll0, confidence), [np.nan, np.nan]])
        why = (f"{n_with_history} opens-at-risk with earlier sends" if n_with_history < 200
               else "the likelihood is flat in half-life/strength (CI unbounded)")
        out += [_default("fatigue.half_life_h", why), _default("fatigue.response_strength", why)]
    else:
        s_hat, h_hat = math.exp(th[-2]), math.exp(th[-1])
        out.append(_est("fatigue.response_strength", s_hat, math.exp(th[-2] - z * se[-2]),
                        math.exp(th[-2] + z * se[-2]), int(sel.sum()),
                        "MLE of opens and clicks given send history, tolerance integrated out"))
        out.append(_est("fatigue.half_life_h", h_hat, math.exp(th[-1] - z * se[-1]),
                        math.exp(th[-1] + z * se[-1]), int(sel.sum()),
                        "MLE of opens and clicks given send history, tolerance integrated out"))
    for i, ch in enumerate(chans):
        for j, name in ((i, "open_prob"), (n_ch + i, "click_prob")):
            lo, hi = (special.expit(th[j] - z * se[j]), special.expit(th[j] + z * se[j])) \
                if np.isfinite(se[j]) else (math.nan, math.nan)
            n = int((ch_idx == i).sum()) if name == "open_prob" else int(opened[ch_idx == i].sum())
            out.append(_est(f"channels.{ch}.{name}", special.expit(th[j]), lo, hi, n,
                            "MLE (rested user, peak hour, affinity 1" +
                            (", fatigue fitted jointly)" if fatigue_ok
                             else ", fatigue at the base scenario's values)")))
    info["half_life_h"] = math.exp(th[-1]) if fatigue_ok else fz.half_life_h
    info["strength"] = math.exp(th[-2]) if fatigue_ok else s_base
    return out, info


def _unsubscribe_fit(d: _Data, base: Scenario, half_life_h: float, confidence: float
                     ) -> list[Estimate]:
    m = d.msgs
    seg0 = base.population.segments[0]
    tols = seg0.fatigue_tolerance * np.exp(seg0.fatigue_tolerance_sigma * _GH_X)
    w = m["channel"].map(lambda c: base.fatigue.weights.get(c, 0.0)).to_numpy(float)
    codes = pd.factorize(m["user_id"])[0]
    P_all = pressure_before(codes, m["t_sent"].to_numpy(float), w, half_life_h)
    sel = (m["t_delivered"].notna() & (m["t_sent"] <= d.end_h - CENSOR_H)).to_numpy()
    chans = [c for c in MSG_CHANNELS if ((m["channel"] == c) & sel).sum() > 0]
    out: list[Estimate] = []
    n_unsub = int(m["t_unsubscribed"][sel].notna().sum())
    if not chans:
        return [_default(f"channels.{c}.unsubscribe_prob", f"no delivered {c} messages")
                for c in MSG_CHANNELS] + [_default("fatigue.unsubscribe_gain", "no delivered messages")]
    sel = sel & m["channel"].isin(chans).to_numpy()
    ch_idx = pd.Categorical(m["channel"][sel], categories=chans).codes
    y = m["t_unsubscribed"][sel].notna().to_numpy()
    P = P_all[sel]
    users_sel = pd.factorize(codes[sel])[0]
    n_users = int(users_sel.max()) + 1
    nc = len(chans)

    g_base = base.fatigue.unsubscribe_gain if base.fatigue.enabled else 0.0

    def nll(theta: np.ndarray, gain_on: bool = True) -> float:
        base_p = special.expit(theta[:nc])[ch_idx]
        g = math.exp(theta[nc]) if gain_on else g_base
        p = np.clip(base_p[:, None] * (1 + g * P[:, None] / tols[None, :]), 1e-12, 1 - 1e-12)
        ll = np.where(y[:, None], np.log(p), np.log1p(-p))
        per_user = np.zeros((n_users, len(tols)))
        np.add.at(per_user, users_sel, ll)
        return -float(np.sum(special.logsumexp(per_user + np.log(_GH_W)[None, :], axis=1)))

    z = z_value(confidence)
    raw = np.array([max(y[ch_idx == i].mean(), 1e-5) for i in range(nc)])
    gain_ok = n_unsub >= 30 and (P > 0.5).sum() >= 200
    why = f"{n_unsub} unsubscribes (need >= 30 with pressure varying)"
    if gain_ok:
        res = optimize.minimize(nll, np.concatenate([special.logit(raw / 1.5), [0.0]]),
                                method="L-BFGS-B", bounds=[(-14, 0)] * nc + [(-6, 4)])
        th = res.x
        se = _loglik_ci(th, nll, confidence)
        gain_ok = bool(np.isfinite(se[nc]) and se[nc] < 1.5)
        why = f"{n_unsub} unsubscribes: the likelihood is flat in the gain (CI unbounded)"
    if gain_ok:
        out.append(_est("fatigue.unsubscribe_gain", math.exp(th[nc]), math.exp(th[nc] - z * se[nc]),
                        math.exp(th[nc] + z * se[nc]), int(sel.sum()),
                        "MLE of unsubscribes given pressure before each delivered message"))
    else:  # the base probabilities under the base gain the scenario keeps
        out.append(_default("fatigue.unsubscribe_gain", why))
        res = optimize.minimize(lambda t: nll(np.concatenate([t, [0.0]]), False), special.logit(raw),
                                method="L-BFGS-B", bounds=[(-14, 0)] * nc)
        th = np.concatenate([res.x, [0.0]])
        se = np.concatenate([_loglik_ci(res.x, lambda t: nll(np.concatenate([t, [0.0]]), False),
                                        confidence), [np.nan]])
    for i, ch in enumerate(chans):
        n = int((ch_idx == i).sum())
        k = int(y[ch_idx == i].sum())
        if k == 0:
            p, lo, hi = wilson_ci(0, n, confidence)
            out.append(_est(f"channels.{ch}.unsubscribe_prob", p, lo, hi, n,
                            "no unsubscribe among delivered messages (Wilson)"))
            continue
        out.append(_est(f"channels.{ch}.unsubscribe_prob", special.expit(th[i]),
                        special.expit(th[i] - z * se[i]) if np.isfinite(se[i]) else 0.0,
                        special.expit(th[i] + z * se[i]) if np.isfinite(se[i]) else 1.0, n,
                        "MLE per delivered message, rested user" +
                        (" (pressure gain fitted jointly)" if gain_ok
                         else f" (pressure gain at the base value {g_base:g})")))
    for c in MSG_CHANNELS:
        if c not in chans:
            out.append(_default(f"channels.{c}.unsubscribe_prob", f"no delivered {c} messages"))
    return out


def _delays(d: _Data, confidence: float) -> tuple[list[Estimate], pd.DataFrame]:
    """Read delays (delivered → opened) per channel in the model's families, and the
    open → click delay (exponential; the engine's fixed 0.5 min mean, not a parameter)."""
    m = d.msgs
    out: list[Estimate] = []
    rows = []
    for ch in MSG_CHANNELS:
        mc = m[(m["channel"] == ch) & m["t_opened"].notna() & m["t_delivered"].notna()]
        dt_h = (mc["t_opened"] - mc["t_delivered"]).to_numpy(float)
        dt_h = dt_h[dt_h > 0]
        n = dt_h.size
        if n < 30:
            reason = f"{n} timed opens on {ch} (need >= 30)"
            if ch == "email":
                out += [_default("population.segments[*].email_check_median_h", reason),
                        _default("channels.email.read_sigma", reason)]
            else:
                out.append(_default(f"channels.{ch}.read_median_min", reason))
                if ch == "sms":
                    out.append(_default("channels.sms.read_sigma", reason))
            continue
        if ch == "push":  # exponential (after the wait until active): MLE mean, chi2 CI
            mean_min = dt_h.mean() * 60
            lo = 2 * n * mean_min / stats.chi2.ppf(0.5 + confidence / 2, 2 * n)
            hi = 2 * n * mean_min / stats.chi2.ppf(0.5 - confidence / 2, 2 * n)
            out.append(_est("channels.push.read_median_min", mean_min, lo, hi, n,
                            "exponential MLE of delivered→opened minutes (includes the wait "
                            "until active: an upper bound when users are often inactive)"))
            rows.append({"channel": ch, "what": "time_to_open", "family": "exponential", "n": n,
                         "param": "mean_min", "value": mean_min, "low": lo, "high": hi})
        else:  # lognormal: mean/sd of logs (exact t / chi2 intervals)
            x = np.log(dt_h * (60.0 if ch == "sms" else 1.0))
            mu, sd = float(x.mean()), float(x.std(ddof=1))
            q = stats.t.ppf(0.5 + confidence / 2, n - 1)
            lo_mu, hi_mu = mu - q * sd / math.sqrt(n), mu + q * sd / math.sqrt(n)
            sd_lo = sd * math.sqrt((n - 1) / stats.chi2.ppf(0.5 + confidence / 2, n - 1))
            sd_hi = sd * math.sqrt((n - 1) / stats.chi2.ppf(0.5 - confidence / 2, n - 1))
            if ch == "sms":
                out.append(_est("channels.sms.read_median_min", math.exp(mu), math.exp(lo_mu),
                                math.exp(hi_mu), n, "lognormal MLE of delivered→opened minutes"))
                out.append(_est("channels.sms.read_sigma", sd, sd_lo, sd_hi, n,
                                "lognormal MLE (log-sd)"))
            else:
                # user median varies (email_check_sigma) and the read is lognormal around it:
                # one-way random effects on log-delays split the two when users open twice+
                g = pd.Series(x).groupby(mc["user_id"].to_numpy()[(mc["t_opened"] - mc["t_delivered"]).to_numpy() > 0])
                k_u = g.size()
                within = float(((pd.Series(x) - g.transform("mean")) ** 2).sum())
                df_w = n - len(k_u)
                if df_w >= 30 and len(k_u) >= 30:
                    s_read = math.sqrt(within / df_w)
                    between = max(sd ** 2 - s_read ** 2, 0.0)
                    out.append(_est("channels.email.read_sigma", s_read,
                                    s_read * math.sqrt(df_w / stats.chi2.ppf(0.5 + confidence / 2, df_w)),
                                    s_read * math.sqrt(df_w / stats.chi2.ppf(0.5 - confidence / 2, df_w)),
                                    n, "within-user log-sd of read delays (random effects)"))
                    out.append(Estimate("population.segments[*].email_check_sigma", "derived",
                                        math.sqrt(between), n=n, reason=(
                                            "between-user log-sd: sqrt(total var - within var); "
                                            "no interval (method of moments)")))
                else:
                    out.append(_default("channels.email.read_sigma",
                                        "too few users with two or more opens to split within / "
                                        "between-user spread"))
                out.append(_est("population.segments[*].email_check_median_h", math.exp(mu),
                                math.exp(lo_mu), math.exp(hi_mu), n,
                                "lognormal MLE of delivered→opened hours (includes the wait until "
                                "active: biased up when users are often inactive)"))
            rows.append({"channel": ch, "what": "time_to_open", "family": "lognormal", "n": n,
                         "param": "median_" + ("min" if ch == "sms" else "h"),
                         "value": math.exp(mu), "low": math.exp(lo_mu), "high": math.exp(hi_mu)})
        mk = mc[mc["t_clicked"].notna()]
        dc = (mk["t_clicked"] - mk["t_opened"]).to_numpy(float) * 60
        dc = dc[dc > 0]
        if dc.size >= 30:
            k = dc.size
            mean = dc.mean()
            rows.append({"channel": ch, "what": "time_to_click", "family": "exponential", "n": k,
                         "param": "mean_min", "value": mean,
                         "low": 2 * k * mean / stats.chi2.ppf(0.5 + confidence / 2, 2 * k),
                         "high": 2 * k * mean / stats.chi2.ppf(0.5 - confidence / 2, 2 * k)})
    return out, pd.DataFrame(rows)


def _spontaneous_visits(d: _Data) -> pd.DataFrame:
    log = d.log
    v = log[log["event"] == "visit"][["user_id", "t_h"]].copy()
    v["user_id"] = v["user_id"].astype(str)
    clicks = log[log["event"] == "clicked"][["user_id", "t_h"]].copy()
    clicks["user_id"] = clicks["user_id"].astype(str)
    if len(clicks):
        key = set(zip(clicks["user_id"], np.round(clicks["t_h"] * 3600).astype(np.int64)))
        own = [(u, round(t * 3600)) in key for u, t in zip(v["user_id"], v["t_h"])]
        v = v[~np.asarray(own, dtype=bool)]
    return v


def _activity(d: _Data, base: Scenario, confidence: float) -> list[Estimate]:
    out = []
    if d.collapsed:
        return [_default("population.segments[*].activity", "behaviour events carry no timing")]
    v = _spontaneous_visits(d).merge(d.users, on="user_id", how="left")
    for seg, g in v.groupby("segment"):
        key = f"population.segments[{seg}].activity"
        if len(g) < 24 * 20:
            out.append(_default(key, f"{len(g)} spontaneous visits in segment {seg} (need >= 480)"))
            continue
        h = _local_hours(g["t_h"].to_numpy(float), d.t0, g["timezone"].to_numpy())
        counts = np.bincount(h, minlength=24)
        peak = float(base.population.segments[0].profile().max())
        p, lo, hi = wilson_ci(counts, len(g), confidence)
        scale = peak / p.max()
        half = float(np.max((hi - lo) / 2 * scale))
        out.append(Estimate(key, "derived", [float(x) for x in p * scale], n=len(g),
                            reason="local-hour histogram of spontaneous visits (shape estimated; "
                            f"per-hour Wilson CI half-widths up to {half:.3f}), scaled to the base "
                            f"profile's peak {peak:g}: the level is not identifiable"))
    return out


def _window_outcomes_for(d: _Data) -> pd.DataFrame:
    dec = d.log[d.log["event"] == "decided"]
    return window_outcomes(d.log, dec, window_h=d.end_h - float(dec["t_h"].min()) if len(dec) else 0.0)


def window_outcomes(log: pd.DataFrame, decisions: pd.DataFrame, window_h: float) -> pd.DataFrame:
    """Per decision row: ``visit`` / ``conversion`` (0/1) and ``spend`` (currency) of the
    user in ``(ts, ts + window_h]``, plus ``action``, ``propensity``, ``campaign``.

    ``log`` and ``decisions`` need ``t_h`` (hours) columns."""
    out = decisions[["user_id", "t_h", "action", "propensity", "campaign", "channel"]].copy()
    out["user_id"] = out["user_id"].astype(str)
    out["_row"] = np.arange(len(out))
    for ev, name in (("visit", "visit"), ("purchase", "conversion")):
        e = log[log["event"] == ev][["user_id", "t_h", "value"]].copy()
        e["user_id"] = e["user_id"].astype(str)
        j = out[["_row", "user_id", "t_h"]].merge(e, on="user_id", suffixes=("", "_e"))
        j = j[(j["t_h_e"] > j["t_h"] - 1e-9) & (j["t_h_e"] <= j["t_h"] + window_h + 1e-9)]
        out[name] = out["_row"].isin(j["_row"]).astype(float)
        if ev == "purchase":
            out["spend"] = out["_row"].map(j.groupby("_row")["value"].sum()).fillna(0.0)
    return out.drop(columns="_row")


def _lifts(d: _Data, confidence: float) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    dec = d.log[d.log["event"] == "decided"]
    ok = dec["propensity"].notna() & (dec["propensity"] > 0)
    if not len(dec) or not ((dec["action"] == "none") & ok & (dec["propensity"] < 1)).any():
        return pd.DataFrame(), None
    wo = _window_outcomes_for(d)
    wo = wo[wo["propensity"].notna() & (wo["propensity"] > 0)]
    z = z_value(confidence)
    rows = []
    for a, g in wo.groupby("action"):
        wgt = 1.0 / g["propensity"].to_numpy(float)
        for y in ("visit", "conversion", "spend"):
            v = g[y].to_numpy(float)
            val = float(np.sum(wgt * v) / np.sum(wgt))
            # delta method for the ratio estimator (SNIPS) over all logged rows
            n_all = len(wo)
            se = math.sqrt(np.sum((wgt * (v - val)) ** 2)) / np.sum(wgt)
            rows.append({"action": a, "metric": y, "n": len(g), "n_logged": n_all, "value": val,
                         "se": se, "low": val - z * se, "high": val + z * se})
    t = pd.DataFrame(rows)
    base = t[t["action"] == "none"].set_index("metric")
    t["lift"] = t.apply(lambda r: r["value"] - base.loc[r["metric"], "value"], axis=1)
    t["lift_se"] = t.apply(lambda r: math.hypot(r["se"], base.loc[r["metric"], "se"]), axis=1)
    t.loc[t["action"] == "none", ["lift", "lift_se"]] = [0.0, 0.0]
    t["lift_low"], t["lift_high"] = t["lift"] - z * t["lift_se"], t["lift"] + z * t["lift_se"]
    return t, wo


def _rates(d: _Data, confidence: float) -> pd.DataFrame:
    m = d.msgs
    buys = d.log[d.log["event"] == "purchase"][["user_id", "t_h"]].copy()
    buys["user_id"] = buys["user_id"].astype(str)
    j = m[["message_id", "user_id", "t_delivered"]].merge(buys, on="user_id")
    conv = set(j[(j["t_h"] >= j["t_delivered"]) & (j["t_h"] <= j["t_delivered"] + 24)]["message_id"])
    m = m.assign(converted=m["message_id"].isin(conv) & m["t_delivered"].notna())
    rows = []
    for (ch, seg), g in m.groupby(["channel", "segment"]):
        nd = int(g["t_delivered"].notna().sum())
        no = int(g["t_opened"].notna().sum())
        for name, k, n in (("delivery_rate", nd, len(g)), ("open_rate", no, nd),
                           ("click_rate_given_open", int(g["t_clicked"].notna().sum()), no),
                           ("unsubscribe_rate", int(g["t_unsubscribed"].notna().sum()), nd),
                           ("conversion_24h_rate", int(g["converted"].sum()), nd)):
            p, lo, hi = wilson_ci(k, n, confidence) if n else (math.nan,) * 3
            rows.append({"channel": ch, "segment": seg, "rate": name, "k": k, "n": n,
                         "value": p, "low": lo, "high": hi})
    return pd.DataFrame(rows)


def _affinities(rates: pd.DataFrame, d: _Data) -> list[Estimate]:
    out = []
    segs = sorted(d.users["segment"].unique())
    if len(segs) < 2 or rates.empty:
        return out
    o = rates[rates["rate"] == "open_rate"]
    for ch, g in o.groupby("channel"):
        tot_k, tot_n = g["k"].sum(), g["n"].sum()
        if tot_k < 30:
            continue
        pooled = tot_k / tot_n
        for _, r in g.iterrows():
            key = f"population.segments[{r['segment']}].affinity.{ch}"
            if r["k"] < 30:
                out.append(_default(key, f"{r['k']} opens in segment {r['segment']} (need >= 30)"))
            else:
                out.append(_est(key, r["value"] / pooled, r["low"] / pooled, r["high"] / pooled,
                                int(r["n"]), "segment open rate / pooled open rate"))
    return out


def _behaviour(d: _Data, base: Scenario, confidence: float) -> list[Estimate]:
    """Visit rate, visit-rate spread, funnel and basket from timed behaviour events."""
    out: list[Estimate] = []
    log = d.log
    cnt = log["event"].value_counts()
    z = z_value(confidence)
    # funnel
    for key, num, den in (("behavior.view_prob", "product_view", "visit"),
                          ("behavior.cart_prob", "cart_add", "product_view"),
                          ("population.segments[*].purchase_propensity", "purchase", "cart_add")):
            k, n = int(cnt.get(num, 0)), int(cnt.get(den, 0))
            if d.collapsed:
                break
            if n >= 30 and 0 < k <= n:
                p, lo, hi = wilson_ci(k, n, confidence)
                note = "" if num != "purchase" else " (includes click / cart-return boosts and fatigue)"
                out.append(_est(key, p, lo, hi, n, f"{num} rows / {den} rows (Wilson){note}"))
            elif not d.collapsed:
                out.append(_default(key, f"{k} {num} / {n} {den} rows"))
    # basket: lognormal over purchase values; total log-sd split in the base ratio
    vals = log.loc[(log["event"] == "purchase") & (log["value"] > 0), "value"].to_numpy(float)
    if vals.size >= 30:
        x = np.log(vals)
        mu, sd, n = x.mean(), x.std(ddof=1), x.size
        q = stats.t.ppf(0.5 + confidence / 2, n - 1)
        out.append(_est("population.segments[*].basket_median", math.exp(mu),
                        math.exp(mu - q * sd / math.sqrt(n)), math.exp(mu + q * sd / math.sqrt(n)),
                        n, "exp(mean log purchase value)"))
        s_pop, s_beh = base.population.segments[0].basket_sigma, base.behavior.basket_sigma
        r = math.sqrt(s_pop ** 2 + s_beh ** 2) or 1.0
        out.append(Estimate("population.segments[*].basket_sigma", "derived", sd * s_pop / r, n=n,
                            reason=f"total log-sd {sd:.3f} estimated; its split between users and "
                                   "orders is not identifiable and keeps the base ratio"))
        out.append(Estimate("behavior.basket_sigma", "derived", sd * s_beh / r, n=n,
                            reason="see population basket_sigma: split in the base ratio"))
    else:
        out.append(_default("population.segments[*].basket_median", f"{vals.size} purchase values"))
    if d.collapsed:
        return out
    # visit rate per segment: spontaneous visits / exposure days
    v = _spontaneous_visits(d)
    signup = log[log["event"] == "signup"].groupby(log["user_id"].astype(str))["t_h"].min()
    churn = log[log["event"] == "churned"].groupby(log["user_id"].astype(str))["t_h"].min()
    u = d.users.copy()
    t_in = u["user_id"].map(signup).fillna(0.0).to_numpy(float)
    t_out = u["user_id"].map(churn).fillna(d.end_h).to_numpy(float)
    u["days"] = np.maximum(t_out - t_in, 0.0) / 24.0
    u["visits"] = u["user_id"].map(v.groupby("user_id").size()).fillna(0).to_numpy(float)
    for seg, g in u.groupby("segment"):
        k, expo = g["visits"].sum(), g["days"].sum()
        key = f"population.segments[{seg}].visit_rate_per_day"
        if k < 30 or expo <= 0:
            out.append(_default(key, f"{int(k)} spontaneous visits in segment {seg}"))
            continue
        rate = k / expo
        # per-user rates vary (lognormal): use a cluster (user) robust standard error
        se = math.sqrt(np.sum((g["visits"] - rate * g["days"]) ** 2)) / expo
        mean_to_median = math.exp(base.population.segments[0].visit_rate_sigma ** 2 / 2)
        out.append(_est(key, rate / mean_to_median, (rate - z * se) / mean_to_median,
                        (rate + z * se) / mean_to_median, len(g),
                        "spontaneous visits / exposure days, mean→median with the base log-sd "
                        "(ignores fatigue and click boosts on the visit rate)"))
    return out


def _solve(f, target: float, lo: float, hi: float) -> tuple[float, str]:
    """``x`` in ``[lo, hi]`` where the increasing ``f(x) == target``: ``(x, "")``.

    A target ``f`` cannot reach on the bracket gives a boundary instead of scipy's bare
    ``ValueError``: ``(0.0, "below")`` when ``target <= f(lo)`` (the parameters solved here
    give probability 0 at 0, e.g. a share of 0), ``(hi, "above")`` when ``target >= f(hi)``.
    """
    if not target > f(lo):
        return 0.0, "below"
    if not target < f(hi):
        return hi, "above"
    return float(optimize.brentq(lambda x: f(x) - target, lo, hi)), ""


def _bound_note(sides: list[str], what: str) -> str:
    """`` (CI bound(s) at ...)`` for the interval bounds :func:`_solve` put at a boundary."""
    return f" ({' and '.join(sides)} CI bound at the {what})" if sides else ""


def _window_fit(d: _Data, base: Scenario, lifts: pd.DataFrame, wo: pd.DataFrame,
                confidence: float) -> tuple[list[Estimate], dict[str, list[Estimate]]]:
    """Indicator-window logs (one decision per user, outcomes at the window's end): solve
    visit rate and purchase propensity from the ``none`` arm and each action's click-through
    from its visit rate, with the model's own heterogeneity (sampled population).

    A share the model cannot reproduce on the search range (visit rate in (0, 50] per day,
    purchase propensity in (0, 0.999]) — e.g. no buyer, or no visitor, in the no-message
    arm — leaves that parameter at the base value (``default``, with the arm's counts in its
    reason and in the calibration notes); without the visit rate, the purchase propensity
    and the messages' click-through (solved from it) are kept at base too. An interval bound
    beyond the range is put at the range's end, and the method says so."""
    out: list[Estimate] = []
    camps: dict[str, list[Estimate]] = {}
    window_d = (d.end_h - float(wo["t_h"].min())) / 24.0
    beh = base.behavior
    seg = base.population.segments[0]
    rng = np.random.default_rng(12345)
    N = 40_000
    pop = sample_population(base.population.__class__(new_user_share=0.0, segments=[seg]), N, rng,
                            horizon_days=window_d)
    z_rate = pop["visit_rate_per_day"].to_numpy() / seg.visit_rate_per_day
    tol = pop["fatigue_tolerance"].to_numpy()
    c = beh.churn_rate_per_day

    def p_no_visit(lam_day: np.ndarray, act: np.ndarray | float = 1.0) -> np.ndarray:
        lam = lam_day * act
        tot = c + lam
        return (c / tot) * (1 - np.exp(-tot * window_d)) + np.exp(-tot * window_d)

    ctl = wo[wo["action"] == "none"]
    k, n = int(ctl["visit"].sum()), len(ctl)
    pv, pv_lo, pv_hi = wilson_ci(k, n, confidence)
    lam_max, pp_max = 50.0, 0.999                   # search ranges: visits/day, probability

    def visit_share(lam: float) -> float:
        return float(1 - p_no_visit(lam * z_rate).mean())

    key = "population.segments[*].visit_rate_per_day"
    funnel = [_default(k_, "no product_view / cart_add rows; only the product "
                           "view·cart·purchase_propensity is identified")
              for k_ in ("behavior.view_prob", "behavior.cart_prob")]
    lam, side = _solve(visit_share, pv, 1e-7, lam_max)
    if side:  # nothing below can be solved without the spontaneous visit rate
        why = (f"{k} of the {n} no-message users visited within {window_d:g} days ("
               + ("no visitor: the visit rate solves to 0)" if side == "below" else
                  f"no visit rate up to {lam_max:g}/day reproduces that share; the model "
                  f"reaches {visit_share(lam_max):.4f})"))
        dep = f"needs the no-message arm's visit rate, not identifiable: {why}"
        out += [_default(key, why),
                _default("population.segments[*].visit_rate_sigma",
                         "one visit indicator per user (no counts)"),
                _default("population.segments[*].purchase_propensity", dep), *funnel]
        for ch in sorted({str(c) for c in wo.loc[wo["action"] != "none", "channel"]} & set(MSG_CHANNELS)):
            out += [_default(f"channels.{ch}.open_prob", dep), _default(f"channels.{ch}.click_prob", dep)]
        d.notes.append(f"window fit: {why}, so the visit rate, the purchase propensity and the "
                       "messages' click-through keep the base scenario's values; to fit them, "
                       "calibrate from a log whose no-message arm has both visitors and "
                       "non-visitors (e.g. more users)")
        return out, {}
    (lam_lo, s_lo), (lam_hi, s_hi) = (_solve(visit_share, pv_lo, 1e-7, lam_max),
                                      _solve(visit_share, pv_hi, 1e-7, lam_max))
    edge = _bound_note([b for b, sd in (("lower", s_lo), ("upper", s_hi)) if sd],
                       f"search range [0, {lam_max:g}]/day")
    out.append(_est(key, lam, lam_lo, lam_hi, n,
                    f"solved from the no-message arm's visit rate over {window_d:g} days "
                    f"(lognormal spread and baseline churn at base values){edge}"))
    out.append(_default("population.segments[*].visit_rate_sigma",
                        "one visit indicator per user (no counts)"))
    # purchase: per spontaneous session view*cart*pp_i; solve pp from the control conversion
    kc = int(ctl["conversion"].sum())
    pc, pc_lo, pc_hi = wilson_ci(kc, n, confidence)
    lam_i = lam * z_rate

    def p_conv(pp: float) -> float:
        draws = _beta_mean(np.random.default_rng(7), pp, seg.purchase_concentration, N)
        q = beh.view_prob * beh.cart_prob * draws
        return float(1 - p_no_visit(lam_i * q).mean())

    key = "population.segments[*].purchase_propensity"
    pp, side = _solve(p_conv, pc, 1e-6, pp_max)
    if side:
        why = (f"{kc} of the {n} no-message users purchased within {window_d:g} days ("
               + ("no buyer: the purchase propensity solves to 0)" if side == "below" else
                  f"no purchase propensity up to {pp_max:g} reproduces that share at the fitted "
                  f"visit rate; the model reaches {p_conv(pp_max):.4f})"))
        out.append(_default(key, why))
        d.notes.append(f"window fit: {why}, so the purchase propensity keeps the base scenario's "
                       f"value {seg.purchase_propensity:g}; to fit it, calibrate from a log whose "
                       "no-message arm has both buyers and non-buyers (e.g. more users)")
    else:
        (pp_lo, s_lo), (pp_hi, s_hi) = (_solve(p_conv, pc_lo, 1e-6, pp_max),
                                        _solve(p_conv, pc_hi, 1e-6, pp_max))
        edge = _bound_note([b for b, sd in (("lower", s_lo), ("upper", s_hi)) if sd],
                           f"search range [0, {pp_max:g}]")
        out.append(_est(key, pp, pp_lo, pp_hi, n, "solved from the no-message arm's conversion "
                        "rate (view_prob, cart_prob at base values: only their product with it is "
                        f"identified){edge}"))
    out += funnel
    # message arms: P(visit | a) = 1 - (1 - p_ct) * P(no spontaneous visit | one send at 0)
    fz = base.fatigue
    t_grid = np.linspace(0, window_d * 24, 200)
    if fz.enabled:
        P_t = np.exp2(-t_grid / fz.half_life_h)  # pressure of one email (weight applied below)
    sends = wo[wo["action"] != "none"]
    prof = np.array(pop["activity"].tolist())
    rel_prof = prof / prof.max(axis=1, keepdims=True)                  # (N, 24)
    tz_of = d.users.set_index("user_id")["timezone"]
    for a, g in sends.groupby("action"):
        ch = str(g["channel"].iloc[0])
        if ch not in MSG_CHANNELS:
            continue
        params = base.channels.get(ch)
        w = fz.weights.get(ch, 0.0)
        if fz.enabled:
            f_act = np.exp(-fz.activity_strength * w * P_t[None, :] / tol[:, None]).mean(axis=1)
        else:
            f_act = np.ones(N)
        s_no = p_no_visit(lam_i, f_act).mean()
        # activity relative to peak at each decision's *local* hour (the user's timezone),
        # averaged over the action's decisions: w_h = share of its sends in local hour h
        tz = g["user_id"].map(tz_of).fillna("UTC").to_numpy()
        w_h = np.bincount(_local_hours(g["t_h"].to_numpy(float), d.t0, tz), minlength=24) / len(g)
        a_rel = rel_prof @ w_h
        aff = pop[f"affinity_{ch}"].to_numpy()
        factor = float(np.mean(aff * aff * ((1 - params.timing_weight) + params.timing_weight * a_rel)))
        factor *= 1.0 - params.bounce_prob - params.fail_prob  # only delivered mails are read
        kv, nv = int(g["visit"].sum()), len(g)
        rows = []
        for target in wilson_ci(kv, nv, confidence):
            p_ct = max(0.0, 1 - (1 - target) / s_no)
            rows.append(min(1.0, p_ct / (params.click_prob * factor)))
        est = _est(f"channels.{ch}.open_prob", rows[0], rows[1], rows[2], nv,
                   f"solved from the visit rate of action {a!r} ({kv}/{nv}) over the no-message "
                   f"arm's: click-through = open_prob·click_prob·E[affinity²·timing]; click_prob "
                   "kept at base (opens and clicks are not logged)")
        camps[str(a)] = [est]
    if camps:
        nv = len(sends)
        ch = str(sends["channel"].iloc[0])
        # pooled: weighted mean of the campaign values
        ws = sends.groupby("action").size()
        pooled = [sum(ws[a] * camps[a][0].value for a in camps) / ws.sum(),
                  sum(ws[a] * camps[a][0].low for a in camps) / ws.sum(),
                  sum(ws[a] * camps[a][0].high for a in camps) / ws.sum()]
        out.append(_est(f"channels.{ch}.open_prob", *pooled, nv,
                        "send-weighted mean of the per-action values (calibration.campaigns)"))
        out.append(_default(f"channels.{ch}.click_prob", "no opened / clicked rows: only the "
                                                         "click-through product is identified"))
    return out, camps


# ----------------------------------------------------------------------------- apply

#: ``population.segments[<name>].<key>[.<sub>]``; the name may contain dots (``v1.2``)
_SEG_KEY = re.compile(r"^population\.segments\[(.*)\]\.([^\]]+)$")


def _apply(base: Scenario, estimates: list[Estimate], segments: list[str]) -> Scenario:
    """The base scenario with every estimated / derived value set."""
    seg_specs = {s.name: s for s in base.population.segments}
    template = base.population.segments[0]
    seg_over: dict[str, dict[str, Any]] = {s: {} for s in segments}
    top: dict[str, dict[str, Any]] = {}
    for e in estimates:
        if e.status == "default" or e.value is None:
            continue
        seg_key = _SEG_KEY.match(e.key)  # segment names may hold dots: "v1.2"
        if seg_key:
            name, sub = seg_key.group(1), seg_key.group(2).split(".")
            targets = segments if name == "*" else [name]
            for t in targets:
                if len(sub) == 1:
                    seg_over.setdefault(t, {})[sub[0]] = e.value
                else:
                    seg_over.setdefault(t, {}).setdefault(sub[0], {})[sub[1]] = e.value
        else:
            parts = e.key.split(".")
            node = top
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = e.value
    new_segs = []
    for name in segments:
        spec = seg_specs.get(name, template)
        d = {k: v for k, v in seg_over.get(name, {}).items()}
        for k in ("affinity", "reach", "consent"):
            if k in d:
                d[k] = {**getattr(spec, k), **d[k]}
        d["name"] = name
        new_segs.append({**_seg_dict(spec), **d})
    over = dict(top)
    over.setdefault("population", {})["segments"] = new_segs
    return base.replace(**over)


def _seg_dict(spec: Any) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(spec).items()}


def fit_calibration(log: pd.DataFrame, users: pd.DataFrame | None = None, *,
                    base: Scenario | str = "default", segment_by: str | None = None,
                    confidence: float = 0.95, name: str = "calibrated",
                    source: str | None = None) -> Calibration:
    """Calibrate a scenario from ``log`` (+ ``users``); see the module docstring.

    Parameters
    ----------
    log
        A valid engagement log (validated again here).
    users
        Optional table keyed by ``user_id``: the ``segment_by`` column (default ``segment``
        if present) defines segments; ``timezone`` (IANA names) gives local hours (UTC
        otherwise, noted).
    base
        The scenario whose values are kept where the log identifies nothing (a built-in
        name, a path or a :class:`Scenario`). Its first segment is the template for the
        fitted segments.
    confidence
        Two-sided level of every interval.
    """
    base_sc = load_scenario(base) if isinstance(base, (str, Path)) else base
    d = _prepare(log, users, segment_by)
    segments = sorted(d.users["segment"].unique())
    ests: list[Estimate] = []
    ests += _segments(d, confidence)
    ests += _delivery(d, confidence)
    ests += _consent(d, confidence)
    rates = _rates(d, confidence)
    fat_est, info = _fatigue_fit(d, base_sc, confidence)
    ests += fat_est
    if not fat_est:
        why = ("no opened rows" if not d.msgs["t_opened"].notna().any()
               else "fewer than 30 timed opens on every channel")
        if d.msgs["t_sent"].nunique() < 2 and len(d.msgs):
            why = "every send has the same timestamp (one send per user): no send history"
        ests += [_default("fatigue.half_life_h", why), _default("fatigue.response_strength", why)]
    half_life = info.get("half_life_h", base_sc.fatigue.half_life_h)
    if d.msgs["t_unsubscribed"].notna().any() or d.msgs["t_delivered"].notna().any():
        ests += _unsubscribe_fit(d, base_sc, half_life, confidence)
    else:
        ests += [_default(f"channels.{c}.unsubscribe_prob", "no delivered / unsubscribed rows")
                 for c in MSG_CHANNELS]
        ests.append(_default("fatigue.unsubscribe_gain", "no delivered / unsubscribed rows"))
    delay_est, delays = _delays(d, confidence)
    ests += delay_est
    ests += _activity(d, base_sc, confidence)
    ests += _affinities(rates, d)
    ests += _behaviour(d, base_sc, confidence)
    lifts, wo = _lifts(d, confidence)
    campaigns: dict[str, list[Estimate]] = {}
    if d.collapsed and wo is not None and len(segments) >= 1:
        if len(segments) > 1:
            d.notes.append("window fit: visit rate and purchase propensity are solved for the "
                           "pooled population and applied to every segment")
        w_est, campaigns = _window_fit(d, base_sc, lifts, wo, confidence)
        ests += w_est
    elif wo is None:
        d.notes.append("no randomised / propensity-logged 'none' arm: the lift of a message "
                       "over no message is not identifiable from this log")
    # everything else keeps its default, said so
    covered = {e.key for e in ests}
    for key, why in (("fatigue.weights", ("relative pressure per channel needs several channels "
                                          "with fatigue identified (kept at base)")),
                     ("fatigue.activity_strength", "fatigue effect on visits is not fitted"),
                     ("fatigue.churn_gain", "pressure-driven churn is not fitted"),
                     ("population.segments[*].fatigue_tolerance",
                      "sets the pressure scale: only response_strength / tolerance is identified"),
                     ("population.segments[*].affinity_cv", "needs repeated opens per user"),
                     ("behavior.click_visit_boost", "visit boost after a click is not fitted"),
                     ("behavior.click_purchase_boost", "purchase boost after a click is not fitted"),
                     ("channels.*.timing_weight", "send-hour effect on opens is not fitted")):
        if key not in covered:
            ests.append(_default(key, why))
    sc = _apply(base_sc, [e for e in ests if "channels.*" not in e.key], segments)
    horizon = max(d.end_h / 24.0, 1e-3)
    block = {
        "source": {"log": source or "<DataFrame>", "rows": len(d.log),
                   "users": len(d.users), "start": str(d.t0),
                   "days": round(horizon, 4), "confidence": confidence,
                   "segment_by": segment_by or ("segment" if len(segments) > 1 else None)},
        "notes": list(d.notes),
        "parameters": {e.key: e.entry() for e in ests},
        "campaigns": {a: {e.key: e.entry() for e in es} for a, es in campaigns.items()},
    }
    if not block["campaigns"]:
        del block["campaigns"]
    base_name = base if isinstance(base, (str, Path)) else base_sc.name
    sc = sc.replace(name=name, start=d.t0.to_pydatetime(), days=horizon, n_users=len(d.users),
                    description=(f"Calibrated from {source or 'a log'} ({len(d.users):,} users, "
                                 f"{horizon:.4g} days); values not identifiable from it are those "
                                 f"of the base scenario {str(base_name)!r}"),
                    calibration=block,
                    population={"new_user_share": _new_share(d)})
    return Calibration(scenario=sc, estimates=ests, campaigns=campaigns, rates=rates,
                       lifts=lifts, delays=delays, notes=d.notes)


def _new_share(d: _Data) -> float:
    sign = d.log.loc[d.log["event"] == "signup", "user_id"].astype(str).nunique()
    return float(sign / max(len(d.users), 1))


def calibrate(log: pd.DataFrame, users: pd.DataFrame | None = None, **kwargs: Any) -> Scenario:
    """The fitted :class:`Scenario` of :func:`fit_calibration` (its ``calibration`` block
    holds every estimate with its CI and n, or why it kept the default)."""
    return fit_calibration(log, users, **kwargs).scenario
