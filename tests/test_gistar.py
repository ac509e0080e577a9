"""Gi* against esda (the slow twin), sfhotspot's published output, and Benjamini–Hochberg's worked example."""
from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from geo.units.neighbours.base import LatticeNeighbours, distance_band_neighbours
from geo.hotspots.significance import adjust_pvalues
from geo.hotspots.gistar import classify, gistar, gistar_z, hotspots_gistar, permutation_pvalues
from geo.units.neighbours.contiguity import contiguity_neighbours
from geo.units.neighbours.h3_rings import h3_ring_neighbours
from geo.units.neighbours.build import square_index

ATOL = 1e-9  # issue 3: "equals esda's on the same cells and weights to 1e-9"


def _esda_z(y, w):
    esda = pytest.importorskip("esda")
    return esda.G_Local(np.asarray(y, float), w, transform="B", star=True, permutations=0).Zs


def test_esda_documented_six_points():
    # esda/getisord.py G_Local docstring (and esda/tests/test_getisord.py): points, y and
    # DistanceBand(15, binary) give Gi* z = -1.397276, -0.289178, 0.650650, -0.289178, 1.234521, 2.024243
    pts = [(10, 10), (20, 10), (40, 10), (15, 20), (30, 20), (30, 30)]
    y = np.array([2, 3, 3.2, 5, 8, 7])
    z = gistar_z(y, distance_band_neighbours(pts, 15))
    expected = [-1.397276, -0.289178, 0.650650, -0.289178, 1.234521, 2.024243]
    np.testing.assert_allclose(z, expected, atol=5e-7)  # published to 6 decimals


@pytest.fixture(scope="module")
def memphis(shared):
    path = shared / "peer_reference" / "sfhotspot_memphis_gistar_500m.csv.gz"
    with gzip.open(path) as f:
        return pd.read_csv(f)


def test_memphis_lattice_equals_sfhotspot_and_esda(memphis):
    # peer_reference/README.md: sfhotspot::hotspot_gistar() on the Memphis robberies, 500 m cells,
    # neighbours within 500*sqrt(2) (self included, binary); 425 cells hot at p < 0.05, 278 with FDR.
    libpysal = pytest.importorskip("libpysal")
    m = memphis
    x0, y0 = m.cx_32615.min(), m.cy_32615.min()
    ix = np.rint((m.cx_32615 - x0) / 500).astype(int)
    iy = np.rint((m.cy_32615 - y0) / 500).astype(int)
    nb = LatticeNeighbours(ix, iy, 500.0, 500 * np.sqrt(2))
    z = gistar_z(m.n.to_numpy(), nb)
    np.testing.assert_allclose(z, m.gistar, rtol=0, atol=ATOL)  # sfhotspot/spdep localG
    w = libpysal.weights.DistanceBand(m[["cx_32615", "cy_32615"]].to_numpy(), 500 * np.sqrt(2), binary=True,
                                      silence_warnings=True)
    np.testing.assert_allclose(z, _esda_z(m.n, w), rtol=0, atol=ATOL)
    g = gistar(m.n.to_numpy(), nb, adjust="none")
    np.testing.assert_allclose(g.p, m.pvalue, rtol=1e-9, atol=1e-12)  # two-sided normal, unadjusted
    assert int(((g.z > 0) & (g.p < 0.05)).sum()) == 425
    g_fdr = gistar(m.n.to_numpy(), nb, adjust="fdr")
    assert int(((g_fdr.z > 0) & (g_fdr.p_adj < 0.05)).sum()) == 278  # sfhotspot p_adjust_method="fdr"


def test_lattice_matches_its_sparse_twin(memphis):
    m = memphis.iloc[::3]  # holes in the lattice: masked cells must not count as neighbours
    ix = np.rint((m.cx_32615 - m.cx_32615.min()) / 500).astype(int)
    iy = np.rint((m.cy_32615 - m.cy_32615.min()) / 500).astype(int)
    for band in (500.0, 1200.0, 11_000.0, 31_000.0):  # shift-add, runs, runs, FFT (radius > 60 cells)
        lat = LatticeNeighbours(ix, iy, 500.0, band)
        sp = distance_band_neighbours(np.column_stack([ix * 500.0, iy * 500.0]), band)
        np.testing.assert_array_equal(lat.cardinality, sp.cardinality)
        np.testing.assert_allclose(gistar_z(m.n, lat), gistar_z(m.n, sp), rtol=0, atol=ATOL)


