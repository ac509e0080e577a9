"""Offline folium maps for the tasking meeting.

``build_map(layers, ...)`` draws harmspot layers (cells, Gi* classes, KDE/RTM surfaces,
harm spots, Minerva zones, boundaries) on one Leaflet map: a layer control, a scale bar, a
legend per layer (shown while the layer is on), popups that say why a place is on the map,
a title with the period, and the protective marking at the top and bottom of the page.
``save_map(m, path)`` writes one self-contained HTML file.

Rank labels
-----------
Each harm spot's rank is drawn on its square (a 22 px high label). Zoomed out, adjacent
150 m squares are a few pixels apart and their labels would overlap, so labels never overlap:
at every zoom (recomputed on ``zoomend``, in the page's own script) labels whose boxes would
touch are merged into one shared label listing their ranks in order, e.g. ``1·3·7``, at the
mean position of their squares; zooming in splits it (from about zoom 14, 150 m >= 24 px,
every spot has its own label). Chosen over hiding the lower ranks because an officer on a
phone then still sees every rank at every zoom: none disappears, and the shared label says
the squares are together. ``window.harmspot.layers[css]`` gives, for a spots layer,
``labels`` (ranks labelled = spots with a rank), ``shown`` (label elements now on the map),
``grouped`` (shared ones among them) and ``zoom``.

Offline by default
------------------
folium links Leaflet (and jQuery, Bootstrap, Font Awesome...) from CDNs. The maps here use
only Leaflet (1.9.3, the version folium 0.20 pins), and in offline mode the ``<script src>`` /
``<link href>`` tags are replaced by the file contents, inlined into the HTML. The contents come
from the PyPI package ``folium-offline`` (module ``offlinefolium``), which ships the exact CDN
files keyed by their URL; they are read at map-writing time, never fetched. The written page
is then checked: any remaining ``http(s)://`` script, stylesheet or image source is an error
(:class:`OfflineError`). Basemap tiles are added only when a tile URL is given (that is a
request to the tile server, by choice); without one the boundaries give context.
``offline=False`` (``--cdn``) keeps the CDN links.

Size
----
Cells with no incidents (value 0) are not drawn (the legend says how many). Above
:data:`MAX_FEATURES` drawn cells (50,000), cells are merged into squares 2x, 4x... the size
until they fit (values summed; announced in the legend and the returned choices); for full
resolution use the service's vector tiles (``harmspot serve``). Layers above
:data:`CANVAS_FROM` features (5,000) draw on a canvas instead of SVG (much faster in the
browser for tens of thousands of squares).
"""
from __future__ import annotations

import base64
import html as _html
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from geo import BNG, WGS84
from geo.errors import HarmspotError
from geo.result import Choice, Raster
from maps.export import (GISTAR_COLOURS, class_breaks, feature_styles, label_column, layer_kind, read_layer,
                         value_column)

#: Above this many drawn cells a cell layer is merged to coarser squares.
MAX_FEATURES = 50_000
#: Layers with more features than this draw on a canvas (not SVG).
CANVAS_FROM = 5_000
#: Largest side (pixels) of a surface image overlay.
MAX_IMAGE_PX = 2_000
LEAFLET_JS = "https://cdn.jsdelivr.net/npm/leaflet@1.9.3/dist/leaflet.js"
LEAFLET_CSS = "https://cdn.jsdelivr.net/npm/leaflet@1.9.3/dist/leaflet.css"
DEFAULT_MARKING = "OFFICIAL-SENSITIVE"

KIND_TITLES = {"cells": "Cells", "gistar": "Gi* hot and cold spots", "surface": "Surface", "spots": "Harm spots",
               "zones": "Minerva zones", "boundary": "Boundaries", "points": "Points"}
#: Attributes put in popups, per kind (others are left out of the page to keep it small).
POPUP_FIELDS = {
    "spots": ["rank", "spot_id", "town", "location", "harm", "count", "share_harm", "count_recent",
              "count_earlier", "trend", "status", "target_visits_per_day", "target_minutes", "cells"],
    "cells": ["cell_id", "count", "harm"],
    "gistar": ["cell_id", "gistar_class", "count", "harm", "z", "p", "p_adj", "gi_z", "gi_p"],
    "zones": None,  # all
    "points": None,
    "boundary": [],
}


class OfflineError(HarmspotError):
    """An offline map would need the network (an asset is missing or a remote URL is left)."""


@dataclass
class MapLayer:
    """One layer to draw: data (GeoDataFrame in any CRS, or Raster), its kind and sidecar metadata."""

    name: str
    data: object
    kind: str | None = None
    meta: dict = field(default_factory=dict)
    show: bool = True

    def __post_init__(self):
        if self.kind is None:
            self.kind = layer_kind(self.data, self.meta)


@dataclass
class MapInfo:
    """What :func:`build_map` drew: features per layer (the browser test compares these)."""

    layers: list = field(default_factory=list)  # dicts: name, kind, css_class, drawn, total, renderer
    choices: list = field(default_factory=list)
    bounds: list | None = None
    period: str | None = None


# ============================================================================ loading
def load_map_layers(paths) -> list[MapLayer]:
    """Read any harmspot outputs (every vector layer of a GeoPackage) as :class:`MapLayer`.

    Default visibility (the layer control turns the rest on): only the first surface is
    shown, and cells are hidden when a Gi* layer (which carries the same cells) is present.
    """
    out = []
    for p in paths:
        lf = read_layer(p, all_layers=True)
        base = _layer_title(lf.kind, lf.meta, Path(p), lf.layer_name)
        out.append(MapLayer(base, lf.data, lf.kind, lf.meta))
        for name, g in lf.others.items():
            k = layer_kind(g, {})
            out.append(MapLayer(_layer_title(k, {}, Path(p), name), g, k, lf.meta if k != "boundary" else {},
                                show=k != "cells"))
    kinds = [L.kind for L in out]
    seen_surface = False
    for L in out:
        if L.kind == "surface":
            L.show = not seen_surface
            seen_surface = True
        if L.kind == "cells" and "gistar" in kinds:
            L.show = False
    return out


