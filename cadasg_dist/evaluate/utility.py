"""Machine-learning utility: train on synthetic, test on real (TSTR) vs train on real (TRTR).

Privacy: both models and the scores read real rows (the train table and the holdout). The
numbers are NOT privacy-protected; picking a generator by them spends privacy that no ledger
records.

Both models are scikit-learn histogram gradient boosting with default parameters and a fixed
``random_state``, fitted on the same number of rows, and scored on the same real holdout.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.metrics import f1_score, mean_absolute_error, r2_score, roc_auc_score

from cadasg_dist.evaluate.prepare import MISSING, NUMERIC_KINDS, category_keys, numeric_values
from cadasg_dist.evaluate.result import ContextUtility, UtilityResult

logger = logging.getLogger(__name__)

MIN_CONTEXT_TEST_ROWS = 200  # fewer holdout rows than this make a per-context score too noisy
MAX_ITER = 200
# Early stopping on a 10% validation split from this many fitting rows on (scikit-learn's default
# switches it on only above 10,000). Without it a many-class target on a few thousand rows grew
# classes x 200 trees per model (17 classes: 14 s); the stopping split needs enough rows per class.
EARLY_STOP_ROWS = 1000
EARLY_STOP_MIN_CLASS = 10
_MAX_CATEGORIES = 255  # HistGradientBoosting's limit for native categorical features


def measure_utility(fit_real: pd.DataFrame, synthetic: pd.DataFrame, test: pd.DataFrame, *,
                    target: str, kinds: dict[str, str], test_cells: np.ndarray,
                    cell_keys: list[dict[str, str]], seed: int, max_rows: int, baseline: str) -> UtilityResult:
    """TSTR vs TRTR on ``test``; ``test_cells`` gives each test row's context cell."""
    task = "classification" if kinds[target] not in NUMERIC_KINDS else "regression"
    y = [_target(df[target], kinds[target], task) for df in (fit_real, synthetic, test)]
    keep = [_present(v, task) for v in y]
    frames = [df.loc[k].reset_index(drop=True) for df, k in zip((fit_real, synthetic, test), keep, strict=True)]
    y = [v[k] for v, k in zip(y, keep, strict=True)]
    test_cells = test_cells[keep[2]]
    features = [c for c in kinds if c != target]
    x_real, x_syn, x_test = _feature_frames(frames, kinds, features)
    rng = np.random.default_rng(seed)
    n_fit = min(len(x_real), len(x_syn), max_rows)
    preds = []
    for x, yy in ((x_real, y[0]), (x_syn, y[1])):
        idx = np.sort(rng.choice(len(x), size=n_fit, replace=False))
        preds.append(_fit_predict(task, x.iloc[idx], yy[idx], x_test, seed))
    classes = np.unique(y[2])
    metric = "r2" if task == "regression" else ("roc_auc" if len(classes) <= 2 else "roc_auc_ovr_macro")
    real_score = _score(task, y[2], preds[0], classes)
    syn_score = _score(task, y[2], preds[1], classes)
    secondary = {name: {"real": _secondary(name, y[2], preds[0], classes),
                        "synthetic": _secondary(name, y[2], preds[1], classes)}
                 for name in (("macro_f1",) if task == "classification" else ("mae",))}
    per_context = _per_context(task, y[2], preds, classes, test_cells, cell_keys)
    return UtilityResult(task=task, metric=metric, real=real_score, synthetic=syn_score,
                         ratio=_ratio(real_score, syn_score, task), secondary=secondary,
                         per_context=per_context, n_fit=n_fit, n_test=len(x_test), baseline=baseline,
                         min_context_rows=MIN_CONTEXT_TEST_ROWS)


def _target(s: pd.Series, kind: str, task: str) -> np.ndarray:
    return category_keys(s, kind) if task == "classification" else numeric_values(s, kind)


def _present(y: np.ndarray, task: str) -> np.ndarray:
    # rows without a target cannot be scored; they are dropped rather than made a class
    return y != MISSING if task == "classification" else ~np.isnan(y)


def _feature_frames(frames: list[pd.DataFrame], kinds: dict[str, str], features: list[str]) -> list[pd.DataFrame]:
    """Model inputs: numeric columns as floats, categories as pandas categoricals on one shared
    category list (so codes agree between the models and the test set)."""
    out: list[dict[str, object]] = [{} for _ in frames]
    for name in features:
        kind = kinds[name]
        if kind in NUMERIC_KINDS:
            for o, df in zip(out, frames, strict=True):
                o[name] = numeric_values(df[name], kind)
            continue
        keys = [category_keys(df[name], kind) for df in frames]
        cats = sorted({k for kk in keys for k in np.unique(kk)} - {MISSING})
        for o, kk in zip(out, keys, strict=True):
            col = pd.Categorical(np.where(kk == MISSING, None, kk), categories=cats)
            # past the estimator's native limit, fall back to ordinal codes (missing stays NaN)
            o[name] = col if len(cats) <= _MAX_CATEGORIES else np.where(col.codes < 0, np.nan, col.codes)
    return [pd.DataFrame(o) for o in out]


