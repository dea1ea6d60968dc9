"""helpers.train: the capstone's training from a terminal (`python -m helpers train`), on tiny data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import helpers.tools.train
from helpers.analysis import accuracy_interval, compute_metrics
from helpers.inference import predict_dataset
from helpers.dataset import CrackDataset
from helpers.model import load_checkpoint
from helpers.settings import PROJECT_ROOT
from helpers.synthetic_dataset import generate_dataset
from helpers.tools.train import main

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
    assert f"synthetic, {tiny} (24 images)" in stdout and "device:  cpu" in stdout
    assert "validation accuracy" in stdout and "95% interval" in stdout and "on 6 images" in stdout
    assert "cannot be compared with the capstone's 99.44%" in stdout
    warnings = err.strip().splitlines()  # --quiet: the random-weights warning, no progress bars
    assert len(warnings) == 1 and warnings[0].startswith("WARNING: --weights random")

    metrics = json.loads((out / "metrics.json").read_text())
    checkpoint = load_checkpoint(out / "resnet18_cracks.pt")
    model, meta = checkpoint.model, checkpoint.metadata
    assert meta["data_path"] == str(tiny) and meta["weights"] == "random" and meta["data_source"] == "synthetic"
    assert (metrics["n_train"], metrics["n_val"]) == (meta["n_train"], meta["n_val"]) == (18, 6)
    assert metrics["weights"] == "random" and metrics["data_path"] == str(tiny) and metrics["device"] == "cpu"
    assert metrics["features"] == meta["features"] and metrics["comparable_with_capstone"] is False
    assert {k: metrics[k] for k in ("epochs", "lr", "batch_size", "dedupe")} == \
        {"epochs": 1, "lr": 0.001, "batch_size": 100, "dedupe": False}
    assert metrics["files"] == {"checkpoint": str(out / "resnet18_cracks.pt"), "loss_plot": str(out / "loss.png"),
                                "metrics": str(out / "metrics.json")}

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
    assert len(runs) == 1 and {p.name for p in runs[0].iterdir()} == {"resnet18_cracks.pt", "loss.png",
                                                                       "metrics.json"}
    assert json.loads((runs[0] / "metrics.json").read_text())["epochs"] == 2


def test_help_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "helpers", "train", "--help"], capture_output=True, text=True,
                            cwd=PROJECT_ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--dedupe" in result.stdout and "python -m helpers train" in result.stdout
    assert "default: 100" in result.stdout and "default: 0.001" in result.stdout


@pytest.mark.parametrize("args", [
    ["--data", "{tmp}/missing"],
    ["--data", "{tmp}"],                        # a folder without Positive/ and Negative/
    ["--device", "banana"],
    ["--epochs", "0"],
    ["--epochs", "-1"],
    ["--lr", "0"],
    ["--batch-size", "0"],
    ["--weights", "missing.pth"],
], ids=["missing-folder", "no-class-folders", "bad-device", "zero-epochs", "negative-epochs", "zero-lr",
        "zero-batch", "missing-weights-file"])
def test_bad_arguments_give_one_error_line(args, tiny, tmp_path, capsys):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if args[0] != "--data":
        args = ["--data", str(tiny), *args]
    assert main([*args, "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert_one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_missing_imagenet_weights_without_random_is_an_error(tiny, tmp_path):
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch"), "WORKBOOK_WEIGHTS_URL": "http://127.0.0.1:9/none",
           "WORKBOOK_DATA_DIR": str(tmp_path / "wb")}
    env.pop("WORKBOOK_ALLOW_RANDOM_WEIGHTS", None)
    result = subprocess.run([sys.executable, "-m", "helpers", "train", "--data", str(tiny), "--quiet", "--device", "cpu",
                             "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=PROJECT_ROOT,
                            env=env, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert_one_error_line(result.stderr)
    assert "--weights random" in result.stderr and not (tmp_path / "out").exists()


def test_ctrl_c_is_one_line_and_exit_130(tiny, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(helpers.tools.train, "train_capstone_head", interrupted)
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
