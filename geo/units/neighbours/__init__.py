"""Neighbour structures between units, used by every local statistic (Gi*, LISA): the regular
lattice (``base.LatticeNeighbours``), distance bands and sparse matrices (``base``), H3 rings
(``h3_rings``), polygon contiguity (``contiguity``), the choice for a kind of unit (``build``) and the
caller-backed cache of built matrices (``cache``).
"""
from geo._lazy import lazy_exports

_WHERE = {
    "BAND_RTOL": "base",
    "LatticeNeighbours": "base",
    "SparseNeighbours": "base",
    "distance_band_neighbours": "base",
    "neighbours_for": "build",
    "square_index": "build",
    "NeighbourCache": "cache",
    "neighbours_key": "cache",
    "CONTIGUITY_METHODS": "contiguity",
    "contiguity_neighbours": "contiguity",
    "h3_ring_neighbours": "h3_rings",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _WHERE)