def _fit_predict(task: str, x: pd.DataFrame, y: np.ndarray, x_test: pd.DataFrame, seed: int
                 ) -> np.ndarray | dict[str, np.ndarray]:
    """Regression: predictions. Classification: {class label: probability} per test row."""
    # scikit-learn cannot bin a numeric column with no values at all (a generator that only emits
    # gaps); such a column carries no information, so it becomes a constant
    empty = [c for c in x.columns if x[c].dtype.kind == "f" and x[c].isna().all()]
    if empty:
        x = x.assign(**{c: 0.0 for c in empty})
    if task == "regression":
        model = HistGradientBoostingRegressor(max_iter=MAX_ITER, random_state=seed, categorical_features="from_dtype",
                                              early_stopping=len(x) >= EARLY_STOP_ROWS)
        return model.fit(x, y).predict(x_test)
    labels, counts = np.unique(y, return_counts=True)
    if len(labels) < 2:
        # one class only (a collapsed generator): the honest model predicts that class always
        logger.info("utility: the training rows hold a single class %r; predicting it always", labels[0])
        return {str(labels[0]): np.ones(len(x_test))}
    stop = len(x) >= EARLY_STOP_ROWS and counts.min() >= EARLY_STOP_MIN_CLASS
    model = HistGradientBoostingClassifier(max_iter=MAX_ITER, random_state=seed, categorical_features="from_dtype",
                                           early_stopping=stop)
    proba = model.fit(x, y).predict_proba(x_test)
    return {str(c): proba[:, i] for i, c in enumerate(model.classes_)}


def _aligned(pred: dict[str, np.ndarray], classes: np.ndarray, n: int) -> np.ndarray:
    """(n, len(classes)) probabilities over the test classes; a class the model never saw gets 0."""
    p = np.column_stack([pred.get(str(c), np.zeros(n)) for c in classes])
    total = p.sum(axis=1, keepdims=True)
    return np.where(total > 0, p / np.where(total > 0, total, 1), 1.0 / len(classes))


def _score(task: str, y: np.ndarray, pred: np.ndarray | dict[str, np.ndarray], classes: np.ndarray,
           rows: np.ndarray | None = None) -> float | None:
    if rows is not None:
        y = y[rows]
        pred = pred[rows] if task == "regression" else {c: v[rows] for c, v in pred.items()}
    if task == "regression":
        return float(r2_score(y, pred)) if len(y) > 1 else None
    present = np.unique(y)
    if len(present) < 2:
        return None  # AUC is undefined on one class
    if len(classes) == 2:
        return float(roc_auc_score(y == classes[1], _aligned(pred, classes, len(y))[:, 1]))
    p = _aligned(pred, present, len(y))
    if len(present) == 2:
        return float(roc_auc_score(y == present[1], p[:, 1]))
    return float(roc_auc_score(y, p, multi_class="ovr", average="macro", labels=present))


def _secondary(name: str, y: np.ndarray, pred: np.ndarray | dict[str, np.ndarray], classes: np.ndarray) -> float:
    if name == "mae":
        return float(mean_absolute_error(y, pred))
    labels = classes[np.argmax(_aligned(pred, classes, len(y)), axis=1)]
    return float(f1_score(y, labels, average="macro", labels=classes, zero_division=0))


def _ratio(real: float | None, synthetic: float | None, task: str) -> float | None:
    """synthetic / real; for R^2 a negative synthetic score counts as 0 and a non-positive real
    score leaves the ratio undefined (None)."""
    if real is None or synthetic is None:
        return None
    if task == "regression":
        return max(synthetic, 0.0) / real if real > 0 else None
    return synthetic / real if real > 0 else None


def _per_context(task: str, y: np.ndarray, preds: list, classes: np.ndarray, cells: np.ndarray,
                 keys: list[dict[str, str]]) -> tuple[ContextUtility, ...]:
    if len(keys) <= 1:
        return ()
    out = []
    for cell, key in enumerate(keys):
        rows = np.flatnonzero(cells == cell)
        if rows.size < MIN_CONTEXT_TEST_ROWS:
            continue
        real = _score(task, y, preds[0], classes, rows)
        syn = _score(task, y, preds[1], classes, rows)
        if real is None:
            continue  # one class only in this context: nothing to rank
        out.append(ContextUtility(key, int(rows.size), real, syn, _ratio(real, syn, task)))
    out.sort(key=lambda c: (c.ratio is None, c.ratio if c.ratio is not None else 0.0))
    return tuple(out)
