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

from helpers.analysis import (
    Mistake,
    accuracy_interval,
    compare_on_same_images,
    compute_metrics,
    misclassified,
    plot_confusion_matrix,
    plot_misclassified,
    plot_threshold_curve,
    threshold_curve,
)
from helpers.dataset import CrackDataset
from helpers.features import FeatureSet
from helpers.features import extract_features
from helpers.inference import CRACK, Predictions, predict_dataset, predictions_from_logits
from helpers.model import build_resnet18
from helpers.synthetic_dataset import generate_dataset

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
    direct = predict_dataset(model, dataset, device="cpu", progress=False)
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


# ----------------------------------------------------------------------------- mistakes and metrics
def test_misclassified_lists_each_mistake_by_sample_with_its_file_and_confidence():
    mistakes = misclassified(hand_made())
    assert [m.sample for m in mistakes] == [2, 3, 7, 8, 9]
    assert mistakes[0] == Mistake(2, "Positive/00002.jpg", "Negative", "Positive", pytest.approx(0.70))
    assert [m.confidence for m in mistakes] == pytest.approx([0.70, 0.80, 0.55, 0.95, 0.65])


def test_metrics_on_known_answers():
    metrics = compute_metrics(hand_made())
    assert metrics.confusion.tolist() == [[2, 3], [2, 3]]  # rows actual (Negative, Positive), columns predicted
    assert (metrics.correct, metrics.total, metrics.accuracy) == (5, 10, 0.5)
    assert metrics.interval == accuracy_interval(5, 10)
    assert metrics.precision.tolist() == pytest.approx([2 / 4, 3 / 6])
    assert metrics.recall.tolist() == pytest.approx([2 / 5, 3 / 5])
    assert metrics.f1.tolist() == pytest.approx([2 * 0.5 * 0.4 / 0.9, 2 * 0.5 * 0.6 / 1.1])
    three = Predictions(["a", "b", "c"], [], torch.tensor([0, 2, 2]), torch.eye(3)[[0, 1, 2]], ["x", "y", "z"])
    assert compute_metrics(three).confusion.tolist() == [[1, 0, 0], [0, 0, 0], [0, 1, 1]]


def test_a_class_never_predicted_has_precision_zero_not_nan():
    metrics = compute_metrics(hand_made(crack_probability=[0.1] * 10))
    assert metrics.precision.tolist() == [0.5, 0.0] and metrics.f1[1] == 0.0 and metrics.recall.tolist() == [1.0, 0.0]


def test_metrics_print_the_accuracy_the_table_and_the_matrix():
    labels = [1] * 5000 + [0] * 5000
    text = str(compute_metrics(hand_made(labels, [0.9] * 4970 + [0.1] * 4980 + [0.9] * 50)))
    low, high = accuracy_interval(9920, 10000)
    assert f"accuracy 99.20% (95% interval {low:.2%} to {high:.2%}), 9,920 of 10,000" in text
    assert "precision" in text and "Positive" in text and "4,970" in text and "rows = actual" in text


def test_threshold_curve_trades_missed_cracks_for_false_alarms():
    predictions = hand_made()
    curve = threshold_curve(predictions)
    assert np.allclose(curve["threshold"], np.linspace(0, 1, 101))
    assert np.all(np.diff(curve["recall"]) <= 0) and np.all(np.diff(curve["false_alarms"]) <= 0)
    assert curve["recall"][0] == 1.0 and curve["false_alarms"][0] == 5 and math.isnan(curve["precision"][-1])
    assert curve["missed_cracks"][[60, 96]].tolist() == [2, 4]  # 0.60 >= 0.6 counts as a crack
    metrics = compute_metrics(predictions)  # at 0.5, as the most probable class
    assert curve["false_alarms"][50] + curve["missed_cracks"][50] == metrics.total - metrics.correct
    assert curve["precision"][50] == pytest.approx(float(metrics.precision[CRACK]))


