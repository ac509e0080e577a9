"""The ``harmspot`` command line.

Core commands live here (ingest, cells, weights, demo). Each later capability
registers its commands from its own module (listed in ``COMMAND_MODULES``) with
``register(app)``, and may add a step to the demo with ``demo_step(ctx)``.
"""
from __future__ import annotations

import importlib
import sys
import warnings
from pathlib import Path
from typing import List, Optional

import typer

from geo.core.errors import HarmspotError
from services.ui import STORE_HELP, console, echo_choices, echo_params, print_json, progress_bar

app = typer.Typer(
    name="harmspot",
    help="Harm-weighted hotspot and place analysis for UK police forces.\n\n"
    "Example: harmspot demo --out ./harmspot-demo",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)

#: Modules that add commands (and demo steps). Each has register(app) and may have demo_step(ctx).
COMMAND_MODULES = [
    "services.cmd_hotspots",
    "services.cmd_rtm",
    "services.cmd_grip",
    "services.cmd_patrol",
    "services.cmd_maps",
    "services.cmd_serve",
]


def open_cli_store(store: str | None, read_only: bool = False):
    from services.store.open import open_store
    from services.store.base import resolve_store_path

    path, auto = resolve_store_path(store)
    if auto:
        console.print(f"[cyan]i[/] store set to {path} automatically (no --store and no $HARMSPOT_STORE)")
    return open_store(path, read_only=read_only)


def load_area(boundary: str | None, name_col: str | None = None, store=None):
    """A study area: the --boundary file, else the store's saved one, else None (echoed)."""
    from data.boundaries import load_boundary

    if boundary:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gdf = load_boundary(boundary, name_col)
        for w in caught:
            console.print(f"[yellow]![/] {w.message}")
        return gdf
    if store is not None:
        area = store.study_area()
        if area is not None:
            console.print(f"[cyan]i[/] study area set to the store's '{area['name'].iloc[0]}' automatically")
        return area
    return None


def resolve_period(store, date_from: str | None, date_to: str | None, *, default_months: int | None = None):
    """A Period from --from/--to; missing bounds come from the store's data (echoed)."""
    from geo.core.period import Period
    from geo.core.result import Choice

    choices = []
    lo, hi = store.month_range() if hasattr(store, "month_range") else (None, None)
    if lo is None and (date_from is None or date_to is None):
        raise HarmspotError("the store holds no incidents; run 'harmspot ingest' first")
    if date_to is None:
        date_to = hi
        choices.append(Choice("period end", hi, "latest month in the store"))
    if date_from is None:
        if default_months:
            p_end = Period.parse(date_to, date_to)
            y, m = p_end.start.year, p_end.start.month - default_months + 1
            while m < 1:
                y, m = y - 1, m + 12
            date_from = f"{y:04d}-{m:02d}"
            choices.append(Choice("period start", date_from, f"{default_months} months back from the end"))
        else:
            date_from = lo
            choices.append(Choice("period start", lo, "earliest month in the store"))
    return Period.parse(date_from, date_to), choices


def load_weights(weights: str, proactive: bool):
    from geo.core.harm import WeightTable, list_builtin

    if Path(weights).suffix.lower() in (".csv", ".toml") and Path(weights).exists():
        fb = WeightTable.builtin(proactive=proactive)
        return WeightTable.from_file(weights, proactive=proactive, fallback=fb)
    if weights not in list_builtin():
        raise HarmspotError(f"--weights {weights!r}: not a shipped table ({', '.join(list_builtin())}) or a .csv/.toml file")
    return WeightTable.builtin(weights, proactive=proactive)


# ---------------------------------------------------------------------------------------------- ingest
@app.command(epilog="Example: harmspot ingest ../shared/data/crime/essex_street --store essex.duckdb "
             "--boundary ../shared/data/boundaries/essex_lad_2013.geojson.gz --json")
