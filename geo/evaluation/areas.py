"""Before/after evaluation of hotspot patrols: displacement, difference-in-differences, decay.

One function per analyst question, all returning plain dicts / DataFrames, and
:func:`evaluate_areas`, which runs the whole month-level evaluation of treated
places against controls and returns a :class:`geo.core.result.AnalysisResult`.

Methods (references)
--------------------
* Percentage change, Weighted Displacement Quotient and Total Net Effect
  (Bowers & Johnson 2003, *J. Quantitative Criminology* 19(3):275-301):
  with A = treated, B = buffer, C = control and 0/1 = before/after,
  ``WDQ = (B1/C1 - B0/C0) / (A1/C1 - A0/C0)`` and
  ``TNE = (A0*C1/C0 - A1) + (B0*C1/C0 - B1)`` (positive = crimes prevented).
* Weighted Displacement Difference (Wheeler & Ratcliffe 2018, *Crime Science* 7:11),
  ``WDD = (T1 - T0) - (C1 - C0) + (D1 - D0) - (DC1 - DC0)`` with Poisson variance
  = the sum of all eight counts; the harm-weighted version (Wheeler 2020, blog
  "Amending the WDD test to incorporate harm weights", ptools ``wdd_harm``) sums
  ``w_k * WDD_k`` over crime types with variance ``sum w_k^2 Var_k``; for per-incident
  weights the variance is the sum of squared weights (the same thing, one row at a time).
* Difference-in-differences Poisson / negative-binomial regression with place and
  period fixed effects (statsmodels GLM): ``log E[y_it] = a_i + g_t + b * treated_i*after_t``;
  rate ratio ``exp(b)`` with a place-clustered interval. Harm is fitted by
  quasi-Poisson (pseudo-likelihood, valid for non-negative non-integer outcomes).
* Spatial Point Pattern Test (Andresen 2009; the ``sppt`` R package): the test
  period's points are sub-sampled (85 %, without replacement, 200 times), each
  unit's percentage gets a 95 % non-parametric interval, and a unit is *similar*
  when the base period's percentage falls inside it. S = share of similar units;
  robust S uses only units with incidents in either period.
* Minimum detectable effect of the WDD design at 80 % power (Poisson variance).
* Crossover place-day designs: Poisson GLM of daily counts on spot, week and
  day-of-week effects, the treated-day indicator and lagged treated days (carry-over).
* Residual deterrence (Koper 1995; Sherman 1990): incident rate by hours since the
  last visit ended, against the spot's pre-period baseline, and a profile-likelihood
  estimate of how long the effect lasts.
"""
from __future__ import annotations


import numpy as np
import pandas as pd

from geo.core.errors import EmptyInputError, HarmspotError, MonthOnlyDataError
from geo.evaluation.stats import mde_wdd, pct_change, tne, wdd, wdd_weighted, wdq
from geo.evaluation.regression import crossover_place_day, did_regression
from geo.evaluation.pointpattern import sppt
from geo.evaluation.deterrence import residual_deterrence


__all__ = ["evaluate_areas", "match_controls"]


# ----------------------------------------------------------------------------------- areas and matching
def _union(g):
    import shapely

    return shapely.union_all(np.asarray(g.geometry.values)) if len(g) else shapely.Polygon()


def _inside(geom, x, y):
    import shapely

    if geom.is_empty:
        return np.zeros(len(x), bool)
    shapely.prepare(geom)
    return shapely.contains_xy(geom, x, y)


