"""CLI: ``harmspot hotspots kde|gistar|emerging|change|accuracy``.

Thin edges: parse options, read the store, call :mod:`geo.kde`, :mod:`geo.gistar`,
:mod:`geo.emerging`, :mod:`geo.change`, :mod:`geo.accuracy`, echo every automatic
choice, write the layer (and its ``.meta.json``), print the tasking table.
"""
from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from services.ui import STORE_HELP

DEFAULT_WEIGHTS = "cchi-national-2026"

# Options several hotspot commands share (same flag, type and help); defaults are given at each parameter.
StoreOpt = Annotated[Optional[str], typer.Option("--store", help=STORE_HELP)]
GridOpt = Annotated[str, typer.Option("--grid", help="square | h3 | a polygon FILE.")]
IdColOpt = Annotated[Optional[str], typer.Option("--id-col", help="Id column of the polygon FILE.")]
Cell150Opt = Annotated[Optional[float], typer.Option("--cell", help="Square size in metres (default 150).")]
ResOpt = Annotated[Optional[int], typer.Option("--res", help="H3 resolution (default 9).")]
WeightOpt = Annotated[Optional[str], typer.Option("--weight", help="count | harm (default harm).")]
CategoryOpt = Annotated[Optional[List[str]], typer.Option("--category",
                                                         help="police.uk crime type or API slug; repeat.")]
WeightsOpt = Annotated[str, typer.Option("--weights", help="Shipped table name or a .csv/.toml file.")]
ProactiveOpt = Annotated[bool, typer.Option("--proactive/--no-proactive",
                                            help="Weigh drugs, weapons possession, ASB.")]
BoundaryOpt = Annotated[Optional[str], typer.Option("--boundary",
                                                    help="Study area (default: the one saved at ingest).")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", help=".gpkg, .geojson, .csv or .parquet")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON summary (last line).")]
RingOpt = Annotated[Optional[int], typer.Option("--ring", help="H3 grid-ring neighbours (when no --band; default 1).")]
ContiguityOpt = Annotated[str, typer.Option("--contiguity", help="queen | rook (polygons, when no --band).")]

