"""Predictions from a checkpoint, in Python (helpers.inference) and on the command line (helpers.commands)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import helpers.commands
from helpers.inference import Prediction, classify_files, classify_photos, load_image_tensor
from helpers.model import build_resnet18, save_checkpoint
from helpers.plumbing import BadImageError
from helpers.commands import predict_main as main
from helpers.settings import PROJECT_ROOT


def write_jpeg(path: Path, size: tuple[int, int], seed: int) -> Path:
    """A noisy RGB JPEG of `size` (width, height)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """Two checkpoints (2 and 3 classes, random weights) and three photos, one of another size."""
    root = tmp_path_factory.mktemp("predict")
    torch.manual_seed(0)
    save_checkpoint(root / "two.pt", build_resnet18(2, weights=None), ["Negative", "Positive"])
    save_checkpoint(root / "three.pt", build_resnet18(3, weights=None), ["hairline", "none", "wide"])
    write_jpeg(root / "a.jpg", (227, 227), seed=1)
    write_jpeg(root / "b.jpg", (227, 227), seed=2)
    write_jpeg(root / "big.jpg", (400, 300), seed=3)
    return root


def photos(workdir: Path) -> list[str]:
    return [str(workdir / name) for name in ("a.jpg", "b.jpg", "big.jpg")]


def test_image_tensor_is_227_and_normalised(workdir):
    for name in ("a.jpg", "big.jpg"):
        tensor = load_image_tensor(workdir / name)
        assert tensor.shape == (3, 227, 227) and tensor.dtype == torch.float32
        assert tensor.min() < 0  # normalised with the ImageNet mean and std, not in [0, 1]


def test_lines_name_the_checkpoints_classes(workdir, capsys):
    assert main([*photos(workdir), "--checkpoint", str(workdir / "two.pt")]) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert err == "" and len(lines) == 3
    for line, path in zip(lines, photos(workdir)):
        assert line.startswith(f"{path}: ") and line.endswith("%)")
        assert line.split(": ")[1].split(" (")[0] in {"Negative", "Positive"}


def test_json_matches_the_python_api(workdir, capsys):
    assert main([*photos(workdir), "--checkpoint", str(workdir / "three.pt"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    from_python = classify_files(photos(workdir), checkpoint=workdir / "three.pt")
    assert len(printed) == len(from_python) == 3
    for item, prediction in zip(printed, from_python):
        assert isinstance(prediction, Prediction)
        assert set(item) == {"path", "label", "probability", "probabilities"}
        assert item["path"] == str(prediction.path)
        assert set(item["probabilities"]) == {"hairline", "none", "wide"}
        assert sum(item["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert item["label"] == prediction.label == max(item["probabilities"], key=item["probabilities"].get)
        assert item["probability"] == pytest.approx(prediction.probability, abs=1e-6)
        assert item["probability"] == pytest.approx(item["probabilities"][item["label"]])


def test_a_photo_that_cannot_be_read_raises_or_is_collected(workdir):
    model, names, missing = build_resnet18(2, weights=None), ["Negative", "Positive"], workdir / "nowhere.jpg"
    with pytest.raises(FileNotFoundError, match="nowhere.jpg"):
        classify_photos(model, [workdir / "a.jpg", missing], names, device="cpu")
    errors = []
    predictions = classify_photos(model, [missing, workdir / "a.jpg"], names, device="cpu", errors=errors)
    assert [p.path for p in predictions] == [workdir / "a.jpg"] and [path for path, _ in errors] == [missing]


def check_one_error_line(capsys, *words: str) -> None:
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    for word in words:
        assert word in lines[0]


def test_missing_image(workdir, capsys):
    missing = workdir / "nowhere.jpg"
    assert main([str(missing), "--checkpoint", str(workdir / "two.pt")]) == 1
    check_one_error_line(capsys, str(missing))
    with pytest.raises(FileNotFoundError, match="nowhere.jpg"):
        load_image_tensor(missing)


def test_garbage_jpeg(workdir, capsys):
    broken = workdir / "broken.jpg"
    broken.write_bytes(b"this is not a jpeg" * 20)
    assert main([str(broken), "--checkpoint", str(workdir / "two.pt")]) == 1
    check_one_error_line(capsys, str(broken))
    with pytest.raises(BadImageError, match="broken.jpg"):
        load_image_tensor(broken)


def test_missing_checkpoint(workdir, capsys):
    assert main([photos(workdir)[0], "--checkpoint", str(workdir / "none.pt")]) == 1
    check_one_error_line(capsys, "none.pt")


@pytest.mark.parametrize("content", ["a state dict", "garbage bytes"])
def test_not_a_workbook_checkpoint(workdir, capsys, content):
    path = workdir / "other.pt"
    if content == "a state dict":
        torch.save(build_resnet18(2, weights=None).state_dict(), path)
    else:
        path.write_bytes(b"\x00\x01 not a torch file")
    assert main([photos(workdir)[0], "--checkpoint", str(path)]) == 1
    check_one_error_line(capsys, "other.pt", "not a checkpoint")


def test_command_line_in_a_subprocess(workdir):
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "helpers", "predict", str(workdir / "a.jpg"), "--checkpoint", str(workdir / "two.pt")],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{workdir / 'a.jpg'}: ")


def rewritten_checkpoint(workdir: Path, name: str, **changes: object) -> Path:
    """A copy of two.pt with some of its keys changed (a value of None removes the key)."""
    payload = torch.load(workdir / "two.pt", weights_only=True)
    for key, value in changes.items():
        payload.pop(key) if value is None else payload.__setitem__(key, value)
    torch.save(payload, workdir / name)
    return workdir / name


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"class_names": None}, ("no-names.pt", "no list of 2 to 10,000 class names")),
        ({"class_names": ["a", "b", "c"]}, ("three-names.pt", "do not fit a ResNet18 with a 3-class head")),
        ({"class_names": [str(i) for i in range(10_001)]}, ("many.pt", "2 to 10,000 class names")),
    ],
    ids=["no class names", "three names for two classes", "ten thousand and one classes"],
)
def test_a_wrong_checkpoint_is_one_line(workdir, capsys, changes, words):
    path = rewritten_checkpoint(workdir, words[0], **changes)
    assert main([photos(workdir)[0], "--checkpoint", str(path)]) == 1
    check_one_error_line(capsys, *words)


