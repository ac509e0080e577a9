"""CLI: ``harmspot grip`` (weekly Grip harm spots per town, patrol plan, crossover schedule)
and ``harmspot minerva`` (VAWG Minerva zones where offences and fear coincide).

Thin edges: parse options, load files and the store, call :mod:`geo.grip` /
:mod:`geo.minerva`, echo every automatic choice, write outputs.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from services.ui import STORE_HELP


def _read_previous(path: Path):
    """Last cycle's output (GeoJSON/GeoPackage/CSV) as a DataFrame with ``spot_id``."""
    import pandas as pd

    from geo.core.errors import HarmspotError

    p = Path(path)
    if not p.exists():
        raise HarmspotError(f"--previous {p}: file not found")
    if p.suffix.lower() == ".csv":
        df = pd.read_csv(p, dtype=str)
    else:
        import pyogrio

        try:
            df = pyogrio.read_dataframe(p, read_geometry=False)
        except Exception as exc:  # pyogrio raises its own error family
            raise HarmspotError(f"--previous {p}: cannot be read ({exc})") from None
    if "spot_id" not in df.columns:
        raise HarmspotError(f"--previous {p}: no 'spot_id' column (is it a 'harmspot grip' output?); "
                            f"columns are {list(df.columns)[:12]}")
    return df


