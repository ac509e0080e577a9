"""The tasking pack: one folder (and a zip of it) for a tasking meeting and the patrol teams.

``build_pack(spots_result, out_dir, ...)`` writes::

    DIR/
      README.md              what is inside, the period, parameters, automatic choices, marking
      map.html               offline map (harm spots, cells, towns; Leaflet inlined)
      briefing.pdf           one A4 page per town: map with ranks, ranked table, patrol windows
      exports/
        harm_spots.gpkg      EPSG:27700; layers harm_spots, cells, towns + tables plan, ranked
        harm_spots.geojson   WGS84 (RFC 7946)
        harm_spots.kml/.kmz  for phones and Google Earth (name + description per spot)
        harm_spots_shp.zip   zipped Shapefile + fields.csv (10-character name mapping)
        harm_spots.csv       attributes + easting/northing + longitude/latitude
        patrol_plan.csv      the Grip plan (visits, minutes, peak windows)
      manifest.json          every file with its size and SHA-256, the parameters
    DIR.zip

It consumes :class:`geo.core.result.AnalysisResult` objects only (the CLI does the store reading).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd

from geo.core.result import AnalysisResult, jsonable
from maps import export as ex


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _period_text(result: AnalysisResult) -> str | None:
    per = result.period
    if per is None:
        return None
    return per.label() if hasattr(per, "label") else str(per)


def build_pack(spots: AnalysisResult, out_dir, *, towns, name_col: str = "name", cells: AnalysisResult | None = None,
               boundary=None, marking: str | None = "OFFICIAL-SENSITIVE", title: str = "Harm spots briefing",
               inputs: dict | None = None, make_zip: bool = True, progress=None) -> dict:
    """Write the tasking pack for a Grip harm-spot result; returns a summary dict.

    Parameters
    ----------
    spots : AnalysisResult
        From ``geo.grip.spots.select_spots`` (layer with spot_id, town, rank, harm, count, share_harm,
        location, trend, status, target_minutes; ``tables["plan"]``).
    towns : GeoDataFrame
        The towns (one briefing page each), ``name_col`` naming them.
    cells : AnalysisResult, optional
        Harm per cell (``geo.units.counts.count_units``) for map and page backgrounds.
    boundary : GeoDataFrame, optional
        The study area outline for the map.
    Returns
    -------
    dict with ``dir``, ``zip``, ``files`` (relative path -> bytes), ``spots``, ``towns``, ``pages``.
    """
    from maps.briefing import briefing_pdf
    from maps.webmap.layers import MapLayer
    from maps.webmap.build import build_map, save_map

    step = progress or (lambda *a, **k: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "exports").mkdir(exist_ok=True)
    layer = spots.layer
    plan = spots.tables.get("plan")
    meta = spots.metadata()
    period = _period_text(spots)
    tw = towns.rename(columns={name_col: "town"})[["town", "geometry"]] if name_col in towns.columns else towns

    step(1, 6, "exports")
    exp = out / "exports"
    gpkg_layers = {"harm_spots": layer}
    if cells is not None:
        gpkg_layers["cells"] = cells.layer
    gpkg_layers["towns"] = tw
    tables = {}
    if plan is not None:
        tables["plan"] = plan
    for k in ("concentration", "towns", "changes"):
        if k in spots.tables and isinstance(spots.tables[k], pd.DataFrame) and len(spots.tables[k]):
            tables[f"table_{k}"] = spots.tables[k]
    ex.write_geopackage(gpkg_layers, exp / "harm_spots.gpkg", tables=tables)
    ex.write_vector(layer, exp / "harm_spots.geojson")
    ex.write_kml(layer, exp / "harm_spots.kml", name="Harm spots", kind="spots", meta=meta, marking=marking)
    ex.write_kml(layer, exp / "harm_spots.kmz", name="Harm spots", kind="spots", meta=meta, marking=marking)
    ex.write_shapefile_zip(layer, exp / "harm_spots_shp.zip", layer_name="harm_spots")
    ex.csv_frame(layer).to_csv(exp / "harm_spots.csv", index=False)
    if plan is not None:
        plan.to_csv(exp / "patrol_plan.csv", index=False)
    for f in ("harm_spots.gpkg", "harm_spots.geojson", "harm_spots.kml", "harm_spots.kmz", "harm_spots_shp.zip",
              "harm_spots.csv"):
        (exp / f"{f}.meta.json").write_text(json.dumps(meta, indent=2))

    step(2, 6, "map")
    layers = []
    if cells is not None:
        layers.append(MapLayer("Harm per 150 m cell", cells.layer, "cells", cells.metadata(), show=False))
    layers.append(MapLayer("Harm spots", layer, "spots", meta))
    bnd = tw if boundary is None else pd.concat([boundary.to_crs(tw.crs)[["geometry"]], tw[["geometry"]]])
    m, info = build_map(layers, title=f"{title} ({period})" if period else title, marking=marking, boundary=bnd)
    save_map(m, out / "map.html", offline=True)

    step(3, 6, "briefing PDF")
    footer = _footer(spots)
    briefing_pdf(layer, plan, tw, out / "briefing.pdf", name_col="town", cells=cells.layer if cells is not None else None,
                 period=period, marking=marking, title=title, footer=footer)

    step(4, 6, "README")
    (out / "README.md").write_text(_readme(spots, cells, tw, marking, period, inputs, info))

    step(5, 6, "manifest")
    files = {}
    for p in sorted(out.rglob("*")):
        if p.is_file() and p.name != "manifest.json":
            files[str(p.relative_to(out))] = {"bytes": p.stat().st_size, "sha256": _sha256(p)}
    manifest = {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "marking": marking,
                "period": period, "files": files, "harm_spots": meta, "inputs": inputs or {}}
    (out / "manifest.json").write_text(json.dumps(jsonable(manifest), indent=2, default=str))

    zpath = None
    if make_zip:
        step(6, 6, "zip")
        zpath = Path(shutil.make_archive(str(out), "zip", root_dir=out.parent, base_dir=out.name))
    return {"dir": str(out), "zip": str(zpath) if zpath else None, "files": {k: v["bytes"] for k, v in files.items()},
            "spots": int(len(layer)), "towns": int(len(tw)), "pages": int(len(tw)), "period": period}


def _footer(spots: AnalysisResult) -> list[str]:
    lines = []
    wt = spots.weight_table or {}
    if wt:
        lines.append(f"Harm weights: {wt.get('name')} v{wt.get('version')}.")
    p = spots.params
    bits = [f"{k}={v}" for k, v in p.items() if v is not None and not isinstance(v, (dict, list)) and k in
            ("cell_m", "n", "budget", "outcome", "min_events", "separation_m", "visits_per_day", "minutes",
             "max_gap_days")]
    if bits:
        lines.append("Parameters: " + ", ".join(bits) + ".")
    auto = [c.message() for c in spots.choices if c.automatic]
    if auto:
        lines.append("Chosen automatically: " + "; ".join(auto) + ".")
    lines.append("Harm spots: 150 m BNG squares ranked by harm within each town (Grip method). Made with harmspot.")
    return lines


def _readme(spots, cells, towns, marking, period, inputs, info) -> str:
    mk = marking or "(no protective marking given)"
    wt = spots.weight_table or {}
    lines = [
        f"# Tasking pack{f': {period}' if period else ''}",
        "",
        f"**{mk}** - handle according to the marking.",
        "",
        "## What is inside",
        "",
        "| file | what it is |",
        "|---|---|",
        "| `map.html` | Offline map (open in any browser, no internet needed): harm spots with ranks and popups "
        "(spots that touch share one rank label until you zoom in), harm per 150 m cell (off by default; tick it "
        "in the layer list), town outlines. |",
        f"| `briefing.pdf` | One A4 page per town ({len(towns)} pages): map of the harm spots with rank labels "
        "(a label with no room on its spot has a thin line to it), the ranked table and the patrol windows. |",
        "| `exports/harm_spots.gpkg` | GeoPackage (EPSG:27700) for QGIS/ArcGIS: layers `harm_spots`, `cells`, "
        "`towns`; tables `plan` and the Grip tables. |",
        "| `exports/harm_spots.geojson` | GeoJSON (WGS84, RFC 7946) for web apps. |",
        "| `exports/harm_spots.kml`, `.kmz` | KML for phones and Google Earth: one placemark per spot with its "
        "rank, location and figures. |",
        "| `exports/harm_spots_shp.zip` | Zipped Shapefile (EPSG:27700); `fields.csv` inside maps the full "
        "attribute names to the 10-character Shapefile names. |",
        "| `exports/harm_spots.csv` | Spreadsheet: attributes plus easting/northing (BNG) and "
        "longitude/latitude (WGS84) of each spot's centre. |",
        "| `exports/patrol_plan.csv` | The patrol plan: visits per day, minutes per visit, longest gap, "
        "peak days and hours per spot. |",
        "| `manifest.json` | Every file with its size and SHA-256, and the full parameters. |",
        "",
        "Each export has a `.meta.json` beside it with the parameters, automatic choices, harm weight table and "
        "period that produced it.",
        "",
        "## How the harm spots were chosen",
        "",
        f"- Period: {period or 'n/a'}",
        f"- Harm weights: {wt.get('name', 'n/a')} v{wt.get('version', '')}"
        f"{' (' + str(wt.get('source')) + ')' if wt.get('source') else ''}",
        f"- Spots: {len(spots.layer)} across {len(towns)} town(s)",
    ]
    for k, v in spots.params.items():
        if v is not None and not isinstance(v, (dict,)):
            lines.append(f"- {k}: {v}")
    auto = [c for c in spots.choices if c.automatic]
    if auto:
        lines += ["", "## Chosen automatically", ""]
        lines += [f"- {c.message()}" for c in auto]
    if inputs:
        lines += ["", "## Inputs", ""]
        lines += [f"- {k}: {v}" for k, v in inputs.items()]
    if info is not None:
        lines += ["", "## Map layers", ""]
        lines += [f"- {L['name']}: {L['drawn']:,} of {L['total']:,} features drawn" for L in info.layers]
    lines += ["", "Made with harmspot (docs/maps.md).", ""]
    return "\n".join(lines)
