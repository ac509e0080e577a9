"""Regression designs: difference-in-differences on treated and control places (statsmodels GLM, cluster-
robust errors) and the place-day crossover model for Grip-style alternating schedules.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from geo.core.errors import EmptyInputError, HarmspotError
from geo.evaluation.stats import _ci


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
