"""The result every analysis returns: a layer plus everything that made it.

``AnalysisResult.layer`` is a GeoDataFrame (vector, EPSG:27700) or a
:class:`Raster`. ``params`` holds every parameter used, ``choices`` the ones
harmspot chose automatically (with the reason, so the CLI, maps and API can echo
them), ``weight_table`` the harm table's name/version/source, ``period`` the
analysed period and ``inputs`` what data went in. ``maps/`` and ``services/``
consume only these.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from geo import BNG


@dataclass(frozen=True)
class Choice:
    """A value harmspot picked for the user, and why."""

    name: str
    value: Any
    reason: str
    automatic: bool = True

    def message(self) -> str:
        how = "automatically" if self.automatic else "as given"
        return f"{self.name} set to {self.value} {how} ({self.reason})" if self.reason else f"{self.name} = {self.value} {how}"

    def to_dict(self) -> dict:
        return {"name": self.name, "value": _jsonable(self.value), "reason": self.reason, "automatic": self.automatic}


@dataclass
class Raster:
    """A single-band grid in EPSG:27700; ``transform`` is an affine.Affine (north-up)."""

    array: np.ndarray
    transform: Any
    crs: str = BNG
    nodata: float | None = None
    name: str = "value"
    units: str = ""

    @property
    def shape(self) -> tuple[int, int]:
        return self.array.shape

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        t = self.transform
        h, w = self.array.shape
        x0, y0 = t.c, t.f
        x1, y1 = x0 + t.a * w, y0 + t.e * h
        return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))

    @property
    def cell_size(self) -> float:
        return abs(self.transform.a)


@dataclass
class AnalysisResult:
    kind: str
    layer: Any  # GeoDataFrame | Raster
    params: dict = field(default_factory=dict)
    choices: list[Choice] = field(default_factory=list)
    weight_table: dict | None = None
    period: Any = None  # geo.core.period.Period | None
    inputs: dict = field(default_factory=dict)
    tables: dict = field(default_factory=dict)  # name -> DataFrame (ranked tables, model summaries...)
    summary: dict = field(default_factory=dict)
    extra_layers: dict = field(default_factory=dict)  # name -> GeoDataFrame | Raster
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))

    @property
    def is_raster(self) -> bool:
        return isinstance(self.layer, Raster)

    def messages(self) -> list[str]:
        return [c.message() for c in self.choices if c.automatic]

    def metadata(self) -> dict:
        """JSON-ready description: written beside every output and served by the API."""
        return _jsonable(
            {
                "kind": self.kind,
                "layer_type": "raster" if self.is_raster else "vector",
                "crs": self.layer.crs if self.is_raster else str(getattr(self.layer, "crs", BNG)),
                "params": self.params,
                "choices": [c.to_dict() for c in self.choices],
                "weight_table": self.weight_table,
                "period": self.period.to_dict() if hasattr(self.period, "to_dict") else self.period,
                "inputs": self.inputs,
                "summary": self.summary,
                "created": self.created,
            }
        )


def _jsonable(v):
    import datetime
    from pathlib import Path

    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return None if not np.isfinite(v) else float(v)
    if isinstance(v, float):
        return None if not np.isfinite(v) else v
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, (datetime.date, datetime.datetime)):
        return v.isoformat()
    if isinstance(v, Path):
        return str(v)
    if hasattr(v, "to_dict") and not isinstance(v, type):
        try:
            return _jsonable(v.to_dict())
        except TypeError:
            pass
    return v


jsonable = _jsonable
