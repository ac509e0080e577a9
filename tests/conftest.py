"""Shared fixtures.

Real-data tests need ``../shared/data`` (beside the clone). Where it is absent they
skip with a reason, except under CI (``CI=true``) where a missing fixture is a
failure (geopandas' rule, ../shared/STYLE.md point 12).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HARMSPOT_SHARED", ROOT.parent / "shared" / "data"))


def _need(path: Path) -> Path:
    if not path.exists():
        msg = f"real-data fixture {path} is absent (../shared/data is not beside this clone)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + " - under CI it must be there")
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def shared() -> Path:
    """The ../shared/data folder (skip when absent, fail under CI)."""
    return _need(SHARED)


@pytest.fixture(scope="session")
def essex_street(shared) -> Path:
    return _need(shared / "crime" / "essex_street")


@pytest.fixture(scope="session")
def essex_lad(shared) -> Path:
    return _need(shared / "boundaries" / "essex_lad_2013.geojson.gz")


@pytest.fixture(scope="session")
def essex_boundary(essex_lad):
    import warnings

    from data.boundaries import load_boundary

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_boundary(essex_lad, "LAD13NM")


@pytest.fixture(scope="session")
def essex_ingest(essex_street, essex_boundary):
    """All 12 Essex months read once with the Essex boundary (an IngestResult)."""
    from geo.core.incidents.police_uk import read_police_uk

    return read_police_uk(essex_street, boundary=essex_boundary)


@pytest.fixture(scope="session")
def essex_store(tmp_path_factory, essex_ingest, essex_boundary):
    """A DuckDB store with all Essex months loaded (session-wide; treat as read-only)."""
    from services.store.duckdb_store import DuckDBStore

    p = tmp_path_factory.mktemp("essex") / "essex.duckdb"
    st = DuckDBStore(p)
    st.set_study_area(essex_boundary, "essex_lad_2013")
    st.add_ingest(essex_ingest)
    yield st
    st.close()


@pytest.fixture(scope="session")
def town():
    """The seeded synthetic town (seed 42) used across tests as planted truth."""
    from geo.synth.town import make_town

    return make_town(42)


@pytest.fixture()
def town_store(tmp_path, town):
    """A fresh store holding the synthetic town's force export (times, flags, codes)."""
    from geo.core.incidents.force import read_table
    from services.store.duckdb_store import DuckDBStore

    export, mapping = town.force_export()
    csv = tmp_path / "force_export.csv"
    export.drop(columns="expected_reason").to_csv(csv, index=False)
    res = read_table(csv, mapping, boundary=town.boundary)
    st = DuckDBStore(tmp_path / "town.duckdb")
    st.set_study_area(town.boundary, "district")
    st.add_ingest(res)
    yield st
    st.close()
