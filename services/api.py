"""The harmspot HTTP API (FastAPI). Build it with :func:`create_app`; nothing runs at import time.

Route handlers are thin: parse, check the key's role, call services.layers /
services.tiles / services.runs, return (STYLE.md point 8). Every error leaves as
one JSON shape::

    {"error": {"status": 403, "code": "forbidden", "message": "...", "detail": {...}}}

with the status taken from :data:`ERROR_STATUS` (one exception -> status table).
Every response carries ``Server-Timing`` (``app`` = total handler time, plus ``db``
and ``encode`` where measured). ``/health`` answers without a key and reports the
library versions that make a map reproducible (pyproj/PROJ, GEOS, GDAL, DuckDB).

Process model: with the DuckDB store, ONE process owns the file. ``harmspot
serve`` is that process; requests run in its thread pool, reads use per-thread
cursors (they see committed data only) and writes go through the store's lock in
single transactions. Create keys before starting the server (the CLI cannot open
the file while the server holds it); with PostGIS, keys can be managed at any time.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any, Literal

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from geo.core.errors import HarmspotError
from services.auth import (ApiError, AuthRequired, Forbidden, InvalidParameter, KeyChecker, LimitExceeded,
                           NotAvailable, NotFound, PayloadTooLarge, Principal, RateLimited, RateLimiter)
from services.layers import (LAYER_ID_PATTERN, LRU, catalogue_entry, feature_collection, get_visible_layer,
                             parse_bbox, parse_properties, visible)
from services.settings import Settings

API_VERSION = "1.0"

#: The one exception -> HTTP status table (most specific class first).
ERROR_STATUS: list[tuple[type, int]] = [
    (AuthRequired, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (PayloadTooLarge, 413),
    (RateLimited, 429),
    (NotAvailable, 501),
    (LimitExceeded, 400),
    (InvalidParameter, 400),
    (ApiError, 400),
    (HarmspotError, 400),
]


def status_for(exc: BaseException) -> int:
    for cls, status in ERROR_STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_body(status: int, code: str, message: str, detail: dict | None = None) -> dict:
    return {"error": {"status": status, "code": code, "message": message, "detail": detail or {}}}


# ------------------------------------------------------------------------------------------ models
class ErrorInfo(BaseModel):
    status: int
    code: str
    message: str
    detail: dict[str, Any] = Field(default_factory=dict)


class ErrorOut(BaseModel):
    """The one JSON error shape."""

    error: ErrorInfo


class HealthOut(BaseModel):
    status: Literal["ok"]
    store_backend: str
    versions: dict[str, str]


class VersionOut(BaseModel):
    harmspot: str
    api: str
    run_kinds: dict[str, bool] = Field(description="Run kind -> available in this build.")


class LayerInfo(BaseModel):
    id: str
    name: str | None = None
    kind: str | None = None
    layer_type: str | None = None
    period: Any = None
    bbox: list[float] | None = Field(None, description="WGS84 minlon, minlat, maxlon, maxlat.")
    crs: str | None = None
    created: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    choices: list[dict[str, Any]] = Field(default_factory=list)
    weight_table: dict[str, Any] | None = None
    n_features: int | None = None
    columns: list[str] = Field(default_factory=list)
    aggregated: bool = False
    incident_level: bool = False
    run_id: str | None = None


class LayerList(BaseModel):
    layers: list[LayerInfo]


class RunOut(BaseModel):
    run_id: str
    kind: str
    status: Literal["queued", "running", "done", "failed"]
    params: dict[str, Any] | None = None
    created: str | None = None
    started: str | None = None
    finished: str | None = None
    error: str | None = None
    layer_ids: list[str] | None = None
    summary: dict[str, Any] | None = None
    choices: list[dict[str, Any]] | None = None


class RunList(BaseModel):
    runs: list[RunOut]


class AuditOut(BaseModel):
    entries: list[dict[str, Any]]


def _errors(*codes: int) -> dict:
    text = {304: "Not modified (ETag matched)", 400: "Bad parameter or limit exceeded", 401: "No or invalid API key",
            403: "The key's role may not do this", 404: "Not found", 413: "Upload too large",
            422: "Invalid parameter", 429: "Rate limit exceeded", 501: "Not available in this build"}
    out = {}
    for c in codes:
        out[c] = {"description": text[c]} if c == 304 else {"model": ErrorOut, "description": text[c]}
    return out


AUTHED = (400, 401, 403, 422, 429)


# ------------------------------------------------------------------------------------------ audit
class AuditWriter:
    """Buffers audit rows and writes them to the store every ``flush_seconds`` (and at shutdown)."""

    def __init__(self, store, flush_seconds: float):
        self.store = store
        self.flush_seconds = flush_seconds
        self._rows: list[tuple] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="harmspot-audit", daemon=True)
        self._thread.start()

    def add(self, row: tuple):
        with self._lock:
            self._rows.append(row)

    def flush(self):
        with self._lock:
            rows, self._rows = self._rows, []
        if rows:
            try:
                self.store.add_audit(rows)
            except Exception:  # keep them for the next attempt rather than lose the audit trail
                with self._lock:
                    self._rows = rows + self._rows

    def _loop(self):
        while not self._stop.wait(self.flush_seconds):
            self.flush()

    def stop(self):
        self._stop.set()
        self.flush()


def library_versions() -> dict[str, str]:
    import platform

    import duckdb
    import fastapi
    import pyproj
    import rasterio
    import shapely

    v = {
        "harmspot": _harmspot_version(), "python": platform.python_version(), "fastapi": fastapi.__version__,
        "pyproj": pyproj.__version__, "proj": pyproj.proj_version_str, "shapely": shapely.__version__,
        "geos": shapely.geos_version_string, "rasterio": rasterio.__version__, "gdal": rasterio.__gdal_version__,
        "duckdb": duckdb.__version__,
    }
    try:
        import rio_tiler

        v["rio_tiler"] = rio_tiler.__version__
    except ImportError:  # pragma: no cover
        pass
    return v


def _harmspot_version() -> str:
    try:
        from importlib.metadata import version

        return version("harmspot")
    except Exception:  # not installed as a distribution
        return "0.1.0"


# ------------------------------------------------------------------------------------------ factory
def create_app(settings: Settings | None = None, store=None) -> FastAPI:
    """Build the API for ``settings`` (and an already open ``store``, else ``settings.store`` is opened).

    Runs left queued/running by a previous process are marked failed here.
    """
    from contextlib import asynccontextmanager

    from services.runs import RUN_KINDS, RunManager, public_run
    from services.store.open import open_store
    from services.tiles import TileService, check_tile

    settings = settings or Settings()
    own_store = store is None
    if store is None:
        store = open_store(settings.store)
    keys = KeyChecker(store, settings.key_cache_seconds)
    limiter = RateLimiter(settings.rate_limit_per_minute)
    runs = RunManager(store, settings)
    runs.recover()
    tiles = TileService(store, settings.tile_cache_size)
    layer_cache = LRU(settings.layer_cache_size)
    meta_cache = CachedMetaStore(store)

    async def visible_meta(layer_id: str, who: Principal, raster: bool | None):
        if meta_cache.cached(layer_id):
            return get_visible_layer(meta_cache, layer_id, who, raster=raster)
        return await run_in_threadpool(get_visible_layer, meta_cache, layer_id, who, raster=raster)
    audit = AuditWriter(store, settings.audit_flush_seconds)
    versions = library_versions()
    backend = type(store).__name__

    @asynccontextmanager
    async def lifespan(app):
        yield
        runs.shutdown()
        audit.stop()
        if own_store:
            store.close()

    app = FastAPI(
        title="harmspot", version=API_VERSION, lifespan=lifespan,
        description="Harm-weighted hot spots, harm spots, risk surfaces and place analyses for UK police forces. "
                    "Send your key in the X-API-Key header. Layers are served in WGS84.",
    )
    app.state.settings = settings
    app.state.store = store
    app.state.runs = runs
    app.state.audit = audit

    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["X-API-Key", "Content-Type", "If-None-Match"],
                           expose_headers=["ETag", "Server-Timing"])

    # ---------------------------------------------------------------- errors
    def _err_response(status: int, code: str, message: str, detail=None, headers=None):
        return JSONResponse(error_body(status, code, message, detail), status_code=status, headers=headers)

    @app.exception_handler(HarmspotError)
    async def _harmspot_error(request: Request, exc: HarmspotError):
        status = status_for(exc)
        headers = None
        if isinstance(exc, RateLimited):
            headers = {"Retry-After": str(max(1, int(round(exc.detail.get("retry_after_s", 1)))))}
        return _err_response(status, getattr(exc, "code", "bad_request"), str(exc),
                             getattr(exc, "detail", None), headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        errs = [{"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg"))} for e in exc.errors()]
        first = errs[0] if errs else {"loc": [], "msg": "invalid request"}
        return _err_response(422, "invalid_parameter",
                             f"{len(errs)} invalid parameter(s); first: {'.'.join(first['loc'])}: {first['msg']}",
                             {"errors": errs})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _err_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception):
        return _err_response(500, "internal_error", "internal error; the audit log has the request")

    # ---------------------------------------------------------------- middleware: limits, timing, audit
    app.add_middleware(TimingAuditMiddleware, audit=audit, max_body=settings.max_upload_bytes)

    # ---------------------------------------------------------------- auth dependencies
    api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="Your harmspot API key.")

    allowed_cache: dict[int, set] = {}

    def _query_names(dependant) -> set:
        names, todo = set(), [dependant]
        while todo:
            d = todo.pop()
            names |= {q.alias for q in d.query_params}
            todo.extend(d.dependencies)
        return names

    def strict_query(request: Request):
        route = request.scope.get("route")
        if route is None:
            return
        allowed = allowed_cache.get(id(route))
        if allowed is None:
            allowed = allowed_cache[id(route)] = _query_names(route.dependant)
        extra = [k for k in request.query_params.keys() if k not in allowed]
        if extra:
            raise InvalidParameter(f"unknown query parameter {extra[0]!r}; this endpoint takes "
                                   f"{', '.join(sorted(allowed)) or 'none'}")

    def need(permission: str):
        async def dep(request: Request, key: str | None = Depends(api_key)) -> Principal:
            who = keys.peek(key)  # cached keys are checked on the event loop, others in a thread (store I/O)
            if who is None:
                who = await run_in_threadpool(keys.check, key)
            request.state.principal = who
            limiter.hit(who.key_id)
            if not who.can(permission):
                raise Forbidden(f"the {who.role} role may not do this ({permission.replace('_', ' ')})")
            strict_query(request)
            return who

        return dep

    # ---------------------------------------------------------------- routes
    @app.get("/health", response_model=HealthOut, tags=["service"])
    def health():
        """Liveness and the library versions behind every map (no key needed)."""
        return {"status": "ok", "store_backend": backend, "versions": versions}

    @app.get("/version", response_model=VersionOut, responses=_errors(*AUTHED), tags=["service"])
    def version(who: Principal = Depends(need("read_layers"))):
        """harmspot and API versions, and which run kinds this build offers."""
        return {"harmspot": versions["harmspot"], "api": API_VERSION,
                "run_kinds": {k: v.usable() for k, v in RUN_KINDS.items()}}

    @app.get("/layers", response_model=LayerList, responses=_errors(*AUTHED), tags=["layers"])
    def list_layers(request: Request, who: Principal = Depends(need("read_layers"))):
        """The catalogue of layers this key may see: id, kind, period, bbox, CRS, created, parameters."""
        t = time.perf_counter()
        metas = store.list_layers()
        request.state.timings["db"] = (time.perf_counter() - t) * 1000
        return {"layers": [catalogue_entry(m) for m in metas if visible(m, who)]}

    @app.get(
        "/layers/{layer_id}", tags=["layers"],
        response_class=Response,
        responses={200: {"content": {"application/geo+json": {"schema": {"type": "object"}}},
                         "description": "GeoJSON FeatureCollection (WGS84)"}, **_errors(304, *AUTHED, 404)},
    )
    async def get_layer(
        request: Request,
        layer_id: str = Path(..., pattern=LAYER_ID_PATTERN, description="Layer id from GET /layers."),
        bbox: str | None = Query(None, max_length=200, description="minlon,minlat,maxlon,maxlat (WGS84)."),
        properties: str | None = Query(None, max_length=2000, description="Comma-separated property names."),
        limit: int | None = Query(None, ge=1, le=settings.max_features, description="Most features to return."),
        who: Principal = Depends(need("read_layers")),
    ):
        """A vector layer as a GeoJSON FeatureCollection in WGS84 (partners: cells below k suppressed)."""
        t = time.perf_counter()
        meta = await visible_meta(layer_id, who, raster=False)
        box = parse_bbox(bbox, settings.max_bbox_km2)
        props = parse_properties(properties, meta)
        lim = limit or settings.default_limit
        partner = who.role == "partner"
        variant = json.dumps([bbox, properties, lim, partner, settings.partner_k if partner else None])
        import hashlib

        etag = f'"{meta["etag"]}-{hashlib.sha1(variant.encode()).hexdigest()[:12]}"'
        headers = {"ETag": etag, "Cache-Control": "private, max-age=0, must-revalidate"}
        inm = request.headers.get("if-none-match")
        if inm and etag in [s.strip() for s in inm.split(",")]:
            return Response(status_code=304, headers=headers)
        gz = "gzip" in request.headers.get("accept-encoding", "")
        headers["Vary"] = "Accept-Encoding"
        key = (layer_id, variant, gz)
        body = layer_cache.get(key)
        if body is None:
            def build():
                raw = layer_cache.get((layer_id, variant, False))
                if raw is None:
                    raw = feature_collection(store, meta, who, k=settings.partner_k, bbox=box, properties=props,
                                             limit=lim)
                    layer_cache.put((layer_id, variant, False), raw)
                if not gz:
                    return raw
                import gzip

                return gzip.compress(raw, compresslevel=5)

            body = await run_in_threadpool(build)
            layer_cache.put(key, body)
        if gz:
            headers["Content-Encoding"] = "gzip"
        request.state.timings["db"] = (time.perf_counter() - t) * 1000
        return Response(body, media_type="application/geo+json", headers=headers)

    tile_params = dict(
        z=Path(..., ge=0, le=30), x=Path(..., ge=0), y=Path(..., ge=0),
    )

    @app.get(
        "/tiles/{layer_id}/{z}/{x}/{y}.mvt", tags=["tiles"], response_class=Response,
        responses={200: {"content": {"application/vnd.mapbox-vector-tile": {"schema": {"type": "string",
                                                                                     "format": "binary"}}},
                         "description": "Mapbox vector tile (may be empty)"}, **_errors(*AUTHED, 404)},
    )
    async def mvt(
        request: Request,
        layer_id: str = Path(..., pattern=LAYER_ID_PATTERN),
        z: int = tile_params["z"], x: int = tile_params["x"], y: int = tile_params["y"],
        who: Principal = Depends(need("read_layers")),
    ):
        """A vector tile (Web Mercator z/x/y) of a vector layer."""
        check_tile(z, x, y, settings.min_zoom, settings.max_zoom)
        meta = await visible_meta(layer_id, who, raster=False)
        t = time.perf_counter()
        data = tiles.cached_mvt(meta, z, x, y, who, settings.partner_k)
        if data is None:
            data = await run_in_threadpool(tiles.mvt, meta, z, x, y, who, settings.partner_k)
        request.state.timings["encode"] = (time.perf_counter() - t) * 1000
        return Response(data, media_type="application/vnd.mapbox-vector-tile",
                        headers={"Cache-Control": "private, max-age=300"})

    @app.get(
        "/rasters/{layer_id}/{z}/{x}/{y}.png", tags=["tiles"], response_class=Response,
        responses={200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
                         "description": "PNG tile"}, 204: {"description": "Tile outside the raster"},
                   **_errors(*AUTHED, 404)},
    )
    async def raster_tile(
        request: Request,
        layer_id: str = Path(..., pattern=LAYER_ID_PATTERN),
        z: int = tile_params["z"], x: int = tile_params["x"], y: int = tile_params["y"],
        who: Principal = Depends(need("read_rasters")),
    ):
        """A PNG tile (Web Mercator z/x/y) of a KDE/RTM raster layer, coloured 0..98th percentile."""
        check_tile(z, x, y, settings.min_zoom, settings.max_zoom)
        meta = await visible_meta(layer_id, who, raster=True)
        t = time.perf_counter()
        data = await run_in_threadpool(tiles.png, meta, z, x, y)
        request.state.timings["encode"] = (time.perf_counter() - t) * 1000
        if data is None:
            return Response(status_code=204)
        return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})

    run_body = {
        "requestBody": {
            "required": False,
            "content": {
                "application/json": {"schema": {"type": "object", "additionalProperties": True,
                                                "description": "Run parameters (see docs/service.md)."}},
                "multipart/form-data": {"schema": {
                    "type": "object",
                    "properties": {"params": {"type": "string", "description": "Run parameters as JSON text."},
                                   "area": {"type": "string", "format": "binary"}},
                }},
            },
        }
    }

    @app.post("/runs/{kind}", response_model=RunOut, status_code=202, tags=["runs"], openapi_extra=run_body,
              responses=_errors(*AUTHED, 404, 413, 501))
    async def post_run(
        request: Request,
        kind: Literal["cells", "hotspots", "grip", "rtm", "minerva", "dose", "evaluation"] = Path(...),
        who: Principal = Depends(need("runs")),
    ):
        """Queue an analysis; returns the run (poll GET /runs/{run_id})."""
        ctype = request.headers.get("content-type", "")
        uploads: dict[str, tuple[str, bytes]] = {}
        if ctype.startswith("multipart/form-data"):
            form = await request.form(max_files=20, max_fields=40)
            raw_text = form.get("params") or "{}"
            if not isinstance(raw_text, str):
                raise InvalidParameter("form field 'params' must be JSON text, not a file")
            raw = _loads(raw_text)
            for name, value in form.multi_items():
                if name == "params":
                    continue
                if isinstance(value, str):
                    raise InvalidParameter(f"form field {name!r}: expected a file upload")
                data = await value.read()
                if len(data) > settings.max_upload_bytes:
                    raise PayloadTooLarge(f"upload {name!r}: {len(data):,} bytes; the limit is "
                                          f"{settings.max_upload_bytes:,}")
                uploads[name] = (value.filename or name, data)
        else:
            body = await request.body()
            raw = _loads(body.decode("utf-8", "replace")) if body.strip() else {}
        import anyio

        return await anyio.to_thread.run_sync(lambda: runs.submit(kind, raw, uploads, who))

    @app.get("/runs/{run_id}", response_model=RunOut, responses=_errors(*AUTHED, 404), tags=["runs"])
    def get_run(run_id: str = Path(..., pattern=LAYER_ID_PATTERN), who: Principal = Depends(need("runs"))):
        """A run's status, its error (if failed) and its result layer ids (when done)."""
        r = store.get_run(run_id)
        if r is None:
            raise NotFound(f"run {run_id}: no such run")
        return public_run(r)

    @app.get("/runs", response_model=RunList, responses=_errors(*AUTHED), tags=["runs"])
    def list_runs(limit: int = Query(50, ge=1, le=1000), who: Principal = Depends(need("runs"))):
        """The latest runs, newest first."""
        return {"runs": [public_run(r) for r in store.list_runs(limit)]}

    @app.get("/map", tags=["layers"],
             responses={200: {"content": {"text/html": {"schema": {"type": "string"}}}}, **_errors(*AUTHED, 404, 501)})
    def offline_map(
        layers: str = Query(..., max_length=2000, description="Comma-separated layer ids."),
        who: Principal = Depends(need("map")),
    ):
        """The offline tasking map (maps.webmap) of the given layers as one HTML page."""
        ids = [s.strip() for s in layers.split(",") if s.strip()]
        if not ids or len(ids) > 20:
            raise InvalidParameter("layers: give 1 to 20 comma-separated layer ids")
        metas = [get_visible_layer(meta_cache, i, who) for i in ids]
        return HTMLResponse(_render_map(store, metas))

    @app.get("/audit", response_model=AuditOut, responses=_errors(*AUTHED), tags=["service"])
    def audit_log(limit: int = Query(100, ge=1, le=10000), who: Principal = Depends(need("audit"))):
        """Who asked for what and when (admin only), newest first."""
        audit.flush()
        return {"entries": store.audit_log(limit)}

    return app


