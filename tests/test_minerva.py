"""Minerva zones on planted SYNTHETIC data.

No public "felt unsafe" data exists (StreetSafe / Commonplace reports are not open data), so the
fear reports here are seeded synthetic points (geo.synth_minerva): a coincident area (offences and
fear around the synthetic night-time economy core), an offences-only area and a fear-only area
(the small town's station), on uniform background noise. References: the planted truth, esda's
Empirical_Bayes and scipy's Poisson distribution (tolerances beside each assertion).
"""
from __future__ import annotations

import json
import subprocess
import sys

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from geo import BNG
from geo.core.errors import BoundaryError, HarmspotError
from geo.core.incidents.table import IncidentTable
from geo.minerva.zones import (TYPES, empirical_bayes, h3_units, minerva_zones, points_from_frame, poisson_upper, square_units)
from geo.synth.minerva import make_fear_points, make_minerva_case


@pytest.fixture(scope="module")
def case(town):
    return make_minerva_case(seed=3, town=town)


@pytest.fixture(scope="module")
def result(case):
    units = square_units(case.town.boundary, 250)
    fear = points_from_frame(case.fear, "fear")
    return minerva_zones(units, case.offences, fear, districts=case.town.towns)


def unit_at(layer, xy):
    """The unit holding most of the planted cluster's core: the unit intersecting a 60 m disc with most area."""
    disc = shapely.Point(xy).buffer(60)
    a = shapely.area(shapely.intersection(layer.geometry.values, disc))
    return layer.iloc[int(np.argmax(a))]


def test_planted_areas_land_in_the_right_quadrant(case, result):
    u = result.extra_layers["units"]
    assert unit_at(u, case.centres["coincident"])["type"] == "high offences & high fear"
    assert unit_at(u, case.centres["offences only"])["type"] == "high offences & low fear"
    assert unit_at(u, case.centres["fear only"])["type"] == "low offences & high fear"
    # nothing far from the planted areas is high on anything (background is uniform noise)
    cen = u.geometry.centroid
    d = np.min([np.hypot(cen.x - x, cen.y - y) for x, y in case.centres.values()], axis=0)
    assert (u.loc[d > 700, "type"] == "low & low").all()
    assert set(u["type"]) <= set(TYPES)


def test_planted_zones_and_categories(case, result):
    z = result.layer
    u = result.extra_layers["units"]
    mz = z[z["category"] == "Minerva Zone"]
    assert len(mz) == 1 and mz.iloc[0]["priority"] == 1 and mz.iloc[0]["zone_id"] == "MZ-1"
    assert mz.iloc[0].geometry.intersects(shapely.Point(case.centres["coincident"]))
    assert mz.iloc[0]["units"] >= 2 and mz.iloc[0]["type"] == "high offences & high fear"
    for key, typ in (("offences only", "high offences & low fear"), ("fear only", "low offences & high fear")):
        zid = unit_at(u, case.centres[key])["zone_id"]
        row = z.set_index("zone_id").loc[zid]
        assert row["category"] == "of local interest" and row["type"] == typ
    # profile: drivers, owner district, day/night split, reasons
    m = mz.iloc[0]
    assert m["drivers"].startswith(("offences", "fear")) and "fear" in m["drivers"] and "offences" in m["drivers"]
    assert m["district"] == "Harmstead"
    fz = z.set_index("zone_id").loc[unit_at(u, case.centres["fear only"])["zone_id"]]
    assert fz["district"] == "Little Wexley" and fz["drivers"].startswith("fear")
    # planted offence times ~ N(22:00, 3 h): P(18:00 <= t or t < 06:00) = P(-1.33 <= Z < 2.67) = 0.905
    assert m["night_share_offences"] == pytest.approx(0.905, abs=0.08)
    assert m["top_reasons"] != ""
    # zones are listed Minerva first, then by type and score
    assert list(z["priority"]) == list(range(1, len(z) + 1))
    assert (z["category"].iloc[1:] == "of local interest").all()
    assert result.summary["minerva_zones"] == 1


