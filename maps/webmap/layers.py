"""Turning results into map layers: ``MapLayer`` and its titles and period labels, WGS84 GeoJSON
feature collections, merged cells and raster surfaces as images.
"""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from geo import BNG, WGS84
from geo.core.result import Raster
from maps.export.read import label_column, layer_kind, read_layer, value_column


#: Above this many drawn cells a cell layer is merged to coarser squares.
MAX_FEATURES = 50_000
#: Layers with more features than this draw on a canvas (not SVG).
CANVAS_FROM = 5_000
#: Largest side (pixels) of a surface image overlay.
MAX_IMAGE_PX = 2_000


DEFAULT_MARKING = "OFFICIAL-SENSITIVE"

KIND_TITLES = {"cells": "Cells", "gistar": "Gi* hot and cold spots", "surface": "Surface", "spots": "Harm spots",
               "zones": "Minerva zones", "boundary": "Boundaries", "points": "Points"}
#: Attributes put in popups, per kind (others are left out of the page to keep it small).
POPUP_FIELDS = {
    "spots": ["rank", "spot_id", "town", "location", "harm", "count", "share_harm", "count_recent",
              "count_earlier", "trend", "status", "target_visits_per_day", "target_minutes", "cells"],
    "cells": ["cell_id", "count", "harm"],
    "gistar": ["cell_id", "gistar_class", "count", "harm", "z", "p", "p_adj", "gi_z", "gi_p"],
    "zones": None,  # all
    "points": None,
    "boundary": [],
}


@dataclass
class MapLayer:
    """One layer to draw: data (GeoDataFrame in any CRS, or Raster), its kind and sidecar metadata."""

    name: str
    data: object
    kind: str | None = None
    meta: dict = field(default_factory=dict)
    show: bool = True

    def __post_init__(self):
        if self.kind is None:
            self.kind = layer_kind(self.data, self.meta)


@dataclass
class MapInfo:
    """What :func:`build_map` drew: features per layer (the browser test compares these)."""

    layers: list = field(default_factory=list)  # dicts: name, kind, css_class, drawn, total, renderer
    choices: list = field(default_factory=list)
    bounds: list | None = None
    period: str | None = None


# ============================================================================ loading
def load_map_layers(paths) -> list[MapLayer]:
    """Read any harmspot outputs (every vector layer of a GeoPackage) as :class:`MapLayer`.

    Default visibility (the layer control turns the rest on): only the first surface is
    shown, and cells are hidden when a Gi* layer (which carries the same cells) is present.
    """
    out = []
    for p in paths:
        lf = read_layer(p, all_layers=True)
        base = _layer_title(lf.kind, lf.meta, Path(p), lf.layer_name)
        out.append(MapLayer(base, lf.data, lf.kind, lf.meta))
        for name, g in lf.others.items():
            k = layer_kind(g, {})
            out.append(MapLayer(_layer_title(k, {}, Path(p), name), g, k, lf.meta if k != "boundary" else {},
                                show=k != "cells"))
    kinds = [L.kind for L in out]
    seen_surface = False
    for L in out:
        if L.kind == "surface":
            L.show = not seen_surface
            seen_surface = True
        if L.kind == "cells" and "gistar" in kinds:
            L.show = False
    return out


def _layer_title(kind, meta, path: Path, layer_name=None) -> str:
    t = KIND_TITLES.get(kind, kind)
    mk = str(meta.get("kind", "")) if meta else ""
    if kind == "surface" and mk:
        t = {"kde": "KDE surface", "rtm": "RTM risk surface"}.get(mk.lower(), f"{mk} surface")
    if layer_name and path.suffix.lower() == ".gpkg" and layer_name not in (mk, kind, path.stem):
        t = layer_name.replace("_", " ").capitalize()
    return f"{t} ({path.name})"


