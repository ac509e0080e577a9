"""Restart during a run: the interrupted run is marked failed with a reason; finished runs stay readable.

A real ``harmspot serve`` process is killed (SIGKILL, no clean shutdown) while a run is
``running`` (held there by ``HARMSPOT_RUN_DELAY_SECONDS``, a test aid), then started
again on the same store. Data is SYNTHETIC (seeded town). Both stores are checked.
"""
from __future__ import annotations

import time

import httpx
import pytest
from test_api import free_port, make_keys, new_pg_database, populate, postgis_url  # noqa: F401
from test_api_roles import start_server, stop_server


def _wait(c, run_id, h, states, timeout=60):
    t0 = time.time()
    while time.time() - t0 < timeout:
        r = c.get(f"/runs/{run_id}", headers=h).json()
        if r["status"] in states:
            return r
        time.sleep(0.1)
    raise TimeoutError(f"run {run_id} not in {states}: {r}")


@pytest.mark.parametrize("backend", ["duckdb", "postgis"])
def test_restart_marks_interrupted_runs_failed_and_keeps_finished_ones(backend, tmp_path, town, request):
    if backend == "duckdb":
        from services.store.duckdb_store import DuckDBStore

        url = str(tmp_path / "restart.duckdb")
        st = DuckDBStore(url)
    else:
        from services.store.postgis_store import PostGISStore

        url = new_pg_database(request.getfixturevalue("postgis_url"))
        st = PostGISStore(url)
    populate(st, town, tmp_path)
    key = make_keys(st)["analyst"]
    st.close()
    h = {"X-API-Key": key}

    port = free_port()
    proc = start_server(url, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            done = c.post("/runs/cells", headers=h, json={"cell": 300}).json()
            done = _wait(c, done["run_id"], h, ("done", "failed"))
            assert done["status"] == "done"
            before = c.get(f"/layers/{done['layer_ids'][0]}", headers=h).json()
    finally:
        stop_server(proc)

    proc = start_server(url, port, {"HARMSPOT_RUN_DELAY_SECONDS": "120"})
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            doomed = c.post("/runs/cells", headers=h, json={"cell": 200}).json()
            assert _wait(c, doomed["run_id"], h, ("running",))["status"] == "running"
    finally:
        proc.kill()  # SIGKILL: no shutdown handler runs
        proc.wait()

    proc = start_server(url, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            r = c.get(f"/runs/{doomed['run_id']}", headers=h).json()
            assert r["status"] == "failed"
            assert "interrupted" in r["error"] and "submit it again" in r["error"]
            assert r["layer_ids"] is None
            again = c.get(f"/runs/{done['run_id']}", headers=h).json()
            assert again["status"] == "done" and again["layer_ids"] == done["layer_ids"]
            after = c.get(f"/layers/{done['layer_ids'][0]}", headers=h).json()
            assert after == before
            # nothing half-written from the killed run: only the finished run's layer belongs to a run
            run_layers = [x for x in c.get("/layers", headers=h).json()["layers"] if x["run_id"]]
            assert [x["id"] for x in run_layers] == done["layer_ids"]
    finally:
        stop_server(proc)