def match_controls(incidents, treated, *, buffer_m: float = 100.0, weights=None, area=None, towns=None,
                   town_col: str = "name", cell: float = 150.0, exclude=None) -> tuple[object, pd.DataFrame, list]:
    """Match each treated spot to a control square with similar pre-period counts and harm.

    Candidates are BNG squares of ``cell`` metres covering ``area`` (else the
    incidents' extent) that hold at least one pre-period incident, lie more than
    ``2 * buffer_m`` from any treated spot (so neither the control nor its own buffer
    ring touches the treated spots' buffer) and outside ``exclude``. With ``towns``
    a control must lie in the treated spot's town (by centroid). Matching is greedy
    without replacement, busiest treated spot first, on the Euclidean distance of
    standardised ``log1p(count)`` and ``log1p(harm)``.

    Returns ``(controls GeoDataFrame [spot_id, matched_to, count_before, harm_before,
    distance, geometry], matching table, choices)``.
    """
    import geopandas as gpd
    import shapely

    from geo.core.harm import WeightTable
    from geo.core.result import Choice
    from geo.units.lattice import SquareGrid

    wt = weights or WeightTable.builtin()
    df = incidents.frame
    if len(df) == 0:
        raise EmptyInputError("automatic controls: no incidents in the before period to match on")
    grid = SquareGrid(cell)
    ix = np.floor(df["x"].to_numpy(float) / cell).astype(np.int64)
    iy = np.floor(df["y"].to_numpy(float) / cell).astype(np.int64)
    w = wt.weights_for(df)
    c = pd.DataFrame({"ix": ix, "iy": iy, "w": w}).groupby(["ix", "iy"]).agg(count=("w", "size"), harm=("w", "sum"))
    c = c.reset_index()
    boxes = shapely.box(c["ix"] * cell, c["iy"] * cell, (c["ix"] + 1) * cell, (c["iy"] + 1) * cell)
    cand = gpd.GeoDataFrame({"spot_id": grid.ids(c["ix"], c["iy"]), "count_before": c["count"],
                             "harm_before": c["harm"]}, geometry=boxes, crs=treated.crs)
    zone = _union(treated).buffer(2 * buffer_m)
    keep = ~shapely.intersects(zone, cand.geometry.values)
    if exclude is not None and len(exclude):
        keep &= ~shapely.intersects(_union(exclude), cand.geometry.values)
    if area is not None:
        ag = area.union_all() if hasattr(area, "union_all") else area
        keep &= shapely.within(cand.geometry.centroid.values, ag)
    cand = cand[keep].reset_index(drop=True)
    # treated spots' own pre-period counts
    tp = treated.copy()
    tpos = _assign(tp, df)
    ok = tpos >= 0
    tp["count_before"] = np.bincount(tpos[ok], minlength=len(tp))
    tp["harm_before"] = np.bincount(tpos[ok], weights=w[ok], minlength=len(tp))
    town_t = town_c = None
    if towns is not None:
        tg = towns.to_crs(treated.crs)
        town_t = _town_of(tg, tp.geometry.centroid.values, town_col)
        town_c = _town_of(tg, cand.geometry.centroid.values, town_col)
    ft = np.c_[np.log1p(tp["count_before"]), np.log1p(tp["harm_before"])]
    fc = np.c_[np.log1p(cand["count_before"]), np.log1p(cand["harm_before"])]
    sd = np.r_[ft, fc].std(axis=0)
    sd[sd == 0] = 1.0
    ft, fc = ft / sd, fc / sd
    used = np.zeros(len(cand), bool)
    rows = []
    for i in np.argsort(-tp["count_before"].to_numpy(), kind="stable"):  # one loop per treated spot
        dist = np.hypot(*(fc - ft[i]).T)
        bad = used.copy()
        if town_t is not None:
            bad |= town_c != town_t[i]
        dist = np.where(bad, np.inf, dist)
        j = int(np.argmin(dist)) if len(dist) else -1
        if j < 0 or not np.isfinite(dist[j]):
            rows.append({"treated_id": tp["spot_id"].iloc[i], "control_id": None, "distance": np.nan})
            continue
        used[j] = True
        rows.append({"treated_id": tp["spot_id"].iloc[i], "treated_count": int(tp["count_before"].iloc[i]),
                     "treated_harm": float(tp["harm_before"].iloc[i]), "control_id": cand["spot_id"].iloc[j],
                     "control_count": int(cand["count_before"].iloc[j]),
                     "control_harm": float(cand["harm_before"].iloc[j]), "distance": float(dist[j]),
                     "town": None if town_t is None else town_t[i]})
    m = pd.DataFrame(rows)
    if m["control_id"].isna().all():
        raise EmptyInputError("automatic controls: no candidate squares outside the treated buffers"
                              + (" in the same towns" if towns is not None else ""))
    ctrl = cand.set_index("spot_id").loc[m["control_id"].dropna()].reset_index()
    ctrl["matched_to"] = m.dropna(subset=["control_id"])["treated_id"].to_numpy()
    ctrl["distance"] = m.dropna(subset=["control_id"])["distance"].to_numpy()
    choices = [Choice("controls", f"{len(ctrl)} matched {cell:g} m squares",
                      f"nearest on pre-period log counts and harm among {len(cand):,} squares more than "
                      f"{2 * buffer_m:g} m from treated spots" + (", same town" if towns is not None else ""))]
    unmatched = int(m["control_id"].isna().sum())
    if unmatched:
        choices.append(Choice("unmatched treated spots", unmatched, "no candidate left (in the same town)"))
    return ctrl[["spot_id", "matched_to", "count_before", "harm_before", "distance", "geometry"]], m, choices


