"""Grip harm spots on planted (SYNTHETIC) data.

Every town and incident here is synthetic: either built cell by cell in this file (planted
concentration, planted bursts) or the seeded synthetic town ``geo.synth.town.make_town(42)``.
References: the planted truths themselves, and ``geo.units.counts.count_units`` (the cells
command) as the oracle for harm per square; tolerances are stated beside each assertion.
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
from geo.units.counts import count_units
from geo.core.errors import BoundaryError, HarmspotError
from geo.grip.spots import PROXY_CATEGORIES, crossover_schedule, outcome_mask, select_spots
from geo.core.harm import WeightTable
from geo.core.incidents.table import IncidentTable
from geo.core.incidents.force import read_table
from geo.core.period import Period
from geo.units.lattice import SquareGrid

C = 150.0
IX0, IY0 = 3800, 1400  # BNG square indices of the planted town's south-west square (570 000, 210 000)


def make_incidents(x, y, cats, months=None, times=None, source="police-uk", **cols):
    n = len(x)
    df = pd.DataFrame({
        "incident_id": [f"P{i:06d}" for i in range(n)], "source_kind": source,
        "month": months if months is not None else ["2025-06"] * n,
        "occurred_at": times if times is not None else pd.NaT, "category": cats,
        "x": np.asarray(x, float), "y": np.asarray(y, float), "location": [f"On or near Street {i % 7}" for i in range(n)],
        **cols,
    })
    return IncidentTable.from_frame(df)


def planted_town(n_cells=769, cols=27):
    """A town made of exactly ``n_cells`` 150 m squares (27 x 28 block plus a partial row)."""
    k = np.arange(n_cells)
    ix, iy = IX0 + k % cols, IY0 + k // cols
    boxes = shapely.box(ix * C, iy * C, (ix + 1) * C, (iy + 1) * C)
    poly = shapely.union_all(boxes)
    return gpd.GeoDataFrame({"name": ["Planted"]}, geometry=[poly], crs=BNG), ix, iy


@pytest.fixture(scope="module")
def concentration_case():
    """20 of 769 squares hold 410 of 1,000 violence reports (41%); 590 other squares hold one each."""
    rng = np.random.default_rng(5)
    towns, ix, iy = planted_town()
    order = rng.permutation(len(ix))
    hot, cold = order[:20], order[20:610]
    per_hot = np.r_[np.full(10, 21), np.full(10, 20)]  # 410 reports
    cells = np.r_[np.repeat(hot, per_hot), cold]
    x = (ix[cells] + rng.uniform(0.05, 0.95, len(cells))) * C
    y = (iy[cells] + rng.uniform(0.05, 0.95, len(cells))) * C
    # 50 reports just outside the town (squares whose centroid is outside): never counted
    x = np.r_[x, (IX0 - 1 + rng.uniform(0.1, 0.9, 50)) * C]
    y = np.r_[y, (IY0 + rng.uniform(0.1, 27, 50)) * C]
    inc = make_incidents(x, y, ["Violence and sexual offences"] * len(x))
    return towns, inc, ix[hot], iy[hot]


def test_concentration_planted_20_of_769_hold_41_percent(concentration_case):
    # Planted truth (the Grip pilot's figures): 20 squares of 769 hold 41% of harm on 2.6% of area.
    towns, inc, hx, hy = concentration_case
    r = select_spots(inc, towns, n=20, period=Period.parse("2025-06"))
    lay = r.layer
    assert len(lay) == 20
    assert set(lay["spot_id"]) == set(SquareGrid(C).ids(hx, hy))
    assert r.tables["towns"]["cells"].iloc[0] == 769
    assert lay["cum_share_harm"].iloc[-1] == pytest.approx(0.41, abs=1e-12)
    assert lay["cum_share_area"].iloc[-1] == pytest.approx(20 / 769, abs=1e-12)
    assert round(lay["cum_share_area"].iloc[-1], 3) == 0.026
    conc = r.tables["concentration"]
    row = conc[conc["k"] == 20].iloc[0]
    assert row["share_harm"] == pytest.approx(0.41, abs=1e-12) and row["share_area"] == pytest.approx(20 / 769)
    # 610 squares with reports, then one closing row for the 159 empty squares at (1, 1)
    assert len(conc) == 611 and conc["k"].iloc[-1] == 769
    assert conc["share_area"].iloc[-1] == 1.0 and conc["share_harm"].iloc[-1] == pytest.approx(1.0)
    # ranks: the 21-report squares first, harm = count x CCHI violence weight (194.21 days)
    assert list(lay["rank"]) == list(range(1, 21))
    assert (lay["count"].iloc[:10] == 21).all() and (lay["count"].iloc[10:] == 20).all()
    assert lay["harm"].iloc[0] == pytest.approx(21 * 194.21, rel=1e-12)
    assert r.summary["towns"]["Planted"]["spot_share_harm"] == pytest.approx(0.41, abs=1e-12)


def test_crossover_720_treated_1080_control_reproducible():
    # Arithmetic truth: 20 spots x 90 days = 1,800 place-days; 8 treated a day -> 720 treated, 1,080 control.
    ids = [f"S{i:02d}" for i in range(20)]
    s = crossover_schedule(ids, "2026-01-05", 90, 8, seed=11)
    assert list(s.columns) == ["spot_id", "date", "treated"]
    assert len(s) == 1800 and int(s["treated"].sum()) == 720 and int((~s["treated"]).sum()) == 1080
    assert (s.groupby("date")["treated"].sum() == 8).all()
    assert s["date"].iloc[0] == "2026-01-05" and s["date"].iloc[-1] == "2026-04-04"
    # balanced: every spot treated 720 / 20 = 36 days
    assert (s.groupby("spot_id")["treated"].sum() == 36).all()
    assert s.equals(crossover_schedule(ids, "2026-01-05", 90, 8, seed=11))
    assert not s["treated"].equals(crossover_schedule(ids, "2026-01-05", 90, 8, seed=12)["treated"])


def test_crossover_bad_input_names_the_problem():
    with pytest.raises(HarmspotError, match=r"k \(treated spots per day\) must be 0..3"):
        crossover_schedule(["a", "b", "c"], "2026-01-01", 5, 4, seed=1)
    with pytest.raises(HarmspotError, match="'a' repeats"):
        crossover_schedule(["a", "a"], "2026-01-01", 5, 1, seed=1)
    with pytest.raises(HarmspotError, match="not a date"):
        crossover_schedule(["a", "b"], "soon", 5, 1, seed=1)


# ------------------------------------------------------------------ the synthetic town (force data with times)
@pytest.fixture(scope="module")
def town_inc(town, tmp_path_factory):
    export, mapping = town.force_export()
    csv = tmp_path_factory.mktemp("grip") / "export.csv"
    export.drop(columns="expected_reason").to_csv(csv, index=False)
    return read_table(csv, mapping, boundary=town.boundary).accepted


def oracle_top(inc: IncidentTable, towns, period, n, mask_fn):
    """Slow, obvious twin: per-square harm with pandas groupby, town by centroid, sort, head(n)."""
    df = inc.filter(period=period).frame
    df = df[mask_fn(IncidentTable(df))]
    w = WeightTable.builtin().weights_for(df)
    g = pd.DataFrame({"ix": np.floor(df["x"] / C).astype(int), "iy": np.floor(df["y"] / C).astype(int), "w": w})
    agg = g.groupby(["ix", "iy"]).agg(harm=("w", "sum"), count=("w", "size")).reset_index()
    agg["cell_id"] = SquareGrid(C).ids(agg["ix"], agg["iy"])
    cx, cy = (agg["ix"] + 0.5) * C, (agg["iy"] + 0.5) * C
    out = {}
    for name, geom in zip(towns["name"], towns.geometry):
        a = agg[shapely.contains_xy(geom, cx, cy) & (agg["harm"] > 0)]
        a = a.sort_values(["harm", "count", "cell_id"], ascending=[False, False, True])
        out[name] = a.head(n)
    return out


def cv_mask(t):
    return outcome_mask(t, "community-violence")[0]


def test_force_data_uses_community_violence(town_inc):
    m, name, choices, cats = outcome_mask(town_inc, "auto")
    f = town_inc.frame
    assert name == "community-violence" and cats is None
    # planted: synth codes 8N (assault with injury) and 34B (robbery) are in; 105A (no injury) out;
    # domestic and victims outside 15-64 out
    sel = f[m]
    assert set(sel["offence_code"]) <= {"8N", "34B"}
    assert not sel["domestic"].fillna(False).any()
    age = sel["victim_age"].dropna()
    assert age.between(15, 64).all()
    expect = (f["offence_code"].isin(["8N", "34B"]) & ~f["domestic"].fillna(False)
              & ~((f["victim_age"] < 15) | (f["victim_age"] > 64)).fillna(False))
    assert int(m.sum()) == int(expect.sum()) > 500
    assert any("domestic" in c.reason for c in choices)


def test_rank1_equals_top_cell_and_oracle(town_inc, town):
    p = Period.parse("2025-01", "2025-12")
    r = select_spots(town_inc, town.towns, n=10, period=p)
    orc = oracle_top(town_inc, town.towns, p, 10, cv_mask)
    for name, g in r.layer.groupby("town"):
        assert list(g["spot_id"]) == list(orc[name]["cell_id"])
        assert np.allclose(g["harm"], orc[name]["harm"], rtol=1e-12)
    # the proxy outcome reproduces count_units ('harmspot cells --category') exactly, top cell = rank 1
    rp = select_spots(town_inc, town.towns, n=5, period=p, outcome="police-uk-proxy")
    cells = count_units(town_inc, SquareGrid(150), WeightTable.builtin(), area=town.boundary, period=p,
                        categories=list(PROXY_CATEGORIES)).layer
    c = cells.geometry.centroid
    for name, geom in zip(town.towns["name"], town.towns.geometry):
        inside = cells[shapely.contains_xy(geom, c.x.to_numpy(), c.y.to_numpy())]
        top = inside.sort_values(["harm", "count", "cell_id"], ascending=[False, False, True]).iloc[0]
        one = rp.layer[(rp.layer["town"] == name) & (rp.layer["rank"] == 1)].iloc[0]
        assert one["spot_id"] == top["cell_id"] and one["harm"] == pytest.approx(top["harm"], rel=1e-12)


def test_fast_kernel_equals_count_units_twin(town_inc, town):
    # Slow twin: geo.units.counts.count_units (what 'harmspot cells' runs). Same incidents in the same
    # order -> bit-identical float sums (tolerance 0), same counts per type.
    from geo.grip.spots import town_squares

    p = Period.parse("2025-01", "2025-12")
    sel = town_inc.filter(period=p, categories=list(PROXY_CATEGORIES))
    sq = town_squares(sel, town.towns.geometry.values, C, WeightTable.builtin())
    twin = count_units(sel, SquareGrid(C), WeightTable.builtin(), area=town.towns, clip=False,
                       by_category=True).layer
    cen = twin.geometry.centroid
    owner = np.full(len(twin), -1)
    for ti, g in enumerate(town.towns.geometry):
        owner[(owner < 0) & shapely.contains_xy(g, cen.x.to_numpy(), cen.y.to_numpy())] = ti
    assert list(sq["town_cells"]) == [int((owner == 0).sum()), int((owner == 1).sum())]
    twin = twin[(owner >= 0) & (twin["count"] > 0)].set_index("cell_id")
    ids = SquareGrid(C).ids(sq["ix"], sq["iy"])
    assert set(ids) == set(twin.index)
    assert (twin.loc[ids, "harm"].to_numpy() == sq["harm"]).all()
    assert (twin.loc[ids, "count"].to_numpy() == sq["count"]).all()
    for col, v in sq["by_category"].items():
        assert (twin.loc[ids, col].to_numpy() == v).all()


def test_stability_same_data_same_ids_and_one_week_changes_only_what_should(town_inc, town):
    p1 = Period.parse("2025-01-01", "2025-12-24")
    a = select_spots(town_inc, town.towns, n=15, period=p1)
    b = select_spots(town_inc, town.towns, n=15, period=p1)
    assert list(a.layer["spot_id"]) == list(b.layer["spot_id"])
    # add one week; plant a burst of 40 robberies (40 x 365 days of harm) in a square with no harm so far
    f = town_inc.frame
    x0, y0 = 563_000.0 + 40, 217_950.0 + 40  # a Harmstead square away from the centre
    burst = IncidentTable.from_frame(pd.DataFrame({
        "incident_id": [f"B{i}" for i in range(40)], "source_kind": "table", "month": "2025-12",
        "occurred_at": pd.to_datetime([f"2025-12-2{6 + i % 3} 22:00" for i in range(40)]),
        "category": "Robbery", "offence_code": "34B", "domestic": False, "victim_age": 30.0,
        "x": x0 + np.arange(40), "y": y0, "location": "On or near Planted Lane"}))
    assert f[(np.floor(f["x"] / C) == np.floor(x0 / C)) & (np.floor(f["y"] / C) == np.floor(y0 / C))
             & cv_mask(town_inc)].empty
    both = town_inc.concat(burst)
    p2 = Period.parse("2025-01-01", "2025-12-31")
    c = select_spots(both, town.towns, n=15, period=p2, previous=a.layer)
    burst_id = SquareGrid(C).ids([int(x0 // C)], [int(y0 // C)])[0]
    assert burst_id in set(c.layer["spot_id"])
    # oracle for the new window
    orc = oracle_top(both, town.towns, p2, 15, cv_mask)
    week = both.filter(period=Period.parse("2025-12-25", "2025-12-31"))
    wk = week.frame[cv_mask(week)]
    week_cells = set(SquareGrid(C).ids(np.floor(wk["x"] / C).astype(int), np.floor(wk["y"] / C).astype(int)))
    for name in town.towns["name"]:
        old = set(a.layer.loc[a.layer["town"] == name, "spot_id"])
        new = set(c.layer.loc[c.layer["town"] == name, "spot_id"])
        assert new == set(orc[name]["cell_id"])
        entered, left = new - old, old - new
        assert len(entered) == len(left)
        # only squares with incidents in the added week can enter ...
        assert entered <= week_cells
        # ... and a square leaves only because one that entered now outranks it
        harm_now = dict(zip(orc[name]["cell_id"], orc[name]["harm"]))
        for gone in left:
            gone_harm = a.layer.set_index("spot_id").loc[gone, "harm"] + 0.0
            assert all(harm_now[e] >= gone_harm for e in entered)
        st = c.layer[c.layer["town"] == name].set_index("spot_id")["status"]
        assert set(st[st == "new"].index) == entered and set(st[st == "retained"].index) == new & old
        ch = c.tables["changes"]
        assert set(ch[(ch["status"] == "dropped") & ch["spot_id"].isin(old)]["spot_id"]) == left


def test_optional_rules(town_inc, town):
    p = Period.parse("2025-01", "2025-12")
    base = select_spots(town_inc, town.towns, n=12, period=p)
    # separation: every pair of spot centres in a town at least 400 m apart
    sep = select_spots(town_inc, town.towns, n=12, period=p, separation=400)
    for _, g in sep.layer.groupby("town"):
        c = np.c_[g.geometry.centroid.x, g.geometry.centroid.y]
        d = np.hypot(*(c[:, None, :] - c[None, :, :]).transpose(2, 0, 1))
        assert d[np.triu_indices(len(c), 1)].min() >= 400
    # min events: every spot has at least 40 incidents
    me = select_spots(town_inc, town.towns, n=12, period=p, min_events=40)
    assert (me.layer["count"] >= 40).all() and len(me.layer) < len(base.layer)
    # exclusions: a polygon over the rank-1 square removes it and nothing else changes order
    top = base.layer.iloc[0]
    ex = gpd.GeoDataFrame({"name": ["hospital"]}, geometry=[top.geometry.centroid.buffer(20)], crs=BNG)
    ee = select_spots(town_inc, town.towns, n=12, period=p, exclusions=ex)
    h = ee.layer[ee.layer["town"] == top["town"]]
    assert top["spot_id"] not in set(ee.layer["spot_id"])
    assert list(h["spot_id"])[:11] == list(base.layer[base.layer["town"] == top["town"]]["spot_id"])[1:12]
    # merge: adjacent squares become one spot whose harm is the sum of its squares
    mg = select_spots(town_inc, town.towns, n=12, period=p, merge=True)
    assert mg.layer["cells"].sum() == len(base.layer) and (mg.layer["cells"] > 1).any()
    assert mg.layer["harm"].sum() == pytest.approx(base.layer["harm"].sum(), rel=1e-12)
    big = mg.layer.sort_values("cells").iloc[-1]
    members = big["cell_ids"].split(";")
    assert big["harm"] == pytest.approx(base.layer.set_index("spot_id").loc[members, "harm"].sum(), rel=1e-12)
    assert big["spot_id"] == members[0]


def test_budget_split_by_harm():
    # Planted: town A holds 3x the harm of town B (robbery squares); a budget of 8 gives 6 and 2.
    ta = shapely.box(570_000, 210_000, 571_500, 211_500)
    tb = shapely.box(580_000, 210_000, 581_500, 211_500)
    towns = gpd.GeoDataFrame({"name": ["A", "B"]}, geometry=[ta, tb], crs=BNG)
    xa = 570_000 + 75 + 150 * np.arange(9)
    xb = 580_000 + 75 + 150 * np.arange(3)
    x = np.r_[xa, xb]
    inc = make_incidents(x, np.full(len(x), 210_075.0), ["Robbery"] * len(x))
    r = select_spots(inc, towns, budget=8, period=Period.parse("2025-06"))
    assert r.layer["town"].value_counts().to_dict() == {"A": 6, "B": 2}
    assert any(c.name == "spots per town" for c in r.choices)


def test_trend_up_on_planted_recent_burst():
    # Planted: square 1 has 2 reports a month for 9 months then 12 a month for 3 -> "up" (binomial p << 0.05);
    # square 2 has 4 a month throughout -> "stable".
    months = [f"2025-{m:02d}" for m in range(1, 13)]
    xs, ys, ms = [], [], []
    for i, m in enumerate(months):
        k1 = 2 if i < 9 else 12
        xs += [570_075.0] * k1 + [570_375.0] * 4
        ys += [210_075.0] * (k1 + 4)
        ms += [m] * (k1 + 4)
    inc = make_incidents(xs, ys, ["Violence and sexual offences"] * len(xs), months=ms)
    towns = gpd.GeoDataFrame({"name": ["T"]}, geometry=[shapely.box(570_000, 210_000, 571_000, 211_000)], crs=BNG)
    r = select_spots(inc, towns, n=2)
    t = r.layer.set_index("spot_id")["trend"]
    assert t["150m_E570000_N210000"] == "up" and t["150m_E570300_N210000"] == "stable"
    row = r.layer.set_index("spot_id").loc["150m_E570000_N210000"]
    assert row["count_recent"] == 36 and row["count_earlier"] == 18
    assert row["trend_ratio"] == pytest.approx((36 / 3) / (18 / 9))
    # default look-back echoed: 12 months ending at the latest month
    assert any(c.name == "look-back" and "2025-01 to 2025-12" in str(c.value) for c in r.choices)


def test_patrol_plan_peaks_on_nte_nights(town_inc, town):
    # Synthetic NTE violence is planted on Friday/Saturday nights around 23:30 (geo.synth.town._times 'night').
    r = select_spots(town_inc, town.towns, n=3, period=Period.parse("2025-01", "2025-12"))
    plan = r.tables["plan"]
    assert list(plan.columns[:7]) == ["spot_id", "town", "rank", "location", "visits_per_day",
                                      "minutes_per_visit", "max_gap_days"]
    assert (plan["visits_per_day"] == 1).all() and (plan["minutes_per_visit"] == 15).all()
    assert (plan["max_gap_days"] == 4).all()
    top = plan.iloc[0]
    assert top["peak_days"] == "Fri, Sat"
    start = int(top["peak_hours"][:2])
    assert start in (20, 21, 22, 23)
    assert (r.layer["target_minutes"] == 15).all() and (r.layer["target_visits_per_day"] == 1).all()


def test_bad_towns_and_rules_raise_clear_errors(town_inc, town):
    with pytest.raises(BoundaryError, match="no column 'town_name'"):
        select_spots(town_inc, town.towns, name_col="town_name")
    with pytest.raises(HarmspotError, match="separation must be a positive distance"):
        select_spots(town_inc, town.towns, separation=-5)
    with pytest.raises(HarmspotError, match="outcome 'violence'"):
        select_spots(town_inc, town.towns, outcome="violence")
    with pytest.raises(HarmspotError, match="previous cycle: no 'spot_id' column"):
        select_spots(town_inc, town.towns, previous=pd.DataFrame({"id": ["x"]}))


def run_cli(*args):
    return subprocess.run([sys.executable, "-c", "from services.cli import main; main()", *map(str, args)],
                          capture_output=True, text=True)


def test_cli_grip_contract(tmp_path, town, town_store):
    towns = tmp_path / "towns.gpkg"
    town.towns.rename(columns={"name": "TOWN"}).to_file(towns, driver="GPKG")
    path = town_store.url
    town_store.close()
    out = tmp_path / "grip.geojson"
    r = run_cli("grip", "--store", path, "--towns", towns, "--name-col", "TOWN", "--n", 8, "--cell", 150,
                "--from", "2025-01", "--to", "2025-12", "--out", out, "--json", "--plan", tmp_path / "plan.csv",
                "--crossover", 3, "--crossover-days", 10, "--seed", 4)
    assert r.returncode == 0, r.stderr
    js = json.loads(r.stdout.strip().splitlines()[-1])
    feats = gpd.read_file(out)
    assert len(feats) == js["spots"] == 16
    for col in ("spot_id", "town", "rank", "harm", "count"):
        assert col in feats.columns
    assert set(feats["town"]) == {"Harmstead", "Little Wexley"}
    assert (feats.groupby("town")["rank"].min() == 1).all()
    assert js["treated_place_days"] == 2 * 3 * 10 and js["control_place_days"] == 2 * 5 * 10
    sched = pd.read_csv(js["schedule"])
    assert list(sched.columns[:3]) == ["spot_id", "date", "treated"] and sched["date"].iloc[0] == "2026-01-01"
    assert "community-violence" in r.stderr or "community violence" in r.stderr
    # second cycle with --previous: all retained (same data)
    out2 = tmp_path / "grip2.geojson"
    r2 = run_cli("grip", "--store", path, "--towns", towns, "--name-col", "TOWN", "--n", 8, "--out", out2,
                 "--previous", out, "--json")
    assert r2.returncode == 0, r2.stderr
    assert json.loads(r2.stdout.strip().splitlines()[-1])["statuses"] == {"retained": 16}
    assert "period start set to 2025-01 automatically" in r2.stderr.replace("\n", " ")
    # bad name column: exit code 2 with a message naming the column
    r3 = run_cli("grip", "--store", path, "--towns", towns, "--name-col", "nope", "--out", out2)
    assert r3.returncode == 2 and "nope" in r3.stderr


def test_trend_binomial_tails_match_scipy():
    # Reference: scipy.stats.binom cdf/sf (tolerance 1e-12 absolute).
    from scipy.stats import binom

    from geo.grip.spots import _binom_tails

    k = np.array([0, 3, 36, 5, 10, 0, 7])
    n = np.array([12, 3, 54, 25, 20, 0, 7])
    lo, hi = _binom_tails(k, n, 0.25)
    assert np.allclose(lo, binom.cdf(k, n, 0.25), atol=1e-12)
    assert np.allclose(hi, binom.sf(k - 1, n, 0.25), atol=1e-12)


def test_overlapping_towns_first_town_owns_the_square():
    # Planted: town B overlaps town A's east half; squares there belong to A (first in file order).
    ta = shapely.box(570_000, 210_000, 570_600, 210_300)
    tb = shapely.box(570_300, 210_000, 570_900, 210_300)
    towns = gpd.GeoDataFrame({"name": ["A", "B"]}, geometry=[ta, tb], crs=BNG)
    x = np.r_[np.full(5, 570_375.0), np.full(3, 570_675.0)]
    inc = make_incidents(x, np.full(8, 210_075.0), ["Robbery"] * 8)
    r = select_spots(inc, towns, n=5, period=Period.parse("2025-06"))
    own = r.layer.set_index("spot_id")["town"]
    assert own["150m_E570300_N210000"] == "A" and own["150m_E570600_N210000"] == "B"
    assert list(r.tables["towns"]["cells"]) == [8, 4]
