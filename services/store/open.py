"""``open_store``: the DuckDB file or PostGIS URL a path names, opened behind the one interface.
"""
from __future__ import annotations

from pathlib import Path


from services.store.base import Store
from services.store.duckdb_store import DuckDBStore


def open_store(url: str | Path, read_only: bool = False) -> Store:
    """DuckDB file path (default) or ``postgresql://`` URL (PostGIS backend)."""
    u = str(url)
    if u.startswith(("postgresql://", "postgres://")):
        from services.store.postgis_store import PostGISStore

        return PostGISStore(u)
    return DuckDBStore(u, read_only=read_only)