def register(app) -> None:
    """Add ``grip`` and ``minerva`` to the harmspot Typer app."""

    @app.command(epilog="Example: harmspot grip --store essex.duckdb --towns towns.gpkg --name-col name --n 20 "
                 "--cell 150 --from 2018-03 --to 2019-02 --out grip.geojson --plan plan.csv --json")
    def grip(
        store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
        towns: str = typer.Option(..., "--towns", help="Town polygons (GeoJSON/GeoPackage/...); one row per town."),
        name_col: str = typer.Option("name", "--name-col", help="Column of --towns holding the town name."),
        n: int = typer.Option(20, "--n", help="Spots per town (ignored with --budget)."),
        budget: Optional[int] = typer.Option(None, "--budget", help="Force-wide spots, split between towns by harm."),
        cell: float = typer.Option(150.0, "--cell", help="Square size in metres (BNG-aligned)."),
        date_from: Optional[str] = typer.Option(None, "--from", help="YYYY-MM (default: 12 months back from --to)."),
        date_to: Optional[str] = typer.Option(None, "--to", help="YYYY-MM (default: latest month in the store)."),
        outcome: str = typer.Option("auto", "--outcome",
                                    help="auto | community-violence | police-uk-proxy (see docs/grip.md)."),
        category: Optional[List[str]] = typer.Option(None, "--category", help="Use these police.uk types instead "
                                                     "of the outcome definition; repeat."),
        weights: str = typer.Option("cchi-national-2026", "--weights", help="Shipped table name or a .csv/.toml file."),
        proactive: bool = typer.Option(False, "--proactive/--no-proactive",
                                       help="Weigh possession of weapons (and drugs, ASB); CCHI rule: 0."),
        min_events: Optional[int] = typer.Option(None, "--min-events", help="Rule: at least this many incidents."),
        separation: Optional[float] = typer.Option(None, "--separation", help="Rule: metres between spot centres."),
        exclude: Optional[str] = typer.Option(None, "--exclude", help="Rule: polygons (prisons, hospitals) whose "
                                              "squares are never spots."),
        merge: bool = typer.Option(False, "--merge", help="Rule: merge edge-adjacent spots."),
        previous: Optional[Path] = typer.Option(None, "--previous", help="Last cycle's output: status new/retained/dropped."),
        plan: Optional[Path] = typer.Option(None, "--plan", help="Write the patrol plan CSV here."),
        changes: Optional[Path] = typer.Option(None, "--changes", help="Write new/retained/dropped CSV here."),
        concentration: Optional[Path] = typer.Option(None, "--concentration", help="Write the per-town "
                                                     "concentration curve CSV here."),
        crossover: Optional[int] = typer.Option(None, "--crossover", help="K spots per town treated each day."),
        crossover_days: int = typer.Option(28, "--crossover-days", help="Days in the crossover schedule."),
        start: Optional[str] = typer.Option(None, "--start", help="First schedule day YYYY-MM-DD "
                                            "(default: the day after the look-back window)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the crossover schedule."),
        schedule: Optional[Path] = typer.Option(None, "--schedule", help="Crossover CSV (default <out>.crossover.csv)."),
        visits: int = typer.Option(1, "--visits", help="Target visits per spot per day."),
        minutes: int = typer.Option(15, "--minutes", help="Target minutes per visit."),
        max_gap: int = typer.Option(4, "--max-gap", help="At most this many days between visits."),
        out: Path = typer.Option(..., "--out", help="Spots: .geojson, .gpkg, .csv or .parquet."),
        as_json: bool = typer.Option(False, "--json", help="Print a JSON summary (last line)."),
    ):
        """Grip harm spots: the ranked squares per town holding most street-violence harm, with a patrol plan."""
        import datetime as dt

        import pandas as pd

        from geo.core.categories import resolve_categories
        from geo.core.errors import HarmspotError
        from geo.grip.spots import crossover_schedule, select_spots
        from geo.core.result import Choice
        from maps.export.write import write_result
        from services.cli import load_area, load_weights, open_cli_store, resolve_period
        from services.ui import console, echo_choices, echo_params, print_json, progress_bar

        wt = load_weights(weights, proactive)
        tw = load_area(towns, name_col)  # load_boundary copies --name-col into 'name'
        ex = load_area(exclude) if exclude else None
        prev = _read_previous(previous) if previous else None
        out_cats = resolve_categories(category) if category else outcome
        with progress_bar("grip", total=4) as cb:
            with open_cli_store(store, read_only=False) as st:
                period, pchoices = resolve_period(st, date_from, date_to, default_months=12)
                cb(1, 4, "loading incidents")
                area = st.study_area()
                inc = st.incidents(period=period)
                inputs = {"store": st.url, "towns": towns}
            cb(2, 4, "ranking squares")
            result = select_spots(
                inc, tw, name_col="name", n=n, budget=budget, cell=cell, weights=wt, period=period,
                outcome=out_cats, min_events=min_events, separation=separation, exclusions=ex, merge=merge,
                previous=prev, area=area, visits_per_day=visits, minutes=minutes, max_gap_days=max_gap)
            cb(3, 4, "writing")
            result.choices = pchoices + [c for c in result.choices if c.name != "look-back"]
            if area is not None:
                result.choices.append(Choice("study area", "the store's saved area",
                                             "incidents outside it are not counted, as in 'harmspot cells'"))
            result.inputs.update(inputs)
            write_result(result, out)
            extra = {}
            if plan:
                result.tables["plan"].to_csv(plan, index=False)
                extra["plan"] = str(plan)
            if changes:
                result.tables["changes"].to_csv(changes, index=False)
                extra["changes"] = str(changes)
            if concentration:
                result.tables["concentration"].to_csv(concentration, index=False)
                extra["concentration"] = str(concentration)
            if crossover is not None:
                d0 = start or (period.end + dt.timedelta(days=1)).isoformat()
                if start is None:
                    result.choices.append(Choice("schedule start", d0, "the day after the look-back window"))
                parts = []
                for town_name, g in result.layer.groupby("town", sort=False):
                    k = min(int(crossover), len(g))
                    if k < crossover:
                        result.choices.append(Choice(f"crossover k in {town_name}", k,
                                                     f"the town has only {len(g)} spots"))
                    s = crossover_schedule(list(g["spot_id"]), d0, crossover_days, k, seed=_town_seed(seed, town_name))
                    parts.append(s.assign(town=town_name))
                if not parts:
                    raise HarmspotError("--crossover: no spots were selected, so there is nothing to schedule")
                sched = pd.concat(parts, ignore_index=True)
                sp = schedule or out.with_suffix(".crossover.csv")
                sched.to_csv(sp, index=False)
                extra["schedule"] = str(sp)
                extra["treated_place_days"] = int(sched["treated"].sum())
                extra["control_place_days"] = int((~sched["treated"]).sum())
            cb(4, 4, "done")
        echo_choices(result)
        echo_params(result)
        s = result.summary
        for t, v in s["towns"].items():
            console.print(f"  {t}: {v['spots']} spots hold {v['spot_share_harm']:.1%} of harm on "
                          f"{v['spot_share_area']:.1%} of {v['cells']:,} squares")
        console.print(f"{s['spots']} spots -> {out}" + "".join(f"; {k} -> {v}" for k, v in extra.items()
                                                               if isinstance(v, str)))
        if s["incidents_outside_area"]:
            console.print(f"[yellow]![/] {s['incidents_outside_area']:,} outcome-period incidents lie outside the "
                          "study area and were not counted")
        if as_json:
            lay = result.layer
            spots = [{"spot_id": r.spot_id, "town": r.town, "rank": int(r.rank), "harm": float(r.harm),
                      "count": int(r.count), "status": r.status, "trend": r.trend}
                     for r in lay[["spot_id", "town", "rank", "harm", "count", "status", "trend"]].itertuples()]
            print_json({**s, "out": str(out), **extra, "params": result.params, "weight_table": result.weight_table,
                        "period": period.to_dict(), "choices": [c.to_dict() for c in result.choices],
                        "spots_list": spots})

    _register_minerva(app)


