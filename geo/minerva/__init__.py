"""Stage 3, Minerva zones: where VAWG offences and public feelings of unsafety coincide (``zones``).
"""
from geo._lazy import lazy_exports

_WHERE = {
    "DEFAULT_WEIGHTS": "zones",
    "TYPES": "zones",
    "VAWG_PROXY": "zones",
    "bh_adjust": "zones",
    "empirical_bayes": "zones",
    "h3_units": "zones",
    "minerva_zones": "zones",
    "points_from_frame": "zones",
    "poisson_upper": "zones",
    "square_units": "zones",
    "vawg_offences": "zones",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _WHERE)
