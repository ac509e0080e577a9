"""How well would last period's hot spots have caught this period's crime or harm?

Predictive accuracy of a hot spot layer built on period T, scored against incidents
in T+1 (Chainey, Tompson & Uhlig 2008; Hunt 2016):

* **hit rate** :math:`HR = n/N`: the share of T+1 incidents (or harm) inside the
  flagged units;
* **PAI** (Predictive Accuracy Index) :math:`= (n/N) / (a/A)`: hit rate per share
  of the area flagged;
* **PEI** (Predictive Efficiency Index, Hunt 2016) :math:`= n / n^*`: hits over
  the most hits any selection of the same area could have made (units ranked by
  their T+1 value per area), i.e. PAI over the best possible PAI at that area.

Units are ranked by their score (highest first; ties by the order given, which is
deterministic). "At 1% of the area" means the top units whose area adds up to no
more than 1% of the total (at least one unit); the achieved share is reported and
PAI uses it. The curve gives all three at every number of units.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from geo.core.errors import EmptyInputError, HarmspotError
from geo.core.result import AnalysisResult, Choice


DEFAULT_SHARES = (0.01, 0.05)


def accuracy_curve(score, observed, area=None) -> pd.DataFrame:
    """Hit rate, PAI and PEI after flagging the top 1, 2, ... units by ``score``.

    Parameters
    ----------
    score : array (n,) - the prediction (higher = hotter), from period T.
    observed : array (n,) - incidents (or harm) in T+1 per unit.
    area : array (n,), optional - unit areas (default: equal areas).

    Returns
    -------
    DataFrame with ``units`` (k), ``area_share``, ``hits`` (observed in the top k),
    ``hit_rate``, ``pai``, ``best_hits`` (the most any selection of that area could
    catch), ``pei``.
    """
    score = np.asarray(score, float)
    obs = np.asarray(observed, float)
    n = score.size
    if n == 0 or obs.size != n:
        raise EmptyInputError(f"accuracy needs matching non-empty arrays; got {score.size} scores, {obs.size} observed")
    a = np.ones(n) if area is None else np.asarray(area, float)
    if (a <= 0).any():
        raise HarmspotError("unit areas must be > 0")
    total, atot = obs.sum(), a.sum()
    if total <= 0:
        raise EmptyInputError("nothing was observed in the test period: hit rate and PAI are undefined")
    order = np.argsort(-score, kind="stable")
    hits = np.cumsum(obs[order])
    share = np.cumsum(a[order]) / atot
    # best possible hits at each area share: units by observed per area, cumulative, interpolated
    best_order = np.argsort(-(obs / a), kind="stable")
    best_share = np.concatenate([[0.0], np.cumsum(a[best_order]) / atot])
    best_hits = np.interp(share, best_share, np.concatenate([[0.0], np.cumsum(obs[best_order])]))
    hr = hits / total
    with np.errstate(divide="ignore", invalid="ignore"):
        pei = np.where(best_hits > 0, hits / best_hits, np.nan)
    return pd.DataFrame({"units": np.arange(1, n + 1), "area_share": share, "hits": hits, "hit_rate": hr,
                         "pai": hr / share, "best_hits": best_hits, "pei": pei})


def accuracy_at(curve: pd.DataFrame, shares=DEFAULT_SHARES) -> pd.DataFrame:
    """Rows of the curve at each share of area: the top units within the share (at least one)."""
    rows = []
    for s in shares:
        if not 0 < s <= 1:
            raise HarmspotError(f"area share {s!r} must be in (0, 1]")
        k = int(np.searchsorted(curve["area_share"].to_numpy(), s * (1 + 1e-12), side="right"))
        r = curve.iloc[max(k, 1) - 1].to_dict()
        rows.append({"share": s, **r, "units": int(r["units"])})
    return pd.DataFrame(rows)


def predictive_accuracy(
    incidents,
    units=None,
    weights=None,
    *,
    train,
    test,
    area=None,
    categories=None,
    methods=("count", "harm", "kde", "gistar"),
    measure: str = "count",
    shares=DEFAULT_SHARES,
    bandwidth: float | None = None,
    band: float | None = None,
    inputs: dict | None = None,
    neighbour_cache=None,
) -> AnalysisResult:
    """How well do hot spots from ``train`` predict ``test``? Compares methods on the same units.

    Methods (each gives a score per unit from the training period): ``count``
    (incidents), ``harm`` (harm sum), ``kde`` (harm-weighted KDE at the unit centre),
    ``kde_count`` (count KDE), ``gistar`` (Gi* z of counts), ``gistar_harm`` (Gi* z of harm).

    Parameters
    ----------
    measure : {"count", "harm"}
        What the test period's hits are counted in: incidents or harm.
    shares : area shares for the summary table (default 1% and 5%).
    bandwidth : KDE bandwidth (default ArcGIS rule on the training incidents, echoed).
    band : Gi* distance band (default cell * sqrt(2) for squares).
    neighbour_cache : :class:`geo.units.neighbours.cache.NeighbourCache`, optional - H3/polygon matrices built once and reused.

    Returns
    -------
    AnalysisResult
        ``layer``: units with ``cell_id``, ``observed`` (test), one ``score_<method>`` per
        method, geometry. ``tables``: ``summary`` (method x share: units, area_share,
        hit_rate, pai, pei) and ``curve`` (method, units, area_share, hit_rate, pai, pei).
        ``summary``: the summary table as records.
    """
    import geopandas as gpd

    from geo.hotspots.change import unit_totals
    from geo.hotspots.gistar import gistar_z
    from geo.units.neighbours.build import neighbours_for
    from geo.units.counts import resolve_defaults
    from geo.hotspots.kde import bandwidth_rule, kde_exact

    known = ("count", "harm", "kde", "kde_count", "gistar", "gistar_harm")
    bad = [m for m in methods if m not in known]
    if bad:
        raise HarmspotError(f"--methods: unknown {bad}; use any of {', '.join(known)}")
    if measure not in ("count", "harm"):
        raise HarmspotError(f"--measure {measure!r}: use 'count' or 'harm'")
    units, weights, choices = resolve_defaults(units, weights)
    tr = incidents.filter(period=train, categories=categories).frame
    if area is not None:
        import shapely

        geom = area.union_all() if hasattr(area, "union_all") else area
        shapely.prepare(geom)
        tr = tr.loc[shapely.contains_xy(geom, tr["x"].to_numpy(float), tr["y"].to_numpy(float))]
    if len(tr) < 2:
        raise EmptyInputError(f"only {len(tr)} incidents in the training period {train.label()}")
    te = incidents.filter(period=test, categories=categories).frame
    pts = pd.concat([tr, te])
    frame = units.frame(area, pts[["lon", "lat"]].to_numpy(float) if units.kind == "h3"
                        else pts[["x", "y"]].to_numpy(float))
    c_tr, h_tr, _ = unit_totals(incidents, units, frame, weights, period=train, categories=categories, area=area)
    c_te, h_te, _ = unit_totals(incidents, units, frame, weights, period=test, categories=categories, area=area)
    observed = c_te if measure == "count" else h_te
    unit_area = frame.geometry.area.to_numpy()
    scores = {}
    cen = frame.geometry.centroid
    if any(m.startswith("kde") for m in methods):
        if bandwidth is None:
            bandwidth = round(bandwidth_rule(tr["x"].to_numpy(), tr["y"].to_numpy()), 1)
            choices.append(Choice("KDE bandwidth", f"{bandwidth:g} m", "ArcGIS default search radius on the training data"))
        w_tr = weights.weights_for(tr)
        for m, w in (("kde", w_tr), ("kde_count", None)):
            if m in methods:
                scores[m] = kde_exact(tr["x"].to_numpy(), tr["y"].to_numpy(), w, cen.x.to_numpy(), cen.y.to_numpy(),
                                      bandwidth, "quartic")
    if any(m.startswith("gistar") for m in methods):
        nb, nch = neighbours_for(units, _with_index(units, frame), band=band, cache=neighbour_cache)
        choices += nch
        if "gistar" in methods:
            scores["gistar"] = np.nan_to_num(gistar_z(c_tr, nb), nan=-np.inf)
        if "gistar_harm" in methods:
            scores["gistar_harm"] = np.nan_to_num(gistar_z(h_tr, nb), nan=-np.inf)
    if "count" in methods:
        scores["count"] = c_tr.astype(float)
    if "harm" in methods:
        scores["harm"] = h_tr
    if observed.sum() <= 0:
        raise EmptyInputError(f"no incidents in the test period {test.label()}")
    curves, summ = [], []
    for m in methods:
        c = accuracy_curve(scores[m], observed, unit_area)
        curves.append(c.assign(method=m))
        summ.append(accuracy_at(c, shares).assign(method=m))
    curve = pd.concat(curves, ignore_index=True)
    table = pd.concat(summ, ignore_index=True)[["method", "share", "units", "area_share", "hit_rate", "pai", "pei"]]
    layer = gpd.GeoDataFrame({"cell_id": frame["cell_id"].to_numpy(), "observed": observed,
                              **{f"score_{m}": scores[m] for m in methods}},
                             geometry=frame.geometry.values, crs=frame.crs)
    params = {**units.describe(), "train": train.to_dict(), "test": test.to_dict(), "methods": list(methods),
              "measure": measure, "shares": list(shares), "bandwidth_m": bandwidth, "band_m": band,
              "categories": list(categories) if categories else "all"}
    summary = {"table": table.to_dict("records"), "incidents_train": int(c_tr.sum()),
               "incidents_test": int(c_te.sum()), "units": int(len(frame))}
    return AnalysisResult(kind="accuracy", layer=layer, params=params, choices=choices,
                          weight_table=weights.describe(), period=test, inputs=inputs or {},
                          tables={"summary": table, "curve": curve[["method", "units", "area_share", "hits",
                                                                     "hit_rate", "pai", "pei"]]},
                          summary=summary)


def _with_index(units, frame):
    if units.kind == "h3" and "h3" not in frame:
        from geo.units.h3 import H3Units

        return frame.assign(h3=H3Units.from_str(frame["cell_id"]))
    return frame
