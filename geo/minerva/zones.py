"""Minerva zones: where violence against women and girls (VAWG) and the fear of it coincide.

The partnership question: *which places should the VAWG partnership agree as "Minerva
Zones" for joint action, and where do fear and recorded offences not coincide?*
(Essex's Minerva approach to VAWG in public spaces; felt-unsafe reports as collected
by StreetSafe or Commonplace.)

:func:`minerva_zones` counts VAWG offences, "felt unsafe" reports and optional context
layers (licensed premises, transport nodes, lighting faults...) per unit (Output Areas /
LSOAs given as polygons, BNG squares or H3 cells), smooths the rates, flags units
significantly high for offences and for fear, types every unit on a 2 x 2, dissolves
contiguous qualifying units into zones and profiles them.

Method
------
1. **VAWG offences.** Force data: the ``vawg`` flag; rows flagged ``domestic`` are
   left out by default (Minerva is about public space; ``include_domestic=True`` keeps
   them). police.uk data has no flag, so a documented proxy is used: the type
   "Violence and sexual offences" (sexual offences, stalking and harassment, assaults).
   "Public order" is *not* in the default proxy: most of it is not VAWG; add it with
   ``proxy_categories`` when street harassment recorded under s.4A/s.5 matters locally.
2. **Exposure.** Population per unit when a population column is given (rates per 1,000
   residents), else area (rates per km²).
3. **Smoothing.** Global empirical Bayes (Marshall 1991; as ``esda.smoothing.Empirical_Bayes``):
   ``b = sum(e)/sum(n)``, ``s2 = sum(n (r - b)^2)/sum(n)``, ``a = max(s2 - b/mean(n), 0)``,
   ``w = a / (a + b/n)``, ``EB = w r + (1 - w) b``. Smoothed relative risk ``rr = EB / b``.
4. **High.** A unit is high on a layer when its smoothed relative risk is at least
   ``rr_min`` (1.5) *and* its count is significantly above the expected ``b n``
   (Poisson upper tail ``P(X >= count)``, Benjamini-Hochberg adjusted over all units,
   below ``alpha`` = 0.05). One incident in a small unit shrinks towards the mean and is
   not significant, so it does not make a zone; the false discovery rate control keeps
   chance clusters of 3-4 background incidents out too.
5. **Composite score** = sum over layers of weight x smoothed relative risk (weights
   normalised to 1; default offences 0.45, fear 0.45, context layers 0.10 shared).
6. **Typology (2 x 2):** "high offences & high fear" (coincident), "high offences & low
   fear", "low offences & high fear", "low & low".
7. **Zones.** Contiguous units (sharing an edge or a corner) of the same non-low type are
   dissolved. Coincident zones with at least ``min_units`` units are **Minerva Zones**;
   smaller coincident zones and one-sided zones (offences only / fear only) of at least
   ``min_units`` units are **of local interest**. Zones are prioritised by their
   composite score (mean of their units), Minerva Zones first.
8. **Profile** per zone: the layers driving it (smoothed relative risk >= ``rr_min``,
   largest weighted contribution first), the day/night split of its offences and fear
   reports (night = 18:00-06:00 by default; "n/a" without times), the most common fear
   reasons, and the owning district / Community Safety Partnership (the district holding
   most of the zone's area).

No public fear data exists for Essex: tests and the demo use seeded synthetic felt-unsafe
points (:mod:`geo.synth_minerva`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import shapely

from geo import BNG, WGS84
from geo.core.errors import BoundaryError, EmptyInputError, HarmspotError
from geo.core.incidents.table import IncidentTable
from geo.core.period import Period
from geo.core.result import AnalysisResult, Choice


#: police.uk proxy for VAWG offences (police.uk has no VAWG flag).
VAWG_PROXY: tuple[str, ...] = ("Violence and sexual offences",)
TYPES = ("high offences & high fear", "high offences & low fear", "low offences & high fear", "low & low")
DEFAULT_WEIGHTS = {"offences": 0.45, "fear": 0.45, "context": 0.10}

_LON = ("longitude", "lon", "lng", "long")
_LAT = ("latitude", "lat")
_E = ("easting", "x", "east")
_N = ("northing", "y", "north")
_TIME = ("time", "datetime", "date_time", "reported_at", "timestamp", "date", "occurred_at", "when")
_REASON = ("reason", "reasons", "category", "why", "concern", "type")


# --------------------------------------------------------------------------- inputs
def points_from_frame(df: pd.DataFrame, name: str = "points", *, time_col: str | None = None,
                      reason_col: str | None = None, need_time: bool = False):
    """Validate a points table (lon/lat or easting/northing, optional time and reason) into BNG points.

    Columns are found case-insensitively (``longitude/lon/lng``, ``latitude/lat``,
    ``easting/x``, ``northing/y``; time ``time/datetime/date/...``; reason
    ``reason/category/...``). A row with a missing or unparsable coordinate, or an
    unparsable time, raises an error naming ``name``, the row (1 = first data row)
    and the field: nothing is dropped quietly.

    Returns a GeoDataFrame (EPSG:27700) with ``time`` (datetime or NaT), ``reason``
    (string or NA) and the source row number ``source_row``.
    """
    import geopandas as gpd
    from pyproj import Transformer

    if df is None or len(df) == 0:
        raise EmptyInputError(f"{name}: no rows")
    low = {str(c).strip().lower(): c for c in df.columns}

    def pick(cands, given=None, what=""):
        if given is not None:
            if given not in df.columns:
                raise HarmspotError(f"{name}: no column {given!r} for {what}; columns are {list(df.columns)}")
            return given
        return next((low[c] for c in cands if c in low), None)

    lon, lat = pick(_LON), pick(_LAT)
    east, north = pick(_E), pick(_N)
    if lon is not None and lat is not None:
        xs, ys, fields, crs = df[lon], df[lat], (lon, lat), WGS84
    elif east is not None and north is not None:
        xs, ys, fields, crs = df[east], df[north], (east, north), BNG
    else:
        raise HarmspotError(f"{name}: needs longitude/latitude or easting/northing columns; found {list(df.columns)}")
    xv = pd.to_numeric(xs, errors="coerce").to_numpy(float)
    yv = pd.to_numeric(ys, errors="coerce").to_numpy(float)
    for arr, f in ((xv, fields[0]), (yv, fields[1])):
        bad = ~np.isfinite(arr)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise HarmspotError(f"{name}: {int(bad.sum())} row(s) with a missing or unparsable {f!r}; "
                                f"first at row {i + 1} (value {df[f].iloc[i]!r}). Fix or remove them")
    if crs == WGS84:
        bad = (np.abs(yv) > 90) | (np.abs(xv) > 180)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise HarmspotError(f"{name}: {int(bad.sum())} row(s) with lon/lat out of range; first at row {i + 1}")
        xv, yv = Transformer.from_crs(WGS84, BNG, always_xy=True).transform(xv, yv)
    tcol = pick(_TIME, time_col, "time")
    if tcol is None:
        if need_time:
            raise HarmspotError(f"{name}: needs a time column (one of {_TIME}); found {list(df.columns)}")
        t = pd.Series(pd.NaT, index=range(len(df)), dtype="datetime64[ns]")
    else:
        raw = df[tcol]
        t = pd.to_datetime(raw, errors="coerce", dayfirst=False, format="mixed")
        bad = t.isna().to_numpy() & raw.notna().to_numpy() & (raw.astype(str).str.strip() != "").to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise HarmspotError(f"{name}: {int(bad.sum())} row(s) with an unparsable {tcol!r}; first at row {i + 1} "
                                f"(value {raw.iloc[i]!r}); use ISO times like 2025-03-01 22:30")
        t = t.reset_index(drop=True)
    rcol = pick(_REASON, reason_col, "reason")
    reason = df[rcol].astype("string").reset_index(drop=True) if rcol is not None else pd.Series(
        pd.NA, index=range(len(df)), dtype="string")
    return gpd.GeoDataFrame({"time": t.to_numpy(), "reason": reason.to_numpy(),
                             "source_row": np.arange(1, len(df) + 1)},
                            geometry=shapely.points(xv, yv), crs=BNG)


def vawg_offences(incidents: IncidentTable, mode: str = "auto", *, proxy_categories=None,
                  include_domestic: bool = False) -> tuple[IncidentTable, str, list[Choice]]:
    """The VAWG offence rows: the ``vawg`` flag (force data) or the police.uk proxy."""
    df = incidents.frame
    choices = []
    if mode not in ("auto", "flag", "proxy"):
        raise HarmspotError(f"vawg mode {mode!r}: use auto, flag or proxy")
    flag = df["vawg"].astype("boolean")
    if mode == "auto":
        mode = "flag" if len(df) and float(flag.notna().mean()) >= 0.5 else "proxy"
        choices.append(Choice("VAWG offences", "vawg flag" if mode == "flag" else "police.uk proxy",
                              "force records carry a VAWG flag" if mode == "flag" else
                              "police.uk data has no VAWG flag"))
    if mode == "flag":
        m = flag.fillna(False).to_numpy(bool)
        if not include_domestic:
            dom = df["domestic"].astype("boolean").fillna(False).to_numpy(bool)
            choices.append(Choice("domestic VAWG", f"{int((m & dom).sum()):,} left out",
                                  "Minerva is about public space; include_domestic=True keeps them"))
            m &= ~dom
        return incidents.filter(mask=m), "flag", choices
    cats = list(proxy_categories) if proxy_categories else list(VAWG_PROXY)
    choices.append(Choice("VAWG proxy", ", ".join(cats),
                          "police.uk types standing in for VAWG (no flag); Public order left out by default"))
    return incidents.filter(categories=cats), "proxy", choices


# --------------------------------------------------------------------------- statistics
def empirical_bayes(events, exposure) -> tuple[np.ndarray, float, np.ndarray]:
    """Global empirical Bayes rates (Marshall 1991). Returns (EB rate, global rate b, shrink weight w).

    Same formula as ``esda.smoothing.Empirical_Bayes`` except that a negative variance
    estimate is set to 0 (every unit shrinks fully to the global rate).
    """
    e = np.asarray(events, float)
    n = np.asarray(exposure, float)
    if (n <= 0).any():
        i = int(np.flatnonzero(n <= 0)[0])
        raise HarmspotError(f"exposure must be positive in every unit; unit {i + 1} has {n[i]!r}")
    b = e.sum() / n.sum()
    r = e / n
    s2 = (n * (r - b) ** 2).sum() / n.sum()
    a = max(s2 - b / n.mean(), 0.0)
    w = a / (a + b / n) if (a + b) > 0 else np.zeros(len(n))
    return w * r + (1 - w) * b, float(b), w


def poisson_upper(count, expected) -> np.ndarray:
    """P(X >= count) for X ~ Poisson(expected) (1 for count 0)."""
    from scipy.special import pdtrc

    k = np.asarray(count, np.int64)
    m = np.asarray(expected, float)
    return np.where(k > 0, pdtrc(np.maximum(k - 1, 0), m), 1.0)


def bh_adjust(p) -> np.ndarray:
    """Benjamini-Hochberg (1995) adjusted p-values (q-values): min over j >= i of p_(j) m / j, capped at 1."""
    p = np.asarray(p, float)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    ranked = p[order] * m / np.arange(1, m + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(q, 1.0)
    return out


def _contiguity_groups(geoms, keys) -> np.ndarray:
    """Connected groups of polygons that touch or overlap and share the same key."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(geoms)
    if n == 0:
        return np.zeros(0, int)
    tree = shapely.STRtree(geoms)
    a, b = tree.query(geoms, predicate="intersects")
    keys = np.asarray(keys)
    ok = (a != b) & (keys[a] == keys[b])
    g = coo_matrix((np.ones(int(ok.sum())), (a[ok], b[ok])), shape=(n, n))
    return connected_components(g, directed=False)[1]


