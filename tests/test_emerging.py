"""Emerging hot spots: Mann–Kendall against scipy, EHSA rules by hand, planted patterns in a seeded series."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from geo.hotspots.emerging import ehsa_classify, emerging_hotspots, mann_kendall


def test_mann_kendall_equals_scipy_kendall_tau():
    # Kendall's tau-b of a series against time and its asymptotic p (no continuity correction)
    # are scipy.stats.kendalltau's; the series has ties (3 x 5, 2 x 7) to exercise the tie terms.
    x = np.array([5, 3, 5, 7, 8, 5, 9, 7, 12, 11, 14, 10])
    mk = mann_kendall(x, continuity=False)
    ref = stats.kendalltau(np.arange(x.size), x, method="asymptotic")
    assert mk["tau_b"] == pytest.approx(ref.statistic, rel=1e-12)
    assert mk["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    # S by hand for a short series: 1,3,2 -> sgn(3-1)+sgn(2-1)+sgn(2-3) = 1; Var = 3*2*11/18
    s = mann_kendall(np.array([1.0, 3.0, 2.0]))
    assert s["s"] == 1 and s["var_s"] == pytest.approx(66 / 18)
    assert s["z"] == 0.0  # continuity correction: (1 - 1) / sqrt(Var)


def test_mann_kendall_vectorised_rows_equal_one_by_one():
    rng = np.random.default_rng(4)
    x = rng.poisson(3, (50, 15)).astype(float)
    mk = mann_kendall(x, continuity=False)
    for i in range(0, 50, 7):
        ref = stats.kendalltau(np.arange(15), x[i], method="asymptotic")
        assert mk["tau_b"][i] == pytest.approx(ref.statistic, rel=1e-12, abs=1e-15)
        assert mk["p"][i] == pytest.approx(ref.pvalue, rel=1e-9)


def test_ehsa_rules_by_hand():
    t = 12
    H = np.ones(t, bool)
    O = np.zeros(t, bool)
    up = np.linspace(2, 6, t)
    flat = np.array([3, 4] * 6, float)

    def last(k):
        m = O.copy()
        m[-k:] = True
        return m

    rows = {  # name: (hot mask, cold mask, z series)
        "intensifying hot spot": (H, O, up),
        "diminishing hot spot": (H, O, up[::-1]),
        "persistent hot spot": (H, O, flat),
        "new hot spot": (last(1), O, flat),
        "consecutive hot spot": (last(3), O, flat),
        "sporadic hot spot": (np.array([1, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0, 1], bool), O, flat),
        "oscillating hot spot": (last(1), np.array([1] + [0] * 11, bool), flat),
        "historical hot spot": (np.array([1] * 11 + [0], bool), O, flat),
        "new cold spot": (O, last(1), -flat),
        "no pattern": (np.array([1, 0] * 6, bool), O, flat),
    }
    hot = np.stack([v[0] for v in rows.values()])
    cold = np.stack([v[1] for v in rows.values()])
    z = np.stack([v[2] for v in rows.values()])
    labels, _ = ehsa_classify(z, hot, cold)
    assert list(labels) == list(rows)


TRENDS = {  # cell lower-left offsets (in cells) -> monthly counts; the total stays level month to month
    "intensifying hot spot": ((3, 3), np.linspace(30, 70, 12).round()),
    "diminishing hot spot": ((3, 25), np.linspace(70, 30, 12).round()),
    "persistent hot spot": ((25, 3), np.full(12, 40)),
}
ONSETS = {
    "new hot spot": ((25, 25), np.array([0] * 11 + [35])),
    "consecutive hot spot": ((14, 14), np.array([0] * 8 + [35] * 4)),
    "historical hot spot": ((3, 14), np.array([35] * 11 + [0])),
}


def _planted_town(plants=None, seed=7):
    """SYNTHETIC, seeded: 12 months of police.uk-like (month-only) points on a 4.5 km square with
    uniform background and planted 150 m cells far apart."""
    from pyproj import Transformer

    from geo.core.incidents.table import IncidentTable

    rng = np.random.default_rng(seed)
    x0, y0 = 600_000.0, 199_950.0
    plants = TRENDS if plants is None else plants
    rows = []
    for m in range(12):
        month = f"2025-{m + 1:02d}"
        n_bg = 300
        rows.append(pd.DataFrame({"x": x0 + rng.uniform(0, 4500, n_bg), "y": y0 + rng.uniform(0, 4500, n_bg),
                                  "month": month}))
        for (cx, cy), counts in plants.values():
            k = int(counts[m])
            rows.append(pd.DataFrame({"x": x0 + cx * 150 + rng.uniform(5, 145, k),
                                      "y": y0 + cy * 150 + rng.uniform(5, 145, k), "month": month}))
    df = pd.concat(rows, ignore_index=True)
    lon, lat = Transformer.from_crs(27700, 4326, always_xy=True).transform(df["x"], df["y"])
    df = df.assign(lon=lon, lat=lat, category="Violence and sexual offences",
                   incident_id=[f"p{i}" for i in range(len(df))], location="On or near Planted Road",
                   source_kind="synthetic")
    ids = {name: f"150m_E{int(x0 + cx * 150)}_N{int(y0 + cy * 150)}" for name, ((cx, cy), _) in plants.items()}
    return IncidentTable.from_frame(df), ids


@pytest.mark.parametrize("plants", [TRENDS, ONSETS], ids=["trends", "onsets"])
def test_planted_patterns_are_recovered_from_month_only_data(plants):
    import shapely

    from geo.units.lattice import SquareGrid

    inc, ids = _planted_town(plants)
    assert not inc.has_times  # months only, like police.uk
    area = shapely.box(600_000, 199_950, 604_500, 204_450)
    res = emerging_hotspots(inc, SquareGrid(150), area=area, weight="count")
    assert res.params["freq"] == "M" and res.params["steps"] == 12
    assert any(c.name == "time step" and c.value == "calendar month" for c in res.choices)
    lay = res.layer.set_index("cell_id")
    for name, cid in ids.items():
        assert lay.loc[cid, "pattern"] == name, (name, lay.loc[cid, ["pattern", "hot_steps", "mk_p"]].to_dict())
    # the background is uniform noise: few units get a pattern, and never a trend class
    assert (res.layer["pattern"] == "no pattern").mean() > 0.9
    assert res.tables["patterns"]["units"].sum() == len(res.layer)


def test_gap_months_are_left_out_and_listed():
    import shapely

    from geo.units.lattice import SquareGrid

    inc, _ = _planted_town()
    df = inc.frame
    from geo.core.incidents.table import IncidentTable

    holed = IncidentTable.from_frame(df[~df["month"].isin(["2025-05", "2025-06"])])
    res = emerging_hotspots(holed, SquareGrid(150), area=shapely.box(600_000, 199_950, 604_500, 204_450))
    assert res.summary["steps_left_out"] == ["2025-05", "2025-06"]
    assert res.params["steps"] == 10
    assert any(c.name == "time steps left out" for c in res.choices)


def test_bad_freq_raises():
    inc, _ = _planted_town()
    with pytest.raises(ValueError, match="--freq '3M'"):
        emerging_hotspots(inc, freq="3M")


def test_day_steps_end_at_the_period_end(town_store, town):
    # SYNTHETIC town (seed 42) with times: 365 days in 14-day steps = 26 complete steps ending on
    # 2025-12-31 (the last starts 2025-12-18); the 1 day left over at the start is left out and echoed.
    from geo.core.period import Period
    from geo.units.lattice import SquareGrid

    inc = town_store.incidents()
    res = emerging_hotspots(inc, SquareGrid(250), area=town.boundary, period=Period.parse("2025-01", "2025-12"),
                            freq="14D")
    assert res.params["steps"] == 26
    assert res.summary["steps"][-1] == "2025-12-18"
    left = [c for c in res.choices if c.name == "days left out"]
    assert left and left[0].value == "2025-01-01 to 2025-01-01"
