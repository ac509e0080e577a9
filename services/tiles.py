"""Vector (MVT) and raster (PNG) tiles in the Web Mercator quad (z/x/y, XYZ scheme).

Vector tiles are encoded with ``mapbox-vector-tile`` from the layer's stored WGS84
WKB, so both store backends serve the same bytes. The first tile of a layer loads
its geometries once, projects them to EPSG:3857 and builds an STRtree; later tiles
only query that tree, clip (with a 64/4096 buffer) and encode. Partners get the
same suppression as in GeoJSON (services.layers.suppress).

Raster tiles come from the stored GeoTIFF (EPSG:27700) through rio-tiler's
``Reader`` over an in-memory rasterio dataset (no file path), rescaled from 0 to
the layer's 98th percentile and coloured with the ``ylorrd`` colour map. A tile
outside the raster answers 204 No Content.
"""
from __future__ import annotations

import json
import threading

import numpy as np

from services.auth import InvalidParameter, Principal
from services.layers import LRU, suppress

EXTENT = 4096
BUFFER = 64


def check_tile(z: int, x: int, y: int, min_zoom: int, max_zoom: int) -> None:
    if not (min_zoom <= z <= max_zoom):
        raise InvalidParameter(f"zoom {z}: tiles are served for zoom {min_zoom}..{max_zoom} "
                               "(HARMSPOT_MIN_ZOOM / HARMSPOT_MAX_ZOOM)")
    n = 1 << z
    if not (0 <= x < n and 0 <= y < n):
        raise InvalidParameter(f"tile {z}/{x}/{y}: x and y must be in 0..{n - 1} at zoom {z}")


def tile_bounds_3857(z: int, x: int, y: int):
    half = 20037508.342789244
    size = 2 * half / (1 << z)
    x0 = -half + x * size
    y1 = half - y * size
    return x0, y1 - size, x0 + size, y1


class _LayerGeoms:
    def __init__(self, geoms, props, cnt):
        import shapely

        self.geoms = geoms
        self.props = props
        self.cnt = cnt
        self.tree = shapely.STRtree(geoms)


class TileService:
    """Caches per-layer projected geometries and encoded tiles."""

    def __init__(self, store, tile_cache_size: int = 4096, layer_cache_size: int = 8):
        self.store = store
        self.tiles = LRU(tile_cache_size)
        self.layers = LRU(layer_cache_size)
        self._load_lock = threading.Lock()

    def _layer(self, layer_id: str) -> _LayerGeoms:
        hit = self.layers.get(layer_id)
        if hit is not None:
            return hit
        with self._load_lock:
            hit = self.layers.get(layer_id)
            if hit is not None:
                return hit
            import shapely
            from pyproj import Transformer

            rows = self.store.layer_features(layer_id)
            geoms = shapely.from_wkb([bytes(b) if b is not None else None for b in rows["wkb"]])
            tr = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)
            coords = shapely.get_coordinates(geoms)
            # clamp latitude to the Web Mercator limit before projecting
            lat = np.clip(coords[:, 1], -85.0511, 85.0511)
            mx, my = tr.transform(coords[:, 0], lat)
            geoms = shapely.set_coordinates(geoms.copy(), np.column_stack([mx, my]))
            lg = _LayerGeoms(geoms, [json.loads(p) for p in rows["props"]], rows["cnt"].to_numpy(float))
            self.layers.put(layer_id, lg)
            return lg

    def mvt(self, meta: dict, z: int, x: int, y: int, who: Principal, k: int) -> bytes:
        partner = who.role == "partner"
        key = ("mvt", meta["layer_id"], z, x, y, partner, k)
        hit = self.tiles.get(key)
        if hit is not None:
            return hit
        import mapbox_vector_tile
        import shapely

        lg = self._layer(meta["layer_id"])
        x0, y0, x1, y1 = tile_bounds_3857(z, x, y)
        pad = (x1 - x0) * BUFFER / EXTENT
        idx = lg.tree.query(shapely.box(x0 - pad, y0 - pad, x1 + pad, y1 + pad))
        feats = []
        if len(idx):
            idx = np.sort(idx)
            clipped = shapely.clip_by_rect(lg.geoms[idx], x0 - pad, y0 - pad, x1 + pad, y1 + pad)
            for i, g in zip(idx, clipped):
                if g is None or g.is_empty:
                    continue
                props = suppress(lg.props[i], lg.cnt[i], k) if partner else lg.props[i]
                props = {kk: v for kk, v in props.items() if v is not None}
                feats.append({"geometry": g, "properties": props, "id": int(i)})
        data = b""
        if feats:
            data = mapbox_vector_tile.encode(
                [{"name": meta.get("name") or "layer", "features": feats}],
                default_options={"quantize_bounds": (x0, y0, x1, y1), "extents": EXTENT, "y_coord_down": False},
            )
        self.tiles.put(key, data)
        return data

    def png(self, meta: dict, z: int, x: int, y: int) -> bytes | None:
        key = ("png", meta["layer_id"], z, x, y)
        hit = self.tiles.get(key)
        if hit is not None:
            return hit or None
        from rasterio.io import MemoryFile
        from rio_tiler.colormap import cmap
        from rio_tiler.errors import TileOutsideBounds
        from rio_tiler.io import Reader

        tif = self.store.layer_raster(meta["layer_id"])
        if tif is None:
            return None
        rinfo = (meta.get("metadata") or {}).get("raster") or meta.get("raster") or {}
        hi = float(rinfo.get("p98") or rinfo.get("max") or 1.0) or 1.0
        try:
            with MemoryFile(tif) as mem, mem.open() as src, Reader(None, dataset=src) as r:
                if not r.tile_exists(x, y, z):
                    self.tiles.put(key, b"")
                    return None
                img = r.tile(x, y, z, tilesize=256)
        except TileOutsideBounds:
            self.tiles.put(key, b"")
            return None
        img.rescale(in_range=((0.0, hi),))
        data = img.render(img_format="PNG", colormap=cmap.get("ylorrd"))
        self.tiles.put(key, data)
        return data
