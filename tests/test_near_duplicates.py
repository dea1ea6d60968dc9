"""Tests for helpers.analysis.find_near_duplicates: near-copies across the split are found, unrelated images are not.

The features come from a random ResNet18 backbone (no ImageNet weights here), on synthetic concrete:
48 training images, 16 near-copies of 4 of them (re-encoded, shifted 2 px, brightness +-10 %) and
8 distinct crack images drawn with other seeds (with content on purpose: two featureless grey tiles
are alike to any pooled feature and may rightly be flagged).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402 (after choosing the backend)
import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance
from torch import nn

from helpers.dataset import FolderDataset
from helpers.features import FeatureSet
from helpers.features import extract_features
from helpers.model import build_resnet18
from helpers.analysis import find_near_duplicates, plot_near_duplicates
from helpers.synthetic import make_image
from helpers.synthetic_dataset import generate_dataset

ORIGINALS = ("Positive/00003.jpg", "Positive/00017.jpg", "Negative/00005.jpg", "Negative/00020.jpg")


def _shift(image: Image.Image, pixels: int) -> Image.Image:
    """The image moved `pixels` right and down, the uncovered edge filled by repeating the border."""
    array = np.asarray(image)
    padded = np.pad(array, ((pixels, 0), (pixels, 0), (0, 0)), mode="edge")
    return Image.fromarray(padded[: array.shape[0], : array.shape[1]])


NEAR_COPIES = {  # kind -> (how it is made, JPEG quality it is saved at)
    "reencoded": (lambda image: image, 70),
    "shifted": (lambda image: _shift(image, 2), 95),
    "brighter": (lambda image: ImageEnhance.Brightness(image).enhance(1.1), 95),
    "darker": (lambda image: ImageEnhance.Brightness(image).enhance(0.9), 95),
}


def _features(model: nn.Module, root: Path) -> FeatureSet:
    return extract_features(model, FolderDataset(root, split="all"), device="cpu", progress=False)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """train: a synthetic set; near: near-copies of 4 of its images; distinct: crack images of other seeds."""
    base = tmp_path_factory.mktemp("near_duplicates")
    train = generate_dataset(base / "train", per_class=24, seed=101, duplicate_fraction=0, progress=False)
    for original in ORIGINALS:
        folder = base / "near" / Path(original).parent
        folder.mkdir(parents=True, exist_ok=True)
        with Image.open(train / original) as image:
            for kind, (change, quality) in NEAR_COPIES.items():
                change(image.convert("RGB")).save(folder / f"{kind}-{Path(original).name}", quality=quality)
    for class_index, label in enumerate(("Positive", "Negative")):
        (base / "distinct" / label).mkdir(parents=True)
        for i in range(4):
            image, _ = make_image(np.random.default_rng([202, class_index, i]), "crack")
            image.save(base / "distinct" / label / f"{i:05d}.jpg", quality=90)
    return {"train": train, "near": base / "near", "distinct": base / "distinct"}


@pytest.fixture(scope="module")
def features(folders) -> dict[str, FeatureSet]:
    torch.manual_seed(0)
    model = build_resnet18(weights=None, progress=False).eval()
    return {name: _features(model, root) for name, root in folders.items()}


def _random_features(n: int, seed: int) -> FeatureSet:
    """Positive, correlated stand-ins for backbone features (no images, no backbone)."""
    generator = torch.Generator().manual_seed(seed)
    shared = torch.rand(512, generator=generator) + 1.0
    features = torch.relu(shared + 0.5 * torch.randn(n, 512, generator=generator))
    return FeatureSet(features, torch.arange(n) % 2, [f"img{seed}-{i}" for i in range(n)])


def test_finds_near_copies_of_each_kind_and_their_originals(features):
    report = find_near_duplicates(features["train"], features["near"])
    found = {pair.val_id: pair.train_id for pair in report.pairs}
    for k, val_id in enumerate(features["near"].sample_ids):
        folder, name = val_id.split("/")
        kind, original = name.split("-")
        assert found.get(val_id) == f"{folder}/{original}", f"{kind} copy missed: cosine {report.similarities[k]:.3f}"
    assert report.n_cross_label == 0
    assert [pair.similarity for pair in report.pairs] == sorted((p.similarity for p in report.pairs), reverse=True)


def test_does_not_flag_distinct_images(features):
    report = find_near_duplicates(features["train"], features["distinct"])
    assert not report.pairs and report.similarities.max() < report.threshold - 0.05, str(report)


def test_copies_score_one_and_find_their_original_among_many():
    train = _random_features(1500, seed=1)  # more validation images than one chunk compares at a time
    copies = FeatureSet(train.features.flip(0), train.labels.flip(0), train.sample_ids[::-1])
    report = find_near_duplicates(train, copies)
    assert torch.allclose(report.similarities, torch.ones(1500), atol=1e-4)
    assert report.best_train.tolist() == list(range(1499, -1, -1))


def test_pairs_whose_labels_differ_are_counted():
    train = _random_features(40, seed=3)
    labels = train.labels[:6].clone()
    labels[2:] = 1 - labels[2:]  # two copies keep their label, four do not
    report = find_near_duplicates(train, FeatureSet(train.features[:6] * 1.01, labels, [f"v{i}" for i in range(6)]))
    assert len(report.pairs) == 6 and report.n_cross_label == 4
    assert str(report).startswith("6 of 6 validation images (100.0%) have a near-duplicate in training")
    assert str(report).endswith("4 of these pairs have different labels.")


def test_features_that_cannot_be_compared_are_refused():
    train = _random_features(10, seed=4)
    narrow = FeatureSet(train.features[:, :256], train.labels, train.sample_ids)
    for first, second in ((train, narrow), (_random_features(1, seed=5), train)):
        with pytest.raises(ValueError, match="at least 2 training images and the validation images, by one backbone"):
            find_near_duplicates(first, second)


def test_plot_shows_the_closest_pairs_and_a_histogram(folders, features):
    train_set = FolderDataset(folders["train"], split="all")
    near_set = FolderDataset(folders["near"], split="all")
    report = find_near_duplicates(features["train"], features["near"])
    figure = plot_near_duplicates(report, near_set, train_set, n=4)
    assert len(figure.axes) == 2 * 4 + 1 and figure.axes[-1].get_xlabel().startswith("best cosine similarity")
    none_flagged = find_near_duplicates(features["train"], features["near"], threshold=1.01)
    few = plot_near_duplicates(none_flagged, near_set, train_set, n=2)  # the closest pairs are shown all the same
    assert len(few.axes) == 2 * 2 + 1 and "(below)" in few.axes[0].get_title(loc="left")
    with pytest.raises(ValueError, match="Pass the data sets of the features"):
        plot_near_duplicates(report, train_set, near_set)
    plt.close("all")
