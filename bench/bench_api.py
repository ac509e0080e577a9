"""Load-test the API with wrk on loopback: GeoJSON layer, conditional GET, bbox query, MVT tiles.

Usage::

    .venv/bin/python bench/bench_api.py            # 10 s per scenario
    .venv/bin/python bench/bench_api.py --quick    # 4 s per scenario
    .venv/bin/python bench/bench_api.py --out bench/results/api.md

Builds a SYNTHETIC 10,000-feature cell layer (100 x 100 squares of 50 m, seeded
counts) in a fresh DuckDB store, starts ``harmspot serve`` on 127.0.0.1 (rate limit
off), and runs ``wrk -t2 -c50`` against each scenario; a Lua script reports p50/p95/p99.
The baseline, in the same run, is a bare uvicorn app returning the same pre-built bytes
(no auth, no store, no audit): the ceiling of this ASGI stack on this machine, so the
ratios show what harmspot's own work costs.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LUA = r"""
local paths = {}
local bad = 0
response = function(status, headers, body)
  if status >= 400 and bad < 3 then bad = bad + 1; io.write("STATUS " .. status .. " " .. body:sub(1, 300) .. "\n") end
end
local i = 0
init = function(args)
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
end
request = function()
  i = i + 1
  local p = paths[(i % #paths) + 1]
  return wrk.format("GET", p, {["X-API-Key"] = KEY, ["If-None-Match"] = INM, ["Accept-Encoding"] = ENC})
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT requests=%d errors=%d duration_us=%d p50=%.3f p95=%.3f p99=%.3f max=%.3f\n",
    summary.requests, summary.errors.status + summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout, summary.duration,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_store(path: Path):
    import geopandas as gpd
    import numpy as np
    import shapely

    from geo.core.result import AnalysisResult
    from services.auth import new_key
    from services.layers import save_result
    from services.store.duckdb_store import DuckDBStore

    rng = np.random.default_rng(20261122)
    n = 100
    x0, y0, cell = 560000.0, 205000.0, 50.0
    ix, iy = np.meshgrid(np.arange(n), np.arange(n))
    ix, iy = ix.ravel(), iy.ravel()
    geoms = shapely.box(x0 + ix * cell, y0 + iy * cell, x0 + (ix + 1) * cell, y0 + (iy + 1) * cell)
    counts = rng.poisson(3.0, n * n)
    gdf = gpd.GeoDataFrame({"cell_id": [f"50m_E{int(x0 + a * cell)}_N{int(y0 + b * cell)}" for a, b in zip(ix, iy)],
                            "count": counts, "harm": counts * rng.gamma(2.0, 50.0, n * n)},
                           geometry=geoms, crs="EPSG:27700")
    st = DuckDBStore(path)
    lid = save_result(st, AnalysisResult(kind="cells", layer=gdf, params={"cell_m": cell}), name="cells")[0]
    kid, key, digest = new_key("viewer")
    st.add_key(kid, digest, "viewer", "bench")
    meta = st.get_layer(lid)
    st.close()
    return lid, key, meta, gdf


def tiles_for(meta, zooms=(14, 15, 16)):
    import math

    x0, y0, x1, y1 = meta["bbox"]

    def tile(lon, lat, z):
        n = 2 ** z
        return int((lon + 180) / 360 * n), int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)

    out = []
    for z in zooms:
        a, b = tile(x0, y1, z)
        c, d = tile(x1, y0, z)
        out += [(z, x, y) for x in range(a, c + 1) for y in range(b, d + 1)]
    return out


def wait_health(port, proc, timeout=60):
    import httpx

    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode()[-2000:])
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("server did not start")


def run_wrk(port, paths, key, seconds, tmp: Path, inm="", conns=50, threads=2, encoding=""):
    lst = tmp / "paths.txt"
    lst.write_text("\n".join(paths) + "\n")
    script = tmp / "bench.lua"
    script.write_text(f'KEY = [==[{key}]==]\nINM = [==[{inm}]==]\nENC = [==[{encoding}]==]\n' + LUA)
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script),
           f"http://127.0.0.1:{port}", "--", str(lst)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    m = re.search(r"RESULT requests=(\d+) errors=(\d+) duration_us=(\d+) p50=([\d.]+) p95=([\d.]+) p99=([\d.]+) "
                  r"max=([\d.]+)", out)
    if not m:
        raise RuntimeError(f"wrk output not understood:\n{out}\n{script.read_text()[:300]}\n{lst.read_text()[:300]}")
    req, err, dur = int(m[1]), int(m[2]), int(m[3])
    return {"requests": req, "errors": err, "rps": req / (dur / 1e6), "p50": float(m[4]), "p95": float(m[5]),
            "p99": float(m[6]), "max": float(m[7])}


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