hotspots_app = typer.Typer(
    name="hotspots",
    help="Hot spot analytics: harm-weighted KDE, Gi* with honest significance, emerging hot spots, "
    "change between periods and predictive accuracy.\n\nExample: harmspot hotspots gistar --store essex.duckdb "
    "--cell 500 --band 750 --weight harm --out gistar.gpkg",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


# ------------------------------------------------------------------------------------------ helpers
def _units(grid: str, cell: Optional[float], res: Optional[int], id_col: Optional[str], default_cell: float = 150.0):
    from geo.core.errors import HarmspotError
    from geo.core.result import Choice
    from geo.units.h3 import H3Units
    from geo.units.polygons import PolygonUnits
    from geo.units.lattice import SquareGrid

    choices = []
    if grid == "square":
        if cell is None:
            choices.append(Choice("cell size", f"{default_cell:g} m", "default BNG square"))
        return SquareGrid(cell or default_cell), choices
    if grid == "h3":
        if res is None:
            choices.append(Choice("H3 resolution", 9, "default, about 200 m across"))
        return H3Units(res if res is not None else 9), choices
    from data.boundaries import load_boundary

    if id_col is None:
        raise HarmspotError(f"--grid {grid}: give --id-col naming the polygons' id column")
    return PolygonUnits(load_boundary(grid), id_col, name=grid), choices


def _weight_choice(weight: Optional[str]):
    from geo.core.result import Choice

    if weight is None:
        return "harm", [Choice("variable tested", "harm", "default; --weight count for incident counts")]
    return weight, []


def _load(store, date_from, date_to, category, weights, proactive, boundary, *, default_months=None, extend=None):
    """Open the store; return (incidents, area, period, choices, categories, weight table, inputs).

    ``extend``: a function Period -> Period whose incidents are also loaded (e.g. the previous period)."""
    from geo.core.categories import resolve_categories
    from geo.core.period import Period
    from services.cli import load_area, load_weights, open_cli_store, resolve_period

    cats = resolve_categories(category) if category else None
    wt = load_weights(weights, proactive)
    with open_cli_store(store, read_only=False) as st:
        period, pchoices = resolve_period(st, date_from, date_to, default_months=default_months)
        area = load_area(boundary, store=st)
        span = period
        if extend is not None:
            other = extend(period)
            span = Period(min(other.start, period.start), max(other.end, period.end))
        inc = st.incidents(period=span, categories=cats)
        inputs = {"store": st.url, "incidents": len(inc)}
    return inc, area, period, pchoices, cats, wt, inputs


@contextmanager
def _neighbour_cache(store):
    """A NeighbourCache backed by the store (H3/polygon neighbour matrices built once, reused by later runs).

    The store is opened when a matrix is first looked up (squares never need one) and that one
    connection also saves a matrix built on a miss; it is closed when the block ends."""
    from geo.units.neighbours.cache import NeighbourCache
    from services.store.open import open_store
    from services.store.base import resolve_store_path

    path, _ = resolve_store_path(store)
    opened = []

    def st():
        if not opened:
            opened.append(open_store(path))
        return opened[0]

    try:
        yield NeighbourCache(load=lambda key: st().get_neighbours(key),
                             save=lambda key, data: st().put_neighbours(key, data))
    finally:
        for connection in opened:
            connection.close()


def _echo(result):
    """Echo every automatic choice and the parameters used."""
    from services.ui import echo_choices, echo_params

    echo_choices(result)
    echo_params(result)


def _print_json(result, out: Optional[Path], extra: dict | None = None, *, inputs: bool = True):
    """The ``--json`` summary line: summary (+ extra), out, params, [weight_table, period,] choices."""
    from services.ui import print_json

    obj = {**result.summary, **(extra or {}), "out": str(out) if out else None, "params": result.params}
    if inputs:
        obj["weight_table"] = result.weight_table
        obj["period"] = result.period.to_dict() if hasattr(result.period, "to_dict") else result.period
    obj["choices"] = [c.to_dict() for c in result.choices]
    print_json(obj)


def _finish(result, out: Optional[Path], as_json: bool, extra: dict | None = None):
    from maps.export.write import write_result
    from services.ui import console

    _echo(result)
    if out is not None:
        write_result(result, out)
        console.print(f"[green]wrote[/] {out} (+ {out.name}.meta.json)")
    if as_json:
        _print_json(result, out, extra)


def _print_table(df, title: str):
    from rich.table import Table

    from services.ui import console

    t = Table(title=title)
    for c in df.columns:
        t.add_column(str(c), justify="right" if df[c].dtype.kind in "iuf" else "left")
    for _, r in df.iterrows():
        t.add_row(*[(f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}") if isinstance(v, float) else str(v)
                    for v in r.to_list()])
    console.print(t)


def _print_tasking(task, title: str):
    """The tasking table, narrow enough for an 80-column terminal (the CSV keeps every column)."""
    import pandas as pd

    short = task["gistar_class"].str.replace(" Spot - ", " ", regex=False).str.replace(" Confidence", "",
                                                                                     regex=False)
    t = pd.DataFrame({"#": task["rank"], "cell": task["cell_id"], "n": task["count"],
                      "harm": task["harm"].round(0).astype("int64"), "z": task["gistar_z"].round(1), "Gi*": short})
    if "count_change" in task:
        t["Δn"] = task["count_change"]
        t["Δharm"] = task["harm_change"].round(0).astype("int64")
    if "location" in task:
        t["location"] = task["location"].fillna("").str.replace("On or near ", "", regex=False).str.slice(0, 24)
    _print_table(t, title)


def _next_period(p):
    """The period of equal length starting the day after ``p`` ends (whole months stay whole months)."""
    from geo.core.period import Period

    if p.start.day == 1 and (p.end + timedelta(days=1)).day == 1:
        n = len(p.months)
        s = p.end + timedelta(days=1)
        y, m = s.year, s.month + n - 1
        while m > 12:
            y, m = y + 1, m - 12
        return Period.parse(s.strftime("%Y-%m"), f"{y:04d}-{m:02d}")
    s = p.end + timedelta(days=1)
    return Period(s, s + timedelta(days=p.days - 1))


# ------------------------------------------------------------------------------------------ gistar
@hotspots_app.command(epilog="Example: harmspot hotspots gistar --store essex.duckdb --cell 500 --band 750 "
                      "--weight harm --out gistar.gpkg --json")
def gistar(
    store: StoreOpt = None,
    grid: str = typer.Option("square", "--grid", help="square | h3 | a polygon FILE (LSOAs, beats)."),
    id_col: IdColOpt = None,
    cell: Cell150Opt = None,
    res: ResOpt = None,
    band: Optional[float] = typer.Option(None, "--band", help="Distance band in metres between unit centroids "
                                         "(default: cell x sqrt(2) for squares; ring 1 for H3; contiguity for polygons)."),
    ring: RingOpt = None,
    contiguity: ContiguityOpt = "queen",
    weight: Optional[str] = typer.Option(None, "--weight", help="count | harm: the variable tested (default harm)."),
    adjust: str = typer.Option("fdr", "--adjust", help="fdr (Benjamini-Hochberg) | bonferroni | none."),
    permutations: int = typer.Option(0, "--permutations", help="0 = normal p-values; N = conditional permutations."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for --permutations."),
    date_from: Optional[str] = typer.Option(None, "--from", help="YYYY-MM or YYYY-MM-DD (default: 3 months back from --to)."),
    date_to: Optional[str] = typer.Option(None, "--to", help="YYYY-MM or YYYY-MM-DD (default: latest month in store)."),
    category: CategoryOpt = None,
    weights: WeightsOpt = DEFAULT_WEIGHTS,
    proactive: ProactiveOpt = False,
    boundary: BoundaryOpt = None,
    top: int = typer.Option(10, "--top", help="Rows in the tasking table."),
    table: Optional[Path] = typer.Option(None, "--table", help="Save the tasking table (.csv)."),
    out: OutOpt = None,
    as_json: JsonOpt = False,
):
    """Getis-Ord Gi* hot and cold spots of counts or harm, with FDR control, and the tasking table."""
    from geo.units.counts import top_location_label
    from geo.hotspots.change import tasking_table, unit_totals, units_frame_like
    from geo.hotspots.gistar import hotspots_gistar

    units, uchoices = _units(grid, cell, res, id_col)
    weight, wchoices = _weight_choice(weight)
    inc, area, period, pchoices, cats, wt, inputs = _load(store, date_from, date_to, category, weights, proactive,
                                                          boundary, default_months=3,
                                                          extend=lambda p: p.previous())
    with _neighbour_cache(store) as cache:
        result = hotspots_gistar(inc, units, wt, area=area, period=period, categories=cats, band=band, ring=ring,
                                 contiguity=contiguity, weight=weight, adjust=adjust, permutations=permutations,
                                 seed=seed, inputs=inputs, neighbour_cache=cache)
    result.choices = pchoices + uchoices + wchoices + result.choices
    prev = period.previous()
    frame = units_frame_like(units, result.layer)
    pc, ph, _ = unit_totals(inc, units, frame, wt, period=prev, categories=cats, area=area)
    import pandas as pd

    previous = pd.DataFrame({"cell_id": frame["cell_id"].to_numpy(), "count": pc, "harm": ph})
    labels = top_location_label(inc.filter(period=period, categories=cats), units, frame)
    task = tasking_table(result.layer, by=weight, top=top, previous=previous, labels=labels)
    result.tables["tasking"] = task
    result.summary["previous_period"] = prev.to_dict()
    _print_tasking(task, f"Top {top} units by {weight}, {period.label()} (change vs {prev.label()})")
    if table is not None:
        task.to_csv(table, index=False)
    _finish(result, out, as_json, {"tasking": task.to_dict("records")})


# ------------------------------------------------------------------------------------------ kde
@hotspots_app.command(epilog="Example: harmspot hotspots kde --store essex.duckdb --bandwidth 400 --cell 50 "
                      "--kernel quartic --weight harm --out kde.tif --json")
def kde(
    store: StoreOpt = None,
    cell: Optional[float] = typer.Option(None, "--cell", help="Raster cell in metres (default about bandwidth/5)."),
    bandwidth: Optional[float] = typer.Option(None, "--bandwidth", help="Quartic radius / Gaussian sd in metres "
                                              "(default: ArcGIS's rule, echoed)."),
    kernel: str = typer.Option("quartic", "--kernel", help="quartic | gaussian"),
    weight: WeightOpt = None,
    scale: str = typer.Option("density", "--scale", help="density (per km²) | count (unscaled kernel, K(0)=1)."),
    date_from: Optional[str] = typer.Option(None, "--from", help="YYYY-MM or YYYY-MM-DD (default: 3 months back)."),
    date_to: Optional[str] = typer.Option(None, "--to", help="YYYY-MM or YYYY-MM-DD (default: latest month)."),
    category: CategoryOpt = None,
    weights: WeightsOpt = DEFAULT_WEIGHTS,
    proactive: ProactiveOpt = False,
    boundary: BoundaryOpt = None,
    cells_out: Optional[Path] = typer.Option(None, "--cells-out", help="Also write per-cell values (.gpkg/.csv/...)."),
    out: Path = typer.Option(..., "--out", help="GeoTIFF (.tif), EPSG:27700."),
    as_json: JsonOpt = False,
):
    """Kernel density of harm or counts onto a BNG-aligned GeoTIFF (quartic or Gaussian)."""
    from geo.hotspots.kde import hotspots_kde, raster_cells
    from maps.export.write import write_vector
    from services.ui import console

    weight, wchoices = _weight_choice(weight)
    inc, area, period, pchoices, cats, wt, inputs = _load(store, date_from, date_to, category, weights, proactive,
                                                          boundary, default_months=3)
    result = hotspots_kde(inc, wt, area=area, period=period, categories=cats, cell=cell, bandwidth=bandwidth,
                          kernel=kernel, weight=weight, scale=scale, inputs=inputs)
    result.choices = pchoices + wchoices + result.choices
    console.print(f"values: {result.layer.units}")
    chk = result.summary.get("check")
    if chk:
        console.print(f"[dim]exact-sum check at {chk['cells_checked']} cells: max error "
                      f"{chk['max_rel_error_of_peak']:.2e} of the peak[/]")
    if cells_out is not None:
        write_vector(raster_cells(result), cells_out, layer_name="kde_cells")
        console.print(f"[green]wrote[/] {cells_out}")
    _finish(result, out, as_json)


# ------------------------------------------------------------------------------------------ emerging
@hotspots_app.command(epilog="Example: harmspot hotspots emerging --store essex.duckdb --cell 500 --freq auto "
                      "--out emerging.gpkg --json")
def emerging(
    store: StoreOpt = None,
    grid: GridOpt = "square",
    id_col: IdColOpt = None,
    cell: Optional[float] = typer.Option(None, "--cell", help="Square size in metres (default 250)."),
    res: ResOpt = None,
    band: Optional[float] = typer.Option(None, "--band", help="Distance band in metres (default cell x sqrt(2))."),
    ring: RingOpt = None,
    contiguity: ContiguityOpt = "queen",
    freq: str = typer.Option("auto", "--freq", help="auto | M | 7D | 14D (auto: from the span; months for police.uk)."),
    weight: WeightOpt = None,
    adjust: str = typer.Option("fdr", "--adjust", help="fdr | bonferroni | none (per time step)."),
    alpha: float = typer.Option(0.10, "--alpha", help="Level of a hot/cold step (ArcGIS: 90% confidence)."),
    date_from: Optional[str] = typer.Option(None, "--from", help="YYYY-MM (default: earliest month in store)."),
    date_to: Optional[str] = typer.Option(None, "--to", help="YYYY-MM (default: latest month in store)."),
    category: CategoryOpt = None,
    weights: WeightsOpt = DEFAULT_WEIGHTS,
    proactive: ProactiveOpt = False,
    boundary: BoundaryOpt = None,
    out: OutOpt = None,
    as_json: JsonOpt = False,
):
    """Emerging hot spots (ArcGIS EHSA classes): new, consecutive, intensifying, persistent, diminishing..."""
    from geo.hotspots.emerging import emerging_hotspots

    units, uchoices = _units(grid, cell, res, id_col, default_cell=250.0)
    weight, wchoices = _weight_choice(weight)
    inc, area, period, pchoices, cats, wt, inputs = _load(store, date_from, date_to, category, weights, proactive,
                                                          boundary)
    with _neighbour_cache(store) as cache:
        result = emerging_hotspots(inc, units, wt, area=area, period=period, categories=cats, freq=freq, band=band,
                                   ring=ring, contiguity=contiguity, weight=weight, adjust=adjust, alpha=alpha,
                                   inputs=inputs, neighbour_cache=cache)
    result.choices = pchoices + uchoices + wchoices + result.choices
    pt = result.tables["patterns"]
    _print_table(pt[pt["units"] > 0], f"Emerging hot spot patterns ({result.params['steps']} steps of "
                 f"{result.params['freq']})")
    _finish(result, out, as_json)


# ------------------------------------------------------------------------------------------ change
@hotspots_app.command(epilog="Example: harmspot hotspots change --store essex.duckdb --from 2018-10 --to 2018-12 "
                      "--before 2018-05:2018-07 --cell 250 --top 20 --out change.gpkg --json")
def change(
    store: StoreOpt = None,
    grid: GridOpt = "square",
    id_col: IdColOpt = None,
    cell: Cell150Opt = None,
    res: ResOpt = None,
    before: Optional[str] = typer.Option(None, "--before", help="FROM:TO of the earlier period "
                                         "(default: the equal-length period before --from)."),
    date_from: Optional[str] = typer.Option(None, "--from", help="Start of the later period (default 3 months back)."),
    date_to: Optional[str] = typer.Option(None, "--to", help="End of the later period (default: latest month)."),
    top: int = typer.Option(20, "--top", help="N for the top-N overlap (Jaccard)."),
    rank_by: str = typer.Option("harm", "--rank-by", help="harm | count"),
    adjust: str = typer.Option("fdr", "--adjust", help="fdr | bonferroni | none"),
    category: CategoryOpt = None,
    weights: WeightsOpt = DEFAULT_WEIGHTS,
    proactive: ProactiveOpt = False,
    boundary: BoundaryOpt = None,
    out: OutOpt = None,
    as_json: JsonOpt = False,
):
    """What changed between two periods: counts and harm, E-test per unit, overlap of the top-N units."""
    from geo.hotspots.change import change_between
    from geo.core.period import Period
    from geo.core.result import Choice

    units, uchoices = _units(grid, cell, res, id_col)
    extra = []

    def before_of(p):
        return Period.parse_range(before) if before else p.previous()

    inc, area, period, pchoices, cats, wt, inputs = _load(store, date_from, date_to, category, weights, proactive,
                                                          boundary, default_months=3, extend=before_of)
    b = before_of(period)
    if before is None:
        extra.append(Choice("earlier period", b.label(), "the equal-length period before"))
    result = change_between(inc, units, wt, before=b, after=period, area=area, categories=cats, top=top,
                            rank_by=rank_by, adjust=adjust, inputs=inputs)
    result.choices = pchoices + uchoices + extra + result.choices
    s = result.summary
    from services.ui import console

    console.print(f"{b.label()}: {s['count_before']:,} incidents, harm {s['harm_before']:,.0f}  ->  "
                  f"{period.label()}: {s['count_after']:,} incidents, harm {s['harm_after']:,.0f}")
    console.print(f"significant increases {s['significant_increase']}, decreases {s['significant_decrease']}; "
                  f"top-{top} overlap (Jaccard) {s['jaccard_top_n']:.2f}")
    _finish(result, out, as_json)


# ------------------------------------------------------------------------------------------ accuracy
@hotspots_app.command(epilog="Example: harmspot hotspots accuracy --store essex.duckdb --train 2018-01:2018-03 "
                      "--test 2018-04:2018-06 --cell 250 --methods count,harm,kde,gistar --out accuracy.csv --json")
def accuracy(
    store: StoreOpt = None,
    train: str = typer.Option(..., "--train", help="FROM:TO of the period the hot spots are built on."),
    test: Optional[str] = typer.Option(None, "--test", help="FROM:TO scored (default: the equal-length period after)."),
    grid: GridOpt = "square",
    id_col: IdColOpt = None,
    cell: Cell150Opt = None,
    res: ResOpt = None,
    methods: str = typer.Option("count,harm,kde,gistar", "--methods",
                                help="Comma list of count, harm, kde, kde_count, gistar, gistar_harm."),
    measure: str = typer.Option("count", "--measure", help="count | harm: what the test period's hits count."),
    shares: str = typer.Option("0.01,0.05", "--shares", help="Area shares for the summary."),
    bandwidth: Optional[float] = typer.Option(None, "--bandwidth", help="KDE bandwidth (default ArcGIS rule)."),
    band: Optional[float] = typer.Option(None, "--band", help="Gi* distance band (default cell x sqrt(2))."),
    category: CategoryOpt = None,
    weights: WeightsOpt = DEFAULT_WEIGHTS,
    proactive: ProactiveOpt = False,
    boundary: BoundaryOpt = None,
    out: Optional[Path] = typer.Option(None, "--out", help="Curve as .csv, or the scored units as .gpkg/.geojson."),
    as_json: JsonOpt = False,
):
    """Predictive accuracy: hit rate, PAI and PEI of hot spots from one period against the next."""
    from geo.hotspots.accuracy import predictive_accuracy
    from geo.core.errors import HarmspotError
    from geo.core.period import Period
    from geo.core.result import Choice
    from maps.export.write import write_result
    from services.ui import console

    units, uchoices = _units(grid, cell, res, id_col)
    tr = Period.parse_range(train)
    extra = []
    if test is None:
        te = _next_period(tr)
        extra.append(Choice("test period", te.label(), "the equal-length period after --train"))
    else:
        te = Period.parse_range(test)
    try:
        share_list = tuple(float(s) for s in shares.split(","))
    except ValueError:
        raise HarmspotError(f"--shares {shares!r}: give fractions like 0.01,0.05") from None
    inc, area, _, _, cats, wt, inputs = _load(store, tr.start.isoformat(), te.end.isoformat(), category, weights,
                                              proactive, boundary)
    with _neighbour_cache(store) as cache:
        result = predictive_accuracy(inc, units, wt, train=tr, test=te, area=area, categories=cats,
                                     methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
                                     measure=measure, shares=share_list, bandwidth=bandwidth, band=band,
                                     inputs=inputs, neighbour_cache=cache)
    result.choices = uchoices + extra + result.choices
    _echo(result)
    _print_table(result.tables["summary"], f"Hot spots from {tr.label()} scored on {te.label()} ({measure})")
    if out is not None:
        if out.suffix.lower() == ".csv":
            out.parent.mkdir(parents=True, exist_ok=True)
            result.tables["curve"].to_csv(out, index=False)
        else:
            write_result(result, out)
        console.print(f"[green]wrote[/] {out}")
    if as_json:
        _print_json(result, out, inputs=False)


# ------------------------------------------------------------------------------------------ register / demo
def register(app) -> None:
    """Add the ``hotspots`` command group to the harmspot Typer app."""
    app.add_typer(hotspots_app, name="hotspots")


def demo_step(ctx) -> None:
    """Hot spots: harm-weighted Gi* layer, KDE GeoTIFF and the top-10 tasking table."""
    from services.cli import app

    gi = ctx.out / "hotspots_gistar.gpkg"
    app(args=["hotspots", "gistar", "--store", str(ctx.store_path), "--cell", "150", "--band", "250",
              "--weight", "harm", "--top", "10", "--out", str(gi), "--table", str(ctx.out / "tasking_top10.csv")],
        standalone_mode=False)
    ctx.add("Gi* hot spots, harm (GeoPackage)", gi)
    ctx.add("tasking table, top 10 (CSV)", ctx.out / "tasking_top10.csv")
    tif = ctx.out / "hotspots_kde.tif"
    app(args=["hotspots", "kde", "--store", str(ctx.store_path), "--cell", "50", "--bandwidth", "300",
              "--weight", "harm", "--out", str(tif)], standalone_mode=False)
    ctx.add("harm KDE (GeoTIFF, EPSG:27700)", tif)
