"""Test-set metrics of a model's class probabilities, for every benchmark report.

Pure numpy (ECE and TVD come from :mod:`ptdistill.metrics`), so evaluation adds no dependency.
docs/method.md §8 lists them: accuracy, NLL, ECE (15 bins) and, on synthetic data, the distance to the
true posterior p*; the GLUE-style task metrics (F1 for MRPC, Matthews for CoLA) select ``task``.
"""

from __future__ import annotations

import numpy as np
import torch

from ptdistill.arrays import as_tensor
from ptdistill.checks import check_labels, check_probs
from ptdistill.metrics import ECE_BINS, ece, tvd

__all__ = ["NLL_FLOOR", "TASK_METRICS", "confusion_matrix", "evaluate", "f1_score", "matthews", "per_class_report"]

TASK_METRICS = ("accuracy", "f1", "matthews")
#: Probabilities are floored here before the log in the NLL, so a confident mistake costs ~27.6, not inf.
NLL_FLOOR = 1e-12


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (C, C) int64; rows are the true class, columns the predicted class."""
    flat = np.asarray(labels, dtype=np.int64) * num_classes + np.asarray(predictions, dtype=np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def f1_score(confusion: np.ndarray) -> float:
    """Binary (C=2): F1 of class 1. Multiclass: macro F1 over the classes that occur in the labels
    or the predictions (as scikit-learn); a class with no true positives scores 0."""
    tp = np.diag(confusion).astype(np.float64)
    denominator = confusion.sum(0) + confusion.sum(1)  # 2 TP + FP + FN
    per_class = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    if len(confusion) == 2:
        return float(per_class[1])
    return float(per_class[denominator > 0].mean())


def per_class_report(confusion: np.ndarray | list, class_names: list[str]) -> list[dict]:
    """Precision, recall, F1 and support of every class (as scikit-learn's classification report;
    0 where undefined), from a confusion matrix with rows = true class."""
    c = np.asarray(confusion, dtype=np.float64)
    if c.shape != (len(class_names), len(class_names)):
        raise ValueError(f"confusion: expected shape ({len(class_names)}, {len(class_names)}) for class_names"
                         f" {class_names}, got {c.shape}")
    tp, predicted, support = np.diag(c), c.sum(0), c.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(tp), where=total > 0)
    return [{"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
            for name, p, r, f, n in zip(class_names, precision, recall, f1, support)]


def matthews(confusion: np.ndarray) -> float:
    """Matthews correlation for C classes (Gorodkin's R_K; the usual MCC when C=2); 0 when undefined."""
    c = confusion.astype(np.float64)
    n, correct = c.sum(), np.trace(c)
    true, pred = c.sum(1), c.sum(0)
    denominator = np.sqrt((n**2 - pred @ pred) * (n**2 - true @ true))
    return float((correct * n - true @ pred) / denominator) if denominator > 0 else 0.0


def evaluate(
    probs: np.ndarray,
    labels: np.ndarray,
    p_star: np.ndarray | None = None,
    task_metric: str = "accuracy",
) -> dict[str, float | list]:
    """Metrics of probabilities (n, C) against labels (n,); ``task`` repeats ``task_metric``'s value.

    Keys: accuracy, nll (probabilities floored at 1e-12), ece (15 bins), brier (sum over classes of
    the squared error to one-hot, mean over examples), f1, matthews, tvd (to one-hot labels),
    confusion_matrix (rows = true class), task; with ``p_star``, also l2_to_pstar and
    tvd_to_pstar (mean over examples of ||p - p*||_2 and 0.5 ||p - p*||_1). Values are floats
    (nll in nats), confusion_matrix a list of lists of ints. Definitions: docs/method.md §8.
    Raises ValueError when probs are not probability rows (n, C), labels are not integers (n,) in
    [0, C), p_star has another shape, or ``task_metric`` is not one of :data:`TASK_METRICS`.
    """
    if task_metric not in TASK_METRICS:
        raise ValueError(f"task_metric: expected one of {', '.join(TASK_METRICS)}, got {task_metric!r}")
    probs_t = as_tensor("probs", np.asarray(probs, dtype=np.float64))
    check_probs("probs", probs_t)
    n, num_classes = probs_t.shape
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels: expected integer class indices, got dtype {labels.dtype}")
    labels_t = torch.tensor(labels.astype(np.int64))
    check_labels("labels", labels_t, n, num_classes)
    if p_star is not None:
        p_star_t = as_tensor("p_star", np.asarray(p_star, dtype=np.float64))
        check_probs("p_star", p_star_t)
        if p_star_t.shape != probs_t.shape:
            raise ValueError(
                f"p_star: expected shape {tuple(probs_t.shape)} to match probs, got {tuple(p_star_t.shape)}"
            )

    p = probs_t.numpy()
    y = labels_t.numpy()
    predictions = p.argmax(1)
    onehot = np.eye(num_classes)[y]
    confusion = confusion_matrix(y, predictions, num_classes)
    results: dict[str, float | list] = {
        "accuracy": float((predictions == y).mean()),
        "nll": float(-np.log(np.maximum(p[np.arange(n), y], NLL_FLOOR)).mean()),
        "ece": ece(probs_t, labels_t, ECE_BINS),
        "brier": float(((p - onehot) ** 2).sum(1).mean()),
        "f1": f1_score(confusion),
        "matthews": matthews(confusion),
        "tvd": tvd(probs_t, labels_t),
        "confusion_matrix": confusion.tolist(),
    }
    if p_star is not None:
        diff = p - p_star_t.numpy()
        results["l2_to_pstar"] = float(np.linalg.norm(diff, axis=1).mean())
        results["tvd_to_pstar"] = float(0.5 * np.abs(diff).sum(1).mean())
    results["task"] = results[task_metric]
    return results
