"""CLI: ``harmspot rtm`` - risk terrain modelling (RTMDx-style) with an optional
learned-risk comparison, a GeoTIFF risk surface, priority places and an HTML report.

Thin edge: read the factor files the user named, load incidents and the study
area from the store, call :func:`geo.rtm.model.risk_terrain` (and
:func:`geo.rtm.learned.compare_risk_models` with ``--compare``), echo every
automatic choice, write outputs. See docs/rtm.md.
"""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from services.ui import STORE_HELP

NA_VALUES = ["", "\\N", "NA", "N/A", "NULL", "null"]


class CVScheme(str, Enum):
    spatial = "spatial"
    random = "random"


def read_factor_file(name: str, path, area=None, where: dict | None = None, buffer_m: float = 0.0):
    """Read one factor file (CSV with lon/lat or easting/northing, or any vector file) into a FactorLayer.

    ``where`` keeps rows whose column equals a value (``{"business_type": "Pub"}``).
    Raises a HarmspotError naming the factor and the file when the file is missing,
    unreadable, empty, or has no point inside the study area.
    """
    import pandas as pd

    from geo.rtm.factors import FactorLayerError, factor_from_frame

    p = Path(path)
    if not p.exists():
        raise FactorLayerError(f"factor {name!r}: file {p} not found")
    suffixes = [s.lower() for s in p.suffixes]
    is_csv = ".csv" in suffixes or ".txt" in suffixes or ".tsv" in suffixes
    try:
        if is_csv:
            df = pd.read_csv(p, dtype=str, keep_default_na=False, na_values=NA_VALUES,
                             sep="\t" if ".tsv" in suffixes else ",")
        else:
            import geopandas as gpd

            src = f"/vsigzip/{p}" if suffixes and suffixes[-1] == ".gz" else str(p)
            df = gpd.read_file(src)
            if df.crs is None and len(df) and df.geometry.notna().any():
                raise FactorLayerError(f"factor {name!r} ({p}): the file has no CRS; save it with one "
                                       "(EPSG:27700 or EPSG:4326)")
    except FactorLayerError:
        raise
    except Exception as exc:  # pandas/pyogrio raise many kinds
        raise FactorLayerError(f"factor {name!r}: {p} cannot be read ({type(exc).__name__}: {exc})") from None
    for col, val in (where or {}).items():
        if col not in df.columns:
            raise FactorLayerError(f"factor {name!r} ({p}): --where column {col!r} not found; columns are "
                                   f"{list(df.columns)[:12]}")
        n0 = len(df)
        df = df[df[col].astype("string").str.strip() == val]
        if len(df) == 0:
            raise FactorLayerError(f"factor {name!r} ({p}): no row of {n0} has {col} == {val!r} (--where); the "
                                   "layer is empty")
    return factor_from_frame(name, df, str(p), area=area, buffer_m=buffer_m)


