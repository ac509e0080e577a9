"""The HTTP API against both stores (DuckDB file and PostGIS), with FastAPI's TestClient.

All data here is SYNTHETIC: the seeded town of ``geo.synth.town.make_town(42)`` (its force
export, times and flags), so every number served can be checked against a planted
truth computed directly with the geo functions in the same test.

The PostGIS half starts a throwaway PostgreSQL 15 cluster on a loopback port (see
:func:`postgis_url`); it skips, saying why, only when PostgreSQL/PostGIS is not
installed or cannot start.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

K = 5  # partner suppression threshold used by these tests (the default)
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_EXT = Path("/usr/share/postgresql/15/extension/postgis.control")


# ============================================================================== shared helpers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"] + cmd
    return cmd


def start_pg_cluster():
    """(url, stop) for a throwaway PostgreSQL 15 cluster on 127.0.0.1, or pytest.skip with the reason."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL 15 is not installed (apt-get install -y postgresql-15 postgresql-15-postgis-3)")
    if not PG_EXT.exists():
        pytest.skip("PostGIS 3 for PostgreSQL 15 is not installed (apt-get install -y postgresql-15-postgis-3)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip('psycopg is not installed (pip install "psycopg[binary]")')
    d = Path(tempfile.mkdtemp(prefix="harmspot-pg-"))
    if os.geteuid() == 0:
        shutil.chown(d, "postgres", "postgres")
    data, log = d / "data", d / "log"
    r = subprocess.run(_as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                                     "--no-sync", "-E", "UTF8"]), capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"initdb failed: {r.stderr.strip()[-300:]}")
    port = free_port()
    opts = f"-p {port} -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    r = subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts, "-w",
                                     "start"]), capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"PostgreSQL did not start: {r.stderr.strip()[-300:]} {log.read_text()[-300:] if log.exists() else ''}")

    def stop():
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(d, ignore_errors=True)

    return f"postgresql://postgres@127.0.0.1:{port}/postgres", stop


