"""Stage 3, patrol dose from GPS pings: ping reading and validation (``pings``), visits and the
Koper-curve dose per spot (``dose``), and the same on Dask for files larger than memory
(``dask_engine``).
"""
from geo._lazy import lazy_exports

_WHERE = {
    "dose_dask": "dask_engine",
    "write_partitioned_pings": "dask_engine",
    "compute_dose": "dose",
    "count_interactions": "dose",
    "daily_dose": "dose",
    "diff_histogram": "dose",
    "gini": "dose",
    "hits_frame": "dose",
    "infer_intervals": "dose",
    "median_from_histogram": "dose",
    "spot_frame": "dose",
    "spot_hits": "dose",
    "spot_summary": "dose",
    "unit_summary": "dose",
    "visits_from_hits": "dose",
    "LOCAL_TZ": "pings",
    "PING_REJECT_REASONS": "pings",
    "PingError": "pings",
    "PingTable": "pings",
    "read_pings": "pings",
    "validate_pings": "pings",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _WHERE)
