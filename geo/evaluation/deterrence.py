"""Residual deterrence: how long after a patrol visit harm stays down (the Koper-style decay curve),
with exact Poisson (Garwood) intervals. Needs incident times, not month-only data.
"""
from __future__ import annotations


import numpy as np
import pandas as pd
from scipy import stats

from geo.core.errors import MonthOnlyDataError


# ----------------------------------------------------------------------------------- residual deterrence
def _garwood(k, alpha):
    lo = np.where(k > 0, stats.chi2.ppf(alpha / 2, 2 * k) / 2, 0.0)
    hi = stats.chi2.ppf(1 - alpha / 2, 2 * (k + 1)) / 2
    return lo, hi


def residual_deterrence(visits: pd.DataFrame, incidents: pd.DataFrame, *, baseline_rate: pd.Series | float,
                        window: tuple, bin_hours: float = 6.0, horizon_hours: float = 168.0,
                        alpha: float = 0.05) -> dict:
    """Incident rate by hours since the last visit ended, against the baseline (the "48 hours" question).

    Parameters
    ----------
    visits : DataFrame with ``spot_id``, ``start``, ``end`` (tz-aware or naive UTC
        timestamps), from :func:`geo.patrol.dose.compute_dose`.
    incidents : DataFrame with ``spot_id`` and ``occurred_at`` (incidents inside the
        spots, in the patrol window). Month-only data (no times) raises
        :class:`~geo.core.errors.MonthOnlyDataError`.
    baseline_rate : incidents per spot-hour with no patrol (e.g. the pre-period rate),
        one number or a Series by spot_id.
    window : (start, end) timestamps of the patrol period analysed.

    Method
    ------
    For every spot the time axis of ``window`` is split into: during a visit, time
    since the last visit ended (binned by ``bin_hours`` up to ``horizon_hours``) and
    before the first visit / beyond the horizon. Exposure (spot-hours) and incidents
    are summed per bin; ``rate_ratio = (n/exposure) / expected`` where ``expected``
    uses each spot's baseline, with an exact Poisson (Garwood) interval. The duration
    of the effect is estimated by profile likelihood: for every cut-off ``h`` on the
    bin edges, fit ``rate = baseline * (r if hours since < h else 1)`` and keep the
    ``h`` with the largest likelihood (``effect_hours``, with ``effect_ratio`` = r).

    Returns
    -------
    dict: ``curve`` DataFrame (bin_start_h, bin_end_h, exposure_h, incidents, expected,
    rate_ratio, low, high), ``during_visit`` dict, ``effect_hours``, ``effect_ratio``,
    ``effect_low``, ``effect_high``, ``profile`` DataFrame (h, loglik).
    """
    if incidents["occurred_at"].isna().any() if len(incidents) else False:
        raise MonthOnlyDataError(
            "residual deterrence needs incident times (hours since the last visit); these incidents have "
            "months only (police.uk). Use the month-level designs instead: evaluate --before/--after "
            "(WDQ/TNE, WDD, difference-in-differences)")
    w0, w1 = (_utc(pd.Series([v])).iloc[0] for v in window)
    total_h = (w1 - w0) / pd.Timedelta(hours=1)
    edges = np.arange(0.0, horizon_hours + bin_hours / 2, bin_hours)
    nb = len(edges) - 1
    v = visits[["spot_id", "start", "end"]].copy()
    v["start"], v["end"] = _utc(v["start"]), _utc(v["end"])
    v = v[(v["end"] > w0) & (v["start"] < w1)].sort_values(["spot_id", "start"])
    spots = pd.Index(sorted(set(v["spot_id"].astype(str))))
    inc = incidents[["spot_id", "occurred_at"]].copy()
    inc["spot_id"] = inc["spot_id"].astype(str)
    inc["t"] = _utc(inc["occurred_at"])
    inc = inc[inc["spot_id"].isin(spots) & (inc["t"] >= w0) & (inc["t"] < w1)]
    if isinstance(baseline_rate, pd.Series):
        base = baseline_rate.reindex(spots).fillna(float(baseline_rate.mean())).to_numpy(float)
    else:
        base = np.full(len(spots), float(baseline_rate))
    si = spots.get_indexer(v["spot_id"].astype(str))
    hrs = lambda s: ((s - w0) / pd.Timedelta(hours=1)).to_numpy(float)  # noqa: E731
    vs, ve = np.clip(hrs(v["start"]), 0, total_h), np.clip(hrs(v["end"]), 0, total_h)
    # gaps: from a visit's end to the next visit's start (or window end), per spot
    nxt = np.r_[vs[1:], np.nan]
    same = np.r_[si[1:] == si[:-1], False]
    gap_end = np.where(same, nxt, total_h)
    gap = np.clip(gap_end - ve, 0, None)
    # exposure per bin: overlap of [0, gap] with each bin, per spot-weighted by baseline
    ov = np.clip(gap[:, None], edges[None, :-1], edges[None, 1:]) - edges[None, :-1]
    exposure = ov.sum(axis=0)
    expected = (ov * base[si][:, None]).sum(axis=0)
    during_exp = float((ve - vs).sum())
    during_expected = float(((ve - vs) * base[si]).sum())
    # incidents: time since last visit end at their spot
    counts = np.zeros(nb)
    during_n = 0
    if len(inc):
        isp = spots.get_indexer(inc["spot_id"])
        it = hrs(inc["t"])
        big = total_h + 10.0
        key_v = si * big + ve
        key_s = si * big + vs
        key_i = isp * big + it
        order = np.argsort(key_v, kind="stable")
        j = np.searchsorted(key_v[order], key_i, side="right") - 1
        has = j >= 0
        jj = order[np.maximum(j, 0)]
        has &= si[jj] == isp
        since = np.where(has, it - ve[jj], np.nan)
        # during a visit: the latest visit started before t has not ended yet
        order_s = np.argsort(key_s, kind="stable")
        k = np.searchsorted(key_s[order_s], key_i, side="right") - 1
        kk = order_s[np.maximum(k, 0)]
        during = (k >= 0) & (si[kk] == isp) & (ve[kk] > it)
        during_n = int(during.sum())
        ok = has & ~during & (since < edges[-1])
        b = np.clip(np.searchsorted(edges, since[ok], side="right") - 1, 0, nb - 1)
        counts = np.bincount(b, minlength=nb).astype(float)
    lo, hi = _garwood(counts, alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        rr = counts / expected
        curve = pd.DataFrame({"bin_start_h": edges[:-1], "bin_end_h": edges[1:], "exposure_h": exposure,
                              "incidents": counts.astype(int), "expected": expected, "rate_ratio": rr,
                              "low": lo / expected, "high": hi / expected})
    # profile likelihood over the cut-off h
    prof = []
    for h_i in range(1, nb):
        m = np.arange(nb) < h_i
        n_in, e_in = counts[m].sum(), expected[m].sum()
        n_out, e_out = counts[~m].sum(), expected[~m].sum()
        r_in = n_in / e_in if e_in > 0 else 1.0
        r_out = n_out / e_out if e_out > 0 else 1.0
        ll = stats.poisson.logpmf(counts, np.where(m, r_in, r_out) * expected + 1e-12).sum()
        prof.append({"h": edges[h_i], "loglik": float(ll), "ratio": r_in, "ratio_after": r_out})
    prof = pd.DataFrame(prof)
    best = prof.loc[prof["loglik"].idxmax()] if len(prof) else None
    out = {"curve": curve, "profile": prof, "bin_hours": bin_hours, "horizon_hours": horizon_hours,
           "during_visit": {"exposure_h": during_exp, "incidents": during_n,
                            "rate_ratio": during_n / during_expected if during_expected > 0 else float("nan")}}
    if best is not None:
        h = float(best["h"])
        m = edges[:-1] < h
        n_in, e_in = counts[m].sum(), expected[m].sum()
        l, u = _garwood(np.array([n_in]), alpha)
        out.update({"effect_hours": h, "effect_ratio": float(n_in / e_in), "effect_low": float(l[0] / e_in),
                    "effect_high": float(u[0] / e_in), "effect_incidents": int(n_in),
                    "ratio_after_effect": float(best["ratio_after"])})
    return out


def _utc(s: pd.Series) -> pd.Series:
    s = pd.to_datetime(s)
    if getattr(s.dt, "tz", None) is None:
        return s.dt.tz_localize("UTC")
    return s.dt.tz_convert("UTC")
