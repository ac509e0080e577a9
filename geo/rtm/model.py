"""Risk terrain modelling (RTM), the RTMDx way, on British National Grid cells.

The analyst question: *which features of the environment make crime more likely
here, within what distance and in what form, by how much, and where does that
put the highest risk?* (Caplan & Kennedy 2011, *Risk Terrain Modeling Manual*;
Caplan, Kennedy & Piza 2013, *RTMDx Utility User Manual*; Kennedy, Caplan & Piza
2016, *Risk Terrain Modeling: Crime Prediction and Risk Reduction*).

Method (:func:`risk_terrain` runs all of it)
--------------------------------------------
1. **Grid.** Square cells of ``cell`` metres aligned to the BNG origin; a cell is
   in the study area when its centre is (:class:`RTMGrid`). Incidents are counted
   per cell (the outcome).
2. **Operationalisation** of each factor (a point layer) at spatial influences
   ``d`` = half a block, one block, ... up to three blocks (6 distances):

   * *proximity*: 1 when the cell centre lies within ``d`` of a feature
     (exact nearest-feature distances from a KD-tree over the features, one query
     for all cells; :func:`distance_to_nearest`);
   * *density*: 1 when the kernel density of the features (quartic kernel of
     radius ``d``, features binned to cells, one FFT convolution per distance;
     :func:`feature_density`) exceeds mean + 2 SD over the study-area cells.

   Gives up to ``factors x 6 x 2`` binary candidate variables.
3. **Selection.** (a) Lasso-penalised Poisson regression (glum, l1_ratio = 1)
   with 5-fold cross-validation over all candidates picks the penalty with the
   lowest held-out deviance. The folds are spatially blocked
   (:func:`spatial_folds`): square CV blocks aligned to the BNG, by default twice
   the largest spatial influence (6 blocks, at least 4 cells) on a side, each
   block's cells held out together, because counts on a lattice are spatially
   autocorrelated and random folds of cells (``cv_scheme="random"``, RTMDx-like,
   still available) put near-identical neighbours in training and held-out data,
   which flatters small penalties. Of the variables with a positive coefficient, at
   most one per factor is kept (the largest coefficient: RTMDx keeps the
   strongest operationalisation of each factor). (b) Bidirectional stepwise
   selection by BIC from the empty model, fitted as Poisson (statsmodels GLM) and
   as negative binomial (NB2: statsmodels GLM with the NegativeBinomial family,
   dispersion by profile likelihood); the distribution with the lower BIC is
   kept and refitted on every cell (statsmodels ``NegativeBinomial`` estimates
   the dispersion jointly) for standard errors. The search fits run on cells
   collapsed by (row, count) with frequency weights, which is exact and makes
   each fit take milliseconds.
4. **Relative risk values** ``RRV = exp(beta)`` with 95% Wald intervals
   ``exp(beta +- 1.96 SE)`` and p-values from the final model.
5. **Relative risk score** per cell: the product of the RRVs of the factors
   present there, divided by the smallest such product in the area so the lowest
   cell scores 1 (RTMDx's RRS; the intercept is not part of it).
6. **Priority places**: cells whose RRS is at least mean + 2 SD of the area's RRS
   (RTMDx's "highest risk" convention), joined where they touch (8-neighbour
   clusters) and dissolved into polygons, each with the incidents it holds.

Caveats: binary operationalisations with nested distances are strongly
correlated, so the lasso step decides between them; density uses features binned
to cell centres (error at most half a cell diagonal); proximity of a cell is
measured from its centre. Nothing here claims causation: an RRV says cells near
a factor had more incidents in the period, other selected factors held fixed.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import shapely

from geo import BNG
from geo.core.errors import EmptyInputError, HarmspotError
from geo.rtm.factors import FactorLayer
from geo.core.result import AnalysisResult, Choice, Raster
from geo.units.lattice import Lattice


#: Default cell size for UK towns (metres). RTMDx uses a cell of half a block.
DEFAULT_CELL_M = 50.0
#: Default block length for UK towns (metres): a typical urban street segment
#: between junctions in an English town centre is about 80-120 m.
DEFAULT_BLOCK_M = 100.0
FORMS = ("proximity", "density")
#: Cross-validation schemes of the lasso screen: spatial blocks (default) or random folds of cells.
CV_SCHEMES = ("spatial", "random")


class RTMError(HarmspotError):
    """An RTM request that cannot be run (no incidents, no factor varies...)."""


# ============================================================================ grid
@dataclass
class RTMGrid:
    """BNG-aligned cells over a study area: the lattice plus an in-area mask.

    ``inside`` is an (ny, nx) south-first bool array: cell centre inside the area.
    The lattice is padded by ``pad`` cells so densities near the edge see features
    just outside the area.
    """

    lattice: Lattice
    inside: np.ndarray
    area: object  # shapely geometry (BNG)

    @classmethod
    def from_area(cls, area, cell: float, pad_m: float = 0.0) -> "RTMGrid":
        geom = area.union_all() if hasattr(area, "union_all") else area
        if hasattr(area, "crs") and area.crs is not None and area.crs.to_epsg() != 27700:
            geom = area.to_crs(BNG).union_all()
        if geom is None or geom.is_empty:
            raise RTMError("the study area is empty")
        if not np.isfinite(cell) or cell <= 0:
            raise RTMError(f"cell size must be a positive number of metres; got {cell!r}")
        pad = int(math.ceil(pad_m / cell)) + 1
        lat = Lattice.from_bounds(float(cell), geom.bounds, pad=pad)
        if lat.size > 40_000_000:
            raise RTMError(f"{lat.nx} x {lat.ny} cells of {cell:g} m is too many; use a larger --cell")
        cx, cy = lat.centres()
        shapely.prepare(geom)
        inside = shapely.contains_xy(geom, cx, cy).reshape(lat.ny, lat.nx)
        if not inside.any():
            raise RTMError(f"no {cell:g} m cell centre falls inside the study area; use a smaller --cell")
        return cls(lat, inside, geom)

    @property
    def n(self) -> int:
        return int(self.inside.sum())

    @property
    def cell(self) -> float:
        return self.lattice.cell

    def centres(self) -> np.ndarray:
        """(n, 2) centres of the in-area cells (flat south-first order)."""
        cx, cy = self.lattice.centres()
        m = self.inside.ravel()
        return np.c_[cx[m], cy[m]]

    def ixiy(self) -> tuple[np.ndarray, np.ndarray]:
        iy, ix = np.nonzero(self.inside)
        return ix + self.lattice.ix0, iy + self.lattice.iy0

    def cell_ids(self) -> np.ndarray:
        from geo.units.lattice import SquareGrid

        ix, iy = self.ixiy()
        return SquareGrid(self.cell).ids(ix, iy)

    def counts(self, x, y) -> tuple[np.ndarray, int]:
        """Incidents per in-area cell, and how many fell in no in-area cell."""
        full = self.lattice.bincount(np.asarray(x, float), np.asarray(y, float))
        c = full[self.inside]
        return c, int(len(np.asarray(x)) - c.sum())

    def to_grid(self, values, fill=np.nan) -> np.ndarray:
        """In-area values -> (ny, nx) south-first array, ``fill`` elsewhere."""
        g = np.full(self.inside.shape, fill, dtype=float)
        g[self.inside] = values
        return g

    def raster(self, values, *, nodata=0.0, name="value", units="") -> Raster:
        """North-up :class:`Raster` of in-area values, trimmed to the area's cells."""
        g = self.to_grid(values, fill=nodata)
        rows = np.flatnonzero(self.inside.any(axis=1))
        cols = np.flatnonzero(self.inside.any(axis=0))
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        sub = g[r0:r1, c0:c1]
        lat = self.lattice
        from affine import Affine

        t = Affine(lat.cell, 0.0, (lat.ix0 + c0) * lat.cell, 0.0, -lat.cell, (lat.iy0 + r1) * lat.cell)
        return Raster(sub[::-1].astype("float32"), t, BNG, nodata, name, units)


