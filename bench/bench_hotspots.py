"""Benchmark: harmspot KDE and Gi* against the best existing tools, side by side in one run.

* KDE of 1M (and 10M unless --quick) SYNTHETIC points onto a 600 x 600 grid of 100 m cells:
  harmspot's binned FFT (with the second-order binning correction) vs KDEpy ``FFTKDE``
  on the same grid; error of both against the exact kernel sum at sampled cells.
* Gi* on the 600 x 600 lattice with a 300 m band: harmspot lattice convolution vs esda
  (``DistanceBand`` + ``G_Local(permutations=0)``), weights construction included.
* Gi* on H3 cells (ring 1) and on Voronoi polygons (queen and rook contiguity): harmspot sparse matrix vs
  esda ``G_Local`` on libpysal weights, build and statistic timed separately.

Usage: ``.venv/bin/python bench/bench_hotspots.py [--quick] [--out bench/results/hotspots.md]``
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geo.units.neighbours.base import LatticeNeighbours
from geo.units.neighbours.contiguity import contiguity_neighbours
from geo.hotspots.gistar import gistar_z
from geo.units.neighbours.h3_rings import h3_ring_neighbours
from geo.hotspots.kde import bandwidth_rule, kde_auto, kde_exact, kde_lattice
from geo.units.lattice import Lattice

warnings.filterwarnings("ignore")


def best_of(fn, repeat=3):
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def synthetic_points(n, rng, extent=60_000.0):
    """SYNTHETIC clustered points: 40 Gaussian hot spots (sd 150-1500 m) + 30% uniform background."""
    k = 40
    centres = rng.uniform(5_000, extent - 5_000, (k, 2))
    sds = rng.uniform(150, 1500, k)
    n_bg = int(0.3 * n)
    lab = rng.integers(0, k, n - n_bg)
    pts = centres[lab] + rng.normal(size=(n - n_bg, 2)) * sds[lab, None]
    pts = np.vstack([pts, rng.uniform(0, extent, (n_bg, 2))])
    return np.clip(pts, 51.0, extent - 51.0)  # inside the grid of cell centres (KDEpy needs that)


def machine():
    from _common import _cpu_model

    cpu = _cpu_model()
    import esda
    import KDEpy
    import libpysal
    import scipy

    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, "esda": esda.__version__, "libpysal": libpysal.__version__,
            "KDEpy": KDEpy.__version__, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def bench_kde(n, rng):
    from KDEpy import FFTKDE

    cell, size = 100.0, 600
    pts = synthetic_points(n, rng)
    lat = Lattice(cell, 0, 0, size, size)
    x, y = pts[:, 0], pts[:, 1]
    rows = []
    centres = (np.arange(size) + 0.5) * cell
    gx, gy = np.meshgrid(centres, centres, indexing="ij")
    grid_km = np.column_stack([gx.ravel(), gy.ravel()]) / 1000  # KDEpy wants x varying slowest
    pts_km = pts / 1000
    cx, cy = lat.centres()
    sel_rng = np.random.default_rng(1)
    ref = {}
    h_rule = round(bandwidth_rule(x, y), 1)
    # "auto": the binning hotspots_kde's exact-sum self-check settles on (geo.hotspots.kde.kde_auto, run once, untimed
    # in the ratio; its time incl. the check is reported separately). The narrow quartic on the cell grid
    # itself (f = 1) is kept to show why it needs refining.
    configs = [(300.0, "gaussian", "gaussian", "auto"), (300.0, "quartic", "biweight", 1),
               (300.0, "quartic", "biweight", "auto"), (h_rule, "gaussian", "gaussian", "auto"),
               (h_rule, "quartic", "biweight", "auto")]
    for h, kernel, kdepy_kernel, f in configs:
        corr, t_auto = "mean", None
        if f == "auto":
            t0 = time.perf_counter()
            _, f, corr, _ = kde_auto(x, y, None, lat, h, kernel, "density")
            t_auto = time.perf_counter() - t0
        # best of 5 for every KDE timing (ours and KDEpy alike): the machine is shared and noisy
        t_hs, vals = best_of(lambda: kde_lattice(x, y, None, lat, h, kernel, "density", oversample=f, correct=corr), 5)
        t_plain, _ = best_of(lambda: kde_lattice(x, y, None, lat, h, kernel, "density", oversample=f, correct=None), 5)
        # KDEpy scales its biweight so that support = sqrt(7) bw (the 1-D sd convention): bw = h / sqrt(7)
        bw = h if kernel == "gaussian" else h / np.sqrt(7.0)
        # KDEpy is fed kilometres: in metres its "practical support" of the Gaussian (where the density falls
        # below an absolute 1e-4) collapses, because a density per m² is tiny
        t_kp, kp = best_of(lambda: FFTKDE(kernel=kdepy_kernel, bw=bw / 1000, norm=2).fit(pts_km).evaluate(grid_km), 5)
        kp = kp.reshape(size, size).T * n  # per km², south-first like ours
        if (h, kernel) not in ref:  # exact kernel sum at the 50 highest and 150 random cells
            flat = vals.ravel()
            idx = np.unique(np.concatenate([np.argsort(flat)[-50:], sel_rng.choice(flat.size, 150, replace=False)]))
            t_ex = time.perf_counter()
            ref[(h, kernel)] = (idx, kde_exact(x, y, None, cx[idx], cy[idx], h, kernel, "density"),
                           time.perf_counter() - t_ex)
        idx, exact, t_ex = ref[(h, kernel)]
        peak = exact.max()
        err_hs = np.abs(vals.ravel()[idx] - exact).max() / peak
        err_kp = np.abs(kp.ravel()[idx] - exact).max() / peak
        rows.append(dict(n=n, h=h, kernel=kernel, oversample=f, correction=corr, t_auto=t_auto, t_hs=t_hs, t_plain=t_plain, t_kdepy=t_kp,
                         ratio=t_hs / t_kp, err_hs=float(err_hs), err_kdepy=float(err_kp), cells_checked=int(idx.size),
                         t_exact=t_ex))
        print(f"KDE n={n:,} h={h:g} {kernel} x{f} {corr}: harmspot {t_hs:.3f}s (plain {t_plain:.3f}s), KDEpy {t_kp:.3f}s, "
              f"ratio {t_hs / t_kp:.2f}; error/peak harmspot {err_hs:.2e}, KDEpy {err_kp:.2e}", flush=True)
    return rows


def bench_gistar_lattice(size, rng, with_esda=True):
    import esda
    import libpysal

    cell, band = 100.0, 300.0
    pts = synthetic_points(1_000_000, rng, extent=size * cell)
    lat = Lattice(cell, 0, 0, size, size)
    counts = lat.bincount(pts[:, 0], pts[:, 1]).ravel()
    ix = np.tile(np.arange(size), size)
    iy = np.repeat(np.arange(size), size)

    def ours():
        nb = LatticeNeighbours(ix, iy, cell, band)
        return gistar_z(counts, nb)

    t_hs, z = best_of(ours)
    res = dict(size=size, cells=size * size, t_hs=t_hs)
    print(f"Gi* lattice {size}x{size}: harmspot {t_hs:.3f}s", flush=True)
    if with_esda:
        cx, cy = lat.centres()
        t0 = time.perf_counter()
        w = libpysal.weights.DistanceBand(np.column_stack([cx, cy]), band, binary=True, silence_warnings=True)
        t_w = time.perf_counter() - t0
        t0 = time.perf_counter()
        g = esda.G_Local(counts.astype(float), w, transform="B", star=True, permutations=0)
        t_g = time.perf_counter() - t0
        res.update(t_esda_w=t_w, t_esda_g=t_g, t_esda=t_w + t_g, ratio=(t_w + t_g) / t_hs,
                   max_abs_dz=float(np.nanmax(np.abs(g.Zs - z))))
        print(f"  esda: weights {t_w:.1f}s + G_Local {t_g:.1f}s = {t_w + t_g:.1f}s; speed-up "
              f"{(t_w + t_g) / t_hs:,.0f}x; max |dz| {res['max_abs_dz']:.1e}", flush=True)
    return res


def cached_reruns(kind, frame, rule, build, y, graph, tmp):
    """A later run that finds the matrix cached, timed best of 5, beside the peer's equivalent.

    harmspot: ``neighbours_key`` (digest of the exact units) + ``NeighbourCache.get`` + Gi*, (a) with the
    matrix in memory (same session: the service, EHSA's steps) and (b) read back from a DuckDB store (a new
    process next week). Peer: the libpysal ``Graph`` saved with ``to_parquet`` and read back with
    ``read_parquet`` + esda ``G_Local`` (libpysal's own way to keep a graph between sessions).
    """
    import esda
    from libpysal.graph import read_parquet

    from geo.units.neighbours.cache import NeighbourCache, neighbours_key
    from services.store.duckdb_store import DuckDBStore

    mem = NeighbourCache()
    mem.get(neighbours_key(kind, frame, rule), build)

    def from_memory():
        return gistar_z(y, mem.get(neighbours_key(kind, frame, rule), build))

    st = DuckDBStore(Path(tmp) / f"cache_{kind}_{rule['neighbours'].split()[0]}.duckdb")
    st.neighbour_cache().get(neighbours_key(kind, frame, rule), build)

    def from_store():
        c = st.neighbour_cache()
        z = gistar_z(y, c.get(neighbours_key(kind, frame, rule), build))
        assert c.last == "stored"
        return z

    t_key, _ = best_of(lambda: neighbours_key(kind, frame, rule), 5)
    t_mem, z_mem = best_of(from_memory, 5)
    t_store, z_store = best_of(from_store, 5)
    st.close()
    pq = Path(tmp) / f"graph_{kind}_{rule['neighbours'].split()[0]}.parquet"
    graph.to_parquet(pq)
    t_peer, gz = best_of(lambda: esda.G_Local(y, read_parquet(pq), transform="B", star=True, permutations=0), 5)
    return dict(t_key=t_key, t_mem=t_mem, t_store=t_store, t_peer_cached=t_peer,
                ratio_mem=t_peer / t_mem, ratio_store=t_peer / t_store,
                cached_dz=float(max(np.abs(gz.Zs - z_mem).max(), np.abs(gz.Zs - z_store).max())))


def bench_h3(k, rng):
    """H3 Gi* (ring 1): harmspot vs the fastest libpysal/esda pipeline found, all timed best of 3.

    Peers: (1) a libpysal ``Graph.from_arrays`` built from the same ring-1 pairs found the fastest way
    (h3ronpy's vectorised ``grid_disk`` + a pandas hash lookup, self pairs dropped), (2) libpysal's own
    ``Graph.build_h3`` (h3-py ``grid_ring`` per cell), each with esda ``G_Local(y, graph, transform="B",
    star=True)`` (star=True adds the self weight Gi* needs), and (3) the classic ``W`` from ``h3.grid_ring``
    with ``G_Local`` on the W. The speed-up incl. build is against the fastest of the three.
    """
    import esda
    import h3
    import pandas as pd
    import pyarrow as pa
    from h3ronpy import grid_disk
    from libpysal.graph import Graph
    from libpysal.weights import W

    centre = h3.latlng_to_cell(51.75, 0.5, 9)
    cells = sorted(h3.grid_disk(centre, k))
    ints = np.array([h3.str_to_int(c) for c in cells], dtype=np.uint64)
    n = len(cells)
    y = rng.poisson(2.0, n).astype(float)
    t_build, nb = best_of(lambda: h3_ring_neighbours(ints, 1))
    t_stat, z = best_of(lambda: gistar_z(y, nb))

    def graph_from_arrays():
        disks = pa.array(grid_disk(ints, 1, flatten=False))
        vals = np.asarray(disks.values, dtype=np.uint64)
        focal = np.repeat(np.arange(n), np.diff(np.asarray(disks.offsets)))
        col = pd.Index(ints).get_indexer(vals)
        keep = (col >= 0) & (col != focal)
        return Graph.from_arrays(focal[keep], col[keep], np.ones(int(keep.sum())))

    t_fab, g_fa = best_of(graph_from_arrays)
    t_fag, gz_fa = best_of(lambda: esda.G_Local(y, g_fa, transform="B", star=True, permutations=0))
    t_bhb, g_bh = best_of(lambda: Graph.build_h3(cells, 1, weight="binary"))
    t_bhg, gz_bh = best_of(lambda: esda.G_Local(y, g_bh, transform="B", star=True, permutations=0))
    pos = {c: i for i, c in enumerate(cells)}
    t_wb, w = best_of(lambda: W({i: [pos[c] for c in h3.grid_ring(cells[i], 1) if c in pos] for i in range(n)},
                                silence_warnings=True))
    t_wg, gz_w = best_of(lambda: esda.G_Local(y, w, transform="B", star=True, permutations=0))
    pipes = {"Graph.from_arrays": t_fab + t_fag, "Graph.build_h3": t_bhb + t_bhg, "W": t_wb + t_wg}
    peer = min(pipes, key=pipes.get)
    ours = t_build + t_stat
    # same neighbours: libpysal's own H3 builder (reordered to our cell order) + self == harmspot's matrix
    ref = g_bh.sparse.tocsr()
    perm = pd.Index(g_bh.unique_ids).get_indexer(cells)
    ref = (ref[perm][:, perm] + sparse_identity(n)) > 0
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        cached = cached_reruns("h3", pd.DataFrame({"h3": ints}), {"neighbours": "h3 grid ring", "ring_k": 1},
                               lambda: h3_ring_neighbours(ints, 1), y, g_fa, tmp)
    r = dict(units=n, t_build=t_build, t_stat=t_stat, t_fa_build=t_fab, t_fa_g=t_fag, t_bh_build=t_bhb,
             t_bh_g=t_bhg, t_esda_w=t_wb, t_esda_g=t_wg, peer=peer, t_peer=pipes[peer],
             ratio_stat=min(t_fag, t_bhg, t_wg) / t_stat, ratio_total=pipes[peer] / ours,
             ratio_total_w=pipes["W"] / ours, same_as_libpysal=bool(((nb.matrix > 0) != ref).nnz == 0),
             max_abs_dz=float(max(np.abs(g.Zs - z).max() for g in (gz_fa, gz_bh, gz_w))), cached=cached)
    print(f"  cached rerun: memory {cached['t_mem'] * 1e3:.2f}ms ({cached['ratio_mem']:.0f}x), store "
          f"{cached['t_store'] * 1e3:.1f}ms ({cached['ratio_store']:.1f}x) vs Graph parquet + G_Local "
          f"{cached['t_peer_cached'] * 1e3:.1f}ms", flush=True)
    print(f"Gi* H3 {n:,} cells: harmspot build {t_build * 1e3:.1f}ms + stat {t_stat * 1e3:.2f}ms; "
          f"Graph.from_arrays {t_fab:.3f}s + G_Local {t_fag:.3f}s; Graph.build_h3 {t_bhb:.3f}s + G_Local "
          f"{t_bhg:.3f}s; W {t_wb:.2f}s + G_Local {t_wg:.2f}s; statistic {r['ratio_stat']:,.0f}x, incl. build "
          f"{r['ratio_total']:.1f}x vs {peer}, {r['ratio_total_w']:.1f}x vs W; same as libpysal "
          f"{r['same_as_libpysal']}; max |dz| {r['max_abs_dz']:.1e}", flush=True)
    return r


def bench_polygons(n, rng):
    """Polygon Gi*: harmspot contiguity + sparse Gi* vs libpysal's fastest builder + esda G_Local, one run.

    Peers (all timed best of 3, like harmspot): libpysal ``Graph.build_contiguity`` (vectorised
    shared-vertex method, libpysal's fastest) with ``G_Local`` on the Graph, and the classic
    ``Queen/Rook.from_dataframe`` ``W`` with ``G_Local`` on the W. The speed-up is against the
    fastest peer pipeline. Also timed: harmspot's slow twin (one bulk STRtree intersects query).
    """
    import esda
    import geopandas as gpd
    import libpysal
    import shapely
    from libpysal.graph import Graph

    pts = shapely.points(rng.uniform(0, 50_000, (n, 2)))
    vor = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(pts), extend_to=shapely.box(0, 0, 50_000,
                                                                                                      50_000)))
    polys = shapely.intersection(vor, shapely.box(0, 0, 50_000, 50_000))
    gdf = gpd.GeoDataFrame(geometry=polys, crs=27700)
    y = rng.poisson(3.0, len(gdf)).astype(float)
    rows = []
    for rule in ("queen", "rook"):
        rook = rule == "rook"
        t_build, nb = best_of(lambda: contiguity_neighbours(gdf.geometry, rule))
        t_twin, twin = best_of(lambda: contiguity_neighbours(gdf.geometry, rule, method="predicate"), 1)
        t_stat, z = best_of(lambda: gistar_z(y, nb))
        t_gb, graph = best_of(lambda: Graph.build_contiguity(gdf, rook=rook))
        t_gg, gg = best_of(lambda: esda.G_Local(y, graph, transform="B", star=True, permutations=0))
        builder = libpysal.weights.Rook if rook else libpysal.weights.Queen
        t_wb, w = best_of(lambda: builder.from_dataframe(gdf, use_index=False, silence_warnings=True))
        t_wg, gw = best_of(lambda: esda.G_Local(y, w, transform="B", star=True, permutations=0))
        ref = (graph.sparse.tocsr() + sparse_identity(len(gdf))) > 0
        peer_graph, peer_w = t_gb + t_gg, t_wb + t_wg
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            cached = cached_reruns("polygons", gdf, {"neighbours": f"{rule} contiguity"},
                                   lambda: contiguity_neighbours(gdf.geometry, rule), y, graph, tmp)
        print(f"  cached rerun ({rule}): key {cached['t_key'] * 1e3:.1f}ms; memory {cached['t_mem'] * 1e3:.1f}ms "
              f"({cached['ratio_mem']:.1f}x), store {cached['t_store'] * 1e3:.1f}ms ({cached['ratio_store']:.1f}x) vs "
              f"Graph parquet + G_Local {cached['t_peer_cached'] * 1e3:.1f}ms", flush=True)
        r = dict(rule=rule, units=len(gdf), t_build=t_build, t_twin=t_twin, t_stat=t_stat,
                 t_graph_build=t_gb, t_graph_g=t_gg, t_esda_w=t_wb, t_esda_g=t_wg,
                 peer="Graph" if peer_graph <= peer_w else "W", t_peer=min(peer_graph, peer_w),
                 ratio_stat=min(t_gg, t_wg) / t_stat, ratio_total=min(peer_graph, peer_w) / (t_build + t_stat),
                 ratio_total_w=peer_w / (t_build + t_stat),
                 same_as_twin=bool((nb.matrix != twin.matrix).nnz == 0),
                 same_as_libpysal=bool(((nb.matrix > 0) != ref).nnz == 0),
                 max_abs_dz=float(max(np.abs(gg.Zs - z).max(), np.abs(gw.Zs - z).max())), cached=cached)
        rows.append(r)
        print(f"Gi* polygons {rule} {len(gdf):,}: harmspot build {t_build * 1e3:.1f}ms (twin {t_twin * 1e3:.0f}ms) + "
              f"stat {t_stat * 1e3:.2f}ms; libpysal Graph {t_gb:.3f}s + G_Local {t_gg:.3f}s; W {t_wb:.3f}s + "
              f"G_Local {t_wg:.3f}s; incl. build {r['ratio_total']:.1f}x vs fastest peer ({r['peer']}), "
              f"{r['ratio_total_w']:.1f}x vs W; same as twin {r['same_as_twin']}, as libpysal "
              f"{r['same_as_libpysal']}; max |dz| {r['max_abs_dz']:.1e}", flush=True)
    return rows


def sparse_identity(n):
    from scipy import sparse

    return sparse.identity(n, format="csr")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1M points only; esda lattice on 200 x 200")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "hotspots.md"))
    ap.add_argument("--only", default="kde,lattice,h3,polygons",
                    help="sections to run; the others are taken from the raw JSON kept in --out (if present)")
    a = ap.parse_args(argv)
    only = set(a.only.split(","))
    prev = {}
    if Path(a.out).exists() and "<!-- raw:" in Path(a.out).read_text():
        import json

        prev = json.loads(Path(a.out).read_text().split("<!-- raw:", 1)[1].split("-->", 1)[0])
    rng = np.random.default_rng(20261122)
    m = machine()
    print(m, flush=True)
    kde_rows = prev.get("kde", [])
    if "kde" in only:
        kde_rows = []
        for n in ([1_000_000] if a.quick else [1_000_000, 10_000_000]):
            kde_rows += bench_kde(n, rng)
    g_full, g_small = prev.get("lattice", [None, None])
    if "lattice" in only:
        g_full = bench_gistar_lattice(600, rng, with_esda=not a.quick)
        g_small = bench_gistar_lattice(200, rng, with_esda=True) if a.quick else None
    h3r = bench_h3(40 if a.quick else 100, rng) if "h3" in only else prev["h3"]
    pol = bench_polygons(5_000 if a.quick else 20_000, rng) if "polygons" in only else prev["polygons"]
    raw = {"kde": kde_rows, "lattice": [g_full, g_small], "h3": h3r, "polygons": pol,
           "runs": {**prev.get("runs", {}), **{k: m["date"] for k in only}}}
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    raw["peak_mb"] = {**prev.get("peak_mb", {}), **{k: round(peak_mb) for k in only}}
    peaks = ", ".join(f"{k} {v:,} MB" for k, v in raw["peak_mb"].items())
    L = [f"## Hot spots: KDE and Gi* ({'quick' if a.quick else 'full'} run)", "",
         f"Machine: {m['nproc']} cores, {m['cpu']}; Python {m['python']}, numpy {m['numpy']}, scipy {m['scipy']}, "
         f"esda {m['esda']}, libpysal {m['libpysal']}, KDEpy {m['KDEpy']}. Run {m['date']}. "
         "Timings were taken on a SHARED machine (other jobs running on the 2 cores): treat them as indicative; "
         "ratios are measured side by side in one run. Peak memory (whole process, ru_maxrss, per section run; "
         f"sections run together share one figure): {peaks}. Data: SYNTHETIC seeded clustered points (40 Gaussian hot spots + 30% uniform).", "",
         f"Sections run at: {raw['runs']}.", "",
         "### KDE onto 600 x 600 cells of 100 m, best of 5", "",
         "Bandwidths: 300 m (3 cells, narrow) and the documented default rule (ArcGIS search radius) on the "
         "same points.", "",
         "| points | bandwidth (m) | kernel | binning | harmspot (s) | harmspot, no correction (s) | KDEpy FFTKDE (s) | "
         "ratio harmspot/KDEpy | error/peak harmspot | error/peak KDEpy | cells checked | choice + self-check (s) |",
         "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in kde_rows:
        binning = "cell" if r["oversample"] == 1 else f"{r['oversample']}x finer"
        binning += f", {r.get('correction', 'mean')}" + (" (auto)" if r.get("t_auto") is not None else " (fixed)")
        L.append(f"| {r['n']:,} | {r['h']:g} | {r['kernel']} | {binning} "
                 f"| {r['t_hs']:.3f} | {r['t_plain']:.3f} | {r['t_kdepy']:.3f} | "
                 f"{r['ratio']:.2f} | {r['err_hs']:.1e} | {r['err_kdepy']:.1e} | {r['cells_checked']} | "
                 f"{'' if r.get('t_auto') is None else format(r['t_auto'], '.2f')} |")
    L += ["", "harmspot = linear binning onto nodes f x finer than the cells + the second-order correction "
          "('mean': kernel K - d²/12 ∇²K, no extra work; 'points': per-point t(1-t) weights binned too) + a "
          "polyphase FFT at cell resolution (all f² node phases in one batched transform); 'no correction' = plain "
          "linear binning at the same f, KDEpy FFTKDE's algorithm. Binning '(auto)' = what `hotspots_kde`'s "
          "exact-sum self-check (`geo.hotspots.kde.kde_auto`, tries 1x mean, 2x mean, 2x points, 4x ...) settled on; "
          "'choice + self-check' = that search's one-off time including the exact sums at the checked cells "
          "(`check_size`: 100 to 2,000 cells; points grouped by cell once with one stable sort, `geo.hotspots.kde.PointCells`; "
          "before 2026-11-22 08:00 UTC a KD-tree over all points, about 2x slower at 10M), not part of the timed ratio. "
          "Error = max |surface - exact kernel sum| / peak of the exact sum, at the 50 highest and 150 random "
          "cells. KDEpy's quartic twin is its `biweight` with bw = h/sqrt(7) (KDEpy scales kernels by their 1-D standard "
          "deviation: support sqrt(7) bw; checked on a small sample to agree with the exact sum). KDEpy was given kilometres (in metres its Gaussian 'practical support', "
          "where the density drops below an absolute 1e-4, collapses) and its density multiplied by n to compare "
          "per km². "
          "The quartic kernel's second derivative jumps at r = h, which limits the correction: at h = 3 cells "
          "the cell grid misses the bound (the 'fixed' row) and nodes 2x finer (cell centres half-way between "
          "nodes) meet it; from about 6 cells up the cell grid itself is enough.", "",
          "### Gi* on the 600 x 600 lattice (360,000 cells of 100 m), distance band 300 m, z only", ""]
    gl = [g_full] + ([g_small] if g_small else [])
    L += ["| lattice | harmspot (s) | esda DistanceBand (s) | esda G_Local (s) | esda total (s) | speed-up | "
          "max abs z difference |", "|---|---:|---:|---:|---:|---:|---:|"]
    for g in gl:
        if "t_esda" in g:
            L.append(f"| {g['size']}x{g['size']} | {g['t_hs']:.3f} | {g['t_esda_w']:.1f} | {g['t_esda_g']:.1f} | "
                     f"{g['t_esda']:.1f} | {g['ratio']:,.0f}x | {g['max_abs_dz']:.1e} |")
        else:
            L.append(f"| {g['size']}x{g['size']} | {g['t_hs']:.3f} | not run (--quick) | | | | |")
    L += ["", "harmspot's time includes building the neighbourhood (a disk of lattice offsets) and the "
          "shift-and-add convolution; esda's includes DistanceBand weights construction.", "",
          "### Gi* on H3 cells (ring 1), best of 3", "",
          "| units | harmspot build (ms) | harmspot Gi* (ms) | libpysal Graph.from_arrays build (s) | esda G_Local on it (s) | "
          "libpysal Graph.build_h3 (s) | esda G_Local on it (s) | libpysal W build (s) | esda G_Local on W (s) | "
          "speed-up, statistic (matrix cached) | speed-up incl. build vs fastest peer | speed-up incl. build vs W "
          "pipeline | same neighbours as libpysal | max abs z difference |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    r = h3r
    L.append(f"| H3 res 9: {r['units']:,} | {r['t_build'] * 1e3:.1f} | {r['t_stat'] * 1e3:.2f} | "
             f"{r['t_fa_build']:.3f} | {r['t_fa_g']:.3f} | {r['t_bh_build']:.3f} | {r['t_bh_g']:.3f} | "
             f"{r['t_esda_w']:.3f} | {r['t_esda_g']:.3f} | {r['ratio_stat']:,.0f}x | "
             f"{r['ratio_total']:.1f}x ({r['peer']}) | {r['ratio_total_w']:.1f}x | "
             f"{'yes' if r['same_as_libpysal'] else 'NO'} | {r['max_abs_dz']:.1e} |")
    h3_met = h3r.get("ratio_total", 0) >= 20
    L += ["", "harmspot build = `h3_ring_neighbours` (default `method=\"auto\"`): one vectorised h3ronpy "
          "`cells_to_localij` of all units around one anchor unit, then the six hex offsets looked up in a dense "
          "array over the local IJ box and the binary CSR matrix (self included) written directly; it falls back "
          "to h3ronpy's vectorised `grid_disk` + a pandas hash lookup (`method=\"disk\"`) near pentagons and for "
          "other cases where local IJ cannot be trusted (tests check both paths equal to h3-py `grid_disk`). "
          "Peers, all with esda `G_Local(y, w, transform=\"B\", star=True, permutations=0)` (star=True adds the "
          "self weight; the last column is the largest z difference over all three): libpysal `Graph.from_arrays` "
          "on the same ring-1 pairs found the fastest way we know (h3ronpy `grid_disk` + pandas lookup, self "
          "pairs dropped), libpysal's own H3 builder `Graph.build_h3` (h3-py `grid_ring` per cell; its neighbours "
          "are checked identical to harmspot's), and the classic `W` from `h3.grid_ring`. Speed-up incl. build = "
          "fastest peer pipeline / (harmspot build + Gi*). Earlier builds of the same matrix: ~21 ms (binary "
          "search + COO + diagonal), ~12.6 ms (`grid_disk` + hash lookup, 10.4x vs `Graph.from_arrays`). "
          + ("Issue 3's target (>= 20x incl. build) is met against every peer, the fastest Graph pipeline included."
             if h3_met else "Issue 3's target (>= 20x incl. build) is NOT met against the fastest peer in this run."),
          ""]
    L += [f"### Gi* on {pol[0]['units']:,} Voronoi polygons (queen and rook contiguity), best of 3", "",
          "| rule | harmspot build (ms) | harmspot Gi* (ms) | harmspot slow twin (ms) | libpysal Graph build (s) | "
          "esda G_Local on Graph (s) | libpysal W build (s) | esda G_Local on W (s) | speed-up, statistic | "
          "speed-up incl. build vs fastest peer | speed-up incl. build vs W pipeline | same neighbours as twin / libpysal | "
          "max abs z difference |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in pol:
        L.append(f"| {r['rule']} | {r['t_build'] * 1e3:.1f} | {r['t_stat'] * 1e3:.2f} | {r['t_twin'] * 1e3:.0f} | "
                 f"{r['t_graph_build']:.3f} | {r['t_graph_g']:.3f} | {r['t_esda_w']:.3f} | {r['t_esda_g']:.3f} | "
                 f"{r['ratio_stat']:,.0f}x | {r['ratio_total']:.1f}x ({r['peer']}) | {r['ratio_total_w']:.1f}x | "
                 f"{'yes' if r['same_as_twin'] else 'NO'} / {'yes' if r['same_as_libpysal'] else 'NO'} | "
                 f"{r['max_abs_dz']:.1e} |")
    worst = min(r.get("ratio_total", 0) for r in pol)
    L += ["", "harmspot build = `contiguity_neighbours(method=\"vertex\")`: exactly equal vertices (and, for rook, "
          "segments) are hashed and paired with numpy; bounding-box pairs come from a numpy strip sort-and-sweep "
          "(the same pairs as `STRtree.query`, which stays the fallback for non-finite or very thin boxes); pairs "
          "whose boxes touch without a shared vertex are dropped when their x+y or x-y ranges are apart (octagon "
          "test), and GEOS decides the few left. Its result is identical to the slow twin (`method=\"predicate\"`: "
          "one bulk `STRtree.query(predicate=\"intersects\")`, then `length(intersection) > 0` for rook), which is "
          "what harmspot's contiguity means (any common point; libpysal's vertex method agrees on a clean "
          "tessellation such as this one). Peers: libpysal `Graph.build_contiguity` (its fastest builder) with "
          "esda `G_Local` on the Graph, and `Queen`/`Rook.from_dataframe` with `G_Local` on the W; the speed-up "
          "incl. build is against the faster of the two pipelines. Speed-up, statistic: fastest esda `G_Local` vs "
          "harmspot Gi* with the matrix cached. Earlier builds: ~0.2 s (one bulk STRtree intersects query, now "
          "the twin), then ~40/50 ms (queen/rook, STRtree for the box pairs: 10.1x/11.0x vs the Graph pipeline). "
          + (f"A first run (matrix built) is {worst:.1f}x or more faster than the fastest peer, so issue 3's >= 20x "
             "holds for first runs too." if worst >= 20 else
             f"A first run (matrix built) is {worst:.1f}x or more faster than libpysal's Graph pipeline (>= 20x "
             "against the W pipeline); what is left of the build is the box sweep (~8 ms), the octagon test "
             "(~4 ms), reading coordinates (~2 ms) and the hashing (~5 ms). Later runs on the same polygons read "
             "the matrix from the cache: see the next table."), ""]
    crows = [("H3 res 9, ring 1", h3r)] + [(f"polygons, {r['rule']}", r) for r in pol]
    if all("cached" in r for _, r in crows):
        L += ["### Gi* when the neighbour matrix is cached (the next run on the same units), best of 5", "",
              "| units | harmspot key (ms) | harmspot, matrix in memory (ms) | harmspot, matrix from the store (ms) | "
              "peer: Graph read_parquet + G_Local (ms) | speed-up vs cached peer, memory | speed-up vs cached peer, "
              "store | speed-up from the store vs fastest peer building its weights | max abs z difference |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, r in crows:
            c = r["cached"]
            L.append(f"| {name}: {r['units']:,} | {c['t_key'] * 1e3:.2f} | {c['t_mem'] * 1e3:.2f} | "
                     f"{c['t_store'] * 1e3:.1f} | {c['t_peer_cached'] * 1e3:.1f} | {c['ratio_mem']:.1f}x | "
                     f"{c['ratio_store']:.1f}x | {r['t_peer'] / c['t_store']:.1f}x | {c['cached_dz']:.1e} |")
        L += ["", "Issue 3 asks for H3 and polygon Gi* at least 20x faster than esda \"via sparse neighbour matrices "
              "built once and cached\". harmspot's `NeighbourCache` (geo/hotspots/gistar.py) keeps each matrix keyed by its "
              "rule and a SHA-256 digest of the exact units (`neighbours_key`: H3 ids, or every polygon coordinate with "
              "each unit's type and numbers of coordinates, parts and holes), in memory "
              "and in the store (`neighbour_matrices` table; the CLI's `hotspots gistar|emerging|accuracy` use it, "
              "and echo 'neighbour matrix: built now and cached' or 'reused from the store'). Times here are a "
              "whole later run of the statistic: the key (hashing the units, which is most of it for polygons), "
              "the cache lookup (for 'store': a DuckDB read and decoding the CSR arrays) and Gi*. The peer's "
              "equivalent is libpysal's own persistence (`Graph.to_parquet` once, `read_parquet` each run) with "
              "esda `G_Local`. First runs, which build the matrix, are the tables above.", ""]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    import json

    Path(a.out).write_text("\n".join(L) + "\n<!-- raw:" + json.dumps(raw, default=float) + "-->\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
