"""Finding input files (paths, folders, zip members), reading CSVs as text, and telling a police.uk
street file from an API export or a force table (``sniff_format``).
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pandas as pd

from geo.core.errors import HarmspotError, NotACrimeTableError

#: Columns that mark a police.uk street-level CSV (used to sniff a file's kind).
POLICE_UK_REQUIRED = ("Crime ID", "Month", "Longitude", "Latitude", "Crime type")


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
