"""Stage 2, units of analysis: BNG squares (``lattice``, with the compiled kernel ``_binning.c``),
H3 cells (``h3``), user polygons (``polygons``), ``factory.make_units``; counting incidents into
units (``counts``) and which units neighbour which (``neighbours``).
"""
from geo._lazy import lazy_exports

_WHERE = {
    "count_units": "counts",
    "resolve_defaults": "counts",
    "top_location_label": "counts",
    "unit_window_matrix": "counts",
    "make_units": "factory",
    "H3Units": "h3",
    "Lattice": "lattice",
    "SquareGrid": "lattice",
    "group_sum": "lattice",
    "window_index": "lattice",
    "PolygonUnits": "polygons",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _WHERE)
