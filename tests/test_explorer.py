"""Notebook 05's explorer, driven from Python: no browser, no front end."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import explorer as explorer_module
from helpers.explorer import Explorer, show_explorer
from helpers.inference import Predictions

# 20 samples: 0-9 have cracks, 10-19 do not. At threshold 0.5, 8 and 9 are missed cracks, 18 and 19 false alarms.
LABELS = [1] * 10 + [0] * 10
PROBABILITIES = [0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.45, 0.3]
PROBABILITIES += [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.55, 0.72]


def solid_picture(index: int) -> np.ndarray:
    """A small picture of one colour that tells the samples apart."""
    return np.full((8, 8, 3), (10 * index, 0, 0), dtype=np.uint8)


def blue(index: int) -> np.ndarray:
    return np.full((8, 8, 3), (0, 0, 255), dtype=np.uint8)


def predictions(paths: list | None = None) -> Predictions:
    probabilities = torch.tensor([[1 - p, p] for p in PROBABILITIES])
    ids = [f"{i:05d}.jpg" for i in range(20)]
    return Predictions(ids, paths or [], torch.tensor(LABELS), probabilities, ["Negative", "Positive"])


def decode(png: bytes | memoryview) -> Image.Image:
    return Image.open(io.BytesIO(bytes(png))).convert("RGB")


@pytest.fixture
def explorer() -> Explorer:
    return Explorer(predictions(), blue, load_image=solid_picture)


def test_the_widgets_carry_the_css_classes_the_browser_test_looks_for(explorer):
    assert "crack-explorer" in explorer.widget._dom_classes
    for name in ("threshold", "sample", "image", "matrix", "mistakes"):
        assert f"crack-explorer-{name}" in getattr(explorer, name)._dom_classes


@pytest.mark.parametrize(
    "outcome, expected",
    [
        ("all samples", list(range(20))),
        ("misclassified", [8, 9, 18, 19]),
        ("true positives", list(range(8))),
        ("true negatives", list(range(10, 18))),
        ("false positives (false alarms)", [18, 19]),
        ("false negatives (missed cracks)", [8, 9]),
    ],
)
def test_the_filter_picks_the_right_samples(explorer, outcome, expected):
    explorer.filter.value = outcome
    assert explorer.shown == expected and explorer.sample.max == len(expected)


def test_moving_the_threshold_refilters_and_updates_matrix_and_mistakes(explorer):
    explorer.filter.value = "misclassified"
    assert "4 mistakes" in explorer.mistakes.value
    explorer.threshold.value = 0.6  # 18 (p = 0.55) is now a true negative
    assert explorer.shown == [8, 9, 19]
    assert "3 mistakes" in explorer.mistakes.value and "0.60" in explorer.mistakes.value
    cells = [int(n) for n in re.findall(r">(\d+)</td>", explorer.matrix.value)]
    assert cells == [9, 1, 2, 8]  # rows: actual Negative (TN, FP), actual Positive (FN, TP)


def test_the_buttons_step_through_the_filtered_list_and_stop_at_the_ends(explorer):
    explorer.filter.value = "false positives (false alarms)"
    explorer.previous_button.click()
    assert explorer.current == 18
    explorer.next_button.click()
    explorer.next_button.click()
    assert explorer.current == 19
    explorer.filter.value = "misclassified"  # 19 stays on show
    assert explorer.current == 19 and explorer.sample.value == 4
    info = explorer.info.value
    assert "00019.jpg" in info and "#19" in info and "4 of 4" in info
    assert "actual: Negative" in info and "predicted: Positive" in info and "0.720" in info


def test_an_empty_filter_says_so_and_the_samples_come_back(explorer):
    explorer.threshold.value = 0.28  # every crack now scores above the threshold
    explorer.filter.value = "false negatives (missed cracks)"
    assert explorer.current is None and explorer.sample.disabled
    assert "No samples are false negatives (missed cracks) at threshold 0.28" in explorer.info.value
    explorer.next_button.click()  # harmless
    explorer.threshold.value = 0.5
    assert explorer.shown == [8, 9] and not explorer.sample.disabled


def test_the_picture_is_the_photo_with_its_heat_map_beside_it(explorer):
    explorer.next_button.click()
    picture = decode(explorer.image.value)
    assert picture.height == 8 and picture.width > 16
    assert picture.getpixel((0, 0)) == (10, 0, 0) and picture.getpixel((picture.width - 1, 0)) == (0, 0, 255)
    floats = Explorer(predictions(), blue, load_image=lambda i: np.full((8, 8, 3), 0.5))  # a capstone tensor
    assert decode(floats.image.value).getpixel((0, 0)) == (128, 128, 128)


def test_without_a_front_end_show_explorer_prints_a_summary(capsys):
    show_explorer(predictions(), blue)  # plain Python under pytest: no widget front end
    printed = capsys.readouterr().out
    assert printed.startswith("The interactive explorer needs JupyterLab")
    assert re.search(r"false negatives \(missed cracks\) +2\n", printed)
    assert re.search(r"misclassified +4\n", printed)


def test_in_jupyter_show_explorer_displays_the_explorer_once_with_photos_from_the_paths(monkeypatch, tmp_path):
    import IPython.display

    paths = [tmp_path / f"{i:05d}.png" for i in range(20)]
    for i, path in enumerate(paths):
        Image.fromarray(solid_picture(i)).save(path)
    shown = []
    monkeypatch.setattr(explorer_module, "has_widget_frontend", lambda: True)
    monkeypatch.setattr(IPython.display, "display", shown.append)
    assert show_explorer(predictions(paths), blue) is None
    (box,) = shown
    assert "crack-explorer" in box._dom_classes
    image = next(w for w in box.children[2].children if "crack-explorer-image" in w._dom_classes)
    assert decode(image.value).getpixel((0, 0)) == (0, 0, 0)  # sample 0's photo, read from its file