def _town_seed(seed: int, town: str) -> int:
    from geo.grip.spots import _seed_for

    return _seed_for(seed, town)


def _read_points(path, name: str, **kw):
    """A points file for Minerva: CSV (lon/lat or easting/northing columns) or any vector file."""
    import pandas as pd

    from geo.core.errors import HarmspotError
    from geo.minerva.zones import points_from_frame

    p = Path(path)
    if not p.exists():
        raise HarmspotError(f"{name} {p}: file not found")
    if p.suffix.lower() in (".csv", ".gz", ".txt"):
        try:
            df = pd.read_csv(p, dtype=str, keep_default_na=False, na_values=[""])
        except (ValueError, OSError) as exc:
            raise HarmspotError(f"{name} {p}: cannot be read as CSV ({exc})") from None
        return points_from_frame(df, f"{name} {p}", **kw)
    import geopandas as gpd

    try:
        g = gpd.read_file(p)
    except Exception as exc:  # pyogrio raises its own error family
        raise HarmspotError(f"{name} {p}: cannot be read ({exc})") from None
    if g.crs is None:
        raise HarmspotError(f"{name} {p}: has no CRS; save it with one (EPSG:27700 or EPSG:4326)")
    g = g.to_crs("EPSG:27700")
    if "time" not in g.columns:
        g["time"] = pd.NaT
    if "reason" not in g.columns:
        g["reason"] = pd.NA
    return g


def _parse_weights(text: str | None) -> dict | None:
    from geo.core.errors import HarmspotError

    if not text:
        return None
    out = {}
    for part in text.split(","):
        if "=" not in part:
            raise HarmspotError(f"--weights {text!r}: use NAME=NUMBER pairs, e.g. offences=0.5,fear=0.4,context=0.1")
        k, v = part.split("=", 1)
        try:
            out[k.strip()] = float(v)
        except ValueError:
            raise HarmspotError(f"--weights {text!r}: {v!r} is not a number") from None
    return out