def ingest(
    paths: List[Path] = typer.Argument(..., help="CSV / .csv.gz files, folders of monthly files, or the police.uk zip."),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
    boundary: Optional[str] = typer.Option(None, "--boundary", help="Study-area polygon file; points outside it are rejected (default: the area saved in the store by an earlier load)."),
    fmt: str = typer.Option("auto", "--format", help="auto|police-uk|police-api|table"),
    mapping: Optional[Path] = typer.Option(None, "--mapping", help="TOML mapping for a force records export (--format table)."),
    tolerance: Optional[float] = typer.Option(None, "--tolerance", help="Metres beyond the boundary still accepted (police.uk snapping; default 100)."),
    rejects_dir: Optional[Path] = typer.Option(None, "--rejects-dir", help="Where the rejects CSV goes (default next to the store)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: read, accepted, rejected, duplicates, rejects_file."),
):
    """Load incidents into the store. Every row is accepted or written to the rejects file with its reason."""
    from geo.core.incidents.force import load_mapping, read_table
    from geo.core.incidents.police_uk import read_police_api, read_police_uk
    from geo.core.incidents.files import sniff_format

    if fmt not in ("auto", "police-uk", "police-api", "table"):
        raise HarmspotError(f"--format {fmt!r}: use auto, police-uk, police-api or table")
    st = open_cli_store(store)
    area = load_area(boundary, store=st)
    if tolerance is None:
        from geo.core.incidents.validate import DEFAULT_BORDER_TOLERANCE_M

        tolerance = DEFAULT_BORDER_TOLERANCE_M
        if area is not None:
            console.print(f"[cyan]i[/] border tolerance set to {tolerance:g} m automatically "
                          "(police.uk snaps points to nearby map points)")
    if fmt == "auto":
        fmt = "table" if mapping else sniff_format(paths[0])
        console.print(f"[cyan]i[/] format set to {fmt} automatically (from the header of {paths[0]})")
    if fmt == "table" and mapping is None:
        raise HarmspotError(f"{paths[0]}: is not a police.uk file; a force export needs --mapping FILE.toml")
    with progress_bar("reading", total=None) as cb:
        if fmt == "police-uk":
            res = read_police_uk(paths, boundary=area, tolerance_m=tolerance, progress=cb)
        elif fmt == "police-api":
            res = read_police_api(paths, boundary=area, tolerance_m=tolerance, progress=cb)
        else:
            res = read_table(paths, load_mapping(mapping), boundary=area, tolerance_m=tolerance, progress=cb)
    with st:
        if boundary:
            st.set_study_area(area, name=Path(boundary).name, source=str(boundary))
        summary = st.add_ingest(res, rejects_dir=rejects_dir)
    d = summary.to_dict()
    console.print(
        f"read {d['read']:,} = accepted {d['accepted']:,} + rejected {d['rejected']:,}; "
        f"added {d['added']:,}, already in store {d['duplicates']:,}"
    )
    for reason, n in d["reasons"].items():
        console.print(f"  rejected {n:,}: {reason}")
    if d["rejects_file"]:
        console.print(f"rejects written to {d['rejects_file']}")
    if as_json:
        print_json(d)


# ---------------------------------------------------------------------------------------------- cells
@app.command(epilog="Example: harmspot cells --store essex.duckdb --cell 150 --from 2018-01 --to 2018-06 "
             "--category 'Violence and sexual offences' --out cells.gpkg")
