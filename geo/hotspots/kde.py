r"""Kernel density of counts or harm onto a BNG-aligned raster.

Where is harm concentrated, as a smooth surface? :func:`hotspots_kde`.

Method
------
The surface at a cell centre :math:`c` is :math:`f(c)=\sum_i w_i K_h(\lVert c-p_i\rVert)`
with :math:`w_i` = 1 (counts) or the incident's harm weight.

Kernels (``h`` = bandwidth in metres, ``r`` = distance):

* ``quartic`` (default; QGIS and ArcGIS "Kernel Density"):
  :math:`K_h(r)=\frac{3}{\pi h^2}(1-r^2/h^2)^2` for :math:`r<h`, else 0. ``h`` is the radius.
* ``gaussian``: :math:`K_h(r)=\frac{1}{2\pi h^2}e^{-r^2/(2h^2)}`, ``h`` the standard
  deviation, truncated at 5h (the lost mass is below 4e-6 of the peak).

Scales (``scale``), stated in the raster's metadata:

* ``density`` (default): the normalised kernels above, times 1e6, so the raster is
  **incidents (or harm) per km²** and integrates to the total.
* ``count``: the *unscaled* kernel, :math:`K(0)=1` (QGIS's "raw" output): a
  **kernel-weighted count** of incidents (or harm) within the bandwidth.

Fast path: points are *linearly binned* (each point's weight shared between the four
surrounding nodes) onto a grid ``oversample`` times finer than the output cells, then
convolved with the kernel by FFT (``scipy.fft``; only the cell centres are computed: the
``oversample``² node phases are transformed at cell resolution in one batched call and
summed in the frequency domain). The error against the exact sum is second order in the node spacing
(about :math:`\delta^2/h^2` of a point's peak in the worst case, far less for many
points because the errors cancel). Every run checks itself: the exact sum is evaluated
at the 50 highest cells and 50 random ones, and while the error exceeds half of
``tol`` (default 1e-3 of the peak; half, because a sample does not see every cell) the
binning is refined (:data:`AUTO_SEQUENCE`, cheapest first): the per-point correction, nodes 2x
finer than the cells (cell centres then fall half-way between nodes), 3x, 4x ... 9x. The achieved
error is reported in ``summary["check"]``.

Bandwidth rule (when none is given), ArcGIS Pro's documented default search radius
(a spatial variant of Silverman's rule of thumb):
:math:`h = 0.9\,\min(SD,\ \sqrt{1/\ln 2}\,D_m)\,n^{-0.2}`, with SD the standard
distance of the incident locations, :math:`D_m` the median distance from their mean
centre and ``n`` the number of incidents. The value is echoed and returned.

Caveats: KDE is a picture, not a test (use Gi* for significance); the surface
depends strongly on the bandwidth; police.uk points are snapped to anonymised
locations, so bandwidths below ~200 m show the snapping grid rather than crime.
"""
from __future__ import annotations

import numpy as np

from geo import BNG
from geo.core.errors import EmptyInputError, HarmspotError
from geo.core.result import AnalysisResult, Choice, Raster
from geo.units.lattice import Lattice, SquareGrid


KERNELS = ("quartic", "gaussian")
SCALES = ("density", "count")
GAUSS_TRUNC = 5.0


def kernel_support(bandwidth: float, kernel: str) -> float:
    """Distance beyond which the kernel is zero (quartic) or truncated (Gaussian, 5 h)."""
    return bandwidth if kernel == "quartic" else GAUSS_TRUNC * bandwidth


def kernel_values(r2, bandwidth: float, kernel: str = "quartic", scale: str = "density") -> np.ndarray:
    """Kernel at squared distances ``r2`` (m²); ``density`` in units per km², ``count`` with K(0) = 1."""
    if kernel not in KERNELS:
        raise HarmspotError(f"kernel {kernel!r}: use one of {', '.join(KERNELS)}")
    if scale not in SCALES:
        raise HarmspotError(f"scale {scale!r}: use one of {', '.join(SCALES)}")
    h2 = float(bandwidth) ** 2
    r2 = np.asarray(r2, float)
    if kernel == "quartic":
        u = np.clip(1.0 - r2 / h2, 0.0, None)
        k = u * u
        norm = 3.0 / (np.pi * h2)
    else:
        k = np.where(r2 <= (GAUSS_TRUNC ** 2) * h2, np.exp(-0.5 * r2 / h2), 0.0)
        norm = 1.0 / (2.0 * np.pi * h2)
    return k * (norm * 1e6) if scale == "density" else k


