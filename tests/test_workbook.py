"""The version check (helpers.settings), the banner and the stamp on saved figures (helpers.workbook), the runner."""

from __future__ import annotations

import os

import matplotlib
import nbformat

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from helpers import settings, workbook  # noqa: E402
from helpers.data import DataChoice  # noqa: E402
from helpers.model import WeightsChoice  # noqa: E402
from helpers.settings import check_versions  # noqa: E402
from helpers.workbook import announce_run, run_stamp, save_figure  # noqa: E402


def test_check_versions_names_every_package_missing_or_too_old_and_what_to_run(monkeypatch, capsys):
    installed = {"torch": "2.2.9+cpu", "numpy": "2.0.0", "tqdm": "4.70.1"}
    requires = ["torch>=2.3", "numpy>=1.24", "pillow>=9.5", 'pytest>=7.4; extra == "test"']
    monkeypatch.setattr(settings.metadata, "requires", lambda name: requires)

    def version(name):
        if name not in installed:
            raise settings.metadata.PackageNotFoundError(name)
        return installed[name]

    monkeypatch.setattr(settings.metadata, "version", version)
    with pytest.raises(
        RuntimeError, match=r"torch 2.2.9\+cpu \(needs >=2.3\); pillow missing \(needs >=9.5\)\. Run `make lab`"
    ):
        check_versions()
    assert "numpy            2.0.0" in capsys.readouterr().out
    installed.update(torch="2.14.1+cu130", pillow="12.0")  # a local version label is no obstacle
    assert check_versions()["torch"] == "2.14.1+cu130" and "pytest" not in check_versions()  # extras not checked


@pytest.mark.parametrize(
    "source, weights, quick, expected",
    [
        ("synthetic", WeightsChoice(None), False, "synthetic data · random backbone"),
        ("real", WeightsChoice("imagenet"), False, "real data · ImageNet backbone"),
        ("synthetic", None, False, "synthetic data"),
        ("synthetic", WeightsChoice(None), True, "synthetic data · random backbone · quick mode"),
        ("real", WeightsChoice("/x/resnet18-mine.pth"), False, "real data · backbone from resnet18-mine.pth"),
    ],
)
def test_figure_stamp_names_data_weights_and_mode(monkeypatch, source, weights, quick, expected):
    monkeypatch.setenv("WORKBOOK_QUICK", "1" if quick else "0")
    assert run_stamp(source, weights) == expected


def test_announce_run_says_what_runs_and_warns_about_stand_ins(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("WORKBOOK_QUICK", "0")
    monkeypatch.setattr(workbook, "figure_stamp", "")
    stamp = announce_run(DataChoice(tmp_path, "synthetic", "offline."), WeightsChoice(None, "random initialisation"))
    out = capsys.readouterr().out
    assert out.startswith("This notebook runs on: synthetic data · random backbone")
    assert "say nothing about real concrete" in out and stamp == "synthetic data · random backbone"
    announce_run(DataChoice(tmp_path, "real", "downloaded."), WeightsChoice("imagenet"))
    out = capsys.readouterr().out
    assert "say nothing" not in out and "weights: ImageNet (torchvision IMAGENET1K_V1)" in out
    announce_run(DataChoice(tmp_path, "real", "downloaded."))  # no model: no weights line, no warning
    out = capsys.readouterr().out
    assert "weights:" not in out and "say nothing" not in out


def test_saved_figures_carry_the_stamp_once(monkeypatch, tmp_path):
    monkeypatch.setattr(workbook, "images_dir", lambda: tmp_path)
    monkeypatch.setattr(workbook, "figure_stamp", "synthetic data · random backbone")
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [0, 1])
    path = save_figure(fig, "line.png")
    save_figure(fig, "again.png")
    texts = [t.get_text() for t in fig.texts]
    assert texts == ["synthetic data · random backbone"]  # stamped once, however often it is saved
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"))
    assert (pixels[-12:] < 200).any(), "the footer should be drawn at the bottom of the image"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.png", "line.png"]  # no temporary files left
    plt.close(fig)


def test_make_run_names_each_section_and_sums_up_the_trained_model(monkeypatch, tmp_path):
    import torch

    from helpers.model import build_resnet18, save_checkpoint
    from helpers.commands import section_heading, trained_model_summary

    assert section_heading(nbformat.v4.new_markdown_cell("## The training loop\n\nText")) == "The training loop"
    assert section_heading(nbformat.v4.new_markdown_cell("Plain text")) is None
    assert section_heading(nbformat.v4.new_code_cell("# a comment")) is None

    monkeypatch.setenv("WORKBOOK_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("WORKBOOK_QUICK", "0")
    assert "none saved" in trained_model_summary(False)
    torch.manual_seed(0)
    save_checkpoint(
        tmp_path / "checkpoints" / "resnet18_cracks.pt",
        build_resnet18(weights=None),
        ["Negative", "Positive"],
        {"n_train": 1500, "n_val": 500, "val_accuracy": 0.736, "split": "capstone", "training": {"epochs": 1}},
    )
    summary = trained_model_summary(False)
    assert "result:  73.60% of 500 validation images (69.57% to 77.27%)" in summary
    assert "cannot be compared with the capstone's 99.44%" in summary and "resnet18_cracks.pt" in summary
    assert "cannot be compared" not in trained_model_summary(True)


def test_make_run_names_the_failing_notebook_and_cell_and_stops_there(monkeypatch, tmp_path, capsys):
    import helpers.commands as run_notebooks

    monkeypatch.setenv("WORKBOOK_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(run_notebooks, "executed_dir", lambda: tmp_path / "executed")
    monkeypatch.setattr(run_notebooks, "prepare_data", lambda: DataChoice(tmp_path, "synthetic", "a test."))
    monkeypatch.setattr(run_notebooks, "prepare_weights", lambda: ("random", {**os.environ}))
    lesson = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 01 A lesson")])
    lesson.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    bar = "from tqdm.auto import tqdm\nfor _ in tqdm(range(3)):\n    pass"  # a widget in a kernel
    lesson.cells += [nbformat.v4.new_code_cell(bar), nbformat.v4.new_code_cell("raise ValueError('boom')")]
    paths = [tmp_path / f"0{i}_lesson.ipynb" for i in (1, 2)]
    for path in paths:
        nbformat.write(lesson, path)
    assert run_notebooks.run_all(paths) == 1
    out = capsys.readouterr().out
    assert "FAILED  01_lesson.ipynb, cell 3 of 3:" in out and "boom" in out
    assert "02_lesson" not in out.split("FAILED")[1].split("Summary")[0] and "stopped at 01_lesson.ipynb" in out
    executed = nbformat.read(tmp_path / "executed" / "01_lesson.ipynb", as_version=4)  # written though it failed
    assert executed.cells[2].outputs[0].ename == "ValueError"
    assert executed.metadata.widgets  # the bar as it ended, for JupyterLab to draw