def cells(
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
    grid: str = typer.Option("square", "--grid", help="square | h3 | a polygon FILE (LSOAs, beats)."),
    id_col: Optional[str] = typer.Option(None, "--id-col", help="Id column of the polygon FILE."),
    cell: Optional[float] = typer.Option(None, "--cell", help="Square size in metres (default 150)."),
    res: Optional[int] = typer.Option(None, "--res", help="H3 resolution (default 9)."),
    date_from: Optional[str] = typer.Option(None, "--from", help="YYYY-MM or YYYY-MM-DD (default: first month in store)."),
    date_to: Optional[str] = typer.Option(None, "--to", help="YYYY-MM or YYYY-MM-DD (default: last month in store)."),
    category: Optional[List[str]] = typer.Option(None, "--category", help="police.uk crime type or API slug; repeat."),
    weights: str = typer.Option("cchi-national-2026", "--weights", help="Shipped table name or a .csv/.toml file."),
    proactive: bool = typer.Option(False, "--proactive/--no-proactive", help="Weigh drugs, weapons possession and ASB (CCHI: 0)."),
    boundary: Optional[str] = typer.Option(None, "--boundary", help="Study area (default: the one saved at ingest)."),
    out: Path = typer.Option(..., "--out", help=".gpkg, .geojson, .csv or .parquet"),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
):
    """Harm-weighted counts per 150 m square, H3 cell or polygon, for a period and crime types."""
    from geo.units.counts import count_units
    from geo.core.categories import resolve_categories
    from geo.core.result import Choice
    from geo.units.h3 import H3Units
    from geo.units.polygons import PolygonUnits
    from geo.units.lattice import SquareGrid
    from maps.export.write import write_result

    cats = resolve_categories(category) if category else None
    wt = load_weights(weights, proactive)
    with open_cli_store(store, read_only=False) as st:
        period, pchoices = resolve_period(st, date_from, date_to)
        area = load_area(boundary, store=st)
        inc = st.incidents(period=period, categories=cats)
        inputs = {"store": st.url, "incidents": len(inc)}
    extra = []
    if grid == "square":
        if cell is None:
            extra.append(Choice("cell size", "150 m", "default BNG square, the Grip harm-spot size"))
        units = SquareGrid(cell or 150.0)
    elif grid == "h3":
        if res is None:
            extra.append(Choice("H3 resolution", 9, "default, about 200 m across"))
        units = H3Units(res if res is not None else 9)
    else:
        from data.boundaries import load_boundary

        polys = load_boundary(grid)
        if id_col is None:
            raise HarmspotError(f"--grid {grid}: give --id-col naming the polygons' id column")
        units = PolygonUnits(polys, id_col, name=grid)
    result = count_units(inc, units, wt, area=area, period=period, categories=cats, inputs=inputs)
    result.choices = pchoices + extra + result.choices
    echo_choices(result)
    echo_params(result)
    write_result(result, out)
    s = result.summary
    console.print(f"{s['units']:,} units, {s['incidents']:,} incidents, harm {s['harm']:,.1f} -> {out}")
    if s["outside_area"]:
        console.print(f"[yellow]![/] {s['outside_area']:,} incidents lie outside the study area (within the border "
                      "tolerance at ingest) and were not counted")
    if as_json:
        print_json({**s, "out": str(out), "params": result.params, "weight_table": result.weight_table,
                    "period": period.to_dict(), "choices": [c.to_dict() for c in result.choices]})


# ---------------------------------------------------------------------------------------------- weights
@app.command(epilog="Example: harmspot weights --table cchi-essex-2026")
def weights(
    table: str = typer.Option("cchi-national-2026", "--table", help="Shipped table name or a .csv/.toml file."),
    proactive: bool = typer.Option(False, "--proactive/--no-proactive"),
):
    """Show a harm weight table with its source (CCHI by default)."""
    from rich.table import Table

    wt = load_weights(table, proactive)
    t = Table(title=f"{wt.name} v{wt.version} ({wt.unit})")
    t.add_column(wt.key)
    t.add_column("weight", justify="right")
    for _, r in wt.table().iterrows():
        t.add_row(str(r.iloc[0]), f"{r.iloc[1]:g}")
    console.print(t)
    console.print(f"source: {wt.source}")
    if wt.notes:
        console.print(f"notes: {wt.notes}")


# ---------------------------------------------------------------------------------------------- demo
class DemoContext:
    """What demo steps share: the output folder, the store path, the synthetic town, printed outputs."""

    def __init__(self, out: Path, town, store_path: Path):
        self.out = out
        self.town = town
        self.store_path = store_path
        self.outputs: list[tuple[str, Path]] = []

    def add(self, label: str, path: Path):
        self.outputs.append((label, Path(path)))
        console.print(f"  [green]+[/] {label}: {path}")


