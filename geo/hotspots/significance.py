"""Multiple-testing control for local statistics: Benjamini-Hochberg false discovery rate, Bonferroni,
or none (``adjust_pvalues``); Gi* and LISA share it.
"""
from __future__ import annotations


import numpy as np
from scipy import stats

from geo.core.errors import HarmspotError


ADJUST = ("fdr", "bonferroni", "none")


def adjust_pvalues(p, method: str = "fdr") -> np.ndarray:
    """Adjusted p-values: Benjamini–Hochberg q-values (``fdr``), Bonferroni, or unchanged.

    BH uses ``scipy.stats.false_discovery_control``; NaN p-values are left NaN and
    not counted among the tests.
    """
    if method not in ADJUST:
        raise HarmspotError(f"adjust={method!r}: use one of {', '.join(ADJUST)}")
    p = np.asarray(p, float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if method == "none" or not ok.any():
        out[ok] = p[ok]
    elif method == "bonferroni":
        out[ok] = np.minimum(1.0, p[ok] * ok.sum())
    else:
        out[ok] = stats.false_discovery_control(p[ok], method="bh")
    return out
