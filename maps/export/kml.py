"""KML/KMZ for phones and Google Earth: WGS84 placemarks with a name, an attribute table, ExtendedData
and one shared style per class.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pandas as pd

from geo import BNG, WGS84
from maps.export.read import label_column, layer_kind
from maps.export.style import _fmt, attribute_rows, feature_styles
from maps.export.formats import ExportError


KML_NS = "http://www.opengis.net/kml/2.2"


# ================================================================================== KML / KMZ
def _kml_colour(hex_rgb: str, alpha: int) -> str:
    """KML colours are aabbggrr."""
    h = hex_rgb.lstrip("#")
    return f"{alpha:02x}{h[4:6]}{h[2:4]}{h[0:2]}"


def placemark_names(gdf, kind: str) -> list[str]:
    """Placemark names: '#rank location' for harm spots ('town #rank location' when there are several
    towns: ranks restart in each), else the label column, else 'feature N'."""
    if kind == "spots" and "rank" in gdf.columns:
        loc = gdf["location"].astype(str) if "location" in gdf.columns else gdf.get("spot_id", pd.Series([""] * len(gdf)))
        names = [f"#{int(r)} {l}".strip() if pd.notna(r) else str(l) for r, l in zip(gdf["rank"], loc)]
        if "town" in gdf.columns and gdf["town"].nunique() > 1:  # ranks restart in each town
            names = [f"{t} {n}" for t, n in zip(gdf["town"].astype(str), names)]
        return names
    c = label_column(gdf)
    if c is not None:
        return gdf[c].astype(str).tolist()
    return [f"feature {i + 1}" for i in range(len(gdf))]


def _description_html(row: dict, title: str | None = None) -> str:
    cells = "".join(f"<tr><th align='left'>{_esc(k)}</th><td>{_esc(_fmt_cell(v))}</td></tr>" for k, v in row.items())
    head = f"<b>{_esc(title)}</b><br/>" if title else ""
    return f"{head}<table>{cells}</table>"


def _fmt_cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return _fmt(v) if abs(v) >= 1 or v == 0 else f"{v:.3g}"
    return str(v)


def _esc(s) -> str:
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _coords(ring) -> str:
    return " ".join(f"{x:.7f},{y:.7f}" for x, y in np.asarray(ring.coords)[:, :2])


def _kml_geometry(parent, geom):
    t = geom.geom_type
    if t == "Point":
        ET.SubElement(ET.SubElement(parent, "Point"), "coordinates").text = f"{geom.x:.7f},{geom.y:.7f}"
    elif t == "LineString":
        ls = ET.SubElement(parent, "LineString")
        ET.SubElement(ls, "tessellate").text = "1"
        ET.SubElement(ls, "coordinates").text = _coords(geom)
    elif t == "Polygon":
        poly = ET.SubElement(parent, "Polygon")
        ET.SubElement(poly, "tessellate").text = "1"
        ob = ET.SubElement(ET.SubElement(poly, "outerBoundaryIs"), "LinearRing")
        ET.SubElement(ob, "coordinates").text = _coords(geom.exterior)
        for ring in geom.interiors:
            ib = ET.SubElement(ET.SubElement(poly, "innerBoundaryIs"), "LinearRing")
            ET.SubElement(ib, "coordinates").text = _coords(ring)
    elif t.startswith("Multi") or t == "GeometryCollection":
        mg = ET.SubElement(parent, "MultiGeometry")
        for g in geom.geoms:
            _kml_geometry(mg, g)
    else:  # pragma: no cover - all shapely types handled above
        raise ExportError(f"cannot write geometry type {t} to KML")


def kml_document(gdf, *, name: str = "harmspot", kind: str | None = None, meta: dict | None = None,
                 marking: str | None = None) -> ET.Element:
    """A KML 2.2 ``<kml>`` element: one Placemark per feature, styles shared per class.

    Each Placemark has ``name`` (:func:`placemark_names`), ``description`` (an HTML table of
    every attribute, rendered by Google Earth and most mobile KML viewers), ``styleUrl`` and
    ``ExtendedData`` (the same attributes as typed Data elements). Coordinates are WGS84
    lon,lat. The document description carries the period, parameters and protective marking.
    """
    if gdf.crs is None:
        gdf = gdf.set_crs(BNG)
    kind = kind or layer_kind(gdf, meta)
    colours, legend = feature_styles(gdf, kind)
    g = gdf.to_crs(WGS84)
    ET.register_namespace("", KML_NS)
    kml = ET.Element("kml", xmlns=KML_NS)
    doc = ET.SubElement(kml, "Document")
    ET.SubElement(doc, "name").text = name
    ET.SubElement(doc, "description").text = _doc_description(meta, marking, legend)
    style_ids = {}
    for col in dict.fromkeys(colours):
        sid = f"s{len(style_ids)}"
        style_ids[col] = sid
        st = ET.SubElement(doc, "Style", id=sid)
        ls = ET.SubElement(st, "LineStyle")
        ET.SubElement(ls, "color").text = _kml_colour(col, 0xFF)
        ET.SubElement(ls, "width").text = "2" if kind in ("spots", "zones", "boundary") else "1"
        ps = ET.SubElement(st, "PolyStyle")
        ET.SubElement(ps, "color").text = _kml_colour(col, 0x00 if kind == "boundary" else 0x99)
        ET.SubElement(ps, "fill").text = "0" if kind == "boundary" else "1"
        ic = ET.SubElement(st, "IconStyle")
        ET.SubElement(ic, "color").text = _kml_colour(col, 0xFF)
    names = placemark_names(g, kind)
    rows = attribute_rows(g)
    for nm, row, col, geom in zip(names, rows, colours, g.geometry):
        pm = ET.SubElement(doc, "Placemark")
        ET.SubElement(pm, "name").text = nm
        ET.SubElement(pm, "description").text = _description_html(row)
        ET.SubElement(pm, "styleUrl").text = f"#{style_ids[col]}"
        ed = ET.SubElement(pm, "ExtendedData")
        for k, v in row.items():
            d = ET.SubElement(ed, "Data", name=k)
            ET.SubElement(d, "value").text = "" if v is None else str(v)
        if geom is not None and not geom.is_empty:
            _kml_geometry(pm, geom)
    return kml


def _doc_description(meta, marking, legend) -> str:
    bits = []
    if marking:
        bits.append(f"<b>{_esc(marking)}</b>")
    meta = meta or {}
    per = meta.get("period")
    if isinstance(per, dict) and per.get("start"):
        bits.append(f"Period: {per['start']} to {per['end']}")
    if meta.get("kind"):
        bits.append(f"Layer: {_esc(meta['kind'])}")
    for c in meta.get("choices", []) or []:
        if c.get("automatic"):
            bits.append(_esc(f"{c['name']} = {c['value']} (chosen automatically: {c.get('reason', '')})"))
    if legend:
        bits.append("Legend: " + "; ".join(_esc(lab) for lab, _ in legend))
    bits.append("Made with harmspot")
    return "<br/>".join(bits)


def write_kml(gdf, path, *, kmz: bool | None = None, name: str | None = None, kind: str | None = None,
              meta: dict | None = None, marking: str | None = None) -> Path:
    """Write :func:`kml_document` as .kml, or zipped as ``doc.kml`` inside a .kmz."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    kmz = p.suffix.lower() == ".kmz" if kmz is None else kmz
    root = kml_document(gdf, name=name or p.stem, kind=kind, meta=meta, marking=marking)
    buf = io.BytesIO()
    ET.ElementTree(root).write(buf, encoding="utf-8", xml_declaration=True)
    if kmz:
        with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("doc.kml", buf.getvalue())
    else:
        p.write_bytes(buf.getvalue())
    return p
