"""Metrics, calibration, threshold choice, confidence intervals and a written report for the detector.

Conventions used throughout (they match the rest of fakeface):

* the positive class is FAKE: ``is_fake`` is 1 for a fake face, 0 for a real one (dataset labels are
  0 = fake, 1 = real, so ``is_fake = 1 - label``);
* ``fake_prob`` is the model's probability of FAKE, ``sigmoid(z)`` of its single "fake" logit ``z``;
* a threshold ``t`` gives the verdict FAKE when ``fake_prob >= t``.

Inputs may be lists, numpy arrays or (CPU or GPU) torch tensors; results are plain Python numbers, lists
and dicts so that they can go straight into JSON.
"""

from __future__ import annotations

import json
import math
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.stats import binomtest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from .errors import FakefaceError

__all__ = [
    "CONFUSION_LABELS",
    "apply_temperature",
    "bootstrap_auc_interval",
    "choose_threshold",
    "classification_metrics",
    "evaluate_predictions",
    "expected_calibration_error",
    "fit_temperature",
    "ranking_metrics",
    "reliability_bins",
    "wilson_interval",
    "write_report",
]

# Confusion-matrix orientation (sklearn's): rows = true class, columns = predicted class, both ordered
# [real, fake] (negative first), so the matrix is [[tn, fp], [fn, tp]].
CONFUSION_LABELS = ("real", "fake")
DEFAULT_ECE_BINS = 15
# Search range for temperature scaling, as log T: T in [~0.0067, ~148] is far wider than any sane model needs.
_LOG_T_BOUNDS = (-5.0, 5.0)
# Bootstrap resamples are processed in chunks so memory stays ~ this many counts per chunk.
_BOOTSTRAP_CHUNK_CELLS = 4_000_000


# --------------------------------------------------------------------------------------------- inputs


def _as_1d(values, name: str, dtype=float) -> np.ndarray:
    """A 1-D numpy copy of ``values``; torch tensors are detached and moved to the CPU first."""
    if hasattr(values, "detach"):  # torch.Tensor, without importing torch here
        values = values.detach().cpu().numpy()
    if np.ndim(values) > 1:
        raise ValueError(f"{name} must be 1-D, got shape {np.shape(values)}")
    return np.asarray(values, dtype=dtype).reshape(-1)


def _check_labels(is_fake) -> np.ndarray:
    y = _as_1d(is_fake, "is_fake", dtype=float)
    if y.size == 0:
        raise ValueError("is_fake is empty: there is nothing to evaluate")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("is_fake must contain only 0 (real) and 1 (fake)")
    return y.astype(int)


def _check_inputs(is_fake, fake_prob) -> tuple[np.ndarray, np.ndarray]:
    """Validated (is_fake as int 0/1, fake_prob as float) arrays of equal length."""
    y = _check_labels(is_fake)
    p = _as_1d(fake_prob, "fake_prob")
    if p.shape != y.shape:
        raise ValueError(f"is_fake has {y.size} items but fake_prob has {p.size}")
    if not np.all(np.isfinite(p)) or p.min() < 0.0 or p.max() > 1.0:
        raise ValueError("fake_prob must be finite probabilities in [0, 1]")
    return y, p


def _has_both_classes(y: np.ndarray) -> bool:
    return 0 < int(y.sum()) < y.size


