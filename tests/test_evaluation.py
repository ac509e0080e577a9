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


# ptools tests/testthat/test-wdd.R "Time Weights" (Wheeler 2021, "The WDD test with different pre/post
# time periods", andrewpwheeler.com/2021/01/09): wdd(c(100,50), c(80,20), time_weights=c(2,1)) -> -20, SE sqrt(115)
def test_wdd_time_weights():
    r = ev.wdd((100, 50), (80, 20), time_weights=(2, 1))
    assert r["wdd"] == pytest.approx(-20.0, abs=1e-9)
    assert r["wdd_se"] == pytest.approx(np.sqrt(115), rel=1e-9)


# ptools "Area Weights" (Wheeler 2021, "The WDD test with different area sizes", andrewpwheeler.com/2021/02/23):
# paper counts with area_weights c(0.9,1.2,1.6,1.5) -> -99.69444444, 35.4280755, -2.813995483,
# -169.1321965, -30.25669241 (tolerance 1e-6)
def test_wdd_area_weights():
    r = ev.wdd((308, 318), (207, 110), (150, 140), (178, 157), area_weights=(0.9, 1.2, 1.6, 1.5))
    np.testing.assert_allclose([r["wdd"], r["wdd_se"], r["z"], r["low"], r["high"]],
                               [-99.69444444, 35.4280755, -2.813995483, -169.1321965, -30.25669241], rtol=1e-6)


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
    from geo.core.errors import MonthOnlyDataError

    with pytest.raises(MonthOnlyDataError, match="month-level designs"):
        ev.residual_deterrence(v, inc, baseline_rate=0.01, window=("2025-01-01", "2025-02-01"))


# ------------------------------------------------------------------------------------------- planted truth
@pytest.fixture(scope="module")
def scenario():
    """SYNTHETIC: geo.synth_patrol plants a 40% reduction at treated spots for 48 h after each visit."""
    from geo import patrol
    from geo.core.period import Period
    from geo.synth.patrol import make_patrol_scenario

    sc = make_patrol_scenario(42)
    dose = patrol.compute_dose(patrol.validate_pings(sc.pings), sc.spots, "spot_id")
    res = ev.evaluate_areas(sc.incident_table(), sc.treated, sc.control, before=Period.parse(*sc.before),
                            after=Period.parse(*sc.after), visits=dose.tables["visits"], schedule=sc.schedule)
    return sc, dose, res


def test_dose_recovers_planted_visits(scenario):
    sc, dose, _ = scenario
    v = dose.tables["visits"]
    # every planted visit is found once, at its spot, within one ping interval (30 s) of its true start
    assert len(v) == len(sc.visits_truth)
    t = sc.visits_truth.sort_values(["spot_id", "start"]).reset_index(drop=True)
    assert (v["spot_id"].to_numpy() == t["spot_id"].to_numpy()).all()
    assert (abs(v["start"] - t["start"]) <= pd.Timedelta(seconds=30)).all()


def test_planted_effect_recovered_by_did(scenario):
    # planted truth: expected after/before ratio at treated spots = 1 - 0.4 x covered share (about 0.81)
    sc, _, res = scenario
    c = res.summary["counts"]
    assert c["rate_ratio_low"] < sc.expected_overall_ratio < c["rate_ratio_high"]
    assert c["wdd"] < 0 and c["wdd_high"] < 0
    assert c["tne"] > 0


def test_decay_curve_recovers_40pct_for_48h(scenario):
    # planted truth: rate x 0.6 for 48 h after each visit, x 1 afterwards
    _, _, res = scenario
    r = res.summary["residual"]
    assert r["effect_low"] < 0.6 < r["effect_high"]
    assert 36 <= r["effect_hours"] <= 60
    assert r["ratio_after_effect"] == pytest.approx(1.0, abs=0.15)
    curve = res.tables["decay"]
    assert curve.loc[curve["bin_end_h"] <= 48, "rate_ratio"].mean() < 0.75
    assert curve.loc[(curve["bin_start_h"] >= 48) & (curve["bin_end_h"] <= 96), "rate_ratio"].mean() > 0.85


def test_crossover_design_sees_treated_days(scenario):
    # planted: visit days and the next day are within the 48-hour effect -> rate ratios below 1
    _, _, res = scenario
    lags = res.tables["crossover"]
    assert lags.loc[0, "high"] < 1 and lags.loc[1, "high"] < 1


def test_month_only_data_refused_for_decay(scenario):
    from geo.core.errors import MonthOnlyDataError
    from geo.core.incidents.table import IncidentTable
    from geo.core.period import Period

    sc, dose, _ = scenario
    f = sc.incident_table().frame.assign(occurred_at=pd.NaT)
    with pytest.raises(MonthOnlyDataError, match="month-level"):
        ev.evaluate_areas(IncidentTable(f), sc.treated, sc.control, before=Period.parse(*sc.before),
                          after=Period.parse(*sc.after), visits=dose.tables["visits"])


