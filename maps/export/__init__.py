"""Exports of results: the formats and their error (``formats``), writing layers (``write``: GeoPackage, GeoJSON, CSV, COG), reading them
back (``read``), classes and colours (``style``), KML/KMZ (``kml``) and zipped Shapefiles (``shapefile``).
"""
from geo._lazy import lazy_exports

_WHERE = {
    "KML_NS": "kml",
    "kml_document": "kml",
    "placemark_names": "kml",
    "write_kml": "kml",
    "LayerFile": "read",
    "gistar_class_column": "read",
    "label_column": "read",
    "layer_kind": "read",
    "read_layer": "read",
    "read_meta": "read",
    "value_column": "read",
    "SHP_FIELD_NAMES": "shapefile",
    "shapefile_field_names": "shapefile",
    "write_shapefile_zip": "shapefile",
    "GISTAR_COLOURS": "style",
    "QUADRANT_COLOURS": "style",
    "RAMP": "style",
    "attribute_rows": "style",
    "class_breaks": "style",
    "classify": "style",
    "feature_styles": "style",
    "gistar_colour": "style",
    "parse_breaks": "style",
    "ramp": "style",
    "EXPORT_FORMATS": "formats",
    "ExportError": "formats",
    "RASTER_EXTS": "formats",
    "VECTOR_EXTS": "formats",
    "csv_frame": "write",
    "export_file": "write",
    "export_layer": "write",
    "write_cog": "write",
    "write_geopackage": "write",
    "write_raster": "write",
    "write_result": "write",
    "write_vector": "write",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _WHERE)
