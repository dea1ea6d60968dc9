"""Near-duplicates across the split, found with the cached backbone features (notebook 05).

find_split_leakage (helpers.dataset) finds byte-identical copies; re-encoded, brightened or shifted
copies have other bytes but almost the same features. So each validation image gets the training
image whose features point the most the same way (cosine), and pairs above a threshold are flagged.
Pooled features describe texture, not layout: two featureless grey tiles look alike too.

Why whiten first: pooled ReLU features are all positive and all concrete tiles share a few strong
directions (brightness, contrast): unrelated tiles have a raw cosine of 0.99+, and even around the
mean one direction dominates. Scaled to equal spread along the training features' principal
directions (as image retrieval does), the cosine is about the tile, not about concrete.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from torch.nn.functional import normalize

from helpers.analysis import image_for_display
from helpers.dataset import SampleSplit
from helpers.features import FeatureSet

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
