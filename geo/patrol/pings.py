"""GPS pings of patrol units: reading them (CSV, Parquet), the validated ``PingTable`` (BNG metres, UTC
times) and row-level rejects (bad times, off-map points, duplicates, impossible speed spikes).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from geo import BNG, WGS84
from geo.core.errors import HarmspotError
from geo.core.result import Choice


#: Rejection reasons (stable strings, written to the rejects file).
PING_REJECT_REASONS = ("missing unit id", "unparsable time", "unparsable coordinates", "duplicate ping",
                       "out of order", "impossible jump")


# the same reasons as small integer codes while validating: 1 + index above (0 = accepted)
_MISSING_UNIT, _BAD_TIME, _BAD_XY, _DUPLICATE, _OUT_OF_ORDER, _JUMP = range(1, 7)

#: Timestamps pandas can hold in nanoseconds (about 1677-09-21 to 2262-04-11).
_NS_MIN, _NS_MAX = pd.Timestamp.min, pd.Timestamp.max


LOCAL_TZ = "Europe/London"


class PingError(HarmspotError):
    """A ping table is unusable (missing columns, nothing accepted)."""


# ----------------------------------------------------------------------------------------- reading
@dataclass
class PingTable:
    """Validated pings: ``frame`` (unit_id, t [UTC], x, y [BNG], source_row, extra columns) sorted
    by unit and time, ``rejects`` (the raw rows with ``reason``, ``field``, ``source_row``), ``read``."""

    frame: pd.DataFrame
    rejects: pd.DataFrame
    read: int
    source: str = "pings"
    choices: list = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return len(self.frame)

    @property
    def rejected(self) -> int:
        return len(self.rejects)

    def reasons(self) -> dict:
        return {str(k): int(v) for k, v in self.rejects["reason"].value_counts().items()} if len(self.rejects) else {}

    def summary(self) -> dict:
        return {"read": self.read, "accepted": self.accepted, "rejected": self.rejected, "reasons": self.reasons(),
                "units": int(self.frame["unit_id"].nunique()) if len(self.frame) else 0, "source": self.source}

    def __repr__(self) -> str:
        return (f"<PingTable {self.accepted:,} accepted + {self.rejected:,} rejected = {self.read:,} read, "
                f"{self.summary()['units']} units, {BNG}>")


def read_pings(path, **kw) -> PingTable:
    """Read a CSV (``.csv``, ``.csv.gz``) or Parquet ping file and validate it (see :func:`validate_pings`)."""
    p = Path(path)
    if not p.exists():
        raise PingError(f"{p}: no such ping file")
    name = p.name.lower()
    if name.endswith((".parquet", ".pq")) or p.is_dir():
        raw = pd.read_parquet(p)
    else:
        raw = pd.read_csv(p, dtype=str, keep_default_na=False, na_values=[""])
    return validate_pings(raw, source=str(p), **kw)


def validate_pings(raw: pd.DataFrame, *, unit_col: str = "unit_id", time_col: str = "timestamp",
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

    Notes
    -----
    A row gets the first reason that applies, in the order of ``PING_REJECT_REASONS``.
    The work is vectorised: reasons are kept as one small integer code per row (strings
    are made for the rejected rows only), unit ids are dictionary-encoded once with
    codes in the ids' sort order, the surviving rows are put in (unit, time) order by
    one stable sort of those codes, duplicates and out-of-order rows come from a running
    maximum along that order, and one pass finds the spikes (see :func:`_spikes`).
    """
    n = len(raw)
    cols = [unit_col, time_col] + ([x_col, y_col] if x_col else [lon_col, lat_col])
    missing = [c for c in cols if c not in raw.columns]
    if missing:
        raise PingError(f"{source}: missing ping column(s) {missing}; found {list(raw.columns)[:12]}. "
                        "Name yours with --unit-col/--time-col/--lon-col/--lat-col (or --x-col/--y-col for BNG)")
    # code[i] = 0 (accepted so far) or 1 + index of the row's reason in PING_REJECT_REASONS
    code = np.zeros(n, np.uint8)

    def flag(mask, c):
        code[np.asarray(mask, bool) & (code == 0)] = c

    unit = raw[unit_col].astype("string")  # stripped in _unit_codes, id by id
    ucode, uids = _unit_codes(unit)
    flag(ucode < 0, _MISSING_UNIT)
    t = _parse_times(raw[time_col], naive_tz)
    flag(t.isna().to_numpy(), _BAD_TIME)
    if t.dtype == "datetime64[ns, UTC]":  # UTC nanoseconds as they are (no copy)
        tns = t.to_numpy(dtype="datetime64[ns]").view(np.int64)
    else:
        tns = (t.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]") if len(t) else np.zeros(0, "datetime64[ns]")
               ).view(np.int64)
    del t
    if x_col:
        x = _to_float(raw[x_col])
        y = _to_float(raw[y_col])
        bad = ~(np.isfinite(x) & np.isfinite(y)) | (x < -1e5) | (x > 8e5) | (y < -1e5) | (y > 1.4e6)
        flag(bad, _BAD_XY)
        xy_field = f"{x_col}/{y_col}"
    else:
        lon = _to_float(raw[lon_col])
        lat = _to_float(raw[lat_col])
        bad = ~(np.isfinite(lon) & np.isfinite(lat)) | (np.abs(lon) > 180) | (np.abs(lat) > 90)
        flag(bad, _BAD_XY)
        xy_field = f"{lon_col}/{lat_col}"
        from pyproj import Transformer

        # projected point by point, so only the rows still in play need it: fresh arrays (lon/lat may be views of
        # the caller's columns), NaN elsewhere, transformed in place
        ok = code == 0
        x, y = np.where(ok, lon, np.nan), np.where(ok, lat, np.nan)
        del lon, lat
        if ok.any():
            x, y = Transformer.from_crs(WGS84, BNG, always_xy=True).transform(x, y, inplace=True)
        del ok
    del bad
    # duplicates (same unit and time; first kept) and out-of-order pings, then spikes, on (unit, time) order
    order = _order_checks(np.flatnonzero(code == 0), ucode, tns, code)
    keep = _spikes(order, ucode, tns, x, y, max_speed_mps, code)
    if not keep.all():
        order = order[keep]
    # every row accepted and the file already in (unit, time) order: order is 0..n-1
    whole = len(order) == n and bool((order[1:] > order[:-1]).all())
    # the accepted rows, already in the frame's (unit_id, t) order
    off = 2 if source.endswith((".csv", ".gz")) else 0
    import pyarrow as pa
    import pyarrow.compute as pc

    uid = pd.Series(pd.array(pc.take(uids, pa.array(ucode[order])), dtype=unit.dtype)).astype(str)
    t = pd.Series((tns if whole else tns[order]).view("datetime64[ns]"), dtype="datetime64[ns, UTC]")
    if whole and np.may_share_memory(t.to_numpy(dtype="datetime64[ns]"), tns):  # tns may be the caller's column
        t = t.copy()
    frame = pd.DataFrame({"unit_id": uid, "t": t, "x": x[order], "y": y[order],
                          "source_row": order + off if off else order}, copy=False)  # fresh arrays: not copied again
    if team_col and team_col in raw.columns:
        frame["team"] = raw[team_col].astype("string").to_numpy()[order]
    for extra in ("speed", "status"):
        if extra in raw.columns:
            frame[extra] = raw[extra].to_numpy()[order]
    rows = np.flatnonzero(code)
    rej = raw.iloc[rows].copy()
    why = code[rows] - 1
    rej.insert(0, "source_row", rows + off)
    rej.insert(1, "reason", np.array(PING_REJECT_REASONS, dtype=object)[why])
    fields = [unit_col, time_col, xy_field, time_col, time_col, "coordinates"]  # by reason
    rej.insert(2, "field", np.array(fields, dtype=object)[why])
    choices = [Choice("naive timestamps", naive_tz, "ping times without a zone are taken as UK local time",
                      automatic=True)] if _any_naive(raw[time_col]) else []
    return PingTable(frame, rej.reset_index(drop=True), n, source, choices)