@contextmanager
def _quiet_sklearn():
    """Silence sklearn's warnings for single-class input: those cases are handled on purpose (→ 0.0)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ------------------------------------------------------------------------------ thresholded metrics


def classification_metrics(is_fake, fake_prob, threshold: float) -> dict:
    """Metrics of the verdicts ``fake_prob >= threshold`` against ``is_fake``.

    Recall is the TPR on fakes, specificity the TNR on reals. Balanced accuracy is the mean recall over the
    classes present (sklearn's definition). Undefined ratios (e.g. precision with no FAKE verdicts) are 0.0.
    """
    y, p = _check_inputs(is_fake, fake_prob)
    pred = (p >= threshold).astype(int)
    with _quiet_sklearn():
        tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, pred, labels=[0, 1]).ravel())
        metrics = {
            "threshold": float(threshold),
            "accuracy": float(accuracy_score(y, pred)),
            "precision": float(precision_score(y, pred, zero_division=0.0)),
            "recall": float(recall_score(y, pred, zero_division=0.0)),
            "f1": float(f1_score(y, pred, zero_division=0.0)),
            "specificity": float(recall_score(y, pred, pos_label=0, zero_division=0.0)),
            "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        }
    metrics["confusion"] = {"tn": tn, "fp": fp, "fn": fn, "tp": tp}
    metrics["confusion_matrix"] = {
        "rows": "true class",
        "columns": "predicted class",
        "labels": list(CONFUSION_LABELS),
        "matrix": [[tn, fp], [fn, tp]],
    }
    metrics.update(n=int(y.size), n_fake=int(y.sum()), n_real=int(y.size - y.sum()))
    return metrics


# --------------------------------------------------------------------------------- ranking metrics


def _eer_from_roc(fpr: np.ndarray, tpr: np.ndarray, thresholds: np.ndarray) -> tuple[float, float]:
    """EER where FNR (= 1 - TPR) meets FPR, interpolated between ROC points, and the nearest point's threshold.

    The ROC starts at (fpr 0, fnr 1) and ends at (fpr 1, fnr 0), so FNR - FPR changes sign exactly once.
    """
    gap = (1.0 - tpr) - fpr
    after = int(np.argmax(gap <= 0))  # first point at or past the crossing; >= 1 because gap[0] == 1
    before = after - 1
    frac = gap[before] / (gap[before] - gap[after])
    eer = fpr[before] + frac * (fpr[after] - fpr[before])
    # Ties go to `after`, which also keeps sklearn's +inf first threshold out of the answer.
    nearest = after if abs(gap[after]) <= abs(gap[before]) else before
    return float(eer), float(thresholds[nearest])


def _tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, thresholds: np.ndarray, target: float):
    """Highest TPR (and its threshold) among ROC points with FPR <= target: the lowest such threshold."""
    idx = int(np.flatnonzero(fpr <= target + 1e-12)[-1])  # fpr is non-decreasing along the curve
    threshold = float(thresholds[idx])
    return float(tpr[idx]), (threshold if math.isfinite(threshold) else None)


def ranking_metrics(is_fake, fake_prob) -> dict:
    """Threshold-free metrics: ROC AUC, average precision, EER (+ threshold), TPR at FPR 1 %, 2 % and 5 % (the
    low-false-positive end, where a detector that must not accuse real photos works).

    With only one class present none of these is defined: every field is then None.
    """
    y, p = _check_inputs(is_fake, fake_prob)
    keys = (
        "roc_auc", "average_precision", "eer", "eer_threshold",
        "tpr_at_fpr_1pct", "threshold_at_fpr_1pct", "tpr_at_fpr_2pct", "threshold_at_fpr_2pct",
        "tpr_at_fpr_5pct", "threshold_at_fpr_5pct",
    )
    if not _has_both_classes(y):
        return dict.fromkeys(keys)
    # Keep every threshold: dropping "intermediate" points could hide the exact EER crossing.
    fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    eer, eer_threshold = _eer_from_roc(fpr, tpr, thresholds)
    low_end = [v for target in (0.01, 0.02, 0.05) for v in _tpr_at_fpr(fpr, tpr, thresholds, target)]
    values = (float(roc_auc_score(y, p)), float(average_precision_score(y, p)), eer, eer_threshold, *low_end)
    return dict(zip(keys, values))


# ------------------------------------------------------------------------------------- calibration


def reliability_bins(is_fake, fake_prob, n_bins: int = DEFAULT_ECE_BINS) -> dict:
    """Per-bin mean confidence, accuracy and count, for a reliability diagram and for the ECE.

    Binary "confidence of the predicted class": the prediction is FAKE when fake_prob >= 0.5 (the calibration
    question is about the probabilities, not the operating threshold), and its confidence is
    max(fake_prob, 1 - fake_prob), so always in [0.5, 1]. Bins are the standard equal-width ones over [0, 1],
    each (lo, hi] (the first also takes 0), as in Guo et al. 2017; bins below 0.5 therefore stay empty.
    Empty bins have NaN mean confidence and accuracy and count 0.
    """
    if n_bins < 1:
        raise ValueError("n_bins must be at least 1")
    y, p = _check_inputs(is_fake, fake_prob)
    pred_fake = p >= 0.5
    confidence = np.where(pred_fake, p, 1.0 - p)
    correct = (pred_fake == (y == 1)).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):  # empty bins → NaN, on purpose
        mean_conf = np.bincount(which, weights=confidence, minlength=n_bins) / count
        accuracy = np.bincount(which, weights=correct, minlength=n_bins) / count
    return {"bin_edges": edges, "mean_confidence": mean_conf, "accuracy": accuracy, "count": count}


def expected_calibration_error(is_fake, fake_prob, n_bins: int = DEFAULT_ECE_BINS) -> float:
    """ECE = sum over bins of (bin count / n) * |accuracy - mean confidence|; bins as in `reliability_bins`."""
    bins = reliability_bins(is_fake, fake_prob, n_bins)
    filled = bins["count"] > 0
    weights = bins["count"][filled] / bins["count"].sum()
    gaps = np.abs(bins["accuracy"][filled] - bins["mean_confidence"][filled])
    return float(np.sum(weights * gaps))


def _sigmoid_nll(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    """Mean binary cross-entropy of sigmoid(logits / T), in a form that cannot overflow."""
    z = logits / temperature
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperature(logits, is_fake) -> float:
    """Temperature T > 0 minimising the NLL of sigmoid(logits / T) on VALIDATION data.

    The NLL is convex in 1/T, hence unimodal in log T, so a bounded Brent search over log T finds the optimum
    deterministically. The optimum runs to a bound when the data are perfectly separated (T ~ 0.0067) or the
    logits carry no information (T ~ 148, i.e. every probability ~ 0.5).
    """
    y = _check_labels(is_fake)
    z = _as_1d(logits, "logits")
    if z.shape != y.shape:
        raise ValueError(f"is_fake has {y.size} items but logits has {z.size}")
    if not np.all(np.isfinite(z)):
        raise ValueError("logits must be finite")
    result = minimize_scalar(
        lambda log_t: _sigmoid_nll(z, y, math.exp(log_t)),
        bounds=_LOG_T_BOUNDS,
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(math.exp(result.x))


def apply_temperature(logits, temperature: float) -> np.ndarray:
    """Calibrated fake probabilities sigmoid(logits / T) as a float numpy array (models.probabilities, the
    project's one logit -> probability rule, with the checks a metrics input gets)."""
    from .models import probabilities  # torch is only loaded when logits are turned into probabilities

    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return probabilities(_as_1d(logits, "logits"), temperature).astype(np.float64)


# ------------------------------------------------------------------------------ threshold choice


def _nearest_to_half(lo: float, hi: float) -> float:
    """The point of the interval (lo, hi] nearest 0.5 (lo excluded: p >= lo would flip items at lo)."""
    if lo < 0.5 <= hi:
        return 0.5
    return hi if hi < 0.5 else float(np.nextafter(lo, np.inf))


def _balanced_accuracy_at(y: np.ndarray, p: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Balanced accuracy of the verdicts ``p >= t`` for each threshold t."""
    fake_scores, real_scores = np.sort(p[y == 1]), np.sort(p[y == 0])
    tpr = 1.0 - np.searchsorted(fake_scores, thresholds, side="left") / fake_scores.size
    tnr = np.searchsorted(real_scores, thresholds, side="left") / real_scores.size
    return (tpr + tnr) / 2.0


def _best_balanced_accuracy_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """Threshold maximising balanced accuracy; among equally good ones, the one nearest 0.5.

    Verdicts only change at the scores, so each candidate stands for an interval (previous score, score]
    plus the interval above the top score (everything REAL).
    """
    uppers = np.append(np.unique(p), np.inf)
    lowers = np.append(-np.inf, uppers[:-1])
    balanced = _balanced_accuracy_at(y, p, uppers)
    best = np.flatnonzero(balanced >= balanced.max() - 1e-12)
    candidates = [_nearest_to_half(lowers[i], uppers[i]) for i in best]
    return float(min(candidates, key=lambda t: (abs(t - 0.5), t)))


def _plateau_threshold(y: np.ndarray, p: np.ndarray, half_width: float = 0.1, step: float = 0.01) -> float:
    """The grid threshold whose neighbourhood (+- half_width) has the best mean balanced accuracy; ties go to
    the one nearest 0.5. A few hundred validation images give a jagged curve whose single best point often
    sits at the edge of a broad plateau; its centre moves less from one sample to the next."""
    grid = np.round(np.arange(step, 1.0, step), 6)
    balanced = _balanced_accuracy_at(y, p, grid)
    window = int(round(half_width / step))
    smooth = np.array([balanced[max(0, i - window): i + window + 1].mean() for i in range(grid.size)])
    best = np.flatnonzero(smooth >= smooth.max() - 1e-12)
    return float(min(grid[best], key=lambda t: (abs(t - 0.5), t)))


def choose_threshold(is_fake, fake_prob, criterion: str = "balanced_accuracy") -> float:
    """Decision threshold for ``fake_prob >= t``, chosen from VALIDATION data only.

    Pass validation labels and scores, never the test set's: the threshold is then applied, unchanged, to
    test data. ``criterion`` is "balanced_accuracy" (maximise it; ties go to the threshold nearest 0.5),
    "balanced_accuracy_plateau" (the centre of the best +-0.1 stretch of it, on a 0.01 grid: what training
    uses, see scripts/experiments/threshold_rule.py), "eer" (the equal-error-rate point) or "real_fpr:F" (the
    lowest threshold on a 0.01 grid at which at most a share F of the real images is called fake: a cap on
    accusing real photos, whatever it costs in fakes caught). Needs both classes.
    """
    y, p = _check_inputs(is_fake, fake_prob)
    if not _has_both_classes(y):
        raise FakefaceError(
            "Cannot choose a threshold: the validation data must contain both fake and real images."
        )
    if criterion == "balanced_accuracy":
        return _best_balanced_accuracy_threshold(y, p)
    if criterion == "balanced_accuracy_plateau":
        return _plateau_threshold(y, p)
    if criterion == "eer":
        return ranking_metrics(y, p)["eer_threshold"]
    if criterion.startswith("real_fpr:"):
        cap = float(criterion.partition(":")[2])
        grid = np.round(np.arange(0.01, 1.0, 0.01), 6)
        fpr = np.array([(p[y == 0] >= t).mean() for t in grid])
        return float(grid[np.argmax(fpr <= cap)] if (fpr <= cap).any() else grid[-1])
    raise ValueError(f"unknown criterion {criterion!r}: use 'balanced_accuracy', 'balanced_accuracy_plateau', "
                     "'eer' or 'real_fpr:F'")


# --------------------------------------------------------------------------- confidence intervals


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (scipy's binomtest); (0.0, 1.0) when n == 0 (nothing
    is known)."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return max(0.0, float(ci.low)), min(1.0, float(ci.high))


def _resample_aucs(fake_scores, real_scores, fake_counts, real_counts) -> np.ndarray:
    """ROC AUC of each resample given as counts per original item (rows of ``fake_counts``/``real_counts``).

    With reals sorted, the weighted number of reals below (and tied with) each fake is a cumulative sum of
    real counts, so each AUC is one weighted sum: no per-resample sort or ranking.
    """
    order = np.argsort(real_scores, kind="stable")
    real_sorted, real_counts = real_scores[order], real_counts[:, order]
    below = np.searchsorted(real_sorted, fake_scores, side="left")
    through = np.searchsorted(real_sorted, fake_scores, side="right")
    cum = np.concatenate([np.zeros((real_counts.shape[0], 1)), np.cumsum(real_counts, axis=1)], axis=1)
    wins = cum[:, below] + 0.5 * (cum[:, through] - cum[:, below])  # ties count half
    pairs = fake_counts.sum(axis=1) * real_counts.sum(axis=1)
    return np.sum(fake_counts * wins, axis=1) / pairs


def _bootstrap_aucs(fake_scores, real_scores, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """AUCs of ``n_boot`` stratified resamples: each class is resampled with replacement to its own size."""
    n_fake, n_real = fake_scores.size, real_scores.size
    chunk = max(1, _BOOTSTRAP_CHUNK_CELLS // (n_fake + n_real))
    aucs = []
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        # Multinomial counts are exactly "draw n items with replacement", without materialising the draws.
        fake_counts = rng.multinomial(n_fake, np.full(n_fake, 1.0 / n_fake), size=size)
        real_counts = rng.multinomial(n_real, np.full(n_real, 1.0 / n_real), size=size)
        aucs.append(_resample_aucs(fake_scores, real_scores, fake_counts, real_counts))
    return np.concatenate(aucs)


def bootstrap_auc_interval(
    is_fake, fake_prob, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95
) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval for ROC AUC; (None, None) if one class is missing.

    Resampling is stratified (fakes and reals resampled separately, each to its own size) so every resample
    has both classes and the class balance of the evaluated set.
    """
    if n_boot < 1:
        raise ValueError("n_boot must be at least 1")
    y, p = _check_inputs(is_fake, fake_prob)
    if not _has_both_classes(y):
        return None, None
    aucs = _bootstrap_aucs(p[y == 1], p[y == 0], n_boot, np.random.default_rng(seed))
    alpha = 1.0 - confidence
    lo, hi = np.quantile(aucs, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


# ------------------------------------------------------------------------------ everything at once


def _rate_intervals(confusion: dict, confidence: float = 0.95) -> dict:
    """Wilson intervals for accuracy, precision, recall and specificity from confusion counts."""
    tn, fp, fn, tp = (confusion[k] for k in ("tn", "fp", "fn", "tp"))
    return {
        "accuracy": list(wilson_interval(tp + tn, tn + fp + fn + tp, confidence)),
        "precision": list(wilson_interval(tp, tp + fp, confidence)),
        "recall": list(wilson_interval(tp, tp + fn, confidence)),
        "specificity": list(wilson_interval(tn, tn + fp, confidence)),
    }


def _calibration_summary(y, p, logits, temperature) -> dict:
    """ECE, Brier score and NLL of the given probabilities; of the raw and scaled logits when given."""
    with _quiet_sklearn():
        summary = {
            "n_bins": DEFAULT_ECE_BINS,
            "ece": expected_calibration_error(y, p),
            "brier": float(brier_score_loss(y, p, pos_label=1)),
            "nll": float(log_loss(y, p, labels=[0, 1])),
        }
    if logits is not None:
        summary["ece_raw_logits"] = expected_calibration_error(y, apply_temperature(logits, 1.0))
        if temperature is not None:
            summary["temperature"] = float(temperature)
            summary["ece_temperature_scaled"] = expected_calibration_error(
                y, apply_temperature(logits, temperature)
            )
    return summary


def _group_members(y: np.ndarray, in_group: np.ndarray) -> tuple[np.ndarray, str]:
    """Items to score a group on, and how they were picked.

    A group of only fakes (e.g. one difficulty level) has no reals to rank against, so it is scored as its
    fakes against ALL reals; symmetrically, a group of only reals is scored against ALL fakes.
    """
    has_fake, has_real = np.any(y[in_group] == 1), np.any(y[in_group] == 0)
    if has_fake and has_real:
        return in_group, "group items"
    if has_fake:
        return in_group | (y == 0), "group fakes + all reals"
    return in_group | (y == 1), "group reals + all fakes"


def _per_group(y, p, groups, threshold) -> dict:
    names = np.asarray([str(g) for g in _as_1d(groups, "groups", dtype=object)])
    if names.shape != y.shape:
        raise ValueError(f"is_fake has {y.size} items but groups has {names.size}")
    result = {}
    for name in sorted(set(names.tolist())):
        members, composition = _group_members(y, names == name)
        result[name] = {
            "n_in_group": int(np.sum(names == name)),
            "scored_on": composition,
            "classification": classification_metrics(y[members], p[members], threshold),
            "ranking": ranking_metrics(y[members], p[members]),
        }
    return result


def per_source_report(is_fake, fake_prob, sources, threshold: float) -> dict:
    """Per source: its fakes' TPR and its reals' FPR at `threshold` (Wilson 95 % intervals), ROC AUC (a
    one-class source against all items of the other class, see `_group_members`), and ECE. The "reals" entry
    sums up every real photo: what share of real photos the model accuses, source by source and overall."""
    y, p = _check_inputs(is_fake, fake_prob)
    names = np.asarray([str(v) for v in sources])
    report, flagged = {}, {}
    for name in sorted(set(names.tolist())):
        mine = names == name
        members, composition = _group_members(y, mine)
        entry = {"n": int(mine.sum()), "n_fake": int((y[mine] == 1).sum()), "n_real": int((y[mine] == 0).sum()),
                 "auc_scored_on": composition, "roc_auc": ranking_metrics(y[members], p[members])["roc_auc"],
                 "ece": expected_calibration_error(y[mine], p[mine])}
        for cls, key in ((1, "tpr"), (0, "fpr")):
            sel = mine & (y == cls)
            if sel.any():
                hits = int((p[sel] >= threshold).sum())
                entry[key] = hits / int(sel.sum())
                entry[f"{key}_wilson_95"] = list(wilson_interval(hits, int(sel.sum())))
                if cls == 0:
                    flagged[name] = {"flagged": hits, "of": int(sel.sum())}
        report[name] = entry
    real = y == 0
    hits = int((p[real] >= threshold).sum())
    report_reals = {"by_source": flagged, "fpr": hits / max(1, int(real.sum())),
                    "fpr_wilson_95": list(wilson_interval(hits, int(real.sum())))}
    return {"threshold": float(threshold), "sources": report, "reals": report_reals}


def evaluate_predictions(
    is_fake, fake_prob, threshold: float, *, logits=None, temperature: float | None = None, groups=None
) -> dict:
    """All metrics in one JSON-ready dict: classification (+ Wilson 95 % intervals for accuracy, precision,
    recall and specificity), ranking (+ stratified bootstrap 95 % interval for ROC AUC), calibration (ECE over
    15 bins, Brier, NLL; with ``logits`` also the ECE of sigmoid(logits) and, with ``temperature``, of
    sigmoid(logits / T)) and, with ``groups`` (one label per item), the same metrics per group — see
    `_group_members` for how fake-only groups are scored.
    """
    y, p = _check_inputs(is_fake, fake_prob)
    classification = classification_metrics(y, p, threshold)
    classification["wilson_95"] = _rate_intervals(classification["confusion"])
    ranking = ranking_metrics(y, p)
    ranking["roc_auc_bootstrap_95"] = list(bootstrap_auc_interval(y, p))
    report = {
        "threshold": float(threshold),
        "classification": classification,
        "ranking": ranking,
        "calibration": _calibration_summary(y, p, logits, temperature),
    }
    if groups is not None:
        report["groups"] = _per_group(y, p, groups, threshold)
    return report


# -------------------------------------------------------------------------------------------- report


def _to_jsonable(value):
    """Plain-Python copy of ``value``: numpy scalars/arrays converted, NaN and ±inf as None (valid JSON)."""
    if isinstance(value, dict):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_to_jsonable(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _new_figure(width: float = 5.0, height: float = 4.5):
    # A bare Figure (no pyplot) keeps no global state and renders PNGs with Agg.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    return fig, fig.add_subplot()


# scikit-learn's display classes draw the plots; each gets an axis of a bare Figure.


def _plot_confusion(cm: dict, threshold: float, path: Path) -> None:
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = _new_figure()
    ConfusionMatrixDisplay(np.asarray(cm["matrix"]), display_labels=cm["labels"]).plot(ax=ax, cmap="Blues",
                                                                                       colorbar=False)
    ax.set(xlabel="predicted", ylabel="true", title=f"Confusion matrix (FAKE if fake_prob >= {threshold:.3f})")
    fig.tight_layout()
    fig.savefig(path)


def _plot_roc(y: np.ndarray, p: np.ndarray, path: Path) -> None:
    from sklearn.metrics import RocCurveDisplay

    fig, ax = _new_figure()
    if _has_both_classes(y):
        RocCurveDisplay.from_predictions(y, p, ax=ax, name="fakeface", plot_chance_level=True)
    else:
        ax.text(0.5, 0.5, "ROC undefined: only one class", ha="center", va="center")
    ax.set(xlabel="false positive rate (reals called fake)", ylabel="true positive rate (fakes caught)",
           title="ROC curve")
    fig.tight_layout()
    fig.savefig(path)


def _plot_reliability(y: np.ndarray, p: np.ndarray, path: Path) -> None:
    from sklearn.calibration import CalibrationDisplay

    fig, ax = _new_figure()
    if _has_both_classes(y):
        CalibrationDisplay.from_predictions(y, p, n_bins=10, ax=ax, name="fakeface")
    ax.set(xlabel="mean predicted P(fake)", ylabel="share of fakes",
           title=f"Reliability diagram (ECE = {expected_calibration_error(y, p):.3f})")
    fig.tight_layout()
    fig.savefig(path)


def write_report(metrics: dict, out_dir, *, is_fake, fake_prob, threshold: float) -> dict:
    """Write ``metrics.json`` and the confusion-matrix, ROC and reliability PNGs to ``out_dir``.

    Returns the written paths keyed "metrics", "confusion_matrix", "roc" and "reliability".
    """
    y, p = _check_inputs(is_fake, fake_prob)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": out / "metrics.json",
        "confusion_matrix": out / "confusion_matrix.png",
        "roc": out / "roc.png",
        "reliability": out / "reliability.png",
    }
    with open(paths["metrics"], "w", encoding="utf-8") as f:
        json.dump(_to_jsonable(metrics), f, indent=2, allow_nan=False)
        f.write("\n")
    cm = classification_metrics(y, p, threshold)["confusion_matrix"]
    _plot_confusion(cm, threshold, paths["confusion_matrix"])
    _plot_roc(y, p, paths["roc"])
    _plot_reliability(y, p, paths["reliability"])
    return paths
