"""helpers.model: the head, the frozen backbone, the weights' error message, checkpoints."""

from __future__ import annotations

import io

import pytest
import torch
from http_server import FileServer
from torchvision.models import resnet18

from helpers.model import (
    CheckpointMismatchError,
    WeightsUnavailableError,
    build_resnet18,
    count_parameters,
    imagenet_weights_path,
    load_checkpoint,
    resolve_weights,
    save_checkpoint,
    trainable_parameter_names,
)


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """An empty torch cache and a weights address that refuses connections."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("WORKBOOK_WEIGHTS_URL", "http://127.0.0.1:9/resnet18-f37072fd.pth")
    monkeypatch.delenv("WORKBOOK_ALLOW_RANDOM_WEIGHTS", raising=False)
    monkeypatch.delenv("WORKBOOK_QUICK", raising=False)


def test_head_shape_and_parameter_counts():
    model = build_resnet18(num_classes=2, weights=None)
    assert isinstance(model.fc, torch.nn.Linear) and (model.fc.in_features, model.fc.out_features) == (512, 2)
    assert count_parameters(model) == (11_177_538, 1_026)
    assert trainable_parameter_names(model) == ["fc.weight", "fc.bias"]
    assert model(torch.zeros(2, 3, 227, 227)).shape == (2, 2)


def test_three_classes_and_an_unfrozen_backbone():
    model = build_resnet18(num_classes=3, weights=None, freeze_backbone=False)
    total, trainable = count_parameters(model)
    assert total == trainable == 11_177_538 + 513
    with pytest.raises(ValueError, match="at least 2"):
        build_resnet18(num_classes=1, weights=None)


def test_weights_from_a_local_file(tmp_path):
    reference = resnet18(weights=None)
    path = tmp_path / "my-resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = build_resnet18(weights=path)
    assert torch.equal(model.conv1.weight, reference.conv1.weight)
    assert torch.equal(model.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var)
    assert model.fc.out_features == 2  # the 1000-way head was replaced

    torch.save({"not": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(WeightsUnavailableError, match="not a ResNet18 state dict"):
        build_resnet18(weights=tmp_path / "other.pth")
    with pytest.raises(WeightsUnavailableError, match="No weights file"):
        build_resnet18(weights=tmp_path / "absent.pth")


def test_missing_weights_error_says_where_to_put_the_file(no_weights):
    with pytest.raises(WeightsUnavailableError) as error:
        build_resnet18(weights="imagenet", progress=False)
    message = str(error.value)
    assert str(imagenet_weights_path()) in message and "torch-home" in message
    assert "TORCH_HOME" in message and "build_resnet18(weights=" in message
    assert "download.pytorch.org/models/resnet18-f37072fd.pth" in message


def test_a_mirror_serving_the_wrong_file_is_rejected_and_nothing_is_cached(no_weights, monkeypatch):
    buffer = io.BytesIO()
    torch.save(resnet18(weights=None).state_dict(), buffer)
    with FileServer({"/resnet18-f37072fd.pth": buffer.getvalue()}) as server:
        monkeypatch.setenv("WORKBOOK_WEIGHTS_URL", server.url("/resnet18-f37072fd.pth"))
        with pytest.raises(WeightsUnavailableError, match="hash|Hash|sha256|SHA256"):
            build_resnet18(weights="imagenet", progress=False)
        assert len(server.requests) == 1
    assert not imagenet_weights_path().exists()


def test_random_fallback_only_in_quick_mode_or_when_asked(no_weights, monkeypatch, capsys):
    with pytest.raises(WeightsUnavailableError):
        resolve_weights()
    monkeypatch.setenv("WORKBOOK_QUICK", "1")
    weights, description = resolve_weights()
    assert weights is None and "NOT pretrained" in description
    assert "RANDOMLY INITIALISED" in capsys.readouterr().out
    monkeypatch.delenv("WORKBOOK_QUICK")
    monkeypatch.setenv("WORKBOOK_ALLOW_RANDOM_WEIGHTS", "1")
    assert resolve_weights()[0] is None
    assert resolve_weights(allow_random=True)[0] is None


def test_checkpoint_round_trip(tmp_path):
    model = build_resnet18(weights=None)
    torch.nn.init.normal_(model.fc.weight)
    path = save_checkpoint(tmp_path / "ckpt" / "model.pt", model, ["Negative", "Positive"],
                           {"weights": "random", "val_accuracy": 0.75})
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary file left behind
    loaded, info = load_checkpoint(path, num_classes=2)
    assert not loaded.training
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert info["class_names"] == ["Negative", "Positive"]
    assert info["metadata"]["val_accuracy"] == 0.75 and info["metadata"]["weights"] == "random"
    assert info["metadata"]["versions"]["torch"] == torch.__version__


def test_wrong_checkpoints_get_clear_errors(tmp_path):
    path = save_checkpoint(tmp_path / "three.pt", build_resnet18(3, weights=None), ["a", "b", "c"])
    with pytest.raises(CheckpointMismatchError, match="3-class head .*2 classes were asked for"):
        load_checkpoint(path, num_classes=2)
    torch.save(resnet18(weights=None).state_dict(), tmp_path / "plain.pt")
    with pytest.raises(CheckpointMismatchError, match="not a checkpoint saved by this workbook"):
        load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(FileNotFoundError, match="04"):
        load_checkpoint(tmp_path / "absent.pt")
