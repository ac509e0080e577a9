"""Patrol dose: ping validation, visits and daily dose (the issue's worked examples, synthetic data)."""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from geo import patrol

# one 150 m square spot on the BNG (synthetic)
X0, Y0 = 571200.0, 206400.0
SPOT = gpd.GeoDataFrame({"cell_id": ["S1"]}, geometry=[shapely.box(X0, Y0, X0 + 150, Y0 + 150)], crs="EPSG:27700")


def _pings(minutes, unit="U1", inside=True, start="2025-03-03T10:00:00+00:00"):
    t0 = pd.Timestamp(start)
    x = X0 + 75 if inside else X0 - 500
    return pd.DataFrame({"unit_id": unit, "timestamp": [(t0 + pd.Timedelta(minutes=m)).isoformat() for m in minutes],
                         "easting": x, "northing": Y0 + 75})


def _dose(raw, **kw):
    pt = patrol.validate_pings(raw, x_col="easting", y_col="northing")
    return pt, patrol.compute_dose(pt, SPOT, "cell_id", **kw)


# Issue 6 oracle: 15 one-minute pings inside a spot give one visit of 15 minutes, on target (10-20 min, Koper).
def test_fifteen_one_minute_pings_make_one_on_target_visit():
    _, res = _dose(_pings(range(15)))
    v = res.tables["visits"]
    assert len(v) == 1
    assert v["minutes"].iloc[0] == pytest.approx(15.0)
    assert bool(v["on_target"].iloc[0])
    assert res.tables["intervals"]["interval_s"].iloc[0] == 60.0
    d = res.tables["daily"]
    assert d["minutes"].sum() == pytest.approx(15.0) and d["visits"].sum() == 1 and d["on_target"].sum() == 1


# Issue 6 oracle: a 10-minute gap inside splits it into two visits (10 > 3 x 1-minute interval).
def test_ten_minute_gap_splits_visit():
    mins = list(range(0, 8)) + list(range(17, 24))  # 8 pings, gap of 10 minutes, 7 pings
    raw = pd.concat([_pings(mins), _pings(range(8, 17), inside=False)]).sort_values("timestamp")
    _, res = _dose(raw)
    v = res.tables["visits"]
    assert len(v) == 2
    assert list(v["minutes"]) == pytest.approx([8.0, 7.0])
    assert not v["on_target"].any()


def test_short_gap_merges_and_passby():
    # gap of 3 minutes (<= 3 x 60 s) merges; 1-minute stay elsewhere in the day is a pass-by
    mins = [0, 1, 2, 3, 6, 7, 8]
    raw = pd.concat([_pings(mins), _pings([200], start="2025-03-03T10:00:00+00:00")])
    _, res = _dose(raw)
    assert len(res.tables["visits"]) == 1 and res.tables["visits"]["minutes"].iloc[0] == pytest.approx(9.0)
    assert len(res.tables["passbys"]) == 1
    assert res.summary["passbys"] == 1


def test_rejects_lose_nothing_and_name_reasons():
    raw = _pings(range(10))
    spike = pd.DataFrame({"unit_id": ["U1"], "timestamp": ["2025-03-03T10:04:30+00:00"],
                          "easting": [X0 + 60000], "northing": [Y0]})  # 60 km away for 30 s: 2000 m/s
    bad = pd.DataFrame({"unit_id": ["U1", "U1", "U1", ""],
                        "timestamp": ["not a time", raw["timestamp"].iloc[3], "2025-03-03T09:00:00+00:00",
                                      "2025-03-03T10:05:00+00:00"],
                        "easting": [X0, X0 + 75, X0 + 75, X0], "northing": [Y0, Y0 + 75, Y0 + 75, Y0]})
    raw = pd.concat([raw.iloc[:5], spike, raw.iloc[5:], bad], ignore_index=True)
    pt = patrol.validate_pings(raw, x_col="easting", y_col="northing")
    assert pt.read == len(raw) == pt.accepted + pt.rejected
    assert pt.reasons() == {"unparsable time": 1, "duplicate ping": 1, "out of order": 1, "impossible jump": 1,
                            "missing unit id": 1}
    assert (pt.rejects.loc[pt.rejects["reason"] == "impossible jump", "easting"] == X0 + 60000).all()
    assert pt.accepted == 10


def test_missing_columns_named():
    with pytest.raises(patrol.PingError, match="missing ping column"):
        patrol.validate_pings(pd.DataFrame({"unit": [1]}))


def test_lonlat_and_naive_local_time():
    from pyproj import Transformer

    lon, lat = Transformer.from_crs("EPSG:27700", "EPSG:4326", always_xy=True).transform(X0 + 75, Y0 + 75)
    # naive times are UK local: 10:00 in July (BST) is 09:00 UTC
    raw = pd.DataFrame({"unit_id": "U9", "timestamp": [f"2025-07-01 10:{m:02d}:00" for m in range(12)],
                        "longitude": lon, "latitude": lat})
    pt = patrol.validate_pings(raw)
    assert pt.frame["t"].iloc[0] == pd.Timestamp("2025-07-01 09:00", tz="UTC")
    res = patrol.compute_dose(pt, SPOT, "cell_id")
    assert res.summary["on_target_visits"] == 1
    assert any(c.name == "naive timestamps" for c in res.choices)


