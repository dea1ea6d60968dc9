"""helpers.model: the head, the frozen backbone, the weights' error message, checkpoints."""

from __future__ import annotations

import hashlib
import io
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
from helpers.plumbing import printable


REFUSED = "http://127.0.0.1:9/resnet18-f37072fd.pth"  # nothing listens on port 9: the connection is refused


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """An empty torch cache, and no permission to fall back to a random backbone."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
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
    with pytest.raises(WeightsUnavailableError, match="other.pth cannot be loaded as ResNet18 weights .*missing"):
        build_resnet18(weights=tmp_path / "other.pth")
    with pytest.raises(WeightsUnavailableError, match="absent.pth cannot be loaded as ResNet18 weights"):
        build_resnet18(weights=tmp_path / "absent.pth")


def test_missing_weights_error_says_where_to_put_the_file(no_weights, monkeypatch):
    monkeypatch.setenv("WORKBOOK_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError) as error:
        build_resnet18(weights="imagenet", progress=False)
    message = str(error.value)
    assert str(imagenet_weights_path()) in message and "torch-home" in message
    assert "TORCH_HOME" in message and "weights=PATH" in message and "--weights PATH" in message
    assert "download.pytorch.org/models/resnet18-f37072fd.pth" in message


def test_a_mirror_serving_the_wrong_file_is_rejected_and_nothing_is_cached(no_weights, monkeypatch):
    buffer = io.BytesIO()
    torch.save(resnet18(weights=None).state_dict(), buffer)
    with FileServer({"/resnet18-f37072fd.pth": buffer.getvalue()}) as server:
        with pytest.raises(WeightsUnavailableError, match="hash|Hash|sha256|SHA256"):
            resolve_weights(url=server.url("/resnet18-f37072fd.pth"))
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
        if offline:
            monkeypatch.setenv("WORKBOOK_OFFLINE", "1")
        weights = resolve_weights(url=server.url("/resnet18-f37072fd.pth"))
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
        assert resolve_weights(url=server.url("/resnet18-f37072fd.pth")).is_imagenet
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
    with pytest.raises(
        WeightsUnavailableError, match="resnet18-f37072fd.pth is damaged .*: delete it to download it again"
    ):
        build_resnet18(weights="imagenet", progress=False)


def test_random_fallback_only_in_quick_mode_or_when_asked(no_weights, monkeypatch, capsys):
    with pytest.raises(WeightsUnavailableError):
        resolve_weights(url=REFUSED)
    with pytest.raises(WeightsUnavailableError):
        resolve_weights(allow_random=False, url=REFUSED)
    monkeypatch.setenv("WORKBOOK_QUICK", "1")
    weights = resolve_weights(url=REFUSED)
    assert weights.is_random and weights.label == "random" and "NOT pretrained" in weights.description
    assert "RANDOMLY INITIALISED" in capsys.readouterr().out
    monkeypatch.delenv("WORKBOOK_QUICK")
    monkeypatch.setenv("WORKBOOK_ALLOW_RANDOM_WEIGHTS", "1")
    assert resolve_weights(url=REFUSED).is_random
    monkeypatch.delenv("WORKBOOK_ALLOW_RANDOM_WEIGHTS")
    assert resolve_weights(allow_random=True, url=REFUSED).is_random


@pytest.mark.parametrize("recorded", ["imagenet", "random", "/w/resnet18-mine.pth", None])
def test_checkpoint_round_trip(tmp_path, recorded):
    model = build_resnet18(weights=None)
    torch.nn.init.normal_(model.fc.weight)
    metadata = {"val_accuracy": 0.75} | ({} if recorded is None else {"weights": recorded})
    path = save_checkpoint(tmp_path / "ckpt" / "model.pt", model, ["Negative", "Positive"], metadata)
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary file left behind
    checkpoint = load_checkpoint(path, num_classes=2)
    assert isinstance(checkpoint, Checkpoint) and checkpoint.path == path and not checkpoint.model.training
    for (name, a), (_, b) in zip(model.state_dict().items(), checkpoint.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert checkpoint.class_names == ["Negative", "Positive"]
    assert checkpoint.metadata["val_accuracy"] == 0.75 and checkpoint.metadata["versions"]["torch"] == torch.__version__
    assert checkpoint.weights.label == (recorded or "random") and checkpoint.weights.description
    assert checkpoint.weights.is_random == (recorded in ("random", None))
    assert checkpoint.weights.is_imagenet == (recorded == "imagenet")


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


def changed_weight(name: str, value: torch.Tensor | None) -> Callable[[dict], None]:
    def change(payload: dict) -> None:
        payload["state_dict"].pop(name) if value is None else payload["state_dict"].__setitem__(name, value)

    return change


PAYLOAD_CHANGES = {  # what is wrong -> (how to make it, what the error says)
    "another format": (changed("format", "someone-else/1"), "not a checkpoint saved by this workbook"),
    "no class names": (lambda payload: payload.pop("class_names"), "no list of 2 to 10,000 class names"),
    "class names not strings": (changed("class_names", [0, 1]), "no list of 2 to 10,000 class names"),
    "one class": (changed("class_names", ["crack"]), "no list of 2 to 10,000 class names"),
    "class names of another count": (changed("class_names", ["a", "b", "c"]), "do not fit .*3-class head .*fc."),
    "no state dict": (lambda payload: payload.pop("state_dict"), "state_dict is not a dict of tensors"),
    "state dict not a dict": (changed("state_dict", [1, 2]), "state_dict is not a dict of tensors"),
    "a weight missing": (
        changed_weight("layer4.1.bn2.weight", None),
        "do not fit .*2-class head .*layer4.1.bn2.weight",
    ),
    "a head of another shape": (changed_weight("fc.weight", torch.zeros(3, 512)), "do not fit .*fc.weight"),
    "a NaN weight": (
        changed_weight("fc.bias", torch.tensor([0.0, float("nan")])),
        "NaN or infinite weights: train again, with a smaller learning rate",
    ),
    "an infinite weight": (changed_weight("conv1.weight", torch.full((64, 3, 7, 7), float("inf"))), "NaN or infinite"),
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
    "truncated": (truncated, "damaged, cut short or another kind of file"),
    "empty": (lambda data: b"", "damaged, cut short or another kind of file"),
    "not a torch file": (lambda data: b"\x00\x01 not a torch file" * 10, "damaged, cut short or another kind"),
    "text": (lambda data: b"hello, I am a text file\n", "damaged, cut short or another kind of file"),
    "Python objects": (not_weights, "Python objects other than weights, which are not loaded because .* run code"),
}


@pytest.mark.parametrize("what", FILE_CHANGES)
def test_a_damaged_file_gets_one_plain_sentence(checkpoint, tmp_path, what):
    change, expected = FILE_CHANGES[what]
    (tmp_path / "damaged.pt").write_bytes(change(checkpoint.read_bytes()))
    with pytest.raises(CheckpointMismatchError, match=expected) as error:
        load_checkpoint(tmp_path / "damaged.pt")
    message = str(error.value)
    assert "damaged.pt" in message and "\n" not in message and "weights_only" not in message


def test_an_exported_program_is_refused_without_being_loaded_or_run(tmp_path, monkeypatch):
    """Issue 29, item 1: a `.pt2` can act on the machine when loaded or run; the workbook loads none."""
    torch.export.save(torch.export.export(torch.nn.Linear(4, 2), (torch.zeros(1, 4),)), tmp_path / "model.pt2")

    def must_not_run(*args, **kwargs):
        raise AssertionError("an exported program was loaded")

    monkeypatch.setattr(torch.export, "load", must_not_run)
    with pytest.raises(CheckpointMismatchError, match="model.pt2 is not a checkpoint .*pass the .pt file") as error:
        load_checkpoint(tmp_path / "model.pt2")
    assert "load_exported" not in str(error.value)


def test_ten_thousand_and_one_classes_fail_before_anything_is_built(checkpoint, tmp_path, monkeypatch):
    payload = torch.load(checkpoint, weights_only=True)
    payload["class_names"] = [f"class {i}" for i in range(10_001)]
    torch.save(payload, tmp_path / "huge.pt")

    def must_not_build(*args, **kwargs):
        raise AssertionError("a model was built for a checkpoint that should have been refused")

    monkeypatch.setattr("helpers.model.build_resnet18", must_not_build)
    start = time.perf_counter()
    with pytest.raises(CheckpointMismatchError, match="no list of 2 to 10,000 class names"):
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


def test_eight_concurrent_saves_of_one_checkpoint(tmp_path):
    model = build_resnet18(weights=None)
    path = tmp_path / "shared" / "model.pt"

    def save(writer: int) -> Path:
        return save_checkpoint(path, model, ["Negative", "Positive"], {"writer": writer})

    with ThreadPoolExecutor(max_workers=8) as pool:
        saved = list(pool.map(save, range(8)))
    assert saved == [path] * 8
    checkpoint = load_checkpoint(path, num_classes=2)
    assert checkpoint.metadata["writer"] in range(8)
    assert torch.equal(checkpoint.model.fc.weight, model.fc.weight)
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # every temporary file was renamed


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
