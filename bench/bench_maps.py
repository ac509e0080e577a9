"""Benchmark: a tasking map with 50,000 cells - HTML size and Chromium load time.

Compared IN ONE RUN with the best existing tool for the same job, geopandas'
``GeoDataFrame.explore()`` (folium GeoJson + branca colormap, SVG renderer), on the same
synthetic cells. Both pages are made offline the same way (CDN files inlined from
folium-offline) and opened in the same headless Chromium (DevTools protocol, dead proxy), so
only the page content differs. Also a 200,000-cell layer, which harmspot merges to <= 50,000.

Usage:  .venv/bin/python bench/bench_maps.py [--quick] [--out bench/results/maps.md]
"""
from __future__ import annotations

import argparse
import datetime as dt
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def synthetic_cells(n: int, seed: int = 1):
    """n 150 m BNG squares in a near-square block; counts ~ Poisson around planted hot spots (all > 0)."""
    import geopandas as gpd
    import shapely

    rng = np.random.default_rng(seed)
    nx = int(np.ceil(np.sqrt(n * 1.25)))
    ny = int(np.ceil(n / nx))
    ix, iy = np.meshgrid(np.arange(nx), np.arange(ny))
    ix, iy = ix.ravel()[:n], iy.ravel()[:n]
    x0, y0 = 540_000 + ix * 150.0, 180_000 + iy * 150.0
    lam = 1.0
    for _ in range(12):
        cx, cy = rng.uniform(0, nx), rng.uniform(0, ny)
        lam = lam + 30 * np.exp(-((ix - cx) ** 2 + (iy - cy) ** 2) / (2 * rng.uniform(2, 8) ** 2))
    count = rng.poisson(lam) + 1
    harm = count * rng.gamma(2.0, 20.0, n)
    ids = [f"150m_E{int(a)}_N{int(b)}" for a, b in zip(x0, y0)]
    return gpd.GeoDataFrame({"cell_id": ids, "count": count, "harm": np.round(harm, 2)},
                            geometry=shapely.box(x0, y0, x0 + 150, y0 + 150), crs="EPSG:27700")


def run_harmspot(gdf, out: Path):
    from maps.webmap.layers import MapLayer
    from maps.webmap.build import build_map, save_map

    t0 = time.perf_counter()
    m, info = build_map([MapLayer("cells", gdf, "cells", {"kind": "cells"})], title="bench")
    save_map(m, out, offline=True)
    return time.perf_counter() - t0, info


def run_explore(gdf, out: Path):
    from maps.webmap.assets import inline_assets

    t0 = time.perf_counter()
    m = gdf.explore(column="harm", scheme=None, tiles=None, tooltip=["cell_id", "count", "harm"],
                    style_kwds={"weight": 0.4})
    html = m.get_root().render()
    out.write_text(inline_assets(html))
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10,000 cells instead of 50,000 (and no 200k run)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "maps.md"))
    a = ap.parse_args(argv)

    import folium
    import geopandas
    import shapely

    from maps.webmap.browser import browser_check, find_chromium

    exe = find_chromium()
    if exe is None:
        sys.exit("no Chromium: apt-get install -y chromium")
    import subprocess

    chrome_v = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()
    n = 10_000 if a.quick else 50_000
    tmp = Path(tempfile.mkdtemp(prefix="bench-maps-"))
    rows = []
    gdf = synthetic_cells(n)
    print(f"{n:,} cells", flush=True)
    t_h, info = run_harmspot(gdf, tmp / "harmspot.html")
    r_h = browser_check(tmp / "harmspot.html", timeout=300, settle_ms=0)
    rows.append(("harmspot build_map (canvas)", n, info.layers[0]["drawn"], t_h, (tmp / "harmspot.html").stat().st_size,
                 r_h["load_ms"], r_h["harmspot"]["layers"]["hs-cells"]["features"], len(r_h["external"]),
                 r_h["js_heap_mb"], r_h["nodes"]))
    print(rows[-1], flush=True)
    t_e = run_explore(gdf, tmp / "explore.html")
    r_e = browser_check(tmp / "explore.html", timeout=300, settle_ms=0)
    rows.append(("geopandas explore() (SVG)", n, n, t_e, (tmp / "explore.html").stat().st_size, r_e["load_ms"], r_e["paths"],
                 len(r_e["external"]), r_e["js_heap_mb"], r_e["nodes"]))
    print(rows[-1], flush=True)
    if not a.quick:
        big = synthetic_cells(200_000, seed=2)
        t_b, info_b = run_harmspot(big, tmp / "harmspot_200k.html")
        r_b = browser_check(tmp / "harmspot_200k.html", timeout=300, settle_ms=0)
        rows.append((f"harmspot 200k cells (merged x{info_b.choices[0].value.split('x')[-1] if info_b.choices else 1})",
                     200_000, info_b.layers[0]["drawn"], t_b, (tmp / "harmspot_200k.html").stat().st_size,
                     r_b["load_ms"], r_b["harmspot"]["layers"]["hs-cells"]["features"], len(r_b["external"]),
                     r_b["js_heap_mb"], r_b["nodes"]))
        print(rows[-1], flush=True)
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    import os

    lines = [
        "## Maps: offline tasking map with 50,000 cells",
        "",
        f"Run {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC on a SHARED machine ({os.cpu_count()} cores, "
        f"{cpu}); other work was running, so times are indicative. `bench/bench_maps.py{' --quick' if a.quick else ''}`.",
        f"Python {platform.python_version()}, folium {folium.__version__}, geopandas {geopandas.__version__}, "
        f"shapely {shapely.__version__}, {chrome_v} (headless, --no-sandbox, dead proxy).",
        "Cells: synthetic 150 m BNG squares, every cell with count > 0 (so all are drawn).",
        "",
        "| page | cells in | drawn | build s | HTML MB | Chromium load ms | JS heap MB | DOM nodes | page-counted | external requests |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, nin, drawn, t, size, load, counted, ext, heap, nodes in rows:
        lines.append(f"| {name} | {nin:,} | {drawn:,} | {t:.1f} | {size / 1e6:.1f} | {load:,.0f} | {heap:,.0f} | "
                     f"{nodes:,.0f} | "
                     f"{'' if counted is None else f'{counted:,}'} | {ext} |")
    h, e = rows[0], rows[1]
    lines += [
        "",
        f"Ratios harmspot / explore() at {n:,} cells: HTML size {h[4] / e[4]:.2f}, Chromium load time "
        f"{h[5] / e[5]:.2f}, build time {h[3] / e[3]:.2f}.",
        f"Peak RSS of the Python process (builds): {self_rss:,.0f} MB. Chromium memory: the page's JS heap "
        "(DevTools Performance.getMetrics JSHeapUsedSize) in the table.",
        "",
        "page-counted = features the page reports drawn (harmspot: its own layer count; explore: SVG "
        "`path.leaflet-interactive` elements in the DOM). "
        "Load time = DevTools `Page.navigate` to `Page.loadEventFired` (inline scripts have run and the "
        "layer is built; a canvas may paint one frame later). Above 50,000 cells harmspot merges cells "
        "into 2x, 4x... squares (values summed) and says so in the legend; full detail is the service's "
        "vector tiles.",
        "",
    ]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
