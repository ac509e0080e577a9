"""Stage 3, Grip harm spots: the few small places carrying most street-violence harm, ranked per
town with the patrol dose wanted (``spots``).
"""
from geo._lazy import lazy_exports

_WHERE = {
    "COMMUNITY_VIOLENCE_CODES": "spots",
    "COMMUNITY_VIOLENCE_TYPES": "spots",
    "DAYS": "spots",
    "OUTCOMES": "spots",
    "PROXY_CATEGORIES": "spots",
    "VICTIM_AGE_RANGE": "spots",
    "crossover_schedule": "spots",
    "gpd_of": "spots",
    "outcome_mask": "spots",
    "select_spots": "spots",
    "town_squares": "spots",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _WHERE)