def _parse_factors(specs: list[str]) -> list[tuple[str, str]]:
    from geo.core.errors import HarmspotError

    out = []
    for s in specs or []:
        if "=" not in s:
            raise HarmspotError(f"--factor {s!r}: use NAME=FILE, e.g. --factor pubs=pubs.csv")
        k, v = s.split("=", 1)
        k = k.strip()
        if not k or not v.strip():
            raise HarmspotError(f"--factor {s!r}: both NAME and FILE are needed (NAME=FILE)")
        out.append((k, v.strip()))
    names = [k for k, _ in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise HarmspotError(f"--factor: names must be unique; repeated {dup}")
    return out


def _parse_where(specs: list[str] | None, names: list[str]) -> dict:
    from geo.core.errors import HarmspotError

    out: dict[str, dict] = {}
    for s in specs or []:
        if ":" not in s or "=" not in s.split(":", 1)[1]:
            raise HarmspotError(f"--where {s!r}: use NAME:COLUMN=VALUE, e.g. --where pubs:business_type=Pub")
        n, rest = s.split(":", 1)
        c, v = rest.split("=", 1)
        if n not in names:
            raise HarmspotError(f"--where {s!r}: no --factor called {n!r} (factors: {names})")
        out.setdefault(n, {})[c.strip()] = v.strip()
    return out


def _split_for_comparison(st, period, test_from, test_to):
    """Training and held-out periods for --compare (echoed choices)."""
    from geo.core.period import Period
    from geo.core.result import Choice

    choices = []
    if test_from or test_to:
        test = Period.parse(test_from or test_to, test_to or test_from)
        return period, test, [Choice("held-out period", test.label(), "as given", automatic=False)]
    lo, hi = st.month_range()
    months = period.months
    later = [m for m in Period.parse(lo, hi).months if m > months[-1]] if hi and hi > months[-1] else []
    have = set(st.incidents(period=Period.parse(later[0], later[-1])).frame["month"].unique()) if later else set()
    later = [m for m in later if m in have]
    if later:
        later = later[:len(months)]
        test = Period.parse(later[0], later[-1])
        choices.append(Choice("held-out period", test.label(), "the months after the modelled period in the store"))
        return period, test, choices
    if len(months) < 3:
        from geo.core.errors import HarmspotError

        raise HarmspotError("--compare needs a later period: the store has no months after --to and the period is "
                            "too short to split; give --test-from/--test-to or an earlier --to")
    k = max(1, len(months) // 3)
    train = Period.parse(months[0], months[-k - 1])
    test = Period.parse(months[-k], months[-1])
    choices.append(Choice("comparison split", f"train {train.label()}, held out {test.label()}",
                          "no months after the modelled period in the store: its last third is held out "
                          "(the main model still uses the whole period)"))
    return train, test, choices


def rtm_command(
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
    factor: List[str] = typer.Option(..., "--factor", help="Risk factor NAME=FILE (CSV with longitude/latitude, "
                                     "lon/lat or easting/northing; or any vector file); repeat."),
    where: Optional[List[str]] = typer.Option(None, "--where", help="Keep rows of a factor file: "
                                              "NAME:COLUMN=VALUE (e.g. pubs:business_type=Pub); repeat."),
    cell: Optional[float] = typer.Option(None, "--cell", help="Cell size in metres (default 50: half a block)."),
    block: Optional[float] = typer.Option(None, "--block", help="Block length in metres (default 100); spatial "
                                          "influences are half a block up to 3 blocks."),
    date_from: Optional[str] = typer.Option(None, "--from", help="YYYY-MM (default: first month in the store)."),
    date_to: Optional[str] = typer.Option(None, "--to", help="YYYY-MM (default: latest month in the store)."),
    category: Optional[List[str]] = typer.Option(None, "--category", help="police.uk crime type or API slug; "
                                                 "repeat (default: all crime)."),
    boundary: Optional[str] = typer.Option(None, "--boundary", help="Study area (default: the store's)."),
    name_col: Optional[str] = typer.Option(None, "--name-col", help="Name column of --boundary (with --area-name)."),
    area_name: Optional[List[str]] = typer.Option(None, "--area-name", help="Keep only these polygons of the "
                                                  "study area by name (e.g. Chelmsford); repeat."),
    priority: str = typer.Option("mean+2sd", "--priority", help="Priority-place threshold: mean+2sd (RTMDx) or a "
                                 "share of cells such as 0.05."),
    seed: int = typer.Option(0, "--seed", help="Seed of the cross-validation folds (and the learned model)."),
    cv: CVScheme = typer.Option(CVScheme.spatial, "--cv", help="Lasso cross-validation folds: spatial (square "
                                "blocks of cells held out together; neighbouring cells are alike, so random folds "
                                "flatter small penalties) or random (folds of single cells, as RTMDx)."),
    cv_block: Optional[float] = typer.Option(None, "--cv-block", min=1.0, metavar="METRES",
                                             help="Side of the spatial CV blocks in metres (default: twice the "
                                             "largest spatial influence, i.e. 6 x --block, at least 4 cells)."),
    out: Path = typer.Option(..., "--out", help="Relative risk score GeoTIFF (EPSG:27700, lowest cell = 1)."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write the HTML model report here."),
    title: Optional[str] = typer.Option(None, "--title", help="Title of the HTML report."),
    places: Optional[Path] = typer.Option(None, "--places", help="Write priority places (.gpkg/.geojson/.csv)."),
    cells_out: Optional[Path] = typer.Option(None, "--cells", help="Write per-cell values (.csv/.parquet)."),
    compare: bool = typer.Option(False, "--compare", help="Also fit learned risk and compare RTM, learned risk and "
                                 "a KDE on a later held-out period (PAI, hit rate at 1% and 5%)."),
    test_from: Optional[str] = typer.Option(None, "--test-from", help="Held-out period start for --compare."),
    test_to: Optional[str] = typer.Option(None, "--test-to", help="Held-out period end for --compare."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (last line) with the factors list."),
):
    """Risk terrain modelling: which places' features raise the risk, how far, how much; the risk surface."""
    from geo.core.categories import resolve_categories
    from geo.core.errors import HarmspotError
    from geo.rtm.learned import compare_risk_models
    from geo.core.result import Choice
    from geo.rtm.model import check_cv, risk_terrain, spatial_influences
    from maps.export.write import write_raster, write_result, write_vector
    from services.cli import load_area, open_cli_store, resolve_period
    from services.ui import console, echo_choices, echo_params, print_json, progress_bar

    if out.suffix.lower() not in (".tif", ".tiff"):
        raise HarmspotError(f"--out {out}: the risk surface is a GeoTIFF; give a .tif path")
    scheme = cv.value if isinstance(cv, CVScheme) else str(cv)
    check_cv(scheme, cv_block)  # before any data is loaded (the model's 5 folds)
    specs = _parse_factors(factor)
    wh = _parse_where(where, [k for k, _ in specs])
    cats = resolve_categories(category) if category else None
    extra_choices = []
    if not cats:
        extra_choices.append(Choice("crime types", "all", "no --category given"))
    with open_cli_store(store, read_only=True) as st:
        period, pchoices = resolve_period(st, date_from, date_to)
        area = load_area(boundary, name_col, store=st)
        if area is None:
            raise HarmspotError("RTM needs a study area: give --boundary FILE or ingest with --boundary")
        if area_name:
            col = "name" if "name" in area.columns else None
            if col is None:
                raise HarmspotError("--area-name: the study area has no 'name' column; give --name-col")
            keep = area[col].astype(str).isin(area_name)
            if not keep.any():
                raise HarmspotError(f"--area-name {area_name}: no polygon of the study area has that name; names "
                                    f"are {sorted(area[col].astype(str))[:20]}")
            area = area[keep]
        inc = st.incidents(period=None if compare else period, categories=cats)
        split = _split_for_comparison(st, period, test_from, test_to) if compare else None
        inputs = {"store": st.url}
    blk = block if block is not None else 100.0
    buf = max(spatial_influences(blk))
    layers = [read_factor_file(k, v, area=area, where=wh.get(k), buffer_m=buf) for k, v in specs]
    for lay in layers:
        lost = {k: v for k, v in lay.dropped.items() if v}
        msg = f"factor {lay.name}: {len(lay):,} points used of {lay.read:,} rows"
        if lost:
            msg += " (" + ", ".join(f"{v:,} {k}" for k, v in lost.items()) + ")"
        console.print(msg)
    inputs["factor_files"] = {k: v for k, v in specs}
    main_inc = inc.filter(period=period) if compare else inc
    with progress_bar("risk terrain", total=None) as cb:
        result = risk_terrain(main_inc, layers, area, cell=cell, block=block, period=period, categories=None,
                              seed=seed, priority=_priority(priority), progress=cb, inputs=inputs,
                              cv_scheme=scheme, cv_block=cv_block)
    result.params["categories"] = list(cats) if cats else "all"
    result.choices = pchoices + extra_choices + result.choices
    cmp = None
    if compare:
        train, test, schoices = split
        with progress_bar("comparison", total=None) as cb:
            cmp = compare_risk_models(inc, layers, area, train_period=train, test_period=test, cell=cell,
                                      block=block, seed=seed, progress=cb, cv_scheme=scheme, cv_block=cv_block)
        cmp.choices = schoices + [c for c in cmp.choices if c.name not in ("cell size", "block length",
                                                                             "cross-validation")]
        result.choices += cmp.choices
    echo_choices(result)
    echo_params(result)
    write_result(result, out)
    outputs = {"out": str(out)}
    pl = result.extra_layers["priority_places"]
    if places:
        write_vector(pl, places, layer_name="priority_places")
        outputs["places"] = str(places)
    if cells_out:
        c = result.tables["cells"]
        if cells_out.suffix.lower() == ".parquet":
            c.to_parquet(cells_out, index=False)
        else:
            c.to_csv(cells_out, index=False)
        outputs["cells_file"] = str(cells_out)
    if cmp is not None:
        lp = out.with_name(out.stem + ".learned.tif")
        write_raster(cmp.layer, lp)
        outputs["learned"] = str(lp)
    if report:
        from maps.rtm_report import write_rtm_report

        write_rtm_report(result, report, comparison=cmp, area=area, factors=layers, title=title)
        outputs["report"] = str(report)
    s = result.summary
    console.print(f"{len(s['factors'])} risk factor(s) selected ({s['distribution']}); "
                  f"{s['cells']:,} cells of {s['cell_m']:g} m, {s['incidents']:,} incidents")
    for f in s["factors"]:
        console.print(f"  {f['name']}: {f['operationalization']} within {f['distance']:g} m, RRV {f['rrv']:.2f} "
                      f"(95% CI {f['ci_low']:.2f}-{f['ci_high']:.2f}, p={f['p']:.2g})")
    console.print(f"highest relative risk score {s['max_rrs']:.2f}; {s['priority_places']} priority places hold "
                  f"{s['priority_incident_share']:.1%} of incidents on {s['priority_area_share']:.1%} of the area")
    if s["incidents_outside_cells"]:
        console.print(f"[yellow]![/] {s['incidents_outside_cells']:,} incidents fall in no study-area cell "
                      "(beyond the area's edge cells) and were not modelled")
    if cmp is not None:
        cs = cmp.summary
        console.print(f"held-out comparison ({cs['test_period']['start']} to {cs['test_period']['end']}): winner "
                      f"{cs['winner']} " + ", ".join(f"{k}: {v}" for k, v in cs["winner_by_area"].items()))
    console.print("written: " + "; ".join(f"{k} -> {v}" for k, v in outputs.items()))
    if as_json:
        obj = {"factors": s["factors"], **{k: v for k, v in s.items() if k != "factors"}, **outputs,
               "params": result.params, "period": period.to_dict(),
               "choices": [c.to_dict() for c in result.choices]}
        if cmp is not None:
            cs = cmp.summary
            obj["comparison"] = {k: cs[k] for k in ("winner", "winner_by_area", "mean_pai", "margin_mean_pai",
                                                    "comparison", "train_period", "test_period", "train_incidents",
                                                    "test_incidents")}
            obj["comparison"]["importances"] = cmp.tables["importances"].head(10).to_dict("records")
        print_json(obj)
    return result, cmp


def _priority(text: str):
    from geo.core.errors import HarmspotError

    if text == "mean+2sd":
        return text
    try:
        v = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
    except ValueError:
        raise HarmspotError(f"--priority {text!r}: use mean+2sd or a share such as 0.05") from None
    return v


def register(app) -> None:
    """Add ``harmspot rtm`` to the harmspot Typer app."""
    app.command(
        name="rtm",
        epilog="Example: harmspot rtm --store essex.duckdb --boundary essex_lad_2013.geojson.gz --name-col LAD13NM "
               "--area-name Chelmsford --factor pubs=essex_licensed_venues_fhrs.csv.gz --where pubs:business_type=Pub "
               "--factor stations=essex_rail_stations.csv --cell 50 --block 100 --category 'Violence and sexual "
               "offences' --out risk.tif --places places.gpkg --report rtm.html --compare --json",
    )(rtm_command)


def demo_step(ctx) -> None:
    """Risk terrain model of the town's violence (pubs, stations, bus stops, schools, takeaways) with a report."""
    inputs = ctx.out / "inputs"
    names = ["pubs", "stations", "bus_stops", "schools", "takeaways"]
    rtm_command(store=str(ctx.store_path), factor=[f"{n}={inputs / (n + '.csv')}" for n in names], where=None,
                cell=50.0, block=100.0, date_from=None, date_to=None, category=["Violence and sexual offences"],
                boundary=None, name_col=None, area_name=None, priority="mean+2sd", seed=0, cv="spatial", cv_block=None,
                out=ctx.out / "rtm_risk.tif", report=ctx.out / "rtm_report.html", places=ctx.out / "rtm_places.gpkg",
                title="Risk terrain model: violence in Harmstead (SYNTHETIC demo data)",
                cells_out=None, compare=True, test_from=None, test_to=None, as_json=False)
    ctx.add("RTM risk surface (GeoTIFF)", ctx.out / "rtm_risk.tif")
    ctx.add("RTM priority places", ctx.out / "rtm_places.gpkg")
    ctx.add("RTM report (HTML)", ctx.out / "rtm_report.html")
