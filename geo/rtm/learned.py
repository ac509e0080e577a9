"""Learned risk (beyond RTMDx) and an honest comparison with classic RTM and a plain KDE.

The analyst question: *does a flexible model of the same risk factors anticipate
the next period's incidents better than the RTM, or than simply mapping where
incidents were?*

Learned risk
------------
A scikit-learn ``HistGradientBoostingRegressor`` with Poisson loss predicts the
count per cell from, for every factor, the distance from the cell centre to the
nearest feature and the kernel density of the features at each RTM spatial
influence (the same quantities RTM thresholds into 0/1 variables, kept
continuous). The model runs with one OpenMP thread: on shared machines
scikit-learn's OpenMP threads oversubscribe the cores and fitting ran about 20
times slower with two threads than with one. Hyperparameters are fixed in :data:`HGB_PARAMS` (not tuned: there is
no tuning on the held-out period, and early stopping uses a slice of the
*training* cells only). Explanations: permutation importance (drop in Poisson
deviance on training cells, ``sklearn.inspection.permutation_importance``) and
partial dependence of the top features (``sklearn.inspection.partial_dependence``).

Comparison
----------
All three are fitted on the training period only and scored on a later,
held-out period: classic RTM (its relative risk score), learned risk (predicted
count) and a KDE of the training incidents (quartic kernel, bandwidth two blocks
by default). For the top 1% and 5% of the study area's cells by each score:

* hit rate = share of held-out incidents in those cells;
* PAI (Chainey, Tompson & Uhlig 2008) = hit rate / area share.

Ties (RTM scores are heavily tied) are split fairly: cells tied at the cut-off
count in proportion to the area still to fill, so no model gains from an
arbitrary ordering. The winner at each area share is the higher PAI; the
overall winner the higher mean PAI over the shares. One held-out period is one
draw: small differences are noise, and the report says so.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from geo.core.errors import EmptyInputError
from geo.core.result import AnalysisResult, Choice


#: Fixed hyperparameters for the learned model (chosen a priori, never on held-out data).
HGB_PARAMS = dict(loss="poisson", learning_rate=0.05, max_iter=300, max_leaf_nodes=15, min_samples_leaf=40,
                  l2_regularization=1.0, early_stopping=True, validation_fraction=0.2, n_iter_no_change=20)
AREA_SHARES = (0.01, 0.05)


# ================================================================ features & model
def learned_features(grid, cands, factors, distances) -> pd.DataFrame:
    """Continuous features per in-area cell: ``dist_<factor>`` (m) and ``dens_<factor>_<d>``
    (features per km^2, quartic kernel of radius d) for each RTM distance d."""
    from geo.rtm.model import distance_to_nearest, feature_density

    cols = {}
    for f in factors:
        dist = cands.nearest.get(f.name) if cands is not None else None
        cols[f"dist_{f.name}"] = dist if dist is not None else distance_to_nearest(grid, f.xy)
        for d in distances:
            dens = (cands.density.get(f.name, {}).get(float(d)) if cands is not None else None)
            if dens is None:
                dens = feature_density(grid, f.xy, d)
            cols[f"dens_{f.name}_{float(d):g}"] = dens * 1e6
    return pd.DataFrame(cols)


def fit_learned(F: pd.DataFrame, y, seed: int = 0):
    """Fit the gradient-boosted Poisson model (fixed :data:`HGB_PARAMS`)."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    from threadpoolctl import threadpool_limits

    model = HistGradientBoostingRegressor(random_state=seed, **HGB_PARAMS)
    # numpy, not the DataFrame: sklearn's pandas path is ~20x slower here; names kept on the side
    with threadpool_limits(1):  # see module docstring: OpenMP oversubscription
        model.fit(np.asarray(F, float), np.asarray(y, float))
    model.feature_names_ = list(F.columns)
    return model


