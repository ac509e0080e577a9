"""The layer catalogue: storing AnalysisResult layers in the store and serving them.

A layer is immutable once written: a new analysis writes new layers with new ids
(``uuid4().hex``, 32 lower-case hex characters). Ids are only ever looked up in
the store's ``layers`` table; they never become file names or paths.

Storage (:func:`layer_records`) keeps, per vector feature, its WGS84 bounding box,
its ``count`` (when the layer has one), its properties as JSON, its geometry as
GeoJSON (WGS84, 7 decimals, about 1 cm) and as WGS84 WKB (for tiles). Rasters are
kept as GeoTIFF bytes (EPSG:27700, deflate). All layers of one result are written
in one transaction (``store.put_layers``): a reader never sees half a result.

Privacy rules applied here (see services.auth for the role table):

* **incident-level** layers (any point geometry, or an ``incident_id`` column) are
  served only to analysts and admins;
* **aggregated** layers are vector layers with a ``count`` column and no points;
  they are the only layers a partner sees, and for a partner every feature whose
  ``count`` is below k (default 5, ``HARMSPOT_PARTNER_K``) is *suppressed*: all its
  numeric properties are set to null and ``suppressed`` is true. Sub-counts
  (``count_<category>`` columns) below k are nulled even in unsuppressed cells.
  Zero counts are suppressed too, so a partner cannot tell 0 from 1..k-1.
"""
from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections import OrderedDict
from threading import Lock

import numpy as np
import pandas as pd

from geo import BNG, WGS84
from geo.core.result import AnalysisResult, Raster, jsonable
from services.auth import Forbidden, InvalidParameter, LimitExceeded, NotFound, Principal

LAYER_ID_PATTERN = r"^[0-9a-f]{32}$"
_LAYER_ID_RE = re.compile(LAYER_ID_PATTERN)


def new_id() -> str:
    return uuid.uuid4().hex


# ------------------------------------------------------------------------------------------ writing
def layer_records(result: AnalysisResult, *, run_id: str | None = None, name: str | None = None):
    """``[(meta, features DataFrame | None, tif bytes | None), ...]`` for a result's layer and extra layers."""
    out = []
    main_name = name or result.kind
    layers = [(main_name, result.layer)] + [(f"{main_name}:{k}", v) for k, v in (result.extra_layers or {}).items()]
    base = result.metadata()
    for lname, layer in layers:
        if layer is None:
            continue
        lid = new_id()
        meta = {
            "layer_id": lid, "name": lname, "kind": result.kind, "run_id": run_id, "created": result.created,
            "period": base.get("period"), "params": base.get("params"), "metadata": base,
            "etag": hashlib.sha1(lid.encode()).hexdigest()[:20],
        }
        if isinstance(layer, Raster):
            meta.update(_raster_meta(layer))
            meta["metadata"] = {**base, "raster": meta.pop("raster")}
            out.append((meta, None, raster_bytes(layer)))
        else:
            feats, vmeta = _vector_rows(layer)
            meta.update(vmeta)
            out.append((meta, feats, None))
    return out


def save_result(store, result: AnalysisResult, *, run_id: str | None = None, name: str | None = None) -> list[str]:
    """Write a result's layers atomically; returns their ids (main layer first)."""
    recs = layer_records(result, run_id=run_id, name=name)
    store.put_layers(recs)
    return [m["layer_id"] for m, _, _ in recs]


def _vector_rows(gdf):
    import shapely

    if gdf.crs is None:
        gdf = gdf.set_crs(BNG)
    g = gdf.to_crs(WGS84)
    geoms = shapely.transform(np.asarray(g.geometry.values), lambda c: np.round(c, 7))
    b = shapely.bounds(geoms)
    attrs = pd.DataFrame(g.drop(columns=g.geometry.name))
    props = attrs.to_json(orient="records", lines=True, date_format="iso").splitlines() if len(attrs.columns) \
        else ["{}"] * len(g)
    if len(props) != len(g):  # empty frame gives [''] - keep one props per row
        props = ["{}"] * len(g)
    gtypes = set(shapely.get_type_id(geoms[~shapely.is_missing(geoms)]).tolist())
    has_points = bool(gtypes & {0, 4})  # Point, MultiPoint
    cnt = pd.to_numeric(attrs["count"], errors="coerce").to_numpy(float) if "count" in attrs else np.full(len(g), np.nan)
    feats = pd.DataFrame({
        "fid": np.arange(len(g), dtype=np.int64),
        "minx": b[:, 0], "miny": b[:, 1], "maxx": b[:, 2], "maxy": b[:, 3],
        "cnt": cnt,
        "props": props,
        "geojson": shapely.to_geojson(geoms),
        "wkb": [bytes(w) if w is not None else None for w in shapely.to_wkb(geoms)],
    })
    finite = np.isfinite(b).all(axis=1)
    bbox = [float(b[finite, 0].min()), float(b[finite, 1].min()), float(b[finite, 2].max()),
            float(b[finite, 3].max())] if finite.any() else None
    meta = {
        "layer_type": "vector", "crs": WGS84,
        "bbox": bbox, "columns": [str(c) for c in attrs.columns], "n_features": int(len(g)),
        "incident_level": has_points or "incident_id" in attrs.columns,
        "aggregated": ("count" in attrs.columns) and not has_points and "incident_id" not in attrs.columns,
    }
    return feats, meta


