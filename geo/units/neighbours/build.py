"""``neighbours_for``: the neighbour rule for a kind of unit (lattice for squares, rings for H3, a band or
contiguity for polygons), through the cache when one is given, with the choice echoed back.
"""
from __future__ import annotations


import numpy as np

from geo.core.result import Choice
from geo.units.neighbours.base import LatticeNeighbours, distance_band_neighbours
from geo.units.neighbours.h3_rings import h3_ring_neighbours
from geo.units.neighbours.contiguity import contiguity_neighbours
from geo.units.neighbours.cache import NeighbourCache, _centroid_xy, _h3_cells, neighbours_key


def neighbours_for(units, frame, *, band: float | None = None, ring: int | None = None,
                   contiguity: str = "queen", cache: NeighbourCache | None = None) -> tuple[object, list[Choice]]:
    """Neighbours for a unit frame from ``count_units`` and the choices made.

    Squares: distance band (default ``cell * sqrt(2)``: the 8 queen neighbours, as
    sfhotspot). H3: grid ring ``k`` (default 1) unless a band is given. Polygons:
    queen contiguity unless a band is given. With a :class:`NeighbourCache`, H3 and
    polygon matrices are built once and reused (echoed as a choice).
    """
    choices: list[Choice] = []
    kind = getattr(units, "kind", "square")
    if kind == "square":
        if band is None:
            band = units.cell * np.sqrt(2.0)
            choices.append(Choice("distance band", f"{band:.1f} m", "cell size x sqrt(2): the 8 surrounding cells"))
        ix, iy = square_index(frame, units.cell)
        return LatticeNeighbours(ix, iy, units.cell, band), choices
    if kind == "h3" and band is None:
        if ring is None:
            ring = 1
            choices.append(Choice("H3 neighbours", "ring 1", "the 6 touching cells"))
        rule = {"neighbours": "h3 grid ring", "ring_k": int(ring)}
        build = lambda: h3_ring_neighbours(_h3_cells(frame), ring)  # noqa: E731
    elif band is not None:
        rule = {"neighbours": "distance band", "band_m": float(band)}
        xy = _centroid_xy(frame)  # once, for the build and the cache key
        build = lambda: distance_band_neighbours(xy, band)  # noqa: E731
    else:
        choices.append(Choice("neighbours", f"{contiguity} contiguity", "polygons sharing a boundary"))
        rule = {"neighbours": f"{contiguity} contiguity"}
        build = lambda: contiguity_neighbours(frame.geometry.values, contiguity)  # noqa: E731
    if cache is None:
        return build(), choices
    key = neighbours_key(kind, frame, rule, centroids=xy if band is not None else None)
    nb = cache.get(key, build)
    said = {"memory": "reused (built earlier in this session)", "stored": "reused from the store",
            "built": "built now and cached"}[cache.last]
    choices.append(Choice("neighbour matrix", said, f"{len(frame):,} units, key {key[:16]}"))
    return nb, choices


def square_index(frame, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Lattice column/row of BNG squares: the ``ix``/``iy`` columns, else from the geometry's lower-left corner."""
    if "ix" in frame and "iy" in frame:
        return frame["ix"].to_numpy(np.int64), frame["iy"].to_numpy(np.int64)
    b = frame.geometry.bounds
    return (np.rint(b["minx"].to_numpy() / cell).astype(np.int64),
            np.rint(b["miny"].to_numpy() / cell).astype(np.int64))
