"""Find cracks in a whole photo by sliding the classifier over it, tile by tile.

The dataset's 227x227 images were cut from 4032x3024 photos, and the model only ever saw such
tiles. Shrinking a whole photo to 227x227 would make a thin crack vanish, so instead we cut
the photo into 227x227 tiles, ask the model about each one, and put the answers back where
the tiles came from: a coarse map of where the cracks are.

* ``tile_positions`` says where the tiles go. With ``stride == tile`` they sit side by side;
  a smaller stride makes them overlap (more tiles, a smoother map). The last row and column
  are pushed flush with the border, so no strip of the photo is left out.
* ``scan`` runs the model over the tiles in batches and returns a ``ScanResult``.
* ``probability_map`` spreads the tile scores back over the pixels.
* ``plot_scan`` draws the map over the photo and outlines the tiles the model flags.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image
from torch import nn

from helpers.dataset import default_transform
from helpers.plumbing.images import TILE_SIZE
from helpers.plumbing.images import open_photo
from helpers.plumbing.progress import tqdm
from helpers.settings import pick_device


@dataclass
class ScanResult:
    """The crack probability of every tile of one photo, and where the tiles were."""

    probabilities: np.ndarray  # (rows, cols): crack probability per tile
    tile: int  # tile side in pixels
    stride: int  # step between tiles (== tile: no overlap)
    image_size: tuple[int, int]  # (height, width) of the photo
    boxes: list[tuple[int, int]] = field(default_factory=list)  # (top, left) per tile, row by row

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of tiles."""
        return self.probabilities.shape


def _axis_positions(length: int, tile: int, stride: int) -> list[int]:
    """Start of each tile along one side of `length` pixels; the last one ends at the border."""
    positions = list(range(0, length - tile + 1, stride))
    if positions[-1] != length - tile:  # a strip is left over: add a tile flush with the border
        positions.append(length - tile)
    return positions


def tile_positions(
    height: int, width: int, tile: int = TILE_SIZE, stride: int | None = None
) -> tuple[list[int], list[int]]:
    """(tops, lefts): where the tiles start, so that together they cover the whole photo.

    stride None means stride = tile (tiles side by side); a smaller stride makes them overlap.
    When the photo is not a multiple of the stride, the last tile overlaps its neighbour a bit.
    """
    stride = tile if stride is None else stride
    if tile < 1 or stride < 1:
        raise ValueError(f"tile and stride must be positive, not tile={tile}, stride={stride}.")
    if stride > tile:
        raise ValueError(f"A stride ({stride}) larger than the tile ({tile}) would leave gaps between tiles.")
    if height < tile or width < tile:
        raise ValueError(
            f"The photo ({height}x{width}) is smaller than one {tile}x{tile} tile: "
            f"classify it directly (helpers.inference.classify_photos), it needs no scanning."
        )
    return _axis_positions(height, tile, stride), _axis_positions(width, tile, stride)


def as_rgb_image(image) -> Image.Image:
    """A path, a PIL image or an HxWx3 array (uint8 0-255, or float 0-1) -> an RGB PIL image.

    A path that is missing raises FileNotFoundError, one that is not a readable image
    (truncated, damaged) BadImageError; both name the file.
    """
    if isinstance(image, (str, Path)):
        return open_photo(image)
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"Expected an HxWx3 array, got shape {array.shape}.")
    if array.dtype != np.uint8:
        if array.min() < 0 or array.max() > 1:
            raise ValueError(
                "A float array must hold values in [0, 1]; for 0-255 values use "
                "np.clip(array, 0, 255).astype(np.uint8)."
            )
        array = np.round(array * 255).astype(np.uint8)
    return Image.fromarray(array)


def scan(
    model: nn.Module,
    image,
    tile: int = TILE_SIZE,
    stride: int | None = None,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    progress: bool = True,
    crack_class: int = 1,
) -> ScanResult:
    """Classify every tile of a large photo; returns each tile's probability of `crack_class`.

    image: a path (an unreadable file raises BadImageError), a PIL image or an HxWx3 array.
    The tiles are normalised as in training (default_transform: ToTensor and the ImageNet mean
    and std) and run in batches, in eval mode and without gradients. `progress` shows a bar
    over the batches.
    """
    stride = tile if stride is None else stride
    device = pick_device(device)
    photo = as_rgb_image(image)
    height, width = photo.height, photo.width
    tops, lefts = tile_positions(height, width, tile, stride)
    boxes = [(top, left) for top in tops for left in lefts]  # row-major: row by row
    pixels = default_transform()(photo)  # (3, H, W), normalised once for all tiles

    model = model.to(device).eval()
    scores = []
    for start in tqdm(range(0, len(boxes), batch_size), desc="Scanning", unit="batch", disable=not progress):
        batch = torch.stack(
            [pixels[:, top : top + tile, left : left + tile] for top, left in boxes[start : start + batch_size]]
        )
        with torch.no_grad():
            probabilities = torch.softmax(model(batch.to(device)), dim=1)
        scores.append(probabilities[:, crack_class].cpu())
    grid = torch.cat(scores).numpy().reshape(len(tops), len(lefts))
    return ScanResult(probabilities=grid, tile=tile, stride=stride, image_size=(height, width), boxes=boxes)


def probability_map(result: ScanResult) -> np.ndarray:
    """An (H, W) map: each pixel gets the mean probability of the tiles that cover it."""
    height, width = result.image_size
    total = np.zeros((height, width), dtype=np.float32)
    count = np.zeros((height, width), dtype=np.float32)
    for (top, left), probability in zip(result.boxes, result.probabilities.ravel()):
        total[top : top + result.tile, left : left + result.tile] += probability
        count[top : top + result.tile, left : left + result.tile] += 1
    return total / count  # every pixel is covered by at least one tile (tile_positions sees to it)


def plot_scan(image, result: ScanResult, threshold: float = 0.5) -> Figure:
    """The photo with the probability map over it, and the tiles above `threshold` outlined."""
    photo = as_rgb_image(image)
    height, width = result.image_size
    fig, ax = plt.subplots(figsize=(10, 10 * height / width + 0.6))
    ax.imshow(photo)
    shown = ax.imshow(probability_map(result), cmap="jet", vmin=0, vmax=1, alpha=0.35)
    flagged = 0
    for (top, left), probability in zip(result.boxes, result.probabilities.ravel()):
        if probability > threshold:
            flagged += 1
            ax.add_patch(Rectangle((left, top), result.tile, result.tile, fill=False, edgecolor="white", linewidth=2))
    fig.colorbar(shown, ax=ax, fraction=0.03, label="crack probability")
    ax.set_title(
        f"{flagged} of {len(result.boxes)} tiles above {threshold:.0%} (tile {result.tile}, stride {result.stride})"
    )
    ax.axis("off")
    fig.tight_layout()
    return fig
