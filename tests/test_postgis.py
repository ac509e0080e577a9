"""The PostGIS store against the DuckDB store (the reference) on the same SYNTHETIC town.

Both stores must hand analyses identical incident tables, the same study area, the same
tallies for a load (including duplicates on a second load) and the same layers; writes
are atomic. Skips, saying why, only when PostgreSQL 15 + PostGIS cannot be installed or
started (see tests/test_api.py::start_pg_cluster).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_api import new_pg_database, postgis_url, town_ingest  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def both(postgis_url, tmp_path_factory, town):  # noqa: F811
    from services.store.duckdb_store import DuckDBStore
    from services.store.open import open_store
    from services.store.postgis_store import PostGISStore

    tmp = tmp_path_factory.mktemp("pg")
    res = town_ingest(town, tmp)
    duck = DuckDBStore(tmp / "ref.duckdb")
    pg = open_store(new_pg_database(postgis_url))
    assert isinstance(pg, PostGISStore)
    sums = {}
    for name, st in (("duck", duck), ("pg", pg)):
        st.set_study_area(town.boundary, "district")
        sums[name] = (st.add_ingest(res), st.add_ingest(res))
    yield duck, pg, sums
    duck.close()
    pg.close()


def test_load_tallies_match(both):
    duck, pg, sums = both
    for a, b in zip(sums["duck"], sums["pg"]):
        da, db = a.to_dict(), b.to_dict()
        assert {k: v for k, v in da.items() if k != "rejects_file"} == {k: v for k, v in db.items() if k != "rejects_file"}
    first, second = sums["pg"]
    assert first.added == first.accepted and second.duplicates == second.accepted and second.added == 0
    assert pg.count() == duck.count() == first.added


def test_incidents_identical_including_filters(both):
    from geo.core.period import Period

    duck, pg, _ = both
    for kw in ({}, {"period": Period.parse("2025-02-10", "2025-04")},
               {"categories": ["Burglary", "Robbery"]}, {"bbox": (560000, 200000, 570000, 215000)}):
        a, b = duck.incidents(**kw).frame, pg.incidents(**kw).frame
        assert len(a) > 0
        pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), check_dtype=True)
    assert duck.month_range() == pg.month_range()


def test_study_area_round_trips(both):
    duck, pg, _ = both
    a, b = duck.study_area(), pg.study_area()
    assert a.geometry.iloc[0].equals_exact(b.geometry.iloc[0], tolerance=1e-9)
    assert b.crs.to_epsg() == 27700


def test_layers_identical_and_bbox_uses_the_spatial_index(both, town):
    from geo.units.counts import count_units
    from services.layers import layer_records

    duck, pg, _ = both
    res = count_units(duck.incidents(), area=town.boundary)
    recs = layer_records(res)
    duck.put_layers(recs)
    pg.put_layers(recs)
    lid = recs[0][0]["layer_id"]
    assert duck.get_layer(lid) == pg.get_layer(lid)
    fa, fb = duck.layer_features(lid), pg.layer_features(lid)
    assert list(fa["props"]) == list(fb["props"]) and list(fa["geojson"]) == list(fb["geojson"])
    import shapely

    ga = shapely.from_wkb([bytes(w) for w in fa["wkb"]])
    gb = shapely.from_wkb([bytes(w) for w in fb["wkb"]])
    assert shapely.equals_exact(ga, gb, tolerance=1e-12).all()
    box = (0.40, 51.80, 0.45, 51.83)
    a, b = duck.layer_features(lid, bbox=box), pg.layer_features(lid, bbox=box)
    assert 0 < len(b) < len(fb)
    np.testing.assert_array_equal(a["fid"].to_numpy(), b["fid"].to_numpy())
    plan = pg._rows("EXPLAIN SELECT fid FROM layer_features WHERE geom && ST_MakeEnvelope(0,0,1,1,4326)")
    assert plan  # the GiST index exists (the planner may still scan a small table)
    assert pg._rows("SELECT indexname FROM pg_indexes WHERE indexname = 'layer_features_geom'")


def test_failed_write_leaves_nothing(both, town):
    """A layer write that fails half-way (second layer's id collides) rolls back the first one too."""
    from geo.units.counts import count_units
    from services.layers import layer_records

    duck, pg, _ = both
    res = count_units(duck.incidents(), area=town.boundary)
    for st in (duck, pg):
        recs = layer_records(res)
        good = recs[0]
        clash = ({**good[0]}, good[1], None)  # same layer_id twice: primary key violation on the 2nd insert
        n_before = len(st.list_layers())
        with pytest.raises(Exception):
            st.put_layers([good, clash])
        assert len(st.list_layers()) == n_before
        assert len(st.layer_features(good[0]["layer_id"])) == 0


def test_keys_runs_and_interrupted_runs(both):
    _, pg, _ = both
    pg.add_key("abcdef0123", "f" * 64, "viewer", "t")
    assert pg.get_key("abcdef0123")["role"] == "viewer"
    assert pg.revoke_key("abcdef") == ["abcdef0123"]
    assert pg.get_key("abcdef0123")["revoked"]
    pg.add_run({"run_id": "r1", "kind": "cells", "status": "running", "params": {"cell": 150}, "created": "x"})
    assert pg.fail_interrupted_runs("interrupted") == ["r1"]
    r = pg.get_run("r1")
    assert r["status"] == "failed" and r["error"] == "interrupted" and r["params"] == {"cell": 150}


def test_neighbour_matrices_round_trip_in_both_stores(both, town):
    """A matrix saved through each store's NeighbourCache reads back equal to the fresh build
    (reference: ``h3_ring_neighbours`` on the same cells), and a second save replaces the first."""
    import numpy as np

    from geo.units.neighbours.h3_rings import h3_ring_neighbours
    from geo.units.neighbours.cache import neighbours_key
    from geo.units.h3 import H3Units

    frame = H3Units(9).frame(town.boundary)
    rule = {"neighbours": "h3 grid ring", "ring_k": 1}
    key = neighbours_key("h3", frame, rule)
    fresh = h3_ring_neighbours(frame["h3"].to_numpy(np.uint64), 1)
    for st in both[:2]:
        first = st.neighbour_cache()
        first.get(key, lambda: fresh)
        assert first.last == "built"
        later = st.neighbour_cache()
        got = later.get(key, lambda: None)
        assert later.last == "stored"
        assert (got.matrix != fresh.matrix).nnz == 0 and np.array_equal(got.cardinality, fresh.cardinality)
        st.put_neighbours(key, fresh.to_bytes())  # saving again replaces, never duplicates
        assert len(st._rows(st._sql("SELECT matrix_key FROM neighbour_matrices WHERE matrix_key = ?"), [key])) == 1
