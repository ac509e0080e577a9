"""The canonical incident table (``table``), the readers that fill it (``police_uk``: street CSVs and
API downloads; ``force``: a force export with a TOML mapping), the file walker (``files``) and the
validation that loses nothing (``validate``: every row accepted or rejected with a reason).
"""
from geo._lazy import lazy_exports

_WHERE = {
    "sniff_format": "files",
    "check_mapping": "force",
    "load_mapping": "force",
    "read_table": "force",
    "POLICE_API_REQUIRED": "police_uk",
    "POLICE_UK_REQUIRED": "files",
    "read_police_api": "police_uk",
    "read_police_uk": "police_uk",
    "FLAG_COLUMNS": "table",
    "IncidentTable": "table",
    "IngestResult": "table",
    "REJECT_REASONS": "table",
    "SCHEMA": "table",
    "coerce_schema": "table",
    "require_nonempty": "table",
    "DEFAULT_BORDER_TOLERANCE_M": "validate",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _WHERE)
