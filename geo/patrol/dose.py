"""Patrol dose from officers' GPS pings: validation, visits and daily dose per spot.

The analyst question: *did each spot get its dose?* -- short visible visits of
10-20 minutes (the Koper curve; Koper 1995, *Justice Quarterly* 12(4)), about once
a day, at varying times, never more than a few days apart.

Pipeline (all vectorised: one spatial-index query per chunk of pings and
run-length grouping with numpy; no Python loop per ping):

1. :func:`validate_pings` (and :func:`read_pings` for CSV/Parquet) turns a raw
   table into a :class:`PingTable`. Nothing is lost: ``read = accepted + rejected``
   and every rejected ping is kept with its ``reason`` and ``field``:
   ``missing unit id``, ``unparsable time``, ``unparsable coordinates``,
   ``duplicate ping`` (same unit and time), ``out of order`` (earlier than a ping
   the unit sent before it in the file), ``impossible jump`` (a spike: reaching the
   ping from the unit's previous ping *and* leaving it to the next both need more
   than ``max_speed_mps``).
2. :func:`spot_hits`: which pings lie in which spot (``shapely.STRtree`` query,
   ``intersects``; a ping on a shared edge counts for both spots).
3. :func:`infer_intervals`: each unit's ping interval = the median difference
   between its consecutive accepted pings (echoed as a choice).
4. :func:`visits_from_hits`: per unit and spot, consecutive in-spot pings no more
   than ``gap_factor`` x the unit's interval apart form one visit (so a unit that
   steps out of the spot for less than that stays on the same visit). A ping stands
   for the interval that follows it, so ``start`` = first ping, ``end`` = last ping +
   one interval and 15 one-minute pings make a 15-minute visit. Dwell below
   ``min_dwell_min`` is a pass-by (kept in its own table, not a visit);
   ``on_target`` = ``on_target_min[0] <= minutes <= on_target_min[1]``.
5. :func:`daily_dose`: per spot and local day (Europe/London): minutes, visits,
   distinct units, on-target visits, pass-bys, days since the last visit, planned /
   done (given a plan: the Grip schedule, columns spot_id, date, treated).
6. :func:`compute_dose` runs it all and returns an :class:`~geo.core.result.AnalysisResult`
   with per-spot and per-unit (and per-team) summaries and the Gini coefficient of
   dose across spots.
"""
from __future__ import annotations


import numpy as np
import pandas as pd
import shapely

from geo import BNG
from geo.core.errors import EmptyInputError, HarmspotError, first_problem
from geo.core.result import AnalysisResult, Choice
from geo.patrol.pings import LOCAL_TZ, PingTable


# ----------------------------------------------------------------------------------------- spots
def spot_frame(spots, id_col: str, name: str = "spots"):
    """Spots as a BNG GeoDataFrame with ``spot_id`` (string, unique)."""
    if id_col not in spots.columns:
        raise HarmspotError(f"{name}: no id column {id_col!r}; columns are {list(spots.columns)}. Use --id-col")
    ids = spots[id_col].astype(str)
    if ids.duplicated().any():
        raise HarmspotError(f"{name}: {int(ids.duplicated().sum())} duplicate ids in {id_col!r}; "
                            f"first {ids[ids.duplicated()].iloc[0]!r}")
    g = spots.to_crs(BNG) if spots.crs is not None else spots.set_crs(BNG)
    bad = g.geometry.isna() | g.geometry.is_empty
    if bad.any():
        raise HarmspotError(f"{name}: {first_problem(bad.to_numpy())} has an empty geometry")
    return g.assign(spot_id=ids.to_numpy())[["spot_id", "geometry"]].reset_index(drop=True)


