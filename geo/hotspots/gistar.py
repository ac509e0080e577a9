r"""Getis-Ord Gi* hot spots on counts **or harm**, with honest significance.

Which units are statistically hot rather than just busy? :func:`hotspots_gistar`
answers that for BNG squares, H3 cells or user polygons.

Method
------
For unit *i* with value :math:`y_i` (count or harm), binary weights
:math:`w_{ij}\in\{0,1\}` with the unit itself included (:math:`w_{ii}=1`),
:math:`W_i=\sum_j w_{ij}`, :math:`n` units, :math:`\bar y` the mean and
:math:`s^2 = \frac1n\sum y_j^2-\bar y^2`::

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

Significance: two-sided normal p-values, :math:`p_i = 2\,\Phi(-|z_i|)`,
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

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from geo.core.errors import EmptyInputError, HarmspotError
from geo.core.result import AnalysisResult, Choice
from geo.units.neighbours.cache import NeighbourCache
from geo.units.neighbours.build import neighbours_for
from geo.hotspots.significance import ADJUST, adjust_pvalues


CLASS_LABELS = {
    3: "Hot Spot - 99% Confidence",
    2: "Hot Spot - 95% Confidence",
    1: "Hot Spot - 90% Confidence",
    0: "Not Significant",
    -1: "Cold Spot - 90% Confidence",
    -2: "Cold Spot - 95% Confidence",
    -3: "Cold Spot - 99% Confidence",
}


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
    area, period, categories : as :func:`geo.units.counts.count_units`; every unit of the
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
    from geo.units.counts import count_units

    if weight not in ("count", "harm"):
        raise HarmspotError(f"--weight {weight!r}: use 'count' or 'harm'")
    base = count_units(incidents, units, weights, area=area, period=period, categories=categories, inputs=inputs)
    if units is None:
        from geo.units.lattice import SquareGrid

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
