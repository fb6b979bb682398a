"""PNG plots for the evaluation report, drawn with matplotlib's Agg canvas.

Privacy: the plots show distributions of real rows (histograms, category shares, associations).
They are NOT privacy-protected: for the data owner, not for release.

Figures are built with ``matplotlib.figure.Figure`` rather than ``pyplot``, so the report never
touches the caller's global backend or figure registry (and needs no display).
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cadasg_dist.evaluate.prepare import MISSING, NUMERIC_KINDS, category_keys, numeric_values

REAL_COLOUR = "#3b6fb6"
SYNTHETIC_COLOUR = "#e0823d"
MAX_CATEGORIES_SHOWN = 12  # further categories are pooled into "other"
_DPI = 96


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
    return buf.getvalue()


def _style(ax, title: str) -> None:
    ax.set_title(plain(title), fontsize=10, loc="left")
    ax.tick_params(labelsize=7)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def column_plot(real: pd.Series, synthetic: pd.Series, kind: str, title: str) -> bytes:
    """Real vs synthetic distribution of one column: step histograms or grouped bars."""
    fig = Figure(figsize=(3.9, 2.6))
    ax = fig.subplots()
    if kind in NUMERIC_KINDS:
        _numeric_hist(ax, numeric_values(real, kind), numeric_values(synthetic, kind), kind)
    else:
        _category_bars(ax, category_keys(real, kind), category_keys(synthetic, kind))
    _style(ax, title)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.2)  # headroom so the legend does not cover the bars
    ax.legend(fontsize=7, frameon=False, loc="upper right")
    return _png(fig)


def _numeric_hist(ax, xr: np.ndarray, xs: np.ndarray, kind: str) -> None:
    xr, xs = xr[~np.isnan(xr)], xs[~np.isnan(xs)]
    if xr.size == 0 and xs.size == 0:
        ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
        return
    ref = xr if xr.size else xs
    # the central 99% of the real values sets the range, so a few outliers do not flatten the plot
    lo, hi = np.quantile(ref, [0.005, 0.995])
    if hi <= lo:
        lo, hi = float(ref.min()) - 0.5, float(ref.max()) + 0.5
    edges = np.linspace(lo, hi, 31)
    if kind == "integer" and hi - lo <= 40:
        edges = np.arange(np.floor(lo) - 0.5, np.ceil(hi) + 1.0)  # one bin per value, not 30 uneven ones
    scale = 86400.0 if kind == "datetime" else 1.0  # matplotlib dates are days since 1970
    for x, colour, label in ((xr, REAL_COLOUR, "real"), (xs, SYNTHETIC_COLOUR, "synthetic")):
        if x.size == 0:
            continue
        counts, _ = np.histogram(np.clip(x, lo, hi), bins=edges)
        ax.stairs(counts / x.size, edges / scale, color=colour, label=label, linewidth=1.4,
                  fill=label == "real", alpha=0.35 if label == "real" else 1.0)
    if kind == "datetime":
        ax.xaxis_date()
        ax.tick_params(axis="x", labelrotation=30)
    ax.set_ylabel("share of rows", fontsize=7)


def _category_bars(ax, kr: np.ndarray, ks: np.ndarray) -> None:
    pr = pd.Series(kr).value_counts(normalize=True)
    ps = pd.Series(ks).value_counts(normalize=True)
    labels = list(pr.index) + [k for k in ps.index if k not in pr.index]
    if len(labels) <= MAX_CATEGORIES_SHOWN and all(_is_number(k) for k in labels if k != MISSING):
        # years, levels, 0/1 flags read best in their natural order; missing goes last
        labels = sorted((k for k in labels if k != MISSING), key=float) + [k for k in labels if k == MISSING]
    shown = labels[:MAX_CATEGORIES_SHOWN]
    values_r = [float(pr.get(k, 0.0)) for k in shown]
    values_s = [float(ps.get(k, 0.0)) for k in shown]
    if len(labels) > len(shown):
        shown = shown + ["other"]
        values_r.append(1.0 - sum(values_r))
        values_s.append(1.0 - sum(values_s))
    pos = np.arange(len(shown))
    ax.bar(pos - 0.2, values_r, width=0.4, color=REAL_COLOUR, label="real")
    ax.bar(pos + 0.2, values_s, width=0.4, color=SYNTHETIC_COLOUR, label="synthetic")
    ax.set_xticks(pos)
    ax.set_xticklabels([_short(k) for k in shown], rotation=35 if len(shown) > 4 else 0, ha="right"
                       if len(shown) > 4 else "center")
    ax.set_ylabel("share of rows", fontsize=7)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _short(label: str, limit: int = 14) -> str:
    label = "missing" if label == MISSING else str(label)
    return plain(label if len(label) <= limit else label[: limit - 1] + "…")


def plain(text: str) -> str:
    """Text shown literally: a '$' in a column or category name would start matplotlib mathtext."""
    return text.replace("$", r"\$")


def association_heatmaps(real: np.ndarray, synthetic: np.ndarray, names: list[str]) -> bytes:
    """Three heatmaps side by side: real, synthetic, and |real - synthetic|."""
    k = len(names)
    side = min(4.2, 1.6 + 0.16 * k)
    fig = Figure(figsize=(3 * side + 0.9, side + 0.4))
    axes = fig.subplots(1, 3)
    panels = ((real, "real", "RdBu_r", -1, 1), (synthetic, "synthetic", "RdBu_r", -1, 1),
              (np.abs(real - synthetic), "|real − synthetic|", "Reds", 0, 1))
    labels = [_short(n, 12) for n in names]
    for ax, (m, title, cmap, vmin, vmax) in zip(axes, panels, strict=True):
        im = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
        ax.set_xticklabels(labels, rotation=90, fontsize=6 if k > 15 else 7)
        ax.set_yticklabels(labels if ax is axes[0] else [""] * k, fontsize=6 if k > 15 else 7)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=6)
    return _png(fig)


def context_scores_plot(labels: list[str], scores: list[float], highlight: list[bool], small: list[bool]) -> bytes:
    """Horizontal bars of per-context scores (worst at the top): ``highlight`` ones in red,
    ``small`` ones (too few real rows to trust) in grey."""
    n = len(labels)
    fig = Figure(figsize=(6.4, 0.8 + 0.22 * n))
    ax = fig.subplots()
    colours = ["#c0392b" if hot else "#b8bfcc" if tiny else REAL_COLOUR
               for hot, tiny in zip(highlight, small, strict=True)]
    ax.barh(np.arange(n), scores, color=colours)
    ax.set_yticks(np.arange(n))
    ax.set_yticklabels([_short(lbl, 40) for lbl in labels], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("context score (1 = same as real)", fontsize=8)
    _style(ax, "Per-context fidelity, worst first")
    return _png(fig)
