"""helpers.model: the head, the frozen backbone, the weights' error message, checkpoints."""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from http_server import FileServer
from torchvision.models import resnet18

import helpers.model as model_module
from helpers.model import (
    Checkpoint,
    CheckpointMismatchError,
    WeightsChoice,
    WeightsUnavailableError,
    build_resnet18,
    count_parameters,
    imagenet_weights_path,
    load_checkpoint,
    resolve_weights,
    starting_head,
    save_checkpoint,
    trainable_parameter_names,
)
from helpers.plumbing.text import printable


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """An empty torch cache and a weights address that refuses connections."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("WORKBOOK_WEIGHTS_URL", "http://127.0.0.1:9/resnet18-f37072fd.pth")
    monkeypatch.delenv("WORKBOOK_ALLOW_RANDOM_WEIGHTS", raising=False)
    monkeypatch.delenv("WORKBOOK_QUICK", raising=False)
    monkeypatch.delenv("WORKBOOK_OFFLINE", raising=False)


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


def state_dict_bytes(model: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("offline", [True, False], ids=["WORKBOOK_OFFLINE=1", "the download fails"])
def test_without_the_file_the_learner_reads_one_message_and_no_downloading_line(
    no_weights, monkeypatch, capfd, offline
):
    """torch.hub printed 'Downloading: "...resnet18-f37072fd.pth"' before the workbook's 'cannot be had'."""
    monkeypatch.setenv("WORKBOOK_QUICK", "1")  # the notebooks' quick mode: carry on with a random backbone
    with FileServer() as server:  # answers 404 to everything: a download that fails
        monkeypatch.setenv("WORKBOOK_WEIGHTS_URL", server.url("/resnet18-f37072fd.pth"))
        if offline:
            monkeypatch.setenv("WORKBOOK_OFFLINE", "1")
        weights = resolve_weights()
        assert len(server.requests) == (0 if offline else 1)
    out, err = capfd.readouterr()  # file descriptors too: torch.hub writes to sys.stdout, tqdm to stderr
    assert weights.is_random
    assert "Downloading" not in out + err and err == ""
    assert out.count("are not on this machine") == 1 and out.count("RANDOMLY INITIALISED") == 1
    assert ("WORKBOOK_OFFLINE=1 says not to download them" if offline else "HTTP Error 404") in out
    assert not imagenet_weights_path().exists()