def explain_learned(model, F: pd.DataFrame, y, *, seed: int = 0, sample: int = 4_000, n_repeats: int = 3,
                    top: int = 4) -> tuple[pd.DataFrame, dict]:
    """Permutation importances (Poisson deviance) and partial dependence of the top features.

    Returns ``(importances, pdp)``: importances has ``feature``, ``factor``,
    ``importance`` (mean drop in Poisson deviance), ``sd``; ``pdp`` maps a feature
    to ``{"grid": [...], "average": [...]}`` (expected count per cell).
    """
    from sklearn.inspection import partial_dependence, permutation_importance

    rng = np.random.default_rng(seed)
    idx = rng.choice(len(F), size=min(sample, len(F)), replace=False)
    Fs, ys = np.asarray(F, float)[idx], np.asarray(y, float)[idx]
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        pi = permutation_importance(model, Fs, ys, scoring="neg_mean_poisson_deviance", n_repeats=n_repeats,
                                    random_state=seed)
    imp = pd.DataFrame({"feature": F.columns, "importance": pi.importances_mean, "sd": pi.importances_std})
    imp["factor"] = imp["feature"].str.replace(r"^(dist|dens)_", "", regex=True).str.replace(r"_[0-9.]+$", "",
                                                                                              regex=True)
    imp = imp.sort_values("importance", ascending=False).reset_index(drop=True)
    pdp = {}
    with threadpool_limits(1):
        for feat in imp["feature"].head(top):
            j = list(F.columns).index(feat)
            # brute force: the average *prediction* (expected count), not the log-link value 'recursion' returns
            try:
                r = partial_dependence(model, Fs, [j], grid_resolution=25, kind="average", method="brute",
                                       percentiles=(0.0, 0.95))
            except ValueError:  # mostly-zero densities: the 0-95% percentiles coincide; use the full range
                if np.ptp(Fs[:, j]) == 0:
                    continue
                r = partial_dependence(model, Fs, [j], grid_resolution=25, kind="average", method="brute",
                                       percentiles=(0, 1))
            pdp[feat] = {"grid": np.asarray(r["grid_values"][0], float).tolist(),
                         "average": np.asarray(r["average"][0], float).tolist()}
    return imp[["feature", "factor", "importance", "sd"]], pdp


# ========================================================================= metrics
def hits_at_area(score, y_test, area_share: float) -> tuple[float, float]:
    """Held-out incidents captured by the top ``area_share`` of cells, ties split fairly.

    Returns ``(hits, cells)`` where ``cells = area_share * n``; cells tied at the
    cut-off contribute ``hits_tied * (cells still to fill) / tied``.
    """
    s = np.asarray(score, float)
    y = np.asarray(y_test, float)
    n = len(s)
    k = area_share * n
    if k <= 0:
        return 0.0, 0.0
    order = np.sort(s)[::-1]
    kth = order[min(int(np.ceil(k)) - 1, n - 1)]
    above = s > kth
    tied = s == kth
    a = int(above.sum())
    t = int(tied.sum())
    hits = y[above].sum() + (y[tied].sum() * (k - a) / t if t else 0.0)
    return float(hits), float(k)


def hit_rate_pai(score, y_test, area_share: float) -> dict:
    """Hit rate and PAI of a score at an area share (see :func:`hits_at_area`).

    ``hit_rate = hits / all held-out incidents``; ``pai = hit_rate / area_share``.
    """
    total = float(np.asarray(y_test, float).sum())
    hits, cells = hits_at_area(score, y_test, area_share)
    hr = hits / total if total else float("nan")
    return {"area_share": area_share, "cells": cells, "hits": hits, "hit_rate": hr,
            "pai": hr / area_share if total else float("nan")}