def test_control_characters_in_class_names_are_not_printed(workdir, capsys):
    names = ["\x1b[2JNegative\n", "Posi\ntive\x1b[31m"]
    path = save_checkpoint(workdir / "odd.pt", build_resnet18(2, weights=None), names)
    assert main([*photos(workdir), "--checkpoint", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "\x1b" not in out + err and err == ""
    lines = out.strip().split("\n")
    assert len(lines) == 3 and all(line.split(": ")[1].split(" (")[0] in {"Negative", "Posi tive"} for line in lines)
    assert main([*photos(workdir), "--checkpoint", str(path), "--json"]) == 0
    assert {item["label"] for item in json.loads(capsys.readouterr().out)} <= set(names)  # JSON keeps them, escaped


@pytest.mark.parametrize("as_json", [False, True], ids=["lines", "json"])
def test_a_bad_file_does_not_hide_the_good_ones(workdir, capsys, as_json):
    good, bad = workdir / "a.jpg", workdir / "not-an-image.jpg"
    bad.write_bytes(b"no picture here" * 10)
    assert main([str(good), str(bad), "--checkpoint", str(workdir / "two.pt"), *(["--json"] if as_json else [])]) == 1
    out, err = capsys.readouterr()
    if as_json:
        printed = json.loads(out)
        assert [item["path"] for item in printed] == [str(good)] and printed[0]["label"] in {"Negative", "Positive"}
    else:
        assert out.startswith(f"{good}: ") and len(out.strip().splitlines()) == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: ")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
@pytest.mark.parametrize("stdout", ["closed", "full", "a reader that went away"])
def test_stdout_that_cannot_be_written_is_one_line_or_quiet(workdir, capsys, monkeypatch, stdout):
    """Issue 29, item 14: `>&-`, `> /dev/full` and `| head -c 0` gave tracebacks."""
    if stdout == "closed":
        monkeypatch.setattr(sys, "stdout", None)  # what Python makes of a closed file descriptor 1
    elif stdout == "full":
        monkeypatch.setattr(sys, "stdout", open("/dev/full", "w"))
    else:
        read_end, write_end = os.pipe()
        os.close(read_end)
        monkeypatch.setattr(sys, "stdout", os.fdopen(write_end, "w"))
    status = main([*photos(workdir), "--checkpoint", str(workdir / "two.pt"), "--json"])
    err = capsys.readouterr().err
    if stdout == "a reader that went away":
        assert (status, err) == (141, "")  # 128 + SIGPIPE, quietly, as `cat` does
    else:
        assert status == 1 and err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
        assert "closed" in err if stdout == "closed" else "No space left" in err


def test_help_names_the_command(capsys):
    assert main(["--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: python -m helpers predict ")


def test_huge_weights_whose_outputs_overflow_are_one_line_and_valid_json(workdir, capsys):
    """Issue 29, item 9: finite weights so large that the outputs overflow printed "Negative (nan%)" with exit 0."""
    torch.manual_seed(0)
    model = build_resnet18(2, weights=None)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(1e30)  # finite, but the activations overflow to infinity
    save_checkpoint(workdir / "huge-weights.pt", model, ["Negative", "Positive"])
    for extra in ([], ["--json"]):
        assert main([photos(workdir)[0], "--checkpoint", str(workdir / "huge-weights.pt"), *extra]) == 1
        out, err = capsys.readouterr()
        assert out == ("[]\n" if extra else "") and json.loads(out or "[]") == []
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {photos(workdir)[0]}: ") and "not numbers" in lines[0]
    with pytest.raises(ValueError, match="not numbers"):
        classify_files(photos(workdir)[:1], workdir / "huge-weights.pt")


def test_a_checkpoint_with_nan_weights_is_refused_on_load(workdir, capsys):
    torch.manual_seed(0)
    model = build_resnet18(2, weights=None)
    with torch.no_grad():
        model.fc.weight[0, 0] = float("nan")
    save_checkpoint(workdir / "nan.pt", model, ["Negative", "Positive"])
    for extra in ([], ["--json"]):
        assert main([photos(workdir)[0], "--checkpoint", str(workdir / "nan.pt"), *extra]) == 1
        check_one_error_line(capsys, "nan.pt", "NaN or infinite weights")


def test_an_enormous_photo_is_refused_from_its_header(workdir, capsys, monkeypatch):
    huge = workdir / "huge.png"
    Image.new("L", (13_000, 13_000)).save(huge, optimize=True)  # 169 megapixels in a small file
    decoded = []
    monkeypatch.setattr(Image.Image, "convert", lambda self, *a, **k: decoded.append(self.size))
    assert main([str(huge), "--checkpoint", str(workdir / "two.pt")]) == 1
    check_one_error_line(capsys, "huge.png", "169 megapixels", "more than the 40")
    assert decoded == []


def test_ctrl_c_in_predict_is_one_line_and_130(workdir, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(helpers.commands, "classify_files", interrupted)
    assert main([photos(workdir)[0], "--checkpoint", str(workdir / "two.pt")]) == 130
    err = capsys.readouterr().err
    assert err.strip().startswith("interrupted (Ctrl+C)") and len(err.strip().splitlines()) == 1