@app.command(epilog="Example: harmspot demo --out ./harmspot-demo")
def demo(
    out: Path = typer.Option(Path("harmspot-demo"), "--out", help="Folder for the demo's inputs and outputs."),
    seed: int = typer.Option(42, "--seed", help="Seed of the synthetic town."),
):
    """Run the whole pipeline offline on a seeded synthetic town (all data SYNTHETIC)."""
    from geo.synth.town import make_town

    out.mkdir(parents=True, exist_ok=True)
    console.print(f"[bold]harmspot demo[/] -> {out.resolve()} (synthetic town, seed {seed}; no network needed)")
    town = make_town(seed)
    inputs = out / "inputs"
    (inputs / "police_uk").mkdir(parents=True, exist_ok=True)
    for m, frame in town.police_uk_frames().items():
        frame.to_csv(inputs / "police_uk" / f"{m}-harmstead-street.csv", index=False)
    town.boundary.to_file(inputs / "district.gpkg", driver="GPKG")
    town.towns.to_file(inputs / "towns.gpkg", driver="GPKG")
    for name, g in town.features.items():
        g.to_crs("EPSG:4326").assign(longitude=lambda d: d.geometry.x, latitude=lambda d: d.geometry.y) \
            .drop(columns="geometry").to_csv(inputs / f"{name}.csv", index=False)
    export, mapping = town.force_export(bad_rows=True)
    export.drop(columns="expected_reason").to_csv(inputs / "force_export.csv", index=False)
    _write_toml(mapping, inputs / "force_export.toml")
    ctx = DemoContext(out, town, out / "demo.duckdb")
    for p in (ctx.store_path, out / "demo-policeuk.duckdb"):
        if p.exists():
            p.unlink()
    ctx.add("synthetic inputs", inputs)
    console.print("[bold]1.[/] ingest the force export (times, offence codes, flags) with the district boundary")
    ingest(paths=[inputs / "force_export.csv"], store=str(ctx.store_path), boundary=str(inputs / "district.gpkg"),
                    fmt="table", mapping=inputs / "force_export.toml", tolerance=100.0, rejects_dir=None, as_json=False)
    console.print("[bold]2.[/] ingest the same town as police.uk monthly street CSVs (months only, snapped points)")
    ingest(paths=[inputs / "police_uk"], store=str(out / "demo-policeuk.duckdb"),
                    boundary=str(inputs / "district.gpkg"), fmt="police-uk", mapping=None, tolerance=100.0,
                    rejects_dir=None, as_json=False)
    console.print("[bold]3.[/] harm-weighted counts per 150 m square")
    cells(store=str(ctx.store_path), grid="square", id_col=None, cell=150.0, res=None, date_from=None,
                   date_to=None, category=None, weights="cchi-national-2026", proactive=False, boundary=None,
                   out=out / "cells_150m.gpkg", as_json=False)
    ctx.add("cells (GeoPackage)", out / "cells_150m.gpkg")
    for i, (mod, step) in enumerate(_demo_steps(), start=4):
        console.print(f"[bold]{i}.[/] {getattr(step, '__doc__', mod) or mod}".strip())
        step(ctx)
    console.print("\n[bold green]demo finished.[/] Outputs:")
    for label, p in ctx.outputs:
        console.print(f"  {label}: {p}")


def _write_toml(d: dict, path: Path):
    lines = []
    for section, body in d.items():
        lines.append(f"[{section}]")
        for k, v in body.items():
            lines.append(f'"{k}" = "{v}"' if section == "categories" else f'{k} = "{v}"')
        lines.append("")
    path.write_text("\n".join(lines))


def _demo_steps():
    for modname in COMMAND_MODULES:
        mod = importlib.import_module(modname)
        step = getattr(mod, "demo_step", None)
        if step is not None:
            yield modname, step


# ---------------------------------------------------------------------------------------------- main
for _m in COMMAND_MODULES:
    importlib.import_module(_m).register(app)


def main(argv=None):
    """Console entry point: HarmspotError -> a clear message and exit code 2 (usage errors are 2 too)."""
    try:
        app(args=argv, prog_name="harmspot")
    except HarmspotError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