def _arrow(a):
    """One contiguous pyarrow array of a pandas array (pandas may hand over a chunked one)."""
    import pyarrow as pa

    a = pa.array(a)
    return a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a


def _unit_codes(unit: pd.Series):
    """(codes, ids) of the unit ids once stripped of spaces: codes number the distinct ids in their sort order (code
    point order, as ``sort_values``), -1 where the id is missing or blank; ``ids`` (pyarrow) holds each code's id.

    The ids are dictionary-encoded first and only the distinct ones are stripped (with pandas' own ``str.strip``
    for ``unit``'s string dtype, as before), so n strings are neither stripped nor copied."""
    import pyarrow as pa
    import pyarrow.compute as pc

    enc = pc.dictionary_encode(_arrow(unit.array))
    # distinct raw id -> distinct stripped id ("U1" and " U1" are one unit)
    enc2 = pc.dictionary_encode(_arrow(pd.Series(pd.array(enc.dictionary, dtype=unit.dtype)).str.strip().array))
    ids = enc2.dictionary
    srt = pc.array_sort_indices(ids).to_numpy()
    rank = np.empty(len(srt), np.int64)
    rank[srt] = np.arange(len(srt))
    rank[pc.equal(ids, "").to_numpy(zero_copy_only=False)] = -1
    dt = np.int16 if len(srt) < 2 ** 15 else np.int32 if len(srt) < 2 ** 31 else np.int64
    lut = np.empty(len(enc.dictionary) + 1, dt)  # lut[-1] = -1 for missing ids
    lut[:-1] = rank[enc2.indices.to_numpy()]
    lut[-1] = -1
    idx = enc.indices
    idx = idx.to_numpy() if idx.null_count == 0 else pc.fill_null(idx, -1).to_numpy(zero_copy_only=False)
    return lut[idx], ids.take(pa.array(srt))


