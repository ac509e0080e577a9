"""What changed between two periods, per unit, and the tasking table.

* :func:`change_between`: counts and harm before/after, the difference, a per-unit
  E-test for two Poisson counts (Krishnamoorthy & Thomson 2004, via statsmodels'
  ``test_poisson_2indep(method="etest")``) with multiple-testing control, and the
  Jaccard overlap of the top-N units of the two periods.
* :func:`tasking_table`: the short ranked table a tasking meeting reads.

The E-test compares the two incident *counts* as Poisson rates per day
(exposures = the periods' lengths in days, so unequal periods are allowed). It
tests counts, not harm: harm is a weighted sum, not Poisson. The harm columns are
reported beside it, and the harm difference is descriptive.

Reference: K. Krishnamoorthy and J. Thomson (2004), "A more powerful test for
comparing two Poisson means", Journal of Statistical Planning and Inference
119(1), 23-35.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from geo.core.errors import EmptyInputError, HarmspotError
from geo.core.result import AnalysisResult, Choice


def poisson_etest(c1, c2, exposure1: float = 1.0, exposure2: float = 1.0) -> np.ndarray:
    """Two-sided E-test p-values for counts ``c1`` (exposure1) vs ``c2`` (exposure2), element-wise.

    Uses statsmodels' ``test_poisson_2indep(method="etest")``, evaluated once per
    distinct pair of counts (crime counts repeat a lot, so this is fast). Both zero -> p = 1.
    """
    from statsmodels.stats.rates import test_poisson_2indep

    c1 = np.asarray(c1, np.int64)
    c2 = np.asarray(c2, np.int64)
    if (c1 < 0).any() or (c2 < 0).any():
        raise HarmspotError("E-test counts must be >= 0")
    if not (exposure1 > 0 and exposure2 > 0):
        raise HarmspotError(f"E-test exposures must be > 0; got {exposure1}, {exposure2}")
    pairs, inv = np.unique(np.column_stack([c1, c2]), axis=0, return_inverse=True)
    p = np.ones(len(pairs))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for k, (a, b) in enumerate(pairs):
            if a == 0 and b == 0:
                continue
            p[k] = test_poisson_2indep(int(a), float(exposure1), int(b), float(exposure2), method="etest").pvalue
    return np.minimum(p[np.ravel(inv)], 1.0)


def jaccard_top(ids, score_a, score_b, n: int) -> tuple[float, list, list]:
    """Jaccard overlap |A ∩ B| / |A ∪ B| of the top-``n`` ids by two scores (zero scores never enter)."""
    ids = np.asarray(ids)
    a = _top_ids(ids, score_a, n)
    b = _top_ids(ids, score_b, n)
    union = set(a) | set(b)
    return (len(set(a) & set(b)) / len(union) if union else float("nan")), a, b


def _top_ids(ids, score, n):
    score = np.asarray(score, float)
    order = np.lexsort((ids, -score))  # highest score first, ties by id
    order = order[score[order] > 0][:n]
    return list(ids[order])


def units_frame_like(units, layer):
    """A unit frame ``units.assign`` accepts, rebuilt from a result layer (cell_id + geometry)."""
    kind = getattr(units, "kind", "square")
    f = layer[["cell_id", "geometry"]].copy()
    if kind == "square":
        from geo.units.neighbours.build import square_index

        f["ix"], f["iy"] = square_index(layer, units.cell)
    elif kind == "h3":
        from geo.units.h3 import H3Units

        f["h3"] = H3Units.from_str(layer["cell_id"])
    return f


def unit_totals(incidents, units, frame, weights, *, period=None, categories=None, area=None):
    """(count, harm, outside_area) per unit of ``frame`` for one period."""
    from geo.units.lattice import group_sum

    df = incidents.filter(period=period, categories=categories).frame
    outside = 0
    if area is not None and len(df):
        import shapely

        geom = area.union_all() if hasattr(area, "union_all") else area
        shapely.prepare(geom)
        inside = shapely.contains_xy(geom, df["x"].to_numpy(float), df["y"].to_numpy(float))
        outside = int((~inside).sum())
        df = df.loc[inside]
    code = units.assign(df, frame)
    n = len(frame)
    return group_sum(code, n).astype(np.int64), group_sum(code, n, weights.weights_for(df)), outside


def change_between(
    incidents,
    units=None,
    weights=None,
    *,
    before,
    after,
    area=None,
    categories=None,
    top: int = 20,
    rank_by: str = "harm",
    adjust: str = "fdr",
    alpha: float = 0.05,
    inputs: dict | None = None,
) -> AnalysisResult:
    """What changed between ``before`` and ``after`` in each unit?

    Parameters
    ----------
    incidents : IncidentTable (holding both periods)
    units : SquareGrid | H3Units | PolygonUnits, default ``SquareGrid(150)``
    weights : WeightTable, default national CCHI
    before, after : Period
    area : study area (units intersecting it; incidents outside not counted, reported)
    top : int
        N for the top-N overlap (Jaccard) between the periods.
    rank_by : {"harm", "count"}
    adjust : {"fdr", "bonferroni", "none"}
        Multiple-testing control of the per-unit E-test p-values.
    alpha : float
        Level for ``change`` labels (on adjusted p).

    Returns
    -------
    AnalysisResult
        ``layer``: every unit with ``cell_id``, ``count_before``, ``count_after``,
        ``count_diff`` (after - before), ``harm_before``, ``harm_after``, ``harm_diff``,
        ``etest_p`` (two-sided, rates per day), ``etest_p_adj``, ``change``
        ("significant increase" / "significant decrease" / "no significant change") and geometry.
        ``tables``: ``top_before`` / ``top_after`` (top-N by ``rank_by``).
        ``summary``: totals per period, units up/down, ``jaccard_top_n``, ``top_n``.
    """
    import geopandas as gpd

    from geo.units.counts import resolve_defaults
    from geo.hotspots.significance import adjust_pvalues

    if rank_by not in ("harm", "count"):
        raise HarmspotError(f"--rank-by {rank_by!r}: use 'harm' or 'count'")
    if top < 1:
        raise HarmspotError(f"--top must be >= 1; got {top}")
    units, weights, choices = resolve_defaults(units, weights)
    both = pd.concat([incidents.filter(period=p, categories=categories).frame for p in (before, after)])
    if area is None and len(both) == 0:
        raise EmptyInputError("no incidents in either period")
    pts = both[["lon", "lat"]].to_numpy(float) if units.kind == "h3" else both[["x", "y"]].to_numpy(float)
    frame = units.frame(area, pts)
    cb, hb, ob = unit_totals(incidents, units, frame, weights, period=before, categories=categories, area=area)
    ca, ha, oa = unit_totals(incidents, units, frame, weights, period=after, categories=categories, area=area)
    if cb.sum() + ca.sum() == 0:
        raise EmptyInputError("no incidents in the units in either period")
    p = poisson_etest(cb, ca, float(before.days), float(after.days))
    p_adj = adjust_pvalues(p, adjust)
    rate_up = ca / after.days > cb / before.days
    lab = np.where(p_adj <= alpha, np.where(rate_up, "significant increase", "significant decrease"),
                   "no significant change")
    layer = gpd.GeoDataFrame({
        "cell_id": frame["cell_id"].to_numpy(), "count_before": cb, "count_after": ca, "count_diff": ca - cb,
        "harm_before": hb, "harm_after": ha, "harm_diff": ha - hb, "etest_p": p, "etest_p_adj": p_adj,
        "change": lab}, geometry=frame.geometry.values, crs=frame.crs)
    key_b = hb if rank_by == "harm" else cb
    key_a = ha if rank_by == "harm" else ca
    jac, top_b, top_a = jaccard_top(layer["cell_id"].to_numpy(), key_b, key_a, top)
    cols = ["cell_id", "count_before", "count_after", "harm_before", "harm_after", "change"]
    tables = {"top_before": layer.set_index("cell_id").loc[top_b].reset_index()[cols],
              "top_after": layer.set_index("cell_id").loc[top_a].reset_index()[cols]}
    if before.days != after.days:
        choices.append(Choice("exposure", f"{before.days} vs {after.days} days",
                              "periods differ in length: the E-test compares rates per day", automatic=True))
    summary = {"units": int(len(layer)), "count_before": int(cb.sum()), "count_after": int(ca.sum()),
               "harm_before": float(hb.sum()), "harm_after": float(ha.sum()),
               "significant_increase": int((lab == "significant increase").sum()),
               "significant_decrease": int((lab == "significant decrease").sum()),
               "top_n": int(top), "jaccard_top_n": jac, "rank_by": rank_by,
               "outside_area": {"before": ob, "after": oa}}
    params = {**units.describe(), "before": before.to_dict(), "after": after.to_dict(), "test": "Poisson E-test "
              "(Krishnamoorthy & Thomson 2004) on counts, rates per day", "adjust": adjust, "alpha": alpha,
              "top": top, "rank_by": rank_by, "categories": list(categories) if categories else "all"}
    return AnalysisResult(kind="change", layer=layer, params=params, choices=choices,
                          weight_table=weights.describe(), period=after, inputs=inputs or {}, tables=tables,
                          summary=summary)


def tasking_table(layer, *, by: str = "harm", top: int = 10, previous: pd.DataFrame | None = None,
                  labels: pd.Series | None = None) -> pd.DataFrame:
    """The top-``top`` units for a tasking meeting.

    Parameters
    ----------
    layer : a Gi* layer (``cell_id``, ``count``, ``harm``, ``gistar_z``, ``gistar_class``).
    by : {"harm", "count"}
        Ranking variable (ties broken by Gi* z, then cell id).
    previous : DataFrame with ``cell_id``, ``count``, ``harm`` for the previous period of equal length.
    labels : Series cell_id -> most common police.uk ``Location`` label.

    Returns
    -------
    DataFrame with ``rank``, ``cell_id``, ``count``, ``harm``, ``gistar_z``, ``gistar_class``,
    ``count_prev``, ``harm_prev``, ``count_change``, ``harm_change`` (when ``previous``),
    ``location`` (when ``labels``).
    """
    if by not in ("harm", "count"):
        raise HarmspotError(f"tasking table: by={by!r}; use 'harm' or 'count'")
    t = pd.DataFrame(layer.drop(columns=layer.geometry.name) if hasattr(layer, "geometry") else layer)
    z = t["gistar_z"].fillna(-np.inf) if "gistar_z" in t else pd.Series(0.0, index=t.index)
    order = np.lexsort((t["cell_id"].to_numpy(), -z.to_numpy(), -t[by].to_numpy(float)))
    t = t.iloc[order[:top]].reset_index(drop=True)
    keep = [c for c in ("cell_id", "count", "harm", "gistar_z", "gistar_class") if c in t]
    t = t[keep]
    if previous is not None:
        prev = previous.set_index("cell_id")
        t["count_prev"] = prev["count"].reindex(t["cell_id"]).fillna(0).astype(np.int64).to_numpy()
        t["harm_prev"] = prev["harm"].reindex(t["cell_id"]).fillna(0.0).to_numpy()
        t["count_change"] = t["count"] - t["count_prev"]
        t["harm_change"] = t["harm"] - t["harm_prev"]
    if labels is not None:
        t["location"] = labels.reindex(t["cell_id"]).to_numpy()
    t.insert(0, "rank", np.arange(1, len(t) + 1))
    return t
