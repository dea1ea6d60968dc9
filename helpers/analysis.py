"""What the model gets wrong, how sure we can be of its accuracy, and where in a whole photo it sees cracks.

Taught in notebooks 04-06: the mistakes by sample and file, the accuracy's 95% interval, two models
compared on the same images, the confusion matrix with precision and recall, the decision threshold.

Taught in notebook 06, scan: the data set's 227x227 images were cut from 4032x3024 photos, and shrunk
to 227x227 a whole photo would lose its thin cracks. So we cut it into tiles (overlapping when the
stride is smaller than a tile; the last row and column flush with the border), ask the model about
each, and put the answers back where the tiles came from: a coarse map of where the cracks are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image
from torch import nn

from helpers.dataset import default_transform
from helpers.inference import CRACK, Predictions
from helpers.plumbing import TILE_SIZE, open_photo


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
    """95% Wilson interval for the accuracy correct/total, e.g. 9944/10000 -> (0.9927, 0.9957).

    Unlike "p +- 1.96 standard errors" it stays within [0, 1] and behaves near 0% and 100%.
    """
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
    """Compare two models' predicted labels by the images where exactly one of them is right.

    Overlapping accuracy intervals do not make two models alike: on the same images, what counts is
    how the images they disagree on split between them. Were both equally good, each such image
    would go either way like a fair coin, so the p-value is a two-sided binomial tail.
    """
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


@dataclass
class ScanResult:
    """A photo, the crack probability of each of its tiles, and where the tiles were."""

    photo: Image.Image
    probabilities: np.ndarray  # (rows, columns): each tile's crack probability
    boxes: list[tuple[int, int]]  # (top, left) of each tile, row by row


def tile_positions(height: int, width: int, stride: int = TILE_SIZE) -> tuple[list[int], list[int]]:
    """(tops, lefts) of the tiles that together cover the photo; the last on each side ends at the border."""
    if stride > TILE_SIZE:
        raise ValueError(f"A stride of {stride} leaves gaps between {TILE_SIZE}-pixel tiles: use {TILE_SIZE} or less.")
    if min(height, width) < TILE_SIZE:
        raise ValueError(
            f"The photo ({height}x{width}) is smaller than one tile: classify it whole (helpers.inference.classify_photos)."
        )
    return tuple(sorted({*range(0, side - TILE_SIZE + 1, stride), side - TILE_SIZE}) for side in (height, width))


def scan(model: nn.Module, image: str | Path | Image.Image | np.ndarray, stride: int = TILE_SIZE) -> ScanResult:
    """Every tile's crack probability: tiles normalised as in training, 32 at a time, on the model's device.

    image: a path (a missing or unreadable file is named), a PIL image or an HxWx3 uint8 array."""
    if isinstance(image, (str, Path)):
        photo = open_photo(image)
    elif np.asarray(image).dtype == np.uint8:
        photo = Image.fromarray(np.asarray(image)).convert("RGB")
    else:
        raise ValueError("Pass the photo as uint8 values 0-255, e.g. (photo * 255).round().astype(np.uint8).")
    tops, lefts = tile_positions(photo.height, photo.width, stride)
    boxes = [(top, left) for top in tops for left in lefts]
    pixels = default_transform()(photo)  # (3, H, W), normalised once for all tiles
    tiles = [pixels[:, top : top + TILE_SIZE, left : left + TILE_SIZE] for top, left in boxes]
    device, scores = next(model.parameters()).device, []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(tiles), 32):
            logits = model(torch.stack(tiles[start : start + 32]).to(device))
            scores.append(torch.softmax(logits, dim=1)[:, CRACK].cpu())
    return ScanResult(photo, torch.cat(scores).numpy().reshape(len(tops), len(lefts)), boxes)


def probability_map(result: ScanResult) -> np.ndarray:
    """An (H, W) map: each pixel gets the mean probability of the tiles that cover it."""
    size = result.photo.height, result.photo.width
    total, count = np.zeros(size), np.zeros(size)
    for (top, left), probability in zip(result.boxes, result.probabilities.ravel()):
        total[top : top + TILE_SIZE, left : left + TILE_SIZE] += probability
        count[top : top + TILE_SIZE, left : left + TILE_SIZE] += 1
    return total / count


def plot_scan(result: ScanResult, threshold: float = 0.5) -> Figure:
    """The photo with the probability map over it, and the tiles above `threshold` outlined."""
    fig, ax = plt.subplots(figsize=(10, 10 * result.photo.height / result.photo.width + 0.6))
    ax.imshow(result.photo)
    shown = ax.imshow(probability_map(result), cmap="jet", vmin=0, vmax=1, alpha=0.35)
    fig.colorbar(shown, ax=ax, fraction=0.03, label="crack probability")
    flagged = [box for box, probability in zip(result.boxes, result.probabilities.ravel()) if probability > threshold]
    for top, left in flagged:
        ax.add_patch(Rectangle((left, top), TILE_SIZE, TILE_SIZE, fill=False, edgecolor="white", linewidth=2))
    ax.set_title(f"{len(flagged)} of {len(result.boxes)} tiles above {threshold:.0%}")
    ax.axis("off")
    fig.tight_layout()
    return fig
