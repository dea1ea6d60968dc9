"""What the model gets wrong, and how sure we can be of its accuracy. Taught in notebooks 04-06.

The mistakes by sample and file, the accuracy's 95% interval, two models compared on the same images,
the confusion matrix with precision and recall, the decision threshold, and near-duplicates across the split.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch.nn.functional import normalize

from helpers.dataset import SampleSplit
from helpers.features import FeatureSet
from helpers.inference import CRACK, Predictions
from helpers.plumbing import open_photo


@dataclass
class Mistake:
    """One misclassified image: its position in the data set (the capstone's "sample"), its file, the answer."""

    sample: int
    file: str
    predicted: str
    actual: str
    confidence: float  # the probability the model gave to the class it predicted


def misclassified(predictions: Predictions) -> list[Mistake]:
    """Every wrongly classified image, in the order of the data set."""
    predicted, confidence = predictions.predicted(), predictions.probabilities.max(dim=1).values
    names, labels, files = predictions.class_names, predictions.labels, predictions.sample_ids
    wrong = torch.nonzero(predicted != labels).flatten().tolist()
    return [Mistake(i, files[i], names[predicted[i]], names[labels[i]], float(confidence[i])) for i in wrong]


def accuracy_interval(correct: int, total: int) -> tuple[float, float]:
    """95% Wilson interval for the accuracy correct/total, e.g. 9944/10000 -> (0.9927, 0.9957); unlike "p +- 1.96
    standard errors" it stays within [0, 1] and behaves near 0% and 100%."""
    if total <= 0 or not 0 <= correct <= total:
        raise ValueError(f"An accuracy needs 0 <= correct <= total and total > 0, not {correct} of {total}.")
    p, z = correct / total, 1.959964  # 95% of a normal distribution lies within 1.96 standard deviations
    centre = (p + z**2 / (2 * total)) / (1 + z**2 / total)
    half_width = z * math.sqrt(p * (1 - p) / total + z**2 / (4 * total**2)) / (1 + z**2 / total)
    lower = 0.0 if correct == 0 else centre - half_width  # exactly 0 and 1 at the edges,
    upper = 1.0 if correct == total else centre + half_width  # without rounding leftovers
    return lower, upper


@dataclass
class Comparison:
    """Two models' predictions on the same images, counted pair by pair (an exact McNemar test)."""

    names: tuple[str, str]
    both_right: int
    only_first_right: int
    only_second_right: int
    both_wrong: int
    p_value: float  # the chance of a split at least this uneven if both models were equally good

    def __str__(self) -> str:
        (first, second), disagree = self.names, self.only_first_right + self.only_second_right
        total = self.both_right + disagree + self.both_wrong
        text = (
            f"On the same {total:,} images, {first} and {second} disagree on {disagree:,}: "
            f"{first} alone is right on {self.only_first_right:,}, {second} alone on {self.only_second_right:,}."
        )
        if disagree == 0:
            return text + " They make the same predictions: no difference to measure."
        verdict = "a real difference" if self.p_value < 0.05 else "no clear difference (it could be chance)"
        chance = f"If both were equally good, a split at least this uneven has probability {self.p_value:.2g}"
        return f"{text} {chance}: {verdict}."


def compare_on_same_images(
    labels: torch.Tensor, first: torch.Tensor, second: torch.Tensor, names: tuple[str, str] = ("model A", "model B")
) -> Comparison:
    """Compare two models' predicted labels by the images where exactly one of them is right: were both equally good,
    each such image would go either way like a fair coin, so the p-value is a two-sided binomial tail."""
    if not labels.shape == first.shape == second.shape:
        shapes = ", ".join(str(tuple(t.shape)) for t in (labels, first, second))
        raise ValueError(f"Pass labels and both predictions for the same images, not shapes {shapes}.")
    right_1, right_2 = first == labels, second == labels
    b, c = int((right_1 & ~right_2).sum()), int((~right_1 & right_2).sum())
    tail = sum(math.comb(b + c, k) for k in range(min(b, c) + 1)) / 2 ** (b + c)
    return Comparison(names, int((right_1 & right_2).sum()), b, c, int((~right_1 & ~right_2).sum()), min(1.0, 2 * tail))


@dataclass
class Metrics:
    """confusion[k, j] counts the images of class k predicted as j. Per class (class_names order): precision =
    of the images called that class, the share that are; recall = of the images of that class, the share
    found; F1 = their harmonic mean. A share of nothing (the precision of a class never called) is 0."""

    class_names: list[str]
    confusion: torch.Tensor
    correct: int
    total: int
    accuracy: float
    interval: tuple[float, float]
    precision: torch.Tensor
    recall: torch.Tensor
    f1: torch.Tensor

    def __str__(self) -> str:
        low, high = self.interval
        w = max(9, *(len(name) for name in self.class_names)) + 2
        lines = [
            f"accuracy {self.accuracy:.2%} (95% interval {low:.2%} to {high:.2%}), {self.correct:,} of {self.total:,}",
            f"\n{'class':<{w}}precision   recall       F1   support",
        ]
        for k, name in enumerate(self.class_names):
            numbers = [f"{float(m[k]):>9.2%}" for m in (self.precision, self.recall, self.f1)]
            lines.append(f"{name:<{w}}{''.join(numbers)}{int(self.confusion[k].sum()):>10,}")
        lines.append("\nconfusion matrix (rows = actual, columns = predicted):")
        lines.append(" " * w + "".join(f"{name:>{w}}" for name in self.class_names))
        for name, row in zip(self.class_names, self.confusion.tolist()):
            lines.append(f"{name:<{w}}" + "".join(f"{count:>{w},}" for count in row))
        return "\n".join(lines)


def compute_metrics(predictions: Predictions) -> Metrics:
    """The confusion matrix of the predicted (most probable) class against the label, and what it tells."""
    n = len(predictions.class_names)
    pairs = predictions.labels.long() * n + predictions.predicted()  # actual k, predicted j -> k * n + j
    confusion = torch.bincount(pairs, minlength=n * n).reshape(n, n)
    hits, called, support = confusion.diag().double(), confusion.sum(0), confusion.sum(1)
    precision, recall = (hits / called).nan_to_num(), (hits / support).nan_to_num()  # 0 / 0 -> 0
    f1 = (2 * precision * recall / (precision + recall)).nan_to_num()
    right, n_images, names = int(hits.sum()), int(support.sum()), list(predictions.class_names)
    interval = accuracy_interval(right, n_images)
    return Metrics(names, confusion, right, n_images, right / n_images, interval, precision, recall, f1)


def threshold_curve(predictions: Predictions) -> dict[str, np.ndarray]:
    """For 101 thresholds t from 0 to 1 (an image is a crack when its crack probability >= t): the
    crack class's "precision" (nan where nothing is called a crack) and "recall", the number of
    "false_alarms" (intact surfaces called cracks) and of "missed_cracks". Binary problems only."""
    thresholds = np.linspace(0.0, 1.0, 101)
    called = torch.stack([predictions.predicted(float(t)) == CRACK for t in thresholds]).numpy()
    is_crack = (predictions.labels == CRACK).numpy()
    hits, alarms = (called & is_crack).sum(1), (called & ~is_crack).sum(1)
    with np.errstate(invalid="ignore"):  # 0 / 0: no image called a crack
        precision = hits / (hits + alarms)
    recall, missed = hits / max(1, is_crack.sum()), is_crack.sum() - hits
    return dict(threshold=thresholds, precision=precision, recall=recall, false_alarms=alarms, missed_cracks=missed)


def image_for_display(path: Path) -> np.ndarray:
    """The photo at `path` as an HxWx3 array to show."""
    return np.asarray(open_photo(path))


def plot_misclassified(predictions: Predictions, mistakes: list[Mistake], n: int = 16, ncols: int = 8) -> Figure:
    """The first `n` mistakes as pictures, each titled with its sample, file, answer and confidence."""
    shown = mistakes[:n]
    nrows = max(1, -(-len(shown) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.1 * ncols, 2.6 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, m in zip(axes.flat, shown):
        ax.imshow(image_for_display(predictions.paths[m.sample]))
        ax.set_title(f"#{m.sample} {m.file}\npred {m.predicted} / actual {m.actual} / {m.confidence:.0%}", fontsize=7)
    fig.suptitle(f"{len(shown)} of {len(mistakes)} misclassified images" if mistakes else "No mistakes.")
    fig.tight_layout()  # before save_figure adds its footer below everything
    return fig


def plot_confusion_matrix(metrics: Metrics) -> Figure:
    """The confusion matrix as a grid of counts: rows = actual class, columns = predicted class."""
    counts = metrics.confusion.numpy()
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    ax.imshow(counts, cmap="Blues")
    for (row, column), count in np.ndenumerate(counts):
        colour = "white" if count > counts.max() / 2 else "black"
        ax.text(column, row, f"{count:,}", ha="center", va="center", color=colour)
    ax.set_xticks(range(len(counts)), metrics.class_names)
    ax.set_yticks(range(len(counts)), metrics.class_names)
    ax.set(xlabel="predicted", ylabel="actual")
    ax.set_title(f"accuracy {metrics.accuracy:.2%} ({metrics.correct:,} of {metrics.total:,})")
    fig.tight_layout()
    return fig


def plot_threshold_curve(curve: dict[str, np.ndarray], threshold: float = 0.5) -> Figure:
    """Precision and recall of the crack class against the threshold; a dashed line at `threshold`."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(curve["threshold"], 100 * curve["precision"], label="precision (calls that are cracks)")
    ax.plot(curve["threshold"], 100 * curve["recall"], label="recall (cracks that are found)")
    ax.axvline(threshold, color="grey", linestyle="--", label=f"threshold {threshold:g}")
    ax.set(xlabel="threshold on the crack probability", ylabel="%")
    ax.set_title("Moving the threshold trades missed cracks for false alarms")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- near-duplicates (notebook 05)
# Re-encoded, brightened or shifted copies have other bytes (find_split_leakage misses them) but almost the same
# features. Whitened first: all concrete tiles share a few strong feature directions (brightness, contrast), so
# unrelated tiles have a raw cosine of 0.99+; scaled to equal spread along the training features' principal
# directions (as image retrieval does), the cosine is about the tile, not about concrete.
SHRINKAGE = 0.01  # added to each direction's variance, as a share of the mean: near-empty ones add no noise
CHUNK_ROWS = 1000  # validation images compared at a time: 1,000 x 30,000 similarities take 120 MB


class NearDuplicate(NamedTuple):
    """A validation image and the training image most like it."""

    val_id: str
    train_id: str
    similarity: float


@dataclass
class NearDuplicateReport:
    """Every validation image's best match in training, and the pairs at or above the threshold."""

    threshold: float
    pairs: list[NearDuplicate]  # the flagged pairs, most similar first
    n_cross_label: int  # flagged pairs whose two images carry different labels
    similarities: torch.Tensor  # (n_val,) each validation image's best cosine, in validation order
    best_train: torch.Tensor  # (n_val,) the training row of that best match

    def __str__(self) -> str:
        n, n_val = len(self.pairs), len(self.similarities)
        text = f"{n} of {n_val} validation images ({n / n_val:.1%}) have a near-duplicate in training"
        text += f" (cosine >= {self.threshold:g} after whitening)."
        return text + (f" {self.n_cross_label} of these pairs have different labels." if n else "")


def _whitening(train: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Centre on the training mean, turn to its principal directions, scale each to equal spread, unit length."""
    mean = train.double().mean(0)
    centred = train.double() - mean
    variances, directions = torch.linalg.eigh(centred.T @ centred / (len(train) - 1))
    keep = min(len(train) - 1, len(variances))  # N images span at most N - 1 directions around their mean
    variances, directions = variances[-keep:].clamp_min(0), directions[:, -keep:]
    scale = (directions / (variances + SHRINKAGE * variances.mean()).sqrt()).float()
    return lambda features: normalize((features.float() - mean.float()) @ scale, dim=1)


# The threshold: with a random backbone on synthetic concrete, a distinct image's best cosine has median 0.35 and
# 99th percentile 0.72; copies re-encoded or 10% brighter or darker score 0.80+, copies shifted 2 pixels 0.50-0.74.
def find_near_duplicates(train: FeatureSet, val: FeatureSet, threshold: float = 0.8) -> NearDuplicateReport:
    """For every validation image, its most similar training image (cosine of whitened features)."""
    if len(train.features) < 2 or train.features.shape[1] != val.features.shape[1]:
        raise ValueError("Pass the features of at least 2 training images and the validation images, by one backbone.")
    whiten = _whitening(train.features)
    train_unit = whiten(train.features)
    matches = [(whiten(chunk) @ train_unit.T).max(dim=1) for chunk in val.features.split(CHUNK_ROWS)]
    similarities = torch.cat([match.values for match in matches]).clamp(-1.0, 1.0)
    best_rows = torch.cat([match.indices for match in matches])
    order = torch.argsort(similarities, descending=True, stable=True)
    flagged = order[similarities[order] >= threshold]
    pairs = [
        NearDuplicate(val.sample_ids[i], train.sample_ids[j], s)
        for i, j, s in zip(flagged.tolist(), best_rows[flagged].tolist(), similarities[flagged].tolist())
    ]
    n_cross = int((val.labels[flagged] != train.labels[best_rows[flagged]]).sum())
    return NearDuplicateReport(float(threshold), pairs, n_cross, similarities, best_rows)


def plot_near_duplicates(
    report: NearDuplicateReport, val_dataset: SampleSplit, train_dataset: SampleSplit, n: int = 6
) -> Figure:
    """The `n` most similar pairs (validation left, training right), flagged or not, and a histogram."""
    if len(val_dataset) != len(report.similarities):
        n_val = len(report.similarities)
        raise ValueError(f"Pass the data sets of the features: {len(val_dataset)} validation images, not {n_val}.")
    order = torch.argsort(report.similarities, descending=True, stable=True)[:n].tolist()
    cols = min(3, len(order))  # pairs per row
    rows = -(-len(order) // cols)
    fig = plt.figure(figsize=(3.6 * cols, 2.1 * rows + 2.8))
    grid = fig.add_gridspec(rows + 1, 2 * cols, height_ratios=[1.0] * rows + [1.3])
    for k, i in enumerate(order):
        pair = val_dataset.samples[i], train_dataset.samples[int(report.best_train[i])]
        similarity = float(report.similarities[i])
        note = "" if similarity >= report.threshold else " (below)"
        note += "" if pair[0].label == pair[1].label else ", labels differ"
        for side, (name, sample) in enumerate(zip(("val", "train"), pair)):
            ax = fig.add_subplot(grid[k // cols, 2 * (k % cols) + side])
            ax.imshow(image_for_display(sample.path))
            ax.set(xticks=[], yticks=[])
            ax.set_xlabel(f"{name} {sample.sample_id}", fontsize=7)
        fig.axes[-2].set_title(f"cosine {similarity:.3f}{note}", fontsize=8, loc="left")
    hist = fig.add_subplot(grid[rows, :])
    low = min(float(report.similarities.min()), report.threshold) - 0.05  # a fixed range: all-equal values plot too
    hist.hist(report.similarities.numpy(), bins=50, range=(low, 1.0))
    hist.axvline(report.threshold, color="tab:red", linestyle="--", label=f"threshold {report.threshold:g}")
    hist.set(yscale="log", xlabel="best cosine similarity to a training image", ylabel="validation images")
    hist.legend()
    fig.suptitle(str(report), fontsize=9)
    fig.tight_layout()
    return fig
