"""Grip harm spots: the weekly ranked list of small places per town, with a patrol plan.

The analyst question: *in each major town, which few 150 m squares hold most of the
street-violence harm, and how should Community Policing Teams patrol them?*
(Essex Police's Grip hot-spot scheme, funded through the Home Office Serious
Violence Fund: in the pilot, 20 squares of 150 m held 41% of a town's crime harm
on 2.6% of its area.)

:func:`select_spots` ranks BNG squares by harm inside each town polygon and
returns the spots with their concentration curve and a patrol plan;
:func:`crossover_schedule` lists treated and control place-days for a seeded
crossover evaluation (k of N spots patrolled each day).

Method
------
1. **Outcome.** Force data (``source_kind == "table"``): *community violence* =
   violence with injury (Home Office codes 1, 2, 4.1, 4.10, 5A-5E, 8N, 8P) and
   robbery (34A, 34B), or the police.uk types "Violence and sexual offences" and
   "Robbery" where a row has no code; rows flagged domestic, and victims under 15
   or over 64, are left out where those fields exist. police.uk data has none of
   these fields, so a documented proxy is used: the types "Violence and sexual
   offences", "Robbery" and "Possession of weapons" (said so in ``choices``).
2. **Harm** per square = sum of the weight table's weights (default CCHI
   national 2026) over the square's outcome incidents in the look-back window,
   counted with :func:`geo.units.counts.count_units` on :class:`geo.units.lattice.SquareGrid`,
   so it equals ``harmspot cells --category ...`` for the same categories,
   period and table. Under the CCHI rule proactively found offences weigh 0:
   possession of weapons then adds to ``count`` but not to ``harm`` unless the
   table was built with ``proactive=True``.
3. **Town membership.** A square belongs to the town whose polygon contains its
   centroid (first town in file order wins where towns overlap). A town's area is
   its number of squares, so ``share_area = squares / town squares``.
4. **Ranking.** Squares by harm (rounded to 1e-6 days for ordering, so equal
   sums tie exactly whatever the summation order), then count, then id
   (deterministic), harm > 0 only. Optional rules, all off by default: ``min_events`` (count at least),
   ``exclusions`` (squares overlapping an exclusion polygon with positive area
   are never spots), ``separation`` (greedy: a square within that many metres,
   centroid to centroid, of a better spot is skipped), ``merge`` (edge-adjacent
   selected squares become one spot).
5. **Trend.** Counts in the last quarter of the window (3 of 12 months) against
   the earlier part, exposure = months (or days) with any data, tested with an
   exact binomial test (p < 0.05: "up"/"down", else "stable").
6. **Status** against last cycle's spot ids: new / retained; last cycle's spots
   not selected now are listed in ``tables["changes"]`` as dropped.

References: Sherman, Neyroud & Neyroud (2016) The Cambridge Crime Harm Index;
Koper (1995) "Just enough police presence" (the 15-minute dose); Essex Police /
Home Office Grip hot-spot policing guidance (2021-2024).
"""
from __future__ import annotations

import datetime as _dt
import hashlib

import numpy as np
import pandas as pd
import shapely

from geo import BNG
from geo.core.errors import BoundaryError, EmptyInputError, HarmspotError
from geo.core.harm import WeightTable
from geo.core.incidents.table import IncidentTable
from geo.core.period import Period
from geo.core.result import AnalysisResult, Choice
from geo.units.lattice import SquareGrid


#: police.uk proxy for street violence (police.uk has no codes, flags or victim ages).
PROXY_CATEGORIES: tuple[str, ...] = ("Violence and sexual offences", "Robbery", "Possession of weapons")

#: Home Office offence codes counted as community violence in force data:
#: homicide (1, 4.1, 4.10), attempted murder (2), GBH / wounding (5A-5E),
#: assault with injury (8N, 8P racially or religiously aggravated) and robbery (34A, 34B).
COMMUNITY_VIOLENCE_CODES: frozenset[str] = frozenset(
    {"1", "2", "4.1", "4.10", "5A", "5B", "5C", "5D", "5E", "8N", "8P", "34A", "34B"})
#: Types used for force rows without an offence code.
COMMUNITY_VIOLENCE_TYPES: tuple[str, ...] = ("Violence and sexual offences", "Robbery")
#: Victim ages kept in community violence (inclusive).
VICTIM_AGE_RANGE = (15, 64)

OUTCOMES = ("auto", "community-violence", "police-uk-proxy")
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


