"""Zipped ESRI Shapefiles for older GIS: BNG, 10-character field names from a fixed table
(``SHP_FIELD_NAMES``) or a stated rule, with the full-name mapping written beside the layer.
"""
from __future__ import annotations

import csv
import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from geo import BNG


# ================================================================================== Shapefile
#: Documented full-name -> DBF name mapping for harmspot's long attribute names (10-char limit).
#: Names of 10 characters or fewer are kept as they are; names not listed are shortened by
#: :func:`shapefile_field_names` (first 10 characters, clashes get ``_2``, ``_3``... endings).
SHP_FIELD_NAMES = {
    "target_minutes": "target_min",
    "target_visits_per_day": "target_vpd",
    "visits_per_day": "visits_day",
    "minutes_per_visit": "min_visit",
    "max_gap_days": "max_gap_d",
    "cum_share_harm": "cum_sh_hrm",
    "cum_share_area": "cum_sh_are",
    "count_recent": "count_rcnt",
    "count_earlier": "count_earl",
    "trend_ratio": "trend_rat",
    "gistar_class": "gi_class",
    "gistar_p_adj": "gi_p_adj",
    "incident_share": "inc_share",
    "night_share_offences": "night_off",
    "night_share_fear": "night_fear",
    "rr_offences": "rr_offence",
    "top_reasons": "top_reason",
    "patrol_windows": "patrol_win",
    "patrol_window": "patrol_win",
    "share_count": "share_cnt",
    "cumulative_share": "cum_share",
    "cumulative_harm": "cum_harm",
    "harm_previous": "harm_prev",
    "count_previous": "count_prev",
    "harm_change": "harm_chg",
    "count_change": "count_chg",
    "incidents_in_period": "inc_period",
    "relative_risk": "rel_risk",
    "risk_score": "risk_score",
    "confidence": "confidence",
    "p_value_sim": "p_sim",
    "z_score": "z_score",
    "gi_zscore": "gi_z",
    "gi_pvalue": "gi_p",
    "gi_class": "gi_class",
    "hotspot_class": "hs_class",
    "location_label": "loc_label",
    "description": "descr",
    "easting": "easting",
    "northing": "northing",
    "longitude": "longitude",
    "latitude": "latitude",
    "drivers": "drivers",
    "quadrant": "quadrant",
    "harm_density": "harm_dens",
    "count_density": "cnt_dens",
    "outside_area": "outside",
}


def shapefile_field_names(columns) -> dict:
    """Full attribute name -> a unique DBF field name of at most 10 characters.

    Rule: keep names of <= 10 characters; else use :data:`SHP_FIELD_NAMES`; else replace
    characters DBF readers dislike by ``_`` and keep the first 10; a clash gets ``_2``, ``_3``...
    (shortening the stem so the result still has <= 10 characters). Case-insensitive clashes
    count (the DBF format is).
    """
    out, used = {}, set()
    for c in columns:
        c = str(c)
        if len(c) <= 10:
            cand = c
        elif c in SHP_FIELD_NAMES:
            cand = SHP_FIELD_NAMES[c]
        else:
            cand = re.sub(r"[^0-9A-Za-z_]", "_", c)[:10]
        base, k = cand, 2
        while cand.lower() in used:
            suf = f"_{k}"
            cand = base[: 10 - len(suf)] + suf
            k += 1
        used.add(cand.lower())
        out[c] = cand
    return out


def write_shapefile_zip(gdf, path, *, layer_name: str | None = None) -> Path:
    """A zipped ESRI Shapefile (EPSG:27700) with ``fields.csv`` (full name -> DBF name).

    Text longer than 254 characters is cut by the DBF format; lists become text. Mixed
    geometry types cannot share one Shapefile: polygons and multipolygons are written as
    multipolygons.
    """
    import tempfile

    import pyogrio

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if gdf.crs is None:
        gdf = gdf.set_crs(BNG)
    g = gdf.to_crs(BNG)
    attrs = [c for c in g.columns if c != g.geometry.name]
    mapping = shapefile_field_names(attrs)
    g = g.rename(columns=mapping)
    for c in mapping.values():
        if g[c].dtype == object:
            g[c] = g[c].map(lambda v: ", ".join(map(str, v)) if isinstance(v, (list, tuple, np.ndarray)) else v)
        elif pd.api.types.is_bool_dtype(g[c]):
            g[c] = g[c].astype("Int64")
    stem = re.sub(r"[^0-9A-Za-z_-]", "_", layer_name or p.stem)
    with tempfile.TemporaryDirectory() as td:
        shp = Path(td) / f"{stem}.shp"
        kw = {}
        types = set(g.geom_type.dropna())
        if types and types <= {"Polygon", "MultiPolygon"} and len(types) > 1:
            kw["promote_to_multi"] = True
        pyogrio.write_dataframe(g, shp, driver="ESRI Shapefile", encoding="UTF-8", **kw)
        fields = io.StringIO()
        w = csv.writer(fields)
        w.writerow(["attribute", "shapefile_field"])
        for full, short in mapping.items():
            w.writerow([full, short])
        with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(Path(td).iterdir()):
                z.write(f, f.name)
            z.writestr("fields.csv", fields.getvalue())
    return p
