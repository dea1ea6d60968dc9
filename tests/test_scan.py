"""helpers.scan: tiles that cover a large photo, a scan that finds a drawn crack, the map and the plot."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image
from torch import nn

from helpers.dataset import default_transform
from helpers.plumbing.images import BadImageError
from helpers.model import build_resnet18
from helpers.scan import ScanResult, plot_scan, probability_map, scan, tile_positions
from helpers.synthetic import draw_crack, make_surface

TILE = 227
CRACK_TILES = [(0, 1), (1, 3), (2, 0)]  # (row, col) of the tiles the crack photo has cracks in


def covered(height: int, width: int, tile: int, stride: int | None) -> np.ndarray:
    """How many tiles cover each pixel."""
    tops, lefts = tile_positions(height, width, tile, stride)
    count = np.zeros((height, width), dtype=int)
    for top in tops:
        for left in lefts:
            assert 0 <= top <= height - tile and 0 <= left <= width - tile
            count[top : top + tile, left : left + tile] += 1
    return count


def test_tiles_side_by_side():
    tops, lefts = tile_positions(681, 908)
    assert tops == [0, 227, 454] and lefts == [0, 227, 454, 681]
    assert (covered(681, 908, TILE, None) == 1).all()  # every pixel once: no overlap, no gap


def test_overlapping_tiles():
    tops, lefts = tile_positions(681, 908, stride=113)
    assert tops == [0, 113, 226, 339, 452, 454] and lefts[-2:] == [678, 681]
    assert (covered(681, 908, TILE, 113) >= 1).all()


def test_photo_not_a_multiple_of_the_tile():
    tops, lefts = tile_positions(500, 1000)
    assert tops == [0, 227, 273] and lefts == [0, 227, 454, 681, 773]  # the last ones flush with the border
    assert (covered(500, 1000, TILE, None) >= 1).all()
    tops, lefts = tile_positions(3024, 4032)  # a full photo from the dataset's camera
    assert (len(tops), len(lefts)) == (14, 18)
    assert tops[-1] == 3024 - TILE and lefts[-1] == 4032 - TILE


def test_bad_sizes_say_why():
    with pytest.raises(ValueError, match="smaller than one 227x227 tile"):
        tile_positions(200, 1000)
    with pytest.raises(ValueError, match="gaps"):
        tile_positions(1000, 1000, stride=300)
    with pytest.raises(ValueError, match="positive"):
        tile_positions(1000, 1000, stride=0)
    assert tile_positions(227, 227) == ([0], [0])  # exactly one tile is fine


def as_uint8(surface: np.ndarray) -> np.ndarray:
    return np.clip(surface, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def crack_model() -> nn.Module:
    """A ResNet18 (random backbone) whose head learned crack vs no crack on 60 synthetic tiles.

    Without ImageNet weights the backbone's features are random, but a crack still changes
    them enough for a linear head to tell the two apart; that is all a scan test needs.
    """
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    tiles, labels = [], []
    for k in range(60):
        surface = make_surface(rng)
        if k % 2:
            draw_crack(surface, rng)
        tiles.append(default_transform()(as_uint8(surface)))
        labels.append(k % 2)
    model = build_resnet18(2, weights=None).eval()
    backbone = nn.Sequential(*list(model.children())[:-1], nn.Flatten())  # everything but fc
    with torch.no_grad():
        features = backbone(torch.stack(tiles))
    targets = torch.tensor(labels)
    optimizer = torch.optim.Adam(model.fc.parameters(), lr=0.01)
    for _ in range(300):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model.fc(features), targets)
        loss.backward()
        optimizer.step()
    return model


@pytest.fixture(scope="module")
def crack_photo() -> np.ndarray:
    """A 681x908 surface (3x4 tiles) with one crack drawn inside each of CRACK_TILES."""
    rng = np.random.default_rng(2)
    surface = make_surface(rng, 3 * TILE, 4 * TILE)
    for row, col in CRACK_TILES:
        tile_view = surface[row * TILE : (row + 1) * TILE, col * TILE : (col + 1) * TILE]  # drawn into in place
        draw_crack(tile_view, rng, width=10)
    return as_uint8(surface)


@pytest.fixture(scope="module")
def result(crack_model, crack_photo) -> ScanResult:
    return scan(crack_model, crack_photo, device="cpu", progress=False, batch_size=5)


def test_scan_scores_the_crack_tiles_highest(result):
    assert result.probabilities.shape == (3, 4)
    assert result.tile == result.stride == TILE and result.image_size == (681, 908)
    assert result.boxes[:5] == [(0, 0), (0, 227), (0, 454), (0, 681), (227, 0)]  # row by row
    crack = [result.probabilities[r, c] for r, c in CRACK_TILES]
    others = [p for (r, c), p in np.ndenumerate(result.probabilities) if (r, c) not in CRACK_TILES]
    assert min(crack) > max(others)  # the 3 highest tiles are exactly the crack tiles
    assert np.mean(crack) > 0.5 > max(others)


def test_photo_as_path_pil_or_floats_gives_the_same_scan(crack_model, crack_photo, result, tmp_path):
    path = tmp_path / "photo.png"  # PNG: lossless, so the same pixels come back
    Image.fromarray(crack_photo).save(path)
    for image in (path, Image.fromarray(crack_photo), crack_photo.astype(np.float32) / 255):
        again = scan(crack_model, image, device="cpu", progress=False)
        np.testing.assert_allclose(again.probabilities, result.probabilities, atol=1e-5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        scan(crack_model, crack_photo.astype(np.float32), progress=False)


def test_overlapping_scan(crack_model, crack_photo):
    overlapping = scan(crack_model, crack_photo, stride=150, device="cpu", progress=False)
    tops, lefts = tile_positions(681, 908, stride=150)
    assert overlapping.probabilities.shape == (len(tops), len(lefts)) == (5, 6)
    assert len(overlapping.boxes) == 30 and overlapping.stride == 150


def test_probability_map(result):
    heat = probability_map(result)
    assert heat.shape == (681, 908)
    for (top, left), p in zip(result.boxes, result.probabilities.ravel()):
        assert np.allclose(heat[top : top + TILE, left : left + TILE], p)  # no overlap: the tile's own score
    overlapping = ScanResult(
        probabilities=np.array([[0.2, 0.6]]), tile=4, stride=2, image_size=(4, 6), boxes=[(0, 0), (0, 2)]
    )
    assert np.allclose(probability_map(overlapping)[0], [0.2, 0.2, 0.4, 0.4, 0.6, 0.6])  # the mean where they meet


def test_plot_scan_returns_a_figure(crack_photo, result):
    fig = plot_scan(crack_photo, result, threshold=0.5)
    try:
        assert isinstance(fig, Figure)
        outlined = fig.axes[0].patches  # one rectangle per tile above the threshold
        assert len(outlined) == int((result.probabilities > 0.5).sum())
    finally:
        plt.close(fig)


def test_an_unreadable_photo_is_named(crack_photo, tmp_path):
    whole = tmp_path / "whole.jpg"
    Image.fromarray(crack_photo).save(whole, format="JPEG")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(whole.read_bytes()[: len(whole.read_bytes()) // 2])
    (tmp_path / "not-a-photo.png").write_bytes(b"just text")
    for name in ("truncated.jpg", "not-a-photo.png"):
        with pytest.raises(BadImageError, match=f"{name}: not readable as an image"):
            scan(nn.Identity(), tmp_path / name, progress=False)
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        scan(nn.Identity(), tmp_path / "missing.jpg", progress=False)