def _order_checks(rows: np.ndarray, ucode: np.ndarray, tns: np.ndarray, code: np.ndarray) -> np.ndarray:
    """Flag duplicate pings (same unit and time, first in the file kept) and out-of-order pings (earlier than a ping
    the unit sent before it in the file) among ``rows`` (file order); return the rest in (unit, time) order."""
    if not len(rows):
        return rows
    whole = len(rows) == len(ucode)  # rows is 0..n-1: use the arrays as they are
    u = ucode if whole else ucode[rows]
    if (u[1:] < u[:-1]).any():
        rows = rows[np.argsort(u, kind="stable")]  # grouped by unit, file order within the unit
        u, whole = ucode[rows], False
    t = tns if whole else tns[rows]
    back = np.flatnonzero((t[1:] <= t[:-1]) & (u[1:] == u[:-1])) + 1  # a unit's time stands still or goes back
    if not len(back):
        return rows  # every unit's times increase down the file: nothing to flag, already (unit, time) order
    # only the units that step back can hold duplicates or out-of-order pings
    hit = np.zeros(int(u[-1]) + 1, bool)
    hit[u[back]] = True
    sel = np.flatnonzero(hit[u])
    u, t = u[sel], t[sel]
    g = np.zeros(len(sel), np.int64)  # those units numbered 0, 1, ... (sel keeps them grouped)
    np.cumsum(u[1:] != u[:-1], out=g[1:])
    t0 = int(t.min())
    span = int(t.max()) - t0 + 1
    if (int(g[-1]) + 1) * span >= 2 ** 63:  # times too far apart for one int64 key: the pandas way (same result)
        late = _order_checks_pandas(rows[sel], u, t, code)
    else:
        # key grows with unit then time, so its running maximum restarts at each unit: a ping at or below the
        # maximum so far is a duplicate (its key was seen before) or out of order (a later time was)
        key = g
        key *= span
        key += t - t0
        del t, g
        late = np.zeros(len(key), bool)
        late[1:] = key[1:] <= np.maximum.accumulate(key)[:-1]
        pos = np.flatnonzero(late)
        same = np.flatnonzero(pd.Series(key, copy=False).isin(np.unique(key[pos])).to_numpy())
        dup = np.zeros(len(key), bool)
        dup[same[pd.Series(key[same]).duplicated().to_numpy()]] = True
        code[rows[sel[dup]]] = _DUPLICATE
        code[rows[sel[late & ~dup]]] = _OUT_OF_ORDER
    drop = np.zeros(len(rows), bool)
    drop[sel[late]] = True
    return rows[~drop]


