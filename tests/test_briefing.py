"""Rank labels on the A4 briefing map: no two overlap and each stays tied to its spot.

Input is PLANTED: a square town 9 km across holding a cluster of five adjacent 150 m squares
(a 2x2 block plus one, ranks interleaved with the rest), a row of three adjacent squares and
four isolated squares at least 2 km from any other. At the page's scale (about 1.3 mm per
150 m square) their rank circles, drawn on the squares' centres, would overlap.

References: matplotlib's own rendered extents of what is on the page (``Text.get_window_extent``
and the label circle's ``get_window_extent`` with the figure's Agg renderer, after a full
draw), not the placement arithmetic; the planted squares' centres (exact coordinates); the
leader lines' data coordinates (tolerance 0.01 m, i.e. the same numbers).
"""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely

from geo import BNG

X0, Y0 = 560_000.0, 214_000.0  # south-west corner of the planted town (BNG)
SIDE = 150.0
TOL_M = 0.01  # leader ends vs spot / label centres, metres


def _spots(cells, town="Planted"):
    """cells: list of (rank, column, row) on the 150 m grid from (X0, Y0)."""
    r, ix, iy = (np.array(v) for v in zip(*cells))
    x, y = X0 + ix * SIDE, Y0 + iy * SIDE
    n = len(r)
    return gpd.GeoDataFrame({"spot_id": [f"S{k}" for k in r], "town": town, "rank": r,
                             "location": [f"On or near Street {k}" for k in r], "harm": 1000.0 / r,
                             "count": 10, "share_harm": 1.0 / n, "trend": "flat", "status": "new",
                             "target_minutes": 15},
                            geometry=shapely.box(x, y, x + SIDE, y + SIDE), crs=BNG)


# cluster of five (2x2 block + one to the east), a row of three, four isolated squares
CLUSTER = [(1, 20, 20), (3, 21, 20), (4, 20, 21), (7, 21, 21), (9, 22, 20)]
ROW = [(2, 30, 33), (6, 31, 33), (8, 32, 33)]
ISOLATED = [(5, 4, 6), (10, 54, 4), (11, 6, 52), (12, 56, 56)]
TOWN = shapely.box(X0, Y0, X0 + 9_000, Y0 + 9_000)


def _page(spots):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from maps.briefing import A4, town_page

    fig = plt.figure(figsize=A4)
    town_page(fig, "Planted", TOWN, spots, None, period="2025-01-01 to 2025-12-31", marking="OFFICIAL")
    fig.canvas.draw()
    return fig


def _labels(fig):
    """Rank labels as drawn: every text on the map axes that is a number in a circle (old or new code)."""
    ax = fig.axes[0]  # the map (added first; the table axes comes second)
    r = fig.canvas.get_renderer()
    out = []
    for t in ax.texts:
        if t.get_text().isdigit() and t.get_bbox_patch() is not None:
            out.append((t, t.get_window_extent(r), t.get_bbox_patch().get_window_extent(r)))
    return ax, r, out


def _overlap(a, b):
    return min(a.x1, b.x1) - max(a.x0, b.x0) > 0 and min(a.y1, b.y1) - max(a.y0, b.y0) > 0


@pytest.fixture(scope="module")
def drawn():
    import matplotlib.pyplot as plt

    spots = _spots(CLUSTER + ROW + ISOLATED)
    fig = _page(spots)
    yield spots, fig
    plt.close(fig)


def test_planted_labels_would_overlap_on_their_spots(drawn):
    """The reference situation: a circle is wider than the 150 m between adjacent squares' centres."""
    _, fig = drawn
    ax, _, labs = _labels(fig)
    (px0, _), (px1, _) = ax.transData.transform([(0, 0), (SIDE, 0)])
    smallest = min(c.width for _, _, c in labs)
    assert smallest > abs(px1 - px0) * 1.5, "the planted page would not show the defect"


def test_rank_labels_do_not_overlap(drawn):
    spots, fig = drawn
    ax, _, labs = _labels(fig)
    assert sorted(int(t.get_text()) for t, _, _ in labs) == list(range(1, len(spots) + 1))  # each rank once
    axbox = ax.get_window_extent()
    bad = []
    for i in range(len(labs)):
        ti, te_i, ci = labs[i]
        assert ci.x0 <= te_i.x0 and te_i.x1 <= ci.x1 and ci.y0 <= te_i.y0 and te_i.y1 <= ci.y1  # text inside circle
        assert axbox.x0 <= ci.x0 and ci.x1 <= axbox.x1 and axbox.y0 <= ci.y0 and ci.y1 <= axbox.y1  # inside the map
        for j in range(i + 1, len(labs)):
            tj, te_j, cj = labs[j]
            if _overlap(ci, cj) or _overlap(te_i, te_j):
                bad.append((ti.get_text(), tj.get_text()))
    assert bad == [], f"overlapping rank labels: {bad}"


