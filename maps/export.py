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

import csv
import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pandas as pd

from geo import BNG, WGS84
from geo.errors import EmptyInputError, HarmspotError
from geo.result import AnalysisResult, Raster

VECTOR_EXTS = (".gpkg", ".geojson", ".json", ".csv", ".parquet")
RASTER_EXTS = (".tif", ".tiff")
#: ``harmspot export --format`` values and the extension each writes.
EXPORT_FORMATS = {"kml": ".kml", "kmz": ".kmz", "gpkg": ".gpkg", "geojson": ".geojson", "shp": ".zip",
                  "csv": ".csv", "tif": ".tif"}
KML_NS = "http://www.opengis.net/kml/2.2"


class ExportError(HarmspotError):
    """A layer cannot be read or written in the requested format."""


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


def class_breaks(values, k: int = 5) -> np.ndarray:
    """Upper bounds of ``k`` quantile classes of the positive values (zeros get no class).

    Quantiles (not equal intervals) because counts per cell are heavily skewed: a few cells
    hold most of the harm. Duplicated breaks (many equal values) are merged.
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if len(v) == 0:
        return np.array([1.0])
    b = np.unique(np.quantile(v, np.linspace(0, 1, k + 1)[1:]))
    return b


def parse_breaks(text: str) -> np.ndarray:
    """Class upper bounds from text such as ``"10,50,100,500"`` (positive, strictly increasing).

    Raises :class:`HarmspotError` naming what is wrong."""
    parts = [t.strip() for t in str(text).replace(";", ",").split(",") if t.strip()]
    try:
        b = np.array([float(t) for t in parts], dtype=float)
    except ValueError:
        raise HarmspotError(f"--breaks {text!r}: give class upper bounds as numbers, e.g. 10,50,100,500") from None
    if len(b) == 0 or not np.isfinite(b).all() or (b <= 0).any() or (np.diff(b) <= 0).any():
        raise HarmspotError(f"--breaks {text!r}: the class upper bounds must be positive and increasing, "
                            "e.g. 10,50,100,500")
    return b


def classify(values, breaks) -> np.ndarray:
    """Class index 0..len(breaks)-1 for each value (-1 for zero, negative or missing)."""
    v = np.asarray(values, dtype=float)
    idx = np.searchsorted(np.asarray(breaks), v, side="left")
    idx = np.clip(idx, 0, len(breaks) - 1)
    return np.where(np.isfinite(v) & (v > 0), idx, -1)


#: Sequential ramp (ColorBrewer YlOrRd 5, light to dark) for counts/harm/surfaces.
RAMP = ["#ffffb2", "#fecc5c", "#fd8d3c", "#f03b20", "#bd0026"]
#: Gi* classes (hot red, cold blue, confidence by strength).
GISTAR_COLOURS = {"hot 99": "#b2182b", "hot 95": "#ef8a62", "hot 90": "#fddbc7",
                  "cold 99": "#2166ac", "cold 95": "#67a9cf", "cold 90": "#d1e5f0", "not": "#f7f7f7"}
#: Minerva quadrants.
QUADRANT_COLOURS = ["#d7191c", "#fdae61", "#abd9e9", "#2c7bb6", "#999999"]


def ramp(n: int) -> list[str]:
    """``n`` colours from :data:`RAMP` (interpolated picks when ``n`` differs from 5)."""
    if n <= 0:
        return []
    idx = np.round(np.linspace(0, len(RAMP) - 1, n)).astype(int) if n > 1 else [len(RAMP) - 1]
    return [RAMP[i] for i in idx]


def gistar_colour(label) -> str:
    s = str(label).lower().replace("spot", "").replace("%", "")
    s = re.sub(r"\s+", " ", s).strip()
    for key, col in GISTAR_COLOURS.items():
        parts = key.split()
        if all(p in s for p in parts):
            return col
    return GISTAR_COLOURS["not"]


def feature_styles(gdf, kind: str | None = None, breaks=None) -> tuple[list[str], list[tuple[str, str]]]:
    """Per-feature colour and the legend [(label, colour)] for a vector layer.

    spots: rank bands 1-3 / 4-10 / 11+ (dark to light red); gistar: the class colours;
    zones: one colour per quadrant (``quadrant`` or Minerva's ``type``); cells: quantile classes of
    :func:`value_column`, or, with ``breaks`` (class upper bounds, e.g. last week's), those classes
    plus an open top class ("over" the last bound), so maps of different periods share colours.
    """
    kind = kind or layer_kind(gdf)
    n = len(gdf)
    if kind == "spots" and "rank" in gdf.columns:
        r = pd.to_numeric(gdf["rank"], errors="coerce").fillna(999).to_numpy()
        cols = np.where(r <= 3, "#a50f15", np.where(r <= 10, "#de2d26", "#fb6a4a"))
        return list(cols), [("rank 1-3", "#a50f15"), ("rank 4-10", "#de2d26"), ("rank 11+", "#fb6a4a")]
    if kind == "gistar":
        c = gistar_class_column(gdf)
        if c is not None:
            labels = gdf[c].astype(str)
            cols = [gistar_colour(x) for x in labels]
            legend = [(lab, gistar_colour(lab)) for lab in sorted(labels.unique(), key=lambda s: (list(GISTAR_COLOURS.values()).index(gistar_colour(s)), s))]
            return cols, legend
    qcol = "quadrant" if "quadrant" in gdf.columns else ("type" if "type" in gdf.columns else None)
    if kind == "zones" and qcol is not None:
        q = gdf[qcol].astype(str)
        uniq = sorted(q.unique())
        cmap = {u: QUADRANT_COLOURS[i % len(QUADRANT_COLOURS)] for i, u in enumerate(uniq)}
        return [cmap[x] for x in q], [(u, cmap[u]) for u in uniq]
    vc = value_column(gdf)
    if vc is not None:
        fixed = breaks is not None
        bounds = np.append(np.asarray(breaks, float), np.inf) if fixed else class_breaks(gdf[vc].to_numpy())
        cls = classify(gdf[vc].to_numpy(), bounds)
        pal = ramp(len(bounds))
        lo = 0.0
        legend = []
        for b, col in zip(bounds, pal):
            legend.append((f"{vc} over {_fmt(lo)}" if np.isinf(b) else f"{vc} {_fmt(lo)} - {_fmt(b)}", col))
            lo = b
        return [pal[i] if i >= 0 else "#ffffff" for i in cls], legend
    return ["#3366cc"] * n, []


def _fmt(v) -> str:
    v = float(v)
    return f"{v:,.0f}" if abs(v) >= 100 or v == int(v) else f"{v:,.2f}".rstrip("0").rstrip(".")


def attribute_rows(gdf) -> list[dict]:
    """Attributes as JSON-able dicts (NaN -> None, numpy -> Python, timestamps -> ISO text)."""
    df = pd.DataFrame(gdf.drop(columns=gdf.geometry.name) if hasattr(gdf, "geometry") else gdf)
    out = []
    for rec in df.to_dict("records"):
        row = {}
        for k, v in rec.items():
            if isinstance(v, (np.integer,)):
                v = int(v)
            elif isinstance(v, (np.floating, float)):
                v = None if not np.isfinite(v) else round(float(v), 4)
            elif isinstance(v, (pd.Timestamp,)):
                v = v.isoformat()
            elif v is pd.NA or v is pd.NaT:
                v = None
            elif isinstance(v, (list, tuple, np.ndarray)):
                v = ", ".join(map(str, v))
            elif isinstance(v, (np.bool_,)):
                v = bool(v)
            row[str(k)] = v
        out.append(row)
    return out


# ================================================================================== KML / KMZ
def _kml_colour(hex_rgb: str, alpha: int) -> str:
    """KML colours are aabbggrr."""
    h = hex_rgb.lstrip("#")
    return f"{alpha:02x}{h[4:6]}{h[2:4]}{h[0:2]}"


def placemark_names(gdf, kind: str) -> list[str]:
    """Placemark names: '#rank location' for harm spots ('town #rank location' when there are several
    towns: ranks restart in each), else the label column, else 'feature N'."""
    if kind == "spots" and "rank" in gdf.columns:
        loc = gdf["location"].astype(str) if "location" in gdf.columns else gdf.get("spot_id", pd.Series([""] * len(gdf)))
        names = [f"#{int(r)} {l}".strip() if pd.notna(r) else str(l) for r, l in zip(gdf["rank"], loc)]
        if "town" in gdf.columns and gdf["town"].nunique() > 1:  # ranks restart in each town
            names = [f"{t} {n}" for t, n in zip(gdf["town"].astype(str), names)]
        return names
    c = label_column(gdf)
    if c is not None:
        return gdf[c].astype(str).tolist()
    return [f"feature {i + 1}" for i in range(len(gdf))]


def _description_html(row: dict, title: str | None = None) -> str:
    cells = "".join(f"<tr><th align='left'>{_esc(k)}</th><td>{_esc(_fmt_cell(v))}</td></tr>" for k, v in row.items())
    head = f"<b>{_esc(title)}</b><br/>" if title else ""
    return f"{head}<table>{cells}</table>"


def _fmt_cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return _fmt(v) if abs(v) >= 1 or v == 0 else f"{v:.3g}"
    return str(v)


def _esc(s) -> str:
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _coords(ring) -> str:
    return " ".join(f"{x:.7f},{y:.7f}" for x, y in np.asarray(ring.coords)[:, :2])


def _kml_geometry(parent, geom):
    t = geom.geom_type
    if t == "Point":
        ET.SubElement(ET.SubElement(parent, "Point"), "coordinates").text = f"{geom.x:.7f},{geom.y:.7f}"
    elif t == "LineString":
        ls = ET.SubElement(parent, "LineString")
        ET.SubElement(ls, "tessellate").text = "1"
        ET.SubElement(ls, "coordinates").text = _coords(geom)
    elif t == "Polygon":
        poly = ET.SubElement(parent, "Polygon")
        ET.SubElement(poly, "tessellate").text = "1"
        ob = ET.SubElement(ET.SubElement(poly, "outerBoundaryIs"), "LinearRing")
        ET.SubElement(ob, "coordinates").text = _coords(geom.exterior)
        for ring in geom.interiors:
            ib = ET.SubElement(ET.SubElement(poly, "innerBoundaryIs"), "LinearRing")
            ET.SubElement(ib, "coordinates").text = _coords(ring)
    elif t.startswith("Multi") or t == "GeometryCollection":
        mg = ET.SubElement(parent, "MultiGeometry")
        for g in geom.geoms:
            _kml_geometry(mg, g)
    else:  # pragma: no cover - all shapely types handled above
        raise ExportError(f"cannot write geometry type {t} to KML")


def kml_document(gdf, *, name: str = "harmspot", kind: str | None = None, meta: dict | None = None,
                 marking: str | None = None) -> ET.Element:
    """A KML 2.2 ``<kml>`` element: one Placemark per feature, styles shared per class.

    Each Placemark has ``name`` (:func:`placemark_names`), ``description`` (an HTML table of
    every attribute, rendered by Google Earth and most mobile KML viewers), ``styleUrl`` and
    ``ExtendedData`` (the same attributes as typed Data elements). Coordinates are WGS84
    lon,lat. The document description carries the period, parameters and protective marking.
    """
    if gdf.crs is None:
        gdf = gdf.set_crs(BNG)
    kind = kind or layer_kind(gdf, meta)
    colours, legend = feature_styles(gdf, kind)
    g = gdf.to_crs(WGS84)
    ET.register_namespace("", KML_NS)
    kml = ET.Element("kml", xmlns=KML_NS)
    doc = ET.SubElement(kml, "Document")
    ET.SubElement(doc, "name").text = name
    ET.SubElement(doc, "description").text = _doc_description(meta, marking, legend)
    style_ids = {}
    for col in dict.fromkeys(colours):
        sid = f"s{len(style_ids)}"
        style_ids[col] = sid
        st = ET.SubElement(doc, "Style", id=sid)
        ls = ET.SubElement(st, "LineStyle")
        ET.SubElement(ls, "color").text = _kml_colour(col, 0xFF)
        ET.SubElement(ls, "width").text = "2" if kind in ("spots", "zones", "boundary") else "1"
        ps = ET.SubElement(st, "PolyStyle")
        ET.SubElement(ps, "color").text = _kml_colour(col, 0x00 if kind == "boundary" else 0x99)
        ET.SubElement(ps, "fill").text = "0" if kind == "boundary" else "1"
        ic = ET.SubElement(st, "IconStyle")
        ET.SubElement(ic, "color").text = _kml_colour(col, 0xFF)
    names = placemark_names(g, kind)
    rows = attribute_rows(g)
    for nm, row, col, geom in zip(names, rows, colours, g.geometry):
        pm = ET.SubElement(doc, "Placemark")
        ET.SubElement(pm, "name").text = nm
        ET.SubElement(pm, "description").text = _description_html(row)
        ET.SubElement(pm, "styleUrl").text = f"#{style_ids[col]}"
        ed = ET.SubElement(pm, "ExtendedData")
        for k, v in row.items():
            d = ET.SubElement(ed, "Data", name=k)
            ET.SubElement(d, "value").text = "" if v is None else str(v)
        if geom is not None and not geom.is_empty:
            _kml_geometry(pm, geom)
    return kml


def _doc_description(meta, marking, legend) -> str:
    bits = []
    if marking:
        bits.append(f"<b>{_esc(marking)}</b>")
    meta = meta or {}
    per = meta.get("period")
    if isinstance(per, dict) and per.get("start"):
        bits.append(f"Period: {per['start']} to {per['end']}")
    if meta.get("kind"):
        bits.append(f"Layer: {_esc(meta['kind'])}")
    for c in meta.get("choices", []) or []:
        if c.get("automatic"):
            bits.append(_esc(f"{c['name']} = {c['value']} (chosen automatically: {c.get('reason', '')})"))
    if legend:
        bits.append("Legend: " + "; ".join(_esc(lab) for lab, _ in legend))
    bits.append("Made with harmspot")
    return "<br/>".join(bits)


def write_kml(gdf, path, *, kmz: bool | None = None, name: str | None = None, kind: str | None = None,
              meta: dict | None = None, marking: str | None = None) -> Path:
    """Write :func:`kml_document` as .kml, or zipped as ``doc.kml`` inside a .kmz."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    kmz = p.suffix.lower() == ".kmz" if kmz is None else kmz
    root = kml_document(gdf, name=name or p.stem, kind=kind, meta=meta, marking=marking)
    buf = io.BytesIO()
    ET.ElementTree(root).write(buf, encoding="utf-8", xml_declaration=True)
    if kmz:
        with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("doc.kml", buf.getvalue())
    else:
        p.write_bytes(buf.getvalue())
    return p


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