# --------------------------------------------------------------------------- outcome
def outcome_mask(incidents: IncidentTable, outcome="auto") -> tuple[np.ndarray, str, list[Choice], list[str] | None]:
    """Rows of ``incidents`` in the Grip outcome.

    Returns ``(mask, outcome_name, choices, categories)``; ``categories`` is the
    list of police.uk types that reproduces the outcome with ``harmspot cells
    --category`` (None for community violence, which also filters codes and flags).
    """
    df = incidents.frame
    choices: list[Choice] = []
    if not isinstance(outcome, str):
        from geo.core.categories import resolve_categories

        cats = resolve_categories(list(outcome))
        choices.append(Choice("outcome", ", ".join(cats), "categories as given", automatic=False))
        return df["category"].isin(cats).fillna(False).to_numpy(bool), "categories", choices, cats
    if outcome not in OUTCOMES:
        raise HarmspotError(f"outcome {outcome!r}: use one of {', '.join(OUTCOMES)} or a list of police.uk types")
    if outcome == "auto":
        kind = df["source_kind"].astype("string").fillna("")
        force = len(df) > 0 and float((kind == "table").mean()) >= 0.5
        outcome = "community-violence" if force else "police-uk-proxy"
        choices.append(Choice(
            "outcome", outcome,
            "force records (offence codes, flags, victim ages)" if force else
            "police.uk data has no offence codes, domestic flags or victim ages: proxy = "
            + ", ".join(PROXY_CATEGORIES)))
    if outcome == "police-uk-proxy":
        cats = list(PROXY_CATEGORIES)
        return df["category"].isin(cats).fillna(False).to_numpy(bool), outcome, choices, cats
    code = df["offence_code"].astype("string").str.strip().str.upper()
    has_code = code.notna() & (code != "")
    by_code = code.isin(list(COMMUNITY_VIOLENCE_CODES)).fillna(False).to_numpy(bool)
    by_type = df["category"].isin(list(COMMUNITY_VIOLENCE_TYPES)).fillna(False).to_numpy(bool)
    m = np.where(has_code.to_numpy(bool), by_code, by_type)
    dom = df["domestic"].astype("boolean").fillna(False).to_numpy(bool)
    age = df["victim_age"].astype("Float64")
    lo, hi = VICTIM_AGE_RANGE
    bad_age = ((age < lo) | (age > hi)).fillna(False).to_numpy(bool)
    m = m & ~dom & ~bad_age
    choices.append(Choice(
        "community violence", f"codes {sorted(COMMUNITY_VIOLENCE_CODES)}",
        f"violence with injury and robbery; {int(dom.sum()):,} domestic and {int(bad_age.sum()):,} victim-age "
        f"(<{lo} or >{hi}) rows left out; rows without a code use types {list(COMMUNITY_VIOLENCE_TYPES)}"))
    return m, "community-violence", choices, None


# --------------------------------------------------------------------------- helpers
def _towns_frame(towns, name_col: str):
    import geopandas as gpd

    if towns is None or len(towns) == 0:
        raise BoundaryError("towns: no polygons given; pass a GeoDataFrame of town polygons")
    if name_col not in towns.columns:
        raise BoundaryError(f"towns: no column {name_col!r} for town names; columns are {list(towns.columns)}")
    t = towns.to_crs(BNG) if towns.crs is not None else towns.set_crs(BNG)
    names = t[name_col].astype("string")
    if names.isna().any():
        i = int(np.flatnonzero(names.isna().to_numpy())[0])
        raise BoundaryError(f"towns: {int(names.isna().sum())} polygon(s) without a {name_col!r}; first is row {i + 1}")
    choices = []
    t = gpd.GeoDataFrame({"town": names.astype(str).to_numpy()}, geometry=t.geometry.values, crs=BNG)
    if t["town"].duplicated().any():
        dup = t.loc[t["town"].duplicated(), "town"].iloc[0]
        order = list(dict.fromkeys(t["town"]))
        t = t.dissolve("town").reindex(order).reset_index()
        choices.append(Choice("towns", f"{len(t)} towns", f"polygons sharing a name (first {dup!r}) dissolved into one town"))
    return t, choices


def _resolve_period(incidents: IncidentTable, period, as_of, months: int = 12) -> tuple[Period, list[Choice]]:
    if period is not None:
        if isinstance(period, str):
            period = Period.parse_range(period)
        return period, []
    if as_of is not None:
        a = str(as_of)
        if len(a) == 7:
            end = Period.parse(a, a)
            y, m = end.start.year, end.start.month - months + 1
            while m < 1:
                y, m = y - 1, m + 12
            p = Period(_dt.date(y, m, 1), end.end)
        else:
            e = _dt.date.fromisoformat(a[:10])
            s = (pd.Timestamp(e) - pd.DateOffset(months=months) + pd.Timedelta(days=1)).date()
            p = Period(s, e)
        return p, [Choice("look-back", f"{months} months to {a}", "default Grip look-back window ending at as_of")]
    lo, hi = incidents.months
    if hi is None:
        raise EmptyInputError("no incidents: nothing to rank (load data or widen the period)")
    end = Period.parse(hi, hi)
    y, m = end.start.year, end.start.month - months + 1
    while m < 1:
        y, m = y - 1, m + 12
    p = Period(_dt.date(y, m, 1), end.end)
    return p, [Choice("look-back", f"{p.months[0]} to {hi}", f"default {months} months ending at the latest month in the data")]


def _hamilton(total: int, shares: np.ndarray, names: list[str]) -> np.ndarray:
    """Largest-remainder split of ``total`` spots by ``shares`` (ties by name)."""
    s = np.asarray(shares, float)
    if s.sum() <= 0:
        return np.zeros(len(s), int)
    q = total * s / s.sum()
    base = np.floor(q).astype(int)
    rest = total - int(base.sum())
    order = sorted(range(len(s)), key=lambda i: (-(q[i] - base[i]), names[i]))
    for i in order[:rest]:
        base[i] += 1
    return base


