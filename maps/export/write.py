"""Write analysis results to files GIS, spreadsheets and devices open.

``write_result(result, path)`` picks the writer from the extension. Vector
layers are written in EPSG:27700 except GeoJSON (RFC 7946: WGS84). A
``<path>.meta.json`` sidecar carries the result's parameters, choices, weight
table, period and inputs, so any output can be traced to what made it.

Formats for patrol teams and GIS (``export_file`` / ``harmspot export``):

=========  ===========================================================================
geojson    RFC 7946, WGS84 (lon, lat), coordinates rounded to 7 decimals by GDAL.
gpkg       EPSG:27700; every layer of the input (and any extra layers/tables) in one file.
kml / kmz  WGS84; one ``Placemark`` per feature with a ``name``, an HTML ``description``
           table of the attributes, ``ExtendedData`` and a shared ``Style`` per class
           (colour by rank band, Gi* class, quadrant or value class).
shp        zipped ESRI Shapefile in EPSG:27700 (``.shp .shx .dbf .prj .cpg``) plus
           ``fields.csv``: the full attribute name -> 10-character DBF name mapping
           (:data:`SHP_FIELD_NAMES`, then :func:`shapefile_field_names`' rule).
csv        attributes plus BNG (easting, northing) and WGS84 (longitude, latitude)
           centroids (:func:`csv_frame`).
tif        Cloud-optimised GeoTIFF (GDAL ``COG`` driver, deflate, internal overviews),
           EPSG:27700, float32, the result's metadata in the ``harmspot`` tag.
=========  ===========================================================================
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from geo import BNG, WGS84
from geo.core.errors import EmptyInputError, HarmspotError
from geo.core.result import AnalysisResult, Raster
from maps.export.read import read_layer
from maps.export.kml import write_kml
from maps.export.shapefile import write_shapefile_zip
from maps.export.formats import EXPORT_FORMATS, RASTER_EXTS, VECTOR_EXTS, ExportError


# ================================================================================== original API
def write_result(result: AnalysisResult, path, *, layer_name: str | None = None, sidecar: bool = True) -> Path:
    """Write ``result.layer`` to ``path`` (format from the extension) plus a ``.meta.json`` sidecar.

    Vector: .gpkg (BNG), .geojson (WGS84, RFC 7946), .csv (:func:`csv_frame`), .parquet (BNG);
    also .kml/.kmz/.zip (Shapefile) via :func:`export_layer`. Raster: .tif (GeoTIFF with the
    metadata in the ``harmspot`` tag).
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    ext = p.suffix.lower()
    if isinstance(result.layer, Raster):
        if ext not in RASTER_EXTS:
            raise HarmspotError(f"{p}: a raster result is written as .tif; got {ext!r}")
        write_raster(result.layer, p, tags={"harmspot": json.dumps(result.metadata())})
    elif ext in (".kml", ".kmz", ".zip"):
        export_layer(result.layer, p, {".kml": "kml", ".kmz": "kmz", ".zip": "shp"}[ext], meta=result.metadata(),
                     layer_name=layer_name or result.kind)
    else:
        write_vector(result.layer, p, layer_name=layer_name or result.kind)
    if sidecar:
        Path(str(p) + ".meta.json").write_text(json.dumps(result.metadata(), indent=2))
    return p


def write_vector(gdf, path, layer_name: str = "layer") -> Path:
    """Write one vector layer; .gpkg adds (or replaces) ``layer_name`` in an existing file."""
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


def write_raster(r: Raster, path, tags: dict | None = None, *, cog: bool = False) -> Path:
    """Write a single-band float32 GeoTIFF; ``cog=True`` writes a cloud-optimised GeoTIFF."""
    import rasterio

    p = Path(path)
    if cog:
        return write_cog(r, p, tags)
    arr = np.asarray(r.array, dtype="float32")
    profile = dict(driver="GTiff", height=arr.shape[0], width=arr.shape[1], count=1, dtype="float32",
                   crs=r.crs, transform=r.transform, nodata=r.nodata, compress="deflate", tiled=True,
                   blockxsize=256, blockysize=256)
    if arr.shape[0] < 256 or arr.shape[1] < 256:
        profile.pop("blockxsize"), profile.pop("blockysize")
        profile["tiled"] = False
    with rasterio.open(p, "w", **profile) as dst:
        _write_band(dst, arr, r, tags)
    return p


def _write_band(dst, arr, r: Raster, tags: dict | None) -> None:
    """The single band with its name, units and the result's tags."""
    dst.write(arr, 1)
    dst.set_band_description(1, r.name)
    if tags:
        dst.update_tags(**tags)
    if r.units:
        dst.update_tags(1, units=r.units)