def test_essex_counts_and_harm_equal_esda(essex_ingest, essex_boundary):
    # Real data: Essex police.uk street crime, one month, 500 m BNG squares, band 750 m.
    libpysal = pytest.importorskip("libpysal")
    from geo.core.period import Period
    from geo.units.lattice import SquareGrid

    inc = essex_ingest.accepted
    res = hotspots_gistar(inc, SquareGrid(500), area=essex_boundary, period=Period.parse("2018-03"),
                          band=750, weight="harm")
    lay = res.layer
    assert lay["count"].sum() == res.summary["incidents"] > 5000
    assert (lay["count"] == 0).sum() > 1000  # zero cells entered the statistic
    cen = lay.geometry.centroid
    w = libpysal.weights.DistanceBand(np.column_stack([cen.x, cen.y]), 750, binary=True, silence_warnings=True)
    np.testing.assert_allclose(lay["gistar_z"], _esda_z(lay["harm"], w), rtol=0, atol=ATOL)
    ix, iy = square_index(lay, 500.0)
    z_count = gistar_z(lay["count"].to_numpy(), LatticeNeighbours(ix, iy, 500.0, 750.0))
    np.testing.assert_allclose(z_count, _esda_z(lay["count"], w), rtol=0, atol=ATOL)
    assert res.params["band_m"] == 750 and res.params["weight"] == "harm"
    assert res.summary["classes"]["Hot Spot - 99% Confidence"] > 0


def test_polygon_contiguity_equals_libpysal(shared):
    # Essex LSOA 2011 (generalised) polygons: neighbours vs libpysal fuzzy_contiguity(predicate="intersects")
    # (the generalised LSOAs overlap slightly, so vertex-based Queen finds no pairs); then Gi* vs esda.
    libpysal = pytest.importorskip("libpysal")
    from data.boundaries import read_polygons

    lsoa = read_polygons(shared / "boundaries" / "essex_lsoa_2011.geojson.gz").to_crs(27700).iloc[:300]
    lsoa = lsoa.reset_index(drop=True)
    nb = contiguity_neighbours(lsoa.geometry, "queen")
    w = libpysal.weights.fuzzy_contiguity(lsoa, tolerance=0, buffering=False, predicate="intersects",
                                          silence_warnings=True)
    ref = (w.sparse.toarray() + np.eye(len(lsoa))) > 0
    assert ((nb.matrix.toarray() > 0) != ref).sum() == 0
    assert nb.cardinality.mean() > 4
    y = np.random.default_rng(3).poisson(4, len(lsoa)).astype(float)
    np.testing.assert_allclose(gistar_z(y, nb), _esda_z(y, w), rtol=0, atol=ATOL)


def test_rook_and_queen_on_squares_equal_libpysal_lattice():
    # A 12 x 9 block of square polygons: rook = 4 edge neighbours, queen = 8 (libpysal.weights.lat2W).
    libpysal = pytest.importorskip("libpysal")
    import shapely

    nrows, ncols = 9, 12
    r, c = np.divmod(np.arange(nrows * ncols), ncols)
    boxes = shapely.box(c * 100.0, r * 100.0, c * 100.0 + 100, r * 100.0 + 100)
    for rule, rook in (("rook", True), ("queen", False)):
        nb = contiguity_neighbours(boxes, rule)
        ref = (libpysal.weights.lat2W(nrows, ncols, rook=rook).sparse.toarray() + np.eye(r.size)) > 0
        assert ((nb.matrix.toarray() > 0) != ref).sum() == 0, rule


def test_h3_ring_equals_esda_with_independent_neighbours():
    import h3

    pytest.importorskip("libpysal")
    from libpysal.weights import W

    centre = h3.latlng_to_cell(51.73, 0.47, 8)  # Chelmsford
    cells = sorted(h3.grid_disk(centre, 6))
    ints = np.array([h3.str_to_int(c) for c in cells], dtype=np.uint64)
    nb = h3_ring_neighbours(ints, 1)
    assert nb.cardinality.max() == 7 and nb.cardinality.min() == 4  # interior: self + 6; corners of the disk: 4
    neigh = {i: [cells.index(c) for c in h3.grid_ring(cells[i], 1) if c in cells] for i in range(len(cells))}
    y = np.random.default_rng(5).poisson(2, len(cells)).astype(float)
    np.testing.assert_allclose(gistar_z(y, nb), _esda_z(y, W(neigh, silence_warnings=True)), rtol=0, atol=ATOL)


def test_h3_ring_unsorted_units_with_gaps_and_pentagon_match_h3py():
    # Reference: h3-py's own grid_ring per cell (independent of h3ronpy and of the hash lookup), on units
    # in a shuffled order with every third cell missing, plus a ring-2 disk around a res-9 pentagon
    # (5 neighbours). Exact equality of the binary matrices (self included).
    import h3

    def reference(cells):
        pos = {c: i for i, c in enumerate(cells)}
        ref = np.eye(len(cells), dtype=bool)
        for i, c in enumerate(cells):
            for d in h3.grid_ring(c, 1):
                if d in pos:
                    ref[i, pos[d]] = True
        return ref

    rng = np.random.default_rng(11)
    town = sorted(h3.grid_disk(h3.latlng_to_cell(51.73, 0.47, 9), 8))
    town = [town[i] for i in rng.permutation(len(town)) if i % 3]
    pent = list(h3.grid_disk(h3.get_pentagons(9)[0], 2))
    for cells in (town, pent):
        nb = h3_ring_neighbours(np.array([h3.str_to_int(c) for c in cells], np.uint64), 1)
        assert ((nb.matrix.toarray() > 0) != reference(cells)).sum() == 0
        np.testing.assert_array_equal(nb.cardinality, reference(cells).sum(axis=1))
    assert nb.cardinality.max() == 7 and (nb.cardinality == 6).sum() >= 1  # pentagon: self + 5