def test_displaced_labels_have_leaders_to_their_spot(drawn):
    spots, fig = drawn
    ax, r, labs = _labels(fig)
    centre = {int(k): (p.x, p.y) for k, p in zip(spots["rank"], spots.geometry.centroid)}
    leaders = {ln.get_gid(): ln for ln in ax.lines if (ln.get_gid() or "").startswith("hs-leader-")}
    moved = 0
    for t, _, circ in labs:
        k = int(t.get_text())
        (lx, ly), (sx, sy) = t.get_position(), centre[k]
        ln = leaders.get(f"hs-leader-{k}")
        if np.hypot(lx - sx, ly - sy) <= TOL_M:
            assert ln is None  # a label on its spot needs no leader
            continue
        moved += 1
        assert ln is not None, f"rank {k} is off its spot with no leader line"
        xs, ys = ln.get_data()
        assert np.hypot(xs[0] - sx, ys[0] - sy) <= TOL_M  # starts at the spot's centre
        assert np.hypot(xs[-1] - lx, ys[-1] - ly) <= TOL_M  # ends at the label
        assert ln.get_zorder() < t.get_zorder()  # under the label circle
        # tied: the label is within 4 circle diameters of its spot on the page
        (p0x, p0y), (p1x, p1y) = ax.transData.transform([(sx, sy), (lx, ly)])
        assert np.hypot(p1x - p0x, p1y - p0y) <= 4 * circ.width
        # the spot's own square stays visible: the moved circle does not cover its centre
        assert not (circ.x0 < p0x < circ.x1 and circ.y0 < p0y < circ.y1)
    assert moved >= 4  # at least 4 of the cluster of five must move
    assert set(leaders) == {f"hs-leader-{int(t.get_text())}" for t, _, _ in labs
                            if np.hypot(*np.subtract(t.get_position(), centre[int(t.get_text())])) > TOL_M}


def test_isolated_and_rank_one_labels_stay_on_their_spot(drawn):
    spots, fig = drawn
    _, _, labs = _labels(fig)
    centre = {int(k): (p.x, p.y) for k, p in zip(spots["rank"], spots.geometry.centroid)}
    pos = {int(t.get_text()): t.get_position() for t, _, _ in labs}
    for k in [1] + [r for r, _, _ in ISOLATED]:
        assert np.hypot(pos[k][0] - centre[k][0], pos[k][1] - centre[k][1]) <= 1e-6, k


def test_dense_random_clusters_never_overlap():
    """30 spots in 6 tight random clusters (seeded): every label drawn, once, none overlapping."""
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(7)
    cells, seen = [], set()
    for cx, cy in rng.integers(6, 40, size=(6, 2)):
        while sum(1 for c in seen if abs(c[0] - cx) <= 3 and abs(c[1] - cy) <= 3) < 5:
            c = (int(cx + rng.integers(-2, 3)), int(cy + rng.integers(-2, 3)))
            if c not in seen:
                seen.add(c)
                cells.append(c)
    cells = cells[:30]
    spots = _spots([(k + 1, *c) for k, c in enumerate(rng.permutation(np.array(cells)))])
    fig = _page(spots)
    try:
        _, _, labs = _labels(fig)
        assert sorted(int(t.get_text()) for t, _, _ in labs) == list(range(1, len(spots) + 1))
        bad = [(a[0].get_text(), b[0].get_text()) for i, a in enumerate(labs) for b in labs[i + 1:]
               if _overlap(a[2], b[2])]
        assert bad == []
    finally:
        plt.close(fig)


def test_place_labels_is_deterministic_and_keeps_inside_bounds():
    from maps.briefing import place_labels

    xy = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [95.0, 0.0]])
    wh = np.full((4, 2), 10.0)
    pos, moved = place_labels(xy, wh, (-100, -100, 100, 100), gap=1.0)
    again, _ = place_labels(xy, wh, (-100, -100, 100, 100), gap=1.0)
    np.testing.assert_array_equal(pos, again)
    assert moved.tolist() == [False, True, True, False]
    assert (np.abs(pos - 0) <= 100 - 5).all()  # every box inside the bounds
    d = np.abs(pos[:, None, :] - pos[None, :, :])
    clash = (d < 11.0).all(axis=2) & ~np.eye(4, dtype=bool)  # boxes 10 wide, gap 1
    assert not clash.any()
