"""Analysis runs: a registry of run kinds, strict parameter models, uploads and a background worker.

``POST /runs/{kind}`` validates the parameters against the kind's pydantic model
(unknown fields are rejected), stores a ``queued`` run row and hands the job to a
thread pool. The worker marks the run ``running``, calls the kind's function
``fn(params, store, uploads) -> AnalysisResult``, writes every layer of the result
in one transaction (services.layers.save_result) and marks the run ``done`` with
the layer ids, summary and automatic choices -- or ``failed`` with the reason.
Nothing is written for a failed run, so a bad upload leaves the store as it was.

Run state lives in the store. When the service starts, runs still ``queued`` or
``running`` belong to a process that died: :meth:`RunManager.recover` marks them
``failed`` with a reason; finished runs and their layers are untouched.

Kinds call the geo analysis functions, imported lazily inside each function. A
kind whose geo module is missing from this build answers 501 ("not available in
this build").
"""
from __future__ import annotations

import datetime as dt
import importlib.util
import io
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from geo.errors import HarmspotError
from services.auth import InvalidParameter, NotAvailable, NotFound, Principal
from services.layers import new_id, save_result

UPLOAD_EXTS = (".csv", ".geojson", ".json", ".gpkg")


# ------------------------------------------------------------------------------------------ parameters
class CommonParams(BaseModel):
    """Parameters every run kind shares (a shipped weight table only: no server file paths)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    date_from: str | None = Field(None, alias="from", pattern=r"^\d{4}-\d{2}(-\d{2})?$",
                                  description="Period start YYYY-MM[-DD] (default: first month in the store).")
    date_to: str | None = Field(None, alias="to", pattern=r"^\d{4}-\d{2}(-\d{2})?$",
                                description="Period end YYYY-MM[-DD] (default: last month in the store).")
    categories: list[str] | None = Field(None, max_length=40, description="police.uk crime types or API slugs.")
    weights: str = Field("cchi-national-2026", pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$",
                         description="A shipped harm weight table.")
    proactive: bool = Field(False, description="Weigh drugs, weapons possession and ASB.")

    @field_validator("categories")
    @classmethod
    def _cats(cls, v):
        if v:
            from geo.categories import resolve_categories

            return list(resolve_categories(v))
        return v

    @field_validator("weights")
    @classmethod
    def _weights(cls, v):
        from geo.harm import list_builtin

        if v not in list_builtin():
            raise ValueError(f"weights {v!r}: not a shipped table ({', '.join(list_builtin())})")
        return v


class CellsParams(CommonParams):
    grid: Literal["square", "h3"] = Field("square", description="BNG squares or H3 cells.")
    cell: float | None = Field(None, ge=25, le=5000, description="Square size in metres (default 150).")
    res: int | None = Field(None, ge=5, le=12, description="H3 resolution (default 9).")


class HotspotsParams(CommonParams):
    method: Literal["gistar", "kde"] = Field("gistar", description="Getis-Ord Gi* cells or a KDE surface.")
    cell: float | None = Field(None, ge=25, le=5000)
    bandwidth: float | None = Field(None, ge=25, le=20000)


class GripParams(CommonParams):
    cell: float | None = Field(None, ge=25, le=5000)
    n_spots: int | None = Field(None, ge=1, le=500)


class RtmParams(CommonParams):
    cell: float | None = Field(None, ge=25, le=5000)


class MinervaParams(CommonParams):
    cell: float | None = Field(None, ge=25, le=5000)


class DoseParams(CommonParams):
    pass


class EvaluationParams(CommonParams):
    intervention_from: str | None = Field(None, pattern=r"^\d{4}-\d{2}(-\d{2})?$")
    intervention_to: str | None = Field(None, pattern=r"^\d{4}-\d{2}(-\d{2})?$")


@dataclass
class RunKind:
    name: str
    params: type[BaseModel]
    fn: Callable
    modules: tuple[str, ...] = ()
    uploads: dict = field(default_factory=dict)  # slot -> description
    description: str = ""

    def available(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.modules)


# ------------------------------------------------------------------------------------------ helpers
def _period_and_incidents(store, p: CommonParams, default_months=None):
    from services.cli import resolve_period

    period, choices = resolve_period(store, p.date_from, p.date_to, default_months=default_months)
    return period, choices, store.incidents(period=period, categories=p.categories)


def _weights(p: CommonParams):
    from geo.harm import WeightTable

    return WeightTable.builtin(p.weights, proactive=p.proactive)


def _area(store, uploads):
    if "area" in uploads:
        return uploads["area"]
    return store.study_area()


def run_cells(p: CellsParams, store, uploads):
    from geo.aggregate import count_units
    from geo.result import Choice
    from geo.units import H3Units, SquareGrid

    period, choices, inc = _period_and_incidents(store, p)
    extra = []
    if p.grid == "square":
        if p.cell is None:
            extra.append(Choice("cell size", "150 m", "default BNG square, the Grip harm-spot size"))
        units = SquareGrid(p.cell or 150.0)
    else:
        if p.res is None:
            extra.append(Choice("H3 resolution", 9, "default, about 200 m across"))
        units = H3Units(p.res if p.res is not None else 9)
    area = _area(store, uploads)
    res = count_units(inc, units, _weights(p), area=area, period=period, categories=p.categories,
                      inputs={"store": "service store", "incidents": len(inc),
                              "area": "upload" if "area" in uploads else "store study area"})
    res.choices = choices + extra + res.choices
    return res


def _not_wired(kind):
    def fn(p, store, uploads):
        raise NotAvailable(f"run kind {kind!r} is not available in this build (its geo module is not wired yet)")
    return fn


def _registry() -> dict[str, RunKind]:
    kinds = {
        "cells": RunKind("cells", CellsParams, run_cells, ("geo.aggregate",),
                         {"area": "optional study-area polygons (.geojson/.gpkg/.csv with WKT)"},
                         "Harm-weighted counts per square or H3 cell."),
        "hotspots": RunKind("hotspots", HotspotsParams, _not_wired("hotspots"), ("geo.gistar", "geo.kde")),
        "grip": RunKind("grip", GripParams, _not_wired("grip"), ("geo.grip",)),
        "rtm": RunKind("rtm", RtmParams, _not_wired("rtm"), ("geo.rtm",)),
        "minerva": RunKind("minerva", MinervaParams, _not_wired("minerva"), ("geo.minerva",)),
        "dose": RunKind("dose", DoseParams, _not_wired("dose"), ("geo.patrol",)),
        "evaluation": RunKind("evaluation", EvaluationParams, _not_wired("evaluation"), ("geo.evaluation",)),
    }
    return kinds


RUN_KINDS = _registry()


# ------------------------------------------------------------------------------------------ uploads
def read_upload(slot: str, filename: str, data: bytes, max_rows: int):
    """An uploaded file as a GeoDataFrame in EPSG:27700; errors name the upload, row and field."""
    import geopandas as gpd
    import pandas as pd

    from geo import BNG, WGS84

    name = (filename or "").lower()
    ext = next((e for e in UPLOAD_EXTS if name.endswith(e)), None)
    if ext is None:
        raise HarmspotError(f"upload {slot!r} ({filename!r}): use one of {', '.join(UPLOAD_EXTS)}")
    label = f"upload {slot!r} ({filename})"
    if ext == ".csv":
        try:
            df = pd.read_csv(io.BytesIO(data))
        except Exception as exc:  # pandas raises several parser errors
            raise HarmspotError(f"{label}: not a readable CSV ({exc})") from None
        if len(df) > max_rows:
            raise HarmspotError(f"{label}: {len(df):,} rows; the limit is {max_rows:,} (HARMSPOT_MAX_UPLOAD_ROWS)")
        cols = {c.lower(): c for c in df.columns}
        if "wkt" in cols:
            geom = gpd.GeoSeries.from_wkt(df[cols["wkt"]].astype(str), on_invalid="ignore")
            bad = geom.isna()
            if bad.any():
                i = int(bad.to_numpy().nonzero()[0][0])
                raise HarmspotError(f"{label}: {int(bad.sum())} row(s) with unreadable WKT; first problem: row {i + 2}, "
                                    f"field {cols['wkt']!r}")
            crs = BNG if "crs" not in cols else str(df[cols["crs"]].iloc[0])
            return gpd.GeoDataFrame(df.drop(columns=[cols["wkt"]]), geometry=geom.values, crs=crs).to_crs(BNG)
        for xs, ys, crs in (("longitude", "latitude", WGS84), ("lon", "lat", WGS84), ("easting", "northing", BNG),
                            ("x", "y", BNG)):
            if xs in cols and ys in cols:
                x = pd.to_numeric(df[cols[xs]], errors="coerce")
                y = pd.to_numeric(df[cols[ys]], errors="coerce")
                bad = x.isna() | y.isna()
                if bad.any():
                    i = int(bad.to_numpy().nonzero()[0][0])
                    f = cols[xs] if x.isna().iloc[i] else cols[ys]
                    raise HarmspotError(f"{label}: {int(bad.sum())} row(s) without numeric coordinates; first problem: "
                                        f"row {i + 2}, field {f!r}")
                return gpd.GeoDataFrame(df, geometry=gpd.points_from_xy(x, y), crs=crs).to_crs(BNG)
        raise HarmspotError(f"{label}: no geometry columns; give wkt, or longitude/latitude, or easting/northing")
    try:
        gdf = gpd.read_file(io.BytesIO(data), engine="pyogrio")
    except Exception as exc:  # GDAL errors come in several types
        raise HarmspotError(f"{label}: not a readable {ext} file ({str(exc)[:200]})") from None
    if len(gdf) > max_rows:
        raise HarmspotError(f"{label}: {len(gdf):,} rows; the limit is {max_rows:,} (HARMSPOT_MAX_UPLOAD_ROWS)")
    if gdf.crs is None:
        raise HarmspotError(f"{label}: no CRS; write the file with its CRS (EPSG:27700 or EPSG:4326)")
    missing = gdf.geometry.isna() | gdf.geometry.is_empty
    if missing.any():
        i = int(missing.to_numpy().nonzero()[0][0])
        raise HarmspotError(f"{label}: {int(missing.sum())} feature(s) without geometry; first problem: feature {i + 1}")
    return gdf.to_crs(BNG)


# ------------------------------------------------------------------------------------------ worker
def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def public_run(r: dict) -> dict:
    return {k: r.get(k) for k in ("run_id", "kind", "status", "params", "created", "started", "finished", "error",
                                  "layer_ids", "summary", "choices")}


class RunManager:
    """Runs analyses in background threads; their state lives in the store."""

    def __init__(self, store, settings):
        self.store = store
        self.settings = settings
        self.kinds = RUN_KINDS
        self.pool = ThreadPoolExecutor(settings.run_workers, thread_name_prefix="harmspot-run")

    def recover(self) -> list[str]:
        """Mark runs left queued/running by a previous process as failed (called at start-up)."""
        return self.store.fail_interrupted_runs(
            f"interrupted: the service stopped before this run finished (noticed at restart {_now()}); "
            "submit it again")

    def validate(self, kind: str, raw: dict, upload_slots=()) -> tuple[RunKind, BaseModel]:
        spec = self.kinds.get(kind)
        if spec is None:
            raise NotFound(f"run kind {kind!r}: use one of {', '.join(self.kinds)}")
        if not spec.available() or spec.fn.__name__ == "fn":
            raise NotAvailable(f"run kind {kind!r} is not available in this build "
                               f"(needs {', '.join(spec.modules)})")
        unknown = [s for s in upload_slots if s not in spec.uploads]
        if unknown:
            raise InvalidParameter(f"upload {unknown[0]!r}: run kind {kind!r} takes "
                                   f"{', '.join(spec.uploads) or 'no uploads'}")
        if not isinstance(raw, dict):
            raise InvalidParameter("run parameters must be a JSON object")
        try:
            params = spec.params.model_validate(raw)
        except ValidationError as exc:
            errs = exc.errors()
            first = errs[0]
            loc = ".".join(str(x) for x in first.get("loc", ())) or "(body)"
            raise InvalidParameter(f"{len(errs)} invalid run parameter(s); first: {loc}: {first.get('msg')}",
                                   errors=[{"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in errs]) from None
        return spec, params

    def submit(self, kind: str, raw: dict, uploads: dict, who: Principal) -> dict:
        """Validate and queue a run; ``uploads`` maps slot -> (filename, bytes)."""
        spec, params = self.validate(kind, raw, tuple(uploads))
        run_id = new_id()
        row = {"run_id": run_id, "kind": kind, "status": "queued", "key_id": who.key_id, "created": _now(),
               "params": {**params.model_dump(by_alias=True, exclude_none=True),
                          **({"uploads": {k: v[0] for k, v in uploads.items()}} if uploads else {})}}
        self.store.add_run(row)
        self.pool.submit(self._work, run_id, spec, params, uploads)
        return public_run(self.store.get_run(run_id))

    def _work(self, run_id, spec: RunKind, params, uploads):
        try:
            self.store.update_run(run_id, status="running", started=_now())
            if self.settings.run_delay_seconds:
                time.sleep(self.settings.run_delay_seconds)
            frames = {slot: read_upload(slot, fn, data, self.settings.max_upload_rows)
                      for slot, (fn, data) in uploads.items()}
            result = spec.fn(params, self.store, frames)
            ids = save_result(self.store, result, run_id=run_id, name=spec.name)
            from geo.result import jsonable

            self.store.update_run(run_id, status="done", finished=_now(), layer_ids=ids,
                                  summary=jsonable(result.summary), choices=[c.to_dict() for c in result.choices])
        except HarmspotError as exc:
            self._fail(run_id, str(exc))
        except Exception as exc:  # a bug in an analysis must still end the run with a reason
            self._fail(run_id, f"internal error in {spec.name}: {type(exc).__name__}: {exc}")

    def _fail(self, run_id, reason):
        try:
            self.store.update_run(run_id, status="failed", finished=_now(), error=reason[:2000])
        except Exception:  # pragma: no cover - store closed during shutdown; recover() marks it at restart
            pass

    def shutdown(self):
        self.pool.shutdown(wait=False, cancel_futures=True)
