"""Andresen's spatial point pattern test (SPPT): does the share of incidents per unit in one period
match another, unit by unit, within a resampled interval (tested on identical and shifted planted patterns).
"""
from __future__ import annotations


import numpy as np
import pandas as pd

from geo.core.errors import EmptyInputError, HarmspotError


# ----------------------------------------------------------------------------------- SPPT
def sppt(base_counts, test_counts, *, samples: int = 200, share: float = 0.85, conf: float = 0.95,
         seed: int = 0) -> dict:
    """Andresen's Spatial Point Pattern Test similarity index (the ``sppt`` package's method).

    Parameters
    ----------
    base_counts, test_counts : counts per unit (same units, same order) in the base
        (e.g. before) and test (after) periods.
    samples, share : resampling: ``share`` of the test points without replacement,
        ``samples`` times (multivariate hypergeometric draws; vectorised).

    Returns
    -------
    dict: ``s_index`` (share of units whose base percentage lies inside the test's
    interval), ``robust_s_index`` (the same over units with incidents in either
    period), ``table`` DataFrame per unit (base_pct, test_low, test_high, similar, change).
    """
    b = np.asarray(base_counts, np.int64)
    t = np.asarray(test_counts, np.int64)
    if b.shape != t.shape or b.ndim != 1:
        raise HarmspotError("sppt: base and test counts must be 1-d arrays over the same units")
    if b.sum() == 0 or t.sum() == 0:
        raise EmptyInputError("sppt: one of the periods has no incidents in these units")
    rng = np.random.default_rng(seed)
    n = int(round(share * t.sum()))
    draws = rng.multivariate_hypergeometric(t, n, size=samples)
    pct = 100.0 * draws / n
    q = (1 - conf) / 2
    lo = np.quantile(pct, q, axis=0)
    hi = np.quantile(pct, 1 - q, axis=0)
    bp = 100.0 * b / b.sum()
    sim = (bp >= lo) & (bp <= hi)
    change = np.where(sim, 0, np.where(bp < lo, 1, -1))  # +1 test share higher than base
    active = (b > 0) | (t > 0)
    table = pd.DataFrame({"base": b, "test": t, "base_pct": bp, "test_low": lo, "test_high": hi,
                          "similar": sim, "change": change})
    return {"s_index": float(sim.mean()), "robust_s_index": float(sim[active].mean()) if active.any() else float("nan"),
            "units": int(len(b)), "active_units": int(active.sum()), "samples": samples, "share": share,
            "table": table}
