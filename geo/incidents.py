"""The canonical incident table, its readers and the validation that loses nothing.

Every reader turns its input into candidate rows of one canonical schema and a
rejects table. ``read = accepted + rejected`` always holds: a row is either in
:attr:`IngestResult.accepted` or in :attr:`IngestResult.rejects` with a
``reason`` and the ``field`` that failed, kept as it came.

Rejection reasons (stable strings, used in the rejects file):

``missing coordinates``, ``unparsable coordinates``, ``outside study area``,
``unparsable date``, ``unknown category``, ``duplicate id``, ``missing id``.

Coordinates are stored in British National Grid (EPSG:27700) metres as ``x``/``y``
beside the WGS84 ``lon``/``lat`` they came with (or were converted to).
"""
from __future__ import annotations

import functools
import hashlib
import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd
import shapely

from . import BNG, WGS84
from .categories import category_from_ho_code, normalise_category
from .errors import EmptyInputError, HarmspotError, MappingError, NotACrimeTableError
from .period import Period

#: Canonical columns and their pandas dtypes.
SCHEMA: dict[str, str] = {
    "incident_id": "string",
    "source_kind": "string",
    "month": "string",
    "occurred_at": "datetime64[ns]",
    "category": "string",
    "offence_code": "string",
    "domestic": "boolean",
    "knife": "boolean",
    "nte": "boolean",
    "vawg": "boolean",
    "victim_age": "Float64",
    "x": "float64",
    "y": "float64",
    "lon": "float64",
    "lat": "float64",
    "location": "string",
    "lsoa_code": "string",
    "source_file": "string",
    "source_row": "int64",
}
FLAG_COLUMNS = ("domestic", "knife", "nte", "vawg")

#: Default distance (metres) beyond the study-area boundary within which points are
#: still accepted. police.uk snaps points to a master list of "on or near" places,
#: so incidents just inside a border can be published a street beyond it; 100 m
#: keeps those without pulling in the neighbouring force's town centres.
DEFAULT_BORDER_TOLERANCE_M = 100.0

POLICE_UK_REQUIRED = ("Crime ID", "Month", "Longitude", "Latitude", "Crime type")
POLICE_API_REQUIRED = ("category", "lat")  # plus long/lng and month/date, checked below

REJECT_REASONS = (
    "missing coordinates",
    "unparsable coordinates",
    "outside study area",
    "unparsable date",
    "unknown category",
    "duplicate id",
    "missing id",
)


def _empty_canonical(n: int = 0) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([pd.NA] * n if n else [], dtype=t) for c, t in SCHEMA.items()})


def coerce_schema(df: pd.DataFrame) -> pd.DataFrame:
    """Return ``df`` with exactly the canonical columns and dtypes (missing optional columns filled)."""
    out = {}
    n = len(df)
    if "occurred_at" in df.columns and ("month" not in df.columns or df["month"].isna().any()):
        derived = pd.to_datetime(df["occurred_at"]).dt.strftime("%Y-%m").astype("string")
        df = df.assign(month=derived if "month" not in df.columns else df["month"].astype("string").fillna(derived))
    for c, t in SCHEMA.items():
        if c in df.columns:
            s = df[c]
            if t == "datetime64[ns]":
                s = pd.to_datetime(s).astype("datetime64[ns]")
            else:
                s = s.astype(t)
            out[c] = s.reset_index(drop=True)
        else:
            out[c] = pd.Series([pd.NA] * n, dtype=t) if t not in ("float64", "int64", "datetime64[ns]") else (
                pd.Series(np.full(n, np.nan), dtype="float64") if t == "float64" else
                pd.Series(np.zeros(n, dtype="int64")) if t == "int64" else
                pd.Series(pd.NaT, index=range(n), dtype="datetime64[ns]")
            )
    return pd.DataFrame(out)


