"""Risk terrain modelling: published arithmetic, slow twins and a planted truth.

Synthetic data throughout (geo.synth_rtm / geo.synth: SYNTHETIC town "Harmstead").
Real-data checks are in test_rtm_real.py.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from geo.rtm.factors import FactorLayerError, factor_from_frame
from geo.rtm.learned import compare_risk_models, hit_rate_pai, hits_at_area
from geo.rtm.model import (RTMGrid, build_candidates, distance_to_nearest, distance_to_nearest_edt, feature_density, relative_risk_scores, relative_risk_values, risk_terrain, spatial_influences)
from geo.synth.rtm import make_rtm_town


# --------------------------------------------------------------------------- RTMDx arithmetic
def test_rtmdx_leeds_arithmetic():
    # Source: the RTMDx worked example for Leeds (issue 4 / RTMDx model report): coefficients
    # 3.0617 and 2.1578 give RRVs 21.36 and 8.65; a cell with both scores 184.8; with neither 1.
    coefs = [3.0617, 2.1578]
    rrv = relative_risk_values(coefs)
    assert rrv == pytest.approx([21.36, 8.65], abs=0.005)
    X = np.array([[1, 1], [0, 0], [1, 0], [0, 1]])
    rrs = relative_risk_scores(X, coefs)
    assert rrs[0] == pytest.approx(184.8, abs=0.1)  # 21.36 x 8.65 = 184.8
    assert rrs[1] == pytest.approx(1.0, abs=1e-12)
    assert rrs[2:] == pytest.approx([21.36, 8.65], abs=0.005)


def test_spatial_influences_are_half_blocks_up_to_three_blocks():
    # RTMDx: spatial influence tested in steps of half a block up to 3 blocks (6 distances)
    assert spatial_influences(100) == [50, 100, 150, 200, 250, 300]
    assert spatial_influences(80) == [40, 80, 120, 160, 200, 240]


# --------------------------------------------------------------------------- operationalisation twins
@pytest.fixture(scope="module")
def small_grid():
    import shapely

    area = shapely.box(500_000, 200_000, 502_000, 201_500)
    return RTMGrid.from_area(area, 50.0, pad_m=300)


def test_proximity_kdtree_matches_slow_loop_and_edt(small_grid):
    rng = np.random.default_rng(3)
    xy = np.c_[rng.uniform(500_000, 502_000, 25), rng.uniform(200_000, 201_500, 25)]
    fast = distance_to_nearest(small_grid, xy)
    # slow, obviously-correct twin: one Python loop per cell
    slow = np.array([min(np.hypot(cx - xy[:, 0], cy - xy[:, 1])) for cx, cy in small_grid.centres()])
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-9)
    # the grid-only EDT moves features to their cell centre: within half a cell diagonal
    edt = distance_to_nearest_edt(small_grid, xy)
    assert np.max(np.abs(edt - slow)) <= 50 * np.sqrt(2) / 2 + 1e-9


def test_density_fft_matches_exact_quartic_sum(small_grid):
    # features placed at cell centres, so binning is exact; compare the FFT convolution with the
    # direct sum of the quartic kernel K(r) = 3/(pi h^2) (1 - r^2/h^2)^2 over all features
    c = small_grid.centres()
    rng = np.random.default_rng(5)
    xy = c[rng.choice(len(c), 40, replace=False)]
    h = 150.0
    fast = feature_density(small_grid, xy, h)
    d2 = (c[:, None, 0] - xy[None, :, 0]) ** 2 + (c[:, None, 1] - xy[None, :, 1]) ** 2
    u = d2 / h ** 2
    exact = np.where(u < 1, (1 - u) ** 2, 0).sum(axis=1) * 3 / (np.pi * h ** 2)
    np.testing.assert_allclose(fast, exact, rtol=1e-9, atol=1e-12)


def test_candidates_flag_proximity_and_density(small_grid):
    xy = np.array([[501_025.0, 200_725.0]])  # one feature at a cell centre
    f = factor_from_frame("pubs", pd.DataFrame({"easting": xy[:, 0], "northing": xy[:, 1]}))
    cs = build_candidates(small_grid, [f], [50, 100], forms=("proximity",))
    # cells whose centre is within 50 m of a cell centre: itself and 4 edge neighbours (distance 50)
    assert cs.meta["var"].tolist() == ["pubs_proximity_50", "pubs_proximity_100"]
    assert cs.X[:, 0].sum() == 5
    # within 100 m: 13 centres (|dx|+... on a 50 m lattice: 1 + 4 + 4 diagonals (70.7) + 4 at 100 m)
    assert cs.X[:, 1].sum() == 13


# --------------------------------------------------------------------------- factor layers
def test_factor_columns_and_dropped_rows_are_counted():
    df = pd.DataFrame({"name": ["a", "b", "c", "d"], "Lat": ["51.73", "\\N", "51.74", "x"],
                       "Long": ["0.47", "0.48", "0.49", "0.5"]})
    f = factor_from_frame("stations", df.replace({"\\N": None}), "stations.csv")
    assert len(f) == 2 and f.read == 4
    assert f.dropped == {"missing coordinates": 1, "unparsable coordinates": 1}
    # BNG columns
    g = factor_from_frame("s", pd.DataFrame({"Easting": [570000.0], "Northing": [207000.0]}))
    assert g.xy.tolist() == [[570000.0, 207000.0]]
    # WGS84 -> BNG: Chelmsford station is at about E 570,500 N 207,200 (OS grid reference TL 705 072)
    h = factor_from_frame("s", pd.DataFrame({"lng": [0.4685], "lat": [51.7363]}))
    assert h.xy[0] == pytest.approx([570_500, 207_200], abs=300)


def test_empty_factor_layer_raises_naming_factor_and_file():
    with pytest.raises(FactorLayerError, match=r"factor 'pubs' \(pubs\.csv\): the layer is empty"):
        factor_from_frame("pubs", pd.DataFrame({"longitude": [], "latitude": []}), "pubs.csv")


def test_factor_outside_area_raises_naming_factor_and_file():
    import shapely

    area = shapely.box(560_000, 214_000, 569_000, 221_000)
    far = pd.DataFrame({"easting": [400_000.0, 401_000.0], "northing": [100_000.0, 100_500.0]})
    with pytest.raises(FactorLayerError, match=r"factor 'schools' \(schools\.csv\): none of its 2 points lies inside"):
        factor_from_frame("schools", far, "schools.csv", area=area, buffer_m=300)


def test_factor_without_coordinate_columns_names_columns():
    with pytest.raises(FactorLayerError, match=r"no coordinate columns.*'name'"):
        factor_from_frame("pubs", pd.DataFrame({"name": ["x"]}), "p.csv")


# --------------------------------------------------------------------------- PAI with ties
def test_hits_at_area_splits_ties_fairly():
    # 10 cells, top 20% = 2 cells. Scores: one cell 9 (3 incidents), four tied at 5 (2,0,0,2), rest 1.
    score = np.array([9, 5, 5, 5, 5, 1, 1, 1, 1, 1], float)
    y = np.array([3, 2, 0, 0, 2, 1, 1, 0, 0, 1], float)
    hits, cells = hits_at_area(score, y, 0.2)
    # 1 cell above the cut + 1 of the 4 tied cells: 3 + 4 * (1/4) = 4 hits
    assert cells == pytest.approx(2.0)
    assert hits == pytest.approx(4.0)
    r = hit_rate_pai(score, y, 0.2)
    assert r["hit_rate"] == pytest.approx(0.4) and r["pai"] == pytest.approx(2.0)  # 4/10 incidents; 0.4/0.2


# --------------------------------------------------------------------------- planted truth
@pytest.fixture(scope="module")
def planted():
    world = make_rtm_town(42)  # SYNTHETIC planted truth: pubs within 100 m (RRV 4), schools within 200 m (RRV 2.5)
    facs = [factor_from_frame(k, g, "synthetic " + k) for k, g in world.factors.items()]
    res = risk_terrain(world.incidents, facs, world.boundary, cell=world.cell, block=world.block,
                       period=world.train_period, seed=0)
    return world, facs, res


def test_planted_factors_selected_and_decoys_not(planted):
    world, _, res = planted
    tab = res.tables["factors"]
    assert set(tab["name"]) == set(world.truth)  # exactly pubs and schools
    assert not set(tab["name"]) & set(world.decoys)  # stations, bus_stops, takeaways not selected
    for _, row in tab.iterrows():
        form, d, rrv = world.truth[row["name"]]
        assert row["operationalization"] == form
        assert row["distance"] == d
        # the 95% interval covers the planted RRV (fixed seed)
        assert row["ci_low"] <= rrv <= row["ci_high"], (row["name"], row["ci_low"], rrv, row["ci_high"])
    assert res.summary["distribution"] == "poisson"  # planted counts are Poisson: NB's extra parameter costs BIC
    # the default lasso folds are spatial blocks of 2 x the largest spatial influence (2 x 300 m)
    assert res.params["cv_scheme"] == "spatial" and res.params["cv_block_m"] == 600.0


def test_risk_surface_and_priority_places_follow_from_the_model(planted):
    world, _, res = planted
    r = res.layer
    vals = r.array[r.array > 0]
    assert vals.min() == pytest.approx(1.0)
    rrv = res.tables["factors"]["rrv"].to_numpy()
    assert vals.max() == pytest.approx(np.prod(rrv), rel=1e-5)  # a cell near a pub and a school
    allowed = np.array([1.0, *rrv, np.prod(rrv)])  # only these products exist with two binary factors
    assert np.isclose(np.unique(vals)[:, None], allowed[None, :], rtol=1e-5).any(axis=1).all()
    assert r.crs == "EPSG:27700" and r.cell_size == 50
    cells = res.tables["cells"]
    places = res.extra_layers["priority_places"]
    cut = res.summary["priority_threshold_rrs"]
    assert cut == pytest.approx(cells["rrs"].mean() + 2 * cells["rrs"].std(ddof=0))
    hot = cells[cells["rrs"] >= cut]
    assert places["cells"].sum() == len(hot)
    assert places["incidents"].sum() == hot["incidents"].sum()
    assert places.area.sum() == pytest.approx(len(hot) * 2500)
    assert (places["incidents"].diff().dropna() <= 0).all()  # ranked by incidents


def test_comparison_on_planted_truth_is_honest(planted):
    world, facs, _ = planted
    cmp = compare_risk_models(world.incidents, facs, world.boundary, train_period=world.train_period,
                              test_period=world.test_period, cell=world.cell, block=world.block, seed=0)
    comp = cmp.tables["comparison"]
    assert len(comp) == 6
    np.testing.assert_allclose(comp["pai"], comp["hit_rate"] / comp["area_share"])
    # the planted surface is factor-driven, so the RTM (which can represent it exactly) should come close to
    # the oracle - the true mu - and beat a KDE of past incidents at 5% of area
    y_te = world.extra["grid"].counts(*world.incidents.filter(period=world.test_period).frame[["x", "y"]]
                                      .to_numpy().T)[0]
    oracle = hit_rate_pai(world.extra["mu"], y_te, 0.05)["pai"]
    rtm5 = comp[(comp["model"] == "classic RTM") & (comp["area_share"] == 0.05)]["pai"].iloc[0]
    kde5 = comp[(comp["model"] == "KDE of past incidents") & (comp["area_share"] == 0.05)]["pai"].iloc[0]
    assert rtm5 >= 0.9 * oracle
    assert rtm5 > kde5
    assert cmp.summary["winner"] in set(comp["model"])
    imp = cmp.tables["importances"]
    # the learned model's two most important factors are the planted ones
    top = list(dict.fromkeys(imp.sort_values("importance", ascending=False)["factor"]))[:2]
    assert set(top) == set(world.truth)


# --------------------------------------------------------------------------- CLI
def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-c", "from services.cli import main; main()", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=600)


def _factor_args(town, tmp_path):
    """``--factor NAME=FILE`` arguments for the town's five point layers, written as lon/lat CSVs."""
    files = []
    for name in ("pubs", "stations", "bus_stops", "schools", "takeaways"):
        p = tmp_path / f"{name}.csv"
        g = town.features[name].to_crs("EPSG:4326")
        pd.DataFrame({"longitude": g.geometry.x, "latitude": g.geometry.y}).to_csv(p, index=False)
        files += ["--factor", f"{name}={p}"]
    return files