# ---------------------------------------------------------------- h3_ring_neighbours: local IJ vs grid disk
def _h3py_disk_reference(cells, k):
    """(indptr, indices) of the binary CSR from h3-py's own ``grid_disk`` per cell (C H3, not h3ronpy)."""
    from h3.api import basic_int as h3i

    pos = {int(c): i for i, c in enumerate(cells)}
    rows = [sorted(pos[d] for d in h3i.grid_disk(int(c), k) if d in pos) for c in cells]
    return np.cumsum([0] + [len(r) for r in rows]), np.array([j for r in rows for j in r], np.int64)


def _assert_h3_ring_exact(nb, cells, k):
    """nb equals method="disk" exactly (pattern, dtypes, flags, cardinality, rule) and h3-py's grid_disk."""
    from geo.units.neighbours.base import SparseNeighbours

    disk = h3_ring_neighbours(cells, k, method="disk")
    assert isinstance(nb, SparseNeighbours) and nb.n == disk.n == len(cells) and nb.rule == disk.rule
    a, b = nb.matrix, disk.matrix
    assert a.shape == b.shape and a.format == b.format == "csr" and a.has_sorted_indices and b.has_sorted_indices
    for x, y in ((a.indptr, b.indptr), (a.indices, b.indices), (a.data, b.data), (nb.cardinality, disk.cardinality)):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)
    indptr, indices = _h3py_disk_reference(cells, k)
    np.testing.assert_array_equal(a.indptr, indptr)
    np.testing.assert_array_equal(a.indices, indices)


def _essex_box_cells():
    import h3

    box = h3.LatLngPoly([(51.57, 0.21), (51.57, 0.79), (51.93, 0.79), (51.93, 0.21)])  # ~40 x 40 km
    return np.array(sorted(h3.str_to_int(c) for c in h3.h3shape_to_cells(box, 9)), np.uint64)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_h3_ring_localij_essex_box_equals_grid_disk(k):
    """Reference: method="disk" (h3ronpy grid_disk + hash lookup) and h3-py's grid_disk per cell, exactly.

    A res-9 cover of a ~40 km box around Chelmsford (17k cells); the local-IJ path must be the one taken.
    """
    from geo.units.neighbours.h3_rings import _h3_ring_localij

    cells = _essex_box_cells()
    assert len(cells) > 15000
    fast = _h3_ring_localij(cells, k)
    assert fast is not None
    _assert_h3_ring_exact(fast, cells, k)
    _assert_h3_ring_exact(h3_ring_neighbours(cells, k), cells, k)
    assert fast.cardinality.max() == 3 * k * (k + 1) + 1


def test_h3_ring_localij_shuffled_with_gaps_any_anchor():
    """Reference: method="disk" and h3-py's grid_disk per cell, exactly.

    The Essex cells shuffled with ~30% removed at random, for the default anchor and for several other
    units as the IJ origin (the result must not depend on it).
    """
    from geo.units.neighbours.h3_rings import _h3_ring_localij

    rng = np.random.default_rng(7)
    cells = _essex_box_cells()
    cells = cells[rng.permutation(len(cells))]
    cells = cells[rng.random(len(cells)) < 0.7]
    for anchor in [None, *cells[rng.integers(0, len(cells), 3)]]:
        for k in (1, 2):
            fast = _h3_ring_localij(cells, k, anchor=anchor)
            assert fast is not None
            _assert_h3_ring_exact(fast, cells, k)


def test_h3_ring_localij_across_icosahedron_faces_and_base_cells():
    """Reference: method="disk" and h3-py's grid_disk per cell, exactly.

    A res-8 disk of radius 60 around (45.0 N, 2.0 E) (Massif Central) spans icosahedron faces 3 and 4 and
    base cells 12, 15 and 28 (asserted, via h3.get_icosahedron_faces / get_base_cell_number): the local IJ
    chart crosses face and base-cell edges, with rotations between base cells, and is used there.
    """
    import h3

    from geo.units.neighbours.h3_rings import _h3_ring_localij

    disk = h3.grid_disk(h3.latlng_to_cell(45.0, 2.0, 8), 60)
    assert set().union(*(h3.get_icosahedron_faces(c) for c in disk)) == {3, 4}
    assert {h3.get_base_cell_number(c) for c in disk} == {12, 15, 28}
    rng = np.random.default_rng(3)
    cells = np.array([h3.str_to_int(c) for c in disk], np.uint64)
    cells = cells[rng.permutation(len(cells))][: int(len(cells) * 0.8)]
    for k in (1, 2):
        for anchor in (None, int(cells[0])):
            fast = _h3_ring_localij(cells, k, anchor=anchor)
            assert fast is not None
            _assert_h3_ring_exact(fast, cells, k)