# =============================================================== operationalisation
def distance_to_nearest(grid: RTMGrid, xy: np.ndarray, max_d: float | None = None) -> np.ndarray:
    """Distance (m) from each in-area cell centre to the nearest feature (KD-tree).

    Beyond ``max_d`` the value is ``inf`` (the query stops there, which keeps it fast).
    """
    from scipy.spatial import cKDTree

    xy = np.asarray(xy, float).reshape(-1, 2)
    if len(xy) == 0:
        return np.full(grid.n, np.inf)
    d, _ = cKDTree(xy).query(grid.centres(), k=1, distance_upper_bound=np.inf if max_d is None else max_d * 1.0001)
    return d


def distance_to_nearest_edt(grid: RTMGrid, xy: np.ndarray) -> np.ndarray:
    """Same question answered on the raster: Euclidean distance transform of the
    cells holding a feature (``scipy.ndimage.distance_transform_edt``).

    Features are moved to their cell centre, so values differ from
    :func:`distance_to_nearest` by at most half a cell diagonal. Kept as the
    grid-only alternative (and benchmarked against the KD-tree).
    """
    from scipy.ndimage import distance_transform_edt

    has = grid.lattice.bincount(xy[:, 0], xy[:, 1]) > 0
    if not has.any():
        return np.full(grid.n, np.inf)
    d = distance_transform_edt(~has) * grid.cell
    return d[grid.inside]


def _quartic_kernel(radius: float, cell: float) -> np.ndarray:
    r = int(math.ceil(radius / cell))
    off = np.arange(-r, r + 1) * cell
    dx, dy = np.meshgrid(off, off)
    u2 = (dx ** 2 + dy ** 2) / radius ** 2
    k = np.where(u2 < 1, (1 - u2) ** 2, 0.0) * 3.0 / (math.pi * radius ** 2)
    return k


def feature_density(grid: RTMGrid, xy: np.ndarray, bandwidth: float) -> np.ndarray:
    """Kernel density of features (per m^2) at in-area cell centres.

    Quartic (biweight) kernel of radius ``bandwidth`` - ArcGIS's Kernel Density
    kernel, which RTMDx's density operationalisation follows - evaluated by one
    FFT convolution of the per-cell feature counts (features binned to their cell).
    """
    from scipy.signal import fftconvolve

    counts = grid.lattice.bincount(xy[:, 0], xy[:, 1])
    k = _quartic_kernel(bandwidth, grid.cell)
    dens = fftconvolve(counts, k, mode="same")
    dens[dens < 1e-15] = 0.0  # FFT round-off
    return dens[grid.inside]


@dataclass
class CandidateSet:
    """Binary candidate variables for every factor x form x distance.

    ``X`` is (n_cells, K) uint8; ``meta`` has one row per column with ``var``
    (``pubs_proximity_100``), ``factor``, ``form``, ``distance``, ``share`` (share
    of cells flagged). ``nearest`` keeps each factor's nearest-feature distance
    and ``density`` each factor's density per distance (the learned model uses
    them).
    """

    X: np.ndarray
    meta: pd.DataFrame
    nearest: dict = field(default_factory=dict)
    density: dict = field(default_factory=dict)
    dropped: list = field(default_factory=list)  # (var, reason) for constant columns
    centres: np.ndarray | None = None  # (n_cells, 2) BNG cell centres (spatial CV folds)
    cell: float | None = None  # cell size (m)
    distances: list = field(default_factory=list)  # spatial influences tested (m), ascending


