"""A seeded synthetic town for the offline demo and for tests with a planted truth.

``make_town(seed)`` builds "Harmstead" (a fictional district with two towns,
placed on the British National Grid; every output is labelled SYNTHETIC):
pubs in a night-time economy core, rail stations, a high street, bus stops,
schools, and 12 months of incidents with times, clustered the way street crime
clusters: violence and public order around pubs late on Friday and Saturday
nights, theft and robbery around stations, shoplifting on the high street in the
day, burglary and vehicle crime spread through housing.

It returns frames, never files: ``police_uk_frames()`` (monthly street CSVs with
snapped "On or near" points and months only) and ``force_export()`` (a records
table with times, offence codes and flags, plus its TOML mapping).
Later analyses plant their own truths on top (risk factors, patrol effects,
fear reports) using the town's features and ``rng``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import shapely

from geo import BNG, WGS84


#: South-west corner of the synthetic district (BNG metres). Rural mid-Essex, so
#: maps have plausible coordinates; all outputs say SYNTHETIC.
ORIGIN = (560_000.0, 214_000.0)

# (category, HO code, share) per generating process
_NTE_MIX = [("Violence and sexual offences", "8N", 0.55), ("Public order", "9A", 0.2),
            ("Criminal damage and arson", "58A", 0.1), ("Robbery", "34B", 0.05),
            ("Drugs", "92A", 0.05), ("Possession of weapons", "10A", 0.05)]
_STATION_MIX = [("Theft from the person", "39", 0.35), ("Robbery", "34B", 0.2),
                ("Violence and sexual offences", "105A", 0.25), ("Bicycle theft", "44", 0.2)]
_SHOP_MIX = [("Shoplifting", "46", 0.6), ("Other theft", "49", 0.15), ("Public order", "9A", 0.1),
             ("Violence and sexual offences", "105A", 0.15)]
_HOME_MIX = [("Burglary", "28E", 0.25), ("Vehicle crime", "48", 0.25), ("Criminal damage and arson", "58A", 0.15),
             ("Violence and sexual offences", "8N", 0.2), ("Other crime", "99", 0.05),
             ("Anti-social behaviour", "", 0.1)]


@dataclass
class SynthTown:
    seed: int
    boundary: "object"  # GeoDataFrame: the district (one polygon)
    towns: "object"  # GeoDataFrame: name, geometry (two towns)
    features: dict  # name -> GeoDataFrame of points (pubs, stations, shops, bus_stops, schools, takeaways)
    incidents: pd.DataFrame  # the truth: x, y, occurred_at, category, offence_code, flags, location, process
    start: str = "2025-01"
    months: int = 12
    extra: dict = field(default_factory=dict)

    # ------------------------------------------------------------- outputs
    def police_uk_frames(self) -> dict[str, pd.DataFrame]:
        """Month -> a data.police.uk street-level CSV frame (snapped points, months only)."""
        df = self.incidents
        snapped, labels = _snap(df[["x", "y"]].to_numpy(), self._master_points())
        from pyproj import Transformer

        lon, lat = Transformer.from_crs(BNG, WGS84, always_xy=True).transform(snapped[:, 0], snapped[:, 1])
        month = df["occurred_at"].dt.strftime("%Y-%m")
        cid = [hashlib.sha256(f"{self.seed}|{i}".encode()).hexdigest() for i in df["incident_id"]]
        out = pd.DataFrame({
            "Crime ID": np.where(df["category"] == "Anti-social behaviour", "", cid),
            "Month": month,
            "Reported by": "Harmstead Police (SYNTHETIC)",
            "Falls within": "Harmstead Police (SYNTHETIC)",
            "Longitude": np.round(lon, 6),
            "Latitude": np.round(lat, 6),
            "Location": labels,
            "LSOA code": "S00000000",
            "LSOA name": "Harmstead (synthetic)",
            "Crime type": df["category"].to_numpy(),
            "Last outcome category": np.where(df["category"] == "Anti-social behaviour", "",
                                              "Investigation complete; no suspect identified"),
            "Context": "",
        })
        return {m: g.reset_index(drop=True) for m, g in out.groupby("Month", sort=True)}

    def force_export(self, bad_rows: bool = False) -> tuple[pd.DataFrame, dict]:
        """A force records export (exact points, times, HO codes, flags) and its mapping.

        With ``bad_rows`` a few rows of every rejectable kind are appended (for tests):
        missing and unparsable coordinates, outside the area, unparsable date, unknown
        category and a duplicate id. Their ``URN`` starts with ``BAD-`` and the reason is
        in the returned frame's ``expected_reason`` column (not part of the mapping).
        """
        df = self.incidents
        out = pd.DataFrame({
            "URN": df["incident_id"].astype(str),
            "Committed": df["occurred_at"].dt.strftime("%d/%m/%Y %H:%M"),
            "Easting": df["x"].round(1),
            "Northing": df["y"].round(1),
            "HOCode": df["offence_code"].replace("", "ASB"),
            "Group": df["category"],
            "DA_Flag": np.where(df["domestic"], "Y", "N"),
            "Knife": np.where(df["knife"], "Y", "N"),
            "NTE": np.where(df["nte"], "Y", "N"),
            "VAWG": np.where(df["vawg"], "Y", "N"),
            "VictimAge": df["victim_age"].astype("Float64"),
            "Street": df["location"],
            "expected_reason": "",
        })
        if bad_rows:
            base = out.iloc[0]
            bad = []
            for reason, change in [
                ("missing coordinates", {"Easting": np.nan}),
                ("unparsable coordinates", {"Northing": "north-ish"}),
                ("outside study area", {"Easting": ORIGIN[0] - 50_000}),
                ("unparsable date", {"Committed": "31/02/2025 25:61"}),
                ("unknown category", {"Group": "Spaceship theft", "HOCode": "ZZZ"}),
                ("duplicate id", {"URN": base["URN"]}),
            ]:
                r = base.copy()
                r["URN"] = f"BAD-{reason.replace(' ', '-')}"
                for k, v in change.items():
                    r[k] = v
                r["expected_reason"] = reason
                bad.append(r)
            out = pd.concat([out.astype(object), pd.DataFrame(bad).astype(object)], ignore_index=True)
        mapping = {
            "columns": {
                "id": "URN", "datetime": "Committed", "datetime_format": "%d/%m/%Y %H:%M",
                "x": "Easting", "y": "Northing", "crs": BNG, "offence_code": "HOCode", "category": "Group",
                "location": "Street", "victim_age": "VictimAge",
            },
            "flags": {"domestic": "DA_Flag", "knife": "Knife", "nte": "NTE", "vawg": "VAWG"},
            "categories": {},
        }
        return out, mapping

    def boundary_wgs84(self):
        return self.boundary.to_crs(WGS84)

    def _master_points(self) -> tuple[np.ndarray, np.ndarray]:
        """police.uk-style anonymisation points: feature points plus a jittered street lattice."""
        rng = np.random.default_rng(self.seed + 7)
        x0, y0, x1, y1 = self.boundary.total_bounds
        gx, gy = np.meshgrid(np.arange(x0, x1, 110.0), np.arange(y0, y1, 110.0))
        pts = np.c_[gx.ravel(), gy.ravel()] + rng.normal(0, 20, (gx.size, 2))
        names = np.array([f"On or near {_street(rng)}" for _ in range(len(pts))], dtype=object)
        fx, fn = [pts], [names]
        for kind, g in self.features.items():
            if kind in ("bus_stops",):
                continue
            fx.append(np.c_[g.geometry.x, g.geometry.y])
            label = {"pubs": "Pub / Bar", "stations": "Station", "shops": "Shopping Area",
                     "schools": "School", "takeaways": "Takeaway"}.get(kind, kind)
            fn.append(np.array([f"On or near {label}"] * len(g), dtype=object))
        return np.vstack(fx), np.concatenate(fn)


_STREETS = ["High Street", "Station Road", "Church Lane", "Mill Road", "London Road", "Queen Street",
            "Victoria Road", "Park Avenue", "The Green", "Market Place", "North Hill", "Crouch Street",
            "Maldon Road", "Broomfield Road", "New Writtle Street", "Moulsham Street", "Springfield Road",
            "Parking Area", "Supermarket", "Petrol Station"]


def _street(rng) -> str:
    return _STREETS[int(rng.integers(len(_STREETS)))]


def _snap(xy: np.ndarray, master: tuple[np.ndarray, np.ndarray]):
    from scipy.spatial import cKDTree

    pts, names = master
    _, i = cKDTree(pts).query(xy)
    return pts[i], names[i]


def _points_in(geom, n, rng, centre=None, sd=None):
    """n random points inside ``geom``: around ``centre`` with normal ``sd`` or uniform."""
    shapely.prepare(geom)
    out = np.empty((0, 2))
    x0, y0, x1, y1 = geom.bounds
    while len(out) < n:
        m = max(2 * (n - len(out)), 64)
        if centre is None:
            c = np.c_[rng.uniform(x0, x1, m), rng.uniform(y0, y1, m)]
        else:
            c = np.asarray(centre)[rng.integers(len(centre), size=m)] + rng.normal(0, sd, (m, 2))
        c = c[shapely.contains_xy(geom, c[:, 0], c[:, 1])]
        out = np.vstack([out, c])
    return out[:n]


def _gdf(xy, names, kind):
    import geopandas as gpd

    return gpd.GeoDataFrame({"name": names, "kind": kind}, geometry=shapely.points(xy), crs=BNG)


def _times(rng, n, start, months, profile):
    """Timestamps over ``months`` from ``start`` with an hour/day profile."""
    t0 = pd.Timestamp(start + "-01")
    t1 = t0 + pd.DateOffset(months=months)
    span_days = (t1 - t0).days
    day = rng.integers(0, span_days, n)
    dates = t0 + pd.to_timedelta(day, unit="D")
    if profile == "night":
        # Friday/Saturday nights dominate: re-draw some days onto a Fri/Sat
        dow = dates.day_of_week.to_numpy()
        shift = np.where(rng.random(n) < 0.6, (4 + rng.integers(0, 2, n) - dow) % 7, 0)
        day = np.minimum(day + shift, span_days - 1)
        hour = (rng.normal(23.5, 1.8, n)) % 24
    elif profile == "day":
        hour = np.clip(rng.normal(14, 2.5, n), 7, 21)
    elif profile == "commute":
        hour = np.where(rng.random(n) < 0.5, rng.normal(8, 1, n), rng.normal(18, 1.5, n)) % 24
    else:
        hour = rng.uniform(0, 24, n)
    ts = t0 + pd.to_timedelta(day, unit="D") + pd.to_timedelta(np.floor(hour * 60), unit="min")
    return pd.Series(ts).dt.floor("min")


def _draw_mix(rng, n, mix):
    cats = [m[0] for m in mix]
    codes = [m[1] for m in mix]
    p = np.array([m[2] for m in mix], float)
    k = rng.choice(len(mix), size=n, p=p / p.sum())
    return np.array(cats, dtype=object)[k], np.array(codes, dtype=object)[k]


def make_town(seed: int = 42, n_incidents: int = 12_000, start: str = "2025-01", months: int = 12) -> SynthTown:
    """Build the seeded synthetic district (see module docstring)."""
    import geopandas as gpd

    rng = np.random.default_rng(seed)
    ox, oy = ORIGIN
    # district: an irregular polygon of about 9 x 7 km
    ang = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    rad = 1.0 + 0.12 * np.sin(3 * ang + seed % 7) + 0.05 * rng.standard_normal(24)
    district = shapely.Polygon(np.c_[ox + 4500 + 4500 * rad * np.cos(ang), oy + 3500 + 3500 * rad * np.sin(ang)])
    district = shapely.make_valid(district).buffer(0)
    big_c = np.array([ox + 3800.0, oy + 3300.0])
    small_c = np.array([ox + 7300.0, oy + 4600.0])
    big = shapely.Point(big_c).buffer(2300).intersection(district)
    small = shapely.Point(small_c).buffer(1100).intersection(district).difference(big)
    towns = gpd.GeoDataFrame({"name": ["Harmstead", "Little Wexley"]}, geometry=[big, small], crs=BNG)
    boundary = gpd.GeoDataFrame({"name": ["Harmstead District (SYNTHETIC)"]}, geometry=[district], crs=BNG)

    # features
    core = shapely.Point(big_c).buffer(450)
    pubs_xy = np.vstack([_points_in(core, 28, rng, centre=[big_c], sd=220),
                         _points_in(small, 6, rng, centre=[small_c], sd=150),
                         _points_in(district, 10, rng)])
    stations_xy = np.array([big_c + [600, -350], small_c + [-300, 250]])
    street = shapely.LineString([big_c - [700, 80], big_c + [700, 80]])
    shops_xy = np.array(shapely.get_coordinates(shapely.line_interpolate_point(street, np.linspace(0, 1, 30))))
    shops_xy = shops_xy + rng.normal(0, 15, shops_xy.shape)
    bus_xy = np.vstack([_points_in(big, 90, rng), _points_in(small, 25, rng), _points_in(district, 25, rng)])
    schools_xy = np.vstack([_points_in(big, 8, rng), _points_in(small, 3, rng)])
    take_xy = _points_in(core, 15, rng, centre=[big_c], sd=300)
    features = {
        "pubs": _gdf(pubs_xy, [f"The {w} Arms" for w in _names(rng, len(pubs_xy))], "pub"),
        "stations": _gdf(stations_xy, ["Harmstead", "Little Wexley"], "station"),
        "shops": _gdf(shops_xy, [f"Shop {i + 1}" for i in range(len(shops_xy))], "shop"),
        "bus_stops": _gdf(bus_xy, [f"Stop {i + 1}" for i in range(len(bus_xy))], "bus_stop"),
        "schools": _gdf(schools_xy, [f"School {i + 1}" for i in range(len(schools_xy))], "school"),
        "takeaways": _gdf(take_xy, [f"Takeaway {i + 1}" for i in range(len(take_xy))], "takeaway"),
    }

    # incidents by generating process
    shares = {"nte": 0.22, "station": 0.08, "shop": 0.15, "home": 0.55}
    parts = []
    for proc, share in shares.items():
        n = int(round(n_incidents * share))
        if proc == "nte":
            xy = _points_in(district, n, rng, centre=pubs_xy[:34], sd=45)
            cats, codes = _draw_mix(rng, n, _NTE_MIX)
            t = _times(rng, n, start, months, "night")
        elif proc == "station":
            xy = _points_in(district, n, rng, centre=stations_xy, sd=70)
            cats, codes = _draw_mix(rng, n, _STATION_MIX)
            t = _times(rng, n, start, months, "commute")
        elif proc == "shop":
            xy = _points_in(district, n, rng, centre=shops_xy, sd=40)
            cats, codes = _draw_mix(rng, n, _SHOP_MIX)
            t = _times(rng, n, start, months, "day")
        else:
            k = rng.random(n)
            xy = np.vstack([
                _points_in(big, int((k < 0.6).sum()), rng, centre=[big_c], sd=1400),
                _points_in(small, int(((k >= 0.6) & (k < 0.8)).sum()), rng, centre=[small_c], sd=700),
                _points_in(district, int((k >= 0.8).sum()), rng),
            ])
            cats, codes = _draw_mix(rng, n, _HOME_MIX)
            t = _times(rng, n, start, months, "any")
        parts.append(pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "occurred_at": t.to_numpy(),
                                   "category": cats, "offence_code": codes, "process": proc}))
    df = pd.concat(parts, ignore_index=True)
    n = len(df)
    viol = (df["category"] == "Violence and sexual offences").to_numpy()
    home = (df["process"] == "home").to_numpy()
    df["domestic"] = viol & home & (rng.random(n) < 0.5)
    df["knife"] = (df["category"].isin(["Robbery", "Possession of weapons"]).to_numpy() & (rng.random(n) < 0.3)) | (
        viol & (rng.random(n) < 0.03))
    df["nte"] = (df["process"] == "nte").to_numpy()
    df["vawg"] = viol & (rng.random(n) < 0.3)
    df["victim_age"] = np.where(df["category"].isin(["Drugs", "Possession of weapons", "Anti-social behaviour",
                                                      "Shoplifting"]).to_numpy(),
                                np.nan, np.clip(np.round(rng.gamma(6, 5.5, n)), 1, 95))
    df = df.sort_values("occurred_at", kind="stable").reset_index(drop=True)
    df.insert(0, "incident_id", [f"HS{seed:03d}-{i:06d}" for i in range(n)])
    df["location"] = [f"On or near {_street(rng)}" for _ in range(n)]
    return SynthTown(seed=seed, boundary=boundary, towns=towns, features=features, incidents=df,
                     start=start, months=months)


_WORDS = ["Red Lion", "Crown", "White Hart", "Kings", "Plough", "Bell", "Swan", "George", "Rose", "Anchor",
          "Bull", "Fox", "Ship", "Star", "Wheatsheaf", "Chequers", "Oak", "Railway", "Greyhound", "Eagle"]


def _names(rng, n):
    return [_WORDS[i % len(_WORDS)] + ("" if i < len(_WORDS) else f" {i // len(_WORDS) + 1}") for i in range(n)]
