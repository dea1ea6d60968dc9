"""helpers.train: the capstone's training from a terminal (`python -m helpers train`), on tiny data."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import helpers.model
import helpers.commands
from helpers.analysis import accuracy_interval, compute_metrics
from helpers.inference import predict_dataset
from helpers.dataset import CrackDataset
from helpers.model import load_checkpoint
from helpers.settings import PROJECT_ROOT
from helpers.synthetic_dataset import generate_dataset
from helpers.commands import train_main as main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """12 synthetic images per class (18 train, 6 val)."""
    return generate_dataset(tmp_path_factory.mktemp("train") / "data", per_class=12, seed=0, progress=False)


@pytest.fixture(autouse=True)
def workbook_dir(tmp_path, monkeypatch) -> Path:
    """Caches and default outputs land in tmp, not in the project's data/."""
    monkeypatch.setenv("WORKBOOK_DATA_DIR", str(tmp_path / "wb"))
    return tmp_path / "wb"


def train_tiny(data: Path, out: Path, *extra: str) -> int:
    return main(["--data", str(data), "--weights", "random", "--out", str(out), "--quiet", "--device", "cpu", *extra])


def assert_one_error_line(err: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err


def test_run_writes_checkpoint_plot_and_metrics(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_tiny(tiny, out) == 0
    stdout, err = capsys.readouterr()
    assert f"synthetic, {tiny}: given with --data." in stdout and "device:  cpu" in stdout
    assert "validation accuracy" in stdout and "95% interval" in stdout and "on 6 images" in stdout
    assert "cannot be compared with the capstone's 99.44%" in stdout
    assert err == ""  # --quiet: no progress bars
    assert "weights: random initialisation (NOT pretrained: --weights random)" in stdout

    metrics = json.loads((out / "metrics.json").read_text())
    checkpoint = load_checkpoint(out / "resnet18_cracks.pt")
    model, meta = checkpoint.model, checkpoint.metadata
    assert meta["data_path"] == str(tiny) and meta["weights"] == "random" and meta["data_source"] == "synthetic"
    assert (metrics["n_train"], metrics["n_val"]) == (meta["n_train"], meta["n_val"]) == (18, 6)
    assert metrics["weights"] == "random" and metrics["data_path"] == str(tiny) and metrics["device"] == "cpu"
    assert metrics["features"] == meta["features"] and metrics["comparable_with_capstone"] is False
    assert metrics["training"] == meta["training"] and metrics["dedupe"] is False
    assert {k: metrics["training"][k] for k in ("epochs", "learning_rates", "batch_size", "seed")} == {
        "epochs": 1,
        "learning_rates": {"head": 0.001},
        "batch_size": 100,
        "seed": 0,
    }
    assert metrics["files"] == {
        "checkpoint": str(out / "resnet18_cracks.pt"),
        "loss_plot": str(out / "loss.png"),
        "metrics": str(out / "metrics.json"),
    }

    # Recomputed independently: the saved model through the whole network, image by image.
    val_set = CrackDataset(tiny, "val", progress=False)
    recomputed = compute_metrics(predict_dataset(model, val_set, device="cpu", progress=False, num_workers=0))
    assert metrics["accuracy"] == pytest.approx(recomputed.accuracy) == pytest.approx(meta["val_accuracy"])
    low, high = metrics["interval_95"]
    assert low <= metrics["accuracy"] <= high
    assert (low, high) == pytest.approx(accuracy_interval(metrics["correct"], metrics["n_val"]))
    assert (out / "loss.png").read_bytes()[:8] == PNG_SIGNATURE
    assert not list(out.glob(".*.tmp*"))  # every file went through atomic_path


def test_default_out_is_a_timestamped_run_folder(tiny, workbook_dir, capsys):
    assert main(["--data", str(tiny), "--weights", "random", "--quiet", "--device", "cpu", "--epochs", "2"]) == 0
    runs = list((workbook_dir / "runs").iterdir())
    assert len(runs) == 1 and {p.name for p in runs[0].iterdir()} == {"resnet18_cracks.pt", "loss.png", "metrics.json"}
    assert json.loads((runs[0] / "metrics.json").read_text())["training"]["epochs"] == 2


def test_help_names_the_command_it_was_called_as(monkeypatch, capsys):
    """Issue 30: `crack-train --help` said `usage: python -m helpers train`."""
    monkeypatch.setattr(sys, "argv", ["/venv/bin/crack-train", "--help"])
    assert main() == 0
    assert capsys.readouterr().out.startswith("usage: crack-train ")


def test_help_runs_as_a_module():
    result = subprocess.run(
        [sys.executable, "-m", "helpers", "train", "--help"],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "--dedupe" in result.stdout and result.stdout.startswith("usage: python -m helpers train ")
    assert "default: 100" in result.stdout and "default: 0.001" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["--data", "{tmp}/missing"],
        ["--data", "{tmp}"],  # a folder without Positive/ and Negative/
        ["--device", "banana"],
        ["--epochs", "0"],
        ["--epochs", "-1"],
        ["--lr", "0"],
        ["--batch-size", "0"],
        ["--weights", "missing.pth"],
    ],
    ids=[
        "missing-folder",
        "no-class-folders",
        "bad-device",
        "zero-epochs",
        "negative-epochs",
        "zero-lr",
        "zero-batch",
        "missing-weights-file",
    ],
)
def test_bad_arguments_give_one_error_line(args, tiny, tmp_path, capsys):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if args[0] != "--data":
        args = ["--data", str(tiny), *args]
    assert main([*args, "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert_one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_missing_imagenet_weights_without_random_is_an_error(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(helpers.model, "WEIGHTS_URL", "http://127.0.0.1:9/none")  # a refused connection
    monkeypatch.delenv("WORKBOOK_ALLOW_RANDOM_WEIGHTS", raising=False)
    assert main(["--data", str(tiny), "--quiet", "--device", "cpu", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert_one_error_line(err)
    assert "--weights random" in err and "--weights PATH" in err and not (tmp_path / "out").exists()


def test_a_reader_that_went_away_ends_the_run_quietly(tiny, tmp_path, capsys, monkeypatch):
    """Issue 29, item 14: `crack-train | head -1` ended in a traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    monkeypatch.setattr(sys, "stdout", os.fdopen(write_end, "w"))
    assert train_tiny(tiny, tmp_path / "out") == 141  # 128 + SIGPIPE, as `cat` ends
    assert "Traceback" not in capsys.readouterr().err


def test_ctrl_c_is_one_line_and_exit_130(tiny, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(helpers.commands, "train_capstone_head", interrupted)
    assert train_tiny(tiny, tmp_path / "out") == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("interrupted") and "Traceback" not in err


def test_real_sample_one_epoch(real_sample, tmp_path, capsys):
    """On links to the real sample (conftest), so that the digest cache never lands in the shared folder."""
    out = tmp_path / "real"
    assert train_tiny(real_sample, out) == 0
    assert "real, " in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    low, high = metrics["interval_95"]
    assert 0.0 <= low <= metrics["accuracy"] <= high <= 1.0
    assert metrics["data_source"] == "real" and metrics["n_train"] + metrics["n_val"] >= 2
    assert (out / "resnet18_cracks.pt").is_file() and (out / "loss.png").read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.parametrize(
    "args, words",
    [
        (["--epochs", "99999999999999999999"], "--epochs"),
        (["--batch-size", "10000000000"], "--batch-size"),
        (["--lr", "inf"], "--lr"),
        (["--lr", "nan"], "--lr"),
        (["--data", "{tmp}/notes.txt"], "is a file, not a folder"),
        (["--out", "{tmp}/notes.txt/run"], "is a file"),
    ],
    ids=["huge-epochs", "huge-batch", "infinite-lr", "nan-lr", "data-is-a-file", "out-under-a-file"],
)
def test_out_of_range_and_misplaced_arguments_are_one_line_before_any_work(args, words, tiny, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a folder")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    defaults = {"--data": str(tiny), "--out": str(tmp_path / "out")}
    for flag, value in defaults.items():
        if flag not in args:
            args += [flag, value]
    assert main([*args, "--quiet", "--weights", "random", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert_one_error_line(err)
    assert words in err and not (tmp_path / "out").exists()


def test_a_weights_file_that_is_not_weights_is_one_line(tiny, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("some notes, not a state dict\n")
    assert main(["--data", str(tiny), "--weights", str(notes), "--out", str(tmp_path / "out"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert_one_error_line(err)
    assert "notes.txt cannot be loaded as ResNet18 weights" in err


def test_a_loss_that_stops_being_a_number_stops_training_naming_the_step(tiny, tmp_path, capsys, monkeypatch):
    import helpers.training

    real_train_head = helpers.training.train_head
    monkeypatch.setattr(
        helpers.training, "train_head", lambda *a, **k: real_train_head(*a, **{**k, "lr": float("inf")})
    )
    assert train_tiny(tiny, tmp_path / "out", "--epochs", "3") == 1  # one step an epoch: step 2 is NaN
    err = capsys.readouterr().err
    assert_one_error_line(err)
    assert "The loss became" in err and "at step" in err and "lower the learning rate" in err
    assert not (tmp_path / "out" / "resnet18_cracks.pt").exists()


def test_file_names_from_the_data_are_printed_without_escape_sequences(tiny, tmp_path, capsys, monkeypatch):
    evil = tmp_path / "\x1b[2Jfake\nerror: all good"

    def failing(*args, **kwargs):
        raise ValueError(f"Cannot read {evil}/\udcff.jpg: broken.")

    monkeypatch.setattr(helpers.commands, "train_capstone_head", failing)
    assert train_tiny(tiny, tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert_one_error_line(err)
    assert "\x1b" not in err and "\\xff.jpg" in err


@pytest.mark.skipif(
    sys.platform in ("win32", "darwin"), reason="Windows and macOS (APFS) file names are always Unicode"
)
def test_a_file_name_that_is_not_utf8_is_named_not_a_codec_error(tmp_path, capsys):
    data = generate_dataset(tmp_path / "data", per_class=6, seed=0, progress=False)
    first = next((data / "Positive").iterdir())
    with open(os.fsencode(data / "Positive") + b"/caf\xe9.png", "wb") as copy:
        copy.write(first.read_bytes())
    assert train_tiny(data, tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "caf\\xe9.png has a name that is not UTF-8: rename it" in err and "codec" not in err


def test_a_full_disk_under_out_names_out(tiny, tmp_path, capsys, monkeypatch):
    """Issue 29 (cosmetic): the advice named WORKBOOK_DATA_DIR when --out was on the full disk."""
    real_save = torch.save

    def full_disk(obj, file):
        if "resnet18_cracks" in str(file):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, file)

    monkeypatch.setattr(torch, "save", full_disk)
    assert train_tiny(tiny, tmp_path / "out") == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"error: the disk holding {tmp_path / 'out'} is full") and "another --out" in last
    assert "WORKBOOK_DATA_DIR" not in last and not (tmp_path / "out" / "resnet18_cracks.pt").exists()
