"""Evaluation metrics on cases computed by hand: imbalanced classes, a class never predicted, a
class absent from the test set, argmax ties, the Wilson and bootstrap intervals, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mambadna.errors import InputError
from mambadna.pipelines.metrics import (
    bootstrap_balanced_accuracy,
    classification_metrics,
    predict_labels,
    wilson_interval,
)


def test_imbalanced_classes():
    truth = ["a"] * 8 + ["b"] * 2
    predicted = ["a"] * 8 + ["b", "a"]
    m = classification_metrics(truth, predicted, ["a", "b"])
    assert m["n"] == 10
    assert m["confusion"]["matrix"] == [[8, 0], [1, 1]]
    assert m["accuracy"] == pytest.approx(0.9)
    assert m["balanced_accuracy"] == pytest.approx((1 + 0.5) / 2)
    assert m["macro_f1"] == pytest.approx((16 / 17 + 2 / 3) / 2)  # F1 = 2TP / (2TP+FP+FN)
    assert m["chance"] == 0.5
    assert (m["majority_baseline"], m["majority_label"]) == (0.8, "a")
    assert m["per_class"]["a"] == {"n": 8, "predicted": 9, "recall": 1.0,
                                   "precision": pytest.approx(8 / 9),
                                   "f1": pytest.approx(16 / 17)}
    assert m["per_class"]["b"] == {"n": 2, "predicted": 1, "recall": 0.5, "precision": 1.0,
                                   "f1": pytest.approx(2 / 3)}
    json.dumps(m)  # JSON-ready as it is


def test_a_class_never_predicted():
    truth = ["a", "a", "b", "b", "c", "c"]
    predicted = ["a", "a", "a", "b", "a", "b"]
    m = classification_metrics(truth, predicted, ["a", "b", "c"])
    assert m["confusion"]["matrix"] == [[2, 0, 0], [1, 1, 0], [1, 1, 0]]
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["balanced_accuracy"] == pytest.approx((1 + 0.5 + 0) / 3)
    # c: precision undefined (null), F1 0 and counted as 0 in macro-F1.
    assert m["per_class"]["c"] == {"n": 2, "predicted": 0, "recall": 0.0, "precision": None,
                                   "f1": 0.0}
    assert m["macro_f1"] == pytest.approx((4 / 6 + 2 / 4 + 0) / 3)
    assert m["chance"] == pytest.approx(1 / 3)
    assert '"precision": null' in json.dumps(m)


def test_a_class_absent_from_the_test_set():
    truth = ["a", "a", "a", "b"]
    predicted = ["a", "c", "a", "b"]
    m = classification_metrics(truth, predicted, ["a", "b", "c"])
    assert m["classes_present"] == ["a", "b"]
    # c: listed with n = 0, recall undefined, precision 0 (predicted once, never right).
    assert m["per_class"]["c"] == {"n": 0, "predicted": 1, "recall": None, "precision": 0.0,
                                   "f1": None}
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1) / 2)  # over a and b only
    assert m["macro_f1"] == pytest.approx((4 / 5 + 1) / 2)
    assert m["chance"] == pytest.approx(1 / 3)  # the model's classes, not the test set's
    assert m["majority_baseline"] == pytest.approx(3 / 4)
    # Never predicted AND absent: everything undefined but n and predicted.
    m = classification_metrics(["a", "b"], ["a", "b"], ["a", "b", "c"])
    assert m["per_class"]["c"] == {"n": 0, "predicted": 0, "recall": None, "precision": None,
                                   "f1": None}
    assert m["balanced_accuracy"] == 1.0 and m["balanced_accuracy_interval"] == [1.0, 1.0]


def test_ties_go_to_the_first_label_of_the_model():
    probs = np.array([[0.5, 0.5, 0.0], [0.2, 0.4, 0.4], [0.1, 0.2, 0.7], [1 / 3] * 3])
    assert predict_labels(probs, ["x", "y", "z"]).tolist() == ["x", "y", "z", "x"]
    assert predict_labels(np.log(probs[1:3]), ["z", "y", "x"]).tolist() == ["y", "x"]
    assert predict_labels(np.zeros((0, 3)), ["x", "y", "z"]).tolist() == []
    # ... and so does the majority label when two true labels are equally frequent.
    m = classification_metrics(["b", "a", "b", "a"], ["a"] * 4, ["a", "b"])
    assert (m["majority_label"], m["majority_baseline"]) == ("a", 0.5)


def test_wilson_interval_by_hand():
    low, high = wilson_interval(8, 10)
    assert (low, high) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    assert wilson_interval(10, 10) == (pytest.approx(0.7225, abs=1e-4), 1.0)
    m = classification_metrics(["a"] * 8 + ["b"] * 2, ["a"] * 8 + ["a", "a"], ["a", "b"])
    assert m["accuracy_interval"] == [pytest.approx(0.4902, abs=1e-4),
                                      pytest.approx(0.9433, abs=1e-4)]
    assert m["interval_method"]["accuracy"] == "Wilson score interval"
    assert "bootstrap" in m["interval_method"]["balanced_accuracy"]


def test_bootstrap_interval_is_seeded_and_about_the_normal_width():
    correct, n = np.array([700, 450]), np.array([1000, 500])
    first = bootstrap_balanced_accuracy(correct, n, seed=3)
    assert first == bootstrap_balanced_accuracy(correct, n, seed=3)
    assert first != bootstrap_balanced_accuracy(correct, n, seed=4)
    # Balanced accuracy 0.8; its standard error sqrt(sum p(1-p)/n) / k.
    se = math.sqrt(0.7 * 0.3 / 1000 + 0.9 * 0.1 / 500) / 2
    assert first[0] < 0.8 < first[1]
    assert (first[1] - first[0]) == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_bad_input():
    with pytest.raises(InputError, match="'d' are not among the classes a, b"):
        classification_metrics(["a", "d"], ["a", "b"], ["a", "b"])
    with pytest.raises(InputError, match="predicted label"):
        classification_metrics(["a"], ["z"], ["a", "b"])
    with pytest.raises(InputError, match="no predictions"):
        classification_metrics([], [], ["a", "b"])
    with pytest.raises(InputError, match="2 true labels but 1"):
        classification_metrics(["a", "b"], ["a"], ["a", "b"])
