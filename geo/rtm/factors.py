"""Risk-factor layers: named point sets in British National Grid metres.

A risk factor (pubs, rail stations, bus stops, schools...) is a set of points.
:func:`factor_from_frame` turns a table or a GeoDataFrame that a caller has
already read into a :class:`FactorLayer`; it never reads files itself (the CLI
does). Tables may carry ``longitude``/``latitude`` (also ``lon``/``lat``,
``long``/``lat``, ``lng``/``lat``, WGS84) or ``easting``/``northing`` (BNG)
columns. Polygons and lines are reduced to a representative point (documented
caveat: a park is represented by one point inside it).

Every row is accounted for: rows without usable coordinates are counted in
``dropped`` with the first offending row named, and a layer with no usable point,
or none inside the study area, raises :class:`FactorLayerError` naming the factor
and its source.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import shapely

from geo import BNG, WGS84
from geo.core.errors import HarmspotError


LON_NAMES = ("longitude", "lon", "long", "lng", "x_lon")
LAT_NAMES = ("latitude", "lat", "y_lat")
EAST_NAMES = ("easting", "eastings", "x_bng")
NORTH_NAMES = ("northing", "northings", "y_bng")


class FactorLayerError(HarmspotError):
    """A risk-factor layer is empty, unreadable or lies outside the study area."""


@dataclass
class FactorLayer:
    """A named risk factor: points (n, 2) in EPSG:27700 plus bookkeeping.

    Attributes
    ----------
    name : str
        Factor name as given (``pubs``).
    xy : ndarray (n, 2)
        BNG eastings/northings of the features kept.
    source : str
        Where the points came from (file path or a description).
    read : int
        Rows in the input.
    dropped : dict
        Reason -> rows not kept (missing/unparsable coordinates, outside the area).
    """

    name: str
    xy: np.ndarray
    source: str = ""
    read: int = 0
    dropped: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.xy)

    def __repr__(self) -> str:
        lost = sum(self.dropped.values())
        return f"<FactorLayer {self.name!r}: {len(self):,} points of {self.read:,} rows ({lost:,} not used), {self.source}>"

    def describe(self) -> dict:
        return {"name": self.name, "source": self.source, "read": self.read, "points": len(self),
                "dropped": dict(self.dropped), "notes": list(self.notes)}


def _find(cols, names):
    low = {str(c).strip().lower(): c for c in cols}
    for n in names:
        if n in low:
            return low[n]
    return None


def factor_from_frame(name: str, data, source: str = "", area=None, *, buffer_m: float = 0.0) -> FactorLayer:
    """Build a :class:`FactorLayer` from an already-read DataFrame or GeoDataFrame.

    Parameters
    ----------
    name : str
        The factor's name (used in every message and output).
    data : DataFrame or GeoDataFrame
        A GeoDataFrame (any CRS; points, or polygons/lines reduced to a point
        inside them) or a plain table with lon/lat (WGS84) or easting/northing
        (BNG) columns; column names are matched case-insensitively.
    source : str
        The file it came from, for messages.
    area : GeoDataFrame or shapely geometry, optional
        Study area (BNG). Features farther than ``buffer_m`` outside it are
        dropped (and counted); a feature just outside the edge still raises risk
        inside, so callers usually pass a buffer of the largest spatial influence.
    buffer_m : float
        Distance beyond the area within which features are kept.

    Returns
    -------
    FactorLayer

    Raises
    ------
    FactorLayerError
        No rows, no usable coordinates, or no point inside the (buffered) area.
    """
    src = source or "<frame>"
    if data is None or len(data) == 0:
        raise FactorLayerError(f"factor {name!r} ({src}): the layer is empty (no rows); give a file with points")
    dropped: dict[str, int] = {}
    notes: list[str] = []
    n = len(data)
    if hasattr(data, "geometry") and getattr(data, "crs", None) is not None and data.geometry.name in data.columns \
            and data.geometry.notna().any():
        g = data.geometry
        bad = (g.isna() | g.is_empty).to_numpy()
        if bad.any():
            dropped["missing geometry"] = int(bad.sum())
        g = g[~bad].to_crs(BNG)
        pts = np.where((g.geom_type == "Point").to_numpy(), g.values, shapely.point_on_surface(g.values))
        pts = shapely.get_coordinates(np.asarray(pts, dtype=object))
        xy = np.asarray(pts, float).reshape(-1, 2)
    else:
        df = pd.DataFrame(data)
        cols = list(df.columns)
        lon_c, lat_c = _find(cols, LON_NAMES), _find(cols, LAT_NAMES)
        e_c, n_c = _find(cols, EAST_NAMES), _find(cols, NORTH_NAMES)
        if lon_c is not None and lat_c is not None:
            a, b, crs = lon_c, lat_c, WGS84
        elif e_c is not None and n_c is not None:
            a, b, crs = e_c, n_c, BNG
        else:
            shown = ", ".join(repr(c) for c in cols[:12])
            raise FactorLayerError(
                f"factor {name!r} ({src}): no coordinate columns; expected longitude/latitude (or lon/lat, long, lng) "
                f"or easting/northing; found {shown}")
        xa = pd.to_numeric(df[a], errors="coerce").to_numpy(float)
        yb = pd.to_numeric(df[b], errors="coerce").to_numpy(float)
        raw_missing = df[a].isna().to_numpy() | df[b].isna().to_numpy()
        bad = ~np.isfinite(xa) | ~np.isfinite(yb)
        if crs == WGS84:
            bad |= (np.abs(xa) > 180) | (np.abs(yb) > 90)
        if (bad & raw_missing).any():
            dropped["missing coordinates"] = int((bad & raw_missing).sum())
        if (bad & ~raw_missing).any():
            first = int(np.flatnonzero(bad & ~raw_missing)[0])
            dropped["unparsable coordinates"] = int((bad & ~raw_missing).sum())
            notes.append(f"first unparsable coordinates at data row {first + 1}")
        xa, yb = xa[~bad], yb[~bad]
        if crs == WGS84 and len(xa):
            from pyproj import Transformer

            xa, yb = Transformer.from_crs(WGS84, BNG, always_xy=True).transform(xa, yb)
        xy = np.c_[np.asarray(xa, float), np.asarray(yb, float)]
    if len(xy) == 0:
        raise FactorLayerError(
            f"factor {name!r} ({src}): no row has usable coordinates ({n} rows read; {dropped})")
    if area is not None:
        geom = area.union_all() if hasattr(area, "union_all") else area
        if hasattr(area, "crs") and area.crs is not None and area.crs.to_epsg() != 27700:
            geom = area.to_crs(BNG).union_all()
        zone = geom.buffer(buffer_m) if buffer_m > 0 else geom
        shapely.prepare(zone)
        inside = shapely.contains_xy(zone, xy[:, 0], xy[:, 1])
        if not inside.any():
            x0, y0, x1, y1 = geom.bounds
            raise FactorLayerError(
                f"factor {name!r} ({src}): none of its {len(xy)} points lies inside the study area "
                f"(E {x0:.0f}-{x1:.0f}, N {y0:.0f}-{y1:.0f}) or within {buffer_m:g} m of it; first point is "
                f"E {xy[0, 0]:.0f}, N {xy[0, 1]:.0f}. Check the file's coordinates/CRS or the --boundary")
        if (~inside).any():
            dropped["outside study area"] = int((~inside).sum())
        xy = xy[inside]
    return FactorLayer(name=name, xy=xy, source=src, read=n, dropped=dropped, notes=notes)
