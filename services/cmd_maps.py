"""CLI: ``harmspot map`` (offline folium map), ``harmspot export`` (files for patrol teams and GIS)
and ``harmspot pack`` (the tasking pack: map + A4 briefing PDF + exports + README, zipped).

Imports of ``services.cli`` helpers happen inside the command functions (services/cli.py imports
this module at start-up).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from services.ui import STORE_HELP

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
        breaks: Optional[str] = typer.Option(None, "--breaks", help="Class upper bounds for cell layers, e.g. "
                                             "10,50,100,500 (plus an 'over 500' class), so this week's map uses "
                                             "last week's classes. Default: quantiles of this map, echoed so they "
                                             "can be passed next time."),
        surface_max: Optional[float] = typer.Option(None, "--surface-max", min=0.0, help="Top of the KDE/RTM "
                                                    "surfaces' colour ramp (default: each surface's 99th "
                                                    "percentile, echoed)."),
        check: bool = typer.Option(False, "--check", help="Open the map in headless Chromium and report what drew "
                                   "and any request that would leave the machine (needs chromium, websocket-client)."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object: out, bytes, layers."),
    ):
        """Draw layers on one map for the tasking meeting: works offline, with legend, popups and marking."""
        from maps.webmap.build import build_map, save_map
        from maps.webmap.layers import load_map_layers
        from services.cli import load_area
        from services.ui import console, echo_choices, print_json

        from maps.export.style import parse_breaks

        fixed = parse_breaks(breaks) if breaks is not None else None
        layers = load_map_layers(layer_files)
        bnd = load_area(boundary, name_col) if boundary else None
        m, info = build_map(layers, title=title, marking=marking or None, tiles=tiles, boundary=bnd,
                            max_features=max_features, breaks=fixed, surface_max=surface_max)
        hidden = {L.name for L in layers if not L.show}
        echo_choices(info.choices)
        p = save_map(m, out, offline=not cdn)
        for L in info.layers:
            off = " [dim](off at start; tick it in the layer list)[/]" if L["name"] in hidden else ""
            console.print(f"  {L['name']}: {L['drawn']:,} of {L['total']:,} drawn ({L['renderer']}){off}")
        size = p.stat().st_size
        mode = "CDN links (needs internet to view)" if cdn else "offline (Leaflet inlined, no network needed)"
        if tiles:
            mode += f"; basemap tiles from {tiles}"
        console.print(f"map -> {p} ({size / 1e6:.1f} MB, {mode})")
        checked = None
        if check:
            from maps.webmap.browser import browser_check

            r = browser_check(p, block_network=not tiles)
            built = (r["harmspot"] or {"layers": {}})["layers"]
            drawn = {}
            for L in info.layers:  # on screen: SVG paths / overlay images in the DOM; canvas: the page's count
                css = L["css_class"]
                if L["renderer"] == "canvas":
                    n_on = built.get(css, {}).get("features", 0) if L["name"] not in hidden else 0
                else:
                    n_on = r["counts"].get(f"{css}:path", 0) + r["counts"].get(f"{css}:img", 0)
                drawn[L["name"]] = n_on
            checked = {"load_ms": round(r["load_ms"]), "external_requests": r["external"], "js_errors": r["errors"],
                       "drawn": drawn}
            console.print(f"Chromium: loaded in {r['load_ms']:,.0f} ms; drawn {checked['drawn']}; "
                          f"{len(r['external'])} request(s) left the machine; {len(r['errors'])} script error(s)")
            for u in r["external"][:5]:
                console.print(f"  [yellow]![/] {u}")
        if as_json:
            print_json({"out": str(p), "bytes": size, "offline": not cdn, "layers": info.layers,
                        "period": info.period, "check": checked, "choices": [c.to_dict() for c in info.choices]})

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
        from maps.export.write import export_file
        from services.ui import console, print_json

        p, n = export_file(layer_file, fmt, out, layer=layer, marking=marking)
        what = "surface" if fmt == "tif" else f"{n:,} feature(s)"
        console.print(f"{what} -> {p} ({fmt})")
        if fmt == "shp":
            console.print("[cyan]i[/] Shapefile field names are cut to 10 characters: fields.csv in the zip "
                          "lists full name -> field name (docs/maps.md)")
        if as_json:
            print_json({"out": str(p), "format": fmt, "features": n})

    @app.command("pack", epilog="Example: harmspot pack --store essex.duckdb --towns towns.gpkg --name-col name "
                 "--from 2018-03 --to 2019-02 --marking OFFICIAL-SENSITIVE --out tasking-2019-02")
    def pack_cmd(
        store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
        towns: str = typer.Option(..., "--towns", help="Town polygons; one briefing page per town."),
        name_col: str = typer.Option("name", "--name-col", help="Column of --towns holding the town name."),
        out: Path = typer.Option(..., "--out", help="Folder to write (DIR.zip is written beside it)."),
        n: int = typer.Option(20, "--n", help="Harm spots per town."),
        date_from: Optional[str] = typer.Option(None, "--from", help="YYYY-MM (default: 12 months back from --to)."),
        date_to: Optional[str] = typer.Option(None, "--to", help="YYYY-MM (default: latest month in the store)."),
        cell: float = typer.Option(150.0, "--cell", help="Square size in metres."),
        weights: str = typer.Option("cchi-national-2026", "--weights", help="Shipped table name or a .csv/.toml file."),
        proactive: bool = typer.Option(False, "--proactive/--no-proactive", help="Weigh drugs, weapons, ASB."),
        minutes: int = typer.Option(15, "--minutes", help="Target minutes per visit."),
        marking: str = typer.Option("OFFICIAL-SENSITIVE", "--marking", help=MARKING_HELP),
        title: str = typer.Option("Harm spots briefing", "--title", help="Title of the pages and the map."),
        no_zip: bool = typer.Option(False, "--no-zip", help="Do not write DIR.zip."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object: dir, zip, files, spots, pages."),
    ):
        """Build the tasking pack: offline map, A4 briefing PDF per town, exports and a README, zipped."""
        from geo.units.counts import count_units
        from geo.units.lattice import SquareGrid
        from maps.pack import build_pack
        from services.cli import load_area, load_weights, open_cli_store, resolve_period
        from services.ui import console, echo_choices, print_json, progress_bar

        wt = load_weights(weights, proactive)
        tw = load_area(towns, name_col)  # copies --name-col into 'name'
        with open_cli_store(store, read_only=False) as st:
            period, pchoices = resolve_period(st, date_from, date_to, default_months=12)
            area = st.study_area()
            inc = st.incidents(period=period)
            inputs = {"store": st.url, "towns": towns, "name_col": name_col, "incidents_in_period": len(inc)}
        spots, how = _harm_spots(inc, tw, n=n, cell=cell, weights=wt, period=period, area=area, minutes=minutes)
        spots.choices = pchoices + [c for c in spots.choices if c.name != "look-back"] + how
        spots.inputs.update(inputs)
        echo_choices(spots)
        cells = count_units(inc, SquareGrid(cell), wt, area=area, period=period, inputs=inputs)
        with progress_bar("pack", total=6) as cb:
            summary = build_pack(spots, out, towns=tw, name_col="name", cells=cells, boundary=area, marking=marking,
                                 title=title, inputs=inputs, make_zip=not no_zip, progress=cb)
        console.print(f"{summary['spots']} harm spots in {summary['towns']} town(s), {summary['pages']} A4 page(s) "
                      f"-> {summary['dir']}" + (f" and {summary['zip']}" if summary["zip"] else ""))
        if as_json:
            print_json(summary)


def demo_step(ctx) -> None:
    """Offline map of the demo outputs, KML/GeoJSON exports and a tasking pack (maps, exports, PDF)."""
    from geo.core.errors import HarmspotError
    from maps.export.write import export_file
    from maps.webmap.build import build_map, save_map
    from maps.webmap.layers import load_map_layers
    from services.ui import console

    out = ctx.out
    files = sorted(p for p in out.iterdir() if p.is_file() and p.suffix.lower() in (".gpkg", ".geojson", ".tif"))
    layers = []
    for p in files:
        try:
            layers += load_map_layers([p])
        except (HarmspotError, ValueError, OSError) as exc:  # a non-layer file: say so, keep going
            console.print(f"  [yellow]![/] {p.name} not mapped: {exc}")
    if layers:
        m, info = build_map(layers, title="Harmstead demo (SYNTHETIC)", marking="OFFICIAL-SENSITIVE",
                            boundary=ctx.town.towns)
        ctx.add(f"offline map ({len(info.layers)} layers)", save_map(m, out / "map_demo.html"))
    spots = next((p for p in files if p.stem.startswith("grip")), None)
    src = spots or (out / "cells_150m.gpkg")
    if src.exists():
        stem = src.stem
        p, n = export_file(src, "kmz", out / f"{stem}.kmz", marking="OFFICIAL-SENSITIVE")
        ctx.add(f"KMZ for phones ({n} placemarks)", p)
    if (ctx.store_path.exists() and (out / "inputs" / "towns.gpkg").exists()):
        from typer.testing import CliRunner

        from services.cli import app

        r = CliRunner().invoke(app, ["pack", "--store", str(ctx.store_path), "--towns", str(out / "inputs" / "towns.gpkg"),
                                     "--name-col", "name", "--n", "10", "--marking", "OFFICIAL-SENSITIVE",
                                     "--out", str(out / "tasking-pack")])
        if r.exit_code == 0:
            ctx.add("tasking pack (map, A4 PDF per town, exports, README)", out / "tasking-pack")
        else:
            console.print(f"  [yellow]![/] tasking pack failed: {r.exception or r.output[-300:]}")


def _harm_spots(inc, towns, *, n, cell, weights, period, area, minutes):
    """Grip harm spots from geo.grip; if that module is absent, the top-n cells by harm per town (said so)."""
    from geo.core.result import Choice

    try:
        from geo.grip.spots import select_spots
    except ImportError:  # pragma: no cover - geo.grip ships with harmspot; kept for partial installs
        return _top_cells(inc, towns, n=n, cell=cell, weights=weights, period=period, area=area, minutes=minutes), [
            Choice("harm spots", f"top {n} cells by harm per town", "geo.grip is not installed")]
    res = select_spots(inc, towns, name_col="name", n=n, cell=cell, weights=weights, period=period, area=area,
                       minutes=minutes)
    return res, []


def _top_cells(inc, towns, *, n, cell, weights, period, area, minutes):  # pragma: no cover - fallback only
    import numpy as np
    import pandas as pd

    from geo.units.counts import count_units
    from geo.core.result import AnalysisResult
    from geo.units.lattice import SquareGrid

    parts = []
    for name, geom in zip(towns["name"], towns.geometry):
        r = count_units(inc, SquareGrid(cell), weights, area=geom, period=period)
        lay = r.layer.sort_values("harm", ascending=False).head(n).copy()
        lay = lay[lay["harm"] > 0]
        tot = r.layer["harm"].sum()
        lay["spot_id"], lay["town"], lay["rank"] = lay["cell_id"], name, np.arange(1, len(lay) + 1)
        lay["share_harm"] = lay["harm"] / tot if tot > 0 else 0.0
        lay["location"], lay["trend"], lay["status"], lay["target_minutes"] = "", "n/a", "n/a", minutes
        parts.append(lay)
    layer = pd.concat(parts, ignore_index=True)
    return AnalysisResult(kind="grip", layer=layer, params={"n": n, "cell_m": cell}, weight_table=weights.describe(),
                          period=period)
