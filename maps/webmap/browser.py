"""A headless Chromium for screenshots and checks of the offline map (``find_chromium``,
``browser_check``).
"""
from __future__ import annotations

import base64
import json
from pathlib import Path


from geo.core.errors import HarmspotError


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