# --------------------------------------------------------------------------- main entry
def minerva_zones(
    units,
    offences: IncidentTable,
    fear,
    *,
    id_col: str = "unit_id",
    layers: dict | None = None,
    population_col: str | None = None,
    weights: dict | None = None,
    period: Period | None = None,
    vawg: str = "auto",
    proxy_categories=None,
    include_domestic: bool = False,
    rr_min: float = 1.5,
    alpha: float = 0.05,
    fdr: bool = True,
    min_units: int = 2,
    districts=None,
    district_col: str = "name",
    night: tuple[int, int] = (18, 6),
) -> AnalysisResult:
    """Minerva zones where VAWG offences and felt-unsafe reports coincide (see the module docstring).

    Parameters
    ----------
    units : GeoDataFrame
        Polygons (Output Areas, LSOAs, squares or H3 cells) with an id column ``id_col``.
    offences : IncidentTable
        Incidents; VAWG rows are chosen by ``vawg`` ("auto" | "flag" | "proxy").
    fear : GeoDataFrame
        Felt-unsafe points (:func:`points_from_frame`): ``time``, ``reason``.
    layers : {name: GeoDataFrame of points}, optional
        Context layers (licensed premises, stations, lighting faults...).
    population_col : str, optional
        Residents per unit; rates per 1,000 residents. Default: per km² of unit area.
    weights : dict, optional
        Composite weights by layer name: "offences", "fear" and each context layer
        name (or "context" shared equally). Normalised to sum to 1.
    period : Period, optional
        Filters offences and fear reports (fear by time where known).
    rr_min, alpha : thresholds for "high" (smoothed relative risk and Poisson p or q).
    fdr : bool, default True
        Control the false discovery rate over all units (Benjamini-Hochberg q-values)
        instead of testing each unit at ``alpha`` alone (which calls ~alpha of the
        background units high by chance).
    min_units : int, default 2
        Units a coincident zone needs to be a Minerva Zone.
    districts : GeoDataFrame, optional
        District / Community Safety Partnership polygons with ``district_col``.
    night : (start hour, end hour), default (18, 6)

    Returns
    -------
    AnalysisResult
        ``layer``: zones (EPSG:27700) with ``zone_id`` (``MZ-<n>``, ranked), ``priority``
        (1 = first), ``category`` ("Minerva Zone" | "of local interest"), ``type``,
        ``units``, ``unit_ids``, ``area_km2``, ``score`` (area-weighted mean unit score),
        ``offences``, ``fear`` (counts), ``rr_offences``, ``rr_fear`` (zone observed /
        expected at the study-wide rate), ``drivers`` (layers with zone rr >= rr_min,
        largest weighted contribution first), ``night_share_offences``,
        ``night_share_fear``, ``top_reasons``, ``district``, geometry.
        ``extra_layers["units"]``: per unit ``unit_id``, ``exposure``, per layer L
        (offences, fear, each context layer): ``n_L``, ``rate_L``, ``eb_L``, ``rr_L``,
        ``p_L``, ``q_L`` (BH-adjusted, = p without fdr); ``high_offences``, ``high_fear``, ``score``, ``type``, ``zone_id``.
        ``tables["zones"]``: the zone attributes without geometry (the profile).
        ``tables["typology"]``: units per type.
    """
    import geopandas as gpd

    choices: list[Choice] = []
    if units is None or len(units) == 0:
        raise BoundaryError("units: no polygons given")
    if id_col not in units.columns:
        raise BoundaryError(f"units: no column {id_col!r}; columns are {list(units.columns)}")
    u = units.to_crs(BNG) if units.crs is not None else units.set_crs(BNG)
    ids = u[id_col].astype(str)
    if ids.duplicated().any():
        raise BoundaryError(f"units: {int(ids.duplicated().sum())} duplicate ids in {id_col!r}; "
                            f"first {ids[ids.duplicated()].iloc[0]!r}")
    types_ok = set(u.geom_type.dropna()) <= {"Polygon", "MultiPolygon"}
    if not types_ok:
        raise BoundaryError(f"units: expected polygons, found {sorted(set(u.geom_type.dropna()))}")
    if not (rr_min > 0 and 0 < alpha < 1 and min_units >= 1):
        raise HarmspotError(f"thresholds: need rr_min > 0, 0 < alpha < 1, min_units >= 1; got {rr_min}, {alpha}, {min_units}")
    geoms = u.geometry.values
    n_units = len(u)
    area_km2 = shapely.area(geoms) / 1e6
    if population_col is not None:
        if population_col not in u.columns:
            raise BoundaryError(f"units: no population column {population_col!r}; columns are {list(u.columns)}")
        pop = pd.to_numeric(u[population_col], errors="coerce").to_numpy(float)
        bad = ~(pop > 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise HarmspotError(f"units: {int(bad.sum())} unit(s) with a missing or non-positive {population_col!r}; "
                                f"first {ids.iloc[i]!r}")
        exposure, per = pop / 1000.0, "per 1,000 residents"
    else:
        exposure, per = area_km2, "per km²"
        choices.append(Choice("rates", per, "no population given: rates per unit area"))

    # layers as point sets
    off, vmode, vchoices = vawg_offences(offences if period is None else offences.filter(period=period), vawg,
                                         proxy_categories=proxy_categories, include_domestic=include_domestic)
    choices += vchoices
    of = off.frame
    if fear is None or len(fear) == 0:
        raise EmptyInputError("fear: no felt-unsafe reports given")
    fr = fear.to_crs(BNG) if fear.crs is not None else fear
    if period is not None and "time" in fr.columns:
        t = pd.to_datetime(fr["time"])
        keep = t.isna() | ((t >= pd.Timestamp(period.start)) & (t < pd.Timestamp(period.end) + pd.Timedelta(days=1)))
        if (~keep).any():
            choices.append(Choice("fear reports", f"{int((~keep).sum()):,} outside the period not counted",
                                  "filtered to the analysis period"))
        fr = fr[keep.to_numpy()]
    pts = {"offences": np.c_[of["x"].to_numpy(float), of["y"].to_numpy(float)],
           "fear": shapely.get_coordinates(fr.geometry.values)}
    ctx_names = []
    for name, g in (layers or {}).items():
        if name in ("offences", "fear"):
            raise HarmspotError(f"context layer name {name!r} is reserved; rename it")
        gg = g.to_crs(BNG) if g.crs is not None else g
        geom = gg.geometry.values
        if not (shapely.get_type_id(geom) == 0).all():
            geom = shapely.point_on_surface(geom)
            choices.append(Choice(f"layer {name}", "representative points", "non-point features counted once each"))
        pts[name] = shapely.get_coordinates(geom)
        ctx_names.append(name)

    # weights
    w = dict(DEFAULT_WEIGHTS if weights is None else weights)
    if "context" in w:
        share = w.pop("context")
        for nme in ctx_names:
            w.setdefault(nme, share / len(ctx_names))
    unknown = [k for k in w if k not in pts]
    if unknown:
        raise HarmspotError(f"weights: unknown layer(s) {unknown}; layers are {list(pts)}")
    if any(v < 0 for v in w.values()) or sum(w.values()) <= 0:
        raise HarmspotError(f"weights must be non-negative with a positive sum; got {w}")
    tot = sum(w.values())
    w = {k: v / tot for k, v in w.items()}
    if weights is None:
        choices.append(Choice("composite weights", ", ".join(f"{k} {v:.2f}" for k, v in w.items()),
                              "default: offences 0.45 and fear 0.45, context layers share 0.10 (normalised)"))

    # counts per unit (first polygon wins on shared edges)
    tree = shapely.STRtree(geoms)

    def assign(xy):
        if len(xy) == 0:
            return np.zeros(0, np.int64)
        p = shapely.points(xy)
        pi, ui = tree.query(p, predicate="intersects")
        out = np.full(len(xy), -1, np.int64)
        out[pi[::-1]] = ui[::-1]
        return out

    table = pd.DataFrame({"unit_id": ids.to_numpy(), "area_km2": area_km2, "exposure": exposure})
    codes, brate = {}, {}
    for name, xy in pts.items():
        code = assign(xy)
        codes[name] = code
        n_in = np.bincount(code[code >= 0], minlength=n_units)
        miss = int((code < 0).sum())
        if miss:
            choices.append(Choice(f"{name} outside units", f"{miss:,} points", "not counted (outside every unit)"))
        eb, b, _ = empirical_bayes(n_in, exposure)
        brate[name] = b
        table[f"n_{name}"] = n_in.astype(np.int64)
        table[f"rate_{name}"] = n_in / exposure
        table[f"eb_{name}"] = eb
        table[f"rr_{name}"] = eb / b if b > 0 else np.zeros(n_units)
        table[f"p_{name}"] = poisson_upper(n_in, b * exposure)
        table[f"q_{name}"] = bh_adjust(table[f"p_{name}"].to_numpy()) if fdr else table[f"p_{name}"]
    high = {}
    for name in ("offences", "fear"):
        high[name] = ((table[f"rr_{name}"] >= rr_min) & (table[f"q_{name}"] < alpha)).to_numpy(bool)
        table[f"high_{name}"] = high[name]
    table["score"] = sum(w.get(k, 0.0) * table[f"rr_{k}"] for k in pts)
    typ = np.where(high["offences"] & high["fear"], TYPES[0],
                   np.where(high["offences"], TYPES[1], np.where(high["fear"], TYPES[2], TYPES[3])))
    table["type"] = typ
    choices.append(Choice("high", f"smoothed relative risk >= {rr_min:g} and Poisson "
                          f"{'FDR q' if fdr else 'p'} < {alpha:g}",
                          "empirical Bayes smoothing and a significance test"
                          + (" with Benjamini-Hochberg false discovery rate control over all units" if fdr else "")
                          + ": one incident does not make a zone"))

    # zones: contiguous units of the same non-low type
    cand = np.flatnonzero(typ != TYPES[3])
    grp = _contiguity_groups(geoms[cand], typ[cand])
    zones = []
    night_s, night_e = night
    of_t = pd.to_datetime(of["occurred_at"]).to_numpy()
    fr_t = pd.to_datetime(fr["time"]).to_numpy() if "time" in fr.columns else np.full(len(fr), np.datetime64("NaT"))
    fr_reason = fr["reason"].astype("string").to_numpy() if "reason" in fr.columns else np.full(len(fr), None)

    def night_share(times):
        t = pd.to_datetime(pd.Series(times)).dropna()
        if len(t) == 0:
            return float("nan")
        h = t.dt.hour.to_numpy()
        nt = (h >= night_s) | (h < night_e) if night_s > night_e else (h >= night_s) & (h < night_e)
        return float(nt.mean())

    dist = None
    if districts is not None:
        if district_col not in districts.columns:
            raise BoundaryError(f"districts: no column {district_col!r}; columns are {list(districts.columns)}")
        dist = districts.to_crs(BNG) if districts.crs is not None else districts
    for g in np.unique(grp):
        mem = cand[grp == g]
        t0 = typ[mem[0]]
        coincident = t0 == TYPES[0]
        if coincident:
            cat = "Minerva Zone" if len(mem) >= min_units else "of local interest"
        elif len(mem) >= min_units:
            cat = "of local interest"
        else:
            continue
        ex = exposure[mem].sum()
        rr = {k: float(table[f"n_{k}"].to_numpy()[mem].sum() / (brate[k] * ex)) if brate[k] > 0 else 0.0
              for k in pts}
        contrib = sorted(((w.get(k, 0) * v, k) for k, v in rr.items() if v >= rr_min), reverse=True)
        in_off = np.isin(codes["offences"], mem)
        in_fear = np.isin(codes["fear"], mem)
        reasons = pd.Series(fr_reason[in_fear]).dropna()
        top = ", ".join(f"{r} ({c})" for r, c in reasons.value_counts().head(3).items()) if len(reasons) else ""
        zgeom = shapely.union_all(geoms[mem])
        owner = ""
        if dist is not None:
            inter = shapely.area(shapely.intersection(dist.geometry.values, zgeom))
            owner = str(dist[district_col].iloc[int(np.argmax(inter))]) if inter.max() > 0 else ""
        a = area_km2[mem]
        zones.append({
            "category": cat, "type": t0, "units": int(len(mem)),
            "unit_ids": ";".join(ids.to_numpy()[mem]), "area_km2": float(a.sum()),
            "score": float((table["score"].to_numpy()[mem] * a).sum() / a.sum()),
            "offences": int(in_off.sum()), "fear": int(in_fear.sum()),
            "rr_offences": rr["offences"], "rr_fear": rr["fear"],
            "drivers": ", ".join(f"{k} (rr {rr[k]:.1f})" for _, k in contrib),
            "night_share_offences": night_share(of_t[in_off]), "night_share_fear": night_share(fr_t[in_fear]),
            "top_reasons": top, "district": owner or "n/a", "_mem": mem, "geometry": zgeom,
        })
    cols = ["zone_id", "priority", "category", "type", "units", "unit_ids", "area_km2", "score", "offences", "fear",
            "rr_offences", "rr_fear", "drivers", "night_share_offences", "night_share_fear", "top_reasons",
            "district"]
    if zones:
        z = pd.DataFrame(zones)
        z["_cat"] = (z["category"] != "Minerva Zone").astype(int)
        z["_typ"] = z["type"].map({t: i for i, t in enumerate(TYPES)})
        z = z.sort_values(["_cat", "_typ", "score", "offences", "unit_ids"],
                          ascending=[True, True, False, False, True]).reset_index(drop=True)
        z["priority"] = np.arange(1, len(z) + 1)
        z["zone_id"] = [f"MZ-{i}" for i in z["priority"]]
        zone_of = np.full(n_units, "", dtype=object)
        for zid, mem in zip(z["zone_id"], z["_mem"]):
            zone_of[mem] = zid
        zg = gpd.GeoDataFrame(z[cols], geometry=list(z["geometry"]), crs=BNG)
    else:
        zone_of = np.full(n_units, "", dtype=object)
        zg = gpd.GeoDataFrame({c: [] for c in cols}, geometry=[], crs=BNG)
    table["zone_id"] = zone_of
    ulayer = gpd.GeoDataFrame(table, geometry=geoms, crs=BNG)
    typology = pd.DataFrame({"type": list(TYPES), "units": [int((typ == t).sum()) for t in TYPES]})
    summary = {
        "units": int(n_units), "vawg_offences": int(len(of)), "fear_reports": int(len(fr)),
        "vawg_mode": vmode, "rates": per,
        "typology": dict(zip(typology["type"], typology["units"].astype(int))),
        "minerva_zones": int((zg["category"] == "Minerva Zone").sum()) if len(zg) else 0,
        "zones_of_local_interest": int((zg["category"] == "of local interest").sum()) if len(zg) else 0,
        "weights": w,
    }
    params = {"id_col": id_col, "population_col": population_col, "rr_min": rr_min, "alpha": alpha, "fdr": fdr,
              "min_units": min_units, "vawg": vmode, "night": list(night), "context_layers": ctx_names,
              "weights": w, "smoothing": "global empirical Bayes (Marshall 1991)"}
    return AnalysisResult(kind="minerva", layer=zg, params=params, choices=choices, period=period,
                          inputs={"units": int(n_units), "offences": int(len(offences)), "fear": int(len(fear)),
                                  "layers": {k: int(len(v)) for k, v in pts.items()}},
                          tables={"zones": pd.DataFrame(zg.drop(columns="geometry")), "typology": typology},
                          summary=summary, extra_layers={"units": ulayer})


def square_units(area, cell: float = 250.0):
    """BNG squares of ``cell`` metres covering ``area`` as Minerva units (``unit_id`` = square id)."""
    from geo.units.lattice import SquareGrid

    f = SquareGrid(cell).frame(area)
    return f.rename(columns={"cell_id": "unit_id"})[["unit_id", "geometry"]]


def h3_units(area, res: int = 9):
    """H3 cells covering ``area`` as Minerva units (``unit_id`` = H3 index)."""
    from geo.units.h3 import H3Units

    f = H3Units(res).frame(area)
    return f.rename(columns={"cell_id": "unit_id"})[["unit_id", "geometry"]]
