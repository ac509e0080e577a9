"""A real browser opens the offline map: the layers draw and no request leaves the machine.

Debian's headless Chromium (``apt-get install chromium``; .ci/run installs it) is driven over
the DevTools protocol (package ``websocket-client``) with ``--no-sandbox
--disable-background-networking``, a fresh profile and a dead proxy. The test reads the
rendered DOM: one SVG ``<path>`` per drawn feature (Leaflet's SVG renderer), one
``<img>`` per surface overlay, every harm spot's rank labelled (spots whose labels would
touch share one), and every URL the page requested (``Network.requestWillBeSent``). A
CDN-mode page is the negative control: the same detector must see its requests. Screenshots
are saved under test-artifacts/. Rank labels of planted touching spots are checked by their
rendered boxes (``getBoundingClientRect``) at several zooms.

Inputs are SYNTHETIC: geo.synth.town.make_town(42); harm spots from geo.grip.spots.select_spots; the
Gi* classes, KDE surface and Minerva zones are planted stand-ins with the columns those
analyses write (gistar_class labels from geo.hotspots.gistar.CLASS_LABELS; quadrant/drivers).
"""
from __future__ import annotations

import os
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from affine import Affine

from geo import BNG
from geo.core.result import AnalysisResult, Raster
from maps import export as ex
from maps import webmap as wm

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"


def _need_browser():
    if wm.find_chromium() is None:
        msg = "no Chromium binary (apt-get install -y chromium; .ci/run installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + " - under CI it must be there")
        pytest.skip(msg)
    try:
        import websocket  # noqa: F401
    except ImportError:
        pytest.skip("the 'websocket-client' package is not installed (pip install websocket-client)")


