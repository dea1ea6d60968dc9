"""Tests for helpers/export.py: a model exported with torch.export computes what the original does.

The ResNet18 is randomly initialised (weights=None) and exported for 64x64 inputs, which
keeps tracing and running it to a few seconds on a laptop CPU.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from helpers.export import check_export, export_model, load_class_names, load_exported, metadata_path
from helpers.model import build_resnet18

CLASS_NAMES = ["crack", "no_defect", "stain"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_resnet18(num_classes=3, weights=None).eval()


@pytest.fixture(scope="module")
def exported_path(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "resnet18_3classes.pt2"
    example = torch.randn(2, 3, 64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # no deprecated TorchScript on the way
        export_model(model, path, example=example, class_names=CLASS_NAMES)
    return path


def test_exported_model_gives_the_same_logits(model, exported_path):
    exported = load_exported(exported_path)
    images = torch.randn(5, 3, 64, 64, generator=torch.Generator().manual_seed(1))  # another batch size
    difference = check_export(model, exported, images, atol=1e-4)
    assert difference <= 1e-4
    assert exported(images).shape == (5, 3)


def test_class_names_are_saved_next_to_the_model(exported_path):
    info = json.loads(metadata_path(exported_path).read_text())
    assert info["class_names"] == CLASS_NAMES
    assert "3x64x64" in info["input"] and "ImageNet" in info["input"]
    assert load_class_names(exported_path) == CLASS_NAMES


def test_export_leaves_no_temporary_file(exported_path):
    names = sorted(path.name for path in exported_path.parent.iterdir())
    assert names == ["resnet18_3classes.json", "resnet18_3classes.pt2"]


def test_check_export_raises_when_the_logits_differ(model, exported_path):
    exported = load_exported(exported_path)
    changed = build_resnet18(num_classes=3, weights=None).eval()  # other random weights
    with pytest.raises(ValueError, match="tolerance"):
        check_export(changed, exported, torch.randn(2, 3, 64, 64), atol=1e-4)


def test_wrong_class_names_and_format_are_refused(model, tmp_path):
    example = torch.randn(2, 3, 64, 64)
    with pytest.raises(ValueError, match="3 outputs but 2 class names"):
        export_model(model, tmp_path / "m.pt2", example=example, class_names=["a", "b"])
    with pytest.raises(ValueError, match="TorchScript"):
        export_model(model, tmp_path / "m.pt2", example=example, format="torchscript")
    with pytest.raises(FileNotFoundError):
        load_exported(tmp_path / "missing.pt2")
    assert list(tmp_path.iterdir()) == []
