"""Readers for data.police.uk: the monthly street-level CSVs (files, folders, zips) and the police API's
CSV/JSON, into the canonical table with every rejected row kept and its reason.
"""
from __future__ import annotations


import numpy as np
import pandas as pd

from geo.core.categories import normalise_category
from geo.core.errors import NotACrimeTableError
from geo.core.incidents.table import IngestResult
from geo.core.incidents.validate import DEFAULT_BORDER_TOLERANCE_M, _Candidates, _Split, _map_unique, _project, _stable_ids, _to_float, _validate_common
from geo.core.incidents.files import POLICE_UK_REQUIRED, _expand_paths, _read_csv_raw

POLICE_API_REQUIRED = ("category", "lat")  # plus long/lng and month/date, checked below


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
