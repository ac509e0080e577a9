"""Classes and colours shared by every map and export: class breaks, the harm ramp, Gi* confidence
colours, LISA quadrant colours and the styled attribute rows.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from geo.core.errors import HarmspotError
from maps.export.read import gistar_class_column, layer_kind, value_column


def class_breaks(values, k: int = 5) -> np.ndarray:
    """Upper bounds of ``k`` quantile classes of the positive values (zeros get no class).

    Quantiles (not equal intervals) because counts per cell are heavily skewed: a few cells
    hold most of the harm. Duplicated breaks (many equal values) are merged.
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if len(v) == 0:
        return np.array([1.0])
    b = np.unique(np.quantile(v, np.linspace(0, 1, k + 1)[1:]))
    return b


def parse_breaks(text: str) -> np.ndarray:
    """Class upper bounds from text such as ``"10,50,100,500"`` (positive, strictly increasing).

    Raises :class:`HarmspotError` naming what is wrong."""
    parts = [t.strip() for t in str(text).replace(";", ",").split(",") if t.strip()]
    try:
        b = np.array([float(t) for t in parts], dtype=float)
    except ValueError:
        raise HarmspotError(f"--breaks {text!r}: give class upper bounds as numbers, e.g. 10,50,100,500") from None
    if len(b) == 0 or not np.isfinite(b).all() or (b <= 0).any() or (np.diff(b) <= 0).any():
        raise HarmspotError(f"--breaks {text!r}: the class upper bounds must be positive and increasing, "
                            "e.g. 10,50,100,500")
    return b


def classify(values, breaks) -> np.ndarray:
    """Class index 0..len(breaks)-1 for each value (-1 for zero, negative or missing)."""
    v = np.asarray(values, dtype=float)
    idx = np.searchsorted(np.asarray(breaks), v, side="left")
    idx = np.clip(idx, 0, len(breaks) - 1)
    return np.where(np.isfinite(v) & (v > 0), idx, -1)


#: Sequential ramp (ColorBrewer YlOrRd 5, light to dark) for counts/harm/surfaces.
RAMP = ["#ffffb2", "#fecc5c", "#fd8d3c", "#f03b20", "#bd0026"]
#: Gi* classes (hot red, cold blue, confidence by strength).
GISTAR_COLOURS = {"hot 99": "#b2182b", "hot 95": "#ef8a62", "hot 90": "#fddbc7",
                  "cold 99": "#2166ac", "cold 95": "#67a9cf", "cold 90": "#d1e5f0", "not": "#f7f7f7"}
#: Minerva quadrants.
QUADRANT_COLOURS = ["#d7191c", "#fdae61", "#abd9e9", "#2c7bb6", "#999999"]


def ramp(n: int) -> list[str]:
    """``n`` colours from :data:`RAMP` (interpolated picks when ``n`` differs from 5)."""
    if n <= 0:
        return []
    idx = np.round(np.linspace(0, len(RAMP) - 1, n)).astype(int) if n > 1 else [len(RAMP) - 1]
    return [RAMP[i] for i in idx]


def gistar_colour(label) -> str:
    s = str(label).lower().replace("spot", "").replace("%", "")
    s = re.sub(r"\s+", " ", s).strip()
    for key, col in GISTAR_COLOURS.items():
        parts = key.split()
        if all(p in s for p in parts):
            return col
    return GISTAR_COLOURS["not"]


def feature_styles(gdf, kind: str | None = None, breaks=None) -> tuple[list[str], list[tuple[str, str]]]:
    """Per-feature colour and the legend [(label, colour)] for a vector layer.

    spots: rank bands 1-3 / 4-10 / 11+ (dark to light red); gistar: the class colours;
    zones: one colour per quadrant (``quadrant`` or Minerva's ``type``); cells: quantile classes of
    :func:`value_column`, or, with ``breaks`` (class upper bounds, e.g. last week's), those classes
    plus an open top class ("over" the last bound), so maps of different periods share colours.
    """
    kind = kind or layer_kind(gdf)
    n = len(gdf)
    if kind == "spots" and "rank" in gdf.columns:
        r = pd.to_numeric(gdf["rank"], errors="coerce").fillna(999).to_numpy()
        cols = np.where(r <= 3, "#a50f15", np.where(r <= 10, "#de2d26", "#fb6a4a"))
        return list(cols), [("rank 1-3", "#a50f15"), ("rank 4-10", "#de2d26"), ("rank 11+", "#fb6a4a")]
    if kind == "gistar":
        c = gistar_class_column(gdf)
        if c is not None:
            labels = gdf[c].astype(str)
            cols = [gistar_colour(x) for x in labels]
            legend = [(lab, gistar_colour(lab)) for lab in sorted(labels.unique(), key=lambda s: (list(GISTAR_COLOURS.values()).index(gistar_colour(s)), s))]
            return cols, legend
    qcol = "quadrant" if "quadrant" in gdf.columns else ("type" if "type" in gdf.columns else None)
    if kind == "zones" and qcol is not None:
        q = gdf[qcol].astype(str)
        uniq = sorted(q.unique())
        cmap = {u: QUADRANT_COLOURS[i % len(QUADRANT_COLOURS)] for i, u in enumerate(uniq)}
        return [cmap[x] for x in q], [(u, cmap[u]) for u in uniq]
    vc = value_column(gdf)
    if vc is not None:
        fixed = breaks is not None
        bounds = np.append(np.asarray(breaks, float), np.inf) if fixed else class_breaks(gdf[vc].to_numpy())
        cls = classify(gdf[vc].to_numpy(), bounds)
        pal = ramp(len(bounds))
        lo = 0.0
        legend = []
        for b, col in zip(bounds, pal):
            legend.append((f"{vc} over {_fmt(lo)}" if np.isinf(b) else f"{vc} {_fmt(lo)} - {_fmt(b)}", col))
            lo = b
        return [pal[i] if i >= 0 else "#ffffff" for i in cls], legend
    return ["#3366cc"] * n, []


def _fmt(v) -> str:
    v = float(v)
    return f"{v:,.0f}" if abs(v) >= 100 or v == int(v) else f"{v:,.2f}".rstrip("0").rstrip(".")


def attribute_rows(gdf) -> list[dict]:
    """Attributes as JSON-able dicts (NaN -> None, numpy -> Python, timestamps -> ISO text)."""
    df = pd.DataFrame(gdf.drop(columns=gdf.geometry.name) if hasattr(gdf, "geometry") else gdf)
    out = []
    for rec in df.to_dict("records"):
        row = {}
        for k, v in rec.items():
            if isinstance(v, (np.integer,)):
                v = int(v)
            elif isinstance(v, (np.floating, float)):
                v = None if not np.isfinite(v) else round(float(v), 4)
            elif isinstance(v, (pd.Timestamp,)):
                v = v.isoformat()
            elif v is pd.NA or v is pd.NaT:
                v = None
            elif isinstance(v, (list, tuple, np.ndarray)):
                v = ", ".join(map(str, v))
            elif isinstance(v, (np.bool_,)):
                v = bool(v)
            row[str(k)] = v
        out.append(row)
    return out
