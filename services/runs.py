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

from geo.core.errors import HarmspotError
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
            from geo.core.categories import resolve_categories

            return list(resolve_categories(v))
        return v

    @field_validator("weights")
    @classmethod
    def _weights(cls, v):
        from geo.core.harm import list_builtin

        if v not in list_builtin():
            raise ValueError(f"weights {v!r}: not a shipped table ({', '.join(list_builtin())})")
        return v


class CellsParams(CommonParams):
    grid: Literal["square", "h3"] = Field("square", description="BNG squares or H3 cells.")
    cell: float | None = Field(None, ge=25, le=5000, description="Square size in metres (default 150).")
    res: int | None = Field(None, ge=5, le=12, description="H3 resolution (default 9).")


class HotspotsParams(CommonParams):
    method: Literal["gistar", "kde"] = Field("gistar", description="Getis-Ord Gi* cells or a KDE surface.")
    cell: float | None = Field(None, ge=25, le=5000, description="Cell size in metres (default: automatic).")
    bandwidth: float | None = Field(None, ge=25, le=20000, description="KDE bandwidth in metres (default: rule).")
    band: float | None = Field(None, ge=25, le=20000, description="Gi* distance band in metres.")
    weight: Literal["count", "harm"] | None = Field(None, description="Variable (default: Gi* count, KDE harm).")
    adjust: Literal["fdr", "bonferroni", "none"] = "fdr"
    permutations: int = Field(0, ge=0, le=999)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)


class GripParams(CommonParams):
    n: int = Field(20, ge=1, le=200, description="Spots per town.")
    budget: int | None = Field(None, ge=1, le=2000, description="Force-wide number of spots.")
    cell: float = Field(150.0, ge=50, le=1000)
    name_col: str = Field("name", pattern=r"^[A-Za-z_][A-Za-z0-9_ ]{0,63}$",
                          description="Town name column of the 'towns' upload.")


class RtmParams(CommonParams):
    cell: float | None = Field(None, ge=10, le=1000)
    block: float | None = Field(None, ge=20, le=2000)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    cv: Literal["spatial", "random"] = Field("spatial", description="Lasso CV folds: spatial blocks or random cells.")
    cv_block: float | None = Field(None, ge=10, le=50000, description="Spatial CV block side in metres (default: "
                                   "twice the largest spatial influence, at least 4 cells).")


class MinervaParams(CommonParams):
    units: Literal["square", "h3"] = Field("square", description="Units covering the store's study area.")
    cell: float = Field(250.0, ge=50, le=2000, description="Square size in metres.")
    res: int = Field(9, ge=6, le=11, description="H3 resolution.")
    vawg: Literal["auto", "flag", "proxy"] = "auto"
    include_domestic: bool = False
    rr_min: float = Field(1.5, ge=1.0, le=10.0)
    alpha: float = Field(0.05, gt=0, lt=1)


class DoseParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id_col: str = Field("spot_id", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    gap_factor: float = Field(3.0, gt=0, le=50)
    min_dwell_min: float = Field(2.0, ge=0, le=240)
    max_gap_days: float = Field(4.0, gt=0, le=365)


class EvaluationParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    before: str = Field(..., pattern=r"^\d{4}-\d{2}(-\d{2})?:\d{4}-\d{2}(-\d{2})?$",
                        description="Before period A:B (YYYY-MM or YYYY-MM-DD).")
    after: str = Field(..., pattern=r"^\d{4}-\d{2}(-\d{2})?:\d{4}-\d{2}(-\d{2})?$",
                       description="After period A:B.")
    id_col: str = Field("spot_id", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    buffer_m: float = Field(100.0, ge=0, le=2000)
    categories: list[str] | None = Field(None, max_length=40)
    weights: str = Field("cchi-national-2026", pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    proactive: bool = False
    seed: int = Field(0, ge=0, le=2**31 - 1)

    _cats = field_validator("categories")(CommonParams._cats.__func__)
    _weights = field_validator("weights")(CommonParams._weights.__func__)


@dataclass
class RunKind:
    name: str
    params: type[BaseModel]
    fn: Callable
    modules: tuple[str, ...] = ()
    uploads: dict = field(default_factory=dict)  # slot -> description; "*" = any slot name
    description: str = ""
    required: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()  # slots read as plain tables (not geometry)

    def available(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.modules)

    def usable(self) -> bool:
        """Its geo modules are in this build and the kind is wired to them."""
        return self.available() and not getattr(self.fn, "not_wired", False)


# ------------------------------------------------------------------------------------------ helpers
def _period_and_incidents(store, p: CommonParams, default_months=None):
    from services.cli import resolve_period

    period, choices = resolve_period(store, p.date_from, p.date_to, default_months=default_months)
    return period, choices, store.incidents(period=period, categories=p.categories)


def _weights(p: CommonParams):
    from geo.core.harm import WeightTable

    return WeightTable.builtin(p.weights, proactive=p.proactive)


def _area(store, uploads):
    if "area" in uploads:
        return uploads["area"]
    return store.study_area()


def run_cells(p: CellsParams, store, uploads):
    from geo.units.counts import count_units
    from geo.core.result import Choice
    from geo.units.h3 import H3Units
    from geo.units.lattice import SquareGrid

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


def run_hotspots(p: HotspotsParams, store, uploads):
    from geo.units.lattice import SquareGrid

    period, choices, inc = _period_and_incidents(store, p)
    area = _area(store, uploads)
    inputs = {"store": "service store", "incidents": len(inc)}
    if p.method == "kde":
        from geo.hotspots.kde import hotspots_kde

        res = hotspots_kde(inc, _weights(p), area=area, period=period, categories=p.categories, cell=p.cell,
                           bandwidth=p.bandwidth, weight=p.weight or "harm", inputs=inputs)
    else:
        from geo.hotspots.gistar import hotspots_gistar

        units = SquareGrid(p.cell) if p.cell else None
        res = hotspots_gistar(inc, units, _weights(p), area=area, period=period, categories=p.categories,
                              band=p.band, weight=p.weight or "count", adjust=p.adjust,
                              permutations=p.permutations, seed=p.seed, inputs=inputs)
    res.choices = choices + res.choices
    return res


def run_grip(p: GripParams, store, uploads):
    from geo.grip.spots import select_spots
    from geo.core.period import Period

    period = Period.parse(p.date_from or p.date_to, p.date_to or p.date_from) if (p.date_from or p.date_to) else None
    inc = store.incidents(categories=p.categories)
    towns = uploads["towns"]
    if p.name_col not in towns.columns:
        raise HarmspotError(f"upload 'towns': no column {p.name_col!r} (name_col); found {', '.join(map(str, towns.columns))}")
    return select_spots(inc, towns, name_col=p.name_col, n=p.n, budget=p.budget, cell=p.cell, weights=_weights(p),
                        period=period, area=_area(store, uploads))


def run_rtm(p: RtmParams, store, uploads):
    from geo.rtm.factors import factor_from_frame
    from geo.rtm.model import risk_terrain

    period, choices, inc = _period_and_incidents(store, p)
    area = _area(store, uploads)
    if area is None:
        raise HarmspotError("rtm needs a study area: the store has none; upload one as 'area'")
    factors = [factor_from_frame(name, g, source=f"upload {name!r}", area=area, buffer_m=300.0)
               for name, g in uploads.items() if name != "area"]
    if not factors:
        raise HarmspotError("rtm needs at least one risk-factor upload (any slot name, e.g. 'pubs', 'stations')")
    res = risk_terrain(inc, factors, area, cell=p.cell, block=p.block, seed=p.seed, cv_scheme=p.cv,
                       cv_block=p.cv_block, inputs={"store": "service store", "incidents": len(inc)})
    res.choices = choices + res.choices
    return res


def run_dose(p: DoseParams, store, uploads):
    from geo.patrol.dose import compute_dose
    from geo.patrol.pings import validate_pings

    pings = validate_pings(uploads["pings"], source="upload 'pings'")
    spots = uploads["spots"]
    if p.id_col not in spots.columns:
        raise HarmspotError(f"upload 'spots': no column {p.id_col!r} (id_col); found {', '.join(map(str, spots.columns))}")
    return compute_dose(pings, spots, p.id_col, gap_factor=p.gap_factor, min_dwell_min=p.min_dwell_min,
                        max_gap_days=p.max_gap_days)


def run_evaluation(p: EvaluationParams, store, uploads):
    from geo.evaluation.areas import evaluate_areas
    from geo.core.harm import WeightTable
    from geo.core.period import Period

    inc = store.incidents(categories=p.categories)
    control = uploads.get("control", "auto")
    return evaluate_areas(inc, uploads["treated"], control, id_col=p.id_col, buffer_m=p.buffer_m,
                          before=Period.parse_range(p.before), after=Period.parse_range(p.after),
                          weights=WeightTable.builtin(p.weights, proactive=p.proactive), categories=p.categories,
                          area=store.study_area(), seed=p.seed)


def run_minerva(p: MinervaParams, store, uploads):
    from geo.minerva.zones import h3_units, minerva_zones, points_from_frame, square_units

    period, choices, inc = _period_and_incidents(store, p)
    area = _area(store, uploads)
    if area is None:
        raise HarmspotError("minerva needs a study area: the store has none; upload one as 'area'")
    units = square_units(area, p.cell) if p.units == "square" else h3_units(area, p.res)
    fear = points_from_frame(uploads["fear"], "upload 'fear'")
    ctx = {k: v for k, v in uploads.items() if k not in ("fear", "area", "districts")}
    res = minerva_zones(units, inc, fear, id_col="unit_id", layers=ctx, period=period, vawg=p.vawg,
                        proxy_categories=p.categories, include_domestic=p.include_domestic, rr_min=p.rr_min,
                        alpha=p.alpha, districts=uploads.get("districts"))
    res.choices = choices + res.choices
    return res


def _not_wired(kind):
    def fn(p, store, uploads):
        raise NotAvailable(f"run kind {kind!r} is not available in this build (its geo module is not wired yet)")
    fn.not_wired = True
    return fn


AREA = {"area": "optional study-area polygons (.geojson/.gpkg, or .csv with a wkt column); default the store's"}


def _registry() -> dict[str, RunKind]:
    kinds = {
        "cells": RunKind("cells", CellsParams, run_cells, ("geo.units.counts",), dict(AREA),
                         "Harm-weighted counts per square or H3 cell."),
        "hotspots": RunKind("hotspots", HotspotsParams, run_hotspots, ("geo.hotspots.gistar", "geo.hotspots.kde"), dict(AREA),
                            "Getis-Ord Gi* hot-spot cells, or a KDE surface (method)."),
        "grip": RunKind("grip", GripParams, run_grip, ("geo.grip.spots",),
                        {"towns": "town polygons with a name column (required)", **AREA},
                        "Grip harm spots per town with a patrol plan.", required=("towns",)),
        "rtm": RunKind("rtm", RtmParams, run_rtm, ("geo.rtm.model", "geo.rtm.factors"),
                       {"*": "risk-factor points, one upload per factor named by its slot (pubs, stations...)", **AREA},
                       "Risk terrain modelling: relative risk surface and priority places."),
        "minerva": RunKind("minerva", MinervaParams, run_minerva, ("geo.minerva.zones",),
                           {"fear": "felt-unsafe reports CSV (longitude/latitude or easting/northing, time, reason)",
                            "districts": "district polygons with a name column (optional)",
                            "*": "context point layers, one per slot name (pubs, stations...)", **AREA},
                           "Minerva VAWG zones where offences and fear coincide.", required=("fear",),
                           tables=("fear",)),
        "dose": RunKind("dose", DoseParams, run_dose, ("geo.patrol.dose", "geo.patrol.pings"),
                        {"pings": "GPS pings CSV (unit_id, timestamp, longitude, latitude)",
                         "spots": "spot polygons with id_col"},
                        "Patrol dose per spot from GPS pings.", required=("pings", "spots"), tables=("pings",)),
        "evaluation": RunKind("evaluation", EvaluationParams, run_evaluation, ("geo.evaluation.areas",),
                              {"treated": "treated spot polygons with id_col (required)",
                               "control": "control polygons (default: matched automatically)"},
                              "Before/after evaluation (WDQ, WDD, DiD, SPPT).", required=("treated",)),
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
        df = read_table_upload(slot, filename, data, max_rows)
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


def read_table_upload(slot: str, filename: str, data: bytes, max_rows: int):
    """An uploaded CSV as a plain DataFrame (validated by the analysis itself, e.g. GPS pings, fear reports)."""
    import pandas as pd

    label = f"upload {slot!r} ({filename})"
    if not (filename or "").lower().endswith(".csv"):
        raise HarmspotError(f"{label}: send a .csv file")
    try:
        df = pd.read_csv(io.BytesIO(data))
    except Exception as exc:  # pandas raises several parser errors
        raise HarmspotError(f"{label}: not a readable CSV ({exc})") from None
    if len(df) > max_rows:
        raise HarmspotError(f"{label}: {len(df):,} rows; the limit is {max_rows:,} (HARMSPOT_MAX_UPLOAD_ROWS)")
    return df


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
        if not spec.usable():
            raise NotAvailable(f"run kind {kind!r} is not available in this build "
                               f"(needs {', '.join(spec.modules)})")
        import re

        unknown = [s for s in upload_slots if s not in spec.uploads
                   and not ("*" in spec.uploads and re.fullmatch(r"[a-z][a-z0-9_]{0,30}", s))]
        if unknown:
            raise InvalidParameter(f"upload {unknown[0]!r}: run kind {kind!r} takes "
                                   f"{', '.join(spec.uploads) or 'no uploads'}")
        missing = [s for s in spec.required if s not in upload_slots]
        if missing:
            raise InvalidParameter(f"run kind {kind!r} needs the upload {missing[0]!r} "
                                   f"({spec.uploads[missing[0]]}); send multipart/form-data with params + files")
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
            frames = {slot: (read_table_upload(slot, fn, data, self.settings.max_upload_rows) if slot in spec.tables
                             else read_upload(slot, fn, data, self.settings.max_upload_rows))
                      for slot, (fn, data) in uploads.items()}
            result = spec.fn(params, self.store, frames)
            ids = save_result(self.store, result, run_id=run_id, name=spec.name)
            from geo.core.result import jsonable

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
