"""``harmspot serve`` and ``harmspot keys create|revoke|list``.

With the DuckDB store one process owns the file: create keys *before* starting
the server (or stop it first). With a PostGIS store keys can be managed while the
server runs (a revoked key stops working within HARMSPOT_KEY_CACHE_SECONDS).
"""
from __future__ import annotations

from typing import Optional

import typer

from services.ui import STORE_HELP


keys_app = typer.Typer(help="Create, revoke and list API keys (only their hashes are stored).",
                       no_args_is_help=True)


def _open(store: Optional[str]):
    from services.cli import open_cli_store

    try:
        return open_cli_store(store)
    except Exception as exc:  # DuckDB raises IOException when another process holds the file
        from geo.core.errors import HarmspotError

        if "lock" in str(exc).lower():
            raise HarmspotError(f"store {store}: another process (a running 'harmspot serve'?) holds the DuckDB "
                                "file; stop it, manage keys, then start it again") from None
        raise


@keys_app.command("create", epilog="Example: harmspot keys create --store force.duckdb --role viewer --label tasking")
def keys_create(
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
    role: str = typer.Option(..., "--role", help="viewer | analyst | admin | partner"),
    label: str = typer.Option("", "--label", help="Who or what the key is for (shown in 'keys list')."),
):
    """Create an API key. The key is printed ONCE, alone on the last line; only its hash is stored."""
    from services.auth import new_key
    from services.ui import console

    key_id, key, digest = new_key(role)
    with _open(store) as st:
        st.add_key(key_id, digest, role, label)
    console.print(f"created {role} key {key_id}{f' ({label})' if label else ''}; it is shown once, keep it safe:")
    print(key, flush=True)


@keys_app.command("revoke", epilog="Example: harmspot keys revoke --store force.duckdb 3fa9c1")
def keys_revoke(
    key: str = typer.Argument(..., help="Key id, its first characters (at least 4), or the full key."),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
):
    """Revoke an API key by id or id prefix."""
    from geo.core.errors import HarmspotError
    from services.ui import console

    with _open(store) as st:
        ids = st.revoke_key(key)
    if not ids:
        raise HarmspotError(f"key {key!r}: no active key with that id or prefix ('harmspot keys list' shows them)")
    console.print(f"revoked key {ids[0]}")


@keys_app.command("list", epilog="Example: harmspot keys list --store force.duckdb")
def keys_list(store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP)):
    """List key ids, roles, labels, creation and revocation times (never the keys)."""
    from rich.table import Table

    from services.ui import console

    with _open(store) as st:
        rows = st.list_keys()
    t = Table(title="API keys")
    for c in ("key_id", "role", "label", "created", "revoked"):
        t.add_column(c)
    for r in rows:
        t.add_row(*(str(r.get(c) or "") for c in ("key_id", "role", "label", "created", "revoked")))
    console.print(t)


def serve(
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn log level."),
):
    """Serve layers, tiles and runs over HTTP (FastAPI; OpenAPI docs at /docs). Limits: HARMSPOT_* settings."""
    import uvicorn

    from services.api import create_app
    from services.settings import Settings
    from services.store.base import resolve_store_path
    from services.ui import console

    path, auto = resolve_store_path(store)
    if auto:
        console.print(f"[cyan]i[/] store set to {path} automatically (no --store and no $HARMSPOT_STORE)")
    settings = Settings(store=path, host=host, port=port)
    app = create_app(settings)
    import re

    shown = re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", str(path))  # never print a database password
    console.print(f"harmspot serving {shown} on http://{host}:{port} (docs at /docs; partner k={settings.partner_k})")
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)


def register(app) -> None:
    """Add ``serve`` and the ``keys`` sub-app to the harmspot Typer app."""
    app.command("serve", epilog="Example: harmspot serve --store force.duckdb --host 127.0.0.1 --port 8000")(serve)
    app.add_typer(keys_app, name="keys")


def demo_step(ctx) -> None:
    """The API in-process on the demo store: keys per role, a cells run, the partner's suppressed view."""
    import json
    import time

    from fastapi.testclient import TestClient

    from services.api import create_app
    from services.auth import new_key
    from services.settings import Settings
    from services.store.duckdb_store import DuckDBStore

    st = DuckDBStore(ctx.store_path)
    keys = {}
    for role in ("analyst", "partner", "viewer"):
        kid, key, digest = new_key(role)
        st.add_key(kid, digest, role, "demo")
        keys[role] = key
    try:
        app = create_app(Settings(store=str(ctx.store_path)), store=st)
        with TestClient(app) as c:
            run = c.post("/runs/cells", headers={"X-API-Key": keys["analyst"]}, json={"cell": 250}).json()
            t0 = time.time()
            while run["status"] not in ("done", "failed") and time.time() - t0 < 60:
                time.sleep(0.2)
                run = c.get(f"/runs/{run['run_id']}", headers={"X-API-Key": keys["analyst"]}).json()
            if run["status"] != "done":
                from geo.core.errors import HarmspotError

                raise HarmspotError(f"demo API run failed: {run.get('error')}")
            lid = run["layer_ids"][0]
            partner = c.get(f"/layers/{lid}", headers={"X-API-Key": keys["partner"]}).content
            out = ctx.out / "api_cells_partner.geojson"
            out.write_bytes(partner)
            fc = json.loads(partner)
            n_sup = sum(1 for f in fc["features"] if f["properties"].get("suppressed"))
            denied = c.post("/runs/cells", headers={"X-API-Key": keys["viewer"]}, json={}).status_code
        from services.ui import console

        console.print(f"  API: run {run['run_id'][:8]} done; partner view has {n_sup:,} of {len(fc['features']):,} "
                      f"cells suppressed (count < {fc['suppression']['k']}); a viewer posting a run gets {denied}")
        ctx.add("API partner view of a cells run (GeoJSON, suppressed cells)", out)
    finally:
        st.close()
