r"""Emerging hot spots: which hot spots are new, persistent, intensifying or fading?

:func:`emerging_hotspots` follows ArcGIS Pro's *Emerging Hot Spot Analysis*
(EHSA) on a fixed set of units:

1. incidents (or harm) per unit per time step (calendar months, 7 or 14 days);
2. Gi* per time step on the same units and neighbours (:mod:`geo.gistar`),
   significance per step with the chosen multiple-testing control, a unit being a
   *hot* (*cold*) step when its adjusted p <= ``alpha`` (default 0.10, ArcGIS's 90%)
   and z > 0 (< 0);
3. a Mann–Kendall trend test on each unit's series of Gi* z-scores;
4. the ArcGIS pattern for each unit (hot versions; cold ones mirror them):

   ============== =============================================================
   new            hot at the final step only, never hot (or cold) before
   consecutive    a single run of >= 2 hot steps ending at the final step, never
                  hot before the run, never cold, < 90% of steps hot
   intensifying   hot in >= 90% of steps including the final one; Mann–Kendall
                  trend up (p < ``trend_alpha``)
   persistent     hot in >= 90% of steps including the final one; no significant trend
   diminishing    hot in >= 90% of steps including the final one; trend down
   sporadic       hot at the final step, on-and-off before, never cold
   oscillating    hot at the final step, cold at some earlier step
   historical     not hot at the final step, hot in >= 90% of steps
   no pattern     none of the above
   ============== =============================================================

Mann–Kendall: :math:`S=\sum_{i<j}\operatorname{sgn}(x_j-x_i)`,
:math:`\operatorname{Var}S = [T(T-1)(2T+5)-\sum_g t_g(t_g-1)(2t_g+5)]/18`
(ties :math:`t_g`), :math:`z=(S-\operatorname{sgn}S)/\sqrt{\operatorname{Var}S}`
(continuity-corrected), two-sided normal p; :math:`\tau_b` is reported.

Differences from ArcGIS: neighbours are spatial only within each time step (ArcGIS
also pools neighbouring time steps), and time steps with no incidents anywhere
(gaps in the data, e.g. Essex's missing August-September 2018) are left out and
listed, never filled with zeros. ArcGIS advises at least 10 time steps; fewer are
allowed here with a warning echoed as a choice.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from geo.core.errors import EmptyInputError, HarmspotError
from geo.core.result import AnalysisResult, Choice


PATTERNS = ["new", "consecutive", "intensifying", "persistent", "diminishing", "sporadic", "oscillating",
            "historical"]
LABELS = [f"{p} hot spot" for p in PATTERNS] + [f"{p} cold spot" for p in PATTERNS] + ["no pattern"]


def mann_kendall(x, continuity: bool = True) -> dict:
    """Mann–Kendall trend test on each row of ``x`` (n, T) (or one series (T,)).

    Returns a dict of arrays: ``s``, ``var_s``, ``z``, ``p`` (two-sided), ``tau_b``
    (Kendall's tau-b against time) and ``trend`` (+1 / -1 / 0 sign of S).
    """
    x = np.asarray(x, float)
    one = x.ndim == 1
    x = np.atleast_2d(x)
    n, t = x.shape
    if t < 3:
        raise HarmspotError(f"Mann-Kendall needs at least 3 time steps; got {t}")
    s = np.zeros(n)
    for i in range(t - 1):
        s += np.sign(x[:, i + 1:] - x[:, [i]]).sum(axis=1)
    xs = np.sort(x, axis=1)
    tie_term = np.zeros(n)
    tie_pairs = np.zeros(n)
    run = np.ones(n)
    for j in range(1, t + 1):
        same = xs[:, j] == xs[:, j - 1] if j < t else np.zeros(n, bool)
        ended = ~same
        tie_term += np.where(ended, run * (run - 1) * (2 * run + 5), 0.0)
        tie_pairs += np.where(ended, run * (run - 1) / 2, 0.0)
        run = np.where(same, run + 1, 1.0)
    var = (t * (t - 1) * (2 * t + 5) - tie_term) / 18.0
    num = s - np.sign(s) if continuity else s
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(var > 0, num / np.sqrt(var), 0.0)
        n0 = t * (t - 1) / 2
        tau = np.where(n0 - tie_pairs > 0, s / np.sqrt(n0 * (n0 - tie_pairs)), 0.0)
    p = 2 * stats.norm.sf(np.abs(z))
    out = {"s": s, "var_s": var, "z": z, "p": p, "tau_b": tau, "trend": np.sign(s)}
    return {k: v[0] for k, v in out.items()} if one else out


def ehsa_classify(z, hot, cold, trend_alpha: float = 0.05) -> tuple[np.ndarray, dict]:
    """ArcGIS EHSA pattern per unit from Gi* z (n, T) and hot/cold step masks (n, T)."""
    z = np.asarray(z, float)
    hot = np.asarray(hot, bool)
    cold = np.asarray(cold, bool)
    n, t = z.shape
    mk = mann_kendall(np.nan_to_num(z), continuity=True)
    sig = mk["p"] < trend_alpha
    labels = np.full(n, "no pattern", dtype=object)

    def side(m, other, name):
        frac = m.sum(axis=1) >= 0.9 * t
        final = m[:, -1]
        prior = m[:, :-1].any(axis=1)
        other_prior = other[:, :-1].any(axis=1)
        # length of the run of flagged steps ending at the final step
        run = np.zeros(n, int)
        still = np.ones(n, bool)
        for j in range(t - 1, -1, -1):
            still &= m[:, j]
            run += still
        before_run = np.array([m[i, :t - run[i]].any() for i in range(n)]) if n else np.zeros(0, bool)
        up = mk["trend"] > 0 if name == "hot" else mk["trend"] < 0  # "intensifying" = more extreme
        res = np.full(n, None, dtype=object)
        rules = [
            (final & frac & sig & up, "intensifying"),
            (final & frac & sig & ~up, "diminishing"),
            (final & frac, "persistent"),
            (final & ~prior & ~other_prior, "new"),
            (final & (run >= 2) & ~before_run & ~other_prior, "consecutive"),
            (final & other_prior, "oscillating"),
            (final, "sporadic"),
            (~final & frac, "historical"),
        ]
        for mask, pat in rules:
            take = mask & (res == None)  # noqa: E711 (object array)
            res[take] = f"{pat} {name} spot"
        return res

    h = side(hot, cold, "hot")
    c = side(cold, hot, "cold")
    labels = np.where(h != None, h, np.where(c != None, c, labels))  # noqa: E711
    return labels.astype(object), mk


def choose_freq(frame: pd.DataFrame, period=None) -> tuple[str, str]:
    """Time step from the data: months for month-only data or spans >= 300 days; else 14 or 7 days."""
    has_times = frame["occurred_at"].notna().all() if len(frame) else False
    if period is not None:
        span = period.days
    else:
        mon = pd.PeriodIndex(frame["month"].astype(str), freq="M")
        span = (mon.max() - mon.min()).n * 30 + 30 if len(frame) else 0
    if not has_times:
        return "M", "police.uk data give months only"
    if span >= 300:
        return "M", f"span of {span} days: monthly steps"
    if span >= 140:
        return "14D", f"span of {span} days: fortnightly steps (at least 10)"
    return "7D", f"span of {span} days: weekly steps"


def emerging_hotspots(
    incidents,
    units=None,
    weights=None,
    *,
    area=None,
    period=None,
    categories=None,
    freq: str = "auto",
    band: float | None = None,
    ring: int | None = None,
    contiguity: str = "queen",
    weight: str = "count",
    adjust: str = "fdr",
    alpha: float = 0.10,
    trend_alpha: float = 0.05,
    inputs: dict | None = None,
    neighbour_cache=None,
) -> AnalysisResult:
    """Which hot spots are new, persistent, intensifying, diminishing...? (ArcGIS EHSA classes).

    Parameters
    ----------
    incidents, units, weights, area, period, categories : as :func:`geo.hotspots.gistar.hotspots_gistar`.
    freq : {"auto", "M", "7D", "14D"}
        Time step; ``auto`` chooses from the span and whether times are known (echoed).
    band, ring, contiguity : neighbours, as Gi*.
    weight : {"count", "harm"} - the variable tested.
    adjust : multiple-testing control per time step (default BH FDR).
    alpha : level of a hot/cold step (default 0.10 = ArcGIS's 90% confidence).
    trend_alpha : level of the Mann–Kendall trend (default 0.05).
    neighbour_cache : :class:`geo.units.neighbours.cache.NeighbourCache`, optional - H3/polygon matrices built once and reused.

    Returns
    -------
    AnalysisResult
        ``layer``: every unit with ``cell_id``, ``count``, ``harm`` (whole period),
        ``pattern`` (e.g. "new hot spot"), ``hot_steps``, ``cold_steps``, ``final_z``,
        ``mk_tau``, ``mk_z``, ``mk_p`` and geometry.
        ``tables``: ``z`` (unit x step Gi* z), ``patterns`` (counts per pattern).
        ``summary``: steps used, steps left out (no data), pattern counts.
    """
    from geo.units.counts import count_units, resolve_defaults, unit_window_matrix
    from geo.hotspots.change import units_frame_like
    from geo.hotspots.significance import adjust_pvalues
    from geo.hotspots.gistar import gistar_z
    from geo.units.neighbours.build import neighbours_for

    if weight not in ("count", "harm"):
        raise HarmspotError(f"--weight {weight!r}: use 'count' or 'harm'")
    choices: list[Choice] = []
    units, weights, picked = resolve_defaults(units, weights)
    choices += picked
    base = count_units(incidents, units, weights, area=area, period=period, categories=categories, inputs=inputs)
    choices += base.choices
    sel = incidents.filter(period=period, categories=categories, area=area)
    if len(sel) == 0:
        raise EmptyInputError("no incidents in the study area for this period and these categories")
    if freq == "auto":
        freq, why = choose_freq(sel.frame, period)
        choices.append(Choice("time step", {"M": "calendar month", "7D": "7 days", "14D": "14 days"}[freq], why))
    elif freq.upper() not in ("M", "7D", "14D"):
        raise HarmspotError(f"--freq {freq!r}: use auto, M, 7D or 14D")
    freq = freq.upper()
    start = None
    if freq == "M":
        if period is not None:
            start = period.start.strftime("%Y-%m")
    else:
        # day steps END at the period's last day, so the final step (the one EHSA reads first) is complete;
        # an incomplete remainder at the start is left out and said so
        days = int(freq.rstrip("D"))
        if period is not None:
            p0, p1 = pd.Timestamp(period.start), pd.Timestamp(period.end)
        else:
            t = pd.to_datetime(sel.frame["occurred_at"])
            p0, p1 = t.min().normalize(), t.max().normalize()
        n_steps = ((p1 - p0).days + 1) // days
        if n_steps < 1:
            raise EmptyInputError(f"the period is shorter than one {freq} step")
        start_ts = p1 - pd.Timedelta(days=n_steps * days - 1)
        if start_ts > p0:
            choices.append(Choice("days left out", f"{p0.date()} to {(start_ts - pd.Timedelta(days=1)).date()}",
                                  f"fewer than {days} days before the first complete step"))
        start = start_ts.date().isoformat()
    frame = units_frame_like(units, base.layer)
    counts, harm, labels = unit_window_matrix(sel, units, frame, freq, weights, start=start)
    y = (counts if weight == "count" else harm).astype(float)
    has = counts.sum(axis=0) > 0
    gaps = [lab for lab, h in zip(labels, has) if not h]
    if gaps:
        choices.append(Choice("time steps left out", ", ".join(gaps), "no incidents at all (a gap in the data)"))
    y = y[:, has]
    steps = [lab for lab, h in zip(labels, has) if h]
    t = len(steps)
    if t < 3:
        raise EmptyInputError(f"only {t} time steps with data ({freq}); emerging hot spots need at least 3 "
                              "(ArcGIS advises 10): widen the period or use a shorter --freq")
    if t < 10:
        choices.append(Choice("warning", f"{t} time steps", "ArcGIS advises at least 10 for the trend test"))
    nb, nch = neighbours_for(units, frame, band=band, ring=ring, contiguity=contiguity, cache=neighbour_cache)
    choices += nch
    z = gistar_z(y, nb)
    p = 2 * stats.norm.sf(np.abs(z))
    p_adj = np.column_stack([adjust_pvalues(p[:, j], adjust) for j in range(t)])
    sig = np.nan_to_num(p_adj, nan=1.0) <= alpha
    hot = sig & (np.nan_to_num(z) > 0)
    cold = sig & (np.nan_to_num(z) < 0)
    pattern, mk = ehsa_classify(z, hot, cold, trend_alpha)
    import geopandas as gpd

    layer = gpd.GeoDataFrame({
        "cell_id": base.layer["cell_id"].to_numpy(), "count": base.layer["count"].to_numpy(),
        "harm": base.layer["harm"].to_numpy(), "pattern": pattern, "hot_steps": hot.sum(axis=1),
        "cold_steps": cold.sum(axis=1), "final_z": z[:, -1], "mk_tau": mk["tau_b"], "mk_z": mk["z"],
        "mk_p": mk["p"]}, geometry=base.layer.geometry.values, crs=base.layer.crs)
    counts_by = pd.Series(pattern).value_counts()
    pat_table = pd.DataFrame({"pattern": LABELS, "units": [int(counts_by.get(k, 0)) for k in LABELS]})
    params = {**base.params, **nb.describe(), "freq": freq, "steps": t, "weight": weight, "adjust": adjust,
              "alpha": alpha, "trend_alpha": trend_alpha, "method": "ArcGIS EHSA classes; Gi* per step; "
              "Mann-Kendall on Gi* z"}
    summary = {**base.summary, "steps": steps, "steps_left_out": gaps,
               "patterns": {k: int(v) for k, v in counts_by.items()}}
    return AnalysisResult(kind="emerging", layer=layer, params=params, choices=choices,
                          weight_table=base.weight_table, period=period, inputs=base.inputs,
                          tables={"z": pd.DataFrame(z, columns=steps).assign(cell_id=layer["cell_id"].to_numpy()),
                                  "patterns": pat_table}, summary=summary)