def bandwidth_rule(x, y) -> float:
    """ArcGIS default search radius: 0.9 min(SD, sqrt(1/ln 2) Dm) n^-0.2 (metres)."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    n = x.size
    if n < 2:
        raise EmptyInputError(f"a bandwidth rule needs at least 2 incidents; got {n}")
    mx, my = x.mean(), y.mean()
    d = np.hypot(x - mx, y - my)
    sd = np.sqrt((d * d).mean())
    dm = np.median(d)
    h = 0.9 * min(sd, np.sqrt(1.0 / np.log(2.0)) * dm) * n ** -0.2
    if not h > 0:
        raise EmptyInputError("all incidents are at one point; give --bandwidth")
    return float(h)


def kde_exact(x, y, w, qx, qy, bandwidth: float, kernel: str = "quartic", scale: str = "density",
              chunk: int = 2_000_000, tree=None) -> np.ndarray:
    """The slow, obviously correct twin: the direct kernel sum at query points (KD-tree over points).

    ``tree``: a ``scipy.spatial.cKDTree`` already built over exactly ``(x, y)``, to reuse.
    """
    from scipy.spatial import cKDTree

    x, y = np.asarray(x, float), np.asarray(y, float)
    w = np.ones_like(x) if w is None else np.asarray(w, float)
    qx, qy = np.atleast_1d(np.asarray(qx, float)), np.atleast_1d(np.asarray(qy, float))
    import itertools

    if tree is None:
        tree = cKDTree(np.column_stack([x, y]))
    elif tree.n != x.size:
        raise HarmspotError(f"kde_exact: the tree holds {tree.n} points, not the {x.size} given")
    sup = kernel_support(bandwidth, kernel)
    out = np.zeros(qx.size)
    step = 256  # query points per batch: the (query, point) pairs of a batch are summed at once
    for s0 in range(0, qx.size, step):
        lists = tree.query_ball_point(np.column_stack([qx[s0:s0 + step], qy[s0:s0 + step]]), sup)
        lens = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
        pts = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int64, count=int(lens.sum()))
        q = np.repeat(np.arange(s0, s0 + len(lists)), lens)  # the query point of every pair
        r2 = (x[pts] - qx[q]) ** 2 + (y[pts] - qy[q]) ** 2
        out[s0:s0 + len(lists)] = np.bincount(q - s0, weights=w[pts] * kernel_values(r2, bandwidth, kernel, scale),
                                              minlength=len(lists))
    return out


def _reach(bandwidth: float, kernel: str, cell: float) -> int:
    """Cells around a cell centre that points reaching it can lie in: the kernel support in cells, plus one."""
    return int(np.ceil(kernel_support(bandwidth, kernel) / cell)) + 1


class PointCells:
    """Points grouped by the cell they fall in, for exact kernel sums at lattice cell centres.

    The lattice is extended by ``reach`` cells on every side (``reach`` = kernel support in
    cells, plus one); points beyond it cannot reach any centre of the lattice and are left
    out. One stable sort of the cell codes replaces a KD-tree over all points (at 10M points
    about 1 s against about 6 s), and every cell centre's neighbourhood is a few contiguous
    runs of the sorted points: one per row of the ``(2 reach + 1)`` rows around it.
    """

    def __init__(self, x, y, w, lattice: Lattice, bandwidth: float, kernel: str):
        self.lattice, self.bandwidth, self.kernel = lattice, float(bandwidth), kernel
        r = self.reach = _reach(bandwidth, kernel, lattice.cell)
        self.ext = Lattice(lattice.cell, lattice.ix0 - r, lattice.iy0 - r, lattice.nx + 2 * r, lattice.ny + 2 * r)
        code = self.ext.flat(x, y)
        order = np.argsort(code, kind="stable")
        order = order[np.searchsorted(code[order], 0):]  # drop the -1s (beyond the extended lattice)
        self.x = np.asarray(x, float)[order]
        self.y = np.asarray(y, float)[order]
        self.w = None if w is None else np.asarray(w, float)[order]
        self.start = np.zeros(self.ext.size + 1, np.int64)
        np.cumsum(np.bincount(code[order], minlength=self.ext.size), out=self.start[1:])

    def exact(self, idx, scale: str = "density", step: int = 256) -> np.ndarray:
        """Exact kernel sums at the centres of lattice cells ``idx`` (flat lattice codes); the same
        sums as :func:`kde_exact` over all points (in another order of addition)."""
        lat, ext, r = self.lattice, self.ext, self.reach
        idx = np.asarray(idx, np.int64)
        iy, ix = np.divmod(idx, lat.nx)
        qx, qy = (ix + lat.ix0 + 0.5) * lat.cell, (iy + lat.iy0 + 0.5) * lat.cell
        out = np.zeros(idx.size)
        rows = np.arange(-r, r + 1)
        sup2 = kernel_support(self.bandwidth, self.kernel) ** 2
        for s0 in range(0, idx.size, step):
            sl = slice(s0, s0 + step)
            # in the extended lattice the cell is at (ix + r, iy + r); its rows iy .. iy + 2r, columns ix .. ix + 2r
            row = (iy[sl, None] + r + rows) * ext.nx
            lo = self.start[row + ix[sl, None]]
            hi = self.start[row + ix[sl, None] + 2 * r + 1]
            lens = (hi - lo).ravel()
            tot = int(lens.sum())
            pts = np.arange(tot) + np.repeat(lo.ravel() - (np.cumsum(lens) - lens), lens)
            q = np.repeat(np.repeat(np.arange(idx[sl].size), rows.size), lens)
            r2 = (self.x[pts] - qx[sl][q]) ** 2 + (self.y[pts] - qy[sl][q]) ** 2
            near = r2 <= sup2
            k = kernel_values(r2[near], self.bandwidth, self.kernel, scale)
            wk = k if self.w is None else k * self.w[pts[near]]
            out[sl] = np.bincount(q[near], weights=wk, minlength=idx[sl].size)
        return out


def kernel_second_derivatives(dx, dy, bandwidth: float, kernel: str, scale: str):
    """K_xx and K_yy of the (scaled) kernel at offsets (dx, dy), for the binning correction."""
    h2 = float(bandwidth) ** 2
    s = dx * dx + dy * dy
    if kernel == "quartic":
        inside = s < h2
        g1 = np.where(inside, -2.0 / h2 * (1.0 - s / h2), 0.0)
        g2 = np.where(inside, 2.0 / (h2 * h2), 0.0)
        norm = 3.0 / (np.pi * h2)
    else:
        g = np.where(s <= (GAUSS_TRUNC ** 2) * h2, np.exp(-0.5 * s / h2), 0.0)
        g1 = -0.5 / h2 * g
        g2 = 0.25 / (h2 * h2) * g
        norm = 1.0 / (2.0 * np.pi * h2)
    c = norm * 1e6 if scale == "density" else 1.0
    return c * (2 * g1 + 4 * dx * dx * g2), c * (2 * g1 + 4 * dy * dy * g2)


def kde_lattice(x, y, w, lattice: Lattice, bandwidth: float, kernel: str = "quartic", scale: str = "density",
                oversample: int = 1, correct="points") -> np.ndarray:
    r"""Binned-FFT KDE at the centres of ``lattice`` cells: (ny, nx) array, row 0 = south.

    Linear binning onto nodes ``oversample`` (any integer f >= 1) times finer than the
    cells, then an FFT convolution evaluated only at the cell centres. For odd f the centres
    are nodes; for even f they lie half-way between four nodes and the kernel is sampled at
    half-node offsets (on narrow quartics f = 2 is about as accurate as f = 3, at 4 instead
    of 9 phase transforms). ``correct`` removes the leading binning error,
    :math:`\frac{\delta^2}{2}\sum_i w_i [t_x(1-t_x)K_{xx} + t_y(1-t_y)K_{yy}]`
    (``t`` = the point's fractional position between nodes):

    * ``"points"`` (or True): per point, binning the two second-order weights too
      (three times the binning work); leaves a third-order error inside the kernel;
    * ``"mean"``: with :math:`t(1-t)` replaced by its mean 1/6 over a node, i.e. the
      kernel :math:`K - \frac{\delta^2}{12}\nabla^2 K` (no extra work; exact on average for
      spread-out points, weaker for points snapped to a few locations);
    * ``None`` / False: plain linear binning.
    Points beyond the lattice edge keep their weight on the edge nodes; give a lattice
    padded by the kernel support (as :func:`hotspots_kde` does) to avoid that.
    """
    from scipy import fft

    try:
        f = int(oversample)
    except (TypeError, ValueError):
        f = 0
    if f < 1 or f != oversample:
        raise HarmspotError(f"oversample must be an integer >= 1; got {oversample!r}")
    if not np.isfinite(bandwidth) or bandwidth <= 0:
        raise HarmspotError(f"bandwidth must be a positive number of metres; got {bandwidth!r}")
    x, y = np.asarray(x, float), np.asarray(y, float)
    w = None if w is None else np.asarray(w, float)
    d = lattice.cell / f
    nxf, nyf = lattice.nx * f, lattice.ny * f
    # fine nodes at (j + 0.5) d from the lattice origin; output centres sit at node coordinate
    # j = i f + (f - 1) / 2: on a node for odd f, half-way between four nodes for even f.
    # The binned grid has one extra column and row so the "+1" corners of edge points stay inside.
    if correct is True:
        correct = "points"
    if correct not in (None, False, "none", "points", "mean"):
        raise HarmspotError(f"correct={correct!r}: use 'points', 'mean' or None")
    # in-place arithmetic and few passes over the points: at 10M points every pass and fresh array costs.
    # Points at the very edge (rare) keep their weight on the edge nodes (the clip is a no-op otherwise).
    fx = x * (1.0 / d)
    fx -= lattice.ix0 * lattice.cell / d + 0.5
    np.clip(fx, 0.0, nxf - 1 - 1e-9, out=fx)
    fy = y * (1.0 / d)
    fy -= lattice.iy0 * lattice.cell / d + 0.5
    np.clip(fy, 0.0, nyf - 1 - 1e-9, out=fy)
    jx = fx.astype(np.int64)
    code = fy.astype(np.int64)
    fx -= jx
    fy -= code
    tx, ty = fx, fy  # fractional positions between nodes
    row = nxf + 1
    code *= row
    code += jx
    del jx
    size = (nyf + 1) * row

    def bilinear(v=None):
        """Linear binning of weight ``v`` (None = 1) onto the fine nodes.

        The four corner weights (1-tx)(1-ty), tx(1-ty), (1-tx)ty, tx ty are combinations of
        1, tx, ty and tx ty, so four bincounts over one shared code of those (one product per
        point) give them: e.g. sum (1-tx)(1-ty) = sum 1 - sum tx - sum ty + sum tx ty per node.
        The corners are then added with flat shifts (+1 = east neighbour, +row = north).
        """
        if v is None:
            b1 = np.bincount(code, minlength=size).astype(float)
            bx = np.bincount(code, weights=tx, minlength=size)
            by = np.bincount(code, weights=ty, minlength=size)
            vx = tx * ty
            bxy = np.bincount(code, weights=vx, minlength=size)
        else:
            b1 = np.bincount(code, weights=v, minlength=size)
            vx = v * tx
            bx = np.bincount(code, weights=vx, minlength=size)
            by = np.bincount(code, weights=v * ty, minlength=size)
            vx *= ty
            bxy = np.bincount(code, weights=vx, minlength=size)
        del vx
        bx -= bxy  # sum tx (1 - ty): east corner
        by -= bxy  # sum (1 - tx) ty: north corner
        b1 -= bx
        b1 -= by
        b1 -= bxy  # sum (1 - tx)(1 - ty): own corner
        g = b1
        g[1:] += bx[:-1]
        g[row:] += by[:-row]
        g[row + 1:] += bxy[:-row - 1]
        # the phases (nodes i f + a, j f + b) as a (f, f, ny, nx) stack, b (north) first
        return g.reshape(nyf + 1, row)[:nyf, :nxf].reshape(lattice.ny, f, lattice.nx, f).transpose(1, 3, 0, 2)

    binned_grids = [bilinear(w)]
    if correct == "points":
        wt = tx * (1.0 - tx)
        if w is not None:
            wt *= w
        binned_grids.append(bilinear(wt))
        wt = ty * (1.0 - ty)
        if w is not None:
            wt *= w
        binned_grids.append(bilinear(wt))
        del wt

    def kernel_set(ox, oy):
        """Kernels matching ``binned_grids`` at offsets (ox, oy) in metres."""
        ks = [kernel_values(ox ** 2 + oy ** 2, bandwidth, kernel, scale)]
        if correct in ("points", "mean"):
            kxx, kyy = kernel_second_derivatives(ox, oy, bandwidth, kernel, scale)
            if correct == "points":
                ks += [-0.5 * d * d * kxx, -0.5 * d * d * kyy]
            else:
                ks[0] = ks[0] - (d * d / 12.0) * (kxx + kyy)
        return ks

    # Polyphase FFT: only the cell centres are wanted, so each of the f x f phases of the fine grid
    # (nodes i f + a) is convolved at cell resolution with the kernel sampled at
    # ((I - i) f + c - a) d, and the phases are summed in the frequency domain: one inverse FFT of
    # cell size instead of one of node size.
    c = (f - 1) / 2  # a half-integer for even f: the kernel is then sampled at half-node offsets
    sup = kernel_support(bandwidth, kernel)
    m = int(np.ceil((sup / d + f) / f))
    steps = np.arange(-m, m + 1) * f
    shape = (lattice.ny + 2 * m, lattice.nx + 2 * m)
    fshape = [fft.next_fast_len(n, real=True) for n in shape]
    # kernels for every phase, (f, f, 2m+1, 2m+1) with [b, a] = north phase, east phase
    pa = np.arange(f)
    ox = ((steps[None, :] + c - pa[:, None]) * d)[None, :, None, :]  # [., a, ., x]
    oy = ((steps[None, :] + c - pa[:, None]) * d)[:, None, :, None]  # [b, ., y, .]
    ox, oy = np.broadcast_arrays(ox, oy)
    # the kernels are small ((2m+1)^2 taps): their spectra by two small DFT matrix products
    # instead of zero-padded FFTs of the whole grid
    taps = np.arange(2 * m + 1)
    ey = np.exp(-2j * np.pi * np.outer(np.arange(fshape[0]), taps) / fshape[0])
    ex = np.exp(-2j * np.pi * np.outer(taps, np.arange(fshape[1] // 2 + 1)) / fshape[1])
    acc = None
    for grid_, k in zip(binned_grids, kernel_set(ox, oy)):
        spec = fft.rfft2(grid_, fshape, axes=(-2, -1), workers=-1)  # all phases in one batched call
        for b in range(f):
            for a in range(f):
                prod = spec[b, a]
                prod *= ey @ k[b, a] @ ex
                if acc is None:
                    acc = prod
                else:
                    acc += prod
    full = fft.irfft2(acc, fshape, workers=-1)
    out = full[m:m + lattice.ny, m:m + lattice.nx]
    return np.where(np.abs(out) < 1e-12 * max(1.0, float(np.abs(out).max(initial=0))), 0.0, out)


def _check_cells(values: np.ndarray, n_sample: int, rng, n_top: int | None = None) -> np.ndarray:
    """The ``n_top`` (default ``n_sample // 2``) highest cells and ``n_sample`` random non-zero ones."""
    flat = values.ravel()
    top = np.argsort(flat)[::-1][:max(1, n_sample // 2 if n_top is None else n_top)]
    nz = np.flatnonzero(flat > 0)
    pick = rng.choice(nz, size=min(n_sample, nz.size), replace=False) if nz.size else np.array([], int)
    return np.unique(np.concatenate([top, pick]))


CHECK_PAIRS = 2_000_000  # point-cell pairs the self-check may evaluate exactly
CHECK_MAX_CELLS = 2_000


def check_size(n_points: int, values, bandwidth: float, kernel: str, cell: float, n_min: int = 100) -> int:
    """How many cells the exact-sum check can afford: about :data:`CHECK_PAIRS` point-cell pairs
    (points within the kernel support of a non-zero cell, on average), between ``n_min`` and
    :data:`CHECK_MAX_CELLS`; at least every non-zero cell when that fits."""
    nz = int(np.count_nonzero(values > 0))
    per_cell = max(1.0, n_points * np.pi * (kernel_support(bandwidth, kernel) / cell) ** 2 / max(nz, 1))
    return int(min(max(n_min, CHECK_PAIRS / per_cell), CHECK_MAX_CELLS))


def check_error(x, y, w, lattice: Lattice, values, bandwidth, kernel, scale, n_sample: int = 40,
                seed: int = 0, cells: "PointCells | None" = None) -> dict:
    """Exact sum at the peak and sampled cells vs the binned surface: max |error| / peak.

    ``n_sample`` is a minimum: :func:`check_size` raises it while the exact sums stay cheap
    (every non-zero cell for small problems), because the binning error of narrow kernels on
    snapped points can sit in a handful of cells that a 100-cell sample misses.
    Only points that can reach a checked cell are handed to :func:`kde_exact` (those in
    cells within the kernel support plus one cell of a checked cell, and any outside the
    lattice): the sums are the same, without a KD-tree over every point. ``cells`` (a
    :class:`PointCells` over these points, as :func:`kde_auto` builds once for several
    checks) replaces that filter and the KD-tree.
    """
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    # the top cells hold the most points (the costliest exact sums): the budget widens the random sample only
    idx = _check_cells(values, check_size(len(x), values, bandwidth, kernel, lattice.cell, n_sample), rng,
                       n_top=max(1, n_sample // 2))
    if cells is not None:
        if cells.lattice != lattice or cells.bandwidth != float(bandwidth) or cells.kernel != kernel:
            raise HarmspotError("check_error: the PointCells were built for another lattice, bandwidth or kernel")
        exact = cells.exact(idx, scale)
    else:
        x, y = np.asarray(x, float), np.asarray(y, float)
        reach = _reach(bandwidth, kernel, lattice.cell)
        near = np.zeros(lattice.ny * lattice.nx, bool)
        near[idx] = True
        near = ndimage.maximum_filter(near.reshape(lattice.ny, lattice.nx), size=2 * reach + 1, mode="constant")
        code = lattice.flat(x, y)
        keep = near.ravel()[code] | (code < 0)  # near a checked cell, or off the lattice
        ws = None if w is None else np.asarray(w, float)[keep]
        gx, gy = lattice.centres()
        exact = kde_exact(x[keep], y[keep], ws, gx[idx], gy[idx], bandwidth, kernel, scale)
    peak = float(max(values.max(initial=0), exact.max(initial=0)))
    err = float(np.abs(values.ravel()[idx] - exact).max(initial=0) / peak) if peak > 0 else 0.0
    return {"cells_checked": int(idx.size), "max_rel_error_of_peak": err, "peak": peak}


#: Binning tried by the self-check, in order of cost (about f² phase transforms per binned grid,
#: three grids with the per-point correction): at 1M points on a 600 x 600 grid the first
#: steps take about 0.03 s (1x), 0.08 s (2x) ... Even refinements put the cell centres half-way
#: between nodes; on spread-out points with a narrow quartic (h = 3 cells) 2x meets 1e-3 of the
#: peak where 1x cannot. Points snapped to a few locations (police.uk) may need 5x with the
#: per-point correction; the error then varies erratically with f, hence the mixed ladder.
AUTO_SEQUENCE = ((1, "mean"), (1, "points"), (2, "mean"), (3, "mean"), (4, "mean"), (3, "points"), (6, "mean"),
                 (4, "points"), (5, "points"), (6, "points"), (7, "points"), (8, "points"), (9, "points"))


def kde_auto(x, y, w, lattice: Lattice, bandwidth: float, kernel: str = "quartic", scale: str = "density",
             tol: float = 1e-3, oversample: int | None = None, check: bool = True):
    """Binned KDE refined until its own exact-sum check passes.

    Tries :data:`AUTO_SEQUENCE` (or, with ``oversample`` given, that refinement with the
    mean then the per-point correction) and stops at the first surface whose error
    against the exact sum, at the 50 highest and 50 random cells, is at most ``tol / 2``
    of the peak (half: the check samples cells, it does not see them all). Without
    ``check``, uses :func:`safe_oversample`.

    Returns
    -------
    values : (ny, nx) array, row 0 = south
    oversample : int, the refinement used
    correction : str, the binning correction used
    check : dict or None, :func:`check_error`'s answer for the surface returned
    """
    if oversample:
        sequence = [(int(oversample), "mean"), (int(oversample), "points")] if check else [(int(oversample), "mean")]
    elif check:
        sequence = list(AUTO_SEQUENCE)
    else:
        sequence = [(safe_oversample(lattice.cell, bandwidth, kernel), "points")]
    chk = cells = None
    for i, (f, corr) in enumerate(sequence):
        vals = kde_lattice(x, y, w, lattice, bandwidth, kernel, scale, oversample=f, correct=corr)
        if not check:
            break
        if cells is None:  # points grouped by cell once serve every check
            cells = PointCells(x, y, w, lattice, bandwidth, kernel)
        chk = check_error(x, y, w, lattice, vals, bandwidth, kernel, scale, n_sample=100, cells=cells)
        if chk["max_rel_error_of_peak"] <= tol / 2:  # margin: the check samples cells, it does not see them all
            break
    return vals, f, corr, chk


def safe_oversample(cell: float, bandwidth: float, kernel: str) -> int:
    """Binning refinement used without the self-check: node spacing <= h/12 (quartic) or h/2.5 (Gaussian).

    From the worst case measured on snapped police.uk points (Essex, 2018-03): these
    spacings kept the error below 1e-3 of the peak with the second-order correction.
    """
    limit = bandwidth / (12.0 if kernel == "quartic" else 2.5)
    f = int(np.ceil(cell / limit))
    return min(f + (f % 2 == 0), 15)


def auto_cell(bandwidth: float) -> float:
    """Cell of about a fifth of the bandwidth, rounded to 10, 20, 25, 50, 100 ... metres."""
    target = bandwidth / 5.0
    nice = np.array([10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000], float)
    return float(nice[np.argmin(np.abs(np.log(nice / target)))])


def hotspots_kde(
    incidents,
    weights=None,
    *,
    area=None,
    period=None,
    categories=None,
    cell: float | None = None,
    bandwidth: float | None = None,
    kernel: str = "quartic",
    weight: str = "harm",
    scale: str = "density",
    tol: float = 1e-3,
    oversample: int | None = None,
    check: bool = True,
    mask_outside: bool = True,
    inputs: dict | None = None,
) -> AnalysisResult:
    """Where is harm (or crime) concentrated? Kernel density onto a BNG-aligned raster.

    Parameters
    ----------
    incidents : IncidentTable
    weights : WeightTable, default the national CCHI table (used when ``weight="harm"``)
    area : BNG polygon or GeoDataFrame, optional
        Study area: incidents outside it are not used (their number is reported) and
        cells outside it are set to nodata (``mask_outside``).
    period, categories : filters.
    cell : float, optional
        Raster cell in metres (default: about bandwidth / 5, rounded; echoed).
    bandwidth : float, optional
        Quartic radius / Gaussian sd in metres (default: ArcGIS's rule; echoed).
    kernel : {"quartic", "gaussian"}
    weight : {"harm", "count"}
    scale : {"density", "count"}
        ``density`` = per km² (kernel integrates to 1); ``count`` = unscaled kernel, K(0) = 1.
    tol : float
        Allowed |binned - exact| / peak at the checked cells (refines the binning if exceeded).
    oversample : int, optional
        Binning refinement (nodes per cell side, an integer >= 1); default chosen by the self-check.
    check : bool
        Run the exact-sum self-check (cheap: about 40 cells).

    Returns
    -------
    AnalysisResult
        ``layer``: :class:`Raster` (north-up, EPSG:27700, nodata NaN) named ``kde_<weight>``
        with ``units`` saying what the values mean. ``summary``: incidents used,
        outside_area, total weight, peak, ``check`` (cells checked, max relative error).
        ``params``: kernel, bandwidth_m, cell_m, scale, value_meaning, oversample.
    """
    from geo.core.harm import WeightTable

    if kernel not in KERNELS:
        raise HarmspotError(f"--kernel {kernel!r}: use one of {', '.join(KERNELS)}")
    if weight not in ("harm", "count"):
        raise HarmspotError(f"--weight {weight!r}: use 'harm' or 'count'")
    if scale not in SCALES:
        raise HarmspotError(f"--scale {scale!r}: use one of {', '.join(SCALES)}")
    choices: list[Choice] = []
    if weights is None and weight == "harm":
        weights = WeightTable.builtin()
        choices.append(Choice("weight table", weights.name, "default harm table"))
    df = incidents.filter(period=period, categories=categories).frame
    geom = None
    outside = 0
    if area is not None:
        import shapely

        geom = area.union_all() if hasattr(area, "union_all") else area
        shapely.prepare(geom)
        inside = shapely.contains_xy(geom, df["x"].to_numpy(float), df["y"].to_numpy(float))
        outside = int((~inside).sum())
        df = df.loc[inside]
    if len(df) == 0:
        raise EmptyInputError("no incidents in the study area for this period and these categories")
    x, y = df["x"].to_numpy(float), df["y"].to_numpy(float)
    w = weights.weights_for(df) if weight == "harm" else np.ones(len(df))
    w = np.asarray(w, float)
    if bandwidth is None:
        bandwidth = round(bandwidth_rule(x, y), 1)
        choices.append(Choice("bandwidth", f"{bandwidth:g} m",
                              "ArcGIS default search radius, 0.9 min(SD, sqrt(1/ln2) Dm) n^-0.2"))
    if not np.isfinite(bandwidth) or bandwidth <= 0:
        raise HarmspotError(f"--bandwidth must be a positive number of metres; got {bandwidth!r}")
    if cell is None:
        cell = auto_cell(bandwidth)
        choices.append(Choice("cell size", f"{cell:g} m", "about a fifth of the bandwidth"))
    grid = SquareGrid(cell)
    sup = kernel_support(bandwidth, kernel)
    bounds = geom.bounds if geom is not None else (x.min(), y.min(), x.max(), y.max())
    lat = grid.lattice(bounds, pad=int(np.ceil(sup / cell)) + 1)
    if lat.size > 25_000_000:
        raise HarmspotError(f"{lat.nx} x {lat.ny} cells of {cell:g} m is too many; use a larger --cell")
    vals, f, corr, chk = kde_auto(x, y, w, lat, bandwidth, kernel, scale, tol=tol, oversample=oversample,
                                  check=check)
    if oversample is None and (f > 1 or corr == "points"):
        choices.append(Choice("binning", f"nodes {f}x finer than the cell, {corr} correction",
                              f"the exact-sum check needed error <= {tol / 2:g} of the peak"))
    if chk is not None and chk["max_rel_error_of_peak"] > tol:
        choices.append(Choice("accuracy warning", f"{chk['max_rel_error_of_peak']:.2g} of peak",
                              f"binned surface differs from the exact sum by more than {tol:g}; use a smaller --cell"))
    arr = vals.copy()
    if geom is not None and mask_outside:
        import shapely

        gx, gy = lat.centres()
        near = shapely.contains_xy(geom.buffer(cell * 0.7072), gx, gy).reshape(lat.ny, lat.nx)
        arr[~near] = np.nan
    what = "harm" if weight == "harm" else "incidents"
    meaning = (f"{what} per km² (kernel density, integrates to the total)" if scale == "density"
               else f"kernel-weighted {what} (unscaled kernel, K(0) = 1)")
    raster = Raster(lat.to_north_up(arr), lat.transform, BNG, np.nan, f"kde_{weight}", meaning)
    params = {"kernel": kernel, "bandwidth_m": float(bandwidth), "cell_m": float(cell), "scale": scale,
              "value_meaning": meaning, "weight": weight, "oversample": int(f), "binning_correction": corr, "grid": "square",
              "aligned_to": "British National Grid origin",
              "categories": list(categories) if categories else "all"}
    summary = {"incidents": int(len(df)), "outside_area": outside, "total_weight": float(w.sum()),
               "peak": float(np.nanmax(arr)) if np.isfinite(arr).any() else 0.0,
               "raster_shape": [lat.ny, lat.nx], "check": chk}
    return AnalysisResult(kind="kde", layer=raster, params=params, choices=choices,
                          weight_table=weights.describe() if weights is not None else None, period=period,
                          inputs={**(inputs or {}), "incidents_in_period": int(len(df) + outside)}, summary=summary)


def raster_cells(result: AnalysisResult, min_value: float = 0.0):
    """Per-cell values of a KDE raster as BNG squares (cell_id, value, geometry), nodata and
    cells at or below ``min_value`` left out."""
    import geopandas as gpd
    import shapely

    r = result.layer
    c = r.cell_size
    arr = r.array[::-1]  # south-first
    ny, nx = arr.shape
    ix0 = int(round(r.transform.c / c))
    iy0 = int(round((r.transform.f - ny * c) / c))
    iy, ix = np.nonzero(np.isfinite(arr) & (arr > min_value))
    vals = arr[iy, ix]
    ix, iy = ix + ix0, iy + iy0
    grid = SquareGrid(c)
    return gpd.GeoDataFrame({"cell_id": grid.ids(ix, iy), "value": vals},
                            geometry=shapely.box(ix * c, iy * c, (ix + 1) * c, (iy + 1) * c), crs=BNG)
