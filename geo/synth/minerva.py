"""SYNTHETIC "felt unsafe" reports for Minerva tests and the demo.

No public fear-of-crime point data exists for Essex (StreetSafe and Commonplace reports
are not published as open data), so everything here is generated from a seed on top of
:func:`geo.synth.town.make_town`: reports cluster near licensed venues (late evening and
night) and rail stations (evening and commuting hours), with a thin background spread
over the district, and each carries a reason drawn from the kinds StreetSafe collects.

* :func:`make_fear_points` — fear reports for the demo town (a points DataFrame with
  longitude, latitude, time, reason: the CSV layout ``harmspot minerva --fear`` reads).
* :func:`make_minerva_case` — a planted truth for tests: a coincident area (offences
  and fear around the night-time economy core), an offences-only area (a housing
  estate) and a fear-only area (the small town's station approach), on background noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import shapely

from geo import BNG, WGS84


REASONS_VENUE = ["intoxicated groups", "harassment", "catcalling", "followed", "poorly lit"]
REASONS_STATION = ["poorly lit", "isolated", "followed", "harassment", "underpass"]
REASONS_ANY = ["poorly lit", "isolated", "overgrown", "harassment", "followed"]


def _in(geom, xy):
    shapely.prepare(geom)
    return xy[shapely.contains_xy(geom, xy[:, 0], xy[:, 1])]


def _cluster(rng, geom, centres, n, sd):
    out = np.empty((0, 2))
    centres = np.asarray(centres, float).reshape(-1, 2)
    while len(out) < n:
        m = 2 * (n - len(out)) + 16
        c = centres[rng.integers(len(centres), size=m)] + rng.normal(0, sd, (m, 2))
        out = np.vstack([out, _in(geom, c)])
    return out[:n]


def _uniform(rng, geom, n):
    x0, y0, x1, y1 = geom.bounds
    out = np.empty((0, 2))
    while len(out) < n:
        m = 2 * (n - len(out)) + 16
        out = np.vstack([out, _in(geom, np.c_[rng.uniform(x0, x1, m), rng.uniform(y0, y1, m)])])
    return out[:n]


def _times(rng, n, start, months, hours_mu, hours_sd):
    t0 = pd.Timestamp(start + "-01")
    days = ((t0 + pd.DateOffset(months=months)) - t0).days
    d = rng.integers(0, days, n)
    h = np.mod(rng.normal(hours_mu, hours_sd, n), 24)
    return t0 + pd.to_timedelta(d, unit="D") + pd.to_timedelta(np.floor(h * 60), unit="min")


def _frame(xy, times, reasons):
    from pyproj import Transformer

    lon, lat = Transformer.from_crs(BNG, WGS84, always_xy=True).transform(xy[:, 0], xy[:, 1])
    return pd.DataFrame({"longitude": np.round(lon, 6), "latitude": np.round(lat, 6),
                         "time": pd.Series(times).dt.strftime("%Y-%m-%d %H:%M").to_numpy(),
                         "reason": reasons})


def make_fear_points(town, n: int = 600, seed: int = 7) -> pd.DataFrame:
    """SYNTHETIC felt-unsafe reports for ``town`` (a SynthTown): 45% near pubs at night, 25% near
    stations in the evening, 30% background. Columns: longitude, latitude, time, reason."""
    rng = np.random.default_rng(seed)
    geom = town.boundary.union_all()
    pubs = np.c_[town.features["pubs"].geometry.x, town.features["pubs"].geometry.y]
    st = np.c_[town.features["stations"].geometry.x, town.features["stations"].geometry.y]
    n_v, n_s = int(0.45 * n), int(0.25 * n)
    n_b = n - n_v - n_s
    xy = np.vstack([_cluster(rng, geom, pubs, n_v, 80), _cluster(rng, geom, st, n_s, 120), _uniform(rng, geom, n_b)])
    times = pd.concat([pd.Series(_times(rng, n_v, town.start, town.months, 23.0, 1.5)),
                       pd.Series(_times(rng, n_s, town.start, town.months, 19.5, 2.5)),
                       pd.Series(_times(rng, n_b, town.start, town.months, 17.0, 4.0))], ignore_index=True)
    reasons = np.r_[rng.choice(REASONS_VENUE, n_v), rng.choice(REASONS_STATION, n_s), rng.choice(REASONS_ANY, n_b)]
    return _frame(xy, times, reasons)


@dataclass
class MinervaCase:
    """A planted Minerva truth (all SYNTHETIC)."""

    town: object  # SynthTown
    offences: object  # IncidentTable (force-style rows, vawg flag set)
    fear: pd.DataFrame  # longitude, latitude, time, reason
    centres: dict  # "coincident" | "offences only" | "fear only" -> (x, y) BNG
    radius: float  # planted cluster sd (metres)


def make_minerva_case(seed: int = 3, town=None, background: int = 250, cluster: int = 120,
                      sd: float = 110.0) -> MinervaCase:
    """Plant three areas on background noise (SYNTHETIC).

    * coincident: ``cluster`` VAWG offences and ``cluster`` fear reports around the
      night-time economy core (the big town's centre);
    * offences only: ``cluster`` offences around a housing area 1.6 km south-west;
    * fear only: ``cluster`` fear reports around the small town's station.
    Background: ``background`` offences and ``background`` fear reports uniform over the district.
    """
    from geo.core.incidents.table import IncidentTable
    from geo.synth.town import make_town

    town = town if town is not None else make_town(42)
    rng = np.random.default_rng(seed)
    geom = town.boundary.union_all()
    core = np.array(town.towns.geometry.iloc[0].centroid.coords[0])
    estate = core + np.array([-1600.0, -900.0])
    station = np.array(town.features["stations"].geometry.iloc[1].coords[0])
    centres = {"coincident": tuple(core), "offences only": tuple(estate), "fear only": tuple(station)}
    off_xy = np.vstack([_cluster(rng, geom, core, cluster, sd), _cluster(rng, geom, estate, cluster, sd),
                        _uniform(rng, geom, background)])
    n_off = len(off_xy)
    off_t = _times(rng, n_off, town.start, town.months, 22.0, 3.0)
    offences = IncidentTable.from_frame(pd.DataFrame({
        "incident_id": [f"MV{seed:02d}-{i:05d}" for i in range(n_off)], "source_kind": "table",
        "month": pd.Series(off_t).dt.strftime("%Y-%m").to_numpy(), "occurred_at": off_t,
        "category": "Violence and sexual offences", "offence_code": "8N", "domestic": False, "vawg": True,
        "x": off_xy[:, 0], "y": off_xy[:, 1], "location": "On or near Synthetic Street"}))
    fear_xy = np.vstack([_cluster(rng, geom, core, cluster, sd), _cluster(rng, geom, station, cluster, sd),
                         _uniform(rng, geom, background)])
    nf = len(fear_xy)
    ft = _times(rng, nf, town.start, town.months, 21.0, 3.0)
    reasons = np.r_[rng.choice(REASONS_VENUE, cluster), rng.choice(REASONS_STATION, cluster),
                    rng.choice(REASONS_ANY, background)]
    return MinervaCase(town, offences, _frame(fear_xy, ft, reasons), centres, sd)