def test_one_incident_does_not_make_a_zone(case, result):
    # Planted: an empty unit far from the clusters gets one offence and one fear report: its raw rates are
    # far above the mean, but smoothing and the (FDR-controlled) Poisson test keep it "low & low".
    units = square_units(case.town.boundary, 250)
    u0 = result.extra_layers["units"]
    cen = u0.geometry.centroid
    d = np.min([np.hypot(cen.x - x, cen.y - y) for x, y in case.centres.values()], axis=0)
    empty = u0[(u0["n_offences"] == 0) & (u0["n_fear"] == 0) & (d > 1500) & (u0["area_km2"] > 0.06)]
    lonely = empty.iloc[0]
    c = lonely.geometry.centroid
    off = IncidentTable.from_frame(pd.DataFrame({
        "incident_id": ["L1"], "source_kind": "table", "month": "2025-06",
        "occurred_at": pd.Timestamp("2025-06-01 23:00"), "category": "Violence and sexual offences",
        "vawg": True, "domestic": False, "x": [c.x], "y": [c.y]}))
    from pyproj import Transformer

    lon, lat = Transformer.from_crs(BNG, "EPSG:4326", always_xy=True).transform(c.x, c.y)
    fear = pd.concat([case.fear, pd.DataFrame({"longitude": [lon], "latitude": [lat], "time": ["2025-06-01 23:00"],
                                               "reason": ["isolated"]})], ignore_index=True)
    r = minerva_zones(units, case.offences.concat(off), points_from_frame(fear, "fear"))
    row = r.extra_layers["units"].set_index("unit_id").loc[lonely["unit_id"]]
    assert row["n_offences"] == 1 and row["n_fear"] == 1
    mean_rate = (len(case.offences) + 1) / (units.area.sum() / 1e6)
    assert row["rate_offences"] > 1.5 * mean_rate  # a raw-rate rule would call it high
    assert row["type"] == "low & low" and row["zone_id"] == ""


def test_empirical_bayes_matches_esda():
    # Reference: esda.smoothing.Empirical_Bayes (Marshall 1991), tolerance 1e-12 relative.
    from esda.smoothing import Empirical_Bayes

    rng = np.random.default_rng(4)
    pop = rng.integers(200, 5000, 300).astype(float)
    e = rng.poisson(pop * rng.gamma(2, 0.005, 300))
    eb, b, w = empirical_bayes(e, pop)
    ref = Empirical_Bayes(e, pop).r.ravel()
    assert np.allclose(eb, ref, rtol=1e-12)
    assert b == pytest.approx(e.sum() / pop.sum())
    # negative variance estimate -> full shrinkage to the global rate (w = 0)
    eb2, b2, w2 = empirical_bayes(np.full(10, 3), np.full(10, 100.0))
    assert np.allclose(eb2, b2) and (w2 == 0).all()


def test_poisson_upper_matches_scipy():
    # Reference: scipy.stats.poisson.sf(k - 1, mu) = P(X >= k); tolerance 1e-12.
    from scipy.stats import poisson

    k = np.array([0, 1, 2, 5, 12, 40])
    mu = np.array([0.5, 0.5, 1.3, 2.0, 4.0, 20.0])
    assert np.allclose(poisson_upper(k, mu), np.where(k > 0, poisson.sf(k - 1, mu), 1.0), atol=1e-12)


def test_population_rates_and_weights(case):
    units = square_units(case.town.boundary, 250)
    units["residents"] = 500.0
    fear = points_from_frame(case.fear, "fear")
    r = minerva_zones(units, case.offences, fear, population_col="residents",
                      weights={"offences": 1.0, "fear": 0.0})
    u = r.extra_layers["units"]
    assert np.allclose(u["rate_offences"], u["n_offences"] / 0.5)  # per 1,000 residents
    assert np.allclose(u["score"], u["rr_offences"])  # weights normalised: all on offences
    assert r.summary["rates"] == "per 1,000 residents"
    with pytest.raises(HarmspotError, match=r"unknown layer\(s\) \['lighting'\]"):
        minerva_zones(units, case.offences, fear, weights={"offences": 1, "lighting": 1})
    units.loc[3, "residents"] = 0
    with pytest.raises(HarmspotError, match="non-positive 'residents'"):
        minerva_zones(units, case.offences, fear, population_col="residents")


def test_context_layers_and_h3_units(case):
    pubs = case.town.features["pubs"]
    r = minerva_zones(h3_units(case.town.boundary, 9), case.offences, points_from_frame(case.fear, "fear"),
                      layers={"pubs": pubs})
    u = r.extra_layers["units"]
    assert int(u["n_pubs"].sum()) == len(pubs)
    mz = r.layer[r.layer["category"] == "Minerva Zone"]
    assert mz.intersects(shapely.Point(case.centres["coincident"])).any()
    assert r.params["weights"]["pubs"] == pytest.approx(0.10)