@pytest.fixture(scope="module")
def layer_files(town, tmp_path_factory):
    from geo.units.counts import count_units
    from geo.hotspots.gistar import CLASS_LABELS
    from geo.grip.spots import select_spots
    from geo.core.incidents.force import read_table
    from geo.core.period import Period
    from geo.units.lattice import SquareGrid

    d = tmp_path_factory.mktemp("browser")
    exp, mapping = town.force_export()
    exp.drop(columns="expected_reason").to_csv(d / "f.csv", index=False)
    inc = read_table(d / "f.csv", mapping, boundary=town.boundary).accepted
    period = Period.parse("2025-01", "2025-12")
    cells = count_units(inc, SquareGrid(150.0), area=town.boundary, period=period)
    ex.write_result(cells, d / "cells.gpkg")
    spots = select_spots(inc, town.towns, name_col="name", n=8, period=period)
    ex.write_result(spots, d / "spots.gpkg")
    # planted Gi* classes: the top harm cells are 'hot', the rest not significant
    lay = cells.layer[cells.layer["harm"] > 0].copy()
    q = lay["harm"].rank(pct=True).to_numpy()
    bins = np.select([q > 0.97, q > 0.93, q > 0.9], [3, 2, 1], 0)
    lay["gistar_class"] = [CLASS_LABELS[b] for b in bins]
    gi = AnalysisResult(kind="gistar", layer=lay[["cell_id", "harm", "gistar_class", "geometry"]], period=period)
    ex.write_result(gi, d / "gistar.gpkg")
    # planted KDE surface: a Gaussian bump over the district
    x0, y0, x1, y1 = town.boundary.total_bounds
    nx, ny = int((x1 - x0) // 100), int((y1 - y0) // 100)
    yy, xx = np.mgrid[0:ny, 0:nx]
    arr = np.exp(-((xx - nx / 2) ** 2 + (yy - ny / 2) ** 2) / (2 * (nx / 6) ** 2))
    kde = AnalysisResult(kind="kde", layer=Raster(arr, Affine(100, 0, x0, 0, -100, y1), name="density"),
                         period=period)
    ex.write_result(kde, d / "kde.tif")
    # planted Minerva zones: the district cut in four quadrants
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    boxes = shapely.box([x0, cx, x0, cx], [y0, y0, cy, cy], [cx, x1, cx, x1], [cy, cy, y1, y1])
    zones = gpd.GeoDataFrame({"zone_id": ["Z1", "Z2", "Z3", "Z4"], "quadrant": ["high risk, high harm", "high risk",
                              "high harm", "low"], "drivers": ["pubs; takeaways", "stations", "shops", ""]},
                             geometry=boxes, crs=BNG)
    ex.write_result(AnalysisResult(kind="minerva", layer=zones, period=period), d / "zones.gpkg")
    return d, cells, spots, lay, zones


@pytest.fixture(scope="module")
def rendered(layer_files, town):
    _need_browser()
    d, *_ = layer_files
    layers = wm.load_map_layers([d / "cells.gpkg", d / "gistar.gpkg", d / "kde.tif", d / "zones.gpkg",
                                 d / "spots.gpkg"])
    hidden = [L.name for L in layers if not L.show]
    assert hidden == ["Cells (cells.gpkg)"]  # cells start hidden when Gi* is present; switch all on here
    for L in layers:
        L.show = True
    m, info = wm.build_map(layers, boundary=town.towns, marking="OFFICIAL-SENSITIVE",
                           title="Harmstead tasking (SYNTHETIC)")
    html = wm.save_map(m, d / "map.html")
    ARTIFACTS.mkdir(exist_ok=True)
    popup = ("(function(n){var l=window.harmspotLayers[n].getLayers()[0];"
             "l.fire('click', {latlng: l.getBounds().getCenter()}, true);"  # a click, as a user would
             "var ps=document.querySelectorAll('.leaflet-popup .hs-why');"  # old popups fade out: take the newest
             "return ps[ps.length-1].textContent;})")
    res = wm.browser_check(html, screenshot=ARTIFACTS / "map_offline.png",
                           evaluate={k: f"{popup}('hs-{k}')" for k in ("spots", "cells", "gistar", "zones")})
    return res, info


def test_layers_drew_one_path_per_feature(rendered, layer_files, town):
    res, info = rendered
    _, cells, spots, gi, zones = layer_files
    c = res["counts"]
    assert res["errors"] == []
    assert c["hs-cells:path"] == int((cells.layer["harm"] > 0).sum())
    assert c["hs-gistar:path"] == len(gi)
    assert c["hs-zones:path"] == len(zones)
    assert c["hs-spots:path"] == len(spots.layer)
    assert c["hs-boundary:path"] == len(town.towns)
    st = res["harmspot"]["layers"]["hs-spots"]
    assert st["labels"] == len(spots.layer)  # every harm spot's rank is labelled...
    assert c["hs-rank:div"] == st["shown"] <= len(spots.layer)  # ...in one label, or a label shared when they touch
    assert c["hs-surface:img"] == 1  # the KDE image overlay
    assert c["hs-marking:div"] == 2
    assert res["marking"] == "OFFICIAL-SENSITIVE"
    assert res["heading"] == "Harmstead tasking (SYNTHETIC)"
    for L in info.layers:  # the page's own counts agree with what Python drew
        if L["renderer"] == "svg":
            assert res["harmspot"]["layers"][L["css_class"]]["features"] == L["drawn"]


def test_popups_say_why(rendered, layer_files):
    """Clicking a feature opens a popup whose first line says why the place is on the map."""
    res, _ = rendered
    _, cells, spots, gi, zones = layer_files
    ev = res["evaluated"]
    s0 = spots.layer.iloc[0]
    assert ev["spots"] == (f"Rank {s0['rank']} harm spot in {s0['town']}: {100 * s0['share_harm']:.1f}% of the "
                           f"town's harm in 2025-01-01 to 2025-12-31. Dose: {s0['target_minutes']} min per visit.")
    assert ev["gistar"].startswith("Gi* class: ")
    assert ev["zones"].startswith("Minerva zone") and "high risk, high harm" in ev["zones"]
    assert ev["cells"].endswith(" harm in 2025-01-01 to 2025-12-31")


def test_no_request_left_the_machine(rendered):
    res, _ = rendered
    assert res["requests"] and res["requests"][0].startswith("file://")
    assert res["external"] == [], res["external"]


def test_screenshot_saved(rendered):
    png = ARTIFACTS / "map_offline.png"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_cdn_page_is_caught(layer_files, tmp_path):
    """Negative control: in CDN mode the page asks jsdelivr for Leaflet and the detector reports it."""
    _need_browser()
    d, *_ = layer_files
    html, _ = wm.make_map([d / "spots.gpkg"], tmp_path / "cdn.html", offline=False)
    res = wm.browser_check(html)
    assert any("cdn.jsdelivr.net/npm/leaflet@1.9.3" in u for u in res["external"])


def test_canvas_layer_counts(layer_files, tmp_path):
    """Above the canvas threshold the cells draw on a canvas; the page counts them itself."""
    _need_browser()
    d, cells, *_ = layer_files
    layers = wm.load_map_layers([d / "cells.gpkg"])
    m, info = wm.build_map(layers, canvas_from=100)
    html = wm.save_map(m, tmp_path / "canvas.html")
    res = wm.browser_check(html, screenshot=ARTIFACTS / "map_canvas.png")
    assert info.layers[0]["renderer"] == "canvas"
    assert res["counts"].get("hs-cells:path", 0) == 0
    assert res["harmspot"]["layers"]["hs-cells"] == {"features": int((cells.layer["harm"] > 0).sum()), "labels": 0,
                                                     "canvas": True}
    assert res["external"] == [] and res["errors"] == []


def test_cli_map_check_json(layer_files, town, tmp_path, capsys):
    """`harmspot map ... --check --json`: the JSON's last line reports what Chromium drew and no external request."""
    import json

    from services.cli import main

    _need_browser()
    d, cells, spots, *_ = layer_files
    town.towns.to_file(tmp_path / "towns.gpkg", driver="GPKG")
    try:
        main(["map", str(d / "cells.gpkg"), str(d / "spots.gpkg"), "--boundary", str(tmp_path / "towns.gpkg"),
              "--out", str(tmp_path / "m.html"), "--check", "--json"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["offline"] is True and out["check"]["external_requests"] == [] and out["check"]["js_errors"] == []
    assert out["check"]["drawn"]["Cells (cells.gpkg)"] == int((cells.layer["harm"] > 0).sum())
    assert out["check"]["drawn"]["Harm spots (spots.gpkg)"] == len(spots.layer)


# ---------------------------------------------------------------- rank labels of touching spots
_RANK_PROBE = """(function(){
  var lyr = window.harmspotLayers['hs-spots'], map = lyr._map, out = {};
  function snap(){ var r = [];
    document.querySelectorAll('.hs-rank').forEach(function(e){ var b = e.getBoundingClientRect();
      r.push({t: e.textContent, x0: b.left, y0: b.top, x1: b.right, y1: b.bottom}); });
    return {zoom: map.getZoom(), labels: r, state: JSON.parse(JSON.stringify(window.harmspot.layers['hs-spots'])),
      centres: lyr.getLayers().map(function(l){ var p = map.latLngToContainerPoint(l.getBounds().getCenter());
        return [l.feature.properties.rank, p.x, p.y]; })}; }
  var z0 = map.getZoom();
  out.initial = snap();
  map.setZoom(z0 + 1, {animate: false}); out.plus1 = snap();
  map.setZoom(z0 + 2, {animate: false}); out.plus2 = snap();
  map.setZoom(18, {animate: false}); out.z18 = snap();
  return JSON.stringify(out); })()"""


def _clustered_spots(town):
    """PLANTED: a cluster of five adjacent 150 m squares (2x2 + 1), a row of three and three isolated squares."""
    x0, y0, x1, y1 = town.boundary.total_bounds
    ox, oy = round((x0 + x1) / 2 / 150) * 150, round((y0 + y1) / 2 / 150) * 150
    cells = [(1, 0, 0), (3, 1, 0), (4, 0, 1), (7, 1, 1), (9, 2, 0),  # cluster of five
             (2, 8, 10), (6, 9, 10), (8, 10, 10),  # row of three
             (5, -25, -18), (10, 24, -16), (11, -20, 17)]  # isolated, 2.5 km+ from the others
    r, ix, iy = (np.array(v) for v in zip(*cells))
    x, y = ox + ix * 150.0, oy + iy * 150.0
    return gpd.GeoDataFrame({"spot_id": [f"S{k}" for k in r], "rank": r, "town": "Harmstead",
                             "harm": 1000.0 / r, "count": 5},
                            geometry=shapely.box(x, y, x + 150, y + 150), crs=BNG)


def _rect_overlaps(labels):
    return [(a["t"], b["t"]) for i, a in enumerate(labels) for b in labels[i + 1:]
            if min(a["x1"], b["x1"]) - max(a["x0"], b["x0"]) > 0 and min(a["y1"], b["y1"]) - max(a["y0"], b["y0"]) > 0]


def _ranks_shown(labels):
    return sorted(int(k) for lab in labels for k in lab["t"].split("\u00b7"))


def test_rank_labels_never_overlap(town, tmp_path):
    """Touching spots: the rank labels' rendered boxes (getBoundingClientRect) never overlap at the
    initial zoom or after zooming in, every rank is shown exactly once at each zoom (alone or in a
    shared '3·7·12' label), and at zoom 18 (150 m = several hundred pixels) every rank has its own label.

    Reference for the defect: at the initial zoom the 22 px boxes centred on the planted squares'
    centres (latLngToContainerPoint) would overlap; each label is 22 px high (its CSS/icon size)."""
    import json

    _need_browser()
    spots = _clustered_spots(town)
    m, _ = wm.build_map([wm.MapLayer("Harm spots", spots, "spots", {})], boundary=town.towns, title="Clustered spots")
    html = wm.save_map(m, tmp_path / "clustered.html")
    res = wm.browser_check(html, screenshot=ARTIFACTS / "map_rank_labels.png", evaluate={"probe": _RANK_PROBE})
    assert res["errors"] == []
    out = json.loads(res["evaluated"]["probe"])
    n = len(spots)
    # the defect would show: some pair of naive 22 px labels on the squares' centres overlaps at the initial zoom
    cen = out["initial"]["centres"]
    naive = [(a[0], b[0]) for i, a in enumerate(cen) for b in cen[i + 1:]
             if abs(a[1] - b[1]) < 22 and abs(a[2] - b[2]) < 22]
    assert len(naive) >= 4, naive
    for key in ("initial", "plus1", "plus2", "z18"):
        snap = out[key]
        labs = snap["labels"]
        assert _rect_overlaps(labs) == [], (key, snap["zoom"], labs)
        assert _ranks_shown(labs) == list(range(1, n + 1)), (key, labs)
        assert all(abs((lab["y1"] - lab["y0"]) - 22) < 0.5 for lab in labs)  # the box is the 22 px label
        st = snap["state"]
        assert st["labels"] == n and st["shown"] == len(labs)
    assert out["initial"]["state"]["grouped"] >= 1  # touching spots share a label when zoomed out
    assert out["z18"]["zoom"] == 18 and out["z18"]["state"]["grouped"] == 0
    assert sorted(int(lab["t"]) for lab in out["z18"]["labels"]) == list(range(1, n + 1))  # one label per spot
    # a shared label sits over its squares: inside the box spanned by its members' centres (+ half a label)
    for lab in out["initial"]["labels"]:
        ks = [int(k) for k in lab["t"].split("\u00b7")]
        xs = [c[1] for c in cen if c[0] in ks]
        ys = [c[2] for c in cen if c[0] in ks]
        cx, cy = (lab["x0"] + lab["x1"]) / 2, (lab["y0"] + lab["y1"]) / 2
        assert min(xs) - 1 <= cx <= max(xs) + 1 and min(ys) - 1 <= cy <= max(ys) + 1
