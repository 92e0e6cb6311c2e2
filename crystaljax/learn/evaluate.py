"""Classification metrics: accuracy, per-class accuracy, confusion matrices, calibration (reliability bins,
expected calibration error) and their plots.

All functions take host or device arrays and return NumPy values; class names are passed in
(the canonical tuple is ``crystaljax.structures.dataset.CLASSES``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def _as_labels(x) -> np.ndarray:
    """Integer labels (N,) from labels (N,) or probabilities/logits (N, n_classes) (argmax)."""
    x = np.asarray(x)
    if x.ndim == 2:
        x = x.argmax(axis=-1)
    return x.astype(np.int64).reshape(-1)


def accuracy(labels, preds) -> float:
    """Fraction of correct predictions.  labels (N,) int; preds (N,) int or (N, n) scores."""
    labels, preds = _as_labels(labels), _as_labels(preds)
    if labels.shape != preds.shape:
        raise ValueError(f"labels {labels.shape} and predictions {preds.shape} differ in length")
    if labels.size == 0:
        return float("nan")
    return float(np.mean(labels == preds))


def confusion_matrix(labels, preds, n: int) -> np.ndarray:
    """(n, n) int64 counts; row = true class, column = predicted class."""
    labels, preds = _as_labels(labels), _as_labels(preds)
    if labels.shape != preds.shape:
        raise ValueError(f"labels {labels.shape} and predictions {preds.shape} differ in length")
    if labels.size and (labels.min() < 0 or labels.max() >= n or preds.min() < 0 or preds.max() >= n):
        raise ValueError(f"labels/predictions must lie in [0, {n})")
    cm = np.zeros((n, n), np.int64)
    np.add.at(cm, (labels, preds), 1)
    return cm


def per_class_accuracy(labels, preds, n: int) -> np.ndarray:
    """(n,) float64 recall per true class (correct / support); NaN for classes with no examples."""
    cm = confusion_matrix(labels, preds, n)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def classification_report(labels, preds, classes: Sequence[str]) -> dict:
    """JSON-ready summary: accuracy, per-class accuracy (by name), support, confusion matrix."""
    n = len(classes)
    cm = confusion_matrix(labels, preds, n)
    pca = per_class_accuracy(labels, preds, n)
    return {
        "n": int(cm.sum()),
        "accuracy": accuracy(labels, preds),
        "per_class_accuracy": {c: (None if np.isnan(a) else float(a)) for c, a in zip(classes, pca)},
        "support": {c: int(s) for c, s in zip(classes, cm.sum(axis=1))},
        "confusion_matrix": cm.tolist(),
        "classes": list(classes),
    }


def plot_confusion(cm, classes: Sequence[str], path, *, normalize: bool = True, title: str | None = None) -> Path:
    """Write the confusion matrix ``cm`` (n, n; rows = true) as a PNG heat map with counts.

    normalize: colour by row fraction (counts are always printed).  Returns the path.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    n = len(classes)
    if cm.shape != (n, n):
        raise ValueError(f"confusion matrix {cm.shape} does not match {n} classes")
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    shown = frac if normalize else cm
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * n, 0.8 + 0.8 * n), dpi=120)
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else max(int(cm.max()), 1))
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center",
                    color="white" if frac[i, j] > 0.5 else "black", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def reliability_bins(probs, labels, n_bins: int = 15) -> dict:
    """Confidence histogram of a classifier: probs (N, C) probabilities, labels (N,) int true classes.

    The confidence of a row is its largest probability; bin b holds confidences in (b/n, (b+1)/n] (0 goes
    to the first bin).  Returns NumPy arrays: ``edges`` (n+1,), ``count`` (n,) int, ``accuracy`` (n,) fraction
    correct and ``confidence`` (n,) mean confidence (NaN in empty bins).
    """
    probs = np.asarray(probs, np.float64)
    labels = _as_labels(labels)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError(f"probabilities {probs.shape} and labels {labels.shape} do not match")
    n_bins = int(n_bins)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    b = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(count > 0, np.bincount(b, correct, n_bins) / count, np.nan)
        mean_conf = np.where(count > 0, np.bincount(b, conf, n_bins) / count, np.nan)
    return {"edges": np.linspace(0.0, 1.0, n_bins + 1), "count": count, "accuracy": acc, "confidence": mean_conf}


def expected_calibration_error(probs, labels, n_bins: int = 15) -> float:
    """ECE = sum over bins of (n_b / N) |accuracy_b - confidence_b| (bins of :func:`reliability_bins`);
    0 for a calibrated classifier, in [0, 1].  NaN for no rows."""
    bins = reliability_bins(probs, labels, n_bins)
    n = bins["count"].sum()
    if n == 0:
        return float("nan")
    filled = bins["count"] > 0
    gaps = np.abs(bins["accuracy"][filled] - bins["confidence"][filled])
    return float(np.sum(bins["count"][filled] * gaps) / n)


def plot_reliability(curves: dict, path, *, title: str | None = None) -> Path:
    """Reliability diagram: ``curves`` maps a name to :func:`reliability_bins` output; accuracy against mean
    confidence per non-empty bin (marker area ~ count), the diagonal is perfect calibration."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 4.2), dpi=120)
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="calibrated")
    for name, bins in curves.items():
        filled = bins["count"] > 0
        total = max(int(bins["count"].sum()), 1)
        ax.plot(bins["confidence"][filled], bins["accuracy"][filled], marker="o", lw=1, label=name, ms=3)
        ax.scatter(bins["confidence"][filled], bins["accuracy"][filled],
                   s=400 * bins["count"][filled] / total, alpha=0.25)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("confidence (largest probability)")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7, loc="upper left")
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def save_figure(fig, path) -> Path:
    """Lay out, write (creating the folder) and close a matplotlib figure; returns the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


__all__ = ["save_figure", "accuracy", "per_class_accuracy", "confusion_matrix", "classification_report", "plot_confusion",
           "reliability_bins", "expected_calibration_error", "plot_reliability"]
