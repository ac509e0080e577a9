"""CLI: ``harmspot map`` (offline folium map), ``harmspot export`` (files for patrol teams and GIS)
and ``harmspot pack`` (the tasking pack: map + A4 briefing PDF + exports + README, zipped).

Imports of ``services.cli`` helpers happen inside the command functions (services/cli.py imports
this module at start-up).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

MARKING_HELP = "Protective marking shown on every page and map (e.g. OFFICIAL-SENSITIVE)."


def register(app) -> None:
    """Add ``map``, ``export`` and ``pack`` to the harmspot Typer app."""

    @app.command("export", epilog="Example: harmspot export spots.gpkg --format kml --out spots.kml")
    def export_cmd(
        layer_file: Path = typer.Argument(..., help="Any harmspot output: .gpkg, .geojson, .csv, .parquet or .tif."),
        fmt: str = typer.Option(..., "--format", help="kml | kmz | gpkg | geojson | shp | csv | tif"),
        out: Path = typer.Option(..., "--out", help="Output file (shp writes a .zip)."),
        layer: Optional[str] = typer.Option(None, "--layer", help="GeoPackage layer (default: the first)."),
        marking: Optional[str] = typer.Option(None, "--marking", help=MARKING_HELP + " Written into KML."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object: out, format, features."),
    ):
        """Convert a layer for devices and GIS: same features, readable attribute names."""
        from maps.export import export_file
        from services.ui import console, print_json

        p, n = export_file(layer_file, fmt, out, layer=layer, marking=marking)
        what = "surface" if fmt == "tif" else f"{n:,} feature(s)"
        console.print(f"{what} -> {p} ({fmt})")
        if fmt == "shp":
            console.print("[cyan]i[/] Shapefile field names are cut to 10 characters: fields.csv in the zip "
                          "lists full name -> field name (docs/maps.md)")
        if as_json:
            print_json({"out": str(p), "format": fmt, "features": n})