class IncidentTable:
    """The one canonical incident table every analysis takes.

    A strict constructor (columns and dtypes are checked), ``from_*`` loaders that
    return an :class:`IngestResult`, methods that return new tables, and a repr
    that counts what matters. Ids are labels (``incident_id``), not positions.
    """

    crs = BNG

    def __init__(self, frame: pd.DataFrame, *, rejected: int = 0):
        missing = [c for c in SCHEMA if c not in frame.columns]
        if missing:
            raise HarmspotError(
                f"IncidentTable: frame lacks canonical column(s) {missing}; build it with "
                "IncidentTable.from_frame() or a reader"
            )
        bad = frame["x"].isna() | frame["y"].isna()
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise HarmspotError(f"IncidentTable: {int(bad.sum())} rows without x/y; first at position {i}")
        self._df = frame[list(SCHEMA)].reset_index(drop=True)
        self.rejected = int(rejected)

    # ------------------------------------------------------------------ build
    @classmethod
    def from_frame(cls, df: pd.DataFrame, *, rejected: int = 0) -> "IncidentTable":
        return cls(coerce_schema(df), rejected=rejected)

    @classmethod
    def empty(cls) -> "IncidentTable":
        return cls(_empty_canonical())

    # ------------------------------------------------------------------ views
    @property
    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame (a copy-on-write view: treat as read-only)."""
        return self._df

    def __len__(self) -> int:
        return len(self._df)

    @property
    def xy(self) -> np.ndarray:
        return self._df[["x", "y"]].to_numpy(float)

    @property
    def has_times(self) -> bool:
        """True when at least 95% of rows carry a date-time, not just a month."""
        if len(self._df) == 0:
            return False
        return bool(self._df["occurred_at"].notna().mean() >= 0.95)

    @property
    def months(self) -> tuple[str | None, str | None]:
        m = self._df["month"].dropna()
        if m.empty:
            return (None, None)
        return (str(m.min()), str(m.max()))

    def __repr__(self) -> str:
        lo, hi = self.months
        span = f"{lo}..{hi}" if lo else "no period"
        times = "with times" if self.has_times else "months only"
        return (
            f"<IncidentTable {len(self):,} rows, {span}, {times}, {self.crs}, "
            f"{self.rejected:,} rejected at load>"
        )

    def counts_by_category(self) -> pd.Series:
        return self._df["category"].value_counts().sort_index()

    # ---------------------------------------------------------------- filters
    def filter(
        self,
        period: Period | None = None,
        categories: Iterable[str] | None = None,
        bbox: tuple[float, float, float, float] | None = None,
        area=None,
        mask: np.ndarray | None = None,
    ) -> "IncidentTable":
        """A new table with the rows in ``period``, ``categories``, ``bbox`` (BNG) and ``area`` (a BNG polygon)."""
        df = self._df
        keep = np.ones(len(df), dtype=bool)
        if period is not None:
            keep &= period.mask(df["month"], df["occurred_at"])
        if categories:
            cats = list(categories)
            keep &= df["category"].isin(cats).fillna(False).to_numpy(bool)
        if bbox is not None:
            x, y = df["x"].to_numpy(), df["y"].to_numpy()
            keep &= (x >= bbox[0]) & (x <= bbox[2]) & (y >= bbox[1]) & (y <= bbox[3])
        if area is not None:
            geom = area.union_all() if hasattr(area, "union_all") else area
            shapely.prepare(geom)
            keep &= shapely.contains_xy(geom, df["x"].to_numpy(), df["y"].to_numpy())
        if mask is not None:
            keep &= np.asarray(mask, bool)
        return IncidentTable(df.loc[keep], rejected=self.rejected)

    def to_geodataframe(self):
        import geopandas as gpd

        df = self._df
        return gpd.GeoDataFrame(df.copy(), geometry=gpd.points_from_xy(df["x"], df["y"]), crs=BNG)

    def concat(self, other: "IncidentTable") -> "IncidentTable":
        return IncidentTable(pd.concat([self._df, other._df], ignore_index=True), rejected=self.rejected + other.rejected)

    # ---------------------------------------------------------------- readers
    @classmethod
    def from_police_uk(cls, paths, **kw) -> "IngestResult":
        return read_police_uk(paths, **kw)

    @classmethod
    def from_police_api(cls, paths, **kw) -> "IngestResult":
        return read_police_api(paths, **kw)

    @classmethod
    def from_table(cls, path, mapping: Mapping, **kw) -> "IngestResult":
        return read_table(path, mapping, **kw)


@dataclass
class IngestResult:
    """What a reader returns: accepted incidents, rejected rows (as they came) and the tally."""

    accepted: IncidentTable
    rejects: pd.DataFrame
    read: int
    files: list[str] = field(default_factory=list)
    source_kind: str = ""
    boundary_tolerance_m: float | None = None

    def __post_init__(self):
        if self.read != len(self.accepted) + len(self.rejects):
            raise AssertionError(  # an internal invariant, never user input
                f"read {self.read} != accepted {len(self.accepted)} + rejected {len(self.rejects)}"
            )

    @property
    def rejected(self) -> int:
        return len(self.rejects)

    def reasons(self) -> dict[str, int]:
        if self.rejects.empty:
            return {}
        return {str(k): int(v) for k, v in self.rejects["reason"].value_counts().items()}

    def summary(self) -> dict:
        return {
            "read": self.read,
            "accepted": len(self.accepted),
            "rejected": self.rejected,
            "reasons": self.reasons(),
            "files": self.files,
            "format": self.source_kind,
            "border_tolerance_m": self.boundary_tolerance_m,
        }


# --------------------------------------------------------------------- helpers

def _expand_paths(paths) -> list[tuple[str, object]]:
    """Files, folders and zip archives -> list of (display name, opener) for CSV-like members."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out: list[tuple[str, object]] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            members = sorted(
                q for q in p.rglob("*")
                if q.is_file() and (q.name.endswith(".csv") or q.name.endswith(".csv.gz") or q.suffix == ".zip")
            )
            if not members:
                raise HarmspotError(f"{p}: folder holds no .csv, .csv.gz or .zip files")
            out.extend(_expand_paths(members))
        elif p.suffix.lower() == ".zip":
            with zipfile.ZipFile(p) as zf:
                names = sorted(n for n in zf.namelist() if n.lower().endswith(".csv"))
            if not names:
                raise HarmspotError(f"{p}: zip archive holds no .csv files")
            for n in names:
                out.append((f"{p}!{n}", (p, n)))
        elif p.exists():
            out.append((str(p), p))
        else:
            raise HarmspotError(f"{p}: no such file or folder")
    return out


