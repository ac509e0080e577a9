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

from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from geo import BNG, WGS84
from geo.core.categories import category_from_ho_code, normalise_category
from geo.core.errors import HarmspotError, MappingError, NotACrimeTableError
from geo.core.incidents.table import FLAG_COLUMNS, IngestResult
from geo.core.incidents.validate import DEFAULT_BORDER_TOLERANCE_M, _Candidates, _Split, _project, _to_float, _validate_common
from geo.core.incidents.files import _read_csv_raw


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