def test_auto_controls_outside_buffers_same_town(scenario):
    from geo.core.period import Period

    sc, _, _ = scenario
    res = ev.evaluate_areas(sc.incident_table(), sc.treated, "auto", before=Period.parse(*sc.before),
                            after=Period.parse(*sc.after), towns=sc.town.towns)
    m = res.tables["matching"]
    assert m["control_id"].notna().all() and m["control_id"].is_unique
    ctrl = res.layer[res.layer["role"] == "control_spot"]
    treated_zone = sc.treated.union_all().buffer(200)
    assert not ctrl.intersects(treated_zone).any()
    assert set(m["town"]) <= {"Harmstead", "Little Wexley"}
    # the synthetic town's busiest squares are all in one core: controls outside 200 m are far quieter -> warned
    c = res.summary["counts"]
    assert (c["control_before"] / c["treated_before"] < 0.5) == any("matched controls had" in w
                                                                    for w in res.summary["warnings"])
    for k in ("wdq", "tne", "wdd", "wdd_se", "rate_ratio", "rate_ratio_low", "rate_ratio_high"):
        assert k in res.summary["counts"] and k in res.summary["harm"]


# ------------------------------------------------------------------------------------------- real data
def test_essex_month_level_before_after(essex_store):
    """Real Essex police.uk data (months only): Grip spots chosen on the first months, matched controls."""
    from geo.grip.spots import select_spots
    from geo.core.period import Period

    lo, hi = essex_store.month_range()
    months = Period.parse(lo, hi).months
    before = Period.parse(months[0], months[5])
    after = Period.parse(months[6], months[-1])
    inc = essex_store.incidents()
    area = essex_store.study_area()
    towns = area.rename(columns={area.columns[0]: "name"}) if "name" not in area.columns else area
    spots = select_spots(inc, towns.head(3), n=10, period=before)
    treated = spots.layer
    assert len(treated) > 0
    res = ev.evaluate_areas(inc, treated, "auto", id_col="spot_id", before=before, after=after, area=area,
                            buffer_m=100)
    c = res.summary["counts"]
    assert c["treated_before"] > 0 and c["control_before"] > 0
    assert np.isfinite(c["wdd_se"]) and c["wdd_se"] ** 2 == pytest.approx(
        sum(c[f"{r}_{p}"] for r in ("treated", "control", "treated_buffer", "control_buffer")
            for p in ("before", "after")))
    assert c["rate_ratio_low"] <= c["rate_ratio"] <= c["rate_ratio_high"]
    assert not res.summary["has_times"]
    # months without any data in the store (police.uk gaps) are named in a warning, not treated as zero crime
    have = set(inc.frame["month"].astype(str))
    gaps = [m for m in before.months + after.months if m not in have]
    for m in gaps:
        assert any(m in w for w in res.summary["warnings"])
    assert not set(gaps) & set(res.tables["panel"]["period"])
    nb = sum(m in have for m in before.months)
    na = sum(m in have for m in after.months)
    # unequal months with data -> WDD on the after period's length, echoed; equal -> none
    assert any(c.name == "WDD time weights" for c in res.choices) == (nb != na)


def test_cli_evaluate_contract(tmp_path, scenario, town_store):
    """`harmspot evaluate --store S --treated F --control F --buffer M --before A:B --after A:B --json`:
    the last line holds counts and harm with wdq, tne, wdd, wdd_se, rate_ratio and its interval. SYNTHETIC town."""
    import json

    from typer.testing import CliRunner

    from services.cli import app

    sc, _, _ = scenario
    sc.treated.to_file(tmp_path / "treated.geojson", driver="GeoJSON")
    sc.control.to_file(tmp_path / "control.geojson", driver="GeoJSON")
    store_path = town_store.url if hasattr(town_store, "url") else None
    town_store.close()
    r = CliRunner().invoke(app, ["evaluate", "--store", str(store_path), "--treated", str(tmp_path / "treated.geojson"),
                                 "--control", str(tmp_path / "control.geojson"), "--buffer", "100",
                                 "--before", "2025-01:2025-06", "--after", "2025-07:2025-12",
                                 "--report", str(tmp_path / "eval.html"), "--json"])
    assert r.exit_code == 0, r.output
    js = json.loads(r.stdout.strip().splitlines()[-1])
    for kind in ("counts", "harm"):
        for k in ("wdq", "tne", "wdd", "wdd_se", "rate_ratio", "rate_ratio_low", "rate_ratio_high"):
            assert js[kind][k] is not None, (kind, k)
    # untreated town in the store (no planted effect there): WDD variance = sum of the eight counts
    c = js["counts"]
    assert c["wdd_se"] ** 2 == pytest.approx(sum(v for k, v in c.items() if k.endswith(("_before", "_after"))))
    html = (tmp_path / "eval.html").read_text()
    assert "data:image/png;base64" in html and "WDD" in html
    assert (tmp_path / "eval_tables" / "statistics.csv").exists()
