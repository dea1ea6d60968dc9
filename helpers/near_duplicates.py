"""Near-duplicates across the split, found with the cached backbone features.

:func:`helpers.dataset.find_split_leakage` finds byte-identical copies only. The data set also
holds re-encoded copies, tiles shifted by a few pixels and tiles of one photo; when such a pair
sits on both sides of the split, validation accuracy flatters the model. Their backbone features
are almost the same, so for each validation image we find the training image whose features
point the same way (cosine similarity) and flag the pairs at or above a threshold.

Why not the plain cosine: after ReLU and average pooling every feature is positive and all tiles
share one strong direction (brightness, contrast), so unrelated concrete tiles score 0.99+.
Subtracting the training mean alone does not cure it: with a random backbone 96 % of what is
left lies along one direction, so tiles on the same side of the mean still score ~1, and a copy
10 % darker can score below 0. So by default we centre AND whiten: turn to the principal
directions of the training features and divide each by its spread (plus SHRINKAGE of the average
spread, so that near-empty directions do not amplify noise), as image retrieval does. Only then
is the cosine about the tile rather than about concrete in general.

Limits: a pooled feature describes texture, not layout, so two featureless grey tiles look alike
(and may be flagged: look at them); the random backbone is also sensitive to shifts (see below).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from helpers.dataset import Sample, SampleSplit
from helpers.plumbing.images import TENSOR_EXTENSION, load_image, load_tensor
from helpers.features import FeatureSet
from helpers.plots import denormalize

# Measured with a random backbone (torch.manual_seed(0); build_resnet18(weights=None)), float32, on
# synthetic concrete: 4,000 training images, 90 altered copies of some of them, 200 images drawn with
# another seed. Best cosine after centring and whitening: distinct images median 0.35, 99th
# percentile 0.72, max 0.90 (a featureless grey tile) and 0.81 (a shadow). Copy vs its original,
# lowest: JPEG quality 60 0.84, brightness +-10 % 0.80; crop 3 px + resize 0.75 (median 0.83);
# shift 2 px 0.50 (median 0.74); shift 4 px 0.27 (median 0.56). So 0.8 flags every re-encoded and
# brightened copy and 2 of 200 distinct images; shifted copies mostly stay below it (this backbone
# scores even a 1 px shift at ~0.84). Raw cosine: every image scores >= 0.99; centring alone: 190 of
# 200 distinct images >= 0.8. With ImageNet weights the numbers differ: read the histogram and the pairs.
DEFAULT_THRESHOLD = 0.8
SHRINKAGE = 0.01  # added to every direction's variance, as a share of the average variance
CHUNK_ROWS = 1000  # validation rows compared at a time: 1,000 x 30,000 floats = 120 MB


class NearDuplicate(NamedTuple):
    """A validation image and the training image most like it."""

    val_id: str
    train_id: str
    similarity: float


@dataclass
class NearDuplicateReport:
    """Every validation image's best match in training, and the pairs at or above the threshold."""

    n_val: int
    threshold: float
    method: str  # how the features were prepared, in words: "after centring and whitening"
    pairs: list[NearDuplicate]  # the flagged pairs, most similar first
    n_cross_label: int  # flagged pairs whose two images carry different labels
    similarities: torch.Tensor  # (n_val,) each validation image's best similarity, in val order
    best_train: torch.Tensor  # (n_val,) the training row of that best match

    @property
    def n_flagged(self) -> int:
        return len(self.pairs)

    def __str__(self) -> str:
        share = 100.0 * self.n_flagged / self.n_val
        text = (
            f"{self.n_flagged} of {self.n_val} validation images ({share:.1f}%) have a near-duplicate "
            f"in training (cosine >= {self.threshold:g} {self.method})."
        )
        if self.n_flagged:
            text += f" {self.n_cross_label} of these pairs have different labels."
        return text


def _check(train: FeatureSet, val: FeatureSet) -> None:
    """Clear errors for inputs that cannot be compared."""
    for name, part in (("train", train), ("val", val)):
        if part.features.ndim != 2 or len(part.features) == 0:
            raise ValueError(
                f"The {name} features are empty or not a 2-D (N, D) tensor: shape {tuple(part.features.shape)}."
            )
        if not len(part.sample_ids) == len(part.labels) == len(part.features):
            raise ValueError(
                f"The {name} FeatureSet has {len(part.features)} feature rows, {len(part.labels)} "
                f"labels and {len(part.sample_ids)} sample ids; they should be equal."
            )
    if train.features.shape[1] != val.features.shape[1]:
        raise ValueError(
            f"train has {train.features.shape[1]} numbers per image, val {val.features.shape[1]}: "
            "compute both with the same backbone."
        )
    if train.number_format != val.number_format:
        raise ValueError(
            f"train features are {train.number_format}, val features {val.number_format}: "
            "compute both with the same settings, or the similarities are not comparable."
        )


