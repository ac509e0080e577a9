"""CLI: ``harmspot dose`` (patrol dose from GPS pings) and ``harmspot evaluate`` (before/after evaluation).

services.cli helpers are imported inside the commands (services.cli imports this module).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from services.ui import STORE_HELP


def _read_polygons(path: str, what: str):
    import warnings

    from data.boundaries import load_boundary
    from services.ui import console

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        g = load_boundary(path)
    for w in caught:
        console.print(f"[yellow]![/] {what}: {w.message}")
    return g


def _read_table(path: Path):
    import pandas as pd

    from geo.core.errors import HarmspotError

    p = Path(path)
    if not p.exists():
        raise HarmspotError(f"{p}: no such file")
    if p.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(p)
    return pd.read_csv(p, dtype=str, keep_default_na=False, na_values=[""])


def _on_target(text: str) -> tuple[float, float]:
    from geo.core.errors import HarmspotError

    try:
        lo, hi = (float(v) for v in text.replace(":", "-").split("-"))
    except ValueError:
        raise HarmspotError(f"--on-target {text!r}: expected LOW-HIGH minutes, e.g. 10-20") from None
    if not 0 <= lo <= hi:
        raise HarmspotError(f"--on-target {text!r}: need 0 <= LOW <= HIGH")
    return lo, hi


def _write_csv(frame, path: Path) -> Path:
    import pandas as pd

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = frame.copy()
    for c in out.columns:
        if isinstance(out[c].dtype, pd.DatetimeTZDtype):
            out[c] = out[c].dt.tz_convert("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S+00:00")
    out.to_csv(path, index=False)
    return path


def run_dose(pings: Path, spots: str, id_col: str, out: Path, *, daily: Path | None = None,
             summary_out: Path | None = None, rejects: Path | None = None, unit_col="unit_id", time_col="timestamp",
             lon_col="longitude", lat_col="latitude", x_col=None, y_col=None, team_col=None, gap_factor=3.0,
             min_dwell=2.0, on_target="10-20", plan: Path | None = None, max_speed=70.0, max_gap_days=4.0,
             interactions: Path | None = None):
    """The body of ``harmspot dose`` (also used by the demo); returns (PingTable, AnalysisResult, outputs)."""
    from geo.patrol.dose import compute_dose
    from geo.patrol.pings import read_pings
    from services.ui import console, progress_bar

    with progress_bar("reading pings", total=None) as cb:
        pt = read_pings(pings, unit_col=unit_col, time_col=time_col, lon_col=lon_col, lat_col=lat_col,
                        x_col=x_col, y_col=y_col, team_col=team_col, max_speed_mps=max_speed)
        cb(1, 1, str(pings))
    console.print(f"pings: read {pt.read:,} = accepted {pt.accepted:,} + rejected {pt.rejected:,}")
    for reason, n in pt.reasons().items():
        console.print(f"  rejected {n:,}: {reason}")
    sp = _read_polygons(spots, "spots")
    plan_df = _read_table(plan) if plan else None
    with progress_bar("visits and dose", total=None) as cb:
        res = compute_dose(pt, sp, id_col, gap_factor=gap_factor, min_dwell_min=min_dwell,
                           on_target_min=_on_target(on_target), plan=plan_df, max_gap_days=max_gap_days)
        cb(1, 1, "done")
    outputs = {"visits": str(_write_csv(res.tables["visits"], out))}
    stem = Path(out).with_suffix("")
    daily = daily or Path(f"{stem}_daily.csv")
    outputs["daily"] = str(_write_csv(res.tables["daily"], daily))
    summary_out = summary_out or Path(f"{stem}_spots.csv")
    outputs["spots"] = str(_write_csv(res.tables["spots"], summary_out))
    outputs["units"] = str(_write_csv(res.tables["units"], Path(f"{stem}_units.csv")))
    outputs["passbys"] = str(_write_csv(res.tables["passbys"], Path(f"{stem}_passbys.csv")))
    if "teams" in res.tables:
        outputs["teams"] = str(_write_csv(res.tables["teams"], Path(f"{stem}_teams.csv")))
    if interactions:
        outputs.update(_interactions(interactions, res, out, time_col=time_col, lon_col=lon_col, lat_col=lat_col,
                                     x_col=x_col, y_col=y_col))
    if pt.rejected or rejects:
        rejects = rejects or Path(f"{stem}_rejects.csv")
        outputs["rejects"] = str(_write_csv(pt.rejects, rejects))
    return pt, res, outputs


def _interactions(path: Path, dose_res, out: Path, *, time_col, lon_col, lat_col, x_col, y_col) -> dict:
    """Count interaction logs (business checks, stop searches...) per spot, week and kind; rows with a bad
    time or position are written to <out>_interactions_rejects.csv, never dropped quietly."""
    import numpy as np

    from geo import BNG, WGS84
    from geo.patrol.pings import LOCAL_TZ, _parse_times
    from geo.patrol.dose import count_interactions
    from services.ui import console

    logs = _read_table(path)
    t = _parse_times(logs[time_col], LOCAL_TZ) if time_col in logs.columns else None
    if t is None:
        from geo.core.errors import HarmspotError

        raise HarmspotError(f"{path}: no time column {time_col!r}; columns are {list(logs.columns)}")
    if x_col:
        import pandas as pd

        x = pd.to_numeric(logs[x_col], errors="coerce").to_numpy(float)
        y = pd.to_numeric(logs[y_col], errors="coerce").to_numpy(float)
    else:
        import pandas as pd
        from pyproj import Transformer

        lon = pd.to_numeric(logs[lon_col], errors="coerce").to_numpy(float)
        lat = pd.to_numeric(logs[lat_col], errors="coerce").to_numpy(float)
        x, y = Transformer.from_crs(WGS84, BNG, always_xy=True).transform(lon, lat)
        x, y = np.asarray(x, float), np.asarray(y, float)
    bad = t.isna().to_numpy() | ~np.isfinite(x) | ~np.isfinite(y)
    outputs = {}
    if bad.any():
        rej = logs[bad].assign(reason=np.where(t.isna().to_numpy()[bad], "unparsable time", "unparsable coordinates"))
        outputs["interaction_rejects"] = str(_write_csv(rej, Path(f"{Path(out).with_suffix('')}_interactions_rejects.csv")))
        console.print(f"[yellow]![/] interactions: {int(bad.sum())} of {len(logs)} rows rejected "
                      f"(see {outputs['interaction_rejects']})")
    kind_col = "kind" if "kind" in logs.columns else None
    spots = dose_res.layer[["spot_id", "geometry"]]
    ok = ~bad
    tab = count_interactions(logs[ok].reset_index(drop=True), spots, x=x[ok], y=y[ok], t=t[ok].reset_index(drop=True),
                             kind_col=kind_col)
    outputs["interactions"] = str(_write_csv(tab, Path(f"{Path(out).with_suffix('')}_interactions.csv")))
    console.print(f"interactions: {len(logs) - int(bad.sum()):,} read, {int(tab['count'].sum()):,} inside spots")
    return outputs


def register(app) -> None:
    """Add ``dose`` and ``evaluate`` to the harmspot Typer app."""

    @app.command(epilog="Example: harmspot dose --pings pings.csv --spots grip.geojson --id-col spot_id "
                 "--out visits.csv --daily dose_daily.csv --plan crossover.csv --json")
    def dose(
        pings: Path = typer.Option(..., "--pings", help="Ping CSV (.csv/.csv.gz) or Parquet."),
        spots: str = typer.Option(..., "--spots", help="Spot polygons (GeoJSON/GeoPackage...), e.g. grip output."),
        id_col: str = typer.Option("spot_id", "--id-col", help="Id column of --spots."),
        out: Path = typer.Option(..., "--out", help="Visits CSV: spot_id, unit_id, start, end, minutes, pings, on_target."),
        daily: Optional[Path] = typer.Option(None, "--daily", help="Daily dose per spot CSV (default <out>_daily.csv)."),
        summary_out: Optional[Path] = typer.Option(None, "--summary", help="Per-spot summary CSV (default <out>_spots.csv)."),
        rejects: Optional[Path] = typer.Option(None, "--rejects", help="Rejected pings CSV (default <out>_rejects.csv)."),
        unit_col: str = typer.Option("unit_id", "--unit-col", help="Unit id column."),
        time_col: str = typer.Option("timestamp", "--time-col", help="Timestamp column (ISO with zone; naive = UK local)."),
        lon_col: str = typer.Option("longitude", "--lon-col", help="WGS84 longitude column."),
        lat_col: str = typer.Option("latitude", "--lat-col", help="WGS84 latitude column."),
        x_col: Optional[str] = typer.Option(None, "--x-col", help="BNG easting column (instead of lon/lat)."),
        y_col: Optional[str] = typer.Option(None, "--y-col", help="BNG northing column (with --x-col)."),
        team_col: Optional[str] = typer.Option(None, "--team-col", help="Team column for per-team summaries."),
        gap_factor: float = typer.Option(3.0, "--gap-factor", help="Gaps up to this many ping intervals merge."),
        min_dwell: float = typer.Option(2.0, "--min-dwell", help="Minutes; shorter stays are pass-bys."),
        on_target: str = typer.Option("10-20", "--on-target", help="On-target visit length, minutes LOW-HIGH."),
        plan: Optional[Path] = typer.Option(None, "--plan", "--schedule", help="Grip plan/schedule CSV "
                                            "(spot_id, date, treated) for compliance."),
        max_speed: float = typer.Option(70.0, "--max-speed", help="m/s; spikes faster than this are rejected."),
        max_gap: float = typer.Option(4.0, "--max-gap", help="Flag spots with more days than this between visits."),
        interactions: Optional[Path] = typer.Option(None, "--interactions", help="Interaction log CSV (time, "
                                                    "position, optional 'kind'): counted per spot and week."),
        as_json: bool = typer.Option(False, "--json", help="Print a JSON summary (last line)."),
    ):
        """Visits and daily patrol dose per spot from officers' GPS pings (rejects reported with reasons)."""
        from services.ui import console, echo_choices, print_json

        pt, res, outputs = run_dose(pings, spots, id_col, out, daily=daily, summary_out=summary_out, rejects=rejects,
                                    unit_col=unit_col, time_col=time_col, lon_col=lon_col, lat_col=lat_col,
                                    x_col=x_col, y_col=y_col, team_col=team_col, gap_factor=gap_factor,
                                    min_dwell=min_dwell, on_target=on_target, plan=plan, max_speed=max_speed,
                                    max_gap_days=max_gap, interactions=interactions)
        echo_choices(res)
        s = res.summary
        console.print(f"{s['visits']:,} visits ({s['on_target_visits']:,} on target), {s['passbys']:,} pass-bys, "
                      f"{s['minutes']:,.0f} minutes at {s['spots']} spots; Gini of dose {s['gini_minutes']:.2f}")
        if s["spots_never_visited"]:
            console.print(f"[yellow]![/] {s['spots_never_visited']} spots were never visited")
        if s["spots_gap_over_limit"]:
            console.print(f"[yellow]![/] {s['spots_gap_over_limit']} spots went more than {max_gap:g} days without a visit")
        if "compliance" in s:
            console.print(f"plan compliance: {s['planned_done']:,} of {s['planned_visits']:,} planned spot-days visited")
        for k, v in outputs.items():
            console.print(f"  {k}: {v}")
        if as_json:
            print_json({**s, "pings": pt.summary(), "outputs": outputs, "params": res.params,
                        "choices": [c.to_dict() for c in res.choices]})

    @app.command(epilog="Example: harmspot evaluate --store essex.duckdb --treated grip.geojson --control auto "
                 "--buffer 100 --before 2018-01:2018-06 --after 2018-07:2018-12 --report eval.html --json")
    def evaluate(
        store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
        treated: str = typer.Option(..., "--treated", help="Treated spot polygons with an id column."),
        control: str = typer.Option("auto", "--control", help="Control polygons, or 'auto' to match automatically."),
        id_col: str = typer.Option("spot_id", "--id-col", help="Id column of --treated (and --control)."),
        control_id_col: Optional[str] = typer.Option(None, "--control-id-col", help="Id column of --control."),
        buffer: float = typer.Option(100.0, "--buffer", help="Displacement buffer ring, metres."),
        before: str = typer.Option(..., "--before", help="FROM:TO as YYYY-MM or YYYY-MM-DD."),
        after: str = typer.Option(..., "--after", help="FROM:TO as YYYY-MM or YYYY-MM-DD."),
        category: Optional[List[str]] = typer.Option(None, "--category", help="police.uk crime type or slug; repeat."),
        weights: str = typer.Option("cchi-national-2026", "--weights", help="Shipped table name or a .csv/.toml file."),
        proactive: bool = typer.Option(False, "--proactive/--no-proactive", help="Weigh drugs, weapons, ASB."),
        towns: Optional[str] = typer.Option(None, "--towns", help="Town polygons: controls matched in the same town."),
        town_col: str = typer.Option("name", "--town-col", help="Name column of --towns."),
        visits: Optional[Path] = typer.Option(None, "--visits", help="Visits CSV from 'harmspot dose' (decay curve; "
                                              "needs incident times)."),
        schedule: Optional[Path] = typer.Option(None, "--schedule", help="Grip crossover schedule CSV (spot_id, date, "
                                                "treated) for the place-day design (needs incident dates)."),
        report: Optional[Path] = typer.Option(None, "--report", help="Write an HTML report (+ CSV tables folder)."),
        out: Optional[Path] = typer.Option(None, "--out", help="Areas layer (.gpkg/.geojson/.csv)."),
        as_json: bool = typer.Option(False, "--json", help="Print the statistics as JSON (last line)."),
    ):
        """Before/after evaluation: WDQ/TNE, WDD (counts and harm), DiD rate ratio, SPPT, MDE, decay."""
        import pandas as pd

        from geo.core.categories import resolve_categories
        from geo.evaluation.areas import evaluate_areas
        from geo.core.period import Period
        from services.cli import load_weights, open_cli_store
        from services.ui import console, echo_choices, print_json, progress_bar

        pb, pa = Period.parse_range(before), Period.parse_range(after)
        cats = resolve_categories(category) if category else None
        wt = load_weights(weights, proactive)
        with open_cli_store(store, read_only=True) as st:
            area = st.study_area()
            inc = st.incidents(categories=cats)
        tr = _read_polygons(treated, "treated")
        ctrl = "auto" if control == "auto" else _read_polygons(control, "control")
        tw = _read_polygons(towns, "towns") if towns else None
        vis = None
        if visits:
            vis = pd.read_csv(visits)
            vis["start"] = pd.to_datetime(vis["start"], utc=True, format="ISO8601")
            vis["end"] = pd.to_datetime(vis["end"], utc=True, format="ISO8601")
        sch = _read_table(schedule) if schedule else None
        with progress_bar("evaluating", total=None) as cb:
            res = evaluate_areas(inc, tr, ctrl, id_col=id_col, control_id_col=control_id_col, buffer_m=buffer,
                                 before=pb, after=pa, weights=wt, categories=cats, area=area, towns=tw,
                                 town_col=town_col, visits=vis, schedule=sch)
            cb(1, 1, "done")
        echo_choices(res)
        s = res.summary
        m = res.tables.get("matching")
        if m is not None and len(m):
            from rich.table import Table

            t = Table(title=f"automatic controls (first {min(len(m), 10)} of {len(m)}; all in the report tables)")
            for c in ("treated_id", "treated_count", "control_id", "control_count", "distance"):
                t.add_column(c, justify="right" if c.endswith(("count", "distance")) else "left")
            for _, r in m.head(10).iterrows():
                t.add_row(str(r["treated_id"]), f"{r.get('treated_count', '')}", str(r["control_id"]),
                          f"{r.get('control_count', '')}", f"{r['distance']:.2f}")
            console.print(t)
        for kind in ("counts", "harm"):
            b = s[kind]
            console.print(f"[bold]{kind}[/]: treated {b['treated_before']:,.0f} -> {b['treated_after']:,.0f} "
                          f"({b['pct_change_treated']:+.1f}%), control {b['control_before']:,.0f} -> "
                          f"{b['control_after']:,.0f}; WDQ {b['wdq']:.3f}, TNE {b['tne']:,.1f}, WDD {b['wdd']:,.1f} "
                          f"(SE {b['wdd_se']:,.1f}); rate ratio {b['rate_ratio']:.3f} "
                          f"[{b['rate_ratio_low']:.3f}, {b['rate_ratio_high']:.3f}] ({b['did_family']})")
        for w in s["warnings"]:
            console.print(f"[yellow]![/] {w}")
        if "residual" in s:
            r = s["residual"]
            console.print(f"decay: rate x {r['effect_ratio']:.2f} [{r['effect_low']:.2f}, {r['effect_high']:.2f}] "
                          f"for ~{r['effect_hours']:g} h after a visit")
        if report:
            from maps.eval_report import write_report

            write_report(res, report)
            console.print(f"report: {report}")
        if out:
            from maps.export.write import write_result

            write_result(res, out)
            console.print(f"areas: {out}")
        if as_json:
            payload = {k: v for k, v in s.items()}
            payload["choices"] = [c.to_dict() for c in res.choices]
            if report:
                payload["report"] = str(report)
            print_json(payload)


