"""Offline maps: the JavaScript and CSS a folium map needs, inlined from the installed packages so the
map opens with no network, and a check that no remote reference is left.
"""
from __future__ import annotations

import re
from pathlib import Path


from geo.core.errors import HarmspotError


LEAFLET_JS = "https://cdn.jsdelivr.net/npm/leaflet@1.9.3/dist/leaflet.js"
LEAFLET_CSS = "https://cdn.jsdelivr.net/npm/leaflet@1.9.3/dist/leaflet.css"


class OfflineError(HarmspotError):
    """An offline map would need the network (an asset is missing or a remote URL is left)."""


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