def raster_bytes(r: Raster) -> bytes:
    import tempfile
    from pathlib import Path

    from maps.export.write import write_raster

    with tempfile.TemporaryDirectory(prefix="harmspot-raster-") as d:
        p = Path(d) / "layer.tif"  # fixed name in a private temp dir: no id or user text reaches the path
        write_raster(r, p)
        return p.read_bytes()


def _raster_meta(r: Raster) -> dict:
    from pyproj import Transformer

    arr = np.asarray(r.array, dtype=float)
    valid = np.isfinite(arr) & ((arr != r.nodata) if r.nodata is not None else True)
    vals = arr[valid]
    x0, y0, x1, y1 = r.bounds
    bbox = list(Transformer.from_crs(r.crs, WGS84, always_xy=True).transform_bounds(x0, y0, x1, y1))
    return {
        "layer_type": "raster", "crs": str(r.crs), "bbox": [float(v) for v in bbox], "columns": [r.name],
        "n_features": int(arr.size), "incident_level": False, "aggregated": False,
        "raster": {"name": r.name, "units": r.units, "cell_size": r.cell_size, "shape": list(arr.shape),
                   "min": float(vals.min()) if vals.size else 0.0, "max": float(vals.max()) if vals.size else 0.0,
                   "p98": float(np.percentile(vals, 98)) if vals.size else 0.0},
    }


# ------------------------------------------------------------------------------------------ catalogue
def visible(meta: dict, who: Principal) -> bool:
    """May ``who`` see this layer at all?"""
    if who.role == "partner":
        return bool(meta.get("aggregated"))
    if meta.get("incident_level") and not who.can("incident_level"):
        return False
    return who.can("read_layers")


def catalogue_entry(meta: dict) -> dict:
    return {
        "id": meta["layer_id"], "name": meta.get("name"), "kind": meta.get("kind"),
        "layer_type": meta.get("layer_type"), "period": meta.get("period"), "bbox": meta.get("bbox"),
        "crs": meta.get("crs"), "created": meta.get("created"), "parameters": meta.get("params") or {},
        "choices": (meta.get("metadata") or {}).get("choices", []),
        "weight_table": (meta.get("metadata") or {}).get("weight_table"),
        "n_features": meta.get("n_features"), "columns": meta.get("columns") or [],
        "aggregated": bool(meta.get("aggregated")), "incident_level": bool(meta.get("incident_level")),
        "run_id": meta.get("run_id"),
    }


def get_visible_layer(store, layer_id: str, who: Principal, *, raster: bool | None = None) -> dict:
    """The layer's catalogue row, or NotFound/Forbidden. Never touches the filesystem."""
    if not _LAYER_ID_RE.match(layer_id or ""):
        raise NotFound(f"layer {layer_id!r}: layer ids are 32 hex characters (see GET /layers)")
    meta = store.get_layer(layer_id)
    if meta is None:
        raise NotFound(f"layer {layer_id}: no such layer (see GET /layers)")
    if not visible(meta, who):
        raise Forbidden(f"layer {layer_id}: the {who.role} role may not read this layer"
                        + (" (incident-level data)" if meta.get("incident_level") else
                           " (partners see aggregated cell layers only)"))
    if raster is True and meta.get("layer_type") != "raster":
        raise NotFound(f"layer {layer_id} is a vector layer: use /tiles/{layer_id}/{{z}}/{{x}}/{{y}}.mvt")
    if raster is False and meta.get("layer_type") == "raster":
        raise NotFound(f"layer {layer_id} is a raster layer: use /rasters/{layer_id}/{{z}}/{{x}}/{{y}}.png")
    return meta


# ------------------------------------------------------------------------------------------ validation
def parse_bbox(text: str | None, max_km2: float):
    """``minlon,minlat,maxlon,maxlat`` (WGS84) -> tuple, checking order, range and geodesic area."""
    if text is None or text == "":
        return None
    parts = text.split(",")
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        raise InvalidParameter(f"bbox {text!r}: give four numbers minlon,minlat,maxlon,maxlat (WGS84)") from None
    if len(vals) != 4 or not all(np.isfinite(vals)):
        raise InvalidParameter(f"bbox {text!r}: give four finite numbers minlon,minlat,maxlon,maxlat (WGS84)")
    x0, y0, x1, y1 = vals
    if not (-180 <= x0 < x1 <= 180 and -90 <= y0 < y1 <= 90):
        raise InvalidParameter(f"bbox {text!r}: need -180 <= minlon < maxlon <= 180 and -90 <= minlat < maxlat <= 90")
    from pyproj import Geod

    area, _ = Geod(ellps="WGS84").polygon_area_perimeter([x0, x1, x1, x0], [y0, y0, y1, y1])
    km2 = abs(area) / 1e6
    if km2 > max_km2:
        raise LimitExceeded(f"bbox covers {km2:,.0f} km2; the limit is {max_km2:,.0f} km2 (HARMSPOT_MAX_BBOX_KM2)",
                            area_km2=round(km2, 1), limit_km2=max_km2)
    return (x0, y0, x1, y1)


