"""Before/after evaluation of hotspot patrols: displacement, difference-in-differences, decay.

One function per analyst question, all returning plain dicts / DataFrames, and
:func:`evaluate_areas`, which runs the whole month-level evaluation of treated
places against controls and returns a :class:`geo.result.AnalysisResult`.

Methods (references)
--------------------
* Percentage change, Weighted Displacement Quotient and Total Net Effect
  (Bowers & Johnson 2003, *J. Quantitative Criminology* 19(3):275-301):
  with A = treated, B = buffer, C = control and 0/1 = before/after,
  ``WDQ = (B1/C1 - B0/C0) / (A1/C1 - A0/C0)`` and
  ``TNE = (A0*C1/C0 - A1) + (B0*C1/C0 - B1)`` (positive = crimes prevented).
* Weighted Displacement Difference (Wheeler & Ratcliffe 2018, *Crime Science* 7:11),
  ``WDD = (T1 - T0) - (C1 - C0) + (D1 - D0) - (DC1 - DC0)`` with Poisson variance
  = the sum of all eight counts; the harm-weighted version (Wheeler 2020, blog
  "Amending the WDD test to incorporate harm weights", ptools ``wdd_harm``) sums
  ``w_k * WDD_k`` over crime types with variance ``sum w_k^2 Var_k``; for per-incident
  weights the variance is the sum of squared weights (the same thing, one row at a time).
* Difference-in-differences Poisson / negative-binomial regression with place and
  period fixed effects (statsmodels GLM): ``log E[y_it] = a_i + g_t + b * treated_i*after_t``;
  rate ratio ``exp(b)`` with a place-clustered interval. Harm is fitted by
  quasi-Poisson (pseudo-likelihood, valid for non-negative non-integer outcomes).
* Spatial Point Pattern Test (Andresen 2009; the ``sppt`` R package): the test
  period's points are sub-sampled (85 %, without replacement, 200 times), each
  unit's percentage gets a 95 % non-parametric interval, and a unit is *similar*
  when the base period's percentage falls inside it. S = share of similar units;
  robust S uses only units with incidents in either period.
* Minimum detectable effect of the WDD design at 80 % power (Poisson variance).
* Crossover place-day designs: Poisson GLM of daily counts on spot, week and
  day-of-week effects, the treated-day indicator and lagged treated days (carry-over).
* Residual deterrence (Koper 1995; Sherman 1990): incident rate by hours since the
  last visit ended, against the spot's pre-period baseline, and a profile-likelihood
  estimate of how long the effect lasts.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from .errors import EmptyInputError, HarmspotError, MonthOnlyDataError

__all__ = [
    "pct_change", "wdq", "tne", "wdd", "wdd_harm", "wdd_weighted", "did_regression", "sppt",
    "mde_wdd", "crossover_place_day", "residual_deterrence", "evaluate_areas", "match_controls",
]


# ----------------------------------------------------------------------------------- simple statistics
def pct_change(before: float, after: float) -> float:
    """Percentage change ``100 * (after - before) / before`` (NaN when before is 0)."""
    return float("nan") if before == 0 else 100.0 * (after - before) / before


def wdq(a0: float, a1: float, b0: float, b1: float, c0: float, c1: float) -> dict:
    """Weighted Displacement Quotient (Bowers & Johnson 2003).

    Parameters
    ----------
    a0, a1 : treated area before / after.  b0, b1 : buffer.  c0, c1 : control.

    Returns
    -------
    dict
        ``success`` = A1/C1 - A0/C0 (negative = treated fell relative to control),
        ``buffer`` = B1/C1 - B0/C0, ``wdq`` = buffer / success (> 0 diffusion of benefit,
        < 0 displacement; NaN when success is 0 or a control count is 0),
        ``interpretation``.
    """
    if c0 == 0 or c1 == 0:
        return {"success": float("nan"), "buffer": float("nan"), "wdq": float("nan"),
                "interpretation": "undefined: a control count is zero"}
    success = a1 / c1 - a0 / c0
    buf = b1 / c1 - b0 / c0
    q = float("nan") if success == 0 else buf / success
    if success >= 0:
        txt = "no relative reduction in the treated area (WDQ not interpretable)"
    elif not np.isfinite(q):
        txt = "undefined"
    elif q > 0:
        txt = "diffusion of benefit into the buffer" + (" (larger than the direct effect)" if q > 1 else "")
    elif q < 0:
        txt = "displacement into the buffer" + (" (larger than the direct effect)" if q < -1 else "")
    else:
        txt = "no change in the buffer"
    return {"success": float(success), "buffer": float(buf), "wdq": float(q), "interpretation": txt}


def tne(a0: float, a1: float, b0: float, b1: float, c0: float, c1: float) -> float:
    """Total Net Effect (Bowers & Johnson 2003): crimes prevented in treated + buffer.

    ``TNE = (A0 * C1/C0 - A1) + (B0 * C1/C0 - B1)``: what the treated and buffer areas
    would have had if they had changed like the control, minus what they had.
    Positive = net reduction (after displacement/diffusion). NaN when C0 is 0.
    """
    if c0 == 0:
        return float("nan")
    r = c1 / c0
    return float((a0 * r - a1) + (b0 * r - b1))


def _ci(est, se, alpha):
    z = stats.norm.ppf(1 - alpha / 2)
    return est - z * se, est + z * se


def wdd(control, treated, disp_control=None, disp=None, *, alpha: float = 0.05, time_weights=None,
        area_weights=None) -> dict:
    """Weighted Displacement Difference test (Wheeler & Ratcliffe 2018).

    Parameters
    ----------
    control, treated : (before, after) counts.
    disp_control, disp : (before, after) counts in the control's and the treated
        area's displacement (buffer) areas; omit both for the local estimate only.

    time_weights : (pre, post) relative lengths of the periods (ptools ``time_weights``):
        counts are divided by them and variances by their squares, so the estimate is
        in units of one post-period length when post = 1.
    area_weights : relative sizes of (control, treated, disp_control, disp) areas
        (ptools ``area_weights``): each area's counts are divided by its weight.

    Returns
    -------
    dict with ``est_local`` = (T1-T0) - (C1-C0), ``se_local`` = sqrt(T0+T1+C0+C1),
    ``est_displace`` = (D1-D0) - (DC1-DC0), ``se_displace``, ``wdd`` = est_local +
    est_displace, ``wdd_se`` = sqrt(sum of all counts), ``z``, ``p`` (two-sided),
    ``low``, ``high`` (normal interval at 1-alpha). Negative = crime fell.
    """
    tw = (1.0, 1.0) if time_weights is None else tuple(map(float, time_weights))
    aw = (1.0, 1.0, 1.0, 1.0) if area_weights is None else tuple(map(float, area_weights))
    if len(tw) != 2 or min(tw) <= 0:
        raise HarmspotError(f"wdd: time_weights must be two positive numbers (pre, post); got {time_weights!r}")
    if len(aw) != 4 or min(aw) <= 0:
        raise HarmspotError(f"wdd: area_weights must be four positive numbers; got {area_weights!r}")

    def scaled(pair, a):
        x0, x1 = map(float, pair)
        return x0 / (tw[0] * a), x1 / (tw[1] * a), x0 / (tw[0] * a) ** 2 + x1 / (tw[1] * a) ** 2

    c0, c1, vc = scaled(control, aw[0])
    t0, t1, vt = scaled(treated, aw[1])
    est_l = (t1 - t0) - (c1 - c0)
    var_l = vt + vc
    if (disp_control is None) != (disp is None):
        raise HarmspotError("wdd: give both disp_control and disp, or neither")
    if disp is not None:
        dc0, dc1, vdc = scaled(disp_control, aw[2])
        d0, d1, vd = scaled(disp, aw[3])
        est_d = (d1 - d0) - (dc1 - dc0)
        var_d = vd + vdc
    else:
        est_d, var_d = 0.0, 0.0
    return _wdd_out(est_l, var_l, est_d, var_d, alpha)


def _wdd_out(est_l, var_l, est_d, var_d, alpha):
    est = est_l + est_d
    se = math.sqrt(var_l + var_d)
    z = est / se if se > 0 else float("nan")
    p = float(2 * stats.norm.sf(abs(z))) if np.isfinite(z) else float("nan")
    lo, hi = _ci(est, se, alpha)
    return {"est_local": float(est_l), "se_local": math.sqrt(var_l), "est_displace": float(est_d),
            "se_displace": math.sqrt(var_d), "wdd": float(est), "wdd_se": float(se), "z": float(z), "p": p,
            "low": float(lo), "high": float(hi), "alpha": alpha}


def wdd_harm(est, se, weights, *, alpha: float = 0.05) -> dict:
    """Harm-weighted WDD from per-crime-type WDD estimates (Wheeler 2020; ptools ``wdd_harm``).

    ``est = sum(w_k * est_k)``, ``se = sqrt(sum(w_k^2 * se_k^2))``; returns ``wdd``,
    ``wdd_se``, ``z``, ``p``, ``low``, ``high``.
    """
    est, se, w = (np.asarray(v, float) for v in (est, se, weights))
    if not (est.shape == se.shape == w.shape):
        raise HarmspotError(f"wdd_harm: est, se and weights must have the same length; got "
                            f"{est.size}, {se.size}, {w.size}")
    e = float((w * est).sum())
    s = float(np.sqrt((w ** 2 * se ** 2).sum()))
    z = e / s if s > 0 else float("nan")
    lo, hi = _ci(e, s, alpha)
    return {"wdd": e, "wdd_se": s, "z": z, "p": float(2 * stats.norm.sf(abs(z))) if np.isfinite(z) else float("nan"),
            "low": lo, "high": hi, "alpha": alpha}


def wdd_weighted(control, treated, disp_control=None, disp=None, *, alpha: float = 0.05, time_weights=None) -> dict:
    """Harm-weighted WDD from per-incident weights.

    Each argument is a pair ``(weights_before, weights_after)`` of arrays holding one
    weight per incident. Sums replace counts and the Poisson variance of a weighted
    sum is the sum of squared weights, so with one weight per crime type this equals
    :func:`wdd_harm` over per-type :func:`wdd` results.
    """
    tw = (1.0, 1.0) if time_weights is None else tuple(map(float, time_weights))

    def s(pair):
        a, b = (np.asarray(v, float) for v in pair)
        a, b = a / tw[0], b / tw[1]
        return a.sum(), b.sum(), (a ** 2).sum() + (b ** 2).sum()

    c0, c1, vc = s(control)
    t0, t1, vt = s(treated)
    est_l, var_l = (t1 - t0) - (c1 - c0), vc + vt
    if disp is not None and disp_control is not None:
        dc0, dc1, vdc = s(disp_control)
        d0, d1, vd = s(disp)
        est_d, var_d = (d1 - d0) - (dc1 - dc0), vd + vdc
    else:
        est_d, var_d = 0.0, 0.0
    return _wdd_out(est_l, var_l, est_d, var_d, alpha)


def mde_wdd(t0: float, c0: float, c1: float, *, d0: float = 0.0, dc0: float = 0.0, dc1: float = 0.0,
            alpha: float = 0.05, power: float = 0.8) -> dict:
    """Minimum detectable effect of the WDD design for the counts at hand.

    Under no effect the treated after-count is expected at ``E1 = T0 * C1/C0``; the
    WDD's standard error is then ``sqrt(T0 + E1 + C0 + C1 (+ buffers))`` and the
    smallest reduction detectable at ``power`` (two-sided ``alpha``) is
    ``(z_{1-alpha/2} + z_power) * se``. Returned as ``mde_count`` and as a fraction of
    E1 (``mde_fraction``: 0.4 means only a 40 % fall or more can be detected).
    """
    if c0 <= 0 or t0 <= 0:
        return {"expected_after": float("nan"), "mde_count": float("nan"), "mde_fraction": float("nan")}
    e1 = t0 * c1 / c0
    ed1 = d0 * dc1 / dc0 if dc0 > 0 else d0
    se = math.sqrt(t0 + e1 + c0 + c1 + d0 + ed1 + dc0 + dc1)
    k = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return {"expected_after": float(e1), "mde_count": float(k * se), "mde_fraction": float(min(k * se / e1, np.inf)),
            "power": power, "alpha": alpha}


# ----------------------------------------------------------------------------------- regression
def did_regression(panel: pd.DataFrame, *, outcome: str = "y", place: str = "place", period: str = "period",
                   treated: str = "treated", after: str = "after", family: str = "auto",
                   alpha: float = 0.05) -> dict:
    """Difference-in-differences rate ratio from a place x period panel (statsmodels GLM).

    Model ``log E[y] = place + period + b * (treated * after)``. ``family``:
    ``"poisson"``, ``"nb"`` (negative binomial GLM, dispersion alpha from the
    Cameron-Trivedi auxiliary regression on the Poisson fit), ``"quasi"`` (quasi-Poisson, Pearson scale; for harm) or
    ``"auto"`` (negative binomial when the Poisson Pearson dispersion exceeds 1.5 on
    integer outcomes, quasi-Poisson on non-integer ones; the choice and reason are returned).
    Intervals are cluster-robust by place when there are at least 10 places.

    Returns
    -------
    dict: ``rate_ratio``, ``rate_ratio_low``, ``rate_ratio_high``, ``coef``, ``se``, ``p``,
    ``family``, ``family_reason``, ``dispersion``, ``n_obs``, ``n_places``, ``cov``.
    """
    import statsmodels.api as sm

    df = panel[[outcome, place, period, treated, after]].dropna()
    if df.empty:
        raise EmptyInputError("did_regression: the panel is empty")
    y = df[outcome].to_numpy(float)
    if (y < 0).any():
        raise HarmspotError("did_regression: outcomes must be non-negative")
    d = (df[treated].astype(bool) & df[after].astype(bool)).astype(float).to_numpy()
    if d.sum() == 0 or d.sum() == len(d):
        raise HarmspotError("did_regression: need treated-after and other cells in the panel")
    # drop places with all-zero outcomes (their fixed effect is -inf; they carry no information)
    keep_place = df.groupby(place)[outcome].transform("sum").to_numpy(float) > 0
    df, y, d = df[keep_place], y[keep_place], d[keep_place]
    X = pd.get_dummies(df[[place, period]].astype(str), drop_first=True, dtype=float)
    X.insert(0, "treated_after", d)
    X = sm.add_constant(X, has_constant="add")
    groups = pd.factorize(df[place])[0]
    n_places = int(groups.max()) + 1 if len(groups) else 0
    integer = bool(np.allclose(y, np.round(y)))
    pois = sm.GLM(y, X, family=sm.families.Poisson()).fit()
    disp = float(pois.pearson_chi2 / max(pois.df_resid, 1))
    fam, why = family, "as given"
    if family == "auto":
        if not integer:
            fam, why = "quasi", "non-integer outcome (harm): quasi-Poisson"
        elif disp > 1.5:
            fam, why = "nb", f"Poisson dispersion {disp:.2f} > 1.5: negative binomial"
        else:
            fam, why = "poisson", f"Poisson dispersion {disp:.2f} <= 1.5"
    cov = "cluster" if n_places >= 10 else "nonrobust"
    kw = {"cov_type": "cluster", "cov_kwds": {"groups": groups}} if cov == "cluster" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fam == "poisson":
            res = sm.GLM(y, X, family=sm.families.Poisson()).fit(**kw)
        elif fam == "quasi":
            res = sm.GLM(y, X, family=sm.families.Poisson()).fit(scale="X2", **({} if cov == "cluster" else {}))
            if cov == "cluster":
                res = sm.GLM(y, X, family=sm.families.Poisson()).fit(**kw)
        elif fam == "nb":
            # dispersion by the Cameron & Trivedi (1990) auxiliary regression on the Poisson fit:
            # (y - mu)^2 - y = alpha * mu^2 + e  ->  alpha = sum(mu^2 ((y-mu)^2 - y)) / sum(mu^4)
            mu = pois.fittedvalues
            a = float(np.clip(np.sum(mu ** 2 * ((y - mu) ** 2 - y)) / np.sum(mu ** 4), 1e-6, 1e3))
            res = sm.GLM(y, X, family=sm.families.NegativeBinomial(alpha=a)).fit(**kw)
            why += f" (alpha {a:.3f}, Cameron-Trivedi moment estimate)"
        else:
            raise HarmspotError(f"did_regression: family {family!r}: use auto, poisson, nb or quasi")
    b = float(res.params["treated_after"])
    se = float(res.bse["treated_after"])
    lo, hi = _ci(b, se, alpha)
    return {"rate_ratio": math.exp(b), "rate_ratio_low": math.exp(lo), "rate_ratio_high": math.exp(hi),
            "coef": b, "se": se, "p": float(res.pvalues["treated_after"]), "family": fam, "family_reason": why,
            "dispersion": disp, "n_obs": int(len(y)), "n_places": n_places, "cov": cov, "alpha": alpha}


# ----------------------------------------------------------------------------------- SPPT
def sppt(base_counts, test_counts, *, samples: int = 200, share: float = 0.85, conf: float = 0.95,
         seed: int = 0) -> dict:
    """Andresen's Spatial Point Pattern Test similarity index (the ``sppt`` package's method).

    Parameters
    ----------
    base_counts, test_counts : counts per unit (same units, same order) in the base
        (e.g. before) and test (after) periods.
    samples, share : resampling: ``share`` of the test points without replacement,
        ``samples`` times (multivariate hypergeometric draws; vectorised).

    Returns
    -------
    dict: ``s_index`` (share of units whose base percentage lies inside the test's
    interval), ``robust_s_index`` (the same over units with incidents in either
    period), ``table`` DataFrame per unit (base_pct, test_low, test_high, similar, change).
    """
    b = np.asarray(base_counts, np.int64)
    t = np.asarray(test_counts, np.int64)
    if b.shape != t.shape or b.ndim != 1:
        raise HarmspotError("sppt: base and test counts must be 1-d arrays over the same units")
    if b.sum() == 0 or t.sum() == 0:
        raise EmptyInputError("sppt: one of the periods has no incidents in these units")
    rng = np.random.default_rng(seed)
    n = int(round(share * t.sum()))
    draws = rng.multivariate_hypergeometric(t, n, size=samples)
    pct = 100.0 * draws / n
    q = (1 - conf) / 2
    lo = np.quantile(pct, q, axis=0)
    hi = np.quantile(pct, 1 - q, axis=0)
    bp = 100.0 * b / b.sum()
    sim = (bp >= lo) & (bp <= hi)
    change = np.where(sim, 0, np.where(bp < lo, 1, -1))  # +1 test share higher than base
    active = (b > 0) | (t > 0)
    table = pd.DataFrame({"base": b, "test": t, "base_pct": bp, "test_low": lo, "test_high": hi,
                          "similar": sim, "change": change})
    return {"s_index": float(sim.mean()), "robust_s_index": float(sim[active].mean()) if active.any() else float("nan"),
            "units": int(len(b)), "active_units": int(active.sum()), "samples": samples, "share": share,
            "table": table}


# ----------------------------------------------------------------------------------- crossover design
def crossover_place_day(panel: pd.DataFrame, *, lags: int = 2, outcome: str = "y", alpha: float = 0.05) -> dict:
    """Crossover place-day design: treated vs control days within spots (Poisson GLM).

    ``panel``: one row per spot and day with ``spot_id``, ``date``, ``treated`` (bool,
    the Grip schedule) and ``outcome`` (incidents that day). Model
    ``log E[y] = spot + ISO week + day of week + b0 * treated_d + sum_k b_k * treated_{d-k}``:
    ``b0`` the same-day effect, ``b_k`` carry-over from treatment ``k`` days earlier.
    Returns a dict with ``rate_ratio`` (same day), its interval, and ``lags`` (a
    DataFrame: lag, rate_ratio, low, high, p), ``n_obs``, ``n_spots``.
    """
    import statsmodels.api as sm

    need = {"spot_id", "date", "treated", outcome}
    if not need <= set(panel.columns):
        raise HarmspotError(f"crossover panel needs columns {sorted(need)}; got {list(panel.columns)}")
    df = panel.copy()
    df["date"] = pd.to_datetime(df["date"])
    df = df.sort_values(["spot_id", "date"]).reset_index(drop=True)
    df["treated"] = df["treated"].astype(bool).astype(float)
    cols = ["treated"]
    for k in range(1, lags + 1):
        prev = df.groupby("spot_id")["treated"].shift(k)
        gap = (df["date"] - df.groupby("spot_id")["date"].shift(k)).dt.days
        df[f"treated_lag{k}"] = np.where(gap == k, prev, 0.0)
        cols.append(f"treated_lag{k}")
    fx = pd.DataFrame({"spot": df["spot_id"].astype(str),
                       "week": df["date"].dt.strftime("%G-%V"),
                       "dow": df["date"].dt.day_of_week.astype(str)})
    X = pd.concat([df[cols], pd.get_dummies(fx, drop_first=True, dtype=float)], axis=1)
    X = sm.add_constant(X, has_constant="add")
    y = df[outcome].to_numpy(float)
    groups = pd.factorize(df["spot_id"])[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sm.GLM(y, X, family=sm.families.Poisson()).fit(cov_type="cluster", cov_kwds={"groups": groups})
    rows = []
    for k, c in enumerate(cols):
        b, se = float(res.params[c]), float(res.bse[c])
        lo, hi = _ci(b, se, alpha)
        rows.append({"lag": k, "rate_ratio": math.exp(b), "low": math.exp(lo), "high": math.exp(hi),
                     "p": float(res.pvalues[c])})
    lag_t = pd.DataFrame(rows)
    return {"rate_ratio": lag_t["rate_ratio"].iloc[0], "rate_ratio_low": lag_t["low"].iloc[0],
            "rate_ratio_high": lag_t["high"].iloc[0], "lags": lag_t, "n_obs": int(len(df)),
            "n_spots": int(df["spot_id"].nunique()), "alpha": alpha}


# ----------------------------------------------------------------------------------- residual deterrence
def _garwood(k, alpha):
    lo = np.where(k > 0, stats.chi2.ppf(alpha / 2, 2 * k) / 2, 0.0)
    hi = stats.chi2.ppf(1 - alpha / 2, 2 * (k + 1)) / 2
    return lo, hi


def residual_deterrence(visits: pd.DataFrame, incidents: pd.DataFrame, *, baseline_rate: pd.Series | float,
                        window: tuple, bin_hours: float = 6.0, horizon_hours: float = 168.0,
                        alpha: float = 0.05) -> dict:
    """Incident rate by hours since the last visit ended, against the baseline (the "48 hours" question).

    Parameters
    ----------
    visits : DataFrame with ``spot_id``, ``start``, ``end`` (tz-aware or naive UTC
        timestamps), from :func:`geo.patrol.compute_dose`.
    incidents : DataFrame with ``spot_id`` and ``occurred_at`` (incidents inside the
        spots, in the patrol window). Month-only data (no times) raises
        :class:`~geo.errors.MonthOnlyDataError`.
    baseline_rate : incidents per spot-hour with no patrol (e.g. the pre-period rate),
        one number or a Series by spot_id.
    window : (start, end) timestamps of the patrol period analysed.

    Method
    ------
    For every spot the time axis of ``window`` is split into: during a visit, time
    since the last visit ended (binned by ``bin_hours`` up to ``horizon_hours``) and
    before the first visit / beyond the horizon. Exposure (spot-hours) and incidents
    are summed per bin; ``rate_ratio = (n/exposure) / expected`` where ``expected``
    uses each spot's baseline, with an exact Poisson (Garwood) interval. The duration
    of the effect is estimated by profile likelihood: for every cut-off ``h`` on the
    bin edges, fit ``rate = baseline * (r if hours since < h else 1)`` and keep the
    ``h`` with the largest likelihood (``effect_hours``, with ``effect_ratio`` = r).

    Returns
    -------
    dict: ``curve`` DataFrame (bin_start_h, bin_end_h, exposure_h, incidents, expected,
    rate_ratio, low, high), ``during_visit`` dict, ``effect_hours``, ``effect_ratio``,
    ``effect_low``, ``effect_high``, ``profile`` DataFrame (h, loglik).
    """
    if incidents["occurred_at"].isna().any() if len(incidents) else False:
        raise MonthOnlyDataError(
            "residual deterrence needs incident times (hours since the last visit); these incidents have "
            "months only (police.uk). Use the month-level designs instead: evaluate --before/--after "
            "(WDQ/TNE, WDD, difference-in-differences)")
    w0, w1 = (_utc(pd.Series([v])).iloc[0] for v in window)
    total_h = (w1 - w0) / pd.Timedelta(hours=1)
    edges = np.arange(0.0, horizon_hours + bin_hours / 2, bin_hours)
    nb = len(edges) - 1
    v = visits[["spot_id", "start", "end"]].copy()
    v["start"], v["end"] = _utc(v["start"]), _utc(v["end"])
    v = v[(v["end"] > w0) & (v["start"] < w1)].sort_values(["spot_id", "start"])
    spots = pd.Index(sorted(set(v["spot_id"].astype(str))))
    inc = incidents[["spot_id", "occurred_at"]].copy()
    inc["spot_id"] = inc["spot_id"].astype(str)
    inc["t"] = _utc(inc["occurred_at"])
    inc = inc[inc["spot_id"].isin(spots) & (inc["t"] >= w0) & (inc["t"] < w1)]
    if isinstance(baseline_rate, pd.Series):
        base = baseline_rate.reindex(spots).fillna(float(baseline_rate.mean())).to_numpy(float)
    else:
        base = np.full(len(spots), float(baseline_rate))
    si = spots.get_indexer(v["spot_id"].astype(str))
    hrs = lambda s: ((s - w0) / pd.Timedelta(hours=1)).to_numpy(float)  # noqa: E731
    vs, ve = np.clip(hrs(v["start"]), 0, total_h), np.clip(hrs(v["end"]), 0, total_h)
    # gaps: from a visit's end to the next visit's start (or window end), per spot
    nxt = np.r_[vs[1:], np.nan]
    same = np.r_[si[1:] == si[:-1], False]
    gap_end = np.where(same, nxt, total_h)
    gap = np.clip(gap_end - ve, 0, None)
    # exposure per bin: overlap of [0, gap] with each bin, per spot-weighted by baseline
    ov = np.clip(gap[:, None], edges[None, :-1], edges[None, 1:]) - edges[None, :-1]
    exposure = ov.sum(axis=0)
    expected = (ov * base[si][:, None]).sum(axis=0)
    during_exp = float((ve - vs).sum())
    during_expected = float(((ve - vs) * base[si]).sum())
    # incidents: time since last visit end at their spot
    counts = np.zeros(nb)
    during_n = 0
    if len(inc):
        isp = spots.get_indexer(inc["spot_id"])
        it = hrs(inc["t"])
        big = total_h + 10.0
        key_v = si * big + ve
        key_s = si * big + vs
        key_i = isp * big + it
        order = np.argsort(key_v, kind="stable")
        j = np.searchsorted(key_v[order], key_i, side="right") - 1
        has = j >= 0
        jj = order[np.maximum(j, 0)]
        has &= si[jj] == isp
        since = np.where(has, it - ve[jj], np.nan)
        # during a visit: the latest visit started before t has not ended yet
        order_s = np.argsort(key_s, kind="stable")
        k = np.searchsorted(key_s[order_s], key_i, side="right") - 1
        kk = order_s[np.maximum(k, 0)]
        during = (k >= 0) & (si[kk] == isp) & (ve[kk] > it)
        during_n = int(during.sum())
        ok = has & ~during & (since < edges[-1])
        b = np.clip(np.searchsorted(edges, since[ok], side="right") - 1, 0, nb - 1)
        counts = np.bincount(b, minlength=nb).astype(float)
    lo, hi = _garwood(counts, alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        rr = counts / expected
        curve = pd.DataFrame({"bin_start_h": edges[:-1], "bin_end_h": edges[1:], "exposure_h": exposure,
                              "incidents": counts.astype(int), "expected": expected, "rate_ratio": rr,
                              "low": lo / expected, "high": hi / expected})
    # profile likelihood over the cut-off h
    prof = []
    for h_i in range(1, nb):
        m = np.arange(nb) < h_i
        n_in, e_in = counts[m].sum(), expected[m].sum()
        n_out, e_out = counts[~m].sum(), expected[~m].sum()
        r_in = n_in / e_in if e_in > 0 else 1.0
        r_out = n_out / e_out if e_out > 0 else 1.0
        ll = stats.poisson.logpmf(counts, np.where(m, r_in, r_out) * expected + 1e-12).sum()
        prof.append({"h": edges[h_i], "loglik": float(ll), "ratio": r_in, "ratio_after": r_out})
    prof = pd.DataFrame(prof)
    best = prof.loc[prof["loglik"].idxmax()] if len(prof) else None
    out = {"curve": curve, "profile": prof, "bin_hours": bin_hours, "horizon_hours": horizon_hours,
           "during_visit": {"exposure_h": during_exp, "incidents": during_n,
                            "rate_ratio": during_n / during_expected if during_expected > 0 else float("nan")}}
    if best is not None:
        h = float(best["h"])
        m = edges[:-1] < h
        n_in, e_in = counts[m].sum(), expected[m].sum()
        l, u = _garwood(np.array([n_in]), alpha)
        out.update({"effect_hours": h, "effect_ratio": float(n_in / e_in), "effect_low": float(l[0] / e_in),
                    "effect_high": float(u[0] / e_in), "effect_incidents": int(n_in),
                    "ratio_after_effect": float(best["ratio_after"])})
    return out


def _utc(s: pd.Series) -> pd.Series:
    s = pd.to_datetime(s)
    if getattr(s.dt, "tz", None) is None:
        return s.dt.tz_localize("UTC")
    return s.dt.tz_convert("UTC")


# ----------------------------------------------------------------------------------- areas and matching
def _union(g):
    import shapely

    return shapely.union_all(np.asarray(g.geometry.values)) if len(g) else shapely.Polygon()


def _inside(geom, x, y):
    import shapely

    if geom.is_empty:
        return np.zeros(len(x), bool)
    shapely.prepare(geom)
    return shapely.contains_xy(geom, x, y)


def match_controls(incidents, treated, *, buffer_m: float = 100.0, weights=None, area=None, towns=None,
                   town_col: str = "name", cell: float = 150.0, exclude=None) -> tuple[object, pd.DataFrame, list]:
    """Match each treated spot to a control square with similar pre-period counts and harm.

    Candidates are BNG squares of ``cell`` metres covering ``area`` (else the
    incidents' extent) that hold at least one pre-period incident, lie more than
    ``2 * buffer_m`` from any treated spot (so neither the control nor its own buffer
    ring touches the treated spots' buffer) and outside ``exclude``. With ``towns``
    a control must lie in the treated spot's town (by centroid). Matching is greedy
    without replacement, busiest treated spot first, on the Euclidean distance of
    standardised ``log1p(count)`` and ``log1p(harm)``.

    Returns ``(controls GeoDataFrame [spot_id, matched_to, count_before, harm_before,
    distance, geometry], matching table, choices)``.
    """
    import geopandas as gpd
    import shapely

    from .harm import WeightTable
    from .result import Choice
    from .units import SquareGrid

    wt = weights or WeightTable.builtin()
    df = incidents.frame
    if len(df) == 0:
        raise EmptyInputError("automatic controls: no incidents in the before period to match on")
    grid = SquareGrid(cell)
    ix = np.floor(df["x"].to_numpy(float) / cell).astype(np.int64)
    iy = np.floor(df["y"].to_numpy(float) / cell).astype(np.int64)
    w = wt.weights_for(df)
    c = pd.DataFrame({"ix": ix, "iy": iy, "w": w}).groupby(["ix", "iy"]).agg(count=("w", "size"), harm=("w", "sum"))
    c = c.reset_index()
    boxes = shapely.box(c["ix"] * cell, c["iy"] * cell, (c["ix"] + 1) * cell, (c["iy"] + 1) * cell)
    cand = gpd.GeoDataFrame({"spot_id": grid.ids(c["ix"], c["iy"]), "count_before": c["count"],
                             "harm_before": c["harm"]}, geometry=boxes, crs=treated.crs)
    zone = _union(treated).buffer(2 * buffer_m)
    keep = ~shapely.intersects(zone, cand.geometry.values)
    if exclude is not None and len(exclude):
        keep &= ~shapely.intersects(_union(exclude), cand.geometry.values)
    if area is not None:
        ag = area.union_all() if hasattr(area, "union_all") else area
        keep &= shapely.within(cand.geometry.centroid.values, ag)
    cand = cand[keep].reset_index(drop=True)
    # treated spots' own pre-period counts
    tp = treated.copy()
    tpos = _assign(tp, df)
    ok = tpos >= 0
    tp["count_before"] = np.bincount(tpos[ok], minlength=len(tp))
    tp["harm_before"] = np.bincount(tpos[ok], weights=w[ok], minlength=len(tp))
    town_t = town_c = None
    if towns is not None:
        tg = towns.to_crs(treated.crs)
        town_t = _town_of(tg, tp.geometry.centroid.values, town_col)
        town_c = _town_of(tg, cand.geometry.centroid.values, town_col)
    ft = np.c_[np.log1p(tp["count_before"]), np.log1p(tp["harm_before"])]
    fc = np.c_[np.log1p(cand["count_before"]), np.log1p(cand["harm_before"])]
    sd = np.r_[ft, fc].std(axis=0)
    sd[sd == 0] = 1.0
    ft, fc = ft / sd, fc / sd
    used = np.zeros(len(cand), bool)
    rows = []
    for i in np.argsort(-tp["count_before"].to_numpy(), kind="stable"):  # one loop per treated spot
        dist = np.hypot(*(fc - ft[i]).T)
        bad = used.copy()
        if town_t is not None:
            bad |= town_c != town_t[i]
        dist = np.where(bad, np.inf, dist)
        j = int(np.argmin(dist)) if len(dist) else -1
        if j < 0 or not np.isfinite(dist[j]):
            rows.append({"treated_id": tp["spot_id"].iloc[i], "control_id": None, "distance": np.nan})
            continue
        used[j] = True
        rows.append({"treated_id": tp["spot_id"].iloc[i], "treated_count": int(tp["count_before"].iloc[i]),
                     "treated_harm": float(tp["harm_before"].iloc[i]), "control_id": cand["spot_id"].iloc[j],
                     "control_count": int(cand["count_before"].iloc[j]),
                     "control_harm": float(cand["harm_before"].iloc[j]), "distance": float(dist[j]),
                     "town": None if town_t is None else town_t[i]})
    m = pd.DataFrame(rows)
    if m["control_id"].isna().all():
        raise EmptyInputError("automatic controls: no candidate squares outside the treated buffers"
                              + (" in the same towns" if towns is not None else ""))
    ctrl = cand.set_index("spot_id").loc[m["control_id"].dropna()].reset_index()
    ctrl["matched_to"] = m.dropna(subset=["control_id"])["treated_id"].to_numpy()
    ctrl["distance"] = m.dropna(subset=["control_id"])["distance"].to_numpy()
    choices = [Choice("controls", f"{len(ctrl)} matched {cell:g} m squares",
                      f"nearest on pre-period log counts and harm among {len(cand):,} squares more than "
                      f"{2 * buffer_m:g} m from treated spots" + (", same town" if towns is not None else ""))]
    unmatched = int(m["control_id"].isna().sum())
    if unmatched:
        choices.append(Choice("unmatched treated spots", unmatched, "no candidate left (in the same town)"))
    return ctrl[["spot_id", "matched_to", "count_before", "harm_before", "distance", "geometry"]], m, choices


def _town_of(towns, pts, col):
    import shapely

    tree = shapely.STRtree(towns.geometry.values)
    pi, ti = tree.query(pts, predicate="within")
    out = np.full(len(pts), None, dtype=object)
    out[pi[::-1]] = towns[col].astype(str).to_numpy()[ti[::-1]]
    return out


def _assign(spots, df) -> np.ndarray:
    """Position of each incident's spot (first spot wins on shared edges), -1 outside all."""
    import shapely

    if len(df) == 0 or len(spots) == 0:
        return np.full(len(df), -1, np.int64)
    tree = shapely.STRtree(spots.geometry.values)
    pi, si = tree.query(shapely.points(df["x"].to_numpy(float), df["y"].to_numpy(float)), predicate="intersects")
    out = np.full(len(df), -1, np.int64)
    order = np.lexsort((-si, pi))[::-1]  # write lowest spot index last
    out[pi[order]] = si[order]
    return out


def _to_local(t: pd.Series, tz: str = "Europe/London") -> pd.Series:
    t = pd.to_datetime(t)
    if getattr(t.dt, "tz", None) is None:
        return t
    return t.dt.tz_convert(tz).dt.tz_localize(None)


def evaluate_areas(incidents, treated, control=None, *, id_col: str = "spot_id", control_id_col: str | None = None,
                   buffer_m: float = 100.0, before, after, weights=None, categories=None, area=None, towns=None,
                   town_col: str = "name", visits: pd.DataFrame | None = None, schedule: pd.DataFrame | None = None,
                   alpha: float = 0.05, mde_threshold: float = 0.4, sppt_samples: int = 200, seed: int = 0,
                   bin_hours: float = 6.0, horizon_hours: float = 168.0, family: str = "auto",
                   max_places_monthly: int = 60):
    """Did harm fall in the patrolled places compared with similar places, without moving next door?

    Parameters
    ----------
    incidents : IncidentTable (any period; filtered here).
    treated : GeoDataFrame of treated spot polygons with ``id_col``.
    control : GeoDataFrame of control polygons (``control_id_col``, default ``id_col``),
        or None / "auto" for automatic matching (:func:`match_controls`).
    buffer_m : width of the displacement / diffusion ring around the treated spots
        (default 100 m; the ring excludes treated and control spots). The controls get
        their own ring for the WDD's displacement control.
    before, after : geo.period.Period.
    weights : WeightTable for harm (default national CCHI).
    categories : police.uk crime types to include (default all).
    towns : optional town polygons for same-town matching.
    visits : visits table (from :func:`geo.patrol.compute_dose`) for residual deterrence
        (needs incident times).
    schedule : Grip crossover schedule (spot_id, date, treated) for the place-day design
        (needs incident dates).
    max_places_monthly : above this many treated + control places the regression uses a
        place x (before, after) panel instead of place x month (echoed as a choice).

    Returns
    -------
    AnalysisResult
        ``layer``: areas (area_id, role = treated | control | treated_buffer |
        control_buffer, count_before, count_after, harm_before, harm_after, geometry).
        ``summary``: ``counts`` and ``harm``, each with before/after totals per role,
        ``pct_change_treated``, ``pct_change_control``, ``pct_change_buffer``, ``wdq``,
        ``wdq_interpretation``, ``tne``, ``wdd``, ``wdd_se``, ``wdd_z``, ``wdd_p``,
        ``wdd_low``, ``wdd_high``, ``wdd_local``, ``wdd_displace``, ``rate_ratio``,
        ``rate_ratio_low``, ``rate_ratio_high``, ``did_family``, ``did_p``,
        ``mde_fraction``; ``sppt`` (s_index, robust_s_index), ``residual`` and
        ``crossover`` when asked for, ``warnings`` (plain-language caveats).
        ``tables``: ``series`` (month x role), ``panel``, ``matching``, ``sppt``,
        ``decay``, ``decay_profile``, ``crossover``, ``statistics``.
    """
    import geopandas as gpd

    from .harm import WeightTable
    from .patrol import spot_frame
    from .result import AnalysisResult, Choice

    choices = []
    wt = weights
    if wt is None:
        wt = WeightTable.builtin()
        choices.append(Choice("weight table", wt.name, "default harm table"))
    T = spot_frame(treated, id_col, name="treated")
    inc = incidents.filter(categories=categories) if categories else incidents
    both = _period_union(before, after)
    inc_all = inc.filter(period=both)
    inc_b = inc.filter(period=before)
    inc_a = inc.filter(period=after)
    if len(inc_b) == 0:
        raise EmptyInputError(f"no incidents in the before period {before.label()}")
    if len(inc_a) == 0:
        raise EmptyInputError(f"no incidents in the after period {after.label()}")
    matching = pd.DataFrame()
    if control is None or (isinstance(control, str) and control == "auto"):
        C, matching, mch = match_controls(inc_b, T, buffer_m=buffer_m, weights=wt, area=area, towns=towns,
                                          town_col=town_col)
        C = C.rename(columns={})
        choices += mch
    else:
        C = spot_frame(control, control_id_col or id_col, name="control")
    UT, UC = _union(T), _union(C)
    ring_t = UT.buffer(buffer_m).difference(UT).difference(UC)
    ring_c = UC.buffer(buffer_m).difference(UC).difference(UT).difference(ring_t)
    choices.append(Choice("buffer", f"{buffer_m:g} m", "ring around the treated spots, excluding treated and "
                          "control spots", automatic=False))
    roles = {"treated": UT, "treated_buffer": ring_t, "control": UC, "control_buffer": ring_c}

    def sums(table):
        df = table.frame
        x, y = df["x"].to_numpy(float), df["y"].to_numpy(float)
        w = wt.weights_for(df)
        out = {}
        for r, g in roles.items():
            m = _inside(g, x, y)
            out[r] = (int(m.sum()), w[m])
        return out

    sb, sa = sums(inc_b), sums(inc_a)
    # ---- per-place monthly panel (treated + control spots)
    places = pd.concat([T.assign(role="treated"), C[["spot_id", "geometry"]].assign(role="control")],
                       ignore_index=True)
    df = inc_all.frame
    pos = _assign(places, df)
    months = before.months + [m for m in after.months if m not in before.months]
    mi = pd.Index(months).get_indexer(df["month"].astype(str))
    ok = (pos >= 0) & (mi >= 0)
    w_all = wt.weights_for(df)
    n_p, n_m = len(places), len(months)
    flat = pos[ok] * n_m + mi[ok]
    cnt = np.bincount(flat, minlength=n_p * n_m).reshape(n_p, n_m)
    hrm = np.bincount(flat, weights=w_all[ok], minlength=n_p * n_m).reshape(n_p, n_m)
    after_m = np.isin(months, after.months) & ~np.isin(months, before.months)
    panel = pd.DataFrame({"place": np.repeat(places["spot_id"].to_numpy(), n_m),
                          "role": np.repeat(places["role"].to_numpy(), n_m),
                          "period": np.tile(months, n_p), "after": np.tile(after_m, n_p),
                          "count": cnt.ravel(), "harm": hrm.ravel()})
    panel["treated"] = panel["role"] == "treated"
    warn = []
    have = set(df["month"].astype(str))
    empty_months = [m for m in months if m not in have]
    if empty_months:
        nb_ = sum(m in before.months and m not in empty_months for m in months)
        na_ = sum(m in after.months and m not in before.months and m not in empty_months for m in months)
        warn.append(f"no incidents at all in {len(empty_months)} month(s) of the periods ({', '.join(empty_months)}): "
                    f"missing data, not zero crime. The before period has {nb_} and the after period {na_} months "
                    "with data, so totals (% change, TNE, WDD) compare unequal spans; the regression leaves the "
                    "empty months out. Choose periods with the same number of months with data.")
        panel = panel[~panel["period"].isin(empty_months)].reset_index(drop=True)
    n_before = sum(m in before.months and m not in empty_months for m in months)
    n_after = sum(m in after.months and m not in before.months and m not in empty_months for m in months)
    time_w = None
    if n_before != n_after and n_before and n_after:
        time_w = (n_before / n_after, 1.0)
        choices.append(Choice("WDD time weights", f"{n_before}/{n_after} : 1",
                              f"the before period has {n_before} and the after period {n_after} months with data: "
                              "WDD counts are put on the after period's length (Wheeler's time weights)"))
    if n_p > max_places_monthly:
        # a place x month fixed-effects GLM with hundreds of places is slow (dense IRLS); the before/after
        # collapse keeps place effects and the DiD term (for Poisson the point estimate is unchanged)
        did_panel = panel.groupby(["place", "role", "treated", "after"], as_index=False)[["count", "harm"]].sum()
        did_panel["period"] = np.where(did_panel["after"], "after", "before")
        choices.append(Choice("regression panel", "place x before/after",
                              f"{n_p} places > {max_places_monthly}: months summed within each period"))
    else:
        did_panel = panel

    def block(kind):
        if kind == "counts":
            g = {r: (sb[r][0], sa[r][0]) for r in roles}
            pairs = None
        else:
            g = {r: (float(sb[r][1].sum()), float(sa[r][1].sum())) for r in roles}
            pairs = {r: (sb[r][1], sa[r][1]) for r in roles}
        (t0, t1), (b0, b1), (c0, c1), (dc0, dc1) = (g["treated"], g["treated_buffer"], g["control"],
                                                    g["control_buffer"])
        q = wdq(t0, t1, b0, b1, c0, c1)
        if kind == "counts":
            wd = wdd((c0, c1), (t0, t1), (dc0, dc1), (b0, b1), alpha=alpha, time_weights=time_w)
        else:
            wd = wdd_weighted(pairs["control"], pairs["treated"], pairs["control_buffer"], pairs["treated_buffer"],
                              alpha=alpha, time_weights=time_w)
        try:
            did = did_regression(did_panel, outcome="count" if kind == "counts" else "harm", family=family,
                                 alpha=alpha)
        except HarmspotError as exc:
            did = {"rate_ratio": float("nan"), "rate_ratio_low": float("nan"), "rate_ratio_high": float("nan"),
                   "family": None, "p": float("nan"), "family_reason": str(exc)}
            warn.append(f"{kind}: regression not fitted ({exc})")
        out = {f"{r}_before": v[0] for r, v in g.items()} | {f"{r}_after": v[1] for r, v in g.items()}
        out.update({
            "pct_change_treated": pct_change(t0, t1), "pct_change_control": pct_change(c0, c1),
            "pct_change_buffer": pct_change(b0, b1),
            "wdq": q["wdq"], "wdq_interpretation": q["interpretation"], "tne": tne(t0, t1, b0, b1, c0, c1),
            "wdd": wd["wdd"], "wdd_se": wd["wdd_se"], "wdd_z": wd["z"], "wdd_p": wd["p"], "wdd_low": wd["low"],
            "wdd_high": wd["high"], "wdd_local": wd["est_local"], "wdd_displace": wd["est_displace"],
            "rate_ratio": did["rate_ratio"], "rate_ratio_low": did["rate_ratio_low"],
            "rate_ratio_high": did["rate_ratio_high"], "did_family": did["family"],
            "did_family_reason": did.get("family_reason"), "did_p": did["p"],
        })
        if kind == "counts":
            m = mde_wdd(t0, c0, c1, d0=b0, dc0=dc0, dc1=dc1, alpha=alpha)
            out["mde_fraction"] = m["mde_fraction"]
            out["mde_count"] = m["mde_count"]
            if not np.isfinite(m["mde_fraction"]) or m["mde_fraction"] > mde_threshold:
                warn.append(f"with these counts the design can only detect a change of at least "
                            f"{100 * m['mde_fraction']:.0f}% in the treated places (80% power); smaller "
                            "effects may be real but undetectable: pool more spots or a longer period")
        return out

    counts, harm = block("counts"), block("harm")
    if len(matching) and counts["treated_before"] > 0:
        r = counts["control_before"] / counts["treated_before"]
        if not 0.5 <= r <= 2.0:
            warn.append(f"the matched controls had {100 * r:.0f}% of the treated places' before-period incidents: "
                        "no similar places were left outside the buffers, so the comparison is weak; give controls "
                        "(--control FILE), a smaller --buffer, or towns with more candidate places")
    if counts["treated_before"] < 30:
        warn.append(f"only {counts['treated_before']} incidents in the treated places before: percentage changes "
                    "are unstable")
    # ---- SPPT over treated + control spots (before = base, after = test)
    try:
        sp = sppt(cnt[:, ~after_m].sum(axis=1), cnt[:, after_m].sum(axis=1), samples=sppt_samples, seed=seed)
        sp_table = sp.pop("table")
        sp_table.insert(0, "place", places["spot_id"].to_numpy())
        sp_table.insert(1, "role", places["role"].to_numpy())
    except EmptyInputError as exc:
        sp, sp_table = {"s_index": float("nan"), "note": str(exc)}, pd.DataFrame()
    series = panel.groupby(["period", "role"])[["count", "harm"]].sum().reset_index()
    # buffer ring series
    x, y = df["x"].to_numpy(float), df["y"].to_numpy(float)
    for r in ("treated_buffer", "control_buffer"):
        m = _inside(roles[r], x, y) & (mi >= 0)
        s = pd.DataFrame({"period": np.asarray(months)[mi[m]], "w": w_all[m]}).groupby("period")["w"].agg(
            ["size", "sum"]).reindex(months, fill_value=0).reset_index()
        series = pd.concat([series, pd.DataFrame({"period": s["period"], "role": r, "count": s["size"],
                                                  "harm": s["sum"]})], ignore_index=True)
    summary = {"counts": counts, "harm": harm, "sppt": sp, "warnings": warn, "buffer_m": buffer_m,
               "treated_spots": int(len(T)), "control_spots": int(len(C)),
               "before": before.to_dict(), "after": after.to_dict(),
               "has_times": bool(incidents.has_times)}
    tables = {"series": series, "panel": panel, "matching": matching, "sppt": sp_table}
    # ---- residual deterrence (needs times)
    if visits is not None:
        if not inc_all.has_times:
            raise MonthOnlyDataError(
                "residual deterrence (hours since the last visit) needs incident times, but these incidents "
                "have months only (police.uk). Run the month-level designs instead: drop --visits (WDQ/TNE, "
                "WDD and difference-in-differences by month are still computed)")
        tpos = _assign(T, inc_a.frame)
        ta = inc_a.frame[tpos >= 0]
        tb = inc_b.frame
        bpos = _assign(T, tb)
        hours_b = before.days * 24.0
        base = pd.Series(np.bincount(bpos[bpos >= 0], minlength=len(T)) / hours_b, index=T["spot_id"])
        vv = visits[visits["spot_id"].astype(str).isin(set(T["spot_id"]))]
        w0 = pd.Timestamp(after.start).tz_localize("Europe/London")
        w1 = (pd.Timestamp(after.end) + pd.Timedelta(days=1)).tz_localize("Europe/London")
        res = residual_deterrence(vv, pd.DataFrame({"spot_id": T["spot_id"].to_numpy()[tpos[tpos >= 0]],
                                                    "occurred_at": ta["occurred_at"].to_numpy()}),
                                  baseline_rate=base, window=(w0, w1), bin_hours=bin_hours,
                                  horizon_hours=horizon_hours, alpha=alpha)
        tables["decay"] = res.pop("curve")
        tables["decay_profile"] = res.pop("profile")
        summary["residual"] = res
        choices.append(Choice("decay baseline", "before-period rate of each treated spot",
                              "incidents per spot-hour with no patrol"))
    if schedule is not None:
        if not inc_all.has_times:
            raise MonthOnlyDataError(
                "the crossover place-day design needs incident dates, but these incidents have months only "
                "(police.uk). Use the month-level before/after designs (drop --schedule)")
        from .patrol import _plan_frame

        sch = _plan_frame(schedule)
        sids = pd.Index(sorted(set(sch["spot_id"])))
        spots_all = places.drop_duplicates("spot_id").set_index("spot_id")
        missing = [s for s in sids if s not in spots_all.index]
        if missing:
            raise HarmspotError(f"schedule: {len(missing)} spot ids are not among the treated/control spots; "
                                f"first {missing[0]!r}")
        sg = gpd.GeoDataFrame({"spot_id": sids}, geometry=spots_all.loc[sids, "geometry"].values, crs=T.crs)
        f = inc.frame
        sp_pos = _assign(sg, f)
        d = _to_local(f["occurred_at"]).dt.normalize().dt.date
        day_counts = pd.DataFrame({"spot_id": sids.to_numpy()[sp_pos[sp_pos >= 0]],
                                   "date": d[sp_pos >= 0].to_numpy()}).value_counts().rename("y")
        sch["y"] = day_counts.reindex(pd.MultiIndex.from_arrays([sch["spot_id"], sch["date"]])).fillna(0).to_numpy()
        co = crossover_place_day(sch, alpha=alpha)
        tables["crossover"] = co.pop("lags")
        summary["crossover"] = co
    stat_rows = []
    for kind, blk in (("counts", counts), ("harm", harm)):
        for k, v in blk.items():
            stat_rows.append({"measure": kind, "statistic": k, "value": v})
    tables["statistics"] = pd.DataFrame(stat_rows)
    # ---- layer
    lay = []
    for r, geom in roles.items():
        lay.append({"area_id": r, "role": r, "count_before": sb[r][0], "count_after": sa[r][0],
                    "harm_before": float(sb[r][1].sum()), "harm_after": float(sa[r][1].sum()), "geometry": geom})
    pc = panel.groupby(["place", "role", "after"])[["count", "harm"]].sum().unstack("after", fill_value=0)
    for (pid, role), row in pc.iterrows():
        geom = places.loc[places["spot_id"] == pid, "geometry"].iloc[0]
        lay.append({"area_id": pid, "role": role + "_spot", "count_before": int(row[("count", False)]),
                    "count_after": int(row[("count", True)]), "harm_before": float(row[("harm", False)]),
                    "harm_after": float(row[("harm", True)]), "geometry": geom})
    layer = gpd.GeoDataFrame(lay, geometry="geometry", crs=T.crs)
    params = {"buffer_m": buffer_m, "before": before.label(), "after": after.label(), "alpha": alpha,
              "categories": list(categories) if categories else "all", "controls": "auto" if len(matching) else "given",
              "family": family, "mde_threshold": mde_threshold}
    return AnalysisResult(kind="evaluation", layer=layer, params=params, choices=choices,
                          weight_table=wt.describe(), period=_period_union(before, after),
                          inputs={"incidents": len(inc_all)}, tables=tables, summary=summary)


def _period_union(a, b):
    from .period import Period

    return Period(min(a.start, b.start), max(a.end, b.end))
