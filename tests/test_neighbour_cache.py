"""Neighbour matrices built once and cached (issue 3: "sparse neighbour matrices built once and cached").

Reference throughout: the same matrix built fresh, uncached (``h3_ring_neighbours`` /
``contiguity_neighbours``); a cached matrix must equal it exactly, and Gi* z must be identical.
Data: the SYNTHETIC town (seed 42) and seeded random polygons.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import shapely

from geo.units.neighbours.cache import NeighbourCache, neighbours_key
from geo.units.neighbours.base import SparseNeighbours
from geo.units.neighbours.contiguity import contiguity_neighbours
from geo.units.neighbours.h3_rings import h3_ring_neighbours
from geo.hotspots.gistar import hotspots_gistar
from geo.units.neighbours.build import neighbours_for


def _same(a, b) -> bool:
    return a.n == b.n and (a.matrix != b.matrix).nnz == 0 and np.array_equal(a.cardinality, b.cardinality) \
        and a.describe() == b.describe()


def _voronoi(n=400, seed=3):
    import geopandas as gpd

    rng = np.random.default_rng(seed)
    pts = shapely.points(rng.uniform(0, 10_000, (n, 2)))
    cells = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(pts), extend_to=shapely.box(0, 0, 10_000, 10_000)))
    cells = shapely.intersection(cells, shapely.box(0, 0, 10_000, 10_000))
    return gpd.GeoDataFrame({"cell_id": [f"p{i}" for i in range(len(cells))]}, geometry=cells, crs=27700)


def test_bytes_round_trip_is_exact():
    frame = _voronoi()
    for nb in (contiguity_neighbours(frame.geometry, "queen"), contiguity_neighbours(frame.geometry, "rook")):
        back = SparseNeighbours.from_bytes(nb.to_bytes())
        assert _same(nb, back)
        assert back.lag(np.arange(nb.n, dtype=float)).tolist() == nb.lag(np.arange(nb.n, dtype=float)).tolist()
    with pytest.raises(Exception, match="damaged"):
        import io

        z = dict(np.load(io.BytesIO(nb.to_bytes())))
        z["indptr"] = z["indptr"][:-1]
        buf = io.BytesIO()
        np.savez(buf, **z)
        SparseNeighbours.from_bytes(buf.getvalue())


def test_cache_builds_once_then_reuses_from_memory_and_storage():
    frame = _voronoi()
    built = []

    def build():
        built.append(1)
        return contiguity_neighbours(frame.geometry, "queen")

    saved: dict = {}
    cache = NeighbourCache(load=saved.get, save=saved.__setitem__)
    key = neighbours_key("polygons", frame, {"neighbours": "queen contiguity"})
    first = cache.get(key, build)
    assert cache.last == "built" and len(built) == 1 and key in saved
    again = cache.get(key, build)
    assert cache.last == "memory" and len(built) == 1 and again is first
    # a new session (new cache object) on the same storage: read back, not rebuilt
    later = NeighbourCache(load=saved.get, save=saved.__setitem__)
    stored = later.get(key, build)
    assert later.last == "stored" and len(built) == 1 and _same(stored, first)
    # a damaged stored copy is a miss: rebuilt and saved over, never used
    saved[key] = saved[key][: len(saved[key]) // 2]
    fixed = NeighbourCache(load=saved.get, save=saved.__setitem__)
    again = fixed.get(key, build)
    assert fixed.last == "built" and len(built) == 2 and _same(again, first)
    assert _same(SparseNeighbours.from_bytes(saved[key]), first)
    built.pop()
    # LRU: size 1 drops the older key
    small = NeighbourCache(size=1)
    small.get("a", build)
    small.get("b", build)
    small.get("a", build)
    assert small.last == "built" and len(built) == 4


def test_key_changes_with_units_order_and_rule():
    frame = _voronoi()
    rule = {"neighbours": "queen contiguity"}
    k = neighbours_key("polygons", frame, rule)
    assert neighbours_key("polygons", frame.copy(), rule) == k  # same units, same key
    moved = frame.copy()
    g = moved.geometry.values.copy()
    c = shapely.get_coordinates(g[5])
    c[1] += 0.001  # one vertex moved by a millimetre
    g[5] = shapely.polygons(c)
    moved.geometry = g
    assert neighbours_key("polygons", moved, rule) != k
    assert neighbours_key("polygons", frame.iloc[::-1], rule) != k
    assert neighbours_key("polygons", frame, {"neighbours": "rook contiguity"}) != k
    assert neighbours_key("polygons", frame, {"neighbours": "distance band", "band_m": 500.0}) != \
        neighbours_key("polygons", frame, {"neighbours": "distance band", "band_m": 501.0})


def test_h3_and_polygon_gistar_identical_with_and_without_cache(town, town_store):
    from geo.units.h3 import H3Units
    from geo.units.polygons import PolygonUnits

    inc = town_store.incidents()
    b = town.boundary.total_bounds
    polys = _voronoi(300, seed=11)
    sx, sy = (b[2] - b[0]) / 10_000, (b[3] - b[1]) / 10_000
    polys = polys.set_geometry(shapely.transform(polys.geometry.values, lambda c: c * [sx, sy] + b[:2]))
    saved: dict = {}
    for units in (H3Units(9), PolygonUnits(polys, "cell_id")):
        plain = hotspots_gistar(inc, units, area=town.boundary)
        cache = NeighbourCache(load=saved.get, save=saved.__setitem__)
        first = hotspots_gistar(inc, units, area=town.boundary, neighbour_cache=cache)
        second = hotspots_gistar(inc, units, area=town.boundary, neighbour_cache=cache)
        third = hotspots_gistar(inc, units, area=town.boundary,
                                neighbour_cache=NeighbourCache(load=saved.get, save=saved.__setitem__))
        for res, said in ((first, "built now and cached"), (second, "reused (built earlier in this session)"),
                          (third, "reused from the store")):
            np.testing.assert_array_equal(res.layer["gistar_z"].to_numpy(), plain.layer["gistar_z"].to_numpy())
            assert (res.layer["neighbours"] == plain.layer["neighbours"]).all()
            echoed = {c.name: c.value for c in res.choices}
            assert echoed["neighbour matrix"] == said
        assert "neighbour matrix" not in {c.name for c in plain.choices}
    # squares: nothing to build, nothing cached
    from geo.units.lattice import SquareGrid

    n_before = len(saved)
    nb, _ = neighbours_for(SquareGrid(250), hotspots_gistar(inc, SquareGrid(250)).layer, cache=NeighbourCache())
    assert nb.__class__.__name__ == "LatticeNeighbours" and len(saved) == n_before


def test_h3_cached_matrix_equals_fresh_build(town):
    from geo.units.h3 import H3Units

    u = H3Units(9)
    frame = u.frame(town.boundary)
    cells = frame["h3"].to_numpy(np.uint64)
    cache = NeighbourCache()
    nb, ch = neighbours_for(u, frame, cache=cache)
    assert _same(nb, h3_ring_neighbours(cells, 1)) and cache.last == "built"
    nb2, _ = neighbours_for(u, frame, ring=2, cache=cache)
    assert cache.last == "built" and _same(nb2, h3_ring_neighbours(cells, 2))


def test_cli_gistar_reuses_the_stored_matrix(tmp_path, town_store):
    """Two CLI runs on the same store and H3 units: the second reads the matrix the first saved."""
    store = town_store.path
    town_store.close()
    cmd = [sys.executable, "-c", "from services.cli import main; main()", "hotspots", "gistar", "--store",
           str(store), "--grid", "h3", "--res", "9", "--weight", "count", "--json"]
    runs = []
    for _ in range(2):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    said = [{c["name"]: c["value"] for c in run["choices"]}["neighbour matrix"] for run in runs]
    assert said == ["built now and cached", "reused from the store"]
    assert runs[0]["classes"] == runs[1]["classes"] and runs[0]["z_max"] == runs[1]["z_max"]
    from services.store.duckdb_store import DuckDBStore

    with DuckDBStore(store) as st:
        n = st._rows("SELECT count(*) AS n FROM neighbour_matrices")[0]["n"]
    assert n == 1


def test_store_keeps_only_the_newest_matrices(tmp_path):
    """Planted: five matrices saved one after another with keep=3; the three newest remain, and saving
    an existing key again replaces it (no duplicate rows)."""
    import time

    from services.store.duckdb_store import DuckDBStore

    nb = contiguity_neighbours(_voronoi(50).geometry, "queen")
    with DuckDBStore(tmp_path / "s.duckdb") as st:
        for i in range(5):
            st.put_neighbours(f"k{i}", nb.to_bytes(), keep=3)
            time.sleep(0.01)
        st.put_neighbours("k4", nb.to_bytes(), keep=3)
        keys = sorted(r["matrix_key"] for r in st._rows("SELECT matrix_key FROM neighbour_matrices"))
        assert keys == ["k2", "k3", "k4"]
        assert _same(SparseNeighbours.from_bytes(st.get_neighbours("k3")), nb) and st.get_neighbours("k0") is None


def test_cli_cache_opens_the_store_once_per_command(tmp_path, monkeypatch):
    """A miss (look up, build, save) goes through one store connection, closed at the end of the
    command; a command that never needs a matrix (squares) never opens the store for it."""
    import services.store.open as S
    from services.cmd_hotspots import _neighbour_cache

    opened = []
    real = S.open_store

    def counting(path, *a, **k):
        st = real(path, *a, **k)
        opened.append(st)
        return st

    monkeypatch.setattr(S, "open_store", counting)
    nb = contiguity_neighbours(_voronoi(50).geometry, "queen")
    path = tmp_path / "s.duckdb"
    with _neighbour_cache(path) as cache:
        assert cache._load("k") is None  # the miss
        cache._save("k", nb.to_bytes())
    assert len(opened) == 1
    with _neighbour_cache(path):
        pass
    assert len(opened) == 1
    with S.DuckDBStore(path) as st:  # closed, so it opens again; the matrix was saved
        assert _same(SparseNeighbours.from_bytes(st.get_neighbours("k")), nb)
