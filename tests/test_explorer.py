"""The sample explorer of notebook 05, driven from Python: no browser, no front end."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import explorer as explorer_module
from helpers.inference import Predictions
from helpers.explorer import FRONTEND_MESSAGE, build_explorer, show_explorer
from helpers.workbook import has_widget_frontend

# 20 samples: 0-9 have cracks, 10-19 do not. At threshold 0.5: samples 8 and 9 are missed
# cracks (false negatives), 18 and 19 are false alarms (false positives).
LABELS = [1] * 10 + [0] * 10
PROBABILITIES = [
    0.95,
    0.9,
    0.85,
    0.8,
    0.75,
    0.7,
    0.65,
    0.6,
    0.45,
    0.3,
    0.05,
    0.1,
    0.15,
    0.2,
    0.25,
    0.3,
    0.35,
    0.4,
    0.55,
    0.72,
]
SIZE = 8


def solid_picture(index: int) -> np.ndarray:
    """A small picture of one colour that tells the samples apart."""
    return np.full((SIZE, SIZE, 3), (10 * index, 0, 0), dtype=np.uint8)


def blue_heatmap(index: int) -> np.ndarray:
    return np.full((SIZE, SIZE, 3), (0, 0, 255), dtype=np.uint8)


def predictions(folder=None) -> Predictions:
    """The 20 samples as notebook 05's Predictions; with `folder`, each picture is a file there."""
    paths = []
    if folder is not None:
        for i in range(20):
            paths.append(folder / f"{i:05d}.png")
            Image.fromarray(solid_picture(i)).save(paths[-1])
    probabilities = torch.tensor([[1 - p, p] for p in PROBABILITIES])
    return Predictions(
        [f"{i:05d}.jpg" for i in range(20)], paths, torch.tensor(LABELS), probabilities, ["Negative", "Positive"]
    )


def make_explorer(**kwargs):
    box = build_explorer(
        torch.tensor(PROBABILITIES), torch.tensor(LABELS), [f"{i:05d}.jpg" for i in range(20)], solid_picture, **kwargs
    )
    return box, box.explorer


def decode(png: bytes | memoryview) -> Image.Image:
    png = bytes(png)  # ipywidgets keeps the image as a memoryview
    assert png.startswith(b"\x89PNG"), "the image widget should hold PNG bytes"
    return Image.open(io.BytesIO(png)).convert("RGB")


def test_the_box_carries_the_css_classes_the_browser_test_looks_for():
    box, explorer = make_explorer()
    assert "crack-explorer" in box._dom_classes
    assert "crack-explorer-threshold" in explorer.threshold._dom_classes
    assert "crack-explorer-sample" in explorer.sample._dom_classes
    assert "crack-explorer-image" in explorer.image._dom_classes
    assert "crack-explorer-matrix" in explorer.matrix._dom_classes
    assert explorer.threshold.description == "threshold" and explorer.sample.description == "sample"
    assert (explorer.threshold.min, explorer.threshold.max) == (0.01, 0.99)


@pytest.mark.parametrize(
    "outcome, expected",
    [
        ("all", list(range(20))),
        ("misclassified", [8, 9, 18, 19]),
        ("true_positive", list(range(8))),
        ("true_negative", list(range(10, 18))),
        ("false_positive", [18, 19]),
        ("false_negative", [8, 9]),
    ],
)
def test_filter_picks_the_right_samples_at_threshold_one_half(outcome, expected):
    _, explorer = make_explorer()
    explorer.filter.value = outcome
    assert explorer.filtered_indices == expected
    assert explorer.sample.max == len(expected)


def test_moving_the_threshold_refilters_and_updates_matrix_and_mistakes():
    _, explorer = make_explorer()
    explorer.filter.value = "misclassified"
    assert explorer.mistake_count == 4
    assert "4 mistakes" in explorer.mistakes.value
    matrix_before = explorer.matrix.value

    explorer.threshold.value = 0.6  # 18 (p=0.55) is now a true negative
    assert explorer.filtered_indices == [8, 9, 19]
    assert explorer.mistake_count == 3
    assert "3 mistakes" in explorer.mistakes.value and "0.60" in explorer.mistakes.value
    assert explorer.matrix.value != matrix_before
    # rows: actual Negative (TN, FP), actual Positive (FN, TP)
    cells = [int(part.split("<")[0]) for part in explorer.matrix.value.split("'>")[1:] if part[:1].isdigit()]
    assert cells == [9, 1, 2, 8]


