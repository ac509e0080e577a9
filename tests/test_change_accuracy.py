"""Change between periods (E-test, Jaccard), predictive accuracy (hit rate, PAI, PEI), tasking table."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from geo.hotspots.accuracy import accuracy_at, accuracy_curve, predictive_accuracy
from geo.hotspots.change import change_between, jaccard_top, poisson_etest, tasking_table


def test_pai_issue_oracle():
    # issue 3: observed 6,3,0 and predicted 3,2,1 on equal-area cells give PAI 2, 1.5, 1.
    c = accuracy_curve([3, 2, 1], [6, 3, 0])
    np.testing.assert_allclose(c["pai"], [2.0, 1.5, 1.0], rtol=1e-12)
    np.testing.assert_allclose(c["hit_rate"], [6 / 9, 1.0, 1.0], rtol=1e-12)
    np.testing.assert_allclose(c["pei"], [1.0, 1.0, 1.0], rtol=1e-12)  # the prediction is the best ordering


def test_pei_worst_ordering_by_hand():
    # predicted 1,2,3 flags the empty cell first: hits 0, 3, 9 of 9; best possible at 1, 2 cells: 6, 9
    c = accuracy_curve([1, 2, 3], [6, 3, 0])
    np.testing.assert_allclose(c["hits"], [0, 3, 9])
    np.testing.assert_allclose(c["pai"], [0.0, (3 / 9) / (2 / 3), 1.0])
    np.testing.assert_allclose(c["pei"], [0.0, 3 / 9, 1.0])


def test_unequal_areas_and_share_selection():
    # 4 units, areas 1,1,2,4 (total 8); scores rank them in that order; observed 4,0,4,0 (total 8)
    c = accuracy_curve([4, 3, 2, 1], [4, 0, 4, 0], [1, 1, 2, 4])
    np.testing.assert_allclose(c["area_share"], [1 / 8, 2 / 8, 4 / 8, 1.0])
    np.testing.assert_allclose(c["pai"], [(4 / 8) / (1 / 8), (4 / 8) / (2 / 8), 1 / (4 / 8), 1.0])
    # best at 2/8 of the area: the area-1 unit (4) + half of the area-2 unit (density 2) = 6 -> PEI 4/6
    assert c["pei"].iloc[1] == pytest.approx(4 / 6)
    at = accuracy_at(c, (0.2, 0.5))  # 20% of area: only the first unit fits; 50%: the first three
    assert list(at["units"]) == [1, 3]


def test_etest_matches_krishnamoorthy_thomson():
    # Krishnamoorthy & Thomson (2004) examples as reproduced by ptools tests/testthat/test-etest.R:
    # e_test(0, 3) = 0.0884 (tolerance 5e-4), e_test(6, 2) = 0.1749 (4 d.p.), symmetric in its arguments.
    p = poisson_etest([0, 6, 2, 0], [3, 2, 6, 0])
    assert p[0] == pytest.approx(0.0884, abs=5e-4)
    assert round(p[1], 4) == 0.1749
    assert p[2] == pytest.approx(p[1], rel=1e-12)
    assert p[3] == 1.0  # nothing in either period: no evidence of change


def test_jaccard_top_n_by_hand():
    ids = np.array(["a", "b", "c", "d", "e"])
    j, a, b = jaccard_top(ids, [5, 4, 3, 0, 0], [0, 9, 8, 7, 0], 3)
    assert a == ["a", "b", "c"] and b == ["b", "c", "d"]
    assert j == pytest.approx(2 / 4)


def _synthetic_two_periods(seed=1):
    """SYNTHETIC planted truth: two months of points; one 150 m cell quadruples, one empties."""
    from geo.core.incidents.table import IncidentTable

    rng = np.random.default_rng(seed)
    rows = []
    for month, hot_a, hot_b in (("2025-01", 10, 40), ("2025-02", 40, 0)):
        for cx, cy, n in ((560_175.0, 214_125.0, hot_a), (561_075.0, 214_125.0, hot_b)):
            rows.append(pd.DataFrame({"x": cx + rng.uniform(-60, 60, n), "y": cy + rng.uniform(-60, 60, n),
                                      "month": month}))
        rows.append(pd.DataFrame({"x": rng.uniform(559_500, 562_500, 60), "y": rng.uniform(213_500, 215_500, 60),
                                  "month": month}))
    df = pd.concat(rows, ignore_index=True)
    from pyproj import Transformer

    lon, lat = Transformer.from_crs(27700, 4326, always_xy=True).transform(df["x"], df["y"])
    df = df.assign(lon=lon, lat=lat, category="Burglary", incident_id=[f"s{i}" for i in range(len(df))],
                   location="On or near Test Street", source_kind="synthetic")
    return IncidentTable.from_frame(df)


def test_change_between_planted_increase_and_decrease():
    from geo.core.period import Period
    from geo.units.lattice import SquareGrid

    inc = _synthetic_two_periods()
    res = change_between(inc, SquareGrid(150), before=Period.parse("2025-01"), after=Period.parse("2025-02"),
                         top=2, rank_by="count")
    lay = res.layer.set_index("cell_id")
    up = lay.loc["150m_E560100_N214050"]
    down = lay.loc["150m_E561000_N214050"]
    assert up["count_after"] >= 40 and up["count_before"] >= 10
    assert up["change"] == "significant increase"
    assert down["change"] == "significant decrease"
    # exposures are the months' lengths (31 vs 28 days): the test compares rates per day
    assert res.params["before"]["days"] == 31 and res.params["after"]["days"] == 28
    assert res.summary["count_before"] == lay["count_before"].sum()
    assert 0 <= res.summary["jaccard_top_n"] <= 1
    assert (res.layer["count_diff"] == res.layer["count_after"] - res.layer["count_before"]).all()


def test_predictive_accuracy_compares_methods_on_synthetic_data():
    from geo.core.period import Period
    from geo.units.lattice import SquareGrid

    inc = _synthetic_two_periods()
    res = predictive_accuracy(inc, SquareGrid(150), train=Period.parse("2025-01"), test=Period.parse("2025-02"),
                              methods=("count", "harm", "kde_count", "gistar"), shares=(0.01, 0.05))
    t = res.tables["summary"]
    assert set(t["method"]) == {"count", "harm", "kde_count", "gistar"}
    # with the count method the top cell (by Jan count: the cell that empties, 40) catches ~nothing in Feb,
    # and the 2nd (10 -> 40) catches 40+ of the ~100 Feb incidents
    curve = res.tables["curve"]
    c = curve[curve["method"] == "count"].set_index("units")
    assert c.loc[1, "hits"] <= 2 and c.loc[2, "hits"] >= 40
    assert ((t["pai"] >= 0) & (t["pei"] <= 1 + 1e-12)).all()


def test_tasking_table_ranks_and_joins():
    layer = pd.DataFrame({"cell_id": ["a", "b", "c"], "count": [5, 9, 9], "harm": [100.0, 20.0, 20.0],
                          "gistar_z": [1.0, 3.0, 2.0], "gistar_class": ["x", "y", "z"]})
    prev = pd.DataFrame({"cell_id": ["b"], "count": [4], "harm": [8.0]})
    labels = pd.Series({"a": "On or near High Street"})
    t = tasking_table(layer, by="count", top=2, previous=prev, labels=labels)
    assert list(t["cell_id"]) == ["b", "c"]  # count ties broken by Gi* z
    assert list(t["count_change"]) == [5, 9]
    t2 = tasking_table(layer, by="harm", top=1, labels=labels)
    assert t2.loc[0, "location"] == "On or near High Street" and t2.loc[0, "rank"] == 1


def test_cli_kde_emerging_change_accuracy(tmp_path, town_store):
    # The other hotspots commands end to end on the SYNTHETIC town (seed 42): outputs written,
    # --json's last line parses, automatic choices reported.
    import json

    import rasterio
    from typer.testing import CliRunner

    from services.cli import app

    store = str(town_store.path)
    town_store.close()
    runner = CliRunner()

    def run(*args):
        r = runner.invoke(app, ["hotspots", *args, "--store", store, "--json"])
        assert r.exit_code == 0, (args, r.output, r.exception)
        return json.loads(r.stdout.strip().splitlines()[-1])

    k = run("kde", "--bandwidth", "300", "--cell", "50", "--out", str(tmp_path / "k.tif"))
    assert k["check"]["max_rel_error_of_peak"] <= 1e-3 and k["params"]["kernel"] == "quartic"
    with rasterio.open(tmp_path / "k.tif") as src:
        assert src.crs.to_epsg() == 27700
    e = run("emerging", "--cell", "250", "--weight", "count", "--out", str(tmp_path / "e.gpkg"))
    assert e["params"]["freq"] == "M" and len(e["steps"]) == 12  # a year of data: monthly steps, echoed
    assert any(c["name"] == "time step" for c in e["choices"])
    # H3 units with ring-2 neighbours: the ring is echoed, and a second run reuses the stored matrix
    e2 = [run("emerging", "--grid", "h3", "--res", "8", "--ring", "2", "--weight", "count",
              "--out", str(tmp_path / f"e{i}.gpkg")) for i in (2, 3)]
    assert e2[0]["params"]["ring_k"] == 2 and e2[0]["params"]["neighbours"] == "h3 grid ring"
    said = [{c["name"]: c["value"] for c in r["choices"]}["neighbour matrix"] for r in e2]
    assert said == ["built now and cached", "reused from the store"] and e2[0]["patterns"] == e2[1]["patterns"]
    c = run("change", "--cell", "250", "--top", "10", "--out", str(tmp_path / "c.gpkg"))
    assert c["params"]["before"]["end"] < c["params"]["after"]["start"] and 0 <= c["jaccard_top_n"] <= 1
    a = run("accuracy", "--train", "2025-07:2025-09", "--cell", "250", "--methods", "count,harm",
            "--out", str(tmp_path / "a.csv"))
    assert a["params"]["test"]["start"] == "2025-10-01"  # the equal-length period after --train
    assert {r["method"] for r in a["table"]} == {"count", "harm"}
    assert pd.read_csv(tmp_path / "a.csv")["pai"].notna().all()