BASELINE_APP = r'''
import sys
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
import uvicorn
body = open(sys.argv[1], "rb").read()
tile = open(sys.argv[2], "rb").read()
async def layer(request):
    return Response(body, media_type="application/geo+json")
async def mvt(request):
    return Response(tile, media_type="application/vnd.mapbox-vector-tile")
app = Starlette(routes=[Route("/layers/{id}", layer), Route("/tiles/{id}/{z}/{x}/{y}.mvt", mvt),
                        Route("/health", lambda r: Response("ok"))])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[3]), log_level="warning", access_log=False)
'''


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 s per scenario instead of 10 s")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "api.md"))
    ap.add_argument("--connections", type=int, default=50)
    a = ap.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    secs = 4 if a.quick else 10
    tmp = Path(tempfile.mkdtemp(prefix="harmspot-bench-api-"))
    store = tmp / "bench.duckdb"
    t0 = time.perf_counter()
    lid, key, meta, gdf = build_store(store)
    build_s = time.perf_counter() - t0
    tiles = tiles_for(meta)
    port = free_port()
    env = {**os.environ, "HARMSPOT_RATE_LIMIT_PER_MINUTE": "0", "HARMSPOT_TILE_CACHE_SIZE": "100000"}
    exe = Path(sys.executable).parent / "harmspot"
    proc = subprocess.Popen([str(exe), "serve", "--store", str(store), "--host", "127.0.0.1", "--port", str(port)],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    results = {}
    try:
        import httpx

        wait_health(port, proc)
        h = {"X-API-Key": key}
        base = f"http://127.0.0.1:{port}"
        t = time.perf_counter()
        r = httpx.get(f"{base}/layers/{lid}?limit=10000", headers=h, timeout=60)
        cold_layer_ms = (time.perf_counter() - t) * 1000
        body, etag = r.content, r.headers["etag"]
        assert r.json()["numberReturned"] == 10_000
        t = time.perf_counter()
        first_tile = httpx.get(f"{base}/tiles/{lid}/{tiles[0][0]}/{tiles[0][1]}/{tiles[0][2]}.mvt", headers=h).content
        cold_tile_ms = (time.perf_counter() - t) * 1000
        mid = tiles[len(tiles) // 2]
        x0, y0, x1, y1 = meta["bbox"]
        bbox = f"{x0},{y0},{(x0 + x1) / 2},{(y0 + y1) / 2}"
        tile_paths = [f"/tiles/{lid}/{z}/{x}/{y}.mvt" for z, x, y in tiles]
        scen = {
            "GeoJSON layer, 10k features (cached)": ([f"/layers/{lid}?limit=10000"], ""),
            "GeoJSON layer, 10k features, gzip (cached)": ([f"/layers/{lid}?limit=10000"], "", "gzip"),
            "GeoJSON layer, conditional GET (304)": ([f"/layers/{lid}?limit=10000"], etag),
            "GeoJSON bbox quarter, 2.5k features": ([f"/layers/{lid}?bbox={bbox}"], ""),
            f"MVT tiles z14-16 ({len(tiles)} tiles, round robin)": (tile_paths, ""),
            "MVT tiles z14-16, warm tile cache (second pass)": (tile_paths, ""),
        }
        for name, (paths, inm, *enc) in scen.items():
            results[name] = run_wrk(port, paths, key, secs, tmp, inm=inm, conns=a.connections,
                                    encoding=enc[0] if enc else "")
        harm_rss = peak_rss_mb(proc.pid)
        mid_tile = httpx.get(f"{base}/tiles/{lid}/{mid[0]}/{mid[1]}/{mid[2]}.mvt", headers=h).content
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # baseline: bare uvicorn serving the same bytes
    (tmp / "layer.json").write_bytes(body)
    (tmp / "tile.mvt").write_bytes(mid_tile or first_tile)
    (tmp / "baseline.py").write_text(BASELINE_APP)
    bport = free_port()
    bproc = subprocess.Popen([sys.executable, str(tmp / "baseline.py"), str(tmp / "layer.json"), str(tmp / "tile.mvt"),
                              str(bport)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    base_res = {}
    try:
        wait_health(bport, bproc)
        base_res["GeoJSON layer, 10k features (cached)"] = run_wrk(bport, [f"/layers/{lid}"], key, secs, tmp,
                                                                   conns=a.connections)
        base_res["MVT tiles z14-16, warm tile cache (second pass)"] = run_wrk(
            bport, tile_paths, key, secs, tmp, conns=a.connections)
    finally:
        bproc.terminate()
        bproc.wait(timeout=30)
    write_report(a, results, base_res, secs, len(tiles), len(body), build_s, cold_layer_ms, cold_tile_ms, harm_rss)
    shutil.rmtree(tmp, ignore_errors=True)


def _has(mod: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(mod) is not None


def write_report(a, results, base_res, secs, n_tiles, body_bytes, build_s, cold_layer_ms, cold_tile_ms, rss):
    import duckdb
    import fastapi
    import uvicorn

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    wrk_v = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    lines = [
        "## API under load (wrk, loopback)",
        "",
        f"- date: {dt.datetime.now(dt.timezone.utc).isoformat(timespec='minutes')}; machine: {os.cpu_count()} cores, "
        f"{cpu}; **shared machine**: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the end of "
        "the run (other helpers' jobs were running): treat timings as indicative",
        f"- versions: python {platform.python_version()}, fastapi {fastapi.__version__}, uvicorn {uvicorn.__version__}, "
        f"duckdb {duckdb.__version__}, uvloop/httptools {'yes' if _has('uvloop') and _has('httptools') else 'no'}; "
        f"load generator {wrk_v.split(' Copyright')[0]}",
        f"- load: `wrk -t2 -c{a.connections} -d{secs}s` per scenario, client and server on the same 2 cores; "
        "one `harmspot serve` process (uvicorn, 1 worker), DuckDB store, viewer key, rate limit off",
        f"- data: SYNTHETIC 10,000-feature cell layer (100 x 100 squares of 50 m); GeoJSON body {body_bytes / 1e6:.2f} MB; "
        f"store built in {build_s:.1f} s",
        f"- cold (first) requests: GeoJSON 10k {cold_layer_ms:.0f} ms, first MVT tile {cold_tile_ms:.0f} ms "
        "(loads the layer's geometries and builds the STRtree once); server peak RSS "
        f"{rss:.0f} MB",
        "- baseline in the same run: a bare uvicorn/Starlette app returning the same bytes (no key check, store, "
        "audit or encoding) - the ceiling of this ASGI stack here",
        "",
        "| scenario | requests/s | p50 ms | p95 ms | p99 ms | errors | baseline req/s | harmspot / baseline |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        b = base_res.get(name)
        lines.append(f"| {name} | {r['rps']:,.0f} | {r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} | {r['errors']} | "
                     + (f"{b['rps']:,.0f} | {r['rps'] / b['rps']:.2f} |" if b else "- | - |"))
    tiles = next(v for k, v in results.items() if "warm" in k)
    cached = results["GeoJSON layer, 10k features (cached)"]
    cond = results["GeoJSON layer, conditional GET (304)"]
    lines += [
        "",
        f"Target p95 < 50 ms at 50 connections: MVT tiles (warm) p95 {tiles['p95']:.1f} ms "
        f"({'met' if tiles['p95'] < 50 else 'NOT met'}); conditional GET of the cached layer p95 {cond['p95']:.1f} ms "
        f"({'met' if cond['p95'] < 50 else 'NOT met'}); full 10k-feature GeoJSON body p95 {cached['p95']:.1f} ms "
        f"({'met' if cached['p95'] < 50 else 'NOT met'}: {body_bytes / 1e6:.1f} MB per response; clients should use "
        "tiles, bbox or ETags).",
        "",
    ]
    lines += [
        "Reading the table: the baseline serves the same pre-built bytes with no key check, role check, audit row "
        "or cache lookup, so `harmspot / baseline` is the share of this stack's ceiling that harmspot keeps. "
        "The round-robin MVT row includes the first (cold) encoding of each tile (about 25 ms each with "
        "`services.tiles.encode_mvt`); the warm row is the steady state a tasking map sees. p95/p99 on this "
        "shared 2-core machine are dominated by queueing behind other processes and wrk itself.",
        "",
    ]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