def spatial_influences(block: float, steps: int = 6) -> list[float]:
    """RTMDx distances: half a block, one block, ... ``steps`` half-blocks."""
    return [round(block * 0.5 * i, 6) for i in range(1, steps + 1)]


def build_candidates(grid: RTMGrid, factors: list[FactorLayer], distances, forms=FORMS,
                     progress=None) -> CandidateSet:
    """Operationalise every factor in every form at every distance (vectorised).

    Proximity: nearest-feature distance <= d. Density: KDE with radius d above
    mean + 2 SD of the area's cells. Columns that flag no cell or every cell are
    dropped (listed in ``dropped``) because they cannot be estimated. The cell
    centres, cell size and distances travel with the set (spatial CV needs them).
    """
    bad = [f for f in forms if f not in FORMS]
    if bad:
        raise RTMError(f"unknown operationalisation(s) {bad}; use {FORMS}")
    distances = sorted(float(d) for d in distances)
    cols, meta, dropped = [], [], []
    nearest, density = {}, {}
    total = len(factors) * (1 + len(distances))
    done = 0
    for f in factors:
        dist = distance_to_nearest(grid, f.xy)
        nearest[f.name] = dist
        done += 1
        if progress:
            progress(done, total, f"{f.name}: distances")
        for form in forms:
            for d in distances:
                if form == "proximity":
                    v = dist <= d
                else:
                    dens = density.setdefault(f.name, {}).get(d)
                    if dens is None:
                        dens = feature_density(grid, f.xy, d)
                        density[f.name][d] = dens
                        done += 1
                        if progress:
                            progress(done, total, f"{f.name}: density {d:g} m")
                    thr = dens.mean() + 2 * dens.std()
                    v = dens > thr
                var = f"{f.name}_{form}_{d:g}"
                share = float(v.mean())
                if share == 0.0 or share == 1.0:
                    dropped.append((var, "flags no cell" if share == 0 else "flags every cell"))
                    continue
                cols.append(v.astype(np.uint8))
                meta.append({"var": var, "factor": f.name, "form": form, "distance": d, "share": share})
    if not cols:
        raise RTMError("no candidate variable varies across the study area (every factor flags no cell or every "
                       "cell); check the factor layers and --block")
    X = np.column_stack(cols)
    return CandidateSet(X, pd.DataFrame(meta), nearest, density, dropped, centres=grid.centres(),
                        cell=float(grid.cell), distances=distances)


# ======================================================================== selection
def _aggregate(X: np.ndarray, y: np.ndarray):
    """Collapse cells with identical candidate rows: (unique rows, summed counts, cells per row).

    For a Poisson model this is exact (the counts and cell totals per pattern are
    sufficient statistics), and it makes the lasso path fast on big grids.
    """
    packed = np.packbits(np.asarray(X, np.uint8), axis=1)
    key = np.ascontiguousarray(packed).view(np.dtype((np.void, packed.shape[1]))).ravel()
    _, first, inv, cnt = np.unique(key, return_index=True, return_inverse=True, return_counts=True)
    ys = np.bincount(inv.ravel(), weights=y, minlength=len(first))
    return np.asarray(X[first], float), ys, cnt.astype(float)


def _lasso_path(U, ys, cnt, alphas=None):
    from glum import GeneralizedLinearRegressor

    kw = dict(alphas=alphas) if alphas is not None else dict(n_alphas=25, min_alpha_ratio=1e-3)
    from threadpoolctl import threadpool_limits

    m = GeneralizedLinearRegressor(family="poisson", l1_ratio=1.0, alpha_search=True, fit_intercept=True,
                                   max_iter=200, **kw)
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")
        m.fit(U, ys / cnt, sample_weight=cnt)
    return m


def default_cv_block(distances, cell: float) -> float:
    """Default side (m) of the spatial CV blocks: twice the largest spatial influence, at least 4 cells.

    A held-out cell's candidate values depend on features up to the largest
    influence away, and crime clusters at about that scale, so a block twice that
    size keeps most held-out cells well away from the training cells.
    """
    return float(max(2.0 * max(float(d) for d in distances), 4.0 * float(cell)))


def check_cv(cv_scheme: str = "spatial", cv_block: float | None = None, cv: int = 5) -> None:
    """Raise :class:`RTMError` for a cross-validation set-up that cannot run: an unknown scheme, fewer
    than 2 folds, or a block side with random folds. The command line and the service call it before
    loading any data; the model calls it again."""
    if cv_scheme not in CV_SCHEMES:
        raise RTMError(f"unknown cross-validation scheme {cv_scheme!r}; use one of {CV_SCHEMES}")
    if int(cv) != cv or cv < 2:
        raise RTMError(f"cross-validation needs at least 2 folds; got {cv!r}")
    if cv_scheme == "random" and cv_block is not None:
        raise RTMError("a cross-validation block side (--cv-block) only applies to spatial folds (--cv spatial), "
                       "not to --cv random")


def _cv_blocks(centres: np.ndarray, block: float) -> tuple[np.ndarray, np.ndarray]:
    """(block number per cell, cells per block) for BNG-aligned square blocks of side ``block``."""
    if not np.isfinite(block) or block <= 0:
        raise RTMError(f"the cross-validation block side must be a positive number of metres; got {block!r}")
    b = np.floor(np.asarray(centres, float).reshape(-1, 2) / float(block)).astype(np.int64)
    if len(b):
        b -= b.min(axis=0)
    key = b[:, 0] * (int(b[:, 1].max(initial=0)) + 1) + b[:, 1]  # one integer per block
    _, inv, size = np.unique(key, return_inverse=True, return_counts=True)
    return inv.ravel(), size