def _components(ix: np.ndarray, iy: np.ndarray) -> np.ndarray:
    """Edge-adjacent (rook) groups of squares; returns a group label per square."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(ix)
    if n == 0:
        return np.zeros(0, int)
    key = {(int(a), int(b)): i for i, (a, b) in enumerate(zip(ix, iy))}
    r, c = [], []
    for i, (a, b) in enumerate(zip(ix, iy)):
        for da, db in ((1, 0), (0, 1)):
            j = key.get((int(a) + da, int(b) + db))
            if j is not None:
                r.append(i)
                c.append(j)
    g = coo_matrix((np.ones(len(r)), (r, c)), shape=(n, n))
    return connected_components(g, directed=False)[1]


def _binom_tails(k: np.ndarray, n: np.ndarray, p: float) -> tuple[np.ndarray, np.ndarray]:
    """P(X <= k) and P(X >= k) for X ~ Binomial(n, p), exact (log-factorial table)."""
    lo = np.ones(len(k))
    hi = np.ones(len(k))
    if not (0 < p < 1) or len(k) == 0:
        return lo, hi
    nmax = int(n.max())
    lf = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, nmax + 1)))])
    for i, (ki, ni) in enumerate(zip(k, n)):
        j = np.arange(ni + 1)
        pmf = np.exp(lf[ni] - lf[j] - lf[ni - j] + j * np.log(p) + (ni - j) * np.log1p(-p))
        lo[i] = min(1.0, pmf[: ki + 1].sum())
        hi[i] = min(1.0, pmf[ki:].sum())
    return lo, hi


def _trend(recent: np.ndarray, earlier: np.ndarray, p_recent: float, alpha: float = 0.05) -> tuple[list[str], np.ndarray]:
    """Recent vs earlier counts: exact binomial test, vectorised.

    Given n = recent + earlier, recent ~ Binomial(n, p_recent) under "no change";
    two-sided p = min(1, 2 * smaller tail), tails summed exactly from the
    binomial pmf in log space (no scipy import on the command's path).
    """
    r = np.asarray(recent, float)
    e = np.asarray(earlier, float)
    n = r + e
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(n > 0, (r / p_recent) / (e / (1 - p_recent)), np.nan) if 0 < p_recent < 1 else \
            np.full(len(r), np.nan)
        lower, upper = _binom_tails(r.astype(np.int64), n.astype(np.int64), p_recent)
    p = np.minimum(1.0, 2 * np.minimum(lower, upper))
    out = []
    for i in range(len(r)):
        if n[i] == 0:
            out.append("stable")
        elif not (0 < p_recent < 1):
            out.append("n/a")
        elif p[i] < alpha:
            out.append("up" if r[i] > n[i] * p_recent else "down")
        else:
            out.append("stable")
    return out, ratio


def _peak_windows(t: pd.Series, w: int = 4) -> tuple[str, str, float]:
    """Busiest days (covering half the incidents) and the busiest ``w``-hour window."""
    t = pd.to_datetime(t).dropna()
    if len(t) == 0:
        return "", "", float("nan")
    dow = np.bincount(t.dt.day_of_week.to_numpy(), minlength=7)
    order = np.argsort(-dow, kind="stable")
    cum, days = 0, []
    for d in order:
        days.append(int(d))
        cum += dow[d]
        if cum >= 0.5 * len(t):
            break
    hours = np.bincount(t.dt.hour.to_numpy(), minlength=24)
    win = np.array([hours[[(h + k) % 24 for k in range(w)]].sum() for h in range(24)])
    h0 = int(np.argmax(win))
    return (", ".join(DAYS[d] for d in sorted(days)), f"{h0:02d}:00-{(h0 + w) % 24:02d}:00",
            float(win[h0] / len(t)))


def _previous_ids(previous) -> tuple[set, set, pd.DataFrame | None]:
    if previous is None:
        return set(), set(), None
    if isinstance(previous, (list, tuple, set)):
        prev = pd.DataFrame({"spot_id": [str(s) for s in previous]})
    else:
        prev = pd.DataFrame(previous).copy()
        if "spot_id" not in prev.columns:
            raise HarmspotError(f"previous cycle: no 'spot_id' column; columns are {list(prev.columns)}")
    ids = set(prev["spot_id"].astype(str))
    cells = set(ids)
    if "cell_ids" in prev.columns:
        for v in prev["cell_ids"].dropna().astype(str):
            cells.update(v.split(";"))
    return ids, cells, prev


def town_squares(sel: IncidentTable, town_geoms, cell: float, weights: WeightTable) -> dict:
    """Harm and counts per BNG square for the squares whose centroid lies in a town.

    The fast kernel of :func:`select_spots` (its slow twin is
    :func:`geo.units.counts.count_units`, tested to agree exactly): one
    :class:`geo.units.lattice.Lattice` per town over the town's bounds, centroids tested
    with ``shapely.contains_xy``, incidents summed with ``numpy.bincount`` in table
    order (the same summation order as ``count_units``, so equal floats).
    The first town in order owns a square claimed by two.

    Returns a dict of arrays for the squares with at least one incident:
    ``town`` (town position), ``ix``, ``iy``, ``harm``, ``count``,
    ``by_category`` ({"count_<type>": array}); and ``town_cells`` (squares per
    town, incident or not) and ``not_in_town`` (incidents in no town square).
    """
    from geo.units.lattice import Lattice

    df = sel.frame
    x, y = df["x"].to_numpy(float), df["y"].to_numpy(float)
    w = weights.weights_for(df)
    cats = df["category"].astype(str).to_numpy()
    cat_names = sorted(set(cats))
    cat_code = np.searchsorted(np.array(cat_names, dtype=object), cats) if len(cats) else np.zeros(0, int)
    counted = np.zeros(len(df), bool)
    parts = []
    town_cells = np.zeros(len(town_geoms), np.int64)
    for ti, g in enumerate(town_geoms):
        if g is None or g.is_empty:
            continue
        lat = Lattice.from_bounds(cell, g.bounds)
        gx, gy = lat.centres()
        shapely.prepare(g)
        inside = shapely.contains_xy(g, gx, gy)
        flat = np.flatnonzero(inside)
        cix = flat % lat.nx + lat.ix0
        ciy = flat // lat.nx + lat.iy0
        # first town wins: drop centroids already inside an earlier town (bounding boxes overlapping)
        for tj in range(ti):
            e = town_geoms[tj]
            if e is None or e.is_empty or not shapely.intersects(shapely.box(*e.bounds), shapely.box(*g.bounds)):
                continue
            fresh = ~shapely.contains_xy(e, (cix + 0.5) * cell, (ciy + 0.5) * cell)
            flat, cix, ciy = flat[fresh], cix[fresh], ciy[fresh]
        town_cells[ti] = len(flat)
        mine = np.zeros(lat.size, bool)
        mine[flat] = True
        code = lat.flat(x, y)
        ok = code >= 0
        ok[ok] = mine[code[ok]]
        counted |= ok
        c = code[ok]
        n_by = np.bincount(c, minlength=lat.size)
        hit = np.flatnonzero(n_by)
        h_by = np.bincount(c, weights=w[ok], minlength=lat.size)
        cat_by = {}
        for k, name in enumerate(cat_names):
            m = cat_code[ok] == k
            cat_by[f"count_{name}"] = np.bincount(c[m], minlength=lat.size)[hit].astype(np.int64)
        parts.append({"town": np.full(len(hit), ti, np.int64), "ix": hit % lat.nx + lat.ix0,
                      "iy": hit // lat.nx + lat.iy0, "harm": h_by[hit], "count": n_by[hit].astype(np.int64),
                      "by_category": cat_by})
    keys = ("town", "ix", "iy", "harm", "count")
    out = {k: np.concatenate([p[k] for p in parts]) if parts else np.zeros(0, np.int64 if k != "harm" else float)
           for k in keys}
    out["ix"] = out["ix"].astype(np.int64)
    out["iy"] = out["iy"].astype(np.int64)
    out["by_category"] = {f"count_{n}": np.concatenate([p["by_category"][f"count_{n}"] for p in parts])
                          if parts else np.zeros(0, np.int64) for n in cat_names}
    out["town_cells"] = town_cells
    out["not_in_town"] = int((~counted).sum())
    return out


# --------------------------------------------------------------------------- main entry
def select_spots(
    incidents: IncidentTable,
    towns,
    *,
    name_col: str = "name",
    n: int = 20,
    budget: int | None = None,
    cell: float = 150.0,
    weights: WeightTable | None = None,
    period: Period | None = None,
    outcome="auto",
    min_events: int | None = None,
    separation: float | None = None,
    exclusions=None,
    merge: bool = False,
    previous=None,
    as_of=None,
    area=None,
    visits_per_day: int = 1,
    minutes: int = 15,
    max_gap_days: int = 4,
    recent_fraction: float = 0.25,
) -> AnalysisResult:
    """Rank Grip harm spots (BNG squares) per town and plan their patrols.

    Parameters
    ----------
    incidents : IncidentTable
        Any incidents; the outcome and period are selected here.
    towns : GeoDataFrame
        Town polygons with a name column ``name_col``.
    n : int, default 20
        Spots per town (ignored when ``budget`` is given).
    budget : int, optional
        Force-wide number of spots, split between towns by their outcome harm
        (largest remainder; ties by town name).
    cell : float, default 150
        Square size in metres (BNG-aligned, so ids are stable between runs).
    weights : WeightTable, default the shipped ``cchi-national-2026``.
    period : Period, optional
        Look-back window; default 12 months ending at the latest month in the
        data (or at ``as_of``). Echoed as a choice.
    outcome : "auto" | "community-violence" | "police-uk-proxy" | list of types
        See the module docstring; "auto" uses community violence for force data
        and the police.uk proxy otherwise.
    min_events, separation, exclusions, merge
        Optional rules, off unless given: minimum count per spot, minimum
        centroid distance in metres between spots of the same run, polygons
        whose overlapping squares are never spots, merging of edge-adjacent spots.
    previous : DataFrame | list of ids, optional
        Last cycle's spots (``spot_id``, optionally ``cell_ids``) for ``status``.
    as_of : "YYYY-MM" | "YYYY-MM-DD", optional
        End of the default look-back window.
    area : polygon or GeoDataFrame, optional
        Study area: incidents outside it are not counted (exactly as
        ``harmspot cells`` does with the store's study area); their number is reported.
    visits_per_day, minutes, max_gap_days : patrol dose (default one 15-minute
        visit a day at varying times, at most 4 days between visits).
    recent_fraction : float, default 0.25
        Share of the window's exposure (months or days with data) called "recent" for the trend.

    Returns
    -------
    AnalysisResult
        ``layer`` (one row per spot, EPSG:27700): ``spot_id`` (the BNG square id,
        e.g. ``150m_E571200_N206400``; for merged spots the id of its highest-harm
        square), ``town``, ``rank`` (1 = most harm in the town), ``harm``,
        ``count``, ``count_<type>`` per police.uk type, ``share_harm`` (of the
        town's outcome harm), ``cum_share_harm``, ``share_area`` (spot squares /
        town squares), ``cum_share_area``, ``cells`` (squares in the spot),
        ``cell_ids`` (";"-joined), ``location`` (most common police.uk Location
        label among its incidents), ``count_recent``, ``count_earlier``,
        ``trend_ratio`` (recent rate / earlier rate), ``trend`` (up/down/stable),
        ``status`` (new/retained, or "n/a" with no previous cycle),
        ``target_visits_per_day``, ``target_minutes``, geometry.
        ``tables["concentration"]``: per town and k = 1..squares: ``town``, ``k``,
        ``cell_id``, ``harm``, ``share_area``, ``share_harm``, ``share_count`` (cumulative).
        ``tables["towns"]``: per town squares, harm, count, spots, spot shares.
        ``tables["plan"]``: per spot ``spot_id``, ``town``, ``rank``, ``location``,
        ``visits_per_day``, ``minutes_per_visit``, ``max_gap_days``, ``peak_days``,
        ``peak_hours``, ``peak_share``, ``timing`` (advice), ``easting``, ``northing``.
        ``tables["changes"]``: spot_id, town, status (new/retained/dropped).
    """
    choices: list[Choice] = []
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise HarmspotError(f"n (spots per town) must be a whole number of at least 1; got {n!r}")
    if budget is not None and (not isinstance(budget, (int, np.integer)) or budget < 1):
        raise HarmspotError(f"budget must be a whole number of spots of at least 1; got {budget!r}")
    if min_events is not None and min_events < 1:
        raise HarmspotError(f"min_events must be at least 1; got {min_events!r}")
    if separation is not None and not (np.isfinite(separation) and separation > 0):
        raise HarmspotError(f"separation must be a positive distance in metres; got {separation!r}")
    for nm, v in (("visits_per_day", visits_per_day), ("minutes", minutes), ("max_gap_days", max_gap_days)):
        if v is None or v < 1:
            raise HarmspotError(f"{nm} must be at least 1; got {v!r}")
    if not (0 < recent_fraction < 1):
        raise HarmspotError(f"recent_fraction must be between 0 and 1; got {recent_fraction!r}")
    tw, tchoices = _towns_frame(towns, name_col)
    choices += tchoices
    units = SquareGrid(cell)
    if weights is None:
        weights = WeightTable.builtin()
        choices.append(Choice("weight table", weights.name, "default harm table (CCHI national 2026)"))
    period, pchoices = _resolve_period(incidents, period, as_of)
    choices += pchoices

    df_all = incidents.frame
    in_period = period.mask(df_all["month"], df_all["occurred_at"])
    keep = in_period.copy()
    outside = 0
    if area is not None:
        geom = area.union_all() if hasattr(area, "union_all") else area
        shapely.prepare(geom)
        inside = shapely.contains_xy(geom, df_all["x"].to_numpy(float), df_all["y"].to_numpy(float))
        outside = int((keep & ~inside).sum())
        keep &= inside
    mask, outcome_name, ochoices, cats = outcome_mask(incidents, outcome)
    choices += ochoices
    if outcome_name in ("police-uk-proxy", "categories") and "Possession of weapons" in (cats or []) \
            and not weights.proactive:
        choices.append(Choice("possession of weapons", "counted, harm 0",
                              "CCHI proactive rule: weapons possession weighs 0 unless proactive=True (--proactive)"))
    sel = incidents.filter(mask=keep & mask)
    # exposure for the trend: months (or days) with any data (any type) in the window
    timed = sel.has_times
    if timed:
        day = pd.to_datetime(df_all["occurred_at"][keep]).dt.normalize()
        expo_units = np.array(sorted(day.dropna().unique()))
    else:
        expo_units = np.array(sorted(df_all["month"][keep].dropna().astype(str).unique()))
    n_recent = max(1, int(round(len(expo_units) * recent_fraction))) if len(expo_units) else 0
    recent_set = set(expo_units[len(expo_units) - n_recent:]) if n_recent else set()
    p_recent = n_recent / len(expo_units) if len(expo_units) else 0.0

    sq = town_squares(sel, tw.geometry.values, cell, weights)
    town_of, ix, iy, harm, cnt = sq["town"], sq["ix"], sq["iy"], sq["harm"], sq["count"]
    n_cells = len(ix)
    cid = units.ids(ix, iy)
    cx, cy = (ix + 0.5) * cell, (iy + 0.5) * cell
    count_cols = sorted(sq["by_category"])
    catcounts = sq["by_category"]
    town_cells = sq["town_cells"]

    # which squares may be spots
    eligible = (town_of >= 0) & (harm > 0)
    if min_events is not None:
        eligible &= cnt >= int(min_events)
        choices.append(Choice("minimum events", int(min_events), "rule asked for", automatic=False))
    if exclusions is not None:
        ex = exclusions.to_crs(BNG) if getattr(exclusions, "crs", None) is not None else exclusions
        exg = ex.union_all() if hasattr(ex, "union_all") else ex
        boxes = shapely.box(ix * cell, iy * cell, (ix + 1) * cell, (iy + 1) * cell)
        shapely.prepare(exg)
        inter = shapely.intersects(exg, boxes)
        over = np.zeros(n_cells, bool)
        over[inter] = shapely.area(shapely.intersection(boxes[inter], exg)) > 0
        choices.append(Choice("exclusions", f"{int((over & eligible).sum())} squares excluded",
                              "squares overlapping an exclusion polygon are never spots", automatic=False))
        eligible &= ~over

    # per-town order and concentration
    names = list(tw["town"])
    hkey = np.round(harm, 6)  # float sums of equal weights tie exactly whatever the summation order
    order_key = np.lexsort((cid.astype(str), -cnt, -hkey))  # harm desc, count desc, id asc
    town_total_h = np.bincount(town_of[town_of >= 0], weights=harm[town_of >= 0], minlength=len(tw))
    town_total_c = np.bincount(town_of[town_of >= 0], weights=cnt[town_of >= 0], minlength=len(tw))
    if budget is not None:
        alloc = _hamilton(int(budget), town_total_h, names)
        choices.append(Choice("spots per town", dict(zip(names, alloc.tolist())),
                              f"force-wide budget of {budget} split by each town's outcome harm (largest remainder)"))
    else:
        alloc = np.full(len(tw), int(n))
    conc_parts = []
    picked: list[int] = []
    picked_town: list[int] = []
    short = {}
    for ti in range(len(tw)):
        ordered = order_key[town_of[order_key] == ti]
        nt = int(town_cells[ti])
        if nt:
            h = harm[ordered]
            k = np.arange(1, len(ordered) + 1)
            part = pd.DataFrame({
                "town": names[ti], "k": k, "cell_id": cid[ordered], "harm": h, "count": cnt[ordered],
                "share_area": k / nt,
                "share_harm": np.cumsum(h) / h.sum() if h.sum() > 0 else np.zeros(len(h)),
                "share_count": np.cumsum(cnt[ordered]) / max(cnt[ordered].sum(), 1),
            })
            if len(ordered) < nt:  # the squares with no outcome incident close the curve at (1, 1)
                part = pd.concat([part, pd.DataFrame({
                    "town": [names[ti]], "k": [nt], "cell_id": [f"({nt - len(ordered)} squares with none)"],
                    "harm": [0.0], "count": [0], "share_area": [1.0], "share_harm": [1.0 if h.sum() > 0 else 0.0],
                    "share_count": [1.0 if cnt[ordered].sum() > 0 else 0.0]})], ignore_index=True)
            conc_parts.append(part)
        cand = ordered[eligible[ordered]]
        chosen: list[int] = []
        for c in cand:
            if len(chosen) >= alloc[ti]:
                break
            if separation is not None and chosen:
                d = np.hypot(cx[chosen] - cx[c], cy[chosen] - cy[c])
                if (d < separation).any():
                    continue
            chosen.append(int(c))
        if len(chosen) < alloc[ti]:
            short[names[ti]] = (int(alloc[ti]), len(chosen))
        picked += chosen
        picked_town += [ti] * len(chosen)
    if separation is not None:
        choices.append(Choice("minimum separation", f"{separation:g} m", "rule asked for", automatic=False))
    for t, (want, got) in short.items():
        choices.append(Choice(f"spots in {t}", got, f"only {got} of {want} squares qualify (harm > 0 and the rules)"))
    picked_a = np.asarray(picked, np.int64)
    picked_t = np.asarray(picked_town, np.int64)

    # spots (one square each, or merged groups)
    group = np.arange(len(picked_a))
    if merge and len(picked_a):
        group = np.full(len(picked_a), -1)
        nxt = 0
        for ti in np.unique(picked_t):
            m = np.flatnonzero(picked_t == ti)
            lab = _components(ix[picked_a[m]], iy[picked_a[m]])
            group[m] = lab + nxt
            nxt += int(lab.max()) + 1
        choices.append(Choice("merge", "adjacent squares merged", "rule asked for", automatic=False))
    rows = []
    for g in np.unique(group):
        mem = picked_a[group == g]
        mem = mem[np.lexsort((cid[mem].astype(str), -cnt[mem], -hkey[mem]))]
        ti = int(town_of[mem[0]])
        r = {"spot_id": str(cid[mem[0]]), "town": names[ti], "harm": float(harm[mem].sum()),
             "count": int(cnt[mem].sum())}
        for c in count_cols:
            r[c] = int(catcounts[c][mem].sum())
        r.update({"cells": len(mem), "cell_ids": ";".join(str(x) for x in cid[mem]), "_members": mem, "_ti": ti})
        rows.append(r)
    spots = pd.DataFrame(rows)
    if spots.empty:
        spots = pd.DataFrame(columns=["spot_id", "town", "harm", "count", *count_cols, "cells", "cell_ids",
                                      "_members", "_ti"])
    spots["_hkey"] = np.round(spots["harm"].astype(float), 6)
    spots = spots.sort_values(["_ti", "_hkey", "count", "spot_id"], ascending=[True, False, False, True],
                              kind="stable").reset_index(drop=True)
    spots["rank"] = spots.groupby("_ti").cumcount() + 1
    tot_h = town_total_h[spots["_ti"].to_numpy(np.int64)] if len(spots) else np.zeros(0)
    tcells = town_cells[spots["_ti"].to_numpy(np.int64)] if len(spots) else np.zeros(0)
    spots["share_harm"] = np.where(tot_h > 0, spots["harm"].to_numpy(float) / np.where(tot_h > 0, tot_h, 1), 0.0)
    spots["cum_share_harm"] = spots.groupby("_ti")["share_harm"].cumsum()
    spots["share_area"] = spots["cells"].to_numpy(float) / np.maximum(tcells, 1)
    spots["cum_share_area"] = spots.groupby("_ti")["share_area"].cumsum()

    # incidents -> spots (labels, trend, timing)
    sdf = sel.frame
    code = units.assign(sdf, pd.DataFrame({"ix": ix, "iy": iy}))
    cell_to_spot = np.full(n_cells, -1, np.int64)
    for si, mem in enumerate(spots["_members"]):
        cell_to_spot[np.asarray(mem, np.int64)] = si
    inc_spot = np.where(code >= 0, cell_to_spot[np.maximum(code, 0)], -1)
    ok = inc_spot >= 0
    loc = pd.DataFrame({"s": inc_spot[ok], "location": sdf["location"].to_numpy()[ok]}).dropna()
    if len(loc):
        vc = loc.value_counts(["s", "location"]).reset_index(name="k")
        vc = vc.sort_values(["s", "k", "location"], ascending=[True, False, True]).drop_duplicates("s")
        lab = dict(zip(vc["s"], vc["location"]))
    else:
        lab = {}
    spots["location"] = [lab.get(i, "") for i in range(len(spots))]
    unit_of = (pd.to_datetime(sdf["occurred_at"]).dt.normalize().to_numpy() if timed
               else sdf["month"].astype(str).to_numpy())
    is_recent = pd.Series(unit_of).isin(recent_set).to_numpy(bool)
    rec = np.bincount(inc_spot[ok & is_recent], minlength=len(spots))[:len(spots)]
    ear = np.bincount(inc_spot[ok & ~is_recent], minlength=len(spots))[:len(spots)]
    trend, ratio = _trend(rec, ear, p_recent)
    spots["count_recent"] = rec.astype(np.int64)
    spots["count_earlier"] = ear.astype(np.int64)
    spots["trend_ratio"] = ratio
    spots["trend"] = trend
    if len(expo_units):
        lo_r = str(min(recent_set))[:10]
        choices.append(Choice("trend window", f"recent = last {n_recent} of {len(expo_units)} "
                              f"{'days' if timed else 'months'} with data (from {lo_r})",
                              "exact binomial test of recent vs earlier counts, p < 0.05"))

    # status against the previous cycle
    prev_ids, prev_cells, prev = _previous_ids(previous)
    if prev is None:
        spots["status"] = "n/a"
        changes = spots[["spot_id", "town"]].assign(status="n/a")
    else:
        st = []
        for sid, ids in zip(spots["spot_id"], spots["cell_ids"]):
            st.append("retained" if sid in prev_ids or any(c in prev_cells for c in ids.split(";")) else "new")
        spots["status"] = st
        now_cells = set(";".join(spots["cell_ids"]).split(";")) if len(spots) else set()
        dropped = prev[~prev["spot_id"].astype(str).isin(set(spots["spot_id"])) &
                       ~prev["spot_id"].astype(str).isin(now_cells)]
        changes = pd.concat([
            spots[["spot_id", "town", "status"]],
            pd.DataFrame({"spot_id": dropped["spot_id"].astype(str).to_numpy(),
                          "town": dropped["town"].astype(str).to_numpy() if "town" in dropped.columns else "",
                          "status": "dropped"}),
        ], ignore_index=True)
    spots["target_visits_per_day"] = int(visits_per_day)
    spots["target_minutes"] = int(minutes)

    # patrol plan
    plan_rows = []
    has_t = sdf["occurred_at"].notna().to_numpy()
    for si, r in spots.iterrows():
        m = ok & (inc_spot == si) & has_t
        pd_, ph, ps = _peak_windows(sdf["occurred_at"][m]) if m.sum() >= 5 else ("", "", float("nan"))
        if pd_:
            timing = f"vary visit times; weight towards {pd_} {ph} ({ps:.0%} of timed incidents in that window)"
        elif m.sum() > 0:
            timing = f"vary visit times (only {int(m.sum())} timed incidents: too few for a peak)"
        else:
            timing = "vary visit times across the day and week (no incident times in the data)"
        mem = np.asarray(r["_members"], np.int64)
        plan_rows.append({
            "spot_id": r["spot_id"], "town": r["town"], "rank": int(r["rank"]), "location": r["location"],
            "visits_per_day": int(visits_per_day), "minutes_per_visit": int(minutes),
            "max_gap_days": int(max_gap_days), "peak_days": pd_, "peak_hours": ph, "peak_share": ps,
            "timing": timing, "easting": float(cx[mem].mean()), "northing": float(cy[mem].mean()),
        })
    plan = pd.DataFrame(plan_rows, columns=["spot_id", "town", "rank", "location", "visits_per_day",
                                            "minutes_per_visit", "max_gap_days", "peak_days", "peak_hours",
                                            "peak_share", "timing", "easting", "northing"])

    # geometry
    geoms = [shapely.union_all(shapely.box(ix[m] * cell, iy[m] * cell, (ix[m] + 1) * cell, (iy[m] + 1) * cell))
             for m in (np.asarray(mem, np.int64) for mem in spots["_members"])]
    import geopandas as gpd

    cols = ["spot_id", "town", "rank", "harm", "count", "share_harm", "cum_share_harm", "share_area",
            "cum_share_area", "cells", "cell_ids", "location", "count_recent", "count_earlier", "trend_ratio",
            "trend", "status", "target_visits_per_day", "target_minutes"] + count_cols
    out = gpd.GeoDataFrame(spots[cols].reset_index(drop=True), geometry=geoms, crs=BNG)
    conc = pd.concat(conc_parts, ignore_index=True) if conc_parts else pd.DataFrame(
        columns=["town", "k", "cell_id", "harm", "count", "share_area", "share_harm", "share_count"])
    towns_tab = pd.DataFrame({
        "town": names, "cells": town_cells, "harm": town_total_h, "count": town_total_c.astype(np.int64),
        "spots": [int((spots["town"] == t).sum()) for t in names],
        "spot_cells": [int(spots.loc[spots["town"] == t, "cells"].sum()) for t in names],
    })
    towns_tab["spot_share_harm"] = [float(spots.loc[spots["town"] == t, "harm"].sum() / h) if h > 0 else 0.0
                                    for t, h in zip(names, town_total_h)]
    towns_tab["spot_share_area"] = towns_tab["spot_cells"] / towns_tab["cells"].clip(lower=1)
    summary = {
        "spots": int(len(out)),
        "towns": {r.town: {"spots": int(r.spots), "cells": int(r.cells), "harm": float(r.harm),
                           "spot_share_harm": float(r.spot_share_harm), "spot_share_area": float(r.spot_share_area)}
                  for r in towns_tab.itertuples()},
        "outcome": outcome_name,
        "outcome_categories": cats,
        "incidents_in_outcome": int(len(sel)),
        "incidents_outside_area": int(outside),
        "not_in_any_town_square": int(sq["not_in_town"]),
        "statuses": {k: int(v) for k, v in changes["status"].value_counts().items()},
    }
    params = {**units.describe(), "n": int(n) if budget is None else None, "budget": budget,
              "outcome": outcome_name, "categories": cats, "min_events": min_events, "separation_m": separation,
              "exclusions": exclusions is not None, "merge": bool(merge), "visits_per_day": visits_per_day,
              "minutes": minutes, "max_gap_days": max_gap_days, "recent_fraction": recent_fraction,
              "town_rule": "a square belongs to the town whose polygon contains its centroid"}
    return AnalysisResult(
        kind="grip", layer=out, params=params, choices=choices, weight_table=weights.describe(), period=period,
        inputs={"incidents": int(len(incidents)), "incidents_in_period": int(in_period.sum()), "towns": names},
        tables={"concentration": conc, "plan": plan, "towns": towns_tab, "changes": changes},
        summary=summary,
    )


def gpd_of(geom):
    """A one-row BNG GeoDataFrame of ``geom`` (count_units' ``area`` argument)."""
    import geopandas as gpd

    return gpd.GeoDataFrame({"name": ["towns"]}, geometry=[geom], crs=BNG)


# --------------------------------------------------------------------------- crossover
def _seed_for(seed: int, label: str) -> int:
    """A per-label seed derived from ``seed`` (stable across runs and machines)."""
    h = hashlib.sha256(f"{seed}|{label}".encode()).digest()
    return int.from_bytes(h[:8], "little")


def crossover_schedule(spot_ids, start, days: int, k: int, seed: int) -> pd.DataFrame:
    """A seeded crossover schedule: each day ``k`` of the N spots are patrolled (treated), the rest are controls.

    Design: balanced randomisation. Each day the ``k`` spots with the fewest
    treated days so far are treated, ties broken by a seeded random draw, so
    every spot is treated ``days * k / N`` days (within one) and no spot is
    treated twice on a day. The same ``(spot_ids, start, days, k, seed)`` always
    gives the same schedule.

    Parameters
    ----------
    spot_ids : sequence of str (unique)
    start : date or "YYYY-MM-DD"
        First day of the schedule.
    days : int, at least 1
    k : int, 0 <= k <= N
    seed : int

    Returns
    -------
    DataFrame with ``spot_id``, ``date`` ("YYYY-MM-DD") and ``treated`` (bool):
    one row per spot per day (``N * days`` rows; ``k * days`` treated), ordered by
    date then the given spot order.
    """
    ids = [str(s) for s in spot_ids]
    nspot = len(ids)
    if nspot == 0:
        raise HarmspotError("crossover schedule: no spots given")
    if len(set(ids)) != nspot:
        dup = pd.Series(ids)[pd.Series(ids).duplicated()].iloc[0]
        raise HarmspotError(f"crossover schedule: spot ids must be unique; {dup!r} repeats")
    if not isinstance(days, (int, np.integer)) or days < 1:
        raise HarmspotError(f"crossover schedule: days must be a whole number of at least 1; got {days!r}")
    if not isinstance(k, (int, np.integer)) or not (0 <= k <= nspot):
        raise HarmspotError(f"crossover schedule: k (treated spots per day) must be 0..{nspot}; got {k!r}")
    try:
        d0 = pd.Timestamp(start).normalize()
    except (ValueError, TypeError):
        raise HarmspotError(f"crossover schedule: start {start!r} is not a date (use YYYY-MM-DD)") from None
    rng = np.random.default_rng(seed)
    treated_n = np.zeros(nspot, np.int64)
    tr = np.zeros((days, nspot), bool)
    for d in range(days):
        order = np.lexsort((rng.random(nspot), treated_n))
        on = order[:k]
        tr[d, on] = True
        treated_n[on] += 1
    dates = pd.date_range(d0, periods=days, freq="D").strftime("%Y-%m-%d")
    return pd.DataFrame({"spot_id": np.tile(np.array(ids, dtype=object), days),
                         "date": np.repeat(np.asarray(dates, dtype=object), nspot),
                         "treated": tr.ravel()})