def _read_csv_raw(name: str, opener) -> pd.DataFrame:
    """Read a CSV with every value as text, exactly as it came (empty string for blanks)."""
    kw = dict(dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig")
    try:
        if isinstance(opener, tuple):
            zp, member = opener
            with zipfile.ZipFile(zp) as zf, zf.open(member) as fh:
                df = pd.read_csv(io.BytesIO(fh.read()), **kw)
        else:
            df = pd.read_csv(opener, **kw)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise HarmspotError(f"{name}: cannot be read as CSV: {exc}") from None
    except pd.errors.EmptyDataError:
        raise NotACrimeTableError(name, ["(header row)"], found=[]) from None
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _to_float(s: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Text -> float; returns (values, missing mask, unparsable mask)."""
    txt = s.astype("string").str.strip()
    missing = (txt.isna() | (txt == "") | txt.str.upper().isin(["NA", "N/A", "NULL", "\\N", "NAN"])).to_numpy(bool)
    vals = pd.to_numeric(txt.where(~pd.Series(missing, index=txt.index)), errors="coerce").to_numpy(float)
    unparsable = ~missing & ~np.isfinite(vals)
    return vals, missing, unparsable


def _stable_ids(prefix: str, key_frame: pd.DataFrame) -> np.ndarray:
    """Deterministic ids from row content plus the occurrence number among identical rows.

    Two identical rows (e.g. two ASB reports at the same snapped point in a month)
    are two incidents, so the ordinal keeps them apart, while re-reading the same
    file gives the same ids (so a second load adds nothing).
    """
    if len(key_frame) == 0:
        return np.array([], dtype=object)
    cols = [key_frame[c].astype("string").fillna("") for c in key_frame.columns]
    key = cols[0].str.cat(cols[1:], sep="|") if len(cols) > 1 else cols[0]
    ordinal = key.groupby(key, sort=False).cumcount().astype("string")
    full = (key + "|" + ordinal).to_numpy(dtype=object)
    sha1 = hashlib.sha1
    return np.array([prefix + sha1(k.encode()).hexdigest()[:24] for k in full], dtype=object)


class _Candidates:
    """One input file's candidate canonical rows plus its raw rows and a per-row reason (None = ok so far)."""

    def __init__(self, raw: pd.DataFrame, canon: pd.DataFrame):
        self.raw = raw.reset_index(drop=True)
        self.canon = canon.reset_index(drop=True)
        self.reason = np.full(len(raw), None, dtype=object)
        self.field = np.full(len(raw), None, dtype=object)

    def reject(self, mask, reason: str, fieldname: str):
        mask = np.asarray(mask, bool) & (self.reason == None)  # noqa: E711 - first reason wins
        self.reason[mask] = reason
        self.field[mask] = fieldname

    @property
    def ok(self) -> np.ndarray:
        return self.reason == None  # noqa: E711


def _map_unique(s: pd.Series, fn) -> np.ndarray:
    """Apply ``fn`` once per distinct value (category columns have a handful)."""
    codes, uniques = pd.factorize(s.astype("string").fillna(""))
    table = np.array([fn(u) for u in uniques] + [None], dtype=object)
    return table[codes]


@functools.lru_cache(maxsize=8)
def _transformer(src: str, dst: str):
    """A pyproj Transformer, built once per CRS pair (building one costs ~20 ms; a read may need 12)."""
    from pyproj import Transformer

    return Transformer.from_crs(src, dst, always_xy=True)


def _project(lon: np.ndarray, lat: np.ndarray):
    return _transformer(WGS84, BNG).transform(lon, lat)


def _later_duplicates(parts: list[pd.Series]) -> np.ndarray:
    """``concat(parts).duplicated(keep="first") & notna``, via 64-bit hashes made part by part.

    Hashing the concatenated text at once would turn every id into a Python string (~50 MiB for 200k ids);
    hashes are made per part, only rows whose hash repeats are compared as text, so the answer is exact.
    """
    h = np.concatenate([pd.util.hash_pandas_object(s, index=False).to_numpy() for s in parts]) if parts \
        else np.array([], dtype="uint64")
    na = np.concatenate([s.isna().to_numpy(bool) for s in parts]) if parts else np.array([], bool)
    cand = pd.Series(h).duplicated(keep=False).to_numpy(bool)
    out = np.zeros(len(h), bool)
    if cand.any():
        pos = np.flatnonzero(cand)
        ids = pd.concat(parts, ignore_index=True).iloc[pos]
        out[pos] = ids.duplicated(keep="first").to_numpy(bool)
    return out & ~na


@dataclass
class _Part:
    """One input file once decided: its accepted rows (canonical) and the raw text of its rejected rows only."""

    accepted: pd.DataFrame  # canonical dtypes (coerce_schema)
    good: np.ndarray  # bool per row of the file: accepted
    raw: pd.DataFrame  # the rejected rows as they came (every column of the file)
    reason: np.ndarray
    field: np.ndarray
    source_file: np.ndarray
    source_row: np.ndarray


class _Split:
    """Shared tail of every reader, fed one file at a time: area check, duplicate ids, accepted/rejected.

    Each file is decided as soon as it has been read and validated (every check but one looks at its own
    row only), so only its accepted canonical rows and the raw text of its *rejected* rows are kept; the
    raw text of the accepted rows, most of the input, is dropped file by file. The exception is a duplicate
    id whose first occurrence is in an earlier file: :meth:`result` finds those over all files at the end
    and reads the raw text of just the files holding them again with ``reload(i)`` (the same reader, so the
    same text); clean inputs never need it.
    """

    def __init__(self, *, boundary=None, tolerance_m: float = DEFAULT_BORDER_TOLERANCE_M, reload=None):
        self.boundary = boundary
        self.tolerance_m = tolerance_m
        self.reload = reload
        self._geom = None
        self.parts: list[_Part] = []

    def _area(self):
        if self._geom is None:
            b = self.boundary
            geom = b.union_all() if hasattr(b, "union_all") else b
            if self.tolerance_m:
                geom = geom.buffer(self.tolerance_m)
            shapely.prepare(geom)
            self._geom = geom
        return self._geom

    def add(self, cand: _Candidates) -> None:
        """Decide every row of one file (already validated by ``_validate_common``)."""
        c = cand.canon
        if self.boundary is not None:
            geom = self._area()
            x = c["x"].to_numpy(float)
            y = c["y"].to_numpy(float)
            fin = np.isfinite(x) & np.isfinite(y)
            inside = np.zeros(len(c), bool)
            inside[fin] = shapely.contains_xy(geom, x[fin], y[fin])
            cand.reject(cand.ok & ~inside, "outside study area", "coordinates")
        # duplicate ids within this file: the first occurrence is kept; only rows still accepted compete for
        # an id (duplicates of rows in earlier files are found in result())
        ok_ids = c["incident_id"].where(pd.Series(cand.ok))
        dup = ok_ids.duplicated(keep="first").to_numpy(bool) & ok_ids.notna().to_numpy(bool)
        cand.reject(dup, "duplicate id", "id")
        good = cand.ok
        self.parts.append(_Part(
            accepted=coerce_schema(c.loc[good]),
            good=good,
            raw=cand.raw.loc[~good],
            reason=cand.reason[~good],
            field=cand.field[~good],
            source_file=c.loc[~good, "source_file"].to_numpy(),
            source_row=c.loc[~good, "source_row"].to_numpy(),
        ))

    def _cross_file_duplicates(self) -> None:
        """Reject accepted rows whose id was accepted in an earlier file (the first occurrence is kept)."""
        if len(self.parts) < 2:
            return
        dup = _later_duplicates([p.accepted["incident_id"] for p in self.parts])
        if not dup.any():
            return
        start = 0
        for i, p in enumerate(self.parts):
            n = len(p.accepted)
            d = dup[start:start + n]
            start += n
            if not d.any():
                continue
            rows = np.flatnonzero(p.good)
            reason = np.full(len(p.good), None, dtype=object)
            field = np.full(len(p.good), None, dtype=object)
            reason[~p.good] = p.reason
            field[~p.good] = p.field
            reason[rows[d]] = "duplicate id"
            field[rows[d]] = "id"
            good = p.good.copy()
            good[rows[d]] = False
            raw = self.reload(i)
            if len(raw) != len(good):
                raise HarmspotError(f"{p.accepted['source_file'].iloc[0]}: file changed while it was being read")
            # source_file/source_row of the rejected rows, in file order, from both sources
            src_file = np.full(len(good), None, dtype=object)
            src_row = np.zeros(len(good), dtype="int64")
            src_file[~p.good] = p.source_file
            src_row[~p.good] = p.source_row
            src_file[rows[d]] = p.accepted.loc[d, "source_file"].to_numpy(dtype=object)
            src_row[rows[d]] = p.accepted.loc[d, "source_row"].to_numpy(dtype="int64")
            self.parts[i] = _Part(
                accepted=p.accepted.loc[~d], good=good, raw=raw.loc[~good],
                reason=reason[~good], field=field[~good],
                source_file=src_file[~good], source_row=src_row[~good],
            )

    def result(self, *, files: list[str], source_kind: str) -> IngestResult:
        self._cross_file_duplicates()
        parts = self.parts
        if parts:
            acc = pd.concat([p.accepted for p in parts], ignore_index=True)
            rej = pd.concat([p.raw for p in parts], ignore_index=True)
        else:
            acc, rej = _empty_canonical(), pd.DataFrame()
        read = sum(len(p.good) for p in parts)

        def cat(key, dtype):
            return np.concatenate([getattr(p, key) for p in parts]) if parts else np.array([], dtype=dtype)

        rej["reason"] = cat("reason", object)
        rej["field"] = cat("field", object)
        rej["source_file"] = cat("source_file", object)
        rej["source_row"] = cat("source_row", "int64")
        rej = rej.reset_index(drop=True)
        return IngestResult(
            accepted=IncidentTable(acc, rejected=len(rej)),
            rejects=rej,
            read=read,
            files=files,
            source_kind=source_kind,
            boundary_tolerance_m=self.tolerance_m if self.boundary is not None else None,
        )


# ------------------------------------------------------------- police.uk bulk

def sniff_format(path) -> str:
    """'police-uk', 'police-api' or 'table' from a file's header (first member of a folder/zip)."""
    name, opener = _expand_paths(path)[0]
    if isinstance(opener, tuple) or str(name).lower().endswith((".csv", ".csv.gz")):
        head = _read_csv_head(name, opener)
        if all(c in head for c in POLICE_UK_REQUIRED):
            return "police-uk"
        if "category" in head and ("lat" in head or "location.latitude" in head):
            return "police-api"
    return "table"


def _read_csv_head(name, opener) -> list[str]:
    if isinstance(opener, tuple):
        zp, member = opener
        with zipfile.ZipFile(zp) as zf, zf.open(member) as fh:
            return [c.strip() for c in pd.read_csv(fh, nrows=0, encoding="utf-8-sig").columns]
    return [c.strip() for c in pd.read_csv(opener, nrows=0, encoding="utf-8-sig").columns]


def read_police_uk(
    paths,
    *,
    boundary=None,
    tolerance_m: float = DEFAULT_BORDER_TOLERANCE_M,
    progress=None,
) -> IngestResult:
    """Read data.police.uk street-level CSVs: one file, a folder of monthly files, or the zip.

    Parameters
    ----------
    paths : path or list of paths
        ``.csv``, ``.csv.gz``, a folder (searched recursively) or a ``.zip`` archive.
    boundary : shapely geometry or GeoDataFrame in EPSG:27700, optional
        The study area; points further than ``tolerance_m`` outside it are rejected.
    progress : callable(done, total, label), optional
        Called after each file.

    Anti-social behaviour rows have no Crime ID: they get a stable derived id
    ``puk-`` + a hash of their content and occurrence number.
    """
    members = _expand_paths(paths)
    split = _Split(boundary=boundary, tolerance_m=tolerance_m, reload=lambda i: _read_csv_raw(*members[i]))
    for i, (name, opener) in enumerate(members):
        raw = _read_csv_raw(name, opener)
        missing = [c for c in POLICE_UK_REQUIRED if c not in raw.columns]
        if missing:
            raise NotACrimeTableError(name, missing, found=raw.columns, expected_format="data.police.uk street-level")
        cand = _Candidates(raw, _canon_police_uk(raw, name))
        del raw
        _validate_common(cand, raw_coord_fields=("Longitude", "Latitude"), date_field="Month",
                         category_field="Crime type")
        split.add(cand)
        del cand  # the accepted rows' raw text goes now, file by file
        if progress:
            progress(i + 1, len(members), name)
    return split.result(files=[m[0] for m in members], source_kind="police-uk")


def _canon_police_uk(raw: pd.DataFrame, name: str) -> pd.DataFrame:
    n = len(raw)
    lon, lon_miss, lon_bad = _to_float(raw["Longitude"])
    lat, lat_miss, lat_bad = _to_float(raw["Latitude"])
    month = raw["Month"].astype("string").str.strip()
    cid = raw["Crime ID"].astype("string").str.strip()
    keycols = ["Month", "Longitude", "Latitude", "Crime type"] + [
        c for c in ("Location", "LSOA code") if c in raw.columns
    ]
    need = (cid.fillna("") == "").to_numpy(bool)
    ids = cid.to_numpy(dtype=object)
    ids[need] = _stable_ids("puk-", raw.loc[need, keycols])
    x, y = _project(lon, lat)
    df = pd.DataFrame(
        {
            "incident_id": ids,
            "source_kind": "police-uk",
            "month": month,
            "category": _map_unique(raw["Crime type"], normalise_category),
            "x": x,
            "y": y,
            "lon": lon,
            "lat": lat,
            "location": raw["Location"] if "Location" in raw.columns else pd.NA,
            "lsoa_code": raw["LSOA code"] if "LSOA code" in raw.columns else pd.NA,
            "source_file": name,
            "source_row": np.arange(2, n + 2, dtype="int64"),  # line number; the header is line 1
        }
    )
    df["_coord_missing"] = lon_miss | lat_miss
    df["_coord_bad"] = lon_bad | lat_bad | (~(lon_miss | lat_miss) & ((np.abs(lat) > 90) | (np.abs(lon) > 180)))
    df["_raw_category"] = raw["Crime type"].to_numpy()
    return df


_MONTH_RE = r"^\d{4}-(0[1-9]|1[0-2])$"


def _validate_common(cand: _Candidates, *, raw_coord_fields, date_field, category_field):
    c = cand.canon
    cand.reject(c["_coord_missing"].to_numpy(bool), "missing coordinates", "/".join(raw_coord_fields))
    cand.reject(c["_coord_bad"].to_numpy(bool), "unparsable coordinates", "/".join(raw_coord_fields))
    month_ok = c["month"].astype("string").str.match(_MONTH_RE).fillna(False).to_numpy(bool)
    cand.reject(~month_ok, "unparsable date", date_field)
    cand.reject(c["category"].isna().to_numpy(bool), "unknown category", category_field)
    ids = c["incident_id"].astype("string")
    cand.reject((ids.isna() | (ids.str.strip() == "")).to_numpy(bool), "missing id", "id")
    cand.canon = c.drop(columns=[k for k in c.columns if k.startswith("_")])


# ------------------------------------------------------------- police.uk API

def read_police_api(
    paths,
    *,
    boundary=None,
    tolerance_m: float = DEFAULT_BORDER_TOLERANCE_M,
    progress=None,
) -> IngestResult:
    """Read the data.police.uk API format, flattened to CSV (or JSON lists of crimes).

    Columns: ``category`` (slug), ``lat``/``long`` (or ``location.latitude``...),
    ``month`` or ``date`` (YYYY-MM), ``persistent_id`` (empty for ASB), ``id``,
    ``street_name`` or ``location.street.name``.
    Ids: ``persistent_id`` (the bulk files' Crime ID) when present, else ``pukapi-<id>``,
    else a content hash.
    """
    members = _expand_paths(paths)
    split = _Split(boundary=boundary, tolerance_m=tolerance_m, reload=lambda i: _read_api_raw(*members[i]))
    for i, (name, opener) in enumerate(members):
        raw = _read_api_raw(name, opener)
        cand = _Candidates(raw, _canon_police_api(raw, name))
        del raw
        _validate_common(cand, raw_coord_fields=("long", "lat"), date_field="month", category_field="category")
        split.add(cand)
        del cand
        if progress:
            progress(i + 1, len(members), name)
    return split.result(files=[m[0] for m in members], source_kind="police-api")


def _read_api_raw(name: str, opener) -> pd.DataFrame:
    """One API file (flattened CSV, or a JSON list of crimes) with every value as text."""
    if str(name).lower().endswith(".json"):
        import json

        with open(opener) as fh:
            return pd.json_normalize(json.load(fh)).astype(str).replace({"None": "", "nan": ""})
    return _read_csv_raw(name, opener)


def _pick(raw: pd.DataFrame, *names):
    for n in names:
        if n in raw.columns:
            return n
    return None


def _canon_police_api(raw: pd.DataFrame, name: str) -> pd.DataFrame:
    lat_c = _pick(raw, "lat", "location.latitude", "latitude")
    lon_c = _pick(raw, "long", "lng", "location.longitude", "longitude")
    month_c = _pick(raw, "month", "date")
    missing = [m for m, c in (("category", _pick(raw, "category")), ("lat", lat_c), ("long", lon_c),
                              ("month|date", month_c)) if c is None]
    if missing:
        raise NotACrimeTableError(name, missing, found=raw.columns, expected_format="data.police.uk API")
    n = len(raw)
    lon, lon_miss, lon_bad = _to_float(raw[lon_c])
    lat, lat_miss, lat_bad = _to_float(raw[lat_c])
    pid_c = _pick(raw, "persistent_id")
    id_c = _pick(raw, "id")
    street_c = _pick(raw, "street_name", "location.street.name")
    pid = raw[pid_c].astype("string").str.strip().fillna("") if pid_c else pd.Series([""] * n, dtype="string")
    num = raw[id_c].astype("string").str.strip().fillna("") if id_c else pd.Series([""] * n, dtype="string")
    keycols = [c for c in (month_c, lat_c, lon_c, "category", street_c) if c]
    derived = _stable_ids("pukapi-h", raw[keycols])
    ids = np.where(pid.to_numpy(dtype=object) != "", pid.to_numpy(dtype=object),
                   np.where(num.to_numpy(dtype=object) != "", "pukapi-" + num.to_numpy(dtype=object), derived))
    x, y = _project(lon, lat)
    df = pd.DataFrame(
        {
            "incident_id": ids,
            "source_kind": "police-api",
            "month": raw[month_c].astype("string").str.strip().str.slice(0, 7),
            "category": _map_unique(raw["category"], normalise_category),
            "x": x, "y": y, "lon": lon, "lat": lat,
            "location": raw[street_c] if street_c else pd.NA,
            "source_file": name,
            "source_row": np.arange(2, n + 2, dtype="int64"),
        }
    )
    df["_coord_missing"] = lon_miss | lat_miss
    df["_coord_bad"] = lon_bad | lat_bad | (~(lon_miss | lat_miss) & ((np.abs(lat) > 90) | (np.abs(lon) > 180)))
    return df


# -------------------------------------------------------- force records export

def load_mapping(path) -> dict:
    """Read a TOML mapping file describing a force records export (see docs/ingest.md)."""
    import tomllib

    try:
        with open(path, "rb") as fh:
            m = tomllib.load(fh)
    except FileNotFoundError:
        raise MappingError(f"{path}: mapping file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"{path}: not valid TOML: {exc}") from None
    return check_mapping(m, source=str(path))


def check_mapping(m: Mapping, source: str = "mapping") -> dict:
    m = {k: dict(v) if isinstance(v, Mapping) else v for k, v in m.items()}
    cols = m.get("columns")
    if not isinstance(cols, dict):
        raise MappingError(f"{source}: needs a [columns] table naming id, date-time and coordinate columns")
    if "id" not in cols:
        raise MappingError(f"{source}: [columns] needs 'id' (the column holding the crime reference)")
    if not ("datetime" in cols or "date" in cols):
        raise MappingError(f"{source}: [columns] needs 'datetime', or 'date' (and optionally 'time')")
    has_ll = "lon" in cols and "lat" in cols
    has_xy = "x" in cols and "y" in cols
    if not (has_ll or has_xy):
        raise MappingError(f"{source}: [columns] needs 'lon' and 'lat', or 'x' and 'y' (with 'crs')")
    if not ("category" in cols or "offence_code" in cols):
        raise MappingError(f"{source}: [columns] needs 'category' and/or 'offence_code'")
    m.setdefault("flags", {})
    m.setdefault("categories", {})
    unknown_flags = set(m["flags"]) - set(FLAG_COLUMNS)
    if unknown_flags:
        raise MappingError(f"{source}: unknown [flags] {sorted(unknown_flags)}; allowed: {list(FLAG_COLUMNS)}")
    return m


def _read_any_table(path: Path, mapping: Mapping) -> pd.DataFrame:
    fmt = (mapping.get("table", {}) or {}).get("format", "auto")
    suf = "".join(path.suffixes).lower()
    if fmt == "auto":
        fmt = "parquet" if suf.endswith(".parquet") else "gpkg" if suf.endswith(".gpkg") else "csv"
    if fmt == "csv":
        return _read_csv_raw(str(path), path)
    if fmt == "parquet":
        df = pd.read_parquet(path)
    elif fmt == "gpkg":
        import pyogrio

        layer = (mapping.get("table", {}) or {}).get("layer")
        df = pyogrio.read_dataframe(path, layer=layer, read_geometry=False)
    else:
        raise MappingError(f"[table] format {fmt!r}: use csv, parquet or gpkg")
    # keep rows "as they came": text, blanks as ''
    return df.astype("string").fillna("").astype(object)


_TRUE = {"y", "yes", "true", "t", "1"}
_FALSE = {"n", "no", "false", "f", "0", ""}


def _flag(s: pd.Series) -> pd.Series:
    low = s.astype("string").str.strip().str.lower()
    out = pd.Series(pd.NA, index=s.index, dtype="boolean")
    out[low.isin(_TRUE).fillna(False)] = True
    out[low.isin(_FALSE - {""}).fillna(False)] = False
    return out


def _table_candidates(path, mapping: Mapping) -> _Candidates:
    """One mapped force-export file read and validated (not yet split)."""
    path = Path(path)
    if not path.exists():
        raise HarmspotError(f"{path}: no such file")
    raw = _read_any_table(path, mapping)
    cols = mapping["columns"]
    needed = [v for k, v in cols.items() if k not in ("datetime_format", "crs", "dayfirst")]
    needed += list(mapping["flags"].values())
    missing = [c for c in needed if c not in raw.columns]
    if missing:
        raise NotACrimeTableError(path, missing, found=raw.columns, expected_format="mapped force export")
    n = len(raw)
    name = str(path)
    # coordinates
    if "x" in cols:
        xv, xm, xb = _to_float(raw[cols["x"]])
        yv, ym, yb = _to_float(raw[cols["y"]])
        crs = cols.get("crs", BNG)
        from pyproj import Transformer

        if str(crs).upper() in (BNG, "27700"):
            x, y = xv, yv
        else:
            x, y = Transformer.from_crs(crs, BNG, always_xy=True).transform(xv, yv)
        lon, lat = Transformer.from_crs(BNG, WGS84, always_xy=True).transform(x, y)
        coord_fields = (cols["x"], cols["y"])
        bad = xb | yb
        miss = xm | ym
    else:
        lon, lm, lb = _to_float(raw[cols["lon"]])
        lat, am, ab = _to_float(raw[cols["lat"]])
        x, y = _project(lon, lat)
        coord_fields = (cols["lon"], cols["lat"])
        miss = lm | am
        bad = lb | ab | (~miss & ((np.abs(lat) > 90) | (np.abs(lon) > 180)))
    bad = bad | (~miss & ~(np.isfinite(x) & np.isfinite(y)))
    # date-time
    fmt = cols.get("datetime_format")
    dayfirst = bool(cols.get("dayfirst", True))
    if "datetime" in cols:
        dt_txt = raw[cols["datetime"]].astype("string").str.strip()
        date_field = cols["datetime"]
    else:
        dt_txt = raw[cols["date"]].astype("string").str.strip()
        if "time" in cols:
            dt_txt = dt_txt + " " + raw[cols["time"]].astype("string").str.strip()
        date_field = cols["date"] + ("+" + cols["time"] if "time" in cols else "")
    if fmt:
        occurred = pd.to_datetime(dt_txt, format=fmt, errors="coerce")
    else:
        occurred = pd.to_datetime(dt_txt, errors="coerce", dayfirst=dayfirst, format="mixed")
    if getattr(occurred.dt, "tz", None) is not None:
        occurred = occurred.dt.tz_convert("Europe/London").dt.tz_localize(None)
    month = occurred.dt.strftime("%Y-%m").astype("string")
    # category
    catmap = {str(k).strip().lower(): v for k, v in mapping["categories"].items()}
    for k, v in catmap.items():
        if normalise_category(v) is None:
            raise MappingError(f"[categories] {k!r} = {v!r}: not a police.uk crime type")
    cat = pd.Series([None] * n, dtype=object)
    if "category" in cols:
        rc = raw[cols["category"]].astype("string").str.strip()
        cat = rc.map(lambda v: normalise_category(catmap.get(str(v).lower(), v)) if isinstance(v, str) else None)
        cat_field = cols["category"]
    if "offence_code" in cols:
        oc = raw[cols["offence_code"]].astype("string").str.strip()
        from_code = oc.map(lambda v: category_from_ho_code(v) if isinstance(v, str) else None)
        cat = cat.where(cat.notna(), from_code)
        cat_field = cols.get("category", cols["offence_code"])
    rid = raw[cols["id"]].astype("string").str.strip()
    df = pd.DataFrame(
        {
            "incident_id": rid.where(rid != "", None),
            "source_kind": "table",
            "month": month,
            "occurred_at": occurred.astype("datetime64[ns]"),
            "category": cat,
            "offence_code": raw[cols["offence_code"]].astype("string") if "offence_code" in cols else pd.NA,
            "x": x, "y": y, "lon": lon, "lat": lat,
            "location": raw[cols["location"]] if "location" in cols else pd.NA,
            "source_file": name,
            "source_row": np.arange(2, n + 2, dtype="int64"),
        }
    )
    for f, col in mapping["flags"].items():
        df[f] = _flag(raw[col]).to_numpy()
    if "victim_age" in cols:
        df["victim_age"] = pd.to_numeric(raw[cols["victim_age"]], errors="coerce")
    df["_coord_missing"] = miss
    df["_coord_bad"] = bad
    cand = _Candidates(raw, df)
    del raw
    _validate_common(cand, raw_coord_fields=coord_fields, date_field=date_field, category_field=cat_field)
    return cand


def read_table(
    paths,
    mapping: Mapping,
    *,
    boundary=None,
    tolerance_m: float = DEFAULT_BORDER_TOLERANCE_M,
    progress=None,
) -> IngestResult:
    """Read a force records export (CSV, GeoPackage or Parquet) described by a mapping.

    ``paths``: one file or a list of files of the same export (e.g. one per year). Duplicate ids
    are rejected across all of them (the first occurrence is kept), as in the other readers.

    ``mapping`` is the parsed TOML (see :func:`load_mapping`)::

        [columns]
        id = "URN"
        datetime = "Committed"          # or: date = "Date", time = "Time"
        datetime_format = "%d/%m/%Y %H:%M"   # optional; else ISO / day-first parsing
        x = "Easting"                   # or lon/lat
        y = "Northing"
        crs = "EPSG:27700"
        offence_code = "HOCode"
        category = "Group"              # police.uk type, API slug, or a key of [categories]
        location = "Street"
        victim_age = "VictimAge"
        [flags]
        domestic = "DA"                 # Y/N, yes/no, true/false, 1/0
        [categories]
        "Violence with injury" = "Violence and sexual offences"
    """
    files = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else list(paths))]
    if not files:
        raise HarmspotError("no files given")
    for f in files:
        if not f.exists():
            raise HarmspotError(f"{f}: no such file")
    mapping = check_mapping(mapping)
    split = _Split(boundary=boundary, tolerance_m=tolerance_m, reload=lambda i: _read_any_table(files[i], mapping))
    for i, f in enumerate(files):
        cand = _table_candidates(f, mapping)
        split.add(cand)
        del cand
        if progress:
            progress(i + 1, len(files), str(f))
    return split.result(files=[str(f) for f in files], source_kind="table")


def require_nonempty(table: IncidentTable, what: str = "incidents") -> IncidentTable:
    if len(table) == 0:
        raise EmptyInputError(f"no {what} match the period, categories and area asked for")
    return table