@pytest.mark.parametrize("res", [9, 5])
def test_h3_ring_near_pentagon_falls_back_and_matches_h3py(res):
    """Reference: h3-py's grid_disk per cell (a pentagon has 5 neighbours).

    The radius-5 disk around h3.get_pentagons(res)[0] lies in a pentagon base cell, where local IJ is
    warped (anchored at the pentagon it gives a wrong matrix): the local-IJ path must refuse, and the
    default method must still be exact.
    """
    import h3

    from geo.units.neighbours.h3_rings import _h3_ring_localij

    pentagon = h3.get_pentagons(res)[0]
    cells = np.array([h3.str_to_int(c) for c in h3.grid_disk(pentagon, 5)], np.uint64)
    for k in (1, 2):
        for anchor in (None, int(cells[0]), int(cells[-1])):
            assert _h3_ring_localij(cells, k, anchor=anchor) is None
        nb = h3_ring_neighbours(cells, k)
        _assert_h3_ring_exact(nb, cells, k)
    card = h3_ring_neighbours(cells, 1).cardinality
    assert card[list(cells).index(h3.str_to_int(pentagon))] == 6 and (card == 6).sum() == 1  # pentagon: self + 5


def test_h3_ring_coarse_resolution_near_pentagon_falls_back():
    """Reference: h3-py's grid_disk per cell.

    At res 1 a ring-2 disk around a pentagon leaves its base cell, so units outside the pentagon base cells
    can still be within k of a pentagon: the local-IJ path refuses even where the IJ conversion succeeds
    (two neighbouring base cells next to pentagon base cell 4, anchored in one of them).
    """
    import h3

    from geo.units.neighbours.h3_rings import _H3_PENTAGON_BASE_CELLS
    from geo.units.neighbours.h3_rings import _h3_pentagon_disks_in_own_base_cell, _h3_ring_localij
    from h3ronpy import cells_to_localij

    assert not _h3_pentagon_disks_in_own_base_cell(1, 2) and _h3_pentagon_disks_in_own_base_cell(9, 5)
    pent = [p for p in h3.get_pentagons(1) if h3.get_base_cell_number(p) == 4][0]
    near = [c for c in h3.grid_disk(pent, 3) if h3.get_base_cell_number(c) not in _H3_PENTAGON_BASE_CELLS]
    bases = sorted({h3.get_base_cell_number(c) for c in near})
    cells = np.array([h3.str_to_int(c) for c in near if h3.get_base_cell_number(c) in bases[:2]], np.uint64)
    cells_to_localij(cells, int(cells[0]))  # converts without error: only the pentagon guard refuses
    assert _h3_ring_localij(cells, 2, anchor=int(cells[0])) is None
    _assert_h3_ring_exact(h3_ring_neighbours(cells, 2), cells, 2)


def test_h3_ring_localij_fallbacks_keep_the_disk_result():
    """Reference: method="disk" (and its errors). Cases the local-IJ path must refuse: duplicated ids,
    mixed resolutions, k = 0, two clusters ~100 km apart (sparse IJ box), units in pentagon base cell 4
    (Shetland), base cells that are not all neighbours of the anchor's, and an invalid id (same ValueError).
    """
    import h3

    from geo.core.errors import HarmspotError
    from geo.units.neighbours.h3_rings import _h3_ring_localij

    essex = _essex_box_cells()[:3000]
    dup = np.concatenate([essex[:50], essex[:50]])
    def plus(a, *cells):
        return np.concatenate([a, np.array([h3.str_to_int(c) for c in cells], np.uint64)])

    mixed = plus(essex[:50], h3.latlng_to_cell(51.75, 0.5, 8))
    far = plus(essex[:500], h3.latlng_to_cell(53.5, -2.2, 9))
    shetland = np.array([h3.str_to_int(c) for c in h3.grid_disk(h3.latlng_to_cell(60.2, -1.1, 9), 3)], np.uint64)
    spread = np.array([h3.str_to_int(h3.latlng_to_cell(lat, lng, 7)) for lat, lng in ((51.75, 0.5), (45.0, 2.0),
                                                                                       (40.4, -3.7))], np.uint64)
    for cells, k in ((dup, 1), (mixed, 1), (essex, 0), (far, 1), (shetland, 1), (spread, 1)):
        assert _h3_ring_localij(cells, k) is None
        a, b = h3_ring_neighbours(cells, k), h3_ring_neighbours(cells, k, method="disk")
        assert (a.matrix != b.matrix).nnz == 0 and a.rule == b.rule
        np.testing.assert_array_equal(a.matrix.indices, b.matrix.indices)
        np.testing.assert_array_equal(a.cardinality, b.cardinality)
    _assert_h3_ring_exact(h3_ring_neighbours(shetland, 1), shetland, 1)
    bad = np.array([essex[0], int(essex[1]) & ~(0xF << 52) | (8 << 52)], np.uint64)  # res 8 with 9 digits
    with pytest.raises(ValueError, match="invalid"):
        h3_ring_neighbours(bad, 1)
    with pytest.raises(HarmspotError, match="method"):
        h3_ring_neighbours(essex, 1, method="ij")


