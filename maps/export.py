"""Write analysis results to files GIS, spreadsheets and devices open.

``write_result(result, path)`` picks the writer from the extension. Vector
layers are written in EPSG:27700 except GeoJSON (RFC 7946: WGS84). A
``<path>.meta.json`` sidecar carries the result's parameters, choices, weight
table, period and inputs, so any output can be traced to what made it.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from geo import BNG, WGS84
from geo.errors import HarmspotError
from geo.result import AnalysisResult, Raster

VECTOR_EXTS = (".gpkg", ".geojson", ".json", ".csv", ".parquet")
RASTER_EXTS = (".tif", ".tiff")


def write_result(result: AnalysisResult, path, *, layer_name: str | None = None, sidecar: bool = True) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    ext = p.suffix.lower()
    if isinstance(result.layer, Raster):
        if ext not in RASTER_EXTS:
            raise HarmspotError(f"{p}: a raster result is written as .tif; got {ext!r}")
        write_raster(result.layer, p, tags={"harmspot": json.dumps(result.metadata())})
    else:
        write_vector(result.layer, p, layer_name=layer_name or result.kind)
    if sidecar:
        Path(str(p) + ".meta.json").write_text(json.dumps(result.metadata(), indent=2))
    return p


def write_vector(gdf, path, layer_name: str = "layer") -> Path:
    p = Path(path)
    ext = p.suffix.lower()
    if gdf.crs is None:
        gdf = gdf.set_crs(BNG)
    if ext == ".gpkg":
        gdf.to_crs(BNG).to_file(p, layer=layer_name, driver="GPKG", engine="pyogrio")
    elif ext in (".geojson", ".json"):
        if p.exists():
            p.unlink()
        gdf.to_crs(WGS84).to_file(p, driver="GeoJSON", engine="pyogrio", RFC7946="YES")
    elif ext == ".csv":
        csv_frame(gdf).to_csv(p, index=False)
    elif ext == ".parquet":
        gdf.to_crs(BNG).to_parquet(p)
    else:
        raise HarmspotError(f"{p}: unsupported output {ext!r}; use one of {', '.join(VECTOR_EXTS)}")
    return p


def csv_frame(gdf) -> pd.DataFrame:
    """Attributes plus BNG and WGS84 centroids (easting, northing, longitude, latitude)."""
    g = gdf.to_crs(BNG)
    cen = g.geometry.centroid if not (g.geom_type == "Point").all() else g.geometry
    ll = cen.to_crs(WGS84)
    out = pd.DataFrame(g.drop(columns=g.geometry.name))
    out["easting"] = np.round(cen.x.to_numpy(), 1)
    out["northing"] = np.round(cen.y.to_numpy(), 1)
    out["longitude"] = np.round(ll.x.to_numpy(), 6)
    out["latitude"] = np.round(ll.y.to_numpy(), 6)
    return out


def write_raster(r: Raster, path, tags: dict | None = None) -> Path:
    import rasterio

    p = Path(path)
    arr = np.asarray(r.array, dtype="float32")
    profile = dict(driver="GTiff", height=arr.shape[0], width=arr.shape[1], count=1, dtype="float32",
                   crs=r.crs, transform=r.transform, nodata=r.nodata, compress="deflate", tiled=True,
                   blockxsize=256, blockysize=256)
    if arr.shape[0] < 256 or arr.shape[1] < 256:
        profile.pop("blockxsize"), profile.pop("blockysize")
        profile["tiled"] = False
    with rasterio.open(p, "w", **profile) as dst:
        dst.write(arr, 1)
        dst.set_band_description(1, r.name)
        if tags:
            dst.update_tags(**tags)
        if r.units:
            dst.update_tags(1, units=r.units)
    return p
