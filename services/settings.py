"""Typed settings of the harmspot service (environment prefix ``HARMSPOT_``).

Every limit the API enforces lives here, with its default, so that a force can
tighten or loosen it without touching code::

    HARMSPOT_STORE=/data/force.duckdb HARMSPOT_PARTNER_K=10 harmspot serve

``harmspot serve`` reads these and overrides ``store``, ``host`` and ``port`` from
its options. The app factory :func:`services.api.create_app` takes a
:class:`Settings` object, so tests build the app without touching the environment
(STYLE.md point 8).
"""
from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Service settings; each field can be set as ``HARMSPOT_<FIELD>`` (upper case)."""

    model_config = SettingsConfigDict(env_prefix="HARMSPOT_", extra="ignore")

    store: str = Field("harmspot.duckdb", description="DuckDB file path or postgresql:// URL.")
    host: str = Field("127.0.0.1", description="Address `harmspot serve` binds to (loopback by default).")
    port: int = Field(8000, ge=1, le=65535)

    # --- roles and privacy
    partner_k: int = Field(5, ge=1, le=1000,
                           description="Partners never see a cell count below k: such cells are suppressed.")
    key_cache_seconds: float = Field(10.0, ge=0, le=3600,
                                     description="How long a checked key is trusted before the store is asked again "
                                                 "(a revoked key stops working within this time).")

    # --- limits
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1024, description="Largest accepted request body / upload.")
    max_upload_rows: int = Field(200_000, ge=1, description="Most rows an uploaded table may have.")
    max_bbox_km2: float = Field(20_000.0, gt=0, description="Largest bbox filter area (km², WGS84 geodesic).")
    max_features: int = Field(50_000, ge=1, description="Most features one GET /layers/{id} returns.")
    default_limit: int = Field(10_000, ge=1, description="Features returned when no limit is given.")
    min_zoom: int = Field(5, ge=0, le=24)
    max_zoom: int = Field(18, ge=0, le=24)
    rate_limit_per_minute: int = Field(600, ge=0,
                                       description="Requests per key per minute (token bucket); 0 disables.")
    cors_origins: list[str] = Field(default_factory=list,
                                    description="CORS allow-list; empty (the default) sends no CORS headers.")

    # --- runs and caches
    run_workers: int = Field(1, ge=1, le=8, description="Background threads running analyses.")
    tile_cache_size: int = Field(4096, ge=0, description="Vector/raster tiles kept in memory (LRU).")
    layer_cache_size: int = Field(64, ge=0, description="GeoJSON layer responses kept in memory (LRU).")
    audit_flush_seconds: float = Field(1.0, gt=0, le=60)
    run_delay_seconds: float = Field(0.0, ge=0, le=600,
                                     description="Pause before each run starts (a test aid for restart checks; keep 0).")