def test_the_weights_are_downloaded_once_checked_and_then_read_from_the_cache(no_weights, monkeypatch, capfd):
    reference = resnet18(weights=None)
    payload = state_dict_bytes(reference)
    # no file of ours has a SHA-256 starting f37072fd: the check is told this file's start, and still runs
    monkeypatch.setattr(model_module, "WEIGHTS_SHA256_PREFIX", hashlib.sha256(payload).hexdigest()[:8])
    with FileServer({"/resnet18-f37072fd.pth": payload}) as server:
        monkeypatch.setenv("WORKBOOK_WEIGHTS_URL", server.url("/resnet18-f37072fd.pth"))
        assert resolve_weights().is_imagenet
        out, err = capfd.readouterr()
        assert out == f"Saved the ImageNet weights to {imagenet_weights_path()}; later runs load them from there.\n"
        assert "Downloading" not in err
        assert imagenet_weights_path().read_bytes() == payload
        model = build_resnet18(weights="imagenet", progress=False)
        assert len(server.requests) == 1  # the second time, from the cache
    assert torch.equal(model.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    assert capfd.readouterr() == ("", "")


def test_a_damaged_file_in_the_cache_is_named_with_what_to_do(no_weights):
    imagenet_weights_path().parent.mkdir(parents=True)
    imagenet_weights_path().write_bytes(b"not a state dict")
    with pytest.raises(WeightsUnavailableError, match="cannot be read as the ImageNet weights .*: delete it"):
        build_resnet18(weights="imagenet", progress=False)


def test_random_fallback_only_in_quick_mode_or_when_asked(no_weights, monkeypatch, capsys):
    with pytest.raises(WeightsUnavailableError):
        resolve_weights()
    monkeypatch.setenv("WORKBOOK_QUICK", "1")
    weights = resolve_weights()
    assert weights.is_random and weights.label == "random" and "NOT pretrained" in weights.description
    assert "RANDOMLY INITIALISED" in capsys.readouterr().out
    monkeypatch.delenv("WORKBOOK_QUICK")
    monkeypatch.setenv("WORKBOOK_ALLOW_RANDOM_WEIGHTS", "1")
    assert resolve_weights().is_random
    assert resolve_weights(allow_random=True).is_random


@pytest.mark.parametrize(
    "given, source, label",
    [
        ("imagenet", "imagenet", "imagenet"),
        (None, None, "random"),
        (Path("/w/r.pth"), "/w/r.pth", "/w/r.pth"),
    ],
)
def test_weights_choice_reads_back_what_a_checkpoint_records(given, source, label):
    weights = WeightsChoice.of(given)
    assert weights.source == source and weights.label == label and weights.description
    assert WeightsChoice.of(weights) is weights
    assert WeightsChoice.from_label(weights.label, weights.description) == weights
    assert WeightsChoice.from_label(None).is_random and not WeightsChoice.from_label("imagenet").is_random


def test_checkpoint_round_trip(tmp_path):
    model = build_resnet18(weights=None)
    torch.nn.init.normal_(model.fc.weight)
    path = save_checkpoint(
        tmp_path / "ckpt" / "model.pt", model, ["Negative", "Positive"], {"weights": "random", "val_accuracy": 0.75}
    )
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary file left behind
    checkpoint = load_checkpoint(path, num_classes=2)
    assert isinstance(checkpoint, Checkpoint) and checkpoint.path == path and not checkpoint.model.training
    for (name, a), (_, b) in zip(model.state_dict().items(), checkpoint.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert checkpoint.class_names == ["Negative", "Positive"]
    assert checkpoint.metadata["val_accuracy"] == 0.75 and checkpoint.weights.is_random
    assert checkpoint.metadata["versions"]["torch"] == torch.__version__


def test_wrong_checkpoints_get_clear_errors(tmp_path):
    path = save_checkpoint(tmp_path / "three.pt", build_resnet18(3, weights=None), ["a", "b", "c"])
    with pytest.raises(CheckpointMismatchError, match="3-class head .*2 classes were asked for"):
        load_checkpoint(path, num_classes=2)
    torch.save(resnet18(weights=None).state_dict(), tmp_path / "plain.pt")
    with pytest.raises(CheckpointMismatchError, match="not a checkpoint saved by this workbook"):
        load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(FileNotFoundError, match="04"):
        load_checkpoint(tmp_path / "absent.pt")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A good 2-class checkpoint (random weights) to damage in the tests below."""
    return save_checkpoint(
        tmp_path_factory.mktemp("good") / "good.pt", build_resnet18(2, weights=None), ["Negative", "Positive"]
    )


class NotWeights:
    """A Python object a weights-only load refuses to create."""


def changed(key: str, value: object) -> Callable[[dict], None]:
    def change(payload: dict) -> None:
        payload[key] = value

    return change


def remove_weight(payload: dict) -> None:
    del payload["state_dict"]["layer4.1.bn2.weight"]


def misshaped_head(payload: dict) -> None:
    payload["state_dict"]["fc.weight"] = torch.zeros(3, 512)


PAYLOAD_CHANGES = {  # what is wrong -> (how to make it, what the error says)
    "no class names": (lambda payload: payload.pop("class_names"), "has no class_names"),
    "no state dict": (lambda payload: payload.pop("state_dict"), "has no state_dict"),
    "num_classes a string": (changed("num_classes", "2"), "num_classes must be a whole number from 2 to 10,000"),
    "num_classes a bool": (changed("num_classes", True), "num_classes must be a whole number"),
    "class names not strings": (changed("class_names", [0, 1]), "class_names must be a list of 2 strings"),
    "class names of another count": (changed("class_names", ["a", "b", "c"]), "a list of 2 strings .* 3"),
    "architecture not a string": (changed("architecture", 18), "not a resnet18"),
    "state dict not a dict": (changed("state_dict", [1, 2]), "state_dict must map"),
    "a weight missing": (remove_weight, "do not fit a ResNet18 with a 2-class head .*layer4.1.bn2.weight"),
    "a head of another shape": (misshaped_head, "do not fit .*fc.weight"),
}


@pytest.mark.parametrize("what", PAYLOAD_CHANGES)
def test_a_wrong_payload_gets_one_plain_sentence(checkpoint, tmp_path, what):
    change, expected = PAYLOAD_CHANGES[what]
    payload = torch.load(checkpoint, weights_only=True)
    change(payload)
    torch.save(payload, tmp_path / "wrong.pt")
    with pytest.raises(CheckpointMismatchError, match=expected) as error:
        load_checkpoint(tmp_path / "wrong.pt")
    assert "wrong.pt" in str(error.value) and "\n" not in str(error.value)


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def not_weights(data: bytes) -> bytes:
    buffer = io.BytesIO()
    torch.save({"format": "concrete-crack-workbook/1", "extra": NotWeights()}, buffer)
    return buffer.getvalue()


FILE_CHANGES = {  # what is wrong -> (the bytes of the file, what the error says)
    "truncated": (truncated, "damaged or incomplete"),
    "empty": (lambda data: b"", "damaged or incomplete"),
    "not a torch file": (lambda data: b"\x00\x01 not a torch file" * 10, "not a file written by torch.save"),
    "text": (lambda data: b"hello, I am a text file\n", "not a file written by torch.save"),
    "Python objects": (not_weights, "Python objects other than weights"),
}


@pytest.mark.parametrize("what", FILE_CHANGES)
def test_a_damaged_file_gets_one_plain_sentence(checkpoint, tmp_path, what):
    change, expected = FILE_CHANGES[what]
    (tmp_path / "damaged.pt").write_bytes(change(checkpoint.read_bytes()))
    with pytest.raises(CheckpointMismatchError, match=expected) as error:
        load_checkpoint(tmp_path / "damaged.pt")
    message = str(error.value)
    assert "damaged.pt" in message and "\n" not in message and "weights_only" not in message


def test_ten_million_classes_fail_before_anything_is_built(checkpoint, tmp_path, monkeypatch):
    payload = torch.load(checkpoint, weights_only=True)
    payload["num_classes"] = 10**7
    torch.save(payload, tmp_path / "huge.pt")

    def must_not_build(*args, **kwargs):
        raise AssertionError("a model was built for a checkpoint that should have been refused")

    monkeypatch.setattr("helpers.model.build_resnet18", must_not_build)
    start = time.perf_counter()
    with pytest.raises(CheckpointMismatchError, match="from 2 to 10,000, not 10000000"):
        load_checkpoint(tmp_path / "huge.pt")
    assert time.perf_counter() - start < 10


def test_control_characters_in_class_names_are_not_shown(tmp_path):
    path = save_checkpoint(
        tmp_path / "odd.pt",
        build_resnet18(3, weights=None),
        ["\x1b[2Jcrack", "no\ncrack", "\x1b]0;title\x07stain\x1b[31m"],
    )
    with pytest.raises(CheckpointMismatchError) as error:
        load_checkpoint(path, num_classes=2)
    message = str(error.value)
    assert "\x1b" not in message and "\n" not in message and "\x07" not in message
    assert "(crack, no crack, stain)" in message
    assert printable("a\tb\r\nc\x1b[2J\x1b[1;31md\u202ee\x00") == "a b  cde"
    assert printable("Négatif ✓ 裂缝") == "Négatif ✓ 裂缝"


def test_thirty_concurrent_saves_of_one_checkpoint(tmp_path):
    model = build_resnet18(weights=None)
    path = tmp_path / "shared" / "model.pt"

    def save(writer: int) -> Path:
        return save_checkpoint(path, model, ["Negative", "Positive"], {"writer": writer})

    with ThreadPoolExecutor(max_workers=30) as pool:
        saved = list(pool.map(save, range(30)))
    assert saved == [path] * 30
    checkpoint = load_checkpoint(path, num_classes=2)
    assert checkpoint.metadata["writer"] in range(30)
    assert torch.equal(checkpoint.model.fc.weight, model.fc.weight)
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # every temporary file was renamed


def test_a_temporary_file_left_by_a_killed_save(tmp_path):
    model = build_resnet18(weights=None)
    path = save_checkpoint(tmp_path / "model.pt", model, ["Negative", "Positive"])
    stale = tmp_path / ".model.pt.4242-deadbeef.tmp.pt"  # a save killed two minutes ago
    fresh = tmp_path / ".model.pt.4343-0badcafe.tmp.pt"  # a save still running in another process
    other = tmp_path / ".other.pt.4242-deadbeef.tmp.pt"  # another checkpoint's: not ours to remove
    for temp in (stale, fresh, other):
        temp.write_bytes(b"half a checkpoint")
    two_minutes_ago = time.time() - 120
    for temp in (stale, other):
        os.utime(temp, (two_minutes_ago, two_minutes_ago))
    assert load_checkpoint(path).class_names == ["Negative", "Positive"]
    save_checkpoint(path, model, ["Negative", "Positive"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, fresh.name, other.name])
    assert load_checkpoint(path).class_names == ["Negative", "Positive"]


@pytest.mark.parametrize("num_classes, seed", [(2, 0), (3, 0), (2, 7)])
def test_starting_head_is_the_head_build_resnet18_makes_after_the_seed(num_classes, seed):
    torch.manual_seed(seed)
    model = build_resnet18(num_classes=num_classes, weights=None)
    head = starting_head(num_classes, seed)
    assert torch.equal(head.weight, model.fc.weight) and torch.equal(head.bias, model.fc.bias)
    torch.manual_seed(seed)
    bare = torch.nn.Linear(512, num_classes)
    assert not torch.equal(bare.weight, head.weight)  # why a bare seeded Linear is not the same start


def test_starting_head_leaves_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    starting_head()
    assert torch.equal(torch.rand(3), expected)