def demo_step(ctx) -> None:
    """Patrol dose from synthetic GPS pings at the top cells, and a before/after evaluation report."""
    from geo import evaluation
    from geo.core.period import Period
    from geo.synth.patrol import make_patrol_scenario
    from maps.eval_report import write_report
    from services.ui import console, echo_choices

    out = Path(ctx.out) / "patrol"
    out.mkdir(parents=True, exist_ok=True)
    sc = make_patrol_scenario(ctx.town.seed, town=ctx.town)
    pings_csv = out / "pings.csv"
    sc.pings[["unit_id", "timestamp", "longitude", "latitude", "team"]].to_csv(pings_csv, index=False)
    spots = out / "spots.geojson"
    sc.spots.to_crs("EPSG:4326").to_file(spots, driver="GeoJSON")
    sc.schedule.to_csv(out / "schedule.csv", index=False)
    ctx.add("synthetic GPS pings", pings_csv)
    _, dose, outputs = run_dose(pings_csv, str(spots), "spot_id", out / "visits.csv", team_col="team")
    echo_choices(dose)
    ctx.add("patrol visits", outputs["visits"])
    ctx.add("daily dose per spot", outputs["daily"])
    # the scenario's incidents carry the planted 40%/48 h effect (the store holds the untreated town)
    res = evaluation.evaluate_areas(sc.incident_table(), sc.treated, sc.control, before=Period.parse(*sc.before),
                                    after=Period.parse(*sc.after), visits=dose.tables["visits"],
                                    schedule=sc.schedule)
    echo_choices(res)
    c = res.summary["counts"]
    console.print(f"  treated {c['treated_before']} -> {c['treated_after']}, rate ratio {c['rate_ratio']:.2f} "
                  f"[{c['rate_ratio_low']:.2f}, {c['rate_ratio_high']:.2f}]; decay ends ~"
                  f"{res.summary['residual']['effect_hours']:g} h (planted: 48 h, 40%)")
    ctx.add("evaluation report (SYNTHETIC planted effect)", write_report(res, out / "evaluation.html", dose=dose,
                                                                         title="Patrol evaluation (SYNTHETIC)"))