def test_sample_slider_and_buttons_step_within_the_filtered_list_and_stop_at_the_ends():
    _, explorer = make_explorer()
    explorer.filter.value = "false_positive"
    assert explorer.current_index == 18
    explorer.previous_button.click()  # already at the start: stays
    assert explorer.current_index == 18
    explorer.next_button.click()
    assert explorer.current_index == 19
    explorer.next_button.click()  # already at the end: stays
    assert explorer.current_index == 19
    explorer.filter.value = "true_negative"
    explorer.sample.value = 3
    assert explorer.current_index == 12
    assert "00012.jpg" in explorer.info.value and "#12" in explorer.info.value


def test_info_names_file_classes_and_both_probabilities():
    _, explorer = make_explorer()
    explorer.filter.value = "false_negative"
    info = explorer.info.value
    assert "00008.jpg" in info
    assert "actual: Positive" in info and "predicted: Negative" in info
    assert "0.450" in info and "0.550" in info


def test_an_empty_filter_shows_a_friendly_message():
    _, explorer = make_explorer()
    explorer.threshold.value = 0.28  # every crack now scores above the threshold
    explorer.filter.value = "false_negative"
    assert explorer.filtered_indices == []
    assert explorer.current_index is None
    assert "No samples are false negatives" in explorer.info.value
    assert explorer.sample.disabled and explorer.next_button.disabled
    explorer.next_button.click()  # harmless
    explorer.threshold.value = 0.5  # and they come back
    assert explorer.filtered_indices == [8, 9] and not explorer.sample.disabled


def test_image_is_a_png_that_changes_with_the_sample():
    _, explorer = make_explorer()
    first = explorer.image.value
    assert decode(first).size == (SIZE, SIZE)
    explorer.next_button.click()
    assert bytes(explorer.image.value) != bytes(first)
    assert decode(explorer.image.value).getpixel((0, 0)) == (10, 0, 0)


def test_heatmap_is_shown_beside_the_picture():
    _, explorer = make_explorer(heatmap=blue_heatmap)
    picture = decode(explorer.image.value)
    assert picture.height == SIZE and picture.width > 2 * SIZE
    assert picture.getpixel((0, 0)) == (0, 0, 0)
    assert picture.getpixel((picture.width - 1, 0)) == (0, 0, 255)


def test_pictures_are_cached():
    calls = []

    def counting_picture(index):
        calls.append(index)
        return solid_picture(index)

    box = build_explorer(PROBABILITIES, LABELS, [str(i) for i in range(20)], counting_picture)
    box.explorer.next_button.click()
    box.explorer.previous_button.click()
    box.explorer.next_button.click()
    assert calls == [0, 1]


def test_mismatched_inputs_are_reported():
    with pytest.raises(ValueError, match="must match"):
        build_explorer(PROBABILITIES, LABELS[:5], ["a"] * 20, solid_picture)


def test_plain_python_has_no_widget_frontend():
    assert has_widget_frontend() is False


def test_show_explorer_without_frontend_prints_a_message_and_a_summary(monkeypatch, capsys):
    monkeypatch.setattr(explorer_module, "has_widget_frontend", lambda: False)
    result = show_explorer(predictions(), threshold=0.5)
    assert result is None
    printed = capsys.readouterr().out
    assert printed.count(FRONTEND_MESSAGE) == 1
    assert "false negatives (missed cracks)" in printed and "misclassified" in printed
    assert re.search(r"false negatives \(missed cracks\) +2\n", printed)  # samples 8 and 9


def test_show_explorer_with_frontend_displays_the_box_once_and_returns_the_explorer(monkeypatch, tmp_path):
    import IPython.display

    shown = []
    monkeypatch.setattr(explorer_module, "has_widget_frontend", lambda: True)
    monkeypatch.setattr(IPython.display, "display", shown.append)
    result = show_explorer(predictions(tmp_path), heatmap=blue_heatmap, threshold=0.6)
    assert shown == [result.widget]
    assert "crack-explorer" in result.widget._dom_classes
    assert repr(result) == "<crack explorer of 20 samples>"
    assert result.mistake_count == 3 and result.threshold.value == 0.6
    picture = decode(result.png(3))  # read from predictions.paths[3], the heatmap beside it
    assert picture.getpixel((0, 0)) == (30, 0, 0) and picture.getpixel((picture.width - 1, 0)) == (0, 0, 255)
