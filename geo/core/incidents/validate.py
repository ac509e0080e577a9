"""The checks every incident reader shares: coordinates to numbers, projection to BNG, the study-area
test with a border tolerance, stable ids, duplicates across files, and the accepted/rejected split.
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import shapely

from geo import BNG, WGS84
from geo.core.errors import HarmspotError
from geo.core.incidents.table import IncidentTable, IngestResult, _empty_canonical, coerce_schema


#: Default distance (metres) beyond the study-area boundary within which points are
#: still accepted. police.uk snaps points to a master list of "on or near" places,
#: so incidents just inside a border can be published a street beyond it; 100 m
#: keeps those without pulling in the neighbouring force's town centres.
DEFAULT_BORDER_TOLERANCE_M = 100.0


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
