"""The caller-backed cache of built neighbour matrices (``NeighbourCache``) and the key that names a
matrix by its rule and the exact units it was built on (``neighbours_key``).
"""
from __future__ import annotations


import numpy as np

from geo.units.neighbours.base import SparseNeighbours


def _h3_cells(frame) -> np.ndarray:
    from geo.units.h3 import H3Units

    return frame["h3"].to_numpy(np.uint64) if "h3" in frame else H3Units.from_str(frame["cell_id"])




# ------------------------------------------------------------------------------------------ cache
class NeighbourCache:
    """Neighbour matrices built once and reused.

    A matrix is keyed by its rule and the exact units it was built on (see
    :func:`neighbours_key`): H3 cell ids, or the polygons' WKB (every coordinate and
    part), or their centroids for a distance band. Matrices are kept in memory while
    this object lives (least recently used dropped beyond ``size``) and, when the
    caller gives them, in storage through ``load(key) -> bytes | None`` and
    ``save(key, bytes)`` (``services`` passes its store's, so next week's run on the
    same area reuses the matrix built this week). Squares are never cached: their
    lattice convolution has nothing to build. geo keeps no global state; the cache
    lives as long as its owner.

    ``last``: where the most recent :meth:`get` found its matrix (``"memory"``,
    ``"stored"`` or ``"built"``).
    """

    def __init__(self, size: int = 8, load=None, save=None):
        from collections import OrderedDict

        self.size = int(size)
        self._load, self._save = load, save
        self._mem: "OrderedDict[str, SparseNeighbours]" = OrderedDict()
        self.last: str | None = None

    def get(self, key: str, build) -> "SparseNeighbours":
        """The matrix for ``key``: from memory, else storage, else ``build()`` (then kept and saved)."""
        nb = self._mem.get(key)
        if nb is not None:
            self._mem.move_to_end(key)
            self.last = "memory"
            return nb
        data = self._load(key) if self._load is not None else None
        nb = None
        if data is not None:
            try:
                nb = SparseNeighbours.from_bytes(data)
                self.last = "stored"
            except Exception:  # an unreadable stored copy is a miss: rebuilt below and saved over
                nb = None
        if nb is None:
            nb = build()
            self.last = "built"
            if self._save is not None:
                self._save(key, nb.to_bytes())
        self._mem[key] = nb
        while len(self._mem) > self.size:
            self._mem.popitem(last=False)
        return nb


def _centroid_xy(frame) -> np.ndarray:
    """(n, 2) float64 centroids of the units, in unit order."""
    c = frame.geometry.centroid
    return np.ascontiguousarray(np.column_stack([c.x.to_numpy(float), c.y.to_numpy(float)]))


def neighbours_key(kind: str, frame, rule: dict, *, centroids: np.ndarray | None = None) -> str:
    """Cache key of a neighbour matrix: the rule plus a SHA-256 digest of the exact units.

    H3: the cell ids in unit order. Polygons (contiguity): every coordinate in unit order
    plus each unit's geometry type and numbers of coordinates, parts and holes, so an
    edited boundary (one vertex moved) gets a new key. Distance band: the unit
    centroids (``centroids`` when the caller already has them). Any change of units,
    their order or the rule changes the key."""
    import hashlib
    import json

    h = hashlib.sha256(json.dumps({"kind": kind, **rule}, sort_keys=True, default=str).encode())
    if kind == "h3" and "band_m" not in rule:
        h.update(_h3_cells(frame).tobytes())
    elif "band_m" in rule:
        h.update(np.ascontiguousarray(_centroid_xy(frame) if centroids is None else centroids, float).tobytes())
    else:
        import shapely

        g = np.asarray(frame.geometry.values, dtype=object)
        for part in (shapely.get_type_id(g), shapely.get_num_coordinates(g), shapely.get_num_geometries(g),
                     shapely.get_num_interior_rings(g), shapely.get_coordinates(g)):
            h.update(np.ascontiguousarray(part).tobytes())
    return f"{kind}-{h.hexdigest()[:40]}"