class CachedMetaStore:
    """Layer catalogue rows cached in memory (layers are immutable once written); other calls go to the store."""

    def __init__(self, store, size: int = 1024):
        self._store = store
        self._metas = LRU(size)

    def cached(self, layer_id: str) -> bool:
        return self._metas.get(layer_id) is not None

    def get_layer(self, layer_id: str):
        m = self._metas.get(layer_id)
        if m is None:
            m = self._store.get_layer(layer_id)
            if m is not None:
                self._metas.put(layer_id, m)
        return m

    def __getattr__(self, name):
        return getattr(self._store, name)


class TimingAuditMiddleware:
    """Pure ASGI middleware: body-size limit, ``Server-Timing`` header and one audit row per request."""

    def __init__(self, app, audit: AuditWriter, max_body: int):
        self.app = app
        self.audit = audit
        self.max_body = max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        state = scope.setdefault("state", {})
        state["timings"] = {}
        state["principal"] = None
        status = {"code": 500}
        length = dict(scope.get("headers") or []).get(b"content-length")

        async def send_wrapped(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                ms = (time.perf_counter() - t0) * 1000
                parts = [f"app;dur={ms:.1f}"] + [f"{k};dur={v:.1f}" for k, v in state["timings"].items()]
                headers = list(message.get("headers", [])) + [(b"server-timing", ", ".join(parts).encode())]
                message = {**message, "headers": headers}
            await send(message)

        if length is not None and length.isdigit() and int(length) > self.max_body:
            body = json.dumps(error_body(413, "payload_too_large",
                                         f"request body of {int(length):,} bytes; the limit is {self.max_body:,} "
                                         "(HARMSPOT_MAX_UPLOAD_BYTES)")).encode()
            await send_wrapped({"type": "http.response.start", "status": 413,
                                "headers": [(b"content-type", b"application/json"),
                                            (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
        else:
            await self.app(scope, receive, send_wrapped)
        if scope.get("path") != "/health":
            p = state.get("principal")
            client = scope.get("client")
            self.audit.add((_now_iso(), p.key_id if p else None, p.role if p else None, scope.get("method"),
                            scope.get("path"), (scope.get("query_string") or b"").decode("latin-1")[:500],
                            status["code"], round((time.perf_counter() - t0) * 1000, 2),
                            client[0] if client else None))


def _loads(text: str):
    try:
        v = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidParameter(f"run parameters: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") \
            from None
    if not isinstance(v, dict):
        raise InvalidParameter("run parameters must be a JSON object")
    return v


def _now_iso() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _render_map(store, metas) -> str:
    """The offline tasking map (maps.webmap.build.build_map, assets inlined) of stored layers, else 501."""
    import importlib.util

    if importlib.util.find_spec("maps.webmap") is None:
        raise NotAvailable("the offline map (maps.webmap) is not available in this build; "
                           "fetch the layers as GeoJSON or tiles instead")
    from maps import webmap
    from services.layers import layer_data

    layers = [webmap.MapLayer(m.get("name") or m["layer_id"], layer_data(store, m), None, m.get("metadata") or {})
              for m in metas]
    fmap, _info = webmap.build_map(layers)
    html = webmap.inline_assets(fmap.get_root().render())
    left = webmap.remote_references(html)
    if left:
        raise NotAvailable(f"the offline map would load {len(left)} remote file(s) (first: {left[0]}); "
                           "the offline map assets are not installed in this build")
    return html