def test_h3_ring_auto_dispatch(monkeypatch):
    """Dispatch check (no numeric reference): with the grid-disk builder disabled, method="auto" still answers
    on the Essex cells (local IJ taken), while the pentagon disk and method="disk" reach the disabled builder."""
    import h3

    import geo.units.neighbours.h3_rings as gistar

    def disabled(cells, k):
        raise RuntimeError("grid-disk path")

    monkeypatch.setattr(gistar, "_h3_ring_disk", disabled)
    cells = _essex_box_cells()
    assert h3_ring_neighbours(cells, 1).n == len(cells)
    pent = np.array([h3.str_to_int(c) for c in h3.grid_disk(h3.get_pentagons(9)[0], 2)], np.uint64)
    for args in ((pent, 1), (cells, 1, "disk")):
        with pytest.raises(RuntimeError, match="grid-disk path"):
            h3_ring_neighbours(*args)

def test_h3_sort_network_and_pentagon_base_cells():
    """References: the 0-1 principle (a comparator network sorts every input iff it sorts all 2**7 zero-one
    inputs; Knuth TAOCP 5.3.4) against np.sort, and h3.get_pentagons(0) for the pentagon base cells."""
    import itertools

    import h3

    from geo.units.neighbours.h3_rings import _H3_PENTAGON_BASE_CELLS
    from geo.units.neighbours.h3_rings import _sort_network_7

    ones = np.array(list(itertools.product([0, 1], repeat=7)), np.int32).T.copy()  # (7, 128)
    rows = ones.copy()
    _sort_network_7(rows)
    np.testing.assert_array_equal(rows, np.sort(ones, axis=0))
    assert sorted(h3.get_base_cell_number(p) for p in h3.get_pentagons(0)) == list(_H3_PENTAGON_BASE_CELLS)


def test_benjamini_hochberg_worked_example():
    # Benjamini & Hochberg (1995) JRSS-B 57(1) p.298-299: 15 p-values; at q = 0.05 the step-up rule
    # rejects the 4 smallest (0.0095 <= 4*0.05/15 = 0.01333; 0.0201 > 5*0.05/15). Bonferroni rejects 3.
    p = np.array([0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344, 0.0459,
                  0.3240, 0.4262, 0.5719, 0.6528, 0.7590, 1.0000])
    q = adjust_pvalues(p, "fdr")
    assert int((q <= 0.05).sum()) == 4
    # q-value of the 4th: min over j >= 4 of p_(j) * 15 / j = 0.0095 * 15 / 4
    assert q[3] == pytest.approx(0.0095 * 15 / 4, rel=1e-12)
    assert int((adjust_pvalues(p, "bonferroni") <= 0.05).sum()) == 3
    np.testing.assert_array_equal(adjust_pvalues(p, "none"), p)
    with pytest.raises(ValueError, match="adjust='holm'"):
        adjust_pvalues(p, "holm")


def test_classes_follow_arcgis_bins():
    z = np.array([3.0, 2.0, 1.7, 0.5, -1.7, -2.0, -3.0, np.nan])
    p = np.array([0.005, 0.03, 0.09, 0.6, 0.09, 0.03, 0.005, np.nan])
    np.testing.assert_array_equal(classify(z, p), [3, 2, 1, 0, -1, -2, -3, 0])


def test_permutation_pvalues_planted_cluster_and_seed():
    # Synthetic planted truth: a 3x3 block of high counts on a 20x20 lattice of Poisson(1) noise.
    rng = np.random.default_rng(11)
    ix, iy = np.meshgrid(np.arange(20), np.arange(20))
    ix, iy = ix.ravel(), iy.ravel()
    y = rng.poisson(1.0, ix.size).astype(float)
    hot = (abs(ix - 10) <= 1) & (abs(iy - 10) <= 1)
    y[hot] += 8
    nb = LatticeNeighbours(ix, iy, 100.0, 150.0)
    p1 = permutation_pvalues(y, nb, 199, seed=7)
    p2 = permutation_pvalues(y, nb, 199, seed=7)
    np.testing.assert_array_equal(p1, p2)  # same seed, same answer
    # every planted cell reaches the smallest possible two-sided p, 2 * 1 / (199 + 1)
    np.testing.assert_allclose(p1[hot], 2 / 200)
    assert (p1 >= 2 / 200).all() and (p1 <= 1).all()
    # away from the cluster (noise only) the test keeps its size: under 5% of cells at p < 0.05
    far = (abs(ix - 10) > 4) | (abs(iy - 10) > 4)
    assert (p1[far] < 0.05).mean() < 0.05
    assert gistar(y, nb, permutations=199, seed=7, adjust="none").permutations == 199


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="distance band must be >= 0"):
        LatticeNeighbours([0, 1], [0, 0], 100.0, -5)
    with pytest.raises(ValueError, match="duplicate ix, iy"):
        LatticeNeighbours([0, 0, 1], [0, 0, 1], 100.0, 150)
    with pytest.raises(ValueError, match="contiguity rule 'bishop'"):
        contiguity_neighbours([], "bishop")


