"""Getis-Ord Gi* hot spots on counts **or harm**, with honest significance.

Which units are statistically hot rather than just busy? :func:`hotspots_gistar`
answers that for BNG squares, H3 cells or user polygons.

Method
------
For unit *i* with value :math:`y_i` (count or harm), binary weights
:math:`w_{ij}\\in\\{0,1\\}` with the unit itself included (:math:`w_{ii}=1`),
:math:`W_i=\\sum_j w_{ij}`, :math:`n` units, :math:`\\bar y` the mean and
:math:`s^2 = \\frac1n\\sum y_j^2-\\bar y^2`::

    z_i = (sum_j w_ij y_j  -  ybar * W_i) / ( s * sqrt( W_i (n - W_i) / (n - 1) ) )

(Getis & Ord 1992; Ord & Getis 1995). This is exactly esda's
``G_Local(y, w, transform="B", star=True).Zs`` and spdep's ``localG`` with
self-included binary weights; the tests check both to 1e-9.

The neighbour sum ``sum_j w_ij y_j`` is computed without a loop per unit:

* squares: a disk-shaped convolution of the lattice array (:class:`LatticeNeighbours`:
  shift-and-add for the 3 x 3 disk, row runs from a cumulative sum up to 60 cells, FFT
  beyond); cells that are not analysis units are masked out,
  so :math:`W_i` counts only real neighbours, exactly as a weights matrix on the
  same units would;
* H3 cells and polygons: a ``scipy.sparse`` neighbour matrix built once
  (:class:`SparseNeighbours`; :func:`distance_band_neighbours`,
  :func:`h3_ring_neighbours`, :func:`contiguity_neighbours`) and reused.

Significance: two-sided normal p-values, :math:`p_i = 2\\,\\Phi(-|z_i|)`,
adjusted for multiple testing with Benjamini–Hochberg FDR by default
(``adjust="fdr"``; ``"bonferroni"`` or ``"none"``). Optionally, conditional
permutation inference (Anselin 1995): each unit's own value is held fixed and
its :math:`W_i-1` neighbours are drawn at random (without replacement) from the
other units, ``permutations`` times with a ``seed``; the two-sided pseudo
p-value is ``min(1, 2 (min(#sim >= obs, #sim <= obs) + 1) / (permutations + 1))``.

Classes follow ArcGIS's Hot Spot Analysis ``Gi_Bin``: ``Hot Spot - 99%
Confidence`` (adjusted p <= 0.01, z > 0), 95% (<= 0.05), 90% (<= 0.10), ``Not
Significant``, and the cold equivalents. With FDR, "99%" means rejected by BH
at FDR 1% (q-value <= 0.01), and so on.

Caveats: the normal approximation is poor for very sparse counts (many zero
cells, a handful of incidents); use permutations there. Gi* is scale-free in
``y`` but not in the choice of units and neighbourhood: the band and cell size
are echoed with every result.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse, stats

from .errors import EmptyInputError, HarmspotError
from .result import AnalysisResult, Choice

ADJUST = ("fdr", "bonferroni", "none")

CLASS_LABELS = {
    3: "Hot Spot - 99% Confidence",
    2: "Hot Spot - 95% Confidence",
    1: "Hot Spot - 90% Confidence",
    0: "Not Significant",
    -1: "Cold Spot - 90% Confidence",
    -2: "Cold Spot - 95% Confidence",
    -3: "Cold Spot - 99% Confidence",
}

#: Relative slack on the distance band so that float noise in centroid coordinates
#: (e.g. a diagonal at exactly 500*sqrt(2)) does not drop a neighbour.
BAND_RTOL = 1e-9


# ------------------------------------------------------------------------------------------ neighbours
class LatticeNeighbours:
    """Distance-band neighbours (self included, binary) of square cells on a lattice.

    Parameters
    ----------
    ix, iy : integer arrays
        Column and row of each unit on a square lattice (``SquareGrid.frame`` gives
        them; any regular grid works).
    cell : float
        Cell size in metres.
    band : float
        Distance band in metres between cell centres: unit *j* neighbours unit *i*
        when their centres are at most ``band`` apart (``band >= 0``; 0 = the cell
        alone).

    Attributes
    ----------
    offsets : (k, 2) int array of (dx, dy) lattice offsets inside the band.
    cardinality : (n,) float array, :math:`W_i` (the unit itself included).
    """

    kind = "lattice"

    def __init__(self, ix, iy, cell: float, band: float):
        ix = np.asarray(ix, np.int64)
        iy = np.asarray(iy, np.int64)
        if ix.shape != iy.shape or ix.ndim != 1 or ix.size == 0:
            raise EmptyInputError("Gi* needs at least one unit (ix, iy arrays of equal length)")
        if not np.isfinite(band) or band < 0:
            raise HarmspotError(f"distance band must be >= 0 metres; got {band!r}")
        self.cell, self.band = float(cell), float(band)
        r = int(np.floor(band / cell * (1 + BAND_RTOL)))
        dx, dy = np.meshgrid(np.arange(-r, r + 1), np.arange(-r, r + 1))
        inside = np.hypot(dx, dy) * cell <= band * (1 + BAND_RTOL)
        self.offsets = np.column_stack([dx[inside], dy[inside]])
        self.radius = r
        self.ix0, self.iy0 = int(ix.min()), int(iy.min())
        self.nx, self.ny = int(ix.max()) - self.ix0 + 1, int(iy.max()) - self.iy0 + 1
        self.cx, self.cy = ix - self.ix0, iy - self.iy0
        if self.nx * self.ny > 200_000_000:
            raise HarmspotError(f"units span {self.nx} x {self.ny} lattice cells; too large for one lattice")
        flat = self.cy * self.nx + self.cx
        if np.bincount(flat, minlength=self.nx * self.ny).max() > 1:
            raise HarmspotError("two units share one lattice cell (duplicate ix, iy)")
        # the disk as horizontal runs: for each row offset dy, columns -a..a
        self.runs = [(int(dy), int(np.abs(self.offsets[self.offsets[:, 1] == dy, 0]).max()))
                     for dy in np.unique(self.offsets[:, 1])]
        self.n = ix.size
        # units filling the lattice in row-major order: reshape instead of scatter/gather
        self._dense = self.n == self.nx * self.ny and np.array_equal(flat, np.arange(self.n))
        self.mask = np.zeros((self.ny, self.nx), bool)
        self.mask[self.cy, self.cx] = True
        self.cardinality = np.rint(self.lag(np.ones(self.n)))

    def describe(self) -> dict:
        return {"neighbours": "distance band", "band_m": self.band, "self_included": True, "weights": "binary",
                "neighbours_max": int(len(self.offsets)), "method": "lattice convolution"}

    def _grid(self, y):
        y = np.asarray(y, float)
        if self._dense:
            return y.reshape((self.ny, self.nx) + y.shape[1:])
        g = np.zeros((self.ny, self.nx) + y.shape[1:], float)
        g[self.cy, self.cx] = y
        return g

    def lag(self, y) -> np.ndarray:
        """Neighbour sums :math:`\\sum_j w_{ij} y_j` for ``y`` of shape (n,) or (n, T)."""
        g = self._grid(y)
        r = self.radius
        if r <= 1:
            # exact shift-and-add on a zero-padded copy (integers stay integers)
            pad = np.zeros((self.ny + 2 * r, self.nx + 2 * r) + g.shape[2:], float)
            pad[r:r + self.ny, r:r + self.nx] = g
            out = np.zeros_like(g)
            for dx, dy in self.offsets:
                out += pad[r + dy:r + dy + self.ny, r + dx:r + dx + self.nx]
        elif r <= 60:
            # runs: a cumulative sum along x gives each row's run sum in one subtraction,
            # then the runs are shifted and added along y (2r + 1 adds instead of ~pi r^2)
            c = np.zeros((self.ny + 2 * r, self.nx + 2 * r + 1) + g.shape[2:], float)
            c[r:r + self.ny, r + 1:r + 1 + self.nx] = g
            np.cumsum(c, axis=1, out=c)
            out = np.zeros_like(g)
            run_cache = {}
            for dy, a in self.runs:
                if a not in run_cache:
                    run_cache[a] = c[:, r + a + 1:r + a + 1 + self.nx] - c[:, r - a:r - a + self.nx]
                out += run_cache[a][r + dy:r + dy + self.ny]
        else:
            from scipy.signal import fftconvolve

            k = np.zeros((2 * r + 1, 2 * r + 1))
            k[self.offsets[:, 1] + r, self.offsets[:, 0] + r] = 1.0
            if g.ndim == 3:
                k = k[:, :, None]
            out = fftconvolve(g, k, mode="same", axes=(0, 1))
            if np.array_equal(g, np.rint(g)):
                out = np.rint(out)  # sums of integers are integers: remove the ~1e-13 FFT noise
        if self._dense:
            return out.reshape((self.n,) + out.shape[2:])
        return out[self.cy, self.cx]

    def sparse(self) -> sparse.csr_matrix:
        """The same weights as a sparse (n, n) matrix (for checks and permutations)."""
        lookup = np.full((self.ny, self.nx), -1, np.int64)
        lookup[self.cy, self.cx] = np.arange(self.n)
        rows, cols = [], []
        for dx, dy in self.offsets:
            x, y = self.cx + dx, self.cy + dy
            ok = (x >= 0) & (x < self.nx) & (y >= 0) & (y < self.ny)
            j = np.full(self.n, -1)
            j[ok] = lookup[y[ok], x[ok]]
            keep = j >= 0
            rows.append(np.flatnonzero(keep))
            cols.append(j[keep])
        r, c = np.concatenate(rows), np.concatenate(cols)
        return sparse.csr_matrix((np.ones(r.size), (r, c)), shape=(self.n, self.n))


class SparseNeighbours:
    """Binary neighbours as a sparse (n, n) matrix with the diagonal set to 1 (self included)."""

    kind = "sparse"

    def __init__(self, matrix, rule: dict | None = None):
        m = sparse.csr_matrix(matrix, dtype=float)
        if m.shape[0] != m.shape[1]:
            raise HarmspotError(f"neighbour matrix must be square; got {m.shape}")
        m.data[:] = 1.0
        m = (m + sparse.identity(m.shape[0], format="csr")).tocsr()
        m.data[:] = 1.0  # binary, self included once
        self.matrix = m
        self.n = m.shape[0]
        self.rule = rule or {"neighbours": "given"}
        self.cardinality = np.asarray(m.sum(axis=1)).ravel()

    @classmethod
    def _from_csr(cls, matrix, rule: dict) -> "SparseNeighbours":
        """Wrap a CSR matrix that is already binary with the diagonal set (no copy, no re-normalising)."""
        self = cls.__new__(cls)
        self.matrix, self.n, self.rule = matrix, matrix.shape[0], rule
        self.cardinality = np.diff(matrix.indptr).astype(float)
        return self

    @classmethod
    def _from_pairs(cls, pairs, n: int, rule: dict) -> "SparseNeighbours":
        """From sorted unique keys ``i * n + j`` (i < j): symmetric, self included, built as CSR directly."""
        pairs = np.asarray(pairs, np.int64)
        i, j = np.divmod(pairs, n)
        d = np.arange(n, dtype=np.int64)
        key = np.sort(np.concatenate([pairs, j * n + i, d * n + d]))
        rows, cols = np.divmod(key, n)
        indptr = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
        return cls._from_csr(sparse.csr_matrix((np.ones(key.size), cols, indptr), shape=(n, n)), rule)

    def describe(self) -> dict:
        return {**self.rule, "self_included": True, "weights": "binary",
                "neighbours_mean": round(float(self.cardinality.mean()), 2), "method": "sparse matrix"}

    def to_bytes(self) -> bytes:
        """The matrix as bytes (``.npz``: CSR pattern and rule) for a :class:`NeighbourCache` store."""
        import io
        import json

        m = self.matrix
        idx = np.int32 if self.n < 2**31 - 1 else np.int64
        buf = io.BytesIO()
        np.savez(buf, n=np.int64(self.n), indptr=m.indptr.astype(np.int64), indices=m.indices.astype(idx),
                 rule=np.frombuffer(json.dumps(self.rule, sort_keys=True).encode(), np.uint8))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "SparseNeighbours":
        """Inverse of :meth:`to_bytes` (binary, self included, as saved)."""
        import io
        import json

        with np.load(io.BytesIO(bytes(data))) as z:
            n, indptr, indices = int(z["n"]), z["indptr"], z["indices"].astype(np.int64)
            rule = json.loads(z["rule"].tobytes().decode())
        if indptr.size != n + 1 or indptr[-1] != indices.size:
            raise HarmspotError("stored neighbour matrix is damaged (CSR sizes disagree)")
        return cls._from_csr(sparse.csr_matrix((np.ones(indices.size), indices, indptr), shape=(n, n)), rule)

    def lag(self, y) -> np.ndarray:
        return self.matrix @ np.asarray(y, float)

    def sparse(self):
        return self.matrix


def distance_band_neighbours(xy, band: float) -> SparseNeighbours:
    """Units whose centroids are within ``band`` metres (cKDTree pairs; self included)."""
    from scipy.spatial import cKDTree

    xy = np.asarray(xy, float)
    if not np.isfinite(band) or band < 0:
        raise HarmspotError(f"distance band must be >= 0 metres; got {band!r}")
    tree = cKDTree(xy)
    pairs = tree.query_pairs(band * (1 + BAND_RTOL), output_type="ndarray")
    n = len(xy)
    r = np.concatenate([pairs[:, 0], pairs[:, 1]])
    c = np.concatenate([pairs[:, 1], pairs[:, 0]])
    m = sparse.csr_matrix((np.ones(r.size), (r, c)), shape=(n, n))
    return SparseNeighbours(m, {"neighbours": "distance band", "band_m": float(band)})


#: H3's 12 pentagon base cells (res-0 cell numbers, fixed by the grid; the tests check them against
#: ``h3.get_pentagons(0)``). Local IJ coordinates are warped inside them (the deleted k-axis sector).
_H3_PENTAGON_BASE_CELLS = (4, 14, 24, 38, 49, 58, 63, 72, 83, 97, 107, 117)
#: The local-IJ path looks neighbours up in a dense array over the IJ bounding box (plus a k-margin)
#: while that box has at most this many entries per unit (plus a fixed allowance); sparser unit sets
#: (scattered cells over a wide area) take the grid-disk path.
_LOCALIJ_MAX_BOX_PER_UNIT = 16
_LOCALIJ_BOX_ALLOWANCE = 1 << 16


def h3_ring_neighbours(cells, k: int = 1, method: str = "auto") -> SparseNeighbours:
    """H3 cells within ``k`` grid steps (``h3.grid_disk``) that are themselves units.

    Both methods give the same matrix (binary CSR, self included, sorted column indices).

    ``method="disk"``: h3ronpy's vectorised ``grid_disk`` (Rust) for every unit, then a pandas hash
    lookup of the disk members among the units. Always applicable (duplicated ids too).

    ``method="auto"`` (default): H3 local IJ coordinates (:func:`_h3_ring_localij`): one vectorised
    h3ronpy ``cells_to_localij`` of all units around one anchor unit, then the hex offsets within ``k``
    (in local IJ the 6 neighbours are (+-1, 0), (0, +-1), (1, 1), (-1, -1)) looked up in a dense array
    over the IJ bounding box; about 3-4x faster than ``"disk"`` (k=1, 30k res-9 cells: ~3-4 ms, was
    ~12 ms; half of it is ``cells_to_localij``). It is only used where the coordinates can be trusted,
    and falls back to ``"disk"`` otherwise: h3ronpy missing; ``k < 1``; units of mixed resolution or not
    cell indexes; any unit in one of the 12 pentagon base cells (local IJ is warped there: e.g.
    Shetland, in base cell 4, takes ``"disk"``); at coarse resolutions (res <= 2 for small k), any
    pentagon whose ``k``-disk leaves its base cell; any unit that h3ronpy cannot convert around the
    anchor (base cells that are not the anchor's or its neighbours; invalid ids, for which ``"disk"``
    then raises its own error); two units on one IJ position (duplicated ids); or an IJ bounding box
    of more than ``16 n + 65536`` positions (scattered units). Both paths gave the same matrix on
    ~12,000 random unit sets worldwide where the local-IJ path was taken (res 1-11, k 1-3, shuffled,
    with gaps, ~4,400 across base-cell and ~1,800 across icosahedron-face edges, random anchors).
    """
    if method not in ("auto", "disk"):
        raise HarmspotError(f"method must be 'auto' or 'disk'; got {method!r}")
    cells = np.asarray(cells, dtype=np.uint64)
    if method == "auto":
        fast = _h3_ring_localij(cells, k)
        if fast is not None:
            return fast
    return _h3_ring_disk(cells, k)


@functools.lru_cache(maxsize=None)
def _h3_pentagon_disks_in_own_base_cell(res: int, k: int) -> bool:
    """True when every cell within ``k`` steps of each res-``res`` pentagon lies in that pentagon's base cell.

    Then units outside the pentagon base cells are more than ``k`` steps from any pentagon.
    """
    from h3.api import basic_int as h3i

    return all(h3i.get_base_cell_number(c) == h3i.get_base_cell_number(p)
               for p in h3i.get_pentagons(res) for c in h3i.grid_disk(p, k))


def _h3_hex_offsets(k: int, width: int) -> np.ndarray:
    """Flat offsets ``di * width + dj`` of the local-IJ positions within ``k`` grid steps (centre included).

    In H3's local IJ the 6 neighbours are (+-1, 0), (0, +-1), (1, 1), (-1, -1), so the grid distance of
    (di, dj) is ``max(|di|, |dj|, |di - dj|)``.
    """
    d = np.arange(-k, k + 1)
    di, dj = np.repeat(d, d.size), np.tile(d, d.size)
    keep = np.maximum(np.maximum(np.abs(di), np.abs(dj)), np.abs(di - dj)) <= k
    return di[keep].astype(np.int64) * width + dj[keep]


#: Knuth's 16-comparator sorting network for 7 inputs (TAOCP vol. 3, 5.3.4; the tests check it on all
#: 2**7 zero-one inputs, which suffices by the 0-1 principle).
_SORT_NETWORK_7 = ((0, 6), (2, 3), (4, 5), (0, 2), (1, 4), (3, 6), (0, 1), (2, 5), (3, 4), (1, 2), (4, 6),
                   (2, 3), (4, 5), (1, 2), (3, 4), (5, 6))


def _sort_network_7(rows: np.ndarray) -> None:
    """Sort a (7, n) array along axis 0 in place (column-wise), with contiguous elementwise min/max."""
    low = np.empty_like(rows[0])
    for a, b in _SORT_NETWORK_7:
        np.minimum(rows[a], rows[b], out=low)
        np.maximum(rows[a], rows[b], out=rows[b])
        rows[a] = low


def _h3_ring_localij(cells: np.ndarray, k: int, anchor: int | None = None) -> SparseNeighbours | None:
    """The local-IJ build of :func:`h3_ring_neighbours`, or ``None`` when it cannot be trusted (see there).

    ``anchor`` (tests): the origin of the IJ coordinates; default a unit in the base cell holding most units.
    """
    n = len(cells)
    k = int(k)
    if n == 0 or k < 1 or n >= 2**31 - 1:
        return None
    try:
        from h3ronpy import cells_to_localij
    except ImportError:  # pragma: no cover - h3ronpy missing
        return None
    # header bits 52-63 (reserved 0, mode 1 = cell, mode-dependent 0, resolution): one value for all units
    head = cells >> np.uint64(52)
    h0 = int(head[0])
    if h0 >> 4 != 0x8 or not (head == head[0]).all():
        return None
    base = ((cells >> np.uint64(45)) & np.uint64(0x7F)).astype(np.intp)
    per_base = np.bincount(base, minlength=128)
    if per_base[122:].any() or per_base[list(_H3_PENTAGON_BASE_CELLS)].any():
        return None
    if not _h3_pentagon_disks_in_own_base_cell(h0 & 0xF, k):
        return None
    if anchor is None:  # a unit in the busiest base cell
        anchor = int(cells[int(np.argmax(base == int(np.argmax(per_base))))])
    try:
        ij = cells_to_localij(cells, int(anchor))
        i = np.asarray(ij.column("i").to_numpy())
        j = np.asarray(ij.column("j").to_numpy())
    except Exception:  # noqa: BLE001 - any conversion failure: the grid-disk path decides
        return None
    if i.size != n or j.size != n:  # pragma: no cover - defensive
        return None
    i0, j0 = int(i.min()) - k, int(j.min()) - k
    height, width = int(i.max()) - i0 + k + 1, int(j.max()) - j0 + k + 1
    if height * width > _LOCALIJ_MAX_BOX_PER_UNIT * n + _LOCALIJ_BOX_ALLOWANCE:
        return None
    flat = i.astype(np.intp)
    flat -= i0
    flat *= width
    flat += j
    flat -= j0
    box = np.full(height * width, -1, np.int32)
    own = np.arange(n, dtype=np.int32)
    box[flat] = own
    if not (box[flat] == own).all():  # two units on one position: duplicated ids (or a warped chart)
        return None
    # candidate positions per offset, one contiguous row each: cols[q, u] = unit at offset q of unit u, or -1
    offsets = _h3_hex_offsets(k, width)
    cols = np.empty((offsets.size, n), np.int32)
    at = np.empty_like(flat)
    for q, d in enumerate(offsets):
        np.take(box, np.add(flat, d, out=at), out=cols[q])
    # int32 CSR index arrays whenever they fit (scipy would convert to that anyway)
    index_dtype = np.int32 if offsets.size * n < 2**31 else np.int64
    indptr = np.zeros(n + 1, index_dtype)
    np.cumsum(np.add.reduce(cols >= 0, axis=0, dtype=index_dtype), out=indptr[1:])
    if k == 1:  # 7 candidates: a sorting network over the rows (~3x faster than np.sort along a short axis)
        _sort_network_7(cols)
        cols = np.ascontiguousarray(cols.T)
    else:
        cols = np.sort(cols.T, axis=1)
    indices = cols[cols >= 0]  # -1 (not a unit) sorts first in each unit's row
    m = sparse.csr_matrix((np.ones(indices.size), indices, indptr), shape=(n, n))
    m.has_sorted_indices = True
    return SparseNeighbours._from_csr(m, {"neighbours": "h3 grid ring", "ring_k": k})


def _h3_ring_disk(cells: np.ndarray, k: int) -> SparseNeighbours:
    """The grid-disk build of :func:`h3_ring_neighbours` (``method="disk"``)."""
    cells = np.asarray(cells, dtype=np.uint64)
    n = len(cells)
    try:  # vectorised (Rust) grid disks
        import pyarrow as pa
        from h3ronpy import grid_disk

        disks = pa.array(grid_disk(cells, int(k), flatten=False))
        off = np.asarray(disks.offsets)
        vals = np.asarray(disks.values, dtype=np.uint64)
        origin = np.repeat(np.arange(n), np.diff(off))
    except ImportError:  # pragma: no cover - h3ronpy/pyarrow missing: h3-py per cell
        from h3.api import basic_int as h3i

        lists = [h3i.grid_disk(int(c), int(k)) for c in cells]
        origin = np.repeat(np.arange(n), [len(v) for v in lists])
        vals = np.array([d for v in lists for d in v], dtype=np.uint64)
    # position of every disk member among the units (-1: not a unit). Usual case (unique ids): pandas'
    # hash index (~2x faster than a binary search here), and since the disks come grouped by origin and
    # include the origin, the binary CSR matrix (self included) is written directly.
    import pandas as pd

    index = pd.Index(cells)
    if index.is_unique:
        col = index.get_indexer(vals)
        hit = col >= 0
        rows = origin[hit]
        indptr = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
        m = sparse.csr_matrix((np.ones(rows.size), col[hit], indptr), shape=(n, n))
        m.sort_indices()
        if n and m.diagonal().all():
            return SparseNeighbours._from_csr(m, {"neighbours": "h3 grid ring", "ring_k": int(k)})
        return SparseNeighbours(m, {"neighbours": "h3 grid ring", "ring_k": int(k)})
    order = np.argsort(cells)  # duplicated ids: every disk member maps to one of its copies
    pos = np.clip(np.searchsorted(cells[order], vals), 0, max(n - 1, 0))
    hit = cells[order][pos] == vals
    rows, cols = origin[hit], order[pos[hit]]
    m = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    return SparseNeighbours(m, {"neighbours": "h3 grid ring", "ring_k": int(k)})


CONTIGUITY_METHODS = ("vertex", "predicate")

#: Odd 64-bit multipliers mixing the bit patterns of x and y into one hash key (collisions are
#: detected exactly and the colliding rows sorted on their coordinates, so they cost time, never correctness).
_HASH_X = np.uint64(0x9E3779B97F4A7C15)
_HASH_Y = np.uint64(0xC2B2AE3D27D4EB4F)


def contiguity_neighbours(geoms, rule: str = "queen", method: str = "vertex") -> SparseNeighbours:
    """Polygons sharing a boundary point (``queen``) or a boundary segment (``rook``).

    Parameters
    ----------
    geoms : array-like of shapely polygons (a GeoSeries works)
    rule : {"queen", "rook"}
        ``queen``: units *i* and *j* are neighbours when ``shapely.intersects`` is true
        (any common point: a shared vertex, a vertex on an edge, an overlap; the
        generalised ONS boundaries overlap slightly, so this is deliberately broader
        than libpysal's shared-vertex Queen). ``rook``: a queen pair whose
        intersection has positive length (a shared stretch of boundary, or an overlap).
    method : {"vertex", "predicate"}
        Both give the same matrix. ``predicate`` (the slow, obviously correct twin):
        one bulk ``STRtree.query(predicate="intersects")``, then, for rook,
        ``length(intersection) > 0`` per pair. ``vertex`` (default, about 5-10x faster on
        a clean tessellation): pairs with an exactly equal vertex (hashed coordinates,
        ``numpy`` sort) certainly intersect, and pairs with an exactly equal segment
        certainly share a boundary stretch, so GEOS is only asked about the pairs
        whose bounding boxes touch but which share no vertex (no segment, for
        rook). A shared vertex counts as contact for any polygon whose vertices lie on
        its own boundary, which holds for valid polygons (and for the common invalid
        ones: bow-ties, zero-area rings). The touching boxes come from a numpy
        sort-and-sweep (:func:`_box_pairs`, the pairs of ``STRtree(g).query(g)``).

    Returns
    -------
    SparseNeighbours
        Binary (n, n) matrix, self included.
    """
    import shapely

    if rule not in ("queen", "rook"):
        raise HarmspotError(f"contiguity rule {rule!r}: use 'queen' or 'rook'")
    if method not in CONTIGUITY_METHODS:
        raise HarmspotError(f"contiguity method {method!r}: use one of {', '.join(CONTIGUITY_METHODS)}")
    g = np.asarray(getattr(geoms, "values", geoms), dtype=object)
    n = len(g)
    describe = {"neighbours": f"{rule} contiguity"}
    if method == "predicate" or n < 2:
        tree = shapely.STRtree(g)
        a, b = tree.query(g, predicate="intersects")
        keep = a != b
        a, b = a[keep], b[keep]
        if rule == "rook" and a.size:
            inter = shapely.intersection(g[a], g[b])
            shared = shapely.length(inter) > 0
            a, b = a[shared], b[shared]
        m = sparse.csr_matrix((np.ones(a.size), (a, b)), shape=(n, n))
        return SparseNeighbours(m, describe)

    coords, owner = shapely.get_coordinates(g, return_index=True)
    # a geometry's last coordinate closes its ring, repeating a vertex: leave it out of the hash
    # (leaving out a vertex can only send a pair on to GEOS, never invent one)
    inner = np.ones(owner.size, bool)
    inner[-1:] = False
    np.equal(owner[1:], owner[:-1], out=inner[:-1])
    order, run = _vertex_runs(coords.view(np.complex128).ravel()[inner])
    vpairs = _pairs_sharing(run, owner[inner][order], n)  # sorted keys i * n + j, i < j: certainly intersecting
    # every other intersecting pair has touching bounding boxes: GEOS decides those, unless a
    # 45-degree line parts them
    cand = _box_pairs(g)
    rest = cand[~_in_sorted(cand, vpairs)]
    if rest.size:
        rest = rest[~_diagonally_apart(_octagons(coords, owner, n), n, rest)]
    queen = np.sort(np.concatenate([vpairs, rest[_geos_pairs(g, rest, n, "intersects")]])) if rest.size else vpairs
    if rule == "queen":
        return SparseNeighbours._from_pairs(queen, n, describe)
    # rook: a pair sharing an exactly equal segment shares a stretch of boundary; GEOS decides the rest
    sure = _in_sorted(queen, _segment_pairs(g, coords, owner, inner, order, run, n))
    rest = queen[~sure]
    rook = np.sort(np.concatenate([queen[sure], rest[_geos_pairs(g, rest, n, "rook")]])) if rest.size else queen
    return SparseNeighbours._from_pairs(rook, n, describe)


def _segment_pairs(g, coords, owner, inner, order, run, n: int) -> np.ndarray:
    """Sorted unique ``i * n + j`` (i < j) of polygons with an exactly equal boundary segment.

    ``order`` and ``run`` are :func:`_vertex_runs` of the ``inner`` coordinates (all but each
    geometry's closing one).
    """
    vid = np.empty(owner.size, np.int64)
    vin = np.empty(run.size, np.int64)
    vin[order] = run
    vid[inner] = vin
    first = np.flatnonzero(np.concatenate([[True], owner[1:] != owner[:-1]]))
    vid[~inner] = vid[first]  # the closing coordinate is the first one again (for simple polygons, all _segments uses)
    seg, seg_owner = _segments(g, coords, owner, vid)
    return _pairs_sharing(*_sort_by_key_then_owner(seg, seg_owner, n), n)


def _box_pairs(g) -> np.ndarray:
    """Sorted keys ``i * n + j`` (i < j) of the geometries whose bounding boxes intersect (touching counts).

    The pairs of ``STRtree(g).query(g)`` (closed boxes; missing and empty geometries touch
    nothing), found by a sort-and-sweep in numpy: the boxes are cut into horizontal strips of
    the mean box height (so a box lies in about two strips); in each strip, with the boxes
    sorted on ``xmin``, a box is paired with the ones after it that start at or before its
    ``xmax`` (a binary search), and a pair is kept in one strip only, the one holding the
    higher of the two ``ymin``, when the boxes overlap in y as well. Non-finite bounds, or
    boxes so long and thin that the strips would list many times more candidates than boxes,
    go to the STRtree instead.
    """
    import shapely

    n = len(g)
    b = shapely.bounds(g)
    finite = np.isfinite(b).all(axis=1)
    if not finite.all():
        odd = g[~finite]
        if not (shapely.is_missing(odd) | shapely.is_empty(odd)).all():
            return _tree_pairs(g)  # NaN or infinite coordinates: let GEOS define the boxes
    idx = np.flatnonzero(finite)
    m = idx.size
    if m < 2:
        return np.zeros(0, np.int64)
    xmin, ymin, xmax, ymax = (np.ascontiguousarray(b[idx, k]) for k in range(4))
    ox = np.argsort(xmin)
    rank = np.empty(m, np.int64)
    rank[ox] = np.arange(m)
    y0 = float(ymin.min())
    span = float(ymax.max()) - y0
    s = max(float(np.mean(ymax - ymin)), span / (2 * m))  # at most 2m + 1 strips, about 3m entries
    if not s > 0:
        s = 1.0  # every box is flat and at one height: a single strip
    iy0 = ((ymin - y0) / s).astype(np.int64)  # >= 0 and monotone, so floor, and iy0 <= iy1
    cnt = ((ymax - y0) / s).astype(np.int64) - iy0 + 1
    ent = np.repeat(np.arange(m), cnt)
    strip = iy0[ent] + (np.arange(ent.size) - np.repeat(np.cumsum(cnt) - cnt, cnt))
    key = strip * m + rank[ent]  # unique: (strip, rank of xmin)
    key.sort()
    strip, ent = np.divmod(key, m)
    ent = ox[ent]
    # entries of the same strip whose xmin ranks below the count of xmin <= this box's xmax
    end = np.searchsorted(xmin[ox], xmax, side="right")
    hi = np.searchsorted(key, strip * m + end[ent], side="left")
    c = hi - np.arange(ent.size) - 1
    tot = int(c.sum())
    if tot > 32 * m + (1 << 20):
        return _tree_pairs(g)  # long thin boxes crowd the strips: the tree lists fewer candidates
    p = np.repeat(np.arange(ent.size), c)
    q = np.arange(1, tot + 1) + np.repeat(np.arange(ent.size) - (np.cumsum(c) - c), c)
    i, j = ent[p], ent[q]
    keep = (ymin[i] <= ymax[j]) & (ymin[j] <= ymax[i]) & (np.maximum(iy0[i], iy0[j]) == strip[p])
    i, j = idx[i[keep]], idx[j[keep]]
    pairs = np.minimum(i, j) * n + np.maximum(i, j)
    pairs.sort()
    return pairs


def _tree_pairs(g) -> np.ndarray:
    """Sorted keys ``i * n + j`` (i < j) of bounding boxes that intersect, from ``shapely.STRtree``."""
    import shapely

    a, b = shapely.STRtree(g).query(g)
    up = a < b
    return np.sort(a[up].astype(np.int64) * len(g) + b[up])


def _geos_pairs(g, keys, n: int, test: str) -> np.ndarray:
    """GEOS verdict for pairs ``i * n + j``: ``intersects``, or ``rook`` (intersection of positive length)."""
    import shapely

    a, b = np.divmod(keys, n)
    if test == "rook":
        return shapely.length(shapely.intersection(g[a], g[b])) > 0
    return shapely.intersects(g[a], g[b])  # (prepared geometries were slower here: ~1 pair per polygon)


def _octagons(coords, owner, n: int):
    """Per polygon, the ranges of its vertices' ``x + y`` and ``x - y`` (an (n, 4) array ``hi+, lo+, hi-, lo-``), and a tolerance.

    Rows of polygons without coordinates are left unset (no pair names them). The tolerance
    is 16 float64 epsilons of the largest coordinate. None when a coordinate is NaN or
    infinite (then no claim is made, GEOS decides).
    """
    if coords.size == 0:
        return None
    big = max(float(coords.max()), -float(coords.min()), 1.0)
    if not np.isfinite(big):
        return None
    start = np.flatnonzero(np.concatenate([[True], owner[1:] != owner[:-1]]))
    at = owner[start]
    out = np.empty((n, 4))
    for k, proj in enumerate((coords[:, 0] + coords[:, 1], coords[:, 0] - coords[:, 1])):
        out[at, 2 * k] = np.maximum.reduceat(proj, start)
        out[at, 2 * k + 1] = np.minimum.reduceat(proj, start)
    return out, 16 * np.finfo(float).eps * big


def _diagonally_apart(octagons, n: int, keys) -> np.ndarray:
    """True for pairs ``i * n + j`` certainly disjoint: their vertices' ``x + y`` (or ``x - y``) ranges do not meet.

    ``octagons`` comes from :func:`_octagons`. A polygon lies in the convex hull of its
    vertices, so separated ranges along a direction prove disjointness (the bounding boxes
    already overlap along x and y: this is the octagon test). The margin of 16 float64
    epsilons of the largest coordinate is well above the rounding of the sums (at most 2
    epsilons of it), so no touching pair is ever dropped.
    """
    apart = np.zeros(keys.size, bool)
    if keys.size == 0 or octagons is None:
        return apart
    oct, tol = octagons
    a, b = np.divmod(keys, n)
    oa, ob = oct[a], oct[b]
    for k in (0, 2):
        apart |= (oa[:, k] < ob[:, k + 1] - tol) | (ob[:, k] < oa[:, k + 1] - tol)
    return apart


def _vertex_runs(coords) -> tuple[np.ndarray, np.ndarray]:
    """Sort coordinate rows so that exactly equal points are adjacent.

    ``coords``: (N, 2) floats, or N complex numbers ``x + iy``. Returns ``order`` (a permutation
    of the rows, increasing within a run) and ``run``, a non-decreasing integer per
    sorted row, equal exactly when x and y compare equal (so -0.0 == 0.0, and a NaN row
    equals nothing). Rows are sorted on a 64-bit hash of both coordinates whose low bits are
    replaced by the row number (one value sort, no argsort); where rows share the remaining
    hash bits but differ (a collision, or NaN), those hash runs are sorted on the coordinates
    themselves.
    """
    c = coords if coords.dtype == np.complex128 else np.ascontiguousarray(coords, dtype=float).view(np.complex128).ravel()
    h = (c.real + 0.0).view(np.uint64) * _HASH_X ^ (c.imag + 0.0).view(np.uint64) * _HASH_Y  # + 0.0: -0.0 -> 0.0
    bits = np.uint64(max(int(c.size - 1).bit_length(), 1))
    low = (np.uint64(1) << bits) - np.uint64(1)
    key = h & ~low
    key |= np.arange(c.size, dtype=np.uint64)
    key.sort()
    order = (key & low).astype(np.intp)
    key >>= bits
    cs = c[order]
    same = cs[1:] == cs[:-1]
    clash = key[1:] == key[:-1]
    clash &= ~same
    if clash.any():  # equal hash bits, different points: order those hash runs by x, then y
        hrun = np.zeros(c.size, np.int64)
        np.cumsum(key[1:] != key[:-1], out=hrun[1:])
        pos = np.flatnonzero(np.isin(hrun, hrun[1:][clash]))
        order[pos] = order[pos][np.lexsort((cs.imag[pos], cs.real[pos], hrun[pos]))]
        cs = c[order]
        same = cs[1:] == cs[:-1]
    run = np.zeros(c.size, np.int64)
    np.cumsum(~same, out=run[1:])
    return order, run


def _pairs_sharing(key, owner, n: int) -> np.ndarray:
    """Sorted unique ``i * n + j`` (i < j) for owners i != j holding an equal ``key`` (>= 0).

    ``key`` must be sorted (equal keys adjacent) and ``owner``, in the same order, must not
    decrease within a run of equal keys (so the earlier of two positions has the smaller owner).
    """
    ok = key >= 0
    if not ok.all():
        key, owner = key[ok], owner[ok]
    owner = owner.astype(np.int64, copy=False)
    found = []
    for d in range(1, 33):  # pair each position with the one d places on, while runs are that long
        m = key[d:] == key[:-d]
        if not m.any():
            break
        m &= owner[d:] != owner[:-d]
        found.append(owner[:-d][m] * n + owner[d:][m])
    else:  # a point shared by very many polygons: enumerate every run's pairs explicitly
        start = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
        size = np.diff(np.append(start, key.size))
        multi = size > 1
        st, sz = start[multi], size[multi]
        pos = np.arange(int(sz.sum())) + np.repeat(st - (np.cumsum(sz) - sz), sz)
        cnt = np.repeat(st + sz, sz) - pos - 1
        first = np.repeat(pos, cnt)
        second = first + 1 + (np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt))
        keep = owner[first] != owner[second]
        found = [owner[first[keep]] * n + owner[second[keep]]]
    if not found:
        return np.zeros(0, np.int64)
    pairs = np.concatenate(found)
    pairs.sort()
    if pairs.size:
        pairs = pairs[np.concatenate([[True], pairs[1:] != pairs[:-1]])]
    return pairs


def _sort_by_key_then_owner(key, owner, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``key`` (>= 0) and ``owner`` (< n) sorted on key, then owner: one value sort of both packed in 63 bits."""
    bits = max(int(n - 1).bit_length(), 1)
    if key.size and int(key.max()) < (1 << (63 - bits)):
        packed = (key << bits) | owner
        packed.sort()
        return packed >> bits, packed & ((1 << bits) - 1)
    o = np.lexsort((owner, key))
    return key[o], owner[o]


def _in_sorted(x, ref) -> np.ndarray:
    """``np.isin(x, ref)`` for sorted unique non-negative int64 ``x`` and ``ref`` (keys < 2**62): one merge.

    Tagged ``2 * key`` (ref) and ``2 * key + 1`` (x), the two sorted runs are merged by a stable
    sort; an x key is in ref exactly when its tagged twin sits just before it.
    """
    if x.size == 0 or ref.size == 0:
        return np.zeros(x.shape, bool)
    both = np.concatenate([ref * 2, x * 2 + 1])
    both.sort(kind="stable")  # two sorted runs: a merge
    hit = np.zeros(both.size, bool)
    np.equal(both[1:] - 1, both[:-1], out=hit[1:])
    return hit[(both & 1) == 1]


def _segments(g, coords, owner, vid):
    """Boundary segments as exact keys (unordered pair of vertex ids) and their polygon.

    Consecutive coordinates of one ring form a segment; with holes or multipolygons the
    rings are taken apart so that no segment jumps from one ring to the next.
    """
    import shapely

    ring = owner
    simple = (shapely.get_type_id(g) == 3) & (shapely.get_num_interior_rings(g) == 0)
    if not simple[~shapely.is_missing(g)].all():
        parts, pidx = shapely.get_parts(g, return_index=True)
        rings, ridx = shapely.get_rings(parts, return_index=True)
        coords_r, ring = shapely.get_coordinates(rings, return_index=True)
        owner = pidx[ridx][ring]
        o, run = _vertex_runs(coords_r)
        vid = np.empty(len(coords_r), np.int64)
        vid[o] = run
    v0, v1 = vid[:-1], vid[1:]
    ok = (ring[1:] == ring[:-1]) & (v0 != v1) & (v0 >= 0) & (v1 >= 0)
    lo, hi = np.minimum(v0[ok], v1[ok]), np.maximum(v0[ok], v1[ok])
    nv = int(vid.max()) + 1
    return lo * nv + hi, owner[:-1][ok]


# ------------------------------------------------------------------------------------------ statistic
def gistar_z(y, neighbours) -> np.ndarray:
    """Gi* z-scores for ``y`` of shape (n,) or (n, T) (one column per period).

    Returns NaN where the statistic is undefined (all values equal, or a unit whose
    neighbourhood is every unit).
    """
    y = np.asarray(y, float)
    n = y.shape[0]
    if n != neighbours.n:
        raise HarmspotError(f"{n} values for {neighbours.n} units")
    if n < 3:
        raise EmptyInputError(f"Gi* needs at least 3 units; got {n}")
    lag = neighbours.lag(y)
    w = neighbours.cardinality if y.ndim == 1 else neighbours.cardinality[:, None]
    ybar = y.mean(axis=0)
    s = np.sqrt(np.maximum((y * y).mean(axis=0) - ybar * ybar, 0.0))
    den = s * np.sqrt(w * (n - w) / (n - 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (lag - ybar * w) / den
    return np.where(den > 0, z, np.nan)


def adjust_pvalues(p, method: str = "fdr") -> np.ndarray:
    """Adjusted p-values: Benjamini–Hochberg q-values (``fdr``), Bonferroni, or unchanged.

    BH uses ``scipy.stats.false_discovery_control``; NaN p-values are left NaN and
    not counted among the tests.
    """
    if method not in ADJUST:
        raise HarmspotError(f"adjust={method!r}: use one of {', '.join(ADJUST)}")
    p = np.asarray(p, float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if method == "none" or not ok.any():
        out[ok] = p[ok]
    elif method == "bonferroni":
        out[ok] = np.minimum(1.0, p[ok] * ok.sum())
    else:
        out[ok] = stats.false_discovery_control(p[ok], method="bh")
    return out


def classify(z, p_adj) -> np.ndarray:
    """ArcGIS Gi_Bin codes: +3/+2/+1 hot at 99/95/90 %, 0 not significant, -1..-3 cold."""
    z = np.asarray(z, float)
    p = np.asarray(p_adj, float)
    level = np.select([p <= 0.01, p <= 0.05, p <= 0.10], [3, 2, 1], 0)
    level = np.where(np.isfinite(p) & np.isfinite(z), level, 0)
    return (np.sign(np.nan_to_num(z)) * level).astype(np.int64)


def class_labels(bins) -> np.ndarray:
    return np.array([CLASS_LABELS[int(b)] for b in np.asarray(bins)], dtype=object)


def permutation_pvalues(y, neighbours, permutations: int = 999, seed: int | None = None,
                        chunk: int = 2048) -> np.ndarray:
    """Two-sided conditional-permutation pseudo p-values for Gi* (see module notes).

    Each permutation draws one random ordering of ``max(W_i) - 1`` "other" units
    (as esda's ``crand``); unit *i* takes the first ``W_i - 1`` of them, skipping
    itself. The numerator of z is monotone in the neighbour sum, so sums are compared.
    """
    if permutations < 1:
        raise HarmspotError(f"permutations must be >= 1; got {permutations}")
    y = np.asarray(y, float)
    n = y.size
    card = np.rint(neighbours.cardinality).astype(np.int64)
    k = int(card.max()) - 1
    obs = neighbours.lag(y)
    if k <= 0:
        return np.ones(n)
    if k >= n:
        raise HarmspotError("a neighbourhood covers every unit; permutations are meaningless")
    rng = np.random.default_rng(seed)
    ids = np.stack([rng.choice(n - 1, size=k, replace=False) for _ in range(permutations)])  # (P, k)
    ge = np.zeros(n)
    le = np.zeros(n)
    take = np.arange(k)
    for a in range(0, n, chunk):
        i = np.arange(a, min(a + chunk, n))
        sel = ids[None, :, :] + (ids[None, :, :] >= i[:, None, None])  # skip self
        vals = y[sel]  # (c, P, k)
        vals = np.where(take[None, None, :] < (card[i] - 1)[:, None, None], vals, 0.0)
        sims = vals.sum(axis=2) + y[i][:, None]
        tol = 1e-9 * np.maximum(1.0, np.abs(obs[i]))[:, None]
        ge[i] = (sims >= obs[i][:, None] - tol).sum(axis=1)
        le[i] = (sims <= obs[i][:, None] + tol).sum(axis=1)
    return np.minimum(1.0, 2.0 * (np.minimum(ge, le) + 1.0) / (permutations + 1.0))


@dataclass
class GiStar:
    """Gi* results for one variable: z, two-sided p, adjusted p, ArcGIS bin and label."""

    z: np.ndarray
    p: np.ndarray
    p_adj: np.ndarray
    bins: np.ndarray
    adjust: str
    permutations: int

    @property
    def labels(self) -> np.ndarray:
        return class_labels(self.bins)

    def counts(self) -> dict:
        s = pd.Series(self.labels).value_counts()
        return {CLASS_LABELS[b]: int(s.get(CLASS_LABELS[b], 0)) for b in sorted(CLASS_LABELS, reverse=True)}


def gistar(y, neighbours, *, adjust: str = "fdr", permutations: int = 0, seed: int | None = None) -> GiStar:
    """Gi* z, p (normal, two-sided, or permutation when ``permutations > 0``), adjusted p and class."""
    if adjust not in ADJUST:
        raise HarmspotError(f"--adjust {adjust!r}: use one of {', '.join(ADJUST)}")
    z = gistar_z(y, neighbours)
    if permutations and permutations > 0:
        p = permutation_pvalues(y, neighbours, permutations, seed)
        p = np.where(np.isfinite(z), p, np.nan)
    else:
        p = 2.0 * stats.norm.sf(np.abs(z))
    p_adj = adjust_pvalues(p, adjust)
    return GiStar(z, p, p_adj, classify(z, p_adj), adjust, int(permutations or 0))


# ------------------------------------------------------------------------------------------ cache
class NeighbourCache:
    """Neighbour matrices built once and reused.

    A matrix is keyed by its rule and the exact units it was built on (see
    :func:`neighbours_key`): H3 cell ids, or the polygons' WKB (every coordinate and
    part), or their centroids for a distance band. Matrices are kept in memory while
    this object lives (least recently used dropped beyond ``size``) and, when the
    caller gives them, in storage through ``load(key) -> bytes | None`` and
    ``save(key, bytes)`` (``services`` passes its store's, so next week's run on the
    same area reuses the matrix built this week). Squares are never cached: their
    lattice convolution has nothing to build. geo keeps no global state; the cache
    lives as long as its owner.

    ``last``: where the most recent :meth:`get` found its matrix (``"memory"``,
    ``"stored"`` or ``"built"``).
    """

    def __init__(self, size: int = 8, load=None, save=None):
        from collections import OrderedDict

        self.size = int(size)
        self._load, self._save = load, save
        self._mem: "OrderedDict[str, SparseNeighbours]" = OrderedDict()
        self.last: str | None = None

    def get(self, key: str, build) -> "SparseNeighbours":
        """The matrix for ``key``: from memory, else storage, else ``build()`` (then kept and saved)."""
        nb = self._mem.get(key)
        if nb is not None:
            self._mem.move_to_end(key)
            self.last = "memory"
            return nb
        data = self._load(key) if self._load is not None else None
        nb = None
        if data is not None:
            try:
                nb = SparseNeighbours.from_bytes(data)
                self.last = "stored"
            except Exception:  # an unreadable stored copy is a miss: rebuilt below and saved over
                nb = None
        if nb is None:
            nb = build()
            self.last = "built"
            if self._save is not None:
                self._save(key, nb.to_bytes())
        self._mem[key] = nb
        while len(self._mem) > self.size:
            self._mem.popitem(last=False)
        return nb


def _centroid_xy(frame) -> np.ndarray:
    """(n, 2) float64 centroids of the units, in unit order."""
    c = frame.geometry.centroid
    return np.ascontiguousarray(np.column_stack([c.x.to_numpy(float), c.y.to_numpy(float)]))


def neighbours_key(kind: str, frame, rule: dict, *, centroids: np.ndarray | None = None) -> str:
    """Cache key of a neighbour matrix: the rule plus a SHA-256 digest of the exact units.

    H3: the cell ids in unit order. Polygons (contiguity): every coordinate in unit order
    plus each unit's geometry type and numbers of coordinates, parts and holes, so an
    edited boundary (one vertex moved) gets a new key. Distance band: the unit
    centroids (``centroids`` when the caller already has them). Any change of units,
    their order or the rule changes the key."""
    import hashlib
    import json

    h = hashlib.sha256(json.dumps({"kind": kind, **rule}, sort_keys=True, default=str).encode())
    if kind == "h3" and "band_m" not in rule:
        h.update(_h3_cells(frame).tobytes())
    elif "band_m" in rule:
        h.update(np.ascontiguousarray(_centroid_xy(frame) if centroids is None else centroids, float).tobytes())
    else:
        import shapely

        g = np.asarray(frame.geometry.values, dtype=object)
        for part in (shapely.get_type_id(g), shapely.get_num_coordinates(g), shapely.get_num_geometries(g),
                     shapely.get_num_interior_rings(g), shapely.get_coordinates(g)):
            h.update(np.ascontiguousarray(part).tobytes())
    return f"{kind}-{h.hexdigest()[:40]}"


def _h3_cells(frame) -> np.ndarray:
    from .units import H3Units

    return frame["h3"].to_numpy(np.uint64) if "h3" in frame else H3Units.from_str(frame["cell_id"])


# ------------------------------------------------------------------------------------------ analysis
def neighbours_for(units, frame, *, band: float | None = None, ring: int | None = None,
                   contiguity: str = "queen", cache: NeighbourCache | None = None) -> tuple[object, list[Choice]]:
    """Neighbours for a unit frame from ``count_units`` and the choices made.

    Squares: distance band (default ``cell * sqrt(2)``: the 8 queen neighbours, as
    sfhotspot). H3: grid ring ``k`` (default 1) unless a band is given. Polygons:
    queen contiguity unless a band is given. With a :class:`NeighbourCache`, H3 and
    polygon matrices are built once and reused (echoed as a choice).
    """
    choices: list[Choice] = []
    kind = getattr(units, "kind", "square")
    if kind == "square":
        if band is None:
            band = units.cell * np.sqrt(2.0)
            choices.append(Choice("distance band", f"{band:.1f} m", "cell size x sqrt(2): the 8 surrounding cells"))
        ix, iy = square_index(frame, units.cell)
        return LatticeNeighbours(ix, iy, units.cell, band), choices
    if kind == "h3" and band is None:
        if ring is None:
            ring = 1
            choices.append(Choice("H3 neighbours", "ring 1", "the 6 touching cells"))
        rule = {"neighbours": "h3 grid ring", "ring_k": int(ring)}
        build = lambda: h3_ring_neighbours(_h3_cells(frame), ring)  # noqa: E731
    elif band is not None:
        rule = {"neighbours": "distance band", "band_m": float(band)}
        xy = _centroid_xy(frame)  # once, for the build and the cache key
        build = lambda: distance_band_neighbours(xy, band)  # noqa: E731
    else:
        choices.append(Choice("neighbours", f"{contiguity} contiguity", "polygons sharing a boundary"))
        rule = {"neighbours": f"{contiguity} contiguity"}
        build = lambda: contiguity_neighbours(frame.geometry.values, contiguity)  # noqa: E731
    if cache is None:
        return build(), choices
    key = neighbours_key(kind, frame, rule, centroids=xy if band is not None else None)
    nb = cache.get(key, build)
    said = {"memory": "reused (built earlier in this session)", "stored": "reused from the store",
            "built": "built now and cached"}[cache.last]
    choices.append(Choice("neighbour matrix", said, f"{len(frame):,} units, key {key[:16]}"))
    return nb, choices


def square_index(frame, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Lattice column/row of BNG squares: the ``ix``/``iy`` columns, else from the geometry's lower-left corner."""
    if "ix" in frame and "iy" in frame:
        return frame["ix"].to_numpy(np.int64), frame["iy"].to_numpy(np.int64)
    b = frame.geometry.bounds
    return (np.rint(b["minx"].to_numpy() / cell).astype(np.int64),
            np.rint(b["miny"].to_numpy() / cell).astype(np.int64))


def hotspots_gistar(
    incidents,
    units=None,
    weights=None,
    *,
    area=None,
    period=None,
    categories=None,
    band: float | None = None,
    ring: int | None = None,
    contiguity: str = "queen",
    weight: str = "count",
    adjust: str = "fdr",
    permutations: int = 0,
    seed: int | None = None,
    inputs: dict | None = None,
    neighbour_cache: NeighbourCache | None = None,
) -> AnalysisResult:
    """Which units are statistically hot (or cold) for counts or harm? Getis-Ord Gi*.

    Parameters
    ----------
    incidents : IncidentTable
    units : SquareGrid | H3Units | PolygonUnits, default ``SquareGrid(150)``
    weights : WeightTable, default the national CCHI table (for the ``harm`` column)
    area, period, categories : as :func:`geo.aggregate.count_units`; every unit of the
        study area enters the statistic, zero units included.
    band : float, optional
        Distance band in metres between unit centroids (self included, binary).
        Default for squares: ``cell * sqrt(2)``; H3: ring 1; polygons: contiguity.
    ring : int, optional
        H3 grid-ring size (when no ``band``).
    contiguity : {"queen", "rook"}
        Polygon contiguity when no ``band``.
    weight : {"count", "harm"}
        The variable tested.
    adjust : {"fdr", "bonferroni", "none"}
        Multiple-testing control of the p-values behind the classes (default BH FDR).
    permutations : int
        0 = analytic normal p-values; > 0 = conditional permutation with ``seed``.
    neighbour_cache : NeighbourCache, optional
        H3 and polygon neighbour matrices are taken from it, or built once and kept in it.

    Returns
    -------
    AnalysisResult
        ``layer``: every unit with ``cell_id``, ``count``, ``harm``, ``neighbours``
        (:math:`W_i`, self included), ``gistar_z``, ``gistar_p`` (two-sided,
        unadjusted), ``gistar_p_adj`` (after ``adjust``), ``gistar_bin`` (-3..3),
        ``gistar_class`` (ArcGIS label) and geometry.
        ``summary``: units, incidents, class counts, z range, the variable tested.
        ``params``: units, band/ring/contiguity, weight, adjust, permutations, seed.
    """
    from .aggregate import count_units

    if weight not in ("count", "harm"):
        raise HarmspotError(f"--weight {weight!r}: use 'count' or 'harm'")
    base = count_units(incidents, units, weights, area=area, period=period, categories=categories, inputs=inputs)
    if units is None:
        from .units import SquareGrid

        units = SquareGrid(150.0)
    frame = base.layer
    if base.summary["incidents"] == 0:
        raise EmptyInputError("no incidents fall in the study area for this period and these categories")
    nb, nchoices = neighbours_for(units, frame, band=band, ring=ring, contiguity=contiguity,
                                  cache=neighbour_cache)
    y = base.layer[weight].to_numpy(float)
    g = gistar(y, nb, adjust=adjust, permutations=permutations, seed=seed)
    layer = base.layer[["cell_id", "count", "harm"]].copy()
    layer["neighbours"] = np.rint(nb.cardinality).astype(np.int64)
    layer["gistar_z"] = g.z
    layer["gistar_p"] = g.p
    layer["gistar_p_adj"] = g.p_adj
    layer["gistar_bin"] = g.bins
    layer["gistar_class"] = g.labels
    import geopandas as gpd

    layer = gpd.GeoDataFrame(layer, geometry=base.layer.geometry.values, crs=base.layer.crs)
    params = {**base.params, **nb.describe(), "weight": weight, "adjust": adjust,
              "permutations": int(permutations or 0), "seed": seed,
              "p_value": "permutation, two-sided" if permutations else "normal, two-sided"}
    summary = {**base.summary, "tested": weight, "classes": g.counts(),
               "z_max": float(np.nanmax(g.z)) if np.isfinite(g.z).any() else None,
               "z_min": float(np.nanmin(g.z)) if np.isfinite(g.z).any() else None,
               "undefined_z": int((~np.isfinite(g.z)).sum())}
    choices = list(base.choices) + nchoices
    if weight == "harm":
        choices.append(Choice("variable tested", "harm", "harm-weighted Gi* (CCHI days per unit)", automatic=False))
    return AnalysisResult(kind="gistar", layer=layer, params=params, choices=choices,
                          weight_table=base.weight_table, period=period, inputs=base.inputs, summary=summary)
