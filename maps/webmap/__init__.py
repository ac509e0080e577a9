"""The offline web map: layers from results (``layers``), the folium page (``build``), inlined
assets so it opens with no network (``assets``) and the headless-browser check (``browser``).
"""
from geo._lazy import lazy_exports

_WHERE = {
    "LEAFLET_CSS": "assets",
    "LEAFLET_JS": "assets",
    "OfflineError": "assets",
    "inline_assets": "assets",
    "offline_assets": "assets",
    "remote_references": "assets",
    "CHROMIUM_FLAGS": "browser",
    "browser_check": "browser",
    "find_chromium": "browser",
    "build_map": "build",
    "make_map": "build",
    "save_map": "build",
    "CANVAS_FROM": "layers",
    "DEFAULT_MARKING": "layers",
    "KIND_TITLES": "layers",
    "MAX_FEATURES": "layers",
    "MAX_IMAGE_PX": "layers",
    "MapInfo": "layers",
    "MapLayer": "layers",
    "POPUP_FIELDS": "layers",
    "feature_collection_json": "layers",
    "load_map_layers": "layers",
    "merge_cells": "layers",
    "period_label": "layers",
    "periods_text": "layers",
    "surface_image": "layers",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _WHERE)
