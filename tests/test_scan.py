"""helpers.analysis.scan: the tiles cover a large photo, each tile's score lands in its place, the map and the plot."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from helpers.explorer import ScanResult, plot_scan, probability_map, scan, tile_positions
from helpers.plumbing import BadImageError

TILE = 227
CRACK_TILES = [(0, 1), (1, 3), (2, 0)]  # (row, column) of the tiles with a dark line in them


class Darkness(nn.Module):
    """A stand-in classifier: the darker a tile's darkest pixel, the likelier a crack."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([0.0, -4.0]))  # logits (0, -4 x the darkest normalised value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amin(dim=(1, 2, 3))[:, None] * self.weight


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A grey 681x908 photo (3x4 tiles) with a dark line inside each of CRACK_TILES."""
    photo = np.full((3 * TILE, 4 * TILE, 3), 150, dtype=np.uint8)
    for row, column in CRACK_TILES:
        photo[row * TILE + 100 : row * TILE + 104, column * TILE + 20 : column * TILE + 200] = 20
    return photo


@pytest.mark.parametrize(
    "height, width, stride", [(681, 908, 227), (681, 908, 113), (500, 1000, 227), (3024, 4032, 227)]
)
def test_tiles_cover_every_pixel_and_stay_inside_the_photo(height, width, stride):
    tops, lefts = tile_positions(height, width, stride)
    count = np.zeros((height, width), dtype=int)
    for top in tops:
        for left in lefts:
            count[top : top + TILE, left : left + TILE] += 1
    assert count.min() >= 1 and (tops[-1], lefts[-1]) == (height - TILE, width - TILE)
    if (height, width, stride) == (681, 908, 227):
        assert count.max() == 1  # a photo of whole tiles, side by side: every pixel once


def test_bad_sizes_say_what_to_do():
    with pytest.raises(ValueError, match="smaller than one tile: classify it whole"):
        tile_positions(200, 1000)
    with pytest.raises(ValueError, match="leaves gaps.*use 227 or less"):
        tile_positions(1000, 1000, stride=300)


def test_each_tile_score_lands_in_its_place(photo):
    result = scan(Darkness(), photo)
    assert result.probabilities.shape == (3, 4) and result.photo.size == (908, 681)
    assert result.boxes[:5] == [(0, 0), (0, 227), (0, 454), (0, 681), (227, 0)]  # row by row
    crack = np.zeros((3, 4), dtype=bool)
    crack[tuple(zip(*CRACK_TILES))] = True
    assert result.probabilities[crack].min() > 0.5 > result.probabilities[~crack].max()
    overlapping = scan(Darkness(), photo, stride=150)
    assert overlapping.probabilities.shape == tuple(map(len, tile_positions(681, 908, 150))) == (5, 6)


def test_a_path_a_pil_image_and_an_array_give_the_same_scan(photo, tmp_path):
    path = tmp_path / "photo.png"  # PNG: lossless, so the same pixels come back
    Image.fromarray(photo).save(path)
    scans = [scan(Darkness(), image).probabilities for image in (photo, path, Image.fromarray(photo))]
    np.testing.assert_allclose(scans[1], scans[0], atol=1e-6)
    np.testing.assert_allclose(scans[2], scans[0], atol=1e-6)
    with pytest.raises(ValueError, match="uint8 values 0-255"):
        scan(Darkness(), photo / 255)


def test_an_unreadable_photo_is_named(photo, tmp_path):
    whole = tmp_path / "whole.jpg"
    Image.fromarray(photo).save(whole)
    (tmp_path / "truncated.jpg").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    (tmp_path / "not-a-photo.png").write_bytes(b"just text")
    for name in ("truncated.jpg", "not-a-photo.png"):
        with pytest.raises(BadImageError, match=f"{name}: not readable as an image"):
            scan(Darkness(), tmp_path / name)
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        scan(Darkness(), tmp_path / "missing.jpg")


def test_the_map_averages_overlapping_tiles_and_the_plot_outlines_the_flagged_ones(photo):
    two = ScanResult(Image.new("RGB", (340, 227)), np.array([[0.2, 0.6]]), boxes=[(0, 0), (0, 113)])
    assert np.allclose(probability_map(two)[0, [0, 112, 113, 226, 227, 339]], [0.2, 0.2, 0.4, 0.4, 0.6, 0.6])
    result = scan(Darkness(), photo)
    fig = plot_scan(result, threshold=0.5)
    assert len(fig.axes[0].patches) == len(CRACK_TILES)  # one outline per tile above the threshold
    plt.close(fig)
