"""Neighbour structures every local statistic uses: the regular BNG lattice (queen/rook/band, by index
arithmetic), a general sparse matrix, and distance bands between unit centroids.
"""
from __future__ import annotations


import numpy as np
from scipy import sparse

from geo.core.errors import EmptyInputError, HarmspotError


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
