"""Printable A4 briefing pages, one per town, drawn with matplotlib.

Each page: the protective marking (top and bottom), a title with the town and period, a map
of the town (outline, harm per 150 m cell as a light background when given, the harm spots as
their squares with rank labels, a scale bar and north arrow), the ranked table of harm spots
(rank, location, harm, incidents, share of the town's harm, trend, status) and the patrol
windows (visits per day x minutes, peak days and hours, from the Grip plan), then the
parameters and automatic choices in small print.

Rank labels (:func:`rank_labels`, :func:`place_labels`): on a town map several km wide a
150 m square is 1-3 mm, smaller than its rank circle, so labels of adjacent spots would
overlap. Each circle's size is measured with the figure's renderer and the labels are placed
greedily in rank order: rank 1 (and any label with room) sits on its spot; a label that would
overlap one already placed moves to the nearest free compass position around its spot (8
directions, rings of one label size), inside the map and clear of the scale bar and north
arrow, and a thin leader line with a dot joins it to its spot's centre. No two labels
overlap; the placement is deterministic.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from geo import BNG

A4 = (8.27, 11.69)  # inches, portrait


def _short(s, n):
    s = "" if s is None or (isinstance(s, float) and np.isnan(s)) else str(s)
    return s if len(s) <= n else s[: n - 1] + "\u2026"


def _num(v, fmt="{:,.0f}"):
    try:
        return "" if v is None or pd.isna(v) else fmt.format(v)
    except (TypeError, ValueError):
        return str(v)


def _scale_bar(ax, x0, x1, y0, y1):
    span = x1 - x0
    nice = [100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000, 20000, 50000]
    L = max([v for v in nice if v <= span / 4] or [nice[0]])
    bx, by = x0 + span * 0.04, y0 + (y1 - y0) * 0.04
    ax.plot([bx, bx + L], [by, by], color="black", lw=3, solid_capstyle="butt", zorder=10)
    ax.text(bx + L / 2, by + (y1 - y0) * 0.012, f"{L / 1000:g} km" if L >= 1000 else f"{L} m", ha="center",
            va="bottom", fontsize=7, zorder=10)
    nx, ny = x1 - span * 0.05, y1 - (y1 - y0) * 0.10
    ax.annotate("N", xy=(nx, ny + (y1 - y0) * 0.06), xytext=(nx, ny), ha="center", fontsize=9, fontweight="bold",
                arrowprops=dict(arrowstyle="-|>", color="black", lw=1.2), zorder=10)


#: Space kept between two rank-label circles on the page (points).
LABEL_GAP_PT = 2.0
#: Rings of candidate positions tried around a spot whose label cannot sit on it.
LABEL_RINGS = 12
_DIRS = np.array([(0, 1), (1, 0), (0, -1), (-1, 0), (1, 1), (1, -1), (-1, -1), (-1, 1)], dtype=float)  # N E S W NE..
_UNIT_DIRS = _DIRS / np.hypot(_DIRS[:, 0], _DIRS[:, 1])[:, None]


def _overlaps(c, half, centres, halves, gap):
    """(m, k) bool: box ``c[i]`` +- ``half`` overlaps box ``centres[j]`` +- ``halves[j]`` (``gap`` kept between)."""
    if not len(centres):
        return np.zeros((len(c), 0), bool)
    d = np.abs(c[:, None, :] - centres[None, :, :])
    return ((d < half + halves[None, :, :] + gap).all(axis=2))


def place_labels(xy, wh, bounds, *, gap: float = 0.0, obstacles=(), rings: int = LABEL_RINGS):
    """Centres for label boxes of size ``wh`` tied to points ``xy`` so that no two boxes overlap.

    Greedy and deterministic, in the given order (the caller passes rank order: rank 1 is
    placed first and always sits on its point). A label sits on its point unless its box would
    overlap a label already placed. Then the candidates are the 8 compass positions (N, E, S,
    W and the diagonals) on rings 1, 2, ... ``rings`` box sizes out from the point, nearest
    first, ties broken towards the side facing away from the neighbouring points, then in the
    order N, E, S, W, NE, SE, SW, NW. A candidate must lie inside ``bounds`` (x0, y0, x1, y1)
    and overlap no placed label and no ``obstacles`` box (x0, y0, x1, y1); on a first pass it
    must also leave every other point's own (central) label box free, so a moved label never
    takes the place of a label not yet placed or hides another spot. If nothing fits, the
    label stays on its point (``moved`` False).

    Parameters
    ----------
    xy : (n, 2) array
        The points (data units).
    wh : (n, 2) array
        Label box widths and heights (data units).
    gap : float
        Clear space kept between boxes (data units).

    Returns
    -------
    pos : (n, 2) array of label centres, and moved : (n,) bool (True = needs a leader line).
    """
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    half = np.asarray(wh, dtype=float).reshape(-1, 2) / 2
    n = len(xy)
    bx0, by0, bx1, by1 = bounds
    obs = np.asarray(obstacles, dtype=float).reshape(-1, 4)
    o_c, o_h = (obs[:, :2] + obs[:, 2:]) / 2, np.abs(obs[:, 2:] - obs[:, :2]) / 2
    pos = xy.copy()
    moved = np.zeros(n, dtype=bool)
    done = np.zeros(n, dtype=bool)
    ks = np.arange(1, rings + 1, dtype=float)
    for i in range(n):
        h = half[i]
        if not _overlaps(xy[i:i + 1], h, pos[done], half[done], gap).any():
            done[i] = True
            continue
        step = 2 * h + gap
        off = (ks[:, None, None] * _DIRS[None, :, :] * step).reshape(-1, 2)  # ring-major, 8 per ring
        cand = xy[i] + off
        dist = np.round(np.hypot(off[:, 0], off[:, 1]) / step.max(), 6)
        near = np.hypot(*(xy - xy[i]).T) < 4 * step.max()
        near[i] = False
        away = (xy[i] - xy[near]).sum(axis=0) if near.any() else np.zeros(2)
        facing = -np.round(np.tile(_UNIT_DIRS @ away, rings) / (np.hypot(*away) or 1.0), 6)
        order = np.lexsort((np.tile(np.arange(8), rings), facing, dist))
        cand = cand[order]
        ok = ((cand - h >= (bx0, by0)) & (cand + h <= (bx1, by1))).all(axis=1)
        ok &= ~_overlaps(cand, h, pos[done], half[done], gap).any(axis=1)
        ok &= ~_overlaps(cand, h, o_c, o_h, gap).any(axis=1)
        others = np.arange(n) != i
        free = ok & ~_overlaps(cand, h, xy[others], half[others], gap).any(axis=1)
        pick = np.flatnonzero(free if free.any() else ok)
        if len(pick):
            pos[i] = cand[pick[0]]
            moved[i] = True
        done[i] = True
    return pos, moved


def rank_labels(fig, ax, spots, bounds):
    """Draw the spots' rank labels on the page map ``ax`` so that no two overlap.

    Each label is a bold number in a circle. Its size on the page comes from the figure's
    renderer (the circle's window extent) and is turned into metres with the axes transform;
    :func:`place_labels` then places the labels in rank order inside ``bounds`` (less a small
    margin), clear of the scale bar, north arrow and note already on ``ax``. A label moved off
    its spot gets a thin leader line from the spot's centre (a dot) to the label. Returns the
    Text artists in rank order (gid ``hs-rank-<rank>``; leader lines ``hs-leader-<rank>``).
    """
    furniture = list(ax.texts) + list(ax.lines)
    ax.apply_aspect()  # the transform the page will be drawn with
    renderer = fig.canvas.get_renderer() if hasattr(fig.canvas, "get_renderer") else fig._get_renderer()
    sp = spots.iloc[np.argsort(spots["rank"].to_numpy(), kind="stable")]
    cen = sp.geometry.representative_point()
    xy = np.column_stack([cen.x.to_numpy(), cen.y.to_numpy()])
    (px0, py0), (px1, py1) = ax.transData.transform([(0.0, 0.0), (1.0, 1.0)])
    sx, sy = abs(px1 - px0), abs(py1 - py0)  # pixels per metre
    inv = ax.transData.inverted()
    texts, wh = [], []
    for r, (x, y) in zip(sp["rank"], xy):
        t = ax.text(x, y, str(int(r)), ha="center", va="center", fontsize=7, fontweight="bold", color="#67000d",
                    zorder=12, gid=f"hs-rank-{int(r)}",
                    bbox=dict(boxstyle="circle,pad=0.18", facecolor="white", edgecolor="#a50f15", lw=0.8))
        t.update_bbox_position_size(renderer)
        e = t.get_bbox_patch().get_window_extent(renderer)
        texts.append(t)
        wh.append((e.width / sx, e.height / sy))
    gap = LABEL_GAP_PT * fig.dpi / 72 / sx
    obstacles = []
    for a in furniture:
        e = a.get_window_extent(renderer)
        if e.width > 0 or e.height > 0:
            (ox0, oy0), (ox1, oy1) = inv.transform([(e.x0, e.y0), (e.x1, e.y1)])
            obstacles.append((ox0, oy0, ox1, oy1))
    x0, y0, x1, y1 = bounds
    pos, moved = place_labels(xy, wh, (x0 + gap, y0 + gap, x1 - gap, y1 - gap), gap=gap, obstacles=obstacles)
    for t, r, (x, y), p, m in zip(texts, sp["rank"], xy, pos, moved):
        if m:
            t.set_position((p[0], p[1]))
            ax.plot([x, p[0]], [y, p[1]], color="#67000d", lw=0.6, zorder=11, marker="o", markevery=[0], ms=2.0,
                    solid_capstyle="round", gid=f"hs-leader-{int(r)}")
    return texts


def town_page(fig, town_name: str, town_geom, spots, plan, *, cells=None, period: str | None = None,
              marking: str | None = None, title: str = "Harm spots briefing", footer: list[str] | None = None,
              page: tuple[int, int] | None = None, max_rows: int = 20):
    """Draw one A4 page for ``town_name`` on ``fig`` (see the module docstring)."""
    import geopandas as gpd
    from matplotlib.patches import Rectangle

    if marking:
        fig.text(0.5, 0.985, marking, ha="center", va="top", fontsize=11, fontweight="bold", color="white",
                 bbox=dict(facecolor="#b00020", edgecolor="none", pad=3))
        fig.text(0.5, 0.012, marking, ha="center", va="bottom", fontsize=11, fontweight="bold", color="white",
                 bbox=dict(facecolor="#b00020", edgecolor="none", pad=3))
    fig.text(0.06, 0.955, f"{title}: {town_name}", fontsize=15, fontweight="bold", va="top")
    sub = f"Period: {period}" if period else ""
    sub += f"    {len(spots)} harm spot(s)" if len(spots) else "    no harm spots selected in this town"
    fig.text(0.06, 0.93, sub, fontsize=9.5, va="top")

    ax = fig.add_axes([0.06, 0.50, 0.88, 0.41])
    tg = gpd.GeoSeries([town_geom], crs=BNG)
    x0, y0, x1, y1 = tg.total_bounds
    pad = max(x1 - x0, y1 - y0) * 0.06 + 100
    if len(spots):  # zoom to the spots (patrol scale), at least 2.5 km across
        x0, y0, x1, y1 = spots.to_crs(BNG).total_bounds
        pad = max(300.0, 0.15 * max(x1 - x0, y1 - y0), (2500.0 - max(x1 - x0, y1 - y0)) / 2)
    x0, y0, x1, y1 = x0 - pad, y0 - pad, x1 + pad, y1 + pad
    # keep the axes' aspect: widen the box to the axes' 0.88*8.27 : 0.41*11.69 ratio
    want = (0.88 * A4[0]) / (0.41 * A4[1])
    w, h = x1 - x0, y1 - y0
    if w / h < want:
        d = (h * want - w) / 2
        x0, x1 = x0 - d, x1 + d
    else:
        d = (w / want - h) / 2
        y0, y1 = y0 - d, y1 + d
    if cells is not None and len(cells):
        c = cells.to_crs(BNG)
        c = c[c.intersects(town_geom.buffer(pad))]
        vc = "harm" if "harm" in c.columns else ("count" if "count" in c.columns else None)
        if vc is not None and len(c):
            c = c[c[vc] > 0]
            if len(c):
                c.plot(ax=ax, column=vc, cmap="Greys", alpha=0.45, linewidth=0, scheme=None,
                       vmin=0, vmax=float(np.quantile(c[vc], 0.98)) or 1.0)
    tg.boundary.plot(ax=ax, color="#333333", linewidth=1.2, linestyle="--")
    if len(spots):
        sp = spots.to_crs(BNG)
        sp.plot(ax=ax, color="#de2d26", edgecolor="#67000d", linewidth=0.8, alpha=0.85)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_color("#999999")
    _scale_bar(ax, x0, x1, y0, y1)
    ax.text(0.005, 0.005, "British National Grid (EPSG:27700); grey = harm per 150 m cell",
            transform=ax.transAxes, fontsize=6, color="#555555", va="bottom")
    ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, fill=False, edgecolor="#999999", lw=0.5))
    if len(spots):  # after the furniture: the labels keep clear of the scale bar, north arrow and note
        rank_labels(fig, ax, sp, (x0, y0, x1, y1))

    # ranked table + patrol windows
    tab = fig.add_axes([0.06, 0.13, 0.88, 0.34])
    tab.axis("off")
    if len(spots):
        sp = spots.sort_values("rank")
        pl = plan.set_index("spot_id") if plan is not None and len(plan) and "spot_id" in plan.columns else None
        rows = []
        for _, r in sp.head(max_rows).iterrows():
            p = pl.loc[r["spot_id"]] if pl is not None and r["spot_id"] in pl.index else None
            if isinstance(p, pd.DataFrame):
                p = p.iloc[0]
            visits = (f"{_num(p.get('visits_per_day'))} x {_num(p.get('minutes_per_visit'))} min"
                      if p is not None else _num(r.get("target_minutes"), "{:.0f} min"))
            window = (f"{p.get('peak_days') or 'any day'} {p.get('peak_hours') or ''}".strip()
                      if p is not None else "")
            rows.append([_num(r["rank"]), _short(r.get("location", r.get("spot_id")), 30), _num(r.get("harm")),
                         _num(r.get("count")), _num(r.get("share_harm"), "{:.1%}"), _short(r.get("trend"), 9),
                         _short(r.get("status"), 9), visits, _short(window, 32)])
        cols = ["#", "Location", "Harm", "Incid.", "Share", "Trend", "Status", "Visits", "Peak window"]
        t = tab.table(cellText=rows, colLabels=cols, loc="upper center", cellLoc="left",
                      colWidths=[0.04, 0.27, 0.08, 0.06, 0.07, 0.07, 0.07, 0.10, 0.24])
        t.auto_set_font_size(False)
        t.set_fontsize(7 if len(rows) <= 14 else 6.5)
        t.scale(1, 1.25 if len(rows) <= 14 else 1.0)  # 20 rows + header must end above the small print
        for (i, j), cell in t.get_celld().items():
            cell.set_edgecolor("#bbbbbb")
            if i == 0:
                cell.set_facecolor("#eeeeee")
                cell.set_text_props(fontweight="bold")
        tab.set_title("Ranked harm spots and patrol windows (Koper: ~15 min visits, varied times)", fontsize=9,
                      loc="left")
        if len(sp) > max_rows:
            tab.text(0, -0.02, f"... and {len(sp) - max_rows} more in the exports", fontsize=7, transform=tab.transAxes)
    else:
        tab.text(0.0, 0.9, "No harm spots met the selection rules for this town in the period.", fontsize=10)
    if footer:
        txt = "\n".join(textwrap.fill(f, 150) for f in footer[:8])
        fig.text(0.06, 0.105, txt, fontsize=6, va="top", color="#333333")
    if page:
        fig.text(0.94, 0.035, f"page {page[0]} of {page[1]}", fontsize=7, ha="right")


def briefing_pdf(spots, plan, towns, out, *, name_col: str = "town", cells=None, period: str | None = None,
                 marking: str | None = "OFFICIAL-SENSITIVE", title: str = "Harm spots briefing",
                 footer: list[str] | None = None, town_col_in_spots: str = "town") -> Path:
    """Write one A4 portrait page per town to a PDF; returns its path.

    Parameters
    ----------
    spots : GeoDataFrame
        Harm spots with ``rank``, ``town`` (matching ``towns[name_col]``), ``spot_id``,
        ``location``, ``harm``, ``count``, ``share_harm``, ``trend``, ``status``.
    plan : DataFrame or None
        The Grip plan (``spot_id``, ``visits_per_day``, ``minutes_per_visit``, ``peak_days``,
        ``peak_hours``).
    towns : GeoDataFrame
        One row per town (a page each, in this order).
    cells : GeoDataFrame, optional
        Harm per cell for the page background.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    tw = towns.to_crs(BNG)
    n = len(tw)
    with PdfPages(p, metadata={"Title": f"{title} ({period or ''})", "Creator": "harmspot",
                               "Subject": marking or ""}) as pdf:
        for i, (name, geom) in enumerate(zip(tw[name_col].astype(str), tw.geometry), start=1):
            sp = spots[spots[town_col_in_spots].astype(str) == name] if len(spots) else spots
            fig = plt.figure(figsize=A4)
            try:
                town_page(fig, name, geom, sp, plan, cells=cells, period=period, marking=marking, title=title,
                          footer=footer, page=(i, n))
                pdf.savefig(fig)
            finally:
                plt.close(fig)
    return p
