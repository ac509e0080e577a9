"""validate_pings gives exactly what it gave before its vectorised rewrite.

The reference is the pre-rewrite function, kept verbatim in tests/_ref_validate_pings.py.
Every comparison asserts the same accepted rows (unit_id, t, x, y bit for bit, source_row
and carried columns, with their dtypes and order), the same (row, reason, field) for every
rejected row and the same rejects table, on inputs with every kind of bad row planted:
lon/lat and BNG, strings (as read_pings reads a CSV) and typed columns.
"""
from __future__ import annotations

import io
import numpy as np
import pandas as pd
import pytest
from _ref_validate_pings import validate_pings_reference

from geo.patrol import pings as patrol

X0, Y0 = 571200.0, 206400.0
UNITS = ["U1", "U2", "U3", "U4", "U5"]


def _same(raw: pd.DataFrame, **kw) -> patrol.PingTable:
    before = raw.copy(deep=True)
    want = validate_pings_reference(raw, **kw)
    got = patrol.validate_pings(raw, **kw)
    pd.testing.assert_frame_equal(raw, before, check_exact=True)  # the caller's table is left alone
    assert got.read == want.read == len(raw) == got.accepted + got.rejected
    pd.testing.assert_frame_equal(got.frame, want.frame, check_exact=True)
    for c in ("x", "y"):  # bit for bit (assert_frame_equal takes -0.0 == 0.0)
        assert np.array_equal(got.frame[c].to_numpy().view(np.int64), want.frame[c].to_numpy().view(np.int64))
    assert np.array_equal(got.frame["t"].to_numpy("datetime64[ns]"), want.frame["t"].to_numpy("datetime64[ns]"))
    key = ["source_row", "reason", "field"]
    assert list(got.rejects[key].itertuples(index=False)) == list(want.rejects[key].itertuples(index=False))
    pd.testing.assert_frame_equal(got.rejects, want.rejects, check_exact=True)
    assert got.choices == want.choices and got.source == want.source
    return got


