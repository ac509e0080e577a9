"""The store: incidents, ingest batches, rejects and the study area.

An embedded DuckDB file with the spatial extension (loaded from the
``duckdb-extension-spatial`` wheel, so no network) is the default. The
:class:`Store` interface is small so that a PostGIS backend can sit beside it;
:func:`open_store` picks the backend from the URL (``postgresql://...`` for PostGIS).

Tally rules for a load (see docs/ingest.md):
``read = accepted + rejected``; of the accepted rows, ``duplicates`` were already
in the store (same ``incident_id``) and ``added = accepted - duplicates``.
"""
from __future__ import annotations

import json
import os
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from geo.incidents import SCHEMA, IncidentTable, IngestResult
from geo.period import Period

ENV_STORE = "HARMSPOT_STORE"
DEFAULT_STORE = "harmspot.duckdb"

_SQL_TYPES = {
    "string": "VARCHAR", "datetime64[ns]": "TIMESTAMP", "boolean": "BOOLEAN", "Float64": "DOUBLE",
    "float64": "DOUBLE", "int64": "BIGINT",
}


def _to_arrow(df: pd.DataFrame):
    """The canonical frame as a pyarrow Table (the DuckDB insert scans it without Python objects)."""
    import pyarrow as pa

    return pa.Table.from_pandas(df, preserve_index=False)


def resolve_store_path(store: str | None) -> tuple[str, bool]:
    """(path or URL, automatic?) from --store, else $HARMSPOT_STORE, else ./harmspot.duckdb."""
    if store:
        return store, False
    env = os.environ.get(ENV_STORE)
    if env:
        return env, False
    return DEFAULT_STORE, True


@dataclass
class LoadSummary:
    batch_id: int
    read: int
    accepted: int
    rejected: int
    duplicates: int
    added: int
    rejects_file: str | None
    reasons: dict
    files: list
    format: str
    border_tolerance_m: float | None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class Store(ABC):
    """What analyses need from a store. Backends: DuckDB (default), PostGIS (services.store_postgis)."""

    url: str

    @abstractmethod
    def add_ingest(self, result: IngestResult, *, rejects_dir: str | Path | None = None) -> LoadSummary: ...

    @abstractmethod
    def incidents(self, period: Period | None = None, categories=None, bbox=None) -> IncidentTable: ...

    @abstractmethod
    def batches(self) -> pd.DataFrame: ...

    @abstractmethod
    def set_study_area(self, polygons, name: str, source: str = "") -> None: ...

    @abstractmethod
    def study_area(self):
        """The latest study area as a GeoDataFrame in EPSG:27700, or None."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def load_spatial(con) -> None:
    """Load DuckDB's spatial extension from the duckdb-extension-spatial wheel (no network)."""
    import duckdb_extension_spatial

    ext = next(Path(duckdb_extension_spatial.__file__).parent.rglob("spatial.duckdb_extension"))
    con.execute(f"LOAD '{ext.as_posix()}'")


#: Neighbour matrices kept in a store (newest first; ~1 MB each for 30k H3 cells).
NEIGHBOUR_MATRICES_KEPT = 64