def test_cli_rtm_contract(town_store, town, tmp_path):
    import rasterio

    store_path = town_store.url if hasattr(town_store, "url") else None
    town_store.close()
    files = _factor_args(town, tmp_path)
    out = tmp_path / "risk.tif"
    r = _cli("rtm", "--store", store_path or tmp_path / "town.duckdb", *files, "--cell", 50, "--block", 100,
             "--category", "Violence and sexual offences", "--out", out, "--places", tmp_path / "places.gpkg",
             "--report", tmp_path / "rtm.html", "--cells", tmp_path / "cells.csv", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    obj = json.loads(r.stdout.strip().splitlines()[-1])
    assert obj["factors"], "no factor selected"
    for f in obj["factors"]:
        assert {"name", "operationalization", "distance", "coef", "rrv", "ci_low", "ci_high", "p"} <= set(f)
        assert f["rrv"] == pytest.approx(np.exp(f["coef"]))
    # violence in the synthetic town is generated around pubs (geo.synth: NTE process, sd 45 m)
    assert "pubs" in {f["name"] for f in obj["factors"]}
    with rasterio.open(out) as ds:
        assert ds.crs.to_epsg() == 27700
        a = ds.read(1)
        assert a[a > 0].min() == pytest.approx(1.0)
        assert ds.transform.a == 50 and ds.transform.e == -50
    cells = pd.read_csv(tmp_path / "cells.csv")
    assert len(cells) == obj["cells"] == int((a > 0).sum())
    assert cells["incidents"].sum() == obj["incidents"]
    assert cells["rrs"].max() == pytest.approx(obj["max_rrs"])
    assert "cell size" not in r.stderr.split("parameters")[0]  # given, so not announced as automatic
    html = (tmp_path / "rtm.html").read_text()
    assert "Risk factors" in html and "data:image/png;base64," in html
    # the report names the lasso's cross-validation scheme the run used (default: 600 m spatial blocks)
    assert obj["lasso"]["cv_scheme"] == "spatial"
    assert f"over 5 folds of {obj['lasso']['cv_block_m']:g} m square blocks" in " ".join(html.split())


def test_cli_empty_factor_is_a_clear_error(town_store, tmp_path):
    path = town_store.url if hasattr(town_store, "url") else tmp_path / "town.duckdb"
    town_store.close()
    empty = tmp_path / "hostels.csv"
    empty.write_text("longitude,latitude\n")
    r = _cli("rtm", "--store", path, "--factor", f"hostels={empty}", "--out", tmp_path / "x.tif")
    assert r.returncode == 2
    msg = " ".join(r.stderr.split())
    assert "factor 'hostels'" in msg and "hostels.csv" in msg and "empty" in msg


def test_null_world_selects_nothing_and_reports_it(tmp_path):
    # planted truth "no effect" (SYNTHETIC, seed 1): incidents uniform over the area, one random factor layer;
    # BIC must not buy a factor, every cell scores 1 and there are no priority places
    import shapely

    from geo.core.incidents.table import IncidentTable
    from maps.rtm_report import write_rtm_report

    rng = np.random.default_rng(1)
    area = shapely.box(560_000, 214_000, 563_000, 216_000)
    n = 800
    df = pd.DataFrame({"x": rng.uniform(560_000, 563_000, n), "y": rng.uniform(214_000, 216_000, n),
                       "occurred_at": pd.Timestamp("2025-01-05"), "incident_id": [f"i{i}" for i in range(n)],
                       "category": "Violence and sexual offences", "lon": 0.5, "lat": 51.7})
    f = factor_from_frame("random", pd.DataFrame({"easting": rng.uniform(560_000, 563_000, 20),
                                                  "northing": rng.uniform(214_000, 216_000, 20)}))
    res = risk_terrain(IncidentTable.from_frame(df), [f], area)
    assert len(res.tables["factors"]) == 0
    assert res.summary["max_rrs"] == 1.0 and res.summary["priority_places"] == 0
    names = [c.name for c in res.choices if c.automatic]
    assert "cell size" in names and "block length" in names  # defaults announced when not given
    html = write_rtm_report(res, tmp_path / "r.html").read_text()
    assert "No risk factor improved the model" in html


def test_planted_density_form_is_recovered():
    # SYNTHETIC planted truth (seed 7): bus-stop DENSITY above mean + 2 SD at 150 m (RRV 3) and proximity to a
    # station within 300 m (RRV 5); pubs, schools and takeaways are decoys. Form, distance and RRV must come back.
    planted = {"bus_stops": ("density", 150.0, 3.0), "stations": ("proximity", 300.0, 5.0)}
    world = make_rtm_town(7, planted=planted)
    facs = [factor_from_frame(k, g, "synthetic " + k) for k, g in world.factors.items()]
    res = risk_terrain(world.incidents, facs, world.boundary, cell=50, block=100, period=world.train_period)
    tab = res.tables["factors"].set_index("name")
    assert set(tab.index) == set(planted)
    for name, (form, d, rrv) in planted.items():
        assert tab.loc[name, "operationalization"] == form and tab.loc[name, "distance"] == d
        assert tab.loc[name, "ci_low"] <= rrv <= tab.loc[name, "ci_high"]


def test_factor_files_csv_geojson_gpkg_agree(town, tmp_path):
    # the same SYNTHETIC pub layer written three ways reads back to the same BNG points
    from services.cmd_rtm import read_factor_file

    g = town.features["pubs"]
    g.to_file(tmp_path / "pubs.gpkg", driver="GPKG")
    g.to_crs("EPSG:4326").to_file(tmp_path / "pubs.geojson", driver="GeoJSON")
    ll = g.to_crs("EPSG:4326")
    pd.DataFrame({"name": g["name"], "Longitude": ll.geometry.x, "Latitude": ll.geometry.y,
                  "kind": ["Pub"] * (len(g) - 1) + ["Bar"]}).to_csv(tmp_path / "pubs.csv", index=False)
    truth = np.c_[g.geometry.x, g.geometry.y]
    for f in ("pubs.gpkg", "pubs.geojson", "pubs.csv"):
        lay = read_factor_file("pubs", tmp_path / f, area=town.boundary, buffer_m=300)
        np.testing.assert_allclose(lay.xy, truth, atol=0.05)  # 5 cm: WGS84 round trip
    lay = read_factor_file("pubs", tmp_path / "pubs.csv", where={"kind": "Pub"})
    assert len(lay) == len(g) - 1
    with pytest.raises(FactorLayerError, match=r"factor 'pubs' .*pubs\.csv.*no row of \d+ has kind == 'Hotel'"):
        read_factor_file("pubs", tmp_path / "pubs.csv", where={"kind": "Hotel"})
    with pytest.raises(FactorLayerError, match=r"factor 'pubs': file .*nope\.csv not found"):
        read_factor_file("pubs", tmp_path / "nope.csv")
