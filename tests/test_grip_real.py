"""Grip harm spots on REAL Essex data (data.police.uk street-level crime, 12 months 2018-01..2019-02
with Aug-Sep 2018 missing; ONS LAD 2013 boundaries). Skips when ../shared/data is absent (fails under CI).

Towns: a 3 km circle around each town centre (lon/lat below, from the town's Ordnance Survey
gazetteer entry, rounded) cut to its local authority district polygon, so that Clacton is not
Tendring and Grays is not Thurrock. Oracle: ``geo.units.counts.count_units`` (what ``harmspot cells
--category ...`` computes) over the store's study area for the same categories, period and
CCHI table; equality is exact up to float summation order (rel 1e-9).
"""
from __future__ import annotations

import json
import subprocess
import sys

import geopandas as gpd
import numpy as np
import pytest
import shapely

from geo import BNG, WGS84
from geo.units.counts import count_units
from geo.grip.spots import PROXY_CATEGORIES, select_spots
from geo.core.harm import WeightTable
from geo.core.period import Period
from geo.units.lattice import SquareGrid

# (town, LAD13NM, lon, lat) of the town centre
TOWNS = [
    ("Southend-on-Sea", "Southend-on-Sea", 0.7105, 51.5383),
    ("Basildon", "Basildon", 0.4607, 51.5700),
    ("Colchester", "Colchester", 0.9015, 51.8891),
    ("Chelmsford", "Chelmsford", 0.4740, 51.7345),
    ("Harlow", "Harlow", 0.1100, 51.7700),
    ("Clacton-on-Sea", "Tendring", 1.1560, 51.7900),
    ("Grays", "Thurrock", 0.3260, 51.4770),
]
RADIUS = 3000.0


def grip_towns(essex_boundary):
    lad = essex_boundary.set_index("name")
    pts = gpd.GeoSeries(gpd.points_from_xy([t[2] for t in TOWNS], [t[3] for t in TOWNS]), crs=WGS84).to_crs(BNG)
    geoms = [p.buffer(RADIUS).intersection(lad.loc[t[1], "geometry"]) for p, t in zip(pts, TOWNS)]
    return gpd.GeoDataFrame({"name": [t[0] for t in TOWNS]}, geometry=geoms, crs=BNG)


@pytest.fixture(scope="module")
def essex_grip(essex_store, essex_boundary):
    towns = grip_towns(essex_boundary)
    period = Period.parse("2018-03", "2019-02")
    inc = essex_store.incidents(period=period)
    area = essex_store.study_area()
    res = select_spots(inc, towns, n=20, period=period, area=area)
    return towns, period, inc, area, res


def test_real_grip_spots_for_seven_essex_towns(essex_grip):
    towns, period, inc, area, res = essex_grip
    lay = res.layer
    assert res.summary["outcome"] == "police-uk-proxy"
    assert lay["town"].value_counts().to_dict() == {t[0]: 20 for t in TOWNS}
    # each spot is one 150 m square whose centroid lies in its town
    c = lay.geometry.centroid
    for name, geom in zip(towns["name"], towns.geometry):
        m = (lay["town"] == name).to_numpy()
        assert shapely.contains_xy(geom, c.x.to_numpy()[m], c.y.to_numpy()[m]).all()
    assert np.allclose(lay.geometry.area, 150.0 ** 2)
    # every spot has a police.uk location label and positive harm; ranks 1..20 by harm
    assert (lay["location"].str.startswith("On or near")).all() and (lay["harm"] > 0).all()
    for _, g in lay.groupby("town"):
        assert list(g["rank"]) == list(range(1, 21)) and g["harm"].is_monotonic_decreasing
    # concentration is real but partial: 20 squares hold a minority of a town's harm on < 5% of its squares
    t = res.tables["towns"].set_index("town")
    assert (t["spot_share_area"] < 0.05).all()
    assert ((t["spot_share_harm"] > 0.05) & (t["spot_share_harm"] < 0.8)).all()
    # the police.uk gap (Aug-Sep 2018) is not counted as earlier exposure: 10 months with data
    tr = next(ch for ch in res.choices if ch.name == "trend window")
    assert "of 10 months with data" in tr.value


def test_real_rank1_equals_top_cell_of_count_units(essex_grip):
    towns, period, inc, area, res = essex_grip
    cells = count_units(inc, SquareGrid(150), WeightTable.builtin(), area=area, period=period,
                        categories=list(PROXY_CATEGORIES)).layer
    c = cells.geometry.centroid
    for name, geom in zip(towns["name"], towns.geometry):
        inside = cells[shapely.contains_xy(geom, c.x.to_numpy(), c.y.to_numpy())]
        top = inside.sort_values(["harm", "count", "cell_id"], ascending=[False, False, True]).head(20)
        got = res.layer[res.layer["town"] == name]
        assert got["spot_id"].iloc[0] == top["cell_id"].iloc[0]
        assert got["harm"].iloc[0] == pytest.approx(top["harm"].iloc[0], rel=1e-9)
        assert np.allclose(got["harm"].to_numpy(), top["harm"].to_numpy(), rtol=1e-9)
        assert (got["count"].to_numpy() == top["count"].to_numpy()).all()


def test_real_cli_grip_matches_cells_command(essex_ingest, essex_boundary, tmp_path):
    # The command contract: rank-1 harm from 'harmspot grip' equals the town's top cell of
    # 'harmspot cells --category ...' for the same period and weight table.
    # (Own store: the session essex_store stays open in this process, and DuckDB locks the file.)
    from services.store.duckdb_store import DuckDBStore

    st = DuckDBStore(tmp_path / "essex.duckdb")
    st.set_study_area(essex_boundary, "essex_lad_2013")
    st.add_ingest(essex_ingest)
    url = st.url
    st.close()
    towns = grip_towns(essex_boundary).iloc[[0, 5]]  # Southend, Clacton
    tf = tmp_path / "towns.geojson"
    towns.to_file(tf, driver="GeoJSON")
    out, cout = tmp_path / "grip.geojson", tmp_path / "cells.csv"
    cmd = [sys.executable, "-c", "from services.cli import main; main()"]
    cats = sum((["--category", c] for c in PROXY_CATEGORIES), [])
    r = subprocess.run(cmd + ["grip", "--store", url, "--towns", str(tf), "--name-col", "name",
                              "--n", "5", "--cell", "150", "--from", "2018-03", "--to", "2019-02",
                              "--out", str(out), "--json"], capture_output=True, text=True)
    r2 = subprocess.run(cmd + ["cells", "--store", url, "--cell", "150", "--from", "2018-03",
                               "--to", "2019-02", *cats, "--out", str(cout)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r2.returncode == 0, r2.stderr
    js = json.loads(r.stdout.strip().splitlines()[-1])
    assert js["spots"] == 10
    import pandas as pd

    cells = pd.read_csv(cout)
    feats = gpd.read_file(out)
    for name, geom in zip(towns["name"], towns.geometry):
        inside = cells[shapely.contains_xy(geom, cells["easting"], cells["northing"])]
        top = inside.sort_values(["harm", "count", "cell_id"], ascending=[False, False, True]).iloc[0]
        one = feats[(feats["town"] == name) & (feats["rank"] == 1)].iloc[0]
        assert one["spot_id"] == top["cell_id"]
        assert one["harm"] == pytest.approx(top["harm"], rel=1e-9)