class ServiceTablesMixin:
    """The service tables (API keys, audit log, layers, runs) for any backend, written once.

    SQL is written with ``?`` placeholders and passed through :meth:`_sql` (identity for DuckDB;
    ``%s`` for PostgreSQL). A backend provides ``_rows(sql, args)`` (list of dicts), ``_write([(sql, args) |
    (callable(cursor), None), ...])`` (one transaction) and these small hooks:

    - ``_feature_wkb``: the select expression giving a feature's WKB as column ``wkb``;
    - ``_features_writer(features, layer_id)``: a callable(cursor) bulk-inserting a layer's features;
    - ``_bbox_where(bbox)``: ``(" AND ...", args)`` keeping features whose box meets ``bbox`` (WGS84);
    - ``_frame(sql, args, columns)``: run a query (already in the backend's style) into a DataFrame.
    """

    _feature_wkb = "wkb"

    def _sql(self, text: str) -> str:
        """SQL written with ``?`` placeholders -> this backend's parameter style."""
        return text

    # keys
    def add_key(self, key_id: str, key_hash: str, role: str, label: str = "") -> None:
        self._write([(self._sql("INSERT INTO api_keys (key_id, key_hash, role, label, created) VALUES (?,?,?,?,?)"),
                      [key_id, key_hash, role, label, _now()])])

    def get_key(self, key_id: str) -> dict | None:
        rows = self._rows(self._sql("SELECT * FROM api_keys WHERE key_id = ?"), [key_id])
        return rows[0] if rows else None

    def list_keys(self) -> list[dict]:
        return self._rows("SELECT key_id, role, label, created, revoked FROM api_keys ORDER BY created")

    def revoke_key(self, id_or_prefix: str) -> list[str]:
        ids = _match_key_ids(self.list_keys(), id_or_prefix)
        if ids:
            sql = self._sql("UPDATE api_keys SET revoked = ? WHERE key_id = ?")
            self._write([(sql, [_now(), k]) for k in ids])
        return ids

    # audit
    def add_audit(self, rows: list[tuple]) -> None:
        if rows:
            sql = self._sql("INSERT INTO audit (ts, key_id, role, method, path, query, status, ms, client) "
                            "VALUES (?,?,?,?,?,?,?,?,?)")
            self._write([(lambda cur: cur.executemany(sql, [list(r) for r in rows]), None)])

    def audit_log(self, limit: int = 100) -> list[dict]:
        return self._rows(self._sql("SELECT * FROM audit ORDER BY ts DESC LIMIT ?"), [int(limit)])

    # layers
    def put_layers(self, items) -> None:
        """Write layers ``[(meta, features DataFrame | None, GeoTIFF bytes | None), ...]`` in ONE transaction.

        A reader sees all of them or none (services.layers builds the rows)."""
        stmts = []
        for meta, features, raster in items:
            m = _layer_row(meta)
            stmts.append((self._sql(f"INSERT INTO layers ({', '.join(m)}) VALUES ({', '.join('?' for _ in m)})"),
                          list(m.values())))
            if features is not None and len(features):
                stmts.append((self._features_writer(features, m["layer_id"]), None))
            if raster is not None:
                stmts.append((self._sql("INSERT INTO layer_rasters (layer_id, tif) VALUES (?, ?)"),
                              [m["layer_id"], raster]))
        self._write(stmts)

    def put_layer(self, meta: dict, features=None, raster: bytes | None = None) -> None:
        """Write one layer's catalogue row and its features (or GeoTIFF bytes) in one transaction."""
        self.put_layers([(meta, features, raster)])

    def list_layers(self) -> list[dict]:
        return [_layer_out(r) for r in self._rows("SELECT * FROM layers ORDER BY created, layer_id")]

    def get_layer(self, layer_id: str) -> dict | None:
        rows = self._rows(self._sql("SELECT * FROM layers WHERE layer_id = ?"), [layer_id])
        return _layer_out(rows[0]) if rows else None

    def layer_features(self, layer_id: str, bbox=None, limit: int | None = None) -> pd.DataFrame:
        sql = f"SELECT fid, cnt, props, geojson, {self._feature_wkb} FROM layer_features WHERE layer_id = ?"
        args = [layer_id]
        if bbox is not None:
            where, bargs = self._bbox_where(bbox)
            sql += where
            args += bargs
        sql += " ORDER BY fid"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return self._frame(self._sql(sql), args, ["fid", "cnt", "props", "geojson", "wkb"])

    def layer_raster(self, layer_id: str) -> bytes | None:
        rows = self._rows(self._sql("SELECT tif FROM layer_rasters WHERE layer_id = ?"), [layer_id])
        return bytes(rows[0]["tif"]) if rows else None

    def delete_layer(self, layer_id: str) -> None:
        self._write([(self._sql(f"DELETE FROM {t} WHERE layer_id = ?"), [layer_id])
                     for t in ("layer_features", "layer_rasters", "layers")])

    # neighbour matrices (geo.gistar.NeighbourCache storage: built once, reused by later runs)
    def get_neighbours(self, key: str) -> bytes | None:
        rows = self._rows(self._sql("SELECT matrix FROM neighbour_matrices WHERE matrix_key = ?"), [key])
        return bytes(rows[0]["matrix"]) if rows else None

    def put_neighbours(self, key: str, data: bytes, keep: int = NEIGHBOUR_MATRICES_KEPT) -> None:
        """Save a matrix (replacing one with the same key); only the ``keep`` newest are kept."""
        self._write([(self._sql("DELETE FROM neighbour_matrices WHERE matrix_key = ?"), [key]),
                     (self._sql("INSERT INTO neighbour_matrices (matrix_key, created, nbytes, matrix) VALUES (?,?,?,?)"),
                      [key, _now(), len(data), data]),
                     (self._sql("DELETE FROM neighbour_matrices WHERE matrix_key NOT IN (SELECT matrix_key FROM "
                                f"neighbour_matrices ORDER BY created DESC, matrix_key LIMIT {int(keep)})"), [])])

    def neighbour_cache(self, size: int = 8):
        """A :class:`geo.gistar.NeighbourCache` kept in memory and in this store."""
        from geo.gistar import NeighbourCache

        return NeighbourCache(size, load=self.get_neighbours, save=self.put_neighbours)

    # runs
    def add_run(self, run: dict) -> None:
        r = _run_row(run)
        self._write([(self._sql(f"INSERT INTO runs ({', '.join(r)}) VALUES ({', '.join('?' for _ in r)})"),
                      list(r.values()))])

    def update_run(self, run_id: str, **fields) -> None:
        r = _run_row(fields, partial=True)
        self._write([(self._sql(f"UPDATE runs SET {', '.join(f'{k} = ?' for k in r)} WHERE run_id = ?"),
                      list(r.values()) + [run_id])])

    def get_run(self, run_id: str) -> dict | None:
        rows = self._rows(self._sql("SELECT * FROM runs WHERE run_id = ?"), [run_id])
        return _run_out(rows[0]) if rows else None

    def list_runs(self, limit: int = 100) -> list[dict]:
        rows = self._rows(self._sql("SELECT * FROM runs ORDER BY created DESC LIMIT ?"), [int(limit)])
        return [_run_out(r) for r in rows]

    def fail_interrupted_runs(self, reason: str) -> list[str]:
        """Mark queued/running runs failed (after a restart); their ids. PostGIS overrides (one statement)."""
        ids = [r["run_id"] for r in self._rows("SELECT run_id FROM runs WHERE status IN ('queued', 'running')")]
        if ids:
            sql = self._sql("UPDATE runs SET status = 'failed', error = ?, finished = ? WHERE run_id = ?")
            self._write([(sql, [reason, _now(), i]) for i in ids])
        return ids


