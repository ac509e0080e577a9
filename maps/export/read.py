"""Reading exported layers back (``read_layer``, ``read_meta``) and telling what a layer is (spots, Gi*
cells, zones, a surface) and which columns name, value and class its features.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from geo import BNG, WGS84
from geo.core.errors import HarmspotError
from geo.core.result import Raster
from maps.export.formats import RASTER_EXTS, ExportError


# ================================================================================== reading
@dataclass
class LayerFile:
    """A layer read back from any harmspot output, with its sidecar metadata."""

    path: Path
    data: object  # GeoDataFrame (BNG) | Raster
    meta: dict = field(default_factory=dict)
    layer_name: str | None = None
    others: dict = field(default_factory=dict)  # other layers in the same GeoPackage: name -> GeoDataFrame

    @property
    def is_raster(self) -> bool:
        return isinstance(self.data, Raster)

    @property
    def kind(self) -> str:
        return layer_kind(self.data, self.meta)

    def __len__(self) -> int:
        return 1 if self.is_raster else len(self.data)


def read_meta(path) -> dict:
    """The ``<path>.meta.json`` sidecar written by :func:`write_result` ({} when absent)."""
    side = Path(str(path) + ".meta.json")
    if side.exists():
        try:
            return json.loads(side.read_text())
        except json.JSONDecodeError as exc:
            raise ExportError(f"{side}: not valid JSON ({exc})") from exc
    return {}


def read_layer(path, layer: str | None = None, *, all_layers: bool = False) -> LayerFile:
    """Read a harmspot output (.gpkg/.geojson/.json/.csv/.parquet/.tif) back, vectors in BNG.

    A CSV needs ``easting``/``northing`` (BNG) or ``longitude``/``latitude`` (WGS84) columns
    (as :func:`csv_frame` writes): it becomes points. A GeoTIFF becomes a :class:`Raster`
    (band 1; nodata and the ``harmspot`` metadata tag kept). With ``all_layers`` every other
    layer of a GeoPackage is read into ``others``.
    """
    p = Path(path)
    if not p.exists():
        raise ExportError(f"{p}: no such file")
    try:
        return _read_layer(p, layer, all_layers)
    except HarmspotError:
        raise
    except Exception as exc:  # GDAL/pyogrio/rasterio/pandas errors: name the file, keep the reason
        raise ExportError(f"{p}: cannot be read as a layer ({type(exc).__name__}: {str(exc)[:200]})") from exc


def _read_layer(p: Path, layer, all_layers) -> LayerFile:
    import geopandas as gpd

    ext = p.suffix.lower()
    meta = read_meta(p)
    if ext in RASTER_EXTS:
        import rasterio

        with rasterio.open(p) as src:
            arr = src.read(1).astype("float64")
            tags = src.tags()
            r = Raster(arr, src.transform, crs=src.crs.to_string() if src.crs else BNG, nodata=src.nodata,
                       name=src.descriptions[0] or "value", units=src.tags(1).get("units", ""))
        if not meta and "harmspot" in tags:
            try:
                meta = json.loads(tags["harmspot"])
            except json.JSONDecodeError:
                meta = {}
        return LayerFile(p, r, meta, None)
    if ext == ".csv":
        df = pd.read_csv(p)
        cols = {c.lower(): c for c in df.columns}
        if "easting" in cols and "northing" in cols:
            xy, crs = (df[cols["easting"]], df[cols["northing"]]), BNG
        elif "longitude" in cols and "latitude" in cols:
            xy, crs = (df[cols["longitude"]], df[cols["latitude"]]), WGS84
        else:
            raise ExportError(f"{p}: a CSV layer needs easting/northing or longitude/latitude columns; "
                              f"found {', '.join(map(str, df.columns[:12]))}")
        bad = xy[0].isna() | xy[1].isna()
        if bad.any():
            raise ExportError(f"{p}: {int(bad.sum())} row(s) have no coordinates; first at data row "
                              f"{int(np.flatnonzero(bad.to_numpy())[0]) + 1}")
        gdf = gpd.GeoDataFrame(df, geometry=gpd.points_from_xy(*xy), crs=crs).to_crs(BNG)
        return LayerFile(p, gdf, meta, None)
    if ext == ".parquet":
        gdf = gpd.read_parquet(p)
    elif ext in (".gpkg", ".geojson", ".json", ".shp", ".zip", ".kml", ".fgb"):
        import pyogrio

        src = f"/vsizip/{p}" if ext == ".zip" else str(p)
        names = [n for n, g in pyogrio.list_layers(src) if g is not None] if ext == ".gpkg" else []
        if layer is None and names:
            layer = names[0]
        if layer is not None and names and layer not in names:
            raise ExportError(f"{p}: no layer {layer!r}; layers: {', '.join(names)}")
        gdf = gpd.read_file(src, layer=layer, engine="pyogrio")
        others = {}
        if all_layers:
            for n in names:
                if n != layer:
                    others[n] = gpd.read_file(src, layer=n, engine="pyogrio")
        if gdf.crs is None:
            gdf = gdf.set_crs(WGS84 if ext in (".geojson", ".json", ".kml") else BNG)
        return LayerFile(p, gdf.to_crs(BNG), meta, layer, others)
    else:
        raise ExportError(f"{p}: cannot read {ext!r}; give .gpkg, .geojson, .csv, .parquet or .tif")
    if gdf.crs is None:
        gdf = gdf.set_crs(BNG)
    return LayerFile(p, gdf.to_crs(BNG), meta, layer)


# ================================================================================== layer kinds
def layer_kind(data, meta: dict | None = None) -> str:
    """Classify a layer for styling: 'spots', 'gistar', 'zones', 'surface', 'cells', 'boundary' or 'points'.

    The sidecar's ``kind`` decides when present (``grip``/``spots`` -> spots, ``gi``/``gistar``
    -> gistar, ``minerva``/``zones`` -> zones, a raster -> surface); otherwise the columns do
    (``spot_id`` + ``rank`` -> spots, ``quadrant`` -> zones, a ``*class*`` text column with
    Hot/Cold values -> gistar, ``count``/``harm`` -> cells, polygons without numbers -> boundary).
    """
    kind = str((meta or {}).get("kind", "")).lower()
    if isinstance(data, Raster):
        return "surface"
    cols = set(getattr(data, "columns", []))
    if "spot" in kind or "grip" in kind or {"spot_id", "rank"} <= cols:
        return "spots"
    if "minerva" in kind or "zone" in kind or "quadrant" in cols or {"type", "drivers"} <= cols:
        return "zones"
    if "gi" in kind.replace("grip", "") or gistar_class_column(data) is not None:
        return "gistar"
    if kind in ("cells", "rtm", "kde") or {"count", "harm"} & cols or value_column(data) is not None:
        return "cells"
    geom = getattr(data, "geom_type", None)
    if geom is not None and len(data) and (geom == "Point").all():
        return "points"
    return "boundary"


def gistar_class_column(gdf) -> str | None:
    """A Gi* class column: text values like 'Hot spot 99%' / 'Cold 95%' / 'Not significant'."""
    for c in getattr(gdf, "columns", []):
        if "class" not in str(c).lower() or c == "geometry":
            continue
        v = gdf[c].dropna().astype(str).str.lower()
        if len(v) and v.str.contains("hot|cold|not sig|insignif").mean() > 0.5:
            return c
    return None


def value_column(gdf) -> str | None:
    """The number to colour a cell layer by: harm, then count, then the first numeric value-like column."""
    cols = list(getattr(gdf, "columns", []))
    for c in ("harm", "count", "score", "max_rrs", "relative_risk_score", "risk", "rtm_score", "mean_rrs",
              "incidents", "offences", "value", "density", "gistar_z", "gi_z", "z"):
        if c in cols and pd.api.types.is_numeric_dtype(gdf[c]):
            return c
    for c in cols:
        if (c != "geometry" and pd.api.types.is_numeric_dtype(gdf[c]) and not str(c).endswith(("id", "ix", "iy"))
                and c not in ("rank", "priority", "cells", "units", "neighbours")):
            return c
    return None


def label_column(gdf) -> str | None:
    """The attribute that names a feature (Placemark name, popup title)."""
    for c in ("name", "label", "spot_id", "zone_id", "cell_id", "id", "town"):
        if c in getattr(gdf, "columns", []):
            return c
    return None