def test_daily_dose_days_since_and_plan_compliance():
    raw = pd.concat([_pings(range(12), start="2025-03-03T10:00:00+00:00"),
                     _pings(range(12), start="2025-03-06T10:00:00+00:00")])
    plan = pd.DataFrame({"spot_id": "S1", "date": ["2025-03-03", "2025-03-04", "2025-03-06"],
                         "treated": [True, True, True]})
    _, res = _dose(raw, plan=plan, days=pd.date_range("2025-03-03", "2025-03-07"))
    d = res.tables["daily"]
    assert list(d["days_since_last_visit"]) == [0, 1, 2, 0, 1]
    assert res.summary["planned_visits"] == 3 and res.summary["planned_done"] == 2
    s = res.tables["spots"].iloc[0]
    # gap: from 10:12 on the 3rd to 10:00 on the 6th = 71.8 hours
    assert s["longest_gap_hours"] == pytest.approx(71.8)


def test_gini_reference_values():
    # arithmetic: equal values -> 0; all at one of n -> (n-1)/n
    assert patrol.gini([5, 5, 5, 5]) == pytest.approx(0.0)
    assert patrol.gini([0, 0, 0, 8]) == pytest.approx(0.75)


def test_median_histogram_matches_numpy():
    rng = np.random.default_rng(0)
    t = np.sort(rng.integers(0, 10**12, 101))
    u = np.array(["a"] * 50 + ["b"] * 51)
    t = np.r_[np.sort(t[:50]), np.sort(t[50:])]
    med = patrol.median_from_histogram(patrol.diff_histogram(u, t))
    assert med["a"] == pytest.approx(np.median(np.diff(t[:50])) / 1e9)
    assert med["b"] == pytest.approx(np.median(np.diff(t[50:])) / 1e9)


def test_interactions_per_spot_week():
    logs = pd.DataFrame({"kind": ["business check", "stop search", "business check"],
                         "t": pd.to_datetime(["2025-03-03 10:00", "2025-03-05 11:00", "2025-03-11 12:00"], utc=True)})
    sp = patrol.spot_frame(SPOT, "cell_id")
    out = patrol.count_interactions(logs, sp, x=np.array([X0 + 1, X0 + 2, X0 + 3]), y=np.full(3, Y0 + 5), t=logs["t"])
    assert out["count"].sum() == 3
    assert set(out["week"].astype(str)) == {"2025-03-03", "2025-03-10"}


# ------------------------------------------------------------------------------------------- CLI contract
def test_cli_dose_contract(tmp_path):
    """`harmspot dose --pings F --spots F --id-col C --out visits.csv --json` (issue 6 command contract); SYNTHETIC."""
    import json

    from typer.testing import CliRunner

    from services.cli import app

    raw = pd.concat([_pings(range(15)), _pings(range(40, 41)),
                     pd.DataFrame({"unit_id": ["U1"], "timestamp": ["garbage"], "easting": [X0], "northing": [Y0]})])
    raw.to_csv(tmp_path / "pings.csv", index=False)
    SPOT.to_file(tmp_path / "spots.geojson", driver="GeoJSON")
    r = CliRunner().invoke(app, ["dose", "--pings", str(tmp_path / "pings.csv"), "--spots",
                                 str(tmp_path / "spots.geojson"), "--id-col", "cell_id", "--x-col", "easting",
                                 "--y-col", "northing", "--out", str(tmp_path / "visits.csv"),
                                 "--daily", str(tmp_path / "daily.csv"), "--json"])
    assert r.exit_code == 0, r.output
    js = json.loads(r.stdout.strip().splitlines()[-1])
    assert js["pings"]["read"] == 17 == js["pings"]["accepted"] + js["pings"]["rejected"]
    assert js["pings"]["reasons"] == {"unparsable time": 1}
    v = pd.read_csv(tmp_path / "visits.csv")
    assert {"spot_id", "unit_id", "start", "end", "minutes"} <= set(v.columns)
    assert len(v) == 1 and v["minutes"].iloc[0] == 15.0 and v["spot_id"].iloc[0] == "S1"
    rej = pd.read_csv(tmp_path / "visits_rejects.csv")
    assert list(rej["reason"]) == ["unparsable time"]
    assert pd.read_csv(tmp_path / "daily.csv")["visits"].sum() == 1


def test_cli_dose_missing_column_exits_2(tmp_path):
    from services.cli import main

    pd.DataFrame({"who": ["a"]}).to_csv(tmp_path / "p.csv", index=False)
    SPOT.to_file(tmp_path / "spots.geojson", driver="GeoJSON")
    with pytest.raises(SystemExit) as e:
        main(["dose", "--pings", str(tmp_path / "p.csv"), "--spots", str(tmp_path / "spots.geojson"),
              "--id-col", "cell_id", "--out", str(tmp_path / "v.csv")])
    assert e.value.code == 2


