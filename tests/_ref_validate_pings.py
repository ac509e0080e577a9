"""REFERENCE ONLY: ``geo.patrol.pings.validate_pings`` as it was before the vectorised rewrite (commit 49f84ad).

Kept verbatim (only renamed) so tests/test_pings_validate.py can assert that the fast
implementation accepts the same rows and gives every rejected row the same reason and
field. Not used by the product; do not "fix" or speed it up.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from geo import BNG, WGS84
from geo.patrol.pings import LOCAL_TZ, PingError, PingTable
from geo.core.result import Choice


def validate_pings_reference(raw: pd.DataFrame, *, unit_col: str = "unit_id", time_col: str = "timestamp",
                   lon_col: str = "longitude", lat_col: str = "latitude", x_col: str | None = None,
                   y_col: str | None = None, team_col: str | None = None, max_speed_mps: float = 70.0,
                   naive_tz: str = LOCAL_TZ, source: str = "pings") -> PingTable:
    """Validate a raw ping table; nothing is lost (``read = accepted + rejected``).

    Parameters
    ----------
    raw : the table as read (strings or typed).
    unit_col, time_col : unit id and timestamp columns. Times with an offset/zone are
        converted to UTC; naive times are taken as ``naive_tz`` (UK local time by
        default; times that do not exist or are ambiguous at the clock change are
        rejected as ``unparsable time``).
    lon_col, lat_col : WGS84 columns, used unless ``x_col``/``y_col`` (BNG
        easting/northing) are given.
    team_col : optional team column carried through for per-team summaries.
    max_speed_mps : above this speed (m/s; 70 = 157 mph) a spike is an impossible jump.

    Returns
    -------
    PingTable
    """
    n = len(raw)
    cols = [unit_col, time_col] + ([x_col, y_col] if x_col else [lon_col, lat_col])
    missing = [c for c in cols if c not in raw.columns]
    if missing:
        raise PingError(f"{source}: missing ping column(s) {missing}; found {list(raw.columns)[:12]}. "
                        "Name yours with --unit-col/--time-col/--lon-col/--lat-col (or --x-col/--y-col for BNG)")
    reason = np.full(n, "", dtype=object)
    fld = np.full(n, "", dtype=object)

    def flag(mask, why, f):
        m = np.asarray(mask, bool) & (reason == "")
        reason[m] = why
        fld[m] = f

    unit = raw[unit_col].astype("string").str.strip()
    flag(unit.isna().to_numpy() | (unit.fillna("") == "").to_numpy(), "missing unit id", unit_col)
    t = _parse_times_reference(raw[time_col], naive_tz)
    flag(t.isna().to_numpy(), "unparsable time", time_col)
    if x_col:
        x = pd.to_numeric(raw[x_col], errors="coerce").to_numpy(float)
        y = pd.to_numeric(raw[y_col], errors="coerce").to_numpy(float)
        bad = ~(np.isfinite(x) & np.isfinite(y)) | (x < -1e5) | (x > 8e5) | (y < -1e5) | (y > 1.4e6)
        flag(bad, "unparsable coordinates", f"{x_col}/{y_col}")
    else:
        lon = pd.to_numeric(raw[lon_col], errors="coerce").to_numpy(float)
        lat = pd.to_numeric(raw[lat_col], errors="coerce").to_numpy(float)
        bad = ~(np.isfinite(lon) & np.isfinite(lat)) | (np.abs(lon) > 180) | (np.abs(lat) > 90)
        flag(bad, "unparsable coordinates", f"{lon_col}/{lat_col}")
        x = np.full(n, np.nan)
        y = np.full(n, np.nan)
        ok = ~bad
        if ok.any():
            from pyproj import Transformer

            tr = Transformer.from_crs(WGS84, BNG, always_xy=True)
            x[ok], y[ok] = tr.transform(lon[ok], lat[ok])
    t_naive = t.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]") if len(t) else np.zeros(0, "datetime64[ns]")
    tns = t_naive.astype(np.int64)
    ucode = pd.factorize(unit.fillna(""))[0]
    # duplicates: same unit and time (first kept)
    ok = reason == ""
    idx = np.flatnonzero(ok)
    dup = pd.DataFrame({"u": ucode[idx], "t": tns[idx]}).duplicated().to_numpy()
    m = np.zeros(n, bool)
    m[idx[dup]] = True
    flag(m, "duplicate ping", time_col)
    # out of order: earlier than the running maximum of the unit's previous valid pings (file order)
    idx = np.flatnonzero(reason == "")
    if len(idx):
        s = pd.DataFrame({"u": ucode[idx], "t": tns[idx]})
        prev_max = s.groupby("u")["t"].cummax().groupby(s["u"]).shift(1)
        ooo = (s["t"] < prev_max).fillna(False).to_numpy(bool)
        m = np.zeros(n, bool)
        m[idx[ooo]] = True
        flag(m, "out of order", time_col)
    # impossible jumps (spikes), a few vectorised rounds on the remaining pings
    for _ in range(10):
        idx = np.flatnonzero(reason == "")
        if len(idx) < 3:
            break
        o = np.lexsort((tns[idx], ucode[idx]))
        ii = idx[o]
        uu, tt, xx, yy = ucode[ii], tns[ii] / 1e9, x[ii], y[ii]
        same = uu[1:] == uu[:-1]
        dt = np.maximum(np.diff(tt), 1e-9)
        v = np.hypot(np.diff(xx), np.diff(yy)) / dt
        fast = same & (v > max_speed_mps)
        spike_in = np.r_[False, fast]
        spike_out = np.r_[fast, False]
        spike = spike_in & spike_out
        if not spike.any():
            break
        m = np.zeros(n, bool)
        m[ii[spike]] = True
        flag(m, "impossible jump", "coordinates")
    ok = reason == ""
    rej = raw.loc[~ok].copy()
    rej.insert(0, "source_row", np.flatnonzero(~ok) + 2 if source.endswith((".csv", ".gz")) else np.flatnonzero(~ok))
    rej.insert(1, "reason", reason[~ok])
    rej.insert(2, "field", fld[~ok])
    frame = pd.DataFrame({"unit_id": unit.to_numpy()[ok], "t": t_naive[ok], "x": x[ok], "y": y[ok],
                          "source_row": (np.flatnonzero(ok) + (2 if source.endswith((".csv", ".gz")) else 0))})
    frame["unit_id"] = frame["unit_id"].astype(str)
    frame["t"] = frame["t"].dt.tz_localize("UTC")
    if team_col and team_col in raw.columns:
        frame["team"] = raw[team_col].astype("string").to_numpy()[ok]
    for extra in ("speed", "status"):
        if extra in raw.columns:
            frame[extra] = raw[extra].to_numpy()[ok]
    frame = frame.sort_values(["unit_id", "t"], kind="stable").reset_index(drop=True)
    choices = [Choice("naive timestamps", naive_tz, "ping times without a zone are taken as UK local time",
                      automatic=True)] if _any_naive_reference(raw[time_col]) else []
    return PingTable(frame, rej.reset_index(drop=True), n, source, choices)


def _any_naive_reference(s: pd.Series) -> bool:
    if pd.api.types.is_datetime64_any_dtype(s):
        return getattr(s.dt, "tz", None) is None
    v = s.dropna().astype(str).head(50)
    return bool(len(v)) and not v.str.contains(r"(?:Z|[+-]\d\d:?\d\d)$", regex=True).all()


def _parse_times_reference(s: pd.Series, naive_tz: str) -> pd.Series:
    """UTC timestamps; NaT where unparsable. Mixed zone-aware and naive strings are handled."""
    if pd.api.types.is_datetime64_any_dtype(s):
        if getattr(s.dt, "tz", None) is None:
            return s.dt.tz_localize(naive_tz, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
        return s.dt.tz_convert("UTC")
    txt = s.astype("string").str.strip()
    aware = txt.str.contains(r"(?:Z|[+-]\d\d:?\d\d)$", regex=True).fillna(False).to_numpy(bool)
    out = pd.Series(pd.NaT, index=s.index, dtype="datetime64[ns, UTC]")
    if aware.any():
        out[aware] = pd.to_datetime(txt[aware], utc=True, errors="coerce", format="ISO8601")
    if (~aware).any():
        naive = pd.to_datetime(txt[~aware], errors="coerce", format="ISO8601")
        bad = naive.isna()
        if bad.any():  # other layouts (day-first UK dates)
            naive[bad] = pd.to_datetime(txt[~aware][bad], errors="coerce", dayfirst=True, format="mixed")
        out[~aware] = naive.dt.tz_localize(naive_tz, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
    return out
