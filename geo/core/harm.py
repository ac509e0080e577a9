"""Harm weight tables (Cambridge Crime Harm Index and others) and harm sums.

A :class:`WeightTable` maps a key (police.uk ``category`` or Home Office
``offence_code``) to a weight. Tables ship in ``geo/core/weights/`` as TOML with
their source and date; users may give any CSV (``key,weight``) or a per-HO-code
CCHI export.

Following the CCHI's own rule, proactively found offences (drugs, possession of
weapons) and anti-social behaviour weigh 0 unless ``proactive=True``.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from geo.core.categories import PROACTIVE, POLICE_UK_TYPES, normalise_category
from geo.core.errors import WeightTableError


DEFAULT_TABLE = "cchi-national-2026"


@dataclass(frozen=True)
class WeightTable:
    name: str
    version: str
    key: str  # "category" | "offence_code"
    weights: dict[str, float]
    source: str = ""
    date: str = ""
    unit: str = "days"
    proactive: bool = False
    fallback: "WeightTable | None" = None
    notes: str = ""
    extra: dict = field(default_factory=dict)

    # ------------------------------------------------------------ loading
    @classmethod
    def builtin(cls, name: str = DEFAULT_TABLE, *, proactive: bool = False) -> "WeightTable":
        names = list_builtin()
        if name not in names:
            raise WeightTableError(f"weight table {name!r} is not shipped; choose one of {names} or give a file")
        text = resources.files("geo.core").joinpath("weights", f"{name}.toml").read_text()
        return cls._from_toml(tomllib.loads(text), proactive=proactive, source_name=name)

    @classmethod
    def from_file(cls, path, *, proactive: bool = False, fallback: "WeightTable | None" = None) -> "WeightTable":
        """A TOML table like the shipped ones, or a CSV with (category|offence_code) and weight columns."""
        p = Path(path)
        if not p.exists():
            raise WeightTableError(f"{p}: weight table file not found")
        if p.suffix.lower() == ".toml":
            with open(p, "rb") as fh:
                return cls._from_toml(tomllib.load(fh), proactive=proactive, source_name=str(p))
        df = pd.read_csv(p, comment="#", dtype=str)
        df.columns = [c.strip().lower() for c in df.columns]
        wcol = next((c for c in ("weight", "cchi_days", "cchi", "days", "css") if c in df.columns), None)
        if wcol is None:
            raise WeightTableError(f"{p}: needs a weight column (weight, cchi_days, cchi, days or css); found {list(df.columns)}")
        if "offence_code" in df.columns:
            key = "offence_code"
        elif "category" in df.columns or "crime_type" in df.columns:
            key = "category"
            if "category" not in df.columns:
                df = df.rename(columns={"crime_type": "category"})
        else:
            raise WeightTableError(f"{p}: needs an offence_code or category column; found {list(df.columns)}")
        vals = pd.to_numeric(df[wcol], errors="coerce")
        bad = vals.isna() | (vals < 0)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise WeightTableError(
                f"{p}: {int(bad.sum())} row(s) with a missing or negative {wcol!r}; first at data row {i + 1} "
                f"({df.iloc[i].to_dict()})"
            )
        keys = df[key].astype(str).str.strip()
        if key == "category":
            norm = keys.map(normalise_category)
            if norm.isna().any():
                i = int(np.flatnonzero(norm.isna().to_numpy())[0])
                raise WeightTableError(f"{p}: row {i + 1}: category {keys.iloc[i]!r} is not a police.uk crime type")
            keys = norm
        else:
            keys = keys.str.upper()
        return cls(
            name=p.stem, version="user", key=key, weights=dict(zip(keys, vals.astype(float))),
            source=f"user file {p}", proactive=proactive,
            fallback=fallback if key == "offence_code" else None,
        )

    @classmethod
    def _from_toml(cls, d: dict, *, proactive: bool, source_name: str) -> "WeightTable":
        meta = d.get("meta", {})
        w = d.get("weights")
        if not isinstance(w, dict) or not w:
            raise WeightTableError(f"{source_name}: needs a non-empty [weights] table")
        key = meta.get("key", "category")
        if key == "category":
            bad = [k for k in w if normalise_category(k) is None]
            if bad:
                raise WeightTableError(f"{source_name}: [weights] keys {bad} are not police.uk crime types")
            w = {normalise_category(k): float(v) for k, v in w.items()}
        return cls(
            name=meta.get("name", source_name), version=str(meta.get("version", "")), key=key,
            weights={k: float(v) for k, v in w.items()}, source=meta.get("source", ""),
            date=str(meta.get("date", "")), unit=meta.get("unit", "days"), proactive=proactive,
            notes=meta.get("notes", ""),
        )

    # ------------------------------------------------------------ using
    def with_proactive(self, proactive: bool) -> "WeightTable":
        from dataclasses import replace

        fb = None if self.fallback is None else self.fallback.with_proactive(proactive)
        return replace(self, proactive=proactive, fallback=fb)

    def weight_of_category(self, category: str) -> float:
        if not self.proactive and category in PROACTIVE:
            return 0.0
        if self.key == "category":
            return float(self.weights.get(category, 0.0))
        if self.fallback is not None:
            return self.fallback.weight_of_category(category)
        return 0.0

    def weights_for(self, frame: pd.DataFrame) -> np.ndarray:
        """Per-row weight for a canonical incident frame (vectorised: one lookup per distinct value)."""
        cat = frame["category"]
        if self.key == "category":
            w = _per_value(cat, {c: self.weight_of_category(c) for c in POLICE_UK_TYPES}, str)
        else:
            w = _per_value(frame["offence_code"], self.weights, lambda v: str(v).strip().upper())
            if self.fallback is not None:
                fb = _per_value(cat, {c: self.fallback.weight_of_category(c) for c in POLICE_UK_TYPES}, str)
                w = np.where(np.isnan(w), fb, w)
            if not self.proactive:
                w[~np.isnan(_per_value(cat, dict.fromkeys(PROACTIVE, 1.0), str))] = 0.0
        return np.nan_to_num(w, nan=0.0)

    def describe(self) -> dict:
        """What every result records about the table it used."""
        return {
            "name": self.name,
            "version": self.version,
            "key": self.key,
            "unit": self.unit,
            "source": self.source,
            "date": self.date,
            "proactive_included": self.proactive,
            "fallback": self.fallback.name if self.fallback else None,
        }

    def table(self) -> pd.DataFrame:
        if self.key == "category":
            return pd.DataFrame(
                {"category": list(POLICE_UK_TYPES),
                 "weight": [self.weight_of_category(c) for c in POLICE_UK_TYPES]}
            )
        return pd.DataFrame({"offence_code": list(self.weights), "weight": list(self.weights.values())})


def list_builtin() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("geo.core").joinpath("weights").iterdir() if p.name.endswith(".toml"))


def harm_of(frame: pd.DataFrame, table: WeightTable) -> np.ndarray:
    return table.weights_for(frame)


def _per_value(values: pd.Series, mapping: dict, norm) -> np.ndarray:
    """``mapping[norm(value)]`` for each row as float64, NaN where the value is missing or not mapped;
    ``norm`` and the lookup run once per distinct value (pandas.factorize), not once per row."""
    codes, uniques = pd.factorize(values)
    table = np.array([float(mapping.get(norm(u), np.nan)) for u in uniques] + [np.nan], float)
    return table[codes]
