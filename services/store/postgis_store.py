"""The PostGIS store: the :class:`services.store.base.Store` interface on PostgreSQL + PostGIS.

Selected by a URL: ``open_store("postgresql://user@127.0.0.1:5432/harmspot")``.
Needs ``psycopg`` (v3, ``pip install "psycopg[binary]"``) and a database where
``CREATE EXTENSION postgis`` is allowed (Debian: ``postgresql-15-postgis-3``).

Same tables as the DuckDB store, with PostGIS geometry where it helps:
``incidents.geom`` is ``geometry(Point, 27700)``, ``areas.geom`` a BNG geometry and
``layer_features.geom`` a ``geometry(Geometry, 4326)`` with a GiST index, used by
the bbox filter (``&&``). Each thread uses its own connection (autocommit for
reads); writes run in one transaction each, so readers see a whole layer or none.
Unlike DuckDB, several processes may share the database (keys can be managed
while ``harmspot serve`` runs).
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pandas as pd

from geo.core.errors import HarmspotError
from geo.core.incidents.table import SCHEMA, IncidentTable, IngestResult
from geo.core.period import Period
from services.store.base import FEATURE_COLUMNS, SERVICE_SCHEMA, LoadSummary, ServiceTablesMixin, Store, _now


_PG_TYPES = {
    "string": "TEXT", "datetime64[ns]": "TIMESTAMP", "boolean": "BOOLEAN", "Float64": "DOUBLE PRECISION",
    "float64": "DOUBLE PRECISION", "int64": "BIGINT",
}


def _pg(sql: str) -> str:
    """DuckDB DDL/DML text -> PostgreSQL (types and ``?`` placeholders)."""
    return (sql.replace("VARCHAR", "TEXT").replace("DOUBLE", "DOUBLE PRECISION").replace("BLOB", "BYTEA")
            .replace("?", "%s"))


class PostGISStore(ServiceTablesMixin, Store):
    def __init__(self, url: str):
        try:
            import psycopg  # noqa: F401
        except ImportError:  # pragma: no cover - optional dependency
            raise HarmspotError('the PostGIS store needs psycopg: pip install "psycopg[binary]"') from None
        self.url = url
        self._dsn = url
        self._tls = threading.local()
        self._lock = threading.RLock()
        self._conns: list = []
        self._conns_lock = threading.Lock()
        self._init_schema()

    @property
    def path(self):  # for messages; never a file
        return self.url

    # ----------------------------------------------------------- connections
    def _conn(self):
        import psycopg

        c = getattr(self._tls, "conn", None)
        if c is None or c.closed:
            try:
                c = psycopg.connect(self._dsn, autocommit=True)
            except psycopg.OperationalError as exc:
                raise HarmspotError(f"PostGIS store: cannot connect ({str(exc).strip().splitlines()[0]})") from None
            self._tls.conn = c
            with self._conns_lock:
                self._conns.append(c)
        return c

    def _rows(self, sql, args=()):
        with self._conn().cursor() as cur:
            cur.execute(sql, list(args))
            if cur.description is None:
                return []
            cols = [d.name for d in cur.description]
            return [dict(zip(cols, r)) for r in cur.fetchall()]

    def _write(self, statements):
        """Run ``[(sql, args), ...]`` (or callables taking a cursor) in ONE transaction."""
        with self._lock:
            conn = self._conn()
            with conn.transaction():
                with conn.cursor() as cur:
                    for sql, args in statements:
                        if callable(sql):
                            sql(cur)
                        else:
                            cur.execute(sql, list(args))

    def _init_schema(self):
        cols = ",\n".join(f'"{c}" {_PG_TYPES[t]}' for c, t in SCHEMA.items() if c != "incident_id")
        stmts = [
            "CREATE EXTENSION IF NOT EXISTS postgis",
            "CREATE SEQUENCE IF NOT EXISTS batch_seq START 1",
            f"""CREATE TABLE IF NOT EXISTS incidents (
                incident_id TEXT PRIMARY KEY, {cols}, batch_id INTEGER, geom geometry(Point, 27700))""",
            "CREATE INDEX IF NOT EXISTS incidents_month ON incidents (month)",
            "CREATE INDEX IF NOT EXISTS incidents_geom ON incidents USING gist (geom)",
            """CREATE TABLE IF NOT EXISTS batches (
                batch_id INTEGER PRIMARY KEY, created TIMESTAMP DEFAULT now(), format TEXT, files TEXT,
                "read" BIGINT, accepted BIGINT, rejected BIGINT, duplicates BIGINT, added BIGINT,
                rejects_file TEXT, reasons TEXT, border_tolerance_m DOUBLE PRECISION)""",
            """CREATE TABLE IF NOT EXISTS rejects (
                batch_id INTEGER, source_file TEXT, source_row BIGINT, reason TEXT, field TEXT, raw TEXT)""",
            """CREATE TABLE IF NOT EXISTS areas (
                area_id INTEGER, name TEXT, source TEXT, created TIMESTAMP DEFAULT now(), geom geometry(Geometry, 27700))""",
        ]
        for sql in SERVICE_SCHEMA:
            sql = _pg(sql)
            if "layer_features" in sql:
                sql = sql.replace("wkb BYTEA", "geom geometry(Geometry, 4326)")
            stmts.append(sql)
        stmts += [
            "CREATE INDEX IF NOT EXISTS layer_features_id ON layer_features (layer_id, fid)",
            "CREATE INDEX IF NOT EXISTS layer_features_geom ON layer_features USING gist (geom)",
        ]
        with self._lock:
            conn = self._conn()
            with conn.transaction():
                # several processes may start at once: serialise DDL with an advisory lock
                conn.execute("SELECT pg_advisory_xact_lock(7140021)")
                for s in stmts:
                    conn.execute(s)

    # ----------------------------------------------------------- ingest
    def add_ingest(self, result: IngestResult, *, rejects_dir=None) -> LoadSummary:
        df = result.accepted.frame
        cols = list(SCHEMA)
        out = {}

        def _load(cur):
            cur.execute("SELECT nextval('batch_seq')")
            bid = int(cur.fetchone()[0])
            out["bid"] = bid
            cur.execute("CREATE TEMP TABLE _new (LIKE incidents INCLUDING DEFAULTS) ON COMMIT DROP")
            qcols = ", ".join(f'"{c}"' for c in cols)
            vals = df[cols].astype(object).where(df[cols].notna(), None)
            with cur.copy(f"COPY _new ({qcols}) FROM STDIN") as cp:
                for row in vals.itertuples(index=False, name=None):
                    cp.write_row(row)
            cur.execute(
                f"""INSERT INTO incidents ({qcols}, batch_id, geom)
                    SELECT {qcols}, %s, ST_SetSRID(ST_MakePoint(x, y), 27700) FROM _new
                    ON CONFLICT (incident_id) DO NOTHING""", [bid])
            out["added"] = cur.rowcount
            rejects_file = None
            if len(result.rejects):
                rd = Path(rejects_dir) if rejects_dir else Path("harmspot-postgis.rejects")
                rd.mkdir(parents=True, exist_ok=True)
                rejects_file = str(rd / f"batch-{bid:04d}-rejects.csv")
                result.rejects.to_csv(rejects_file, index=False)
                rj = result.rejects
                raw_cols = [c for c in rj.columns if c not in ("reason", "field", "source_file", "source_row")]
                raws = rj[raw_cols].astype(str).to_json(orient="records", lines=True).splitlines() if raw_cols \
                    else [""] * len(rj)
                with cur.copy("COPY rejects (batch_id, source_file, source_row, reason, field, raw) FROM STDIN") as cp:
                    for i in range(len(rj)):
                        cp.write_row((bid, str(rj["source_file"].iloc[i]), int(rj["source_row"].iloc[i]),
                                      str(rj["reason"].iloc[i]), str(rj["field"].iloc[i]), raws[i]))
            summary = LoadSummary(
                batch_id=bid, read=result.read, accepted=len(df), rejected=result.rejected,
                duplicates=len(df) - out["added"], added=out["added"], rejects_file=rejects_file,
                reasons=result.reasons(), files=result.files, format=result.source_kind,
                border_tolerance_m=result.boundary_tolerance_m,
            )
            cur.execute(
                'INSERT INTO batches (batch_id, format, files, "read", accepted, rejected, duplicates, added, '
                "rejects_file, reasons, border_tolerance_m) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                [bid, summary.format, json.dumps(summary.files), summary.read, summary.accepted, summary.rejected,
                 summary.duplicates, summary.added, rejects_file, json.dumps(summary.reasons),
                 summary.border_tolerance_m])
            out["summary"] = summary

        self._write([(_load, None)])
        return out["summary"]

    # ----------------------------------------------------------- read
    def incidents(self, period: Period | None = None, categories=None, bbox=None) -> IncidentTable:
        where, args = [], []
        if period is not None:
            where.append("month = ANY(%s)")
            args.append(list(period.months))
        if categories:
            where.append("category = ANY(%s)")
            args.append(list(categories))
        if bbox is not None:
            where.append("geom && ST_MakeEnvelope(%s, %s, %s, %s, 27700)")
            args += [float(b) for b in bbox]
        sql = f"SELECT {', '.join(chr(34) + c + chr(34) for c in SCHEMA)} FROM incidents"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY incident_id"
        with self._conn().cursor() as cur:
            cur.execute(sql, args)
            df = pd.DataFrame(cur.fetchall(), columns=list(SCHEMA))
        table = IncidentTable.from_frame(df)
        if period is not None:
            table = table.filter(period=period)
        return table

    def count(self) -> int:
        return int(self._rows("SELECT count(*) AS n FROM incidents")[0]["n"])

    def batches(self) -> pd.DataFrame:
        return pd.DataFrame(self._rows("SELECT * FROM batches ORDER BY batch_id"))

    def rejects(self, batch_id: int | None = None) -> pd.DataFrame:
        if batch_id is None:
            return pd.DataFrame(self._rows("SELECT * FROM rejects"))
        return pd.DataFrame(self._rows("SELECT * FROM rejects WHERE batch_id = %s", [batch_id]))

    def month_range(self):
        r = self._rows("SELECT min(month) AS lo, max(month) AS hi FROM incidents")[0]
        return r["lo"], r["hi"]

    # ----------------------------------------------------------- areas
    def set_study_area(self, polygons, name: str, source: str = "") -> None:
        import shapely

        geom = polygons.union_all() if hasattr(polygons, "union_all") else polygons
        self._write([("INSERT INTO areas (area_id, name, source, geom) SELECT coalesce(max(area_id), 0) + 1, %s, %s, "
                      "ST_SetSRID(ST_GeomFromWKB(%s), 27700) FROM areas", [name, source, shapely.to_wkb(geom)])])

    def study_area(self):
        import geopandas as gpd
        import shapely

        rows = self._rows("SELECT name, ST_AsBinary(geom) AS wkb FROM areas ORDER BY area_id DESC LIMIT 1")
        if not rows:
            return None
        return gpd.GeoDataFrame({"name": [rows[0]["name"]]}, geometry=[shapely.from_wkb(bytes(rows[0]["wkb"]))],
                                crs="EPSG:27700")

    # ----------------------------------------------------------- hooks of ServiceTablesMixin
    _feature_wkb = "ST_AsBinary(geom) AS wkb"

    def _sql(self, text: str) -> str:
        return text.replace("?", "%s")

    def _features_writer(self, features, layer_id: str):
        f = features.assign(layer_id=layer_id)
        cols = [c for c in FEATURE_COLUMNS if c != "wkb"]

        def _ins(cur):
            cur.execute("CREATE TEMP TABLE _feat (layer_id TEXT, fid BIGINT, minx DOUBLE PRECISION, "
                        "miny DOUBLE PRECISION, maxx DOUBLE PRECISION, maxy DOUBLE PRECISION, "
                        "cnt DOUBLE PRECISION, props TEXT, geojson TEXT, wkb BYTEA) ON COMMIT DROP")
            with cur.copy(f"COPY _feat ({', '.join(cols)}, wkb) FROM STDIN") as cp:
                for row in f[cols + ["wkb"]].astype(object).where(f[cols + ["wkb"]].notna(), None) \
                        .itertuples(index=False, name=None):
                    cp.write_row(row)
            cur.execute(f"INSERT INTO layer_features ({', '.join(cols)}, geom) "
                        f"SELECT {', '.join(cols)}, ST_SetSRID(ST_GeomFromWKB(wkb), 4326) FROM _feat")
            cur.execute("DROP TABLE _feat")

        return _ins

    def _bbox_where(self, bbox):
        return " AND geom && ST_MakeEnvelope(?, ?, ?, ?, 4326)", [float(b) for b in bbox]

    def _frame(self, sql, args, columns):
        with self._conn().cursor() as cur:
            cur.execute(sql, list(args))
            return pd.DataFrame(cur.fetchall(), columns=columns)

    def fail_interrupted_runs(self, reason: str) -> list[str]:
        # one statement: several processes may share the database
        rows = self._rows("UPDATE runs SET status = 'failed', error = %s, finished = %s "
                          "WHERE status IN ('queued', 'running') RETURNING run_id", [reason, _now()])
        return [r["run_id"] for r in rows]

    def close(self) -> None:
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.close()
            except Exception:  # pragma: no cover - closing twice is harmless
                pass
