"""The tasking pack: folder + zip with the offline map, one A4 PDF page per town, exports, README.

Input is SYNTHETIC: the force export of geo.synth.town.make_town(42) ingested into a DuckDB store,
towns = the town's two polygons. References: the town count (pages), geo.grip.spots.select_spots run
directly on the same incidents (spot count and rank-1 location), pypdf for page count/size/text,
pdftoppm (poppler-utils) for rendering.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from xml.etree import ElementTree as ET

import pyogrio
import pytest

from maps import webmap as wm

A4_PT = (595.3, 841.9)  # A4 portrait in PDF points (210 x 297 mm), tolerance 1 pt


@pytest.fixture(scope="module")
def pack(town, tmp_path_factory):
    from geo.core.incidents.force import read_table
    from services.cli import main
    from services.store.duckdb_store import DuckDBStore

    d = tmp_path_factory.mktemp("pack")
    export, mapping = town.force_export()
    export.drop(columns="expected_reason").to_csv(d / "f.csv", index=False)
    res = read_table(d / "f.csv", mapping, boundary=town.boundary)
    st = DuckDBStore(d / "town.duckdb")
    st.set_study_area(town.boundary, "district")
    st.add_ingest(res)
    st.close()
    town.towns.to_file(d / "towns.gpkg", driver="GPKG")
    out = d / "tasking"
    try:
        main(["pack", "--store", str(d / "town.duckdb"), "--towns", str(d / "towns.gpkg"), "--name-col", "name",
              "--n", "6", "--from", "2025-01", "--to", "2025-12", "--marking", "OFFICIAL-SENSITIVE",
              "--out", str(out), "--json"])
    except SystemExit as exc:  # main() may exit 0 after a command; non-zero is an error
        if exc.code not in (0, None):
            pytest.fail(f"harmspot pack exited with {exc.code}")
    return out, res.accepted


def test_folder_and_zip(pack):
    out, _ = pack
    for f in ("map.html", "briefing.pdf", "README.md", "manifest.json", "exports/harm_spots.gpkg",
              "exports/harm_spots.geojson", "exports/harm_spots.kml", "exports/harm_spots.kmz",
              "exports/harm_spots_shp.zip", "exports/harm_spots.csv", "exports/patrol_plan.csv"):
        assert (out / f).is_file(), f
    z = out.parent / f"{out.name}.zip"
    with zipfile.ZipFile(z) as zz:
        names = set(zz.namelist())
    assert f"{out.name}/briefing.pdf" in names and f"{out.name}/exports/harm_spots.kml" in names
    man = json.loads((out / "manifest.json").read_text())
    assert man["files"]["briefing.pdf"]["bytes"] == (out / "briefing.pdf").stat().st_size
    readme = (out / "README.md").read_text()
    assert "OFFICIAL-SENSITIVE" in readme and "2025-01-01 to 2025-12-31" in readme and "cchi-national-2026" in readme
    assert "n: 6" in readme  # the parameters used


def test_spots_match_grip_and_exports(pack, town):
    from geo.grip.spots import select_spots
    from geo.core.period import Period

    out, inc = pack
    ref = select_spots(inc, town.towns, name_col="name", n=6, period=Period.parse("2025-01", "2025-12"),
                       area=town.boundary).layer
    gpkg = out / "exports/harm_spots.gpkg"
    layers = dict(pyogrio.list_layers(gpkg))
    assert {"harm_spots", "cells", "towns", "plan"} <= set(layers)
    info = pyogrio.read_info(gpkg, layer="harm_spots")
    assert info["features"] == len(ref) and info["crs"] == "EPSG:27700"
    got = pyogrio.read_dataframe(gpkg, layer="harm_spots")
    assert sorted(got["spot_id"]) == sorted(ref["spot_id"])
    kml = ET.parse(out / "exports/harm_spots.kml").getroot()
    pms = kml.findall(".//{http://www.opengis.net/kml/2.2}Placemark")
    assert len(pms) == len(ref)
    assert pyogrio.read_info(out / "exports/harm_spots.geojson")["features"] == len(ref)
    assert pyogrio.read_info(f"/vsizip/{out / 'exports/harm_spots_shp.zip'}")["features"] == len(ref)
    assert wm.remote_references((out / "map.html").read_text()) == []


def test_pdf_one_a4_page_per_town(pack, town):
    from pypdf import PdfReader

    out, _ = pack
    r = PdfReader(out / "briefing.pdf")
    assert len(r.pages) == len(town.towns) == 2
    got = pyogrio.read_dataframe(out / "exports/harm_spots.gpkg", layer="harm_spots")
    for page, name in zip(r.pages, town.towns["name"]):
        w, h = float(page.mediabox.width), float(page.mediabox.height)
        assert abs(w - A4_PT[0]) < 1 and abs(h - A4_PT[1]) < 1
        text = page.extract_text()
        assert name in text and "OFFICIAL-SENSITIVE" in text
        top = got[(got["town"] == name) & (got["rank"] == 1)]["location"].iloc[0]
        assert top in text  # the rank-1 spot's location is in the ranked table


def test_pdf_renders_with_pdftoppm(pack, tmp_path):
    if shutil.which("pdftoppm") is None:
        msg = "pdftoppm (poppler-utils) is not installed (apt-get install -y poppler-utils)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + " - under CI it must be there")
        pytest.skip(msg)
    out, _ = pack
    subprocess.run(["pdftoppm", "-r", "50", "-png", str(out / "briefing.pdf"), str(tmp_path / "page")], check=True,
                   timeout=120)
    pngs = sorted(tmp_path.glob("page*.png"))
    assert len(pngs) == 2
    for p in pngs:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000


def test_town_without_spots_gets_its_page(town, tmp_path):
    """A town with no harm spot still gets a page that says so (nothing is dropped quietly)."""
    import geopandas as gpd
    import shapely
    from pypdf import PdfReader

    from maps.briefing import briefing_pdf

    big = town.towns.iloc[0]
    c = big.geometry.centroid
    spots = gpd.GeoDataFrame({"spot_id": ["S1"], "town": [big["name"]], "rank": [1], "location": ["On or near Test Road"],
                              "harm": [100.0], "count": [5], "share_harm": [0.5], "trend": ["up"], "status": ["new"],
                              "target_minutes": [15]},
                             geometry=[shapely.box(c.x, c.y, c.x + 150, c.y + 150)], crs=town.towns.crs)
    p = briefing_pdf(spots, None, town.towns, tmp_path / "b.pdf", name_col="name", period="2025-01-01 to 2025-12-31",
                     marking="OFFICIAL")
    pages = PdfReader(p).pages
    assert len(pages) == 2
    assert "On or near Test Road" in pages[0].extract_text()
    t2 = pages[1].extract_text()
    assert town.towns.iloc[1]["name"] in t2 and "No harm spots met the selection rules" in t2
