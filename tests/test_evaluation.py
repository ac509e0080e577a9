"""Evaluation statistics against published worked examples and a planted truth.

Oracles and sources are given beside each test.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from geo import evaluation as ev


# Bowers & Johnson (2003), J. Quant. Criminol. 19(3) 275-301, WDQ and TNE; the worked example:
# A (treated) 100->60, C (control) 200->180, B (buffer) 50->40.
# WDQ = (40/180-50/200)/(60/180-100/200) = -0.02778/-0.16667 = 0.1667
# TNE = (100*0.9-60) + (50*0.9-40) = 30 + 5 = 35
def test_wdq_tne_worked_example():
    q = ev.wdq(100, 60, 50, 40, 200, 180)
    assert q["wdq"] == pytest.approx(0.1667, abs=5e-5)
    assert q["interpretation"].startswith("diffusion")
    assert ev.tne(100, 60, 50, 40, 200, 180) == pytest.approx(35.0, abs=1e-9)


def test_wdq_undefined_when_control_zero():
    assert np.isnan(ev.wdq(10, 5, 3, 3, 0, 4)["wdq"])
    assert np.isnan(ev.tne(10, 5, 3, 3, 0, 4))


# Wheeler & Ratcliffe (2018) Crime Science 7:11, worked example (also ptools tests/testthat/test-wdd.R
# "Est & Variance Paper"): control 308->318, treated 207->110, displacement control 150->140,
# displacement 178->157 -> WDD -118, SE sqrt(1568) = 39.598, Z -2.98, 95% CI -196 to -40.
def test_wdd_paper_example():
    r = ev.wdd((308, 318), (207, 110), (150, 140), (178, 157))
    assert r["wdd"] == pytest.approx(-118.0, abs=1e-9)
    assert r["wdd_se"] == pytest.approx(39.598, abs=5e-4)
    assert r["wdd_se"] == pytest.approx(np.sqrt(1568), rel=1e-12)
    assert round(r["z"], 2) == -2.98
    assert round(r["low"]) == -196 and round(r["high"]) == -40


# ptools tests/testthat/test-wdd.R "Local -10", "Displacement -10", "Total -20"
def test_wdd_ptools_simple_cases():
    assert ev.wdd((20, 20), (20, 10))["est_local"] == -10
    assert ev.wdd((20, 20), (20, 20), (20, 20), (20, 10))["est_displace"] == -10
    assert ev.wdd((20, 20), (20, 10), (20, 20), (20, 10))["wdd"] == -20


# Wheeler (2020) "Amending the WDD test to incorporate harm weights",
# https://andrewpwheeler.com/2020/11/19/amending-the-wdd-test-to-incorporate-harm-weights/ and
# ptools tests/testthat/test-wdd.R "Cumulative Harm": five crime types (motor vehicle theft, theft,
# burglary, robbery, assault) with control (pre, post) and treated (pre, post) counts, weights
# 3, 2, 5, 7, 10 -> -1721, SE 304.10360077, Z -5.65925558, CI -2317.03210507 to -1124.96789493 (tol 1e-5).
HARM_EXAMPLE = [((133, 91), (130, 74)), ((388, 305), (327, 202)), ((148, 97), (398, 190)),
                ((86, 64), (144, 92)), ((94, 67), (183, 96))]
HARM_W = [3, 2, 5, 7, 10]


def test_wdd_harm_example():
    per = [ev.wdd(c, t) for c, t in HARM_EXAMPLE]
    r = ev.wdd_harm([p["est_local"] for p in per], [p["se_local"] for p in per], HARM_W)
    ref = [-1721.0, 304.10360077, -5.65925558, -2317.03210507, -1124.96789493]
    got = [r["wdd"], r["wdd_se"], r["z"], r["low"], r["high"]]
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_wdd_weighted_per_incident_equals_wdd_harm():
    # the same example expressed as one weight per incident (harm rows), as evaluate_areas does
    def arr(counts_idx, period):
        return np.concatenate([np.full(ex[counts_idx][period], w, float) for ex, w in zip(HARM_EXAMPLE, HARM_W)])

    r = ev.wdd_weighted((arr(0, 0), arr(0, 1)), (arr(1, 0), arr(1, 1)))
    assert r["wdd"] == pytest.approx(-1721.0, abs=1e-9)
    assert r["wdd_se"] == pytest.approx(304.10360077, rel=1e-7)


def test_mde_warns_for_small_counts():
    # arithmetic: E1 = 20*50/50 = 20; se = sqrt(20+20+50+50) = 11.832; (1.95996+0.84162)*11.832 = 33.15 -> 166 %
    m = ev.mde_wdd(20, 50, 50)
    assert m["mde_count"] == pytest.approx((1.959964 + 0.841621) * np.sqrt(140), rel=1e-5)
    assert m["mde_fraction"] > 0.4


def test_did_poisson_recovers_planted_ratio():
    # planted truth (synthetic): 40 places x 12 months Poisson, treated half falls to 0.6 after month 6
    rng = np.random.default_rng(3)
    rows = []
    for p in range(40):
        lam = rng.uniform(5, 15)
        for t in range(12):
            tr, af = p < 20, t >= 6
            mu = lam * (1 + 0.03 * t) * (0.6 if tr and af else 1.0)
            rows.append({"place": p, "period": t, "treated": tr, "after": af, "y": rng.poisson(mu)})
    r = ev.did_regression(pd.DataFrame(rows), family="poisson")
    assert r["rate_ratio_low"] < 0.6 < r["rate_ratio_high"]
    assert r["rate_ratio"] == pytest.approx(0.6, abs=0.06)


def test_sppt_identical_patterns_similar_and_shift_detected():
    # planted: same expected pattern -> S near 1; moved mass between two units -> those two dissimilar
    base = np.array([100, 80, 60, 40, 20, 10, 5, 0])
    r = ev.sppt(base, base.copy(), seed=1)
    assert r["s_index"] == 1.0
    shifted = base.copy()
    shifted[0], shifted[4] = 40, 80
    r2 = ev.sppt(base, shifted, seed=1)
    assert not r2["table"]["similar"].iloc[0] and not r2["table"]["similar"].iloc[4]
    assert r2["s_index"] <= 0.75


def test_residual_deterrence_refuses_month_only():
    v = pd.DataFrame({"spot_id": ["a"], "start": [pd.Timestamp("2025-01-01", tz="UTC")],
                      "end": [pd.Timestamp("2025-01-01 00:15", tz="UTC")]})
    inc = pd.DataFrame({"spot_id": ["a"], "occurred_at": [pd.NaT]})
    from geo.errors import MonthOnlyDataError

    with pytest.raises(MonthOnlyDataError, match="month-level designs"):
        ev.residual_deterrence(v, inc, baseline_rate=0.01, window=("2025-01-01", "2025-02-01"))