def _register_minerva(app) -> None:
    """Add ``harmspot minerva``."""

    @app.command(epilog="Example: harmspot minerva --store town.duckdb --units square --cell 250 --fear fear.csv "
                 "--layer pubs=pubs.csv --layer stations=stations.csv --out zones.geojson --json")
    def minerva(
        store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
        units: str = typer.Option(..., "--units", help="Unit polygons FILE (Output Areas, LSOAs), or 'square' / 'h3'."),
        id_col: Optional[str] = typer.Option(None, "--id-col", help="Id column of the --units FILE."),
        cell: float = typer.Option(250.0, "--cell", help="Square size (m) with --units square."),
        res: int = typer.Option(9, "--res", help="H3 resolution with --units h3."),
        population_col: Optional[str] = typer.Option(None, "--population-col", help="Residents per unit (rates "
                                                      "per 1,000); default rates per km²."),
        fear: Path = typer.Option(..., "--fear", help="Felt-unsafe points: CSV with lon/lat or easting/northing, "
                                  "a time and a reason column."),
        fear_time: Optional[str] = typer.Option(None, "--fear-time", help="Time column of --fear (auto-detected)."),
        fear_reason: Optional[str] = typer.Option(None, "--fear-reason", help="Reason column of --fear (auto)."),
        layer: Optional[List[str]] = typer.Option(None, "--layer", help="Context layer NAME=FILE (points); repeat."),
        weights: Optional[str] = typer.Option(None, "--weights", help="Composite weights, e.g. "
                                              "offences=0.45,fear=0.45,context=0.1 (or per layer name)."),
        date_from: Optional[str] = typer.Option(None, "--from", help="YYYY-MM (default: first month in store)."),
        date_to: Optional[str] = typer.Option(None, "--to", help="YYYY-MM (default: latest month in store)."),
        vawg: str = typer.Option("auto", "--vawg", help="auto | flag (force data) | proxy (police.uk types)."),
        proxy_category: Optional[List[str]] = typer.Option(None, "--proxy-category", help="police.uk types for the "
                                                           "proxy (default Violence and sexual offences); repeat."),
        include_domestic: bool = typer.Option(False, "--include-domestic", help="Keep domestic-flagged VAWG."),
        rr_min: float = typer.Option(1.5, "--rr", help="Smoothed relative risk a unit needs to be high."),
        alpha: float = typer.Option(0.05, "--alpha", help="Poisson significance level for high."),
        min_units: int = typer.Option(2, "--min-units", help="Units a coincident zone needs to be a Minerva Zone."),
        districts: Optional[str] = typer.Option(None, "--districts", help="District / CSP polygons (owner)."),
        district_col: str = typer.Option("name", "--district-col", help="Name column of --districts."),
        out: Path = typer.Option(..., "--out", help="Zones: .geojson, .gpkg, .csv or .parquet."),
        units_out: Optional[Path] = typer.Option(None, "--units-out", help="Per-unit rates, flags and types."),
        as_json: bool = typer.Option(False, "--json", help="Print a JSON summary (last line)."),
    ):
        """Minerva zones: where VAWG offences and felt-unsafe reports coincide, and where they do not."""
        from geo.core.categories import resolve_categories
        from geo.core.errors import HarmspotError
        from geo.minerva.zones import h3_units, minerva_zones, square_units
        from geo.core.result import AnalysisResult, Choice
        from maps.export.write import write_result
        from services.cli import load_area, open_cli_store, resolve_period
        from services.ui import console, echo_choices, echo_params, print_json, progress_bar

        cats = resolve_categories(proxy_category) if proxy_category else None
        w = _parse_weights(weights)
        fear_pts = _read_points(fear, "--fear", time_col=fear_time, reason_col=fear_reason)
        ctx = {}
        for spec in layer or []:
            if "=" not in spec:
                raise HarmspotError(f"--layer {spec!r}: use NAME=FILE, e.g. --layer pubs=pubs.csv")
            k, v = spec.split("=", 1)
            ctx[k.strip()] = _read_points(v, f"--layer {k.strip()}")
        with progress_bar("minerva", total=3) as cb:
            with open_cli_store(store, read_only=False) as st:
                period, pchoices = resolve_period(st, date_from, date_to)
                inc = st.incidents(period=period)
                area = st.study_area()
                url = st.url
            cb(1, 3, "units")
            extra = []
            if units in ("square", "h3"):
                if area is None:
                    raise HarmspotError(f"--units {units}: the store has no study area to cover; "
                                        "ingest with --boundary or give a polygon FILE")
                u = square_units(area, cell) if units == "square" else h3_units(area, res)
                uid = "unit_id"
                extra.append(Choice("units", f"{len(u):,} {'squares of ' + format(cell, 'g') + ' m' if units == 'square' else 'H3 cells res ' + str(res)}",
                                    "covering the store's study area", automatic=False))
            else:
                u = load_area(units)
                if id_col is None:
                    raise HarmspotError(f"--units {units}: give --id-col naming the units' id column "
                                        f"(columns: {[c for c in u.columns if c != 'geometry']})")
                uid = id_col
            dist = load_area(districts, district_col) if districts else None
            cb(2, 3, "zones")
            result: AnalysisResult = minerva_zones(
                u, inc, fear_pts, id_col=uid, layers=ctx, population_col=population_col, weights=w,
                period=period, vawg=vawg, proxy_categories=cats, include_domestic=include_domestic,
                rr_min=rr_min, alpha=alpha, min_units=min_units, districts=dist,
                district_col="name" if dist is not None else district_col)
            result.choices = pchoices + extra + result.choices
            result.inputs.update({"store": url, "fear": str(fear), "units": units})
            write_result(result, out)
            if units_out:
                write_result(AnalysisResult(kind="minerva-units", layer=result.extra_layers["units"],
                                            params=result.params, choices=result.choices, period=period,
                                            summary=result.summary), units_out)
            cb(3, 3, "done")
        echo_choices(result)
        echo_params(result)
        s = result.summary
        console.print(f"{s['minerva_zones']} Minerva Zone(s), {s['zones_of_local_interest']} of local interest "
                      f"from {s['units']:,} units -> {out}")
        for t, k in s["typology"].items():
            console.print(f"  {t}: {k:,} units")
        if as_json:
            zl = [{k: r[k] for k in ("zone_id", "priority", "category", "type", "units", "score", "district",
                                     "drivers")} for _, r in result.tables["zones"].iterrows()]
            print_json({**s, "out": str(out), "units_out": str(units_out) if units_out else None,
                        "params": result.params, "period": period.to_dict(),
                        "choices": [c.to_dict() for c in result.choices], "zones": zl})


