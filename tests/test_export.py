"""Exports reopen in the readers GIS use (pyogrio, rasterio, xml.etree) with the same features.

Inputs are SYNTHETIC: the seeded town of ``geo.synth.town.make_town(42)`` counted per 150 m square,
a harm-spot-like layer built from its top cells, and a planted Gaussian surface.
The reference for every check is the input itself (feature count, CRS, attribute values
read back by an independent reader); float tolerance 1e-6 relative unless stated.
"""
from __future__ import annotations

import json
import zipfile
from xml.etree import ElementTree as ET

import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
from affine import Affine

from geo import BNG
from geo.core.result import AnalysisResult, Raster
from maps import export as ex

KML = "{http://www.opengis.net/kml/2.2}"


# ------------------------------------------------------------------------------------ fixtures
def _town_cells(town, tmp):
    from geo.units.counts import count_units
    from geo.core.incidents.force import read_table
    from geo.units.lattice import SquareGrid

    exp, mapping = town.force_export()
    csv = tmp / "force_export.csv"
    exp.drop(columns="expected_reason").to_csv(csv, index=False)
    inc = read_table(csv, mapping, boundary=town.boundary).accepted
    return count_units(inc, SquareGrid(150.0), area=town.boundary)


def _spots(cells: AnalysisResult, n=12):
    """A harm-spot layer shaped like geo.grip.spots.select_spots' output (synthetic, from the top cells)."""
    lay = cells.layer.sort_values("harm", ascending=False).head(n).reset_index(drop=True)
    out = lay[["cell_id", "count", "harm", "geometry"]].copy()
    out.insert(0, "spot_id", [f"HS{i + 1:02d}" for i in range(len(out))])
    out["town"] = np.where(np.arange(len(out)) % 3 == 0, "Little Wexley", "Harmstead")
    out["rank"] = np.arange(1, len(out) + 1)
    out["share_harm"] = out["harm"] / cells.layer["harm"].sum()
    out["location"] = [f"On or near High Street {i}" for i in range(len(out))]
    out["trend"] = "up"
    out["status"] = "new"
    out["target_minutes"] = 15
    return out


@pytest.fixture(scope="session")
def cells_result(town, tmp_path_factory):
    return _town_cells(town, tmp_path_factory.mktemp("cells"))


@pytest.fixture(scope="session")
def spots(cells_result):
    return _spots(cells_result)


@pytest.fixture(scope="session")
def surface():
    """A planted Gaussian bump on a 40 x 60 grid of 50 m cells (north-up)."""
    yy, xx = np.mgrid[0:40, 0:60]
    arr = np.exp(-((xx - 30) ** 2 + (yy - 20) ** 2) / 80.0)
    return Raster(arr, Affine(50, 0, 561_000, 0, -50, 216_000), name="density", units="incidents per km2")


@pytest.fixture(scope="session")
def cells_gpkg(cells_result, tmp_path_factory):
    p = tmp_path_factory.mktemp("out") / "cells.gpkg"
    ex.write_result(cells_result, p)
    return p