def spatial_folds(centres: np.ndarray, cv: int, block: float, seed: int = 0) -> np.ndarray:
    """Fold label (0 .. ``cv``-1) per cell by spatial block.

    Square blocks of side ``block`` metres aligned to the BNG origin: a cell
    centre (x, y) is in block ``(floor(x / block), floor(y / block))`` and all
    cells of a block share a fold. The non-empty blocks are visited in a seeded
    random order (``numpy.random.default_rng(seed).permutation``) and each goes
    to the fold with the fewest cells so far (ties: the lowest fold), so every
    fold is used and fold sizes differ by at most the largest block's cells.

    Raises :class:`RTMError` when fewer blocks than folds hold cells.
    """
    return _spatial_folds(centres, cv, block, seed)[0]


def _check_blocks(nb: int, cv: int, block: float) -> None:
    if nb < cv:
        raise RTMError(f"only {nb} cross-validation block(s) of {block:g} m hold study-area cells, fewer than the "
                       f"{cv} folds; use a smaller --cv-block or --cv random")


def _spatial_folds(centres, cv: int, block: float, seed: int) -> tuple[np.ndarray, int]:
    """:func:`spatial_folds` and the number of blocks holding cells."""
    check_cv(cv=cv)
    inv, size = _cv_blocks(centres, block)
    nb = len(size)
    _check_blocks(nb, cv, block)
    fold_of_block = np.empty(nb, np.int64)
    load = np.zeros(cv, np.int64)
    for j in np.random.default_rng(seed).permutation(nb):  # one step per block, not per cell
        k = int(np.argmin(load))
        fold_of_block[j] = k
        load[k] += size[j]
    return fold_of_block[inv], nb


def random_folds(n: int, cv: int, seed: int = 0) -> np.ndarray:
    """Fold label per cell from ``sklearn KFold(cv, shuffle=True, random_state=seed)`` (random folds of cells)."""
    from sklearn.model_selection import KFold

    folds = np.empty(n, np.int64)
    for k, (_, te) in enumerate(KFold(cv, shuffle=True, random_state=seed).split(np.arange(n))):
        folds[te] = k
    return folds


def _cv_loglik(X, y, folds: np.ndarray, alphas) -> np.ndarray:
    """Held-out Poisson log-likelihood per penalty, summed over folds (constant log y! terms left out).

    Each fold (label in ``folds``) is held out in turn, the lasso path refitted at
    ``alphas`` on the other cells, and the held-out cells scored.
    """
    y = np.asarray(y, float)
    folds = np.asarray(folds)
    ll = np.zeros(len(alphas))
    for k in np.unique(folds):
        te = folds == k
        tr = ~te
        Ut, yt, ct = _aggregate(X[tr], y[tr])
        m = _lasso_path(Ut, yt, ct, alphas=alphas)
        Uv, yv, cv_ = _aggregate(X[te], y[te])
        eta = m.intercept_path_[None, :] + Uv @ np.asarray(m.coef_path_, float).T  # (rows, alphas)
        ll += (yv[:, None] * eta - cv_[:, None] * np.exp(eta)).sum(axis=0)
    return ll


def _lasso_screen(X, y, meta: pd.DataFrame, cv: int, seed: int, folds: np.ndarray | None = None
                  ) -> tuple[pd.DataFrame, dict]:
    """Cross-validated lasso Poisson (glum); keep the strongest positive form per factor.

    The penalty path is computed on all cells; each fold of cells is held out in
    turn, the path refitted on the rest, and the held-out Poisson log-likelihood
    summed. The penalty with the highest held-out likelihood wins. ``folds`` gives
    a fold label per cell (e.g. :func:`spatial_folds`); without it, ``cv`` random
    folds (:func:`random_folds` with ``seed``). Cells with identical candidate rows
    are collapsed (exact for Poisson).
    """
    y = np.asarray(y, float)
    if folds is None:
        folds = random_folds(len(y), cv, seed)
    U, ys, cnt = _aggregate(X, y)
    full = _lasso_path(U, ys, cnt)
    alphas = np.asarray(full._alphas, float)
    ll = _cv_loglik(X, y, folds, alphas)
    best = int(np.argmax(ll))
    coef = np.asarray(full.coef_path_, float)[best]
    m = meta.copy()
    m["lasso_coef"] = coef
    pos = m[m["lasso_coef"] > 0]
    keep = pos.sort_values("lasso_coef", ascending=False).drop_duplicates("factor")
    m["screened_in"] = m["var"].isin(keep["var"])
    info = {"alpha": float(alphas[best]), "l1_ratio": 1.0, "folds": int(len(np.unique(folds))),
            "alphas_tried": len(alphas), "nonzero": int((coef != 0).sum()), "positive": int(len(pos)),
            "patterns": int(len(U))}
    return m, info


