"""Foundation: readers, validation, weights, units, store and CLI on seeded synthetic data.

The synthetic town (geo.synth.town.make_town, seed 42) is planted truth: we know every incident's exact
position, category and time, and the force export's bad rows carry the reason they must be rejected for.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geo.units.counts import count_units, unit_window_matrix
from geo.core.errors import NotACrimeTableError, PeriodError, WeightTableError
from geo.core.harm import WeightTable
from geo.core.incidents.table import IncidentTable
from geo.core.incidents.police_uk import read_police_uk
from geo.core.incidents.force import read_table
from geo.core.period import Period
from geo.units.h3 import H3Units
from geo.units.lattice import Lattice, SquareGrid
from geo.units.polygons import PolygonUnits


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-c", "from services.cli import main; main()", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


# ------------------------------------------------------------------------------------------ readers

def test_force_export_rejects_every_bad_kind(tmp_path, town):
    export, mapping = town.force_export(bad_rows=True)
    csv = tmp_path / "export.csv"
    export.drop(columns="expected_reason").to_csv(csv, index=False)
    r = read_table(csv, mapping, boundary=town.boundary)
    assert r.read == len(export) == len(r.accepted) + r.rejected
    assert r.rejected == 6
    got = dict(zip(r.rejects["URN"], r.rejects["reason"]))
    for urn, reason in zip(export["URN"], export["expected_reason"]):
        if reason:
            # the duplicate row carries the id of row 1, so it shows up under that id
            key = urn if reason != "duplicate id" else export["URN"].iloc[0]
            assert got.get(key) == reason or (reason == "duplicate id" and "duplicate id" in got.values())
    # rows kept as they came: the unparsable northing is still the text it was
    bad = r.rejects[r.rejects["reason"] == "unparsable coordinates"].iloc[0]
    assert bad["Northing"] == "north-ish" and bad["field"] == "Easting/Northing"
    assert bad["source_row"] == len(export) - 6 + 2 + 1  # header is line 1; second bad row
    # times, codes and flags survive
    f = r.accepted.frame
    assert r.accepted.has_times
    truth = town.incidents.set_index("incident_id")
    one = f.iloc[100]
    t = truth.loc[one["incident_id"]]
    assert one["occurred_at"] == t["occurred_at"]
    assert abs(one["x"] - t["x"]) <= 0.05 + 1e-9 and one["category"] == t["category"]
    assert bool(one["domestic"]) == bool(t["domestic"])


def test_force_export_in_several_files_rejects_ids_repeated_across_them(tmp_path, town):
    """A force export split over two files (one per half-year, say) with 150 ids repeated in the second:
    reference = pandas ``duplicated`` over both files (first occurrence kept). Each repeat is reported
    as a "duplicate id" reject of the second file, nothing is lost (read = accepted + rejected), the
    CLI loads both in one call (it used to stop on the store's key constraint and write nothing),
    and a second load adds 0. Data: the SYNTHETIC town (seed 42)."""
    export, mapping = town.force_export()
    export = export.drop(columns="expected_reason")
    a, b = export.iloc[:1500], pd.concat([export.iloc[1500:3000], export.iloc[200:350]], ignore_index=True)
    fa, fb = tmp_path / "h1.csv", tmp_path / "h2.csv"
    a.to_csv(fa, index=False)
    b.to_csv(fb, index=False)
    both = pd.concat([a, b], ignore_index=True)
    repeated = both["URN"].duplicated()
    r = read_table([fa, fb], mapping, boundary=town.boundary)
    assert r.read == len(both) == len(r.accepted) + r.rejected
    dup = r.rejects[r.rejects["reason"] == "duplicate id"]
    assert len(dup) == int(repeated.sum()) == 150
    assert set(dup["URN"]) == set(both.loc[repeated, "URN"]) and (dup["source_file"] == str(fb)).all()
    assert r.accepted.frame["incident_id"].is_unique
    # the same through the CLI, twice
    toml = tmp_path / "mapping.toml"
    lines = ["[columns]"] + [f'{k} = "{v}"' for k, v in mapping["columns"].items()] + ["[flags]"]
    lines += [f'{k} = "{v}"' for k, v in mapping["flags"].items()]
    toml.write_text("\n".join(lines) + "\n")
    store = tmp_path / "s.duckdb"
    runs = [run_cli("ingest", fa, fb, "--mapping", toml, "--store", store, "--json") for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr
    first, second = (json.loads(x.stdout.strip().splitlines()[-1]) for x in runs)
    assert first["read"] == len(both) and first["reasons"].get("duplicate id") == 150
    assert first["added"] == first["accepted"] and second["added"] == 0


def test_force_export_missing_columns_fails_naming_them(tmp_path, town):
    export, mapping = town.force_export()
    csv = tmp_path / "export.csv"
    export.drop(columns=["Easting", "expected_reason"]).to_csv(csv, index=False)
    with pytest.raises(NotACrimeTableError, match=r"export\.csv: .*missing column\(s\) 'Easting'"):
        read_table(csv, mapping)


def test_not_a_crime_table_cli_exit_2(tmp_path):
    p = tmp_path / "shopping.csv"
    p.write_text("item,price\napples,2\n")
    r = run_cli("ingest", p, "--store", tmp_path / "s.duckdb", "--format", "police-uk")
    assert r.returncode == 2
    assert "shopping.csv" in r.stderr and "'Crime ID'" in r.stderr and "'Crime type'" in r.stderr


def test_police_uk_reader_from_zip_and_dedup(tmp_path, town):
    import zipfile

    frames = town.police_uk_frames()
    z = tmp_path / "download.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for m, f in frames.items():
            zf.writestr(f"{m}/{m}-harmstead-street.csv", f.to_csv(index=False))
    r = read_police_uk(z, boundary=town.boundary)
    assert r.read == sum(len(f) for f in frames.values()) == len(town.incidents)
    assert r.rejected == 0
    asb = r.accepted.frame.query("category == 'Anti-social behaviour'")
    assert len(asb) == (town.incidents["category"] == "Anti-social behaviour").sum()
    assert asb["incident_id"].is_unique  # identical ASB rows at one snapped point still get distinct ids

    from services.store.duckdb_store import DuckDBStore

    with DuckDBStore(tmp_path / "s.duckdb") as st:
        s1 = st.add_ingest(r)
        s2 = st.add_ingest(read_police_uk(z, boundary=town.boundary))
        assert (s1.added, s2.added, s2.duplicates) == (len(r.accepted), 0, len(r.accepted))


def test_police_uk_bad_values_rejected_with_field(tmp_path, town):
    f = next(iter(town.police_uk_frames().values())).head(10).copy().astype(object)
    f.loc[1, "Longitude"] = ""
    f.loc[2, "Latitude"] = "fifty-one"
    f.loc[3, "Month"] = "2025-13"
    f.loc[4, "Crime type"] = "Jaywalking"
    f.loc[5, "Crime ID"] = f.loc[6, "Crime ID"] = "abc"  # same id twice
    p = tmp_path / "m.csv"
    f.to_csv(p, index=False)
    r = read_police_uk(p)
    reasons = dict(zip(r.rejects["source_row"], zip(r.rejects["reason"], r.rejects["field"])))
    assert reasons == {
        3: ("missing coordinates", "Longitude/Latitude"),
        4: ("unparsable coordinates", "Longitude/Latitude"),
        5: ("unparsable date", "Month"),
        6: ("unknown category", "Crime type"),
        8: ("duplicate id", "id"),
    }
    assert len(r.accepted) == 5


def _planted_police_uk(tmp_path, town):
    """Three police.uk files written record by record with Python's csv module, with planted bad rows.

    Returns (paths, {path: [record text, ...]} (header first), {(path, line): (reason, field)}).
    """
    import csv
    import gzip
    import io

    frames = list(town.police_uk_frames().values())[:3]
    a, b, c = (f.astype(str).copy() for f in frames)
    cid = a["Crime ID"]
    keep = [j for j in range(20, len(a)) if cid.iloc[j] != ""][0]  # an accepted row of file A
    plant_a = {
        1: ({"Longitude": "", "Location": 'On or near "Rue de l\'Église", Saint-Étienne'},
            ("missing coordinates", "Longitude/Latitude")),
        2: ({"Latitude": "fifty-one, north"}, ("unparsable coordinates", "Longitude/Latitude")),
        3: ({"Month": "2025-13", "Location": "Ffordd Ŵyn, Caerdydd 😀"}, ("unparsable date", "Month")),
        4: ({"Crime type": "Jaywalking"}, ("unknown category", "Crime type")),
        5: ({"Crime ID": "dup-A"}, None),
        6: ({"Crime ID": "dup-A", "Location": "second, \"same\" id"}, ("duplicate id", "id")),
        7: ({"Longitude": "10.0", "Latitude": "60.0", "Location": "  padded, with spaces  "},
            ("outside study area", "coordinates")),
        8: ({"Longitude": "NA", "Last outcome category": "Line one\nline two, more"},
            ("missing coordinates", "Longitude/Latitude")),
    }
    plant_b = {
        0: ({"Crime ID": cid.iloc[keep], "Location": "Même id qu'un fichier antérieur, «A»"},
            ("duplicate id", "id")),  # first occurrence in file A: found across files
        1: ({"Latitude": " 95 "}, ("unparsable coordinates", "Longitude/Latitude")),
    }
    paths, records, expected = [], {}, {}
    for name, f, plant in (("2025-01-street.csv", a, plant_a), ("2025-02-street.csv.gz", b, plant_b),
                           ("2025-03-street.csv", c, {})):
        path = tmp_path / "in" / name
        path.parent.mkdir(exist_ok=True)
        for i, (values, why) in plant.items():
            for col, v in values.items():
                f.loc[i, col] = v
            if why:
                expected[(str(path), i + 2)] = why
        recs = []
        for row in [list(f.columns)] + f.values.tolist():
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerow(row)
            recs.append(buf.getvalue())
        text = "".join(recs)
        if name.endswith(".gz"):
            path.write_bytes(gzip.compress(text.encode("utf-8")))
        else:
            path.write_bytes(text.encode("utf-8"))
        paths.append(path)
        records[str(path)] = recs
    return paths, records, expected


def test_rejects_file_holds_the_input_records_byte_for_byte(tmp_path, town):
    """Rejected rows are written exactly as they came, with reason, field, file and line.

    Reference: the input files themselves. Each file is written record by record with Python's csv module
    (quoted fields with commas and quotes, non-ASCII text, padded values, an embedded newline), with planted
    bad rows of every police.uk reason, a duplicate id within a file and one whose first occurrence is in an
    earlier file. The rejects file must be, byte for byte, the input header plus, for each planted row in
    file and line order, the input record followed by ``,reason,field,source_file,source_row``; the store's
    ``rejects`` table must hold the same fields, and a second load of the same files adds nothing.
    """
    import csv
    import io

    from services.store.duckdb_store import DuckDBStore

    paths, records, expected = _planted_police_uk(tmp_path, town)
    r = read_police_uk(tmp_path / "in", boundary=town.boundary)
    assert r.read == sum(len(v) - 1 for v in records.values()) == len(r.accepted) + r.rejected
    got = dict(zip(zip(r.rejects["source_file"], r.rejects["source_row"]), zip(r.rejects["reason"], r.rejects["field"])))
    assert got == expected
    header = records[str(paths[0])][0]
    want = [header.rstrip("\n") + ",reason,field,source_file,source_row\n"]
    order = {str(p): k for k, p in enumerate(paths)}
    for (path, line), (reason, field) in sorted(expected.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])):
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow([reason, field, path, line])
        want.append(records[path][line - 1].rstrip("\n") + "," + buf.getvalue())
    with DuckDBStore(tmp_path / "s.duckdb") as st:
        s1 = st.add_ingest(r, rejects_dir=tmp_path / "rej")
        assert open(s1.rejects_file, "rb").read() == "".join(want).encode("utf-8")
        rows = st.rejects(s1.batch_id).sort_values(["source_file", "source_row"], key=lambda s: s.map(str))
        cols = next(csv.reader(io.StringIO(header)))
        for _, row in rows.iterrows():
            rec = next(csv.reader(io.StringIO(records[row["source_file"]][row["source_row"] - 1])))
            assert json.loads(row["raw"]) == dict(zip(cols, rec))
            assert (row["reason"], row["field"]) == expected[(row["source_file"], row["source_row"])]
        s2 = st.add_ingest(read_police_uk(tmp_path / "in", boundary=town.boundary), rejects_dir=tmp_path / "rej")
        assert (s2.added, s2.duplicates) == (0, len(r.accepted))
        assert open(s2.rejects_file, "rb").read() == open(s1.rejects_file, "rb").read()


@pytest.mark.parametrize("collide", [False, True])
def test_cross_file_duplicates_equal_pandas_duplicated(monkeypatch, collide):
    """Duplicate ids across files: the first occurrence in file order is kept, exactly.

    Reference: ``pandas.Series.duplicated(keep="first")`` on the concatenated ids (what the reader did before
    it decided file by file), with missing ids never duplicates. ``collide`` makes every 64-bit hash equal, so
    the exact text comparison of hash-colliding rows is what decides.
    """
    import geo.core.incidents.validate as gi

    if collide:
        monkeypatch.setattr(gi.pd.util, "hash_pandas_object",
                            lambda s, index=False: pd.Series(np.zeros(len(s), dtype="uint64")))
    rng = np.random.default_rng(7)
    for trial in range(60):
        vocab = np.array(["a", "b", "é,\"x\"", "a ", "", "puk-1", "puk-2"], dtype=object)
        parts = []
        for _ in range(rng.integers(1, 5)):
            vals = list(rng.choice(vocab, rng.integers(0, 12)))
            vals = [None if rng.random() < 0.1 else v for v in vals]
            parts.append(pd.Series(vals, dtype=rng.choice(["string", "str", object])))
        got = gi._later_duplicates(parts)
        ids = pd.concat([p.astype("string") for p in parts], ignore_index=True) if parts else pd.Series([], dtype="string")
        want = ids.duplicated(keep="first").to_numpy(bool) & ids.notna().to_numpy(bool)
        assert (got == want).all(), (trial, [list(p) for p in parts])


# ------------------------------------------------------------------------------------------ weights

def test_weights_cchi_values_and_proactive_rule():
    wt = WeightTable.builtin("cchi-essex-2026")
    f = pd.DataFrame({"category": ["Robbery", "Drugs", "Anti-social behaviour", "Possession of weapons",
                                   "Violence and sexual offences"], "offence_code": [pd.NA] * 5})
    # ../shared/data/harm_weights/cchi_by_police_uk_crime_type_essex.csv; proactive types weigh 0 by default
    assert wt.weights_for(f).tolist() == [365.0, 0.0, 0.0, 0.0, 191.9]
    assert wt.with_proactive(True).weights_for(f).tolist() == [365.0, 3.72, 1.0, 273.75, 191.9]
    d = wt.describe()
    assert d["name"] == "cchi-essex-2026" and d["version"] and "Cambridge" in d["source"]


def test_weights_per_ho_code_with_fallback(tmp_path):
    p = tmp_path / "cchi_codes.csv"
    p.write_text("# my CCHI export\noffence_code,offence,weight\n8N,Assault with injury,365\n105A,Assault without injury,10\n")
    wt = WeightTable.from_file(p, fallback=WeightTable.builtin())
    f = pd.DataFrame({"category": ["Violence and sexual offences"] * 3, "offence_code": ["8n", "105A", "19C"]})
    # 19C is not in the user's table -> falls back to the category weight (national CCHI VSO 194.21)
    assert wt.weights_for(f).tolist() == [365.0, 10.0, 194.21]
    # codes are matched trimmed and upper-cased; a missing code falls back; a proactive category weighs 0
    # unless proactive (the code's own weight counts, else the fallback's: with_proactive reaches it too)
    g = pd.DataFrame({"category": pd.array(["Violence and sexual offences", "Robbery", "Drugs", "Drugs", None],
                                           dtype="string"),
                      "offence_code": pd.array([" 105a ", None, "8N", None, "8N"], dtype="string")})
    assert wt.weights_for(g).tolist() == [10.0, 365.0, 0.0, 0.0, 365.0]
    assert wt.with_proactive(True).weights_for(g).tolist() == [10.0, 365.0, 365.0, 3.66, 365.0]


def test_weights_bad_file_names_row(tmp_path):
    p = tmp_path / "w.csv"
    p.write_text("category,weight\nRobbery,365\nBurglary,-3\n")
    with pytest.raises(WeightTableError, match="negative 'weight'; first at data row 2"):
        WeightTable.from_file(p)


# ------------------------------------------------------------------------------------------ units

def test_square_ids_name_the_same_ground():
    g = SquareGrid(150)
    assert g.ids(np.array([571234 // 150]), np.array([206499 // 150]))[0] == "150m_E571200_N206400"
    rng = np.random.default_rng(0)
    xy = rng.uniform([500_000, 180_000], [520_000, 200_000], (5000, 2))
    frame = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1]})
    # two different study areas give the same id for the same point
    a = g.frame(points_xy=xy)
    b = g.frame(points_xy=np.vstack([xy, [[400_000, 100_000]]]))
    ia = a["cell_id"].to_numpy()[g.assign(frame, a)]
    ib = b["cell_id"].to_numpy()[g.assign(frame, b)]
    assert (ia == ib).all()
    # naive reference: floor division per point
    ref = [f"150m_E{int(x // 150) * 150}_N{int(y // 150) * 150}" for x, y in xy[:50]]
    assert list(ia[:50]) == ref


def test_lattice_bincount_equals_histogram2d():
    rng = np.random.default_rng(1)
    x, y = rng.uniform(0, 3000, 10_000), rng.uniform(0, 2000, 10_000)
    lat = Lattice.from_bounds(100, (0, 0, 2999.9, 1999.9))
    ref, _, _ = np.histogram2d(y, x, bins=[np.arange(0, 2001, 100), np.arange(0, 3001, 100)])
    assert np.array_equal(lat.bincount(x, y), ref)


def _binning_path(monkeypatch, path: str):
    """Select one binning path of geo.units.lattice.Lattice: the numpy path with default or tiny blocks
    (tiny ones force the multi-block, multi-thread code), or the compiled kernel (geo/_binning.c)
    on one thread or split over three. The kernel is built at install where a C compiler is
    present; without it the kernel cases skip, except under CI where it must be built."""
    import geo.units.lattice as U

    if path.startswith("numpy"):
        monkeypatch.setattr(U, "_kernel", None)
        if path == "numpy-small-blocks":
            monkeypatch.setattr(U, "_BIN_BLOCK", 64)
            monkeypatch.setattr(U, "_BIN_STEP", 16)
    else:
        if U._kernel is None:
            msg = "the compiled binning kernel geo._binning is not built (no C compiler at install?)"
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(msg + " - under CI it must be built")
            pytest.skip(msg)
        if path == "kernel-threads":
            monkeypatch.setattr(U, "_KERNEL_SPLIT", 100)
    monkeypatch.setattr(U, "_cpu_threads", lambda: 3)


def _binning_reference(lat, x, y):
    """The plain definition: floor(x / cell) with explicit range tests, in numpy, per point."""
    with np.errstate(invalid="ignore"):
        cx, cy = np.floor(x / lat.cell) - lat.ix0, np.floor(y / lat.cell) - lat.iy0
        ok = (cx >= 0) & (cx < lat.nx) & (cy >= 0) & (cy < lat.ny)
    return ok, np.where(ok, np.nan_to_num(cy * lat.nx + cx), -1).astype(np.int64)


BINNING_PATHS = ["numpy", "numpy-small-blocks", "kernel", "kernel-threads"]


@pytest.mark.parametrize("path", BINNING_PATHS)
def test_lattice_binning_equals_the_definition(monkeypatch, path):
    """Reference: :func:`_binning_reference`. Exact equality for counts, flat codes and lookups;
    weighted sums to 1e-12 (blocks and threads add in a different order). Points exactly on
    cell edges, one ulp either side of them, off the lattice, NaN and +-inf are all planted."""
    import geo.units.lattice as U

    _binning_path(monkeypatch, path)
    rng = np.random.default_rng(7)
    lat = Lattice(150.0, 3400, 1200, 7, 5)
    n = 5_003
    x = rng.uniform(lat.ix0 * 150 - 400, (lat.ix0 + lat.nx) * 150 + 400, n)
    y = rng.uniform(lat.iy0 * 150 - 400, (lat.iy0 + lat.ny) * 150 + 400, n)
    x[:40] = (lat.ix0 + rng.integers(-1, lat.nx + 2, 40)) * 150.0  # exactly on cell edges
    y[40:80] = (lat.iy0 + rng.integers(-1, lat.ny + 2, 40)) * 150.0
    x[90:130] = np.nextafter((lat.ix0 + rng.integers(0, lat.nx + 1, 40)) * 150.0, -np.inf)  # one ulp below
    y[130:170] = np.nextafter((lat.iy0 + rng.integers(0, lat.ny + 1, 40)) * 150.0, np.inf)  # one ulp above
    x[80], y[81], x[82], y[83], x[84] = np.nan, np.inf, -np.inf, np.nan, 1e300
    w = rng.uniform(0, 5, n)
    ok, ref = _binning_reference(lat, x, y)
    assert 0 < ok.sum() < n - 100
    assert np.array_equal(lat.flat(x, y), ref)
    counts = np.bincount(ref[ok], minlength=lat.size).reshape(lat.ny, lat.nx)
    got = lat.bincount(x, y)
    assert got.dtype == np.int64 and np.array_equal(got, counts)
    sums = np.bincount(ref[ok], w[ok], minlength=lat.size).reshape(lat.ny, lat.nx)
    np.testing.assert_allclose(lat.bincount(x, y, w), sums, rtol=1e-12)
    table = rng.permutation(lat.size)
    assert np.array_equal(lat.lookup(x, y, table), np.where(ok, table[np.maximum(ref, 0)], -1))
    assert lat.bincount(x[:0], y[:0]).shape == (lat.ny, lat.nx)
    assert lat.flat(x[:0], y[:0]).shape == (0,)
    # non-contiguous float32 input, a scalar y broadcast against x, a scalar weight
    with np.errstate(over="ignore"):
        xs = x.astype(np.float32)[::2]
    ok2, ref2 = _binning_reference(lat, xs.astype(float), y[::2])
    assert np.array_equal(lat.flat(xs, y[::2]), ref2)
    y0 = (lat.iy0 + 2.5) * 150.0
    ok3, ref3 = _binning_reference(lat, x, np.full(n, y0))
    assert np.array_equal(lat.flat(x, y0), ref3)
    np.testing.assert_allclose(lat.bincount(x, y, 2.0), 2 * counts, rtol=1e-12)
    if path == "kernel-threads":  # the split really happened
        assert len(lat._kernel_parts(x, y)[2]) == 3
        assert U._kernel is not None


@pytest.mark.parametrize("path", ["numpy", "kernel-threads"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_lattice_binning_property(monkeypatch, path, data):
    """Any cell size (also fractional), any lattice origin (also negative), coordinates drawn
    around and on the lattice edges: codes equal :func:`_binning_reference` exactly."""
    _binning_path(monkeypatch, path)
    cell = data.draw(st.sampled_from([150.0, 0.1, 7.3, 1e-3, 2500.0]))
    ix0 = data.draw(st.integers(-10**6, 10**6))
    iy0 = data.draw(st.integers(-10**6, 10**6))
    nx, ny = data.draw(st.integers(1, 9)), data.draw(st.integers(1, 9))
    lat = Lattice(cell, ix0, iy0, nx, ny)
    n = data.draw(st.integers(0, 400))
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x = (ix0 + rng.uniform(-2, nx + 2, n)) * cell
    y = (iy0 + rng.uniform(-2, ny + 2, n)) * cell
    edge = rng.random(n) < 0.3  # snap some to edges, then nudge a few by one ulp
    x[edge] = (ix0 + np.round(rng.uniform(-1, nx + 1, edge.sum()))) * cell
    nudge = rng.random(n) < 0.1
    x[nudge] = np.nextafter(x[nudge], np.where(rng.random(nudge.sum()) < 0.5, -np.inf, np.inf))
    ok, ref = _binning_reference(lat, x, y)
    assert np.array_equal(lat.flat(x, y), ref)
    assert np.array_equal(lat.bincount(x, y).ravel(), np.bincount(ref[ok], minlength=lat.size))


def test_binning_kernel_rejects_bad_buffers():
    """The compiled kernel checks what it is given (lengths, lattice) instead of reading past
    an array's end."""
    import geo.units.lattice as U

    if U._kernel is None:
        pytest.skip("the compiled binning kernel geo._binning is not built")
    x = np.zeros(10)
    out = np.zeros(6, np.int64)
    with pytest.raises(ValueError, match="bad lattice"):
        U._kernel.accumulate(x, np.zeros(9), 1.0, 0, 0, 2, 3, None, out)
    with pytest.raises(ValueError, match="out must hold"):
        U._kernel.accumulate(x, x, 1.0, 0, 0, 2, 2, None, out)
    with pytest.raises(ValueError, match="weights one float64"):
        U._kernel.accumulate(x, x, 1.0, 0, 0, 2, 3, np.zeros(3), out)
    with pytest.raises(ValueError, match="bad lattice"):
        U._kernel.accumulate(x, x, 0.0, 0, 0, 2, 3, None, out)
    with pytest.raises(ValueError, match="table must hold"):
        U._kernel.lookup(x, x, 1.0, 0, 0, 2, 3, np.zeros(5, np.int64), np.zeros(10, np.int64))
    with pytest.raises(ValueError, match="lookup table has 5 values"):
        Lattice(1.0, 0, 0, 2, 3).lookup(x, x, np.zeros(5, np.int64))


def test_h3_assign_matches_h3_library(town):
    import h3

    f = IncidentTable.from_frame(town.incidents.assign(lon=0.0, lat=0.0))
    from pyproj import Transformer

    lon, lat = Transformer.from_crs(27700, 4326, always_xy=True).transform(town.incidents["x"], town.incidents["y"])
    frame = f.frame.assign(lon=lon, lat=lat)
    u = H3Units(9)
    units = u.frame(town.boundary, np.c_[lon, lat])
    pos = u.assign(frame, units)
    assert (pos >= 0).all()
    got = units["cell_id"].to_numpy()[pos[:200]]
    ref = [h3.latlng_to_cell(la, lo, 9) for lo, la in zip(lon[:200], lat[:200])]
    assert list(got) == ref


def test_polygon_units_match_geopandas_sjoin(town):
    import geopandas as gpd

    units = PolygonUnits(town.towns, "name")
    f = IncidentTable.from_frame(town.incidents).frame
    pos = units.assign(f, units.frame())
    pts = gpd.GeoDataFrame(geometry=gpd.points_from_xy(f["x"], f["y"]), crs=27700)
    ref = gpd.sjoin(pts, town.towns, predicate="within", how="left")["index_right"].fillna(-1).to_numpy(int)
    assert np.array_equal(pos, ref)


def test_count_units_planted_counts(town):
    """Planted truth: total count = incidents in area; harm = sum of weights; zero cells included."""
    inc = IncidentTable.from_frame(town.incidents.assign(lon=0.0, lat=0.0))
    wt = WeightTable.builtin()
    res = count_units(inc, SquareGrid(150), wt, area=town.boundary)
    assert res.layer["count"].sum() == len(inc)
    assert res.layer["harm"].sum() == pytest.approx(wt.weights_for(inc.frame).sum())
    assert (res.layer["count"] == 0).any()
    assert res.weight_table["name"] == "cchi-national-2026"
    assert res.metadata()["params"]["cell_m"] == 150.0


def test_unit_window_matrix_sums(town):
    inc = IncidentTable.from_frame(town.incidents.assign(lon=0.0, lat=0.0))
    g = SquareGrid(500)
    units = g.frame(town.boundary)
    counts, harm, labels = unit_window_matrix(inc, g, units, "M")
    assert labels[0] == "2025-01" and len(labels) == 12
    assert counts.sum() == len(inc)
    monthly = town.incidents["occurred_at"].dt.strftime("%Y-%m").value_counts().sort_index().to_numpy()
    assert np.array_equal(counts.sum(axis=0), monthly)
    counts14, _, _ = unit_window_matrix(inc, g, units, "14D")
    assert counts14.sum() == len(inc)


# ------------------------------------------------------------------------------------------ periods

def test_periods():
    p = Period.parse("2018-01", "2018-06")
    assert (p.start.isoformat(), p.end.isoformat(), len(p.months)) == ("2018-01-01", "2018-06-30", 6)
    prev = p.previous()
    assert (prev.start.isoformat(), prev.end.isoformat()) == ("2017-07-01", "2017-12-31")
    d = Period.parse("2025-03-01", "2025-03-14").previous()
    assert (d.start.isoformat(), d.end.isoformat()) == ("2025-02-15", "2025-02-28")
    with pytest.raises(PeriodError, match="expected YYYY-MM"):
        Period.parse("March")
    with pytest.raises(PeriodError, match="before it starts"):
        Period.parse("2019-01", "2018-01")


# ------------------------------------------------------------------------------------------ CLI

def test_cli_ingest_and_cells_end_to_end(tmp_path, town):
    d = tmp_path / "pu"
    d.mkdir()
    for m, f in town.police_uk_frames().items():
        f.to_csv(d / f"{m}-x-street.csv", index=False)
    town.boundary.to_file(tmp_path / "area.gpkg")
    store = tmp_path / "s.duckdb"
    r = run_cli("ingest", d, "--store", store, "--boundary", tmp_path / "area.gpkg", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["read"] == s["accepted"] + s["rejected"] == len(town.incidents)
    assert set(s) >= {"read", "accepted", "rejected", "duplicates", "rejects_file"}
    r2 = run_cli("ingest", d, "--store", store, "--json")
    s2 = json.loads(r2.stdout.strip().splitlines()[-1])
    assert s2["duplicates"] == s["accepted"] and s2["added"] == 0
    for out in ("c.gpkg", "c.geojson", "c.csv", "c.parquet"):
        r3 = run_cli("cells", "--store", store, "--from", "2025-01", "--to", "2025-06", "--category",
                     "violent-crime", "--out", tmp_path / out, "--json")
        assert r3.returncode == 0, r3.stderr
        assert "cell size set to 150 m automatically" in r3.stderr
        assert "cchi-national-2026" in r3.stderr
    import geopandas as gpd

    g = gpd.read_file(tmp_path / "c.gpkg")
    assert {"cell_id", "count", "harm", "geometry"} <= set(g.columns) and g.crs.to_epsg() == 27700
    months = {f"2025-0{i}" for i in range(1, 7)}
    truth = town.incidents[(town.incidents["category"] == "Violence and sexual offences")
                           & town.incidents["occurred_at"].dt.strftime("%Y-%m").isin(months)]
    # snapped police.uk points can land just over the district edge: accepted within the border tolerance,
    # not counted in cells, and reported (never silently dropped)
    last = json.loads(r3.stdout.strip().splitlines()[-1])
    assert g["count"].sum() + last["outside_area"] == len(truth)
    assert last["outside_area"] <= 5
    gj = gpd.read_file(tmp_path / "c.geojson")
    assert gj.crs.to_epsg() == 4326 and len(gj) == len(g)
    meta = json.loads((tmp_path / "c.gpkg.meta.json").read_text())
    assert meta["period"]["start"] == "2025-01-01" and meta["weight_table"]["name"] == "cchi-national-2026"


def test_every_command_has_help_with_example():
    import typer

    from services.cli import app

    root = typer.main.get_command(app)

    def walk(cmd, path):
        if getattr(cmd, "commands", None):
            for name, sub in cmd.commands.items():
                yield from walk(sub, path + [name])
        else:
            yield path, cmd

    seen = 0
    for path, cmd in walk(root, []):
        text = (cmd.epilog or "") + (cmd.help or "")
        assert "Example: harmspot " + path[0] in text, f"harmspot {' '.join(path)} --help lacks an example"
        seen += 1
    assert seen >= 4


def test_period_errors_are_exit_2(tmp_path, town_store):
    town_store.close()  # one DuckDB writer per file: hand it to the CLI process
    r = run_cli("cells", "--store", town_store.url, "--from", "March", "--out", tmp_path / "x.gpkg")
    assert r.returncode == 2 and "expected YYYY-MM" in r.stderr


@pytest.mark.parametrize("ext", ["parquet", "gpkg"])
def test_force_export_parquet_and_geopackage(tmp_path, town, ext):
    import geopandas as gpd

    export, mapping = town.force_export(bad_rows=True)
    export = export.drop(columns="expected_reason")
    p = tmp_path / f"export.{ext}"
    if ext == "parquet":
        export.astype(str).to_parquet(p)
    else:
        g = gpd.GeoDataFrame(export.astype(str), geometry=gpd.points_from_xy(
            pd.to_numeric(export["Easting"], errors="coerce").fillna(0),
            pd.to_numeric(export["Northing"], errors="coerce").fillna(0)), crs=27700)
        g.to_file(p, layer="crimes")
        mapping = {**mapping, "table": {"layer": "crimes"}}
    r = read_table(p, mapping, boundary=town.boundary)
    assert r.read == len(export) and r.rejected == 6 and len(r.accepted) == len(town.incidents)
