"""Tests for helpers.near_duplicates: near-copies across the split are found, unrelated images are not.

The features come from a random ResNet18 backbone (no ImageNet weights here), on synthetic concrete:
48 training images, 16 near-copies of 4 of them (re-encoded, shifted 2 px, brightness +-10 %) and
8 distinct crack images drawn with other seeds. Distinct images are drawn with the crack recipe on
purpose: two featureless grey tiles are alike to any pooled feature and may rightly be flagged
(the module's docstring gives the numbers); the claim tested is that images with content are not.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402 (after choosing the backend)
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image, ImageEnhance
from torch import nn

from helpers.folder_dataset import FolderDataset
from helpers.features import FeatureSet
from helpers.features import extract_features
from helpers.model import build_resnet18
from helpers.near_duplicates import DEFAULT_THRESHOLD, find_near_duplicates, plot_near_duplicates
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


# ----------------------------------------------------------------------------- on real backbone features
def test_finds_near_copies_of_each_kind_and_their_originals(features):
    report = find_near_duplicates(features["train"], features["near"])
    found = {pair.val_id: pair for pair in report.pairs}
    print("\n" + str(report), sorted((p.similarity, p.val_id) for p in report.pairs))
    assert report.n_val == len(ORIGINALS) * len(NEAR_COPIES)
    for val_id in features["near"].sample_ids:
        folder, name = val_id.split("/")
        kind, original = name.split("-")
        best = report.similarities[features["near"].sample_ids.index(val_id)]
        assert val_id in found, f"{kind} copy {val_id} missed: best similarity {best:.3f}"
        assert found[val_id].train_id == f"{folder}/{original}"
    assert report.n_cross_label == 0
    assert [pair.similarity for pair in report.pairs] == sorted((p.similarity for p in report.pairs), reverse=True)


def test_does_not_flag_distinct_images(features):
    report = find_near_duplicates(features["train"], features["distinct"])
    print(f"\ndistinct images: best similarities {sorted(report.similarities.tolist(), reverse=True)}")
    assert report.n_flagged == 0, str(report)
    assert report.similarities.max() < DEFAULT_THRESHOLD - 0.05  # with room to spare


def test_raw_or_only_centred_cosines_would_flag_distinct_images(features):
    """Why the module whitens: on this backbone the distinct-images test above fails without it."""
    raw = find_near_duplicates(features["train"], features["distinct"], center=False)
    centred = find_near_duplicates(features["train"], features["distinct"], whiten=False)
    print(f"\nraw: lowest best {raw.similarities.min():.4f}; centred only: {centred}")
    assert raw.similarities.min() > 0.99  # every unrelated tile "matches" something
    assert centred.n_flagged >= len(centred.similarities) // 2
    assert "raw" in str(raw) and "after centring)" in str(centred)


def test_exact_copies_score_one(features):
    train = features["train"]
    copies = FeatureSet(train.features[:5].clone(), train.labels[:5], [f"copy-{i}" for i in range(5)])
    report = find_near_duplicates(train, copies)
    assert torch.allclose(report.similarities, torch.ones(5), atol=1e-4)
    assert [pair.train_id for pair in sorted(report.pairs, key=lambda p: p.val_id)] == train.sample_ids[:5]


# ----------------------------------------------------------------------------- on stand-in features
def test_chunks_give_the_same_answer_as_one_matrix():
    train, val = _random_features(300, seed=1), _random_features(57, seed=2)
    whole = find_near_duplicates(train, val, threshold=0.1, chunk_rows=10_000)
    chunked = find_near_duplicates(train, val, threshold=0.1, chunk_rows=7)
    assert torch.allclose(whole.similarities, chunked.similarities, atol=1e-6)
    assert torch.equal(whole.best_train, chunked.best_train)
    assert [p[:2] for p in whole.pairs] == [p[:2] for p in chunked.pairs] and whole.n_flagged > 0


def test_pairs_whose_labels_differ_are_counted_as_cross_label():
    train = _random_features(40, seed=3)
    flipped = 1 - train.labels[:6]
    flipped[:2] = train.labels[:2]  # two copies keep their label, four do not
    val = FeatureSet(train.features[:6] * 1.01, flipped, [f"v{i}" for i in range(6)])
    report = find_near_duplicates(train, val)
    assert report.n_flagged == 6 and report.n_cross_label == 4
    assert "4 of these pairs have different labels" in str(report)
    assert str(report).startswith("6 of 6 validation images (100.0%) have a near-duplicate in training")


def test_clear_errors_for_inputs_that_cannot_be_compared():
    train = _random_features(10, seed=4)
    empty = FeatureSet(torch.empty(0, 512), torch.empty(0, dtype=torch.long), [])
    with pytest.raises(ValueError, match="val features are empty"):
        find_near_duplicates(train, empty)
    with pytest.raises(ValueError, match="train features are empty"):
        find_near_duplicates(empty, train)
    narrow = FeatureSet(train.features[:, :256], train.labels, train.sample_ids)
    with pytest.raises(ValueError, match="512 numbers per image, val 256"):
        find_near_duplicates(train, narrow)
    short_ids = FeatureSet(train.features, train.labels, train.sample_ids[:-1])
    with pytest.raises(ValueError, match="9 sample ids"):
        find_near_duplicates(train, short_ids)
    int8 = FeatureSet(train.features, train.labels, train.sample_ids, number_format="int8")
    with pytest.raises(ValueError, match="same settings"):
        find_near_duplicates(train, int8)
    with pytest.raises(ValueError, match="between -1 and 1"):
        find_near_duplicates(train, train, threshold=95)
    with pytest.raises(ValueError, match="at least 2 training images"):
        find_near_duplicates(_random_features(1, seed=5), train)


# ----------------------------------------------------------------------------- the figure
def test_plot_shows_pairs_and_a_histogram(folders, features):
    train_set = FolderDataset(folders["train"], split="all")
    near_set = FolderDataset(folders["near"], split="all")
    report = find_near_duplicates(features["train"], features["near"])
    figure = plot_near_duplicates(report, near_set, train_set, n=4)
    assert isinstance(figure, Figure)
    assert len(figure.axes) == 2 * 4 + 1  # two images per pair, one histogram
    assert figure.axes[-1].get_xlabel().startswith("best cosine similarity")
    few = plot_near_duplicates(
        find_near_duplicates(features["train"], features["near"], threshold=1.0), near_set, train_set, n=2
    )  # nothing flagged: the closest pairs are shown all the same
    assert len(few.axes) == 2 * 2 + 1 and "(below)" in few.axes[0].get_title(loc="left")
    with pytest.raises(ValueError, match="data sets the features were computed from"):
        plot_near_duplicates(report, train_set, near_set)
    reordered = FolderDataset(folders["near"], split="all")
    reordered.samples = reordered.samples[::-1]
    with pytest.raises(ValueError, match="not a pair of the report"):
        plot_near_duplicates(report, reordered, train_set)
    plt.close(figure)
    plt.close(few)