# ------------------------------------------------------------------------------------ vector formats
@pytest.mark.parametrize("fmt", ["gpkg", "geojson", "shp", "csv", "kml", "kmz"])
def test_export_keeps_every_feature(fmt, cells_gpkg, cells_result, tmp_path):
    out = tmp_path / f"cells{ex.EXPORT_FORMATS[fmt]}"
    p, n = ex.export_file(cells_gpkg, fmt, out)
    assert n == len(cells_result.layer)
    if fmt == "csv":
        df = pd.read_csv(p)
        assert len(df) == n
        assert {"cell_id", "count", "harm", "easting", "northing", "longitude", "latitude"} <= set(df.columns)
        # centroid of a 150 m BNG square lies 75 m inside its south-west corner
        assert np.all((df["easting"] - 75) % 150 < 1e-6)
        assert df["longitude"].between(-8, 2).all() and df["latitude"].between(49, 61).all()
        return
    if fmt in ("kml", "kmz"):
        if fmt == "kmz":
            with zipfile.ZipFile(p) as z:
                assert z.namelist() == ["doc.kml"]
                root = ET.fromstring(z.read("doc.kml"))
        else:
            root = ET.parse(p).getroot()
        pms = root.findall(f".//{KML}Placemark")
        assert len(pms) == n
        names = [pm.findtext(f"{KML}name") for pm in pms]
        assert names == cells_result.layer["cell_id"].tolist()
        d0 = pms[0].findtext(f"{KML}description")
        assert "harm" in d0 and "<table>" in d0
        data = {d.get("name"): d.findtext(f"{KML}value") for d in pms[0].iter(f"{KML}Data")}
        assert int(data["count"]) == int(cells_result.layer["count"].iloc[0])
        coords = pms[0].findtext(f".//{KML}coordinates").split()
        lon, lat = map(float, coords[0].split(","))
        assert -8 < lon < 2 and 49 < lat < 61  # WGS84 lon,lat order
        return
    src = f"/vsizip/{p}" if fmt == "shp" else p
    info = pyogrio.read_info(src)
    assert info["features"] == n
    crs = info["crs"]
    if fmt == "geojson":
        assert crs == "EPSG:4326"  # RFC 7946
    else:
        assert crs == "EPSG:27700"
    back = pyogrio.read_dataframe(src)
    np.testing.assert_allclose(np.sort(back["harm"].to_numpy()), np.sort(cells_result.layer["harm"].to_numpy()),
                               rtol=1e-6)
    if fmt == "shp":
        with zipfile.ZipFile(p) as z:
            names = set(z.namelist())
            assert {"fields.csv"} <= names and any(x.endswith(".prj") for x in names)


def test_geojson_is_rfc7946_wgs84(cells_gpkg, tmp_path):
    p, n = ex.export_file(cells_gpkg, "geojson", tmp_path / "c.geojson")
    doc = json.loads(p.read_text())
    assert "crs" not in doc  # RFC 7946 forbids a crs member
    x, y = doc["features"][0]["geometry"]["coordinates"][0][0]
    assert -8 < x < 2 and 49 < y < 61
    assert len(doc["features"]) == n


def test_spots_kml_names_and_styles(spots, tmp_path):
    p = ex.write_kml(spots, tmp_path / "spots.kml", meta={"kind": "grip spots", "period": {"start": "2025-01-01",
                                                                                           "end": "2025-06-30"}},
                     marking="OFFICIAL-SENSITIVE")
    root = ET.parse(p).getroot()
    pms = root.findall(f".//{KML}Placemark")
    assert len(pms) == len(spots)
    # ranks restart per town, so with two towns the town leads the name
    assert pms[0].findtext(f"{KML}name") == "Little Wexley #1 On or near High Street 0"
    styles = {s.get("id") for s in root.iter(f"{KML}Style")}
    assert {pm.findtext(f"{KML}styleUrl").lstrip("#") for pm in pms} <= styles
    doc_desc = root.find(f"{KML}Document").findtext(f"{KML}description")
    assert "OFFICIAL-SENSITIVE" in doc_desc and "2025-01-01" in doc_desc
    # rank 1-3 share the darkest style, rank 11+ another one
    assert pms[0].findtext(f"{KML}styleUrl") == pms[2].findtext(f"{KML}styleUrl") != pms[11].findtext(f"{KML}styleUrl")


def test_shapefile_field_mapping_documented(spots, tmp_path):
    m = ex.shapefile_field_names(list(spots.columns.drop("geometry")) + ["count_Violence and sexual offences",
                                                                         "count_Violence and other"])
    assert m["target_minutes"] == "target_min"  # from SHP_FIELD_NAMES
    assert m["share_harm"] == "share_harm"  # 10 characters: kept
    assert all(len(v) <= 10 for v in m.values())
    assert len({v.lower() for v in m.values()}) == len(m)  # unique
    assert m["count_Violence and sexual offences"] == "count_Viol"
    assert m["count_Violence and other"] == "count_Vi_2"
    p = ex.write_shapefile_zip(spots, tmp_path / "spots.zip")
    back = pyogrio.read_dataframe(f"/vsizip/{p}")
    assert "target_min" in back.columns and len(back) == len(spots)
    with zipfile.ZipFile(p) as z:
        rows = pd.read_csv(z.open("fields.csv"))
    assert dict(zip(rows["attribute"], rows["shapefile_field"]))["target_minutes"] == "target_min"


