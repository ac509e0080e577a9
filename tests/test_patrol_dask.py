"""The Dask dose equals the single-machine dose (issue 6: identical results on a LocalCluster). SYNTHETIC pings."""
from __future__ import annotations

import pandas as pd
import pytest

pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
# dask's own parquet reader calls reset_index(inplace=True), deprecated in pandas 3.1 (not ours)
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword")


@pytest.fixture(scope="module")
def scenario_pings(tmp_path_factory):
    from geo.patrol.dask_engine import write_partitioned_pings
    from geo.synth.patrol import make_patrol_scenario

    sc = make_patrol_scenario(7, n_spots=12)
    raw = sc.pings[["unit_id", "timestamp", "longitude", "latitude", "team"]].copy()
    # a few bad pings inside days, so per-partition validation is exercised too
    bad = raw.iloc[[100, 200]].copy()
    bad.loc[bad.index[0], "timestamp"] = "not a time"  # -> day=unparsable partition
    raw = pd.concat([raw.iloc[:201], bad, raw.iloc[201:]], ignore_index=True)  # row 200 repeated: duplicate ping
    path = write_partitioned_pings(raw, tmp_path_factory.mktemp("pq") / "pings")
    # the single-machine path reads the same rows in the same order as the partitions
    from geo.patrol.pings import _parse_times

    day = _parse_times(raw["timestamp"], "Europe/London").dt.tz_convert("Europe/London").dt.strftime("%Y-%m-%d")
    ordered = raw.assign(_d=day.fillna("unparsable").to_numpy()).sort_values("_d", kind="stable").drop(columns="_d")
    return sc, path, ordered.reset_index(drop=True)


def test_dask_localcluster_identical_to_single_machine(scenario_pings):
    from dask.distributed import Client, LocalCluster

    from geo import patrol
    from geo.patrol.dask_engine import dose_dask

    sc, path, ordered = scenario_pings
    single = patrol.compute_dose(patrol.validate_pings(ordered, team_col="team"), sc.spots, "spot_id")
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        dist = dose_dask(path, sc.spots, "spot_id", client=client, team_col="team")
    assert dist.summary["partitions"] > 100
    for name in ("visits", "passbys", "daily", "spots", "units", "intervals"):
        a = single.tables[name].reset_index(drop=True)
        b = dist.tables[name].reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b, check_dtype=False, obj=name)
    assert dist.summary["pings_read"] == single.summary["pings_read"]
    assert dist.summary["pings_rejected"] == single.summary["pings_rejected"] == 2
    assert dist.summary["gini_minutes"] == single.summary["gini_minutes"]
