"""Fixtures shared by the test modules: the real sample, a small transform, the float32 agreement check.

Tests that need real images take the `real_sample` fixture: a folder that links (copies only where
the system refuses links: Windows without Developer Mode) the Positive/ and Negative/ folders named
by WORKBOOK_REAL_SAMPLE, in the test's own tmp_path so that caches written beside the images land
there; without the variable the test skips.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision import transforms

from helpers.dataset import IMAGENET_MEAN, IMAGENET_STD
from helpers.features import FeatureSet
from helpers.inference import logits_from_features
from helpers.model import build_resnet18
from helpers.settings import DATA_DIR, PROJECT_ROOT, REAL_SAMPLE, real_sample_dir


def pytest_configure(config: pytest.Config) -> None:
    """The tests, and the notebooks nbval runs, keep their data in build/test-data, not in the learner's data/: a
    record (int8 switched on in notebook 07), a cache or a checkpoint of the learner's never changes what they see."""
    os.environ[DATA_DIR] = str(PROJECT_ROOT / "build" / "test-data")


@pytest.fixture
def real_sample(tmp_path) -> Path:
    """A folder whose Positive/ and Negative/ link to the real sample; skips when WORKBOOK_REAL_SAMPLE is unset."""
    source = real_sample_dir()
    if source is None:
        pytest.skip(f"{REAL_SAMPLE} is not set")
    root = tmp_path / "real_sample"
    root.mkdir()
    for cls in ("Positive", "Negative"):
        try:
            (root / cls).symlink_to(source / cls, target_is_directory=True)
        except OSError:  # Windows without the symlink privilege (no Developer Mode): a copy does as well
            shutil.copytree(source / cls, root / cls)
    return root


@pytest.fixture(scope="module")
def model() -> nn.Module:
    """A ResNet18 with a random backbone (no ImageNet weights here), seed 0, in eval mode; one per test module.

    Modules that need another model (three classes, trained BatchNorm statistics) define their own `model`.
    """
    torch.manual_seed(0)
    return build_resnet18(weights=None).eval()


@pytest.fixture(scope="session")
def small_transform() -> Callable[..., Callable]:
    """small_transform(size=64): shrink the images (bfloat16 is emulated, and slow, on most CPUs)."""

    def make(size: int = 64) -> Callable:
        return transforms.Compose(
            [transforms.Resize(size), transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        )

    return make


def train_logistic_head(features: torch.Tensor, labels: torch.Tensor, steps: int = 300) -> nn.Linear:
    """A quick Linear(512, 2) fitted to features, so that agreement tests use a meaningful head."""
    torch.manual_seed(0)
    head = nn.Linear(features.shape[1], 2)
    mean, std = features.mean(0), features.std(0) + 1e-6
    optimizer = torch.optim.Adam(head.parameters(), lr=0.01)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(head((features - mean) / std), labels).backward()
        optimizer.step()
    with torch.no_grad():  # fold the standardisation into the layer: head(features) directly
        head.weight /= std
        head.bias -= head.weight @ mean
    return head


@pytest.fixture(scope="session")
def assert_agrees_with_float32() -> Callable[[FeatureSet, FeatureSet, str, float], None]:
    """assert_agrees_with_float32(float32, rounded, what, min_cosine): rounded features (bf16, int8) stay
    close to float32's, and a head trained on float32 features keeps >= 99% of its predictions."""

    def check(float32: FeatureSet, rounded: FeatureSet, what: str, min_cosine: float) -> None:
        cosine = nn.functional.cosine_similarity(float32.features, rounded.features, dim=1)
        assert cosine.min() > min_cosine, f"lowest cosine similarity {cosine.min():.4f}"
        head = train_logistic_head(float32.features, float32.labels)
        same = logits_from_features(head, float32.features).argmax(1) == logits_from_features(
            head, rounded.features
        ).argmax(1)
        print(f"{what} changed {int((~same).sum())} of {len(same)} predictions; lowest cosine {cosine.min():.5f}")
        assert same.float().mean() >= 0.99, f"{what} changed {int((~same).sum())} of {len(same)} predictions"

    return check
