"""Units of analysis (BNG squares, H3 cells, user polygons) and fast counting.

* :class:`SquareGrid`: squares aligned to the British National Grid. A cell's
  lower-left corner is a multiple of the cell size, so its id
  (``150m_E571200_N206400``) names the same ground in every run and area.
* :class:`H3Units`: H3 v4 cells at any resolution, indexed with h3ronpy's
  vectorised indexer straight from WGS84 lon/lat (no reprojection).
* :class:`PolygonUnits`: user polygons (LSOAs, beats, wards) with a name/id column.

All assignment and counting is vectorised: ``numpy.bincount`` on integer unit
codes, no Python loop per point.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import shapely

from geo import BNG
from geo.core.errors import BoundaryError, HarmspotError


def _geom_of(area):
    if area is None:
        return None
    if hasattr(area, "union_all"):
        if len(area) == 0:
            raise BoundaryError("study area is empty (no polygons)")
        if area.crs is not None and str(area.crs) != BNG and area.crs.to_epsg() != 27700:
            area = area.to_crs(BNG)
        return area.union_all()
    return area


_BIN_STEP = 1 << 16  # points per vectorised step of Lattice.bincount (intermediates stay in cache)
_BIN_BLOCK = 1 << 19  # points per histogram in Lattice.bincount (one block per thread at a time)
_KERNEL_SPLIT = 1 << 17  # points per thread at least, before the compiled kernel uses a second thread

try:  # the optional compiled kernel (geo/units/_binning.c, built at install when a C compiler is there)
    from geo.units import _binning as _kernel
except ImportError:  # pragma: no cover - depends on the install
    _kernel = None


@dataclass(frozen=True)
class Lattice:
    """A rectangular block of BNG squares: columns ix0..ix0+nx-1, rows iy0..iy0+ny-1.

    ``flat`` codes are ``(iy - iy0) * nx + (ix - ix0)`` (row 0 = southernmost).
    """

    cell: float
    ix0: int
    iy0: int
    nx: int
    ny: int

    @classmethod
    def from_bounds(cls, cell: float, bounds, pad: int = 0) -> "Lattice":
        x0, y0, x1, y1 = bounds
        ix0 = int(np.floor(x0 / cell)) - pad
        iy0 = int(np.floor(y0 / cell)) - pad
        ix1 = int(np.floor(x1 / cell)) + pad
        iy1 = int(np.floor(y1 / cell)) + pad
        return cls(float(cell), ix0, iy0, ix1 - ix0 + 1, iy1 - iy0 + 1)

    @property
    def size(self) -> int:
        return self.nx * self.ny

    @property
    def transform(self):
        """Affine transform of the north-up raster of this lattice (row 0 = northernmost)."""
        from affine import Affine

        return Affine(self.cell, 0.0, self.ix0 * self.cell, 0.0, -self.cell, (self.iy0 + self.ny) * self.cell)

    # With the compiled kernel (geo/units/_binning.c) floor(x / cell) codes are made and counted in
    # one fused pass per thread, with no code array in memory; it is used when installed and
    # the lattice has fewer than 2**31 cells. ``kernel=False`` forces the numpy path below.

    def _use_kernel(self, kernel) -> bool:
        return kernel is not False and _kernel is not None and self.size < 2**31 - 1

    @staticmethod
    def _xy(x, y) -> tuple[np.ndarray, np.ndarray]:
        """x and y broadcast together, as flat contiguous float64 arrays."""
        xa, ya = np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float))
        return np.ascontiguousarray(xa).ravel(), np.ascontiguousarray(ya).ravel()

    def _kernel_parts(self, x, y, n_out: int | None = None):
        """Contiguous float64 x, y and the (start, end) slices the kernel threads take. Threads
        are used when every thread gets at least ``_KERNEL_SPLIT`` points and, where each needs
        its own ``n_out``-long output, no more cells than points."""
        xa, ya = self._xy(x, y)
        n = xa.size
        k = max(1, min(_cpu_threads(), n // _KERNEL_SPLIT))
        if n_out is not None and n_out > n // k:
            k = 1
        cuts = [n * i // k for i in range(k + 1)]
        return xa, ya, list(zip(cuts[:-1], cuts[1:]))

    @staticmethod
    def _threads(fn, parts) -> list:
        """``[fn(*p) for p in parts]``, on one thread per part when there are several."""
        if len(parts) == 1:
            return [fn(*parts[0])]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(parts)) as pool:
            return list(pool.map(lambda p: fn(*p), parts))

    def _kernel_args(self) -> tuple:
        return (float(self.cell), int(self.ix0), int(self.iy0), int(self.nx), int(self.ny))

    # The numpy path: points are turned into codes in cache-sized steps on the lattice padded
    # by one cell on every side: column and row numbers are clamped into the pad with fmax/fmin
    # (NaN and inf land there too), so off-lattice points need no mask, no compaction and no
    # copy. Blocks of points run on a few threads (numpy releases the GIL).

    def _padded_codes(self, x, y, s: int, e: int, out: np.ndarray) -> None:
        """Codes of points ``s:e`` on the padded lattice, written to ``out[: e - s]``."""
        nx2 = self.nx + 2
        lo_x, hi_x = self.ix0 - 1, self.ix0 + self.nx
        lo_y, hi_y = self.iy0 - 1, self.iy0 + self.ny
        shift = (self.iy0 - 1) * nx2 + (self.ix0 - 1)
        bx = np.empty(min(_BIN_STEP, e - s))
        by = np.empty_like(bx)
        for u in range(s, e, _BIN_STEP):
            v = min(u + _BIN_STEP, e)
            a, b = bx[: v - u], by[: v - u]
            # floor(x / cell) exactly as in the definition (integers exact in float64), clamped
            np.divide(x[u:v], self.cell, out=a)
            np.floor(a, out=a)
            np.fmax(a, lo_x, out=a)
            np.fmin(a, hi_x, out=a)
            np.divide(y[u:v], self.cell, out=b)
            np.floor(b, out=b)
            np.fmax(b, lo_y, out=b)
            np.fmin(b, hi_y, out=b)
            b *= nx2
            b += a
            b -= shift
            out[u - s : v - s] = b

    def _run_blocks(self, x, y, per_block) -> list:
        """Call ``per_block(s, e, codes, value)`` for every block of points (padded codes of points
        ``s:e`` in ``codes``; ``value`` is what this thread's previous call returned, None at first),
        blocks shared among threads; returns each thread's last value."""
        xa, ya = self._xy(x, y)
        n = xa.size
        # blocks at least the padded lattice's size keep per-block histogram adds below one pass over the points
        block = max(_BIN_BLOCK, (self.nx + 2) * (self.ny + 2))
        starts = list(range(0, n, block))
        workers = max(1, min(_cpu_threads(), len(starts)))

        def _thread(first: int):
            codes = np.empty(min(block, n), np.intp)
            val = None
            for s in starts[first::workers]:
                e = min(s + block, n)
                self._padded_codes(xa, ya, s, e, codes)
                val = per_block(s, e, codes[: e - s], val)
            return val

        return self._threads(_thread, [(i,) for i in range(workers)])

    def _padded_table(self, values: np.ndarray, fill) -> np.ndarray:
        """(ny + 2) * (nx + 2) table holding ``values`` (flat lattice order) inside, ``fill`` in the pad."""
        t = np.full((self.ny + 2, self.nx + 2), fill, dtype=np.asarray(values).dtype)
        t[1:-1, 1:-1] = np.asarray(values).reshape(self.ny, self.nx)
        return t.ravel()

    def lookup(self, x, y, table: np.ndarray, kernel=None) -> np.ndarray:
        """``table[flat code]`` for each point, ``-1`` off the lattice (``table``: one int per cell)."""
        if self._use_kernel(kernel):
            xa, ya, parts = self._kernel_parts(x, y)
            t = np.ascontiguousarray(table, np.int64).ravel()
            if t.size != self.size:
                raise ValueError(f"lookup table has {t.size} values for a lattice of {self.size} cells")
            out = np.empty(xa.size, np.int64)
            args = self._kernel_args()
            self._threads(lambda s, e: _kernel.lookup(xa[s:e], ya[s:e], *args, t, out[s:e]), parts)
            return out
        padded = self._padded_table(np.asarray(table, np.int64), -1)
        n = np.broadcast_shapes(np.shape(x), np.shape(y))
        out = np.empty(int(np.prod(n)), np.int64)

        def put(s, e, codes, _):
            np.take(padded, codes, out=out[s:e])

        self._run_blocks(x, y, put)
        return out

    def flat(self, x: np.ndarray, y: np.ndarray, kernel=None) -> np.ndarray:
        """Flat codes for points; -1 for points off the lattice."""
        return self.lookup(x, y, np.arange(self.size, dtype=np.int64), kernel=kernel)

    def bincount(self, x, y, weights=None, kernel=None) -> np.ndarray:
        """Counts (or weight sums) per lattice cell as an (ny, nx) array, row 0 = south.

        ``kernel=False`` uses the numpy path even where the compiled kernel is installed (both
        give the same cells; weight sums may differ in the last bits, as the order of addition
        differs)."""
        nb = (self.nx + 2) * (self.ny + 2)
        w = None
        if weights is not None:
            w = np.asarray(weights, float)
            w = np.ascontiguousarray(np.broadcast_to(w, np.broadcast_shapes(np.shape(x), np.shape(y), w.shape))).ravel()
        if self._use_kernel(kernel):
            xa, ya, parts = self._kernel_parts(x, y, n_out=self.size)
            args = self._kernel_args()

            def run(s, e):
                h = np.zeros(self.size, np.int64 if w is None else float)
                _kernel.accumulate(xa[s:e], ya[s:e], *args, None if w is None else w[s:e], h)
                return h

            hs = self._threads(run, parts)
            for h in hs[1:]:
                hs[0] += h
            return hs[0].reshape(self.ny, self.nx)

        def count(s, e, codes, acc):
            h = np.bincount(codes, weights=None if w is None else w[s:e], minlength=nb)
            return h if acc is None else np.add(acc, h, out=acc)

        parts = [h for h in self._run_blocks(x, y, count) if h is not None]
        if not parts:
            return np.zeros((self.ny, self.nx), np.int64 if w is None else float)
        total = parts[0]
        for h in parts[1:]:
            total += h
        return np.ascontiguousarray(total.reshape(self.ny + 2, self.nx + 2)[1:-1, 1:-1])

    def to_north_up(self, grid: np.ndarray) -> np.ndarray:
        """(ny, nx) south-first array -> north-up raster rows."""
        return np.asarray(grid)[::-1]

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Centre coordinates of all cells, flat order."""
        ix = np.arange(self.nx) + self.ix0
        iy = np.arange(self.ny) + self.iy0
        gx, gy = np.meshgrid((ix + 0.5) * self.cell, (iy + 0.5) * self.cell)
        return gx.ravel(), gy.ravel()


class _Locate:
    """``locate``: the units covering an area and each incident's unit, in one call."""

    def locate(self, frame: pd.DataFrame, area=None):
        """``(units, positions)``: units that cover ``area`` (and every incident), and the unit position
        of each incident (-1 in none). H3 overrides it to index each point once."""
        units = self.frame(area, frame[["x", "y"]].to_numpy(float))
        return units, self.assign(frame, units)


class SquareGrid(_Locate):
    """BNG-aligned square cells of ``cell`` metres."""

    kind = "square"

    def __init__(self, cell: float = 150.0):
        if not np.isfinite(cell) or cell <= 0:
            raise HarmspotError(f"cell size must be a positive number of metres; got {cell!r}")
        self.cell = float(cell)

    def describe(self) -> dict:
        return {"grid": "square", "cell_m": self.cell, "crs": BNG, "aligned_to": "British National Grid origin"}

    def _label(self) -> str:
        return f"{self.cell:g}m"

    def ids(self, ix: np.ndarray, iy: np.ndarray) -> np.ndarray:
        """Cell ids (``150m_E571200_N206400``: label, easting and northing of the lower-left corner)
        as an object array; joined by pyarrow (about 8x faster than ``numpy.char.add``)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        c = self.cell
        e = pa.array((np.asarray(ix, np.int64) * c).astype(np.int64)).cast(pa.string())
        n = pa.array((np.asarray(iy, np.int64) * c).astype(np.int64)).cast(pa.string())
        joined = pc.binary_join_element_wise(pa.scalar(self._label() + "_E"), e, pa.scalar("_N"), n, "")
        return np.asarray(joined.to_numpy(zero_copy_only=False), dtype=object)

    def lattice(self, bounds, pad: int = 0) -> Lattice:
        return Lattice.from_bounds(self.cell, bounds, pad=pad)

    def frame(self, area=None, points_xy: np.ndarray | None = None):
        """Cells that intersect ``area`` (BNG polygon or GeoDataFrame); with no area, the
        bounding lattice of the points. Columns: cell_id, ix, iy, geometry."""
        import geopandas as gpd

        geom = _geom_of(area)
        if geom is not None:
            lat = self.lattice(geom.bounds)
        elif points_xy is not None and len(points_xy):
            xy = np.asarray(points_xy, float)
            lat = self.lattice((xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max()))
        else:
            raise HarmspotError("square grid needs a study area or some points to cover")
        if lat.size > 50_000_000:
            raise HarmspotError(
                f"{lat.nx} x {lat.ny} cells of {self.cell:g} m is too many; use a larger --cell or a smaller area"
            )
        ix = np.tile(np.arange(lat.nx), lat.ny) + lat.ix0
        iy = np.repeat(np.arange(lat.ny), lat.nx) + lat.iy0
        c = self.cell
        boxes = shapely.box(ix * c, iy * c, (ix + 1) * c, (iy + 1) * c)
        if geom is not None:
            shapely.prepare(geom)
            keep = shapely.intersects(geom, boxes)
            ix, iy, boxes = ix[keep], iy[keep], boxes[keep]
        gdf = gpd.GeoDataFrame({"cell_id": self.ids(ix, iy), "ix": ix, "iy": iy}, geometry=boxes, crs=BNG)
        return gdf

    def assign(self, frame: pd.DataFrame, units) -> np.ndarray:
        """Unit position (row in ``units``) for each incident; -1 when in no unit."""
        x = frame["x"].to_numpy(float)
        y = frame["y"].to_numpy(float)
        if len(units) == 0:
            return np.full(len(x), -1, np.int64)
        uix = units["ix"].to_numpy(np.int64)
        uiy = units["iy"].to_numpy(np.int64)
        lat = Lattice(self.cell, int(uix.min()), int(uiy.min()),
                      int(uix.max() - uix.min() + 1), int(uiy.max() - uiy.min() + 1))
        table = np.full(lat.size, -1, np.int64)
        table[(uiy - lat.iy0) * lat.nx + (uix - lat.ix0)] = np.arange(len(units))
        return lat.lookup(x, y, table)


def _cpu_threads() -> int:
    """CPUs this process may use (at most 8)."""
    import os

    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(8, n))


def group_sum(codes: np.ndarray, n: int, weights=None) -> np.ndarray:
    """Sum of ``weights`` (or counts) per code 0..n-1; negative codes ignored."""
    # shift by one and send every negative code to bin 0, which is dropped: same sums
    # in the same order as masking, without copying the codes and weights
    shifted = np.asarray(codes, np.int64) + 1
    np.maximum(shifted, 0, out=shifted)
    w = None if weights is None else np.asarray(weights, float)
    return np.bincount(shifted, weights=w, minlength=n + 1)[1 : n + 1]


def window_index(frame: pd.DataFrame, freq: str, start=None):
    """Integer time-window index per incident and the window labels.

    ``freq``: 'M' (calendar month, works for month-only data), or a day count like
    '7D' / '14D' (needs occurred_at). Windows start at ``start`` (a date) or the
    earliest incident.
    """
    if freq.upper() in ("M", "MS", "MONTH"):
        m = frame["month"].astype("string")
        ym = pd.to_numeric(m.str.slice(0, 4)).to_numpy(np.int64) * 12 + pd.to_numeric(m.str.slice(5, 7)).to_numpy(np.int64) - 1
        if len(ym) == 0 and start is None:
            return np.array([], np.int64), []
        first = (int(str(start)[:4]) * 12 + int(str(start)[5:7]) - 1) if start is not None else int(ym.min())
        idx = ym - first
        n = int(idx.max()) + 1 if len(idx) else 0
        labels = [f"{(first + i) // 12:04d}-{(first + i) % 12 + 1:02d}" for i in range(n)]
        return idx, labels
    days = int(freq.upper().rstrip("D") or 1)
    t = pd.to_datetime(frame["occurred_at"])
    if t.isna().any():
        from geo.core.errors import MonthOnlyDataError

        raise MonthOnlyDataError(
            f"{int(t.isna().sum())} incidents have no date-time (police.uk gives months only); "
            "use monthly windows ('M')"
        )
    t0 = pd.Timestamp(start) if start is not None else t.min().normalize()
    idx = ((t - t0).dt.days // days).to_numpy(np.int64)
    n = int(idx.max()) + 1 if len(idx) else 0
    labels = [(t0 + pd.Timedelta(days=days * i)).date().isoformat() for i in range(n)]
    return idx, labels