# ----------------------------------------------------------------------------- figures
def test_plot_misclassified_shows_the_images(data_root):
    dataset = CrackDataset(data_root, split="all", progress=False)
    predictions = predictions_from_logits(torch.nn.functional.one_hot(1 - dataset.labels(), 2) * 3.0, dataset)
    mistakes = misclassified(predictions)  # every answer wrong
    fig = plot_misclassified(predictions, mistakes, n=6, ncols=4)
    assert sum(len(ax.images) for ax in fig.axes) == 6 and len(fig.axes) == 8  # 2 rows of 4, the last 2 empty
    title = fig.axes[0].get_title()
    assert mistakes[0].file in title and "pred Negative / actual Positive / 95%" in title


def test_plot_confusion_matrix_and_threshold_curve():
    ax = plot_confusion_matrix(compute_metrics(hand_made())).axes[0]
    assert sorted(text.get_text() for text in ax.texts) == ["2", "2", "3", "3"]
    assert [label.get_text() for label in ax.get_xticklabels()] == ["Negative", "Positive"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted", "actual")
    lines = plot_threshold_curve(threshold_curve(hand_made()), threshold=0.7).axes[0].get_lines()
    assert len(lines) == 3 and list(lines[2].get_xdata()) == [0.7, 0.7]  # precision, recall, the threshold


# ----------------------------------------------------------------------------- the accuracy's interval
@pytest.mark.parametrize("correct, total", [(9944, 10000), (5, 10), (1, 3), (60, 61)])
def test_accuracy_interval_is_wilsons(correct, total):
    """Wilson's bounds are the accuracies q for which the count is just 1.96 standard errors away."""
    p = correct / total
    for q in accuracy_interval(correct, total):
        assert abs(p - q) == pytest.approx(1.959964 * math.sqrt(q * (1 - q) / total))


def test_accuracy_interval_at_the_edges_and_as_data_grows():
    assert accuracy_interval(0, 10)[0] == 0.0 and accuracy_interval(10, 10)[1] == 1.0
    low, high = accuracy_interval(9944, 10000)
    assert 0.9944 - low > high - 0.9944 > 0  # not symmetric near 100%
    small_low, small_high = accuracy_interval(994, 1000)
    assert small_high - small_low > 2 * (high - low)  # 10x the data: about 1/sqrt(10) the width
    for correct, total in [(0, 0), (11, 10), (-1, 10)]:
        with pytest.raises(ValueError, match="0 <= correct <= total and total > 0"):
            accuracy_interval(correct, total)


# ----------------------------------------------------------------------------- comparing two models
def test_compare_on_same_images_counts_disagreements_and_tests_them():
    labels = torch.tensor([1, 0] * 50)
    first, second = labels.clone(), labels.clone()
    second[:12] = 1 - second[:12]  # the second model is wrong on 12 images the first gets right
    first[90:92] = 1 - first[90:92]  # and the first on 2 the second gets right
    comparison = compare_on_same_images(labels, first, second, names=("ten epochs", "one epoch"))
    counts = comparison.both_right, comparison.only_first_right, comparison.only_second_right, comparison.both_wrong
    assert counts == (86, 12, 2, 0)
    # exact McNemar: P(X <= 2) for X ~ Binomial(14, 1/2), two-sided
    assert comparison.p_value == pytest.approx(2 * sum(math.comb(14, k) for k in range(3)) / 2**14)
    assert "a real difference" in str(comparison) and "disagree on 14" in str(comparison)


def test_compare_on_same_images_without_a_clear_difference():
    labels = torch.tensor([1, 0, 1, 0, 1, 0])
    first, second = torch.tensor([1, 0, 1, 0, 0, 1]), torch.tensor([0, 1, 1, 0, 1, 0])
    comparison = compare_on_same_images(labels, first, second)
    assert comparison.only_first_right == comparison.only_second_right == 2 and comparison.p_value == 1.0
    assert "no clear difference" in str(comparison)
    assert "same predictions" in str(compare_on_same_images(labels, first, first))
    with pytest.raises(ValueError, match="for the same images"):
        compare_on_same_images(labels, first[:3], second)
