"""Before/after statistics on counts and harm: percentage change, the weighted displacement quotient
(WDQ, Bowers & Johnson 2003), total net effect, the weighted displacement difference (WDD, Wheeler &
Ratcliffe 2018) with its harm and weighted forms, and the minimum detectable effect of a WDD design.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

from geo.core.errors import HarmspotError


# ----------------------------------------------------------------------------------- simple statistics
def pct_change(before: float, after: float) -> float:
    """Percentage change ``100 * (after - before) / before`` (NaN when before is 0)."""
    return float("nan") if before == 0 else 100.0 * (after - before) / before


def wdq(a0: float, a1: float, b0: float, b1: float, c0: float, c1: float) -> dict:
    """Weighted Displacement Quotient (Bowers & Johnson 2003).

    Parameters
    ----------
    a0, a1 : treated area before / after.  b0, b1 : buffer.  c0, c1 : control.

    Returns
    -------
    dict
        ``success`` = A1/C1 - A0/C0 (negative = treated fell relative to control),
        ``buffer`` = B1/C1 - B0/C0, ``wdq`` = buffer / success (> 0 diffusion of benefit,
        < 0 displacement; NaN when success is 0 or a control count is 0),
        ``interpretation``.
    """
    if c0 == 0 or c1 == 0:
        return {"success": float("nan"), "buffer": float("nan"), "wdq": float("nan"),
                "interpretation": "undefined: a control count is zero"}
    success = a1 / c1 - a0 / c0
    buf = b1 / c1 - b0 / c0
    q = float("nan") if success == 0 else buf / success
    if success >= 0:
        txt = "no relative reduction in the treated area (WDQ not interpretable)"
    elif not np.isfinite(q):
        txt = "undefined"
    elif q > 0:
        txt = "diffusion of benefit into the buffer" + (" (larger than the direct effect)" if q > 1 else "")
    elif q < 0:
        txt = "displacement into the buffer" + (" (larger than the direct effect)" if q < -1 else "")
    else:
        txt = "no change in the buffer"
    return {"success": float(success), "buffer": float(buf), "wdq": float(q), "interpretation": txt}


def tne(a0: float, a1: float, b0: float, b1: float, c0: float, c1: float) -> float:
    """Total Net Effect (Bowers & Johnson 2003): crimes prevented in treated + buffer.

    ``TNE = (A0 * C1/C0 - A1) + (B0 * C1/C0 - B1)``: what the treated and buffer areas
    would have had if they had changed like the control, minus what they had.
    Positive = net reduction (after displacement/diffusion). NaN when C0 is 0.
    """
    if c0 == 0:
        return float("nan")
    r = c1 / c0
    return float((a0 * r - a1) + (b0 * r - b1))


def _ci(est, se, alpha):
    z = stats.norm.ppf(1 - alpha / 2)
    return est - z * se, est + z * se


def wdd(control, treated, disp_control=None, disp=None, *, alpha: float = 0.05, time_weights=None,
        area_weights=None) -> dict:
    """Weighted Displacement Difference test (Wheeler & Ratcliffe 2018).

    Parameters
    ----------
    control, treated : (before, after) counts.
    disp_control, disp : (before, after) counts in the control's and the treated
        area's displacement (buffer) areas; omit both for the local estimate only.

    time_weights : (pre, post) relative lengths of the periods (ptools ``time_weights``):
        counts are divided by them and variances by their squares, so the estimate is
        in units of one post-period length when post = 1.
    area_weights : relative sizes of (control, treated, disp_control, disp) areas
        (ptools ``area_weights``): each area's counts are divided by its weight.

    Returns
    -------
    dict with ``est_local`` = (T1-T0) - (C1-C0), ``se_local`` = sqrt(T0+T1+C0+C1),
    ``est_displace`` = (D1-D0) - (DC1-DC0), ``se_displace``, ``wdd`` = est_local +
    est_displace, ``wdd_se`` = sqrt(sum of all counts), ``z``, ``p`` (two-sided),
    ``low``, ``high`` (normal interval at 1-alpha). Negative = crime fell.
    """
    tw = (1.0, 1.0) if time_weights is None else tuple(map(float, time_weights))
    aw = (1.0, 1.0, 1.0, 1.0) if area_weights is None else tuple(map(float, area_weights))
    if len(tw) != 2 or min(tw) <= 0:
        raise HarmspotError(f"wdd: time_weights must be two positive numbers (pre, post); got {time_weights!r}")
    if len(aw) != 4 or min(aw) <= 0:
        raise HarmspotError(f"wdd: area_weights must be four positive numbers; got {area_weights!r}")

    def scaled(pair, a):
        x0, x1 = map(float, pair)
        return x0 / (tw[0] * a), x1 / (tw[1] * a), x0 / (tw[0] * a) ** 2 + x1 / (tw[1] * a) ** 2

    c0, c1, vc = scaled(control, aw[0])
    t0, t1, vt = scaled(treated, aw[1])
    est_l = (t1 - t0) - (c1 - c0)
    var_l = vt + vc
    if (disp_control is None) != (disp is None):
        raise HarmspotError("wdd: give both disp_control and disp, or neither")
    if disp is not None:
        dc0, dc1, vdc = scaled(disp_control, aw[2])
        d0, d1, vd = scaled(disp, aw[3])
        est_d = (d1 - d0) - (dc1 - dc0)
        var_d = vd + vdc
    else:
        est_d, var_d = 0.0, 0.0
    return _wdd_out(est_l, var_l, est_d, var_d, alpha)


def _wdd_out(est_l, var_l, est_d, var_d, alpha):
    est = est_l + est_d
    se = math.sqrt(var_l + var_d)
    z = est / se if se > 0 else float("nan")
    p = float(2 * stats.norm.sf(abs(z))) if np.isfinite(z) else float("nan")
    lo, hi = _ci(est, se, alpha)
    return {"est_local": float(est_l), "se_local": math.sqrt(var_l), "est_displace": float(est_d),
            "se_displace": math.sqrt(var_d), "wdd": float(est), "wdd_se": float(se), "z": float(z), "p": p,
            "low": float(lo), "high": float(hi), "alpha": alpha}


def wdd_harm(est, se, weights, *, alpha: float = 0.05) -> dict:
    """Harm-weighted WDD from per-crime-type WDD estimates (Wheeler 2020; ptools ``wdd_harm``).

    ``est = sum(w_k * est_k)``, ``se = sqrt(sum(w_k^2 * se_k^2))``; returns ``wdd``,
    ``wdd_se``, ``z``, ``p``, ``low``, ``high``.
    """
    est, se, w = (np.asarray(v, float) for v in (est, se, weights))
    if not (est.shape == se.shape == w.shape):
        raise HarmspotError(f"wdd_harm: est, se and weights must have the same length; got "
                            f"{est.size}, {se.size}, {w.size}")
    e = float((w * est).sum())
    s = float(np.sqrt((w ** 2 * se ** 2).sum()))
    z = e / s if s > 0 else float("nan")
    lo, hi = _ci(e, s, alpha)
    return {"wdd": e, "wdd_se": s, "z": z, "p": float(2 * stats.norm.sf(abs(z))) if np.isfinite(z) else float("nan"),
            "low": lo, "high": hi, "alpha": alpha}


def wdd_weighted(control, treated, disp_control=None, disp=None, *, alpha: float = 0.05, time_weights=None) -> dict:
    """Harm-weighted WDD from per-incident weights.

    Each argument is a pair ``(weights_before, weights_after)`` of arrays holding one
    weight per incident. Sums replace counts and the Poisson variance of a weighted
    sum is the sum of squared weights, so with one weight per crime type this equals
    :func:`wdd_harm` over per-type :func:`wdd` results.
    """
    tw = (1.0, 1.0) if time_weights is None else tuple(map(float, time_weights))

    def s(pair):
        a, b = (np.asarray(v, float) for v in pair)
        a, b = a / tw[0], b / tw[1]
        return a.sum(), b.sum(), (a ** 2).sum() + (b ** 2).sum()

    c0, c1, vc = s(control)
    t0, t1, vt = s(treated)
    est_l, var_l = (t1 - t0) - (c1 - c0), vc + vt
    if disp is not None and disp_control is not None:
        dc0, dc1, vdc = s(disp_control)
        d0, d1, vd = s(disp)
        est_d, var_d = (d1 - d0) - (dc1 - dc0), vd + vdc
    else:
        est_d, var_d = 0.0, 0.0
    return _wdd_out(est_l, var_l, est_d, var_d, alpha)


def mde_wdd(t0: float, c0: float, c1: float, *, d0: float = 0.0, dc0: float = 0.0, dc1: float = 0.0,
            alpha: float = 0.05, power: float = 0.8) -> dict:
    """Minimum detectable effect of the WDD design for the counts at hand.

    Under no effect the treated after-count is expected at ``E1 = T0 * C1/C0``; the
    WDD's standard error is then ``sqrt(T0 + E1 + C0 + C1 (+ buffers))`` and the
    smallest reduction detectable at ``power`` (two-sided ``alpha``) is
    ``(z_{1-alpha/2} + z_power) * se``. Returned as ``mde_count`` and as a fraction of
    E1 (``mde_fraction``: 0.4 means only a 40 % fall or more can be detected).
    """
    if c0 <= 0 or t0 <= 0:
        return {"expected_after": float("nan"), "mde_count": float("nan"), "mde_fraction": float("nan")}
    e1 = t0 * c1 / c0
    ed1 = d0 * dc1 / dc0 if dc0 > 0 else d0
    se = math.sqrt(t0 + e1 + c0 + c1 + d0 + ed1 + dc0 + dc1)
    k = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return {"expected_after": float(e1), "mde_count": float(k * se), "mde_fraction": float(min(k * se / e1, np.inf)),
            "power": power, "alpha": alpha}