def spot_hits(x, y, spots_geom, chunk: int = 1_000_000) -> tuple[np.ndarray, np.ndarray]:
    """(ping index, spot index) pairs for pings inside spots (STRtree ``intersects``, chunked)."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    geoms = np.asarray(spots_geom)
    tree = shapely.STRtree(geoms)
    near_fn = _coverage_filter(geoms)
    pis, sis = [], []
    for a in range(0, len(x), chunk):
        xs, ys = x[a:a + chunk], y[a:a + chunk]
        near = np.flatnonzero(near_fn(xs, ys))
        if not len(near):
            continue
        pts = shapely.points(xs[near], ys[near])
        pi, si = tree.query(pts, predicate="intersects")
        pis.append(near[pi] + a)
        sis.append(si)
    if not pis:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(pis).astype(np.int64), np.concatenate(sis).astype(np.int64)


def _coverage_filter(geoms, max_cells: int = 4_000_000):
    """A cheap exact pre-filter: a boolean lattice of cells touched by any spot's bounding box.

    Pings in untouched cells cannot be in a spot, so no shapely point is built for
    them. The cell is the smallest spot bounding-box side (at least 10 m); with too
    many cells it falls back to the spots' overall bounding box.
    """
    b = shapely.bounds(geoms)
    xmin, ymin = b[:, 0].min(), b[:, 1].min()
    xmax, ymax = b[:, 2].max(), b[:, 3].max()

    def bbox(xs, ys):
        return (xs >= xmin) & (xs <= xmax) & (ys >= ymin) & (ys <= ymax)

    side = max(float(np.min(np.minimum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]))), 10.0)
    nx = int((xmax - xmin) // side) + 1
    ny = int((ymax - ymin) // side) + 1
    if nx * ny > max_cells:
        return bbox
    cov = np.zeros((ny, nx), bool)
    i0 = ((b[:, 0] - xmin) // side).astype(np.int64)
    i1 = ((b[:, 2] - xmin) // side).astype(np.int64)
    j0 = ((b[:, 1] - ymin) // side).astype(np.int64)
    j1 = ((b[:, 3] - ymin) // side).astype(np.int64)
    for a0, a1, c0, c1 in zip(i0, i1, j0, j1):  # one step per spot, not per ping
        cov[c0:c1 + 1, a0:a1 + 1] = True

    def near(xs, ys):
        ok = bbox(xs, ys)
        ix = np.clip(((xs - xmin) // side).astype(np.int64), 0, nx - 1)
        iy = np.clip(((ys - ymin) // side).astype(np.int64), 0, ny - 1)
        return ok & cov[iy, ix]

    return near


# ----------------------------------------------------------------------------------------- intervals
def diff_histogram(unit: np.ndarray, t_ns: np.ndarray) -> pd.DataFrame:
    """Counts of (unit, difference between consecutive pings in ns); input sorted by unit, time."""
    if len(t_ns) < 2:
        return pd.DataFrame({"unit_id": pd.Series([], dtype=str), "diff": pd.Series([], dtype=np.int64),
                             "n": pd.Series([], dtype=np.int64)})
    same = unit[1:] == unit[:-1]
    d = np.diff(t_ns)[same]
    u = unit[1:][same]
    h = pd.DataFrame({"unit_id": u, "diff": d}).value_counts().rename("n").reset_index()
    return h


def median_from_histogram(h: pd.DataFrame) -> pd.Series:
    """Per-unit median (as numpy's: mean of the two middle values) from a (unit_id, diff, n) histogram."""
    if h.empty:
        return pd.Series(dtype=float, name="interval_s")
    h = h.groupby(["unit_id", "diff"], as_index=False)["n"].sum().sort_values(["unit_id", "diff"])
    out = {}
    for u, g in h.groupby("unit_id", sort=True):  # one iteration per unit, not per ping
        d = g["diff"].to_numpy(np.int64)
        c = np.cumsum(g["n"].to_numpy(np.int64))
        tot = c[-1]
        lo = d[np.searchsorted(c, (tot - 1) // 2 + 1)]
        hi = d[np.searchsorted(c, tot // 2 + 1)]
        out[u] = (lo + hi) / 2 / 1e9
    return pd.Series(out, name="interval_s", dtype=float)


def infer_intervals(frame: pd.DataFrame) -> pd.Series:
    """Each unit's ping interval in seconds: the median gap between its consecutive pings."""
    t = frame["t"].to_numpy(dtype="datetime64[ns]").astype(np.int64) if len(frame) else np.zeros(0, np.int64)
    return median_from_histogram(diff_histogram(frame["unit_id"].to_numpy(), t))


# ----------------------------------------------------------------------------------------- visits
def visits_from_hits(hits: pd.DataFrame, intervals: pd.Series, spot_ids, *, gap_factor: float = 3.0,
                     min_dwell_min: float = 2.0, on_target_min=(10.0, 20.0),
                     default_interval_s: float = 60.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Visits and pass-bys from in-spot pings by run-length grouping.

    ``hits``: one row per (ping, spot) with ``unit_id``, ``spot`` (position in
    ``spot_ids``), ``t`` (int64 ns UTC) and optionally ``team``. Returns
    ``(visits, passbys)`` with columns spot_id, unit_id, start, end (UTC), minutes,
    pings, on_target (visits only), team (when given), sorted by spot, start, unit.
    """
    spot_ids = np.asarray(spot_ids, dtype=object)
    cols = ["spot_id", "unit_id", "start", "end", "minutes", "pings", "on_target"]
    if hits.empty:
        e = pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
        e["start"] = pd.Series(dtype="datetime64[ns, UTC]")
        e["end"] = pd.Series(dtype="datetime64[ns, UTC]")
        return e, e.drop(columns="on_target")
    u = hits["unit_id"].to_numpy().astype(str)
    s = hits["spot"].to_numpy(np.int64)
    t = hits["t"].to_numpy(np.int64)
    ucodes, uinv = np.unique(u, return_inverse=True)
    o = np.lexsort((t, s, uinv))
    uinv, s, t = uinv[o], s[o], t[o]
    iv = intervals.reindex(ucodes).fillna(default_interval_s).to_numpy(float)
    iv_ns = (iv * 1e9)[uinv]
    new = np.r_[True, (uinv[1:] != uinv[:-1]) | (s[1:] != s[:-1]) | (np.diff(t) > gap_factor * iv_ns[1:])]
    starts = np.flatnonzero(new)
    t_first = t[starts]
    t_last = np.maximum.reduceat(t, starts)
    npings = np.diff(np.r_[starts, len(t)])
    end = t_last + iv_ns[starts].astype(np.int64)
    minutes = (end - t_first) / 6e10
    v = pd.DataFrame({
        "spot_id": spot_ids[s[starts]],
        "unit_id": ucodes[uinv[starts]],
        "start": pd.to_datetime(t_first, utc=True),
        "end": pd.to_datetime(end, utc=True),
        "minutes": np.round(minutes, 6),
        "pings": npings,
    })
    if "team" in hits.columns:
        tm = hits["team"].to_numpy()[o]
        v["team"] = tm[starts]
    dwell = v["minutes"].to_numpy() >= min_dwell_min
    lo, hi = on_target_min
    visits = v[dwell].copy()
    visits.insert(6, "on_target", (visits["minutes"] >= lo) & (visits["minutes"] <= hi))
    passbys = v[~dwell].copy()
    key = ["spot_id", "start", "unit_id"]
    return (visits.sort_values(key, kind="stable").reset_index(drop=True),
            passbys.sort_values(key, kind="stable").reset_index(drop=True))


def daily_dose(visits: pd.DataFrame, passbys: pd.DataFrame, spot_ids, days, *, plan: pd.DataFrame | None = None,
               tz: str = LOCAL_TZ) -> pd.DataFrame:
    """Dose per spot per local day (every spot x every day, zeros included).

    Columns: spot_id, date, minutes, visits, units (distinct), on_target, passbys,
    days_since_last_visit (0 on a day with a visit; NaN before the first), and with a
    plan: planned (bool), done (planned and visited).
    """
    spot_ids = pd.Index(np.asarray(spot_ids, dtype=object).astype(str))
    days = pd.DatetimeIndex(pd.to_datetime(days)).normalize()
    n_s, n_d = len(spot_ids), len(days)
    out = pd.DataFrame({"spot_id": np.repeat(spot_ids.to_numpy(), n_d), "date": np.tile(days.date, n_s)})

    def code(frame):
        if frame.empty:
            return np.zeros(0, np.int64), np.zeros(0, bool)
        si = spot_ids.get_indexer(frame["spot_id"].astype(str))
        d = frame["start"].dt.tz_convert(tz).dt.tz_localize(None).dt.normalize()
        di = days.get_indexer(d)
        ok = (si >= 0) & (di >= 0)
        return si * n_d + di, ok

    size = n_s * n_d
    c, ok = code(visits)
    out["minutes"] = np.bincount(c[ok], weights=visits["minutes"].to_numpy(float)[ok], minlength=size) if len(c) else 0.0
    out["visits"] = np.bincount(c[ok], minlength=size) if len(c) else 0
    out["on_target"] = np.bincount(c[ok], weights=visits["on_target"].to_numpy(float)[ok], minlength=size).astype(
        np.int64) if len(c) else 0
    if len(c):
        uu = pd.DataFrame({"c": c[ok], "u": visits["unit_id"].to_numpy()[ok]}).drop_duplicates()
        out["units"] = np.bincount(uu["c"].to_numpy(), minlength=size)
    else:
        out["units"] = 0
    cp, okp = code(passbys)
    out["passbys"] = np.bincount(cp[okp], minlength=size) if len(cp) else 0
    # days since last visit: forward-fill the last visited day within each spot
    dayno = np.tile(np.arange(n_d), n_s)
    last = pd.Series(np.where(out["visits"].to_numpy() > 0, dayno, np.nan)).groupby(out["spot_id"].to_numpy()).ffill()
    out["days_since_last_visit"] = dayno - last.to_numpy()
    if plan is not None:
        p = _plan_frame(plan)
        key = pd.MultiIndex.from_arrays([p["spot_id"], p["date"]])
        planned = pd.Series(p["treated"].to_numpy(bool), index=key)
        planned = planned[~planned.index.duplicated()]
        k = pd.MultiIndex.from_arrays([out["spot_id"], out["date"]])
        out["planned"] = planned.reindex(k).fillna(False).to_numpy(bool)
        out["done"] = out["planned"] & (out["visits"] > 0)
    out["minutes"] = out["minutes"].round(6)
    return out


def _plan_frame(plan: pd.DataFrame) -> pd.DataFrame:
    need = {"spot_id", "date"}
    if not need <= set(plan.columns):
        raise HarmspotError(f"plan/schedule needs columns spot_id, date (and treated); got {list(plan.columns)}")
    p = plan.copy()
    p["spot_id"] = p["spot_id"].astype(str)
    d = pd.to_datetime(p["date"], errors="coerce")
    if d.isna().any():
        raise HarmspotError(f"plan/schedule: {first_problem(d.isna().to_numpy())}: 'date' is not YYYY-MM-DD")
    p["date"] = d.dt.date
    if "treated" not in p.columns:
        p["treated"] = True
    else:
        p["treated"] = p["treated"].map(lambda v: str(v).strip().lower() in ("true", "1", "yes", "y", "t"))
    return p


def gini(values) -> float:
    """Gini coefficient of non-negative values (0 = equal dose everywhere, 1 = all at one spot)."""
    x = np.sort(np.asarray(values, float))
    n = len(x)
    if n == 0 or x.sum() == 0:
        return float("nan")
    i = np.arange(1, n + 1)
    return float(2 * (i * x).sum() / (n * x.sum()) - (n + 1) / n)


def spot_summary(visits: pd.DataFrame, daily: pd.DataFrame, spot_ids, *, max_gap_days: float = 4.0) -> pd.DataFrame:
    """Per spot: totals, days visited, longest gap between visits (hours), compliance with the plan."""
    ids = pd.Index(np.asarray(spot_ids, dtype=object).astype(str), name="spot_id")
    g = daily.groupby("spot_id")
    s = pd.DataFrame({
        "minutes": g["minutes"].sum(), "visits": g["visits"].sum(), "on_target": g["on_target"].sum(),
        "passbys": g["passbys"].sum(), "days": g.size(), "days_visited": g["visits"].apply(lambda v: int((v > 0).sum())),
    }).reindex(ids)
    s["units"] = visits.groupby("spot_id")["unit_id"].nunique().reindex(ids).fillna(0).astype(int)
    # longest gap: between consecutive visits (end -> next start), and from the window edges
    if len(visits):
        v = visits.sort_values(["spot_id", "start"])
        nxt = v.groupby("spot_id")["start"].shift(-1)
        gap_h = (nxt - v["end"]).dt.total_seconds() / 3600
        s["longest_gap_hours"] = gap_h.groupby(v["spot_id"]).max().reindex(ids)
        s["median_visit_minutes"] = v.groupby("spot_id")["minutes"].median().reindex(ids)
        s["hours_of_day_visited"] = v.assign(h=v["start"].dt.tz_convert(LOCAL_TZ).dt.hour).groupby(
            "spot_id")["h"].nunique().reindex(ids).fillna(0).astype(int)
    else:
        s["longest_gap_hours"] = np.nan
        s["median_visit_minutes"] = np.nan
        s["hours_of_day_visited"] = 0
    s["share_days_visited"] = s["days_visited"] / s["days"]
    s["max_days_between_visits"] = daily.groupby("spot_id")["days_since_last_visit"].max().reindex(ids)
    s["gap_over_limit"] = (s["longest_gap_hours"] > 24 * max_gap_days).fillna(False)
    if "planned" in daily.columns:
        s["planned"] = g["planned"].sum().reindex(ids)
        s["done"] = g["done"].sum().reindex(ids)
        s["compliance"] = s["done"] / s["planned"].replace(0, np.nan)
    return s.reset_index()


def unit_summary(visits: pd.DataFrame, passbys: pd.DataFrame, intervals: pd.Series, by: str = "unit_id") -> pd.DataFrame:
    """Per unit (or per ``team``): visits, minutes, on-target visits, spots visited, pass-bys."""
    if by not in visits.columns:
        return pd.DataFrame()
    g = visits.groupby(by)
    t = pd.DataFrame({"visits": g.size(), "minutes": g["minutes"].sum(), "on_target": g["on_target"].sum(),
                      "spots": g["spot_id"].nunique()})
    t["passbys"] = passbys.groupby(by).size() if len(passbys) else 0
    t["passbys"] = t["passbys"].fillna(0).astype(int)
    if by == "unit_id":
        t = t.reindex(t.index.union(intervals.index))
        t["interval_s"] = intervals.reindex(t.index)
        t[["visits", "on_target", "spots", "passbys"]] = t[["visits", "on_target", "spots", "passbys"]].fillna(0).astype(int)
        t["minutes"] = t["minutes"].fillna(0.0)
    return t.rename_axis(by).reset_index()


def count_interactions(logs: pd.DataFrame, spots, *, x: np.ndarray, y: np.ndarray, t, kind_col: str | None = "kind",
                       tz: str = LOCAL_TZ) -> pd.DataFrame:
    """Interaction logs (business checks, stop searches...) counted per spot, ISO week and kind.

    ``x``/``y`` are BNG coordinates of the log rows and ``t`` their times (UTC).
    Returns spot_id, week (Monday's date), kind, count.
    """
    pi, si = spot_hits(x, y, spots.geometry.values)
    tt = pd.to_datetime(pd.Series(t).iloc[pi].to_numpy(), utc=True).tz_convert(tz).tz_localize(None)
    week = (tt.normalize() - pd.to_timedelta(tt.day_of_week, unit="D")).date
    kind = logs[kind_col].astype(str).to_numpy()[pi] if kind_col and kind_col in logs.columns else "all"
    d = pd.DataFrame({"spot_id": spots["spot_id"].to_numpy()[si], "week": week, "kind": kind})
    return d.value_counts().rename("count").reset_index().sort_values(["spot_id", "week", "kind"]).reset_index(drop=True)


# ----------------------------------------------------------------------------------------- top level
def hits_frame(frame: pd.DataFrame, spots_geom) -> pd.DataFrame:
    """In-spot pings (unit_id, spot, t ns[, team]) of a validated ping frame."""
    pi, si = spot_hits(frame["x"].to_numpy(float), frame["y"].to_numpy(float), spots_geom)
    t = frame["t"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
    h = pd.DataFrame({"unit_id": frame["unit_id"].to_numpy()[pi], "spot": si, "t": t[pi]})
    if "team" in frame.columns:
        h["team"] = frame["team"].to_numpy()[pi]
    return h


def compute_dose(pings: PingTable | pd.DataFrame, spots, id_col: str = "spot_id", *, gap_factor: float = 3.0,
                 min_dwell_min: float = 2.0, on_target_min=(10.0, 20.0), plan: pd.DataFrame | None = None,
                 days=None, max_gap_days: float = 4.0, tz: str = LOCAL_TZ, _hits=None,
                 _intervals=None) -> AnalysisResult:
    """Visits and daily dose per spot from validated GPS pings.

    Parameters
    ----------
    pings : PingTable (or its ``frame``: unit_id, t UTC, x, y BNG).
    spots : GeoDataFrame of spot polygons with ``id_col``.
    gap_factor : in-spot pings up to this multiple of the unit's ping interval apart
        merge into one visit (default 3).
    min_dwell_min : shorter stays are pass-bys (default 2 minutes).
    on_target_min : (low, high) minutes of an on-target visit (default 10-20, Koper).
    plan : Grip schedule (spot_id, date, treated) for plan compliance.
    days : the local days of the dose table (default: first to last ping day).
    max_gap_days : spots with a longer gap between visits are flagged (default 4).

    Returns
    -------
    AnalysisResult
        ``layer``: spots with per-spot totals (minutes, visits, on_target, passbys,
        units, days_visited, share_days_visited, longest_gap_hours,
        max_days_between_visits, gap_over_limit, hours_of_day_visited, compliance).
        ``tables``: ``visits``, ``passbys``, ``daily``, ``units``, ``teams`` (with a
        team column), ``intervals``. ``summary``: counts, gini of minutes across spots,
        on-target share, compliance, pings read/accepted/rejected.
    """
    frame = pings.frame if isinstance(pings, PingTable) else pings
    sp = spot_frame(spots, id_col)
    choices = list(pings.choices) if isinstance(pings, PingTable) else []
    if len(frame) == 0 and _hits is None:
        raise EmptyInputError("no accepted pings to compute dose from")
    intervals = _intervals if _intervals is not None else infer_intervals(frame)
    if intervals.empty:
        raise EmptyInputError("cannot infer a ping interval: every unit has a single ping")
    q = intervals.quantile([0, 0.5, 1.0])
    choices.append(Choice("ping interval", f"{q.iloc[1]:g} s (median over {len(intervals)} units; range "
                          f"{q.iloc[0]:g}-{q.iloc[2]:g} s)", "median gap between each unit's consecutive pings"))
    choices.append(Choice("visit rule", f"gaps <= {gap_factor:g} x interval merge; < {min_dwell_min:g} min = pass-by; "
                          f"on target {on_target_min[0]:g}-{on_target_min[1]:g} min",
                          "defaults (Koper curve)" if (gap_factor, min_dwell_min, tuple(on_target_min)) == (3.0, 2.0, (10.0, 20.0)) else "as given",
                          automatic=(gap_factor, min_dwell_min, tuple(on_target_min)) == (3.0, 2.0, (10.0, 20.0))))
    hits = _hits if _hits is not None else hits_frame(frame, sp.geometry.values)
    visits, passbys = visits_from_hits(hits, intervals, sp["spot_id"].to_numpy(), gap_factor=gap_factor,
                                       min_dwell_min=min_dwell_min, on_target_min=on_target_min)
    if days is None:
        if len(frame):
            tl = frame["t"].dt.tz_convert(tz)
            d0, d1 = tl.min().tz_localize(None).normalize(), tl.max().tz_localize(None).normalize()
        else:
            tl = pd.to_datetime(hits["t"], utc=True).dt.tz_convert(tz)
            d0, d1 = tl.min().tz_localize(None).normalize(), tl.max().tz_localize(None).normalize()
        days = pd.date_range(d0, d1, freq="D")
        choices.append(Choice("dose days", f"{d0.date()} to {d1.date()}", "first to last ping day (UK local)"))
    daily = daily_dose(visits, passbys, sp["spot_id"], days, plan=plan, tz=tz)
    per_spot = spot_summary(visits, daily, sp["spot_id"], max_gap_days=max_gap_days)
    layer = sp.merge(per_spot, on="spot_id", how="left")
    units_t = unit_summary(visits, passbys, intervals)
    tables = {"visits": visits, "passbys": passbys, "daily": daily, "spots": per_spot, "units": units_t,
              "intervals": intervals.rename_axis("unit_id").reset_index()}
    if "team" in visits.columns:
        tables["teams"] = unit_summary(visits, passbys, intervals, by="team")
    summary = {
        "spots": int(len(sp)), "visits": int(len(visits)), "passbys": int(len(passbys)),
        "minutes": float(visits["minutes"].sum()) if len(visits) else 0.0,
        "on_target_visits": int(visits["on_target"].sum()) if len(visits) else 0,
        "on_target_share": float(visits["on_target"].mean()) if len(visits) else float("nan"),
        "units": int(len(intervals)), "days": int(len(days)),
        "spots_never_visited": int((per_spot["visits"] == 0).sum()),
        "spots_gap_over_limit": int(per_spot["gap_over_limit"].sum()),
        "gini_minutes": gini(per_spot["minutes"].fillna(0)),
        "median_interval_s": float(q.iloc[1]),
    }
    if "planned" in daily.columns:
        pl = int(daily["planned"].sum())
        summary["planned_visits"] = pl
        summary["planned_done"] = int(daily["done"].sum())
        summary["compliance"] = summary["planned_done"] / pl if pl else float("nan")
    inputs = {}
    if isinstance(pings, PingTable):
        inputs["pings"] = pings.summary()
        summary["pings_read"], summary["pings_accepted"], summary["pings_rejected"] = (
            pings.read, pings.accepted, pings.rejected)
    params = {"gap_factor": gap_factor, "min_dwell_min": min_dwell_min, "on_target_min": list(on_target_min),
              "max_gap_days": max_gap_days, "tz": tz, "id_col": id_col, "crs": BNG}
    return AnalysisResult(kind="dose", layer=layer, params=params, choices=choices, inputs=inputs,
                          tables=tables, summary=summary)