def parse_properties(text: str | None, meta: dict) -> list[str] | None:
    if text is None or text == "":
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    cols = meta.get("columns") or []
    unknown = [n for n in names if n not in cols]
    if unknown:
        raise InvalidParameter(f"properties: {len(unknown)} unknown name(s), first {unknown[0]!r}; "
                               f"layer {meta['layer_id']} has {', '.join(cols) or 'no properties'}")
    return names


# ------------------------------------------------------------------------------------------ serving
def suppress(props: dict, count, k: int) -> dict:
    """Partner view of one feature's properties (see the module docstring)."""
    out = {}
    small = count is None or not np.isfinite(count) or count < k
    for name, v in props.items():
        numeric = isinstance(v, (int, float)) and not isinstance(v, bool)
        if numeric and (small or (name.startswith("count_") and v < k)):
            out[name] = None
        else:
            out[name] = v
    out["suppressed"] = bool(small)
    return out


def feature_collection(store, meta: dict, who: Principal, *, k: int, bbox=None, properties=None,
                       limit: int) -> bytes:
    """The layer as a GeoJSON FeatureCollection (bytes), filtered and, for partners, suppressed."""
    rows = store.layer_features(meta["layer_id"], bbox=bbox, limit=None if bbox is not None else limit + 1)
    if bbox is not None and len(rows):
        import shapely

        geoms = shapely.from_wkb([bytes(b) if b is not None else None for b in rows["wkb"]])
        keep = shapely.intersects(geoms, shapely.box(*bbox))
        rows = rows.loc[keep]
    truncated = len(rows) > limit
    rows = rows.iloc[:limit]
    partner = who.role == "partner"
    rewrite = partner or properties is not None
    parts = []
    for fid, cnt, props, geom in zip(rows["fid"].to_numpy(), rows["cnt"].to_numpy(), rows["props"].to_numpy(),
                                     rows["geojson"].to_numpy()):
        if rewrite:
            p = json.loads(props)
            if partner:
                p = suppress(p, cnt, k)
            if properties is not None:
                p = {n: p.get(n) for n in properties + (["suppressed"] if partner else [])}
            props = json.dumps(p)
        parts.append(f'{{"type":"Feature","id":{int(fid)},"properties":{props},"geometry":{geom}}}')
    head = {
        "type": "FeatureCollection", "layer": meta["layer_id"], "name": meta.get("name"),
        "numberReturned": len(parts), "truncated": bool(truncated),
    }
    if partner:
        head["suppression"] = {"k": k, "rule": "features with count < k have numeric properties set to null"}
    h = json.dumps(head)[:-1]
    return (h + ',"features":[' + ",".join(parts) + "]}").encode()


class LRU:
    """A small thread-safe LRU cache."""

    def __init__(self, size: int):
        self.size = size
        self._d: OrderedDict = OrderedDict()
        self._lock = Lock()

    def get(self, key):
        with self._lock:
            if key in self._d:
                self._d.move_to_end(key)
                return self._d[key]
        return None

    def put(self, key, value):
        if self.size <= 0:
            return
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.size:
                self._d.popitem(last=False)


def result_summary(result: AnalysisResult) -> dict:
    return jsonable(result.summary)


def layer_data(store, meta: dict):
    """A stored layer back as a GeoDataFrame (EPSG:4326, its properties as columns) or a :class:`Raster`."""
    if meta.get("layer_type") == "raster":
        from rasterio.io import MemoryFile

        tif = store.layer_raster(meta["layer_id"])
        with MemoryFile(tif) as mem, mem.open() as src:
            info = (meta.get("metadata") or {}).get("raster") or {}
            return Raster(src.read(1), src.transform, crs=src.crs.to_string(), nodata=src.nodata,
                          name=info.get("name", "value"), units=info.get("units", ""))
    import geopandas as gpd
    import shapely

    rows = store.layer_features(meta["layer_id"])
    props = pd.DataFrame([json.loads(p) for p in rows["props"]], columns=meta.get("columns") or None)
    geoms = shapely.from_wkb([bytes(b) if b is not None else None for b in rows["wkb"]])
    return gpd.GeoDataFrame(props, geometry=geoms, crs=WGS84)