def _town_of(towns, pts, col):
    import shapely

    tree = shapely.STRtree(towns.geometry.values)
    pi, ti = tree.query(pts, predicate="within")
    out = np.full(len(pts), None, dtype=object)
    out[pi[::-1]] = towns[col].astype(str).to_numpy()[ti[::-1]]
    return out


def _assign(spots, df) -> np.ndarray:
    """Position of each incident's spot (first spot wins on shared edges), -1 outside all."""
    import shapely

    if len(df) == 0 or len(spots) == 0:
        return np.full(len(df), -1, np.int64)
    tree = shapely.STRtree(spots.geometry.values)
    pi, si = tree.query(shapely.points(df["x"].to_numpy(float), df["y"].to_numpy(float)), predicate="intersects")
    out = np.full(len(df), -1, np.int64)
    order = np.lexsort((-si, pi))[::-1]  # write lowest spot index last
    out[pi[order]] = si[order]
    return out


def _to_local(t: pd.Series, tz: str = "Europe/London") -> pd.Series:
    t = pd.to_datetime(t)
    if getattr(t.dt, "tz", None) is None:
        return t
    return t.dt.tz_convert(tz).dt.tz_localize(None)


def evaluate_areas(incidents, treated, control=None, *, id_col: str = "spot_id", control_id_col: str | None = None,
                   buffer_m: float = 100.0, before, after, weights=None, categories=None, area=None, towns=None,
                   town_col: str = "name", visits: pd.DataFrame | None = None, schedule: pd.DataFrame | None = None,
                   alpha: float = 0.05, mde_threshold: float = 0.4, sppt_samples: int = 200, seed: int = 0,
                   bin_hours: float = 6.0, horizon_hours: float = 168.0, family: str = "auto",
                   max_places_monthly: int = 60):
    """Did harm fall in the patrolled places compared with similar places, without moving next door?

    Parameters
    ----------
    incidents : IncidentTable (any period; filtered here).
    treated : GeoDataFrame of treated spot polygons with ``id_col``.
    control : GeoDataFrame of control polygons (``control_id_col``, default ``id_col``),
        or None / "auto" for automatic matching (:func:`match_controls`).
    buffer_m : width of the displacement / diffusion ring around the treated spots
        (default 100 m; the ring excludes treated and control spots). The controls get
        their own ring for the WDD's displacement control.
    before, after : geo.core.period.Period.
    weights : WeightTable for harm (default national CCHI).
    categories : police.uk crime types to include (default all).
    towns : optional town polygons for same-town matching.
    visits : visits table (from :func:`geo.patrol.dose.compute_dose`) for residual deterrence
        (needs incident times).
    schedule : Grip crossover schedule (spot_id, date, treated) for the place-day design
        (needs incident dates).
    max_places_monthly : above this many treated + control places the regression uses a
        place x (before, after) panel instead of place x month (echoed as a choice).

    Returns
    -------
    AnalysisResult
        ``layer``: areas (area_id, role = treated | control | treated_buffer |
        control_buffer, count_before, count_after, harm_before, harm_after, geometry).
        ``summary``: ``counts`` and ``harm``, each with before/after totals per role,
        ``pct_change_treated``, ``pct_change_control``, ``pct_change_buffer``, ``wdq``,
        ``wdq_interpretation``, ``tne``, ``wdd``, ``wdd_se``, ``wdd_z``, ``wdd_p``,
        ``wdd_low``, ``wdd_high``, ``wdd_local``, ``wdd_displace``, ``rate_ratio``,
        ``rate_ratio_low``, ``rate_ratio_high``, ``did_family``, ``did_p``,
        ``mde_fraction``; ``sppt`` (s_index, robust_s_index), ``residual`` and
        ``crossover`` when asked for, ``warnings`` (plain-language caveats).
        ``tables``: ``series`` (month x role), ``panel``, ``matching``, ``sppt``,
        ``decay``, ``decay_profile``, ``crossover``, ``statistics``.
    """
    import geopandas as gpd

    from geo.core.harm import WeightTable
    from geo.patrol.dose import spot_frame
    from geo.core.result import AnalysisResult, Choice

    choices = []
    wt = weights
    if wt is None:
        wt = WeightTable.builtin()
        choices.append(Choice("weight table", wt.name, "default harm table"))
    T = spot_frame(treated, id_col, name="treated")
    inc = incidents.filter(categories=categories) if categories else incidents
    both = _period_union(before, after)
    inc_all = inc.filter(period=both)
    inc_b = inc.filter(period=before)
    inc_a = inc.filter(period=after)
    if len(inc_b) == 0:
        raise EmptyInputError(f"no incidents in the before period {before.label()}")
    if len(inc_a) == 0:
        raise EmptyInputError(f"no incidents in the after period {after.label()}")
    matching = pd.DataFrame()
    if control is None or (isinstance(control, str) and control == "auto"):
        C, matching, mch = match_controls(inc_b, T, buffer_m=buffer_m, weights=wt, area=area, towns=towns,
                                          town_col=town_col)
        C = C.rename(columns={})
        choices += mch
    else:
        C = spot_frame(control, control_id_col or id_col, name="control")
    UT, UC = _union(T), _union(C)
    ring_t = UT.buffer(buffer_m).difference(UT).difference(UC)
    ring_c = UC.buffer(buffer_m).difference(UC).difference(UT).difference(ring_t)
    choices.append(Choice("buffer", f"{buffer_m:g} m", "ring around the treated spots, excluding treated and "
                          "control spots", automatic=False))
    roles = {"treated": UT, "treated_buffer": ring_t, "control": UC, "control_buffer": ring_c}

    def sums(table):
        df = table.frame
        x, y = df["x"].to_numpy(float), df["y"].to_numpy(float)
        w = wt.weights_for(df)
        out = {}
        for r, g in roles.items():
            m = _inside(g, x, y)
            out[r] = (int(m.sum()), w[m])
        return out

    sb, sa = sums(inc_b), sums(inc_a)
    # ---- per-place monthly panel (treated + control spots)
    places = pd.concat([T.assign(role="treated"), C[["spot_id", "geometry"]].assign(role="control")],
                       ignore_index=True)
    df = inc_all.frame
    pos = _assign(places, df)
    months = before.months + [m for m in after.months if m not in before.months]
    mi = pd.Index(months).get_indexer(df["month"].astype(str))
    ok = (pos >= 0) & (mi >= 0)
    w_all = wt.weights_for(df)
    n_p, n_m = len(places), len(months)
    flat = pos[ok] * n_m + mi[ok]
    cnt = np.bincount(flat, minlength=n_p * n_m).reshape(n_p, n_m)
    hrm = np.bincount(flat, weights=w_all[ok], minlength=n_p * n_m).reshape(n_p, n_m)
    after_m = np.isin(months, after.months) & ~np.isin(months, before.months)
    panel = pd.DataFrame({"place": np.repeat(places["spot_id"].to_numpy(), n_m),
                          "role": np.repeat(places["role"].to_numpy(), n_m),
                          "period": np.tile(months, n_p), "after": np.tile(after_m, n_p),
                          "count": cnt.ravel(), "harm": hrm.ravel()})
    panel["treated"] = panel["role"] == "treated"
    warn = []
    have = set(df["month"].astype(str))
    empty_months = [m for m in months if m not in have]
    if empty_months:
        nb_ = sum(m in before.months and m not in empty_months for m in months)
        na_ = sum(m in after.months and m not in before.months and m not in empty_months for m in months)
        warn.append(f"no incidents at all in {len(empty_months)} month(s) of the periods ({', '.join(empty_months)}): "
                    f"missing data, not zero crime. The before period has {nb_} and the after period {na_} months "
                    "with data, so totals (% change, TNE, WDD) compare unequal spans; the regression leaves the "
                    "empty months out. Choose periods with the same number of months with data.")
        panel = panel[~panel["period"].isin(empty_months)].reset_index(drop=True)
    n_before = sum(m in before.months and m not in empty_months for m in months)
    n_after = sum(m in after.months and m not in before.months and m not in empty_months for m in months)
    time_w = None
    if n_before != n_after and n_before and n_after:
        time_w = (n_before / n_after, 1.0)
        choices.append(Choice("WDD time weights", f"{n_before}/{n_after} : 1",
                              f"the before period has {n_before} and the after period {n_after} months with data: "
                              "WDD counts are put on the after period's length (Wheeler's time weights)"))
    if n_p > max_places_monthly:
        # a place x month fixed-effects GLM with hundreds of places is slow (dense IRLS); the before/after
        # collapse keeps place effects and the DiD term (for Poisson the point estimate is unchanged)
        did_panel = panel.groupby(["place", "role", "treated", "after"], as_index=False)[["count", "harm"]].sum()
        did_panel["period"] = np.where(did_panel["after"], "after", "before")
        choices.append(Choice("regression panel", "place x before/after",
                              f"{n_p} places > {max_places_monthly}: months summed within each period"))
    else:
        did_panel = panel

    def block(kind):
        if kind == "counts":
            g = {r: (sb[r][0], sa[r][0]) for r in roles}
            pairs = None
        else:
            g = {r: (float(sb[r][1].sum()), float(sa[r][1].sum())) for r in roles}
            pairs = {r: (sb[r][1], sa[r][1]) for r in roles}
        (t0, t1), (b0, b1), (c0, c1), (dc0, dc1) = (g["treated"], g["treated_buffer"], g["control"],
                                                    g["control_buffer"])
        q = wdq(t0, t1, b0, b1, c0, c1)
        if kind == "counts":
            wd = wdd((c0, c1), (t0, t1), (dc0, dc1), (b0, b1), alpha=alpha, time_weights=time_w)
        else:
            wd = wdd_weighted(pairs["control"], pairs["treated"], pairs["control_buffer"], pairs["treated_buffer"],
                              alpha=alpha, time_weights=time_w)
        try:
            did = did_regression(did_panel, outcome="count" if kind == "counts" else "harm", family=family,
                                 alpha=alpha)
        except HarmspotError as exc:
            did = {"rate_ratio": float("nan"), "rate_ratio_low": float("nan"), "rate_ratio_high": float("nan"),
                   "family": None, "p": float("nan"), "family_reason": str(exc)}
            warn.append(f"{kind}: regression not fitted ({exc})")
        out = {f"{r}_before": v[0] for r, v in g.items()} | {f"{r}_after": v[1] for r, v in g.items()}
        out.update({
            "pct_change_treated": pct_change(t0, t1), "pct_change_control": pct_change(c0, c1),
            "pct_change_buffer": pct_change(b0, b1),
            "wdq": q["wdq"], "wdq_interpretation": q["interpretation"], "tne": tne(t0, t1, b0, b1, c0, c1),
            "wdd": wd["wdd"], "wdd_se": wd["wdd_se"], "wdd_z": wd["z"], "wdd_p": wd["p"], "wdd_low": wd["low"],
            "wdd_high": wd["high"], "wdd_local": wd["est_local"], "wdd_displace": wd["est_displace"],
            "rate_ratio": did["rate_ratio"], "rate_ratio_low": did["rate_ratio_low"],
            "rate_ratio_high": did["rate_ratio_high"], "did_family": did["family"],
            "did_family_reason": did.get("family_reason"), "did_p": did["p"],
        })
        if kind == "counts":
            m = mde_wdd(t0, c0, c1, d0=b0, dc0=dc0, dc1=dc1, alpha=alpha)
            out["mde_fraction"] = m["mde_fraction"]
            out["mde_count"] = m["mde_count"]
            if not np.isfinite(m["mde_fraction"]) or m["mde_fraction"] > mde_threshold:
                warn.append(f"with these counts the design can only detect a change of at least "
                            f"{100 * m['mde_fraction']:.0f}% in the treated places (80% power); smaller "
                            "effects may be real but undetectable: pool more spots or a longer period")
        return out

    counts, harm = block("counts"), block("harm")
    if len(matching) and counts["treated_before"] > 0:
        r = counts["control_before"] / counts["treated_before"]
        if not 0.5 <= r <= 2.0:
            warn.append(f"the matched controls had {100 * r:.0f}% of the treated places' before-period incidents: "
                        "no similar places were left outside the buffers, so the comparison is weak; give controls "
                        "(--control FILE), a smaller --buffer, or towns with more candidate places")
    if counts["treated_before"] < 30:
        warn.append(f"only {counts['treated_before']} incidents in the treated places before: percentage changes "
                    "are unstable")
    # ---- SPPT over treated + control spots (before = base, after = test)
    try:
        sp = sppt(cnt[:, ~after_m].sum(axis=1), cnt[:, after_m].sum(axis=1), samples=sppt_samples, seed=seed)
        sp_table = sp.pop("table")
        sp_table.insert(0, "place", places["spot_id"].to_numpy())
        sp_table.insert(1, "role", places["role"].to_numpy())
    except EmptyInputError as exc:
        sp, sp_table = {"s_index": float("nan"), "note": str(exc)}, pd.DataFrame()
    series = panel.groupby(["period", "role"])[["count", "harm"]].sum().reset_index()
    # buffer ring series
    x, y = df["x"].to_numpy(float), df["y"].to_numpy(float)
    for r in ("treated_buffer", "control_buffer"):
        m = _inside(roles[r], x, y) & (mi >= 0)
        s = pd.DataFrame({"period": np.asarray(months)[mi[m]], "w": w_all[m]}).groupby("period")["w"].agg(
            ["size", "sum"]).reindex(months, fill_value=0).reset_index()
        series = pd.concat([series, pd.DataFrame({"period": s["period"], "role": r, "count": s["size"],
                                                  "harm": s["sum"]})], ignore_index=True)
    summary = {"counts": counts, "harm": harm, "sppt": sp, "warnings": warn, "buffer_m": buffer_m,
               "treated_spots": int(len(T)), "control_spots": int(len(C)),
               "before": before.to_dict(), "after": after.to_dict(),
               "has_times": bool(incidents.has_times)}
    tables = {"series": series, "panel": panel, "matching": matching, "sppt": sp_table}
    # ---- residual deterrence (needs times)
    if visits is not None:
        if not inc_all.has_times:
            raise MonthOnlyDataError(
                "residual deterrence (hours since the last visit) needs incident times, but these incidents "
                "have months only (police.uk). Run the month-level designs instead: drop --visits (WDQ/TNE, "
                "WDD and difference-in-differences by month are still computed)")
        tpos = _assign(T, inc_a.frame)
        ta = inc_a.frame[tpos >= 0]
        tb = inc_b.frame
        bpos = _assign(T, tb)
        hours_b = before.days * 24.0
        base = pd.Series(np.bincount(bpos[bpos >= 0], minlength=len(T)) / hours_b, index=T["spot_id"])
        vv = visits[visits["spot_id"].astype(str).isin(set(T["spot_id"]))]
        w0 = pd.Timestamp(after.start).tz_localize("Europe/London")
        w1 = (pd.Timestamp(after.end) + pd.Timedelta(days=1)).tz_localize("Europe/London")
        res = residual_deterrence(vv, pd.DataFrame({"spot_id": T["spot_id"].to_numpy()[tpos[tpos >= 0]],
                                                    "occurred_at": ta["occurred_at"].to_numpy()}),
                                  baseline_rate=base, window=(w0, w1), bin_hours=bin_hours,
                                  horizon_hours=horizon_hours, alpha=alpha)
        tables["decay"] = res.pop("curve")
        tables["decay_profile"] = res.pop("profile")
        summary["residual"] = res
        choices.append(Choice("decay baseline", "before-period rate of each treated spot",
                              "incidents per spot-hour with no patrol"))
    if schedule is not None:
        if not inc_all.has_times:
            raise MonthOnlyDataError(
                "the crossover place-day design needs incident dates, but these incidents have months only "
                "(police.uk). Use the month-level before/after designs (drop --schedule)")
        from geo.patrol.dose import _plan_frame

        sch = _plan_frame(schedule)
        sids = pd.Index(sorted(set(sch["spot_id"])))
        spots_all = places.drop_duplicates("spot_id").set_index("spot_id")
        missing = [s for s in sids if s not in spots_all.index]
        if missing:
            raise HarmspotError(f"schedule: {len(missing)} spot ids are not among the treated/control spots; "
                                f"first {missing[0]!r}")
        sg = gpd.GeoDataFrame({"spot_id": sids}, geometry=spots_all.loc[sids, "geometry"].values, crs=T.crs)
        f = inc.frame
        sp_pos = _assign(sg, f)
        d = _to_local(f["occurred_at"]).dt.normalize().dt.date
        day_counts = pd.DataFrame({"spot_id": sids.to_numpy()[sp_pos[sp_pos >= 0]],
                                   "date": d[sp_pos >= 0].to_numpy()}).value_counts().rename("y")
        sch["y"] = day_counts.reindex(pd.MultiIndex.from_arrays([sch["spot_id"], sch["date"]])).fillna(0).to_numpy()
        co = crossover_place_day(sch, alpha=alpha)
        tables["crossover"] = co.pop("lags")
        summary["crossover"] = co
    stat_rows = []
    for kind, blk in (("counts", counts), ("harm", harm)):
        for k, v in blk.items():
            stat_rows.append({"measure": kind, "statistic": k, "value": v})
    tables["statistics"] = pd.DataFrame(stat_rows)
    # ---- layer
    lay = []
    for r, geom in roles.items():
        lay.append({"area_id": r, "role": r, "count_before": sb[r][0], "count_after": sa[r][0],
                    "harm_before": float(sb[r][1].sum()), "harm_after": float(sa[r][1].sum()), "geometry": geom})
    pc = panel.groupby(["place", "role", "after"])[["count", "harm"]].sum().unstack("after", fill_value=0)
    for (pid, role), row in pc.iterrows():
        geom = places.loc[places["spot_id"] == pid, "geometry"].iloc[0]
        lay.append({"area_id": pid, "role": role + "_spot", "count_before": int(row[("count", False)]),
                    "count_after": int(row[("count", True)]), "harm_before": float(row[("harm", False)]),
                    "harm_after": float(row[("harm", True)]), "geometry": geom})
    layer = gpd.GeoDataFrame(lay, geometry="geometry", crs=T.crs)
    params = {"buffer_m": buffer_m, "before": before.label(), "after": after.label(), "alpha": alpha,
              "categories": list(categories) if categories else "all", "controls": "auto" if len(matching) else "given",
              "family": family, "mde_threshold": mde_threshold}
    return AnalysisResult(kind="evaluation", layer=layer, params=params, choices=choices,
                          weight_table=wt.describe(), period=_period_union(before, after),
                          inputs={"incidents": len(inc_all)}, tables=tables, summary=summary)


def _period_union(a, b):
    from geo.core.period import Period

    return Period(min(a.start, b.start), max(a.end, b.end))