def _fit(family: str, y, Xs):
    """Fit Poisson (GLM) or NB2 (discrete NegativeBinomial, dispersion estimated) on cell-level data."""
    import statsmodels.api as sm

    exog = sm.add_constant(Xs, has_constant="add") if Xs.shape[1] else np.ones((len(y), 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pois = sm.GLM(y, exog, family=sm.families.Poisson()).fit()
        if family == "poisson":
            return pois
        start = np.r_[pois.params, 0.5]
        res = sm.NegativeBinomial(y, exog, loglike_method="nb2").fit(start_params=start, disp=0, maxiter=200,
                                                                      method="newton")
        if not np.all(np.isfinite(res.params)):
            res = sm.NegativeBinomial(y, exog, loglike_method="nb2").fit(start_params=start, disp=0, maxiter=500,
                                                                          method="bfgs")
        return res


def _fit_aggregated(family: str, Xu, yu, w):
    """Fit on cells collapsed by (candidate row, count) with frequency weights.

    Exact for both families: a cell's log-likelihood depends only on its row and
    its count. Poisson: statsmodels GLM. NB2: statsmodels GLM with the
    NegativeBinomial family, its dispersion ``alpha`` chosen by maximising the
    profile log-likelihood over log(alpha) with scipy's bounded scalar minimiser.
    Returns ``(llf, k)`` with ``k`` the number of estimated parameters.
    """
    import statsmodels.api as sm
    from scipy.optimize import minimize_scalar

    exog = sm.add_constant(Xu, has_constant="add") if Xu.shape[1] else np.ones((len(yu), 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if family == "poisson":
            r = sm.GLM(yu, exog, family=sm.families.Poisson(), freq_weights=w).fit()
            return float(r.llf), exog.shape[1]

        def nll(la):
            fam = sm.families.NegativeBinomial(alpha=float(np.exp(la)))
            return -sm.GLM(yu, exog, family=fam, freq_weights=w).fit().llf

        opt = minimize_scalar(nll, bounds=(-9.0, 5.0), method="bounded", options={"xatol": 1e-4})
        return float(-opt.fun), exog.shape[1] + 1


def stepwise_bic(X, y, names: list[str], family: str) -> tuple[list[str], float, list[dict]]:
    """Bidirectional stepwise selection by BIC from the empty model.

    At each step every single addition and every single removal is fitted; the
    move with the lowest BIC is taken while it lowers BIC. ``BIC = -2 llf + k ln n``
    with ``n`` cells. Fits run on cells collapsed by (row, count) (exact, see
    :func:`_fit_aggregated`). Returns the chosen names, their BIC and the path.
    """
    n = len(y)
    rows = np.c_[np.asarray(X, np.uint8), np.asarray(y, np.int64)]
    uniq, cnt = np.unique(rows, axis=0, return_counts=True)
    Xu, yu, w = uniq[:, :-1], uniq[:, -1].astype(float), cnt.astype(float)
    cache: dict[frozenset, float] = {}

    def score(sel):
        key = frozenset(sel)
        if key not in cache:
            idx = [names.index(v) for v in sel]
            llf, k = _fit_aggregated(family, Xu[:, idx].astype(float), yu, w)
            cache[key] = -2.0 * llf + k * math.log(n)
        return cache[key]

    current: list[str] = []
    best = score(current)
    path = [{"step": 0, "move": "start (intercept only)", "bic": best}]
    for step in range(1, 4 * len(names) + 2):
        moves = [("add", v, current + [v]) for v in names if v not in current]
        moves += [("drop", v, [c for c in current if c != v]) for v in current]
        if not moves:
            break
        b, kind, v, s = min(((score(s), kind, v, s) for kind, v, s in moves), key=lambda t: t[0])
        if b >= best - 1e-9:
            break
        current, best = s, b
        path.append({"step": step, "move": f"{kind} {v}", "bic": b})
    return current, best, path


@dataclass
class RTMFit:
    """A fitted risk terrain model (what :func:`fit_rtm` returns)."""

    family: str
    selected: list  # var names in model order
    table: pd.DataFrame  # one row per selected factor
    coefs: np.ndarray  # betas of selected vars (model order)
    X_sel: np.ndarray  # (n, k) uint8 columns of the selected vars
    bic: dict  # family -> BIC of its stepwise-best model
    lasso: dict
    screen: pd.DataFrame
    paths: dict
    dispersion: float | None = None

    def rrs(self, X_sel: np.ndarray | None = None) -> np.ndarray:
        """Relative risk score per cell (lowest = 1) from the selected columns."""
        return relative_risk_scores(self.X_sel if X_sel is None else X_sel, self.coefs)


def relative_risk_values(coefs) -> np.ndarray:
    """RRV = exp(beta) for each coefficient (RTMDx)."""
    return np.exp(np.asarray(coefs, float))


def relative_risk_scores(X, coefs) -> np.ndarray:
    """Relative risk score per cell: product of the RRVs of the factors present,
    scaled so the lowest cell scores 1.

    ``RRS_i = exp(sum_j beta_j x_ij) / min_i exp(sum_j beta_j x_ij)``. With only
    positive coefficients the lowest cell is one with no factor, so an RRS is the
    plain product of the RRVs present (RTMDx's arithmetic).
    """
    X = np.asarray(X, float)
    b = np.asarray(coefs, float)
    if X.ndim == 1:
        X = X[None, :]
    if X.shape[1] == 0:
        return np.ones(X.shape[0])
    lin = X @ b
    return np.exp(lin - lin.min())


def resolve_cell_block(cell: float | None, block: float | None) -> tuple[float, float, list[Choice]]:
    """``(cell, block, choices)``: the UK-town defaults where not given, each announced as a Choice."""
    choices: list[Choice] = []
    if cell is None:
        cell = DEFAULT_CELL_M
        choices.append(Choice("cell size", f"{cell:g} m", "default for UK towns: half a 100 m block, as RTMDx"))
    if block is None:
        block = DEFAULT_BLOCK_M
        choices.append(Choice("block length", f"{block:g} m", "default for UK towns (typical street segment)"))
    return cell, block, choices


def cv_folds(cands: CandidateSet, *, cv: int = 5, seed: int = 0, cv_scheme: str = "spatial",
             cv_block: float | None = None) -> tuple[np.ndarray, dict]:
    """Fold label per cell for the lasso screen, and what was used (``cv_*`` keys of the lasso info).

    ``cv_scheme="spatial"``: :func:`spatial_folds` over the cells' centres with
    blocks of ``cv_block`` metres, default :func:`default_cv_block` (twice the
    largest spatial influence tested, at least 4 cells). ``"random"``: random
    folds of cells (:func:`random_folds`, the RTMDx-like scheme); ``cv_block``
    has no meaning there.
    """
    check_cv(cv_scheme, cv_block, cv)
    n = cands.X.shape[0]
    if cv_scheme == "random":
        return random_folds(n, cv, seed), {"cv_scheme": "random", "cv_block_m": None, "cv_block_automatic": False,
                                           "cv_blocks": None}
    if cands.centres is None or len(cands.centres) != n:
        raise RTMError("spatial cross-validation needs the cells' centres (build the candidates with "
                       "build_candidates) or cv_scheme='random'")
    auto = cv_block is None
    if auto:
        if not cands.distances or cands.cell is None:
            raise RTMError("no spatial influences or cell size to size the cross-validation blocks; give cv_block")
        cv_block = default_cv_block(cands.distances, cands.cell)
    cv_block = float(cv_block)
    folds, nblocks = _spatial_folds(cands.centres, cv, cv_block, seed)
    return folds, {"cv_scheme": "spatial", "cv_block_m": cv_block, "cv_block_automatic": auto,
                   "cv_blocks": int(nblocks)}


def cv_choice(lasso: dict, cv: int, distances=None, cell: float | None = None) -> Choice:
    """The cross-validation scheme as a :class:`Choice` (automatic when the block side was)."""
    if lasso["cv_scheme"] == "random":
        return Choice("cross-validation", f"{cv} random folds of cells",
                      "RTMDx-like; neighbouring cells fall in both training and held-out folds",
                      automatic=False)
    side = lasso["cv_block_m"]
    value = f"{cv} folds of {side:g} m spatial blocks ({lasso['cv_blocks']} blocks)"
    if not lasso["cv_block_automatic"]:
        return Choice("cross-validation", value, "block side as given; cells of a block share a fold",
                      automatic=False)
    why = "cells of a block share a fold, so held-out cells are not next to training cells, crime being spatially " \
          "autocorrelated; side "
    if distances and math.isclose(side, 2.0 * max(distances)):
        why += f"= twice the largest spatial influence, {max(distances):g} m"
    elif cell and math.isclose(side, 4.0 * cell):
        why += "= 4 cells (the floor: twice the largest spatial influence is smaller)"
    else:
        why += "automatic"
    return Choice("cross-validation", value, why + "; --cv random for RTMDx-like random folds")


def fit_rtm(cands: CandidateSet, y: np.ndarray, *, cv: int = 5, seed: int = 0,
            families=("poisson", "negative binomial"), progress=None, cv_scheme: str = "spatial",
            cv_block: float | None = None) -> RTMFit:
    """Select and fit the RTM on counts ``y`` (one per in-area cell); see module docstring.

    ``cv_scheme``/``cv_block``: folds of the lasso screen (see :func:`cv_folds`);
    what was used is in ``fit.lasso`` (``cv_scheme``, ``cv_block_m``,
    ``cv_block_automatic``, ``cv_blocks``, ``fold_cells``).
    """
    y = np.asarray(y, float)
    if y.sum() == 0:
        raise RTMError("no incidents fall in the study-area cells; check --from/--to, --category and the area")
    folds, cvinfo = cv_folds(cands, cv=cv, seed=seed, cv_scheme=cv_scheme, cv_block=cv_block)
    if progress:
        progress(0, 3, f"lasso ({cv_scheme} cross-validation)")
    screen, lasso = _lasso_screen(cands.X, y, cands.meta, cv, seed, folds=folds)
    lasso.update(cvinfo, fold_cells=np.bincount(folds, minlength=cv).astype(int).tolist())
    names = screen.loc[screen["screened_in"], "var"].tolist()
    idx = [cands.meta.index[cands.meta["var"] == v][0] for v in names]
    Xs = cands.X[:, idx]
    fits, paths, bic = {}, {}, {}
    from threadpoolctl import threadpool_limits

    for i, fam in enumerate(families, start=1):
        if progress:
            progress(i, 3, f"stepwise BIC ({fam})")
        with threadpool_limits(1):  # BLAS threads only oversubscribe shared cores for these small fits
            sel, b, path = stepwise_bic(Xs, y, names, fam)
        fits[fam], paths[fam], bic[fam] = sel, path, b
    fam = min(bic, key=bic.get)
    sel = fits[fam]
    if progress:
        progress(3, 3, f"chosen: {fam}")
    with threadpool_limits(1):  # final fit on every cell: standard errors (NB2: with alpha estimated jointly)
        res = _fit(fam, y, Xs[:, [names.index(v) for v in sel]].astype(float) if sel else np.empty((len(y), 0)))
    params = np.asarray(res.params, float)
    bse = np.asarray(res.bse, float)
    pv = np.asarray(res.pvalues, float)
    k = len(sel)
    beta, se, p = params[1:1 + k], bse[1:1 + k], pv[1:1 + k]
    m = cands.meta.set_index("var")
    rows = []
    for j, v in enumerate(sel):
        rows.append({
            "name": m.loc[v, "factor"], "variable": v, "operationalization": m.loc[v, "form"],
            "distance": float(m.loc[v, "distance"]), "coef": float(beta[j]), "se": float(se[j]),
            "rrv": float(np.exp(beta[j])), "ci_low": float(np.exp(beta[j] - 1.959964 * se[j])),
            "ci_high": float(np.exp(beta[j] + 1.959964 * se[j])), "p": float(p[j]),
            "cells_share": float(m.loc[v, "share"]),
        })
    table = pd.DataFrame(rows, columns=["name", "variable", "operationalization", "distance", "coef", "se", "rrv",
                                        "ci_low", "ci_high", "p", "cells_share"])
    table = table.sort_values("rrv", ascending=False).reset_index(drop=True)
    order = table["variable"].tolist()
    cidx = [cands.meta.index[cands.meta["var"] == v][0] for v in order]
    disp = float(params[-1]) if fam == "negative binomial" else None
    return RTMFit(fam, order, table, table["coef"].to_numpy(float), cands.X[:, cidx], bic, lasso, screen, paths, disp)


# ================================================================= priority places
def priority_places(grid: RTMGrid, rrs: np.ndarray, counts: np.ndarray, *, threshold: str | float = "mean+2sd"):
    """Clusters of the highest-risk cells, dissolved to polygons.

    Parameters
    ----------
    threshold : "mean+2sd" or float
        ``"mean+2sd"`` (default, RTMDx's highest-risk convention): cells with
        RRS >= mean + 2 SD of the area's RRS. A float in (0, 1) takes that share
        of cells with the highest RRS (ties at the cut-off are all included).

    Returns
    -------
    (GeoDataFrame, float)
        Places (``place_id``, ``rank``, ``cells``, ``area_km2``, ``max_rrs``,
        ``mean_rrs``, ``incidents``, ``incident_share``, geometry; ranked by
        incidents then mean RRS) and the RRS cut-off used.
    """
    import geopandas as gpd
    from scipy import ndimage

    rrs = np.asarray(rrs, float)
    if threshold == "mean+2sd":
        cut = float(rrs.mean() + 2 * rrs.std())
    else:
        share = float(threshold)
        if not 0 < share < 1:
            raise RTMError(f"priority threshold share must be between 0 and 1; got {threshold!r}")
        cut = float(np.quantile(rrs, 1 - share))
    hot = rrs >= cut
    if rrs.max() <= rrs.min():
        hot[:] = False
    empty = gpd.GeoDataFrame({"place_id": pd.Series([], dtype=int), "rank": pd.Series([], dtype=int),
                              "cells": pd.Series([], dtype=int), "area_km2": pd.Series([], dtype=float),
                              "max_rrs": pd.Series([], dtype=float), "mean_rrs": pd.Series([], dtype=float),
                              "incidents": pd.Series([], dtype=int), "incident_share": pd.Series([], dtype=float)},
                             geometry=gpd.GeoSeries([], crs=BNG), crs=BNG)
    if not hot.any():
        return empty, cut
    lab, nlab = ndimage.label(grid.to_grid(hot, fill=0).astype(bool), structure=np.ones((3, 3), int))
    lab_cells = lab[grid.inside]
    sel = lab_cells > 0
    ix, iy = grid.ixiy()
    c = grid.cell
    boxes = shapely.box(ix[sel] * c, iy[sel] * c, (ix[sel] + 1) * c, (iy[sel] + 1) * c)
    g = gpd.GeoDataFrame({"place_id": lab_cells[sel], "rrs": rrs[sel], "incidents": counts[sel]},
                         geometry=boxes, crs=BNG)
    out = g.dissolve(by="place_id", aggfunc={"rrs": ["max", "mean", "size"], "incidents": "sum"})
    out.columns = ["geometry" if col == "geometry" else "_".join(col) if isinstance(col, tuple) else col
                   for col in out.columns]
    out = out.rename(columns={"rrs_max": "max_rrs", "rrs_mean": "mean_rrs", "rrs_size": "cells",
                              "incidents_sum": "incidents"}).reset_index()
    out = gpd.GeoDataFrame(out, geometry="geometry", crs=BNG)
    out["area_km2"] = out["cells"] * c * c / 1e6
    tot = float(counts.sum())
    out["incident_share"] = out["incidents"] / tot if tot else 0.0
    out = out.sort_values(["incidents", "mean_rrs"], ascending=False).reset_index(drop=True)
    out["place_id"] = np.arange(1, len(out) + 1)
    out["rank"] = out["place_id"]
    out["incidents"] = out["incidents"].astype(int)
    out["cells"] = out["cells"].astype(int)
    return out[["place_id", "rank", "cells", "area_km2", "max_rrs", "mean_rrs", "incidents", "incident_share",
                "geometry"]], cut


# ===================================================================== the question
def risk_terrain(incidents, factors: list[FactorLayer], area, *, cell: float | None = None,
                 block: float | None = None, distances=None, forms=FORMS, period=None, categories=None,
                 cv: int = 5, seed: int = 0, priority: str | float = "mean+2sd", progress=None,
                 inputs: dict | None = None, cv_scheme: str = "spatial", cv_block: float | None = None
                 ) -> AnalysisResult:
    """Which environmental factors raise the risk of these incidents, where?

    Runs the whole RTM (see the module docstring for the method and caveats).

    Parameters
    ----------
    incidents : geo.core.incidents.table.IncidentTable
        Incidents (already filtered or filtered here by ``period``/``categories``).
    factors : list of FactorLayer
        Named point layers (:func:`geo.rtm.factors.factor_from_frame`).
    area : GeoDataFrame or shapely geometry (BNG)
        Study area; cells whose centre lies inside it are modelled.
    cell, block : float, optional
        Cell size and block length in metres; ``None`` chooses 50 m and 100 m (UK
        towns; RTMDx's cell = half a block) and says so in ``choices``.
    distances : list of float, optional
        Spatial influences; default half a block up to three blocks (6 steps).
    forms : tuple
        Operationalisations to test: ``("proximity", "density")``.
    cv, seed : int
        Cross-validation folds and the fold seed for the lasso.
    cv_scheme : "spatial" or "random"
        Lasso folds: spatial blocks (default; cells of a block share a fold) or
        random folds of cells (RTMDx-like).
    cv_block : float, optional
        Side of the spatial CV blocks in metres; ``None`` chooses twice the
        largest spatial influence (at least 4 cells) and says so in ``choices``.
    priority : "mean+2sd" or float
        Priority-place threshold (see :func:`priority_places`).

    Returns
    -------
    AnalysisResult
        ``kind="rtm"``; ``layer`` a :class:`Raster` of the relative risk score
        (lowest in-area cell = 1, 0 = outside the area, EPSG:27700);
        ``extra_layers["priority_places"]`` polygons; ``tables``: ``factors``
        (name, variable, operationalization, distance, coef, se, rrv, ci_low,
        ci_high, p, cells_share), ``candidates`` (every candidate with its share
        of cells, lasso coefficient and whether it passed the screen),
        ``stepwise`` (the BIC path of each distribution), ``distributions``
        (family, BIC, chosen), ``cells`` (cell_id, x, y, incidents, rrs, and one
        0/1 column per selected variable); ``summary`` with ``factors`` (list of
        dicts), ``distribution``, ``bic``, ``cells``, ``incidents``,
        ``priority_places``, ``priority_threshold_rrs``, ``max_rrs``, ``lasso``
        (penalty, folds, ``cv_scheme``, ``cv_block_m``, ``cv_block_automatic``,
        ``cv_blocks``, ``fold_cells``).
    """
    check_cv(cv_scheme, cv_block, cv)  # fail before the slow part
    cell, block, choices = resolve_cell_block(cell, block)
    if distances is None:
        distances = spatial_influences(block)
        choices.append(Choice("spatial influences", ", ".join(f"{d:g}" for d in distances) + " m",
                              "half a block up to three blocks (RTMDx)"))
    if not factors:
        raise RTMError("give at least one risk factor layer (--factor NAME=FILE)")
    names = [f.name for f in factors]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise RTMError(f"factor names must be unique; repeated: {dup}")
    inc = incidents
    if period is not None or categories:
        inc = incidents.filter(period=period, categories=categories)
    if len(inc) == 0:
        raise EmptyInputError("no incidents in the period/categories asked for; nothing to model")
    grid = RTMGrid.from_area(area, cell, pad_m=max(distances))
    if cv_scheme == "spatial":  # too few CV blocks fails here, before the candidates are built
        side = default_cv_block(distances, cell) if cv_block is None else cv_block
        _check_blocks(len(_cv_blocks(grid.centres(), side)[1]), cv, side)
    y, off = grid.counts(inc.frame["x"].to_numpy(), inc.frame["y"].to_numpy())
    cands = build_candidates(grid, factors, distances, forms, progress=progress)
    fit = fit_rtm(cands, y, cv=cv, seed=seed, progress=progress, cv_scheme=cv_scheme, cv_block=cv_block)
    choices.append(cv_choice(fit.lasso, cv, distances, cell))
    choices.append(Choice("lasso penalty", f"{fit.lasso['alpha']:.3g}",
                          f"lowest held-out Poisson deviance, {cv}-fold {cv_scheme} cross-validation"))
    choices.append(Choice("distribution", fit.family, "lower BIC (" + ", ".join(
        f"{k} {v:,.1f}" for k, v in fit.bic.items()) + ")"))
    rrs = fit.rrs()
    places, cut = priority_places(grid, rrs, y, threshold=priority)
    choices.append(Choice("priority threshold", f"RRS >= {cut:.3g}",
                          "mean + 2 SD of the cells' RRS (RTMDx)" if priority == "mean+2sd"
                          else f"top {float(priority):.0%} of cells", automatic=priority == "mean+2sd"))
    raster = grid.raster(rrs, nodata=0.0, name="relative_risk_score", units="ratio to the lowest cell")
    centres = grid.centres()
    cells = pd.DataFrame({"cell_id": grid.cell_ids(), "x": centres[:, 0], "y": centres[:, 1],
                          "incidents": y.astype(int), "rrs": rrs})
    for j, v in enumerate(fit.selected):
        cells[v] = fit.X_sel[:, j]
    dist_tab = pd.DataFrame({"family": list(fit.bic), "bic": list(fit.bic.values())})
    dist_tab["chosen"] = dist_tab["family"] == fit.family
    step_tab = pd.concat([pd.DataFrame(p).assign(family=f) for f, p in fit.paths.items()], ignore_index=True)
    cand_tab = fit.screen.copy()
    dropped = pd.DataFrame(cands.dropped, columns=["var", "reason"])
    factor_list = fit.table.drop(columns=["variable"]).to_dict("records")
    summary = {
        "factors": factor_list,
        "distribution": fit.family,
        "bic": fit.bic,
        "dispersion_alpha": fit.dispersion,
        "cells": grid.n,
        "cell_m": float(cell),
        "block_m": float(block),
        "incidents": int(y.sum()),
        "incidents_outside_cells": off,
        "candidates": int(cands.X.shape[1]),
        "candidates_dropped": len(cands.dropped),
        "screened_in": int(fit.screen["screened_in"].sum()),
        "lasso": dict(fit.lasso),
        "max_rrs": float(rrs.max()),
        "priority_threshold_rrs": cut,
        "priority_places": int(len(places)),
        "priority_incident_share": float(places["incidents"].sum() / max(y.sum(), 1)),
        "priority_area_share": float(places["cells"].sum() / grid.n) if len(places) else 0.0,
    }
    params = {"cell_m": float(cell), "block_m": float(block), "distances_m": [float(d) for d in distances],
              "forms": list(forms), "cv_folds": cv, "cv_scheme": cv_scheme, "cv_block_m": fit.lasso["cv_block_m"],
              "seed": seed, "priority": priority,
              "selection": "lasso Poisson (glum, CV) -> one form per factor -> bidirectional stepwise BIC "
                           "(Poisson vs NB2, statsmodels)",
              "categories": list(categories) if categories else "all"}
    ins = dict(inputs or {})
    ins.setdefault("factors", [f.describe() for f in factors])
    ins.setdefault("incidents", len(inc))
    return AnalysisResult(
        kind="rtm", layer=raster, params=params, choices=choices, period=period, inputs=ins,
        tables={"factors": fit.table, "candidates": cand_tab, "dropped_candidates": dropped, "stepwise": step_tab,
                "distributions": dist_tab, "cells": cells},
        summary=summary, extra_layers={"priority_places": places},
    )
