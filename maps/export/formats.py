"""The export formats ``harmspot export`` knows and the one error every reader and writer raises.

Kept apart from the readers and writers so that ``read``, ``kml`` and ``write`` can all name them
without importing one another in a circle.
"""
from __future__ import annotations

from geo.core.errors import HarmspotError

VECTOR_EXTS = (".gpkg", ".geojson", ".json", ".csv", ".parquet")
RASTER_EXTS = (".tif", ".tiff")
#: ``harmspot export --format`` values and the extension each writes.
EXPORT_FORMATS = {"kml": ".kml", "kmz": ".kmz", "gpkg": ".gpkg", "geojson": ".geojson", "shp": ".zip",
                  "csv": ".csv", "tif": ".tif"}


class ExportError(HarmspotError):
    """A layer cannot be read or written in the requested format."""
