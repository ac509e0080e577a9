"""The folium map builder: offline pages, layer styling rules, cell merging and surfaces.

Inputs are SYNTHETIC (geo.synth.town.make_town(42) counted per 150 m square; planted grids and
surfaces). References: the input layers (feature counts, sums), the folium-offline package's
copy of Leaflet 1.9.3 (the file folium links), and pyproj for the surface bounds (1e-6 degrees).
"""
from __future__ import annotations

import base64
import io
import json

import geopandas as gpd
import numpy as np
import pytest
import shapely
from affine import Affine

from geo import BNG
from geo.core.errors import HarmspotError
from geo.core.result import AnalysisResult, Raster
from maps import export as ex
from maps import webmap as wm


def _town_cells(town, tmp):
    from geo.units.counts import count_units
    from geo.core.incidents.force import read_table
    from geo.units.lattice import SquareGrid

    exp, mapping = town.force_export()
    csv = tmp / "force_export.csv"
    exp.drop(columns="expected_reason").to_csv(csv, index=False)
    inc = read_table(csv, mapping, boundary=town.boundary).accepted
    from geo.core.period import Period

    return count_units(inc, SquareGrid(150.0), area=town.boundary, period=Period.parse("2025-01", "2025-12"))


@pytest.fixture(scope="session")
def cells_file(town, tmp_path_factory):
    res = _town_cells(town, tmp_path_factory.mktemp("wm"))
    p = tmp_path_factory.mktemp("wmout") / "cells.gpkg"
    ex.write_result(res, p)
    return p, res


@pytest.fixture(scope="session")
def offline_html(cells_file, town, tmp_path_factory):
    p, _ = cells_file
    out = tmp_path_factory.mktemp("html") / "map.html"
    path, info = wm.make_map([p], out, boundary=town.towns, marking="OFFICIAL-SENSITIVE", title="Tasking map")
    return path.read_text(), info


def test_offline_page_has_no_remote_assets(offline_html):
    html, _ = offline_html
    assert wm.remote_references(html) == []
    assert "<script src=" not in html and 'rel="stylesheet"' not in html
    # the inlined Leaflet is the exact file folium links (taken from the folium-offline package)
    assert wm.offline_assets()[wm.LEAFLET_JS] in html
    assert "Leaflet 1.9.3" in html
    # no jQuery / Bootstrap / Font Awesome: the map uses Leaflet only
    assert "jquery" not in html.lower()[:5000] and "bootstrap" not in html.lower()[:5000]


def test_page_furniture(offline_html, cells_file):
    html, info = offline_html
    _, res = cells_file
    assert html.count("OFFICIAL-SENSITIVE") >= 2  # top and bottom banners
    assert "Tasking map" in html and "Period: 2025-01-01 to 2025-12-31" in html
    assert "weight table = cchi-national-2026" in html  # automatic choices from the sidecar are shown
    cells = next(L for L in info.layers if L["kind"] == "cells")
    nonzero = int((res.layer["harm"] > 0).sum())
    assert cells["drawn"] == nonzero and cells["total"] == len(res.layer)
    assert f"{len(res.layer) - nonzero:,} cells with harm 0 not drawn" in html
    assert "L.control.scale" in html and "L.control.layers" in html and "fitBounds" in html


def test_cdn_mode_keeps_links_and_detector_sees_them(cells_file, tmp_path):
    p, _ = cells_file
    out, _ = wm.make_map([p], tmp_path / "cdn.html", offline=False)
    html = out.read_text()
    assert '<script src="https://cdn.jsdelivr.net/npm/leaflet@1.9.3/dist/leaflet.js">' in html
    assert len(wm.remote_references(html)) == 2  # leaflet.js and leaflet.css


def test_tiles_only_when_asked(cells_file, tmp_path):
    p, _ = cells_file
    html = wm.make_map([p], tmp_path / "t.html")[0].read_text()
    assert "tile.openstreetmap.org" not in html and "L.tileLayer" not in html
    html = wm.make_map([p], tmp_path / "t2.html", tiles="http://tiles.local/{z}/{x}/{y}.png")[0].read_text()
    assert "http://tiles.local/{z}/{x}/{y}.png" in html and "L.tileLayer" in html


