"""Seeded synthetic data with a known truth, for the demo, tests and benchmarks: a town
(``town``), a Minerva survey (``minerva``), patrol pings (``patrol``), planted risk factors (``rtm``).
Nothing in the analysis packages imports it.
"""
from geo._lazy import lazy_exports

_WHERE = {
    "MinervaCase": "minerva",
    "REASONS_ANY": "minerva",
    "REASONS_STATION": "minerva",
    "REASONS_VENUE": "minerva",
    "make_fear_points": "minerva",
    "make_minerva_case": "minerva",
    "PatrolScenario": "patrol",
    "make_patrol_scenario": "patrol",
    "FACTOR_NAMES": "rtm",
    "PLANTED": "rtm",
    "SynthRTM": "rtm",
    "make_rtm_town": "rtm",
    "ORIGIN": "town",
    "SynthTown": "town",
    "make_town": "town",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _WHERE)
