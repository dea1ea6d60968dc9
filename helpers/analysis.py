"""Looking at what the trained model gets wrong: predictions, mistakes, metrics and pictures.

The IBM capstone (DL0321EN) ends with one number, 99.44% validation accuracy, and a list of
misclassified images by their position in the validation set ("sample 38, predicted 1,
actual 0"). One number hides a lot. This module, used by notebook 05, keeps every prediction
next to its image and answers the questions that come after the number:

* which images are wrong, and how sure was the model about them? (`misclassified`)
* how uncertain is the accuracy itself? (`compute_metrics`: a 95% Wilson interval)
* are the mistakes missed cracks or false alarms? (`confusion_matrix`, precision and recall)
* what if we called an image "crack" only above another probability? (`threshold_curve`)

The capstone's "sample id" is the image's position in the validation set: index i of every
array in `Predictions` (helpers.inference). The file it came from is kept as well ("Positive/00162.jpg"), which,
unlike a position, does not change when the split does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from helpers.inference import CRACK, Predictions
from helpers.plots import denormalize
from helpers.plumbing.images import TENSOR_EXTENSION, load_image, load_tensor


# ----------------------------------------------------------------------------- mistakes
def misclassified(
    predictions: Predictions, threshold: float | None = None, most_confident_first: bool = False
) -> list[dict]:
    """One row per wrongly classified image, ordered by its position in the data set.

    "confidence" is the probability the model gave to the class it predicted. With
    `most_confident_first` the surest mistakes come first: those are the ones to look at,
    since they are either blunders of the model or wrong labels in the data.
    """
    predicted = predictions.predicted(threshold)
    rows = []
    for i in torch.nonzero(predicted != predictions.labels).flatten().tolist():
        guess, actual = int(predicted[i]), int(predictions.labels[i])
        rows.append(
            {
                "sample": i,
                "file": predictions.sample_ids[i],
                "predicted": predictions.class_names[guess],
                "actual": predictions.class_names[actual],
                "predicted_label": guess,
                "actual_label": actual,
                "confidence": float(predictions.probabilities[i, guess]),
            }
        )
    if most_confident_first:
        rows.sort(key=lambda row: (-row["confidence"], row["sample"]))
    return rows


def _cell_text(column: str, value) -> str:
    """How one table cell is written: confidences as percentages, numbers with separators."""
    if column == "confidence" and isinstance(value, float):
        return f"{value:.1%}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def format_table(
    rows: list[dict],
    columns: Sequence[str] = ("sample", "file", "predicted", "actual", "confidence"),
    limit: int | None = 20,
) -> str:
    """The rows as an aligned text table (numbers on the right); at most `limit` rows, then "... and N more"."""
    if not rows:
        return "(no rows)"
    shown = rows if limit is None else rows[:limit]
    cells = [[_cell_text(column, row[column]) for column in columns] for row in shown]
    widths = [max(len(column), *(len(line[k]) for line in cells)) for k, column in enumerate(columns)]
    numeric = [isinstance(shown[0][column], (int, float)) for column in columns]

    def line(texts: Sequence[str]) -> str:
        return "  ".join(
            text.rjust(width) if right else text.ljust(width) for text, width, right in zip(texts, widths, numeric)
        ).rstrip()

    lines = [line(columns), line(["-" * width for width in widths])] + [line(texts) for texts in cells]
    if len(rows) > len(shown):
        lines.append(f"... and {len(rows) - len(shown):,} more")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- metrics
def confusion_matrix(labels: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) counts: row = actual class, column = predicted class. The diagonal holds the right answers."""
    labels, predicted = torch.as_tensor(labels).long().flatten(), torch.as_tensor(predicted).long().flatten()
    if labels.shape != predicted.shape:
        raise ValueError(f"labels and predictions differ in length: {len(labels)} and {len(predicted)}")
    if len(labels) and (min(labels.min(), predicted.min()) < 0 or max(labels.max(), predicted.max()) >= num_classes):
        raise ValueError(f"labels and predictions must lie between 0 and {num_classes - 1}")
    counts = torch.bincount(labels * num_classes + predicted, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def accuracy_interval(correct: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for an accuracy of correct/total, e.g. 9944/10000 -> (0.9927, 0.9957).

    Unlike "p +- 1.96 * standard error" it stays within [0, 1] and behaves near 0% and 100%.
    """
    if total <= 0 or not 0 <= correct <= total:
        raise ValueError(f"need 0 <= correct <= total and total > 0; got {correct}/{total}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)  # 1.96 for 95%
    p = correct / total
    denominator = 1 + z**2 / total
    centre = (p + z**2 / (2 * total)) / denominator
    half_width = z * math.sqrt(p * (1 - p) / total + z**2 / (4 * total**2)) / denominator
    lower = 0.0 if correct == 0 else centre - half_width  # exactly 0 and 1 at the edges,
    upper = 1.0 if correct == total else centre + half_width  # without rounding leftovers
    return lower, upper


@dataclass
class Comparison:
    """Two models' predictions on the same images: where they disagree, and how surprising that split is."""

    names: tuple[str, str]
    both_right: int
    only_first_right: int
    only_second_right: int
    both_wrong: int
    p_value: float  # exact McNemar test: chance of a split at least this uneven if both were equally good

    def __str__(self) -> str:
        first, second = self.names
        total = self.both_right + self.only_first_right + self.only_second_right + self.both_wrong
        disagree = self.only_first_right + self.only_second_right
        text = (
            f"On the same {total:,} images, {first} and {second} disagree on {disagree:,}: "
            f"{first} alone is right on {self.only_first_right:,}, {second} alone on {self.only_second_right:,}."
        )
        if disagree == 0:
            return text + " They make the same predictions: no difference to measure."
        verdict = "a real difference" if self.p_value < 0.05 else "no clear difference (it could be chance)"
        return text + (
            f" If both were equally good, a split at least this uneven would happen with probability "
            f"{self.p_value:.2g}: {verdict}."
        )


def compare_on_same_images(
    labels: torch.Tensor, first: torch.Tensor, second: torch.Tensor, names: tuple[str, str] = ("model A", "model B")
) -> Comparison:
    """Compare two models by the images where exactly one of them is right (an exact McNemar test).

    Overlapping accuracy intervals do not mean two models are alike, nor do separate ones prove a
    difference when both were measured on the same images: what counts is how the images on which
    they disagree split between them. `first`, `second`: predicted labels, same order as `labels`.
    """
    if not (labels.shape == first.shape == second.shape) or labels.dim() != 1:
        raise ValueError("labels and both predictions need the same shape (N,)")
    right_1, right_2 = first == labels, second == labels
    b, c = int((right_1 & ~right_2).sum()), int((~right_1 & right_2).sum())
    n = b + c
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n if n else 1.0
    return Comparison(names, int((right_1 & right_2).sum()), b, c, int((~right_1 & ~right_2).sum()), min(1.0, 2 * tail))


@dataclass
class Metrics:
    """Accuracy with its 95% interval, precision / recall / F1 per class, and the confusion matrix.

    per_class[name]: precision = of the images called `name`, the share that are `name`;
    recall = of the images that are `name`, the share called `name`; F1 their harmonic mean;
    support = how many images are `name`. A share of nothing is undefined: it is reported
    as 0.0 (not nan), e.g. the precision of a class the model never predicts.
    """

    accuracy: float
    correct: int
    total: int
    interval: tuple[float, float]  # 95% Wilson interval (accuracy_interval)
    per_class: dict[str, dict[str, float]]
    confusion: torch.Tensor
    class_names: list[str]

    def __str__(self) -> str:
        low, high = self.interval
        lines = [
            f"accuracy: {self.accuracy:.2%} (95% CI {low:.2%} to {high:.2%}), {self.correct:,} of {self.total:,}",
            "",
        ]
        name_width = max(len("class"), *(len(name) for name in self.class_names))
        lines.append(f"{'class':<{name_width}}  {'precision':>9}  {'recall':>7}  {'F1':>7}  {'support':>8}")
        for name, values in self.per_class.items():
            lines.append(
                f"{name:<{name_width}}  {values['precision']:>9.2%}  {values['recall']:>7.2%}  "
                f"{values['f1']:>7.2%}  {int(values['support']):>8,}"
            )
        lines += ["", "confusion matrix (rows = actual, columns = predicted):"]
        headers = [f"predicted {name}" for name in self.class_names]
        row_width = max(len(f"actual {name}") for name in self.class_names)
        lines.append(" " * row_width + "".join(f"  {header}" for header in headers))
        for name, counts in zip(self.class_names, self.confusion.tolist()):
            cells = "".join(f"  {count:>{len(header)},}" for count, header in zip(counts, headers))
            lines.append(f"{'actual ' + name:<{row_width}}{cells}")
        return "\n".join(lines)


def _share(part: int, whole: int) -> float:
    """part / whole, or 0.0 when whole is 0 (the share is undefined)."""
    return part / whole if whole else 0.0


def compute_metrics(predictions: Predictions, threshold: float | None = None) -> Metrics:
    """All the numbers of the report, for the argmax predictions or those at a crack threshold."""
    num_classes = len(predictions.class_names)
    confusion = confusion_matrix(predictions.labels, predictions.predicted(threshold), num_classes)
    correct, total = int(confusion.trace()), int(confusion.sum())
    per_class = {}
    for k, name in enumerate(predictions.class_names):
        hits, called, actual = int(confusion[k, k]), int(confusion[:, k].sum()), int(confusion[k, :].sum())
        precision, recall = _share(hits, called), _share(hits, actual)
        f1 = _share(2 * precision * recall, precision + recall)
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": actual}
    return Metrics(
        accuracy=correct / total,
        correct=correct,
        total=total,
        interval=accuracy_interval(correct, total),
        per_class=per_class,
        confusion=confusion,
        class_names=list(predictions.class_names),
    )


def threshold_curve(predictions: Predictions, thresholds: Sequence[float] | None = None) -> dict[str, np.ndarray]:
    """How the mistakes trade off as the crack threshold moves (binary problems only).

    For each threshold t an image is called a crack when crack_probability >= t. Returns arrays
    "threshold", "precision" and "recall" (of the crack class; precision is nan where no image is
    called a crack, so a plot leaves a gap there), "false_alarms" (intact surfaces called cracks),
    "missed_cracks" (cracks called intact) and "mistakes" (their sum).
    """
    thresholds = np.linspace(0.0, 1.0, 101) if thresholds is None else np.asarray(thresholds, dtype=float)
    is_crack = predictions.labels == CRACK
    curve = {key: [] for key in ("precision", "recall", "false_alarms", "missed_cracks", "mistakes")}
    for threshold in thresholds:
        called_crack = predictions.predicted(float(threshold)) == CRACK
        hits = int((called_crack & is_crack).sum())
        false_alarms = int((called_crack & ~is_crack).sum())
        missed = int((~called_crack & is_crack).sum())
        curve["precision"].append(hits / (hits + false_alarms) if hits + false_alarms else float("nan"))
        curve["recall"].append(_share(hits, hits + missed))
        curve["false_alarms"].append(false_alarms)
        curve["missed_cracks"].append(missed)
        curve["mistakes"].append(false_alarms + missed)
    return {"threshold": thresholds, **{key: np.asarray(values) for key, values in curve.items()}}


# ----------------------------------------------------------------------------- figures
def image_for_display(path: Path) -> np.ndarray:
    """An HxWx3 array to show: a photo, or a capstone .pt tensor (normalised ones are undone)."""
    if path.suffix.lower() != TENSOR_EXTENSION:
        return np.asarray(load_image(path))
    tensor = load_tensor(path)
    if tensor.dtype == torch.uint8:
        return tensor.permute(1, 2, 0).numpy()
    return denormalize(tensor[None].float())[0].permute(1, 2, 0).numpy()


def plot_misclassified(predictions: Predictions, rows: list[dict], n: int = 16, ncols: int = 8) -> Figure:
    """The first `n` rows of `misclassified` as pictures: "pred X / actual Y / 97%", file name below."""
    if not rows:
        fig, ax = plt.subplots(figsize=(5, 1.5))
        ax.text(0.5, 0.5, "No mistakes: every image was classified correctly.", ha="center", va="center")
        ax.axis("off")
        return fig
    shown = rows[:n]
    ncols = max(1, min(ncols, len(shown)))
    nrows = (len(shown) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.0 * ncols, 2.7 * nrows), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, shown):
        ax.axis("on")  # for the label below the picture; no ticks, no frame
        ax.set(xticks=[], yticks=[])
        ax.spines[:].set_visible(False)
        ax.imshow(image_for_display(predictions.paths[row["sample"]]))
        ax.set_title(f"pred {row['predicted']} /\nactual {row['actual']} / {row['confidence']:.0%}", fontsize=8)
        ax.set_xlabel(f"#{row['sample']} {row['file']}", fontsize=7)
    fig.suptitle(f"{len(shown)} of {len(rows)} misclassified images")
    return fig


def plot_confusion_matrix(metrics: Metrics) -> Figure:
    """The confusion matrix as a grid of counts: rows = actual class, columns = predicted class."""
    counts = metrics.confusion.numpy()
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    ax.imshow(counts, cmap="Blues")
    for (row, column), count in np.ndenumerate(counts):
        colour = "white" if count > counts.max() / 2 else "black"
        ax.text(column, row, f"{count:,}", ha="center", va="center", color=colour, fontsize=12)
    ticks = range(len(metrics.class_names))
    ax.set_xticks(ticks, metrics.class_names)
    ax.set_yticks(ticks, metrics.class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(f"accuracy {metrics.accuracy:.2%} ({metrics.correct:,} of {metrics.total:,})")
    fig.tight_layout()
    return fig


def plot_threshold_curve(curve: dict, threshold: float = 0.5) -> Figure:
    """Precision and recall of the crack class against the threshold; a dashed line at `threshold`."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(curve["threshold"], 100 * np.asarray(curve["precision"]), label="precision (calls that are cracks)")
    ax.plot(curve["threshold"], 100 * np.asarray(curve["recall"]), label="recall (cracks that are found)")
    ax.axvline(threshold, color="grey", linestyle="--", label=f"threshold {threshold:g}")
    ax.set_xlabel("threshold on the crack probability")
    ax.set_ylabel("%")
    ax.set_title("Moving the threshold trades missed cracks for false alarms")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig
