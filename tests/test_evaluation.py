"""Tests of ptdistill.evaluation against hand computations (and scikit-learn when installed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ptdistill.evaluation import NLL_FLOOR, TASK_METRICS, evaluate, per_class_report

LABELS = np.array([0, 0, 1, 1, 2, 2])
# Predictions 0, 1, 1, 0, 2, 2: right, wrong, right, wrong, right, right.
PROBS = np.array(
    [
        [0.70, 0.20, 0.10],
        [0.25, 0.50, 0.25],
        [0.05, 0.90, 0.05],
        [0.55, 0.35, 0.10],
        [0.15, 0.15, 0.70],
        [0.30, 0.20, 0.50],
    ]
)


def test_hand_computed_example():
    result = evaluate(PROBS, LABELS)
    assert result["confusion_matrix"] == [[1, 1, 0], [1, 1, 0], [0, 0, 2]]
    assert result["accuracy"] == pytest.approx(4 / 6)
    # Per-class F1 = 2TP / (2TP + FP + FN): class 0: 2/4, class 1: 2/4, class 2: 4/4.
    assert result["f1"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    # MCC = (c s - sum t_k p_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2)), s=6, c=4, t = p = (2, 2, 2).
    assert result["matthews"] == pytest.approx((4 * 6 - 12) / math.sqrt((36 - 12) * (36 - 12)))
    assert result["nll"] == pytest.approx(-sum(map(math.log, [0.7, 0.25, 0.9, 0.35, 0.7, 0.5])) / 6)
    # ECE bins (k/15, (k+1)/15]: {0.7, 0.7} both right, {0.5, 0.5} one right, {0.9} right, {0.55} wrong.
    assert result["ece"] == pytest.approx((2 * 0.3 + 2 * 0.0 + 0.1 + 0.55) / 6)
    brier = sum(sum((p - (c == y)) ** 2 for c, p in enumerate(row)) for row, y in zip(PROBS, LABELS)) / 6
    assert result["brier"] == pytest.approx(brier)
    assert result["tvd"] == pytest.approx(1 - np.mean([0.7, 0.25, 0.9, 0.35, 0.7, 0.5]))
    assert result["task"] == result["accuracy"]
    assert "l2_to_pstar" not in result and "tvd_to_pstar" not in result


def test_perfect_predictor():
    labels = np.array([2, 0, 1, 1, 0])
    result = evaluate(np.eye(3)[labels], labels, task_metric="matthews")
    for key, value in {"accuracy": 1, "nll": 0, "ece": 0, "brier": 0, "f1": 1, "matthews": 1, "tvd": 0}.items():
        assert result[key] == pytest.approx(value, abs=1e-12), key
    assert result["confusion_matrix"] == [[2, 0, 0], [0, 2, 0], [0, 0, 1]]
    assert result["task"] == 1.0


def test_constant_predictor():
    probs = np.tile([0.5, 0.3, 0.2], (6, 1))
    result = evaluate(probs, LABELS, task_metric="f1")
    assert result["accuracy"] == pytest.approx(1 / 3)
    assert result["matthews"] == 0.0  # undefined (no variance in the predictions): 0 by convention
    assert result["f1"] == pytest.approx((2 * 2 / (2 * 2 + 4 + 0)) / 3)  # class 0 only; 1 and 2 score 0
    assert result["task"] == result["f1"]
    assert result["ece"] == pytest.approx(abs(1 / 3 - 0.5))
    assert result["nll"] == pytest.approx(-(2 * math.log(0.5) + 2 * math.log(0.3) + 2 * math.log(0.2)) / 6)
    assert result["confusion_matrix"] == [[2, 0, 0], [2, 0, 0], [2, 0, 0]]


def test_binary_f1_and_matthews():
    labels = np.array([1, 1, 1, 0, 0, 0, 1])
    positive = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1, 0.7])  # predictions 1 1 0 1 0 0 1
    result = evaluate(np.stack([1 - positive, positive], 1), labels)
    tp, fn, fp, tn = 3, 1, 1, 2
    assert result["confusion_matrix"] == [[tn, fp], [fn, tp]]
    assert result["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert result["matthews"] == pytest.approx(mcc)


def test_binary_f1_without_positives_is_zero():
    result = evaluate(np.array([[0.9, 0.1], [0.8, 0.2]]), np.array([0, 0]))
    assert result["f1"] == 0.0 and result["accuracy"] == 1.0 and result["matthews"] == 0.0


def test_macro_f1_skips_classes_absent_from_labels_and_predictions():
    # Class 2 never occurs: macro F1 averages classes 0 and 1 only (as scikit-learn does).
    probs = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1]])
    assert evaluate(probs, np.array([0, 1, 1]))["f1"] == pytest.approx((2 / 3 + 2 / 3) / 2)


def test_nll_floor_and_pstar_distances():
    probs = np.array([[1.0, 0.0], [0.5, 0.5]])
    p_star = np.array([[0.8, 0.2], [0.5, 0.5]])
    result = evaluate(probs, np.array([1, 0]), p_star=p_star)
    assert result["nll"] == pytest.approx((-math.log(NLL_FLOOR) - math.log(0.5)) / 2)
    assert result["l2_to_pstar"] == pytest.approx((math.sqrt(2 * 0.2**2) + 0) / 2)
    assert result["tvd_to_pstar"] == pytest.approx((0.2 + 0) / 2)
    assert isinstance(result["confusion_matrix"][0][0], int)


def test_matches_scikit_learn_on_random_data():
    from sklearn import metrics

    rng = np.random.default_rng(0)
    for num_classes in (2, 3, 5):
        probs = rng.dirichlet(np.ones(num_classes) * 0.5, 300)
        labels = rng.integers(0, num_classes, 300)
        predictions = probs.argmax(1)
        result = evaluate(probs, labels)
        average = "binary" if num_classes == 2 else "macro"
        assert result["f1"] == pytest.approx(metrics.f1_score(labels, predictions, average=average))
        assert result["matthews"] == pytest.approx(metrics.matthews_corrcoef(labels, predictions))
        assert result["nll"] == pytest.approx(metrics.log_loss(labels, probs, labels=range(num_classes)))
        assert result["confusion_matrix"] == metrics.confusion_matrix(labels, predictions).tolist()
        brier = np.mean(((probs - np.eye(num_classes)[labels]) ** 2).sum(1))
        assert result["brier"] == pytest.approx(brier)
        names = [f"c{k}" for k in range(num_classes)]
        report = per_class_report(result["confusion_matrix"], names)
        precision, recall, f1, support = metrics.precision_recall_fscore_support(
            labels, predictions, labels=range(num_classes), zero_division=0)
        assert [r["class"] for r in report] == names
        for k, row in enumerate(report):
            assert row["precision"] == pytest.approx(precision[k]) and row["recall"] == pytest.approx(recall[k])
            assert row["f1"] == pytest.approx(f1[k]) and row["support"] == support[k]


def test_per_class_report_is_zero_where_undefined_and_checks_its_shape():
    report = per_class_report([[2, 0], [1, 0]], ["a", "b"])
    assert report[1] == {"class": "b", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    with pytest.raises(ValueError, match=r"confusion: expected shape \(3, 3\)"):
        per_class_report([[2, 0], [1, 0]], ["a", "b", "c"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"task_metric": "auc"}, "task_metric: expected one of accuracy, f1, matthews"),
        ({"labels": np.array([0, 0, 1, 1, 2, 3])}, r"labels: label 3 at position 5 is outside \[0, 3\)"),
        ({"labels": LABELS.astype(float)}, "labels: expected integer class indices"),
        ({"labels": LABELS[:5]}, r"labels: expected shape \(6,\)"),
        ({"probs": PROBS * 2}, "probs: rows must sum to 1"),
        ({"p_star": PROBS[:, :2]}, "p_star: rows must sum to 1"),
        ({"p_star": np.ones((5, 3)) / 3}, r"p_star: expected shape \(6, 3\)"),
    ],
)
def test_bad_inputs(kwargs, match):
    arguments = {"probs": PROBS, "labels": LABELS, **kwargs}
    with pytest.raises(ValueError, match=match):
        evaluate(**arguments)


def test_task_metrics_listed():
    assert TASK_METRICS == ("accuracy", "f1", "matthews")
    for metric in TASK_METRICS:
        result = evaluate(PROBS, LABELS, task_metric=metric)
        assert result["task"] == result[metric]


def test_views_with_negative_strides_give_the_metrics_of_their_copy():
    """probs[:, ::-1] (a column-reversed view, as pandas gives for reordered columns) is accepted."""
    flipped = np.array([[0.1, 0.9], [0.8, 0.2], [0.4, 0.6]])[:, ::-1]
    labels = np.array([0, 1, 0])
    got = evaluate(flipped, labels, p_star=flipped)
    want = evaluate(flipped.copy(), labels, p_star=flipped.copy())
    assert got == want and got["accuracy"] == 1.0
