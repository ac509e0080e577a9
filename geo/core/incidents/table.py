"""The canonical incident table (``IncidentTable``, columns in ``SCHEMA``) every analysis takes, and
``IngestResult``, what a reader returns: accepted incidents, rejected rows and the tally.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import pandas as pd
import shapely

from geo import BNG
from geo.core.errors import EmptyInputError, HarmspotError
from geo.core.period import Period


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


def require_nonempty(table: IncidentTable, what: str = "incidents") -> IncidentTable:
    if len(table) == 0:
        raise EmptyInputError(f"no {what} match the period, categories and area asked for")
    return table