def _layer_title(kind, meta, path: Path, layer_name=None) -> str:
    t = KIND_TITLES.get(kind, kind)
    mk = str(meta.get("kind", "")) if meta else ""
    if kind == "surface" and mk:
        t = {"kde": "KDE surface", "rtm": "RTM risk surface"}.get(mk.lower(), f"{mk} surface")
    if layer_name and path.suffix.lower() == ".gpkg" and layer_name not in (mk, kind, path.stem):
        t = layer_name.replace("_", " ").capitalize()
    return f"{t} ({path.name})"


def periods_text(layers) -> str | None:
    """The period for the title: one label, or 'A (layer, layer); B (layer)' when layers differ."""
    by = {}
    for L in layers:
        lab = period_label([L.meta])
        if lab:
            by.setdefault(lab, []).append(KIND_TITLES.get(L.kind, L.kind).lower())
    if not by:
        return None
    if len(by) == 1:
        return next(iter(by))
    return "; ".join(f"{lab} ({', '.join(dict.fromkeys(k))})" for lab, k in by.items())


def period_label(metas) -> str | None:
    """'2025-01-01 to 2025-06-30' from the first sidecar with a period."""
    for m in metas:
        per = (m or {}).get("period")
        if isinstance(per, dict) and per.get("start"):
            return f"{per['start']} to {per['end']}"
        if isinstance(per, str) and per:
            return per
    return None


# ============================================================================ geometry helpers
def _wgs(gdf):
    if gdf.crs is None:
        gdf = gdf.set_crs(BNG)
    return gdf.to_crs(WGS84)


