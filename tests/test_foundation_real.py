"""Foundation on the real Essex police.uk data (../shared/data; skipped when absent, failed under CI).

References: ../shared/data/crime/README.md gives the row counts (199,298 rows in 12 files; 587 rows without
coordinates, month by month; rows per LAD from the LSOA-name prefix; category counts; the Colchester API file's
category counts). Those published counts are the oracle here.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shapely

from geo.units.counts import count_units
from geo.core.harm import WeightTable
from geo.units.polygons import PolygonUnits
from geo.units.lattice import SquareGrid

# From ../shared/data/crime/README.md, table "month | rows | rows w/o coordinates".
ROWS_PER_MONTH = {"2018-01": 14786, "2018-02": 13752, "2018-03": 16014, "2018-04": 16709, "2018-05": 17618,
                  "2018-06": 17473, "2018-07": 18713, "2018-10": 17791, "2018-11": 17050, "2018-12": 16587,
                  "2019-01": 16428, "2019-02": 16377}
NO_COORDS = 2 + 0 + 17 + 48 + 16 + 62 + 73 + 79 + 91 + 84 + 52 + 63  # = 587
# Rows by LAD from the LSOA-name prefix (same README).
ROWS_BY_LAD = {"Southend-on-Sea": 25491, "Basildon": 22894, "Colchester": 22257, "Thurrock": 21609,
               "Chelmsford": 18532, "Tendring": 16892, "Epping Forest": 13468, "Braintree": 12862,
               "Harlow": 12437, "Uttlesford": 7748, "Castle Point": 7598, "Brentwood": 6803, "Rochford": 5625,
               "Maldon": 3937}


def test_essex_reconciles_exactly(essex_ingest):
    r = essex_ingest
    assert r.read == sum(ROWS_PER_MONTH.values()) == 199_298
    assert len(r.accepted) + r.rejected == r.read
    reasons = r.reasons()
    assert reasons["missing coordinates"] == NO_COORDS
    # README: about 0.3% of points fall outside the Essex LSOA polygons (sample estimate); with the 100 m
    # border tolerance fewer are rejected. Every other reason is absent from these clean files.
    assert 0.001 * r.read < reasons["outside study area"] < 0.004 * r.read
    assert set(reasons) == {"missing coordinates", "outside study area"}
    # accepted rows per month + rejected rows per month = the file's rows
    acc = r.accepted.frame["month"].value_counts()
    rej = r.rejects["Month"].value_counts()
    for m, n in ROWS_PER_MONTH.items():
        assert acc.get(m, 0) + rej.get(m, 0) == n, m


def test_rejects_keep_rows_as_they_came(essex_ingest):
    rej = essex_ingest.rejects
    miss = rej[rej["reason"] == "missing coordinates"]
    assert (miss["Longitude"] == "").all() and (miss["Latitude"] == "").all()
    assert (miss["field"] == "Longitude/Latitude").all()
    out = rej[rej["reason"] == "outside study area"]
    # the far-away extremes named in the README (lat 55.53, lon -4.18) are among the rejected
    lat = pd.to_numeric(out["Latitude"])
    lon = pd.to_numeric(out["Longitude"])
    assert lat.max() > 55 and lon.min() < -4
    # source_row is the CSV line number: re-read that line and compare the Crime ID
    row = out.iloc[0]
    src = pd.read_csv(row["source_file"], dtype=str, keep_default_na=False)
    assert src.iloc[int(row["source_row"]) - 2]["Crime ID"] == row["Crime ID"]


def test_asb_rows_kept_with_stable_ids(essex_ingest, essex_street):
    from geo.core.incidents.police_uk import read_police_uk

    acc = essex_ingest.accepted.frame
    asb = acc[acc["category"] == "Anti-social behaviour"]
    # README: 45,210 ASB rows, all with an empty Crime ID; only those without coordinates / outside are rejected
    rej_asb = (essex_ingest.rejects["Crime type"] == "Anti-social behaviour").sum()
    assert len(asb) + rej_asb == 45_210
    assert asb["incident_id"].str.startswith("puk-").all()
    assert asb["incident_id"].is_unique
    again = read_police_uk(sorted(essex_street.glob("2018-01*"))).accepted.frame
    first = acc[acc["month"] == "2018-01"]
    ids_first = set(first.loc[first["category"] == "Anti-social behaviour", "incident_id"])
    ids_again = set(again.loc[again["category"] == "Anti-social behaviour", "incident_id"])
    assert ids_first <= ids_again  # same rows, same ids (again has no boundary, so it may hold more)


def test_second_load_adds_nothing(essex_store, essex_ingest):
    before = essex_store.count()
    s = essex_store.add_ingest(essex_ingest)
    assert s.added == 0 and s.duplicates == s.accepted == len(essex_ingest.accepted)
    assert essex_store.count() == before == len(essex_ingest.accepted)


def test_counts_per_district_match_lsoa_prefixes(essex_ingest, essex_boundary):
    """Point-in-LAD counts vs the README's LSOA-name-prefix counts: police.uk snaps points to the nearest map
    point, so points near a border can land in the neighbouring district; allow 4% per district."""
    units = PolygonUnits(essex_boundary, "name", name="LAD")
    res = count_units(essex_ingest.accepted, units, WeightTable.builtin(), area=essex_boundary)
    got = dict(zip(res.layer["cell_id"], res.layer["count"]))
    for lad, n in ROWS_BY_LAD.items():
        assert abs(got[lad] - n) / n < 0.04, (lad, got[lad], n)


def test_cells_sum_to_accepted_in_area(essex_ingest, essex_boundary):
    res = count_units(essex_ingest.accepted, SquareGrid(150), WeightTable.builtin(), area=essex_boundary)
    geom = essex_boundary.union_all()
    f = essex_ingest.accepted.frame
    inside = shapely.contains_xy(geom, f["x"].to_numpy(), f["y"].to_numpy())
    assert res.layer["count"].sum() == inside.sum() == res.summary["incidents"]
    assert res.summary["outside_area"] == len(f) - inside.sum()
    # ids are BNG-aligned: every cell's lower-left corner is a multiple of 150
    b = res.layer.geometry.bounds
    assert np.allclose(b["minx"] % 150, 0) and np.allclose(b["miny"] % 150, 0)


def test_colchester_api_file(shared):
    from geo.core.incidents.police_uk import read_police_api

    r = read_police_api(shared / "crime" / "colchester_2023_api" / "crime23.csv.gz")
    assert r.read == 6878 and len(r.accepted) + r.rejected == r.read
    counts = r.accepted.frame["category"].value_counts()
    rejected_cats = r.rejects["category"].value_counts() if r.rejected else pd.Series(dtype=int)
    # README category counts for the API slugs
    expect = {"Violence and sexual offences": 2633, "Anti-social behaviour": 677, "Criminal damage and arson": 581,
              "Shoplifting": 554, "Public order": 532, "Robbery": 94, "Possession of weapons": 74}
    slug = {"Violence and sexual offences": "violent-crime", "Anti-social behaviour": "anti-social-behaviour",
            "Criminal damage and arson": "criminal-damage-arson", "Shoplifting": "shoplifting",
            "Public order": "public-order", "Robbery": "robbery", "Possession of weapons": "possession-of-weapons"}
    for cat, n in expect.items():
        assert counts.get(cat, 0) + rejected_cats.get(slug[cat], 0) == n
    f = r.accepted.frame
    assert f["month"].min() == "2023-01" and f["month"].max() == "2023-12"
    assert f["incident_id"].is_unique
    # README: lat 51.876-51.904, lon 0.879-0.925 -> inside Colchester, BNG around E 599k N 225k
    assert f["x"].between(595_000, 605_000).all() and f["y"].between(222_000, 228_000).all()


def test_harm_equals_weights_times_counts_per_category(essex_ingest, essex_boundary):
    wt = WeightTable.builtin("cchi-essex-2026")
    for cat, weight in [("Violence and sexual offences", 191.9), ("Burglary", 245.91), ("Robbery", 365.0),
                        ("Drugs", 0.0), ("Anti-social behaviour", 0.0)]:
        res = count_units(essex_ingest.accepted, SquareGrid(500), wt, categories=[cat])
        assert res.layer["harm"].sum() == pytest.approx(weight * res.layer["count"].sum(), rel=1e-12)
