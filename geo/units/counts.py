"""Harm-weighted counts per unit (and per unit per time window).

The one entry point the foundation offers analysts: :func:`count_units`.
Counts are always reported beside harm.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from geo.core.harm import WeightTable
from geo.core.incidents.table import IncidentTable
from geo.core.period import Period
from geo.core.result import AnalysisResult, Choice
from geo.units.lattice import SquareGrid, group_sum, window_index


def resolve_defaults(units=None, weights: WeightTable | None = None) -> tuple:
    """``(units, weights, choices)``: the 150 m BNG square and the default CCHI table where not given,
    each automatic pick announced as a :class:`Choice`."""
    choices = []
    if units is None:
        units = SquareGrid(150.0)
        choices.append(Choice("cell size", "150 m", "default BNG square, the Grip harm-spot size"))
    if weights is None:
        weights = WeightTable.builtin()
        choices.append(Choice("weight table", weights.name, "default harm table"))
    return units, weights, choices


def count_units(
    incidents: IncidentTable,
    units=None,
    weights: WeightTable | None = None,
    *,
    area=None,
    period: Period | None = None,
    categories=None,
    clip: bool = True,
    by_category: bool = False,
    inputs: dict | None = None,
) -> AnalysisResult:
    """Count incidents and sum their harm per unit.

    Parameters
    ----------
    incidents : IncidentTable
    units : SquareGrid | H3Units | PolygonUnits, default ``SquareGrid(150)``
    weights : WeightTable, default the shipped national CCHI table
    area : BNG polygon or GeoDataFrame, optional
        The study area. Units are those that intersect it (zero units included).
        With ``clip=True`` incidents outside it (accepted within the border
        tolerance) are not counted and their number is reported, never dropped quietly.
    period, categories : optional filters.

    Returns
    -------
    AnalysisResult
        ``layer``: GeoDataFrame with ``cell_id``, ``count``, ``harm`` and geometry
        (plus ``count_<category>`` columns when ``by_category``).
        ``summary``: ``incidents`` counted, ``outside_area`` not counted, totals.
    """
    units, weights, choices = resolve_defaults(units, weights)
    sel = incidents.filter(period=period, categories=categories)
    df = sel.frame
    outside = 0
    if area is not None and clip and len(df):
        import shapely

        geom = area.union_all() if hasattr(area, "union_all") else area
        shapely.prepare(geom)
        inside = shapely.contains_xy(geom, df["x"].to_numpy(float), df["y"].to_numpy(float))
        outside = int((~inside).sum())
        df = df.loc[inside]
    frame, code = units.locate(df, area)
    not_in_unit = int((code < 0).sum())
    w = weights.weights_for(df)
    n = len(frame)
    layer = frame[["cell_id", "geometry"]].copy()
    layer["count"] = group_sum(code, n).astype(np.int64)
    layer["harm"] = group_sum(code, n, w)
    if by_category:
        cats = df["category"].astype(str).to_numpy()
        for c in sorted(set(cats)):
            m = cats == c
            layer[f"count_{c}"] = group_sum(code[m], n).astype(np.int64)
    layer = layer[["cell_id", "count", "harm"] + [c for c in layer.columns if c.startswith("count_")] + ["geometry"]]
    summary = {
        "units": int(n),
        "incidents": int(len(df) - not_in_unit),
        "harm": float(layer["harm"].sum()),
        "outside_area": outside,
        "not_in_any_unit": not_in_unit,
        "by_category": {str(k): int(v) for k, v in df["category"].value_counts().items()},
    }
    params = {**units.describe(), "categories": list(categories) if categories else "all", "clip": clip}
    return AnalysisResult(
        kind="cells",
        layer=layer,
        params=params,
        choices=choices,
        weight_table=weights.describe(),
        period=period,
        inputs={**(inputs or {}), "incidents_in_period": int(len(sel))},
        summary=summary,
    )


def unit_window_matrix(
    incidents: IncidentTable,
    units,
    unit_frame,
    freq: str = "M",
    weights: WeightTable | None = None,
    start=None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Counts and harm as (n_units, n_windows) arrays for a fixed set of units.

    Returns ``(counts, harm, window_labels)``. One ``bincount`` on the combined
    unit × window code: no loop per unit or window.
    """
    df = incidents.frame
    code = units.assign(df, unit_frame)
    widx, labels = window_index(df, freq, start=start)
    n, t = len(unit_frame), len(labels)
    ok = (code >= 0) & (widx >= 0) & (widx < t)
    flat = code[ok] * t + widx[ok]
    counts = np.bincount(flat, minlength=n * t).reshape(n, t)
    w = (weights or WeightTable.builtin()).weights_for(df)[ok]
    harm = np.bincount(flat, weights=w, minlength=n * t).reshape(n, t)
    return counts, harm, labels


def top_location_label(incidents: IncidentTable, units, unit_frame) -> pd.Series:
    """Most common police.uk ``Location`` label among each unit's incidents (index = cell_id)."""
    df = incidents.frame
    code = units.assign(df, unit_frame)
    ok = code >= 0
    if not ok.any():
        return pd.Series(dtype="string")
    t = pd.DataFrame({"cell_id": unit_frame["cell_id"].to_numpy()[code[ok]],
                      "location": df["location"].to_numpy()[ok]}).dropna()
    if t.empty:
        return pd.Series(dtype="string")
    vc = t.value_counts(["cell_id", "location"]).reset_index(name="n")
    vc = vc.sort_values(["cell_id", "n", "location"], ascending=[True, False, True])
    return vc.drop_duplicates("cell_id").set_index("cell_id")["location"]