def test_police_uk_proxy_is_documented(case):
    f = case.offences.frame.assign(source_kind="police-uk", vawg=pd.NA)
    r = minerva_zones(square_units(case.town.boundary, 250), IncidentTable.from_frame(f),
                      points_from_frame(case.fear, "fear"))
    assert r.summary["vawg_mode"] == "proxy"
    assert any(c.name == "VAWG proxy" and c.value == "Violence and sexual offences" for c in r.choices)


def test_fear_points_validation_names_row_and_field():
    df = pd.DataFrame({"Longitude": ["0.5", "x", "0.6"], "Latitude": ["51.7", "51.7", "51.8"],
                       "time": ["2025-01-01 22:00", "2025-01-02 01:00", "2025-01-03"], "reason": ["a", "b", "c"]})
    with pytest.raises(HarmspotError, match=r"fear.csv: 1 row\(s\) with a missing or unparsable 'Longitude'; first at row 2"):
        points_from_frame(df, "fear.csv")
    df.loc[1, "Longitude"] = "0.55"
    df.loc[2, "time"] = "yesterday-ish"
    with pytest.raises(HarmspotError, match=r"unparsable 'time'; first at row 3"):
        points_from_frame(df, "fear.csv")
    df.loc[2, "time"] = "2025-01-03 20:15"
    g = points_from_frame(df, "fear.csv")
    assert g.crs == BNG and len(g) == 3 and list(g["reason"]) == ["a", "b", "c"]
    e = pd.DataFrame({"easting": [560000], "northing": [214000], "when": ["2025-02-01 10:00"]})
    assert points_from_frame(e, "e").geometry.iloc[0].x == 560000
    with pytest.raises(HarmspotError, match="needs longitude/latitude or easting/northing"):
        points_from_frame(pd.DataFrame({"a": [1]}), "z.csv")
    with pytest.raises(BoundaryError, match="no column 'oa'"):
        minerva_zones(gpd.GeoDataFrame({"id": ["a"]}, geometry=[shapely.box(0, 0, 1, 1)], crs=BNG),
                      IncidentTable.empty(), g, id_col="oa")


def test_cli_minerva(tmp_path, town, town_store):
    path = town_store.url
    town_store.close()
    fear = tmp_path / "fear.csv"
    make_fear_points(town, n=600, seed=7).to_csv(fear, index=False)
    pubs = tmp_path / "pubs.csv"
    p = town.features["pubs"]
    pd.DataFrame({"easting": p.geometry.x, "northing": p.geometry.y, "name": p["name"]}).to_csv(pubs, index=False)
    out = tmp_path / "zones.geojson"
    r = subprocess.run([sys.executable, "-c", "from services.cli import main; main()", "minerva", "--store", path,
                        "--units", "square", "--cell", "250", "--fear", fear, "--layer", f"pubs={pubs}",
                        "--out", out, "--units-out", tmp_path / "units.csv", "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    js = json.loads(r.stdout.strip().splitlines()[-1])
    z = gpd.read_file(out)
    assert len(z) == js["minerva_zones"] + js["zones_of_local_interest"] and js["minerva_zones"] >= 1
    assert set(z["category"]) <= {"Minerva Zone", "of local interest"}
    assert js["vawg_mode"] == "flag" and sum(js["typology"].values()) == js["units"]
    assert "rates set to per km² automatically" in r.stderr.replace("\n", " ")
    u = pd.read_csv(tmp_path / "units.csv")
    assert {"unit_id", "n_offences", "n_fear", "n_pubs", "type", "zone_id"} <= set(u.columns)
    bad = subprocess.run([sys.executable, "-c", "from services.cli import main; main()", "minerva", "--store", path,
                          "--units", "square", "--fear", fear, "--layer", "pubs", "--out", out],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "NAME=FILE" in bad.stderr


def test_bh_adjust_matches_statsmodels():
    # Reference: statsmodels.stats.multitest.multipletests(method="fdr_bh"); tolerance 1e-12.
    from statsmodels.stats.multitest import multipletests

    from geo.minerva.zones import bh_adjust

    p = np.random.default_rng(2).uniform(0, 0.2, 50) ** 2
    assert np.allclose(bh_adjust(p), multipletests(p, method="fdr_bh")[1], atol=1e-12)
