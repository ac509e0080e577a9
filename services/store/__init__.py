"""The store: one small interface (``base.Store``) and its two backends beside it, DuckDB with
the spatial extension (``duckdb_store``, the default) and PostGIS (``postgis_store``); ``open.open_store``
picks one from a path or URL. No backend imports another.
"""
from geo._lazy import lazy_exports

_WHERE = {
    "DEFAULT_STORE": "base",
    "ENV_STORE": "base",
    "FEATURE_COLUMNS": "base",
    "LoadSummary": "base",
    "NEIGHBOUR_MATRICES_KEPT": "base",
    "SERVICE_SCHEMA": "base",
    "ServiceTablesMixin": "base",
    "Store": "base",
    "resolve_store_path": "base",
    "DuckDBStore": "duckdb_store",
    "load_spatial": "duckdb_store",
    "open_store": "open",
    "PostGISStore": "postgis_store",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _WHERE)
