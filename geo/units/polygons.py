"""User polygons (beats, wards, LSOAs, town centres) as units of analysis: point-in-polygon
assignment through a spatial index, ids and labels kept.
"""
from __future__ import annotations


import numpy as np
import pandas as pd
import shapely

from geo import BNG
from geo.core.errors import BoundaryError
from geo.units.lattice import _Locate, _geom_of


class PolygonUnits(_Locate):
    """User polygons (LSOAs, beats...) identified by ``id_col``."""

    kind = "polygons"

    def __init__(self, polygons, id_col: str, name: str = "polygons"):
        if id_col not in polygons.columns:
            raise BoundaryError(f"{name}: no column {id_col!r}; columns are {list(polygons.columns)}")
        ids = polygons[id_col].astype(str)
        if ids.duplicated().any():
            first = ids[ids.duplicated()].iloc[0]
            raise BoundaryError(f"{name}: {int(ids.duplicated().sum())} duplicate ids in {id_col!r}; first {first!r}")
        p = polygons.to_crs(BNG) if polygons.crs is not None else polygons.set_crs(BNG)
        self.polygons = p.assign(cell_id=ids.to_numpy())[["cell_id", "geometry"]].reset_index(drop=True)
        self.id_col = id_col
        self.name = name

    def describe(self) -> dict:
        return {"grid": "polygons", "source": self.name, "id_col": self.id_col, "units": len(self.polygons), "crs": BNG}

    def frame(self, area=None, points_xy=None):
        p = self.polygons
        geom = _geom_of(area)
        if geom is not None:
            shapely.prepare(geom)
            p = p[shapely.intersects(geom, p.geometry.values)].reset_index(drop=True)
        return p

    def assign(self, frame: pd.DataFrame, units) -> np.ndarray:
        pts = shapely.points(frame["x"].to_numpy(float), frame["y"].to_numpy(float))
        tree = shapely.STRtree(units.geometry.values)
        pi, ui = tree.query(pts, predicate="intersects")
        out = np.full(len(pts), -1, np.int64)
        # first polygon wins for points on a shared edge: reverse so the lowest index is written last
        out[pi[::-1]] = ui[::-1]
        return out