def _order_checks_pandas(rows, u, t, code) -> np.ndarray:
    """:func:`_order_checks` for times too far apart for one int64 key (rows grouped by unit, file order):
    flags duplicates and out-of-order pings, returns the mask of those flagged."""
    s = pd.DataFrame({"u": u, "t": t})
    dup = s.duplicated().to_numpy()
    code[rows[dup]] = _DUPLICATE
    s = s[~dup]
    prev_max = s.groupby("u")["t"].cummax().groupby(s["u"]).shift(1)
    ooo = (s["t"] < prev_max).fillna(False).to_numpy(bool)
    code[rows[~dup][ooo]] = _OUT_OF_ORDER
    late = dup.copy()
    late[np.flatnonzero(~dup)[ooo]] = True
    return late


_SPIKE_CHUNK = 1 << 18  # pings per chunk of the spike test


def _spikes(order, ucode, tns, x, y, max_speed_mps, code) -> np.ndarray:
    """Flag impossible jumps among ``order`` (rows in unit, time order); return the kept mask over ``order``.

    A ping is a spike when reaching it from the unit's previous ping *and* leaving it to the next both need more
    than ``max_speed_mps``. The rule says to drop spikes and test again on what is left, but one pass gives the
    same answer: a ping that is not a spike has a slow leg to a neighbour (or no neighbour of its unit on one
    side), and that neighbour cannot be a spike, since one of its two legs is that slow leg; so after the spikes
    go the ping keeps the same slow leg (or still has no neighbour there) and never becomes one. The earlier
    implementation's repeated rounds are kept as the reference in tests/_ref_validate_pings.py.
    """
    m = len(order)
    keep = np.ones(m, bool)
    if m < 3:
        return keep
    out = np.zeros(m, bool)  # out[k]: k -> k + 1 is the same unit and too fast
    for a in range(0, m - 1, _SPIKE_CHUNK):  # in chunks: small temporaries
        i = order[a:a + _SPIKE_CHUNK + 1]
        tt = tns[i] / 1e9
        v = np.hypot(np.diff(x[i]), np.diff(y[i])) / np.maximum(np.diff(tt), 1e-9)
        u = ucode[i]
        out[a:a + len(i) - 1] = (u[1:] == u[:-1]) & (v > max_speed_mps)
    hits = np.flatnonzero(out[:-1] & out[1:]) + 1
    keep[hits] = False
    code[order[hits]] = _JUMP
    return keep


_PLAIN_NUMBER = r"^-?[0-9]+(?:\.[0-9]+)?$"
_WIDE_INTEGER = r"^[ \t\n\v\f\r]*(?:-0+|[+-]?[0-9]{16,})[ \t\n\v\f\r]*$"


