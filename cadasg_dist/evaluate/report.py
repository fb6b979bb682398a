"""``write_report``: metrics.json and one self-contained report.html (PNG plots inlined).

Privacy: both files describe the real rows (distributions, small-group scores, distances to
training records). They are NOT privacy-protected: keep them with the data owner, do not publish
them. The page says so at the top.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd

from cadasg_dist.data.io import write_text
from cadasg_dist.errors import ConfigError, InvalidDataError
from cadasg_dist.evaluate import plots
from cadasg_dist.evaluate import report_html as h
from cadasg_dist.evaluate.fidelity import association_matrix
from cadasg_dist.evaluate.prepare import joint_views
from cadasg_dist.evaluate.result import EvaluationResult

logger = logging.getLogger(__name__)

MAX_PLOTTED_COLUMNS = 30  # the worst-scoring columns are plotted first
MAX_HEATMAP_COLUMNS = 30
MAX_CONTEXT_BARS = 30
PLOT_ROWS = 20000  # rows per table read for plots and heatmaps


def write_report(result: EvaluationResult, out_dir: str | Path, *, real: pd.DataFrame,
                 synthetic: pd.DataFrame) -> Path:
    """Write ``out_dir/metrics.json`` and ``out_dir/report.html``; return the report's path.

    Privacy: the files describe real rows and are NOT privacy-protected (for the data owner only).

    ``real`` and ``synthetic`` are the tables given to ``evaluate`` (the plots are drawn from them,
    subsampled to ``PLOT_ROWS`` rows). Each file is written to a temporary name and renamed, so a
    failure never leaves a half-written file.
    """
    names = list(result.column_kinds)
    for label, df in (("real", real), ("synthetic", synthetic)):
        missing = [c for c in names if c not in df.columns]
        if missing:
            raise InvalidDataError(f"the {label} table lacks column(s) {', '.join(map(repr, missing))} "
                                   "of the evaluation; pass the tables given to evaluate()")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot write the report to {out}: {exc.strerror or exc}") from None
    metrics = json.dumps(result.to_dict(), indent=2, allow_nan=False)
    page = render_html(result, real, synthetic)
    write_text(out / "metrics.json", metrics)
    report = write_text(out / "report.html", page)
    logger.info("wrote %s and %s", out / "metrics.json", report)
    return report


def _sample(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    if len(df) <= PLOT_ROWS:
        return df.reset_index(drop=True)
    return df.sample(n=PLOT_ROWS, random_state=seed).reset_index(drop=True)


def render_html(result: EvaluationResult, real: pd.DataFrame, synthetic: pd.DataFrame) -> str:
    """The whole report page as one string (no external resources)."""
    real_s, syn_s = _sample(real, result.seed), _sample(synthetic, result.seed + 1)
    sampled = len(real_s) < len(real) or len(syn_s) < len(synthetic)
    sections = [
        _header(result),
        h.summary_cards(result),
        h.notes_list(result),
        "<h2>Whole-table metrics</h2>", h.whole_table(result),
        "<h2>Columns</h2>", h.columns_table(result), _column_plots(result, real_s, syn_s, sampled),
        "<h2>Associations</h2>", _heatmaps(result, real_s, syn_s, sampled),
        "<h2>Per context</h2>", _context_plot(result), h.context_table(result),
        "<h2>Utility</h2>", h.utility_section(result),
        h.target_section(result),
        "<h2>Privacy</h2>", h.privacy_section(result),
        "<p class=\"meta\" style=\"margin-top:32px\">Metric definitions: docs/guides/evaluation.md. Full numbers: "
        "metrics.json next to this file.</p>",
    ]
    body = "\n".join(s for s in sections if s)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>CA-DASG evaluation report</title><style>{h.CSS}</style></head>"
            f"<body><main>\n{body}\n</main></body></html>\n")


def _header(r: EvaluationResult) -> str:
    when = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    train = f", {r.n_train} train rows" if r.n_train is not None else ", no train table"
    target = escape(r.target) if r.target else "none"
    context = escape(", ".join(r.context)) or "none"
    return (f"<h1>CA-DASG evaluation report</h1><div class=\"meta\">{r.n_synthetic} synthetic rows vs "
            f"{r.n_real} real holdout rows{train} · target: {target} · context: {context} · seed {r.seed} · "
            f"{r.elapsed_s:.1f} s · {when}</div>"
            "<div class=\"caveat\"><b>Not privacy-protected.</b> This report is computed from real rows and "
            "shows their distributions, small-group statistics and distances to individual training records. "
            "It is for the data owner: do not publish or share it with the synthetic data. Choosing a model "
            "by these numbers spends privacy that the model's ledger does not record.</div>")


def _column_plots(r: EvaluationResult, real: pd.DataFrame, syn: pd.DataFrame, sampled: bool) -> str:
    ordered = sorted(r.fidelity.column_details, key=lambda c: c.score)[:MAX_PLOTTED_COLUMNS]
    tiles = []
    for c in ordered:
        png = plots.column_plot(real[c.name], syn[c.name], c.kind, f"{c.name}  ({c.score:.3f})")
        tiles.append(f"<div class=\"plot\">{h.img(png, f'distribution of {c.name}')}</div>")
    notes = []
    if len(r.fidelity.column_details) > MAX_PLOTTED_COLUMNS:
        notes.append(f"the {MAX_PLOTTED_COLUMNS} worst-scoring of {len(r.fidelity.column_details)} columns are plotted")
    if sampled:
        notes.append(f"plots drawn from at most {PLOT_ROWS} rows per table")
    note = f"<p class=\"explain\">Worst column first; {'; '.join(notes)}.</p>" if notes else (
        "<p class=\"explain\">Worst column first. Numeric: share of rows per bin over the central 99% of real "
        "values (outliers pooled into the end bins); categorical: share of rows per category.</p>")
    return f"{note}<div class=\"grid\">{''.join(tiles)}</div>"


def _heatmaps(r: EvaluationResult, real: pd.DataFrame, syn: pd.DataFrame, sampled: bool) -> str:
    names = list(r.column_kinds)
    if len(names) < 2:
        return "<p class=\"explain\">A single column has no associations.</p>"
    if len(names) > MAX_HEATMAP_COLUMNS:
        worst = sorted(r.fidelity.column_details, key=lambda c: c.score)[:MAX_HEATMAP_COLUMNS]
        keep = {c.name for c in worst}
        names = [n for n in names if n in keep]
    kinds = {n: r.column_kinds[n] for n in names}
    views_r, views_s = joint_views(kinds, real, syn)
    a_r, a_s = association_matrix(views_r, names), association_matrix(views_s, names)
    png = plots.association_heatmaps(a_r, a_s, names)
    capped = f" Only the {len(names)} worst-scoring columns are shown." if len(names) < len(r.column_kinds) else ""
    sub = f" Drawn from at most {PLOT_ROWS} rows per table." if sampled else ""
    i, j = divmod(int(np.argmax(np.abs(a_r - a_s))), len(names))
    gap = abs(a_r[i, j] - a_s[i, j])
    largest = f"<b>{escape(names[i])} × {escape(names[j])}</b> ({gap:.2f})" if gap >= 0.005 else "none"
    return (f"<p class=\"explain\">Pearson correlation between numeric columns (−1..1); Cramér's V (0..1) when a "
            f"categorical column is involved (numeric side cut into real-quantile bins). Largest gap: "
            f"{largest}.{capped}{sub}</p>"
            f"<div class=\"wide\">{h.img(png, 'association heatmaps')}</div>")


def _context_plot(r: EvaluationResult) -> str:
    rows = [row for row in r.per_context.rows if row.score is not None][:MAX_CONTEXT_BARS]
    if not r.context or len(rows) < 2:
        return ""
    labels = [h.key_text(row.key) + (" (small)" if row.small else "") for row in rows]
    hot = set(h.highlighted_contexts(r))  # scored rows come first, so indices agree with ``rows``
    png = plots.context_scores_plot(labels, [row.score for row in rows], [i in hot for i in range(len(rows))],
                                    [row.small for row in rows])
    return f"<div class=\"wide\">{h.img(png, 'per-context scores')}</div>"
