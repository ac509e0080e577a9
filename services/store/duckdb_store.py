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
import threading
from pathlib import Path

import pandas as pd

from geo.core.incidents.table import SCHEMA, IncidentTable, IngestResult
from geo.core.period import Period
from services.store.base import FEATURE_COLUMNS, LoadSummary, SERVICE_SCHEMA, ServiceTablesMixin, Store, _SQL_TYPES, _to_arrow


def load_spatial(con) -> None:
    """Load DuckDB's spatial extension from the duckdb-extension-spatial wheel (no network)."""
    import duckdb_extension_spatial

    ext = next(Path(duckdb_extension_spatial.__file__).parent.rglob("spatial.duckdb_extension"))
    con.execute(f"LOAD '{ext.as_posix()}'")


class DuckDBStore(ServiceTablesMixin, Store):
    def __init__(self, path: str | Path, read_only: bool = False):
        import duckdb

        self.path = Path(path)
        self.url = str(self.path)
        if read_only and not self.path.exists():
            from geo.core.errors import HarmspotError

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