# ================================================================================== COG
def write_cog(r: Raster, path, tags: dict | None = None) -> Path:
    """Cloud-optimised GeoTIFF: GDAL's COG driver (512 px tiles, deflate, overviews), float32.

    The grid is first written to an in-memory GeoTIFF (with band name, units and ``tags``) and
    copied with the COG driver, which lays out tiles and overviews so a reader can fetch any
    window with HTTP range requests (https://gdal.org/drivers/raster/cog.html).
    """
    from rasterio.io import MemoryFile
    from rasterio.shutil import copy as rio_copy

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(r.array, dtype="float32")
    if arr.ndim != 2 or arr.size == 0:
        raise ExportError(f"{p}: a surface must be a non-empty 2-D grid; got shape {arr.shape}")
    prof = dict(driver="GTiff", height=arr.shape[0], width=arr.shape[1], count=1, dtype="float32",
                crs=r.crs, transform=r.transform, nodata=r.nodata)
    with MemoryFile() as mem:
        with mem.open(**prof) as dst:
            _write_band(dst, arr, r, tags)
        with mem.open() as src:
            if p.exists():
                p.unlink()
            rio_copy(src, p, driver="COG", compress="DEFLATE", predictor=3, overview_resampling="average",
                     blocksize=512)
    return p


# ================================================================================== GeoPackage
def write_geopackage(layers: dict, path, *, tables: dict | None = None) -> Path:
    """Several layers in one GeoPackage (EPSG:27700): ``{name: GeoDataFrame}`` plus plain tables.

    ``tables`` (``{name: DataFrame}``) are written as attribute-only tables (GeoPackage
    'attributes' content), e.g. a Grip plan or the ranked table. An existing file is replaced.
    """
    import pyogrio

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.exists():
        p.unlink()
    if not layers and not tables:
        raise EmptyInputError(f"{p}: nothing to write (no layers)")
    for name, gdf in layers.items():
        if gdf.crs is None:
            gdf = gdf.set_crs(BNG)
        g = gdf.to_crs(BNG)
        pyogrio.write_dataframe(g, p, layer=_layer_name(name), driver="GPKG", append=p.exists())
    for name, df in (tables or {}).items():
        d = pd.DataFrame(df).copy()
        for c in d.columns:
            if d[c].dtype == object:
                d[c] = d[c].map(lambda v: ", ".join(map(str, v)) if isinstance(v, (list, tuple, np.ndarray)) else v)
        d.columns = [str(c) for c in d.columns]
        pyogrio.write_dataframe(d.reset_index(drop=True), p, layer=_layer_name(name), driver="GPKG",
                                append=p.exists())
    return p


def _layer_name(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", str(name)).strip("_") or "layer"


# ================================================================================== export
def export_layer(data, out, fmt: str, *, meta: dict | None = None, layer_name: str | None = None,
                 others: dict | None = None, marking: str | None = None) -> Path:
    """Write one layer (GeoDataFrame in any CRS, or :class:`Raster`) in ``fmt``.

    ``fmt`` is one of :data:`EXPORT_FORMATS`. Every feature is written (same count as the
    input). ``others`` (GeoPackage only) are extra layers kept beside the main one.
    """
    fmt = fmt.lower().lstrip(".")
    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"--format {fmt!r}: use one of {', '.join(EXPORT_FORMATS)}")
    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    name = layer_name or str((meta or {}).get("kind") or p.stem)
    if isinstance(data, Raster):
        if fmt != "tif":
            raise ExportError(f"{p}: a surface (raster) exports only as --format tif; got {fmt!r}")
        tags = {"harmspot": json.dumps(meta)} if meta else None
        return write_cog(data, p, tags)
    if fmt == "tif":
        raise ExportError(f"{p}: --format tif is for surfaces (KDE, RTM); this layer is vector: "
                          "use gpkg, geojson, kml, kmz, shp or csv")
    if data.crs is None:
        data = data.set_crs(BNG)
    if fmt == "geojson":
        write_vector(data, p)
    elif fmt == "gpkg":
        write_geopackage({name: data, **(others or {})}, p)
    elif fmt == "csv":
        csv_frame(data).to_csv(p, index=False)
    elif fmt in ("kml", "kmz"):
        write_kml(data, p, kmz=fmt == "kmz", name=name, meta=meta, marking=marking)
    elif fmt == "shp":
        write_shapefile_zip(data, p, layer_name=name)
    return p


def export_file(src, fmt: str, out, *, layer: str | None = None, marking: str | None = None) -> tuple[Path, int]:
    """``harmspot export``: read ``src`` (any harmspot output) and write it as ``fmt`` to ``out``.

    Returns the written path and the number of features (1 for a surface). The sidecar
    metadata is carried into the KML description, the GeoTIFF tag and a new ``.meta.json``.
    """
    lf = read_layer(src, layer, all_layers=fmt == "gpkg")
    if not lf.is_raster and len(lf.data) == 0:
        raise EmptyInputError(f"{src}: layer {lf.layer_name or ''} has no features to export".replace("  ", " "))
    meta = dict(lf.meta)
    p = export_layer(lf.data, out, fmt, meta=meta or None, layer_name=lf.layer_name or meta.get("kind"),
                     others=lf.others, marking=marking)
    if meta:
        Path(str(p) + ".meta.json").write_text(json.dumps({**meta, "exported_from": str(src), "format": fmt},
                                                          indent=2, default=str))
    return p, len(lf)