def _planted(seed: int = 0, *, lonlat: bool = False, as_str: bool = False, naive: bool = False) -> pd.DataFrame:
    """Five units pinging every 30 s across the spring clock change (and one autumn hour), with every kind of
    bad row planted at random places, rows partly interleaved across units, a non-default index."""
    rng = np.random.default_rng(seed)
    recs = []  # unit, UTC time (Timestamp or None or a raw string), x, y, team

    def add(u, t, x, y, at=None):
        r = [u, t, x, y, "T1" if u in ("U1", "U2") else ("T2" if u else None)]
        recs.insert(len(recs) if at is None else at, r)

    for k, u in enumerate(UNITS):
        t0 = pd.Timestamp("2025-03-30T00:20:00Z") + pd.Timedelta(seconds=7 * k)
        x, y = X0 + 300 * k, Y0
        for i in range(120):
            x, y = x + rng.normal(0, 40), y + rng.normal(0, 40)
            add(u, t0 + pd.Timedelta(seconds=30 * i), x, y)
    add("U6", pd.Timestamp("2025-10-26T00:40:00Z"), X0, Y0)  # autumn: 01:40 BST, the ambiguous local hour
    add("U6", pd.Timestamp("2025-10-26T01:10:00Z"), X0 + 50, Y0)
    add("U7", pd.Timestamp("2025-06-01T10:00:00Z"), X0, Y0)  # a unit with one ping
    add("U8", pd.Timestamp("2025-06-01T10:00:00Z"), X0, Y0)  # a unit with two pings, the second a jump
    add("U8", pd.Timestamp("2025-06-01T10:00:30Z"), X0 + 60_000, Y0)
    base = list(recs)

    def some():
        return base[rng.integers(len(base))]

    n = len(recs)
    for _ in range(6):  # missing / blank unit ids; padded ids are the same unit once stripped
        r = some()
        add(rng.choice(np.array([None, np.nan, "", "   ", "\t"], dtype=object)), r[1], r[2], r[3],
            at=int(rng.integers(len(recs))))
    for _ in range(4):
        r = some()
        add(" " + r[0] + " ", r[1] + pd.Timedelta(seconds=1), r[2], r[3], at=int(rng.integers(len(recs))))
    for bad in ("not a time", "", None, "2025-02-30T10:00:00Z", "25:99", "2025-13-01 10:00"):
        r = some()
        add(r[0], bad, r[2], r[3], at=int(rng.integers(len(recs))))
    for bx, by in ((np.nan, Y0), (X0, np.inf), (-np.inf, Y0), (9e5, Y0), (X0, -2e5), (X0, 1.5e6)):
        r = some()
        add(r[0], r[1] + pd.Timedelta(seconds=2), bx, by, at=int(rng.integers(len(recs))))
    for _ in range(8):  # exact duplicates (same unit and time; coordinates equal or not), later in the file
        i = int(rng.integers(n // 2))
        r = recs[i]
        add(r[0], r[1], r[2] + (0 if rng.random() < 0.5 else 5), r[3], at=int(rng.integers(i + 1, len(recs))))
    for _ in range(8):  # out of order: earlier than pings the unit already sent
        i = int(rng.integers(n // 2, n))
        r = recs[i]
        if isinstance(r[1], pd.Timestamp):
            add(r[0], r[1] - pd.Timedelta(seconds=int(rng.integers(40, 600))), r[2], r[3],
                at=int(rng.integers(i + 1, len(recs) + 1)))
    # spikes: one ping 60 km away between two ordinary ones; two consecutive ones; one at a unit's end
    for u, j, xs in (("U1", 40, [60_000]), ("U2", 70, [60_000, -60_000]), ("U3", 50, [0, 60_000]),
                     ("U4", 119, [60_000])):
        rows = [r for r in recs if r[0] == u and isinstance(r[1], pd.Timestamp)]
        r = rows[j]
        for q, dx in enumerate(xs):
            add(u, r[1] + pd.Timedelta(seconds=10 + q), r[2] + dx, r[3] + (30_000 if dx else 0),
                at=recs.index(r) + 1 + q)
    # naive local times at the clock changes, and offsets other than UTC
    tail = [("U5", "2025-03-30 01:30:00"), ("U5", "2025-10-26 01:30:00"), ("U6", "2025-10-26 00:30:00"),
            ("U6", "2025-10-26 02:30:00"), ("U7", "2025-06-01 12:00:00"), ("U7", "2025-06-01T13:00:00+01:00"),
            ("U7", "2025-06-01T08:30:00-05:00"), ("U7", "2025-06-01T13:45:00.250Z"), ("U7", "01/06/2025 14:00"),
            ("U7", "2025-06-01T15:00:00+0100")]
    for u, s in tail:
        add(u, s, X0 + rng.normal(0, 30), Y0 + rng.normal(0, 30), at=int(rng.integers(len(recs) + 1)))
    # interleave a stretch of the file across units (time order rather than unit order)
    a = int(rng.integers(0, len(recs) - 200))
    part = recs[a:a + 200]
    part.sort(key=lambda r: str(r[1]))
    recs[a:a + 200] = part

    df = pd.DataFrame(recs, columns=["unit_id", "t", "x", "y", "team"])
    t = df["t"]
    is_ts = t.map(lambda v: isinstance(v, pd.Timestamp))
    if as_str:
        def fmt(v):
            if not isinstance(v, pd.Timestamp):
                return v
            form = rng.integers(4)
            if form == 0:
                return v.strftime("%Y-%m-%dT%H:%M:%SZ")
            if form == 1:
                return v.isoformat()
            if form == 2:
                return v.tz_convert("Europe/London").isoformat()
            return v.tz_convert("Europe/London").strftime("%Y-%m-%d %H:%M:%S")  # naive UK local time
        ts = t.map(fmt)
    else:
        ts = pd.Series(pd.NaT, index=df.index, dtype="datetime64[ns, UTC]")
        ts[is_ts] = pd.to_datetime(t[is_ts].tolist(), utc=True)
        ok = ~is_ts & t.map(lambda v: isinstance(v, str))
        ts[ok] = pd.to_datetime(t[ok], utc=True, errors="coerce", format="mixed", dayfirst=True)
        if naive:  # typed but without a zone: UK local wall-clock times (the spring gap and autumn hour included)
            ts = ts.dt.tz_convert("Europe/London").dt.tz_localize(None)
            ts[rng.random(len(ts)) < 0.02] = pd.Timestamp("2025-03-30 01:15:00")
    x, y = df["x"].to_numpy(float), df["y"].to_numpy(float)
    if lonlat:
        from pyproj import Transformer

        lon, lat = Transformer.from_crs("EPSG:27700", "EPSG:4326", always_xy=True).transform(x, y)
        lon = np.where(np.isfinite(x) & np.isfinite(y), lon, x)
        lat = np.where(np.isfinite(x) & np.isfinite(y), lat, y)
        lon[rng.integers(len(lon), size=2)] = [200.0, -181.0]
        lat[rng.integers(len(lat), size=2)] = [95.0, -90.5]
        c1, c2, v1, v2 = "longitude", "latitude", lon, lat
    else:
        c1, c2, v1, v2 = "easting", "northing", x, y
    out = pd.DataFrame({"unit_id": df["unit_id"], "timestamp": ts, c1: v1, c2: v2, "team": df["team"],
                        "speed": rng.uniform(0, 30, len(df)).round(1)})
    if as_str:
        out[c1] = [repr(float(v)) if rng.random() < 0.9 else f"{v:.2f}" for v in v1]
        out[c2] = [repr(float(v)) for v in v2]
        out.loc[rng.integers(len(out), size=3), c1] = ["abc", "", " 1,5"]
        # as read_pings reads a CSV: every column str, empty cells missing
        out = pd.read_csv(io.StringIO(out.to_csv(index=False)), dtype=str, keep_default_na=False, na_values=[""])
    out.index = rng.permutation(len(out)) + 1000
    return out


@pytest.mark.parametrize("lonlat", [False, True], ids=["bng", "lonlat"])
@pytest.mark.parametrize("form", ["str", "typed", "typed-naive"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_rows_same_as_reference(seed, form, lonlat):
    raw = _planted(seed, lonlat=lonlat, as_str=form == "str", naive=form == "typed-naive")
    kw = {} if lonlat else {"x_col": "easting", "y_col": "northing"}
    pt = _same(raw, team_col="team", **kw)
    reasons = pt.reasons()
    # every check fires (spikes need the track: only where the planted ones survive the earlier checks)
    assert {"missing unit id", "unparsable time", "unparsable coordinates", "duplicate ping", "out of order",
            "impossible jump"} <= set(reasons), reasons
    _same(raw, source="pings.csv", **kw)  # CSV row numbers
    _same(raw, max_speed_mps=5.0, **kw)  # many more jumps


def test_chunked_spike_round_same_as_reference(monkeypatch):
    monkeypatch.setattr(patrol, "_SPIKE_CHUNK", 7)  # chunk edges fall everywhere, spikes included
    for seed in (0, 1):
        _same(_planted(seed), x_col="easting", y_col="northing", max_speed_mps=10.0)
        _same(_planted(seed, lonlat=True))


def test_existing_inputs_same_as_reference():
    from test_patrol import _pings

    raw = _pings(range(10))
    spike = pd.DataFrame({"unit_id": ["U1"], "timestamp": ["2025-03-03T10:04:30+00:00"],
                          "easting": [X0 + 60000], "northing": [Y0]})
    bad = pd.DataFrame({"unit_id": ["U1", "U1", "U1", ""],
                        "timestamp": ["not a time", raw["timestamp"].iloc[3], "2025-03-03T09:00:00+00:00",
                                      "2025-03-03T10:05:00+00:00"],
                        "easting": [X0, X0 + 75, X0 + 75, X0], "northing": [Y0, Y0 + 75, Y0 + 75, Y0]})
    kw = {"x_col": "easting", "y_col": "northing"}
    _same(pd.concat([raw.iloc[:5], spike, raw.iloc[5:], bad], ignore_index=True), **kw)
    _same(pd.concat([_pings(range(0, 8)), _pings(range(8, 17), inside=False)]).sort_values("timestamp"), **kw)
    _same(pd.concat([_pings([0, 1, 2]), _pings([200])]), **kw)  # repeated index labels
    lonlat = pd.DataFrame({"unit_id": "U9", "timestamp": [f"2025-07-01 10:{m:02d}:00" for m in range(12)],
                           "longitude": -0.4, "latitude": 51.7})
    _same(lonlat)
    _same(lonlat.astype(str), source="x.csv.gz")


def test_edge_tables_same_as_reference():
    kw = {"x_col": "x", "y_col": "y"}
    empty = pd.DataFrame({"unit_id": pd.Series([], dtype=object), "timestamp": pd.Series([], dtype=object),
                          "x": pd.Series([], dtype=float), "y": pd.Series([], dtype=float)})
    _same(empty, **kw)
    _same(empty.astype(str), **kw)
    allbad = pd.DataFrame({"unit_id": ["", None], "timestamp": ["x", "2025-01-01T00:00:00Z"], "x": [X0, X0],
                           "y": [Y0, Y0]})
    _same(allbad, **kw)
    one = pd.DataFrame({"unit_id": ["A"], "timestamp": ["2025-01-01T00:00:00Z"], "x": [X0], "y": [Y0]})
    _same(one, **kw)
    # times centuries apart: too wide a span for one int64 (unit, time) key -> the pandas path
    wide = pd.DataFrame({"unit_id": ["A", "B", "A", "A", "B", "A", "B"],
                         "timestamp": ["2250-01-01T00:00:00Z", "1700-01-01T00:00:00Z", "1700-01-01T00:00:00Z",
                                       "2250-01-01T00:00:00Z", "1700-01-01T00:00:30Z", "1700-01-01T00:00:10Z",
                                       "1700-01-01T00:01:00Z"],
                         "x": [X0, X0, X0, X0, X0 + 60_000, X0, X0], "y": [Y0] * 7})
    pt = _same(wide, **kw)
    assert pt.reasons() == {"out of order": 2, "duplicate ping": 1, "impossible jump": 1}
    # exactly 70 m/s both ways is not above the limit (kept); a metre more is an impossible jump
    edge = pd.DataFrame({"unit_id": ["A", "A", "A", "B", "B", "B"],
                         "timestamp": [f"2025-01-01T00:0{m}:00Z" for m in (0, 1, 2)] * 2,
                         "x": [X0, X0 + 4_200, X0, X0, X0 + 4_201, X0], "y": Y0})
    assert _same(edge, **kw).reasons() == {"impossible jump": 1}
    # unit ids that sort differently by code point than by first appearance, non-ASCII included
    ids = pd.DataFrame({"unit_id": ["b", "B", "é", "a", "É", "b", "a", "Z9", "z"] * 3,
                        "timestamp": [f"2025-01-01T00:0{i // 9}:{i % 9:02d}Z" for i in range(27)],
                        "x": X0, "y": Y0})
    _same(ids, **kw)
    _same(ids.assign(unit_id=ids["unit_id"].astype(object)), **kw)
    _same(ids.assign(unit_id=np.arange(27) % 4), **kw)  # integer ids
    # unicode spaces around ids, with pandas' python string storage as well as pyarrow's
    odd = ids.assign(unit_id=["\u00a0b", "b\u2003", "\x1cb", "a", " a ", "\t", "\u3000", "b", None] * 3)
    _same(odd, **kw)
    with pd.option_context("mode.string_storage", "python"):
        _same(odd, **kw)
        _same(odd.astype(str), **kw)


def test_bench_like_input_same_as_reference():
    """As bench/bench_patrol.py builds it (typed: str ids, UTC datetimes, BNG floats), with bad rows planted."""
    rng = np.random.default_rng(5)
    n_units, per = 40, 500
    t = (np.datetime64("2025-03-01T00:00:00", "ns").astype(np.int64)
         + (np.tile(np.arange(per), n_units) * 30 + np.repeat(rng.integers(0, 30, n_units), per)) * 10 ** 9)
    raw = pd.DataFrame({"unit_id": np.repeat(np.array([f"U{u:03d}" for u in range(n_units)], dtype=object), per),
                        "timestamp": pd.to_datetime(t, utc=True),
                        "easting": 560_000 + rng.uniform(0, 12_000, n_units * per).cumsum() % 12_000,
                        "northing": 214_000 + rng.uniform(0, 50, n_units * per)})
    k = rng.choice(len(raw), 300, replace=False)
    raw.loc[k[:100], "easting"] += 50_000
    raw.loc[k[100:200], "timestamp"] = raw["timestamp"].iloc[k[100:200] - 1].to_numpy()
    raw.loc[k[200:], "timestamp"] -= pd.Timedelta(minutes=5)
    _same(raw, x_col="easting", y_col="northing")
    _same(raw.sample(frac=1.0, random_state=3), x_col="easting", y_col="northing")  # shuffled file


def test_coordinate_strings_read_as_pandas_reads_them():
    """_to_float (pyarrow for plain decimals) gives pd.to_numeric's doubles bit for bit, column by column."""
    rng = np.random.default_rng(11)
    odd = ["", " 12 ", "+5", "1e5", "1E-3", ".5", "5.", "nan", "inf", "-inf", "Infinity", "0x1A", "1_000", "1,5",
           "-0", "-00", "-0.0", "0", "12345678901234567", "-9223372036854775809", "18446744073709551616", "1e400",
           "abc", "\t-3.25\n", "٣"]
    plain = [f"{v:.{d}f}" for v, d in zip(rng.uniform(-1e6, 1e6, 400), rng.integers(0, 10, 400))]
    plain += [str(v) for v in rng.integers(-10 ** 15 + 1, 10 ** 15, 200)] + [repr(v) for v in rng.normal(0, 1e3, 200)]
    columns = [plain, plain + ["-0"], [str(v) for v in rng.integers(-99, 99, 50)] + ["-0"], plain + [None]]
    columns += [list(rng.choice(plain + odd, 40)) for _ in range(60)] + [[v] for v in odd]
    for col in columns:
        for dt in ("str", "string", object):
            s = pd.Series(col, dtype=dt)
            want = pd.to_numeric(s, errors="coerce").to_numpy(float)
            assert np.array_equal(patrol._to_float(s).view(np.int64), want.view(np.int64)), (dt, col[:5])


def test_random_small_tables_same_as_reference():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    unit = st.sampled_from(["U1", "U2", " U1", "U3", "", None])
    minute = st.one_of(st.integers(0, 12).map(lambda m: f"2025-03-30T00:{50 + m:02d}:00Z" if m < 10
                                              else f"2025-03-30T01:{m - 10:02d}:00Z"),
                       st.sampled_from(["2025-03-30 01:30", "2025-03-30 00:55", "bad", ""]))
    # 4,200 m in a minute is exactly 70 m/s, the default limit (not above it: no jump)
    where = st.sampled_from([(X0, Y0), (X0 + 100, Y0), (X0 + 4_200, Y0), (X0 + 8_400, Y0), (X0 + 60_000, Y0),
                             (X0, Y0 + 90_000), (np.nan, Y0)])

    @settings(max_examples=150, deadline=None, derandomize=True, database=None)
    @given(st.lists(st.tuples(unit, minute, where), min_size=0, max_size=30), st.booleans())
    def check(rows, as_str):
        raw = pd.DataFrame([(u, t, x, y) for u, t, (x, y) in rows], columns=["unit_id", "timestamp", "x", "y"])
        if as_str:
            raw = raw.astype(str)
        _same(raw, x_col="x", y_col="y")

    check()


@pytest.mark.parametrize("case", ["year 3025 string", "year 3000 typed us", "+HH offset among naive"])
def test_times_the_reference_stopped_on_are_rejected_or_read(case):
    """Three inputs on which the earlier implementation (tests/_ref_validate_pings.py) raised or
    wrapped instead of losing nothing: a typo'd year outside what nanoseconds hold, as text and as a
    microsecond datetime column (it used to wrap to 1830 and be called "out of order"), and a
    "+01" offset among naive UK times (it used to stop with "Mixed timezones"). Planted: the bad
    year is rejected as "unparsable time" and the rest accepted; "+01" is read as one hour east
    of UTC (09:00:30 UTC, so behind the unit's 10:00:00 ping: "out of order")."""
    base = {"unit_id": ["A", "A", "A"], "easting": [571200.0, 571210, 571220], "northing": [206400.0, 206410, 206420]}
    if case == "year 3025 string":
        ts = pd.array(["2025-01-01 10:00:00", "3025-01-01 10:00:30", "2025-01-01 10:01:00"], dtype="string")
        want = [(1, "unparsable time")]
    elif case == "year 3000 typed us":
        ts = np.array(["2025-01-01T10:00:00", "3000-01-01T10:00:30", "2025-01-01T10:01:00"], dtype="datetime64[us]")
        want = [(1, "unparsable time")]
    else:
        ts = pd.array(["2025-01-01 10:00:00", "2025-01-01 10:00:30+01", "2025-01-01 10:01:00"], dtype="string")
        want = [(1, "out of order")]
    r = patrol.validate_pings(pd.DataFrame({**base, "timestamp": ts}), x_col="easting", y_col="northing")
    assert [(int(a), b) for a, b in r.rejects[["source_row", "reason"]].to_numpy()] == want
    assert r.frame["t"].astype(str).tolist() == ["2025-01-01 10:00:00+00:00", "2025-01-01 10:01:00+00:00"]
    assert r.read == r.accepted + len(r.rejects) == 3
