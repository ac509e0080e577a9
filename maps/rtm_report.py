"""The RTM model report: one self-contained HTML page a partnership meeting can read.

``write_rtm_report(result, path, comparison=None, area=None, factors=None)`` takes
the :class:`~geo.core.result.AnalysisResult` of :func:`geo.rtm.model.risk_terrain` (and
optionally of :func:`geo.rtm.learned.compare_risk_models`) and writes a page in
the spirit of RTMDx's model report: what went in, the risk factors with their
spatial influence and relative risk values in plain words and as a table, the
risk map with priority places, the priority places table, how the model was
chosen, the honest held-out comparison, every automatic choice and the caveats.
Figures are matplotlib PNGs embedded as base64, so the file can be e-mailed.
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
import pandas as pd

_CAVEATS = [
    "RTM shows where the environment is associated with more incidents in the period studied; it does not show "
    "that a pub or station causes crime, and an RRV holds the other selected factors fixed.",
    "Each factor is a point layer as supplied. Missing or out-of-date features (a closed pub, an unlisted "
    "takeaway) bias its relative risk value towards 1.",
    "police.uk points are snapped to anonymised 'on or near' locations and give months only; snapping can move "
    "an incident into or out of a factor's spatial influence.",
    "Proximity is measured from the cell centre; density uses features binned to their cell. Both are "
    "approximations at the cell size shown.",
    "Nested distances of one factor are strongly correlated; the lasso step keeps one form per factor, so a "
    "factor left out may still matter at a distance close to a selected one.",
    "The held-out comparison is one later period: differences of a few tenths of PAI are within noise.",
]

_FORM_WORDS = {"proximity": "within {d} m of", "density": "where {name} cluster densely (kernel density within "
                                                          "{d} m above mean + 2 SD)"}


def _fig_png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}" style="max-width:100%">'


def _table(df: pd.DataFrame, fmt: dict | None = None) -> str:
    fmt = fmt or {}
    d = df.copy()
    for c, f in fmt.items():
        if c in d.columns:
            d[c] = d[c].map(lambda v, f=f: f.format(v) if pd.notna(v) else "")
    return d.to_html(index=False, escape=True, border=0, classes="t")


def _sentence(f: dict) -> str:
    d = f"{f['distance']:g}"
    if f["operationalization"] == "proximity":
        where = f"within {d} m of {f['name']}"
    else:
        where = f"where {f['name']} cluster densely (kernel density within {d} m above mean + 2 SD)"
    return (f"Places {where} saw on average <b>{f['rrv']:.2f} times</b> as many incidents as places without it, "
            f"other selected factors being equal (95% interval {f['ci_low']:.2f} to {f['ci_high']:.2f}).")


def _risk_map(result, area=None, factors=None) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    r = result.layer
    arr = np.asarray(r.array, float)
    arr = np.where(arr == (r.nodata if r.nodata is not None else np.nan), np.nan, arr)
    x0, y0, x1, y1 = r.bounds
    fig, ax = plt.subplots(figsize=(8, 7))
    vmax = np.nanmax(arr) if np.isfinite(np.nanmax(arr)) else 1.0
    im = ax.imshow(arr, extent=(x0, x1, y0, y1), cmap="YlOrRd", origin="upper",
                   norm=LogNorm(vmin=1, vmax=max(vmax, 1.0001)), interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.7, label="relative risk score (lowest cell = 1, log scale)")
    if area is not None:
        try:
            area.to_crs("EPSG:27700").boundary.plot(ax=ax, color="#333", linewidth=0.8)
        except Exception:  # a map without the outline is still useful
            pass
    pl = result.extra_layers.get("priority_places")
    if pl is not None and len(pl):
        pl.boundary.plot(ax=ax, color="#0044cc", linewidth=1.0)
        for _, row in pl.head(10).iterrows():
            c = row.geometry.representative_point()
            ax.annotate(str(int(row["place_id"])), (c.x, c.y), color="#0044cc", fontsize=8, weight="bold")
    if factors:
        sel = {f["name"] for f in result.summary.get("factors", [])}
        marks = ["o", "^", "s", "D", "v", "P", "X", "*", "h", "<"]
        for i, fl in enumerate([f for f in factors if f.name in sel]):
            ax.scatter(fl.xy[:, 0], fl.xy[:, 1], s=6, marker=marks[i % len(marks)], color="k", alpha=0.6,
                       label=fl.name)
        if sel:
            ax.legend(loc="lower left", fontsize=8, title="selected factors", title_fontsize=8)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("easting (m, BNG)")
    ax.set_ylabel("northing (m, BNG)")
    ax.set_title("Risk terrain: relative risk score; blue outlines = priority places")
    ax.ticklabel_format(style="plain")
    return _fig_png(fig)


def _rrv_chart(table: pd.DataFrame) -> str:
    import matplotlib.pyplot as plt

    t = table.iloc[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.5 * len(t)))
    labels = [f"{r['name']} ({r['operationalization']}, {r['distance']:g} m)" for _, r in t.iterrows()]
    y = np.arange(len(t))
    ax.errorbar(t["rrv"], y, xerr=[t["rrv"] - t["ci_low"], t["ci_high"] - t["rrv"]], fmt="o", color="#b2182b",
                capsize=4)
    ax.axvline(1, color="#888", linestyle="--", linewidth=0.8)
    ax.set_yticks(y, labels)
    ax.set_xscale("log")
    ax.set_xlabel("relative risk value (log scale; 1 = no change), 95% interval")
    return _fig_png(fig)


def _comparison_charts(cmp) -> tuple[str, str, str]:
    import matplotlib.pyplot as plt

    comp = cmp.tables["comparison"]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    models = list(dict.fromkeys(comp["model"]))
    shares = sorted(comp["area_share"].unique())
    w = 0.8 / len(models)
    for i, m in enumerate(models):
        v = [comp[(comp["model"] == m) & (comp["area_share"] == a)]["pai"].iloc[0] for a in shares]
        ax.bar(np.arange(len(shares)) + i * w, v, width=w, label=m)
    ax.set_xticks(np.arange(len(shares)) + w * (len(models) - 1) / 2, [f"top {a:.0%} of area" for a in shares])
    ax.set_ylabel("PAI on the held-out period")
    ax.legend(fontsize=8)
    pai_png = _fig_png(fig)
    imp = cmp.tables["importances"].head(12).iloc[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.4 + 0.3 * len(imp)))
    ax.barh(imp["feature"], imp["importance"], xerr=imp["sd"], color="#4575b4")
    ax.set_xlabel("permutation importance (rise in Poisson deviance)")
    imp_png = _fig_png(fig)
    pdp = cmp.summary.get("partial_dependence", {})
    pdp_png = ""
    if pdp:
        n = len(pdp)
        fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 2.8), squeeze=False)
        for ax, (feat, d) in zip(axes[0], pdp.items()):
            ax.plot(d["grid"], d["average"], color="#d73027")
            ax.set_title(feat, fontsize=9)
            ax.set_xlabel("metres" if feat.startswith("dist_") else "features per km²", fontsize=8)
        axes[0][0].set_ylabel("expected incidents per cell")
        fig.tight_layout()
        pdp_png = _fig_png(fig)
    return pai_png, imp_png, pdp_png


def write_rtm_report(result, path, comparison=None, area=None, factors=None, title: str | None = None) -> Path:
    """Write the RTM HTML report (see module docstring). Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    s = result.summary
    tab = result.tables["factors"]
    per = result.period.label() if hasattr(result.period, "label") else str(result.period or "all data")
    cats = result.params.get("categories", "all")
    cats = "all crime" if cats == "all" else ", ".join(cats)
    title = title or "Risk terrain model"
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p class='meta'>{html.escape(cats)} &middot; {html.escape(per)} &middot; "
             f"{s['cells']:,} cells of {s['cell_m']:g} m &middot; block {s['block_m']:g} m &middot; "
             f"generated {html.escape(result.created)}</p>"]
    if "synthetic" in title.lower() or any("synth" in str(f.get("source", "")).lower()
                                           for f in result.inputs.get("factors", [])):
        parts.append("<p class='warn'>SYNTHETIC data: this report was made from generated data.</p>")
    parts.append("<h2>In brief</h2><ul>")
    parts.append(f"<li>{s['incidents']:,} incidents were modelled over {s['cells']:,} cells.</li>")
    if len(tab):
        parts.append(f"<li>{len(tab)} of {len(result.inputs.get('factors', [])) or '?'} risk factors were selected "
                     f"({html.escape(s['distribution'])} model):<ul>")
        for f in s["factors"]:
            parts.append(f"<li>{_sentence(f)}</li>")
        parts.append("</ul></li>")
        parts.append(f"<li>Where the selected factors coincide, risk is up to <b>{s['max_rrs']:.1f} times</b> the "
                     "lowest-risk places.</li>")
    else:
        parts.append("<li>No risk factor improved the model: the incidents are not associated with the layers given "
                     "(every cell scores 1).</li>")
    parts.append(f"<li>{s['priority_places']} priority places (cells with RRS &ge; "
                 f"{s['priority_threshold_rrs']:.2f}) cover {s['priority_area_share']:.1%} of the area and held "
                 f"{s['priority_incident_share']:.1%} of the incidents.</li>")
    if comparison is not None:
        cs = comparison.summary
        parts.append(f"<li>On a later held-out period ({cs['test_period']['start']} to {cs['test_period']['end']}) "
                     f"the best at anticipating incidents was <b>{html.escape(cs['winner'])}</b> "
                     "(see the comparison below).</li>")
    parts.append("</ul>")
    parts.append("<h2>Risk map</h2>" + _img(_risk_map(result, area, factors), "risk map"))
    if len(tab):
        parts.append("<h2>Risk factors</h2>")
        show = tab[["name", "operationalization", "distance", "coef", "rrv", "ci_low", "ci_high", "p",
                    "cells_share"]].rename(columns={"name": "factor", "distance": "spatial influence (m)",
                                                    "coef": "coefficient", "rrv": "RRV", "ci_low": "95% CI low",
                                                    "ci_high": "95% CI high", "cells_share": "share of cells"})
        parts.append(_table(show, {"coefficient": "{:.4f}", "RRV": "{:.2f}", "95% CI low": "{:.2f}",
                                   "95% CI high": "{:.2f}", "p": "{:.2g}", "share of cells": "{:.1%}"}))
        parts.append("<p>RRV = exp(coefficient). A cell's relative risk score is the product of the RRVs of the "
                     "factors present there, scaled so the lowest-risk cell scores 1.</p>")
        parts.append(_img(_rrv_chart(tab), "relative risk values"))
    pl = result.extra_layers.get("priority_places")
    if pl is not None and len(pl):
        parts.append("<h2>Priority places</h2><p>Clusters of touching cells with the highest relative risk, ranked by "
                     "the incidents they held. Numbers match the map.</p>")
        cen = pl.geometry.representative_point()
        ll = cen.to_crs("EPSG:4326")
        t = pd.DataFrame({"place": pl["place_id"], "cells": pl["cells"], "area (km²)": pl["area_km2"],
                          "max RRS": pl["max_rrs"], "incidents": pl["incidents"],
                          "share of incidents": pl["incident_share"], "easting": cen.x.round(0),
                          "northing": cen.y.round(0), "lat": ll.y.round(5), "lon": ll.x.round(5)})
        parts.append(_table(t.head(20), {"area (km²)": "{:.3f}", "max RRS": "{:.1f}", "share of incidents": "{:.1%}",
                                         "easting": "{:.0f}", "northing": "{:.0f}"}))
        if len(pl) > 20:
            parts.append(f"<p>{len(pl) - 20} more places are in the priority places file.</p>")
    if comparison is not None:
        cs = comparison.summary
        pai_png, imp_png, pdp_png = _comparison_charts(comparison)
        parts.append("<h2>Does it anticipate the next period? RTM vs learned risk vs a plain hot spot map</h2>")
        parts.append(f"<p>All three were built from {cs['train_period']['start']} to {cs['train_period']['end']} "
                     f"({cs['train_incidents']:,} incidents) and scored on {cs['test_period']['start']} to "
                     f"{cs['test_period']['end']} ({cs['test_incidents']:,} incidents), which none of them saw. "
                     "Hit rate = share of held-out incidents in the top cells; PAI = hit rate / share of area. "
                     "Nothing was tuned on the held-out period.</p>")
        comp = comparison.tables["comparison"].copy()
        comp["area_share"] = comp["area_share"].map(lambda a: f"{a:.0%}")
        parts.append(_table(comp[["model", "area_share", "hits", "hit_rate", "pai"]],
                            {"hits": "{:.1f}", "hit_rate": "{:.1%}", "pai": "{:.2f}"}))
        margin = cs.get("margin_mean_pai")
        parts.append(f"<p><b>Winner: {html.escape(cs['winner'])}</b> (by mean PAI over the area shares; "
                     + ", ".join(f"{k} of area: {html.escape(v)}" for k, v in cs["winner_by_area"].items())
                     + (f"; lead over the runner-up {margin:.2f} PAI" if margin == margin else "") + ").</p>")
        parts.append(_img(pai_png, "PAI comparison"))
        parts.append("<h3>What the learned model uses</h3><p>Permutation importance of each feature (distance to "
                     "the nearest feature, or feature density at a radius) and how the expected count changes "
                     "with the most important ones (partial dependence).</p>")
        parts.append(_img(imp_png, "importances"))
        if pdp_png:
            parts.append(_img(pdp_png, "partial dependence"))
    parts.append("<h2>How the model was chosen</h2>")
    lasso = s.get("lasso") or {}
    if lasso.get("cv_scheme") == "spatial":
        folds = (f"{lasso.get('folds')} folds of {lasso['cv_block_m']:g} m square blocks (the cells of a block are "
                 "held out together, so the check is not flattered by near-identical neighbouring cells)")
    elif lasso.get("cv_scheme") == "random":
        folds = f"{lasso.get('folds')} random folds of cells"
    else:
        folds = "folds of cells"
    parts.append(f"<p>{s['candidates']} candidate variables (each factor as proximity and as density at "
                 f"{', '.join(f'{d:g}' for d in result.params['distances_m'])} m) went into a lasso Poisson "
                 f"regression whose penalty was chosen by cross-validation over {folds}; {s['screened_in']} (the strongest form of each factor with a positive "
                 "coefficient) went on to bidirectional stepwise selection by BIC, fitted as Poisson and as "
                 "negative binomial; the lower BIC was kept.</p>")
    parts.append(_table(result.tables["distributions"], {"bic": "{:,.1f}"}))
    if result.tables.get("dropped_candidates") is not None and len(result.tables["dropped_candidates"]):
        parts.append(f"<p>{len(result.tables['dropped_candidates'])} candidates could not be estimated (flag no cell "
                     "or every cell) and were left out.</p>")
    parts.append("<h2>Inputs</h2>")
    fin = pd.DataFrame(result.inputs.get("factors", []))
    if len(fin):
        fin["dropped"] = fin["dropped"].map(lambda d: ", ".join(f"{v} {k}" for k, v in d.items()) if d else "")
        parts.append(_table(fin[["name", "source", "read", "points", "dropped"]]))
    parts.append("<h2>Choices made for you</h2><ul>")
    for c in result.choices:
        parts.append(f"<li>{html.escape(c.message())}</li>")
    parts.append("</ul><h2>Caveats</h2><ul>" + "".join(f"<li>{html.escape(c)}</li>" for c in _CAVEATS) + "</ul>")
    parts.append("<p class='meta'>Method: Caplan &amp; Kennedy (2011) Risk Terrain Modeling Manual; Caplan, Kennedy "
                 "&amp; Piza (2013) RTMDx User Manual; PAI: Chainey, Tompson &amp; Uhlig (2008). Made with harmspot."
                 "</p>")
    css = ("body{font-family:Arial,Helvetica,sans-serif;max-width:980px;margin:2em auto;color:#222;line-height:1.45}"
           "h1{color:#7f0000}h2{border-bottom:2px solid #eee;padding-bottom:.2em;margin-top:1.6em}"
           "table.t{border-collapse:collapse;margin:.6em 0;font-size:.9em}table.t td,table.t th{padding:.3em .6em;"
           "border-bottom:1px solid #ddd;text-align:right}table.t th{background:#f4f4f4}.meta{color:#666;"
           "font-size:.9em}.warn{background:#fff3cd;padding:.5em;border:1px solid #e0c060}")
    doc = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{css}</style></head><body>{''.join(parts)}</body></html>")
    p.write_text(doc, encoding="utf-8")
    return p
