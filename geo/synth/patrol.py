"""A seeded patrol scenario with a planted effect, on top of :func:`geo.synth.town.make_town` (SYNTHETIC).

``make_patrol_scenario(seed)`` picks the town's busiest 150 m squares in the
*before* months, treats every other one by rank (the rest are matched controls),
and from the start of the *after* months sends officer units to the treated spots:
each spot is visited again after a random gap of ``gap_days`` (uniform, whole and
part days) at a random time of day, with a dwell of ``dwell_min`` minutes. Units
ping every ``ping_s`` seconds with GPS jitter while approaching (outside the
spot), dwelling (inside) and leaving (outside).

The planted truth: every incident at a treated spot from the start of a visit
to ``effect_hours`` (48) after it ends is removed with probability ``effect``
(0.4) -- a 40 % reduction for 48 hours after each visit. Removed incidents are
kept in ``removed``; ``expected_overall_ratio`` is the share of the after-period
rate expected at treated spots (1 - effect x the share of spot-time covered).

Everything is labelled SYNTHETIC and returned as frames; nothing is written.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import shapely

from geo import BNG, WGS84


@dataclass
class PatrolScenario:
    town: object  # SynthTown with thinned incidents
    spots: object  # GeoDataFrame spot_id, rank, treated, count_before, geometry (150 m squares)
    pings: pd.DataFrame  # unit_id, timestamp (ISO, UTC offset), longitude, latitude, easting, northing, team
    visits_truth: pd.DataFrame  # spot_id, unit_id, start, end (UTC)
    removed: pd.DataFrame  # incidents removed by the planted effect
    schedule: pd.DataFrame  # Grip-format crossover schedule: spot_id, date, treated
    before: tuple[str, str]
    after: tuple[str, str]
    params: dict = field(default_factory=dict)
    expected_overall_ratio: float = float("nan")

    @property
    def treated(self):
        return self.spots[self.spots["treated"]].reset_index(drop=True)

    @property
    def control(self):
        return self.spots[~self.spots["treated"]].reset_index(drop=True)

    def incident_table(self):
        """The thinned incidents as a canonical :class:`geo.core.incidents.table.IncidentTable` (times in UK local time)."""
        from geo.core.incidents.table import IncidentTable

        df = self.town.incidents
        from pyproj import Transformer

        lon, lat = Transformer.from_crs(BNG, WGS84, always_xy=True).transform(df["x"].to_numpy(), df["y"].to_numpy())
        return IncidentTable.from_frame(df.assign(source_kind="table", lon=lon, lat=lat, lsoa_code="",
                                                  source_file="synthetic", source_row=np.arange(len(df))))


def make_patrol_scenario(seed: int = 42, *, town=None, n_spots: int = 20, effect: float = 0.4,
                         effect_hours: float = 48.0, gap_days=(1.0, 7.0), dwell_min=(8.0, 22.0),
                         ping_s: float = 30.0, n_units: int = 6, before=("2025-01", "2025-06"),
                         after=("2025-07", "2025-12"), n_incidents: int = 12_000) -> PatrolScenario:
    """Build the seeded patrol scenario (see module docstring)."""
    import geopandas as gpd

    from geo.synth.town import make_town
    from geo.units.lattice import SquareGrid

    rng = np.random.default_rng(seed + 606)
    town = town if town is not None else make_town(seed, n_incidents=n_incidents)
    inc = town.incidents.copy()
    month = inc["occurred_at"].dt.strftime("%Y-%m")
    grid = SquareGrid(150.0)
    pre = inc[(month >= before[0]) & (month <= before[1])]
    ix = np.floor(pre["x"].to_numpy() / 150).astype(np.int64)
    iy = np.floor(pre["y"].to_numpy() / 150).astype(np.int64)
    cnt = pd.DataFrame({"ix": ix, "iy": iy}).value_counts().rename("n").reset_index()
    cnt = cnt.sort_values(["n", "ix", "iy"], ascending=[False, True, True]).head(n_spots).reset_index(drop=True)
    sx, sy = cnt["ix"].to_numpy(), cnt["iy"].to_numpy()
    spots = gpd.GeoDataFrame({"spot_id": grid.ids(sx, sy), "rank": np.arange(1, len(cnt) + 1),
                              "treated": (np.arange(len(cnt)) % 2 == 0), "count_before": cnt["n"].to_numpy()},
                             geometry=shapely.box(sx * 150.0, sy * 150.0, (sx + 1) * 150.0, (sy + 1) * 150.0), crs=BNG)

    # ---- visits: per treated spot, random gaps from the start of the after period
    a0 = pd.Timestamp(after[0] + "-01", tz="UTC")
    a1 = (pd.Timestamp(after[1] + "-01") + pd.offsets.MonthBegin(1)).tz_localize("UTC")
    rows = []
    for si in np.flatnonzero(spots["treated"].to_numpy()):  # one loop per spot (10), not per ping
        t = a0 + pd.Timedelta(hours=float(rng.uniform(0, 24 * gap_days[0])))
        while True:
            dwell = float(rng.uniform(*dwell_min))
            end = t + pd.Timedelta(minutes=dwell)
            if end >= a1:
                break
            rows.append((si, t, end))
            t = end + pd.Timedelta(hours=float(rng.uniform(24 * gap_days[0], 24 * gap_days[1])))
    vis = pd.DataFrame(rows, columns=["si", "start", "end"]).sort_values("start").reset_index(drop=True)
    # greedy unit assignment so a unit is never at two places at once (loop per visit)
    busy = np.full(n_units, a0 - pd.Timedelta(days=1))
    unit = np.empty(len(vis), dtype=object)
    for k, (s, e) in enumerate(zip(vis["start"], vis["end"])):
        free = [u for u in range(n_units) if busy[u] < s - pd.Timedelta(minutes=20)]
        u = int(rng.choice(free)) if free else int(np.argmin(busy))
        unit[k] = f"CPT-{u + 1:02d}"
        busy[u] = e + pd.Timedelta(minutes=10)
    vis["unit_id"] = unit
    vis["spot_id"] = spots["spot_id"].to_numpy()[vis["si"].to_numpy()]

    # ---- pings (vectorised per visit block): 5 min approach, dwell inside, 5 min leave
    cx = (sx[vis["si"]] + 0.5) * 150.0
    cy = (sy[vis["si"]] + 0.5) * 150.0
    ang = rng.uniform(0, 2 * np.pi, len(vis))
    parts = []
    for k in range(len(vis)):  # per visit (hundreds), arrays inside
        s, e = vis["start"].iloc[k].value, vis["end"].iloc[k].value
        st = int(ping_s * 1e9)
        n_in = max(int((e - s) // st), 1)
        t_in = s + st * np.arange(n_in)
        x_in = cx[k] + rng.uniform(-55, 55, n_in)
        y_in = cy[k] + rng.uniform(-55, 55, n_in)
        n_out = int(300 / ping_s)
        d_app = np.linspace(1500, 120, n_out)
        t_app = s - st * np.arange(n_out, 0, -1)
        t_lv = s + st * n_in + st * np.arange(n_out)
        d_lv = np.linspace(120, 1500, n_out)
        xa, ya = cx[k] + d_app * np.cos(ang[k]), cy[k] + d_app * np.sin(ang[k])
        xl, yl = cx[k] + d_lv * np.cos(ang[k] + 1.0), cy[k] + d_lv * np.sin(ang[k] + 1.0)
        parts.append(pd.DataFrame({"unit_id": vis["unit_id"].iloc[k],
                                   "t": np.r_[t_app, t_in, t_lv],
                                   "easting": np.r_[xa, x_in, xl], "northing": np.r_[ya, y_in, yl]}))
    p = pd.concat(parts, ignore_index=True).sort_values(["t", "unit_id"], kind="stable").reset_index(drop=True)
    p[["easting", "northing"]] += rng.normal(0, 3.0, (len(p), 2))
    from pyproj import Transformer

    lon, lat = Transformer.from_crs(BNG, WGS84, always_xy=True).transform(p["easting"].to_numpy(), p["northing"].to_numpy())
    pings = pd.DataFrame({"unit_id": p["unit_id"], "timestamp": pd.to_datetime(p["t"], utc=True).dt.strftime(
        "%Y-%m-%dT%H:%M:%S+00:00"), "longitude": np.round(lon, 7), "latitude": np.round(lat, 7),
        "easting": p["easting"].round(1), "northing": p["northing"].round(1),
        "team": np.where(p["unit_id"].str[-2:].astype(int) <= n_units // 2, "Team A", "Team B")})

    # ---- planted effect: thin incidents at treated spots within [start, end + effect_hours]
    ixa = np.floor(inc["x"].to_numpy() / 150).astype(np.int64)
    iya = np.floor(inc["y"].to_numpy() / 150).astype(np.int64)
    key = pd.Series(np.arange(len(spots)), index=pd.MultiIndex.from_arrays([sx, sy]))
    pos = key.reindex(pd.MultiIndex.from_arrays([ixa, iya])).to_numpy()
    t_utc = inc["occurred_at"].dt.tz_localize("Europe/London", ambiguous="NaT", nonexistent="shift_forward").dt.tz_convert("UTC")
    eff = np.zeros(len(inc), bool)
    big = 10 ** 6
    ok = ~np.isnan(pos) & t_utc.notna().to_numpy()
    if ok.any() and len(vis):
        ipos = pos[ok].astype(np.int64)
        it = (t_utc[ok] - a0).dt.total_seconds().to_numpy() / 3600.0
        vs = (vis["start"] - a0).dt.total_seconds().to_numpy() / 3600.0
        ve = (vis["end"] - a0).dt.total_seconds().to_numpy() / 3600.0 + effect_hours
        kv = vis["si"].to_numpy() * big + vs
        o = np.argsort(kv)
        j = np.searchsorted(kv[o], ipos * big + it, side="right") - 1
        jj = o[np.maximum(j, 0)]
        hit = (j >= 0) & (vis["si"].to_numpy()[jj] == ipos) & (it <= ve[jj])
        eff[np.flatnonzero(ok)[hit]] = True
    drop = eff & (rng.random(len(inc)) < effect)
    removed = inc[drop].reset_index(drop=True)
    import dataclasses

    town = dataclasses.replace(town, incidents=inc[~drop].reset_index(drop=True))  # the caller's town is untouched
    # expected after-period ratio at treated spots: 1 - effect x covered share of spot-time
    cover = 0.0
    span_h = (a1 - a0).total_seconds() / 3600.0
    for si, g in vis.groupby("si"):
        s = (g["start"] - a0).dt.total_seconds().to_numpy() / 3600
        e = np.minimum((g["end"] - a0).dt.total_seconds().to_numpy() / 3600 + effect_hours, span_h)
        nxt = np.r_[s[1:], span_h]
        cover += np.minimum(e, nxt).clip(min=s).sum() - s.sum()
    share = cover / (span_h * int(spots["treated"].sum()))
    # Grip-format schedule (spot_id, date, treated): treated = a visit started that UK-local day
    days = pd.date_range(a0.tz_convert(None).normalize(), (a1 - pd.Timedelta(days=1)).tz_convert(None).normalize())
    vday = vis.assign(date=vis["start"].dt.tz_convert("Europe/London").dt.strftime("%Y-%m-%d"))[["spot_id", "date"]]
    sched = pd.DataFrame({"spot_id": np.repeat(spots["spot_id"].to_numpy(), len(days)),
                          "date": np.tile(days.strftime("%Y-%m-%d"), len(spots))})
    sched["treated"] = pd.MultiIndex.from_frame(sched[["spot_id", "date"]]).isin(pd.MultiIndex.from_frame(vday))
    return PatrolScenario(
        town=town, spots=spots, pings=pings,
        visits_truth=vis[["spot_id", "unit_id", "start", "end"]], removed=removed, schedule=sched,
        before=before, after=after,
        params={"seed": seed, "effect": effect, "effect_hours": effect_hours, "gap_days": gap_days,
                "dwell_min": dwell_min, "ping_s": ping_s, "n_units": n_units, "n_spots": n_spots,
                "synthetic": True},
        expected_overall_ratio=float(1 - effect * share))