class DuckDBStore(ServiceTablesMixin, Store):
    def __init__(self, path: str | Path, read_only: bool = False):
        import duckdb

        self.path = Path(path)
        self.url = str(self.path)
        if read_only and not self.path.exists():
            from geo.errors import HarmspotError

            raise HarmspotError(f"store {self.path} does not exist; run 'harmspot ingest' first")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = duckdb.connect(str(self.path), read_only=read_only)
        self._lock = threading.RLock()
        self._tls = threading.local()
        load_spatial(self.con)
        if not read_only:
            self._init_schema()

    def _init_schema(self):
        cols = ",\n".join(f'"{c}" {_SQL_TYPES[t]}' for c, t in SCHEMA.items() if c != "incident_id")
        self.con.execute("CREATE SEQUENCE IF NOT EXISTS batch_seq START 1")
        self.con.execute(
            f"""CREATE TABLE IF NOT EXISTS incidents (
                incident_id VARCHAR PRIMARY KEY, {cols}, batch_id INTEGER, geom GEOMETRY)"""
        )
        self.con.execute(
            """CREATE TABLE IF NOT EXISTS batches (
                batch_id INTEGER PRIMARY KEY, created TIMESTAMP DEFAULT current_timestamp, format VARCHAR,
                files VARCHAR, "read" BIGINT, accepted BIGINT, rejected BIGINT, duplicates BIGINT, added BIGINT,
                rejects_file VARCHAR, reasons VARCHAR, border_tolerance_m DOUBLE)"""
        )
        self.con.execute(
            """CREATE TABLE IF NOT EXISTS rejects (
                batch_id INTEGER, source_file VARCHAR, source_row BIGINT, reason VARCHAR, field VARCHAR, raw VARCHAR)"""
        )
        self.con.execute(
            """CREATE TABLE IF NOT EXISTS areas (
                area_id INTEGER, name VARCHAR, source VARCHAR, created TIMESTAMP DEFAULT current_timestamp,
                wkb BLOB)"""
        )
        self._init_service_schema()

    # ----------------------------------------------------------- service tables (layers, runs, keys, audit)
    def _init_service_schema(self):
        for sql in SERVICE_SCHEMA:
            self.con.execute(sql)

    def _cur(self):
        """A cursor for this thread (DuckDB connections are not thread-safe; cursors are)."""
        cur = getattr(self._tls, "cur", None)
        if cur is None:
            cur = self.con.cursor()
            self._tls.cur = cur
        return cur

    def _rows(self, sql, args=()):
        cur = self._cur()
        res = cur.execute(sql, list(args))
        cols = [d[0] for d in res.description]
        return [dict(zip(cols, r)) for r in res.fetchall()]

    def _write(self, statements):
        """Run ``[(sql, args), ...]`` in one transaction under the store's write lock (all or nothing)."""
        with self._lock:
            cur = self._cur()
            cur.execute("BEGIN TRANSACTION")
            try:
                for sql, args in statements:
                    if callable(sql):
                        sql(cur)
                    else:
                        cur.execute(sql, list(args))
                cur.execute("COMMIT")
            except Exception:
                cur.execute("ROLLBACK")
                raise

    # backend hooks of ServiceTablesMixin
    def _features_writer(self, features, layer_id: str):
        f = features.assign(layer_id=layer_id)[list(FEATURE_COLUMNS)]

        def _ins(cur):
            cur.register("_feat", f)
            try:
                cur.execute(f"INSERT INTO layer_features ({', '.join(FEATURE_COLUMNS)}) "
                            f"SELECT {', '.join(FEATURE_COLUMNS)} FROM _feat")
            finally:
                cur.unregister("_feat")

        return _ins

    def _bbox_where(self, bbox):
        return " AND maxx >= ? AND minx <= ? AND maxy >= ? AND miny <= ?", [bbox[0], bbox[2], bbox[1], bbox[3]]

    def _frame(self, sql, args, columns):
        return self._cur().execute(sql, list(args)).df()

    # ----------------------------------------------------------- ingest
    def add_ingest(self, result: IngestResult, *, rejects_dir=None) -> LoadSummary:
        with self._lock:
            bid = self.con.execute("SELECT nextval('batch_seq')").fetchone()[0]
            df = result.accepted.frame
            # hand DuckDB an Arrow table: the frame's string columns are Arrow-backed already, so this is
            # (nearly) zero-copy, while scanning the pandas frame costs ~150 MiB more for 200k rows
            self.con.register("_new", _to_arrow(df))
            try:
                self.con.execute("BEGIN")
                before = self.con.execute("SELECT count(*) FROM incidents").fetchone()[0]
                cols = ", ".join(f'"{c}"' for c in SCHEMA)
                self.con.execute(
                    f"""INSERT INTO incidents ({cols}, batch_id, geom)
                        SELECT {cols}, {int(bid)}, ST_Point(x, y) FROM _new n
                        WHERE NOT EXISTS (SELECT 1 FROM incidents i WHERE i.incident_id = n.incident_id)"""
                )
                after = self.con.execute("SELECT count(*) FROM incidents").fetchone()[0]
                added = int(after - before)
                rejects_file = None
                if len(result.rejects):
                    rd = Path(rejects_dir) if rejects_dir else Path(str(self.path) + ".rejects")
                    rd.mkdir(parents=True, exist_ok=True)
                    rejects_file = str(rd / f"batch-{int(bid):04d}-rejects.csv")
                    result.rejects.to_csv(rejects_file, index=False)
                    rj = result.rejects
                    raw_cols = [c for c in rj.columns if c not in ("reason", "field", "source_file", "source_row")]
                    tab = pd.DataFrame({
                        "batch_id": int(bid),
                        "source_file": rj["source_file"].astype(str),
                        "source_row": rj["source_row"].astype("int64"),
                        "reason": rj["reason"].astype(str),
                        "field": rj["field"].astype(str),
                        "raw": rj[raw_cols].astype(str).to_json(orient="records", lines=True).splitlines()
                        if raw_cols else "",
                    })
                    self.con.register("_rej", tab)
                    self.con.execute("INSERT INTO rejects SELECT * FROM _rej")
                    self.con.unregister("_rej")
                summary = LoadSummary(
                    batch_id=int(bid), read=result.read, accepted=len(df), rejected=result.rejected,
                    duplicates=len(df) - added, added=added, rejects_file=rejects_file,
                    reasons=result.reasons(), files=result.files, format=result.source_kind,
                    border_tolerance_m=result.boundary_tolerance_m,
                )
                self.con.execute(
                    "INSERT INTO batches (batch_id, format, files, \"read\", accepted, rejected, duplicates, added, "
                    "rejects_file, reasons, border_tolerance_m) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    [int(bid), summary.format, json.dumps(summary.files), summary.read, summary.accepted,
                     summary.rejected, summary.duplicates, summary.added, rejects_file,
                     json.dumps(summary.reasons), summary.border_tolerance_m],
                )
                self.con.execute("COMMIT")
            except Exception:
                self.con.execute("ROLLBACK")
                raise
            finally:
                self.con.unregister("_new")
            return summary

    # ----------------------------------------------------------- read
    def incidents(self, period: Period | None = None, categories=None, bbox=None) -> IncidentTable:
        where, args = [], []
        if period is not None:
            months = period.months
            where.append(f"month IN ({', '.join('?' for _ in months)})")
            args += months
        if categories:
            cats = list(categories)
            where.append(f"category IN ({', '.join('?' for _ in cats)})")
            args += cats
        if bbox is not None:
            where.append("x BETWEEN ? AND ? AND y BETWEEN ? AND ?")
            args += [bbox[0], bbox[2], bbox[1], bbox[3]]
        sql = f"SELECT {', '.join(chr(34) + c + chr(34) for c in SCHEMA)} FROM incidents"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY incident_id"
        with self._lock:
            df = self.con.execute(sql, args).df()
        table = IncidentTable.from_frame(df)
        if period is not None:  # day-level bounds within the boundary months
            table = table.filter(period=period)
        return table

    def count(self) -> int:
        with self._lock:
            return int(self.con.execute("SELECT count(*) FROM incidents").fetchone()[0])

    def batches(self) -> pd.DataFrame:
        with self._lock:
            return self.con.execute("SELECT * FROM batches ORDER BY batch_id").df()

    def rejects(self, batch_id: int | None = None) -> pd.DataFrame:
        sql, args = "SELECT * FROM rejects", []
        if batch_id is not None:
            sql += " WHERE batch_id = ?"
            args = [batch_id]
        with self._lock:
            return self.con.execute(sql, args).df()

    def month_range(self) -> tuple[str | None, str | None]:
        with self._lock:
            lo, hi = self.con.execute("SELECT min(month), max(month) FROM incidents").fetchone()
        return lo, hi

    # ----------------------------------------------------------- areas
    def set_study_area(self, polygons, name: str, source: str = "") -> None:
        import shapely

        geom = polygons.union_all() if hasattr(polygons, "union_all") else polygons
        with self._lock:
            n = self.con.execute("SELECT coalesce(max(area_id), 0) + 1 FROM areas").fetchone()[0]
            self.con.execute("INSERT INTO areas (area_id, name, source, wkb) VALUES (?,?,?,?)",
                             [int(n), name, source, shapely.to_wkb(geom)])

    def study_area(self):
        import geopandas as gpd
        import shapely

        with self._lock:
            row = self.con.execute("SELECT name, wkb FROM areas ORDER BY area_id DESC LIMIT 1").fetchone()
        if row is None:
            return None
        return gpd.GeoDataFrame({"name": [row[0]]}, geometry=[shapely.from_wkb(bytes(row[1]))], crs="EPSG:27700")

    def close(self) -> None:
        try:
            self.con.close()
        except Exception:  # pragma: no cover - closing twice is harmless
            pass


