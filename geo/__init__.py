"""harmspot.geo: the pure spatial-analysis core.

Functions and small classes over GeoDataFrames and arrays. Nothing here imports
``services`` or ``maps``, reads a file it was not handed, or keeps global state.
Every analysis returns an :class:`geo.core.result.AnalysisResult`.
"""

BNG = "EPSG:27700"
WGS84 = "EPSG:4326"

__all__ = ["BNG", "WGS84"]
