"""The patrol dose of :mod:`geo.patrol` on Dask, over Parquet partitioned by day.

A year of pings for a whole force is billions of rows. The expensive steps --
validating pings and finding which pings lie in which spot -- run per partition
on the Dask workers; only the small results come back to the client: the in-spot
pings (a few percent of all pings), per-unit histograms of ping gaps (exact
medians) and each unit's first/last ping per partition (for the gaps across
partition boundaries). The client then runs the same
:func:`geo.patrol.dose.visits_from_hits` / :func:`geo.patrol.dose.daily_dose` as the
single-machine path, so the visits and daily dose are *identical* to
:func:`geo.patrol.dose.compute_dose` on the same pings when

* partitions are time-ordered and do not overlap in time per unit (true for the
  ``day=YYYY-MM-DD`` layout written by :func:`write_partitioned_pings`), and
* duplicates / out-of-order pings do not straddle a partition boundary
  (validation is per partition: a ping at 23:59:59 repeated in the next day's
  file is not detected as a duplicate; these are counted per partition).

``dask`` and ``distributed`` are imported lazily, with a clear error when absent.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from geo.core.errors import EmptyInputError, HarmspotError
from geo.patrol.pings import LOCAL_TZ, validate_pings
from geo.patrol.dose import compute_dose, diff_histogram, hits_frame, median_from_histogram, spot_frame


def _dask():
    try:
        import dask
        import dask.dataframe as dd
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError("harmspot's Dask dose needs 'dask[dataframe]' (and 'distributed' for a cluster): "
                          "pip install 'dask[dataframe]' distributed") from exc
    return dask, dd


def write_partitioned_pings(raw: pd.DataFrame, path, *, time_col: str = "timestamp", tz: str = LOCAL_TZ) -> Path:
    """Write raw pings to ``path/day=YYYY-MM-DD/*.parquet`` (UK local day), keeping row order within a day.

    Rows whose time cannot be parsed go to ``day=unparsable`` so nothing is lost.
    """
    from geo.patrol.pings import _parse_times

    path = Path(path)
    t = _parse_times(raw[time_col], tz)
    day = t.dt.tz_convert(tz).dt.strftime("%Y-%m-%d").fillna("unparsable")
    path.mkdir(parents=True, exist_ok=True)
    for d, g in raw.assign(_day=day.to_numpy()).groupby("_day", sort=True):
        sub = path / f"day={d}"
        sub.mkdir(exist_ok=True)
        g.drop(columns="_day").astype({c: str for c in g.columns if g[c].dtype == object and c != "_day"}).to_parquet(
            sub / "part-0.parquet", index=False)
    return path


def _partition_work(part: pd.DataFrame, geoms, kw: dict, index: int) -> dict:
    """Run on a worker: validate one partition and reduce it to what the client needs."""
    part = part.drop(columns=[c for c in ("day",) if c in part.columns])
    pt = validate_pings(part.reset_index(drop=True), source=f"partition {index}", **kw)
    f = pt.frame
    hits = hits_frame(f, geoms)
    t = f["t"].to_numpy(dtype="datetime64[ns]").astype(np.int64) if len(f) else np.zeros(0, np.int64)
    hist = diff_histogram(f["unit_id"].to_numpy(), t)
    ends = (pd.DataFrame({"unit_id": f["unit_id"].to_numpy(), "t": t}).groupby("unit_id")["t"].agg(["min", "max"])
            .reset_index().assign(partition=index))
    rej = pt.rejects.assign(partition=index)
    return {"hits": hits, "hist": hist, "ends": ends, "rejects": rej, "read": pt.read, "accepted": pt.accepted,
            "tmin": int(t.min()) if len(t) else None, "tmax": int(t.max()) if len(t) else None}


def dose_dask(source, spots, id_col: str = "spot_id", *, client=None, unit_col: str = "unit_id",
              time_col: str = "timestamp", lon_col: str = "longitude", lat_col: str = "latitude",
              x_col: str | None = None, y_col: str | None = None, team_col: str | None = None,
              max_speed_mps: float = 70.0, days=None, tz: str = LOCAL_TZ, **dose_kw):
    """:func:`geo.patrol.dose.compute_dose` on Dask.

    Parameters
    ----------
    source : a Parquet folder (e.g. from :func:`write_partitioned_pings`), a list of
        Parquet files, or a ``dask.dataframe.DataFrame`` of raw pings.
    spots, id_col, dose_kw : as :func:`geo.patrol.dose.compute_dose`.
    client : a ``distributed.Client``; default: the active client if any, else
        Dask's local threaded scheduler.

    Returns
    -------
    AnalysisResult (as compute_dose) with ``tables['rejects']`` (with ``partition``)
    and ``summary['partitions']``.
    """
    dask, dd = _dask()
    ddf = source if hasattr(source, "to_delayed") else dd.read_parquet(
        str(source) if not isinstance(source, (list, tuple)) else [str(s) for s in source])
    sp = spot_frame(spots, id_col)
    geoms = sp.geometry.values
    kw = dict(unit_col=unit_col, time_col=time_col, lon_col=lon_col, lat_col=lat_col, x_col=x_col, y_col=y_col,
              team_col=team_col, max_speed_mps=max_speed_mps)
    work = dask.delayed(_partition_work, pure=True)
    geoms_d = dask.delayed(geoms, traverse=False)  # shipped once to the workers
    tasks = [work(p, geoms_d, kw, i) for i, p in enumerate(ddf.to_delayed())]
    if client is not None:
        parts = client.gather(client.compute(tasks))
    else:
        parts = dask.compute(*tasks)
    parts = list(parts)
    if not parts or sum(p["accepted"] for p in parts) == 0:
        raise EmptyInputError("dose_dask: no accepted pings in any partition")
    hits = pd.concat([p["hits"] for p in parts], ignore_index=True)
    hist = pd.concat([p["hist"] for p in parts], ignore_index=True)
    # gaps across partition boundaries: each unit's first ping of a partition minus its last ping before
    ends = pd.concat([p["ends"] for p in parts], ignore_index=True).sort_values(["unit_id", "min", "partition"])
    prev_max = ends.groupby("unit_id")["max"].shift(1)
    overlap = (ends["min"] < prev_max).fillna(False)
    if overlap.any():
        u = ends.loc[overlap, "unit_id"].iloc[0]
        raise HarmspotError(f"dose_dask: partitions overlap in time for {int(overlap.sum())} unit-partitions "
                            f"(first: unit {u!r}); partition pings by day (write_partitioned_pings)")
    b = pd.DataFrame({"unit_id": ends["unit_id"], "diff": (ends["min"] - prev_max)}).dropna()
    if len(b):
        b = b.astype({"diff": np.int64}).value_counts().rename("n").reset_index()
        hist = pd.concat([hist, b], ignore_index=True)
    intervals = median_from_histogram(hist)
    if days is None:
        tmin = min(p["tmin"] for p in parts if p["tmin"] is not None)
        tmax = max(p["tmax"] for p in parts if p["tmax"] is not None)
        d0, d1 = (pd.Timestamp(v, tz="UTC").tz_convert(tz).tz_localize(None).normalize() for v in (tmin, tmax))
        days = pd.date_range(d0, d1, freq="D")
    empty = pd.DataFrame({"unit_id": pd.Series([], dtype=str), "t": pd.Series([], dtype="datetime64[ns, UTC]"),
                          "x": pd.Series([], dtype=float), "y": pd.Series([], dtype=float)})
    res = compute_dose(empty, sp, "spot_id", days=days, tz=tz, _hits=hits, _intervals=intervals, **dose_kw)
    from geo.core.result import Choice

    res.choices.append(Choice("dose days", f"{days[0].date()} to {days[-1].date()}", "first to last ping day (UK local)"))
    rejects = pd.concat([p["rejects"] for p in parts], ignore_index=True)
    read = int(sum(p["read"] for p in parts))
    res.tables["rejects"] = rejects
    res.summary.update({"pings_read": read, "pings_accepted": int(sum(p["accepted"] for p in parts)),
                        "pings_rejected": int(len(rejects)), "partitions": len(parts), "engine": "dask"})
    res.params["id_col"] = id_col
    return res