def merge_cells(gdf, max_features: int = MAX_FEATURES) -> tuple[object, int]:
    """Merge cells into k-times larger BNG squares (k = 2, 4, 8...) until at most ``max_features``.

    Cells are assigned by centroid; ``count``, ``harm`` and other numeric value columns are
    summed. Returns the merged frame (BNG) and the factor k (1 = unchanged).
    """
    import geopandas as gpd
    import shapely

    g = gdf.to_crs(BNG)
    if len(g) <= max_features:
        return g, 1
    side = float(np.sqrt(np.median(g.geometry.area))) or 150.0
    ox, oy = g.total_bounds[:2]
    c = g.geometry.centroid
    fx = np.floor((c.x.to_numpy() - ox) / side).astype(np.int64)  # fine column/row from the south-west corner
    fy = np.floor((c.y.to_numpy() - oy) / side).astype(np.int64)
    num = [col for col in g.columns if col != g.geometry.name and pd.api.types.is_numeric_dtype(g[col])
           and col not in ("ix", "iy")]
    k = 2
    while True:
        df = pd.DataFrame({"ix": fx // k, "iy": fy // k, **{col: g[col].to_numpy() for col in num}})
        agg = df.groupby(["ix", "iy"], sort=False).sum().reset_index()
        if len(agg) <= max_features:
            break
        k *= 2
    s = side * k
    x0, y0 = ox + agg["ix"].to_numpy() * s, oy + agg["iy"].to_numpy() * s
    geom = shapely.box(x0, y0, x0 + s, y0 + s)
    agg.insert(0, "cell_id", [f"{int(round(s))}m_E{int(round(a))}_N{int(round(b))}" for a, b in zip(x0, y0)])
    out = gpd.GeoDataFrame(agg.drop(columns=["ix", "iy"]), geometry=geom, crs=BNG)
    return out, k


def _props_frame(gdf, kind: str) -> pd.DataFrame:
    fields = POPUP_FIELDS.get(kind)
    cols = [c for c in gdf.columns if c != gdf.geometry.name]
    if fields is not None:
        keep = [c for c in fields if c in cols]
        if kind in ("cells", "gistar"):
            vc = value_column(gdf)
            if vc and vc not in keep:
                keep.append(vc)
            gc = [c for c in cols if "class" in c.lower()]
            keep += [c for c in gc if c not in keep]
        if kind == "boundary":
            lc = label_column(gdf)
            keep = [lc] if lc else []
        cols = keep
    else:
        cols = [c for c in cols if not str(c).startswith("_") and c not in ("unit_ids", "cell_ids")][:14]
    return pd.DataFrame(gdf[cols])


def feature_collection_json(gdf, kind: str, colours: list[str]) -> str:
    """Compact GeoJSON text (WGS84, coordinates rounded to 6 decimals ~ 0.1 m) with popup properties.

    Vectorised: pandas writes the properties (``to_json(orient="records", lines=True)``) and
    shapely 2 the geometries (``to_geojson``), so 50,000 cells take about a second. The
    feature colour is in the ``_c`` property.
    """
    import shapely

    g = _wgs(gdf)
    props = _props_frame(g, kind).copy()
    for c in props.columns:
        if props[c].dtype == object:
            props[c] = props[c].map(lambda v: ", ".join(map(str, v)) if isinstance(v, (list, tuple, np.ndarray)) else v)
    props["_c"] = list(colours)
    lines = [ln for ln in props.to_json(orient="records", lines=True, double_precision=8,
                                        date_format="iso").split("\n") if ln]
    geoms = shapely.to_geojson(shapely.transform(g.geometry.values, lambda c: np.round(c, 6)))
    feats = ",".join('{"type":"Feature","properties":%s,"geometry":%s}' % (p, gj if gj is not None else "null")
                     for p, gj in zip(lines, geoms))
    return ('{"type":"FeatureCollection","features":[' + feats + "]}").replace("</", "<\\/")


# ============================================================================ surfaces
def surface_image(r: Raster, max_px: int = MAX_IMAGE_PX, vmax: float | None = None
                  ) -> tuple[str, list, tuple[float, float]]:
    """A transparent PNG (data URL) of a surface warped to Web Mercator, its lat/lon bounds and value range.

    The YlOrRd ramp runs from 0 to ``vmax``, by default the 99th percentile of the positive
    values (a few extreme cells would otherwise wash the rest out; higher values take the top
    colour); give ``vmax`` (e.g. last week's) to keep the same ramp across maps. Values below
    2 % of it, NaN and nodata are transparent; opacity rises from 0.2 to 0.85 so low values
    do not hide the boundaries.
    """
    from PIL import Image
    from matplotlib import colormaps
    from pyproj import Transformer
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    arr = np.asarray(r.array, dtype="float64").copy()
    if r.nodata is not None:
        arr[arr == r.nodata] = np.nan
    h, w = arr.shape
    left, bottom, right, top = r.bounds
    dst_t, dw, dh = calculate_default_transform(r.crs or BNG, "EPSG:3857", w, h, left, bottom, right, top)
    scale = max(dw / max_px, dh / max_px, 1.0)
    if scale > 1:
        dw, dh = int(dw / scale), int(dh / scale)
        dst_t = type(dst_t)(dst_t.a * scale, dst_t.b, dst_t.c, dst_t.d, dst_t.e * scale, dst_t.f)
    dst = np.full((dh, dw), np.nan)
    reproject(arr, dst, src_transform=r.transform, src_crs=r.crs or BNG, dst_transform=dst_t, dst_crs="EPSG:3857",
              resampling=Resampling.bilinear, src_nodata=np.nan, dst_nodata=np.nan)
    if vmax is None:
        pos = dst[np.isfinite(dst) & (dst > 0)]
        vmax = float(np.quantile(pos, 0.99)) if pos.size else 1.0
    vmax = float(vmax) if vmax > 0 else 1.0
    vmin = 0.0
    t = np.clip(np.nan_to_num(dst, nan=0.0) / vmax, 0, 1)
    rgba = colormaps["YlOrRd"](t)
    alpha = np.where(np.isfinite(dst) & (t >= 0.02), 0.2 + 0.65 * t, 0.0)
    rgba[..., 3] = alpha
    img = Image.fromarray((rgba * 255).astype("uint8"), "RGBA")
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    x0, y0 = dst_t.c, dst_t.f
    x1, y1 = x0 + dst_t.a * dw, y0 + dst_t.e * dh
    tr = Transformer.from_crs("EPSG:3857", WGS84, always_xy=True)
    lon0, lat0 = tr.transform(min(x0, x1), min(y0, y1))
    lon1, lat1 = tr.transform(max(x0, x1), max(y0, y1))
    return url, [[lat0, lon0], [lat1, lon1]], (vmin, vmax)


# ============================================================================ page furniture
_CSS = """
.hs-marking{position:fixed;left:50%;transform:translateX(-50%);z-index:1100;background:#b00020;color:#fff;
  font:bold 13px/1.6 Arial,sans-serif;padding:0 14px;letter-spacing:.05em;pointer-events:none}
.hs-marking-top{top:0}.hs-marking-bottom{bottom:0}
.hs-title{position:fixed;top:26px;left:56px;z-index:1050;background:rgba(255,255,255,.93);padding:6px 10px;
  border-radius:4px;box-shadow:0 1px 4px rgba(0,0,0,.3);font:14px Arial,sans-serif;max-width:46%}
.hs-title h1{font-size:17px;margin:0 0 2px 0}.hs-title small{color:#333}
.hs-title details{font-size:11px;margin-top:3px}.hs-title li{margin:0}
.hs-legend{position:fixed;bottom:30px;right:10px;z-index:1050;background:rgba(255,255,255,.93);padding:6px 9px;
  border-radius:4px;box-shadow:0 1px 4px rgba(0,0,0,.3);font:12px Arial,sans-serif;max-height:55%;overflow:auto}
.hs-legend h4{font-size:12px;margin:4px 0 2px 0}.hs-legend i{display:inline-block;width:14px;height:12px;
  margin-right:5px;vertical-align:middle;border:1px solid #777}
.hs-legend .hs-ramp{display:inline-block;width:120px;height:10px;vertical-align:middle}
.hs-rank{background:#fff;border:2px solid #a50f15;border-radius:11px;text-align:center;font:bold 11px/18px Arial,
  sans-serif;color:#a50f15;box-sizing:border-box;white-space:nowrap}
.hs-rank-group{background:#fff5f0}
.hs-popup table{border-collapse:collapse;font-size:12px}.hs-popup th{text-align:left;padding-right:6px;color:#555}
.hs-popup .hs-why{margin:0 0 4px 0;max-width:260px}
"""

_LAYER_JS = """
(function(){
  var data = %(data)s;
  var opts = %(opts)s;
  var grp = %(group)s;
  var map = %(map)s;
  function fmt(v){ if(v===null||v===undefined) return ''; if(typeof v==='number'){
      if(Math.abs(v)>=100) return v.toLocaleString('en-GB',{maximumFractionDigits:0});
      if(Math.abs(v)>=1||v===0) return v.toLocaleString('en-GB',{maximumFractionDigits:2});
      return v.toPrecision(3);} return String(v).replace(/[&<>]/g,function(c){return {'&':'&amp;','<':'&lt;','>':'&gt;'}[c];}); }
  function why(p){
    if(opts.kind==='spots'){ var s='Rank '+fmt(p.rank)+' harm spot'+(p.town?' in '+fmt(p.town):'');
      if(p.share_harm!==undefined&&p.share_harm!==null) s+=': '+(100*p.share_harm).toFixed(1)+(p.town?"% of the town's harm":'% of the harm')+(opts.period?' in '+opts.period:'');
      if(p.target_minutes) s+='. Dose: '+fmt(p.target_minutes)+' min per visit'; return s+'.'; }
    if(opts.kind==='gistar') return 'Gi* class: '+fmt(p.gistar_class||p[opts.classcol]||'');
    if(opts.kind==='zones'){ var q=p.quadrant||p.type; return (p.category?fmt(p.category):'Minerva zone')+(q?' &ndash; '+fmt(q):'')+(p.drivers?'; drivers: '+fmt(p.drivers):'')+(opts.period?' ('+opts.period+')':''); }
    if(opts.kind==='cells'&&opts.value) return fmt(p[opts.value])+' '+opts.value+(opts.period?' in '+opts.period:'');
    return '';
  }
  function popup(p){ var h='<div class="hs-popup"><p class="hs-why">'+why(p)+'</p><table>';
    for(var k in p){ if(k==='_c') continue; h+='<tr><th>'+fmt(k)+'</th><td>'+fmt(p[k])+'</td></tr>'; }
    return h+'</table></div>'; }
  var o = {className: opts.css, interactive: opts.kind!=='boundary',
    style: function(f){ var c=f.properties._c||'#3366cc';
      if(opts.kind==='boundary') return {color:'#333',weight:2,fill:false,dashArray:'4 3'};
      if(opts.kind==='spots') return {color:'#67000d',weight:2,fillColor:c,fillOpacity:0.75};
      if(opts.kind==='zones') return {color:c,weight:2,fillColor:c,fillOpacity:0.35};
      if(opts.kind==='gistar'&&c===opts.notsig) return {color:'#bbbbbb',weight:opts.canvas?0:0.2,fillColor:c,fillOpacity:0.0};
      return {color:'#555',weight:opts.canvas?0:0.4,fillColor:c,fillOpacity:0.7}; },
    pointToLayer: function(f, ll){ return L.circleMarker(ll,{radius:5,className:opts.css}); }};
  if(opts.canvas) o.renderer = L.canvas({padding:0.3});
  var lyr = L.geoJSON(data, o);
  if(opts.kind!=='boundary') lyr.bindPopup(function(l){ return popup(l.feature.properties); }, {maxWidth:320});
  lyr.addTo(grp);
  var labels = 0, st = {features: lyr.getLayers().length, labels: 0, canvas: !!opts.canvas};
  if(opts.kind==='spots'){
    // Rank labels never overlap: at each zoom, labels whose boxes would touch are merged into one
    // label listing their ranks ("3·7·12") at the members' mean position; zooming in splits them.
    var marks = [];
    lyr.eachLayer(function(l){ var p=l.feature.properties; if(p.rank===undefined||p.rank===null) return;
      marks.push({rank: p.rank, ll: l.getBounds?l.getBounds().getCenter():l.getLatLng()}); });
    marks.sort(function(a,b){ return a.rank-b.rank; });
    labels = marks.length;
    var shown = L.layerGroup().addTo(grp), H = 22, GAP = 2, ready = false;
    var ctx = document.createElement('canvas').getContext('2d');
    ctx.font = 'bold 11px Arial,sans-serif';
    function wide(t){ return Math.max(H, Math.ceil(ctx.measureText(t).width) + 12); }
    function relabel(){
      var gs = marks.map(function(m){ var q = map.latLngToLayerPoint(m.ll);
        return {m: [m], q: [q], x: q.x, y: q.y, t: String(m.rank), w: wide(String(m.rank))}; });
      var again = true;
      while(again){ again = false;
        for(var i=0; i<gs.length && !again; i++){ for(var j=i+1; j<gs.length; j++){ var a=gs[i], b=gs[j];
          if(Math.abs(a.x-b.x) < (a.w+b.w)/2+GAP && Math.abs(a.y-b.y) < H+GAP){
            a.m = a.m.concat(b.m); a.q = a.q.concat(b.q); gs.splice(j, 1);
            var k = a.m.map(function(m,n){ return n; }).sort(function(u,v){ return a.m[u].rank-a.m[v].rank; });
            a.m = k.map(function(n){ return a.m[n]; }); a.q = k.map(function(n){ return a.q[n]; });
            a.x = a.q.reduce(function(s,q){ return s+q.x; }, 0)/a.q.length;
            a.y = a.q.reduce(function(s,q){ return s+q.y; }, 0)/a.q.length;
            a.t = a.m.map(function(m){ return String(m.rank); }).join('\u00b7'); a.w = wide(a.t);
            again = true; break; } } } }
      shown.clearLayers();
      gs.forEach(function(g){ shown.addLayer(L.marker(map.layerPointToLatLng(L.point(g.x, g.y)),
        {interactive:false, keyboard:false, icon:L.divIcon({className: g.m.length>1?'hs-rank hs-rank-group':'hs-rank',
          html: fmt(g.t), iconSize:[g.w, H]})})); });
      st.shown = gs.length; st.grouped = gs.filter(function(g){ return g.m.length>1; }).length; st.zoom = map.getZoom();
    }
    map.on('zoomend viewreset', function(){ if(ready) relabel(); });
    map.whenReady(function(){ ready = true; relabel(); });
  }
  st.labels = labels;
  window.harmspot = window.harmspot || {layers:{}};
  window.harmspot.layers[opts.css] = st;
  window.harmspotLayers = window.harmspotLayers || {};
  window.harmspotLayers[opts.css] = lyr;
})();
"""


def _legend_html(entries: list[tuple[str, str, list, str]]) -> str:
    parts = ['<div class="hs-legend" id="hs-legend">']
    for layer_name, css, items, note in entries:
        parts.append(f'<div class="hs-legend-item" data-layer="{_html.escape(layer_name)}" id="lg-{css}">')
        parts.append(f"<h4>{_html.escape(layer_name)}</h4>")
        for lab, col in items:
            if col.startswith("linear-gradient"):
                parts.append(f'<span class="hs-ramp" style="background:{col}"></span> {_html.escape(lab)}<br/>')
            else:
                parts.append(f'<i style="background:{col}"></i>{_html.escape(lab)}<br/>')
        if note:
            parts.append(f"<small>{_html.escape(note)}</small><br/>")
        parts.append("</div>")
    parts.append("</div>")
    return "".join(parts)


def _title_html(title: str, period: str | None, choices: list[str], marking: str | None) -> str:
    bits = [f'<div class="hs-title" id="hs-title"><h1>{_html.escape(title)}</h1>']
    if period:
        bits.append(f"<small>Period: {_html.escape(period)}</small>")
    if choices:
        bits.append("<details><summary>Automatic choices</summary><ul>")
        bits += [f"<li>{_html.escape(c)}</li>" for c in choices[:30]]
        bits.append("</ul></details>")
    bits.append("</div>")
    if marking:
        m = _html.escape(marking)
        bits.append(f'<div class="hs-marking hs-marking-top">{m}</div><div class="hs-marking hs-marking-bottom">{m}</div>')
    return "".join(bits)


# ============================================================================ the map
def build_map(layers: list[MapLayer], *, title: str | None = None, marking: str | None = DEFAULT_MARKING,
              tiles: str | None = None, tiles_attr: str | None = None, boundary=None,
              max_features: int = MAX_FEATURES, canvas_from: int = CANVAS_FROM, period: str | None = None,
              breaks=None, surface_max: float | None = None):
    """A folium Map of harmspot layers (see the module docstring). Returns (Map, :class:`MapInfo`).

    Parameters
    ----------
    layers : list of MapLayer
        Drawn bottom to top in the order: surfaces, cells, Gi*, zones, boundaries, spots.
    title : str, default 'harmspot map' (plus the layer kinds)
    marking : str or None
        Protective marking banner (top and bottom). None for none.
    tiles : str, optional
        Basemap tile URL template (``https://.../{z}/{x}/{y}.png``); none by default (offline).
    boundary : GeoDataFrame, optional
        District/town outlines drawn for context.
    max_features, canvas_from : int
        Size rules (cells merged above ``max_features``; canvas renderer above ``canvas_from``).
    period : str, optional
        Period label; default from the layers' sidecars.
    breaks : sequence of float, optional
        Class upper bounds for every cells layer (plus an open top class), e.g. last week's,
        so that maps of different periods share colours. Without it each cells layer gets
        quantile classes, echoed in ``info.choices`` so they can be passed next time.
    surface_max : float, optional
        Top of the surfaces' colour ramp; default each surface's 99th percentile (echoed).
    """
    import folium
    from branca.element import Element

    info = MapInfo()
    layers = list(layers)
    if boundary is not None:
        layers.append(MapLayer("Boundaries", boundary, "boundary", {}))
    if not layers:
        raise HarmspotError("nothing to map: give at least one layer file (or --boundary)")
    order = {"surface": 0, "cells": 1, "gistar": 2, "zones": 3, "points": 4, "boundary": 5, "spots": 6}
    layers.sort(key=lambda L: order.get(L.kind, 4))
    info.period = period or periods_text(layers)
    choices = []
    for L in layers:
        for c in (L.meta or {}).get("choices", []) or []:
            if c.get("automatic"):
                msg = f"{L.name}: {c['name']} = {c['value']} ({c.get('reason', '')})"
                if msg not in choices:
                    choices.append(msg)
    m = folium.Map(location=None, tiles=None, control_scale=True, zoom_start=12, prefer_canvas=False)
    m.default_js = [("leaflet", LEAFLET_JS)]
    m.default_css = [("leaflet_css", LEAFLET_CSS)]
    if tiles:
        folium.TileLayer(tiles=tiles, attr=tiles_attr or "basemap: " + re.sub(r"^https?://([^/]+).*", r"\1", tiles),
                         name="Basemap", overlay=False, control=True).add_to(m)
    legend_entries = []
    all_bounds = []
    used_css = set()
    for i, L in enumerate(layers):
        css = f"hs-{L.kind}"
        if css in used_css:
            css = f"{css}-{i}"
        used_css.add(css)
        fg = folium.FeatureGroup(name=L.name, show=L.show, overlay=True, control=True)
        fg.add_to(m)
        if isinstance(L.data, Raster):
            url, bnds, (vmin, vmax) = surface_image(L.data, vmax=surface_max)
            if surface_max is None:
                info.choices.append(Choice(f"{L.name} colour ramp top", f"{vmax:.4g}",
                                           "99th percentile of the surface; --surface-max keeps it on the next map"))
            folium.raster_layers.ImageOverlay(image=url, bounds=bnds, opacity=1.0, interactive=False,
                                              cross_origin=False, zindex=1, class_name=css).add_to(fg)
            all_bounds.append(bnds)
            grad = "linear-gradient(to right, rgba(255,255,178,.3), #fd8d3c, #bd0026)"
            unit = f" {L.data.units}" if L.data.units else ""
            legend_entries.append((L.name, css, [(f"{vmin:g} - {vmax:.3g}{unit}", grad)],
                                   f"{L.data.name}; top colour = "
                                   + ("99th percentile" if surface_max is None else "--surface-max")
                                   + " and above; below 2% of it transparent"))
            info.layers.append({"name": L.name, "kind": L.kind, "css_class": css, "drawn": 1, "total": 1,
                                "renderer": "image"})
            continue
        gdf = L.data if L.data.crs is not None else L.data.set_crs(BNG)
        total = len(gdf)
        note = ""
        if L.kind in ("cells", "gistar"):
            vc = value_column(gdf)
            if vc is not None and L.kind == "cells":
                zero = ~(pd.to_numeric(gdf[vc], errors="coerce").fillna(0) > 0)
                if zero.any():
                    note = f"{int(zero.sum()):,} cells with {vc} 0 not drawn"
                    gdf = gdf.loc[~zero]
            if len(gdf) > max_features:
                gdf, k = merge_cells(gdf, max_features)
                msg = (f"{L.name}: {total:,} cells exceed {max_features:,}; merged into squares {k}x the size "
                       "(values summed); use 'harmspot serve' tiles for full detail")
                info.choices.append(Choice("map cells", f"merged x{k}", msg))
                note = (note + "; " if note else "") + f"merged {k}x{k} (over {max_features:,} cells)"
        if len(gdf) == 0:
            legend_entries.append((L.name, css, [], note or "no features"))
            info.layers.append({"name": L.name, "kind": L.kind, "css_class": css, "drawn": 0, "total": total,
                                "renderer": "none"})
            continue
        vc = value_column(gdf) if L.kind == "cells" else None
        if vc is not None and breaks is None:
            auto = class_breaks(gdf[vc].to_numpy())
            keep = auto[:-1] if len(auto) > 1 else auto  # the top class is open ("over ...") when passed back
            info.choices.append(Choice(f"{L.name} classes", ",".join(repr(float(b)) for b in keep),
                                       f"quantile class bounds of {vc} (top class: the rest); --breaks with these "
                                       "gives the next map the same classes and colours"))
        colours, legend = feature_styles(gdf, L.kind, breaks=breaks if L.kind == "cells" else None)
        fc = feature_collection_json(gdf, L.kind, colours)
        canvas = len(gdf) > canvas_from
        opts = {"kind": L.kind, "css": css, "canvas": canvas, "period": period_label([L.meta]) or info.period,
                "value": value_column(gdf),
                "classcol": next((c for c in gdf.columns if "class" in str(c).lower()), None),
                "notsig": GISTAR_COLOURS["not"]}
        js = (_LAYER_JS.replace("%(data)s", fc).replace("%(opts)s", _js_json(opts))
              .replace("%(group)s", fg.get_name()).replace("%(map)s", m.get_name()))
        fg.add_child(_script_element(js))
        b = _wgs(gdf).total_bounds
        all_bounds.append([[b[1], b[0]], [b[3], b[2]]])
        if L.kind == "boundary":
            legend.append(("boundary", "#ffffff"))
        legend_entries.append((L.name, css, legend, note))
        info.layers.append({"name": L.name, "kind": L.kind, "css_class": css, "drawn": int(len(gdf)), "total": total,
                            "renderer": "canvas" if canvas else "svg"})
    if all_bounds:
        s = min(b[0][0] for b in all_bounds)
        w = min(b[0][1] for b in all_bounds)
        n = max(b[1][0] for b in all_bounds)
        e = max(b[1][1] for b in all_bounds)
        info.bounds = [[float(s), float(w)], [float(n), float(e)]]
        m.fit_bounds(info.bounds)
    folium.LayerControl(collapsed=False, position="topright").add_to(m)
    kinds = sorted({KIND_TITLES.get(L.kind, L.kind).lower() for L in layers if L.kind != "boundary"})
    ttl = title or ("harmspot: " + ", ".join(kinds) if kinds else "harmspot map")
    root = m.get_root()
    root.header.add_child(Element(f"<title>{_html.escape(ttl)}</title><style>{_CSS}</style>"), name="harmspot_css")
    root.html.add_child(Element(_title_html(ttl, info.period, choices + [c.message() for c in info.choices],
                                            marking)))
    root.html.add_child(Element(_legend_html(legend_entries)))
    # legend sections follow the layer control
    toggle = ("%s.on('overlayadd overlayremove', function(e){ document.querySelectorAll('.hs-legend-item')"
              ".forEach(function(d){ if(d.dataset.layer===e.name) d.style.display = e.type==='overlayadd'?'':'none'; });});"
              % m.get_name())
    hidden = [L.name for L in layers if not L.show]
    toggle += "".join(
        "document.querySelectorAll('.hs-legend-item').forEach(function(d){ if(d.dataset.layer===%s) d.style.display='none'; });"
        % json.dumps(n) for n in hidden)
    m.add_child(_script_element(toggle))
    m.harmspot_info = info
    return m, info


def _js_json(obj) -> str:
    return json.dumps(obj, separators=(",", ":"), default=str).replace("</", "<\\/")


def _script_element(js: str):
    """A folium element whose script is ``js`` (passed as a value: Jinja never parses the data)."""
    from branca.element import MacroElement
    from jinja2 import Template

    class _Script(MacroElement):
        _template = Template("{% macro script(this, kwargs) %}{{ this.js }}{% endmacro %}")

        def __init__(self, code):
            super().__init__()
            self._name = "HarmspotScript"
            self.js = code

    return _Script(js)


# ============================================================================ saving
def offline_assets() -> dict:
    """URL -> file content for the CDN files folium links, from the ``folium-offline`` package.

    ``$HARMSPOT_LEAFLET_DIR`` (a folder holding ``leaflet.js`` and ``leaflet.css``, e.g. the
    ``package/dist`` folder of ``npm pack leaflet@1.9.3``) overrides the two Leaflet files, and
    is enough on its own when folium-offline is not installed.
    """
    import os

    res = {}
    try:
        from offlinefolium import elements as _el

        res.update(_el._res)
    except ImportError:
        pass
    d = os.environ.get("HARMSPOT_LEAFLET_DIR")
    if d:
        for url, name in ((LEAFLET_JS, "leaflet.js"), (LEAFLET_CSS, "leaflet.css")):
            f = Path(d) / name
            if not f.exists():
                raise OfflineError(f"$HARMSPOT_LEAFLET_DIR={d}: no {name} there")
            res[url] = f.read_text(encoding="utf-8")
    if LEAFLET_JS not in res:
        raise OfflineError(
            "offline maps need Leaflet's files: pip install folium-offline (PyPI), or set $HARMSPOT_LEAFLET_DIR "
            "to a folder with leaflet.js and leaflet.css (npm pack leaflet@1.9.3), or use --cdn")
    return res


_SCRIPT_SRC = re.compile(r'<script\s+src="(https?://[^"]+)"\s*>\s*</script>')
_CSS_LINK = re.compile(r'<link\s+rel="stylesheet"\s+href="(https?://[^"]+)"\s*/?>')
_REMOTE = re.compile(r'(?:src|href)\s*=\s*["\'](?:https?:)?//[^"\']+["\']|url\(\s*["\']?(?:https?:)?//', re.I)


def inline_assets(html: str) -> str:
    """Replace CDN ``<script src>`` / stylesheet ``<link>`` tags by the files' contents."""
    res = offline_assets()

    def js(mo):
        url = mo.group(1)
        if url not in res:
            raise OfflineError(f"offline map: no local copy of {url} in folium-offline")
        return "<script>" + res[url].replace("</script", "<\\/script") + "</script>"

    def css(mo):
        url = mo.group(1)
        if url not in res:
            raise OfflineError(f"offline map: no local copy of {url} in folium-offline")
        return "<style>" + res[url] + "</style>"

    html = _SCRIPT_SRC.sub(js, html)
    return _CSS_LINK.sub(css, html)


def remote_references(html: str, allow: tuple[str, ...] = ()) -> list[str]:
    """Remote script/style/image references left in a page (links ``<a href>`` are not requests)."""
    out = []
    for tag in re.finditer(r"<(script|link|img|iframe|source|style)\b[^>]*>", html, re.I):
        for mo in _REMOTE.finditer(tag.group(0)):
            out.append(mo.group(0))
    for mo in re.finditer(r"<style>(.*?)</style>", html, re.S | re.I):
        out += [u.group(0) for u in re.finditer(r"url\(\s*[\"']?(?:https?:)?//[^)]*\)", mo.group(1))]
    return [u for u in out if not any(a in u for a in allow)]


def save_map(m, path, *, offline: bool = True) -> Path:
    """Write the map as one HTML file; offline: all scripts and styles inlined, checked."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    html = m.get_root().render()
    if offline:
        html = inline_assets(html)
        left = remote_references(html)
        if left:
            raise OfflineError(f"{p}: the offline page would still load {len(left)} remote file(s), first: {left[0]}")
    p.write_text(html, encoding="utf-8")
    return p


def make_map(paths, out, *, title=None, marking=DEFAULT_MARKING, tiles=None, offline=True, boundary=None,
             max_features=MAX_FEATURES, breaks=None, surface_max=None) -> tuple[Path, MapInfo]:
    """``harmspot map``: layer files -> one HTML map. Returns the path and :class:`MapInfo`."""
    layers = load_map_layers(paths)
    m, info = build_map(layers, title=title, marking=marking, tiles=tiles, boundary=boundary,
                        max_features=max_features, breaks=breaks, surface_max=surface_max)
    return save_map(m, out, offline=offline), info


# ============================================================================ headless check
def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary ($HARMSPOT_CHROMIUM, chromium, chromium-browser, google-chrome)."""
    import os
    import shutil

    env = os.environ.get("HARMSPOT_CHROMIUM")
    if env:
        return env
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        p = shutil.which(name)
        if p:
            return p
    return None


CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
                  "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
                  "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider",
                  "--metrics-recording-only", "--password-store=basic", "--use-mock-keychain"]
_LOCAL = ("file:", "data:", "blob:", "about:", "chrome:", "chrome-extension:", "devtools:")


def browser_check(html_path, *, screenshot=None, width: int = 1280, height: int = 900, settle_ms: int = 500,
                  timeout: float = 90.0, block_network: bool = True, evaluate: dict | None = None) -> dict:
    """Open a map in headless Chromium through the DevTools protocol and report what drew.

    Returns ``{"load_ms", "drawn_ms", "requests", "external", "counts", "harmspot", "errors",
    "title", "marking", "heading", "paths", "js_heap_mb", "nodes"}``: every URL the page requested (``Network.requestWillBeSent``), those that are not
    local (``file:``/``data:``/``blob:``), per layer CSS class the number of SVG paths, image
    overlays and rank labels (shared labels count once) in the rendered DOM, the page's own per-layer feature counts
    (``window.harmspot``) and JavaScript exceptions. ``block_network`` also points Chromium at
    a dead proxy so a stray request fails instead of leaving the machine (it is still reported).
    ``evaluate`` ({name: JS expression}) adds the expressions' values under ``"evaluated"``
    (run after the screenshot; ``window.harmspotLayers[css_class]`` is each Leaflet layer).
    Needs a Chromium binary and the ``websocket-client`` package.
    """
    import shutil
    import subprocess
    import tempfile
    import time
    import urllib.request

    try:
        import websocket
    except ImportError as exc:  # pragma: no cover
        raise HarmspotError("browser_check needs the 'websocket-client' package (pip install websocket-client)") from exc
    exe = find_chromium()
    if exe is None:
        raise HarmspotError("no Chromium found (apt-get install chromium, or set $HARMSPOT_CHROMIUM)")
    url = Path(html_path).resolve().as_uri()
    prof = tempfile.mkdtemp(prefix="harmspot-chromium-")
    args = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={prof}", "--remote-debugging-port=0",
            f"--window-size={width},{height}"]
    if block_network:
        args += ["--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>"]
    args.append("about:blank")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ws = None
    try:
        port_file = Path(prof) / "DevToolsActivePort"
        t0 = time.time()
        while not port_file.exists() or not port_file.read_text().strip():
            if proc.poll() is not None:
                raise HarmspotError(f"Chromium exited with code {proc.returncode} before opening DevTools")
            if time.time() - t0 > timeout:
                raise HarmspotError("Chromium did not open its DevTools port in time")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = []
        while not any(t.get("type") == "page" for t in targets):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                targets = json.loads(r.read())
            if time.time() - t0 > timeout:
                raise HarmspotError("Chromium opened no page target")
            time.sleep(0.1)
        page = next(t for t in targets if t.get("type") == "page")
        ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=timeout, suppress_origin=True)
        state = {"id": 0, "events": []}

        def call(method, **params):
            state["id"] += 1
            mid = state["id"]
            ws.send(json.dumps({"id": mid, "method": method, "params": params}))
            while True:
                msg = json.loads(ws.recv())
                if msg.get("id") == mid:
                    if "error" in msg:
                        raise HarmspotError(f"DevTools {method}: {msg['error']}")
                    return msg.get("result", {})
                state["events"].append(msg)

        def wait_event(name, deadline):
            while time.time() < deadline:
                for i, ev in enumerate(state["events"]):
                    if ev.get("method") == name:
                        return state["events"].pop(i)
                ws.settimeout(max(0.05, deadline - time.time()))
                try:
                    state["events"].append(json.loads(ws.recv()))
                except websocket.WebSocketTimeoutException:
                    break
            return None

        call("Network.enable")
        call("Page.enable")
        call("Runtime.enable")
        call("Performance.enable")
        call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        t_nav = time.perf_counter()
        call("Page.navigate", url=url)
        ev = wait_event("Page.loadEventFired", time.time() + timeout)
        load_ms = (time.perf_counter() - t_nav) * 1000
        if ev is None:
            raise HarmspotError(f"{html_path}: the page did not finish loading within {timeout:.0f} s")
        probe = ("(function(){var out={};document.querySelectorAll('[class*=\"hs-\"]').forEach(function(e){"
                 "var cs=(e.getAttribute('class')||'').split(/\\s+/);cs.forEach(function(c){if(c.indexOf('hs-')!==0)return;"
                 "var k=c+':'+e.tagName.toLowerCase();out[k]=(out[k]||0)+1;});});"
                 "return JSON.stringify({counts:out,harmspot:window.harmspot||null,title:document.title,"
                 "paths:document.querySelectorAll('path.leaflet-interactive').length,"
                 "marking:(document.querySelector('.hs-marking')||{}).textContent||null,"
                 "heading:(document.querySelector('.hs-title h1')||{}).textContent||null});})()")
        # wait until the page's own script has run and the paths are in the DOM
        deadline = time.time() + min(timeout, 15.0)
        while time.time() < deadline:
            r = call("Runtime.evaluate", expression=probe, returnByValue=True)
            if json.loads(r["result"]["value"])["harmspot"] is not None:
                break
            time.sleep(0.1)
        time.sleep(settle_ms / 1000)
        r = call("Runtime.evaluate", expression=probe, returnByValue=True)
        res = json.loads(r["result"]["value"])
        drawn_ms = (time.perf_counter() - t_nav) * 1000
        metrics = {m["name"]: m["value"] for m in call("Performance.getMetrics").get("metrics", [])}
        if screenshot:
            shot = call("Page.captureScreenshot", format="png")
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
        evaluated = {}
        for name, expr in (evaluate or {}).items():
            r = call("Runtime.evaluate", expression=expr, returnByValue=True)
            evaluated[name] = r.get("result", {}).get("value", r.get("exceptionDetails", {}).get("text"))
        # drain pending events
        ws.settimeout(0.2)
        try:
            while True:
                state["events"].append(json.loads(ws.recv()))
        except Exception:  # noqa: BLE001 - timeout ends the drain
            pass
        requests = [e["params"]["request"]["url"] for e in state["events"]
                    if e.get("method") == "Network.requestWillBeSent"]
        errors = [e["params"]["exceptionDetails"].get("exception", {}).get("description")
                  or e["params"]["exceptionDetails"].get("text") for e in state["events"]
                  if e.get("method") == "Runtime.exceptionThrown"]
        try:
            call("Browser.close")
        except Exception:  # noqa: BLE001 - the browser may close the socket first
            pass
        return {"load_ms": load_ms, "drawn_ms": drawn_ms, "requests": requests,
                "external": [u for u in requests if not u.startswith(_LOCAL)], "counts": res["counts"],
                "harmspot": res["harmspot"], "errors": errors, "title": res["title"], "marking": res["marking"],
                "heading": res["heading"], "paths": res["paths"],
                "js_heap_mb": metrics.get("JSHeapUsedSize", 0) / 2**20, "nodes": metrics.get("Nodes"),
                "evaluated": evaluated}
    finally:
        if ws is not None:
            try:
                ws.close()
            except Exception:  # noqa: BLE001
                pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(prof, ignore_errors=True)
