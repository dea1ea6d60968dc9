"""Tests for helpers.analysis: predictions, mistakes, metrics and figures, on hand-made answers."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from helpers.analysis import (
    compare_on_same_images,
    compute_metrics,
    confusion_matrix,
    format_table,
    misclassified,
    plot_confusion_matrix,
    plot_misclassified,
    plot_threshold_curve,
    threshold_curve,
)
from helpers.dataset import CrackDataset
from helpers.features import FeatureSet
from helpers.features import extract_features
from helpers.inference import Predictions, predict_dataset, predictions_from_logits
from helpers.model import build_resnet18
from helpers.synthetic_dataset import generate_dataset
from helpers.analysis import accuracy_interval

# Ten images with known answers. At the default threshold 0.5 (argmax):
#   true positives  0, 4, 6        false negatives 2, 8
#   true negatives  1, 5           false positives 3, 7, 9
LABELS = [1, 0, 1, 0, 1, 0, 1, 0, 1, 0]
CRACK_PROBABILITY = [0.95, 0.10, 0.30, 0.80, 0.60, 0.45, 0.99, 0.55, 0.05, 0.65]


def hand_made(labels=LABELS, crack_probability=CRACK_PROBABILITY) -> Predictions:
    p = torch.tensor(crack_probability, dtype=torch.float32)
    ids = [f"{'Positive' if y else 'Negative'}/{i:05d}.jpg" for i, y in enumerate(labels)]
    return Predictions(
        sample_ids=ids,
        paths=[Path("/nowhere") / name for name in ids],
        labels=torch.tensor(labels),
        probabilities=torch.stack([1 - p, p], dim=1),
        class_names=["Negative", "Positive"],
    )


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("synthetic") / "data", per_class=4, seed=1, progress=False)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


# ----------------------------------------------------------------------------- predictions
def test_predictions_basics():
    predictions = hand_made()
    assert len(predictions) == 10
    assert torch.allclose(predictions.crack_probability, torch.tensor(CRACK_PROBABILITY))
    assert predictions.predicted().tolist() == [1, 0, 0, 1, 1, 0, 1, 1, 0, 1]


@pytest.mark.parametrize(
    "threshold, expected",
    [
        (0.0, [1] * 10),
        (0.5, [1, 0, 0, 1, 1, 0, 1, 1, 0, 1]),
        (0.6, [1, 0, 0, 1, 1, 0, 1, 0, 0, 1]),  # 0.60 >= 0.6 counts as a crack
        (0.96, [0, 0, 0, 0, 0, 0, 1, 0, 0, 0]),
        (1.0, [0] * 10),
    ],
)
def test_predicted_at_a_threshold(threshold, expected):
    assert hand_made().predicted(threshold).tolist() == expected


def test_threshold_outside_0_1_and_crack_probability_with_three_classes_are_errors():
    with pytest.raises(ValueError):
        hand_made().predicted(1.5)
    three = Predictions(
        ["a", "b"],
        [Path("a"), Path("b")],
        torch.tensor([0, 2]),
        torch.tensor([[0.5, 0.2, 0.3], [0.1, 0.1, 0.8]]),
        ["x", "y", "z"],
    )
    assert three.predicted().tolist() == [0, 2]
    with pytest.raises(ValueError):
        _ = three.crack_probability


def test_predictions_from_logits_follow_the_dataset(data_root):
    dataset = CrackDataset(data_root, split="val", progress=False)
    logits = torch.randn(len(dataset), 2, generator=torch.Generator().manual_seed(0))
    predictions = predictions_from_logits(logits, dataset)
    assert predictions.sample_ids == [s.sample_id for s in dataset.samples]
    assert predictions.paths == [s.path for s in dataset.samples]
    assert torch.equal(predictions.labels, dataset.labels())
    assert torch.allclose(predictions.probabilities, torch.softmax(logits, dim=1))
    assert predictions.class_names == ["Negative", "Positive"]
    with pytest.raises(ValueError):
        predictions_from_logits(logits[:1], dataset)


def test_predict_dataset_fast_path_matches_the_images(data_root):
    dataset = CrackDataset(data_root, split="all", progress=False)
    torch.manual_seed(0)
    model = build_resnet18(weights=None).eval()
    direct = predict_dataset(model, dataset, device="cpu", progress=False, num_workers=0)
    features = extract_features(model, dataset, device="cpu", progress=False)
    fast = predict_dataset(model, dataset, features=features, device="cpu", progress=False)
    assert direct.sample_ids == fast.sample_ids
    assert torch.equal(direct.labels, fast.labels)
    assert torch.allclose(direct.probabilities, fast.probabilities, atol=1e-4)


def test_predict_dataset_refuses_features_of_other_images(data_root):
    dataset = CrackDataset(data_root, split="all", progress=False)
    n = len(dataset)
    model = build_resnet18(weights=None).eval()
    shuffled = FeatureSet(torch.zeros(n, 512), dataset.labels(), [s.sample_id for s in reversed(dataset.samples)])
    with pytest.raises(ValueError, match="sample ids"):
        predict_dataset(model, dataset, features=shuffled)
    too_few = FeatureSet(torch.zeros(n - 1, 512), dataset.labels()[1:], [s.sample_id for s in dataset.samples[1:]])
    with pytest.raises(ValueError):
        predict_dataset(model, dataset, features=too_few)


# ----------------------------------------------------------------------------- mistakes
def test_misclassified_rows_in_sample_order():
    rows = misclassified(hand_made())
    assert [row["sample"] for row in rows] == [2, 3, 7, 8, 9]
    first = rows[0]
    assert first["file"] == "Positive/00002.jpg"
    assert (first["predicted"], first["actual"]) == ("Negative", "Positive")
    assert (first["predicted_label"], first["actual_label"]) == (0, 1)
    assert first["confidence"] == pytest.approx(0.70)  # probability of the predicted class
    assert rows[1]["confidence"] == pytest.approx(0.80)


def test_misclassified_most_confident_first_and_at_a_threshold():
    rows = misclassified(hand_made(), most_confident_first=True)
    assert [row["sample"] for row in rows] == [8, 3, 2, 9, 7]
    assert [row["confidence"] for row in rows] == pytest.approx([0.95, 0.80, 0.70, 0.65, 0.55])
    strict = misclassified(hand_made(), threshold=0.7)  # fewer false alarms, more missed cracks
    assert [row["sample"] for row in strict] == [2, 3, 4, 8]
    assert strict[2]["confidence"] == pytest.approx(0.40)


def test_format_table_aligns_and_cuts():
    rows = misclassified(hand_made())
    text = format_table(rows, limit=3)
    lines = text.splitlines()
    assert lines[0].split() == ["sample", "file", "predicted", "actual", "confidence"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert len(lines) == 2 + 3 + 1
    assert lines[-1] == "... and 2 more"
    assert "Positive/00002.jpg" in lines[2] and "70.0%" in lines[2]
    assert len({len(line) for line in lines[:5]}) == 1  # all rows equally wide
    assert "more" not in format_table(rows, limit=None)
    assert len(format_table(rows, columns=("sample", "file"), limit=None).splitlines()) == 2 + 5
    assert format_table([]) == "(no rows)"


# ----------------------------------------------------------------------------- metrics
def test_confusion_matrix_rows_actual_columns_predicted():
    predictions = hand_made()
    matrix = confusion_matrix(predictions.labels, predictions.predicted(), 2)
    assert matrix.dtype == torch.int64
    assert matrix.tolist() == [
        [2, 3],  # actual Negative: 2 right, 3 false alarms
        [2, 3],
    ]  # actual Positive: 2 missed, 3 found
    assert confusion_matrix(torch.tensor([0, 2, 2]), torch.tensor([0, 1, 2]), 3).tolist() == [
        [1, 0, 0],
        [0, 0, 0],
        [0, 1, 1],
    ]
    with pytest.raises(ValueError):
        confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), 3)


def test_compute_metrics_on_known_answers():
    metrics = compute_metrics(hand_made())
    assert (metrics.correct, metrics.total, metrics.accuracy) == (5, 10, 0.5)
    assert metrics.interval == pytest.approx(accuracy_interval(5, 10))
    positive, negative = metrics.per_class["Positive"], metrics.per_class["Negative"]
    assert positive["precision"] == pytest.approx(3 / 6)
    assert positive["recall"] == pytest.approx(3 / 5)
    assert positive["f1"] == pytest.approx(2 * 0.5 * 0.6 / 1.1)
    assert negative["precision"] == pytest.approx(2 / 4)
    assert negative["recall"] == pytest.approx(2 / 5)
    assert negative["f1"] == pytest.approx(2 * 0.5 * 0.4 / 0.9)
    assert positive["support"] == negative["support"] == 5
    assert metrics.confusion.tolist() == [[2, 3], [2, 3]]


def test_undefined_precision_is_zero_not_nan():
    metrics = compute_metrics(hand_made(), threshold=1.0)  # nothing is called a crack
    positive = metrics.per_class["Positive"]
    assert (positive["precision"], positive["recall"], positive["f1"]) == (0.0, 0.0, 0.0)
    assert metrics.per_class["Negative"]["recall"] == 1.0
    assert not any(math.isnan(v) for values in metrics.per_class.values() for v in values.values())


def test_metrics_report_reads_like_the_capstone():
    labels = [1] * 5000 + [0] * 5000
    probability = [0.9] * 4970 + [0.1] * 30 + [0.1] * 4970 + [0.9] * 30  # 60 mistakes
    text = str(compute_metrics(hand_made(labels, probability)))
    low, high = accuracy_interval(9940, 10000)
    assert f"99.40% (95% CI {low:.2%} to {high:.2%}), 9,940 of 10,000" in text
    assert "precision" in text and "recall" in text and "Positive" in text
    assert "actual Negative" in text and "predicted Positive" in text and "4,970" in text


def test_threshold_curve_facts():
    predictions = hand_made()
    curve = threshold_curve(predictions)
    assert set(curve) == {"threshold", "precision", "recall", "false_alarms", "missed_cracks", "mistakes"}
    assert np.allclose(curve["threshold"], np.linspace(0, 1, 101))
    assert np.all(np.diff(curve["recall"]) <= 0)  # a higher bar finds fewer cracks
    assert np.all(np.diff(curve["false_alarms"]) <= 0)  # ... and raises fewer false alarms
    assert curve["recall"][0] == 1.0 and curve["false_alarms"][0] == 5
    assert np.array_equal(curve["mistakes"], curve["false_alarms"] + curve["missed_cracks"])
    at_half = int(np.argmin(np.abs(curve["threshold"] - 0.5)))
    metrics = compute_metrics(predictions, threshold=0.5)
    assert curve["mistakes"][at_half] == metrics.total - metrics.correct
    assert curve["precision"][at_half] == pytest.approx(metrics.per_class["Positive"]["precision"])
    assert math.isnan(curve["precision"][-1])  # nothing called a crack at 1.0
    small = threshold_curve(predictions, [0.6, 0.96])
    assert small["missed_cracks"].tolist() == [2, 4]


# ----------------------------------------------------------------------------- figures
def count_images(fig: Figure) -> int:
    return sum(len(ax.images) for ax in fig.axes)


def test_plot_misclassified_shows_the_images(data_root):
    dataset = CrackDataset(data_root, split="all", progress=False)
    wrong_way = torch.nn.functional.one_hot(1 - dataset.labels(), 2).float() * 3  # every answer wrong
    predictions = predictions_from_logits(wrong_way, dataset)
    rows = misclassified(predictions)
    assert len(rows) == len(dataset) == 8
    fig = plot_misclassified(predictions, rows, n=6, ncols=4)
    assert isinstance(fig, Figure)
    assert count_images(fig) == 6 and len(fig.axes) == 8  # 2 rows of 4, the last 2 empty
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert "pred Negative" in titles[0] and "actual Positive" in titles[0] and "95%" in titles[0]
    assert rows[0]["file"] in fig.axes[0].get_xlabel()  # the file name below the picture
    assert count_images(plot_misclassified(predictions, rows)) == 8
    empty = plot_misclassified(predictions, [])
    assert count_images(empty) == 0
    assert "no mistakes" in empty.axes[0].texts[0].get_text().lower()


def test_plot_confusion_matrix_and_threshold_curve():
    metrics = compute_metrics(hand_made())
    fig = plot_confusion_matrix(metrics)
    assert isinstance(fig, Figure) and len(fig.axes) == 1 and count_images(fig) == 1
    ax = fig.axes[0]
    assert sorted(text.get_text() for text in ax.texts) == ["2", "2", "3", "3"]
    assert [label.get_text() for label in ax.get_xticklabels()] == ["Negative", "Positive"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted", "actual")

    curve_fig = plot_threshold_curve(threshold_curve(hand_made()), threshold=0.7)
    assert isinstance(curve_fig, Figure) and len(curve_fig.axes) == 1
    lines = curve_fig.axes[0].get_lines()
    assert len(lines) == 3  # precision, recall and the threshold
    assert list(lines[2].get_xdata()) == [0.7, 0.7]


# ----------------------------------------------------------------------------- accuracy_interval
def test_accuracy_interval_for_the_capstone_result():
    lower, upper = accuracy_interval(9944, 10000)
    assert lower == pytest.approx(0.99274, abs=1e-5) and upper == pytest.approx(0.99568, abs=1e-5)
    assert 0.0016 < 0.9944 - lower < 0.0017 and 0.0012 < upper - 0.9944 < 0.0013  # not symmetric near 1
    assert 0.0014 < (upper - lower) / 2 < 0.0015  # about +-0.15 points


def test_accuracy_interval_edges_and_widths():
    assert accuracy_interval(0, 10) == (0.0, pytest.approx(1.96**2 / (10 + 1.96**2), abs=1e-4))  # 0.2775
    lower, upper = accuracy_interval(10, 10)
    assert upper == 1.0 and lower == pytest.approx(10 / (10 + 1.96**2), abs=1e-4)
    lower, upper = accuracy_interval(5, 10)
    assert lower == pytest.approx(1 - upper) and lower < 0.5 < upper  # symmetric around one half

    def width(correct: int, total: int, confidence: float = 0.95) -> float:
        low, high = accuracy_interval(correct, total, confidence)
        return high - low

    assert width(994, 1000) > 2 * width(9940, 10000)  # 10x the data: about 1/sqrt(10) the width
    assert width(9940, 10000, confidence=0.99) > width(9940, 10000)
    for correct, total in [(0, 0), (11, 10), (-1, 10)]:
        with pytest.raises(ValueError):
            accuracy_interval(correct, total)
    with pytest.raises(ValueError):
        accuracy_interval(5, 10, confidence=1.0)


# ----------------------------------------------------------------------------- comparing two models
def test_compare_on_same_images_counts_disagreements_and_tests_them():
    labels = torch.tensor([1, 0] * 50)
    first = labels.clone()
    second = labels.clone()
    second[:12] = 1 - second[:12]  # the second model is wrong on 12 images the first gets right
    first[90:92] = 1 - first[90:92]  # and the first on 2 the second gets right
    comparison = compare_on_same_images(labels, first, second, names=("ten epochs", "one epoch"))
    assert (
        comparison.both_right,
        comparison.only_first_right,
        comparison.only_second_right,
        comparison.both_wrong,
    ) == (86, 12, 2, 0)
    # exact McNemar: P(X <= 2) for X ~ Binomial(14, 1/2), two-sided
    expected = 2 * sum(math.comb(14, k) for k in range(3)) / 2**14
    assert comparison.p_value == pytest.approx(expected)
    assert "a real difference" in str(comparison) and "disagree on 14" in str(comparison)


def test_compare_on_same_images_without_a_clear_difference():
    labels = torch.tensor([1, 0, 1, 0, 1, 0])
    first, second = torch.tensor([1, 0, 1, 0, 0, 1]), torch.tensor([0, 1, 1, 0, 1, 0])
    comparison = compare_on_same_images(labels, first, second)
    assert comparison.only_first_right == comparison.only_second_right == 2 and comparison.p_value == 1.0
    assert "no clear difference" in str(comparison)
    same = compare_on_same_images(labels, first, first)
    assert same.p_value == 1.0 and "same predictions" in str(same)
    with pytest.raises(ValueError, match="same shape"):
        compare_on_same_images(labels, first[:3], second)
