"""helpers.workbook: the banner that says what a notebook runs on, and the stamp on saved figures."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from helpers import workbook  # noqa: E402
from helpers.data import DataChoice  # noqa: E402
from helpers.model import WeightsChoice  # noqa: E402
from helpers.workbook import announce_run, run_stamp, save_figure  # noqa: E402


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
    import nbformat
    import torch

    from helpers.model import build_resnet18, save_checkpoint
    from helpers.tools.run_notebooks import section_heading, trained_model_summary

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
    assert "validation accuracy 73.60% (95% interval 69.57% to 77.27%), 1 epoch(s)" in summary
    assert "cannot be compared with the capstone's 99.44%" in summary and "resnet18_cracks.pt" in summary
    assert "cannot be compared" not in trained_model_summary(True)


def test_the_summary_counts_the_notebooks_that_ran(monkeypatch, tmp_path, capsys):
    from nbclient.exceptions import CellExecutionError

    import helpers.tools.run_notebooks as run_notebooks

    monkeypatch.setenv("WORKBOOK_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(run_notebooks, "prepare_data", lambda: DataChoice(tmp_path, "synthetic", "a test."))
    monkeypatch.setattr(run_notebooks, "prepare_weights", lambda: ("random", {}))

    def run_notebook(path, kernel_env):
        if path.name.startswith("02"):
            raise CellExecutionError("a cell failed", "ValueError", "boom")
        return run_notebooks.NotebookRun(1.0, peak_rss=600_000_000)

    monkeypatch.setattr(run_notebooks, "run_notebook", run_notebook)
    paths = [Path(f"0{i}_lesson.ipynb") for i in range(1, 8)]
    assert run_notebooks.run_all(paths) == 1
    out = capsys.readouterr().out
    assert "s preparing the data and the weights, then 1 s for 2 of 7 notebook(s); stopped at 02_lesson.ipynb" in out
    assert "ok      01_lesson.ipynb" in out and "1.0 s, peak RSS 0.60 GB" in out
    assert "memory:  peak RSS of each kernel: 01 0.60 GB\n" in out


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="a kernel's memory is read from /proc (Linux only)")
def test_the_memory_watch_reads_a_kernels_peak_and_samples_its_workers(monkeypatch):
    import subprocess
    import sys

    import helpers.tools.run_notebooks as run_notebooks

    monkeypatch.setattr(run_notebooks, "SAMPLE_EVERY_S", 0.05)
    worker = "import time; b = b'w' * 200_000_000; time.sleep(1.0)"
    kernel = (
        "import subprocess, sys; a = b'k' * 300_000_000; del a; "
        f"subprocess.run([sys.executable, '-c', {worker!r}]); print('done', flush=True); sys.stdin.read()"
    )
    process = subprocess.Popen([sys.executable, "-c", kernel], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        with run_notebooks.MemoryWatch(process.pid) as watch:
            assert process.stdout.readline() == "done\n"
            peak = watch.peak_rss()
    finally:
        process.communicate("", timeout=30)
    assert peak is not None and peak >= 300_000_000  # the high-water mark, though the memory was freed
    assert 200_000_000 <= watch.workers_peak < peak  # the worker's own pages, sampled while it lived
    run = run_notebooks.NotebookRun(12.0, peak, watch.workers_peak)
    assert run.memory().startswith("peak RSS 0.3") and "GB in loader workers)" in run.memory()
    assert run_notebooks.NotebookRun(1.0).memory() == "peak RSS not measured"
    assert run_notebooks.MemoryWatch(None).peak_rss() is None