def test_cli_gistar_contract(tmp_path, town_store):
    # issue 3 "Command contract": every unit that entered the statistic (zero cells included) with
    # cell_id, count, harm, gistar_z, gistar_p, gistar_class and geometry; --band between centroids.
    # Data: the SYNTHETIC town (seed 42).
    import json
    import subprocess
    import sys

    import geopandas as gpd

    store = town_store.path
    town_store.close()  # let the CLI process open the DuckDB file
    out = tmp_path / "gi.gpkg"
    cmd = [sys.executable, "-c", "from services.cli import main; main()", "hotspots", "gistar", "--store",
           str(store), "--cell", "500", "--band", "750", "--weight", "count", "--out", str(out), "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    g = gpd.read_file(out)
    for col in ("cell_id", "count", "harm", "gistar_z", "gistar_p", "gistar_class", "geometry"):
        assert col in g.columns
    assert (g["count"] == 0).any() and len(g) == summary["units"]
    assert summary["tested"] == "count" and summary["params"]["band_m"] == 750
    assert g["cell_id"].str.startswith("500m_E").all()
    # 750 m band on 500 m squares: the 8 surrounding cells (diagonal 707 m) and the cell itself
    assert g["neighbours"].max() == 9
    assert len(summary["tasking"]) == 10 and "location" in summary["tasking"][0]
    # --json: the LAST line is the JSON object; the tasking table goes to stderr
    r2 = subprocess.run(cmd[:-1] + ["--weight", "mass"], capture_output=True, text=True, timeout=300)
    assert r2.returncode == 2 and "--weight 'mass'" in r2.stderr


# ---------------------------------------------------------------- contiguity: fast vertex method vs its slow twin
def _same_matrix(a, b):
    return (a.matrix != b.matrix).nnz == 0 and np.array_equal(a.cardinality, b.cardinality)


def _check_planted(g, queen, rook):
    """The vertex method equals its predicate twin and the planted pairs, for both rules."""
    for rule, truth in (("queen", queen), ("rook", rook)):
        fast = contiguity_neighbours(g, rule)
        slow = contiguity_neighbours(g, rule, method="predicate")
        assert _same_matrix(fast, slow), rule
        m = fast.matrix.tocoo()
        got = {(int(i), int(j)) for i, j in zip(m.row, m.col) if i < j}
        assert got == truth, (rule, got ^ truth)


def test_contiguity_vertex_method_equals_predicate_twin_on_essex(shared):
    # Real data: all Essex LSOAs 2011 (generalised; they overlap, so no pair shares an exact vertex and every
    # pair goes through GEOS) and Essex wards 2013 (hundreds of exactly shared vertices, so the hashed
    # vertex/segment path decides most pairs). The slow twin is one bulk STRtree.query(predicate="intersects")
    # plus length(intersection) > 0 for rook; the matrices must be identical.
    from data.boundaries import read_polygons
    import shapely

    from geo.units.neighbours.contiguity import _pairs_sharing, _vertex_runs

    for name, min_shared in (("essex_lsoa_2011", 0), ("essex_wards_2013", 500)):
        g = read_polygons(shared / "boundaries" / f"{name}.geojson.gz").to_crs(27700).geometry.values
        coords, owner = shapely.get_coordinates(g, return_index=True)
        order, run = _vertex_runs(coords)
        assert _pairs_sharing(run, owner[order], len(g)).size >= min_shared, name  # the fast path is exercised
        for rule in ("queen", "rook"):
            fast = contiguity_neighbours(g, rule)
            slow = contiguity_neighbours(g, rule, method="predicate")
            assert _same_matrix(fast, slow), (name, rule)
            assert fast.cardinality.mean() > 5, (name, rule)


def test_contiguity_vertex_method_on_planted_edge_cases(monkeypatch):
    # Synthetic planted truth: T-junctions, a point touch on an edge's interior, a corner touch, a hole with a
    # filling island and a floating island, an overlap, a multipolygon, -0.0 against 0.0, None and an empty
    # polygon. Expected neighbours are stated by construction; both methods must give them.
    import shapely

    big = shapely.box(0, 0, 200, 200)
    geoms = [
        big,                                                            # 0
        shapely.box(200, 0, 300, 100),                                  # 1 edge along big, shares (200, 0)
        shapely.box(50, -100, 150, 0),                                  # 2 T-junction: edge inside big's edge
        shapely.Polygon([(-100, 50), (-100, 150), (0, 100)]),           # 3 apex on big's edge interior only
        shapely.box(-100, -100, 0, 0),                                  # 4 corner touch with big at (0, 0)
        shapely.Polygon(shapely.box(1000, 0, 1300, 300).exterior.coords,
                        [shapely.box(1100, 100, 1200, 200).exterior.coords]),  # 5 donut
        shapely.box(1100, 100, 1200, 200),                              # 6 fills the hole: shares its edges
        shapely.box(1130, 130, 1170, 170),                              # 7 floats inside the island 6
        shapely.box(2000, 0, 2100, 100),                                # 8
        shapely.box(2050, 50, 2150, 150),                               # 9 overlaps 8, no shared vertex
        shapely.MultiPolygon([shapely.box(3000, 0, 3100, 100), shapely.box(300, 0, 400, 100)]),  # 10 part touches 1
        shapely.Polygon([(-100, 300), (-0.0, 300), (-0.0, 400), (-100, 400)]),  # 11 -0.0 edge
        shapely.box(0, 300, 100, 400),                                  # 12 shares the edge x = 0 with 11
        None,                                                           # 13
        shapely.Polygon(),                                              # 14 empty
    ]
    g = np.array(geoms, dtype=object)
    queen = {(0, 1), (0, 2), (0, 3), (0, 4), (5, 6), (6, 7), (8, 9), (1, 10), (11, 12)}
    rook = queen - {(0, 3), (0, 4)}  # 3 and 4 meet big at one point only; 7 lies inside 6 (an overlap)
    _check_planted(g, queen, rook)
    # every coordinate hashing alike forces the exact lexicographic fallback: same answer
    import geo.units.neighbours.contiguity as gi

    monkeypatch.setattr(gi, "_HASH_X", np.uint64(0))
    monkeypatch.setattr(gi, "_HASH_Y", np.uint64(0))
    for rule in ("queen", "rook"):
        assert _same_matrix(contiguity_neighbours(g, rule), contiguity_neighbours(g, rule, method="predicate"))


def test_contiguity_on_a_tessellation_equals_libpysal():
    # Synthetic Voronoi tessellation (seeded): every contact is an exactly shared vertex, so libpysal's
    # vertex-set Queen/Rook (weights.Queen/Rook.from_dataframe) is the reference; both methods must match it.
    libpysal = pytest.importorskip("libpysal")
    import geopandas as gpd
    import shapely

    rng = np.random.default_rng(8)
    pts = shapely.multipoints(rng.uniform(0, 10_000, (600, 2)))
    frame = shapely.box(0, 0, 10_000, 10_000)
    polys = shapely.intersection(shapely.get_parts(shapely.voronoi_polygons(pts, extend_to=frame)), frame)
    gdf = gpd.GeoDataFrame(geometry=polys, crs=27700)
    for rule, builder in (("queen", libpysal.weights.Queen), ("rook", libpysal.weights.Rook)):
        w = builder.from_dataframe(gdf, use_index=False, silence_warnings=True)
        ref = (w.sparse.toarray() + np.eye(len(gdf))) > 0
        for method in ("vertex", "predicate"):
            nb = contiguity_neighbours(gdf.geometry, rule, method=method)
            assert ((nb.matrix.toarray() > 0) != ref).sum() == 0, (rule, method)
    with pytest.raises(ValueError, match="contiguity method 'fuzzy'"):
        contiguity_neighbours(polys, "queen", method="fuzzy")


def test_contiguity_many_polygons_at_one_point():
    # Synthetic planted truth: 40 pie wedges around one centre (more than the 32 a run is paired position by
    # position): queen = every pair (they all share the centre), rook = the 40 wedges next to each other.
    import shapely

    k = 40
    ang = np.linspace(0, 2 * np.pi, k + 1)
    wedges = [shapely.Polygon([(0, 0), (100 * np.cos(ang[i]), 100 * np.sin(ang[i])),
                               (100 * np.cos(ang[i + 1]), 100 * np.sin(ang[i + 1]))]) for i in range(k)]
    wedges[-1] = shapely.Polygon([(0, 0), wedges[-1].exterior.coords[1], wedges[0].exterior.coords[1]])  # close exactly
    queen = contiguity_neighbours(wedges, "queen")
    rook = contiguity_neighbours(wedges, "rook")
    assert (queen.cardinality == k).all()
    assert (rook.cardinality == 3).all()  # itself and the wedge either side
    for rule, nb in (("queen", queen), ("rook", rook)):
        assert _same_matrix(nb, contiguity_neighbours(wedges, rule, method="predicate")), rule


def _brute_box_pairs(g):
    """Every pair i < j whose closed bounding boxes meet, by comparing all pairs (missing/empty: none)."""
    import shapely

    b = shapely.bounds(np.asarray(g, dtype=object))
    ok = np.isfinite(b).all(axis=1)
    i, j = np.triu_indices(len(b), 1)
    meet = ok[i] & ok[j] & (b[i, 0] <= b[j, 2]) & (b[j, 0] <= b[i, 2]) & (b[i, 1] <= b[j, 3]) & (b[j, 1] <= b[i, 3])
    return i[meet].astype(np.int64) * len(b) + j[meet]


def test_box_pairs_equal_all_pairs_and_strtree(monkeypatch):
    # Reference: the plain definition (every pair compared, closed boxes) and shapely.STRtree(g).query(g).
    # Synthetic boxes on an integer grid (so many boxes touch exactly at an edge or a corner), flat and
    # zero-size boxes, points and lines, one box over everything, a long thin one, None and empties.
    import shapely

    import geo.units.neighbours.contiguity as gi

    rng = np.random.default_rng(11)
    x, y = rng.integers(0, 60, (2, 700)).astype(float)
    w, h = rng.integers(0, 6, (2, 700)).astype(float)  # 0: a flat or zero-size box
    geoms = list(shapely.box(x, y, x + w, y + h))
    geoms += [shapely.box(-5, -5, 70, 70), shapely.box(0, 30, 65, 30.5), shapely.Point(10, 10),
              shapely.LineString([(0, 0), (60, 60)]), None, shapely.Polygon(), shapely.box(3, 3, 3, 3)]
    g = np.array(rng.permutation(np.array(geoms, dtype=object)), dtype=object)
    ref = np.sort(_brute_box_pairs(g))
    got = gi._box_pairs(g)
    assert np.array_equal(got, ref)
    assert np.array_equal(gi._tree_pairs(g), ref)
    assert np.array_equal(gi._box_pairs(g[:1]), np.zeros(0, np.int64))
    # the sweep, not the tree, answered above; an infinite coordinate and crowded strips go to the tree
    calls = []
    monkeypatch.setattr(gi, "_tree_pairs", lambda g: calls.append(len(g)) or np.sort(_brute_box_pairs(g)))
    assert np.array_equal(gi._box_pairs(g), ref) and calls == []
    inf = np.append(g, shapely.box(0, 0, np.inf, 1))
    assert np.array_equal(gi._box_pairs(inf), np.sort(_brute_box_pairs(inf))) and calls == [len(inf)]
    tall = shapely.box(np.arange(3000.0), 0, np.arange(3000.0) + 0.5, 1e6)  # mean height 1e6: one strip
    flat = shapely.box(0, np.arange(3000.0) * 10, 5000, np.arange(3000.0) * 10 + 1)  # all overlap in x
    crowd = np.concatenate([tall, flat])
    got = gi._box_pairs(crowd)
    assert calls[-1] == len(crowd) and np.array_equal(got, np.sort(_brute_box_pairs(crowd)))


def test_vertex_runs_group_exactly_equal_points(monkeypatch):
    # Reference: plain Python grouping of (x, y) tuples (so -0.0 == 0.0 and a NaN row equals nothing).
    # Synthetic coordinates with many repeats, -0.0 against 0.0 and NaN rows; also with the hash forced to
    # collide everywhere, and with one collision planted in the high bits only (the exact re-sort path).
    import geo.units.neighbours.contiguity as gi

    rng = np.random.default_rng(5)
    xy = rng.integers(0, 40, (3000, 2)).astype(float)
    xy[:50, 0] = -0.0
    xy[50:100, 0] = 0.0
    xy[100:110, 1] = np.nan

    def check():
        order, run = gi._vertex_runs(xy)
        assert np.array_equal(np.sort(order), np.arange(len(xy))) and (np.diff(run) >= 0).all()
        runs = np.split(order, np.flatnonzero(np.diff(run)) + 1)
        for r in runs:  # one point per run (a NaN row alone), rows increasing within a run
            assert (len(r) == 1 or (xy[r] == xy[r[0]]).all()) and (np.diff(r) > 0).all()
        nan = np.isnan(xy).any(axis=1)
        assert len(runs) == len({(a, b) for a, b in xy[~nan]}) + nan.sum()  # equal points share a run

    check()
    monkeypatch.setattr(gi, "_HASH_X", np.uint64(0))
    monkeypatch.setattr(gi, "_HASH_Y", np.uint64(0))
    check()
    monkeypatch.setattr(gi, "_HASH_X", np.uint64(1 << 40))  # only bits >= 40 of x survive: many collisions
    monkeypatch.setattr(gi, "_HASH_Y", np.uint64(0))
    check()


def test_contiguity_vertex_method_on_diagonals_and_point_touches():
    # Synthetic planted truth, checked against the predicate twin too: two triangles facing each other across a 45-degree line (boxes overlap, no shared vertex) a
    # hair apart (disjoint), and the same pair touching along the diagonal without a shared vertex (rook:
    # a stretch), a point touch of a vertex on the middle of a diagonal edge, a square with a hole holding
    # an island that touches the hole's rim at one point, and a multipolygon whose far part overlaps a box.
    import shapely

    gap = 1e-9
    geoms = [
        shapely.Polygon([(0, 0), (100, 0), (0, 100)]),                              # 0
        shapely.Polygon([(100 + gap, 0 + gap), (100 + gap, 100 + gap), (0 + gap, 100 + gap)]),  # 1 near-miss of 0
        shapely.Polygon([(200, 0), (300, 0), (200, 100)]),                          # 2
        shapely.Polygon([(275, 25), (275, 125), (175, 125)]),                       # 3 along 2's diagonal, no vertex
        shapely.Polygon([(400, 0), (500, 0), (400, 100)]),                          # 4
        shapely.Polygon([(450, 50), (520, 80), (480, 120)]),                        # 5 vertex on 4's diagonal
        shapely.Polygon(shapely.box(600, 0, 700, 100).exterior.coords,
                        [shapely.box(620, 20, 680, 80).exterior.coords]),           # 6 donut
        shapely.Polygon([(650, 20), (660, 40), (640, 40)]),                         # 7 island, apex on the rim
        shapely.MultiPolygon([shapely.box(800, 0, 850, 50), shapely.box(900, 0, 950, 50)]),  # 8
        shapely.box(940, 40, 990, 90),                                              # 9 overlaps 8's far part
    ]
    g = np.array(geoms, dtype=object)
    queen = {(2, 3), (4, 5), (6, 7), (8, 9)}
    rook = {(2, 3), (8, 9)}
    _check_planted(g, queen, rook)