# ======================================================================= question
def compare_risk_models(incidents, factors, area, *, train_period, test_period, cell: float | None = None,
                        block: float | None = None, categories=None, seed: int = 0, cv: int = 5,
                        kde_bandwidth: float | None = None, area_shares=AREA_SHARES, progress=None,
                        rtm_fit=None, cv_scheme: str = "spatial", cv_block: float | None = None) -> AnalysisResult:
    """Which anticipates the held-out period best: classic RTM, learned risk or a KDE?

    Parameters
    ----------
    incidents : IncidentTable
        Must cover both periods.
    factors : list of FactorLayer
    area : GeoDataFrame or geometry (BNG)
    train_period, test_period : geo.core.period.Period
        Models see only ``train_period``; ``test_period`` must start after it ends.
    cell, block : float, optional
        As :func:`geo.rtm.model.risk_terrain` (defaults 50 m and 100 m, echoed).
    cv, cv_scheme, cv_block
        Lasso cross-validation of the RTM fitted on the training period, as
        :func:`geo.rtm.model.risk_terrain` (default spatial blocks, echoed).
    kde_bandwidth : float, optional
        KDE bandwidth; default two blocks (echoed). Fixed a priori.
    area_shares : tuple of float
        Shares of the area at which hit rate and PAI are reported (1%, 5%).

    Returns
    -------
    AnalysisResult
        ``kind="risk_comparison"``; ``layer`` the learned risk raster (expected
        incidents per cell per training period); ``extra_layers`` ``rtm_rrs`` and
        ``kde`` rasters; ``tables``: ``comparison`` (model, area_share, cells, hits,
        hit_rate, pai), ``importances``, ``rtm_factors``; ``summary``: ``winner``
        (overall), ``winner_by_area``, ``comparison`` records, ``partial_dependence``,
        ``train_incidents``, ``test_incidents``, ``learned_iterations``.
    """
    from geo.rtm.model import (RTMError, RTMGrid, build_candidates, cv_choice, feature_density, fit_rtm, resolve_cell_block, spatial_influences)

    cell, block, choices = resolve_cell_block(cell, block)
    if kde_bandwidth is None:
        kde_bandwidth = 2 * block
        choices.append(Choice("KDE bandwidth", f"{kde_bandwidth:g} m", "two blocks, fixed before seeing the held-out "
                                                                          "period"))
    if test_period.start <= train_period.end:
        raise RTMError(f"the held-out period ({test_period.label()}) must start after the training period "
                       f"({train_period.label()}) ends")
    distances = spatial_influences(block)
    tr = incidents.filter(period=train_period, categories=categories)
    te = incidents.filter(period=test_period, categories=categories)
    if len(tr) == 0 or len(te) == 0:
        raise EmptyInputError(f"comparison needs incidents in both periods; training {train_period.label()} has "
                              f"{len(tr)}, held-out {test_period.label()} has {len(te)}")
    grid = RTMGrid.from_area(area, cell, pad_m=max(max(distances), kde_bandwidth))
    y_tr, _ = grid.counts(tr.frame["x"].to_numpy(), tr.frame["y"].to_numpy())
    y_te, _ = grid.counts(te.frame["x"].to_numpy(), te.frame["y"].to_numpy())
    cands = build_candidates(grid, factors, distances, progress=progress)
    if rtm_fit is None:
        fit = fit_rtm(cands, y_tr, cv=cv, seed=seed, progress=progress, cv_scheme=cv_scheme, cv_block=cv_block)
        choices.append(cv_choice(fit.lasso, cv, distances, cell))
    else:
        fit = rtm_fit
    rrs = fit.rrs()
    if progress:
        progress(0, 2, "learned risk: gradient boosting")
    F = learned_features(grid, cands, factors, distances)
    model = fit_learned(F, y_tr, seed=seed)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        learned = model.predict(np.asarray(F, float))
    if progress:
        progress(1, 2, "learned risk: permutation importance")
    imp, pdp = explain_learned(model, F, y_tr, seed=seed)
    kde = feature_density(grid, tr.frame[["x", "y"]].to_numpy(float), kde_bandwidth)
    if progress:
        progress(2, 2, "scoring the held-out period")
    rows = []
    for name, score in (("classic RTM", rrs), ("learned risk (gradient boosting)", learned),
                        ("KDE of past incidents", kde)):
        for a in area_shares:
            rows.append({"model": name, **hit_rate_pai(score, y_te, a)})
    comp = pd.DataFrame(rows)
    by_area = {f"{a:.0%}": comp[comp["area_share"] == a].sort_values("pai", ascending=False)["model"].iloc[0]
               for a in area_shares}
    mean_pai = comp.groupby("model")["pai"].mean().sort_values(ascending=False)
    winner = mean_pai.index[0]
    margin = float(mean_pai.iloc[0] - mean_pai.iloc[1]) if len(mean_pai) > 1 else float("nan")
    summary = {
        "winner": winner, "winner_by_area": by_area, "mean_pai": mean_pai.to_dict(), "margin_mean_pai": margin,
        "comparison": comp.to_dict("records"), "partial_dependence": pdp,
        "train_period": train_period.to_dict(), "test_period": test_period.to_dict(),
        "train_incidents": int(y_tr.sum()), "test_incidents": int(y_te.sum()), "cells": grid.n,
        "learned_iterations": int(model.n_iter_), "rtm_distribution": fit.family,
        "rtm_factors": fit.table.drop(columns=["variable"]).to_dict("records"),
        "kde_bandwidth_m": float(kde_bandwidth),
    }
    params = {"cell_m": float(cell), "block_m": float(block), "distances_m": distances, "seed": seed,
              "cv_scheme": fit.lasso.get("cv_scheme"), "cv_block_m": fit.lasso.get("cv_block_m"),
              "hgb_params": HGB_PARAMS, "kde_bandwidth_m": float(kde_bandwidth), "area_shares": list(area_shares),
              "categories": list(categories) if categories else "all"}
    return AnalysisResult(
        kind="risk_comparison",
        layer=grid.raster(learned, nodata=-1.0, name="learned_expected_count", units="incidents per cell"),
        params=params, choices=choices, period=train_period,
        inputs={"factors": [f.describe() for f in factors], "train_incidents": len(tr), "test_incidents": len(te)},
        tables={"comparison": comp, "importances": imp, "rtm_factors": fit.table},
        summary=summary,
        extra_layers={"rtm_rrs": grid.raster(rrs, nodata=0.0, name="relative_risk_score"),
                      "kde": grid.raster(kde * 1e6, nodata=-1.0, name="kde_incidents_per_km2")},
    )