def _to_float(s: pd.Series) -> np.ndarray:
    """``pd.to_numeric(s, errors="coerce").to_numpy(float)``, the same numbers faster for pyarrow strings.

    Plain decimals of at most 15 digits ("571200", "-0.1234": nearly every coordinate in a ping file) are parsed by
    pyarrow: such a number is exactly a 15-digit integer over a power of ten, which every parser (pandas' included)
    rounds once, to the same double. Other strings go through pandas. A column holding an integer that pandas would
    read differently as part of an integer column than of a float one (minus zero, more than 15 digits) goes through
    pandas whole.
    """
    dt = s.dtype
    if not (isinstance(dt, pd.StringDtype) and dt.storage == "pyarrow") or not len(s):
        return pd.to_numeric(s, errors="coerce").to_numpy(float)
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = _arrow(s.array)
    digits = pc.subtract(pc.subtract(pc.binary_length(arr), pc.cast(pc.starts_with(arr, "-"), pa.int64())),
                         pc.cast(pc.match_substring(arr, "."), pa.int64()))
    plain = pc.fill_null(pc.and_(pc.match_substring_regex(arr, _PLAIN_NUMBER), pc.less_equal(digits, 15)), False)
    plain = plain.to_numpy(zero_copy_only=False)
    every = bool(plain.all())
    txt = arr if every else arr.filter(pa.array(plain))
    vals = pc.cast(txt, pa.float64()).to_numpy()
    zero = np.flatnonzero((vals == 0) & np.signbit(vals))  # "-0" (an integer) or "-0.0"
    if len(zero) and not pc.all(pc.match_substring(txt.take(pa.array(zero)), ".")).as_py():
        return pd.to_numeric(s, errors="coerce").to_numpy(float)
    if every:
        return vals
    rest = ~plain
    if pc.any(pc.match_substring_regex(arr.filter(pa.array(rest)), _WIDE_INTEGER)).as_py():
        return pd.to_numeric(s, errors="coerce").to_numpy(float)
    out = np.empty(len(arr))
    out[plain] = vals
    out[rest] = pd.to_numeric(s[rest], errors="coerce").to_numpy(float)
    return out


#: A time string that names its offset: ends in Z, +HH:MM, +HHMM, or +HH right after a time of day.
_AWARE = r"(?:Z|[+-]\d\d:?\d\d|\d:\d\d(?::\d\d(?:\.\d+)?)?[+-]\d\d)$"


def _any_naive(s: pd.Series) -> bool:
    if pd.api.types.is_datetime64_any_dtype(s):
        return getattr(s.dt, "tz", None) is None
    v = s.dropna().astype(str).head(50)
    return bool(len(v)) and not v.str.contains(_AWARE, regex=True).all()


def _in_ns_range(t: pd.Series) -> pd.Series:
    """``t`` (datetimes of any resolution, naive or UTC) in nanoseconds, NaT where a value lies outside
    what nanoseconds hold (a year such as 3025 is a typo to reject, not to wrap or stop on)."""
    tz = getattr(t.dt, "tz", None)
    lo, hi = (_NS_MIN.tz_localize("UTC"), _NS_MAX.tz_localize("UTC")) if tz is not None else (_NS_MIN, _NS_MAX)
    if str(t.dt.unit) != "ns":
        t = t.where((t >= lo) & (t <= hi))
    return t.dt.as_unit("ns")


def _parse_times(s: pd.Series, naive_tz: str) -> pd.Series:
    """UTC timestamps; NaT where unparsable or outside the years nanoseconds hold (about 1677-2262).
    Mixed zone-aware and naive strings are handled (offsets as Z, +HH:MM, +HHMM or +HH)."""
    if pd.api.types.is_datetime64_any_dtype(s):
        s = _in_ns_range(s)
        if getattr(s.dt, "tz", None) is None:
            return s.dt.tz_localize(naive_tz, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
        return s.dt.tz_convert("UTC")
    txt = s.astype("string").str.strip()
    aware = txt.str.contains(_AWARE, regex=True).fillna(False).to_numpy(bool)
    out = pd.Series(pd.NaT, index=s.index, dtype="datetime64[ns, UTC]")
    if aware.any():
        out[aware] = _in_ns_range(pd.to_datetime(txt[aware], utc=True, errors="coerce", format="ISO8601"))
    if (~aware).any():
        naive = pd.to_datetime(txt[~aware], errors="coerce", format="ISO8601")
        bad = naive.isna()
        if bad.any():  # other layouts (day-first UK dates)
            naive[bad] = pd.to_datetime(txt[~aware][bad], errors="coerce", dayfirst=True, format="mixed")
        naive = _in_ns_range(naive)
        out[~aware] = naive.dt.tz_localize(naive_tz, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
    return out
