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

    @app.command("map", epilog="Example: harmspot map cells.gpkg spots.gpkg kde.tif --boundary district.gpkg "
                 "--marking OFFICIAL-SENSITIVE --out map.html")
    def map_cmd(
        layer_files: List[Path] = typer.Argument(..., help="Layer files from any command: .gpkg, .geojson, .csv, .tif."),
        out: Path = typer.Option(..., "--out", help="The HTML map to write."),
        title: Optional[str] = typer.Option(None, "--title", help="Map title (default: the layer kinds)."),
        marking: str = typer.Option("OFFICIAL-SENSITIVE", "--marking", help=MARKING_HELP + " '' for none."),
        tiles: Optional[str] = typer.Option(None, "--tiles", help="Basemap tile URL template .../{z}/{x}/{y}.png "
                                            "(optional; without it the map needs no network)."),
        cdn: bool = typer.Option(False, "--cdn", help="Link Leaflet from its CDN instead of inlining it (smaller "
                                 "file, needs internet when viewed)."),
        boundary: Optional[str] = typer.Option(None, "--boundary", help="District/town polygons for context."),
        name_col: Optional[str] = typer.Option(None, "--name-col", help="Name column of --boundary."),
        max_features: int = typer.Option(50_000, "--max-features", help="Above this many cells, merge to "
                                         "coarser squares."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object: out, bytes, layers."),
    ):
        """Draw layers on one map for the tasking meeting: works offline, with legend, popups and marking."""
        from maps.webmap import build_map, load_map_layers, save_map
        from services.cli import load_area
        from services.ui import console, echo_choices, print_json

        layers = load_map_layers(layer_files)
        bnd = load_area(boundary, name_col) if boundary else None
        m, info = build_map(layers, title=title, marking=marking or None, tiles=tiles, boundary=bnd,
                            max_features=max_features)
        echo_choices(info.choices)
        p = save_map(m, out, offline=not cdn)
        for L in info.layers:
            console.print(f"  {L['name']}: {L['drawn']:,} of {L['total']:,} drawn ({L['renderer']})")
        size = p.stat().st_size
        mode = "CDN links (needs internet to view)" if cdn else "offline (Leaflet inlined, no network needed)"
        if tiles:
            mode += f"; basemap tiles from {tiles}"
        console.print(f"map -> {p} ({size / 1e6:.1f} MB, {mode})")
        if as_json:
            print_json({"out": str(p), "bytes": size, "offline": not cdn, "layers": info.layers,
                        "period": info.period})

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