def test_geopackage_several_layers(spots, cells_result, town, tmp_path):
    plan = pd.DataFrame({"spot_id": spots["spot_id"], "minutes": 15, "windows": [["Fri 22-02", "Sat 22-02"]] * len(spots)})
    p = ex.write_geopackage({"harm_spots": spots, "cells": cells_result.layer, "towns": town.towns},
                            tmp_path / "pack.gpkg", tables={"plan": plan})
    layers = dict(pyogrio.list_layers(p))
    assert set(layers) == {"harm_spots", "cells", "towns", "plan"}
    assert layers["plan"] is None  # attribute-only table
    for name, ref in [("harm_spots", spots), ("cells", cells_result.layer), ("towns", town.towns)]:
        info = pyogrio.read_info(p, layer=name)
        assert info["features"] == len(ref) and info["crs"] == "EPSG:27700"
    back = pyogrio.read_dataframe(p, layer="plan")
    assert back["windows"].iloc[0] == "Fri 22-02, Sat 22-02"
    # gpkg -> gpkg export keeps all layers
    p2, n = ex.export_file(p, "gpkg", tmp_path / "copy.gpkg", layer="harm_spots")
    assert n == len(spots)
    assert {"harm_spots", "cells", "towns"} <= {x for x, _ in pyogrio.list_layers(p2)}


# ------------------------------------------------------------------------------------ rasters
def test_cog_roundtrip(surface, tmp_path):
    res = AnalysisResult(kind="kde", layer=surface, params={"bandwidth": 250})
    src = ex.write_result(res, tmp_path / "kde.tif")
    p, n = ex.export_file(src, "tif", tmp_path / "kde_cog.tif")
    assert n == 1
    with rasterio.open(p) as r:
        assert r.crs.to_epsg() == 27700
        assert r.shape == surface.shape
        assert r.transform == surface.transform
        np.testing.assert_allclose(r.read(1), surface.array, rtol=1e-6)
        assert r.profile.get("tiled")
        assert json.loads(r.tags()["harmspot"])["params"]["bandwidth"] == 250
        assert r.descriptions[0] == "density"
    # GDAL's COG layout check: LAYOUT=COG in the IMAGE_STRUCTURE domain
    with rasterio.open(p) as r:
        assert r.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"


def test_raster_refuses_vector_format(surface, tmp_path):
    with pytest.raises(ex.ExportError, match="exports only as --format tif"):
        ex.export_layer(surface, tmp_path / "x.kml", "kml")


def test_vector_refuses_tif(cells_gpkg, tmp_path):
    with pytest.raises(ex.ExportError, match="tif is for surfaces"):
        ex.export_file(cells_gpkg, "tif", tmp_path / "x.tif")


def test_unknown_format_and_missing_file(cells_gpkg, tmp_path):
    with pytest.raises(ex.ExportError, match="--format 'pdf'"):
        ex.export_file(cells_gpkg, "pdf", tmp_path / "x.pdf")
    with pytest.raises(ex.ExportError, match="no such file"):
        ex.read_layer(tmp_path / "nope.gpkg")


def test_corrupt_file_named(tmp_path):
    bad = tmp_path / "broken.gpkg"
    bad.write_bytes(b"this is not a GeoPackage")
    with pytest.raises(ex.ExportError, match="broken.gpkg: cannot be read as a layer"):
        ex.read_layer(bad)


def test_csv_roundtrip_names_bad_row(tmp_path):
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"easting": [561000.0, None], "northing": [215000.0, 215100.0]}).to_csv(bad, index=False)
    with pytest.raises(ex.ExportError, match="1 row\\(s\\) have no coordinates; first at data row 2"):
        ex.read_layer(bad)


def test_sidecar_meta_read_back(cells_gpkg):
    lf = ex.read_layer(cells_gpkg)
    assert lf.meta["kind"] == "cells" and lf.kind == "cells"
    assert str(lf.data.crs) == BNG


def test_class_breaks_quantiles():
    # 100 values 1..100: quintile upper bounds are 20.8, 40.6, 60.4, 80.2, 100 (numpy linear quantile)
    b = ex.class_breaks(np.r_[np.zeros(50), np.arange(1, 101)])
    np.testing.assert_allclose(b, [20.8, 40.6, 60.4, 80.2, 100.0])
    assert ex.classify([0, 1, 20.8, 21, 100], b).tolist() == [-1, 0, 0, 1, 4]