def periods_text(layers) -> str | None:
    """The period for the title: one label, or 'A (layer, layer); B (layer)' when layers differ."""
    by = {}
    for L in layers:
        lab = period_label([L.meta])
        if lab:
            by.setdefault(lab, []).append(KIND_TITLES.get(L.kind, L.kind).lower())
    if not by:
        return None
    if len(by) == 1:
        return next(iter(by))
    return "; ".join(f"{lab} ({', '.join(dict.fromkeys(k))})" for lab, k in by.items())


def period_label(metas) -> str | None:
    """'2025-01-01 to 2025-06-30' from the first sidecar with a period."""
    for m in metas:
        per = (m or {}).get("period")
        if isinstance(per, dict) and per.get("start"):
            return f"{per['start']} to {per['end']}"
        if isinstance(per, str) and per:
            return per
    return None


# ============================================================================ geometry helpers
def _wgs(gdf):
    if gdf.crs is None:
        gdf = gdf.set_crs(BNG)
    return gdf.to_crs(WGS84)


def merge_cells(gdf, max_features: int = MAX_FEATURES) -> tuple[object, int]:
    """Merge cells into k-times larger BNG squares (k = 2, 4, 8...) until at most ``max_features``.

    Cells are assigned by centroid; ``count``, ``harm`` and other numeric value columns are
    summed. Returns the merged frame (BNG) and the factor k (1 = unchanged).
    """
    import geopandas as gpd
    import shapely

    g = gdf.to_crs(BNG)
    if len(g) <= max_features:
        return g, 1
    side = float(np.sqrt(np.median(g.geometry.area))) or 150.0
    ox, oy = g.total_bounds[:2]
    c = g.geometry.centroid
    fx = np.floor((c.x.to_numpy() - ox) / side).astype(np.int64)  # fine column/row from the south-west corner
    fy = np.floor((c.y.to_numpy() - oy) / side).astype(np.int64)
    num = [col for col in g.columns if col != g.geometry.name and pd.api.types.is_numeric_dtype(g[col])
           and col not in ("ix", "iy")]
    k = 2
    while True:
        df = pd.DataFrame({"ix": fx // k, "iy": fy // k, **{col: g[col].to_numpy() for col in num}})
        agg = df.groupby(["ix", "iy"], sort=False).sum().reset_index()
        if len(agg) <= max_features:
            break
        k *= 2
    s = side * k
    x0, y0 = ox + agg["ix"].to_numpy() * s, oy + agg["iy"].to_numpy() * s
    geom = shapely.box(x0, y0, x0 + s, y0 + s)
    agg.insert(0, "cell_id", [f"{int(round(s))}m_E{int(round(a))}_N{int(round(b))}" for a, b in zip(x0, y0)])
    out = gpd.GeoDataFrame(agg.drop(columns=["ix", "iy"]), geometry=geom, crs=BNG)
    return out, k


def _props_frame(gdf, kind: str) -> pd.DataFrame:
    fields = POPUP_FIELDS.get(kind)
    cols = [c for c in gdf.columns if c != gdf.geometry.name]
    if fields is not None:
        keep = [c for c in fields if c in cols]
        if kind in ("cells", "gistar"):
            vc = value_column(gdf)
            if vc and vc not in keep:
                keep.append(vc)
            gc = [c for c in cols if "class" in c.lower()]
            keep += [c for c in gc if c not in keep]
        if kind == "boundary":
            lc = label_column(gdf)
            keep = [lc] if lc else []
        cols = keep
    else:
        cols = [c for c in cols if not str(c).startswith("_") and c not in ("unit_ids", "cell_ids")][:14]
    return pd.DataFrame(gdf[cols])


def feature_collection_json(gdf, kind: str, colours: list[str]) -> str:
    """Compact GeoJSON text (WGS84, coordinates rounded to 6 decimals ~ 0.1 m) with popup properties.

    Vectorised: pandas writes the properties (``to_json(orient="records", lines=True)``) and
    shapely 2 the geometries (``to_geojson``), so 50,000 cells take about a second. The
    feature colour is in the ``_c`` property.
    """
    import shapely

    g = _wgs(gdf)
    props = _props_frame(g, kind).copy()
    for c in props.columns:
        if props[c].dtype == object:
            props[c] = props[c].map(lambda v: ", ".join(map(str, v)) if isinstance(v, (list, tuple, np.ndarray)) else v)
    props["_c"] = list(colours)
    lines = [ln for ln in props.to_json(orient="records", lines=True, double_precision=8,
                                        date_format="iso").split("\n") if ln]
    geoms = shapely.to_geojson(shapely.transform(g.geometry.values, lambda c: np.round(c, 6)))
    feats = ",".join('{"type":"Feature","properties":%s,"geometry":%s}' % (p, gj if gj is not None else "null")
                     for p, gj in zip(lines, geoms))
    return ('{"type":"FeatureCollection","features":[' + feats + "]}").replace("</", "<\\/")


# ============================================================================ surfaces
def surface_image(r: Raster, max_px: int = MAX_IMAGE_PX, vmax: float | None = None
                  ) -> tuple[str, list, tuple[float, float]]:
    """A transparent PNG (data URL) of a surface warped to Web Mercator, its lat/lon bounds and value range.

    The YlOrRd ramp runs from 0 to ``vmax``, by default the 99th percentile of the positive
    values (a few extreme cells would otherwise wash the rest out; higher values take the top
    colour); give ``vmax`` (e.g. last week's) to keep the same ramp across maps. Values below
    2 % of it, NaN and nodata are transparent; opacity rises from 0.2 to 0.85 so low values
    do not hide the boundaries.
    """
    from PIL import Image
    from matplotlib import colormaps
    from pyproj import Transformer
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    arr = np.asarray(r.array, dtype="float64").copy()
    if r.nodata is not None:
        arr[arr == r.nodata] = np.nan
    h, w = arr.shape
    left, bottom, right, top = r.bounds
    dst_t, dw, dh = calculate_default_transform(r.crs or BNG, "EPSG:3857", w, h, left, bottom, right, top)
    scale = max(dw / max_px, dh / max_px, 1.0)
    if scale > 1:
        dw, dh = int(dw / scale), int(dh / scale)
        dst_t = type(dst_t)(dst_t.a * scale, dst_t.b, dst_t.c, dst_t.d, dst_t.e * scale, dst_t.f)
    dst = np.full((dh, dw), np.nan)
    reproject(arr, dst, src_transform=r.transform, src_crs=r.crs or BNG, dst_transform=dst_t, dst_crs="EPSG:3857",
              resampling=Resampling.bilinear, src_nodata=np.nan, dst_nodata=np.nan)
    if vmax is None:
        pos = dst[np.isfinite(dst) & (dst > 0)]
        vmax = float(np.quantile(pos, 0.99)) if pos.size else 1.0
    vmax = float(vmax) if vmax > 0 else 1.0
    vmin = 0.0
    t = np.clip(np.nan_to_num(dst, nan=0.0) / vmax, 0, 1)
    rgba = colormaps["YlOrRd"](t)
    alpha = np.where(np.isfinite(dst) & (t >= 0.02), 0.2 + 0.65 * t, 0.0)
    rgba[..., 3] = alpha
    img = Image.fromarray((rgba * 255).astype("uint8"), "RGBA")
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    x0, y0 = dst_t.c, dst_t.f
    x1, y1 = x0 + dst_t.a * dw, y0 + dst_t.e * dh
    tr = Transformer.from_crs("EPSG:3857", WGS84, always_xy=True)
    lon0, lat0 = tr.transform(min(x0, x1), min(y0, y1))
    lon1, lat1 = tr.transform(max(x0, x1), max(y0, y1))
    return url, [[lat0, lon0], [lat1, lon1]], (vmin, vmax)
