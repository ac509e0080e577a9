"""Boundary manifest and loaders.

``load_boundary(path, name_col=None)`` reads any polygon file (GeoJSON, gzipped
GeoJSON, GeoPackage, Shapefile...) into EPSG:27700, repairs invalid polygons
with a warning, and checks the name column. ``load_named(name)`` loads an entry
of ``manifest.toml``.
"""
from __future__ import annotations

import tomllib
import warnings
from pathlib import Path

import geopandas as gpd
import shapely

from geo import BNG
from geo.core.errors import BoundaryError

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


class BoundaryRepairWarning(UserWarning):
    """Invalid polygons were repaired with shapely.make_valid."""


def manifest() -> dict:
    with open(HERE / "manifest.toml", "rb") as fh:
        return tomllib.load(fh)


def read_polygons(path) -> gpd.GeoDataFrame:
    p = Path(path)
    if not p.exists():
        raise BoundaryError(f"{p}: boundary file not found")
    src = f"/vsigzip/{p}" if p.suffix == ".gz" else str(p)
    try:
        gdf = gpd.read_file(src)
    except Exception as exc:  # pyogrio raises its own DataSourceError family
        raise BoundaryError(f"{p}: cannot be read as a polygon file: {exc}") from None
    return gdf


def load_boundary(path, name_col: str | None = None, *, dissolve: bool = False) -> gpd.GeoDataFrame:
    """Polygons in EPSG:27700 with a ``name`` column (from ``name_col``); invalid ones repaired."""
    gdf = read_polygons(path)
    if len(gdf) == 0:
        raise BoundaryError(f"{path}: has no features")
    if gdf.crs is None:
        raise BoundaryError(f"{path}: has no CRS; save it with one (EPSG:27700 or EPSG:4326)")
    types = set(gdf.geom_type.dropna())
    if not types <= {"Polygon", "MultiPolygon"}:
        raise BoundaryError(f"{path}: expected polygons, found {sorted(types)}")
    nulls = gdf.geometry.isna() | gdf.geometry.is_empty
    if nulls.any():
        first = int(nulls.to_numpy().nonzero()[0][0])
        raise BoundaryError(f"{path}: {int(nulls.sum())} feature(s) without geometry; first is feature {first + 1}")
    gdf = gdf.to_crs(BNG)
    invalid = ~gdf.geometry.is_valid
    if invalid.any():
        first = int(invalid.to_numpy().nonzero()[0][0])
        label = gdf.iloc[first][name_col] if name_col and name_col in gdf.columns else f"feature {first + 1}"
        warnings.warn(
            f"{path}: repaired {int(invalid.sum())} invalid polygon(s) with make_valid (first: {label})",
            BoundaryRepairWarning, stacklevel=2,
        )
        fixed = shapely.make_valid(gdf.geometry.values[invalid.to_numpy()])
        # keep only the polygonal part of any GeometryCollection make_valid returns
        fixed = [shapely.union_all([g for g in shapely.get_parts(f) if g.geom_type in ("Polygon", "MultiPolygon")])
                 if f.geom_type == "GeometryCollection" else f for f in fixed]
        gdf.loc[invalid, "geometry"] = fixed
    if name_col is not None:
        if name_col not in gdf.columns:
            raise BoundaryError(f"{path}: no column {name_col!r} for names; columns are {list(gdf.columns)}")
        gdf["name"] = gdf[name_col].astype(str)
    elif "name" not in gdf.columns:
        gdf["name"] = [f"area {i + 1}" for i in range(len(gdf))]
    if dissolve:
        gdf = gpd.GeoDataFrame({"name": ["study area"]}, geometry=[gdf.union_all()], crs=BNG)
    return gdf


def load_named(name: str, root: Path | None = None) -> gpd.GeoDataFrame:
    m = manifest()
    if name not in m:
        raise BoundaryError(f"boundary {name!r} is not in the manifest; known: {sorted(m)}")
    entry = m[name]
    path = (root or ROOT) / entry["path"]
    return load_boundary(path, entry.get("name_col"))