def test_merge_cells_planted_grid():
    # 300 x 200 = 60,000 cells of 150 m with count 1 and harm 2.5: merging 2x2 gives 15,000 cells
    # with count 4 and harm 10 each (exact arithmetic).
    ix, iy = np.meshgrid(np.arange(300), np.arange(200))
    x0, y0 = 560_000 + ix.ravel() * 150.0, 214_000 + iy.ravel() * 150.0
    g = gpd.GeoDataFrame({"cell_id": np.arange(x0.size).astype(str), "count": 1, "harm": 2.5},
                         geometry=shapely.box(x0, y0, x0 + 150, y0 + 150), crs=BNG)
    merged, k = wm.merge_cells(g, 50_000)
    assert k == 2 and len(merged) == 15_000
    assert (merged["count"] == 4).all() and np.allclose(merged["harm"], 10.0)
    assert merged["count"].sum() == 60_000
    np.testing.assert_allclose(merged.geometry.area, 300.0 * 300.0)
    m, info = wm.build_map([wm.MapLayer("cells", g, "cells", {})], max_features=50_000)
    L = info.layers[0]
    assert L["drawn"] == 15_000 and L["renderer"] == "canvas"
    assert info.choices and "merged x2" in info.choices[0].value


def test_surface_image_bounds_and_transparency():
    arr = np.zeros((40, 60))
    arr[10:30, 20:40] = np.linspace(0.1, 1, 400).reshape(20, 20)
    r = Raster(arr, Affine(50, 0, 561_000, 0, -50, 216_000))
    url, bounds, (vmin, vmax) = wm.surface_image(r)
    assert url.startswith("data:image/png;base64,") and vmax == pytest.approx(1.0, rel=0.05)
    from PIL import Image
    from pyproj import Transformer

    img = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    assert img.shape[2] == 4
    assert img[0, 0, 3] == 0  # zero is transparent
    assert img[img.shape[0] // 2, img.shape[1] // 2, 3] > 60  # the planted block shows
    tr = Transformer.from_crs(BNG, "EPSG:4326", always_xy=True)
    lon, lat = tr.transform([561_000, 564_000], [214_000, 216_000])
    # the warped image covers the raster's footprint (corners within 0.002 deg)
    assert bounds[0][0] <= min(lat) + 2e-3 and bounds[1][0] >= max(lat) - 2e-3
    assert bounds[0][1] <= min(lon) + 2e-3 and bounds[1][1] >= max(lon) - 2e-3


def test_surface_layer_from_tif(tmp_path):
    arr = np.outer(np.hanning(30), np.hanning(40))
    res = AnalysisResult(kind="kde", layer=Raster(arr, Affine(50, 0, 561_000, 0, -50, 216_000), name="density"))
    tif = ex.write_result(res, tmp_path / "kde.tif")
    path, info = wm.make_map([tif], tmp_path / "s.html")
    assert info.layers[0]["kind"] == "surface" and info.layers[0]["renderer"] == "image"
    html = path.read_text()
    assert "KDE surface" in html and "data:image/png;base64," in html


def test_layer_kinds_and_colours():
    from geo.hotspots.gistar import CLASS_LABELS

    g = gpd.GeoDataFrame({"cell_id": list("abcdefg"), "gistar_class": [CLASS_LABELS[k] for k in (3, 2, 1, 0, -1, -2, -3)]},
                         geometry=shapely.box(np.arange(7) * 150.0, 0, np.arange(7) * 150.0 + 150, 150), crs=BNG)
    assert ex.layer_kind(g, {"kind": "gistar"}) == "gistar" and ex.layer_kind(g) == "gistar"
    cols, legend = ex.feature_styles(g, "gistar")
    assert cols[0] == ex.GISTAR_COLOURS["hot 99"] and cols[-1] == ex.GISTAR_COLOURS["cold 99"]
    assert cols[3] == ex.GISTAR_COLOURS["not"] and len(legend) == 7
    z = g.assign(quadrant=["A", "B", "A", "C", "D", "B", "A"], drivers="pubs").drop(columns="gistar_class")
    assert ex.layer_kind(z, {"kind": "minerva"}) == "zones"
    assert ex.layer_kind(g.assign(rank=1, spot_id="x"), {"kind": "grip"}) == "spots"


def test_nothing_to_map():
    with pytest.raises(HarmspotError, match="nothing to map"):
        wm.build_map([])


def test_leaflet_dir_override(cells_file, tmp_path, monkeypatch):
    """$HARMSPOT_LEAFLET_DIR (e.g. npm pack leaflet@1.9.3's dist folder) replaces the Leaflet files."""
    d = tmp_path / "dist"
    d.mkdir()
    (d / "leaflet.js").write_text("/* planted leaflet.js */ window.L = window.L || {};")
    (d / "leaflet.css").write_text("/* planted leaflet.css */")
    monkeypatch.setenv("HARMSPOT_LEAFLET_DIR", str(d))
    p, _ = cells_file
    html = wm.make_map([p], tmp_path / "o.html")[0].read_text()
    assert "/* planted leaflet.js */" in html and "/* planted leaflet.css */" in html
    (d / "leaflet.css").unlink()
    with pytest.raises(wm.OfflineError, match="no leaflet.css there"):
        wm.offline_assets()


def test_default_visibility_and_periods(cells_file, tmp_path):
    """Only the first surface shows; cells hide when Gi* is there; differing periods are all named."""
    p, res = cells_file
    arr = np.outer(np.hanning(20), np.hanning(20))
    r = Raster(arr, Affine(50, 0, 561_000, 0, -50, 216_000))
    meta_a = {"kind": "kde", "period": {"start": "2025-10-01", "end": "2025-12-31"}}
    t1 = ex.write_result(AnalysisResult(kind="kde", layer=r), tmp_path / "a.tif")
    t2 = ex.write_result(AnalysisResult(kind="rtm", layer=r), tmp_path / "b.tif")
    gi = res.layer.assign(gistar_class="Not Significant")
    g = ex.write_result(AnalysisResult(kind="gistar", layer=gi, period=res.period), tmp_path / "gi.gpkg")
    layers = wm.load_map_layers([p, t1, t2, g])
    show = {L.name: L.show for L in layers}
    assert show["Cells (cells.gpkg)"] is False and show["Gi* hot and cold spots (gi.gpkg)"] is True
    assert show["KDE surface (a.tif)"] is True and show["RTM risk surface (b.tif)"] is False
    layers[1].meta = meta_a
    txt = wm.periods_text(layers)
    assert txt == "2025-01-01 to 2025-12-31 (cells, gi* hot and cold spots); 2025-10-01 to 2025-12-31 (surface)"


def test_fixed_breaks_share_colours_across_maps():
    """Planted values: with the same ``breaks`` two maps of different data give a value the same
    colour (the point: this week's map read against last week's); a value equal to a bound is in
    the lower class, above the last bound in the open top class, zero in none. Without breaks the
    classes are the quantiles (reference: ``numpy.quantile`` of the positive values)."""
    def cells(values):
        n = len(values)
        return gpd.GeoDataFrame({"cell_id": [f"c{i}" for i in range(n)], "harm": values},
                                geometry=shapely.box(np.arange(n) * 150.0, 0, np.arange(n) * 150.0 + 150, 150), crs=BNG)

    b = ex.parse_breaks("10, 50,100")
    week1, week2 = cells([0, 5, 10, 11, 50, 99, 100, 101, 5000]), cells([7, 10, 60, 3000])
    c1, legend = ex.feature_styles(week1, "cells", breaks=b)
    c2, _ = ex.feature_styles(week2, "cells", breaks=b)
    pal = ex.ramp(4)
    assert c1 == ["#ffffff", pal[0], pal[0], pal[1], pal[1], pal[2], pal[2], pal[3], pal[3]]
    assert c2 == [pal[0], pal[0], pal[2], pal[3]]  # 7 and 10 coloured as 5 and 10 were in week 1
    assert [lab for lab, _ in legend] == ["harm 0 - 10", "harm 10 - 50", "harm 50 - 100", "harm over 100"]
    auto = np.quantile([5, 10, 11, 50, 99, 100, 101, 5000], [0.2, 0.4, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(ex.class_breaks(week1["harm"]), auto)
    for bad in ("10,5", "0,10", "a,b", ""):
        with pytest.raises(HarmspotError, match="--breaks"):
            ex.parse_breaks(bad)


def test_map_echoes_classes_and_reuses_them(cells_file, tmp_path):
    """The automatic classes of a cells layer are echoed as a choice (the quantile bounds but the
    last: the top class is the rest); passing them back as ``breaks`` gives every cell exactly the
    same colour (no automatic choice then). A surface's ramp top is echoed and can be fixed
    (``surface_image`` returns the value it used)."""
    import re

    p, res = cells_file
    _, info = wm.make_map([p], tmp_path / "a.html")
    ch = [c for c in info.choices if c.name.endswith("classes")]
    assert len(ch) == 1 and ch[0].automatic
    breaks = ex.parse_breaks(ch[0].value)
    vals = res.layer["harm"].to_numpy()
    np.testing.assert_array_equal(breaks, ex.class_breaks(vals[vals > 0])[:-1])  # exact: repr round-trips
    path_b, info_b = wm.make_map([p], tmp_path / "b.html", breaks=breaks)
    assert not [c for c in info_b.choices if c.name.endswith("classes")]
    colours = lambda html: re.findall(r'"_c":"(#[0-9a-f]{6})"', html)  # noqa: E731
    a_cols, b_cols = colours((tmp_path / "a.html").read_text()), colours(path_b.read_text())
    assert len(a_cols) == int((vals > 0).sum()) and len(set(a_cols)) == len(breaks) + 1
    assert a_cols == b_cols
    r = Raster(np.outer(np.hanning(30), np.hanning(40)), Affine(50, 0, 561_000, 0, -50, 216_000))
    assert wm.surface_image(r, vmax=0.5)[2] == (0.0, 0.5)
    auto_top = wm.surface_image(r)[2][1]
    assert auto_top == pytest.approx(np.quantile(r.array[r.array > 0], 0.99), rel=0.05)


def test_cli_map_breaks(cells_file, tmp_path, capsys):
    """``harmspot map --breaks``: bad bounds stop with exit 2 and say why; good ones are used (the
    JSON names no automatic classes) and the automatic run echoes its classes."""
    from services.cli import main

    p, _ = cells_file

    def run(*extra):
        try:
            main(["map", str(p), "--out", str(tmp_path / "m.html"), "--json", *extra])
        except SystemExit as exc:
            return exc.code or 0, capsys.readouterr()
        return 0, capsys.readouterr()

    code, cap = run("--breaks", "50,10")
    assert code == 2 and "--breaks" in " ".join(cap.err.split()) and "increasing" in " ".join(cap.err.split())
    code, cap = run()
    auto = [c for c in json.loads(cap.out.strip().splitlines()[-1])["choices"] if c["name"].endswith("classes")]
    assert code == 0 and len(auto) == 1 and auto[0]["automatic"] and "classes" in cap.err
    np.testing.assert_array_equal(ex.parse_breaks(auto[0]["value"]), ex.class_breaks(cells_file[1].layer["harm"])[:-1])
    code, cap = run("--breaks", auto[0]["value"], "--surface-max", "2")
    out = json.loads(cap.out.strip().splitlines()[-1])
    assert code == 0 and not [c for c in out["choices"] if c["name"].endswith("classes")]
