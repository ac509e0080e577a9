"""RTM on real Essex data: violence in Chelmsford district with the real factor layers.

Data: data.police.uk street crime for Essex (OGL v3), FHRS/Open Pubs licensed venues
(``business_type == 'Pub'``), National Rail stations (ODbL) and NaPTAN bus stops for
Chelmsford (OGL v3), all from ../shared/data/poi (see its README). Skips when the
shared data are absent (fails under CI=true).
"""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def chelmsford_rtm(shared, essex_ingest, essex_boundary):
    from geo.rtm.model import risk_terrain
    from services.cmd_rtm import read_factor_file

    area = essex_boundary[essex_boundary["name"] == "Chelmsford"]
    assert len(area) == 1
    inc = essex_ingest.accepted.filter(categories=["Violence and sexual offences"], area=area)
    poi = shared / "poi"
    pubs = read_factor_file("pubs", poi / "essex_licensed_venues_fhrs.csv.gz", area=area,
                            where={"business_type": "Pub"}, buffer_m=300)
    stations = read_factor_file("stations", poi / "essex_rail_stations.csv", area=area, buffer_m=300)
    bus = read_factor_file("bus_stops", poi / "chelmsford_bus_stops_naptan.csv", area=area, buffer_m=300)
    res = risk_terrain(inc, [pubs, stations, bus], area, cell=50, block=100, seed=0)
    return area, inc, (pubs, stations, bus), res


def test_factor_layers_read_with_their_quirks(chelmsford_rtm):
    _, _, (pubs, stations, bus), _ = chelmsford_rtm
    # README counts: Chelmsford has 128 pubs inside the LAD (we also keep those within 300 m of it),
    # 4 National Rail stations, 673 of the 678 NaPTAN stops in Chelmsford LAD
    assert 128 <= len(pubs) <= 150
    assert 4 <= len(stations) <= 6
    assert 673 <= len(bus) <= 678
    # every row is accounted for: used + dropped = read
    for f in (pubs, stations, bus):
        assert len(f) + sum(f.dropped.values()) == f.read


def test_violence_model_selects_pubs(chelmsford_rtm):
    _, inc, _, res = chelmsford_rtm
    tab = res.tables["factors"]
    assert len(tab) >= 1
    # licensed premises are the textbook RTM factor for violence (Kennedy, Caplan & Piza 2016): in these
    # data the pub layer is selected with an RRV well above 1
    pubs = tab[tab["name"] == "pubs"]
    assert len(pubs) == 1 and pubs["ci_low"].iloc[0] > 1.0
    np.testing.assert_allclose(tab["rrv"], np.exp(tab["coef"]))
    assert res.summary["incidents"] + res.summary["incidents_outside_cells"] == len(inc)


def test_surface_reads_back_with_crs_transform_and_extent(chelmsford_rtm, tmp_path):
    import rasterio

    from maps.export.write import write_result

    area, _, _, res = chelmsford_rtm
    out = write_result(res, tmp_path / "chelmsford_rtm.tif")
    x0, y0, x1, y1 = area.total_bounds
    with rasterio.open(out) as ds:
        assert ds.crs.to_epsg() == 27700
        t = ds.transform
        assert (t.a, t.b, t.d, t.e) == (50.0, 0.0, 0.0, -50.0)
        assert t.c % 50 == 0 and t.f % 50 == 0  # BNG-aligned cells
        b = ds.bounds
        # the raster spans the district's cells: within one cell of its bounds
        assert b.left <= x0 + 50 and b.left >= x0 - 50
        assert b.right >= x1 - 50 and b.right <= x1 + 50
        assert b.bottom <= y0 + 50 and b.top >= y1 - 50
        a = ds.read(1)
        assert ds.nodata == 0
        assert a[a > 0].min() == pytest.approx(1.0)
        assert a.max() == pytest.approx(res.summary["max_rrs"], rel=1e-5)
        assert (a > 0).sum() == res.summary["cells"]


def test_real_cli_contract_with_where_and_area_name(shared, essex_ingest, essex_boundary, essex_lad, tmp_path):
    # The command contract on real data: gzipped CSV with lat/lon and '\N' values, filtered with --where,
    # study area cut to one district with --area-name. (Own store: the session essex_store stays open in
    # this process and DuckDB locks the file.)
    import json
    import subprocess
    import sys

    import rasterio

    from services.store.duckdb_store import DuckDBStore

    st = DuckDBStore(tmp_path / "essex.duckdb")
    st.set_study_area(essex_boundary, "essex_lad_2013")
    st.add_ingest(essex_ingest)
    url = st.url
    st.close()
    out = tmp_path / "colchester.tif"
    r = subprocess.run([sys.executable, "-c", "from services.cli import main; main()", "rtm", "--store", url,
                        "--boundary", str(essex_lad), "--name-col", "LAD13NM", "--area-name", "Colchester",
                        "--factor", f"pubs={shared / 'poi' / 'essex_licensed_venues_fhrs.csv.gz'}",
                        "--where", "pubs:business_type=Pub", "--category", "Violence and sexual offences",
                        "--cell", "100", "--block", "200", "--out", str(out), "--json"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    js = json.loads(r.stdout.strip().splitlines()[-1])
    assert [f["name"] for f in js["factors"]] == ["pubs"]
    f = js["factors"][0]
    assert f["rrv"] == pytest.approx(np.exp(f["coef"])) and f["ci_low"] > 1
    x0, y0, x1, y1 = essex_boundary[essex_boundary["name"] == "Colchester"].total_bounds
    with rasterio.open(out) as ds:
        assert ds.crs.to_epsg() == 27700 and ds.transform.a == 100
        assert abs(ds.bounds.left - x0) <= 100 and abs(ds.bounds.top - y1) <= 100
        a = ds.read(1)
        assert a[a > 0].min() == pytest.approx(1.0)
        assert a.max() == pytest.approx(js["max_rrs"], rel=1e-5)
