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

import html as _html
import json
import re
from pathlib import Path

import pandas as pd

from geo import BNG
from geo.core.errors import HarmspotError
from geo.core.result import Choice, Raster
from maps.export.style import GISTAR_COLOURS, class_breaks, feature_styles
from maps.export.read import value_column
from maps.webmap.layers import CANVAS_FROM, DEFAULT_MARKING, KIND_TITLES, MAX_FEATURES, MapInfo, MapLayer, _wgs, feature_collection_json, load_map_layers, merge_cells, period_label, periods_text, surface_image
from maps.webmap.assets import LEAFLET_CSS, LEAFLET_JS, OfflineError, inline_assets, remote_references


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
