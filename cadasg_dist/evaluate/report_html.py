"""HTML sections of the evaluation report: plain strings, every value escaped, CSS inline.

Privacy: the sections print statistics of real rows; the page is NOT privacy-protected and says
so at the top.
"""

from __future__ import annotations

import base64
import math
from html import escape

from cadasg_dist.evaluate.result import EvaluationResult

HIGHLIGHT_CONTEXTS = 5  # at most this many worst contexts are shown in red
MAX_TABLE_ROWS = 100  # rows of the per-context table; the rest are in metrics.json

CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;background:#f5f6f8;color:#1f2430}
main{max-width:1180px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:18px;margin:34px 0 10px;border-bottom:1px solid #d9dde5;padding-bottom:4px}
.meta{color:#5b6475;font-size:13px}
.caveat{background:#fff4e5;border-left:4px solid #e08a00;padding:10px 14px;margin:16px 0;font-size:13px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(165px,1fr));gap:12px}
.card{background:#fff;border-radius:8px;padding:12px 14px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
.card .label{font-size:12px;color:#5b6475;font-weight:600;letter-spacing:.02em}
.card .value{font-size:24px;font-weight:600;margin-top:4px}
.card .sub{font-size:11px;color:#7a8294;margin-top:2px}
.good{color:#1e8449}.fair{color:#b9770e}.poor,.bad{color:#c0392b}.muted{color:#8a93a6}
table{border-collapse:collapse;background:#fff;font-size:13px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
th,td{padding:5px 10px;border-bottom:1px solid #eceff4;text-align:right}
th{background:#eef1f6;font-weight:600} td:first-child,th:first-child,td.txt,th.txt{text-align:left}
tr.worst td{background:#fdecea} tr.small td{color:#8a93a6;font-style:italic}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:12px}
.plot{background:#fff;border-radius:8px;padding:8px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
.plot img,.wide img{max-width:100%;height:auto;display:block}
.wide{background:#fff;border-radius:8px;padding:10px;box-shadow:0 1px 2px rgba(0,0,0,.08);overflow-x:auto}
ul.notes{font-size:13px;color:#3d4453} p.explain{font-size:13px;color:#3d4453;max-width:900px}
"""


def fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if isinstance(x, float) and math.isinf(x):
        return "∞" if x > 0 else "−∞"
    return f"{x:.{digits}f}"


def pct(x: float | None) -> str:
    """A share as a percentage, with enough digits that a few copied rows do not read as 0."""
    if x is None:
        return "—"
    return "0%" if x == 0 else f"{100 * x:.2f}%" if x >= 0.0001 else "&lt;0.01%"


def grade(x: float | None) -> str:
    """CSS class of a [0, 1] score where 1 is best."""
    if x is None or math.isnan(x):
        return "muted"
    return "good" if x >= 0.9 else "fair" if x >= 0.75 else "poor"


def img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}">'


def card(label: str, value: str, css: str = "", sub: str = "") -> str:
    sub_html = f'<div class="sub">{sub}</div>' if sub else ""
    return (f'<div class="card"><div class="label">{escape(label)}</div>'
            f'<div class="value {css}">{value}</div>{sub_html}</div>')


def highlighted_contexts(r: EvaluationResult) -> list[int]:
    """Indices into ``r.per_context.rows`` of the worst contexts to flag: at most a quarter of the
    contexts that are large enough to trust, so a three-context table is not painted all red."""
    big = [i for i, row in enumerate(r.per_context.rows) if not row.small and row.score is not None]
    return big[: min(HIGHLIGHT_CONTEXTS, max(1, len(big) // 4))]


def key_text(key: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in key.items()) or "(all rows)"


def summary_cards(r: EvaluationResult) -> str:
    f, u, p = r.fidelity, r.utility, r.privacy
    cards = [card("Column shape", fmt(f.column_shape), grade(f.column_shape), "mean of 1−KS / 1−TV"),
             card("Pair trend", fmt(f.pair_trend), grade(f.pair_trend), "correlation / contingency"),
             card("Worst context", fmt(r.per_context.min), grade(r.per_context.min),
                  f"weighted mean {fmt(r.per_context.weighted_mean)}" if r.context else "no context given")]
    if u is not None:
        cards.append(card("Utility ratio", fmt(u.ratio), grade(u.ratio),
                          f"{escape(u.metric)}: {fmt(u.synthetic)} synthetic / {fmt(u.real)} real"))
    else:
        cards.append(card("Utility ratio", "—", "muted", "no target given"))
    pr = (f.precision, f.recall)
    worst_pr = math.nan if any(math.isnan(x) for x in pr) else min(pr)  # NaN: too few rows, shown muted
    cards.append(card("Precision / recall", f"{fmt(f.precision, 2)} / {fmt(f.recall, 2)}", grade(worst_pr),
                      "k-NN manifolds"))
    cards.append(card("Exact matches", pct(p.exact_match_rate), exact_risk(p.exact_match_rate, p.exact_match_baseline),
                      f"copies of train rows; holdout: {pct(p.exact_match_baseline)}"))
    cards.append(card("MIA AUC", fmt(p.mia_auc), _risk(p.mia_auc, 0.55, 0.6), "0.5 = no membership signal"))
    cards.append(epsilon_card(p.epsilon, p.delta))
    return f'<div class="cards">{"".join(cards)}</div>'


def exact_risk(rate: float | None, baseline: float | None) -> str:
    """Copies are judged against the holdout's own repeat rate, not against 0: in a table of a few
    coarse columns honest rows repeat (SLID: about 16%)."""
    if rate is None:
        return "muted"
    base = baseline or 0.0
    return _risk(rate, base * 1.1 + 0.001, base * 1.5 + 0.01)


def _risk(x: float | None, ok: float, warn: float) -> str:
    if x is None:
        return "muted"
    return "good" if x <= ok else "fair" if x <= warn else "bad"


def epsilon_card(eps: float | None, delta: float | None) -> str:
    if eps is None:
        return card("Privacy ε", "not reported", "muted", "no ledger given")
    if math.isinf(eps):
        return card("Privacy ε", "not private", "bad", "ε = ∞: no differential privacy")
    return card("Privacy ε", fmt(eps, 2), "good", f"δ = {delta:.1e}" if delta is not None else "δ not reported")


def notes_list(r: EvaluationResult) -> str:
    items = [escape(n) for n in r.notes]
    items += [f"<b>{escape(k)}</b>: {escape(v)}" for k, v in r.subsampled.items()]
    if not items:
        return ""
    return "<h2>Notes and subsampling</h2><ul class=\"notes\">" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def columns_table(r: EvaluationResult) -> str:
    rows = []
    for c in sorted(r.fidelity.column_details, key=lambda c: c.score):
        wd = fmt(c.wasserstein) if c.wasserstein is not None else "—"
        metric = "1 − KS" if c.metric == "ks" else "1 − TV"
        rows.append(f"<tr><td>{escape(c.name)}</td><td>{escape(c.kind)}</td><td>{metric}</td>"
                    f"<td class=\"{grade(c.score)}\">{fmt(c.score)}</td><td>{wd}</td>"
                    f"<td>{fmt(100 * c.missing_real, 1)}%</td><td>{fmt(100 * c.missing_synthetic, 1)}%</td></tr>")
    head = ("<tr><th>column</th><th>kind</th><th>metric</th><th>score</th><th>Wasserstein (std units)</th>"
            "<th>missing real</th><th>missing synthetic</th></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def whole_table(r: EvaluationResult) -> str:
    f = r.fidelity
    rows = [("Covariance gap ‖Σ−Σ̂‖<sub>F</sub>", fmt(f.cov_frobenius), f"relative {fmt(f.cov_frobenius_relative)}"),
            ("MMD² (RBF, median bandwidth)", fmt(f.mmd, 4), "0 = same distribution"),
            ("Precision", fmt(f.precision), "share of synthetic rows on the real manifold"),
            ("Recall", fmt(f.recall), "share of real rows covered by synthetic"),
            ("Context frequency TV", fmt(r.context_frequency_tv), "0 = same context mix")]
    body = "".join(f"<tr><td>{a}</td><td>{b}</td><td class=\"txt\">{escape(c)}</td></tr>" for a, b, c in rows)
    return f"<table><tr><th>metric</th><th>value</th><th class=\"txt\">reading</th></tr>{body}</table>"


def context_table(r: EvaluationResult) -> str:
    pc = r.per_context
    if not r.context:
        return "<p class=\"explain\">No context columns were given.</p>"
    shown = pc.rows[:MAX_TABLE_ROWS]
    with_notes = any(row.note for row in shown)
    hot = set(highlighted_contexts(r))
    rows = []
    for i, row in enumerate(shown):
        css = "worst" if i in hot else "small" if row.small else ""
        note = f"<td class=\"txt\">{escape(row.note)}</td>" if with_notes else ""
        rows.append(f"<tr class=\"{css}\"><td>{escape(key_text(row.key))}</td><td>{row.n_real}</td>"
                    f"<td>{row.n_synthetic}</td><td>{fmt(row.column_shape)}</td><td>{fmt(row.pair_trend)}</td>"
                    f"<td class=\"{grade(row.score)}\">{fmt(row.score)}</td>{note}</tr>")
    more = (f"<p class=\"explain\">{len(pc.rows) - MAX_TABLE_ROWS} more contexts in metrics.json.</p>"
            if len(pc.rows) > MAX_TABLE_ROWS else "")
    head = ("<tr><th>context</th><th>real rows</th><th>synthetic rows</th><th>column shape</th>"
            "<th>pair trend</th><th>score</th>" + ("<th class=\"txt\">note</th>" if with_notes else "") + "</tr>")
    explain = (f"<p class=\"explain\">Worst first. Red rows: the {len(hot)} worst contexts with at least "
               f"{pc.min_rows} real rows; grey italics: fewer real rows than that (noisy, left out of the minimum). "
               f"Minimum {fmt(pc.min)}, size-weighted mean {fmt(pc.weighted_mean)}.</p>")
    return f"{explain}<table>{head}{''.join(rows)}</table>{more}"


def utility_section(r: EvaluationResult) -> str:
    u = r.utility
    if u is None:
        return "<p class=\"explain\">Skipped: no target column was given.</p>"
    rows = [f"<tr><td>{escape(u.metric)}</td><td>{fmt(u.real)}</td><td>{fmt(u.synthetic)}</td>"
            f"<td class=\"{grade(u.ratio)}\">{fmt(u.ratio)}</td></tr>"]
    for name, scores in u.secondary.items():
        rows.append(f"<tr><td>{escape(name)}</td><td>{fmt(scores['real'])}</td><td>{fmt(scores['synthetic'])}</td>"
                    "<td>—</td></tr>")
    head = "<tr><th>metric</th><th>train on real</th><th>train on synthetic</th><th>ratio</th></tr>"
    explain = (f"<p class=\"explain\">{escape(u.task.capitalize())} of <b>{escape(str(r.target))}</b> with "
               f"histogram gradient boosting, each model fitted on {u.n_fit} rows (real baseline: "
               f"{escape(u.baseline)}), both tested on {u.n_test} real holdout rows.</p>")
    out = f"{explain}<table>{head}{''.join(rows)}</table>"
    if u.per_context:
        ctx_rows = "".join(
            f"<tr><td>{escape(key_text(c.key))}</td><td>{c.n_test}</td><td>{fmt(c.real)}</td>"
            f"<td>{fmt(c.synthetic)}</td><td class=\"{grade(c.ratio)}\">{fmt(c.ratio)}</td></tr>"
            for c in u.per_context[:MAX_TABLE_ROWS])
        out += (f"<p class=\"explain\">Per context (contexts with at least {u.min_context_rows} holdout rows"
                f"{' and two classes' if u.task == 'classification' else ''}), worst ratio first:</p>"
                f"<table><tr><th>context</th><th>test rows</th><th>real</th><th>synthetic</th><th>ratio</th></tr>"
                f"{ctx_rows}</table>")
    return out


def target_section(r: EvaluationResult) -> str:
    if not r.target_rates:
        return ""
    rows = "".join(f"<tr><td>{escape(t.label)}</td><td>{fmt(100 * t.real, 2)}%</td><td>{fmt(100 * t.synthetic, 2)}%"
                   f"</td><td>{fmt(t.relative_error)}</td></tr>" for t in r.target_rates[:MAX_TABLE_ROWS])
    return (f"<h2>Target class rates: {escape(str(r.target))}</h2><table><tr><th>class</th><th>real</th>"
            f"<th>synthetic</th><th>relative error</th></tr>{rows}</table>")


def privacy_section(r: EvaluationResult) -> str:
    p = r.privacy
    if p.epsilon is None:
        eps = "<span class=\"muted\">not reported</span> (no ledger given)"
    elif math.isinf(p.epsilon):
        eps = "<b class=\"bad\">not private</b>: ε = ∞, the model was trained without differential privacy"
    else:
        delta = f", δ = {p.delta:.1e}" if p.delta is not None else ""
        eps = f"<b class=\"good\">ε = {fmt(p.epsilon, 3)}{delta}</b> (from the model's privacy ledger)"
    rows = [("Exact-match rate", pct(p.exact_match_rate), exact_risk(p.exact_match_rate, p.exact_match_baseline),
             "share of synthetic rows identical to a training row; at most the holdout baseline below"),
            ("Exact-match baseline", pct(p.exact_match_baseline), "muted",
             "share of real holdout rows identical to a training row: honest repeats in this table"),
            ("DCR share", fmt(p.dcr_share), _risk(None if p.dcr_share is None else abs(p.dcr_share - 0.5), 0.05, 0.1),
             "share of synthetic rows closer to a training row than to a holdout row; 0.5 is ideal"),
            ("Membership-inference AUC", fmt(p.mia_auc), _risk(p.mia_auc, 0.55, 0.6),
             "distance attack telling training rows from holdout rows; 0.5 = coin flip, 1 = all revealed")]
    body = "".join(f"<tr><td>{a}</td><td class=\"{c}\">{b}</td><td class=\"txt\">{escape(d)}</td></tr>"
                   for a, b, c, d in rows)
    skipped = "".join(f"<p class=\"explain muted\">{escape(n)}</p>" for n in p.notes)
    return (f"<p class=\"explain\">Formal guarantee: {eps}.</p>{skipped}"
            f"<table><tr><th>check</th><th>value</th><th class=\"txt\">reading</th></tr>{body}</table>"
            "<p class=\"explain\">The empirical checks find blatant copying and memorisation; passing them proves "
            "nothing about privacy. Only a finite ε from the training ledger bounds what an attacker can learn.</p>")