def demo_step(ctx) -> None:
    """Grip harm spots for the two towns, and Minerva VAWG zones with SYNTHETIC fear reports."""
    from geo.synth.minerva import make_fear_points

    town = ctx.town
    towns_file = ctx.out / "inputs" / "towns.gpkg"
    if not towns_file.exists():
        town.towns.to_file(towns_file, driver="GPKG")
    grip_out = ctx.out / "grip_spots.geojson"
    plan = ctx.out / "grip_plan.csv"
    _call(["grip", "--store", str(ctx.store_path), "--towns", str(towns_file), "--name-col", "name", "--n", "10",
           "--cell", "150", "--out", str(grip_out), "--plan", str(plan), "--crossover", "4", "--seed", "1",
           "--schedule", str(ctx.out / "grip_crossover.csv")])
    ctx.add("Grip harm spots (GeoJSON)", grip_out)
    ctx.add("Grip patrol plan (CSV)", plan)
    ctx.add("Grip crossover schedule (CSV)", ctx.out / "grip_crossover.csv")
    fear = ctx.out / "inputs" / "fear_reports_SYNTHETIC.csv"
    make_fear_points(town, n=600, seed=7).to_csv(fear, index=False)
    zones = ctx.out / "minerva_zones.geojson"
    _call(["minerva", "--store", str(ctx.store_path), "--units", "square", "--cell", "250", "--fear", str(fear),
           "--layer", f"pubs={ctx.out / 'inputs' / 'pubs.csv'}", "--layer",
           f"stations={ctx.out / 'inputs' / 'stations.csv'}", "--districts", str(towns_file),
           "--out", str(zones), "--units-out", str(ctx.out / "minerva_units.csv")])
    ctx.add("Minerva zones (GeoJSON; fear reports SYNTHETIC)", zones)
    ctx.add("Minerva units (CSV)", ctx.out / "minerva_units.csv")


def _call(argv):
    """Run a harmspot command in-process (the demo's way of chaining steps)."""
    from services.cli import app

    app(args=argv, standalone_mode=False)
