"""HTML evaluation report (matplotlib figures embedded as PNG) plus CSV tables.

``write_report(evaluation, path, dose=None)`` takes the
:class:`~geo.core.result.AnalysisResult` of :func:`geo.evaluation.areas.evaluate_areas`
(and optionally of :func:`geo.patrol.dose.compute_dose`) and writes one self-contained
HTML file and a ``<name>_tables/`` folder of CSVs: statistics, monthly series,
panel, matching, SPPT, decay curve, crossover lags, and the dose tables.
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
import pandas as pd

_CAVEATS = [
    "WDQ and TNE (Bowers & Johnson 2003) have no sampling error attached; read them beside the WDD interval.",
    "The WDD's standard error assumes Poisson counts (Wheeler & Ratcliffe 2018); over-dispersed counts make "
    "it too narrow. The regression's family (Poisson / negative binomial / quasi-Poisson) is chosen from the "
    "dispersion and stated.",
    "Harm versions weight each incident by the weight table; one serious incident can move them a lot.",
    "police.uk data give months only and snap points to anonymised 'on or near' places: spots and buffers "
    "may gain or lose incidents through snapping, and time-since-visit analyses are not possible.",
    "Controls are matched on pre-period counts and harm only; unmeasured differences remain.",
]


def _fig_png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _series_fig(series: pd.DataFrame, after_months: list[str], what: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.4))
    piv = series.pivot_table(index="period", columns="role", values=what, aggfunc="sum").sort_index()
    for role, style in (("treated", "-o"), ("control", "-s"), ("treated_buffer", "--"), ("control_buffer", ":")):
        if role in piv.columns:
            ax.plot(range(len(piv)), piv[role].to_numpy(), style, label=role.replace("_", " "))
    if after_months:
        first = [i for i, p in enumerate(piv.index) if p in after_months]
        if first:
            ax.axvline(first[0] - 0.5, color="grey", lw=1)
            ax.text(first[0] - 0.4, ax.get_ylim()[1] * 0.95, "after", color="grey", va="top")
    ax.set_xticks(range(len(piv)))
    ax.set_xticklabels(piv.index, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(what)
    ax.set_title(f"{what.capitalize()} per month: treated vs control places")
    ax.legend(fontsize=8)
    return fig


def _dose_fig(visits: pd.DataFrame, lo: float, hi: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
    m = visits["minutes"].to_numpy(float)
    a1.hist(np.clip(m, 0, 60), bins=np.arange(0, 62, 2), color="#4477aa")
    a1.axvspan(lo, hi, color="green", alpha=0.15, label=f"on target {lo:g}-{hi:g} min")
    a1.set_xlabel("visit length (minutes, capped at 60)")
    a1.set_ylabel("visits")
    a1.legend(fontsize=8)
    per = visits.groupby("spot_id")["minutes"].sum().sort_values(ascending=False)
    a2.bar(range(len(per)), per.to_numpy(), color="#aa7744")
    a2.set_xlabel("spots (ranked)")
    a2.set_ylabel("total minutes")
    a2.set_title("Dose across spots", fontsize=9)
    return fig


def _decay_fig(curve: pd.DataFrame, effect_hours: float | None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.4))
    mid = (curve["bin_start_h"] + curve["bin_end_h"]) / 2
    ax.fill_between(mid, curve["low"], curve["high"], alpha=0.25, color="#4477aa", label="95% interval")
    ax.plot(mid, curve["rate_ratio"], "-o", color="#4477aa", label="rate ratio vs baseline")
    ax.axhline(1.0, color="black", lw=1)
    if effect_hours is not None and np.isfinite(effect_hours):
        ax.axvline(effect_hours, color="red", ls="--", lw=1, label=f"effect ends ~{effect_hours:g} h")
    ax.set_xlabel("hours since the last visit ended")
    ax.set_ylabel("incident rate / baseline")
    ax.set_title("Residual deterrence: rate by time since the last visit")
    ax.legend(fontsize=8)
    return fig


def _fmt(v):
    if isinstance(v, (float, np.floating)):
        return "" if not np.isfinite(v) else f"{v:,.4g}"
    return html.escape(str(v))


def _stats_table(summary: dict) -> str:
    keys = [("pct_change_treated", "% change, treated"), ("pct_change_control", "% change, control"),
            ("pct_change_buffer", "% change, buffer"), ("wdq", "WDQ"), ("tne", "TNE (prevented)"),
            ("wdd", "WDD"), ("wdd_se", "WDD SE"), ("wdd_low", "WDD low"), ("wdd_high", "WDD high"),
            ("wdd_p", "WDD p"), ("rate_ratio", "DiD rate ratio"), ("rate_ratio_low", "rate ratio low"),
            ("rate_ratio_high", "rate ratio high"), ("did_family", "regression family"), ("mde_fraction", "MDE (share)")]
    rows = "".join(f"<tr><th>{lab}</th><td>{_fmt(summary['counts'].get(k))}</td>"
                   f"<td>{_fmt(summary['harm'].get(k))}</td></tr>" for k, lab in keys)
    pre = "".join(f"<tr><th>{r.replace('_', ' ')} before / after</th>"
                  f"<td>{_fmt(summary['counts'][r + '_before'])} / {_fmt(summary['counts'][r + '_after'])}</td>"
                  f"<td>{_fmt(summary['harm'][r + '_before'])} / {_fmt(summary['harm'][r + '_after'])}</td></tr>"
                  for r in ("treated", "treated_buffer", "control", "control_buffer"))
    return f"<table><tr><th></th><th>counts</th><th>harm</th></tr>{pre}{rows}</table>"


def write_report(evaluation, path, dose=None, title: str = "Hotspot patrol evaluation") -> Path:
    """Write the HTML report and the CSV tables; returns the HTML path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tdir = path.with_name(path.stem + "_tables")
    tdir.mkdir(exist_ok=True)
    s = evaluation.summary
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p>Before: {s['before']['start']} to {s['before']['end']}; after: {s['after']['start']} to "
             f"{s['after']['end']}; {s['treated_spots']} treated and {s['control_spots']} control places; "
             f"buffer {s['buffer_m']:g} m.</p>"]
    if evaluation.choices:
        parts.append("<h2>Choices made for you</h2><ul>" + "".join(
            f"<li>{html.escape(c.message())}</li>" for c in evaluation.choices) + "</ul>")
    if s.get("warnings"):
        parts.append("<h2>Warnings</h2><ul>" + "".join(f"<li><b>{html.escape(w)}</b></li>" for w in s["warnings"])
                     + "</ul>")
    parts.append("<h2>Statistics</h2>" + _stats_table(s))
    sp = s.get("sppt", {})
    if sp.get("s_index") is not None:
        parts.append(f"<p>SPPT similarity (before vs after, treated and control places): S = {_fmt(sp.get('s_index'))}, "
                     f"robust S = {_fmt(sp.get('robust_s_index'))}.</p>")
    after_months = [m for m in pd.period_range(s["after"]["start"], s["after"]["end"], freq="M").astype(str)]
    for what in ("count", "harm"):
        parts.append(f"<img src='data:image/png;base64,{_fig_png(_series_fig(evaluation.tables['series'], after_months, what))}'/>")
    if dose is not None and len(dose.tables.get("visits", [])):
        lo, hi = dose.params.get("on_target_min", [10, 20])
        ds = dose.summary
        parts.append("<h2>Patrol dose</h2>" + f"<p>{ds['visits']:,} visits ({ds['on_target_visits']:,} on target), "
                     f"{ds['minutes']:,.0f} minutes over {ds['days']} days; Gini of minutes across spots "
                     f"{_fmt(ds['gini_minutes'])}; {ds['spots_gap_over_limit']} spots had a gap over "
                     f"{dose.params.get('max_gap_days', 4):g} days.</p>")
        parts.append(f"<img src='data:image/png;base64,{_fig_png(_dose_fig(dose.tables['visits'], lo, hi))}'/>")
    if "decay" in evaluation.tables:
        r = s["residual"]
        parts.append("<h2>Residual deterrence</h2>" + f"<p>Estimated effect: rate x {_fmt(r.get('effect_ratio'))} "
                     f"({_fmt(r.get('effect_low'))} to {_fmt(r.get('effect_high'))}) for about "
                     f"{_fmt(r.get('effect_hours'))} hours after a visit, then x {_fmt(r.get('ratio_after_effect'))}."
                     "</p>")
        parts.append(f"<img src='data:image/png;base64,{_fig_png(_decay_fig(evaluation.tables['decay'], r.get('effect_hours')))}'/>")
    elif not s.get("has_times", True):
        parts.append("<p><i>Residual deterrence by hours since a visit is not available: the incidents have months "
                     "only (police.uk).</i></p>")
    if "crossover" in evaluation.tables:
        parts.append("<h2>Crossover place-day design</h2>" + evaluation.tables["crossover"].to_html(
            index=False, float_format=lambda v: f"{v:.3g}"))
    parts.append("<h2>Caveats</h2><ul>" + "".join(f"<li>{html.escape(c)}</li>" for c in _CAVEATS) + "</ul>")
    written = []
    for name, t in evaluation.tables.items():
        if isinstance(t, pd.DataFrame) and len(t):
            t.to_csv(tdir / f"{name}.csv", index=False)
            written.append(name)
    if dose is not None:
        for name, t in dose.tables.items():
            if isinstance(t, pd.DataFrame) and len(t):
                t.to_csv(tdir / f"dose_{name}.csv", index=False)
                written.append(f"dose_{name}")
    parts.append("<h2>Tables</h2><p>CSV files in <code>" + html.escape(tdir.name) + "/</code>: "
                 + ", ".join(f"{n}.csv" for n in written) + "</p>")
    css = ("body{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}"
           "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
           "img{max-width:100%;display:block;margin:1em 0}")
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                    f"<style>{css}</style></head><body>{''.join(parts)}</body></html>", encoding="utf-8")
    return path