def new_pg_database(base_url: str) -> str:
    """A fresh database in the test cluster; returns its URL."""
    import psycopg

    name = "hs_" + uuid.uuid4().hex[:12]
    with psycopg.connect(base_url, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    return base_url.rsplit("/", 1)[0] + "/" + name


_PG: dict = {}


@pytest.fixture(scope="session")
def postgis_url():
    """URL of the session's throwaway PostGIS cluster (skips with a reason when PostgreSQL is absent).

    Other test modules import this fixture; the cluster is started once per process and stopped at exit.
    """
    if "url" not in _PG:
        import atexit

        url, stop = start_pg_cluster()
        _PG["url"] = url
        atexit.register(stop)
    return _PG["url"]


def town_ingest(town, tmp: Path):
    from geo.core.incidents.force import read_table

    export, mapping = town.force_export()
    csv = tmp / "force_export.csv"
    export.drop(columns="expected_reason").to_csv(csv, index=False)
    return read_table(csv, mapping, boundary=town.boundary)


def populate(store, town, tmp: Path) -> dict:
    """Load the town and write three layers: aggregated cells, incident points, a count raster."""
    from geo.units.counts import count_units
    from geo.core.result import AnalysisResult, Raster
    from geo.units.lattice import Lattice, SquareGrid
    from services.layers import save_result

    store.set_study_area(town.boundary, "district")
    store.add_ingest(town_ingest(town, tmp))
    inc = store.incidents()
    cells = count_units(inc, SquareGrid(150.0), area=town.boundary)
    pts = inc.to_geodataframe()[["incident_id", "category", "geometry"]]
    points = AnalysisResult(kind="incidents", layer=pts, params={"note": "incident-level"})
    lat = Lattice.from_bounds(100.0, town.boundary.total_bounds)
    arr = lat.bincount(inc.frame["x"].to_numpy(), inc.frame["y"].to_numpy())[::-1].astype("float32")
    raster = AnalysisResult(kind="kde", layer=Raster(arr, lat.transform, name="count", units="incidents"))
    return {
        "cells": save_result(store, cells, name="cells")[0],
        "points": save_result(store, points, name="points")[0],
        "raster": save_result(store, raster, name="surface")[0],
        "cells_result": cells,
        "points_gdf": pts,
    }


def make_keys(store) -> dict:
    from services.auth import new_key

    out = {}
    for role in ("viewer", "analyst", "admin", "partner"):
        kid, key, digest = new_key(role)
        store.add_key(kid, digest, role, f"test {role}")
        out[role] = key
    return out


class Api:
    def __init__(self, client, ids, keys, store, backend):
        self.client, self.ids, self.keys, self.store, self.backend = client, ids, keys, store, backend

    def get(self, path, role=None, **kw):
        headers = kw.pop("headers", {})
        if role:
            headers["X-API-Key"] = self.keys[role]
        return self.client.get(path, headers=headers, **kw)

    def post(self, path, role=None, **kw):
        headers = kw.pop("headers", {})
        if role:
            headers["X-API-Key"] = self.keys[role]
        return self.client.post(path, headers=headers, **kw)

    def wait_run(self, run_id, role="analyst", timeout=60.0):
        t0 = time.time()
        while time.time() - t0 < timeout:
            r = self.get(f"/runs/{run_id}", role).json()
            if r["status"] in ("done", "failed"):
                return r
            time.sleep(0.1)
        raise TimeoutError(run_id)


def open_backend(backend: str, tmp: Path, request):
    if backend == "duckdb":
        from services.store.duckdb_store import DuckDBStore

        return DuckDBStore(tmp / "service.duckdb")
    from services.store.postgis_store import PostGISStore

    return PostGISStore(new_pg_database(request.getfixturevalue("postgis_url")))


@pytest.fixture(scope="module", params=["duckdb", "postgis"])
def api(request, tmp_path_factory, town):
    from fastapi.testclient import TestClient

    from services.api import create_app
    from services.settings import Settings

    tmp = tmp_path_factory.mktemp(f"api-{request.param}")
    store = open_backend(request.param, tmp, request)
    ids = populate(store, town, tmp)
    keys = make_keys(store)
    settings = Settings(store=str(store.url), partner_k=K, rate_limit_per_minute=0, max_upload_bytes=200_000,
                        max_bbox_km2=5_000.0)
    app = create_app(settings, store=store)
    with TestClient(app) as client:
        yield Api(client, ids, keys, store, request.param)
    store.close()


# ============================================================================== service
def test_health_needs_no_key_and_reports_library_versions(api):
    import pyproj
    import rasterio
    import shapely

    r = api.get("/health")
    assert r.status_code == 200
    v = r.json()["versions"]
    assert v["proj"] == pyproj.proj_version_str
    assert v["geos"] == shapely.geos_version_string
    assert v["gdal"] == rasterio.__gdal_version__
    assert {"pyproj", "duckdb", "harmspot"} <= set(v)
    assert r.headers["Server-Timing"].startswith("app;dur=")


@pytest.mark.parametrize("path", ["/version", "/layers", "/runs", "/audit"])
def test_everything_but_health_needs_a_key(api, path):
    r = api.get(path)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    bad = api.get(path, headers={"X-API-Key": "hs_0123456789_notarealkey"})
    assert bad.status_code == 401
    assert "invalid" in bad.json()["error"]["message"]


def test_key_in_query_string_is_not_accepted(api):
    r = api.get("/layers", params={"api_key": api.keys["admin"]})
    assert r.status_code == 401


# ============================================================================== layers
def test_catalogue_lists_id_kind_period_bbox_crs_created_parameters(api):
    layers = {x["id"]: x for x in api.get("/layers", "analyst").json()["layers"]}
    cells = layers[api.ids["cells"]]
    assert cells["kind"] == "cells" and cells["crs"] == "EPSG:4326"
    assert cells["parameters"]["cell_m"] == 150.0
    assert cells["aggregated"] and not cells["incident_level"]
    assert layers[api.ids["points"]]["incident_level"]
    assert layers[api.ids["raster"]]["layer_type"] == "raster"
    # bbox is the WGS84 bounds of the BNG layer (pyproj transform of the GeoDataFrame: planted truth)
    truth = api.ids["cells_result"].layer.to_crs("EPSG:4326").total_bounds
    np.testing.assert_allclose(cells["bbox"], truth, atol=1e-6)


def test_geojson_counts_and_coordinates_match_the_analysis(api):
    """Every served cell's count equals count_units' count; geometry is the BNG cell in WGS84 (1e-6 deg)."""
    r = api.get(f"/layers/{api.ids['cells']}", "viewer", params={"limit": 50_000})
    assert r.status_code == 200 and r.headers["content-type"] == "application/geo+json"
    fc = r.json()
    truth = api.ids["cells_result"].layer.set_index("cell_id")
    assert fc["numberReturned"] == len(truth) and not fc["truncated"]
    got = {f["properties"]["cell_id"]: f for f in fc["features"]}
    assert set(got) == set(truth.index)
    counts = np.array([got[c]["properties"]["count"] for c in truth.index])
    np.testing.assert_array_equal(counts, truth["count"].to_numpy())
    np.testing.assert_allclose([got[c]["properties"]["harm"] for c in truth.index], truth["harm"], rtol=1e-12)
    wgs = truth.to_crs("EPSG:4326")
    c0 = truth.index[0]
    np.testing.assert_allclose(np.array(got[c0]["geometry"]["coordinates"][0]),
                               np.array(wgs.loc[c0].geometry.exterior.coords), atol=1e-6)


def test_bbox_filter_property_selection_and_limit(api):
    import shapely
    from shapely.geometry import shape

    lid = api.ids["cells"]
    wgs = api.ids["cells_result"].layer.to_crs("EPSG:4326")
    x0, y0, x1, y1 = wgs.total_bounds
    box = (x0, y0, (x0 + x1) / 2, (y0 + y1) / 2)
    r = api.get(f"/layers/{lid}", "viewer", params={"bbox": ",".join(map(str, box)), "properties": "count"})
    fc = r.json()
    expected = int(shapely.intersects(wgs.geometry.values, shapely.box(*box)).sum())
    assert fc["numberReturned"] == expected > 0
    assert all(set(f["properties"]) == {"count"} for f in fc["features"])
    assert all(shape(f["geometry"]).intersects(shapely.box(*box)) for f in fc["features"])
    r = api.get(f"/layers/{lid}", "viewer", params={"limit": 7})
    assert r.json()["numberReturned"] == 7 and r.json()["truncated"] is True
    bad = api.get(f"/layers/{lid}", "viewer", params={"properties": "count,nonsense"})
    assert bad.status_code == 400 and "'nonsense'" in bad.json()["error"]["message"]


def test_etag_and_if_none_match(api):
    lid = api.ids["cells"]
    r1 = api.get(f"/layers/{lid}", "viewer", params={"limit": 10})
    etag = r1.headers["ETag"]
    r2 = api.get(f"/layers/{lid}", "viewer", params={"limit": 10}, headers={"If-None-Match": etag})
    assert r2.status_code == 304 and r2.content == b""
    r3 = api.get(f"/layers/{lid}", "viewer", params={"limit": 11}, headers={"If-None-Match": etag})
    assert r3.status_code == 200 and r3.headers["ETag"] != etag


@pytest.mark.parametrize("bbox,status,code", [
    ("1,2,3", 400, "invalid_parameter"),
    ("0,52,-1,53", 400, "invalid_parameter"),
    ("-10,45,10,60", 400, "limit_exceeded"),  # ~3 million km2 > 5000 km2 limit
    ("a,b,c,d", 400, "invalid_parameter"),
])
def test_bad_bbox_is_a_clear_4xx(api, bbox, status, code):
    r = api.get(f"/layers/{api.ids['cells']}", "viewer", params={"bbox": bbox})
    assert r.status_code == status
    assert r.json()["error"]["code"] == code


def test_layer_ids_are_validated_never_paths(api):
    for bad in ["../../etc/passwd", "..%2F..%2Fservice.duckdb", "0" * 31, "G" * 32]:
        r = api.get(f"/layers/{bad}", "admin")
        assert r.status_code in (404, 422), bad
        assert "error" in r.json()
    r = api.get(f"/layers/{uuid.uuid4().hex}", "admin")
    assert r.status_code == 404 and "no such layer" in r.json()["error"]["message"]


def test_unknown_query_parameters_are_rejected(api):
    r = api.get("/layers", "viewer", params={"lmit": 3})
    assert r.status_code == 400 and "'lmit'" in r.json()["error"]["message"]


def test_cors_is_off_by_default(api):
    r = api.get("/layers", "viewer", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers


# ============================================================================== tiles
def _tile_for(lon, lat, z):
    import math

    n = 2 ** z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return x, y


def test_mvt_tile_holds_the_cells_that_intersect_it(api):
    import mapbox_vector_tile
    import shapely

    from services.tiles import tile_bounds_3857

    lid = api.ids["cells"]
    cells = api.ids["cells_result"].layer
    busiest = cells.loc[cells["count"].idxmax()]
    c = cells.to_crs("EPSG:4326").loc[cells["count"].idxmax()].geometry.centroid
    z = 14
    x, y = _tile_for(c.x, c.y, z)
    r = api.get(f"/tiles/{lid}/{z}/{x}/{y}.mvt", "viewer")
    assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.mapbox-vector-tile"
    tile = mapbox_vector_tile.decode(r.content)
    feats = tile["cells"]["features"]
    # truth: cells (in EPSG:3857) intersecting the tile (buffered by 64/4096 as encoded)
    merc = cells.to_crs("EPSG:3857")
    x0, y0, x1, y1 = tile_bounds_3857(z, x, y)
    pad = (x1 - x0) * 64 / 4096
    hit = shapely.intersects(merc.geometry.values, shapely.box(x0 - pad, y0 - pad, x1 + pad, y1 + pad))
    assert len(feats) == int(hit.sum())
    ids = {f["properties"]["cell_id"]: f["properties"]["count"] for f in feats}
    assert ids[busiest["cell_id"]] == busiest["count"]
    # out of the zoom range and off the grid: clear 400s
    assert api.get(f"/tiles/{lid}/2/1/1.mvt", "viewer").status_code == 400
    assert api.get(f"/tiles/{lid}/14/99999/1.mvt", "viewer").status_code == 400


def test_raster_png_tile(api):
    import rasterio
    from rasterio.io import MemoryFile

    lid = api.ids["raster"]
    meta = api.store.get_layer(lid)
    x0, y0, x1, y1 = meta["bbox"]
    x, y = _tile_for((x0 + x1) / 2, (y0 + y1) / 2, 13)
    r = api.get(f"/rasters/{lid}/13/{x}/{y}.png", "viewer")
    assert r.status_code == 200 and r.content[:8] == b"\x89PNG\r\n\x1a\n"
    with MemoryFile(r.content) as m, m.open() as src:
        assert (src.width, src.height) == (256, 256)
        alpha = src.read(src.count)
        assert alpha.max() == 255  # something drawn over the town
    assert api.get(f"/rasters/{lid}/13/0/0.png", "viewer").status_code == 204  # far away: no content
    assert api.get(f"/tiles/{lid}/13/{x}/{y}.mvt", "viewer").status_code == 404  # raster has no MVT
    del rasterio


# ============================================================================== runs
def test_cells_run_matches_direct_analysis(api):
    from geo.units.counts import count_units
    from geo.core.period import Period
    from geo.units.lattice import SquareGrid

    r = api.post("/runs/cells", "analyst", json={"cell": 250, "from": "2025-03", "to": "2025-05"})
    assert r.status_code == 202, r.text
    run = api.wait_run(r.json()["run_id"])
    assert run["status"] == "done", run
    p = Period.parse("2025-03", "2025-05")
    truth = count_units(api.store.incidents(period=p), SquareGrid(250.0), area=api.store.study_area(), period=p)
    assert run["summary"]["incidents"] == truth.summary["incidents"]
    fc = api.get(f"/layers/{run['layer_ids'][0]}", "viewer", params={"limit": 50_000}).json()
    assert sum(f["properties"]["count"] for f in fc["features"]) == int(truth.layer["count"].sum())
    assert fc["numberReturned"] == len(truth.layer)
    layer = {x["id"]: x for x in api.get("/layers", "viewer").json()["layers"]}[run["layer_ids"][0]]
    assert layer["run_id"] == run["run_id"] and layer["period"]["start"].startswith("2025-03")


@pytest.mark.parametrize("params,fragment", [
    ({"cell": 5}, "cell"),
    ({"bogus": 1}, "bogus"),
    ({"from": "March"}, "from"),
    ({"weights": "../../etc/passwd"}, "weights"),
    ({"categories": ["Not a crime"]}, "categories"),
])
def test_run_parameters_are_validated_strictly(api, params, fragment):
    r = api.post("/runs/cells", "analyst", json=params)
    assert r.status_code == 400, r.text
    assert fragment in r.json()["error"]["message"]


def test_bad_upload_fails_the_run_with_a_reason_and_leaves_the_store_as_it_was(api):
    before = [x["id"] for x in api.get("/layers", "admin").json()["layers"]]
    bad = io.BytesIO(b"wkt,name\n\"POLYGON((0 0, 1 0, 1 1, 0 0))\",ok\nNOT WKT,bad\n")
    r = api.post("/runs/cells", "analyst", data={"params": json.dumps({"cell": 200})},
                 files={"area": ("area.csv", bad, "text/csv")})
    assert r.status_code == 202, r.text
    run = api.wait_run(r.json()["run_id"])
    assert run["status"] == "failed"
    assert "upload 'area' (area.csv)" in run["error"] and "row 3" in run["error"]
    after = [x["id"] for x in api.get("/layers", "admin").json()["layers"]]
    assert after == before


def test_upload_area_is_used(api):
    """A good uploaded area (one 1 km square around the busiest cell) restricts the counted incidents."""
    import shapely

    cells = api.ids["cells_result"].layer
    c = cells.loc[cells["count"].idxmax()].geometry.centroid
    sq = shapely.box(c.x - 500, c.y - 500, c.x + 500, c.y + 500)
    csv = f"wkt\n\"{sq.wkt}\"\n".encode()
    r = api.post("/runs/cells", "analyst", data={"params": "{}"}, files={"area": ("square.csv", csv, "text/csv")})
    run = api.wait_run(r.json()["run_id"])
    assert run["status"] == "done", run
    inc = api.store.incidents().frame
    inside = shapely.contains_xy(sq, inc["x"].to_numpy(), inc["y"].to_numpy()).sum()
    assert run["summary"]["incidents"] == int(inside)


def test_upload_limits(api):
    big = b"x" * 300_000
    r = api.post("/runs/cells", "analyst", data={"params": "{}"}, files={"area": ("a.csv", big, "text/csv")})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    r = api.post("/runs/cells", "analyst", data={"params": "{}"}, files={"towns": ("a.csv", b"x", "text/csv")})
    assert r.status_code == 400 and "'towns'" in r.json()["error"]["message"]


def test_unavailable_kind_says_so(api):
    kinds = api.get("/version", "analyst").json()["run_kinds"]
    assert kinds["cells"] is True
    for kind, ok in kinds.items():
        if not ok:
            r = api.post(f"/runs/{kind}", "analyst", json={})
            assert r.status_code == 501 and "not available in this build" in r.json()["error"]["message"]
    assert api.post("/runs/nonsense", "analyst", json={}).status_code == 422


# ============================================================================== audit
def test_audit_log_records_who_asked_for_what(api):
    api.get(f"/layers/{api.ids['cells']}", "viewer", params={"limit": 1})
    api.get("/layers", "partner")
    entries = api.get("/audit", "admin", params={"limit": 500}).json()["entries"]
    viewer_id = api.keys["viewer"].split("_")[1]
    assert any(e["key_id"] == viewer_id and e["path"] == f"/layers/{api.ids['cells']}" and e["status"] == 200
               for e in entries)
    assert any(e["role"] is None and e["status"] == 401 for e in entries)
    assert all(api.keys["viewer"] not in json.dumps(e) for e in entries)  # the key itself is never logged


# ============================================================================== every run kind (DuckDB store)
@pytest.fixture(scope="module")
def kinds_api(tmp_path_factory, town):
    """Default limits, DuckDB store; the run kinds are checked against direct calls of the geo functions."""
    from fastapi.testclient import TestClient

    from services.api import create_app
    from services.settings import Settings
    from services.store.duckdb_store import DuckDBStore

    tmp = tmp_path_factory.mktemp("kinds")
    store = DuckDBStore(tmp / "kinds.duckdb")
    ids = populate(store, town, tmp)
    keys = make_keys(store)
    app = create_app(Settings(store=str(store.url), rate_limit_per_minute=0), store=store)
    with TestClient(app) as client:
        yield Api(client, ids, keys, store, "duckdb")
    store.close()


def _geojson(gdf) -> tuple:
    return ("layer.geojson", gdf.to_crs("EPSG:4326").to_json().encode(), "application/geo+json")


def _roundtrip(gdf):
    """What the service sees of an uploaded layer (WGS84 GeoJSON back to BNG: sub-mm differences decide
    points that lie exactly on a square's edge)."""
    import geopandas as gpd

    return gpd.read_file(io.BytesIO(_geojson(gdf)[1])).to_crs("EPSG:27700")


def _run(api, kind, params, files=None):
    if files:
        r = api.post(f"/runs/{kind}", "analyst", data={"params": json.dumps(params)}, files=files)
    else:
        r = api.post(f"/runs/{kind}", "analyst", json=params)
    assert r.status_code == 202, r.text
    run = api.wait_run(r.json()["run_id"], timeout=180)
    assert run["status"] == "done", run
    return run


def test_run_hotspots_gistar_equals_direct_call(kinds_api):
    from geo.hotspots.gistar import hotspots_gistar
    from geo.core.harm import WeightTable
    from geo.core.period import Period

    api = kinds_api
    run = _run(api, "hotspots", {"method": "gistar", "from": "2025-01", "to": "2025-06"})
    p = Period.parse("2025-01", "2025-06")
    truth = hotspots_gistar(api.store.incidents(period=p), None, WeightTable.builtin(), area=api.store.study_area(),
                            period=p)
    fc = api.get(f"/layers/{run['layer_ids'][0]}", "viewer", params={"limit": 50_000}).json()
    got = sorted((f["properties"]["cell_id"], f["properties"]["gistar_bin"]) for f in fc["features"])
    exp = sorted(zip(truth.layer["cell_id"], truth.layer["gistar_bin"].astype(int)))
    assert got == exp
    assert any(c["name"] == "period start" for c in run["choices"]) is False  # given, not automatic


def test_run_hotspots_kde_is_a_raster_layer(kinds_api):
    from geo.core.harm import WeightTable
    from geo.hotspots.kde import hotspots_kde
    from services.layers import layer_data

    api = kinds_api
    run = _run(api, "hotspots", {"method": "kde", "bandwidth": 400})
    meta = api.store.get_layer(run["layer_ids"][0])
    assert meta["layer_type"] == "raster"
    truth = hotspots_kde(api.store.incidents(), WeightTable.builtin(), area=api.store.study_area(), bandwidth=400.0)
    got = layer_data(api.store, meta)
    assert got.array.shape == truth.layer.array.shape
    np.testing.assert_allclose(np.nanmax(got.array), np.nanmax(truth.layer.array), rtol=1e-6)  # float32 storage


def test_run_grip_needs_towns_and_equals_direct_call(kinds_api, town):
    from geo.grip.spots import select_spots
    from geo.core.harm import WeightTable

    api = kinds_api
    r = api.post("/runs/grip", "analyst", json={"n": 5})
    assert r.status_code == 400 and "'towns'" in r.json()["error"]["message"]
    run = _run(api, "grip", {"n": 5}, {"towns": _geojson(town.towns)})
    truth = select_spots(api.store.incidents(), _roundtrip(town.towns), n=5, weights=WeightTable.builtin(),
                         area=api.store.study_area())
    fc = api.get(f"/layers/{run['layer_ids'][0]}", "viewer", params={"limit": 50_000}).json()
    id_col = "cell_id" if "cell_id" in truth.layer.columns else truth.layer.columns[0]
    assert sorted(f["properties"][id_col] for f in fc["features"]) == sorted(truth.layer[id_col])


def test_run_dose_and_evaluation_equal_direct_calls(kinds_api):
    from geo.evaluation.areas import evaluate_areas
    from geo.core.harm import WeightTable
    from geo.patrol.dose import compute_dose
    from geo.patrol.pings import validate_pings
    from geo.core.period import Period
    from geo.synth.patrol import make_patrol_scenario

    api = kinds_api
    sc = make_patrol_scenario(42)
    pings_csv = sc.pings.to_csv(index=False).encode()
    run = _run(api, "dose", {}, {"pings": ("pings.csv", pings_csv, "text/csv"), "spots": _geojson(sc.spots)})
    truth = compute_dose(validate_pings(sc.pings.astype(str)), _roundtrip(sc.spots), "spot_id")
    assert run["summary"]["visits"] == truth.summary["visits"]
    before, after = f"{sc.before[0]}:{sc.before[1]}", f"{sc.after[0]}:{sc.after[1]}"
    ev = _run(api, "evaluation", {"before": before, "after": after}, {"treated": _geojson(sc.treated),
                                                                      "control": _geojson(sc.control)})
    direct = evaluate_areas(api.store.incidents(), _roundtrip(sc.treated), _roundtrip(sc.control), before=Period.parse_range(before),
                            after=Period.parse_range(after), weights=WeightTable.builtin(),
                            area=api.store.study_area())
    assert ev["summary"]["counts"]["wdd"] == pytest.approx(direct.summary["counts"]["wdd"], rel=1e-9)


def test_run_rtm_with_one_factor(kinds_api, town):
    from geo.rtm.factors import factor_from_frame
    from geo.rtm.model import risk_terrain

    api = kinds_api
    run = _run(api, "rtm", {}, {"pubs": _geojson(town.features["pubs"])})
    area = api.store.study_area()
    truth = risk_terrain(api.store.incidents(), [factor_from_frame("pubs", town.features["pubs"], area=area,
                                                                   buffer_m=300.0)], area)
    assert run["summary"]["max_rrs"] == pytest.approx(truth.summary["max_rrs"], rel=1e-9)
    assert api.store.get_layer(run["layer_ids"][0])["layer_type"] == "raster"
    assert run["summary"]["lasso"]["cv_scheme"] == "spatial"  # the CLI's default too
    rnd = _run(api, "rtm", {"cv": "random"}, {"pubs": _geojson(town.features["pubs"])})
    truth = risk_terrain(api.store.incidents(), [factor_from_frame("pubs", town.features["pubs"], area=area,
                                                                   buffer_m=300.0)], area, cv_scheme="random")
    got, want = dict(rnd["summary"]["lasso"]), dict(truth.summary["lasso"])
    assert got.pop("alpha") == pytest.approx(want.pop("alpha"), rel=1e-9)
    assert got == want and got["cv_scheme"] == "random" and got["cv_block_m"] is None


# ============================================================================== pieces
def test_rate_limit_gives_429_with_retry_after(tmp_path):
    from fastapi.testclient import TestClient

    from services.api import create_app
    from services.settings import Settings
    from services.store.duckdb_store import DuckDBStore

    st = DuckDBStore(tmp_path / "rl.duckdb")
    keys = make_keys(st)
    app = create_app(Settings(store=str(tmp_path / "rl.duckdb"), rate_limit_per_minute=3), store=st)
    with TestClient(app) as c:
        codes = [c.get("/version", headers={"X-API-Key": keys["viewer"]}).status_code for _ in range(5)]
        assert codes == [200, 200, 200, 429, 429]
        r = c.get("/version", headers={"X-API-Key": keys["viewer"]})
        assert r.json()["error"]["code"] == "rate_limited" and int(r.headers["Retry-After"]) >= 1
        # another key has its own bucket
        assert c.get("/version", headers={"X-API-Key": keys["admin"]}).status_code == 200
    st.close()


def test_settings_read_the_harmspot_env_prefix(monkeypatch):
    from services.settings import Settings

    monkeypatch.setenv("HARMSPOT_PARTNER_K", "10")
    monkeypatch.setenv("HARMSPOT_CORS_ORIGINS", '["https://maps.force.police.uk"]')
    s = Settings()
    assert s.partner_k == 10 and s.cors_origins == ["https://maps.force.police.uk"]
    assert Settings.model_fields["partner_k"].default == 5  # the documented default k


def test_keys_are_hashed_and_compared_in_constant_time(monkeypatch):
    import hmac

    from services.auth import KeyChecker, hash_key, new_key

    kid, key, digest = new_key("viewer")
    assert digest == hash_key(key) and key not in digest and len(digest) == 64

    class S:
        def get_key(self, key_id):
            return {"key_id": kid, "key_hash": digest, "role": "viewer", "revoked": None} if key_id == kid else None

    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    kc = KeyChecker(S(), cache_seconds=0)
    assert kc.check(key).role == "viewer"
    with pytest.raises(Exception, match="invalid or revoked"):
        kc.check(key[:-1] + ("A" if key[-1] != "A" else "B"))
    with pytest.raises(Exception, match="invalid or revoked"):
        kc.check("hs_ffffffffff_" + "x" * 43)  # unknown id: still one constant-time comparison
    assert len(calls) == 3


def test_mvt_encoder_round_trips_through_the_reference_decoder():
    """services.tiles.encode_mvt decoded by mapbox-vector-tile (the reference): geometry and properties."""
    import mapbox_vector_tile
    import shapely

    poly = shapely.Polygon([(100, 100), (1000, 100), (1000, 1000), (100, 1000)], [[(300, 300), (300, 500),
                                                                                 (500, 500), (500, 300)]])
    multi = shapely.MultiPolygon([shapely.box(2000, 2000, 2500, 2500), shapely.box(3000, 3000, 3500, 3600)])
    line = shapely.LineString([(0, 0), (10, 40), (4000, 4000)])
    pts = shapely.MultiPoint([(5, 5), (4090, 7)])
    feats = [(1, poly, {"cell_id": "a", "count": 7, "harm": 12.5, "flag": True, "gone": None}),
             (2, multi, {"cell_id": "b", "count": -3}), (3, line, {}), (4, pts, {"n": 2})]
    tile = mapbox_vector_tile.decode(services_tiles().encode_mvt("t", feats), default_options={"y_coord_down": True})
    got = {f["id"]: f for f in tile["t"]["features"]}
    assert tile["t"]["extent"] == 4096
    assert got[1]["properties"] == {"cell_id": "a", "count": 7, "harm": 12.5, "flag": True}
    assert got[2]["properties"] == {"cell_id": "b", "count": -3}
    for fid, g in ((1, poly), (2, multi), (3, line), (4, pts)):
        back = shapely.geometry.shape(got[fid]["geometry"])
        assert back.normalize().equals_exact(g.normalize(), tolerance=0.5), fid  # integer tile coordinates


def services_tiles():
    import services.tiles

    return services.tiles


def test_run_minerva_equals_direct_call(kinds_api, town):
    """Minerva zones via the API equal geo.minerva.zones.minerva_zones on the same SYNTHETIC fear reports."""
    from geo.minerva.zones import minerva_zones, points_from_frame, square_units
    from geo.synth.minerva import make_fear_points

    api = kinds_api
    fear = make_fear_points(town, n=600, seed=7)
    r = api.post("/runs/minerva", "analyst", json={})
    assert r.status_code == 400 and "'fear'" in r.json()["error"]["message"]
    run = _run(api, "minerva", {"cell": 250}, {"fear": ("fear.csv", fear.to_csv(index=False).encode(), "text/csv")})
    area = api.store.study_area()
    truth = minerva_zones(square_units(area, 250.0), api.store.incidents(),
                          points_from_frame(pd_read_csv(fear), "fear"), id_col="unit_id")
    assert run["summary"]["minerva_zones"] == truth.summary["minerva_zones"]
    assert run["summary"]["zones_of_local_interest"] == truth.summary["zones_of_local_interest"]


def pd_read_csv(df):
    import pandas as pd

    return pd.read_csv(io.StringIO(df.to_csv(index=False)))


@pytest.mark.parametrize("backend", ["duckdb", "postgis"])
def test_readers_never_see_half_a_layer(backend, tmp_path, request):
    """Readers in other threads, while layers are written, see every listed layer complete (atomic writes).

    SYNTHETIC 3,000-square layer written 6 times; 3 reader threads poll the catalogue and count
    each listed layer's features (must equal its n_features, never fewer)."""
    import threading

    import geopandas as gpd
    import shapely

    from geo.core.result import AnalysisResult
    from services.layers import save_result

    store = open_backend(backend, tmp_path, request)
    n = 3000
    gdf = gpd.GeoDataFrame({"cell_id": [f"c{i}" for i in range(n)], "count": np.arange(n) % 9},
                           geometry=shapely.box(np.arange(n) * 10.0 + 560000, 200000, np.arange(n) * 10.0 + 560010,
                                                200010), crs="EPSG:27700")
    stop = threading.Event()
    bad, seen = [], []

    def reader():
        while not stop.is_set():
            for m in store.list_layers():
                k = len(store.layer_features(m["layer_id"]))
                seen.append(k)
                if k != m["n_features"]:
                    bad.append((m["layer_id"], k, m["n_features"]))

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(6):
            save_result(store, AnalysisResult(kind="cells", layer=gdf))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not bad
    assert len(store.list_layers()) == 6 and seen  # the readers did read while writes happened
    store.close()


def test_gzip_only_when_asked_and_same_content(api):
    lid = api.ids["cells"]
    plain = api.get(f"/layers/{lid}", "viewer", params={"limit": 100}, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    gz = api.get(f"/layers/{lid}", "viewer", params={"limit": 100}, headers={"Accept-Encoding": "gzip"})
    assert gz.headers["content-encoding"] == "gzip" and gz.headers["vary"] == "Accept-Encoding"
    assert gz.json() == plain.json() and gz.headers["etag"] == plain.headers["etag"]


def test_cors_allow_list_when_configured(tmp_path):
    from fastapi.testclient import TestClient

    from services.api import create_app
    from services.settings import Settings
    from services.store.duckdb_store import DuckDBStore

    st = DuckDBStore(tmp_path / "cors.duckdb")
    keys = make_keys(st)
    app = create_app(Settings(store=str(tmp_path / "cors.duckdb"), cors_origins=["https://maps.force.police.uk"]),
                     store=st)
    with TestClient(app) as c:
        h = {"X-API-Key": keys["viewer"]}
        ok = c.get("/version", headers={**h, "Origin": "https://maps.force.police.uk"})
        assert ok.headers["access-control-allow-origin"] == "https://maps.force.police.uk"
        other = c.get("/version", headers={**h, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
    st.close()


def test_upload_row_limit_and_messages_name_upload_row_field():
    from geo.core.errors import HarmspotError
    from services.runs import read_table_upload, read_upload

    csv = b"longitude,latitude\n0.4,51.8\n0.41,51.81\n0.42,51.82\n"
    assert len(read_upload("pubs", "pubs.csv", csv, max_rows=3)) == 3
    with pytest.raises(HarmspotError, match=r"upload 'pubs' \(pubs.csv\): 3 rows; the limit is 2"):
        read_upload("pubs", "pubs.csv", csv, max_rows=2)
    with pytest.raises(HarmspotError, match=r"3 rows; the limit is 2"):
        read_table_upload("pings", "pings.csv", csv, max_rows=2)
    bad = b"longitude,latitude\n0.4,51.8\n0.41,north\n"
    with pytest.raises(HarmspotError, match=r"1 row\(s\) without numeric coordinates; first problem: row 3, "
                                            r"field 'latitude'"):
        read_upload("pubs", "pubs.csv", bad, max_rows=10)
    with pytest.raises(HarmspotError, match=r"use one of \.csv, \.geojson"):
        read_upload("pubs", "pubs.shp", b"", max_rows=10)
