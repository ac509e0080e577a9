"""Stage 4, did it work: before/after statistics (``stats``: WDQ, WDD, MDE), regressions
(``regression``: difference-in-differences, crossover), the spatial point pattern test (``pointpattern.sppt``),
residual deterrence (``deterrence``) and the treated/control/displacement design (``areas``).
"""
from geo._lazy import lazy_exports

_WHERE = {
    "evaluate_areas": "areas",
    "match_controls": "areas",
    "residual_deterrence": "deterrence",
    "crossover_place_day": "regression",
    "did_regression": "regression",
    "sppt": "pointpattern",
    "mde_wdd": "stats",
    "pct_change": "stats",
    "tne": "stats",
    "wdd": "stats",
    "wdd_harm": "stats",
    "wdd_weighted": "stats",
    "wdq": "stats",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _WHERE)