# ------------------------------------------------------------------ service tables (shared by both backends)
#: Layers, their features, GeoTIFF bytes, runs, API keys (hashes only) and the audit log. JSON as text.
SERVICE_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS layers (
        layer_id VARCHAR PRIMARY KEY, name VARCHAR, kind VARCHAR, layer_type VARCHAR, run_id VARCHAR,
        crs VARCHAR, period VARCHAR, bbox VARCHAR, created VARCHAR, params VARCHAR, metadata VARCHAR,
        columns VARCHAR, n_features BIGINT, aggregated BOOLEAN, incident_level BOOLEAN, etag VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS layer_features (
        layer_id VARCHAR, fid BIGINT, minx DOUBLE, miny DOUBLE, maxx DOUBLE, maxy DOUBLE, cnt DOUBLE,
        props VARCHAR, geojson VARCHAR, wkb BLOB)""",
    """CREATE TABLE IF NOT EXISTS layer_rasters (layer_id VARCHAR PRIMARY KEY, tif BLOB)""",
    """CREATE TABLE IF NOT EXISTS runs (
        run_id VARCHAR PRIMARY KEY, kind VARCHAR, status VARCHAR, params VARCHAR, key_id VARCHAR,
        created VARCHAR, started VARCHAR, finished VARCHAR, error VARCHAR, layer_ids VARCHAR,
        summary VARCHAR, choices VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS api_keys (
        key_id VARCHAR PRIMARY KEY, key_hash VARCHAR, role VARCHAR, label VARCHAR, created VARCHAR,
        revoked VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS neighbour_matrices (
        matrix_key VARCHAR PRIMARY KEY, created VARCHAR, nbytes BIGINT, matrix BLOB)""",
    """CREATE TABLE IF NOT EXISTS audit (
        ts VARCHAR, key_id VARCHAR, role VARCHAR, method VARCHAR, path VARCHAR, query VARCHAR,
        status INTEGER, ms DOUBLE, client VARCHAR)""",
]
FEATURE_COLUMNS = ("layer_id", "fid", "minx", "miny", "maxx", "maxy", "cnt", "props", "geojson", "wkb")
_LAYER_JSON = ("period", "bbox", "params", "metadata", "columns")
_RUN_JSON = ("params", "layer_ids", "summary", "choices")


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _layer_row(meta: dict) -> dict:
    cols = ("layer_id", "name", "kind", "layer_type", "run_id", "crs", "period", "bbox", "created", "params",
            "metadata", "columns", "n_features", "aggregated", "incident_level", "etag")
    return {c: (json.dumps(meta.get(c)) if c in _LAYER_JSON else meta.get(c)) for c in cols}


def _layer_out(row: dict) -> dict:
    out = dict(row)
    for c in _LAYER_JSON:
        out[c] = json.loads(out[c]) if out.get(c) is not None else None
    out["aggregated"] = bool(out.get("aggregated"))
    out["incident_level"] = bool(out.get("incident_level"))
    return out


def _run_row(run: dict, partial: bool = False) -> dict:
    cols = ("run_id", "kind", "status", "params", "key_id", "created", "started", "finished", "error",
            "layer_ids", "summary", "choices")
    keys = [c for c in cols if c in run] if partial else cols
    return {c: (json.dumps(run.get(c)) if c in _RUN_JSON and run.get(c) is not None else run.get(c)) for c in keys}


def _run_out(row: dict) -> dict:
    out = dict(row)
    for c in _RUN_JSON:
        out[c] = json.loads(out[c]) if out.get(c) is not None else None
    return out


def _match_key_ids(keys: list[dict], id_or_prefix: str) -> list[str]:
    """Key ids matching a full id, an id prefix (>= 4 characters) or a full ``hs_<id>_...`` key."""
    from geo.errors import HarmspotError

    s = id_or_prefix.strip()
    if s.startswith("hs_"):
        s = s.split("_")[1] if len(s.split("_")) > 1 else ""
    if len(s) < 4:
        raise HarmspotError(f"key {id_or_prefix!r}: give the key id (10 hex characters) or at least 4 of its first characters")
    ids = [k["key_id"] for k in keys if k["key_id"].startswith(s) and not k.get("revoked")]
    if len(ids) > 1:
        raise HarmspotError(f"key prefix {id_or_prefix!r} matches {len(ids)} keys ({', '.join(ids)}); give more characters")
    return ids


def open_store(url: str | Path, read_only: bool = False) -> Store:
    """DuckDB file path (default) or ``postgresql://`` URL (PostGIS backend)."""
    u = str(url)
    if u.startswith(("postgresql://", "postgres://")):
        from services.store_postgis import PostGISStore  # added by the service issue

        return PostGISStore(u)
    return DuckDBStore(u, read_only=read_only)
