"""The store interface (``Store``) and the service tables every backend keeps (runs, layers, keys,
audit, neighbour matrices) in ``ServiceTablesMixin``; where the store lives (``resolve_store_path``).
"""
from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from geo.core.incidents.table import IncidentTable, IngestResult
from geo.core.period import Period


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

    # neighbour matrices (geo.units.neighbours.cache.NeighbourCache storage: built once, reused by later runs)
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
        """A :class:`geo.units.neighbours.cache.NeighbourCache` kept in memory and in this store."""
        from geo.units.neighbours.cache import NeighbourCache

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
    from geo.core.errors import HarmspotError

    s = id_or_prefix.strip()
    if s.startswith("hs_"):
        s = s.split("_")[1] if len(s.split("_")) > 1 else ""
    if len(s) < 4:
        raise HarmspotError(f"key {id_or_prefix!r}: give the key id (10 hex characters) or at least 4 of its first characters")
    ids = [k["key_id"] for k in keys if k["key_id"].startswith(s) and not k.get("revoked")]
    if len(ids) > 1:
        raise HarmspotError(f"key prefix {id_or_prefix!r} matches {len(ids)} keys ({', '.join(ids)}); give more characters")
    return ids
