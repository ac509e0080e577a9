"""Benchmark: a weekly Grip run for the whole of Essex (12 months of police.uk data).

Compared in one run with the obvious GeoPandas way an analyst would write it
(``sjoin`` of the points onto the 150 m grid, ``groupby`` for harm, ``sjoin`` of the
square centroids onto the towns, sort, head): same squares, same harm, same spots
(checked), timed side by side.

Scenarios: the 14 Essex districts as "towns" (20 spots each = the force-wide list),
and the 7 Grip towns of the tests (3 km around the centre, cut to the district).
Also the whole command (``harmspot grip`` in a child process: store read, ranking,
GeoJSON + plan CSV written) with its peak memory.

Run: ``.venv/bin/python bench/bench_grip.py [--quick] [--repeat N]``
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (SHARED_MACHINE_NOTE, bench_args, best_of, fmt_ratio, fmt_s,  # noqa: E402
                           machine_markdown, md_table, run_child, self_peak_rss_mb, write_result)

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def geopandas_baseline(inc, towns, n=20, cell=150.0):
    """The obvious GeoPandas twin: sjoin points -> squares, groupby, sjoin centroids -> towns, top n."""
    import geopandas as gpd
    import numpy as np

    from geo import BNG
    from geo.grip.spots import PROXY_CATEGORIES
    from geo.core.harm import WeightTable
    from geo.units.lattice import SquareGrid

    df = inc.frame[inc.frame["category"].isin(list(PROXY_CATEGORIES))]
    pts = gpd.GeoDataFrame({"w": WeightTable.builtin().weights_for(df)},
                           geometry=gpd.points_from_xy(df["x"], df["y"]), crs=BNG)
    grid = SquareGrid(cell).frame(towns)
    j = gpd.sjoin(pts, grid[["cell_id", "geometry"]], predicate="within", how="inner")
    agg = j.groupby("cell_id").agg(harm=("w", "sum"), count=("w", "size")).reset_index()
    cells = grid.merge(agg, on="cell_id", how="inner")
    cen = cells.set_geometry(cells.geometry.centroid)
    tj = gpd.sjoin(cen, towns[["name", "geometry"]], predicate="within", how="inner")
    tj = tj[~tj.index.duplicated(keep="first")]
    tj = tj[tj["harm"] > 0].sort_values(["name", "harm", "count", "cell_id"], ascending=[True, False, False, True])
    return tj.groupby("name", sort=False).head(n)[["name", "cell_id", "harm"]].reset_index(drop=True)


def main(argv=None):
    args = bench_args("Grip weekly run for all Essex", argv)
    import geopandas as gpd
    import numpy as np

    from data.boundaries import load_boundary
    from geo import BNG, WGS84
    from geo.grip.spots import select_spots
    from geo.core.incidents.police_uk import read_police_uk
    from geo.core.period import Period
    from services.store.duckdb_store import DuckDBStore

    lad_file = SHARED / "boundaries" / "essex_lad_2013.geojson.gz"
    street = SHARED / "crime" / "essex_street"
    if not lad_file.exists():
        print(f"{lad_file} is absent: the benchmark needs ../shared/data", file=sys.stderr)
        return 1
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lads = load_boundary(lad_file, "LAD13NM")
    tmp = Path(tempfile.mkdtemp(prefix="bench_grip_"))
    t0 = time.perf_counter()
    ing = read_police_uk(street, boundary=lads)
    store_path = tmp / "essex.duckdb"
    st = DuckDBStore(store_path)
    st.set_study_area(lads, "essex_lad_2013")
    st.add_ingest(ing)
    setup_s = time.perf_counter() - t0
    period = Period.parse("2018-03", "2019-02")
    area = st.study_area()
    repeat = 1 if args.quick else args.repeat

    load = best_of(lambda: st.incidents(period=period), repeat=repeat, keep_result=True)
    inc = load.result
    from tests.test_grip_real import TOWNS  # the seven Grip towns (centres) used in the real tests

    pts = gpd.GeoSeries(gpd.points_from_xy([t[2] for t in TOWNS], [t[3] for t in TOWNS]), crs=WGS84).to_crs(BNG)
    lad_idx = lads.set_index("name")
    seven = gpd.GeoDataFrame({"name": [t[0] for t in TOWNS]},
                             geometry=[p.buffer(3000).intersection(lad_idx.loc[t[1], "geometry"])
                                       for p, t in zip(pts, TOWNS)], crs=BNG)
    scenarios = [("14 districts (all Essex)", lads[["name", "geometry"]]), ("7 Grip towns", seven)]
    rows, checks = [], []
    for label, towns in scenarios:
        ours = best_of(lambda: select_spots(inc, towns, n=20, period=period, area=area), repeat=repeat,
                       keep_result=True)
        base = best_of(lambda: geopandas_baseline(inc.filter(area=area.union_all()), towns), repeat=repeat,
                       keep_result=True)
        lay = ours.result.layer
        same = set(lay["spot_id"]) == set(base.result["cell_id"])
        harm_ok = bool(np.isclose(lay["harm"].sum(), base.result["harm"].sum(), rtol=1e-9))
        checks.append(f"{label}: same spots as the GeoPandas twin: {same}; same total harm: {harm_ok}")
        rows.append([label, len(towns), len(lay), f"{len(inc):,}", fmt_s(ours.best), fmt_s(base.best),
                     fmt_ratio(base.best / ours.best)])
        print(label, ours.best, base.best, same, harm_ok, file=sys.stderr)

    # the whole command, in a child process (the store is closed first: DuckDB locks the file)
    import json

    st.close()

    towns_file = tmp / "lads.geojson"
    lads[["name", "geometry"]].to_file(towns_file, driver="GeoJSON")
    cli = run_child([sys.executable, "-c", "from services.cli import main; main()", "grip", "--store", store_path,
                     "--towns", towns_file, "--name-col", "name", "--n", "20", "--cell", "150", "--from", "2018-03",
                     "--to", "2019-02", "--out", tmp / "grip.geojson", "--plan", tmp / "plan.csv", "--json"])
    js = json.loads(cli.stdout.strip().splitlines()[-1]) if cli.returncode == 0 else {}

    import geopandas
    import shapely

    text = "\n".join([
        "## Grip harm spots: weekly run for all Essex",
        "",
        machine_markdown(libs=("numpy", "pandas", "geopandas", "shapely", "duckdb", "scipy")),
        "",
        f"Data: data.police.uk Essex street crime, 12 months with data in 2018-03..2019-02 "
        f"({len(inc):,} incidents of all types read from the DuckDB store; outcome = police.uk proxy "
        "Violence and sexual offences + Robbery + Possession of weapons), 150 m squares, 20 spots per town. "
        f"Store built once before timing ({fmt_s(setup_s)}, not timed). Best of {repeat} repeat(s).",
        "",
        md_table(["scenario", "towns", "spots", "incidents", "harmspot select_spots",
                  "GeoPandas sjoin twin", "ratio (twin / harmspot)"], rows),
        "",
        f"- Reading the 12 months from the store (`DuckDBStore.incidents`): {fmt_s(load.best)}.",
        f"- Whole command `harmspot grip` for the 14 districts (child process: start-up, imports, store read, "
        f"ranking, trend, plan, GeoJSON + plan CSV): {fmt_s(cli.wall_s)} wall, peak RSS {cli.peak_rss_mb:.0f} MiB, "
        f"exit code {cli.returncode}, {js.get('spots', 'n/a')} spots.",
        f"- Peak RSS of this benchmark process: {self_peak_rss_mb():.0f} MiB.",
        *[f"- Check: {c}" for c in checks],
        "- The GeoPandas twin only ranks (no trend, location label, plan or concentration curve); "
        "harmspot's time includes those.",
        "",
        SHARED_MACHINE_NOTE,
    ])
    print(text)
    if not args.no_write:
        print(f"wrote {write_result('grip', text)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