def _preparation(train: torch.Tensor, center: bool, whiten: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """The map into the space where cosines are taken, fitted on the training features only."""
    if not center:
        return lambda features: features.float()
    if len(train) < 2:
        raise ValueError("Centring needs at least 2 training images; pass center=False for fewer.")
    mean = train.double().mean(0)
    if not whiten:
        return lambda features: features.float() - mean.float()
    centred = train.double() - mean
    variances, directions = torch.linalg.eigh(centred.T @ centred / (len(train) - 1))
    keep = min(len(train) - 1, len(variances))  # N images span at most N - 1 directions around their mean
    variances, directions = variances[-keep:].clamp_min(0), directions[:, -keep:]
    scale = (directions / (variances + SHRINKAGE * variances.mean() + 1e-12).sqrt()).float()
    return lambda features: (features.float() - mean.float()) @ scale


def find_near_duplicates(
    train: FeatureSet,
    val: FeatureSet,
    threshold: float = DEFAULT_THRESHOLD,
    center: bool = True,
    *,
    whiten: bool = True,
    chunk_rows: int = CHUNK_ROWS,
) -> NearDuplicateReport:
    """For every validation image, its most similar training image (cosine of prepared features).

    center: subtract the training mean first; whiten (with center): also scale the training
    features' principal directions to equal spread. Without them, unrelated tiles score ~1.
    The comparison runs `chunk_rows` validation rows at a time, so memory stays at
    chunk_rows x len(train) floats.
    """
    _check(train, val)
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is a cosine similarity, between -1 and 1; got {threshold}.")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, not {chunk_rows}.")
    prepare = _preparation(train.features, center, whiten)
    train_unit = torch.nn.functional.normalize(prepare(train.features), dim=1)
    best, best_train = [], []
    for start in range(0, len(val), chunk_rows):
        chunk = torch.nn.functional.normalize(prepare(val.features[start : start + chunk_rows]), dim=1)
        values, rows = (chunk @ train_unit.T).max(dim=1)
        best.append(values)
        best_train.append(rows)
    similarities, best_rows = torch.cat(best).clamp(-1.0, 1.0), torch.cat(best_train)
    order = torch.argsort(similarities, descending=True, stable=True)
    flagged = order[similarities[order] >= threshold]
    pairs = [
        NearDuplicate(val.sample_ids[i], train.sample_ids[j], s)
        for i, j, s in zip(flagged.tolist(), best_rows[flagged].tolist(), similarities[flagged].tolist())
    ]
    n_cross = int((val.labels[flagged] != train.labels[best_rows[flagged]]).sum())
    method = ("after centring and whitening" if whiten else "after centring") if center else "of the raw features"
    return NearDuplicateReport(len(val), float(threshold), method, pairs, n_cross, similarities, best_rows)


def _picture(sample: Sample) -> Image.Image | np.ndarray:
    """What imshow needs for one sample: the image, or a capstone .pt tensor turned back into pixels."""
    if sample.path.suffix.lower() != TENSOR_EXTENSION:
        return load_image(sample.path)
    tensor = load_tensor(sample.path)
    tensor = tensor.float() / 255.0 if tensor.dtype == torch.uint8 else denormalize(tensor.float()[None])[0]
    return tensor.permute(1, 2, 0).numpy()


def plot_near_duplicates(
    report: NearDuplicateReport, val_dataset: SampleSplit, train_dataset: SampleSplit, n: int = 6
) -> Figure:
    """The `n` most similar pairs side by side (validation left, training right), and a histogram.

    Pairs below the threshold are shown too when fewer than `n` are flagged, so you can see what
    "almost" looks like. The data sets must be the ones the features were computed from.
    """
    if len(val_dataset) != report.n_val or int(report.best_train.max()) >= len(train_dataset):
        raise ValueError(
            f"The report does not fit these data sets ({len(val_dataset)} validation images, "
            f"the report has {report.n_val}): pass the data sets the features were computed from."
        )
    flagged = {pair.val_id: pair.train_id for pair in report.pairs}
    order = torch.argsort(report.similarities, descending=True, stable=True)[: max(n, 0)].tolist()
    cols = min(3, max(len(order), 1))  # pairs per row
    rows = -(-len(order) // cols)
    fig = plt.figure(figsize=(3.6 * cols, 2.1 * rows + 2.8))
    grid = fig.add_gridspec(rows + 1, 2 * cols, height_ratios=[1.0] * rows + [1.3])
    for k, i in enumerate(order):
        val_sample, train_sample = val_dataset.samples[i], train_dataset.samples[int(report.best_train[i])]
        similarity = float(report.similarities[i])
        if (similarity >= report.threshold) != (flagged.get(val_sample.sample_id) == train_sample.sample_id):
            raise ValueError(
                f"{val_sample.sample_id} and {train_sample.sample_id} are not a pair of the report: "
                "pass the data sets the features were computed from."
            )
        mark = "" if similarity >= report.threshold else " (below)"
        labels = "" if val_sample.label == train_sample.label else ", labels differ"
        for side, sample in enumerate((val_sample, train_sample)):
            ax = fig.add_subplot(grid[k // cols, 2 * (k % cols) + side])
            ax.imshow(_picture(sample))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(("val " if side == 0 else "train ") + sample.sample_id, fontsize=7)
            if side == 0:
                ax.set_title(f"cosine {similarity:.3f}{mark}{labels}", fontsize=8, loc="left")
    hist = fig.add_subplot(grid[rows, :])
    low = min(float(report.similarities.min()), report.threshold) - 0.05  # a fixed range: all-equal values plot too
    hist.hist(report.similarities.numpy(), bins=50, range=(low, 1.0), color="tab:blue")
    hist.axvline(report.threshold, color="tab:red", linestyle="--", label=f"threshold {report.threshold:g}")
    hist.set_yscale("log")
    hist.set_xlabel(f"best cosine similarity to a training image ({report.method})")
    hist.set_ylabel("validation images")
    hist.legend()
    fig.suptitle(str(report), fontsize=9)
    fig.tight_layout()
    return fig
