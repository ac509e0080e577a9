"""A seeded planted-truth generator for risk terrain modelling (all data SYNTHETIC).

Built on :func:`geo.synth.town.make_town`: the town's five point layers ``pubs``,
``stations``, ``bus_stops``, ``schools`` and ``takeaways`` become risk factors.
Risk is planted around two of them at known distances and strengths; the other
three are decoys that do nothing. Counts per cell are drawn from

``mu_i = base * prod_j RRV_j ** x_ij``,   ``x_ij`` = the planted operationalisation,

(a Poisson model, the one RTM fits) using the same grid, cell-centre proximity
and density rule as :mod:`geo.rtm`, so a correct RTM should select exactly the
planted factors, at the planted forms and distances, with RRVs whose 95%
intervals cover the planted values (about 95% of seeds; the tests use a fixed
seed). Two periods are drawn independently from the same surface (first half
and second half of the year) so the learned-vs-RTM comparison has a held-out
period.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from geo import BNG, WGS84


#: Default planted truth: factor -> (operationalisation, distance m, RRV).
PLANTED = {"pubs": ("proximity", 100.0, 4.0), "schools": ("proximity", 200.0, 2.5)}
FACTOR_NAMES = ("pubs", "stations", "bus_stops", "schools", "takeaways")


@dataclass
class SynthRTM:
    """The planted-truth RTM world (SYNTHETIC)."""

    seed: int
    boundary: object  # GeoDataFrame, BNG
    factors: dict  # name -> GeoDataFrame of points (BNG)
    incidents: object  # geo.core.incidents.table.IncidentTable, both periods
    truth: dict  # name -> (form, distance, rrv)
    decoys: list
    cell: float
    block: float
    base_rate: float  # expected incidents per cell per period with no factor
    train_period: object  # geo.core.period.Period
    test_period: object
    extra: dict = field(default_factory=dict)


def make_rtm_town(seed: int = 42, *, planted: dict | None = None, cell: float = 50.0, block: float = 100.0,
                  base_rate: float = 0.12, town=None) -> SynthRTM:
    """Plant risk around two factor layers of the synthetic town (see module docstring).

    Parameters
    ----------
    seed : int
        Seeds the town (when ``town`` is not given) and the incident draws.
    planted : dict, optional
        ``{factor: (form, distance_m, rrv)}``; default :data:`PLANTED`.
    cell, block : float
        Grid used to plant (and the one a test should model with).
    base_rate : float
        Expected incidents per cell per half-year where no planted factor applies.
    """
    from geo.rtm.factors import factor_from_frame
    from geo.core.incidents.table import IncidentTable
    from geo.core.period import Period
    from geo.rtm.model import RTMGrid, distance_to_nearest, feature_density
    from geo.synth.town import make_town

    planted = dict(PLANTED if planted is None else planted)
    if town is None:
        town = make_town(seed, n_incidents=2000)
    factors = {k: town.features[k][["name", "geometry"]].copy() for k in FACTOR_NAMES}
    grid = RTMGrid.from_area(town.boundary, cell, pad_m=3 * block)
    lin = np.zeros(grid.n)
    for name, (form, d, rrv) in planted.items():
        xy = factor_from_frame(name, factors[name]).xy
        if form == "proximity":
            x = distance_to_nearest(grid, xy) <= d
        else:
            dens = feature_density(grid, xy, d)
            x = dens > dens.mean() + 2 * dens.std()
        lin += np.log(rrv) * x
    mu = base_rate * np.exp(lin)
    rng = np.random.default_rng(seed + 1000)
    centres = grid.centres()
    half = cell / 2
    parts = []
    for k, (start, months) in enumerate([("2025-01", range(1, 7)), ("2025-07", range(7, 13))]):
        cnt = rng.poisson(mu)
        idx = np.repeat(np.arange(grid.n), cnt)
        xy = centres[idx] + rng.uniform(-half, half, (len(idx), 2))
        mon = rng.choice(list(months), len(idx))
        day = rng.integers(1, 29, len(idx))
        t = pd.to_datetime({"year": 2025, "month": mon, "day": day}) + pd.to_timedelta(rng.integers(0, 1440, len(idx)),
                                                                                       unit="min")
        parts.append(pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "occurred_at": t.to_numpy()}))
    df = pd.concat(parts, ignore_index=True).sort_values("occurred_at", kind="stable").reset_index(drop=True)
    from pyproj import Transformer

    lon, lat = Transformer.from_crs(BNG, WGS84, always_xy=True).transform(df["x"].to_numpy(), df["y"].to_numpy())
    df["incident_id"] = [f"RTM{seed:03d}-{i:06d}" for i in range(len(df))]
    df["source_kind"] = "synthetic"
    df["category"] = "Violence and sexual offences"
    df["lon"], df["lat"] = lon, lat
    df["location"] = "On or near Synthetic Street"
    df["source_file"] = "synth_rtm"
    df["source_row"] = np.arange(1, len(df) + 1)
    inc = IncidentTable.from_frame(df)
    return SynthRTM(seed=seed, boundary=town.boundary, factors=factors, incidents=inc, truth=planted,
                    decoys=[f for f in FACTOR_NAMES if f not in planted], cell=cell, block=block,
                    base_rate=base_rate, train_period=Period.parse("2025-01", "2025-06"),
                    test_period=Period.parse("2025-07", "2025-12"), extra={"mu": mu, "grid": grid})