def test_cli_dose_interactions(tmp_path):
    """--interactions counts logs per spot and ISO week; an unparsable row is rejected, not dropped. SYNTHETIC."""
    from typer.testing import CliRunner

    from services.cli import app

    _pings(range(15)).to_csv(tmp_path / "pings.csv", index=False)
    SPOT.to_file(tmp_path / "spots.geojson", driver="GeoJSON")
    pd.DataFrame({"timestamp": ["2025-03-03T10:00:00+00:00", "2025-03-04T10:00:00+00:00", "bad",
                                "2025-03-04T11:00:00+00:00"],
                  "easting": [X0 + 10, X0 + 20, X0 + 30, X0 - 900], "northing": [Y0 + 10] * 4,
                  "kind": ["business check", "stop search", "stop search", "stop search"]}).to_csv(
        tmp_path / "logs.csv", index=False)
    r = CliRunner().invoke(app, ["dose", "--pings", str(tmp_path / "pings.csv"), "--spots",
                                 str(tmp_path / "spots.geojson"), "--id-col", "cell_id", "--x-col", "easting",
                                 "--y-col", "northing", "--out", str(tmp_path / "visits.csv"),
                                 "--interactions", str(tmp_path / "logs.csv")])
    assert r.exit_code == 0, r.output
    t = pd.read_csv(tmp_path / "visits_interactions.csv")
    assert t["count"].sum() == 2 and set(t["kind"]) == {"business check", "stop search"}
    assert len(pd.read_csv(tmp_path / "visits_interactions_rejects.csv")) == 1


# ------------------------------------------------------------------------------------------- slow twin
def _slow_visits(hits, interval_s, gap_factor=3.0, min_dwell=2.0):
    """Obviously correct per-ping loop (the twin of visits_from_hits): walk each unit's in-spot pings in time."""
    out = []
    for (u, s), g in hits.groupby(["unit_id", "spot"]):
        ts = sorted(g["t"])
        iv = interval_s[u] * 1e9
        start = prev = ts[0]
        n = 1
        for t in ts[1:]:
            if t - prev > gap_factor * iv:
                out.append((s, u, start, prev + iv, n))
                start, n = t, 0
            prev = t
            n += 1
        out.append((s, u, start, prev + iv, n))
    rows = [(s, u, a, b, (b - a) / 6e10, n) for s, u, a, b, n in out]
    df = pd.DataFrame(rows, columns=["spot", "unit_id", "start", "end", "minutes", "pings"])
    return df[df["minutes"] >= min_dwell], df[df["minutes"] < min_dwell]


def test_visits_match_slow_twin():
    # random in-spot pings (SYNTHETIC): 4 units with different intervals, 3 spots, bursts and gaps
    rng = np.random.default_rng(11)
    rows = []
    for u, iv in zip(["A", "B", "C", "D"], [15, 30, 60, 120]):
        t = 0
        for _ in range(60):
            t += int(rng.integers(1, 40)) * iv * 10**9 // 4
            rows.append((u, int(rng.integers(0, 3)), t))
    hits = pd.DataFrame(rows, columns=["unit_id", "spot", "t"])
    intervals = pd.Series({"A": 15.0, "B": 30.0, "C": 60.0, "D": 120.0})
    fast_v, fast_p = patrol.visits_from_hits(hits, intervals, np.array(["s0", "s1", "s2"], dtype=object))
    slow_v, slow_p = _slow_visits(hits, intervals)
    assert len(fast_v) == len(slow_v) > 10 and len(fast_p) == len(slow_p) > 0
    key = lambda d: sorted(zip(d["unit_id"], d["minutes"].round(6), d["pings"]))  # noqa: E731
    assert key(fast_v) == key(slow_v)
    assert key(fast_p) == key(slow_p)


# read = accepted + rejected for arbitrary input (hypothesis: nothing is lost)
def test_validation_loses_nothing_property():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    cell = st.one_of(st.text(max_size=6), st.sampled_from(["2025-03-03T10:00:00Z", "2025-03-03 10:01", "",
                                                           "31/12/2025 23:59"]))
    num = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4))

    @settings(max_examples=40, deadline=None)
    @given(st.lists(st.tuples(st.sampled_from(["U1", "U2", ""]), cell, num, num), min_size=1, max_size=25))
    def check(rows):
        raw = pd.DataFrame(rows, columns=["unit_id", "timestamp", "easting", "northing"]).astype(str)
        pt = patrol.validate_pings(raw, x_col="easting", y_col="northing")
        assert pt.read == len(raw) == pt.accepted + pt.rejected
        assert set(pt.rejects["reason"]) <= set(patrol.PING_REJECT_REASONS)

    check()
