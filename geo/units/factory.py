"""``make_units``: the units of analysis a command asks for (BNG squares, H3 cells or user polygons)
over a study area, with the automatic choices echoed back.
"""
from __future__ import annotations



from geo.core.errors import HarmspotError
from geo.units.lattice import SquareGrid
from geo.units.h3 import H3Units
from geo.units.polygons import PolygonUnits


def make_units(grid: str = "square", cell: float | None = None, res: int | None = None, polygons=None,
               id_col: str | None = None, name: str = "polygons"):
    if grid == "square":
        return SquareGrid(cell if cell is not None else 150.0)
    if grid == "h3":
        return H3Units(res if res is not None else 9)
    if polygons is None:
        raise HarmspotError(f"--grid {grid!r}: give 'square', 'h3' or a polygon file")
    return PolygonUnits(polygons, id_col, name=name)
